//! Daemons for tests: a real `apiary serve` process on a unix socket in a temp dir (and, when
//! asked, mTLS on 127.0.0.1 and the metrics endpoint), stopped with SIGTERM on drop.
//!
//! Daemon mode: with APIARY_TEST_ENDPOINT_MODE=daemon (and root), every `Apiary` instance gets
//! its own daemon over its own store and bpffs directory, and every command the harness runs
//! goes through `--endpoint` (APIARY_ENDPOINT), so the CLI suites run against both front doors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const MODE_ENV: &str = "APIARY_TEST_ENDPOINT_MODE";

/// Whether the CLI suites run against daemons (see the module docs).
pub fn daemon_mode() -> bool {
    // SAFETY: geteuid has no preconditions.
    std::env::var(MODE_ENV).as_deref() == Ok("daemon") && unsafe { libc::geteuid() } == 0
}

/// How to start a daemon.
#[derive(Default, Clone)]
pub struct DaemonOpts {
    pub socket_group: Option<String>,
    /// (certificate, key, client CA) for a TCP listener on 127.0.0.1.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    pub metrics: bool,
    pub extra: Vec<String>,
    /// Environment variables for the daemon (e.g. test hooks it honours only when started so).
    pub env: Vec<(String, String)>,
}

pub struct Daemon {
    child: Option<Child>,
    /// Holds the socket and the log.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// A port that was free a moment ago (the daemon binds it right after).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// Children spawned from this thread get SIGTERM when it ends, which is when the test process
/// exits: daemons of daemon mode never outlive the suite, whichever test thread asked first.
fn spawn_from_long_lived_thread(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut c, reply) in rx {
                let _ = reply.send(c.spawn());
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .expect("spawner thread");
    reply_rx.recv().expect("spawner reply")
}

impl Daemon {
    /// Start `apiary serve` over this store and bpffs directory and wait until it answers.
    pub fn start(state: &Path, bpffs: &Path, opts: &DaemonOpts) -> Daemon {
        Self::start_inner(state, bpffs, opts, false)
    }

    fn start_inner(state: &Path, bpffs: &Path, opts: &DaemonOpts, long_lived: bool) -> Daemon {
        // Daemon mode keeps everything inside the instance's store, which the instance removes.
        let (dir, tmp) = if long_lived {
            let d = state.join("daemon");
            std::fs::create_dir_all(&d).expect("daemon dir");
            (d, None)
        } else {
            let t = tempfile::tempdir().expect("tempdir");
            (t.path().to_path_buf(), Some(t))
        };
        // Let other users reach the socket's directory: the socket's own mode and group decide.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let socket = dir.join("run").join("apiary.sock");
        let log = dir.join("daemon.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiary"));
        cmd.env("APIARY_STATE_DIR", state)
            .env("APIARY_BPFFS", bpffs)
            .env_remove("APIARY_ENDPOINT")
            .env("RUST_LOG", "info,apiary_api=debug")
            .args(["serve", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(g) = &opts.socket_group {
            cmd.args(["--socket-group", g]);
        }
        let mut tcp = None;
        if let Some((cert, key, ca)) = &opts.tls {
            let addr = free_port();
            cmd.arg("--listen").arg(addr.to_string());
            cmd.arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key)
                .arg("--client-ca")
                .arg(ca);
            tcp = Some(addr);
        }
        let mut metrics = None;
        if opts.metrics {
            let addr = free_port();
            cmd.arg("--metrics").arg(addr.to_string());
            metrics = Some(addr);
        }
        cmd.args(&opts.extra);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let child = if long_lived {
            spawn_from_long_lived_thread(cmd)
        } else {
            cmd.spawn()
        }
        .expect("spawn apiary serve");
        let mut d = Daemon {
            child: Some(child),
            dir,
            _tmp: tmp,
            socket,
            log,
            tcp,
            metrics,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && self
                    .tcp
                    .is_none_or(|a| std::net::TcpStream::connect(a).is_ok())
                && self
                    .metrics
                    .is_none_or(|a| std::net::TcpStream::connect(a).is_ok())
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "apiary serve exited ({status}) before it served:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < end,
                "apiary serve did not come up in 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn https(&self) -> String {
        format!("https://{}", self.tcp.expect("daemon has no TCP listener"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a graceful exit; returns whether it exited 0 within `secs`.
    pub fn terminate(&mut self, secs: u64) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate(10);
        // A failing test shows what the daemon said.
        if std::thread::panicking() {
            eprintln!(
                "--- apiary serve log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Daemon mode: one daemon per store, started on first use.
static DAEMONS: Mutex<Option<HashMap<PathBuf, Daemon>>> = Mutex::new(None);

/// Point a harness command at this instance's daemon (daemon mode only).
pub fn route(cmd: &mut Command, state: &Path, bpffs: &Path) {
    if !daemon_mode() {
        return;
    }
    let mut guard = DAEMONS.lock().unwrap_or_else(|p| p.into_inner());
    let daemons = guard.get_or_insert_with(HashMap::new);
    // Daemons whose instance is gone (its store removed) are stopped now rather than at exit.
    daemons.retain(|s, _| s.exists());
    let d = daemons.entry(state.to_path_buf()).or_insert_with(|| {
        let d = Daemon::start_inner(state, bpffs, &DaemonOpts::default(), true);
        eprintln!(
            "daemon mode: apiary serve (pid {}) on {}",
            d.pid(),
            d.endpoint()
        );
        d
    });
    cmd.env("APIARY_ENDPOINT", d.endpoint());
}
