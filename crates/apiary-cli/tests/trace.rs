//! `apiary trace run`: bpftrace one-liners and objects, on this host and through the daemon's
//! Tracer service; Ctrl-C, durations and clients that vanish stop them with nothing left
//! loaded.

mod common;

use common::daemon::{Daemon, DaemonOpts};
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

fn have_bpftrace() -> bool {
    let found = Command::new("bpftrace")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("APIARY_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("bpftrace is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// A running `apiary trace run`: its stdout and stderr lines as they arrive.
struct Tracing {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines<R: std::io::Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn start(a: &Apiary, endpoint: Option<&str>, args: &[&str]) -> Tracing {
    let mut c = a.cmd();
    c.env_remove("APIARY_ENDPOINT");
    if let Some(e) = endpoint {
        c.args(["--endpoint", e]);
    }
    let mut child = c
        .args(["trace", "run"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apiary trace run");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    Tracing { child, out, err }
}

impl Tracing {
    /// Stdout lines until one satisfies `want` (all of them, that one last).
    fn wait_out(&self, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
        wait_for(&self.out, what, want)
    }

    fn wait_err(&self, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
        wait_for(&self.err, what, want)
    }

    fn interrupt(&self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
    }

    /// Wait for the exit; the rest of stdout and stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        let status = self.child.wait().expect("wait");
        let rest = |rx: &Receiver<String>| {
            let mut v = Vec::new();
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
                v.push(l);
            }
            v
        };
        (status, rest(&self.out), rest(&self.err))
    }
}

fn wait_for(rx: &Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = want(&l);
                got.push(l);
                if done {
                    return got;
                }
            }
            Err(_) => panic!("never saw {what}; got {got:?}"),
        }
    }
}

/// Kernel programs named `name` (bpftrace names its programs after their probe, cut to the
/// kernel's 15 characters).
fn progs_named(name: &str) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"].as_str() == Some(name))
                .filter_map(|p| p["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// A copy of cat under a name no other process has, so a count by comm is only ours.
fn unique_cat() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    // comm is cut at 15 characters.
    let name: String = unique("trc").chars().take(15).collect();
    let path = dir.path().join(&name);
    std::fs::copy("/bin/cat", &path).expect("copy cat");
    (dir, path, name)
}

fn run_cat(path: &std::path::Path, times: usize) {
    for _ in 0..times {
        let s = Command::new(path)
            .arg("/etc/hostname")
            .stdout(Stdio::null())
            .status()
            .expect("run cat copy");
        assert!(s.success());
    }
}

/// The one-liner counts openat() by the test's own process name; BEGIN prints once every probe
/// is attached. Ctrl-C to the CLI stops it, and the map still arrives.
fn one_liner_counts_and_ctrl_c_prints_maps(endpoint: Option<&str>) {
    let a = Apiary::new();
    let (_dir, cat, comm) = unique_cat();
    let script = format!(
        "BEGIN {{ printf(\"ready\\n\"); }} tracepoint:syscalls:sys_enter_openat /comm == \"{comm}\"/ {{ @opens[comm] = count(); }}"
    );
    // Programs of this name that exist already belong to someone else.
    let before = progs_named("sys_enter_opena");
    let t = start(&a, endpoint, &["-e", &script]);
    t.wait_out("ready", |l| l == "ready");
    let during: Vec<u64> = progs_named("sys_enter_opena")
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert!(!during.is_empty(), "bpftrace's program is in the kernel");
    run_cat(&cat, 3);
    t.interrupt();
    let (status, out, err) = t.finish();
    assert!(status.success(), "exit 0 on Ctrl-C: {out:?} {err:?}");
    let line = out
        .iter()
        .find(|l| l.starts_with(&format!("@opens[{comm}]: ")))
        .unwrap_or_else(|| panic!("the map printed after Ctrl-C: {out:?} {err:?}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3, "at least one openat per run of the copy: {line}");
    assert!(
        err.iter().any(|l| l.starts_with("stopped: exit status 0")),
        "{err:?}"
    );
    assert!(
        eventually(10, || {
            let now = progs_named("sys_enter_opena");
            during.iter().all(|i| !now.contains(i))
        }),
        "bpftrace's programs are gone"
    );
}

#[test]
fn one_liner_in_process() {
    if !privileged() || !have_bpftrace() {
        return;
    }
    one_liner_counts_and_ctrl_c_prints_maps(None);
}

#[test]
fn one_liner_through_the_daemon() {
    if !privileged() || !have_bpftrace() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    one_liner_counts_and_ctrl_c_prints_maps(Some(&d.endpoint()));
}

#[test]
fn duration_ends_a_trace_through_the_daemon_and_maps_print() {
    if !privileged() || !have_bpftrace() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let t = start(
        &a,
        Some(&d.endpoint()),
        &[
            "--duration",
            "1s",
            "-e",
            "BEGIN { @started[$1] = 1; } tracepoint:syscalls:sys_enter_getppid { @n = count(); }",
            "42",
        ],
    );
    let (status, out, err) = t.finish();
    assert!(status.success(), "{out:?} {err:?}");
    assert!(
        out.iter().any(|l| l == "@started[42]: 1"),
        "positional args reach bpftrace, and maps print at the end of a duration: {out:?}"
    );
    assert!(
        err.iter().any(|l| l.starts_with("stopped: exit status 0")),
        "{err:?}"
    );
}

#[test]
fn a_client_that_vanishes_stops_its_trace() {
    if !privileged() || !have_bpftrace() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let before = progs_named("sys_enter_getpp");
    let mut t = start(
        &a,
        Some(&d.endpoint()),
        &["-e", "BEGIN { printf(\"ready\\n\"); } tracepoint:syscalls:sys_enter_getppid { @n = count(); }"],
    );
    t.wait_out("ready", |l| l == "ready");
    let during: Vec<u64> = progs_named("sys_enter_getpp")
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert!(!during.is_empty());
    t.child.kill().expect("kill the client");
    let _ = t.child.wait();
    assert!(
        eventually(20, || {
            let now = progs_named("sys_enter_getpp");
            during.iter().all(|i| !now.contains(i))
        }),
        "the daemon interrupted bpftrace when its client went away"
    );
}

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
    fn release(mut self) {
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}

#[test]
fn an_object_streams_decoded_events_through_the_daemon() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let target = Target::new(5);
    let pid = target.0.id();
    let tgid = format!("target_tgid={pid}");
    let obj = fixture("events");
    let t = start(
        &a,
        Some(&d.endpoint()),
        &[
            obj.to_str().unwrap(),
            "-o",
            "json",
            "--set",
            &tgid,
            "--set",
            "multiplier=3",
        ],
    );
    let notes = t.wait_err("running", |l| l.starts_with("running"));
    assert!(
        notes.iter().any(|n| n.contains("decoded as struct event")),
        "{notes:?}"
    );
    target.release();
    let mut events = Vec::new();
    while events.len() < 5 {
        let l = t.wait_out("an event", |_| true).remove(0);
        let v: serde_json::Value =
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}"));
        events.push(v);
    }
    t.interrupt();
    let (status, _, err) = t.finish();
    assert!(status.success(), "{err:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["pid"].as_u64(), Some(pid as u64));
        assert_eq!(e["value"].as_u64(), Some(i as u64 * 3), "--set reached it");
        assert_eq!(e["comm"], "uprobe_target", "decoded by type");
    }
    assert!(
        err.iter().any(|l| l.contains("5 event(s)")),
        "the exit counts the events: {err:?}"
    );
}
