use super::*;

// --- an interpreter for dispatcher code, so tests check behaviour, not just bytes ---

const CTX: i64 = 77;
const STATS_PTR: i64 = 0x1000_0000;

/// Runs a composed chain whose slots are `marker_block`s: slot s "returns" `rets[s]`, with
/// garbage in the upper half of r0 as C programs returning int may leave.
struct Sim<'a> {
    comp: &'a Composition,
    rets: &'a [i64],
    stats: Vec<u64>,
    ran: Vec<usize>,
}

impl Sim<'_> {
    fn run(&mut self) -> i64 {
        let mut prog = 0;
        let mut r = [0i64; 11];
        r[1] = CTX;
        'programs: loop {
            let p = &self.comp.programs[prog];
            let code: Vec<Insn> = p.insns.iter().map(|r| Insn::from_raw(*r)).collect();
            // Return addresses and saved callee-saved registers.
            let mut frames: Vec<(usize, [i64; 4])> = Vec::new();
            let mut pc = 0usize;
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps < 1_000_000, "runaway program");
                let i = code[pc];
                let cls = i.class();
                match (cls, i.code) {
                    (_, LD_IMM64) => {
                        let hi = i64::from(code[pc + 1].imm) << 32;
                        r[i.dst as usize] = match i.src {
                            PSEUDO_MAP_IDX => 0x100 + i64::from(i.imm),
                            PSEUDO_MAP_IDX_VALUE => 0x200 + i64::from(i.imm),
                            0 => hi | i64::from(i.imm as u32),
                            other => panic!("ld_imm64 kind {other}"),
                        };
                        if i.src == 0 && i.dst == R0 {
                            // A marker block: note which slot ran.
                            let slot = (i.imm as u32 >> 16) as usize;
                            self.ran.push(slot);
                            r[0] =
                                (self.rets[slot] & 0xffff_ffff) | (0x5a5a_0000_0000_0000u64 as i64);
                        }
                        pc += 2;
                        continue;
                    }
                    (_, CALL) if i.src == PSEUDO_CALL => {
                        frames.push((pc + 1, [r[6], r[7], r[8], r[9]]));
                        // The callee must not rely on the caller's r6..r9.
                        r[6..10].copy_from_slice(&[-1; 4]);
                        pc = (pc as i64 + i64::from(i.imm) + 1) as usize;
                        continue;
                    }
                    (_, CALL) if i.imm == HELPER_MAP_LOOKUP_ELEM => {
                        assert_eq!(r[1], 0x100, "stats map is fd_array[0]");
                        r[0] = STATS_PTR;
                        r[1..6].copy_from_slice(&[-2; 5]);
                    }
                    (_, CALL) if i.imm == HELPER_TAIL_CALL => {
                        let next = usize::try_from(r[2] - 0x100)
                            .ok()
                            .and_then(|k| p.fd_array.get(k));
                        if next == Some(&DispatcherMap::Next) {
                            assert_eq!(r[1], CTX, "ctx passed to the next program");
                            prog = r[3] as usize;
                            continue 'programs;
                        }
                        // A block's own tail call into an empty slot: it falls through.
                        r[0..6].copy_from_slice(&[-4; 6]);
                    }
                    (_, EXIT) => match frames.pop() {
                        Some((ret, saved)) => {
                            r[6..10].copy_from_slice(&saved);
                            r[1..6].copy_from_slice(&[-3; 5]);
                            pc = ret;
                            continue;
                        }
                        None => return r[0],
                    },
                    (CLS_ALU64, c) => {
                        let src = if c & SRC_X != 0 {
                            r[i.src as usize]
                        } else {
                            i64::from(i.imm)
                        };
                        let d = &mut r[i.dst as usize];
                        match c & 0xf0 {
                            OP_MOV => *d = src,
                            OP_ADD => *d = d.wrapping_add(src),
                            OP_LSH => *d <<= src,
                            other => panic!("alu64 op {other:#x}"),
                        }
                    }
                    (CLS_ALU, c) => {
                        let src = if c & SRC_X != 0 {
                            r[i.src as usize] as u32
                        } else {
                            i.imm as u32
                        };
                        let d = r[i.dst as usize] as u32;
                        let v = match c & 0xf0 {
                            OP_MOV => src,
                            OP_ADD => d.wrapping_add(src),
                            OP_RSH => d >> (src & 31),
                            other => panic!("alu32 op {other:#x}"),
                        };
                        r[i.dst as usize] = i64::from(v);
                    }
                    (CLS_JMP | CLS_JMP32, c) => {
                        let (a, b) = if cls == CLS_JMP32 {
                            (i64::from(r[i.dst as usize] as u32), i64::from(i.imm as u32))
                        } else {
                            (r[i.dst as usize], i64::from(i.imm))
                        };
                        let taken = match c & 0xf0 {
                            OP_JA => true,
                            OP_JGT => (a as u64) > (b as u64),
                            OP_JNE => a != b,
                            OP_JSET => a & b != 0,
                            other => panic!("jump op {other:#x}"),
                        };
                        if taken {
                            pc = (pc as i64 + i64::from(i.off) + 1) as usize;
                            continue;
                        }
                    }
                    (CLS_LDX, _) => {
                        let addr = r[i.src as usize] + i64::from(i.off) - STATS_PTR;
                        assert!(addr >= 0 && addr % 8 == 0, "aligned stats access");
                        r[i.dst as usize] = self.stats[addr as usize / 8] as i64;
                    }
                    (CLS_STX, _) => {
                        let addr = r[i.dst as usize] + i64::from(i.off) - STATS_PTR;
                        assert!(addr >= 0 && addr % 8 == 0, "aligned stats access");
                        self.stats[addr as usize / 8] = r[i.src as usize] as u64;
                    }
                    other => panic!("unexpected instruction {other:?} at {pc}"),
                }
                pc += 1;
            }
        }
    }
}

/// `r0 = <marker for slot>; [clobber]; exit`: the simulator recognises the marker load and
/// gives r0 the slot's chosen return value. `clobber` lists registers the block writes.
fn marker_block(kind: ChainKind, slot: usize, clobber: &[u8]) -> Block {
    let mut insns = vec![
        Insn::new(LD_IMM64, R0, 0, 0, (slot as i32) << 16),
        Insn::new(0, 0, 0, 0, 0),
    ];
    for &r in clobber {
        insns.push(mov64_imm(r, -99));
    }
    insns.push(exit());
    Block {
        kind,
        frags: false,
        expected_attach_type: 0,
        gpl: true,
        insns: insns.into_iter().map(Insn::to_raw).collect(),
        maps: vec![],
    }
}

fn ret_block(kind: ChainKind) -> Block {
    marker_block(kind, 0, &[])
}

#[test]
fn verdict_tables() {
    assert_eq!(ChainKind::Xdp.value_of("pass"), Some(2));
    assert_eq!(ChainKind::Xdp.value_of("XDP_DROP"), Some(1));
    assert_eq!(ChainKind::Xdp.value_of("dispatcher_return"), Some(31));
    assert_eq!(ChainKind::Tc.value_of("TC_ACT_SHOT"), Some(2));
    assert_eq!(ChainKind::Tc.value_of("unspec"), Some(-1));
    assert_eq!(ChainKind::Tc.value_of("dispatcher_return"), Some(30));
    assert_eq!(ChainKind::Tc.bit_of(-1), Some(0));
    assert_eq!(ChainKind::Tc.bit_of(30), Some(31));
    assert_eq!(ChainKind::Tc.bit_of(31), None);
    assert_eq!(ChainKind::Tc.bit_of(-2), None);
    assert_eq!(ChainKind::Xdp.bit_of(32), None);
    assert_eq!(ChainKind::Xdp.bit_of(-1), None);
    for kind in [ChainKind::Xdp, ChainKind::Tc] {
        for &(n, v) in kind.verdicts() {
            let b = kind.bit_of(v).unwrap();
            assert_eq!(kind.value_of_bit(b), v);
            assert_eq!(kind.name_of(v), Some(n));
        }
    }
}

#[test]
fn proceed_on_parse_and_names() {
    let d = ChainKind::Xdp.default_proceed_on();
    assert_eq!(d.to_string(), "pass,dispatcher_return");
    assert_eq!(d.mask(), (1 << 2) | (1 << 31));
    let t = ChainKind::Tc.default_proceed_on();
    assert_eq!(t.to_string(), "ok,pipe,dispatcher_return");
    assert_eq!(t.mask(), (1 << 1) | (1 << 4) | (1 << 31));

    let p = ProceedOn::parse(ChainKind::Xdp, " drop , PASS,xdp_tx").unwrap();
    assert_eq!(p.values(), vec![1, 2, 3]);
    assert!(p.contains(1) && !p.contains(0) && !p.contains(99) && !p.contains(-1));
    assert_eq!(ProceedOn::parse(ChainKind::Xdp, &p.to_string()).unwrap(), p);

    let e = ProceedOn::parse(ChainKind::Xdp, "pass,shot").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"shot\"")
            && msg.contains("aborted, drop, pass, tx, redirect, dispatcher_return"),
        "{msg}"
    );
    let e = ProceedOn::parse(ChainKind::Tc, "ok,bogus")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unspec, ok, reclassify, shot, pipe") && e.contains("trap"),
        "{e}"
    );
    assert!(matches!(
        ProceedOn::parse(ChainKind::Tc, " , "),
        Err(ChainError::EmptyProceedOn { .. })
    ));

    let u = ProceedOn::parse(ChainKind::Tc, "unspec").unwrap();
    assert_eq!(u.mask(), 1);
    let v = ProceedOn::from_values(ChainKind::Tc, &[-1, 12]).unwrap();
    assert_eq!(v.names(), vec!["unspec".to_string(), "12".to_string()]);
    assert!(ProceedOn::from_values(ChainKind::Tc, &[31]).is_err());
    assert!(ProceedOn::from_values(ChainKind::Xdp, &[32]).is_err());
    assert_eq!(
        ProceedOn::from_mask(ChainKind::Xdp, 0b100),
        ProceedOn::parse(ChainKind::Xdp, "pass").unwrap()
    );
    assert_eq!(ProceedOn::none(ChainKind::Tc).to_string(), "");
}

#[test]
fn priorities_and_order() {
    assert!(Priority::new(0).is_err());
    assert!(Priority::new(1001).is_err());
    assert_eq!(Priority::new(1).unwrap().get(), 1);
    assert_eq!("1000".parse::<Priority>().unwrap().get(), 1000);
    let e = "x".parse::<Priority>().unwrap_err().to_string();
    assert!(e.contains("1 (runs first) to 1000"), "{e}");
    assert!(serde_json::from_str::<Priority>("0").is_err());
    assert_eq!(
        serde_json::to_string(&Priority::new(50).unwrap()).unwrap(),
        "50"
    );

    let p = |v| Priority::new(v).unwrap();
    let mut v = vec![
        ("c", p(50), 3u64),
        ("a", p(10), 9),
        ("b", p(50), 1),
        ("d", p(1000), 0),
        ("e", p(10), 2),
    ];
    order_slots(&mut v, |x| SlotKey {
        priority: x.1,
        seq: x.2,
    });
    let names: Vec<&str> = v.iter().map(|x| x.0).collect();
    assert_eq!(names, vec!["e", "a", "b", "c", "d"]);
}

#[test]
fn insn_roundtrip() {
    let i = Insn {
        code: 0x18,
        dst: 2,
        src: 6,
        off: -3,
        imm: -123456,
    };
    assert_eq!(Insn::from_raw(i.to_raw()), i);
    // r6 = r1 is bf 16 00 00 00 00 00 00 on little-endian hosts.
    if cfg!(target_endian = "little") {
        assert_eq!(mov64_reg(R6, R1).to_raw(), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
    }
    assert!(split_insns(&[0; 12]).is_err());
    assert_eq!(split_insns(&[0; 16]).unwrap().len(), 2);
}

/// Compose one marker block per mask and run them with the given return values, both inline
/// and called.
fn run_chain(
    kind: ChainKind,
    masks: &[ProceedOn],
    rets: &[i64],
    counters: bool,
) -> (i64, Vec<usize>, Vec<u64>) {
    let mut out = None;
    for inline in [Inline::On, Inline::Off] {
        // Alternate clobbers so inlined slots need register moves.
        let blocks: Vec<Block> = (0..masks.len())
            .map(|i| marker_block(kind, i, if i % 2 == 1 { &[6, 7] } else { &[9] }))
            .collect();
        let names: Vec<String> = (0..masks.len()).map(|i| format!("p{i}")).collect();
        let slots: Vec<ComposeSlot<'_>> = masks
            .iter()
            .zip(&names)
            .zip(&blocks)
            .map(|((m, n), b)| ComposeSlot {
                name: n,
                block: b,
                proceed_on: *m,
            })
            .collect();
        let comp = compose(
            kind,
            false,
            &slots,
            &ComposeOptions {
                counters,
                inline,
                ..Default::default()
            },
        )
        .unwrap();
        let placement = if inline == Inline::On {
            Placement::Inline
        } else {
            Placement::Call
        };
        assert!(comp
            .programs
            .iter()
            .flat_map(|p| &p.code)
            .all(|c| c.placement == placement));
        check_layout(&comp, &slots);
        let got = run_comp(&comp, rets);
        if let Some(prev) = &out {
            assert_eq!(&got, prev, "inline and call placements behave the same");
        }
        out = Some(got);
    }
    out.unwrap_or_default()
}

fn run_comp(comp: &Composition, rets: &[i64]) -> (i64, Vec<usize>, Vec<u64>) {
    let mut sim = Sim {
        comp,
        rets,
        stats: vec![0; comp.nslots.max(1) * STATS_BUCKETS],
        ran: vec![],
    };
    let v = sim.run();
    (v, sim.ran, sim.stats)
}

fn xdp(s: &str) -> ProceedOn {
    ProceedOn::parse(ChainKind::Xdp, s).unwrap()
}
fn tc(s: &str) -> ProceedOn {
    ProceedOn::parse(ChainKind::Tc, s).unwrap()
}

#[test]
fn xdp_short_circuit_and_defaults() {
    for counters in [false, true] {
        let d = ChainKind::Xdp.default_proceed_on();
        // All pass: everything runs, verdict pass.
        let (v, ran, _) = run_chain(ChainKind::Xdp, &[d, d, d], &[2, 2, 2], counters);
        assert_eq!((v as u32, ran), (2, vec![0, 1, 2]));
        // Drop in the middle stops the chain with drop.
        let (v, ran, _) = run_chain(ChainKind::Xdp, &[d, d, d], &[2, 1, 2], counters);
        assert_eq!((v as u32, ran), (1, vec![0, 1]));
        // dispatcher_return from the last program becomes pass.
        let (v, _, _) = run_chain(ChainKind::Xdp, &[d, d], &[31, 31], counters);
        assert_eq!(v as u32, 2);
        // The trap: proceeding on drop lets a later pass win.
        let (v, ran, _) = run_chain(ChainKind::Xdp, &[xdp("drop,pass"), d], &[1, 2], counters);
        assert_eq!((v as u32, ran), (2, vec![0, 1]));
        // Out-of-range values end the chain and are returned as they are.
        let (v, ran, _) = run_chain(ChainKind::Xdp, &[d, d], &[77, 2], counters);
        assert_eq!((v as u32, ran), (77, vec![0]));
        let (v, ran, _) = run_chain(ChainKind::Xdp, &[d, d], &[-1, 2], counters);
        assert_eq!((v as u32, ran), (u32::MAX, vec![0]));
        // Empty chain: pass.
        let (v, ran, _) = run_chain(ChainKind::Xdp, &[], &[], counters);
        assert_eq!((v as u32, ran), (2, vec![]));
    }
}

#[test]
fn every_mask_bit_for_both_kinds() {
    for kind in [ChainKind::Xdp, ChainKind::Tc] {
        for counters in [false, true] {
            for bit in 0..VERDICT_BITS {
                let value = kind.value_of_bit(bit);
                let only = ProceedOn::from_mask(kind, 1 << bit);
                let (v, ran, _) = run_chain(
                    kind,
                    &[only, ProceedOn::none(kind)],
                    &[i64::from(value), 5],
                    counters,
                );
                assert_eq!(ran, vec![0, 1], "{kind} bit {bit} proceeds");
                assert_eq!(v as u32, 5);
                let others = ProceedOn::from_mask(kind, !(1 << bit));
                let (v, ran, _) = run_chain(
                    kind,
                    &[others, ProceedOn::none(kind)],
                    &[i64::from(value), 5],
                    counters,
                );
                assert_eq!(ran, vec![0], "{kind} bit {bit} stops");
                assert_eq!(v as u32, value as u32);
            }
        }
    }
}

#[test]
fn tc_semantics() {
    for counters in [false, true] {
        let d = ChainKind::Tc.default_proceed_on();
        let (v, ran, _) = run_chain(ChainKind::Tc, &[d, d], &[0, 3], counters);
        assert_eq!((v as i32, ran), (-1, vec![0, 1]), "ok then pipe: TCX_NEXT");
        let (v, ran, _) = run_chain(ChainKind::Tc, &[d, d], &[2, 0], counters);
        assert_eq!((v as i32, ran), (2, vec![0]), "shot stops");
        let (v, ran, _) = run_chain(ChainKind::Tc, &[d, d], &[-1, 0], counters);
        assert_eq!(
            (v as i32, ran),
            (-1, vec![0]),
            "unspec is not in the default set"
        );
        let (v, ran, _) = run_chain(ChainKind::Tc, &[tc("unspec"), d], &[-1, 30], counters);
        assert_eq!((v as i32, ran), (-1, vec![0, 1]));
        let (v, ran, _) = run_chain(ChainKind::Tc, &[d], &[31], counters);
        assert_eq!((v as i32, ran), (31, vec![0]), "31 is out of range for TC");
        let (v, ran, _) = run_chain(ChainKind::Tc, &[d], &[-2], counters);
        assert_eq!((v as i32, ran), (-2, vec![0]));
    }
}

#[test]
fn counters_land_in_the_right_buckets() {
    let d = ChainKind::Tc.default_proceed_on();
    let (_, _, stats) = run_chain(ChainKind::Tc, &[d, d, d], &[0, -1, 9], true);
    let s0 = SlotStats::from_buckets(ChainKind::Tc, &stats[0..STATS_BUCKETS]);
    let s1 = SlotStats::from_buckets(ChainKind::Tc, &stats[STATS_BUCKETS..2 * STATS_BUCKETS]);
    let s2 = SlotStats::from_buckets(ChainKind::Tc, &stats[2 * STATS_BUCKETS..]);
    assert_eq!((s0.runs, s0.count(0)), (1, 1));
    assert_eq!((s1.runs, s1.count(-1)), (1, 1));
    assert_eq!(s2.runs, 0, "slot 2 did not run");

    let x = ChainKind::Xdp.default_proceed_on();
    let (b0, b1) = (
        marker_block(ChainKind::Xdp, 0, &[]),
        marker_block(ChainKind::Xdp, 1, &[6]),
    );
    let slots = [
        ComposeSlot {
            name: "a",
            block: &b0,
            proceed_on: x,
        },
        ComposeSlot {
            name: "b",
            block: &b1,
            proceed_on: x,
        },
    ];
    let comp = compose(
        ChainKind::Xdp,
        false,
        &slots,
        &ComposeOptions {
            counters: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut total = vec![0u64; 2 * STATS_BUCKETS];
    for rets in [[2i64, 1], [2, 2], [31, 4], [1000, 0]] {
        let (_, _, st) = run_comp(&comp, &rets);
        for (t, s) in total.iter_mut().zip(st) {
            *t += s;
        }
    }
    let a = SlotStats::from_buckets(ChainKind::Xdp, &total[..STATS_BUCKETS]);
    let b = SlotStats::from_buckets(ChainKind::Xdp, &total[STATS_BUCKETS..]);
    assert_eq!(a.runs, 4);
    assert_eq!((a.count(2), a.count(31), a.out_of_range), (2, 1, 1));
    assert_eq!(b.runs, 3);
    assert_eq!((b.count(1), b.count(2), b.count(4)), (1, 1, 1));
    assert_eq!(comp.stats_value_size(), 2 * STATS_SLOT_BYTES);
}

fn analysed(insns: Vec<Insn>, nmaps: usize) -> Result<BlockShape, ChainError> {
    Block {
        kind: ChainKind::Xdp,
        frags: false,
        expected_attach_type: 37,
        gpl: true,
        insns: insns.into_iter().map(Insn::to_raw).collect(),
        maps: (0..nmaps)
            .map(|i| MapRef {
                id: 100 + i as u32,
                name: format!("m{i}"),
                map_type: 2,
            })
            .collect(),
    }
    .shape()
}

fn pcall(rel: i32) -> Insn {
    Insn::new(CALL, 0, PSEUDO_CALL, 0, rel)
}

#[test]
fn block_shapes() {
    // main: call f1; exit. f1 (at 2): call f2; exit. f2 (at 4): r0 = 0; exit.
    let s = analysed(
        vec![pcall(1), exit(), pcall(1), exit(), mov64_imm(R0, 0), exit()],
        0,
    )
    .unwrap();
    assert_eq!(s.funcs, vec![0, 2, 4]);
    assert_eq!(s.frames, 3);
    assert!(!s.tail_calls);
    // A callback address counts as a function and a frame.
    let s = analysed(
        vec![
            Insn::new(LD_IMM64, R2, PSEUDO_FUNC, 0, 3),
            Insn::new(0, 0, 0, 0, 0),
            helper(181),
            exit(),
            mov64_imm(R0, 0),
            exit(),
        ],
        0,
    )
    .unwrap();
    assert_eq!((s.funcs.clone(), s.frames), (vec![0, 4], 2));
    // Tail calls are noticed.
    assert!(analysed(vec![helper(12), exit()], 0).unwrap().tail_calls);
    // Recursion, calls outside, bad map indices, missing exit, half ld_imm64: refused.
    assert!(analysed(vec![pcall(-1), exit()], 0)
        .unwrap_err()
        .to_string()
        .contains("recursive"));
    assert!(analysed(vec![pcall(5), exit()], 0)
        .unwrap_err()
        .to_string()
        .contains("outside the block"));
    assert!(analysed(vec![Insn::new(CLS_JMP | OP_JA, 0, 0, -3, 0), exit()], 0).is_err());
    assert!(analysed(vec![mov64_imm(R0, 0)], 0)
        .unwrap_err()
        .to_string()
        .contains("exit"));
    assert!(analysed(vec![exit(), Insn::new(LD_IMM64, R1, 0, 0, 0)], 0).is_err());
    let mapref = |idx| {
        vec![
            Insn::new(LD_IMM64, R1, PSEUDO_MAP_IDX, 0, idx),
            Insn::new(0, 0, 0, 0, 0),
            exit(),
        ]
    };
    assert!(analysed(mapref(0), 1).is_ok());
    assert!(analysed(mapref(1), 1)
        .unwrap_err()
        .to_string()
        .contains("map index 1"));
    let fdref = vec![
        Insn::new(LD_IMM64, R1, PSEUDO_MAP_FD, 0, 5),
        Insn::new(0, 0, 0, 0, 0),
        exit(),
    ];
    assert!(analysed(fdref, 0)
        .unwrap_err()
        .to_string()
        .contains("file descriptor"));
    // Kernel objects: vmlinux ones pass through, module ones are refused.
    assert!(analysed(
        vec![Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 0, 1234), exit()],
        0
    )
    .is_ok());
    let e = analysed(
        vec![Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 1, 1234), exit()],
        0,
    )
    .unwrap_err();
    assert!(matches!(e, ChainError::NotChainable { .. }), "{e}");
    let ksym = |fd| {
        vec![
            Insn::new(LD_IMM64, R1, PSEUDO_BTF_ID, 0, 99),
            Insn::new(0, 0, 0, 0, fd),
            exit(),
        ]
    };
    assert!(analysed(ksym(0), 0).is_ok());
    assert!(matches!(
        analysed(ksym(7), 0),
        Err(ChainError::NotChainable { .. })
    ));
    // gotol keeps its offset in imm.
    assert!(analysed(vec![Insn::new(CLS_JMP32 | OP_JA, 0, 0, 0, 0), exit()], 0).is_ok());
    assert!(analysed(vec![Insn::new(CLS_JMP32 | OP_JA, 0, 0, 0, 9), exit()], 0).is_err());
}

const ATTRS: BlockAttrs = BlockAttrs {
    kind: ChainKind::Xdp,
    frags: false,
    expected_attach_type: 37,
    gpl: true,
};

#[test]
fn capture_rewrites_fds_to_indices() {
    // Two references to fd 40 (MAP_FD and MAP_VALUE), one to fd 41, which is the same map as
    // fd 40 under another descriptor, one to fd 50.
    let raw: Vec<u8> = [
        Insn::new(LD_IMM64, R1, PSEUDO_MAP_FD, 0, 40),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(LD_IMM64, R2, PSEUDO_MAP_VALUE, 0, 40),
        Insn::new(0, 0, 0, 0, 16),
        Insn::new(LD_IMM64, R3, PSEUDO_MAP_FD, 0, 41),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(LD_IMM64, R3, PSEUDO_MAP_VALUE, 0, 50),
        Insn::new(0, 0, 0, 0, 4),
        Insn::new(LD_IMM64, R3, 0, 0, 40),
        Insn::new(0, 0, 0, 0, 0),
        exit(),
    ]
    .iter()
    .flat_map(|i| i.to_raw())
    .collect();
    let mut calls = 0;
    let b = Block::from_loaded::<ChainError>(ATTRS, &raw, |fd| {
        calls += 1;
        let id = if fd == 50 { 9 } else { 7 };
        Ok(MapRef {
            id,
            name: format!("map{id}"),
            map_type: 2,
        })
    })
    .unwrap();
    assert_eq!(calls, 3, "each fd resolved once");
    assert_eq!(b.maps.iter().map(|m| m.id).collect::<Vec<_>>(), vec![7, 9]);
    let i: Vec<Insn> = b.insns.iter().map(|r| Insn::from_raw(*r)).collect();
    assert_eq!((i[0].src, i[0].imm), (PSEUDO_MAP_IDX, 0));
    assert_eq!(
        (i[2].src, i[2].imm, i[3].imm),
        (PSEUDO_MAP_IDX_VALUE, 0, 16)
    );
    assert_eq!((i[4].src, i[4].imm), (PSEUDO_MAP_IDX, 0));
    assert_eq!((i[6].src, i[6].imm, i[7].imm), (PSEUDO_MAP_IDX_VALUE, 1, 4));
    assert_eq!((i[8].src, i[8].imm), (0, 40), "plain constants untouched");
    // Round trip through JSON.
    let j = serde_json::to_string(&b).unwrap();
    assert_eq!(serde_json::from_str::<Block>(&j).unwrap(), b);
    assert!(j.contains("\"insns\":\""));
    // Resolver errors propagate.
    let e = Block::from_loaded::<ChainError>(ATTRS, &raw, |_| {
        Err(ChainError::InvalidBlock {
            reason: "nope".into(),
        })
    });
    assert!(e.is_err());
}

/// A block for slot `slot` with `nfuncs` functions (main calls each of the others once, then
/// sets its marker) and the given map ids.
fn fat_block(slot: usize, nfuncs: usize, map_ids: &[u32]) -> Block {
    let mut insns = Vec::new();
    for (k, _) in map_ids.iter().enumerate() {
        insns.push(Insn::new(LD_IMM64, R1, PSEUDO_MAP_IDX, 0, k as i32));
        insns.push(Insn::new(0, 0, 0, 0, 0));
    }
    // Main: (nfuncs-1) calls, the marker (2), exit; function j lives at main_len + 2*(j-1).
    let main_len = insns.len() + (nfuncs - 1) + 3;
    for j in 1..nfuncs {
        let at = insns.len();
        let target = main_len + 2 * (j - 1);
        insns.push(pcall((target - at - 1) as i32));
    }
    insns.push(Insn::new(LD_IMM64, R0, 0, 0, (slot as i32) << 16));
    insns.push(Insn::new(0, 0, 0, 0, 0));
    insns.push(exit());
    for _ in 1..nfuncs {
        insns.push(mov64_imm(R6, 5));
        insns.push(exit());
    }
    Block {
        kind: ChainKind::Xdp,
        frags: false,
        expected_attach_type: 37,
        gpl: true,
        insns: insns.into_iter().map(Insn::to_raw).collect(),
        maps: map_ids
            .iter()
            .map(|&id| MapRef {
                id,
                name: format!("m{id}"),
                map_type: 2,
            })
            .collect(),
    }
}

/// Check every structural property the kernel will check, for every program, and that each
/// block arrived intact.
fn check_layout(comp: &Composition, slots: &[ComposeSlot<'_>]) {
    for p in &comp.programs {
        let code: Vec<Insn> = p.insns.iter().map(|r| Insn::from_raw(*r)).collect();
        // Function starts as the verifier finds them equal funcs.
        let mut starts = vec![0u32];
        for (i, ins) in code.iter().enumerate() {
            if is_code_ref(*ins) {
                starts.push((i as i64 + i64::from(ins.imm) + 1) as u32);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        assert_eq!(starts, p.funcs.iter().map(|f| f.start).collect::<Vec<_>>());
        assert_eq!(
            p.code.iter().map(|c| c.slot).collect::<Vec<_>>(),
            p.slots.clone().collect::<Vec<_>>()
        );
        let target = |i: usize| (i as i64 + i64::from(code[i].imm) + 1) as u32;
        let mut called = Vec::new();
        for c in &p.code {
            let b = slots[c.slot].block;
            let shape = b.shape().unwrap();
            let main_len = shape.main_len as usize;
            assert_eq!(c.main.len(), main_len);
            assert_eq!(c.subprogs.len(), b.insns.len() - main_len);
            if c.placement == Placement::Call {
                assert_eq!(
                    c.subprogs.start, c.main.end,
                    "a called block stays contiguous"
                );
                called.push(c.main.start);
            }
            let mut j = 0;
            while j < b.insns.len() {
                let want = Insn::from_raw(b.insns[j]);
                let at = if j < main_len {
                    c.main.start as usize + j
                } else {
                    c.subprogs.start as usize + j - main_len
                };
                let got = code[at];
                if want.is_ld_imm64()
                    && (want.src == PSEUDO_MAP_IDX || want.src == PSEUDO_MAP_IDX_VALUE)
                {
                    let m = &b.maps[want.imm as usize];
                    assert_eq!(p.fd_array[got.imm as usize], DispatcherMap::User(m.clone()));
                    assert_eq!(
                        Insn {
                            imm: want.imm,
                            ..got
                        },
                        want
                    );
                } else if c.placement == Placement::Inline && j < main_len && want.is_exit() {
                    assert_eq!(
                        Insn { off: 0, ..got },
                        ja(),
                        "an inlined exit becomes a jump"
                    );
                    assert_eq!(
                        at as i64 + i64::from(got.off) + 1,
                        i64::from(c.main.end),
                        "to the verdict check"
                    );
                } else if c.placement == Placement::Inline && j < main_len && is_code_ref(want) {
                    let t = (j as i64 + i64::from(want.imm) + 1) as usize;
                    assert_eq!(
                        target(at),
                        c.subprogs.start + (t - main_len) as u32,
                        "call retargeted"
                    );
                    assert_eq!(
                        Insn {
                            imm: want.imm,
                            ..got
                        },
                        want
                    );
                } else {
                    assert_eq!(got, want, "slot {} instruction {j} copied verbatim", c.slot);
                }
                j += if want.is_ld_imm64() { 2 } else { 1 };
            }
        }
        // The dispatcher's own calls land on the called blocks, in slot order.
        let own = |i: usize| {
            !p.code
                .iter()
                .any(|c| c.main.contains(&(i as u32)) || c.subprogs.contains(&(i as u32)))
        };
        let calls: Vec<u32> = (0..code.len())
            .filter(|&i| own(i) && code[i].code == CALL && code[i].src == PSEUDO_CALL)
            .map(target)
            .collect();
        assert_eq!(calls, called);
        // Maps distinct.
        let mut ids: Vec<&DispatcherMap> = p.fd_array.iter().collect();
        ids.dedup();
        assert_eq!(ids.len(), p.fd_array.len());
        // No stack: the dispatcher's own code never touches r10.
        for (i, ins) in code.iter().enumerate() {
            if own(i) && !ins.is_ld_imm64() && !(i > 0 && code[i - 1].is_ld_imm64()) {
                assert!(
                    ins.dst != 10 && ins.src != 10,
                    "dispatcher uses the stack at {i}: {ins:?}"
                );
            }
        }
    }
}

#[test]
fn layout_offsets_and_maps() {
    let blocks = [
        fat_block(0, 3, &[10, 11]),
        fat_block(1, 1, &[]),
        fat_block(2, 2, &[11, 12]),
    ];
    let d = ChainKind::Xdp.default_proceed_on();
    let slots: Vec<ComposeSlot<'_>> = blocks
        .iter()
        .map(|b| ComposeSlot {
            name: "x-y.z",
            block: b,
            proceed_on: d,
        })
        .collect();
    for counters in [false, true] {
        for inline in [Inline::Off, Inline::On] {
            let opts = ComposeOptions {
                counters,
                inline,
                ..Default::default()
            };
            let comp = compose(ChainKind::Xdp, false, &slots, &opts).unwrap();
            assert_eq!(comp.programs.len(), 1);
            let p = &comp.programs[0];
            let users: Vec<u32> = p
                .fd_array
                .iter()
                .filter_map(|m| match m {
                    DispatcherMap::User(r) => Some(r.id),
                    _ => None,
                })
                .collect();
            assert_eq!(users, vec![10, 11, 12], "maps deduplicated across blocks");
            assert_eq!(p.fd_array.contains(&DispatcherMap::Stats), counters);
            assert!(!p.fd_array.contains(&DispatcherMap::Next));
            assert_eq!(p.funcs[0].name, "apiary_xdp");
            if inline == Inline::On {
                assert_eq!(p.funcs.len(), 1 + 2 + 1);
                assert_eq!(p.funcs[1].name, "s0_x_y_z_f1");
            } else {
                assert_eq!(p.funcs.len(), 1 + 3 + 1 + 2);
                assert_eq!(p.funcs[1].name, "s0_x_y_z");
                assert_eq!(p.funcs[2].name, "s0_x_y_z_f1");
            }
            check_layout(&comp, &slots);
            assert_eq!(comp.slot_at(0, p.code[1].main.start as usize), Some(1));
            assert_eq!(
                comp.slot_at(0, p.code[0].subprogs.start as usize + 1),
                Some(0)
            );
            assert_eq!(comp.slot_at(0, 0), None);
            let (v, ran, _) = run_comp(&comp, &[2, 2, 1]);
            assert_eq!((v as u32, ran), (1, vec![0, 1, 2]));
        }
    }
}

#[test]
fn sixty_four_programs_with_own_maps() {
    let blocks: Vec<Block> = (0..65)
        .map(|i| fat_block(i as usize, 1, &[1000 + i]))
        .collect();
    let d = ChainKind::Xdp.default_proceed_on();
    let names: Vec<String> = (0..65).map(|i| format!("prog{i}")).collect();
    let slots: Vec<ComposeSlot<'_>> = blocks
        .iter()
        .zip(&names)
        .map(|(b, n)| ComposeSlot {
            name: n,
            block: b,
            proceed_on: d,
        })
        .collect();
    // Without counters 64 maps fit one program exactly; the 65th needs a second program,
    // and then the program array takes a map of the first.
    let one = compose(
        ChainKind::Xdp,
        false,
        &slots[..64],
        &ComposeOptions::default(),
    )
    .unwrap();
    assert_eq!(one.programs.len(), 1);
    assert_eq!(one.programs[0].fd_array.len(), 64);
    let two = compose(ChainKind::Xdp, false, &slots, &ComposeOptions::default()).unwrap();
    assert_eq!(
        two.programs
            .iter()
            .map(|p| p.slots.clone())
            .collect::<Vec<_>>(),
        vec![0..63, 63..65]
    );
    // With counters (stats, key and program array: 3 maps) 64 slots need two programs.
    let counted = ComposeOptions {
        counters: true,
        ..Default::default()
    };
    let c = compose(ChainKind::Xdp, false, &slots[..64], &counted).unwrap();
    assert_eq!(
        c.programs
            .iter()
            .map(|p| p.slots.clone())
            .collect::<Vec<_>>(),
        vec![0..61, 61..64]
    );
    assert_eq!(c.programs[0].fd_array.len(), 64);
    assert!(c.programs[1].fd_array.contains(&DispatcherMap::Next));
    assert!(c.programs[1].fd_array.contains(&DispatcherMap::Stats));
    assert_eq!(c.programs[1].name, "apiary_xdp_2");
    assert_eq!(
        compose(ChainKind::Xdp, false, &slots[..62], &counted)
            .unwrap()
            .programs
            .len(),
        1
    );
    assert_eq!(
        compose(ChainKind::Xdp, false, &slots[..63], &counted)
            .unwrap()
            .programs
            .len(),
        2
    );

    for (comp, n, counters) in [(&one, 64, false), (&two, 65, false), (&c, 64, true)] {
        check_layout(comp, &slots[..n]);
        // All run, across the tail call; a verdict in the second program stops there.
        let (v, ran, stats) = run_comp(comp, &vec![2i64; n]);
        assert_eq!(v, 2);
        assert_eq!(ran, (0..n).collect::<Vec<_>>());
        if counters {
            for s in 0..n {
                let st = SlotStats::from_buckets(
                    ChainKind::Xdp,
                    &stats[s * STATS_BUCKETS..(s + 1) * STATS_BUCKETS],
                );
                assert_eq!((st.runs, st.count(2)), (1, 1), "slot {s}");
            }
        }
        let mut rets = vec![2i64; n];
        rets[n - 2] = 3;
        let (v, ran, _) = run_comp(comp, &rets);
        assert_eq!((v as u32, ran.len()), (3, n - 1));
    }
}

#[test]
fn subprogram_limit_splits_and_limits_error() {
    // 5 blocks of 100 functions (99 once main is inlined): 2 fit under 256, so 3 programs.
    let blocks: Vec<Block> = (0..5).map(|i| fat_block(i, 100, &[])).collect();
    let d = ChainKind::Xdp.default_proceed_on();
    let slots: Vec<ComposeSlot<'_>> = blocks
        .iter()
        .map(|b| ComposeSlot {
            name: "f",
            block: b,
            proceed_on: d,
        })
        .collect();
    let comp = compose(ChainKind::Xdp, false, &slots, &ComposeOptions::default()).unwrap();
    assert_eq!(
        comp.programs
            .iter()
            .map(|p| p.slots.clone())
            .collect::<Vec<_>>(),
        vec![0..2, 2..4, 4..5]
    );
    check_layout(&comp, &slots);
    let (v, ran, _) = run_comp(&comp, &[2, 2, 2, 2, 2]);
    assert_eq!((v, ran.len()), (2, 5));

    // A block that cannot fit alone.
    let huge = fat_block(0, 257, &[]);
    let s = [ComposeSlot {
        name: "huge",
        block: &huge,
        proceed_on: d,
    }];
    let e = compose(ChainKind::Xdp, false, &s, &ComposeOptions::default()).unwrap_err();
    assert!(
        matches!(&e, ChainError::InSlot { slot: 0, error, .. } if matches!(**error, ChainError::SlotTooLarge { .. })),
        "{e}"
    );
    assert!(
        e.to_string().contains("huge") && e.to_string().contains("256 functions"),
        "{e}"
    );
    let ids: Vec<u32> = (0..63).collect();
    let many_maps = fat_block(0, 1, &ids);
    let s = [ComposeSlot {
        name: "maps",
        block: &many_maps,
        proceed_on: d,
    }];
    assert!(compose(ChainKind::Xdp, false, &s, &ComposeOptions::default()).is_ok());
    let e = compose(
        ChainKind::Xdp,
        false,
        &s,
        &ComposeOptions {
            counters: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("63 maps"), "{e}");

    // Too many programs.
    let limits = Limits {
        max_programs: 2,
        ..Limits::default()
    };
    let e = compose(
        ChainKind::Xdp,
        false,
        &slots,
        &ComposeOptions {
            limits,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, ChainError::TooLarge { .. }), "{e}");

    // Too many counted slots.
    let tiny: Vec<Block> = (0..125).map(|i| fat_block(i, 1, &[])).collect();
    let many: Vec<ComposeSlot<'_>> = tiny
        .iter()
        .map(|b| ComposeSlot {
            name: "t",
            block: b,
            proceed_on: d,
        })
        .collect();
    let e = compose(
        ChainKind::Xdp,
        false,
        &many,
        &ComposeOptions {
            counters: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("at most 124"), "{e}");
    let ok = compose(
        ChainKind::Xdp,
        false,
        &many[..124],
        &ComposeOptions {
            counters: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ok.stats_value_size(), 124 * STATS_SLOT_BYTES);
    assert!(ok.stats_value_size() <= 32 * 1024);
    let (v, ran, stats) = run_comp(&ok, &vec![2; 124]);
    assert_eq!((v, ran.len()), (2, 124));
    assert_eq!(stats[123 * STATS_BUCKETS + 2], 1);
}

#[test]
fn call_frames_limit() {
    // A called block takes a frame more than it nests; an inlined one does not.
    let chain = |depth: usize| {
        let mut insns = Vec::new();
        for _ in 0..depth - 1 {
            insns.push(pcall(1));
            insns.push(exit());
        }
        insns.push(mov64_imm(R0, 2));
        insns.push(exit());
        Block {
            kind: ChainKind::Xdp,
            frags: false,
            expected_attach_type: 37,
            gpl: true,
            insns: insns.into_iter().map(Insn::to_raw).collect(),
            maps: vec![],
        }
    };
    let d = ChainKind::Xdp.default_proceed_on();
    let try_compose = |b: &Block, inline: Inline| {
        compose(
            ChainKind::Xdp,
            false,
            &[ComposeSlot {
                name: "b",
                block: b,
                proceed_on: d,
            }],
            &ComposeOptions {
                inline,
                ..Default::default()
            },
        )
    };
    let b7 = chain(7);
    assert_eq!(b7.shape().unwrap().frames, 7);
    assert!(try_compose(&b7, Inline::Off).is_ok());
    let b8 = chain(8);
    assert!(try_compose(&b8, Inline::On).is_ok());
    let e = try_compose(&b8, Inline::Off).unwrap_err().to_string();
    assert!(
        e.contains("8 call frames") && e.contains("would need 9, over the kernel's 8"),
        "{e}"
    );
    let e = try_compose(&chain(9), Inline::On).unwrap_err().to_string();
    assert!(e.contains("9 call frames"), "{e}");
}

#[test]
fn placement_follows_registers_and_tail_calls() {
    let d = ChainKind::Xdp.default_proceed_on();
    let place = |b: &Block, counters: bool| {
        let c = compose(
            ChainKind::Xdp,
            false,
            &[ComposeSlot {
                name: "b",
                block: b,
                proceed_on: d,
            }],
            &ComposeOptions {
                counters,
                ..Default::default()
            },
        )
        .unwrap();
        c.programs[0].code[0].placement
    };
    // Writes r6..r8: one register left, enough for ctx alone.
    let three = marker_block(ChainKind::Xdp, 0, &[6, 7, 8]);
    assert_eq!(three.shape().unwrap().free_registers(), vec![9]);
    assert_eq!(place(&three, false), Placement::Inline);
    assert_eq!(place(&three, true), Placement::Call);
    let all = marker_block(ChainKind::Xdp, 0, &[6, 7, 8, 9]);
    assert_eq!(place(&all, false), Placement::Call);
    // A tail call in main must return to the dispatcher, so main is called.
    let mut tail = marker_block(ChainKind::Xdp, 0, &[]);
    tail.insns.insert(0, helper(12).to_raw());
    assert!(tail.shape().unwrap().main_tail_calls);
    assert_eq!(place(&tail, false), Placement::Call);
    // Atomic fetch writes its source register.
    let mut fetch = marker_block(ChainKind::Xdp, 0, &[]);
    fetch.insns.insert(
        0,
        Insn::new(CLS_STX | 0xc0 | SZ_DW, 10, 8, -8, 0x01).to_raw(),
    );
    let sh = fetch.shape().unwrap();
    assert_eq!(sh.main_writes, 1 << 8);
    // ... and touches the stack: inlined under On, called under Stackless.
    assert!(sh.main_uses_stack);
    assert!(
        !marker_block(ChainKind::Xdp, 0, &[6])
            .shape()
            .unwrap()
            .main_uses_stack
    );
    assert!(
        sh.inlinable(Inline::On, 2)
            && !sh.inlinable(Inline::Stackless, 2)
            && !sh.inlinable(Inline::Off, 1)
    );
    let may_goto = Block {
        insns: vec![
            Insn::new(CLS_JMP | 0xe0, 0, 0, 0, 0).to_raw(),
            exit().to_raw(),
        ],
        ..ret_block(ChainKind::Xdp)
    };
    assert!(may_goto.shape().unwrap().main_uses_stack);
    // Behaviour is the same whatever the mix.
    for counters in [false, true] {
        let blocks = [
            three.clone(),
            all.clone(),
            marker_block(ChainKind::Xdp, 0, &[9]),
            tail.clone(),
        ];
        let blocks: Vec<Block> = blocks
            .into_iter()
            .enumerate()
            .map(|(i, mut b)| {
                let at = b
                    .insns
                    .iter()
                    .position(|r| Insn::from_raw(*r).is_ld_imm64())
                    .unwrap();
                let mut m = Insn::from_raw(b.insns[at]);
                m.imm = (i as i32) << 16;
                b.insns[at] = m.to_raw();
                b
            })
            .collect();
        let slots: Vec<ComposeSlot<'_>> = blocks
            .iter()
            .map(|b| ComposeSlot {
                name: "m",
                block: b,
                proceed_on: d,
            })
            .collect();
        let comp = compose(
            ChainKind::Xdp,
            false,
            &slots,
            &ComposeOptions {
                counters,
                ..Default::default()
            },
        )
        .unwrap();
        check_layout(&comp, &slots);
        let (v, ran, stats) = run_comp(&comp, &[2, 2, 2, 1]);
        assert_eq!((v as u32, ran), (1, vec![0, 1, 2, 3]));
        if counters {
            assert_eq!(stats[3 * STATS_BUCKETS + 1], 1);
        }
    }
}

#[test]
fn mismatches_are_refused() {
    let x = ret_block(ChainKind::Xdp);
    let t = ret_block(ChainKind::Tc);
    let mut f = ret_block(ChainKind::Xdp);
    f.frags = true;
    let dx = ChainKind::Xdp.default_proceed_on();
    let dt = ChainKind::Tc.default_proceed_on();
    let o = ComposeOptions::default();
    let e = compose(
        ChainKind::Xdp,
        false,
        &[ComposeSlot {
            name: "t",
            block: &t,
            proceed_on: dx,
        }],
        &o,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("tc program and the chain is xdp"),
        "{e}"
    );
    let e = compose(
        ChainKind::Xdp,
        false,
        &[ComposeSlot {
            name: "x",
            block: &x,
            proceed_on: dt,
        }],
        &o,
    )
    .unwrap_err();
    assert!(e.to_string().contains("proceed-on set is for tc"), "{e}");
    let mixed = [
        ComposeSlot {
            name: "x",
            block: &x,
            proceed_on: dx,
        },
        ComposeSlot {
            name: "f",
            block: &f,
            proceed_on: dx,
        },
    ];
    let e = compose(ChainKind::Xdp, false, &mixed, &o).unwrap_err();
    assert!(
        e.to_string().contains("slot 1 (f)") && e.to_string().contains("frags"),
        "{e}"
    );
    let e = compose(ChainKind::Xdp, true, &mixed, &o).unwrap_err();
    assert!(e.to_string().contains("slot 0 (x)"), "{e}");
    assert!(compose(ChainKind::Xdp, true, &mixed[1..], &o).is_ok());

    // Attach types: differing blocks are fine unless tail calls are involved.
    let mut a = ret_block(ChainKind::Tc);
    a.expected_attach_type = 0;
    let mut b = ret_block(ChainKind::Tc);
    b.expected_attach_type = 46;
    let two = [
        ComposeSlot {
            name: "a",
            block: &a,
            proceed_on: dt,
        },
        ComposeSlot {
            name: "b",
            block: &b,
            proceed_on: dt,
        },
    ];
    assert_eq!(
        compose(ChainKind::Tc, false, &two, &o)
            .unwrap()
            .expected_attach_type,
        0
    );
    b.insns.insert(0, helper(12).to_raw());
    let two = [
        ComposeSlot {
            name: "a",
            block: &a,
            proceed_on: dt,
        },
        ComposeSlot {
            name: "b",
            block: &b,
            proceed_on: dt,
        },
    ];
    assert_eq!(
        compose(ChainKind::Tc, false, &two, &o)
            .unwrap()
            .expected_attach_type,
        46,
        "the tail-calling block decides"
    );
    a.insns.insert(0, helper(12).to_raw());
    let two = [
        ComposeSlot {
            name: "a",
            block: &a,
            proceed_on: dt,
        },
        ComposeSlot {
            name: "b",
            block: &b,
            proceed_on: dt,
        },
    ];
    let e = compose(ChainKind::Tc, false, &two, &o).unwrap_err();
    assert!(e.to_string().contains("attach type"), "{e}");
    assert_eq!(
        compose(ChainKind::Xdp, false, &[], &o)
            .unwrap()
            .expected_attach_type,
        37
    );

    // The dispatcher is GPL only when every block is.
    let g = ret_block(ChainKind::Xdp);
    let mut ng = ret_block(ChainKind::Xdp);
    ng.gpl = false;
    fn one(b: &Block) -> ComposeSlot<'_> {
        ComposeSlot {
            name: "b",
            block: b,
            proceed_on: ChainKind::Xdp.default_proceed_on(),
        }
    }
    assert!(compose(ChainKind::Xdp, false, &[one(&g)], &o).unwrap().gpl);
    assert!(
        !compose(ChainKind::Xdp, false, &[one(&g), one(&ng)], &o)
            .unwrap()
            .gpl
    );
}

#[test]
fn btf_blob_parses() {
    let funcs = vec![
        Func {
            start: 0,
            name: "apiary_xdp".into(),
        },
        Func {
            start: 40,
            name: "s0_count".into(),
        },
    ];
    let (blob, infos) = func_btf(&funcs);
    assert_eq!(infos, vec![(0, 3), (40, 4)]);
    let btf = crate::btf::Btf::parse(&blob).unwrap();
    let mut names = btf.func_names();
    names.sort();
    assert_eq!(
        names,
        vec!["apiary_xdp".to_string(), "s0_count".to_string()]
    );
    assert_eq!(btf.size_of(1), Some(4));
}
