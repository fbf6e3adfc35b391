//! Load benchmark: what a load costs in this process and through the loader process the daemon
//! uses (`worker.rs`), for a small object. Prints figures; asserts nothing.
//!
//!   cargo bench -p apiary-kernel --bench load
//!
//! Each round loads the `minimal` fixture (one tracepoint program, one array map) and drops it,
//! `LOADS` times per path, alternating the two paths so both see the same machine. The loader
//! process is this bench binary started again with the hidden worker argument, as the daemon
//! starts its own binary. Besides the wall clock, each path's CPU time per load is measured
//! (this thread's, plus the loader process's for its path), and the rest of the wall clock is
//! shown as "not running": on a busy machine a hand-off between two processes can wait for a
//! CPU, which is not work.
//! Needs root.

use apiary_kernel::dispatcher;
use apiary_kernel::worker::{self, WorkerCommand, WORKER_ARG};
use apiary_kernel::{LoadRequest, Loader, ProgramSelect};
use std::time::{Duration, Instant};

const LOADS: usize = 200;

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(WORKER_ARG.as_ref()) {
        std::process::exit(worker::serve());
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("load bench: needs root (loads programs); skipped");
        return;
    }
    let local = Loader::in_process();
    let isolated = Loader::worker(WorkerCommand::this_binary());
    // `minimal`: one tracepoint program and one map, no CO-RE; `core`: the same shape with
    // CO-RE relocations, so libbpf also reads and matches the kernel's BTF on every load.
    for name in ["minimal", "core"] {
        let bytes = std::fs::read(apiary_fixtures::object(name)).expect("fixture");
        let req = LoadRequest {
            object: &bytes,
            source: name,
            programs: vec![],
            globals: vec![],
            reuse_maps: vec![],
            object_name: None,
            core_btf: None,
        };
        // The first load through a loader process starts it: measured on its own.
        let first = isolated.worker_pid().is_none().then(|| {
            let t = Instant::now();
            drop(
                isolated
                    .load(&req)
                    .expect("first load through the loader process"),
            );
            t.elapsed()
        });
        // Warm both paths.
        for _ in 0..10 {
            drop(local.load(&req).expect("load"));
            drop(isolated.load(&req).expect("load"));
        }
        let mut a = Vec::with_capacity(LOADS);
        let mut b = Vec::with_capacity(LOADS);
        let (mut cpu_a, mut cpu_b) = (Duration::ZERO, Duration::ZERO);
        let worker = cpu_clock_of(isolated.worker_pid().expect("the loader process runs"));
        let me = libc::CLOCK_THREAD_CPUTIME_ID;
        for _ in 0..LOADS {
            let c0 = cpu(me);
            let t = Instant::now();
            let l = local.load(&req).expect("in-process load");
            a.push(t.elapsed());
            cpu_a += cpu(me) - c0;
            drop(l);
            let (c0, w0) = (cpu(me), cpu(worker));
            let t = Instant::now();
            let l = isolated
                .load(&req)
                .expect("load through the loader process");
            b.push(t.elapsed());
            cpu_b += (cpu(me) - c0) + (cpu(worker) - w0);
            drop(l);
        }
        println!(
            "load bench: {name} ({} bytes, 1 tracepoint program, 1 map), {LOADS} loads per path",
            bytes.len()
        );
        println!(
            "  path              median    mean       p90       min   | CPU/load  not running/load"
        );
        let per = |d: Duration| ms(d) / LOADS as f64;
        let idle = |v: &[Duration], c: Duration| per(v.iter().sum::<Duration>().saturating_sub(c));
        let (ia, ib) = (idle(&a, cpu_a), idle(&b, cpu_b));
        let ma = report("in process", &mut a, per(cpu_a), ia);
        let mb = report("loader process", &mut b, per(cpu_b), ib);
        println!(
            "  loader process overhead per load: {:.3} ms wall (median), {:.3} ms CPU (both processes)",
            ms(mb) - ms(ma),
            per(cpu_b) - per(cpu_a)
        );
        if let Some(first) = first {
            println!(
                "  first load through it (starts the process): {:.3} ms",
                ms(first)
            );
        }
    }

    core_cache(&local);

    // A chainable program loaded through the loader process still yields its block, which
    // needs the instructions and the loader's map descriptor numbers to cross intact.
    let chain = std::fs::read(apiary_fixtures::object("chain_basic")).expect("fixture");
    let creq = LoadRequest {
        object: &chain,
        source: "chain_basic",
        programs: vec![ProgramSelect {
            ty: None,
            name: "xdp_count_pass".into(),
        }],
        globals: vec![],
        reuse_maps: vec![],
        object_name: None,
        core_btf: None,
    };
    let here = local.load(&creq).expect("load");
    let there = isolated.load(&creq).expect("load");
    let bh = dispatcher::capture_block(&here, "xdp_count_pass").expect("capture in process");
    let bt = dispatcher::capture_block(&there, "xdp_count_pass").expect("capture via loader");
    println!(
        "  chain block via the loader process: {} bytes of instructions, {} maps (in process: {} / {})",
        there.program_insns("xdp_count_pass").map_or(0, |i| i.len()),
        bt.maps.len(),
        here.program_insns("xdp_count_pass").map_or(0, |i| i.len()),
        bh.maps.len()
    );
}

/// The CO-RE cache: the `core` fixture loaded with the kernel's whole BTF and with the minimal
/// BTF the cache keeps for it, alternating, in this process.
fn core_cache(local: &Loader) {
    let bytes = std::fs::read(apiary_fixtures::object("core")).expect("fixture");
    let info = apiary_core::elf::inspect(&bytes).expect("inspect");
    let dir = std::env::temp_dir().join(format!("apiary-core-bench-{}", std::process::id()));
    let cache = apiary_kernel::core_cache::CoreCache::new(&dir);
    let t = Instant::now();
    let entry = cache.fill(&bytes, &info).expect("a cache entry");
    let fill = t.elapsed();
    let req = |core_btf| LoadRequest {
        object: &bytes,
        source: "core",
        programs: vec![],
        globals: vec![],
        reuse_maps: vec![],
        object_name: None,
        core_btf,
    };
    let (whole, small) = (req(None), req(Some(entry.clone())));
    for _ in 0..10 {
        drop(local.load(&whole).expect("load"));
        drop(local.load(&small).expect("load"));
    }
    let (mut a, mut b) = (Vec::with_capacity(LOADS), Vec::with_capacity(LOADS));
    for _ in 0..LOADS {
        let t = Instant::now();
        drop(local.load(&whole).expect("load"));
        a.push(t.elapsed());
        let t = Instant::now();
        drop(local.load(&small).expect("load"));
        b.push(t.elapsed());
    }
    a.sort();
    b.sort();
    let size = std::fs::metadata(&entry).map(|m| m.len()).unwrap_or(0);
    println!("CO-RE cache: core fixture, {LOADS} in-process loads each, alternating");
    println!(
        "  kernel's whole BTF: median {:.3} ms | minimal BTF ({size} bytes, made once in {:.1} ms): median {:.3} ms | ratio {:.2}",
        ms(a[LOADS / 2]),
        ms(fill),
        ms(b[LOADS / 2]),
        ms(b[LOADS / 2]) / ms(a[LOADS / 2])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Print one row and return the median.
fn report(name: &str, v: &mut [Duration], cpu_ms: f64, wait_ms: f64) -> Duration {
    v.sort();
    let n = v.len();
    let mean = v.iter().sum::<Duration>() / n as u32;
    let (med, p90, min) = (v[n / 2], v[n * 9 / 10], v[0]);
    println!(
        "  {name:<16} {:6.3} ms {:6.3} ms {:6.3} ms {:6.3} ms | {cpu_ms:6.3} ms {wait_ms:8.3} ms",
        ms(med),
        ms(mean),
        ms(p90),
        ms(min)
    );
    med
}

/// The CPU-time clock of another process.
fn cpu_clock_of(pid: u32) -> libc::clockid_t {
    let mut id: libc::clockid_t = 0;
    // SAFETY: writes one clockid_t to a valid pointer.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) };
    assert_eq!(rc, 0, "clock_getcpuclockid({pid})");
    id
}

/// CPU time consumed so far on `clock` (this thread's, or a process's).
fn cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
