//! Test harness: an isolated apiary instance (own store, own bpffs dir) driven through the real
//! binary, network namespaces joined by veth pairs, and cgroups. Everything made here is removed
//! on drop, also when a test fails.
#![allow(dead_code)]

pub mod kube;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

// Shared with the other crates' tests (tests/fixtures); not every suite uses each.
#[allow(unused_imports)]
pub use apiary_fixtures::{openssl_keypair, privileged};

/// Poll `cond` for up to `secs` seconds: the kernel frees programs and links asynchronously
/// (after RCU grace periods), so "gone" is observed shortly after the unpin, not at once.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn fixture(name: &str) -> PathBuf {
    apiary_fixtures::object(name)
}

pub struct Apiary {
    pub state: tempfile::TempDir,
    pub bpffs: PathBuf,
}

pub struct Run {
    pub ok: bool,
    /// The exit status (None if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Apiary {
    pub fn new() -> Apiary {
        let bpffs = PathBuf::from("/sys/fs/bpf").join(unique("apiary-test-"));
        Apiary {
            state: tempfile::tempdir().expect("tempdir"),
            bpffs,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_apiary"));
        c.env("APIARY_STATE_DIR", self.state.path())
            .env("APIARY_BPFFS", &self.bpffs);
        daemon::route(&mut c, self.state.path(), &self.bpffs);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("run apiary"))
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(r.ok, "apiary {args:?} failed:\n{}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// Run with `-o json` and parse.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("apiary {args:?}: bad JSON ({e}):\n{out}"))
    }

    /// Run, require failure, return stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            !r.ok,
            "apiary {args:?} should have failed but printed:\n{}",
            r.stdout
        );
        assert!(
            r.stderr.starts_with("error: "),
            "error output should start with 'error: ': {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("panicked"),
            "apiary panicked: {}",
            r.stderr
        );
        r.stderr
    }

    /// Load and return the new program ids.
    pub fn load(&self, args: &[&str]) -> Vec<i64> {
        let mut a = vec!["load", "file"];
        a.extend(args);
        let v = self.json(&a);
        v.as_array()
            .expect("array")
            .iter()
            .map(|p| p["id"].as_i64().expect("id"))
            .collect()
    }

    pub fn load_one(&self, args: &[&str]) -> i64 {
        let ids = self.load(args);
        assert_eq!(ids.len(), 1, "expected one program");
        ids[0]
    }

    pub fn attach(&self, id: i64, args: &[&str]) -> i64 {
        let ids = id.to_string();
        let mut a = vec!["attach", ids.as_str()];
        a.extend(args);
        self.json(&a)["id"].as_i64().expect("link id")
    }

    /// Map entries as (key, value) JSON pairs.
    pub fn map_entries(&self, map: &str) -> Vec<(Value, Value)> {
        let v = self.json(&["map", "dump", map]);
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| (e["key"].clone(), e["value"].clone()))
            .collect()
    }

    /// Value of an array map at index 0 (or a single-entry map), as u64.
    pub fn counter(&self, map: &str, key: u64) -> u64 {
        self.map_entries(map)
            .into_iter()
            .find(|(k, _)| k.as_u64() == Some(key))
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(0)
    }

    pub fn program_ids(&self) -> Vec<i64> {
        self.json(&["list", "programs"])
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|p| p["id"].as_i64())
            .collect()
    }

    /// Everything under the pin root (files only).
    pub fn pins(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.bpffs, &mut v);
        v.sort();
        v
    }

    /// Kernel program ids currently alive, system-wide.
    pub fn kernel_prog_ids() -> Vec<u64> {
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show"])
            .output()
            .expect("bpftool");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
        v.as_array()
            .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Apiary {
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .run(&["list", "programs", "-o", "json"])
            .stdout
            .parse::<Value>()
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["id"].as_i64().map(|i| i.to_string()))
            .collect();
        if !ids.is_empty() {
            let mut a = vec!["unload", "--force"];
            a.extend(ids.iter().map(String::as_str));
            let _ = self.run(&a);
        }
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}

/// Two network namespaces joined by a veth pair: `a` (169.254.N.1) and `b` (169.254.N.2).
/// Link-local addresses keep test traffic inside the namespaces this test made.
pub struct NetPair {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub ip_a: String,
    pub ip_b: String,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetPair {
    pub fn new() -> NetPair {
        let id = unique("");
        let n = (SEQ.fetch_add(1, Ordering::SeqCst) % 250) + 1;
        let octet = ((std::process::id() as usize + n) % 250) + 1;
        let p = NetPair {
            ns_a: format!("apa{id}"),
            ns_b: format!("apb{id}"),
            if_a: format!("va{}", &id[id.len().saturating_sub(8)..]),
            if_b: format!("vb{}", &id[id.len().saturating_sub(8)..]),
            ip_a: format!("169.254.{octet}.1"),
            ip_b: format!("169.254.{octet}.2"),
        };
        for ns in [&p.ns_a, &p.ns_b] {
            sh(&["ip", "netns", "add", ns]);
            // No IPv6 on the pair: its router solicitations and MLD reports would reach the
            // programs under test at random times and blur the counts tests compare.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        sh(&[
            "ip", "link", "add", &p.if_a, "netns", &p.ns_a, "type", "veth", "peer", "name",
            &p.if_b, "netns", &p.ns_b,
        ]);
        for (ns, ifc, ip) in [(&p.ns_a, &p.if_a, &p.ip_a), (&p.ns_b, &p.if_b, &p.ip_b)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                ifc,
            ]);
            sh(&["ip", "-n", ns, "link", "set", ifc, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    /// Ping b from a; true if all replies came back.
    pub fn ping(&self, count: u32) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_a,
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.01",
                "-W",
                "1",
                "-q",
                &self.ip_b,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Ping a from b (traffic leaves b's interface: b's egress).
    pub fn ping_from_b(&self, count: u32) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_b,
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.01",
                "-W",
                "1",
                "-q",
                &self.ip_a,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A cgroup v2 directory under the unified hierarchy, removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

pub fn cgroup_root() -> PathBuf {
    for p in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(p).join("cgroup.procs").exists()
            && Path::new(p).join("cgroup.controllers").exists()
        {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("/sys/fs/cgroup/unified")
}

impl Cgroup {
    pub fn new() -> Cgroup {
        let path = cgroup_root().join(unique("apiary-test-"));
        std::fs::create_dir(&path).expect("create cgroup");
        Cgroup { path }
    }

    /// Run a command inside this cgroup and wait for it.
    pub fn run(&self, program: &str, args: &[&str]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("path");
        let mut c = Command::new(program);
        c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (open/write/close) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr() as *const _, 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        c.status().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Start `apiary ARGS` (a `run`) and wait until it says it is running: its event buffers are
/// open from then on. Returns the child, the rest of its stderr and the notes before it.
pub fn spawn_run(
    a: &Apiary,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    Vec<String>,
) {
    use std::io::BufRead;
    let mut child = a
        .cmd()
        .arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut notes = Vec::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).expect("read stderr") == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("apiary run exited early: {notes:?}");
        }
        notes.push(line.trim_end().to_string());
        if line.starts_with("running") {
            break;
        }
    }
    (child, err, notes)
}

/// `spawn_run`, with the rest of stderr drained in the background so the child never blocks.
pub fn start_run(a: &Apiary, args: &[&str]) -> (std::process::Child, Vec<String>) {
    use std::io::Read;
    let (child, mut err, notes) = spawn_run(a, args);
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
    });
    (child, notes)
}

/// Stop a run as Ctrl-C does and parse its JSON lines.
pub fn stop_run(mut child: std::process::Child) -> Vec<Value> {
    use std::io::Read;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    assert!(
        child.wait().expect("wait").success(),
        "run exits 0 on Ctrl-C"
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

// Daemons for tests, and daemon mode (APIARY_TEST_ENDPOINT_MODE=daemon): see daemon.rs.
pub mod daemon;
