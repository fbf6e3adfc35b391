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
    fn wait_out(&self, what: &str, want: impl FnMut(&str) -> bool) -> Vec<String> {
        wait_for(&self.out, what, want)
    }

    fn wait_err(&self, what: &str, want: impl FnMut(&str) -> bool) -> Vec<String> {
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

fn wait_for(rx: &Receiver<String>, what: &str, mut want: impl FnMut(&str) -> bool) -> Vec<String> {
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

/// A one-liner counting openat() by process name `comm`; BEGIN prints "ready" once every probe
/// is attached.
fn opens_script(comm: &str) -> String {
    format!(
        "BEGIN {{ printf(\"ready\\n\"); }} tracepoint:syscalls:sys_enter_openat /comm == \"{comm}\"/ {{ @opens[comm] = count(); }}"
    )
}

/// The count on `opens_script`'s map line, which must be in `out` (printed `when`).
fn opens_counted(out: &[String], err: &[String], comm: &str, when: &str) -> u64 {
    let line = out
        .iter()
        .find(|l| l.starts_with(&format!("@opens[{comm}]: ")))
        .unwrap_or_else(|| panic!("the map printed {when}: {out:?} {err:?}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The one-liner counts openat() by the test's own process name; BEGIN prints once every probe
/// is attached. Ctrl-C to the CLI stops it, and the map still arrives.
fn one_liner_counts_and_ctrl_c_prints_maps(endpoint: Option<&str>) {
    let a = Apiary::new();
    let (_dir, cat, comm) = unique_cat();
    let script = opens_script(&comm);
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
    let n = opens_counted(&out, &err, &comm, "after Ctrl-C");
    assert!(n >= 3, "at least one openat per run of the copy: {n}");
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

/// A daemon told to stop (SIGTERM) ends a running trace as Ctrl-C would, and waits for it: the
/// client still gets the maps bpftrace prints at the end, and the exit.
#[test]
fn a_daemon_stopping_lets_a_running_trace_print_its_maps() {
    if !privileged() || !have_bpftrace() {
        return;
    }
    let a = Apiary::new();
    let mut d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let (_dir, cat, comm) = unique_cat();
    let script = opens_script(&comm);
    let t = start(&a, Some(&d.endpoint()), &["-e", &script]);
    t.wait_out("ready", |l| l == "ready");
    run_cat(&cat, 3);
    assert!(
        d.terminate(15),
        "the daemon stops gracefully: {}",
        d.log_text()
    );
    let (_, out, err) = t.finish();
    let n = opens_counted(&out, &err, &comm, "before the daemon exited");
    assert!(n >= 3, "{n}");
    assert!(
        err.iter().any(|l| l.starts_with("stopped: ")),
        "the client is told the trace stopped: {err:?}"
    );
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

#[test]
fn an_image_runs_through_the_daemon_with_its_settings() {
    if !privileged() {
        return;
    }
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = apiary_fixtures::RegistryProcess::start(reg_dir.path(), &|_| String::new());
    let a = Apiary::new();
    let image = format!("{}/apiary/trace-events:v1", reg.addr);
    let obj = fixture("events");
    a.ok(&[
        "image",
        "build",
        "--bytecode",
        obj.to_str().unwrap(),
        "-t",
        &image,
    ]);
    a.ok(&["image", "push", &image, "--tls-verify=false"]);
    // The daemon pulls with its own settings: this registry is plain HTTP.
    let config = a.state.path().join("apiary.toml");
    std::fs::write(
        &config,
        format!("[images]\ninsecure_registries = [\"{}\"]\n", reg.addr),
    )
    .unwrap();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            env: vec![("APIARY_CONFIG".into(), config.display().to_string())],
            ..Default::default()
        },
    );
    let target = Target::new(2);
    let pid = target.0.id();
    let tgid = format!("target_tgid={pid}");
    let t = start(
        &a,
        Some(&d.endpoint()),
        &["image", &image, "-o", "json", "--set", &tgid],
    );
    let notes = t.wait_err("running", |l| l.starts_with("running"));
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("image {image}: sha256:"))),
        "{notes:?}"
    );
    target.release();
    let mut events = Vec::new();
    while events.len() < 2 {
        let l = t.wait_out("an event", |_| true).remove(0);
        events.push(serde_json::from_str::<serde_json::Value>(&l).unwrap());
    }
    t.interrupt();
    let (status, _, err) = t.finish();
    assert!(status.success(), "{err:?}");
    assert!(events
        .iter()
        .all(|e| e["pid"] == pid && e["comm"] == "uprobe_target"));
}

// ------------------------------------------------------------------ trace jobs on Kubernetes
//
// The real kube-apiserver of scripts/kube-testenv.sh; simulated nodes are a Node object and an
// agent process each (own store, own bpffs dir, TLS listener on 127.0.0.1). They share one
// kernel, so which node ran a job is proven by the job's status and each agent's output store.

use common::kube::{kube, Kube};
use common::pki::{make_pki, Pki};
use std::path::PathBuf;

/// The client's flags for the test CA.
fn client_args(pki: &Pki) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for (flag, file) in [
        ("--client-cert", "client.pem"),
        ("--client-key", "client.key"),
        ("--server-ca", "ca.pem"),
    ] {
        v.push(PathBuf::from(flag));
        v.push(pki.path(file));
    }
    v
}

struct SimNode {
    name: String,
    apiary: Apiary,
    agent: Option<Child>,
    listen: std::net::SocketAddr,
    log: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl SimNode {
    fn new(k: &Kube, pki: &Pki, labels: &[(&str, &str)]) -> SimNode {
        let name = unique("trnode-").to_lowercase();
        let mut label_lines = format!("    kubernetes.io/hostname: {name}\n");
        for (l, v) in labels {
            label_lines.push_str(&format!("    {l}: \"{v}\"\n"));
        }
        k.ok(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{label_lines}"
            )),
        );
        let apiary = Apiary::new();
        let log = apiary.state.path().join("agent.log");
        let mut n = SimNode {
            name,
            apiary,
            agent: None,
            listen: common::daemon::free_port(),
            log,
            kubeconfig: k.kubeconfig.clone(),
            kubectl: k.kubectl.clone(),
        };
        n.start(pki);
        n
    }

    fn start(&mut self, pki: &Pki) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let socket = self.apiary.state.path().join("apiary.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["agent", "--node-name", &self.name, "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--socket")
            .arg(&socket)
            .args(["--listen", &self.listen.to_string()])
            .arg("--tls-cert")
            .arg(pki.path("server.pem"))
            .arg("--tls-key")
            .arg(pki.path("server.key"))
            .arg("--client-ca")
            .arg(pki.path("ca.pem"))
            .env("APIARY_STATE_DIR", self.apiary.state.path())
            .env("APIARY_BPFFS", &self.apiary.bpffs)
            .env_remove("APIARY_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start apiary agent");
        self.agent = Some(child);
        // Up once its listener answers and its address is published on its Node.
        let annotated = || {
            let out = Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args([
                    "get",
                    "node",
                    &self.name,
                    "-o",
                    "jsonpath={.metadata.annotations.apiary\\.io/agent-endpoint}",
                ])
                .output()
                .expect("kubectl");
            String::from_utf8_lossy(&out.stdout).contains(&self.listen.to_string())
        };
        assert!(
            eventually(30, || std::net::TcpStream::connect(self.listen).is_ok()
                && annotated()),
            "the agent did not come up:\n{}",
            self.log_text()
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// This agent's kept output of `job`, if it has any.
    fn kept(&self, job: &str) -> Option<PathBuf> {
        let d = self.apiary.state.path().join("trace-jobs").join(job);
        d.exists().then_some(d)
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "node", &self.name, "--wait=false"])
            .output();
    }
}

/// Start `apiary trace ARGS` against the cluster with the client certificates.
fn start_job_cmd(k: &Kube, pki: &Pki, args: &[&str]) -> Tracing {
    let mut c = Command::new(env!("CARGO_BIN_EXE_apiary"));
    let mut child = c
        .env_remove("APIARY_ENDPOINT")
        .args(client_args(pki))
        .arg("trace")
        .args(args)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apiary trace");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    Tracing { child, out, err }
}

fn trace_cli(k: &Kube, pki: &Pki, args: &[&str]) -> Run {
    Run::from(
        Command::new(env!("CARGO_BIN_EXE_apiary"))
            .env_remove("APIARY_ENDPOINT")
            .args(client_args(pki))
            .arg("trace")
            .args(args)
            .arg("--kubeconfig")
            .arg(&k.kubeconfig)
            .output()
            .expect("apiary trace"),
    )
}

/// The job's name, from "trace job NAME on ..." on stderr.
/// A bpftrace job on `target` counting getppid() calls, once it runs: the client, the job's
/// name, and the ids of the programs bpftrace loaded for it.
fn start_counting_job(k: &Kube, pki: &Pki, target: &str) -> (Tracing, String, Vec<u64>) {
    let before = progs_named("sys_enter_getpp");
    let t = start_job_cmd(
        k,
        pki,
        &["run", target, "-e", "BEGIN { printf(\"ready\\n\"); } tracepoint:syscalls:sys_enter_getppid { @n = count(); }"],
    );
    let job = job_name(&t);
    t.wait_out("ready", |l| l.ends_with("ready"));
    let during: Vec<u64> = progs_named("sys_enter_getpp")
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert!(!during.is_empty());
    (t, job, during)
}

fn job_name(t: &Tracing) -> String {
    let l = t.wait_err("the job's name", |l| l.starts_with("trace job "));
    l.last().unwrap().split(' ').nth(2).unwrap().to_string()
}

fn node_phase(k: &Kube, job: &str, node: &str) -> Option<serde_json::Value> {
    let j = k.get("tracejob", job)?;
    let s = &j["status"]["nodes"][node];
    (!s.is_null()).then(|| s.clone())
}

fn cluster() -> Option<(Kube, Pki)> {
    if !privileged() || !have_bpftrace() {
        return None;
    }
    let k = kube()?;
    k.install();
    Some((k, make_pki()))
}

#[test]
fn job_on_one_node_only_then_logs_and_delete() {
    let Some((k, pki)) = cluster() else { return };
    let a = SimNode::new(&k, &pki, &[]);
    let b = SimNode::new(&k, &pki, &[]);
    let (_dir, cat, comm) = unique_cat();
    let script = opens_script(&comm);
    let before = progs_named("sys_enter_opena");
    let target = format!("node/{}", a.name);
    let t = start_job_cmd(&k, &pki, &["run", &target, "-e", &script]);
    let job = job_name(&t);
    let got = t.wait_out("ready from node A", |l| l.ends_with("ready"));
    assert!(
        got.last().unwrap().starts_with(&a.name),
        "lines carry their node: {got:?}"
    );
    let during: Vec<u64> = progs_named("sys_enter_opena")
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    // Other tests may trace the same syscall meanwhile: which node ran it is in the status.
    assert!(!during.is_empty(), "bpftrace runs");
    run_cat(&cat, 3);
    t.interrupt();
    let (status, out, err) = t.finish();
    assert!(status.success(), "{out:?} {err:?}");
    let want = format!("@opens[{comm}]: ");
    let line = out
        .iter()
        .find(|l| l.starts_with(&a.name) && l.contains(&want))
        .unwrap_or_else(|| panic!("node A's map after Ctrl-C: {out:?} {err:?}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3, "{line}");
    // Node A: Stopped, with its output kept; node B: no entry, nothing in its store.
    let s = node_phase(&k, &job, &a.name).expect("node A's entry");
    assert_eq!(s["phase"], "Stopped", "{s}");
    assert_eq!(s["exitCode"], 0);
    assert!(s["outputBytes"].as_u64().unwrap() > 0);
    assert!(
        node_phase(&k, &job, &b.name).is_none(),
        "node B has no entry"
    );
    assert!(b.kept(&job).is_none(), "node B's agent ran nothing");
    assert!(a.kept(&job).is_some());
    assert!(
        eventually(10, || {
            let now = progs_named("sys_enter_opena");
            during.iter().all(|i| !now.contains(i))
        }),
        "nothing stays loaded"
    );

    // The kept output, after the job ended.
    let r = trace_cli(&k, &pki, &["logs", &job]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&a.name) && l.contains(&want)),
        "{}",
        r.stdout
    );
    let r = trace_cli(&k, &pki, &["get"]);
    assert!(
        r.ok && r.stdout.contains(&job) && r.stdout.contains("Stopped"),
        "{}",
        r.stdout
    );

    // Delete: the job and its kept output go.
    let r = trace_cli(&k, &pki, &["delete", &job]);
    assert!(r.ok, "{}", r.stderr);
    assert!(k.get("tracejob", &job).is_none());
    assert!(
        eventually(10, || a.kept(&job).is_none()),
        "node A removed the kept output"
    );
}

#[test]
fn selector_job_merges_two_nodes_and_decodes_object_events() {
    let Some((k, pki)) = cluster() else { return };
    let sel = unique("sel").to_lowercase();
    let a = SimNode::new(&k, &pki, &[("trace-sel", &sel)]);
    let b = SimNode::new(&k, &pki, &[("trace-sel", &sel)]);
    let _other = SimNode::new(&k, &pki, &[]);
    let selector = format!("trace-sel={sel}");

    // A bpftrace script on both, JSON lines with a node field each.
    let t = start_job_cmd(
        &k,
        &pki,
        &[
            "run",
            "-l",
            &selector,
            "--duration",
            "1s",
            "-o",
            "json",
            "-e",
            "BEGIN { printf(\"hello\\n\"); }",
        ],
    );
    let job = job_name(&t);
    let (status, out, err) = t.finish();
    assert!(status.success(), "{out:?} {err:?}");
    let hellos: Vec<String> = out
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["line"] == "hello")
        .map(|v| v["node"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec![a.name.clone(), b.name.clone()];
    want.sort();
    let mut got = hellos.clone();
    got.sort();
    assert_eq!(got, want, "one hello per selected node, tagged: {out:?}");
    for n in [&a, &b] {
        assert_eq!(node_phase(&k, &job, &n.name).unwrap()["phase"], "Stopped");
    }
    assert!(
        _other.kept(&job).is_none(),
        "the unselected node ran nothing"
    );

    // An object with typed events, decoded on both nodes.
    let target = Target::new(3);
    let pid = target.0.id();
    let obj = fixture("events");
    let tgid = format!("target_tgid={pid}");
    let t = start_job_cmd(
        &k,
        &pki,
        &[
            "run",
            "-l",
            &selector,
            "-o",
            "json",
            obj.to_str().unwrap(),
            "--set",
            &tgid,
        ],
    );
    let job2 = job_name(&t);
    // Both nodes report "running" (their event buffers are open) before the target goes.
    let mut running = std::collections::BTreeSet::new();
    t.wait_out("both nodes running", |l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        if v["line"].as_str().is_some_and(|s| s.starts_with("running")) {
            running.insert(v["node"].as_str().unwrap_or_default().to_string());
        }
        running.len() == 2
    });
    target.release();
    let mut events: Vec<serde_json::Value> = Vec::new();
    while events.len() < 6 {
        let l = t.wait_out("an event", |_| true).remove(0);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v.get("pid").is_some() {
            events.push(v);
        }
    }
    t.interrupt();
    let (status, _, err) = t.finish();
    assert!(status.success(), "{err:?}");
    for n in [&a.name, &b.name] {
        let mine: Vec<_> = events.iter().filter(|e| e["node"] == n.as_str()).collect();
        assert_eq!(mine.len(), 3, "three decoded events from {n}: {events:?}");
        assert!(mine
            .iter()
            .all(|e| e["pid"] == pid && e["comm"] == "uprobe_target"));
    }
    for j in [&job, &job2] {
        let _ = trace_cli(&k, &pki, &["delete", j]);
    }
}

#[test]
fn deadline_and_a_killed_agent_end_jobs_clearly() {
    let Some((k, pki)) = cluster() else { return };
    let mut a = SimNode::new(&k, &pki, &[]);
    let target = format!("node/{}", a.name);

    // The deadline stops the job; the maps still arrive.
    let t = start_job_cmd(
        &k,
        &pki,
        &[
            "run",
            &target,
            "--deadline",
            "2s",
            "-e",
            "BEGIN { @begun = 1; }",
        ],
    );
    let job = job_name(&t);
    let (status, out, err) = t.finish();
    assert!(status.success(), "{out:?} {err:?}");
    assert!(out.iter().any(|l| l.ends_with("@begun: 1")), "{out:?}");
    assert_eq!(node_phase(&k, &job, &a.name).unwrap()["phase"], "Stopped");

    // The agent killed mid-job: bpftrace goes with it; the restarted agent says Failed.
    let (t, job2, during) = start_counting_job(&k, &pki, &target);
    a.kill9();
    assert!(
        eventually(20, || {
            let now = progs_named("sys_enter_getpp");
            during.iter().all(|i| !now.contains(i))
        }),
        "bpftrace died with its agent: nothing stays loaded"
    );
    a.start(&pki);
    assert!(
        eventually(30, || node_phase(&k, &job2, &a.name)
            .is_some_and(
                |s| s["phase"] == "Failed" && s["error"] == "agent restarted"
            )),
        "{:?}\n{}",
        node_phase(&k, &job2, &a.name),
        a.log_text()
    );
    let (status, _, err) = t.finish();
    assert!(!status.success(), "the client reports the failure: {err:?}");
    assert!(err.iter().any(|l| l.contains("agent restarted")), "{err:?}");

    // A node whose agent is down: the job says Pending there until the agent is back and
    // starts it; the client waits for it and then streams.
    a.kill9();
    let t = start_job_cmd(
        &k,
        &pki,
        &[
            "run",
            &target,
            "--duration",
            "1s",
            "-e",
            "BEGIN { printf(\"late\\n\"); }",
        ],
    );
    let job3 = job_name(&t);
    assert!(
        eventually(20, || node_phase(&k, &job3, &a.name)
            .is_some_and(|s| s["phase"] == "Pending")),
        "{:?}",
        node_phase(&k, &job3, &a.name)
    );
    let listed = trace_cli(&k, &pki, &["get"]);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with(&job3) && l.contains("Pending")),
        "{}",
        listed.stdout
    );
    a.start(&pki);
    let (status, out, err) = t.finish();
    assert!(status.success(), "{out:?} {err:?}");
    assert!(out.iter().any(|l| l.ends_with("late")), "{out:?}");
    assert_ne!(node_phase(&k, &job3, &a.name).unwrap()["phase"], "Pending");
    for j in [&job, &job2, &job3] {
        let _ = trace_cli(&k, &pki, &["delete", j]);
    }
}

#[test]
fn attach_replays_then_follows_and_its_ctrl_c_stops_the_job() {
    let Some((k, pki)) = cluster() else { return };
    let a = SimNode::new(&k, &pki, &[]);
    let target = format!("node/{}", a.name);
    let run = start_job_cmd(
        &k,
        &pki,
        &[
            "run",
            &target,
            "-e",
            "BEGIN { printf(\"ready\\n\"); @begun = 1; }",
        ],
    );
    let job = job_name(&run);
    run.wait_out("ready", |l| l.ends_with("ready"));
    // A second client: the kept output first, then it follows the run.
    let attach = start_job_cmd(&k, &pki, &["attach", &job]);
    attach.wait_out("the replayed output", |l| l.ends_with("ready"));
    attach.interrupt();
    let (status, out, err) = attach.finish();
    assert!(status.success(), "{out:?} {err:?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with(&a.name) && l.ends_with("@begun: 1")),
        "attach's Ctrl-C stopped the job and the map reached it: {out:?}"
    );
    // The first client saw the same end.
    let (status, out, err) = run.finish();
    assert!(status.success(), "{out:?} {err:?}");
    assert!(out.iter().any(|l| l.ends_with("@begun: 1")), "{out:?}");
    assert_eq!(node_phase(&k, &job, &a.name).unwrap()["phase"], "Stopped");
    // logs -f of an ended job: the kept output, then the end.
    let r = trace_cli(&k, &pki, &["logs", "-f", &job, "-o", "json"]);
    assert!(r.ok, "{}", r.stderr);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["node"] == a.name.as_str() && v["line"] == "@begun: 1"),
        "{lines:?}"
    );
    let _ = trace_cli(&k, &pki, &["delete", &job]);
}

#[test]
fn deleting_a_running_job_stops_it_and_removes_its_output() {
    let Some((k, pki)) = cluster() else { return };
    let a = SimNode::new(&k, &pki, &[]);
    let target = format!("node/{}", a.name);
    let (t, job, during) = start_counting_job(&k, &pki, &target);
    assert!(a.kept(&job).is_some());
    let r = trace_cli(&k, &pki, &["delete", &job]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        eventually(20, || {
            let now = progs_named("sys_enter_getpp");
            during.iter().all(|i| !now.contains(i))
        }),
        "the agent stopped bpftrace when its job was deleted"
    );
    assert!(
        eventually(20, || a.kept(&job).is_none()),
        "and removed the kept output"
    );
    // The client's stream ended with the run; the job is gone, so there is no status to show.
    let (_, _, err) = t.finish();
    assert!(
        err.iter()
            .any(|l| l == &format!("trace job {job} was deleted")),
        "{err:?}"
    );
}

#[test]
fn a_script_bpftrace_refuses_fails_the_job_with_its_message() {
    let Some((k, pki)) = cluster() else { return };
    let a = SimNode::new(&k, &pki, &[]);
    let target = format!("node/{}", a.name);
    let t = start_job_cmd(&k, &pki, &["run", &target, "-e", "BEGIN { nonsense("]);
    let job = job_name(&t);
    let (status, out, err) = t.finish();
    assert!(!status.success(), "{out:?} {err:?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with(&a.name) && l.contains("ERROR")),
        "bpftrace's own message came back, tagged: {out:?}"
    );
    let s = node_phase(&k, &job, &a.name).expect("node A's entry");
    assert_eq!(s["phase"], "Failed", "{s}");
    assert_eq!(s["exitCode"], 1, "{s}");
    assert!(
        err.iter()
            .any(|l| l.contains("bpftrace exited with status 1")),
        "{err:?}"
    );
    let _ = trace_cli(&k, &pki, &["delete", &job]);
}
