//! `apiary run`, `inspect` and `package`: one command from object to decoded events.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

/// A process that makes `n` getppid() calls once released.
struct Target(Child);

impl Target {
    fn new(n: u32) -> Target {
        Target(
            Command::new(apiary_fixtures::uprobe_target())
                .args([n.to_string().as_str(), "wait"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn target"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn release(mut self) {
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}

/// The kernel ids `apiary run` reported attaching ("attached NAME (kernel id N) to ...").
fn kernel_ids(notes: &[String]) -> Vec<u64> {
    notes
        .iter()
        .filter_map(|n| {
            n.split("(kernel id ")
                .nth(1)?
                .split(')')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn gone(ids: &[u64]) -> bool {
    assert!(!ids.is_empty());
    eventually(10, || {
        let live = Apiary::kernel_prog_ids();
        ids.iter().all(|i| !live.contains(i))
    })
}

#[test]
fn ring_buffer_events_are_decoded_and_globals_change_them() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let t = Target::new(5);
    let tgid = format!("target_tgid={}", t.pid());
    let obj = fixture("events");
    let (run, notes) = start_run(
        &a,
        &[
            obj.to_str().unwrap(),
            "-o",
            "json",
            "--set",
            &tgid,
            "--set",
            "multiplier=3",
            "--set",
            "flag_events=true",
        ],
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("attached on_getppid (kernel id")
                && n.ends_with("to tracepoint syscalls/sys_enter_getppid")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("decoded as struct event (from the map's BTF value type)")),
        "{notes:?}"
    );
    let pid = t.pid() as u64;
    t.release();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = stop_run(run);
    assert_eq!(events.len(), 5, "one event per getppid(): {events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["pid"].as_u64(), Some(pid));
        assert_eq!(e["seq"].as_u64(), Some(i as u64));
        assert_eq!(
            e["value"].as_u64(),
            Some(i as u64 * 3),
            "--set multiplier=3 reached the program"
        );
        assert_eq!(e["kind"], "KIND_ENTER", "enums decode by name");
        assert_eq!(e["comm"], "uprobe_target", "char arrays decode as strings");
        assert_eq!(
            e["where"],
            serde_json::json!({"x": 3, "y": 4}),
            "nested structs"
        );
        assert_eq!(e["samples"], serde_json::json!([10, 20, 30]), "arrays");
        assert_eq!(e["flagged"], true, "a .rodata bool set with --set true");
    }
    assert!(
        gone(&kernel_ids(&notes)),
        "Ctrl-C detached and unloaded everything"
    );
}

#[test]
fn perf_buffer_with_eunomia_style_type_and_duration() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let t = Target::new(3);
    let tgid = format!("target_tgid={}", t.pid());
    let obj = fixture("events_perf");
    let mut child = a
        .cmd()
        .args([
            "run",
            obj.to_str().unwrap(),
            "-o",
            "json",
            "--set",
            &tgid,
            "--duration",
            "1500ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "running" means the perf buffers are open: everything sent from then on arrives.
    let mut errs = BufReader::new(child.stderr.take().unwrap());
    let mut err = String::new();
    while !err.contains("running for") {
        assert_ne!(
            errs.read_line(&mut err).unwrap(),
            0,
            "run exited early: {err}"
        );
    }
    t.release();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    errs.read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    assert!(
        err.contains("decoded as struct event (from the global pointer unused_event)"),
        "{err}"
    );
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{out}");
    assert!(events
        .iter()
        .all(|e| e["value"] == 42 && e["kind"] == "KIND_OTHER"));
    assert!(
        gone(&kernel_ids(
            &err.lines().map(String::from).collect::<Vec<_>>()
        )),
        "--duration ended the run and unloaded it"
    );
}

/// Serve `body` over HTTP on 127.0.0.1 for as many requests as come, until the test ends.
fn serve(body: Vec<u8>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn run_from_a_url_and_from_a_package() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("events");
    let pkg = a.state.path().join("events.package.json");
    a.ok(&[
        "package",
        obj.to_str().unwrap(),
        "-o",
        pkg.to_str().unwrap(),
    ]);
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pkg).unwrap()).unwrap();
    assert_eq!(p["format"], "apiary-package/v1");
    assert_eq!(p["event_types"]["events"], "struct event");
    assert_eq!(p["programs"][0]["name"], "on_getppid");
    let size = std::fs::metadata(&pkg).unwrap().len();
    assert!(
        size < 64 * 1024,
        "a package of a small tool stays small: {size} bytes"
    );

    let obj_url = format!("{}/events.bpf.o", serve(std::fs::read(&obj).unwrap()));
    let pkg_url = format!(
        "{}/events.package.json",
        serve(std::fs::read(&pkg).unwrap())
    );
    for source in [obj_url.as_str(), pkg.to_str().unwrap(), pkg_url.as_str()] {
        let t = Target::new(2);
        let tgid = format!("target_tgid={}", t.pid());
        let (run, _) = start_run(&a, &[source, "-o", "json", "--set", &tgid]);
        t.release();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let events = stop_run(run);
        assert_eq!(events.len(), 2, "{source}: {events:?}");
        assert_eq!(events[1]["seq"], 1);
    }
    // A tampered package is refused before anything is loaded.
    let mut bad: Value = p.clone();
    bad["sha256"] = Value::String("00".repeat(32));
    let bad_path = a.state.path().join("bad.package.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let e = a.fails(&["run", bad_path.to_str().unwrap(), "--duration", "1s"]);
    assert!(e.contains("digest mismatch"), "{e}");
    let e = a.fails(&["run", "http://127.0.0.1:1/nothing.o", "--duration", "1s"]);
    assert!(e.contains("cannot fetch"), "{e}");
}

#[test]
fn inspect_lists_programs_maps_globals_and_event_types() {
    let a = Apiary::new();
    let v = a.json(&["inspect", fixture("events").to_str().unwrap()]);
    assert_eq!(v["license"], "GPL");
    assert_eq!(v["btf"], true);
    assert_eq!(v["programs"][0]["type"], "tracepoint");
    assert_eq!(
        v["programs"][0]["attach"],
        "tracepoint syscalls/sys_enter_getppid"
    );
    let events = v["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "events")
        .unwrap();
    assert_eq!(events["type"], "ringbuf");
    assert_eq!(events["value"], "struct event");
    let g = |n: &str| {
        v["globals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(g("multiplier")["type"], "__u64");
    assert_eq!(g("multiplier")["default"], 1);
    assert_eq!(g("flag_events")["default"], false);
    assert_eq!(g("seq")["section"], ".bss");
    assert_eq!(v["event_types"]["events"], "struct event");
    let e = a.fails(&["inspect", "/nonexistent.o"]);
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn run_reports_missing_types_and_bad_flags() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("events");
    let o = obj.to_str().unwrap();
    let net = fixture("net");
    let before = Apiary::kernel_prog_ids().len();
    // Each is refused before anything is loaded.
    for (args, want) in [
        (
            vec!["run", o, "--event-type", "nosuch"],
            "--event-type nosuch: no such type",
        ),
        (vec!["run", o, "--set", "multiplier=x"], "multiplier"),
        (vec!["run", o, "--dump-map", "nosuch"], "no such map"),
        (vec!["run", net.to_str().unwrap()], "needs --iface"),
    ] {
        let r = a.run(&args);
        assert!(!r.ok, "{args:?} should fail");
        assert!(
            r.stderr.contains(want) && !r.stderr.contains("attached"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert!(
        Apiary::kernel_prog_ids().len() <= before + 4,
        "nothing was left loaded"
    );
}
