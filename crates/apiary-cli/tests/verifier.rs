//! Verifier diagnostics: for each common cause of a rejection (tests/fixtures/bpf/verifier_*.bpf.c,
//! one realistic mistake each), `apiary load` fails with the C line the failing instruction came
//! from, the instruction, the verifier's message, the registers it names and a hint, then the
//! raw log; nothing is left loaded or pinned. Through a daemon the same structure arrives over
//! gRPC and prints the same.

mod common;

use common::daemon::{Daemon, DaemonOpts};
use common::*;
use std::process::Command;

/// The CLI on `a`'s store, in-process or through `endpoint`, whatever the harness's mode: the
/// daemon test compares the two front doors itself.
fn raw(a: &Apiary, endpoint: Option<&str>, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_apiary"));
    c.env("APIARY_STATE_DIR", a.state.path())
        .env("APIARY_BPFFS", &a.bpffs)
        .env_remove("APIARY_ENDPOINT");
    if let Some(ep) = endpoint {
        c.env("APIARY_ENDPOINT", ep);
    }
    Run::from(c.args(args).output().expect("run apiary"))
}

/// Names of the programs alive in the kernel (bpftool shows at most 15 characters).
fn kernel_prog_names() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The summary part of an error (up to the raw log, whose map addresses differ per load).
fn summary(stderr: &str) -> &str {
    stderr.split("\nverifier log:\n").next().unwrap_or(stderr)
}

/// One fixture and what its diagnosis must show.
struct Case {
    fixture: &'static str,
    /// `file:line: source text`, as printed after `at `.
    at: Option<&'static str>,
    /// `insn N: text`.
    insn: Option<&'static str>,
    message: &'static str,
    /// The program's name in the kernel (15 characters at most).
    kernel_name: &'static str,
    /// A register line (`R0 map_value_or_null(`), as a prefix.
    register: Option<&'static str>,
    hint: &'static str,
}

const CASES: &[Case] = &[
    Case {
        fixture: "verifier_null",
        kernel_name: "count_protocols",
        at: Some("verifier_null.bpf.c:17: *count += 1;"),
        insn: Some("insn 7: r1 = *(u64 *)(r0 +0)"),
        message: "R0 invalid mem access 'map_value_or_null'",
        register: Some("R0 map_value_or_null("),
        hint: "check the value returned by bpf_map_lookup_elem for NULL before using it",
    },
    Case {
        fixture: "verifier_packet",
        kernel_name: "drop_udp",
        at: Some("verifier_packet.bpf.c:14: if (ip->protocol == IPPROTO_UDP)"),
        insn: Some("insn 6: r1 = *(u8 *)(r1 +23)"),
        message: "invalid access to packet, off=23 size=1",
        register: Some("R1 pkt("),
        hint: "check that the packet is long enough before reading it",
    },
    Case {
        fixture: "verifier_loop",
        kernel_name: "sum_slots",
        at: Some("verifier_loop.bpf.c:20: if (*skip)"),
        insn: Some("insn 10: goto pc-1"),
        message: "infinite loop detected at insn 10",
        register: None,
        hint: "every path through the loop must move it towards an end",
    },
    Case {
        fixture: "verifier_stack",
        kernel_name: "record_packet",
        // The kernel names no instruction (it checks the call chain's stack after the whole
        // program verified): the place is the call, found in the object.
        at: Some("verifier_stack.bpf.c:30: save_copy(1, &r);"),
        insn: Some("insn 44: call save_copy"),
        message: "combined stack size of 2 calls is 656. Too large",
        register: None,
        hint: "the BPF stack is 512 bytes for a program and the functions it calls together",
    },
    Case {
        fixture: "verifier_too_large",
        kernel_name: "hash_slots",
        at: Some("verifier_too_large.bpf.c:21: h = (h ^ i) * 31;"),
        insn: Some("insn 10: r1 ^= r2"),
        message: "BPF program is too large. Processed 1000001 insn",
        register: Some("R2 0x"),
        hint: "the verifier gave up after 1,000,000 instructions",
    },
];

/// Checks the summary of `stderr` line by line against `c`, in the order a person reads it.
fn check(c: &Case, stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    let program_line = lines
        .iter()
        .position(|l| l.starts_with("error: the verifier rejected program \""));
    let Some(start) = program_line else {
        panic!("{}: no verifier heading in:\n{stderr}", c.fixture);
    };
    let log = lines
        .iter()
        .position(|l| *l == "verifier log:")
        .unwrap_or_else(|| panic!("{}: no raw log in:\n{stderr}", c.fixture));
    let summary = &lines[start + 1..log];
    let has = |want: String| {
        assert!(
            summary.iter().any(|l| l.starts_with(&want)),
            "{}: expected a line starting {want:?} in the summary:\n{stderr}",
            c.fixture
        );
    };
    match c.at {
        Some(at) => has(format!("  at {at}")),
        None => assert!(
            !summary.iter().any(|l| l.starts_with("  at ")),
            "{}: {stderr}",
            c.fixture
        ),
    }
    if let Some(insn) = c.insn {
        has(format!("  {insn}"));
    }
    has(format!("  verifier: {}", c.message));
    if let Some(r) = c.register {
        has(format!("  {r}"));
    }
    has(format!("  hint: {}", c.hint));
    // The raw log follows, ending with the verifier's statistics.
    assert!(
        lines[log + 1..].iter().any(|l| l.starts_with("processed ")),
        "{}: raw log tail missing:\n{stderr}",
        c.fixture
    );
}

#[test]
fn each_common_cause_is_explained_at_its_source_line() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    for c in CASES {
        let path = fixture(c.fixture);
        let started = std::time::Instant::now();
        let r = a.run(&["load", "file", "--path", path.to_str().unwrap()]);
        eprintln!("{}: rejected in {:?}", c.fixture, started.elapsed());
        assert!(!r.ok, "{} loaded:\n{}", c.fixture, r.stdout);
        assert_eq!(r.code, Some(4), "{}: {}", c.fixture, r.stderr);
        check(c, &r.stderr);
        // Nothing of the failed load stays: no record, no pin.
        assert_eq!(
            a.json(&["list", "programs"]),
            serde_json::json!([]),
            "{}",
            c.fixture
        );
        assert!(a.pins().is_empty(), "{}: {:?}", c.fixture, a.pins());
        assert!(
            !kernel_prog_names().iter().any(|n| n == c.kernel_name),
            "{}: program {} is still in the kernel",
            c.fixture,
            c.kernel_name
        );
    }
}

/// The same rejection through a daemon: the diagnosis travels as a structured gRPC detail (the
/// `apiary-verifier-bin` trailer), and the CLI prints exactly what it prints in-process.
#[test]
fn the_daemon_sends_the_same_diagnosis() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let mut d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let ep = d.endpoint();
    // The 1M-instruction case is left out: it takes the verifier seconds and adds nothing the
    // others do not show about the transport.
    for c in CASES.iter().filter(|c| c.fixture != "verifier_too_large") {
        let path = fixture(c.fixture);
        let args = ["load", "file", "--path", path.to_str().unwrap()];
        let remote = raw(&a, Some(&ep), &args);
        assert!(!remote.ok, "{} loaded through the daemon", c.fixture);
        assert_eq!(remote.code, Some(4), "{}: {}", c.fixture, remote.stderr);
        check(c, &remote.stderr);
        // In-process, on a store of its own (the daemon holds this one): the same summary.
        let local = Apiary::new();
        let here = raw(&local, None, &args);
        assert_eq!(
            summary(&remote.stderr),
            summary(&here.stderr),
            "{}",
            c.fixture
        );
        assert_eq!(
            remote.stderr.lines().count(),
            here.stderr.lines().count(),
            "{}: the raw log tail differs in length:\n{}\n---\n{}",
            c.fixture,
            remote.stderr,
            here.stderr
        );
        let listed = raw(&a, Some(&ep), &["list", "programs", "-o", "json"]);
        assert!(listed.ok, "{}", listed.stderr);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&listed.stdout).ok(),
            Some(serde_json::json!([])),
            "{}",
            c.fixture
        );
        assert!(a.pins().is_empty(), "{}: {:?}", c.fixture, a.pins());
    }
    assert!(d.terminate(10), "daemon did not stop");
}
