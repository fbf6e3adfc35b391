//! `apiary run` on objects written like real tools: an event struct that is only a local
//! variable's type (in DWARF, not BTF), records shorter or longer than their struct, an
//! execsnoop-style list of NUL-separated strings, and the aligned table form.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// This test process's tgid, which the fixtures filter on, and the calling thread's comm:
/// tests run as parallel threads of one process, so each keeps the events its own thread caused.
fn me() -> (u32, String) {
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
    (std::process::id(), comm.trim().to_string())
}

/// A running `apiary run`: its setup notes, and its stdout lines as they arrive.
struct Running {
    child: Child,
    notes: Vec<String>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

fn start(a: &Apiary, args: &[&str]) -> Running {
    let (mut child, err, notes) = spawn_run(a, args);
    // Keep draining stderr so the child never blocks on it; kept for failure messages.
    let rest = Arc::new(Mutex::new(String::new()));
    let sink = rest.clone();
    std::thread::spawn(move || {
        for l in err.lines() {
            let Ok(l) = l else { break };
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            s.push_str(&l);
            s.push('\n');
        }
    });
    let (tx, rx) = channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        notes,
        lines: rx,
        stderr: rest,
    }
}

impl Running {
    /// Calls getppid(), the fixtures' tracepoint, until `done` accepts the lines printed so far.
    /// Repeatedly rather than once: `apiary run` opens its perf buffers after it reports
    /// "running", and a sample sent before a reader exists is dropped by the kernel.
    fn trigger_until(&mut self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut got = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while !done(&got) {
            if std::time::Instant::now() > end {
                self.interrupt();
                let _ = self.child.wait();
                panic!(
                    "the run never printed what the test waited for: {got:?}\nnotes: {:?}\nlater: {}",
                    self.notes,
                    self.stderr.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
            // SAFETY: getppid has no preconditions.
            unsafe {
                libc::getppid();
            }
            while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                got.push(l);
            }
        }
        got
    }

    fn interrupt(&self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
    }

    fn stop(mut self) {
        self.interrupt();
        assert!(
            self.child.wait().unwrap().success(),
            "run exits 0 on Ctrl-C"
        );
    }

    fn note(&self, part: &str) -> bool {
        self.notes.iter().any(|n| n.contains(part))
    }
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// JSON events of `lines` from this thread (by comm), and whether there are any.
fn mine<'a>(events: &'a [Value], comm: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["comm"] == comm).collect()
}

#[test]
fn an_event_struct_only_in_dwarf_decodes_with_every_member() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let (pid, comm) = me();
    let tgid = format!("target_tgid={pid}");
    let obj = fixture("dwarf_event");
    let mut run = start(&a, &[obj.to_str().unwrap(), "-o", "json", "--set", &tgid]);
    assert!(
        run.note(
            "events from perf event array pb decoded as struct event (from the only struct that is in DWARF but not in BTF"
        ),
        "{:?}",
        run.notes
    );
    let lines = run.trigger_until(|l| !mine(&parse(l), &comm).is_empty());
    run.stop();
    let events = parse(&lines);
    assert!(
        events.iter().all(|e| e["pid"].as_u64() == Some(pid as u64)),
        "only this process's calls: {events:?}"
    );
    for e in mine(&events, &comm) {
        assert_eq!(e["delta"], -5);
        assert_eq!(e["ts"].as_u64(), Some(1234567890123));
        assert_eq!(e["op"], "OP_GETPPID", "enum by name");
        assert_eq!(e["range"], serde_json::json!({"lo": 3, "hi": 400}));
        assert_eq!(e["samples"], serde_json::json!([10, 20, 30]));
        assert_eq!(
            (&e["major"], &e["minor"], &e["urgent"]),
            (&Value::from(9), &Value::from(5), &Value::from(1)),
            "bitfields from DW_AT_bit_offset"
        );
        assert_eq!(e["u"]["word"], 0x01020304);
        assert_eq!(
            e["u"]["bytes"],
            serde_json::json!([4, 3, 2, 1]),
            "__u8 is data, not text"
        );
        assert_eq!(e["where"], "0xffff0000dead0000");
        assert_eq!(e["ok"], true);
        assert_eq!(
            e["extra"],
            serde_json::json!({"grid": [[0, 0, -3], [7, 0, 0]], "s": "SIGN_NEG"}),
            "typedef of an anonymous struct, 2-D array, signed enum"
        );
    }
}

#[test]
fn variable_length_records_and_argument_lists() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let (pid, comm) = me();
    let tgid = format!("target_tgid={pid}");
    let obj = fixture("varlen");
    let mut run = start(&a, &[obj.to_str().unwrap(), "-o", "json", "--set", &tgid]);
    for (kind, map, ty) in [
        ("ring buffer", "events", "struct event"),
        ("perf event array", "blobs", "struct blob"),
    ] {
        assert!(
            run.note(&format!(
                "events from {kind} {map} decoded as {ty} (from the struct named like the map; read from DWARF"
            )),
            "{:?}",
            run.notes
        );
    }
    let both = |l: &[String]| {
        let ev = parse(l);
        ev.iter()
            .any(|e| e["_map"] == "events" && e["comm"] == comm.as_str())
            && ev.iter().any(|e| e["_map"] == "blobs")
    };
    let lines = run.trigger_until(both);
    run.stop();
    let events = parse(&lines);
    let of = |m: &str| -> Vec<&Value> { events.iter().filter(|e| e["_map"] == m).collect() };
    for e in of("events") {
        assert_eq!(e["pid"].as_u64(), Some(pid as u64));
        assert_eq!(
            (&e["args_count"], &e["args_size"]),
            (&Value::from(3), &Value::from(23))
        );
        assert_eq!(
            e["args"],
            serde_json::json!(["first", "second arg", "third"]),
            "every NUL-separated string of a record shorter than its struct: {e}"
        );
        assert!(e.get("_truncated").is_none());
    }
    let len = 5 + (pid & 7) as usize;
    let want: String = (0..len)
        .map(|i| format!("{:02x}", (i * 17 + 1) as u8))
        .collect();
    for b in of("blobs") {
        assert_eq!(b["pid"].as_u64(), Some(pid as u64));
        assert_eq!(
            (&b["len"], &b["kind"]),
            (&Value::from(len), &Value::from(2))
        );
        assert_eq!(
            b["data"], want,
            "the flexible tail, as long as `len` says, without perf's padding"
        );
    }
}

#[test]
fn event_tables_are_aligned_under_their_header() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let (pid, comm) = me();
    let tgid = format!("target_tgid={pid}");
    let obj = fixture("dwarf_event");
    let mut run = start(&a, &[obj.to_str().unwrap(), "--set", &tgid]);
    let lines = run.trigger_until(|l| l.len() >= 3);
    run.stop();
    let (header, rows) = (&lines[0], &lines[1..]);
    // TIME is HH:MM:SS wide; PID, a u32, is right-aligned in 10 columns after it.
    assert_eq!(&header[..20], "TIME             PID", "{header:?}");
    let col = |name: &str| {
        let (inner, last) = (format!(" {name} "), format!(" {name}"));
        header
            .find(&inner)
            .or_else(|| header.ends_with(&last).then(|| header.len() - last.len()))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    let pid = pid.to_string();
    let comm = &comm[..comm.len().min(15)];
    let mut own = 0;
    // Every row is from this process (the tgid filter); rows caused by other test threads
    // differ only in COMM.
    for r in rows {
        // Numbers end under the end of their header, text starts under its start.
        let pid_end = col("PID") + 3;
        assert_eq!(
            &r[pid_end - pid.len()..pid_end],
            pid,
            "PID in {r:?}\n{header:?}"
        );
        assert_eq!(
            r.as_bytes()[pid_end - pid.len() - 1],
            b' ',
            "PID right-aligned: {r:?}"
        );
        let ts_end = col("TS") + 2;
        assert_eq!(
            &r[ts_end - 13..ts_end],
            "1234567890123",
            "TS in {r:?}\n{header:?}"
        );
        assert_eq!(
            &r[col("OP")..col("OP") + 10],
            "OP_GETPPID",
            "{r:?}\n{header:?}"
        );
        assert_eq!(
            &r[col("EXTRA.S")..],
            "SIGN_NEG",
            "the last column, unpadded: {r:?}"
        );
        if r[col("COMM")..].starts_with(&format!("{comm} ")) {
            own += 1;
        }
    }
    assert!(
        own > 0,
        "a row with this thread's comm {comm:?} under COMM: {rows:?}"
    );
}

#[test]
fn event_type_names_a_dwarf_struct_per_map() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let (pid, _) = me();
    let tgid = format!("target_tgid={pid}");
    let obj = fixture("varlen");
    let mut run = start(
        &a,
        &[
            obj.to_str().unwrap(),
            "-o",
            "json",
            "--set",
            &tgid,
            "--event-type",
            "blobs=struct blob",
        ],
    );
    assert!(
        run.note("blobs decoded as struct blob (from --event-type; read from DWARF"),
        "{:?}",
        run.notes
    );
    let both = |l: &[String]| {
        let ev = parse(l);
        ev.iter().any(|e| e["_map"] == "blobs" && e["kind"] == 2)
            && ev
                .iter()
                .any(|e| e["_map"] == "events" && e["args"][2] == "third")
    };
    let lines = run.trigger_until(both);
    run.stop();
    assert!(both(&lines));
}

#[test]
fn inspect_and_errors_name_dwarf_types() {
    // Both happen before anything loads: no root needed.
    let a = Apiary::new();
    let obj = fixture("varlen");
    let v = a.json(&["inspect", obj.to_str().unwrap()]);
    assert_eq!(v["event_types"]["events"], "struct event", "{v}");
    assert_eq!(v["event_types"]["blobs"], "struct blob", "{v}");
    // A package records them by name; running it looks them up in DWARF again.
    let pkg = a.state.path().join("varlen.package.json");
    a.ok(&[
        "package",
        obj.to_str().unwrap(),
        "-o",
        pkg.to_str().unwrap(),
    ]);
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pkg).unwrap()).unwrap();
    assert_eq!(p["event_types"]["events"], "struct event", "{p}");
    assert_eq!(p["event_types"]["blobs"], "struct blob", "{p}");
    let e = a.fails(&[
        "run",
        obj.to_str().unwrap(),
        "--event-type",
        "nosuch",
        "--duration",
        "1s",
    ]);
    assert!(
        e.contains("no such type in the object's BTF or DWARF; structs it defines: event, blob"),
        "{e}"
    );
    let e = a.fails(&[
        "run",
        obj.to_str().unwrap(),
        "--event-type",
        "evnts=event",
        "--duration",
        "1s",
    ]);
    assert!(e.contains("no map evnts"), "{e}");
}

#[test]
fn a_package_of_a_tool_with_dwarf_types_runs_with_them() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let pkg = a.state.path().join("varlen.package.json");
    a.ok(&[
        "package",
        fixture("varlen").to_str().unwrap(),
        "-o",
        pkg.to_str().unwrap(),
    ]);
    let (pid, _) = me();
    let tgid = format!("target_tgid={pid}");
    let mut run = start(&a, &[pkg.to_str().unwrap(), "-o", "json", "--set", &tgid]);
    assert!(
        run.note("events decoded as struct event (from the package, which carries the type the object's DWARF held)"),
        "the package carries the type its stripped object's DWARF held: {:?}",
        run.notes
    );
    let lines = run.trigger_until(|l| {
        let ev = parse(l);
        ev.iter().any(|e| e["_map"] == "events") && ev.iter().any(|e| e["_map"] == "blobs")
    });
    run.stop();
    let events = parse(&lines);
    assert!(events
        .iter()
        .filter(|e| e["_map"] == "events")
        .all(|e| e["args"] == serde_json::json!(["first", "second arg", "third"])));
}
