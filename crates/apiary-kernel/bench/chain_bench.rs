//! Chain benchmark: what a dispatcher costs per packet and per slot, and how long composing and
//! loading a chain takes. Prints figures; asserts nothing (timings belong in reports, not tests).
//!
//!   cargo bench -p apiary-kernel --bench chain
//!
//! Two kinds of slot are measured: `xdp_trivial` returns a constant, which lets the verifier
//! fold the dispatcher's checks away; `xdp_opaque` decides from the packet, so every check
//! runs. Each is composed inline (the default) and called (what a block whose main function
//! tail-calls, or writes all of r6-r9, gets).
//!
//! Per-packet costs come from BPF_PROG_TEST_RUN over a 64-byte UDP packet with `REPEAT` runs,
//! best of `ROUNDS`, both as the wall clock around the syscall and as the kernel's own per-run
//! figure (whole nanoseconds). Per-slot costs use the kernel's figure: on a shared VM the wall
//! clock moves in scheduler-tick steps. Needs root.

use apiary_core::chain::{ChainKind, ComposeOptions, Inline, ProceedOn};
use apiary_kernel::dispatcher::{self, ChainSlot};
use apiary_kernel::{load, sys, LoadRequest, LoadedObject, ProgramSelect};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("chain bench: needs root (BPF_PROG_TEST_RUN); skipped");
        return;
    }
    let packet = udp_packet();
    let d = ChainKind::Xdp.default_proceed_on();
    println!("chain bench: BPF_PROG_TEST_RUN, 64-byte UDP packet, {REPEAT} runs, best of {ROUNDS}");
    println!("  ns/packet: wall clock around the syscall; kernel ns: the kernel's own per-run figure (whole ns);");
    println!(
        "  ns/slot: (kernel ns - empty dispatcher's) / slots, the program's own work included"
    );
    let empty = dispatcher::compose_and_load(ChainKind::Xdp, false, &[], false).expect("compose");
    let (base, base_k) = ns_per_run(empty.prog(), &packet);
    println!("  dispatcher with no slots:   {base:7.2} ns/packet (kernel {base_k} ns)");
    // trivial: returns a constant, so the verifier folds each slot's checks away;
    // opaque: the verdict depends on the packet, so every check runs.
    for program in ["xdp_trivial", "xdp_opaque"] {
        let obj = load_basic(program);
        let block = dispatcher::capture_block(&obj, program).expect("capture");
        let (bare, bare_k) = ns_per_run(obj.program_fd(program).expect("fd"), &packet);
        println!();
        println!("  {program} alone: {bare:7.2} ns/packet (kernel {bare_k} ns)");
        println!("  placement  counters  slots  ns/packet  kernel ns  programs  ns/slot");
        for inline in [Inline::On, Inline::Off] {
            for counters in [false, true] {
                for n in [1usize, 2, 10, 64] {
                    let slots: Vec<ChainSlot> = (0..n)
                        .map(|i| ChainSlot {
                            name: format!("s{i}"),
                            block: block.clone(),
                            proceed_on: d,
                        })
                        .collect();
                    let opts = ComposeOptions {
                        counters,
                        inline,
                        ..Default::default()
                    };
                    let chain =
                        dispatcher::compose_and_load_with(ChainKind::Xdp, false, &slots, &opts)
                            .expect("compose");
                    let (t, k) = ns_per_run(chain.prog(), &packet);
                    // Everything above the empty dispatcher, the program's own work included,
                    // from the kernel's figure (steadier than the wall clock here).
                    let per_slot = (f64::from(k) - f64::from(base_k)) / n as f64;
                    println!(
                        "  {:<9}  {:<8}  {n:5}  {t:9.2}  {k:9}  {:8}  {per_slot:7.2}",
                        if inline == Inline::On {
                            "inline"
                        } else {
                            "call"
                        },
                        on_off(counters),
                        chain.programs.len(),
                    );
                }
            }
        }
    }

    // Compose + load the chain that results from adding the Nth program, each program with its
    // own map (so 64 slots with counters spill into a second dispatcher program).
    println!();
    println!("  compose + load of a chain when its Nth program is added (each program has its own map; median of {ROUNDS})");
    let objs: Vec<LoadedObject> = (0..64).map(|_| load_basic("xdp_count_pass")).collect();
    let slots: Vec<ChainSlot> = objs
        .iter()
        .enumerate()
        .map(|(i, o)| ChainSlot {
            name: format!("count{i}"),
            block: dispatcher::capture_block(o, "xdp_count_pass").expect("capture"),
            proceed_on: ProceedOn::from_mask(ChainKind::Xdp, d.mask()),
        })
        .collect();
    let t0 = Instant::now();
    let _ = dispatcher::capture_block(&objs[0], "xdp_count_pass").expect("capture");
    let capture = t0.elapsed();
    for n in [1usize, 10, 64] {
        for counters in [false, true] {
            let mut times: Vec<Duration> = (0..ROUNDS)
                .map(|_| {
                    let t0 = Instant::now();
                    let c =
                        dispatcher::compose_and_load(ChainKind::Xdp, false, &slots[..n], counters)
                            .expect("compose");
                    let t = t0.elapsed();
                    drop(c);
                    t
                })
                .collect();
            times.sort();
            println!(
                "  N={n:<3} counters {:<3}  {:8.2} ms",
                on_off(counters),
                ms(times[ROUNDS / 2])
            );
        }
    }
    println!("  capturing one program's block: {:.3} ms", ms(capture));
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (wall-clock ns per run, the kernel's own whole-ns figure), best of ROUNDS each.
fn ns_per_run(prog: BorrowedFd<'_>, packet: &[u8]) -> (f64, u32) {
    // Warm up (JIT caches, page faults).
    sys::prog_test_run(prog, packet, 10_000).expect("test run");
    let mut wall = f64::INFINITY;
    let mut kernel = u32::MAX;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let r = sys::prog_test_run(prog, packet, REPEAT).expect("test run");
        wall = wall.min(t0.elapsed().as_nanos() as f64 / f64::from(REPEAT));
        kernel = kernel.min(r.duration_ns);
    }
    (wall, kernel)
}

fn load_basic(program: &str) -> LoadedObject {
    let bytes = std::fs::read(apiary_fixtures::object("chain_basic")).expect("fixture");
    let req = LoadRequest {
        object: &bytes,
        source: "chain_basic",
        programs: vec![ProgramSelect {
            ty: None,
            name: program.into(),
        }],
        globals: vec![],
        reuse_maps: vec![],
        object_name: None,
        core_btf: None,
    };
    load(&req).expect("load")
}

fn udp_packet() -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p[14] = 0x45;
    p[16..18].copy_from_slice(&50u16.to_be_bytes());
    p[22] = 64;
    p[23] = 17;
    p[26..30].copy_from_slice(&[169, 254, 1, 1]);
    p[30..34].copy_from_slice(&[169, 254, 1, 2]);
    p[36..38].copy_from_slice(&53u16.to_be_bytes());
    p[38..40].copy_from_slice(&30u16.to_be_bytes());
    p
}
