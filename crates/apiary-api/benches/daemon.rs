//! The daemon's costs, printed (no assertions): median per-call latency of ListPrograms and
//! GetProgram over the unix socket, the daemon's resident memory idle and after 1,000
//! load/unload cycles, and a CO-RE object's load+attach call (from the CO-RE cache after the
//! first) side by side with the minimal C libbpf loader doing the same (when `APIARY_MINIMAL_LOADER`
//! names it; bench/daemon.sh builds it). Needs root and the `apiary` binary (release build):
//!
//!     cargo build --release -p apiary-cli
//!     APIARY_BIN=target/release/apiary cargo bench -p apiary-api --bench daemon
//!
//! (bench/daemon.sh does both.)

use apiary_api::pb;
use apiary_api::pb::apiary_client::ApiaryClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CALLS: usize = 2_000;
const CYCLES: usize = 1_000;

fn apiary_bin() -> PathBuf {
    if let Ok(p) = std::env::var("APIARY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("release/apiary")
}

/// Resident memory in KiB: (total, anonymous, file-backed). File-backed pages are the
/// binary's code and libraries mapped from the page cache: shared and reclaimable, unlike the
/// anonymous ones (heap, stacks), which are what the daemon itself costs.
fn rss_kib(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn p99_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() * 99 / 100].as_secs_f64() * 1e6
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

const CORE_RUNS: usize = 30;

/// The `core` fixture (a tracepoint program reading task fields through CO-RE) loaded and
/// attached in one call and unloaded, `CORE_RUNS` times after a first load that makes the CO-RE
/// cache's entry, alternating with the minimal C loader doing the same from its file.
async fn core_side_by_side(
    c: &mut ApiaryClient<tonic::transport::Channel>,
) -> Option<(Vec<Duration>, Vec<Duration>)> {
    let loader = PathBuf::from(std::env::var_os("APIARY_MINIMAL_LOADER")?);
    let path = apiary_fixtures::object("core");
    let object = std::fs::read(&path).expect("core fixture");
    let req = pb::LoadRequest {
        object: Some(pb::ObjectSource {
            object: Some(pb::object_source::Object::Bytes(object)),
            name: "core.bpf.o".into(),
        }),
        attach: Some(pb::AttachSpec {
            hook: Some(pb::attach_spec::Hook::Tracepoint(pb::TracepointAttach {
                tracepoint: "syscalls/sys_enter_getppid".into(),
            })),
        }),
        ..Default::default()
    };
    let (mut call, mut base) = (Vec::new(), Vec::new());
    for i in 0..=CORE_RUNS {
        let t = Instant::now();
        let id = c
            .load(req.clone())
            .await
            .expect("CO-RE load")
            .into_inner()
            .programs[0]
            .id
            .expect("id");
        if i > 0 {
            call.push(t.elapsed());
        }
        c.unload(pb::UnloadRequest {
            program_ids: vec![id],
            force: true,
        })
        .await
        .expect("unload");

        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/minimal-daemon-bench-{}-{i}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("pin dir");
        let t = Instant::now();
        let ok = Command::new(&loader)
            .arg(&path)
            .args(["core_getppid", "syscalls", "sys_enter_getppid"])
            .arg(&dir)
            .status()
            .expect("start the minimal loader")
            .success();
        base.push(t.elapsed());
        assert!(ok, "the minimal loader failed");
        let _ = std::fs::remove_dir_all(&dir);
    }
    Some((call, base))
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("daemon bench: needs root (it loads BPF programs); skipped");
        return;
    }
    let bin = apiary_bin();
    if !bin.exists() {
        println!(
            "daemon bench: {} not found; build it with `cargo build --release -p apiary-cli` or set APIARY_BIN",
            bin.display()
        );
        return;
    }
    let tmp = std::env::temp_dir().join(format!("apiary-daemon-bench-{}", std::process::id()));
    let bpffs = PathBuf::from(format!(
        "/sys/fs/bpf/apiary-daemon-bench-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let socket = tmp.join("apiary.sock");
    let child = Command::new(&bin)
        .args(["serve", "--socket"])
        .arg(&socket)
        .env("APIARY_STATE_DIR", tmp.join("state"))
        .env("APIARY_BPFFS", &bpffs)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start apiary serve");
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    let end = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < end, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let object = std::fs::read(apiary_fixtures::object("minimal")).expect("fixture");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = ApiaryClient::connect(format!("unix://{}", socket.display())).await.expect("connect");
        let load = |c: &mut ApiaryClient<tonic::transport::Channel>| {
            let req = pb::LoadRequest {
                object: Some(pb::ObjectSource {
                    object: Some(pb::object_source::Object::Bytes(object.clone())),
                    name: "minimal.bpf.o".into(),
                }),
                ..Default::default()
            };
            let mut c = c.clone();
            async move { c.load(req).await.expect("load").into_inner().programs[0].id.expect("id") }
        };
        // A few programs, so list and get have something to read.
        let mut kept = Vec::new();
        for _ in 0..10 {
            kept.push(load(&mut c).await);
        }
        for _ in 0..200 {
            c.list_programs(pb::ListProgramsRequest::default()).await.expect("list");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = rss_kib(pid);

        let mut list = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            c.list_programs(pb::ListProgramsRequest::default()).await.expect("list");
            list.push(t.elapsed());
        }
        let mut get = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let t = Instant::now();
            c.get_program(pb::GetProgramRequest { id: kept[i % kept.len()] }).await.expect("get");
            get.push(t.elapsed());
        }

        let before = rss_kib(pid);
        let mut cycles = Vec::with_capacity(CYCLES);
        for _ in 0..CYCLES {
            let t = Instant::now();
            let id = load(&mut c).await;
            c.unload(pb::UnloadRequest { program_ids: vec![id], force: false }).await.expect("unload");
            cycles.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(pid);
        c.unload(pb::UnloadRequest { program_ids: kept, force: true }).await.expect("unload");

        let core = core_side_by_side(&mut c).await;

        println!("apiary serve over a unix socket (10 managed programs; {CALLS} calls each)");
        println!("  ListPrograms          median {:7.0} µs   p99 {:7.0} µs   (target ≤ 5 ms)", median_us(list.clone()), p99_us(list));
        println!("  GetProgram            median {:7.0} µs   p99 {:7.0} µs   (target ≤ 5 ms)", median_us(get.clone()), p99_us(get));
        println!("  Load+Unload (bytes)   median {:7.0} µs   p99 {:7.0} µs", median_us(cycles.clone()), p99_us(cycles));
        println!(
            "  RSS idle              {:7.1} MB   (anonymous {:.1} MB, file-backed {:.1} MB)   (target ≤ 10 MB)",
            mb(idle.0),
            mb(idle.1),
            mb(idle.2)
        );
        println!(
            "  RSS after {CYCLES} load/unload cycles {:.1} MB (anonymous {:.1} MB): growth {:+.1} MB over the cycles, {:+.1} MB over idle   (target ≤ 2 MB)",
            mb(after.0),
            mb(after.1),
            mb(after.0) - mb(before.0),
            mb(after.0) - mb(idle.0)
        );
        if let Some((call, loader)) = core {
            println!(
                "  CO-RE load+attach     median {:7.0} µs a call (loaded before: CO-RE cache) vs {:.0} µs the minimal libbpf loader: {:.2}x   (target ≤ 0.6x)",
                median_us(call.clone()),
                median_us(loader.clone()),
                median_us(call) / median_us(loader)
            );
        }
    });
    // The client's connection goes first, so the daemon's shutdown has nothing to wait for.
    drop(rt);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&bpffs);
}
