//! kprobes and uprobes through the kernel's dynamic perf PMUs (`kprobe`, `uprobe` under
//! /sys/bus/event_source/devices). A kernel without the PMU cannot attach them, and apiary says
//! so instead of falling back to the legacy tracefs interface, which leaves state behind on
//! failure.

use super::perf::{base_attr, perf_link};
use crate::error::{KernelError, Result};
use crate::sys;
use apiary_core::types::kprobe::KprobeAttach;
use apiary_core::types::uprobe::UprobeAttach;
use object::{Object, ObjectSegment, ObjectSymbol};
use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub(super) struct Pmu {
    pub(super) type_: u32,
    retprobe_bit: u32,
}

pub(super) fn pmu(kind: &str) -> Result<Pmu> {
    let dir = Path::new("/sys/bus/event_source/devices").join(kind);
    let type_ = std::fs::read_to_string(dir.join("type"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| KernelError::NotSupported {
            feature: format!("{kind}s"),
            reason: format!(
                "the kernel has no {kind} PMU ({} is missing); it was built without CONFIG_{}_EVENTS or they are disabled",
                dir.display(),
                kind.to_uppercase()
            ),
        })?;
    // The format file says which config bit marks a return probe: "config:0".
    let retprobe_bit = std::fs::read_to_string(dir.join("format/retprobe"))
        .ok()
        .and_then(|s| {
            s.trim()
                .strip_prefix("config:")
                .and_then(|b| b.parse().ok())
        })
        .unwrap_or(0);
    Ok(Pmu {
        type_,
        retprobe_bit,
    })
}

pub(super) fn kprobe(prog: BorrowedFd<'_>, spec: &KprobeAttach) -> Result<OwnedFd> {
    let (fn_name, offset, retprobe) = (spec.fn_name.as_str(), spec.offset, spec.retprobe);
    let pmu = pmu("kprobe")?;
    let name = sys::cstr(fn_name)?;
    let mut attr = base_attr(pmu.type_, if retprobe { 1 << pmu.retprobe_bit } else { 0 });
    attr.__bindgen_anon_3.kprobe_func = name.as_ptr() as u64;
    attr.__bindgen_anon_4.probe_offset = offset;
    let what = format!(
        "{} {fn_name}",
        if retprobe { "kretprobe" } else { "kprobe" }
    );
    let ev = sys::perf_event_open(&attr, -1, 0, &format!("perf_event_open({what})")).map_err(
        |e| match e.errno() {
            Some(libc::ENOENT) | Some(libc::EINVAL) => KernelError::TargetNotFound {
                target: what.clone(),
                reason: "no such kernel function, or it cannot be probed".into(),
            },
            _ => e,
        },
    )?;
    perf_link(prog, &ev, &what)
}

pub(super) fn uprobe(prog: BorrowedFd<'_>, spec: &UprobeAttach) -> Result<OwnedFd> {
    let (target, fn_name, offset) = (spec.target.as_str(), spec.fn_name.as_deref(), spec.offset);
    let (retprobe, pid) = (spec.retprobe, spec.pid);
    let pmu = pmu("uprobe")?;
    let path = resolve_uprobe_target(target)?;
    let file_offset = match fn_name {
        Some(f) => symbol_file_offset(&path, f)? + offset,
        None => offset,
    };
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        KernelError::Invalid(format!("path {} contains a NUL byte", path.display()))
    })?;
    let mut attr = base_attr(pmu.type_, if retprobe { 1 << pmu.retprobe_bit } else { 0 });
    attr.__bindgen_anon_3.uprobe_path = cpath.as_ptr() as u64;
    attr.__bindgen_anon_4.probe_offset = file_offset;
    // perf needs a CPU when it is not given a task: all tasks on "CPU 0" means every CPU for
    // uprobes, which fire in the context of the probed task.
    let (p, cpu) = match pid {
        Some(p) => (p, -1),
        None => (-1, 0),
    };
    let what = format!(
        "{} {}:{}",
        if retprobe { "uretprobe" } else { "uprobe" },
        path.display(),
        fn_name.unwrap_or("")
    );
    let ev =
        sys::perf_event_open(&attr, p, cpu, &format!("perf_event_open({what})")).map_err(|e| {
            match e.errno() {
                Some(libc::ESRCH) => KernelError::TargetNotFound {
                    target: format!("process {p}"),
                    reason: "no such process".into(),
                },
                _ => e,
            }
        })?;
    perf_link(prog, &ev, &what)
}

/// A path is used as is; a bare name (`libc`, `libc.so.6`) is looked up in the dynamic
/// loader's usual directories, like libbpf does for `SEC("uprobe/libc.so.6:malloc")`.
pub fn resolve_uprobe_target(target: &str) -> Result<PathBuf> {
    if target.contains('/') {
        let p = PathBuf::from(target);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(KernelError::TargetNotFound {
                target: target.to_string(),
                reason: "no such file".into(),
            })
        };
    }
    let dirs = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
        "/usr/local/lib",
    ];
    let base = if target.starts_with("lib") {
        target.to_string()
    } else {
        format!("lib{target}")
    };
    for d in dirs {
        let exact = Path::new(d).join(target);
        if exact.is_file() && is_elf(&exact) {
            return Ok(exact);
        }
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut found: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{base}.so")))
                        && is_elf(p)
                })
                .collect();
            found.sort();
            if let Some(p) = found.into_iter().next() {
                return Ok(p);
            }
        }
    }
    if let Ok(path) = which(target) {
        return Ok(path);
    }
    Err(KernelError::TargetNotFound {
        target: target.to_string(),
        reason: "not a path, and no library or executable of that name was found".into(),
    })
}

/// `libc.so` is often a linker script, not the library.
fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn which(name: &str) -> std::result::Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// The file offset of a function symbol: uprobes are placed by offset into the file, while
/// symbols hold virtual addresses, so map the address through its loadable segment.
fn symbol_file_offset(path: &Path, func: &str) -> Result<u64> {
    let data = std::fs::read(path).map_err(|e| KernelError::ReadObject {
        path: path.to_path_buf(),
        error: e,
    })?;
    let file = object::File::parse(&*data).map_err(|e| KernelError::TargetNotFound {
        target: path.display().to_string(),
        reason: format!("not an ELF file ({e})"),
    })?;
    let addr = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text && s.is_definition())
        .find(|s| s.name() == Ok(func) || s.name().is_ok_and(|n| n.split('@').next() == Some(func)))
        .map(|s| s.address())
        .ok_or_else(|| KernelError::TargetNotFound {
            target: format!("function {func} in {}", path.display()),
            reason: "no such function symbol".into(),
        })?;
    for seg in file.segments() {
        let (start, size) = (seg.address(), seg.size());
        if addr >= start && addr < start + size {
            let (foff, _) = seg.file_range();
            return Ok(addr - start + foff);
        }
    }
    Ok(addr)
}
