//! The daemon (`apiary serve`) as applications meet it: a real process on a real unix socket,
//! driven by the CLI (`--endpoint`) and by the generated gRPC client; who may connect (the
//! socket's group, mutual TLS); bad requests and their status codes; metrics; shutdown.

mod common;
mod grpc;

use apiary_api::pb;
use apiary_api::pb::apiary_client::ApiaryClient;
use common::daemon::{Daemon, DaemonOpts};
use common::pki::make_pki;
use common::*;
use grpc::{client, rt};
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use tonic::Code;

/// `apiary --endpoint <daemon> ARGS`.
fn remote(a: &Apiary, endpoint: &str, args: &[&str]) -> Run {
    let out = a
        .cmd()
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run apiary");
    Run::from(out)
}

fn remote_json(a: &Apiary, endpoint: &str, args: &[&str]) -> Value {
    let mut v = args.to_vec();
    v.extend(["-o", "json"]);
    let r = remote(a, endpoint, &v);
    assert!(
        r.ok,
        "apiary --endpoint {endpoint} {args:?} failed:\n{}{}",
        r.stdout, r.stderr
    );
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {}", r.stdout))
}

fn getppid(n: usize) {
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        unsafe {
            libc::getppid();
        }
    }
}

fn tracepoint_attach() -> pb::AttachSpec {
    pb::AttachSpec {
        hook: Some(pb::attach_spec::Hook::Tracepoint(pb::TracepointAttach {
            tracepoint: "syscalls/sys_enter_getppid".into(),
        })),
    }
}

fn bytes_of(obj: &Path) -> pb::ObjectSource {
    pb::ObjectSource {
        object: Some(pb::object_source::Object::Bytes(
            std::fs::read(obj).expect("read fixture"),
        )),
        name: obj.display().to_string(),
    }
}

/// The counter at key 0 of a dump answered by the generated client.
fn counter0(d: &pb::MapDump) -> u64 {
    d.entries
        .iter()
        .find(|e| e.key_json == "0")
        .and_then(|e| e.value_json.parse().ok())
        .unwrap_or(0)
}

#[test]
fn cli_and_generated_client_drive_the_daemon() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let mut d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let ep = d.endpoint();
    let m = fixture("minimal");

    // The CLI, through the socket: load and attach in one step, prove it counts.
    let loaded = remote_json(
        &a,
        &ep,
        &[
            "load",
            "file",
            "--path",
            m.to_str().unwrap(),
            "-m",
            "via=cli",
            "tracepoint",
            "--tracepoint",
            "syscalls/sys_enter_getppid",
        ],
    );
    let id = loaded[0]["id"].as_i64().expect("id");
    // The source is the client's path, as an in-process load records it.
    assert_eq!(
        loaded[0]["source"].as_str(),
        Some(std::fs::canonicalize(&m).unwrap().to_str().unwrap())
    );
    getppid(50);
    let dump = remote_json(&a, &ep, &["map", "dump", &format!("{id}:counts")]);
    let n = dump["entries"][0]["value"].as_u64().expect("counter");
    assert!(n >= 50, "counted {n} getppid() calls, expected at least 50");
    let progs = remote_json(&a, &ep, &["list", "programs"]);
    assert_eq!(progs.as_array().unwrap().len(), 1);
    assert_eq!(progs[0]["metadata"]["via"], "cli");
    let detail = remote_json(&a, &ep, &["get", "program", &id.to_string()]);
    assert_eq!(
        detail["stats_enabled"], true,
        "the daemon keeps BPF stats on"
    );
    assert!(detail["kernel"]["run_cnt"].as_u64().unwrap() >= 50);
    assert!(
        !a.pins().is_empty(),
        "the daemon pinned under the instance's bpffs"
    );
    // The table output is the same code path as in-process.
    let table = remote(&a, &ep, &["list", "links"]);
    assert!(
        table.ok
            && table
                .stdout
                .contains("tracepoint syscalls/sys_enter_getppid"),
        "{}",
        table.stdout
    );

    // The generated client: watch, load bytes, attach, count, list, detach, unload.
    let rt = rt();
    let (watch, second) = rt.block_on(async {
        let mut c = client(&d).await;
        let mut watch = c.watch(pb::WatchRequest {}).await.expect("watch").into_inner();
        let r = c
            .load(pb::LoadRequest {
                object: Some(bytes_of(&m)),
                metadata: [("via".to_string(), "grpc".to_string())].into(),
                ..Default::default()
            })
            .await
            .expect("load")
            .into_inner();
        let pid = r.programs[0].id.expect("managed id");
        let link = c
            .attach(pb::AttachRequest { program_id: pid, spec: Some(tracepoint_attach()) })
            .await
            .expect("attach")
            .into_inner()
            .link
            .expect("link");
        getppid(30);
        let dump = c
            .dump_map(pb::DumpMapRequest {
                map: Some(pb::dump_map_request::Map::ProgramMap(pb::ProgramMapRef {
                    program_id: pid,
                    map_name: "counts".into(),
                })),
                limit: None,
            })
            .await
            .expect("dump")
            .into_inner()
            .dump
            .expect("dump");
        assert!(counter0(&dump) >= 30, "counted {}", counter0(&dump));
        let listed = c
            .list_programs(pb::ListProgramsRequest {
                metadata: [("via".to_string(), "grpc".to_string())].into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .programs;
        assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), vec![Some(pid)]);
        let detail =
            c.get_program(pb::GetProgramRequest { id: pid }).await.expect("get").into_inner().program.expect("detail");
        assert!(detail.kernel.expect("kernel info").verified_insns > 0);
        let links =
            c.list_links(pb::ListLinksRequest { program_id: Some(pid) }).await.expect("links").into_inner().links;
        assert_eq!(links.len(), 1);
        assert!(matches!(
            links[0].spec.as_ref().and_then(|s| s.hook.as_ref()),
            Some(pb::attach_spec::Hook::Tracepoint(t)) if t.tracepoint == "syscalls/sys_enter_getppid"
        ));
        c.detach(pb::DetachRequest { link_id: link.id }).await.expect("detach");
        let done =
            c.unload(pb::UnloadRequest { program_ids: vec![pid], force: false }).await.expect("unload").into_inner();
        assert_eq!(done.unloaded, vec![pid]);
        let mut events = Vec::new();
        for _ in 0..4 {
            let e = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
                .await
                .expect("an event within 5 s")
                .expect("stream ok")
                .expect("stream open");
            events.push(e);
        }
        let kinds: Vec<pb::EventKind> = events.iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds,
            vec![pb::EventKind::Loaded, pb::EventKind::Attached, pb::EventKind::Detached, pb::EventKind::Unloaded]
        );
        assert!(events.iter().all(|e| e.program_ids == vec![pid]), "{events:?}");
        assert_eq!(events[1].link_ids, vec![link.id]);
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        (watch, pid)
    });
    assert!(second > id);

    // Unload through the CLI: everything the daemon pinned is gone.
    let r = remote(&a, &ep, &["unload", "--force", &id.to_string()]);
    assert!(r.ok, "{}", r.stderr);
    assert!(remote_json(&a, &ep, &["list", "programs"])
        .as_array()
        .unwrap()
        .is_empty());
    assert!(a.pins().is_empty(), "pins left: {:?}", a.pins());

    // SIGTERM with a watch stream still open (and its client still running): the daemon ends
    // the stream, exits 0 well within its grace period, and removes its socket.
    let t0 = std::time::Instant::now();
    let stopping = std::thread::spawn(move || {
        let ok = d.terminate(15);
        (d, ok)
    });
    // The stream delivers what was already sent (the CLI's unload), then ends.
    rt.block_on(async move {
        let mut watch = watch;
        while let Ok(Some(e)) =
            tokio::time::timeout(std::time::Duration::from_secs(15), watch.message())
                .await
                .expect("the stream ends")
        {
            assert_eq!(e.kind(), pb::EventKind::Unloaded, "{e:?}");
        }
    });
    let (d, ok) = stopping.join().unwrap();
    assert!(ok, "graceful exit:\n{}", d.log_text());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert!(!d.socket.exists(), "socket removed");
    let log = d.log_text();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    assert!(
        log.contains("reconciled"),
        "the daemon reconciled at start:\n{log}"
    );
}

#[test]
fn a_request_in_flight_is_answered_across_sigterm() {
    if !privileged() {
        return;
    }
    // The signal has to land while a request is in flight, which depends on timing on a loaded
    // machine; an attempt where the request finished first proves nothing and is made again. An
    // answer cut off by the signal fails at once.
    let mut last_log = String::new();
    for _attempt in 0..5 {
        let a = Apiary::new();
        let mut d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
        let pid = d.pid() as i32;
        let answer = rt().block_on(async {
            let mut c = client(&d).await;
            // Large enough to take a while to send; refused as not an object once it arrives.
            let big = || pb::LoadRequest {
                object: Some(pb::ObjectSource {
                    object: Some(pb::object_source::Object::Bytes(vec![0u8; 48 << 20])),
                    name: "big.o".into(),
                }),
                ..Default::default()
            };
            // How long one takes here (the fastest of two), so the signal lands in the middle
            // of the next one.
            let mut took = std::time::Duration::MAX;
            for _ in 0..2 {
                let t0 = std::time::Instant::now();
                let s = c.load(big()).await.expect_err("not an object");
                assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
                took = took.min(t0.elapsed());
            }
            let call = tokio::spawn(async move { c.load(big()).await });
            tokio::time::sleep(took / 4).await;
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            call.await.expect("join")
        });
        let s = answer.expect_err("refused: not an object");
        assert_eq!(
            s.code(),
            Code::InvalidArgument,
            "the request was answered, not cut off: {s:?}"
        );
        assert!(d.terminate(10), "graceful exit:\n{}", d.log_text());
        assert!(!d.socket.exists());
        // The signal arrived while the request was in flight, and the answer still went out.
        let log = d.log_text();
        let (stop, load) = (log.find("shutting down"), log.rfind("method=\"Load\""));
        if matches!((stop, load), (Some(s), Some(l)) if s < l) {
            return;
        }
        last_log = log;
    }
    panic!("the signal never landed while a request was in flight:\n{last_log}");
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_is_not_and_a_config_file_works() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let mut d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    // A second daemon on a live socket refuses, and leaves the first one serving.
    let out = a
        .cmd()
        .args(["serve", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another daemon is serving"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(remote(&a, &d.endpoint(), &["list", "programs"]).ok);

    // A daemon killed without cleanup leaves its socket; the next one replaces it. Its
    // settings come from a config file this time.
    let pid = d.pid() as i32;
    // SAFETY: killing our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    d.terminate(5);
    assert!(
        d.socket.exists(),
        "a killed daemon leaves its socket behind"
    );
    let cfg = d.dir.join("apiary.toml");
    let metrics = common::daemon::free_port();
    std::fs::write(
        &cfg,
        format!("socket = \"run/apiary.sock\"\nmetrics = \"{metrics}\"\nlog = \"debug\"\n"),
    )
    .unwrap();
    let mut d2 = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            extra: vec!["--config".into(), cfg.display().to_string()],
            ..Default::default()
        },
    );
    // (`Daemon::start` passes --socket; the flag wins over the file, and it is the same path.)
    assert!(remote(&a, &d2.endpoint(), &["list", "programs"]).ok);
    let scraped = http_get(metrics, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(d2.terminate(10));

    // Bad settings fail the start with one clear line.
    for (args, want) in [
        (
            vec!["--socket-group", "apiary-no-such-group"],
            "group \"apiary-no-such-group\" does not exist",
        ),
        (vec!["--listen", "127.0.0.1:1"], "--listen needs --tls-cert"),
        (
            vec!["--config", "/nonexistent/apiary.toml"],
            "cannot read /nonexistent/apiary.toml",
        ),
    ] {
        let sock = d2.dir.join("other.sock");
        let out = a
            .cmd()
            .args(["serve", "--socket"])
            .arg(&sock)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert!(!sock.exists(), "{args:?} left a socket");
    }
}

/// A temporary system group, removed on drop.
struct TempGroup {
    name: String,
    gid: u32,
}

impl TempGroup {
    fn new() -> TempGroup {
        let name = format!("aptest{}", std::process::id());
        let _ = Command::new("groupdel")
            .arg(&name)
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("groupadd")
            .arg(&name)
            .status()
            .expect("groupadd")
            .success();
        assert!(ok, "groupadd {name}");
        let out = Command::new("getent")
            .args(["group", &name])
            .output()
            .expect("getent");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let gid = line
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("gid");
        TempGroup { name, gid }
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

fn nix_chown(p: &Path, uid: u32) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; -1 leaves the group unchanged.
    assert_eq!(
        unsafe { libc::chown(c.as_ptr(), uid, u32::MAX) },
        0,
        "chown {}",
        p.display()
    );
}

/// Run the CLI (`bin`) as user `nobody`, with `groups` as its only supplementary groups.
fn as_nobody(bin: &Path, groups: &[u32], args: &[&str]) -> Run {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup"]);
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        c.arg(format!("--groups={}", g.join(",")));
    }
    // An unprivileged process: no capabilities at all, not even inheritable ones.
    c.args(["--inh-caps=-all", "--bounding-set=-all", "--"]);
    c.arg(bin).args(args);
    c.env_remove("APIARY_ENDPOINT");
    let out = c.output().expect("setpriv");
    Run::from(out)
}

#[test]
fn the_socket_group_decides_who_may_load() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let group = TempGroup::new();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            socket_group: Some(group.name.clone()),
            ..Default::default()
        },
    );
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), group.gid, "socket group");

    // The object where nobody can read it (the client reads it and sends the bytes), and the
    // binary where nobody can run it (the build directory may be private).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let obj = dir.path().join("minimal.bpf.o");
    std::fs::copy(fixture("minimal"), &obj).unwrap();
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = dir.path().join("apiary");
    std::fs::copy(env!("CARGO_BIN_EXE_apiary"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ep = d.endpoint();
    let o = obj.to_str().unwrap();

    // Without the daemon, nobody cannot load anything (given a store of its own, the kernel
    // itself refuses).
    let own_state = dir.path().join("nobody-state");
    std::fs::create_dir(&own_state).unwrap();
    nix_chown(&own_state, 65534);
    let state_flag = own_state.display().to_string();
    let r = as_nobody(
        &bin,
        &[group.gid],
        &[
            "--state-dir",
            &state_flag,
            "--bpffs",
            "/sys/fs/bpf",
            "load",
            "file",
            "--path",
            o,
        ],
    );
    assert!(
        !r.ok,
        "an unprivileged in-process load must fail: {}",
        r.stdout
    );
    let e = r.stderr.to_lowercase();
    assert!(
        e.contains("not permitted") || e.contains("permission"),
        "{}",
        r.stderr
    );

    // In the socket's group: load and attach through the daemon, with no capability at all.
    let r = as_nobody(
        &bin,
        &[group.gid],
        &[
            "--endpoint",
            &ep,
            "-o",
            "json",
            "load",
            "file",
            "--path",
            o,
            "tracepoint",
            "--tracepoint",
            "syscalls/sys_enter_getppid",
        ],
    );
    assert!(
        r.ok,
        "nobody in the group loads through the socket:\n{}{}",
        r.stdout, r.stderr
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let id = v[0]["id"].as_i64().unwrap();
    getppid(10);
    let r = as_nobody(
        &bin,
        &[group.gid],
        &[
            "--endpoint",
            &ep,
            "-o",
            "json",
            "map",
            "dump",
            &format!("{id}:counts"),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let dump: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(dump["entries"][0]["value"].as_u64().unwrap() >= 10);

    // Not in the group: refused when connecting, with a message that says why.
    let r = as_nobody(&bin, &[], &["--endpoint", &ep, "list", "programs"]);
    assert!(!r.ok);
    assert!(
        r.stderr.starts_with("error: cannot connect to unix://"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Permission denied") && r.stderr.contains("socket's group"),
        "{}",
        r.stderr
    );
    let r = as_nobody(&bin, &[], &["--endpoint", &ep, "load", "file", "--path", o]);
    assert!(
        !r.ok && r.stderr.contains("Permission denied"),
        "{}",
        r.stderr
    );

    // The daemon logged who did it.
    assert!(d.log_text().contains("uid=65534"), "{}", d.log_text());
    assert!(remote(&a, &ep, &["unload", "--force", &id.to_string()]).ok);
}

#[test]
fn mutual_tls_admits_only_clients_signed_by_the_ca() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let pki = make_pki();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            tls: Some((
                pki.path("server.pem"),
                pki.path("server.key"),
                pki.path("ca.pem"),
            )),
            ..Default::default()
        },
    );
    let https = d.https();
    let p = |n: &str| pki.path(n).display().to_string();
    let tls = |cert: &str, key: &str| {
        let mut v = vec![
            "--endpoint".to_string(),
            https.clone(),
            "--server-ca".into(),
            p("ca.pem"),
        ];
        if !cert.is_empty() {
            v.extend([
                "--client-cert".into(),
                p(cert),
                "--client-key".into(),
                p(key),
            ]);
        }
        v
    };
    let run = |pre: Vec<String>, args: &[&str]| {
        let out = a
            .cmd()
            .env_remove("APIARY_ENDPOINT")
            .args(&pre)
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    };

    // A client with a certificate from the CA: full service over TCP.
    let m = fixture("minimal");
    let r = run(
        tls("client.pem", "client.key"),
        &["-o", "json", "load", "file", "--path", m.to_str().unwrap()],
    );
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let id = serde_json::from_str::<Value>(&r.stdout).unwrap()[0]["id"]
        .as_i64()
        .unwrap();
    let r = run(tls("client.pem", "client.key"), &["list", "programs"]);
    assert!(
        r.ok && r.stdout.contains("count_getppid"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    // No client certificate, or one from another CA: the handshake fails, nothing is served.
    let mut refusals = Vec::new();
    for (cert, key) in [("", ""), ("intruder.pem", "intruder.key")] {
        let r = run(tls(cert, key), &["list", "programs"]);
        assert!(!r.ok, "a client with {cert:?} was served:\n{}", r.stdout);
        assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(
            r.stderr.contains("signed by its --client-ca"),
            "{cert:?}: {}",
            r.stderr
        );
        refusals.push(r.stderr);
    }
    // A client that does not trust the daemon's CA refuses the daemon.
    let mut wrong_ca = tls("client.pem", "client.key");
    wrong_ca[3] = p("other-ca.pem");
    let r = run(wrong_ca, &["list", "programs"]);
    assert!(!r.ok, "{}", r.stdout);
    // Plain TCP is not offered at all.
    let r = run(
        vec!["--endpoint".into(), https.replace("https://", "http://")],
        &["list", "programs"],
    );
    assert!(
        !r.ok && r.stderr.contains("requires mutual TLS"),
        "{}",
        r.stderr
    );

    // Still serving the good client; and the unix socket works beside TCP.
    assert!(run(tls("client.pem", "client.key"), &["list", "programs"]).ok);
    assert!(remote(&a, &d.endpoint(), &["unload", &id.to_string()]).ok);
    // The refused clients' requests never reached the service: only the two good lists did.
    let log = d.log_text();
    assert_eq!(log.matches("method=\"ListPrograms\"").count(), 2, "{log}");
}

/// A gRPC call with a raw body, for requests no well-behaved client would send.
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct RawCodec;
    pub struct Raw;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            buf.put_slice(&item);
            Ok(())
        }
        fn buffer_settings(&self) -> BufferSettings {
            BufferSettings::default()
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
        }
        fn buffer_settings(&self) -> BufferSettings {
            BufferSettings::default()
        }
    }

    pub async fn call(
        channel: tonic::transport::Channel,
        method: &'static str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut g = tonic::client::Grpc::new(channel);
        g.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
        g.unary(tonic::Request::new(body), path, RawCodec)
            .await
            .map(|r| r.into_inner())
    }
}

#[test]
fn bad_requests_get_their_codes_and_the_connection_survives() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let m = fixture("minimal");
    rt().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(d.endpoint())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        // One channel for every call: a refused request must not cost the connection.
        let mut c = ApiaryClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
        let load = |object: Option<pb::ObjectSource>| pb::LoadRequest {
            object,
            ..Default::default()
        };

        // A program that is attached, for the precondition case.
        let r = c
            .load(pb::LoadRequest {
                object: Some(bytes_of(&m)),
                attach: Some(tracepoint_attach()),
                ..Default::default()
            })
            .await
            .expect("load")
            .into_inner();
        let pid = r.programs[0].id.unwrap();

        let bytes = |b: &[u8]| pb::ObjectSource {
            object: Some(pb::object_source::Object::Bytes(b.to_vec())),
            name: "x.o".into(),
        };
        let cases: Vec<((Code, String), Code, &str)> = vec![
            (
                code(c.load(load(Some(bytes(b"not an object")))).await),
                Code::InvalidArgument,
                "not an ELF file",
            ),
            (
                code(c.load(load(None)).await),
                Code::InvalidArgument,
                "object: is required",
            ),
            (
                code(
                    c.load(load(Some(pb::ObjectSource {
                        object: Some(pb::object_source::Object::Path("rel/x.o".into())),
                        name: String::new(),
                    })))
                    .await,
                ),
                Code::InvalidArgument,
                "is not absolute",
            ),
            (
                code(
                    c.load(pb::LoadRequest {
                        object: Some(bytes_of(&m)),
                        programs: vec![pb::ProgramSelector {
                            r#type: 99,
                            name: "f".into(),
                        }],
                        ..Default::default()
                    })
                    .await,
                ),
                Code::InvalidArgument,
                "unknown program type 99",
            ),
            (
                code(
                    c.attach(pb::AttachRequest {
                        program_id: 999,
                        spec: Some(tracepoint_attach()),
                    })
                    .await,
                ),
                Code::NotFound,
                "program 999 not found",
            ),
            (
                code(
                    c.attach(pb::AttachRequest {
                        program_id: pid,
                        spec: None,
                    })
                    .await,
                ),
                Code::InvalidArgument,
                "spec: is required",
            ),
            (
                code(
                    c.attach(pb::AttachRequest {
                        program_id: pid,
                        spec: Some(pb::AttachSpec { hook: None }),
                    })
                    .await,
                ),
                Code::InvalidArgument,
                "attach.hook",
            ),
            (
                code(
                    c.attach(pb::AttachRequest {
                        program_id: pid,
                        spec: Some(pb::AttachSpec {
                            hook: Some(pb::attach_spec::Hook::Xdp(pb::XdpAttach {
                                iface: "lo".into(),
                                mode: 77,
                                ..Default::default()
                            })),
                        }),
                    })
                    .await,
                ),
                Code::InvalidArgument,
                "unknown XDP mode 77",
            ),
            (
                code(c.get_program(pb::GetProgramRequest { id: 0 }).await),
                Code::InvalidArgument,
                "invalid program id 0",
            ),
            (
                code(c.get_link(pb::GetLinkRequest { id: 4242 }).await),
                Code::NotFound,
                "link 4242 not found",
            ),
            (
                code(c.detach(pb::DetachRequest { link_id: 4242 }).await),
                Code::NotFound,
                "link 4242 not found",
            ),
            (
                code(
                    c.get_chain(pb::GetChainRequest {
                        hook: Some(pb::HookRef {
                            kind: pb::ChainKind::Xdp as i32,
                            iface: "nosuch0".into(),
                            netns: None,
                            direction: 0,
                        }),
                    })
                    .await,
                ),
                Code::NotFound,
                "chain xdp on nosuch0 not found",
            ),
            (
                code(
                    c.dump_map(pb::DumpMapRequest {
                        map: None,
                        limit: None,
                    })
                    .await,
                ),
                Code::InvalidArgument,
                "map: is required",
            ),
            (
                code(
                    c.unload(pb::UnloadRequest {
                        program_ids: vec![pid],
                        force: false,
                    })
                    .await,
                ),
                Code::FailedPrecondition,
                "link",
            ),
            (
                code(
                    c.unload(pb::UnloadRequest {
                        program_ids: vec![],
                        force: false,
                    })
                    .await,
                ),
                Code::InvalidArgument,
                "program_ids",
            ),
        ];
        for ((got, msg), want, text) in &cases {
            assert_eq!(got, want, "{msg}");
            assert!(msg.contains(text), "expected {text:?} in {msg:?}");
        }

        // A NOT_FOUND carries its detail, so the CLI can rebuild the same error.
        let s = c
            .get_program(pb::GetProgramRequest { id: 31337 })
            .await
            .expect_err("not found");
        let back = apiary_api::status::from_status(&s, "test");
        assert_eq!(
            back.to_string(),
            "program 31337 not found; see `apiary list programs`"
        );
        assert_eq!(back.code(), apiary::ErrorCode::NotFound);

        // A body that is not protobuf at all.
        let s = raw::call(
            channel.clone(),
            "/apiary.v1.Apiary/Load",
            vec![0xff, 0xff, 0xff, 0xff],
        )
        .await
        .expect_err("malformed");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("malformed"), "{s:?}");
        // A method that does not exist.
        let s = raw::call(channel.clone(), "/apiary.v1.Apiary/Explode", vec![])
            .await
            .expect_err("unknown method");
        assert_eq!(s.code(), Code::Unimplemented, "{s:?}");

        // Larger than the 64 MiB limit: RESOURCE_EXHAUSTED, not a dropped connection.
        let huge = vec![0u8; 65 << 20];
        let (got, msg) = code(c.load(load(Some(bytes(&huge)))).await);
        assert_eq!(got, Code::ResourceExhausted, "{msg}");
        drop(huge);

        // The same connection still serves.
        let progs = c
            .list_programs(pb::ListProgramsRequest::default())
            .await
            .expect("list after abuse")
            .into_inner()
            .programs;
        assert_eq!(progs.len(), 1);
        c.unload(pb::UnloadRequest {
            program_ids: vec![pid],
            force: true,
        })
        .await
        .expect("forced unload");
    });
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
    // The CLI shows the same messages through the daemon as in-process.
    let r = remote(&a, &d.endpoint(), &["get", "program", "999"]);
    assert_eq!(
        r.stderr.trim(),
        "error: program 999 not found; see `apiary list programs`"
    );
    let r = remote(&a, &d.endpoint(), &["map", "dump", "4294967295"]);
    let local = a.run(&["map", "dump", "4294967295"]);
    assert_eq!(r.stderr, local.stderr);
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("should be refused");
    (s.code(), s.message().to_string())
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    out
}

/// The value of the first sample of `metric` whose labels contain every `label="value"`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name_labels, value) = l.rsplit_once(' ')?;
        let (name, rest) = name_labels.split_once('{').unwrap_or((name_labels, ""));
        if name != metric
            || !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        value.parse().ok()
    })
}

#[test]
fn metrics_show_run_counts_and_chain_slots() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            metrics: true,
            ..Default::default()
        },
    );
    let ep = d.endpoint();
    let addr = d.metrics.unwrap();
    let tp = remote_json(
        &a,
        &ep,
        &[
            "load",
            "file",
            "--path",
            fixture("minimal").to_str().unwrap(),
            "tracepoint",
            "--tracepoint",
            "syscalls/sys_enter_getppid",
        ],
    );
    let tp_id = tp[0]["id"].as_i64().unwrap().to_string();
    let xdp = remote_json(
        &a,
        &ep,
        &[
            "load",
            "file",
            "--path",
            fixture("net").to_str().unwrap(),
            "--programs",
            "xdp:xdp_count",
        ],
    );
    let xdp_id = xdp[0]["id"].as_i64().unwrap().to_string();
    let r = remote(
        &a,
        &ep,
        &[
            "attach", &xdp_id, "xdp", "--iface", &net.if_b, "--netns", &net.ns_b,
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    getppid(100);
    assert!(net.ping(5));

    let text = http_get(addr, "/metrics");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    for family in [
        "apiary_program_run_count_total counter",
        "apiary_program_run_seconds_total counter",
        "apiary_program_verified_instructions gauge",
        "apiary_chain_slot_runs_total counter",
        "apiary_chain_slot_verdicts_total counter",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family}\n")),
            "no {family} in:\n{body}"
        );
    }
    let tp_labels = [
        ("id", tp_id.as_str()),
        ("name", "count_getppid"),
        ("type", "tracepoint"),
    ];
    let runs = sample(body, "apiary_program_run_count_total", &tp_labels)
        .expect("run count of the tracepoint program");
    assert!(runs >= 100.0, "run count {runs}:\n{body}");
    assert!(sample(body, "apiary_program_run_seconds_total", &tp_labels).unwrap() > 0.0);
    assert!(sample(body, "apiary_program_verified_instructions", &tp_labels).unwrap() > 0.0);
    assert!(sample(body, "apiary_program_jited_bytes", &tp_labels).unwrap() > 0.0);
    let slot = [
        ("iface", net.if_b.as_str()),
        ("hook", "xdp"),
        ("position", "1"),
        ("program", "xdp_count"),
    ];
    let slot_runs = sample(body, "apiary_chain_slot_runs_total", &slot)
        .unwrap_or_else(|| panic!("no chain slot runs in:\n{body}"));
    assert!(slot_runs >= 5.0, "slot runs {slot_runs}:\n{body}");
    let mut pass = slot.to_vec();
    pass.push(("verdict", "pass"));
    assert!(
        sample(body, "apiary_chain_slot_verdicts_total", &pass).unwrap_or(0.0) >= 5.0,
        "{body}"
    );
    assert_eq!(
        sample(body, "apiary_scrape_errors", &[]),
        Some(0.0),
        "{body}"
    );

    // Anything but GET /metrics is refused politely.
    assert!(http_get(addr, "/").starts_with("HTTP/1.1 404"));
    assert!(remote(&a, &ep, &["unload", "--force", &tp_id, &xdp_id]).ok);
}

/// Through a daemon, an object larger than a request may carry is refused by the client with
/// what to do, before anything is sent; the daemon goes on serving.
#[test]
fn an_object_too_large_for_a_request_is_refused_before_it_is_sent() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bpf.o");
    // A BPF object's header, then 65 MiB (sparse).
    let header = std::fs::read(fixture("minimal")).unwrap()[..64].to_vec();
    std::fs::write(&big, header).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let r = Run::from(
        a.cmd()
            .arg("--endpoint")
            .arg(d.endpoint())
            .args(["load", "file", "--path"])
            .arg(&big)
            .output()
            .expect("run apiary"),
    );
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("more than a request to the daemon may carry")
            && r.stderr.contains("llvm-strip -g"),
        "{}",
        r.stderr
    );
    let r = Run::from(
        a.cmd()
            .arg("--endpoint")
            .arg(d.endpoint())
            .args(["list", "programs"])
            .output()
            .expect("run apiary"),
    );
    assert!(r.ok, "{}", r.stderr);
}
