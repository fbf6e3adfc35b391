//! Kernel tests for multi-program chains: composed dispatchers really load, run their slots in
//! priority order with proceed-on short-circuits (proven through the user programs' own maps
//! and BPF_PROG_TEST_RUN), carry tail calls, callbacks, global functions and data sections,
//! split past one program's limits, and swap atomically under real traffic.
//!
//! Needs root; skips without it unless APIARY_REQUIRE_PRIVILEGED=1.

use apiary_core::chain::{
    self, Block, ChainError, ChainKind, ComposeOptions, Inline, Limits, Placement, Priority,
    ProceedOn, SlotKey,
};
use apiary_core::Hook;
use apiary_kernel::dispatcher::{self, ChainSlot, ComposedDispatcher, PinRole};
use apiary_kernel::{
    load, maps, sys, GlobalPatch, KernelError, LoadRequest, LoadedObject, ProgramSelect,
};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_SHOT: u32 = 2;
const TCX_NEXT: u32 = u32::MAX; // -1
const DROP_PORT: u16 = 9999;

use apiary_fixtures::privileged;

/// Load `programs` of fixture `name`, with `globals` (name -> bytes) patched in.
fn load_fixture(name: &str, programs: &[&str], globals: &[(&str, Vec<u8>)]) -> LoadedObject {
    let bytes = std::fs::read(apiary_fixtures::object(name)).expect("fixture object");
    let patches = if globals.is_empty() {
        Vec::new()
    } else {
        let info = apiary_core::elf::inspect(&bytes).expect("inspect fixture");
        let raw: Vec<(String, Vec<u8>)> = globals
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect();
        apiary_core::globals::resolve(&info, &raw, &[])
            .expect("resolve globals")
            .into_iter()
            .map(|g| GlobalPatch {
                name: g.name,
                section: g.section,
                offset: g.offset,
                bytes: g.bytes,
            })
            .collect()
    };
    let req = LoadRequest {
        object: &bytes,
        source: name,
        programs: programs
            .iter()
            .map(|p| ProgramSelect {
                ty: None,
                name: p.to_string(),
            })
            .collect(),
        globals: patches,
        reuse_maps: vec![],
        object_name: None,
        core_btf: None,
    };
    load(&req).unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// One program of chain_basic, in its own load (so with its own `hits` map).
fn basic(program: &str) -> LoadedObject {
    load_fixture("chain_basic", &[program], &[])
}

fn basic_returning(program: &str, global: &str, verdict: i32) -> LoadedObject {
    load_fixture(
        "chain_basic",
        &[program],
        &[(global, verdict.to_ne_bytes().to_vec())],
    )
}

fn read_u64(obj: &LoadedObject, map: &str, key: u32) -> u64 {
    let info = &obj
        .maps
        .iter()
        .find(|m| m.name == map || m.name.ends_with(map))
        .expect("map")
        .info;
    let fd = obj
        .map_fd(
            &obj.maps
                .iter()
                .find(|m| m.name == map || m.name.ends_with(map))
                .expect("map")
                .name,
        )
        .expect("fd");
    let v = maps::lookup(fd, info, &key.to_ne_bytes())
        .expect("lookup")
        .expect("present");
    u64::from_ne_bytes(v[0][..8].try_into().expect("8 bytes"))
}

fn hits(obj: &LoadedObject) -> u64 {
    read_u64(obj, "hits", 0)
}

fn slot(obj: &LoadedObject, program: &str, name: &str, proceed_on: ProceedOn) -> ChainSlot {
    let block = dispatcher::capture_block(obj, program)
        .unwrap_or_else(|e| panic!("capture {program}: {e}"));
    ChainSlot {
        name: name.to_string(),
        block,
        proceed_on,
    }
}

fn xdp(s: &str) -> ProceedOn {
    ProceedOn::parse(ChainKind::Xdp, s).expect("proceed-on")
}

/// A 64-byte Ethernet + IPv4 + UDP packet between link-local addresses.
fn udp_packet(dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    p[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut p[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[169, 254, 1, 1]);
    ip[16..20].copy_from_slice(&[169, 254, 1, 2]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut p[34..42];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&30u16.to_be_bytes());
    p
}

fn run(d: &ComposedDispatcher, packet: &[u8]) -> u32 {
    sys::prog_test_run(d.prog(), packet, 1)
        .expect("test run")
        .retval
}

fn compose(kind: ChainKind, slots: &[ChainSlot], counters: bool) -> ComposedDispatcher {
    dispatcher::compose_and_load(kind, false, slots, counters)
        .unwrap_or_else(|e| panic!("compose: {e}"))
}

#[test]
fn two_programs_run_in_priority_order_and_short_circuit() {
    if !privileged() {
        return;
    }
    let counter = basic("xdp_counter");
    let dropper = basic("xdp_drop_port");
    let d = ChainKind::Xdp.default_proceed_on();
    // (priority, attach sequence, slot)
    let mut members = vec![
        (
            Priority::new(20).unwrap(),
            1u64,
            slot(&dropper, "xdp_drop_port", "dropper", d),
        ),
        (
            Priority::new(10).unwrap(),
            2u64,
            slot(&counter, "xdp_counter", "counter", d),
        ),
    ];
    chain::order_slots(&mut members, |m| SlotKey {
        priority: m.0,
        seq: m.1,
    });
    let slots: Vec<ChainSlot> = members.iter().map(|m| m.2.clone()).collect();
    assert_eq!(slots[0].name, "counter");
    let chain = compose(ChainKind::Xdp, &slots, true);

    // Counter first (passes, proceeds), then the dropper drops.
    assert_eq!(run(&chain, &udp_packet(DROP_PORT)), XDP_DROP);
    assert_eq!((hits(&counter), hits(&dropper)), (1, 1));
    // Another port: both run, the chain passes.
    assert_eq!(run(&chain, &udp_packet(53)), XDP_PASS);
    assert_eq!((hits(&counter), hits(&dropper)), (2, 1));

    let st = chain.stats().unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!((st[0].runs, st[0].count(2)), (2, 2));
    assert_eq!((st[1].runs, st[1].count(1), st[1].count(2)), (2, 1, 1));

    // Re-prioritise the dropper to run first: its drop now ends the chain before the counter.
    members[1].0 = Priority::new(5).unwrap();
    chain::order_slots(&mut members, |m| SlotKey {
        priority: m.0,
        seq: m.1,
    });
    let slots: Vec<ChainSlot> = members.iter().map(|m| m.2.clone()).collect();
    assert_eq!(slots[0].name, "dropper");
    let chain = compose(ChainKind::Xdp, &slots, false);
    assert_eq!(run(&chain, &udp_packet(DROP_PORT)), XDP_DROP);
    assert_eq!(
        (hits(&counter), hits(&dropper)),
        (2, 2),
        "the counter did not run"
    );
    assert_eq!(run(&chain, &udp_packet(53)), XDP_PASS);
    assert_eq!((hits(&counter), hits(&dropper)), (3, 2));
    assert!(chain.stats().unwrap().is_empty());
}

#[test]
fn three_programs_with_different_proceed_on_sets() {
    if !privileged() {
        return;
    }
    let a = basic("xdp_counter");
    let b = basic("xdp_drop_port");
    let c = basic("xdp_counter");
    let d = ChainKind::Xdp.default_proceed_on();
    let pkt = udp_packet(DROP_PORT);

    // Default sets: B's drop ends the chain; C never runs.
    let chain = compose(
        ChainKind::Xdp,
        &[
            slot(&a, "xdp_counter", "a", d),
            slot(&b, "xdp_drop_port", "b", d),
            slot(&c, "xdp_counter", "c", d),
        ],
        true,
    );
    assert_eq!(run(&chain, &pkt), XDP_DROP);
    assert_eq!((hits(&a), hits(&b), hits(&c)), (1, 1, 0));
    let st = chain.stats().unwrap();
    assert_eq!(st.iter().map(|s| s.runs).collect::<Vec<_>>(), vec![1, 1, 0]);

    // The trap: B proceeds on drop, so C runs and its pass is the verdict.
    let chain = compose(
        ChainKind::Xdp,
        &[
            slot(&a, "xdp_counter", "a", d),
            slot(&b, "xdp_drop_port", "b", xdp("drop,pass")),
            slot(&c, "xdp_counter", "c", d),
        ],
        true,
    );
    assert_eq!(run(&chain, &pkt), XDP_PASS);
    assert_eq!((hits(&a), hits(&b), hits(&c)), (2, 2, 1));

    // A proceeds only on dispatcher_return: its pass ends the chain at once.
    let chain = compose(
        ChainKind::Xdp,
        &[
            slot(&a, "xdp_counter", "a", xdp("dispatcher_return")),
            slot(&b, "xdp_drop_port", "b", d),
            slot(&c, "xdp_counter", "c", d),
        ],
        false,
    );
    assert_eq!(run(&chain, &pkt), XDP_PASS);
    assert_eq!((hits(&a), hits(&b), hits(&c)), (3, 2, 1));

    // A program returning dispatcher_return proceeds, and the last one's becomes XDP_PASS.
    let r1 = basic_returning("xdp_counter", "xdp_verdict", 31);
    let r2 = basic_returning("xdp_counter", "xdp_verdict", 31);
    let chain = compose(
        ChainKind::Xdp,
        &[
            slot(&r1, "xdp_counter", "r1", d),
            slot(&r2, "xdp_counter", "r2", d),
        ],
        true,
    );
    assert_eq!(run(&chain, &pkt), XDP_PASS);
    assert_eq!((hits(&r1), hits(&r2)), (1, 1));
    assert_eq!(chain.stats().unwrap()[1].count(31), 1);

    // An out-of-range return value ends the chain and is counted as such.
    let odd = basic_returning("xdp_counter", "xdp_verdict", 1000);
    let chain = compose(
        ChainKind::Xdp,
        &[
            slot(&odd, "xdp_counter", "odd", d),
            slot(&r1, "xdp_counter", "r1", d),
        ],
        true,
    );
    assert_eq!(run(&chain, &pkt), 1000);
    assert_eq!(hits(&r1), 1, "nothing ran after the out-of-range value");
    assert_eq!(chain.stats().unwrap()[0].out_of_range, 1);
}

#[test]
fn tc_chain_runs_through_tcx_semantics() {
    if !privileged() {
        return;
    }
    let counter = basic("tc_counter");
    let dropper = basic("tc_drop_port");
    let d = ChainKind::Tc.default_proceed_on();
    let slots = [
        slot(&counter, "tc_counter", "counter", d),
        slot(&dropper, "tc_drop_port", "dropper", d),
    ];
    let chain = compose(ChainKind::Tc, &slots, true);
    assert_eq!(run(&chain, &udp_packet(DROP_PORT)), TC_ACT_SHOT);
    assert_eq!((hits(&counter), hits(&dropper)), (1, 1));
    // Both proceed (ok): the chain says TCX_NEXT so later links and the stack carry on.
    assert_eq!(run(&chain, &udp_packet(53)), TCX_NEXT);
    assert_eq!((hits(&counter), hits(&dropper)), (2, 1));
    let st = chain.stats().unwrap();
    assert_eq!((st[0].count(0), st[1].count(2), st[1].count(0)), (2, 1, 1));

    // unspec (-1) is not in the default set: it ends the chain, as TCX_NEXT.
    let unspec = basic_returning("tc_counter", "tc_verdict", -1);
    let chain = compose(
        ChainKind::Tc,
        &[
            slot(&unspec, "tc_counter", "u", d),
            slot(&counter, "tc_counter", "c", d),
        ],
        true,
    );
    assert_eq!(run(&chain, &udp_packet(53)), TCX_NEXT);
    assert_eq!(hits(&counter), 2, "the counter after unspec did not run");
    assert_eq!(chain.stats().unwrap()[0].count(-1), 1);
    let chain = compose(
        ChainKind::Tc,
        &[
            slot(
                &unspec,
                "tc_counter",
                "u",
                ProceedOn::parse(ChainKind::Tc, "unspec").unwrap(),
            ),
            slot(&counter, "tc_counter", "c", d),
        ],
        false,
    );
    run(&chain, &udp_packet(53));
    assert_eq!(hits(&counter), 3);
}

#[test]
fn sixty_four_programs_each_with_its_own_map() {
    if !privileged() {
        return;
    }
    let objs: Vec<LoadedObject> = (0..64).map(|_| basic("xdp_count_pass")).collect();
    let d = ChainKind::Xdp.default_proceed_on();
    let slots: Vec<ChainSlot> = objs
        .iter()
        .enumerate()
        .map(|(i, o)| slot(o, "xdp_count_pass", &format!("count{i}"), d))
        .collect();
    let mut ids: Vec<u32> = slots.iter().map(|s| s.block.maps[0].id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64, "each program has its own map");

    // Without counters, 64 maps fit one program.
    let one = compose(ChainKind::Xdp, &slots, false);
    assert_eq!(one.programs.len(), 1);
    assert_eq!(run(&one, &udp_packet(53)), XDP_PASS);
    assert!(objs.iter().all(|o| hits(o) == 1));

    // With counters the dispatcher needs 3 maps of its own: the chain continues into a second
    // program by tail call.
    let two = compose(ChainKind::Xdp, &slots, true);
    assert_eq!(two.programs.len(), 2);
    assert!(two.next_map.is_some());
    assert_eq!(run(&two, &udp_packet(53)), XDP_PASS);
    assert!(objs.iter().all(|o| hits(o) == 2));
    let st = two.stats().unwrap();
    assert_eq!(st.len(), 64);
    assert!(st.iter().all(|s| s.runs == 1 && s.count(2) == 1));

    // What to pin keeps the whole chain alive after the composing process lets go of it.
    let dir = PathBuf::from(format!("/sys/fs/bpf/apiary-dt-{}", std::process::id()));
    let _cleanup = PinDir(dir.clone());
    let pins = two.pins();
    assert_eq!(
        pins.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![PinRole::Program, PinRole::NextMap, PinRole::StatsMap]
    );
    for (role, fd) in &pins {
        sys::pin(*fd, &dir.join(role.file_name())).unwrap();
    }
    drop(two);
    let prog = sys::obj_get(&dir.join(PinRole::Program.file_name())).unwrap();
    assert_eq!(
        sys::prog_test_run(prog.as_fd(), &udp_packet(53), 1)
            .unwrap()
            .retval,
        XDP_PASS
    );
    assert!(
        objs.iter().all(|o| hits(o) == 3),
        "all 64 ran from the pinned chain"
    );
    let stats = sys::obj_get(&dir.join(PinRole::StatsMap.file_name())).unwrap();
    let st = dispatcher::read_stats(stats.as_fd(), ChainKind::Xdp).unwrap();
    assert!(st.iter().all(|s| s.runs == 2));

    // The trap pins() guards against: without a user reference the kernel empties the program
    // array (from a workqueue, so shortly after), and the chain silently ends after the first
    // program.
    let unpinned = compose(ChainKind::Xdp, &slots, true);
    let entry = unpinned.prog().try_clone_to_owned().unwrap();
    let first_program_slots = unpinned.programs[0].slots.clone();
    drop(unpinned);
    let last = objs.last().unwrap();
    let mut emptied = false;
    for _ in 0..500 {
        let (before_first, before_last) = (hits(&objs[0]), hits(last));
        assert_eq!(
            sys::prog_test_run(entry.as_fd(), &udp_packet(53), 1)
                .unwrap()
                .retval,
            XDP_PASS
        );
        assert_eq!(
            hits(&objs[0]),
            before_first + 1,
            "the first program's slots still run"
        );
        if hits(last) == before_last {
            emptied = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(emptied, "the kernel emptied the unreferenced program array");
    assert!(!first_program_slots.contains(&63));
}

#[test]
fn forced_split_runs_every_program() {
    if !privileged() {
        return;
    }
    let objs: Vec<LoadedObject> = (0..5).map(|_| basic("xdp_count_pass")).collect();
    let d = ChainKind::Xdp.default_proceed_on();
    let slots: Vec<ChainSlot> = objs
        .iter()
        .enumerate()
        .map(|(i, o)| slot(o, "xdp_count_pass", &format!("c{i}"), d))
        .collect();
    // Two functions per program: the dispatcher and one block.
    let opts = ComposeOptions {
        counters: true,
        inline: Inline::Off,
        limits: Limits {
            max_subprogs: 2,
            ..Limits::default()
        },
    };
    let chain = dispatcher::compose_and_load_with(ChainKind::Xdp, false, &slots, &opts).unwrap();
    assert_eq!(chain.programs.len(), 5);
    assert_eq!(run(&chain, &udp_packet(53)), XDP_PASS);
    assert!(objs.iter().all(|o| hits(o) == 1));
    assert!(chain.stats().unwrap().iter().all(|s| s.runs == 1));
    let names: Vec<&str> = chain.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "apiary_xdp",
            "apiary_xdp_2",
            "apiary_xdp_3",
            "apiary_xdp_4",
            "apiary_xdp_5"
        ]
    );
}

#[test]
fn maps_keep_their_values_across_recomposition_and_processes() {
    if !privileged() {
        return;
    }
    let a = basic("xdp_counter");
    let b = basic("xdp_drop_port");
    let d = ChainKind::Xdp.default_proceed_on();
    let sa = slot(&a, "xdp_counter", "a", d);
    let chain = compose(ChainKind::Xdp, std::slice::from_ref(&sa), false);
    run(&chain, &udp_packet(53));
    run(&chain, &udp_packet(53));
    assert_eq!(hits(&a), 2);

    // Another process would keep the block as data and rebuild from map ids.
    let stored = serde_json::to_string(&sa.block).unwrap();
    drop(chain);
    let block: Block = serde_json::from_str(&stored).unwrap();
    let rebuilt = ChainSlot {
        name: "a".into(),
        block,
        proceed_on: d,
    };
    let chain = compose(
        ChainKind::Xdp,
        &[rebuilt, slot(&b, "xdp_drop_port", "b", d)],
        true,
    );
    run(&chain, &udp_packet(53));
    assert_eq!(hits(&a), 3, "the same map, not a new one");

    // A map that is gone is a clear error naming the slot.
    let mut gone = sa.block.clone();
    gone.maps[0].id = u32::MAX - 1;
    let e = dispatcher::compose_and_load(
        ChainKind::Xdp,
        false,
        &[ChainSlot {
            name: "gone".into(),
            block: gone,
            proceed_on: d,
        }],
        false,
    )
    .unwrap_err();
    assert!(
        matches!(e, KernelError::NotFound { .. }) && e.to_string().contains("slot 0 (gone)"),
        "{e}"
    );
}

#[test]
fn tail_calls_callbacks_global_functions_and_globals_work_in_a_chain() {
    if !privileged() {
        return;
    }
    let progs = [
        "tail_target",
        "xdp_tail",
        "xdp_loop",
        "xdp_global",
        "xdp_globals",
        "xdp_kfunc",
    ];
    let obj = load_fixture("chain_features", &progs, &[]);
    // jmp[0] = tail_target
    let jmp = obj.map_fd("jmp").unwrap();
    let target = obj.program_fd("tail_target").unwrap();
    let key = 0u32.to_ne_bytes();
    let val = (std::os::fd::AsRawFd::as_raw_fd(&target) as u32).to_ne_bytes();
    // SAFETY: 4-byte key and value buffers.
    let ret = unsafe {
        libbpf_sys::bpf_map_update_elem(
            std::os::fd::AsRawFd::as_raw_fd(&jmp),
            key.as_ptr() as *const _,
            val.as_ptr() as *const _,
            0,
        )
    };
    assert_eq!(ret, 0);

    let d = ChainKind::Xdp.default_proceed_on();
    let slots: Vec<ChainSlot> = progs[1..].iter().map(|p| slot(&obj, p, p, d)).collect();
    let shapes: Vec<_> = slots.iter().map(|s| s.block.shape().unwrap()).collect();
    assert!(shapes[0].main_tail_calls);
    assert_eq!(
        shapes[1].funcs.len(),
        2,
        "the bpf_loop callback is a function of its block"
    );
    assert_eq!(
        shapes[2].funcs.len(),
        2,
        "the global function is appended to its block"
    );
    let r = |k| read_u64(&obj, "results", k);
    for (round, inline) in [Inline::On, Inline::Off].into_iter().enumerate() {
        let opts = ComposeOptions {
            counters: true,
            inline,
            ..Default::default()
        };
        let chain =
            dispatcher::compose_and_load_with(ChainKind::Xdp, false, &slots, &opts).unwrap();
        // The tail-calling block is always called: inlined, its tail call would end the chain.
        assert_eq!(chain.placements[0], Placement::Call);
        let want = if inline == Inline::On {
            Placement::Inline
        } else {
            Placement::Call
        };
        assert!(
            chain.placements[1..].iter().all(|p| *p == want),
            "{:?}",
            chain.placements
        );
        for _ in 0..2 {
            assert_eq!(run(&chain, &udp_packet(53)), XDP_PASS);
        }
        let n = 2 * (round as u64 + 1);
        assert_eq!(r(0), n, "the tail-called program ran");
        assert_eq!(r(1), n, "the tail-calling program ran");
        assert_eq!(r(2), 0, "the tail call did not fail");
        assert_eq!(r(3), 4 * n, "bpf_loop ran its callback 4 times per packet");
        assert_eq!(r(4), n, "the global function ran");
        assert_eq!(r(5), 7 * n, ".rodata read (7 per packet)");
        assert_eq!(r(6), (1..=n).sum::<u64>(), ".bss incremented");
        assert_eq!(r(7), (5..5 + n).sum::<u64>(), ".data read and written");
        assert_eq!(read_u64(&obj, ".bss", 0), n);
        assert_eq!(r(8), n, "the kfunc program ran");
        // Every slot ran on both packets: the chain went on after the tail call returned.
        assert!(chain
            .stats()
            .unwrap()
            .iter()
            .all(|s| s.runs == 2 && s.count(2) == 2));
    }
}

#[test]
fn deep_stacks_fall_back_to_calls_when_inlining_would_stack_them() {
    if !privileged() {
        return;
    }
    let obj = load_fixture("chain_features", &["xdp_stack_main", "xdp_stack_sub"], &[]);
    let d = ChainKind::Xdp.default_proceed_on();
    let slots = [
        slot(&obj, "xdp_stack_main", "main480", d),
        slot(&obj, "xdp_stack_sub", "sub480", d),
    ];
    assert!(slots[0].block.shape().unwrap().main_uses_stack);
    // Inlined, main480's 480 bytes would sit under sub480's subprogram's 480: over 512. The
    // kernel says so, and the chain is composed again with only stackless mains inlined.
    let chain = compose(ChainKind::Xdp, &slots, true);
    assert_eq!(chain.placements, vec![Placement::Call, Placement::Inline]);
    assert_eq!(run(&chain, &udp_packet(53)), XDP_PASS);
    assert_eq!(
        (read_u64(&obj, "results", 9), read_u64(&obj, "results", 10)),
        (3, 3)
    );
    let e = dispatcher::compose_and_load_with(
        ChainKind::Xdp,
        false,
        &slots,
        &ComposeOptions {
            inline: Inline::Stackless,
            ..Default::default()
        },
    );
    assert!(e.is_ok(), "stackless inlining loads directly");
}

#[test]
fn frags_chains_load_and_mixing_is_refused() {
    if !privileged() {
        return;
    }
    let f1 = basic("xdp_frags_count");
    let f2 = basic("xdp_frags_count");
    let plain = basic("xdp_counter");
    let d = ChainKind::Xdp.default_proceed_on();
    let frags = [
        slot(&f1, "xdp_frags_count", "f1", d),
        slot(&f2, "xdp_frags_count", "f2", d),
    ];
    assert!(frags[0].block.frags);
    let chain = dispatcher::compose_and_load(ChainKind::Xdp, true, &frags, true).unwrap();
    assert_eq!(run(&chain, &udp_packet(53)), XDP_PASS);
    assert_eq!((hits(&f1), hits(&f2)), (1, 1));

    let mixed = [
        slot(&f1, "xdp_frags_count", "f1", d),
        slot(&plain, "xdp_counter", "plain", d),
    ];
    let e = dispatcher::compose_and_load(ChainKind::Xdp, true, &mixed, false).unwrap_err();
    assert!(
        matches!(&e, KernelError::Chain(ChainError::InSlot { slot: 1, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("frags"), "{e}");
    let e = dispatcher::compose_and_load(ChainKind::Xdp, false, &mixed, false).unwrap_err();
    assert!(e.to_string().contains("slot 0 (f1)"), "{e}");

    // Only loaded programs can be captured.
    let e = dispatcher::capture_block(&plain, "xdp_drop_port").unwrap_err();
    assert!(
        e.to_string().contains("was not loaded") && e.to_string().contains("xdp_counter"),
        "{e}"
    );

    // Program types do not mix either.
    let tc = basic("tc_counter");
    let e = dispatcher::compose_and_load(
        ChainKind::Xdp,
        false,
        &[
            slot(&plain, "xdp_counter", "x", d),
            slot(&tc, "tc_counter", "t", d),
        ],
        false,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("slot 1 (t)") && e.to_string().contains("tc program"),
        "{e}"
    );
}

#[test]
fn verifier_rejection_names_the_slot() {
    if !privileged() {
        return;
    }
    let good = basic("xdp_counter");
    let d = ChainKind::Xdp.default_proceed_on();
    // r0 = *(u64 *)(r1 + 10000); exit: far outside the XDP context, invalid wherever it runs.
    let bad = Block {
        kind: ChainKind::Xdp,
        frags: false,
        expected_attach_type: libbpf_sys::BPF_XDP,
        gpl: true,
        insns: vec![
            [0x79, 0x10, 0x10, 0x27, 0, 0, 0, 0],
            [0x95, 0, 0, 0, 0, 0, 0, 0],
        ],
        maps: vec![],
    };
    let slots = [
        slot(&good, "xdp_counter", "good", d),
        ChainSlot {
            name: "bad".into(),
            block: bad,
            proceed_on: d,
        },
    ];
    let e = dispatcher::compose_and_load(ChainKind::Xdp, false, &slots, true).unwrap_err();
    match &e {
        KernelError::Verifier {
            program,
            verifier_log,
            ..
        } => {
            assert!(program.contains("slot 1 (bad)"), "{program}");
            assert!(
                verifier_log.contains("invalid bpf_context access"),
                "{verifier_log}"
            );
        }
        other => panic!("expected a verifier error, got {other}"),
    }
}

/// Removes a bpffs directory of pins on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two network namespaces joined by a veth pair; deleted on drop, which also removes the veths.
struct VethPair {
    ns: [String; 2],
    dev: [String; 2],
}

impl VethPair {
    fn new() -> VethPair {
        let pid = std::process::id();
        let v = VethPair {
            ns: [format!("apiary-dt-{pid}-a"), format!("apiary-dt-{pid}-b")],
            dev: [
                format!("adt{}a", pid % 100_000),
                format!("adt{}b", pid % 100_000),
            ],
        };
        for n in &v.ns {
            ip(&["netns", "add", n]);
        }
        ip(&[
            "link", "add", &v.dev[0], "netns", &v.ns[0], "type", "veth", "peer", "name", &v.dev[1],
            "netns", &v.ns[1],
        ]);
        for (i, addr) in ["169.254.77.1/24", "169.254.77.2/24"].iter().enumerate() {
            ip(&["-n", &v.ns[i], "addr", "add", addr, "dev", &v.dev[i]]);
            ip(&["-n", &v.ns[i], "link", "set", &v.dev[i], "up"]);
            ip(&["-n", &v.ns[i], "link", "set", "lo", "up"]);
        }
        v
    }

    fn netns_path(&self, i: usize) -> PathBuf {
        Path::new("/var/run/netns").join(&self.ns[i])
    }

    /// Ping b from a; returns (transmitted, received).
    fn ping_command(&self, count: u32, interval: &str) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns[0],
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "2",
            "169.254.77.2",
        ]);
        c
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ping_result(out: &std::process::Output) -> (u32, u32) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping output: {text}"));
    let num = |pat: &str| -> u32 {
        line.split(',')
            .find(|p| p.contains(pat))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"))
}

#[test]
fn real_traffic_through_veth_and_atomic_swap() {
    if !privileged() {
        return;
    }
    let pair = VethPair::new();
    // Resolve neighbours before anything is attached, so only ICMP is left to count.
    let (_, rx) = ping_result(&pair.ping_command(1, "0.2").output().unwrap());
    assert_eq!(rx, 1, "the veth pair works without XDP");

    let c1 = basic("xdp_counter");
    let c2 = basic("xdp_counter");
    let d = ChainKind::Xdp.default_proceed_on();
    let s1 = slot(&c1, "xdp_counter", "c1", d);
    let s2 = slot(&c2, "xdp_counter", "c2", d);
    let first = compose(ChainKind::Xdp, std::slice::from_ref(&s1), true);
    let hook = Hook {
        kind: ChainKind::Xdp,
        iface: pair.dev[1].clone(),
        netns: Some(pair.netns_path(1)),
        direction: None,
        mode: apiary_core::XdpMode::Auto,
    };
    let link = dispatcher::attach_chain(&hook, None, &first).unwrap();

    let (tx, rx) = ping_result(&pair.ping_command(3, "0.05").output().unwrap());
    assert_eq!((tx, rx), (3, 3));
    let before = hits(&c1);
    assert!(before >= 3, "the chain saw the pings: {before}");
    assert!(first.stats().unwrap()[0].count(2) >= 3);

    // Swap back and forth between a one- and a two-program chain while pings flow.
    let two = compose(ChainKind::Xdp, &[s1.clone(), s2.clone()], true);
    let mut ping = pair
        .ping_command(200, "0.005")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut swaps = 0u32;
    let mut current = first;
    let mut other = two;
    let out = loop {
        if let Some(_status) = ping.try_wait().unwrap() {
            break ping.wait_with_output().unwrap();
        }
        dispatcher::swap_replacing(link.as_fd(), current.prog(), &other).unwrap();
        std::mem::swap(&mut current, &mut other);
        swaps += 1;
        // Recompose the idle one each time, as the manager would on every change.
        let slots = if other.nslots() == 1 {
            vec![s1.clone()]
        } else {
            vec![s1.clone(), s2.clone()]
        };
        other = compose(ChainKind::Xdp, &slots, true);
    };
    let (tx, rx) = ping_result(&out);
    assert_eq!((tx, rx), (200, 200), "no packet lost across {swaps} swaps");
    assert!(swaps >= 2, "swapped while pinging ({swaps})");
    assert!(hits(&c1) >= before + 200, "c1 ran for every ping");
    assert!(hits(&c2) > 0, "the two-program chain ran");
    let info = sys::link_info(link.as_fd()).unwrap();
    assert_eq!(
        info.prog_id,
        current.kernel_id(),
        "the link runs the last swapped-in dispatcher"
    );

    // A stale swap (the link no longer runs `other`) is refused.
    let e = dispatcher::swap_replacing(link.as_fd(), other.prog(), &other).unwrap_err();
    assert!(e.to_string().contains("another writer"), "{e}");

    // TC through TCX on the same interface, ingress, behind XDP.
    let t = basic("tc_counter");
    let tcd = ChainKind::Tc.default_proceed_on();
    let tchain = compose(ChainKind::Tc, &[slot(&t, "tc_counter", "t", tcd)], true);
    let thook = Hook {
        kind: ChainKind::Tc,
        iface: pair.dev[1].clone(),
        netns: Some(pair.netns_path(1)),
        direction: Some(apiary_core::TcDirection::Ingress),
        mode: apiary_core::XdpMode::Auto,
    };
    let tlink = dispatcher::attach_chain(&thook, None, &tchain).unwrap();
    let (tx, rx) = ping_result(&pair.ping_command(3, "0.05").output().unwrap());
    assert_eq!((tx, rx), (3, 3));
    let tc_hits = hits(&t);
    assert!(tc_hits >= 3, "the TC chain saw the pings: {tc_hits}");
    let t2 = basic("tc_counter");
    let tchain2 = compose(
        ChainKind::Tc,
        &[
            slot(&t, "tc_counter", "t", tcd),
            slot(&t2, "tc_counter", "t2", tcd),
        ],
        false,
    );
    dispatcher::swap(tlink.as_fd(), &tchain2).unwrap();
    let (tx, rx) = ping_result(&pair.ping_command(3, "0.05").output().unwrap());
    assert_eq!((tx, rx), (3, 3));
    assert!(hits(&t) >= tc_hits + 3 && hits(&t2) >= 3);

    // A TC chain cannot go on an XDP hook.
    assert!(dispatcher::attach_chain(&hook, None, &tchain).is_err());
    drop(tlink);
    drop(link);
}
