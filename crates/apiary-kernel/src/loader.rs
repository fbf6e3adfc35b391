//! Loading objects with libbpf: open, choose programs, patch globals, reuse maps, load, and hand
//! back the kernel objects so the manager can pin and record them. Loading is all-or-nothing:
//! until the caller pins something, dropping a `LoadedObject` releases everything. `load_with`
//! is the one place libbpf opens and loads an object; `worker` runs it in a separate process
//! for the daemon.

use crate::error::{KernelError, Result};
use crate::logcap;
use crate::sys::{self, MapInfo};
use apiary_core::ProgramType;
use libbpf_rs::{AsRawLibbpf, MapCore, Object, ObjectBuilder};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A program the user asked for: `--programs TYPE:NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramSelect {
    pub ty: Option<ProgramType>,
    pub name: String,
}

/// Bytes to write at `offset` of the data section `section` before loading: what
/// `apiary_core::globals::resolve` produces.
pub use apiary_core::globals::ResolvedGlobal as GlobalPatch;

/// Everything a load needs. It crosses to the loader process whole (serde, with `object` sent
/// beside it as raw bytes), so a new field only needs to be serialisable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadRequest<'a> {
    #[serde(skip)]
    pub object: &'a [u8],
    /// Shown in messages (a path, URL or image reference).
    pub source: &'a str,
    pub programs: Vec<ProgramSelect>,
    pub globals: Vec<GlobalPatch>,
    /// Maps to take from another program instead of creating: map name -> pinned path.
    pub reuse_maps: Vec<(String, PathBuf)>,
    /// The object name libbpf prefixes internal maps with (`NAME.rodata`); by default the
    /// source's file name up to its first dot, as libbpf names an object opened from a file.
    pub object_name: Option<String>,
    /// The kernel BTF for CO-RE relocations, when a minimal one was made for this object before
    /// (the CO-RE cache); `None`: libbpf reads the kernel's.
    #[serde(default)]
    pub core_btf: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadedProgramInfo {
    pub name: String,
    pub section: String,
    pub ty: ProgramType,
    pub kernel_id: u32,
    pub tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadedMapInfo {
    pub name: String,
    pub info: MapInfo,
    /// Taken from another program (`--map-owner-id`) rather than created by this load.
    pub reused: bool,
}

/// What libbpf loaded a program with that the kernel does not report back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramLoadAttrs {
    /// BPF_PROG_TYPE_*.
    pub prog_type: u32,
    /// BPF_* attach type the program was loaded for (0 for `SEC("tc")`).
    pub expected_attach_type: u32,
    /// BPF_F_* load flags, e.g. BPF_F_XDP_HAS_FRAGS for `SEC("xdp.frags")`.
    pub flags: u32,
}

/// A loaded program's own descriptor and what libbpf knew about it at load time.
#[derive(Debug)]
pub(crate) struct ProgramParts {
    pub(crate) fd: OwnedFd,
    pub(crate) attrs: ProgramLoadAttrs,
    /// The relocated instructions handed to the kernel, as raw 8-byte instructions.
    pub(crate) insns: Vec<u8>,
}

/// A loaded map's own descriptor.
#[derive(Debug)]
pub(crate) struct MapParts {
    pub(crate) fd: OwnedFd,
    /// The descriptor number the loading process used for the map, which is what its
    /// programs' relocated instructions contain (another process's `fd` has another number).
    pub(crate) insn_fd: i32,
}

/// The kernel objects of one load, held by their own file descriptors: no libbpf object behind
/// them, so it is the same whether the load ran in this process or in the loader process.
/// Until the caller pins something, dropping it releases everything.
#[derive(Debug)]
pub struct LoadedObject {
    pub programs: Vec<LoadedProgramInfo>,
    pub maps: Vec<LoadedMapInfo>,
    /// One per entry of `programs`, in the same order.
    pub(crate) program_parts: Vec<ProgramParts>,
    /// One per entry of `maps`, in the same order.
    pub(crate) map_parts: Vec<MapParts>,
}

impl LoadedObject {
    fn program_index(&self, name: &str) -> Option<usize> {
        self.programs.iter().position(|p| p.name == name)
    }

    fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }

    pub fn program_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        let i = self.program_index(name)?;
        self.program_parts.get(i).map(|p| p.fd.as_fd())
    }

    pub fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        let i = self.map_index(name)?;
        self.map_parts.get(i).map(|m| m.fd.as_fd())
    }

    /// The descriptor number `name` has in the loaded programs' instructions.
    pub(crate) fn map_insn_fd(&self, name: &str) -> Option<i32> {
        let i = self.map_index(name)?;
        self.map_parts.get(i).map(|m| m.insn_fd)
    }

    pub fn pin_program(&self, name: &str, path: &Path) -> Result<()> {
        let fd = self
            .program_fd(name)
            .ok_or_else(|| KernelError::Invalid(format!("program {name} is not in this object")))?;
        sys::pin(fd, path)
    }

    pub fn pin_map(&self, name: &str, path: &Path) -> Result<()> {
        let fd = self
            .map_fd(name)
            .ok_or_else(|| KernelError::Invalid(format!("map {name} is not in this object")))?;
        sys::pin(fd, path)
    }

    /// The program type, expected attach type and flags `name` was loaded with.
    pub fn program_load_attrs(&self, name: &str) -> Option<ProgramLoadAttrs> {
        let i = self.program_index(name)?;
        self.program_parts.get(i).map(|p| p.attrs)
    }

    /// The relocated instructions libbpf handed to the kernel for `name` (what the kernel
    /// cannot give back later), as raw 8-byte instructions.
    pub fn program_insns(&self, name: &str) -> Option<Vec<u8>> {
        let i = self.program_index(name)?;
        self.program_parts.get(i).map(|p| p.insns.clone())
    }
}

/// Load the requested programs of an object into the kernel, in this process. The daemon goes
/// through a `Loader` instead, which can run this in the loader process.
pub fn load(req: &LoadRequest<'_>) -> Result<LoadedObject> {
    load_with(req, false).map(|(loaded, _obj)| loaded)
}

/// The one routine that calls libbpf to open and load an object, in this process or in the
/// loader process (`worker`).
pub(crate) fn load_with(req: &LoadRequest<'_>, all: bool) -> Result<(LoadedObject, Object)> {
    logcap::install();
    logcap::take();

    let mut builder = ObjectBuilder::default();
    // Loading from memory, libbpf would name the object after the buffer's address; name it as
    // libbpf names a file, so internal maps read `count_getppid.rodata` as users know them.
    let name = req
        .object_name
        .clone()
        .unwrap_or_else(|| apiary_core::elf::object_name(req.source));
    builder
        .name(name)
        .map_err(|e| KernelError::libbpf("set object name", e))?;
    if let Some(p) = &req.core_btf {
        builder
            .btf_custom_path(p)
            .map_err(|e| KernelError::libbpf("set the kernel BTF for CO-RE", e))?;
    }
    let globalized = apiary_core::elf::globalize_static_programs(req.object).map_err(|e| {
        KernelError::NotBpfObject {
            path: req.source.to_string(),
            reason: e.to_string(),
        }
    })?;
    let mut open = builder
        .open_memory(globalized.as_deref().unwrap_or(req.object))
        .map_err(|e| KernelError::NotBpfObject {
            path: req.source.to_string(),
            reason: open_reason(&e),
        })?;

    // Choose programs: all others are not loaded.
    let available: Vec<(String, String)> = open
        .progs()
        .map(|p| {
            (
                p.name().to_string_lossy().into_owned(),
                p.section().to_string_lossy().into_owned(),
            )
        })
        .collect();
    let listing = || {
        available
            .iter()
            .map(|(n, s)| format!("{n} (section {s})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wanted: Vec<(String, Option<ProgramType>)> = if all {
        if available.is_empty() {
            return Err(KernelError::NotBpfObject {
                path: req.source.to_string(),
                reason: "it contains no programs".into(),
            });
        }
        available.iter().map(|(n, _)| (n.clone(), None)).collect()
    } else if req.programs.is_empty() {
        match available.as_slice() {
            [(name, _)] => vec![(name.clone(), None)],
            [] => {
                return Err(KernelError::NotBpfObject {
                    path: req.source.to_string(),
                    reason: "it contains no programs".into(),
                })
            }
            _ => {
                return Err(KernelError::Invalid(format!(
                    "{} contains {} programs: {}; choose with --programs TYPE:NAME",
                    req.source,
                    available.len(),
                    listing()
                )))
            }
        }
    } else {
        let mut v: Vec<(String, Option<ProgramType>)> = Vec::new();
        for sel in &req.programs {
            if !available.iter().any(|(n, _)| *n == sel.name) {
                return Err(KernelError::UnknownProgram {
                    name: sel.name.clone(),
                    object: req.source.to_string(),
                    available: listing(),
                });
            }
            if !v.iter().any(|(n, _)| *n == sel.name) {
                v.push((sel.name.clone(), sel.ty));
            }
        }
        v
    };
    // Decide each chosen program's type. libbpf types a program from its section name; for
    // names it cannot type (`classifier/NAME`, `xdp/NAME`, accepted by iproute2, cilium/ebpf
    // and aya) the type the user named, or the one the section's prefix implies, is set on the
    // program before loading, as bpftool does.
    let mut types: Vec<(String, ProgramType)> = Vec::new();
    for mut p in open.progs_mut() {
        let name = p.name().to_string_lossy().into_owned();
        let Some((_, requested)) = wanted.iter().find(|(n, _)| *n == name) else {
            p.set_autoload(false);
            continue;
        };
        p.set_autoload(true);
        let section = p.section().to_string_lossy().into_owned();
        let raw = p.as_libbpf_object().as_ptr();
        // SAFETY: `raw` is a live bpf_program owned by `open`; the getter only reads it.
        let libbpf_typed =
            unsafe { libbpf_sys::bpf_program__type(raw) } != libbpf_sys::BPF_PROG_TYPE_UNSPEC;
        let ty = program_type(&name, &section, *requested, libbpf_typed)?;
        if !libbpf_typed {
            let (prog_type, attach_type) =
                ty.info().untyped.ok_or_else(|| KernelError::NotSupported {
                    feature: format!("section {section:?}"),
                    reason: format!(
                        "{ty} programs need their attach target in the section name (e.g. SEC(\"{}/NAME\")); rename the section of program {name:?}",
                        ty.name().replace('-', "_")
                    ),
                })?;
            // SAFETY: as above; libbpf only records the types until load.
            unsafe {
                libbpf_sys::bpf_program__set_type(raw, prog_type);
                libbpf_sys::bpf_program__set_expected_attach_type(raw, attach_type);
            }
        }
        types.push((name, ty));
    }
    let wanted: Vec<String> = types.iter().map(|(n, _)| n.clone()).collect();

    // apiary pins maps itself, inside its own bpffs directory, maps declared with
    // LIBBPF_PIN_BY_NAME included (the manager shares those by name through `reuse_maps`):
    // libbpf would pin them at the bpffs root, shared with every other loader on the host.
    for m in open.maps_mut() {
        let raw = m.as_libbpf_object().as_ptr();
        // SAFETY: `raw` is a live bpf_map owned by `open`; a NULL path clears the pin path.
        unsafe {
            if !libbpf_sys::bpf_map__pin_path(raw).is_null() {
                libbpf_sys::bpf_map__set_pin_path(raw, std::ptr::null());
            }
        }
    }

    // A ring buffer declared with `__type(value, struct event)` names its event type in BTF, but
    // the kernel refuses a ring buffer with a key or value size: clear them (as BumbleBee does).
    for mut m in open.maps_mut() {
        if matches!(
            m.map_type(),
            libbpf_rs::MapType::RingBuf | libbpf_rs::MapType::UserRingBuf
        ) {
            if m.key_size() != 0 {
                m.set_key_size(0)
                    .map_err(|e| KernelError::libbpf("clear ring buffer key size", e))?;
            }
            if m.value_size() != 0 {
                m.set_value_size(0)
                    .map_err(|e| KernelError::libbpf("clear ring buffer value size", e))?;
            }
        }
    }

    // Globals: write into the data maps' initial values.
    for g in &req.globals {
        let mut done = false;
        for mut m in open.maps_mut() {
            let mname = m.name().to_string_lossy().into_owned();
            if !is_section_map(&mname, &g.section) {
                continue;
            }
            let Some(buf) = m.initial_value_mut() else {
                continue;
            };
            let end = g.offset + g.bytes.len();
            if end > buf.len() {
                return Err(KernelError::BadGlobal {
                    name: g.name.clone(),
                    reason: format!(
                        "offset {}+{} is past the end of {} ({} bytes)",
                        g.offset,
                        g.bytes.len(),
                        g.section,
                        buf.len()
                    ),
                });
            }
            buf[g.offset..end].copy_from_slice(&g.bytes);
            done = true;
            break;
        }
        if !done {
            return Err(KernelError::BadGlobal {
                name: g.name.clone(),
                reason: format!("the object has no {} data map to hold it", g.section),
            });
        }
    }

    // Shared maps.
    for (name, path) in &req.reuse_maps {
        let Some(mut m) = open.maps_mut().find(|m| m.name() == name.as_str()) else {
            continue;
        };
        m.reuse_pinned_map(path)
            .map_err(|e| KernelError::MapReuse {
                name: name.clone(),
                reason: format!("cannot reuse {}: {e}", path.display()),
            })?;
    }

    let reused: Vec<&String> = req.reuse_maps.iter().map(|(n, _)| n).collect();
    let obj = match open.load() {
        Ok(o) => o,
        Err(e) => {
            let messages = logcap::take();
            return Err(load_error(e, &messages, &wanted, &available, req.object));
        }
    };
    logcap::take();

    let mut programs = Vec::new();
    let mut program_parts = Vec::new();
    for p in obj.progs() {
        let name = p.name().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            continue;
        }
        let section = p.section().to_string_lossy().into_owned();
        let Some(ty) = types.iter().find(|(n, _)| *n == name).map(|(_, t)| *t) else {
            continue;
        };
        let info = sys::prog_info(p.as_fd())?;
        programs.push(LoadedProgramInfo {
            name,
            section,
            ty,
            kernel_id: info.id,
            tag: info.tag,
        });
        program_parts.push(ProgramParts {
            fd: dup(p.as_fd(), "program")?,
            attrs: load_attrs(&p),
            insns: insn_bytes(&p),
        });
    }
    let mut maps = Vec::new();
    let mut map_parts = Vec::new();
    for m in obj.maps() {
        if !m.autocreate() {
            continue;
        }
        let name = m.name().to_string_lossy().into_owned();
        let info = sys::map_info(m.as_fd())?;
        maps.push(LoadedMapInfo {
            reused: reused.contains(&&name),
            name,
            info,
        });
        map_parts.push(MapParts {
            fd: dup(m.as_fd(), "map")?,
            insn_fd: m.as_fd().as_raw_fd(),
        });
    }
    let loaded = LoadedObject {
        programs,
        maps,
        program_parts,
        map_parts,
    };
    Ok((loaded, obj))
}

/// Our own descriptor for a libbpf-owned object, so it outlives the libbpf `Object`.
fn dup(fd: BorrowedFd<'_>, what: &str) -> Result<OwnedFd> {
    fd.try_clone_to_owned()
        .map_err(|e| KernelError::syscall(format!("dup {what} fd"), e))
}

fn load_attrs(p: &libbpf_rs::Program<'_>) -> ProgramLoadAttrs {
    let raw = p.as_libbpf_object().as_ptr();
    // SAFETY: `raw` is a live bpf_program owned by the object `p` borrows; these getters only
    // read it.
    unsafe {
        ProgramLoadAttrs {
            prog_type: libbpf_sys::bpf_program__type(raw),
            expected_attach_type: libbpf_sys::bpf_program__expected_attach_type(raw),
            flags: libbpf_sys::bpf_program__flags(raw),
        }
    }
}

fn insn_bytes(p: &libbpf_rs::Program<'_>) -> Vec<u8> {
    let insns = p.insns();
    let mut out = Vec::with_capacity(insns.len() * 8);
    for i in insns {
        // SAFETY: bpf_insn is a plain 8-byte repr(C) struct.
        let raw: [u8; 8] = unsafe { std::mem::transmute_copy(i) };
        out.extend_from_slice(&raw);
    }
    out
}

/// The type apiary loads `name` as: what its section says, unless libbpf cannot type the section
/// by itself, in which case the user's `--programs TYPE:` wins.
fn program_type(
    name: &str,
    section: &str,
    requested: Option<ProgramType>,
    libbpf_typed: bool,
) -> Result<ProgramType> {
    let from_section = ProgramType::from_section(section);
    match (libbpf_typed, from_section, requested) {
        (false, _, Some(r)) => Ok(r),
        (_, Some(actual), Some(r)) if !actual.compatible_with(r) => {
            Err(KernelError::TypeMismatch {
                name: name.to_string(),
                section: section.to_string(),
                actual: actual.to_string(),
                requested: r.to_string(),
            })
        }
        (_, Some(actual), _) => Ok(actual),
        (true, None, _) => Err(KernelError::Unsupported {
            feature: format!("section {section:?}"),
            reason: format!(
                "the kernel and libbpf know this program type, but apiary cannot manage program {name:?}'s type yet"
            ),
        }),
        (false, None, None) => Err(KernelError::Invalid(format!(
            "neither libbpf nor apiary can tell the program type of {name:?} from its section {section:?}; name it: --programs TYPE:{name}"
        ))),
    }
}

/// libbpf names a data section's map `<object prefix>.<section>` (truncated to 15 bytes), so a
/// global in `.rodata` lives in the map whose name ends with `.rodata`.
fn is_section_map(map_name: &str, section: &str) -> bool {
    if map_name == section {
        return true;
    }
    // Truncation can cut the section suffix short: compare the longest suffix that fits.
    match map_name.find('.') {
        Some(dot) => {
            let suffix = &map_name[dot..];
            suffix == section || (map_name.len() == 15 && section.starts_with(suffix))
        }
        None => false,
    }
}

fn open_reason(e: &libbpf_rs::Error) -> String {
    let msgs = logcap::take();
    if let Some(l) = logcap::last_line_with(&msgs, "elf:") {
        return l;
    }
    if let Some(l) = msgs.lines().rev().find(|l| !l.trim().is_empty()) {
        return format!("{} ({e})", l.trim_start_matches("libbpf: ").trim());
    }
    e.to_string()
}

pub(crate) fn errno_of(e: &libbpf_rs::Error) -> Option<i32> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        src = s.source();
    }
    let text = e.to_string();
    let i = text.find("os error ")?;
    text[i + 9..]
        .trim_end_matches(')')
        .split(')')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn load_error(
    e: libbpf_rs::Error,
    messages: &str,
    wanted: &[String],
    available: &[(String, String)],
    object: &[u8],
) -> KernelError {
    // Which program failed: libbpf names it in "prog 'NAME': ..." lines.
    let program = messages
        .lines()
        .rev()
        .find_map(|l| l.split("prog '").nth(1).and_then(|r| r.split('\'').next()))
        .map(str::to_string)
        .or_else(|| wanted.first().cloned())
        .unwrap_or_default();
    let section = available
        .iter()
        .find(|(n, _)| *n == program)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let errno = errno_of(&e);
    if let Some(log) = logcap::verifier_log_body(messages) {
        let mut e = KernelError::verifier(program, log, 40);
        // A stack-size rejection names no instruction; the object shows the call behind it.
        if let KernelError::Verifier {
            program, diagnosis, ..
        } = &mut e
        {
            diagnosis.place_stack_error(object, program);
        }
        return e;
    }
    let ty = ProgramType::from_section(&section);
    if errno == Some(libc::EPERM) {
        if let Some(ty @ (ProgramType::Fentry | ProgramType::Fexit | ProgramType::Lsm)) = ty {
            return KernelError::NotSupported {
                feature: format!("{ty} programs (BPF_PROG_TYPE_{})", if ty == ProgramType::Lsm { "LSM" } else { "TRACING" }),
                reason: format!(
                    "the kernel refused to load program {program:?} with EPERM before verification \
                     (empty verifier log); this kernel does not allow BPF trampolines (fentry/fexit/lsm/freplace), \
                     as hardened and some virtualised kernels do. Use a tracepoint, tp_btf or raw tracepoint instead"
                ),
            };
        }
    }
    // fentry/fexit/lsm/tp_btf name a kernel function or tracepoint that libbpf looks up in the
    // kernel's BTF before loading; a name that is not there comes back as a bare ESRCH.
    if let Some(target) = messages
        .split("failed to find kernel BTF type ID of '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
    {
        return KernelError::TargetNotFound {
            target: format!("{target:?} (section {section:?} of program {program:?})"),
            reason: "it is not in the kernel's BTF (/sys/kernel/btf/vmlinux): no such function or tracepoint on this kernel, or it was inlined; check with `bpftool btf dump file /sys/kernel/btf/vmlinux | grep`".into(),
        };
    }
    let hint = logcap::last_line_with(messages, &format!("prog '{program}'"))
        .or_else(|| logcap::last_line_with(messages, "libbpf"))
        .or_else(|| {
            messages
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("libbpf: ").to_string())
        });
    let source = match errno {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::other(e.to_string()),
    };
    KernelError::Load {
        program,
        error: source,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The type table's kernel numbers (`untyped`) are the ones libbpf itself gives the type's
    /// first section name it knows, so a type file cannot carry a wrong number. (Only the
    /// first: libbpf types variants such as `raw_tp.w` differently, and loads them itself.)
    #[test]
    fn type_table_uses_the_kernels_numbers() {
        for info in apiary_core::program::TYPES {
            let Some((prog, attach)) = info.untyped else {
                continue;
            };
            // The type's own section names, and the hook-naming forms libbpf requires for
            // some (`tcx/ingress`).
            let candidates = info
                .sections
                .iter()
                .map(|s| s.to_string())
                .chain(info.section_prefixes.iter().map(|p| p.to_string()))
                .chain(info.section_prefixes.iter().map(|p| format!("{p}/ingress")));
            let mut checked = false;
            for section in candidates {
                let name = std::ffi::CString::new(section.clone()).unwrap();
                let (mut pt, mut at) = (0, 0);
                // SAFETY: a NUL-terminated name and two out-parameters.
                let r = unsafe {
                    libbpf_sys::libbpf_prog_type_by_name(name.as_ptr(), &mut pt, &mut at)
                };
                if r != 0 {
                    continue;
                }
                assert_eq!(pt, prog, "{}: program type for {section:?}", info.name);
                if attach != 0 {
                    assert_eq!(at, attach, "{}: attach type for {section:?}", info.name);
                }
                checked = true;
                break;
            }
            assert!(checked, "{}: libbpf knows none of its sections", info.name);
        }
    }

    #[test]
    fn section_maps() {
        assert!(is_section_map("count.rodata", ".rodata"));
        assert!(is_section_map("count.data", ".data"));
        assert!(!is_section_map("count.rodata", ".data"));
        assert!(is_section_map("count_getppi.bss", ".bss"));
        assert!(is_section_map("longobjname.rod", ".rodata"));
        assert!(!is_section_map("events", ".bss"));
    }
}
