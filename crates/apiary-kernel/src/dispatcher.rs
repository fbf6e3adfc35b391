//! Multi-program XDP and TC chains in the kernel. This module owns the kernel side of a chain:
//! capturing a loaded user program as a `Block`, loading the dispatcher programs that
//! `apiary_core::chain::compose` produces (with their fd_array, minimal BTF, stats map and
//! program array), attaching the entry program with a bpf_link (XDP link or TCX link),
//! swapping a link atomically to a new composition, and reading per-slot counters.
//!
//! Lifetimes, which the manager must respect when it persists a chain:
//! - the link keeps the entry dispatcher program alive, and that program keeps every map it
//!   uses (user maps, stats, the stats key, the program array) alive;
//! - a program array only keeps its entries while user space holds it (an fd or a pin): when
//!   the last one goes, the kernel empties it. A chain of more than one program therefore needs
//!   its `next_map` pinned, or the chain silently stops after the first program's slots.
//!   `ComposedDispatcher::pins` lists what to pin.

use crate::attach::{self, AttachContext, Attachment, TcxAnchor};
use crate::error::{KernelError, Result};
use crate::loader::LoadedObject;
use crate::sys;
use apiary_core::chain::{
    self, Block, BlockAttrs, ChainKind, ComposeOptions, ComposeSlot, Composition, DispatcherMap,
    Inline, MapRef, Placement, ProceedOn, SlotStats, STATS_BUCKETS,
};
use apiary_core::types::{tcx::TcxAttach, xdp::XdpAttach};
use apiary_core::{AttachSpec, Hook, TcDirection};
use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One program of a chain, in run order.
#[derive(Debug, Clone)]
pub struct ChainSlot {
    /// Shown in errors and used for the BTF function names (e.g. the program's name or id).
    pub name: String,
    pub block: Block,
    pub proceed_on: ProceedOn,
}

/// Capture program `program` of a loaded object as a block: its final instructions, with map
/// file descriptors replaced by references to the maps' kernel ids.
pub fn capture_block(obj: &LoadedObject, program: &str) -> Result<Block> {
    // Only loaded programs have final instructions: libbpf relocates at load.
    let loaded = obj
        .programs
        .iter()
        .find(|p| p.name == program)
        .ok_or_else(|| {
            KernelError::Invalid(format!(
                "program {program} was not loaded from this object; loaded: {}",
                obj.programs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let missing = || KernelError::Invalid(format!("program {program} has no loaded instructions"));
    let attrs = obj.program_load_attrs(program).ok_or_else(missing)?;
    let raw = obj.program_insns(program).ok_or_else(missing)?;
    let fd = obj.program_fd(program).ok_or_else(missing)?;
    let info = sys::prog_info(fd)?;
    let kind = match attrs.prog_type {
        libbpf_sys::BPF_PROG_TYPE_XDP => ChainKind::Xdp,
        libbpf_sys::BPF_PROG_TYPE_SCHED_CLS => ChainKind::Tc,
        other => {
            return Err(KernelError::NotSupported {
                feature: format!("chaining a {} program", sys::prog_type_name(other)),
                reason: "only XDP and TC (sched_cls) programs run in a dispatcher chain".into(),
            })
        }
    };
    // The descriptors in the instructions are the loading process's, one per map of this
    // object (not the ones this process holds when the load ran in the loader process).
    let mut by_fd: HashMap<i32, MapRef> = HashMap::new();
    for m in &obj.maps {
        if let Some(insn_fd) = obj.map_insn_fd(&m.name) {
            by_fd.insert(
                insn_fd,
                MapRef {
                    id: m.info.id,
                    name: m.info.name.clone(),
                    map_type: m.info.map_type_raw,
                },
            );
        }
    }
    // libbpf applies BPF_F_XDP_HAS_FRAGS for `SEC("xdp.frags*")` to the load options only, not
    // to the program's flags, and the kernel does not report it; the section name is the record.
    let section = loaded.section.as_str();
    let frags =
        attrs.flags & libbpf_sys::BPF_F_XDP_HAS_FRAGS != 0 || section.starts_with("xdp.frags");
    let block_attrs = BlockAttrs {
        kind,
        frags,
        expected_attach_type: attrs.expected_attach_type,
        gpl: info.gpl_compatible,
    };
    Block::from_loaded::<KernelError>(block_attrs, &raw, |fd| {
        by_fd.get(&fd).cloned().ok_or_else(|| {
            KernelError::Invalid(format!(
                "program {program} refers to map fd {fd}, which is not one of its object's maps"
            ))
        })
    })
}

/// One loaded dispatcher program.
#[derive(Debug)]
pub struct DispatcherProgram {
    pub fd: OwnedFd,
    pub id: u32,
    pub name: String,
    /// The chain's slots this program runs.
    pub slots: Range<usize>,
}

/// What to pin for a chain to outlive the process (besides the link, which the caller owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinRole {
    /// The entry dispatcher program (the one on the link).
    Program,
    /// The program array holding the continuation programs. Required: without a user-space
    /// reference the kernel empties it and the chain ends after the first program.
    NextMap,
    /// The per-CPU stats map, to read counters from another process.
    StatsMap,
}

impl PinRole {
    /// A file name for the pin, for callers that pin all of a chain in one directory.
    pub fn file_name(self) -> &'static str {
        match self {
            PinRole::Program => "dispatcher",
            PinRole::NextMap => "dispatcher_next",
            PinRole::StatsMap => "dispatcher_stats",
        }
    }
}

/// A loaded chain: dispatcher programs and the maps it owns. Dropping it releases all of them,
/// except what a link or a pin still holds.
#[derive(Debug)]
pub struct ComposedDispatcher {
    pub kind: ChainKind,
    pub frags: bool,
    pub counters: bool,
    /// Dispatcher programs in order; the first is attached, each tail-calls the next.
    pub programs: Vec<DispatcherProgram>,
    /// The program array of continuations (only when there is more than one program).
    pub next_map: Option<OwnedFd>,
    /// Per-CPU counters, one element: `nslots` × STATS_BUCKETS u64 (only with counters).
    pub stats_map: Option<OwnedFd>,
    pub slot_names: Vec<String>,
    /// How each slot runs (inline or called), in slot order.
    pub placements: Vec<Placement>,
}

impl ComposedDispatcher {
    /// The program to attach.
    pub fn prog(&self) -> BorrowedFd<'_> {
        // compose_and_load never returns an empty program list.
        self.programs[0].fd.as_fd()
    }

    pub fn kernel_id(&self) -> u32 {
        self.programs[0].id
    }

    pub fn nslots(&self) -> usize {
        self.slot_names.len()
    }

    /// Everything that must be pinned (or kept open) for the chain to keep working, with the
    /// role of each.
    pub fn pins(&self) -> Vec<(PinRole, BorrowedFd<'_>)> {
        let mut v = vec![(PinRole::Program, self.prog())];
        if let Some(m) = &self.next_map {
            v.push((PinRole::NextMap, m.as_fd()));
        }
        if let Some(m) = &self.stats_map {
            v.push((PinRole::StatsMap, m.as_fd()));
        }
        v
    }

    /// Per-slot counters, summed over CPUs (empty without counters).
    pub fn stats(&self) -> Result<Vec<SlotStats>> {
        match &self.stats_map {
            Some(m) => {
                let mut v = read_stats(m.as_fd(), self.kind)?;
                // An empty chain still has a one-slot stats value.
                v.truncate(self.nslots());
                Ok(v)
            }
            None => Ok(Vec::new()),
        }
    }
}

/// Compose `slots` (in run order) and load the dispatcher programs, with kernel limits.
pub fn compose_and_load(
    kind: ChainKind,
    frags: bool,
    slots: &[ChainSlot],
    counters: bool,
) -> Result<ComposedDispatcher> {
    compose_and_load_with(
        kind,
        frags,
        slots,
        &ComposeOptions {
            counters,
            ..Default::default()
        },
    )
}

/// `compose_and_load` with explicit options (inlining, limits).
///
/// With `Inline::On`, if the kernel finds the inlined composition's stack too deep (inlined
/// main functions share one frame; see `Inline`), the chain is composed again with
/// `Inline::Stackless`, which loads whenever calling every block would.
pub fn compose_and_load_with(
    kind: ChainKind,
    frags: bool,
    slots: &[ChainSlot],
    opts: &ComposeOptions,
) -> Result<ComposedDispatcher> {
    match load_composition(kind, frags, slots, opts) {
        Err(KernelError::Verifier { verifier_log, .. })
            if opts.inline == Inline::On && stack_too_deep(&verifier_log) =>
        {
            load_composition(
                kind,
                frags,
                slots,
                &ComposeOptions {
                    inline: Inline::Stackless,
                    ..*opts
                },
            )
        }
        other => other,
    }
}

/// The verifier's complaints about the stack of a whole call chain.
fn stack_too_deep(log: &str) -> bool {
    log.contains("combined stack size")
        || log.contains("tail_calls are not allowed when call stack")
}

fn load_composition(
    kind: ChainKind,
    frags: bool,
    slots: &[ChainSlot],
    opts: &ComposeOptions,
) -> Result<ComposedDispatcher> {
    let cslots: Vec<ComposeSlot<'_>> = slots
        .iter()
        .map(|s| ComposeSlot {
            name: &s.name,
            block: &s.block,
            proceed_on: s.proceed_on,
        })
        .collect();
    let comp = chain::compose(kind, frags, &cslots, opts)?;

    let stats_map = if comp.counters {
        Some(create_map(
            libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY,
            "apiary_stats",
            4,
            comp.stats_value_size() as u32,
            1,
            0,
        )?)
    } else {
        None
    };
    let stats_key = if comp.counters {
        let fd = create_map(
            libbpf_sys::BPF_MAP_TYPE_ARRAY,
            "apiary_key",
            4,
            4,
            1,
            libbpf_sys::BPF_F_RDONLY_PROG,
        )?;
        // Frozen so nobody can turn the zero key into a missing one.
        // SAFETY: plain syscall wrapper on a descriptor we own.
        let ret = unsafe { libbpf_sys::bpf_map_freeze(fd.as_raw_fd()) };
        crate::error::check(ret, "BPF_MAP_FREEZE (stats key)")?;
        Some(fd)
    } else {
        None
    };
    let next_map = if comp.programs.len() > 1 {
        Some(create_map(
            libbpf_sys::BPF_MAP_TYPE_PROG_ARRAY,
            "apiary_next",
            4,
            4,
            comp.programs.len() as u32,
            0,
        )?)
    } else {
        None
    };

    // Open every user map once, by id, and check it is still the map the block was captured with.
    let mut user: HashMap<u32, OwnedFd> = HashMap::new();
    for (i, s) in slots.iter().enumerate() {
        for m in &s.block.maps {
            if user.contains_key(&m.id) {
                continue;
            }
            let fd = sys::map_fd_by_id(m.id).map_err(|e| match e {
                KernelError::NotFound { .. } => KernelError::NotFound {
                    what: format!("map {} (id {}) used by slot {i} ({})", m.name, m.id, s.name),
                },
                other => other,
            })?;
            let info = sys::map_info(fd.as_fd())?;
            if info.name != m.name || info.map_type_raw != m.map_type {
                return Err(KernelError::Invalid(format!(
                    "slot {i} ({}): map id {} is now {} ({}), not the {} the program was loaded with; reload the program",
                    s.name, m.id, info.name, info.map_type, m.name
                )));
            }
            user.insert(m.id, fd);
        }
    }

    let mut programs = Vec::with_capacity(comp.programs.len());
    for (p, cp) in comp.programs.iter().enumerate() {
        let mut fds = Vec::with_capacity(cp.fd_array.len());
        for m in &cp.fd_array {
            let fd = match m {
                DispatcherMap::Stats => stats_map.as_ref().map(|f| f.as_raw_fd()),
                DispatcherMap::StatsKey => stats_key.as_ref().map(|f| f.as_raw_fd()),
                DispatcherMap::Next => next_map.as_ref().map(|f| f.as_raw_fd()),
                DispatcherMap::User(r) => user.get(&r.id).map(|f| f.as_raw_fd()),
            };
            fds.push(fd.ok_or_else(|| {
                KernelError::Invalid(format!("dispatcher map {m:?} was not created"))
            })?);
        }
        let fd = load_program(&comp, p, &fds, slots)?;
        let id = sys::prog_info(fd.as_fd())?.id;
        programs.push(DispatcherProgram {
            fd,
            id,
            name: cp.name.clone(),
            slots: cp.slots.clone(),
        });
    }
    if let Some(next) = &next_map {
        for (p, prog) in programs.iter().enumerate().skip(1) {
            let key = p as u32;
            let val = prog.fd.as_raw_fd() as u32;
            // SAFETY: key and value are 4-byte buffers that outlive the call.
            let ret = unsafe {
                libbpf_sys::bpf_map_update_elem(
                    next.as_raw_fd(),
                    &key as *const u32 as *const _,
                    &val as *const u32 as *const _,
                    0,
                )
            };
            crate::error::check(ret, "BPF_MAP_UPDATE_ELEM (dispatcher program array)")?;
        }
    }
    Ok(ComposedDispatcher {
        kind,
        frags,
        counters: comp.counters,
        programs,
        next_map,
        stats_map,
        slot_names: slots.iter().map(|s| s.name.clone()).collect(),
        placements: comp
            .programs
            .iter()
            .flat_map(|p| p.code.iter().map(|c| c.placement))
            .collect(),
    })
}

fn create_map(
    map_type: u32,
    name: &str,
    key: u32,
    value: u32,
    entries: u32,
    flags: u32,
) -> Result<OwnedFd> {
    let cname = sys::cstr(name)?;
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: flags,
        ..Default::default()
    };
    // SAFETY: name is NUL-terminated and opts is sized; both outlive the call.
    let ret =
        unsafe { libbpf_sys::bpf_map_create(map_type, cname.as_ptr(), key, value, entries, &opts) };
    let fd = crate::error::check(ret, &format!("create map {name}"))?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bpf_func_info as the kernel reads it (linux/bpf.h).
#[repr(C)]
struct FuncInfo {
    insn_off: u32,
    type_id: u32,
}

/// Verifier log size. The kernel keeps the tail when it overflows (rotating log), which is
/// where the reason for a rejection is.
const LOG_SIZE: usize = 1 << 20;
const LOG_LINES: usize = 40;

fn load_program(comp: &Composition, p: usize, fds: &[i32], slots: &[ChainSlot]) -> Result<OwnedFd> {
    let cp = &comp.programs[p];
    let (btf, infos) = chain::func_btf(&cp.funcs);
    let btf_fd = load_btf(&btf, &cp.name)?;
    let func_info: Vec<FuncInfo> = infos
        .iter()
        .map(|&(insn_off, type_id)| FuncInfo { insn_off, type_id })
        .collect();
    let insns: Vec<libbpf_sys::bpf_insn> = cp
        .insns
        .iter()
        // SAFETY: bpf_insn is a plain 8-byte repr(C) struct; every bit pattern is valid.
        .map(|raw| unsafe { std::mem::transmute::<[u8; 8], libbpf_sys::bpf_insn>(*raw) })
        .collect();
    let mut log = vec![0u8; LOG_SIZE];
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: comp.expected_attach_type,
        prog_btf_fd: btf_fd.as_raw_fd() as u32,
        prog_flags: if comp.frags {
            libbpf_sys::BPF_F_XDP_HAS_FRAGS
        } else {
            0
        },
        fd_array: if fds.is_empty() {
            std::ptr::null()
        } else {
            fds.as_ptr()
        },
        func_info: func_info.as_ptr() as *const _,
        func_info_cnt: func_info.len() as u32,
        func_info_rec_size: std::mem::size_of::<FuncInfo>() as u32,
        // Level 0 with a buffer: libbpf loads without a log first (fast, and a log that
        // overflows cannot fail a good load), and retries with one only on failure.
        log_level: 0,
        log_size: LOG_SIZE as u32,
        log_buf: log.as_mut_ptr() as *mut _,
        ..Default::default()
    };
    let prog_type = match comp.kind {
        ChainKind::Xdp => libbpf_sys::BPF_PROG_TYPE_XDP,
        ChainKind::Tc => libbpf_sys::BPF_PROG_TYPE_SCHED_CLS,
    };
    let name = sys::cstr(&cp.name)?;
    let license = sys::cstr(if comp.gpl { "GPL" } else { "Proprietary" })?;
    // SAFETY: every pointer in opts (fd_array, func_info, log) and the instructions outlive
    // the call; counts match the buffers.
    let ret = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if ret >= 0 {
        // SAFETY: a fresh descriptor nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(ret) });
    }
    let error = io::Error::from_raw_os_error(-ret);
    let text = CStr::from_bytes_until_nul(&log)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = describe_program(comp, p, slots, &text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // The log ends with statistics whether or not verification passed; the reason for a
    // rejection is the line before them. When that line is just the trace of an instruction,
    // the verifier accepted the program and a later check refused it.
    let is_stats = |l: &&str| {
        l.starts_with("processed ")
            || l.starts_with("verification time")
            || l.starts_with("stack depth")
    };
    let reason = lines.iter().rev().find(|l| !is_stats(l));
    let is_trace = |l: &str| {
        l.split_once(": ")
            .is_some_and(|(n, _)| n.trim().parse::<usize>().is_ok())
    };
    let verified = error.raw_os_error() != Some(libc::EACCES) && reason.is_none_or(|l| is_trace(l));
    if !lines.is_empty() && !verified {
        return Err(KernelError::verifier(program, &text, LOG_LINES));
    }
    let hint = if error.raw_os_error() == Some(libc::EINVAL) {
        Some(
            "the verifier accepted the dispatcher and the kernel refused it afterwards; a program array \
             used by a block must belong to programs of the same type, attach type and frags setting"
                .to_string(),
        )
    } else {
        lines.last().map(|l| l.to_string())
    };
    Err(KernelError::Load {
        program,
        error,
        hint,
    })
}

/// "apiary_xdp (3 slots: a, b, c; the rejected instruction 57 is in slot 1 (b))".
fn describe_program(comp: &Composition, p: usize, slots: &[ChainSlot], log: &str) -> String {
    let cp = &comp.programs[p];
    let names: Vec<&str> = slots[cp.slots.clone()]
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut out = format!(
        "{} (dispatcher of {} slots: {}",
        cp.name,
        names.len(),
        names.join(", ")
    );
    // The verifier prints "N: (op) ..." for each instruction it checks; the last one is where it
    // stopped.
    let last_insn = log.lines().rev().find_map(|l| {
        let (n, rest) = l.split_once(": (")?;
        let _ = rest;
        n.trim().parse::<usize>().ok()
    });
    if let Some(i) = last_insn {
        match comp.slot_at(p, i) {
            Some(s) => out.push_str(&format!(
                "; the rejected instruction {i} is in slot {s} ({})",
                slots[s].name
            )),
            None => out.push_str(&format!(
                "; the rejected instruction {i} is in the dispatcher's own code"
            )),
        }
    }
    out.push(')');
    out
}

fn load_btf(blob: &[u8], program: &str) -> Result<OwnedFd> {
    let mut log = vec![0u8; 64 * 1024];
    let mut opts = libbpf_sys::bpf_btf_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_btf_load_opts>() as _,
        log_buf: log.as_mut_ptr() as *mut _,
        log_size: log.len() as u32,
        log_level: 0,
        ..Default::default()
    };
    // SAFETY: blob and log outlive the call.
    let ret =
        unsafe { libbpf_sys::bpf_btf_load(blob.as_ptr() as *const _, blob.len() as _, &mut opts) };
    if ret >= 0 {
        // SAFETY: a fresh descriptor nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(ret) });
    }
    let text = CStr::from_bytes_until_nul(&log)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    Err(KernelError::Load {
        program: program.to_string(),
        error: io::Error::from_raw_os_error(-ret),
        hint: Some(format!(
            "loading the dispatcher's BTF failed{}",
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        )),
    })
}

/// Attach the chain's entry program on `hook` with a bpf_link (a TC chain through TCX, ordered
/// against other TCX links by `anchor`); the returned link detaches on drop unless pinned.
pub fn attach_chain(
    hook: &Hook,
    anchor: Option<TcxAnchor>,
    d: &ComposedDispatcher,
) -> Result<OwnedFd> {
    let hook_kind = hook.kind;
    let (spec, ctx) = match hook.kind {
        ChainKind::Xdp => (
            AttachSpec::Xdp(XdpAttach {
                iface: hook.iface.clone(),
                netns: hook.netns.clone(),
                mode: hook.mode,
                priority: apiary_core::attach::default_priority(),
                proceed_on: Vec::new(),
            }),
            AttachContext::default(),
        ),
        ChainKind::Tc => (
            // The TCX attach takes its order from the anchor; the priority is not used there.
            AttachSpec::Tcx(TcxAttach {
                iface: hook.iface.clone(),
                netns: hook.netns.clone(),
                direction: hook.direction.unwrap_or(TcDirection::Ingress),
                priority: 0,
            }),
            AttachContext { tcx_anchor: anchor },
        ),
    };
    if hook_kind != d.kind {
        return Err(KernelError::Invalid(format!(
            "a {} chain cannot attach to a {hook_kind} hook",
            d.kind
        )));
    }
    match attach::attach(d.prog(), &spec, &ctx)? {
        Attachment::Links(mut links) if links.len() == 1 => links
            .pop()
            .ok_or_else(|| KernelError::Invalid("no link".into())),
        Attachment::Links(links) => Err(KernelError::Invalid(format!(
            "expected one link, the attach made {}",
            links.len()
        ))),
        Attachment::TcFilter(_) => Err(KernelError::Invalid(
            "a chain attaches through TCX, not a TC filter".into(),
        )),
    }
}

/// Point an existing link at a new composition, atomically: every packet runs either the old
/// or the new dispatcher.
pub fn swap(link: BorrowedFd<'_>, new: &ComposedDispatcher) -> Result<()> {
    link_update(link, new, None)
}

/// `swap`, but only if the link still runs `old` (so two writers cannot lose each other's
/// change unnoticed).
pub fn swap_replacing(
    link: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    new: &ComposedDispatcher,
) -> Result<()> {
    link_update(link, new, Some(old))
}

fn link_update(
    link: BorrowedFd<'_>,
    new: &ComposedDispatcher,
    old: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let opts = libbpf_sys::bpf_link_update_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_update_opts>() as _,
        flags: if old.is_some() {
            libbpf_sys::BPF_F_REPLACE
        } else {
            0
        },
        old_prog_fd: old.map(|o| o.as_raw_fd() as u32).unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: plain syscall wrapper; opts is sized.
    let ret =
        unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), new.prog().as_raw_fd(), &opts) };
    if ret < 0 {
        let error = io::Error::from_raw_os_error(-ret);
        return Err(match -ret {
            libc::EPERM if old.is_some() => KernelError::Invalid(
                "the link no longer runs the dispatcher it was expected to; another writer changed the chain".into(),
            ),
            libc::EINVAL => KernelError::Load {
                program: new.programs[0].name.clone(),
                error,
                hint: Some("the link refused the new dispatcher; it must be the link's program type (and for XDP, frags setting)".into()),
            },
            _ => KernelError::syscall("BPF_LINK_UPDATE", error),
        });
    }
    Ok(())
}

/// Read and sum a chain's per-slot counters from its stats map (e.g. opened from its pin).
pub fn read_stats(stats: BorrowedFd<'_>, kind: ChainKind) -> Result<Vec<SlotStats>> {
    Ok(read_buckets(stats)?
        .iter()
        .map(|b| SlotStats::from_buckets(kind, b))
        .collect())
}

/// A chain's raw per-slot counters (STATS_BUCKETS each), summed over CPUs.
pub fn read_buckets(stats: BorrowedFd<'_>) -> Result<Vec<Vec<u64>>> {
    let info = sys::map_info(stats)?;
    if info.map_type_raw != libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY || info.key_size != 4 {
        return Err(KernelError::Invalid(format!(
            "map {} ({}) is not a chain's stats map",
            info.name, info.map_type
        )));
    }
    let value_size = info.value_size as usize;
    let nslots = value_size / chain::STATS_SLOT_BYTES;
    let ncpu = sys::num_possible_cpus()?;
    let stride = value_size.div_ceil(8) * 8;
    let mut buf = vec![0u8; stride * ncpu];
    let key = 0u32;
    // SAFETY: the buffer holds one value per possible CPU, as per-CPU lookups write.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            stats.as_raw_fd(),
            &key as *const u32 as *const _,
            buf.as_mut_ptr() as *mut _,
        )
    };
    crate::error::check(ret, "BPF_MAP_LOOKUP_ELEM (chain stats)")?;
    let mut sums = vec![0u64; nslots * STATS_BUCKETS];
    for cpu in 0..ncpu {
        let base = cpu * stride;
        for (k, s) in sums.iter_mut().enumerate() {
            let at = base + k * 8;
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[at..at + 8]);
            *s += u64::from_ne_bytes(w);
        }
    }
    Ok(sums
        .chunks_exact(STATS_BUCKETS)
        .map(<[u64]>::to_vec)
        .collect())
}
