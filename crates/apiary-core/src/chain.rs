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

// Composition (placement, slot code, continuation, the dispatcher's BTF) is its own file.
mod compose;
#[cfg(test)]
use compose::is_code_ref;
pub use compose::*;

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

// Instruction constructors, shared by composition and the tests.
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
// Stats
// ---------------------------------------------------------------------------------------------

/// Add one slot's counters (STATS_BUCKETS each) to a running total, which grows to fit.
pub fn add_buckets(total: &mut Vec<u64>, more: &[u64]) {
    if total.len() < more.len() {
        total.resize(more.len(), 0);
    }
    for (t, m) in total.iter_mut().zip(more) {
        *t = t.saturating_add(*m);
    }
}

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
mod tests;
