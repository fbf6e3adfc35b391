//! USDT probes, attached the way libbpf's usdt.c does it but from a program fd alone (apiary
//! attaches pinned programs, often in another process than the one that loaded them, where
//! libbpf's `bpf_program__attach_usdt` has no object to work with).
//!
//! A USDT program built with `<bpf/usdt.bpf.h>` finds how to read its arguments through its BPF
//! cookie: the cookie is a *spec id*, an index into the object's `__bpf_usdt_specs` array map,
//! whose value (apiary_core::usdt::Spec) says where each argument is at that probe site. So an
//! attach (1) reads the binary's probe sites (apiary_core::usdt), (2) picks spec ids no live
//! attachment of a program sharing the map uses, (3) writes the specs there, (4) puts a uprobe
//! on every site with cookie = spec id and the semaphore as its `ref_ctr_offset` (the kernel
//! then counts attached probes in the semaphore, so the application sees it enabled).
//!
//! Spec ids are not recorded anywhere: the ids in use are the cookies of the live uprobe links
//! of programs that use the same spec map, read back from the kernel at each attach. Detaching
//! (dropping the links) therefore frees them with nothing to clean up or leak, whichever process
//! detaches, and a crash cannot leave a stale reservation; a slot's old bytes stay in the map
//! until a later attach overwrites them, unread since no link carries its id. Two attaches to
//! programs sharing one map must not run at the same time (the manager's lock serialises them;
//! `apiary run` loads its own maps). A link whose last pin was just removed leaves the kernel's
//! id list a moment before its uprobes are gone, so for that moment a new attach may reuse its
//! ids while it still fires; only a link that is being detached can read a reused spec.
//!
//! apiary relies on BPF cookies (Linux 5.15) and leaves usdt.bpf.h's IP-to-spec-id map, the
//! fallback for kernels without them, empty.

use super::perf::base_attr;
use super::probe::{pmu, resolve_uprobe_target};
use crate::error::{KernelError, Result};
use crate::sys::{self, IdKind};
use apiary_core::types::usdt::UsdtAttach;
use apiary_core::usdt::{self, Site, SpecLayout, UsdtError};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// usdt.bpf.h's map names, as the kernel keeps them (15 bytes).
const SPECS_MAP: &str = "__bpf_usdt_spec";
const IP_MAP: &str = "__bpf_usdt_ip_t";

pub(super) fn attach(prog: BorrowedFd<'_>, h: &UsdtAttach) -> Result<Vec<OwnedFd>> {
    let (provider, name, pid) = (h.provider.as_str(), h.name.as_str(), h.pid);
    let path = resolve_uprobe_target(&h.target)?;
    // The kernel resolves the path itself, from this process's working directory.
    let path = path.canonicalize().unwrap_or(path);
    let what = format!("usdt {}:{provider}:{name}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| KernelError::TargetNotFound {
        target: path.display().to_string(),
        reason: format!("cannot read it: {e}"),
    })?;
    let sites = usdt::read_binary(&bytes)
        .and_then(|b| b.sites(provider, name))
        .map_err(|e| usdt_error(&path, e))?;
    let map = SpecMap::of_program(prog)?;

    // Sites whose arguments are read alike share a spec (and id), as libbpf does.
    let mut distinct: Vec<&str> = Vec::new();
    for s in &sites {
        if !distinct.contains(&s.args.as_str()) {
            distinct.push(&s.args);
        }
    }
    let ids = map.free_ids(distinct.len())?;
    for (args, id) in distinct.iter().zip(&ids) {
        let site = sites
            .iter()
            .find(|s| s.args == *args)
            .ok_or_else(|| KernelError::Invalid(format!("{what}: lost the site of {args:?}")))?;
        let value = site
            .spec
            .encode(map.layout)
            .map_err(|reason| KernelError::Invalid(format!("{what}: {reason}")))?;
        map.write(*id, &value)?;
    }
    let cookies: Vec<u64> = sites
        .iter()
        .map(|s| {
            let i = distinct.iter().position(|a| *a == s.args).unwrap_or(0);
            u64::from(ids[i])
        })
        .collect();

    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        KernelError::Invalid(format!("path {} contains a NUL byte", path.display()))
    })?;
    // libbpf loads usdt programs for uprobe_multi links where the kernel has them (6.6); such a
    // program takes no other link, and one loaded without it takes no uprobe_multi link: the
    // kernel says EINVAL either way, so the multi link is tried first.
    match multi_link(prog, &cpath, &sites, &cookies, pid, &what) {
        Err(e) if e.errno() == Some(libc::EINVAL) => {
            perf_links(prog, &cpath, &sites, &cookies, pid, &what)
        }
        other => other.map(|l| vec![l]),
    }
}

fn usdt_error(path: &Path, e: UsdtError) -> KernelError {
    match e {
        UsdtError::NotFound {
            provider,
            name,
            available,
        } => KernelError::TargetNotFound {
            target: format!("USDT probe {provider}:{name} in {}", path.display()),
            reason: format!("the binary's probes are: {available}"),
        },
        UsdtError::NoProbes | UsdtError::NotElf => KernelError::TargetNotFound {
            target: format!("USDT probes in {}", path.display()),
            reason: e.to_string(),
        },
        other => KernelError::Invalid(format!("{}: {other}", path.display())),
    }
}

/// The program's `__bpf_usdt_specs` map.
struct SpecMap {
    fd: OwnedFd,
    id: u32,
    max_entries: u32,
    layout: SpecLayout,
}

impl SpecMap {
    fn of_program(prog: BorrowedFd<'_>) -> Result<SpecMap> {
        let info = sys::prog_info(prog)?;
        let mut specs = None;
        let mut has_ip_map = false;
        for id in &info.map_ids {
            let fd = sys::map_fd_by_id(*id)?;
            let m = sys::map_info(fd.as_fd())?;
            if m.name == SPECS_MAP {
                specs = Some((fd, m));
            } else if m.name == IP_MAP {
                has_ip_map = true;
            }
        }
        let Some((fd, m)) = specs else {
            return Err(KernelError::Invalid(format!(
                "program {:?} (id {}) has no {SPECS_MAP}s map{}: a USDT program reads its arguments through <bpf/usdt.bpf.h> (BPF_USDT, bpf_usdt_arg)",
                info.name,
                info.id,
                if has_ip_map { "" } else { " nor __bpf_usdt_ip_to_spec_id" }
            )));
        };
        let layout = SpecLayout::from_value_size(m.value_size)
            .filter(|_| m.key_size == 4)
            .ok_or_else(|| {
                KernelError::Invalid(format!(
                    "program {:?}: its {SPECS_MAP}s map has {}-byte keys and {}-byte values, a struct __bpf_usdt_spec apiary does not know (it knows {} and {} bytes)",
                    info.name,
                    m.key_size,
                    m.value_size,
                    SpecLayout::V17.size(),
                    SpecLayout::Legacy.size()
                ))
            })?;
        Ok(SpecMap {
            fd,
            id: m.id,
            max_entries: m.max_entries,
            layout,
        })
    }

    /// `n` spec ids no live attachment uses, lowest first.
    fn free_ids(&self, n: usize) -> Result<Vec<u32>> {
        let used = ids_in_use(self.id);
        let free: Vec<u32> = (0..self.max_entries)
            .filter(|i| !used.contains(&u64::from(*i)))
            .take(n)
            .collect();
        if free.len() < n {
            return Err(KernelError::HookBusy {
                hook: format!("USDT spec map {SPECS_MAP}s (id {})", self.id),
                reason: format!(
                    "{} of its {} slots are used by live attachments and this probe needs {n} more; detach some, or build the object with a larger BPF_USDT_MAX_SPEC_CNT",
                    used.len(),
                    self.max_entries
                ),
            });
        }
        Ok(free)
    }

    fn write(&self, id: u32, value: &[u8]) -> Result<()> {
        let key = id.to_ne_bytes();
        // SAFETY: key and value are as long as the map's key and value sizes (checked when the
        // layout was chosen), and outlive the call.
        let ret = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                libbpf_sys::BPF_ANY as u64,
            )
        };
        crate::error::check(ret, &format!("write USDT spec #{id}")).map(|_| ())
    }
}

/// The cookies (spec ids) of every live uprobe link whose program uses spec map `map_id`.
/// Links or programs that vanish while being looked at are skipped: theirs ids are free.
fn ids_in_use(map_id: u32) -> HashSet<u64> {
    let mut uses_map: HashMap<u32, bool> = HashMap::new();
    let mut used = HashSet::new();
    for link_id in sys::ids(IdKind::Link) {
        let Ok(fd) = sys::link_fd_by_id(link_id) else {
            continue;
        };
        let Ok(info) = link_info(fd.as_fd()) else {
            continue;
        };
        if info.type_ != libbpf_sys::BPF_LINK_TYPE_UPROBE_MULTI
            && info.type_ != libbpf_sys::BPF_LINK_TYPE_PERF_EVENT
        {
            continue;
        }
        let uses = *uses_map.entry(info.prog_id).or_insert_with(|| {
            sys::prog_fd_by_id(info.prog_id)
                .and_then(|p| sys::prog_info(p.as_fd()))
                .is_ok_and(|p| p.map_ids.contains(&map_id))
        });
        if uses {
            used.extend(link_cookies(fd.as_fd(), &info));
        }
    }
    used
}

/// The spec ids (cookies) a USDT link carries, one per probe site; empty for other links.
pub fn spec_ids(link: BorrowedFd<'_>) -> Result<Vec<u64>> {
    let info = link_info(link)?;
    Ok(match info.type_ {
        libbpf_sys::BPF_LINK_TYPE_UPROBE_MULTI | libbpf_sys::BPF_LINK_TYPE_PERF_EVENT => {
            link_cookies(link, &info)
        }
        _ => Vec::new(),
    })
}

fn link_info(fd: BorrowedFd<'_>) -> Result<libbpf_sys::bpf_link_info> {
    let mut info = libbpf_sys::bpf_link_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: a zeroed, sized info struct whose pointer fields are all NULL.
    let ret = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    crate::error::check(ret, "BPF_OBJ_GET_INFO_BY_FD (link)")?;
    Ok(info)
}

fn link_cookies(fd: BorrowedFd<'_>, info: &libbpf_sys::bpf_link_info) -> Vec<u64> {
    // SAFETY (union reads): the kernel filled the member its link type names.
    if info.type_ == libbpf_sys::BPF_LINK_TYPE_PERF_EVENT {
        let pe = unsafe { info.__bindgen_anon_1.perf_event };
        return if pe.type_ == libbpf_sys::BPF_PERF_EVENT_UPROBE {
            vec![unsafe { pe.__bindgen_anon_1.uprobe.cookie }]
        } else {
            Vec::new()
        };
    }
    let count = unsafe { info.__bindgen_anon_1.uprobe_multi.count };
    if count == 0 {
        return Vec::new();
    }
    let mut cookies = vec![0u64; count as usize];
    let mut again = libbpf_sys::bpf_link_info::default();
    again.__bindgen_anon_1.uprobe_multi.cookies = cookies.as_mut_ptr() as u64;
    again.__bindgen_anon_1.uprobe_multi.count = count;
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: `cookies` has room for `count` entries, the count the kernel was told.
    let ret = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut again, &mut len) };
    if ret < 0 {
        return Vec::new();
    }
    cookies
}

/// One uprobe_multi link over every site (Linux 6.6).
fn multi_link(
    prog: BorrowedFd<'_>,
    path: &CString,
    sites: &[Site],
    cookies: &[u64],
    pid: Option<i32>,
    what: &str,
) -> Result<OwnedFd> {
    let offsets: Vec<std::os::raw::c_ulong> = sites.iter().map(|s| s.file_offset as _).collect();
    let ref_ctrs: Vec<std::os::raw::c_ulong> =
        sites.iter().map(|s| s.semaphore_offset as _).collect();
    let mut opts = libbpf_sys::bpf_link_create_opts::default();
    opts.__bindgen_anon_1.uprobe_multi =
        libbpf_sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_3 {
            flags: 0,
            cnt: sites.len() as u32,
            path: path.as_ptr(),
            offsets: offsets.as_ptr(),
            ref_ctr_offsets: ref_ctrs.as_ptr(),
            cookies: cookies.as_ptr(),
            pid: pid.unwrap_or(0) as u32,
            ..Default::default()
        };
    sys::link_create(
        prog,
        0,
        libbpf_sys::BPF_TRACE_UPROBE_MULTI,
        &opts,
        &format!("attach {what}"),
    )
    .map_err(|e| no_such_process(e, pid))
}

/// One perf-event uprobe link per site, for programs not loaded for uprobe_multi.
fn perf_links(
    prog: BorrowedFd<'_>,
    path: &CString,
    sites: &[Site],
    cookies: &[u64],
    pid: Option<i32>,
    what: &str,
) -> Result<Vec<OwnedFd>> {
    let pmu = pmu("uprobe")?;
    let ref_ctr_shift = ref_ctr_shift();
    let (p, cpu) = match pid {
        Some(p) => (p, -1),
        // All tasks on "CPU 0" means every CPU for uprobes (see probe.rs).
        None => (-1, 0),
    };
    let mut links = Vec::new();
    for (site, cookie) in sites.iter().zip(cookies) {
        let config = match (site.semaphore_offset, ref_ctr_shift) {
            (0, _) => 0,
            (off, Some(shift)) => off << shift,
            (_, None) => {
                return Err(KernelError::NotSupported {
                    feature: "USDT semaphores".into(),
                    reason: "the uprobe PMU has no ref_ctr_offset (Linux 4.20)".into(),
                })
            }
        };
        let mut attr = base_attr(pmu.type_, config);
        attr.__bindgen_anon_3.uprobe_path = path.as_ptr() as u64;
        attr.__bindgen_anon_4.probe_offset = site.file_offset;
        let ev = sys::perf_event_open(&attr, p, cpu, &format!("perf_event_open({what})"))
            .map_err(|e| no_such_process(e, pid))?;
        let mut opts = libbpf_sys::bpf_link_create_opts::default();
        opts.__bindgen_anon_1.perf_event.bpf_cookie = *cookie;
        links.push(sys::link_create(
            prog,
            ev.as_raw_fd(),
            libbpf_sys::BPF_PERF_EVENT,
            &opts,
            &format!("attach {what} at {:#x}", site.file_offset),
        )?);
    }
    Ok(links)
}

/// Where the uprobe PMU takes the semaphore's offset in `config` ("config:32-63").
fn ref_ctr_shift() -> Option<u32> {
    std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/format/ref_ctr_offset")
        .ok()?
        .trim()
        .strip_prefix("config:")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn no_such_process(e: KernelError, pid: Option<i32>) -> KernelError {
    match (e.errno(), pid) {
        (Some(libc::ESRCH), Some(p)) => KernelError::TargetNotFound {
            target: format!("process {p}"),
            reason: "no such process".into(),
        },
        _ => e,
    }
}
