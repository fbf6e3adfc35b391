//! Stock gRPC clients of other languages, with stubs generated from
//! crates/apiary-api/proto at test time, against a real `apiary serve` on its unix socket:
//! Python's grpcio (gRPC's C core, which sends the percent-encoded socket path as `:authority`,
//! with a plain `insecure_channel("unix:PATH")`) and grpc-go. Each loads the tracing fixture's
//! tracepoint program, attaches it, makes it count its own getppid() calls, reads the counter,
//! sends bytes that are no object, and unloads (tests/clients/*).
//!
//! scripts/clients.sh installs and builds the clients into a cache (once; later runs find them
//! built). Without root, or when it cannot, the tests skip, except under
//! APIARY_REQUIRE_PRIVILEGED=1, where that is a failure.

mod common;

use common::daemon::{Daemon, DaemonOpts};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The clients' cache directory, after scripts/clients.sh made sure everything in it is built.
fn clients_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Mutex<Option<Result<PathBuf, String>>>> = OnceLock::new();
    let cell = DIR.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    let result = guard.get_or_insert_with(|| {
        let out = Command::new("sh")
            .arg(repo_root().join("scripts/clients.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/clients.sh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("APIARY_CLIENTS_DIR="))
        {
            Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
            _ => Err(format!(
                "scripts/clients.sh failed ({}):\n{stdout}{stderr}",
                out.status
            )),
        }
    });
    match result {
        Ok(dir) => Some(dir.clone()),
        Err(e) if std::env::var("APIARY_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
            panic!("the clients could not be set up, and APIARY_REQUIRE_PRIVILEGED=1 forbids skipping:\n{e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// Run one client against a fresh daemon and check everything it reports.
fn drive(client: Command, what: &str) {
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let obj = fixture("tracing");
    let mut client = client;
    let child = client
        .arg(&d.socket)
        .arg(&obj)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what} client: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the {what} client failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{what}: bad JSON ({e}): {stdout}"));

    let id = r["program_id"].as_i64().expect("program id");
    assert_eq!(r["program_name"], "tp_getppid", "{what}: {r}");
    assert_eq!(r["type"], "tracepoint", "{what}: {r}");
    assert!(r["link_id"].as_i64().is_some_and(|l| l > 0), "{what}: {r}");
    assert_eq!(r["attach_point"], "tracepoint syscalls/sys_enter_getppid");
    // The program counted exactly the client's own getppid() calls (target_tgid = its pid).
    assert_eq!(r["count_before"], 0, "{what}: {r}");
    assert_eq!(
        r["count_after"], r["calls"],
        "{what}: the program ran once per call: {r}"
    );
    assert_eq!(r["calls"], 50);
    // Bytes that are no object: INVALID_ARGUMENT, and the message says what is wrong with what.
    let bad = &r["bad_object"];
    assert_eq!(bad["code"], 3, "{what}: INVALID_ARGUMENT: {r}");
    assert_eq!(bad["message"], "garbage.o: not an ELF file", "{what}: {r}");
    assert_eq!(r["unloaded"], serde_json::json!([id]), "{what}: {r}");
    assert_eq!(
        r["after_unload"]["code"], 5,
        "{what}: NOT_FOUND after unload: {r}"
    );

    // Nothing left behind, as the daemon sees it.
    let list = a
        .cmd()
        .arg("--endpoint")
        .arg(d.endpoint())
        .args(["list", "programs", "-o", "json"])
        .output()
        .expect("apiary list");
    assert!(list.status.success());
    let programs: Value = serde_json::from_slice(&list.stdout).expect("list JSON");
    assert_eq!(programs, serde_json::json!([]), "{what}: programs left");
    // The daemon still knows who called through the rewritten connection.
    let log = d.log_text();
    assert!(
        log.contains(&format!("method=\"Load\" peer=\"uid=0 pid={pid}\"")),
        "{what}: caller's credentials in the log:\n{log}"
    );
}

#[test]
fn python_grpcio_client_without_options() {
    if !privileged() {
        return;
    }
    let Some(dir) = clients_dir() else { return };
    let mut cmd = Command::new(dir.join("venv/bin/python"));
    cmd.env("PYTHONPATH", dir.join("python"))
        .arg(repo_root().join("tests/clients/python/client.py"));
    drive(cmd, "Python (grpcio)");
}

#[test]
fn go_grpc_client() {
    if !privileged() {
        return;
    }
    let Some(dir) = clients_dir() else { return };
    drive(
        Command::new(dir.join("bin/apiary-go-client")),
        "Go (grpc-go)",
    );
}
