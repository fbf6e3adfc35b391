//! Objects written the ways public projects write them: maps pinned by name (every bpfman
//! example), section names only older loaders accept (`classifier/NAME`, `xdp/NAME`), `static`
//! entry points (aya, cilium/ebpf), and bpf_printk format strings in `.rodata`.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn getppid_n(n: u32) {
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
}

/// The `shared_calls` entry of `get program ID`'s maps.
fn map_of(a: &Apiary, id: i64, name: &str) -> Value {
    let p = a.json(&["get", "program", &id.to_string()]);
    p["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|m| m["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("program {id} has no map {name}: {p}"))
}

#[test]
fn maps_pinned_by_name_are_shared_inside_one_instance_only() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("pin_by_name");
    let path = obj.to_str().unwrap();
    let p1 = a.load_one(&["--path", path]);
    let p2 = a.load_one(&["--path", path]);

    // One map under the instance's own directory, none at the bpffs root.
    let pin = a.bpffs.join("maps/by-name/shared_calls");
    assert!(pin.exists(), "pinned by name inside apiary's directory");
    assert!(
        !Path::new("/sys/fs/bpf/shared_calls").exists(),
        "nothing escapes to the bpffs root"
    );
    let m1 = map_of(&a, p1, "shared_calls");
    let m2 = map_of(&a, p2, "shared_calls");
    assert_eq!(m1["kernel_id"], m2["kernel_id"], "one map, shared by name");
    assert_eq!(m1["pinned_by_name"], true);
    assert_eq!(m1["used_by"], serde_json::json!([p1, p2]));
    assert_ne!(
        map_of(&a, p1, "own_calls")["kernel_id"],
        map_of(&a, p2, "own_calls")["kernel_id"],
        "maps not pinned by name stay each load's own"
    );
    let text = a.ok(&["get", "program", &p2.to_string()]);
    assert!(
        text.contains(&format!("pinned by name, shared with {p1}")),
        "{text}"
    );

    // Both programs run and count into the one map.
    let l1 = a.attach(
        p1,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    let l2 = a.attach(
        p2,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    getppid_n(20);
    a.ok(&["detach", &l1.to_string()]);
    a.ok(&["detach", &l2.to_string()]);
    let own1 = a.counter(&format!("{p1}:own_calls"), 0);
    let own2 = a.counter(&format!("{p2}:own_calls"), 0);
    let shared = a.counter(&format!("{p1}:shared_calls"), 0);
    assert!(own1 >= 20 && own2 >= 20, "both ran: {own1} {own2}");
    assert_eq!(shared, own1 + own2, "both counted into the shared map");

    // An isolated instance never shares with this one.
    let b = Apiary::new();
    let q = b.load_one(&["--path", path]);
    assert_ne!(map_of(&b, q, "shared_calls")["kernel_id"], m1["kernel_id"]);
    assert!(b.bpffs.join("maps/by-name/shared_calls").exists());

    // A different map under the same name is refused with the reason, and nothing is left.
    let before = a.pins();
    let clash = fixture("pin_by_name_clash");
    let e = a.fails(&["load", "file", "--path", clash.to_str().unwrap()]);
    assert!(
        e.contains("shared_calls")
            && e.contains("pinned by name")
            && e.contains("type array -> hash"),
        "{e}"
    );
    assert_eq!(a.program_ids(), vec![p1, p2]);
    assert_eq!(a.pins(), before);

    // The pin stays while a program uses it, whichever loaded first, and goes with the last.
    a.ok(&["unload", &p1.to_string()]);
    assert!(pin.exists(), "still used by {p2}");
    let m = map_of(&a, p2, "shared_calls");
    assert_eq!(m["kernel_id"], m1["kernel_id"]);
    assert_eq!(m["owner_id"], p2);
    assert!(a.counter(&format!("{p2}:shared_calls"), 0) >= shared);
    let p3 = a.load_one(&["--path", path]);
    assert_eq!(map_of(&a, p3, "shared_calls")["kernel_id"], m1["kernel_id"]);
    a.ok(&["unload", "--force", &p2.to_string(), &p3.to_string()]);
    assert!(!pin.exists(), "the last user took the pin with it");
    // A map the kernel no longer holds after its last pin and user are gone.
    let id = m1["kernel_id"].as_u64().unwrap();
    assert!(
        eventually(5, || !a
            .json(&["list", "maps", "--all"])
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["kernel_id"].as_u64() == Some(id))),
        "map {id} was freed"
    );
}

#[test]
fn legacy_section_names_and_static_entry_points_load_and_run() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("legacy_sections");
    let path = obj.to_str().unwrap();

    // inspect lists the static programs, and no printk format string as a settable global.
    let info = a.json(&["inspect", path]);
    let names: Vec<&str> = info["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in ["tc_legacy", "xdp_legacy", "tp_static"] {
        assert!(names.contains(&n), "{n} listed: {names:?}");
    }
    assert!(
        !info["globals"].to_string().contains("____fmt"),
        "{}",
        info["globals"]
    );

    // The type comes from the user where libbpf cannot tell it from the section.
    let ids = a.load(&[
        "--path",
        path,
        "--programs",
        "tc:tc_legacy,xdp:xdp_legacy,tracepoint:tp_static",
    ]);
    let (tc, xdp, tp) = (ids[0], ids[1], ids[2]);
    let p = a.json(&["get", "program", &tc.to_string()]);
    assert_eq!(p["type"], "tc", "{p}");
    assert_eq!(p["kernel"]["prog_type"], "sched_cls", "{p}");
    let p = a.json(&["get", "program", &xdp.to_string()]);
    assert_eq!(p["kernel"]["prog_type"], "xdp", "{p}");
    // Internal maps are named after the object, as libbpf names them.
    assert!(
        p["maps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "legacy_s.rodata"),
        "{p}"
    );

    let hits = format!("{tc}:legacy_hits");
    a.attach(
        tp,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    getppid_n(5);
    assert!(
        a.counter(&hits, 2) >= 5,
        "the static tracepoint program ran"
    );

    let net = NetPair::new();
    a.attach(xdp, &["xdp", "--iface", &net.if_b, "--netns", &net.ns_b]);
    a.attach(
        tc,
        &[
            "tc",
            "--iface",
            &net.if_b,
            "--netns",
            &net.ns_b,
            "--direction",
            "ingress",
        ],
    );
    assert!(net.ping(3), "both pass traffic");
    assert!(a.counter(&hits, 1) >= 3, "the xdp/NAME program ran");
    assert!(a.counter(&hits, 0) >= 3, "the classifier/NAME program ran");

    // A type that needs its target in the section name cannot be given this way; apiary says
    // so and loads nothing.
    let b = Apiary::new();
    let e = b.fails(&[
        "load",
        "file",
        "--path",
        path,
        "--programs",
        "tp-btf:tc_legacy",
    ]);
    assert!(e.contains("tc_legacy") && e.contains("section"), "{e}");
    assert!(b.program_ids().is_empty());
}

/// `apiary run` of a tool with alternatives: all attach by default and run says which share a
/// hook; `--programs` picks.
#[test]
fn run_attaches_all_alternatives_or_the_chosen_ones() {
    if !privileged() {
        return;
    }
    use std::io::Write;
    use std::process::{Command, Stdio};
    let a = Apiary::new();
    let obj = fixture("alternatives");
    let run = |extra: &[&str]| -> (Vec<String>, Vec<Value>) {
        let mut target = Command::new(apiary_fixtures::uprobe_target())
            .args(["7", "wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn target");
        let tgid = format!("target_tgid={}", target.id());
        let mut args = vec![obj.to_str().unwrap(), "-o", "json", "--set", &tgid];
        args.extend(extra);
        let (run, notes) = start_run(&a, &args);
        target.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(target.wait().unwrap().success());
        // The buffers were open before "running", and a stopped run drains them.
        (notes, stop_run(run))
    };
    let variant = |events: &[Value], v: u64| events.iter().filter(|e| e["variant"] == v).count();

    let (notes, events) = run(&[]);
    let all = notes.join("\n");
    assert!(
        all.contains("getppid_a and getppid_b run on the same hook (event sys_enter_getppid)"),
        "{all}"
    );
    assert!(
        all.contains("enter_btf and enter_raw run on the same hook (event sys_enter)"),
        "{all}"
    );
    assert_eq!(
        (variant(&events, 0), variant(&events, 1)),
        (7, 7),
        "{events:?}"
    );

    let (notes, events) = run(&["--programs", "getppid_b"]);
    let all = notes.join("\n");
    assert!(!all.contains("same hook"), "{all}");
    assert!(
        all.contains("attached getppid_b") && !all.contains("attached getppid_a"),
        "{all}"
    );
    assert_eq!(
        (variant(&events, 0), variant(&events, 1)),
        (0, 7),
        "{events:?}"
    );

    let e = a.fails(&["run", obj.to_str().unwrap(), "--programs", "nope"]);
    assert!(
        e.contains("--programs nope: no such program") && e.contains("getppid_a"),
        "{e}"
    );
}

/// The errors a new user meets in the first hour say what is wrong and where.
#[test]
fn first_hour_errors_say_what_and_where() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    // A kernel function that is not in the kernel's BTF: named, instead of a bare ESRCH.
    let obj = fixture("refused");
    let e = a.fails(&[
        "load",
        "file",
        "--path",
        obj.to_str().unwrap(),
        "--programs",
        "fentry:on_missing",
    ]);
    assert!(
        e.contains("apiary_no_such_function") && e.contains("not in the kernel's BTF"),
        "{e}"
    );

    // A program type the kernel runs but apiary does not manage yet: apiary says it is apiary.
    let e = a.fails(&[
        "load",
        "file",
        "--path",
        fixture("unsupported").to_str().unwrap(),
    ]);
    assert!(
        e.contains("apiary does not support this yet") && !e.contains("kernel:"),
        "{e}"
    );

    // A USDT probe the binary does not have: named, with the probes it has.
    let usdt = a.load_one(&[
        "--path",
        fixture("usdt").to_str().unwrap(),
        "--programs",
        "usdt:on_hit",
    ]);
    let target = apiary_fixtures::usdt_target();
    let t = target.to_str().unwrap();
    let e = a.fails(&[
        "attach",
        &usdt.to_string(),
        "usdt",
        "--target",
        t,
        "--provider",
        "apiary",
        "--name",
        "miss",
    ]);
    assert!(
        e.contains("USDT probe apiary:miss") && e.contains("probes are: apiary:hit"),
        "{e}"
    );
    // A binary without probes says so, rather than "not found".
    let e = a.fails(&[
        "attach",
        &usdt.to_string(),
        "usdt",
        "--target",
        apiary_fixtures::uprobe_target().to_str().unwrap(),
        "--provider",
        "apiary",
        "--name",
        "hit",
    ]);
    assert!(e.contains("has no USDT probes"), "{e}");
    a.ok(&["unload", &usdt.to_string()]);

    // A chain that exists, but in another network namespace than the one asked about.
    let net = NetPair::new();
    let id = a.load_one(&[
        "--path",
        fixture("net").to_str().unwrap(),
        "--programs",
        "xdp:xdp_count",
    ]);
    a.attach(id, &["xdp", "--iface", &net.if_b, "--netns", &net.ns_b]);
    let e = a.fails(&["get", "chain", &net.if_b, "xdp"]);
    assert!(
        e.contains("host's network namespace") && e.contains(&format!("--netns {}", net.ns_b)),
        "{e}"
    );
    a.ok(&["get", "chain", &net.if_b, "xdp", "--netns", &net.ns_b]);

    // bpffs refuses dots in names: say so instead of a raw EPERM from mkdir. (In-process: a
    // daemon has its own --bpffs.)
    let dotted = format!("/sys/fs/bpf/{}.d", unique("apiary-dot-"));
    let r = a
        .cmd()
        .env_remove("APIARY_ENDPOINT")
        .env("APIARY_BPFFS", &dotted)
        .args([
            "load",
            "file",
            "--path",
            fixture("minimal").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(e.contains("does not allow a '.'"), "{e}");
    assert!(!Path::new(&dotted).exists());
}
