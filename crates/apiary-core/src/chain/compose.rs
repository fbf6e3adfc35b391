//! Composing a dispatcher from blocks: placement (inline or called), the slot code that tests
//! each verdict against its proceed-on mask and counts it, continuation by tail call when one
//! program's limits are reached, and the BTF the dispatcher carries.

use super::*;
// ---------------------------------------------------------------------------------------------
// Composition
// ---------------------------------------------------------------------------------------------

/// Kernel limits that decide how many slots fit in one dispatcher program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// BPF_MAX_SUBPROGS: functions per program, the dispatcher's own included.
    pub max_subprogs: usize,
    /// MAX_USED_MAPS: distinct maps per program.
    pub max_maps: usize,
    /// MAX_CALL_FRAMES; a called slot adds one for the dispatcher, an inlined one does not.
    pub max_call_frames: u32,
    /// BPF_COMPLEXITY_LIMIT_INSNS: instructions per program (for root).
    pub max_insns: usize,
    /// Dispatcher programs per chain. Each continuation costs a packet one of the 33 tail calls
    /// (MAX_TAIL_CALL_CNT) it may make, a budget shared with tail calls inside the blocks.
    pub max_programs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_subprogs: 256,
            max_maps: 64,
            max_call_frames: 8,
            max_insns: 1_000_000,
            max_programs: 32,
        }
    }
}

/// Which blocks' main functions run inline in the dispatcher instead of being called.
///
/// A BPF function return is the dominant per-slot cost on CPUs whose kernels mitigate return
/// speculation (SRSO "safe RET", retbleed): several nanoseconds, against about one inline.
/// Blocks whose main function makes a tail call, refers to itself, or leaves too few of r6-r9
/// free are always called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inline {
    /// Call every block.
    Off,
    /// Inline only main functions that use no stack. Frame 0 then has no stack, exactly as when
    /// every block is called, so what loads called also loads this way.
    Stackless,
    /// Inline wherever possible. Inlined main functions share the dispatcher's frame, whose
    /// stack is the largest of theirs, and functions called from the dispatcher stack on top of
    /// it; a combination of big stacks can then pass 512 bytes where each program alone did
    /// not. `apiary_kernel::dispatcher` falls back to `Stackless` when the kernel says so.
    #[default]
    On,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ComposeOptions {
    /// Count each slot's return values in a per-CPU stats map.
    pub counters: bool,
    pub inline: Inline,
    pub limits: Limits,
}

/// One slot to compose, in run order.
#[derive(Debug, Clone, Copy)]
pub struct ComposeSlot<'a> {
    pub name: &'a str,
    pub block: &'a Block,
    pub proceed_on: ProceedOn,
}

/// What an entry of a dispatcher program's fd_array must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatcherMap {
    /// The chain's per-CPU stats map: one element whose value is `nslots` × STATS_BUCKETS u64.
    Stats,
    /// A read-only one-element array holding a zero u32: the key for the stats lookup, which
    /// must point to memory, and the dispatcher has no stack.
    StatsKey,
    /// The chain's program array: element `p` is dispatcher program `p`.
    Next,
    /// A map of a block.
    User(MapRef),
}

/// A function of a dispatcher program, for its BTF func_info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub start: u32,
    pub name: String,
}

/// How a slot's block runs inside its dispatcher program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The main function's instructions sit in the dispatcher's own code, its exits turned
    /// into jumps to the slot's verdict check; its subprograms are appended as functions.
    Inline,
    /// The whole block is appended and called as a BPF-to-BPF subprogram.
    Call,
}

/// Instructions of a dispatcher program that came from one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCode {
    pub slot: usize,
    pub placement: Placement,
    /// Where the main function's instructions are (inline or appended).
    pub main: Range<u32>,
    /// Where the block's subprograms are (empty when it has none).
    pub subprogs: Range<u32>,
}

/// One dispatcher program, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposedProgram {
    /// The program name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    pub insns: Vec<[u8; 8]>,
    /// fd_array: `BPF_PSEUDO_MAP_IDX` immediates index this.
    pub fd_array: Vec<DispatcherMap>,
    /// Every function start, in order; the first is the dispatcher's own code at 0.
    pub funcs: Vec<Func>,
    /// Which slots (chain-wide indices) this program runs.
    pub slots: Range<usize>,
    /// Where each of those slots' instructions ended up, in slot order.
    pub code: Vec<SlotCode>,
}

/// A composed chain: one or more dispatcher programs, the first attached, each continuing into
/// the next by tail call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composition {
    pub kind: ChainKind,
    pub frags: bool,
    pub expected_attach_type: u32,
    /// Every block is GPL-compatible, so the dispatcher may declare "GPL".
    pub gpl: bool,
    pub counters: bool,
    pub nslots: usize,
    pub programs: Vec<ComposedProgram>,
}

impl Composition {
    /// Bytes in the stats map's (only) value, 0 without counters.
    pub fn stats_value_size(&self) -> usize {
        if self.counters {
            self.nslots.max(1) * STATS_SLOT_BYTES
        } else {
            0
        }
    }

    /// The slot an instruction of program `prog` came from, for pointing at the culprit in a
    /// verifier log; None for the dispatcher's own instructions.
    pub fn slot_at(&self, prog: usize, insn: usize) -> Option<usize> {
        let p = self.programs.get(prog)?;
        let i = insn as u32;
        p.code
            .iter()
            .find(|c| c.main.contains(&i) || c.subprogs.contains(&i))
            .map(|c| c.slot)
    }
}

/// Compose the slots (already in run order) into dispatcher programs.
pub fn compose(
    kind: ChainKind,
    frags: bool,
    slots: &[ComposeSlot<'_>],
    opts: &ComposeOptions,
) -> Result<Composition, ChainError> {
    let limits = opts.limits;
    // Registers the dispatcher keeps across a block: ctx, and the stats pointer.
    let kept = 1 + usize::from(opts.counters);
    let mut shapes = Vec::with_capacity(slots.len());
    let mut placements = Vec::with_capacity(slots.len());
    for (i, s) in slots.iter().enumerate() {
        let in_slot = |e: ChainError| ChainError::InSlot {
            slot: i,
            name: s.name.to_string(),
            error: Box::new(e),
        };
        if s.block.kind != kind {
            return Err(in_slot(ChainError::Mismatch {
                reason: format!("it is a {} program and the chain is {kind}", s.block.kind),
            }));
        }
        if s.proceed_on.kind() != kind {
            return Err(in_slot(ChainError::Mismatch {
                reason: format!(
                    "its proceed-on set is for {}, and the chain is {kind}",
                    s.proceed_on.kind()
                ),
            }));
        }
        if s.block.frags != frags {
            let (this, chain) = if s.block.frags {
                ("is", "is not")
            } else {
                ("is not", "is")
            };
            return Err(in_slot(ChainError::Mismatch {
                reason: format!(
                    "it {this} frags-aware (xdp.frags) and the chain {chain}; a chain's programs must all \
                     support multi-buffer packets or none"
                ),
            }));
        }
        let shape = s.block.shape().map_err(in_slot)?;
        let placement = if shape.inlinable(opts.inline, kept) {
            Placement::Inline
        } else {
            Placement::Call
        };
        let frames = match placement {
            Placement::Inline => shape.frames,
            Placement::Call => shape.frames + 1,
        };
        if frames > limits.max_call_frames {
            return Err(in_slot(ChainError::SlotTooLarge {
                reason: format!(
                    "it nests {} call frames; behind the dispatcher it would need {frames}, over the kernel's {}",
                    shape.frames, limits.max_call_frames
                ),
            }));
        }
        shapes.push(shape);
        placements.push(placement);
    }
    let expected_attach_type = chain_attach_type(kind, slots, &shapes)?;
    if opts.counters && slots.len() > MAX_COUNTED_SLOTS {
        return Err(ChainError::TooLarge {
            reason: format!(
                "{} slots with counters; a chain with counters holds at most {MAX_COUNTED_SLOTS}",
                slots.len()
            ),
        });
    }

    // Pack slots greedily into programs; reserve a map for the program array only when the
    // chain turns out to need more than one program.
    let funcs: Vec<usize> = shapes
        .iter()
        .zip(&placements)
        .map(|(sh, p)| match p {
            Placement::Inline => sh.funcs.len() - 1,
            Placement::Call => sh.funcs.len(),
        })
        .collect();
    let mut plan = pack(slots, &funcs, opts, false)?;
    if plan.len() > 1 {
        plan = pack(slots, &funcs, opts, true)?;
    }
    if plan.len() > limits.max_programs {
        return Err(ChainError::TooLarge {
            reason: format!(
                "the chain needs {} dispatcher programs; at most {} (each continuation is a tail call)",
                plan.len(),
                limits.max_programs
            ),
        });
    }
    let nprogs = plan.len();
    let mut programs = Vec::with_capacity(nprogs);
    for (p, range) in plan.into_iter().enumerate() {
        let e = Emitter {
            kind,
            slots,
            shapes: &shapes,
            placements: &placements,
            counters: opts.counters,
        };
        programs.push(e.program(range, p, nprogs)?);
    }
    for p in &programs {
        if p.insns.len() > limits.max_insns {
            return Err(ChainError::TooLarge {
                reason: format!(
                    "dispatcher program {} has {} instructions, over {}",
                    p.name,
                    p.insns.len(),
                    limits.max_insns
                ),
            });
        }
    }
    let gpl = slots.iter().all(|s| s.block.gpl);
    Ok(Composition {
        kind,
        frags,
        expected_attach_type,
        gpl,
        counters: opts.counters,
        nslots: slots.len(),
        programs,
    })
}

/// The expected attach type the dispatcher loads with. Blocks normally agree; when they do not,
/// it only matters for program arrays (tied to their first user's attach type), so differing
/// blocks are refused only when one of them makes tail calls.
fn chain_attach_type(
    kind: ChainKind,
    slots: &[ComposeSlot<'_>],
    shapes: &[BlockShape],
) -> Result<u32, ChainError> {
    let Some(first) = slots.first() else {
        return Ok(match kind {
            // BPF_XDP; TC programs (SEC("tc")) load with 0.
            ChainKind::Xdp => 37,
            ChainKind::Tc => 0,
        });
    };
    let want = slots
        .iter()
        .zip(shapes)
        .find(|(_, sh)| sh.tail_calls)
        .map(|(s, _)| s.block.expected_attach_type)
        .unwrap_or(first.block.expected_attach_type);
    for (i, (s, sh)) in slots.iter().zip(shapes).enumerate() {
        if sh.tail_calls && s.block.expected_attach_type != want {
            return Err(ChainError::InSlot {
                slot: i,
                name: s.name.to_string(),
                error: Box::new(ChainError::Mismatch {
                    reason: format!(
                        "it makes tail calls and was loaded with expected attach type {}, while another slot \
                         that makes tail calls uses {want}; the kernel ties a program array to one attach type",
                        s.block.expected_attach_type
                    ),
                }),
            });
        }
    }
    Ok(want)
}

fn own_maps(counters: bool, next: bool) -> usize {
    usize::from(counters) * 2 + usize::from(next)
}

fn pack(
    slots: &[ComposeSlot<'_>],
    funcs: &[usize],
    opts: &ComposeOptions,
    next: bool,
) -> Result<Vec<Range<usize>>, ChainError> {
    let limits = opts.limits;
    let own = own_maps(opts.counters, next);
    let distinct = |s: &ComposeSlot<'_>| {
        let mut ids: Vec<u32> = s.block.maps.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut nfuncs = 1;
    let mut maps: Vec<u32> = Vec::new();
    for (i, (s, &f)) in slots.iter().zip(funcs).enumerate() {
        let ids = distinct(s);
        let new = ids.iter().filter(|id| !maps.contains(id)).count();
        if nfuncs + f > limits.max_subprogs || own + maps.len() + new > limits.max_maps {
            if 1 + f > limits.max_subprogs || own + ids.len() > limits.max_maps {
                return Err(ChainError::InSlot {
                    slot: i,
                    name: s.name.to_string(),
                    error: Box::new(ChainError::SlotTooLarge {
                        reason: format!(
                            "it has {f} functions and {} maps; a dispatcher program holds {} functions and {} maps, \
                             of which the dispatcher itself takes 1 function and {own} maps",
                            ids.len(),
                            limits.max_subprogs,
                            limits.max_maps,
                        ),
                    }),
                });
            }
            out.push(start..i);
            start = i;
            nfuncs = 1;
            maps.clear();
        }
        nfuncs += f;
        maps.extend(
            ids.into_iter()
                .filter(|id| !maps.contains(id))
                .collect::<Vec<_>>(),
        );
    }
    out.push(start..slots.len());
    Ok(out)
}

/// Forward references, patched once targets are known.
struct Asm {
    code: Vec<Insn>,
}

impl Asm {
    fn push(&mut self, i: Insn) -> usize {
        self.code.push(i);
        self.code.len() - 1
    }
    fn ld_imm64(&mut self, dst: u8, src: u8, imm: i32, imm2: i32) {
        self.push(Insn::new(LD_IMM64, dst, src, 0, imm));
        self.push(Insn::new(0, 0, 0, 0, imm2));
    }
    fn mov(&mut self, dst: u8, src: u8) {
        if dst != src {
            self.push(mov64_reg(dst, src));
        }
    }
    /// Point the jump at `at` (offset in `off`) to `target`.
    fn patch_off(&mut self, at: usize, target: usize) -> Result<(), ChainError> {
        let rel = target as i64 - at as i64 - 1;
        let off = i16::try_from(rel).map_err(|_| ChainError::TooLarge {
            reason: format!("a dispatcher jump of {rel} instructions does not fit in 16 bits"),
        })?;
        self.code[at].off = off;
        Ok(())
    }
    /// Point the call or callback address at `at` (offset in `imm`) to `target`.
    fn patch_imm(&mut self, at: usize, target: usize) -> Result<(), ChainError> {
        let rel = target as i64 - at as i64 - 1;
        self.code[at].imm = i32::try_from(rel).map_err(|_| ChainError::TooLarge {
            reason: format!("a call of {rel} instructions does not fit in 32 bits"),
        })?;
        Ok(())
    }
}

/// Program names are at most 15 bytes; the entry program is `apiary_xdp` / `apiary_tc`, and a
/// continuation `apiary_xdp_2`, `apiary_xdp_3`, ...
fn program_name(kind: ChainKind, p: usize) -> String {
    if p == 0 {
        format!("apiary_{kind}")
    } else {
        format!("apiary_{kind}_{}", p + 1)
    }
}

/// A BTF function name: an identifier, short enough to read in `bpftool prog` and perf.
fn func_name(slot: usize, name: &str, k: usize) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if id.is_empty() {
        id.push_str("prog");
    }
    if k == 0 {
        format!("s{slot}_{id}")
    } else {
        format!("s{slot}_{id}_f{k}")
    }
}

/// Copy one instruction of a block, pointing its map references into the program's fd_array.
fn remap(ins: Insn, block: &Block, map_index: &HashMap<u32, i32>) -> Result<Insn, ChainError> {
    let mut ins = ins;
    if ins.is_ld_imm64() && (ins.src == PSEUDO_MAP_IDX || ins.src == PSEUDO_MAP_IDX_VALUE) {
        // shape() checked the index against the block's map list.
        let m = &block.maps[ins.imm as usize];
        ins.imm = *map_index
            .get(&m.id)
            .ok_or_else(|| ChainError::InvalidBlock {
                reason: format!("map {} (id {}) missing from the fd_array", m.name, m.id),
            })?;
    }
    Ok(ins)
}

/// Whether an instruction holds a call or callback address (relative, in imm).
pub(super) fn is_code_ref(ins: Insn) -> bool {
    (ins.code == CALL && ins.src == PSEUDO_CALL) || (ins.is_ld_imm64() && ins.src == PSEUDO_FUNC)
}

struct Emitter<'a> {
    kind: ChainKind,
    slots: &'a [ComposeSlot<'a>],
    shapes: &'a [BlockShape],
    placements: &'a [Placement],
    counters: bool,
}

/// Where the dispatcher's state lives at some point: ctx, and the stats pointer (counters).
#[derive(Clone, Copy)]
struct Regs {
    ctx: u8,
    stats: u8,
}

impl Emitter<'_> {
    /// Emit dispatcher program `p`, which runs `range` of the slots.
    ///
    /// Per slot: `r1 = ctx; <block>; bit = ret (+1 for TC); if bit > 31 -> out of range;
    /// [count]; if !(mask >> bit & 1) return ret`. The block is either called, or its main
    /// function runs inline with its exits jumping to the check. ctx and the stats pointer live
    /// in callee-saved registers: any of them survives a call, and an inlined main function is
    /// given ones it does not write. Out-of-range values are counted in their own bucket and
    /// returned as the verdict, as a value outside the proceed-on set would be.
    fn program(
        &self,
        range: Range<usize>,
        p: usize,
        nprogs: usize,
    ) -> Result<ComposedProgram, ChainError> {
        let (kind, counters) = (self.kind, self.counters);
        let mut fd_array = Vec::new();
        let mut map_index: HashMap<u32, i32> = HashMap::new();
        let (mut stats_idx, mut key_idx, mut next_idx) = (0, 0, 0);
        if counters {
            stats_idx = fd_array.len() as i32;
            fd_array.push(DispatcherMap::Stats);
            key_idx = fd_array.len() as i32;
            fd_array.push(DispatcherMap::StatsKey);
        }
        if nprogs > 1 {
            next_idx = fd_array.len() as i32;
            fd_array.push(DispatcherMap::Next);
        }
        for s in &self.slots[range.clone()] {
            for m in &s.block.maps {
                if let std::collections::hash_map::Entry::Vacant(e) = map_index.entry(m.id) {
                    e.insert(fd_array.len() as i32);
                    fd_array.push(DispatcherMap::User(m.clone()));
                }
            }
        }

        // Start with the registers the first inlined slot can keep, to save moves.
        let mut regs = Regs { ctx: R6, stats: R7 };
        if let Some(g) = range
            .clone()
            .find(|&g| self.placements[g] == Placement::Inline)
        {
            regs = self.regs_for(g, regs);
        }
        let default = kind.default_verdict();
        let mut a = Asm { code: Vec::new() };
        a.push(mov64_reg(regs.ctx, R1));
        if counters {
            a.ld_imm64(R1, PSEUDO_MAP_IDX, stats_idx, 0);
            a.ld_imm64(R2, PSEUDO_MAP_IDX_VALUE, key_idx, 0);
            a.push(helper(HELPER_MAP_LOOKUP_ELEM));
            // The lookup of key 0 in a one-element array cannot fail; the verifier still wants
            // the check. Failing open (skip the chain) beats doubling the verified paths.
            a.push(Insn::new(CLS_JMP | OP_JNE | SRC_K, R0, 0, 2, 0));
            a.push(mov64_imm(R0, default));
            a.push(exit());
            a.push(mov64_reg(regs.stats, R0));
        }
        let mut calls = Vec::new(); // (call insn, local slot)
        let mut sub_refs = Vec::new(); // (insn, local slot, block-relative target) from inlined code
        let mut oor = Vec::new(); // (range-check insn, slot, stats register)
        let mut main_ranges = Vec::new();
        for (k, g) in range.clone().enumerate() {
            let s = &self.slots[g];
            match self.placements[g] {
                Placement::Call => {
                    a.mov(R1, regs.ctx);
                    calls.push((a.push(Insn::new(CALL, 0, PSEUDO_CALL, 0, 0)), k));
                    main_ranges.push(0..0);
                }
                Placement::Inline => {
                    let next = self.regs_for(g, regs);
                    // Move stats first: the new ctx register may be the old stats register.
                    if counters && next.stats != regs.stats {
                        if next.stats == regs.ctx {
                            // A swap; r1 is free scratch here.
                            a.mov(R1, regs.ctx);
                            a.mov(next.stats, regs.stats);
                            a.mov(next.ctx, R1);
                        } else {
                            a.mov(next.stats, regs.stats);
                            a.mov(next.ctx, regs.ctx);
                        }
                    } else {
                        a.mov(next.ctx, regs.ctx);
                    }
                    regs = next;
                    a.mov(R1, regs.ctx);
                    let start = a.code.len();
                    let main_len = self.shapes[g].main_len as usize;
                    let mut exits = Vec::new();
                    let mut j = 0;
                    while j < main_len {
                        let ins = remap(Insn::from_raw(s.block.insns[j]), s.block, &map_index)?;
                        if ins.is_exit() {
                            exits.push(a.push(ja()));
                        } else {
                            let at = a.push(ins);
                            if is_code_ref(ins) {
                                sub_refs.push((
                                    at,
                                    k,
                                    (j as i64 + i64::from(ins.imm) + 1) as usize,
                                ));
                            }
                        }
                        if ins.is_ld_imm64() {
                            a.push(Insn::from_raw(s.block.insns[j + 1]));
                            j += 1;
                        }
                        j += 1;
                    }
                    let end = a.code.len();
                    for at in exits {
                        a.patch_off(at, end)?;
                    }
                    main_ranges.push(start as u32..end as u32);
                }
            }
            // The bit register: ret (XDP) or ret + 1 (TC), computed in 32 bits because programs
            // return int and the upper half of r0 is not defined.
            let bit = match (kind, counters) {
                (ChainKind::Xdp, false) => R0,
                (ChainKind::Xdp, true) => {
                    a.push(mov32_reg(R1, R0));
                    R1
                }
                (ChainKind::Tc, _) => {
                    a.push(mov32_reg(R1, R0));
                    a.push(alu32_imm(OP_ADD, R1, 1));
                    R1
                }
            };
            let range_check = a.push(Insn::new(
                CLS_JMP32 | OP_JGT | SRC_K,
                bit,
                0,
                0,
                VERDICT_BITS as i32 - 1,
            ));
            if counters {
                let base = stats_offset(g, 0)?;
                a.push(mov64_reg(R2, bit));
                a.push(alu64_imm(OP_LSH, R2, 3));
                a.push(alu64_reg(OP_ADD, R2, regs.stats));
                a.push(ldx_dw(R3, R2, base));
                a.push(alu64_imm(OP_ADD, R3, 1));
                a.push(stx_dw(R2, R3, base));
                oor.push((range_check, g, regs.stats));
            }
            a.push(mov32_imm(R2, s.proceed_on.mask() as i32));
            a.push(alu32_reg(OP_RSH, R2, bit));
            a.push(Insn::new(CLS_JMP32 | OP_JSET | SRC_K, R2, 0, 1, 1));
            let ret = a.push(exit());
            if !counters {
                a.patch_off(range_check, ret)?;
            }
        }
        if p + 1 < nprogs {
            a.mov(R1, regs.ctx);
            a.ld_imm64(R2, PSEUDO_MAP_IDX, next_idx, 0);
            a.push(mov64_imm(R3, (p + 1) as i32));
            a.push(helper(HELPER_TAIL_CALL));
        }
        a.push(mov64_imm(R0, default));
        a.push(exit());
        for (at, g, stats) in oor {
            let stub = a.code.len();
            a.patch_off(at, stub)?;
            let off = stats_offset(g, STATS_BUCKETS - 1)?;
            a.push(ldx_dw(R1, stats, off));
            a.push(alu64_imm(OP_ADD, R1, 1));
            a.push(stx_dw(stats, R1, off));
            a.push(exit());
        }

        // Append what runs as functions: whole called blocks, and the subprograms of inlined
        // ones. Both keep their internal layout, so their relative references stay valid.
        let mut funcs = vec![Func {
            start: 0,
            name: program_name(kind, p),
        }];
        let mut code = Vec::new();
        for (k, g) in range.clone().enumerate() {
            let s = &self.slots[g];
            let shape = &self.shapes[g];
            let main_len = shape.main_len as usize;
            let (from, placement) = match self.placements[g] {
                Placement::Call => (0, Placement::Call),
                Placement::Inline => (main_len, Placement::Inline),
            };
            let start = a.code.len();
            for (j, f) in shape.funcs.iter().enumerate() {
                if *f as usize >= from {
                    funcs.push(Func {
                        start: (start + *f as usize - from) as u32,
                        name: func_name(g, s.name, j),
                    });
                }
            }
            for raw in &s.block.insns[from..] {
                a.push(remap(Insn::from_raw(*raw), s.block, &map_index)?);
            }
            let end = a.code.len() as u32;
            let sc = match placement {
                Placement::Call => {
                    let (call, _) =
                        calls
                            .iter()
                            .find(|(_, kk)| *kk == k)
                            .copied()
                            .ok_or_else(|| ChainError::InvalidBlock {
                                reason: format!("slot {g}: no call emitted"),
                            })?;
                    a.patch_imm(call, start)?;
                    SlotCode {
                        slot: g,
                        placement,
                        main: start as u32..start as u32 + main_len as u32,
                        subprogs: start as u32 + main_len as u32..end,
                    }
                }
                Placement::Inline => {
                    for &(at, _, target) in sub_refs.iter().filter(|(_, kk, _)| *kk == k) {
                        // shape() guarantees nothing outside main refers into it, and main
                        // cannot refer to itself (no recursion), so targets are subprograms.
                        let sub = target.checked_sub(main_len).ok_or_else(|| {
                            ChainError::InvalidBlock {
                                reason: format!(
                                    "slot {g}: the inlined main function refers into itself"
                                ),
                            }
                        })?;
                        a.patch_imm(at, start + sub)?;
                    }
                    SlotCode {
                        slot: g,
                        placement,
                        main: main_ranges[k].clone(),
                        subprogs: start as u32..end,
                    }
                }
            };
            code.push(sc);
        }
        Ok(ComposedProgram {
            name: program_name(kind, p),
            insns: a.code.into_iter().map(Insn::to_raw).collect(),
            fd_array,
            funcs,
            slots: range,
            code,
        })
    }

    /// The registers to keep state in while slot `g`'s main function runs inline: the current
    /// ones where the function leaves them alone, else others it leaves alone.
    fn regs_for(&self, g: usize, cur: Regs) -> Regs {
        let free = self.shapes[g].free_registers();
        let pick = |want: u8, not: Option<u8>| -> u8 {
            if free.contains(&want) && Some(want) != not {
                want
            } else {
                // compose() only inlines when enough registers are free.
                free.iter()
                    .copied()
                    .find(|r| Some(*r) != not)
                    .unwrap_or(want)
            }
        };
        let ctx = pick(cur.ctx, None);
        // Without counters the stats register holds nothing and is never moved.
        let stats = if self.counters {
            pick(cur.stats, Some(ctx))
        } else {
            cur.stats
        };
        Regs { ctx, stats }
    }
}

/// Byte offset of a counter in the stats value, as the 16-bit offset the dispatcher uses.
fn stats_offset(slot: usize, bucket: usize) -> Result<i16, ChainError> {
    let off = slot * STATS_SLOT_BYTES + bucket * 8;
    i16::try_from(off).map_err(|_| ChainError::TooLarge {
        reason: format!("slot {slot}: counters beyond {MAX_COUNTED_SLOTS} slots do not fit"),
    })
}

// ---------------------------------------------------------------------------------------------
// BTF for the dispatcher
// ---------------------------------------------------------------------------------------------

/// A BTF blob with `int`, one `int (void)` prototype and one static FUNC per function, and the
/// func_info records (insn offset, type id) naming each function start. The kernel wants
/// func_info when a subprogram makes a tail call or a block passes a callback (bpf_loop); the
/// names also make the JITed functions readable in perf and bpftool.
pub fn func_btf(funcs: &[Func]) -> (Vec<u8>, Vec<(u32, u32)>) {
    const BTF_KIND_INT: u32 = 1;
    const BTF_KIND_FUNC: u32 = 12;
    const BTF_KIND_FUNC_PROTO: u32 = 13;
    const BTF_INT_SIGNED: u32 = 1;
    let mut strings: Vec<u8> = vec![0];
    let mut add_str = |s: &str| -> u32 {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let mut types: Vec<u8> = Vec::new();
    let mut put = |words: &[u32]| {
        for w in words {
            types.extend_from_slice(&w.to_ne_bytes());
        }
    };
    // [1] int
    let int_name = add_str("int");
    put(&[int_name, BTF_KIND_INT << 24, 4, (BTF_INT_SIGNED << 24) | 32]);
    // [2] int (void)
    put(&[0, BTF_KIND_FUNC_PROTO << 24, 1]);
    let mut infos = Vec::with_capacity(funcs.len());
    for (i, f) in funcs.iter().enumerate() {
        let name = add_str(&f.name);
        // vlen 0: static linkage, so the verifier checks each function in its caller's context.
        put(&[name, BTF_KIND_FUNC << 24, 2]);
        infos.push((f.start, 3 + i as u32));
    }
    let mut out = Vec::with_capacity(24 + types.len() + strings.len());
    out.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    out.push(1); // version
    out.push(0); // flags
    for w in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    (out, infos)
}
