//! Multi-program XDP and TC chains, the pure part: proceed-on sets, priorities and slot order,
//! the position-independent `Block` a user program's final instructions are kept as, and the
//! instruction-level composer that turns ordered blocks into dispatcher programs (plus the
//! minimal BTF those programs load with). No I/O here: `apiary-kernel` creates the maps, loads
//! what this module produces and attaches it.
//!
//! Semantics follow bpfman/libxdp: priority 1–1000, lower runs first, ties broken by attach
//! order. After each program the chain continues only if its return value is in that slot's
//! proceed-on set; otherwise that value is the chain's verdict. When the last program proceeds,
//! the verdict is `XDP_PASS` (XDP) or `TCX_NEXT` (TC, so later TCX links and the stack carry on).
//!
//! Semantic trap: proceeding is not the same as "the packet survives". If a slot's proceed-on
//! set contains `drop` (or `shot`), a program that drops lets the chain continue, and a later
//! program's verdict wins — the drop is forgotten. Only put a terminal verdict in a proceed-on
//! set when a later program is meant to have the last word.
//!
//! How a dispatcher works (see `compose`): it keeps ctx in a callee-saved register, runs each
//! slot's block, range-checks and optionally counts the return value in a per-CPU stats map,
//! and returns it unless its bit is in the slot's mask. A block runs either called, as a
//! BPF-to-BPF subprogram, or inline: its main function's instructions are placed in the
//! dispatcher with each `exit` turned into a jump to the slot's check, and the dispatcher keeps
//! its state in registers that main function never writes (see `Inline` for when, and why: a
//! function return costs several nanoseconds on kernels that mitigate return speculation). The
//! dispatcher uses no stack, because the 512-byte limit is shared by the whole call chain. When
//! one program cannot hold every slot (256 subprograms, 64 maps per program), it ends with a
//! tail call into the next dispatcher program of the same chain.
//!
//! Blocks are appended verbatim: only map references are re-pointed into the program's
//! fd_array, and in an inlined main function its exits and its references to its own
//! subprograms (calls, callback addresses) are re-targeted. Everything else in a block is
//! relative to itself and stays valid.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// Kinds, verdicts, proceed-on sets
// ---------------------------------------------------------------------------------------------

/// Which hook a chain runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    Xdp,
    /// Attached through TCX, whose verdicts start at -1 (TCX_NEXT).
    Tc,
}

const XDP_VERDICTS: &[(&str, i32)] = &[
    ("aborted", 0),
    ("drop", 1),
    ("pass", 2),
    ("tx", 3),
    ("redirect", 4),
    ("dispatcher_return", 31),
];

const TC_VERDICTS: &[(&str, i32)] = &[
    ("unspec", -1),
    ("ok", 0),
    ("reclassify", 1),
    ("shot", 2),
    ("pipe", 3),
    ("stolen", 4),
    ("queued", 5),
    ("repeat", 6),
    ("redirect", 7),
    ("trap", 8),
    ("dispatcher_return", 30),
];

/// Mask bits per slot; also the number of in-range verdicts.
pub const VERDICT_BITS: u32 = 32;
/// Counters kept per slot: one per in-range verdict, plus one for out-of-range return values.
pub const STATS_BUCKETS: usize = VERDICT_BITS as usize + 1;
/// Bytes of counters per slot in the stats map's value.
pub const STATS_SLOT_BYTES: usize = STATS_BUCKETS * 8;
/// A per-CPU array value may be at most 32 KiB (PCPU_MIN_UNIT_SIZE), and the dispatcher reaches
/// a counter through a 16-bit instruction offset; both allow this many slots with counters.
pub const MAX_COUNTED_SLOTS: usize = 124;

impl ChainKind {
    /// The named verdicts that may appear in a proceed-on set, with their values.
    pub fn verdicts(self) -> &'static [(&'static str, i32)] {
        match self {
            ChainKind::Xdp => XDP_VERDICTS,
            ChainKind::Tc => TC_VERDICTS,
        }
    }

    /// The chain's verdict when every slot proceeds: XDP_PASS, or TCX_NEXT for TC.
    pub fn default_verdict(self) -> i32 {
        match self {
            ChainKind::Xdp => 2,
            ChainKind::Tc => -1,
        }
    }

    /// The proceed-on set a slot gets when the user names none.
    pub fn default_proceed_on(self) -> ProceedOn {
        let names: &[&str] = match self {
            ChainKind::Xdp => &["pass", "dispatcher_return"],
            ChainKind::Tc => &["ok", "pipe", "dispatcher_return"],
        };
        let mut mask = 0;
        for n in names {
            if let Some(v) = self.value_of(n) {
                if let Some(b) = self.bit_of(v) {
                    mask |= 1 << b;
                }
            }
        }
        ProceedOn { kind: self, mask }
    }

    /// The mask bit of a return value: the value itself for XDP, value + 1 for TC (TCX
    /// verdicts start at -1). None when the value has no bit (out of range).
    pub fn bit_of(self, value: i32) -> Option<u32> {
        let bit = match self {
            ChainKind::Xdp => i64::from(value),
            ChainKind::Tc => i64::from(value) + 1,
        };
        if (0..i64::from(VERDICT_BITS)).contains(&bit) {
            Some(bit as u32)
        } else {
            None
        }
    }

    /// The return value a mask bit stands for.
    pub fn value_of_bit(self, bit: u32) -> i32 {
        match self {
            ChainKind::Xdp => bit as i32,
            ChainKind::Tc => bit as i32 - 1,
        }
    }

    /// The value of a verdict name (`pass`, `XDP_PASS`, `TC_ACT_OK`, any case).
    pub fn value_of(self, name: &str) -> Option<i32> {
        let n = name.trim().to_ascii_lowercase();
        let n = match self {
            ChainKind::Xdp => n.strip_prefix("xdp_").unwrap_or(&n),
            ChainKind::Tc => n.strip_prefix("tc_act_").unwrap_or(&n),
        };
        self.verdicts()
            .iter()
            .find(|(v, _)| *v == n)
            .map(|(_, val)| *val)
    }

    /// The name of a return value, when it has one.
    pub fn name_of(self, value: i32) -> Option<&'static str> {
        self.verdicts()
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(n, _)| *n)
    }

    fn valid_names(self) -> String {
        self.verdicts()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Xdp => "xdp",
            ChainKind::Tc => "tc",
        }
    }
}

impl fmt::Display for ChainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The return values after which a slot lets the chain continue.
///
/// Stored as a 32-bit mask whose bit `b` stands for return value `b` (XDP) or `b - 1` (TC).
/// See the module documentation for the trap of proceeding on a terminal verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProceedOn {
    kind: ChainKind,
    mask: u32,
}

impl ProceedOn {
    /// The set from comma-separated names, e.g. `pass,dispatcher_return`.
    pub fn parse(kind: ChainKind, s: &str) -> Result<Self, ChainError> {
        let names: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        Self::from_names(kind, &names)
    }

    pub fn from_names<S: AsRef<str>>(kind: ChainKind, names: &[S]) -> Result<Self, ChainError> {
        if names.is_empty() {
            return Err(ChainError::EmptyProceedOn {
                kind,
                valid: kind.valid_names(),
            });
        }
        let mut mask = 0u32;
        for n in names {
            let n = n.as_ref();
            let value = kind.value_of(n).ok_or_else(|| ChainError::UnknownVerdict {
                kind,
                name: n.to_string(),
                valid: kind.valid_names(),
            })?;
            // Every named verdict has a bit by construction of the tables.
            let bit = kind.bit_of(value).ok_or(ChainError::VerdictOutOfRange {
                kind,
                value: i64::from(value),
            })?;
            mask |= 1 << bit;
        }
        Ok(ProceedOn { kind, mask })
    }

    /// The set from raw return values (any value with a mask bit, named or not).
    pub fn from_values(kind: ChainKind, values: &[i32]) -> Result<Self, ChainError> {
        let mut mask = 0u32;
        for &v in values {
            let bit = kind.bit_of(v).ok_or(ChainError::VerdictOutOfRange {
                kind,
                value: i64::from(v),
            })?;
            mask |= 1 << bit;
        }
        Ok(ProceedOn { kind, mask })
    }

    /// A set from a stored mask. Every mask is valid: each bit is one return value.
    pub fn from_mask(kind: ChainKind, mask: u32) -> Self {
        ProceedOn { kind, mask }
    }

    /// Never proceed: the slot's return value always ends the chain.
    pub fn none(kind: ChainKind) -> Self {
        ProceedOn { kind, mask: 0 }
    }

    pub fn kind(&self) -> ChainKind {
        self.kind
    }

    pub fn mask(&self) -> u32 {
        self.mask
    }

    pub fn contains(&self, value: i32) -> bool {
        self.kind
            .bit_of(value)
            .is_some_and(|b| self.mask & (1 << b) != 0)
    }

    /// The return values in the set, in ascending order.
    pub fn values(&self) -> Vec<i32> {
        (0..VERDICT_BITS)
            .filter(|b| self.mask & (1 << b) != 0)
            .map(|b| self.kind.value_of_bit(b))
            .collect()
    }

    /// Names of the values in the set; unnamed values are shown as numbers.
    pub fn names(&self) -> Vec<String> {
        self.values()
            .into_iter()
            .map(|v| {
                self.kind
                    .name_of(v)
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect()
    }
}

impl fmt::Display for ProceedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

// ---------------------------------------------------------------------------------------------
// Priorities and order
// ---------------------------------------------------------------------------------------------

/// A slot's priority: 1 runs first, 1000 last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Priority(u16);

impl Priority {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 1000;

    pub fn new(value: i64) -> Result<Self, ChainError> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&value) {
            Ok(Priority(value as u16))
        } else {
            Err(ChainError::Priority {
                value: value.to_string(),
            })
        }
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    /// The nearest valid priority: for values that were validated once and must not fail later.
    pub fn saturating(value: u32) -> Self {
        Priority(value.clamp(Self::MIN, Self::MAX) as u16)
    }
}

impl TryFrom<u32> for Priority {
    type Error = ChainError;
    fn try_from(v: u32) -> Result<Self, ChainError> {
        Priority::new(i64::from(v))
    }
}

impl From<Priority> for u32 {
    fn from(p: Priority) -> u32 {
        p.get()
    }
}

impl FromStr for Priority {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Self, ChainError> {
        match s.trim().parse::<i64>() {
            Ok(v) => Priority::new(v),
            Err(_) => Err(ChainError::Priority {
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a slot sorts: by priority, then by attach sequence (earlier attach first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotKey {
    pub priority: Priority,
    pub seq: u64,
}

/// Put slots in run order. The sort is stable, so equal keys keep their given order.
pub fn order_slots<T>(items: &mut [T], key: impl Fn(&T) -> SlotKey) {
    items.sort_by_key(|i| key(i));
}

// ---------------------------------------------------------------------------------------------
// Instructions
// ---------------------------------------------------------------------------------------------

// Opcode fields from linux/bpf.h and linux/bpf_common.h.
const CLS_LD: u8 = 0x00;
const CLS_LDX: u8 = 0x01;
const CLS_STX: u8 = 0x03;
const CLS_ALU: u8 = 0x04;
const CLS_JMP: u8 = 0x05;
const CLS_JMP32: u8 = 0x06;
const CLS_ALU64: u8 = 0x07;
const SZ_DW: u8 = 0x18;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_LSH: u8 = 0x60;
const OP_RSH: u8 = 0x70;
const OP_MOV: u8 = 0xb0;
const OP_JA: u8 = 0x00;
const OP_JGT: u8 = 0x20;
const OP_JSET: u8 = 0x40;
const OP_JNE: u8 = 0x50;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
/// BPF_LD | BPF_IMM | BPF_DW: the two-slot 64-bit immediate load.
const LD_IMM64: u8 = CLS_LD | MODE_IMM | SZ_DW;
const CALL: u8 = CLS_JMP | OP_CALL;
const EXIT: u8 = CLS_JMP | OP_EXIT;

// src_reg values of ld_imm64 and call (linux/bpf.h).
pub const PSEUDO_MAP_FD: u8 = 1;
pub const PSEUDO_MAP_VALUE: u8 = 2;
pub const PSEUDO_BTF_ID: u8 = 3;
pub const PSEUDO_FUNC: u8 = 4;
pub const PSEUDO_MAP_IDX: u8 = 5;
pub const PSEUDO_MAP_IDX_VALUE: u8 = 6;
pub const PSEUDO_CALL: u8 = 1;
pub const PSEUDO_KFUNC_CALL: u8 = 2;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_TAIL_CALL: i32 = 12;

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R6: u8 = 6;
const R7: u8 = 7;

/// One decoded BPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Decode the kernel's `struct bpf_insn` layout (host byte order, register nibbles in
    /// bitfield order).
    pub fn from_raw(raw: [u8; 8]) -> Self {
        let (dst, src) = if cfg!(target_endian = "little") {
            (raw[1] & 0x0f, raw[1] >> 4)
        } else {
            (raw[1] >> 4, raw[1] & 0x0f)
        };
        Insn {
            code: raw[0],
            dst,
            src,
            off: i16::from_ne_bytes([raw[2], raw[3]]),
            imm: i32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]),
        }
    }

    pub fn to_raw(self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            (self.dst & 0x0f) | (self.src << 4)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        let o = self.off.to_ne_bytes();
        let i = self.imm.to_ne_bytes();
        [self.code, regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }

    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn class(self) -> u8 {
        self.code & 0x07
    }

    fn is_ld_imm64(self) -> bool {
        self.code == LD_IMM64
    }

    fn is_exit(self) -> bool {
        self.code == EXIT
    }
}

/// Split raw bytes (as `bpf_program__insns` gives them) into instructions.
pub fn split_insns(raw: &[u8]) -> Result<Vec<[u8; 8]>, ChainError> {
    if !raw.len().is_multiple_of(8) {
        return Err(ChainError::InvalidBlock {
            reason: format!("{} bytes is not a whole number of instructions", raw.len()),
        });
    }
    Ok(raw
        .chunks_exact(8)
        .map(|c| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

/// A map a block uses, by kernel id, so another process can open it again (`map_fd_by_id`) and
/// check it is still the same map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MapRef {
    pub id: u32,
    pub name: String,
    /// The kernel's map type number (BPF_MAP_TYPE_*).
    pub map_type: u32,
}

/// A user program's final instructions, position-independent and free of file descriptors:
/// the main function first, then its subprograms, exactly as libbpf handed them to the kernel,
/// except that map references (`ld_imm64` with a live map fd) are rewritten to
/// `BPF_PSEUDO_MAP_IDX` / `BPF_PSEUDO_MAP_IDX_VALUE` whose index points into `maps`.
///
/// Calls between the block's functions and callback addresses (`BPF_PSEUDO_FUNC`) are relative
/// offsets, so they stay valid wherever the whole block is placed. A block can be stored (it is
/// plain data) and composed again later by any process, as long as its maps still exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub kind: ChainKind,
    /// Loaded with BPF_F_XDP_HAS_FRAGS (`SEC("xdp.frags")`).
    pub frags: bool,
    /// The program's expected attach type (BPF_XDP, BPF_TCX_INGRESS, 0 for `SEC("tc")`): a
    /// program array is tied to the expected attach type of its first user, so a dispatcher
    /// that calls a block doing tail calls must be loaded with the same one.
    pub expected_attach_type: u32,
    /// Loaded under a GPL-compatible license. A dispatcher is GPL only when all its blocks
    /// are, so composing never lets a block call GPL-only helpers it could not call alone.
    pub gpl: bool,
    #[serde(with = "hex_insns")]
    pub insns: Vec<[u8; 8]>,
    pub maps: Vec<MapRef>,
}

/// The facts about a loaded program that a block keeps beside its instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAttrs {
    pub kind: ChainKind,
    pub frags: bool,
    pub expected_attach_type: u32,
    pub gpl: bool,
}

/// What the composer needs to know about a block, found by reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockShape {
    /// Start of each function (subprogram), relative to the block; the first is 0.
    pub funcs: Vec<u32>,
    /// Call frames the block needs, counting its own main function (1 = no calls).
    pub frames: u32,
    /// The block calls bpf_tail_call.
    pub tail_calls: bool,
    /// Instructions of the main function (up to the first subprogram).
    pub main_len: u32,
    /// The main function itself calls bpf_tail_call. Inlined into the dispatcher, that tail call
    /// would replace the whole dispatcher instead of returning to it.
    pub main_tail_calls: bool,
    /// Callee-saved registers the main function writes: bit n for rn, n in 6..=9.
    pub main_writes: u16,
    /// A call or callback address elsewhere in the block targets the main function.
    pub main_referenced: bool,
    /// The main function uses stack (touches r10, or has may_goto, whose counter lives there).
    pub main_uses_stack: bool,
}

/// Callee-saved registers, where the dispatcher keeps ctx and the stats pointer.
const CALLEE_SAVED: [u8; 4] = [6, 7, 8, 9];
/// Main functions longer than this are called, not inlined, so that the jumps replacing their
/// exits always fit a 16-bit offset.
const MAX_INLINE_INSNS: u32 = 30_000;

impl BlockShape {
    /// Callee-saved registers the main function leaves alone, in which the dispatcher can keep
    /// its state while the main function runs inline.
    pub fn free_registers(&self) -> Vec<u8> {
        CALLEE_SAVED
            .iter()
            .copied()
            .filter(|r| self.main_writes & (1 << r) == 0)
            .collect()
    }

    /// Whether the main function can run inline under `mode` in a dispatcher that needs `regs`
    /// registers kept.
    pub fn inlinable(&self, mode: Inline, regs: usize) -> bool {
        let allowed = match mode {
            Inline::Off => false,
            Inline::Stackless => !self.main_uses_stack,
            Inline::On => true,
        };
        allowed
            && !self.main_tail_calls
            && !self.main_referenced
            && self.main_len <= MAX_INLINE_INSNS
            && self.free_registers().len() >= regs
    }
}

/// Whether instructions use the stack: r10 anywhere, or may_goto (BPF_JMP | BPF_JCOND).
fn uses_stack(insns: &[[u8; 8]]) -> bool {
    const JCOND: u8 = CLS_JMP | 0xe0;
    let mut i = 0;
    while i < insns.len() {
        let ins = Insn::from_raw(insns[i]);
        if ins.dst == 10 || (ins.src == 10 && !ins.is_ld_imm64()) || ins.code == JCOND {
            return true;
        }
        i += if ins.is_ld_imm64() { 2 } else { 1 };
    }
    false
}

/// Registers among r6..r9 that instructions write (calls clobber only r0..r5).
fn callee_saved_writes(insns: &[[u8; 8]]) -> u16 {
    const MODE_ATOMIC: u8 = 0xc0;
    const BPF_FETCH: i32 = 0x01;
    let mut mask = 0u16;
    let mut i = 0;
    while i < insns.len() {
        let ins = Insn::from_raw(insns[i]);
        match ins.class() {
            CLS_ALU | CLS_ALU64 | CLS_LDX | CLS_LD => mask |= 1 << ins.dst,
            // Atomic fetch operations write the old value into src (cmpxchg into r0).
            CLS_STX if ins.code & 0xe0 == MODE_ATOMIC && ins.imm & BPF_FETCH != 0 => {
                mask |= 1 << ins.src
            }
            _ => {}
        }
        i += if ins.is_ld_imm64() { 2 } else { 1 };
    }
    mask & CALLEE_SAVED.iter().fold(0, |m, r| m | (1 << r))
}

impl Block {
    /// Build a block from the instructions libbpf loaded, turning each live map fd into a
    /// reference via `resolve` (fd -> the map's id, name and type).
    pub fn from_loaded<E: From<ChainError>>(
        attrs: BlockAttrs,
        raw: &[u8],
        mut resolve: impl FnMut(i32) -> Result<MapRef, E>,
    ) -> Result<Block, E> {
        let mut insns = split_insns(raw)?;
        let mut maps: Vec<MapRef> = Vec::new();
        let mut by_fd: HashMap<i32, usize> = HashMap::new();
        let mut i = 0;
        while i < insns.len() {
            let mut ins = Insn::from_raw(insns[i]);
            if ins.is_ld_imm64() {
                match ins.src {
                    PSEUDO_MAP_FD | PSEUDO_MAP_VALUE => {
                        let idx = match by_fd.get(&ins.imm) {
                            Some(&idx) => idx,
                            None => {
                                let r = resolve(ins.imm)?;
                                let idx = match maps.iter().position(|m| m.id == r.id) {
                                    Some(p) => p,
                                    None => {
                                        maps.push(r);
                                        maps.len() - 1
                                    }
                                };
                                by_fd.insert(ins.imm, idx);
                                idx
                            }
                        };
                        ins.src = if ins.src == PSEUDO_MAP_FD { PSEUDO_MAP_IDX } else { PSEUDO_MAP_IDX_VALUE };
                        ins.imm = idx as i32;
                        insns[i] = ins.to_raw();
                    }
                    PSEUDO_MAP_IDX | PSEUDO_MAP_IDX_VALUE => {
                        return Err(ChainError::InvalidBlock {
                            reason: format!(
                                "instruction {i} already refers to a map by fd_array index; only instructions \
                                 with map file descriptors (as libbpf loads them) can be captured"
                            ),
                        }
                        .into())
                    }
                    _ => {}
                }
                i += 2;
                continue;
            }
            i += 1;
        }
        let BlockAttrs {
            kind,
            frags,
            expected_attach_type,
            gpl,
        } = attrs;
        let block = Block {
            kind,
            frags,
            expected_attach_type,
            gpl,
            insns,
            maps,
        };
        block.shape()?;
        Ok(block)
    }

    /// Check that the block is something the composer can place, and describe it.
    pub fn shape(&self) -> Result<BlockShape, ChainError> {
        let n = self.insns.len();
        let bad = |reason: String| ChainError::InvalidBlock { reason };
        if n == 0 {
            return Err(bad("the block has no instructions".into()));
        }
        if n > i32::MAX as usize / 2 {
            return Err(bad(format!("{n} instructions is too many")));
        }
        let mut starts = vec![0u32];
        // (instruction, target) of every call-like reference, to build the call graph.
        let mut edges: Vec<(usize, usize)> = Vec::new();
        let mut tail_call_at: Vec<usize> = Vec::new();
        let in_block = |i: usize, rel: i64| -> Result<usize, ChainError> {
            let t = i as i64 + rel + 1;
            if t < 0 || t >= n as i64 {
                Err(bad(format!(
                    "instruction {i} refers to instruction {t}, outside the block of {n}"
                )))
            } else {
                Ok(t as usize)
            }
        };
        let mut i = 0;
        while i < n {
            let ins = Insn::from_raw(self.insns[i]);
            if ins.is_ld_imm64() {
                if i + 1 >= n {
                    return Err(bad(format!(
                        "instruction {i} is a 64-bit load with no second half"
                    )));
                }
                let hi = Insn::from_raw(self.insns[i + 1]);
                if hi.code != 0 || hi.dst != 0 || hi.src != 0 || hi.off != 0 {
                    return Err(bad(format!(
                        "instruction {i} is a 64-bit load with a malformed second half"
                    )));
                }
                match ins.src {
                    0 => {}
                    PSEUDO_MAP_IDX | PSEUDO_MAP_IDX_VALUE => {
                        if ins.imm < 0 || ins.imm as usize >= self.maps.len() {
                            return Err(bad(format!(
                                "instruction {i} refers to map index {} but the block lists {} maps",
                                ins.imm,
                                self.maps.len()
                            )));
                        }
                    }
                    PSEUDO_FUNC => {
                        let t = in_block(i, i64::from(ins.imm))?;
                        starts.push(t as u32);
                        edges.push((i, t));
                    }
                    PSEUDO_BTF_ID => {
                        // The second half holds the fd of the kernel module's BTF, or 0 for vmlinux,
                        // whose type ids mean the same in any program.
                        if hi.imm != 0 {
                            return Err(ChainError::NotChainable {
                                what: format!("instruction {i}: a variable (ksym) of a kernel module"),
                                reason: "it refers to module BTF by a file descriptor of the loading process".into(),
                            });
                        }
                    }
                    PSEUDO_MAP_FD | PSEUDO_MAP_VALUE => {
                        return Err(bad(format!(
                            "instruction {i} refers to a map by file descriptor; capture the block with Block::from_loaded"
                        )))
                    }
                    other => return Err(bad(format!("instruction {i} is a 64-bit load of unknown kind {other}"))),
                }
                i += 2;
                continue;
            }
            let class = ins.class();
            if class == CLS_JMP || class == CLS_JMP32 {
                let op = ins.code & 0xf0;
                if ins.code == CALL {
                    match ins.src {
                        0 if ins.imm == HELPER_TAIL_CALL => tail_call_at.push(i),
                        0 => {}
                        PSEUDO_CALL => {
                            let t = in_block(i, i64::from(ins.imm))?;
                            starts.push(t as u32);
                            edges.push((i, t));
                        }
                        PSEUDO_KFUNC_CALL => {
                            // off indexes the loading process's fd_array of module BTFs; 0 is vmlinux.
                            if ins.off != 0 {
                                return Err(ChainError::NotChainable {
                                    what: format!("instruction {i}: a call to a kfunc of a kernel module"),
                                    reason: "it refers to module BTF through the loading process's fd_array".into(),
                                });
                            }
                        }
                        other => {
                            return Err(bad(format!(
                                "instruction {i} is a call of unknown kind {other}"
                            )))
                        }
                    }
                } else if op != OP_EXIT && op != OP_CALL {
                    // gotol (BPF_JMP32 | BPF_JA) keeps its offset in imm; other jumps in off.
                    let rel = if class == CLS_JMP32 && op == OP_JA {
                        i64::from(ins.imm)
                    } else {
                        i64::from(ins.off)
                    };
                    in_block(i, rel)?;
                }
            }
            i += 1;
        }
        let last = Insn::from_raw(self.insns[n - 1]);
        if !(last.is_exit() || (last.class() == CLS_JMP && last.code & 0xf0 == OP_JA)) {
            return Err(bad("the block does not end with exit or a jump".into()));
        }
        starts.sort_unstable();
        starts.dedup();
        let func_of = |insn: usize| starts.partition_point(|&s| s as usize <= insn) - 1;
        let mut callees: Vec<Vec<usize>> = vec![Vec::new(); starts.len()];
        for &(from, to) in &edges {
            let (f, t) = (func_of(from), func_of(to));
            if !callees[f].contains(&t) {
                callees[f].push(t);
            }
        }
        let frames = call_depth(&callees)?;
        let main_len = starts.get(1).copied().unwrap_or(n as u32);
        Ok(BlockShape {
            frames,
            tail_calls: !tail_call_at.is_empty(),
            main_len,
            main_tail_calls: tail_call_at.iter().any(|&i| i < main_len as usize),
            main_writes: callee_saved_writes(&self.insns[..main_len as usize]),
            main_referenced: edges_into(&self.insns, main_len as usize),
            main_uses_stack: uses_stack(&self.insns[..main_len as usize]),
            funcs: starts,
        })
    }
}

/// Whether any call or callback address targets an instruction before `main_len`.
fn edges_into(insns: &[[u8; 8]], main_len: usize) -> bool {
    let mut i = 0;
    while i < insns.len() {
        let ins = Insn::from_raw(insns[i]);
        let is_ref = (ins.code == CALL && ins.src == PSEUDO_CALL)
            || (ins.is_ld_imm64() && ins.src == PSEUDO_FUNC);
        if is_ref && i as i64 + i64::from(ins.imm) + 1 < main_len as i64 {
            return true;
        }
        i += if ins.is_ld_imm64() { 2 } else { 1 };
    }
    false
}

/// Longest chain of frames from function 0 (frames, so a function that calls nothing is 1).
fn call_depth(callees: &[Vec<usize>]) -> Result<u32, ChainError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        Open,
        Done(u32),
    }
    fn visit(f: usize, callees: &[Vec<usize>], st: &mut [State]) -> Result<u32, ChainError> {
        match st[f] {
            State::Done(d) => return Ok(d),
            State::Open => {
                return Err(ChainError::InvalidBlock {
                    reason: format!("function {f} is recursive; BPF forbids recursion"),
                })
            }
            State::New => {}
        }
        st[f] = State::Open;
        let mut deepest = 0;
        for &c in &callees[f] {
            deepest = deepest.max(visit(c, callees, st)?);
        }
        st[f] = State::Done(deepest + 1);
        Ok(deepest + 1)
    }
    let mut st = vec![State::New; callees.len()];
    visit(0, callees, &mut st)
}

/// Serde for instructions: one hex string, 16 digits per instruction, in the kernel's byte
/// layout. Compact in JSON and in a database, and easy to diff.
mod hex_insns {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(insns: &[[u8; 8]], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(insns.len() * 16);
        for b in insns.iter().flatten() {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 8]>, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = s.as_bytes();
        if bytes.len() % 16 != 0 {
            return Err(serde::de::Error::custom(
                "instruction hex must be 16 digits per instruction",
            ));
        }
        let digit = |c: u8| -> Result<u8, D::Error> {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| serde::de::Error::custom("invalid hex digit in instructions"))
        };
        let mut out = Vec::with_capacity(bytes.len() / 16);
        for chunk in bytes.chunks_exact(16) {
            let mut raw = [0u8; 8];
            for (k, pair) in chunk.chunks_exact(2).enumerate() {
                raw[k] = (digit(pair[0])? << 4) | digit(pair[1])?;
            }
            out.push(raw);
        }
        Ok(out)
    }
}

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

fn mov64_reg(dst: u8, src: u8) -> Insn {
    Insn::new(CLS_ALU64 | OP_MOV | SRC_X, dst, src, 0, 0)
}
fn mov64_imm(dst: u8, imm: i32) -> Insn {
    Insn::new(CLS_ALU64 | OP_MOV | SRC_K, dst, 0, 0, imm)
}
fn mov32_reg(dst: u8, src: u8) -> Insn {
    Insn::new(CLS_ALU | OP_MOV | SRC_X, dst, src, 0, 0)
}
fn mov32_imm(dst: u8, imm: i32) -> Insn {
    Insn::new(CLS_ALU | OP_MOV | SRC_K, dst, 0, 0, imm)
}
fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
    Insn::new(CLS_ALU | op | SRC_K, dst, 0, 0, imm)
}
fn alu32_reg(op: u8, dst: u8, src: u8) -> Insn {
    Insn::new(CLS_ALU | op | SRC_X, dst, src, 0, 0)
}
fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
    Insn::new(CLS_ALU64 | op | SRC_K, dst, 0, 0, imm)
}
fn alu64_reg(op: u8, dst: u8, src: u8) -> Insn {
    Insn::new(CLS_ALU64 | op | SRC_X, dst, src, 0, 0)
}
fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(CLS_LDX | MODE_MEM | SZ_DW, dst, src, off, 0)
}
fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(CLS_STX | MODE_MEM | SZ_DW, dst, src, off, 0)
}
fn helper(id: i32) -> Insn {
    Insn::new(CALL, 0, 0, 0, id)
}
fn exit() -> Insn {
    Insn::new(EXIT, 0, 0, 0, 0)
}
fn ja() -> Insn {
    Insn::new(CLS_JMP | OP_JA, 0, 0, 0, 0)
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
fn is_code_ref(ins: Insn) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

/// What one slot did, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SlotStats {
    /// Times the slot's program ran.
    pub runs: u64,
    /// Count per return value, for values it returned at least once.
    pub verdicts: BTreeMap<i32, u64>,
    /// Return values outside the range a mask can express.
    pub out_of_range: u64,
}

impl SlotStats {
    /// From one slot's STATS_BUCKETS counters.
    pub fn from_buckets(kind: ChainKind, buckets: &[u64]) -> SlotStats {
        let mut s = SlotStats::default();
        for (b, &n) in buckets.iter().enumerate().take(STATS_BUCKETS) {
            s.runs += n;
            if b == STATS_BUCKETS - 1 {
                s.out_of_range += n;
            } else if n > 0 {
                s.verdicts.insert(kind.value_of_bit(b as u32), n);
            }
        }
        s
    }

    pub fn count(&self, value: i32) -> u64 {
        self.verdicts.get(&value).copied().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("unknown {kind} proceed-on value {name:?}; valid values: {valid}")]
    UnknownVerdict {
        kind: ChainKind,
        name: String,
        valid: String,
    },

    #[error("{kind} return value {value} cannot be in a proceed-on set (it has no mask bit)")]
    VerdictOutOfRange { kind: ChainKind, value: i64 },

    #[error("empty {kind} proceed-on list: give one or more of {valid}")]
    EmptyProceedOn { kind: ChainKind, valid: String },

    #[error("invalid priority {value:?}: priorities run from 1 (runs first) to 1000 (runs last)")]
    Priority { value: String },

    #[error("cannot use these instructions in a chain: {reason}")]
    InvalidBlock { reason: String },

    #[error("{what} cannot run in a chain: {reason}")]
    NotChainable { what: String, reason: String },

    #[error("{reason}")]
    Mismatch { reason: String },

    #[error("{reason}")]
    SlotTooLarge { reason: String },

    #[error("chain too large: {reason}")]
    TooLarge { reason: String },

    #[error("slot {slot} ({name}): {error}")]
    InSlot {
        slot: usize,
        name: String,
        error: Box<ChainError>,
    },
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
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
                                r[0] = (self.rets[slot] & 0xffff_ffff)
                                    | (0x5a5a_0000_0000_0000u64 as i64);
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
                    } else if c.placement == Placement::Inline && j < main_len && is_code_ref(want)
                    {
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
}
