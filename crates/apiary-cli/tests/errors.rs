//! Bad input: every case exits non-zero with one clear message and leaves the store, the pins
//! and the kernel exactly as they were.

mod common;

use common::*;
use serde_json::Value;

/// What apiary manages and has pinned: must not change across a failed command.
fn snapshot(a: &Apiary) -> (Value, Value, Value, Vec<std::path::PathBuf>) {
    (
        a.json(&["list", "programs"]),
        a.json(&["list", "links"]),
        a.json(&["list", "maps"]),
        a.pins(),
    )
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let minimal = fixture("minimal");
    let m = minimal.to_str().unwrap();
    let net_obj = fixture("net");
    let n = net_obj.to_str().unwrap();
    // Something managed already exists, so "nothing changed" is a real comparison.
    let existing = a.load_one(&["--path", m]);
    a.attach(
        existing,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    let xdp = a.load_one(&["--path", n, "--programs", "xdp:xdp_count"]);
    let before = snapshot(&a);
    let not_elf = a.state.path().join("not-elf.o");
    std::fs::write(&not_elf, "this is text, not an object\n").unwrap();
    let elf_not_bpf = std::env::current_exe().unwrap();
    let xdp_s = xdp.to_string();
    let ex_s = existing.to_string();
    let bad_obj = fixture("bad_verifier");
    let bad = bad_obj.to_str().unwrap();
    let no_map = format!("{ex_s}:nosuch");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["load", "file", "--path", "/nonexistent/prog.o"],
            "cannot read object file /nonexistent/prog.o",
        ),
        (
            vec!["load", "file", "--path", not_elf.to_str().unwrap()],
            "not an ELF file",
        ),
        (
            vec!["load", "file", "--path", elf_not_bpf.to_str().unwrap()],
            "not BPF (247)",
        ),
        (
            vec!["load", "file", "--path", n, "--programs", "xdp:nope"],
            "program \"nope\" not found",
        ),
        (
            vec![
                "load",
                "file",
                "--path",
                n,
                "--programs",
                "tracepoint:xdp_count",
            ],
            "which is xdp, not tracepoint",
        ),
        (vec!["load", "file", "--path", n], "contains 4 programs"),
        (
            vec!["load", "file", "--path", m, "-g", "increment=01"],
            "is 8 bytes",
        ),
        (
            vec!["load", "file", "--path", m, "-g", "increment=zz"],
            "not a hex byte",
        ),
        (
            vec!["load", "file", "--path", m, "--set", "increment=abc"],
            "increment",
        ),
        (
            vec![
                "load",
                "file",
                "--path",
                n,
                "--programs",
                "xdp:xdp_count",
                "--set",
                "proto=300",
            ],
            "300",
        ),
        (
            vec!["load", "file", "--path", m, "--set", "nosuch=1"],
            "global \"nosuch\" not found",
        ),
        (
            vec!["load", "file", "--path", bad],
            "verifier rejected program \"out_of_bounds\"",
        ),
        (
            vec!["load", "file", "--path", m, "--map-owner-id", "999"],
            "program 999 not found",
        ),
        (
            vec![
                "attach",
                "999",
                "tracepoint",
                "--tracepoint",
                "syscalls/sys_enter_getppid",
            ],
            "program 999 not found",
        ),
        (
            vec![
                "attach",
                &ex_s,
                "tracepoint",
                "--tracepoint",
                "syscalls/sys_enter_nosuch",
            ],
            "tracepoint syscalls/sys_enter_nosuch not found",
        ),
        (
            vec!["attach", &ex_s, "tracepoint", "--tracepoint", "nocategory"],
            "expected CATEGORY/NAME",
        ),
        (
            vec!["attach", &ex_s, "xdp", "--iface", "lo"],
            "is a tracepoint program",
        ),
        (
            vec!["attach", &xdp_s, "xdp", "--iface", "nosuch0"],
            "interface \"nosuch0\" does not exist",
        ),
        (
            vec![
                "attach",
                &xdp_s,
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                "apiary-no-such-ns",
            ],
            "network namespace",
        ),
        (
            vec!["attach", &xdp_s, "xdp", "--iface", &net.if_b],
            "does not exist",
        ),
        (
            vec![
                "attach",
                &ex_s,
                "raw-tracepoint",
                "--tracepoint",
                "nosuch_tp",
            ],
            "is a tracepoint program",
        ),
        (vec!["detach", "999"], "link 999 not found"),
        (vec!["unload", "999"], "program 999 not found"),
        (vec!["unload", &ex_s], "has 1 link(s)"),
        (vec!["get", "program", "999"], "program 999 not found"),
        (vec!["map", "dump", &no_map], "has maps: counts"),
        (vec!["map", "dump", "4294967295"], "not found"),
        // Load and attach in one command: the failed attach rolls the load back.
        (
            vec![
                "load",
                "file",
                "--path",
                n,
                "--programs",
                "xdp:xdp_count",
                "xdp",
                "--iface",
                "nosuch0",
            ],
            "interface \"nosuch0\" does not exist",
        ),
        (
            vec![
                "load",
                "file",
                "--path",
                m,
                "tracepoint",
                "--tracepoint",
                "syscalls/sys_enter_nosuch",
            ],
            "not found",
        ),
    ];
    for (args, want) in &cases {
        let e = a.fails(args);
        assert!(
            e.contains(want),
            "apiary {args:?}: expected {want:?} in:\n{e}"
        );
        assert_eq!(snapshot(&a), before, "apiary {args:?} changed state");
    }
    // The verifier error shows the useful tail of the log, not just "permission denied".
    let e = a.fails(&["load", "file", "--path", bad]);
    assert!(e.contains("invalid access to map value"), "{e}");
}

#[test]
fn usage_errors_come_from_the_parser() {
    // No root needed: these never reach the kernel.
    let a = Apiary::new();
    for (args, want) in [
        (
            vec!["load", "file", "--path", "x.o", "--programs", "bogus:f"],
            "unknown program type",
        ),
        (
            vec!["load", "file", "--path", "x.o", "--programs", "xdp"],
            "expected TYPE:FUNCTION",
        ),
        (vec!["attach", "abc", "tp-btf"], "invalid program id"),
        (
            vec!["attach", "1", "xdp", "--iface", "eth0", "--mode", "turbo"],
            "invalid value 'turbo'",
        ),
        (vec!["map", "dump", "x:"], "invalid map reference"),
    ] {
        let r = a.run(&args);
        assert!(!r.ok, "{args:?} should fail");
        assert!(
            r.stderr.contains(want),
            "{args:?}: expected {want:?} in {}",
            r.stderr
        );
    }
}

/// The exit status follows the kind of error, the same in-process and through a daemon
/// (this suite runs against both): 2 bad input, 3 not found, 4 kernel refused or lacking,
/// 6 conflicts with the current state, 7 daemon unreachable.
#[test]
fn exit_status_follows_the_error_kind() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let status = |args: &[&str]| {
        let r = a.run(args);
        assert!(
            !r.ok && r.stderr.starts_with("error: "),
            "{args:?}: {}",
            r.stderr
        );
        r.code
    };
    assert_eq!(status(&["get", "program", "999"]), Some(3));
    assert_eq!(
        status(&["load", "file", "--path", "/nonexistent.o"]),
        Some(2)
    );
    let bad = fixture("bad_verifier");
    assert_eq!(
        status(&["load", "file", "--path", bad.to_str().unwrap()]),
        Some(4)
    );
    let refused = fixture("refused");
    assert_eq!(
        status(&[
            "load",
            "file",
            "--path",
            refused.to_str().unwrap(),
            "--programs",
            "fentry:on_fentry"
        ]),
        Some(4)
    );
    let id = a.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    a.attach(
        id,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    assert_eq!(status(&["unload", &id.to_string()]), Some(6));
    let r = a
        .cmd()
        .args([
            "--endpoint",
            "unix:///nonexistent/apiary.sock",
            "list",
            "programs",
        ])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}
