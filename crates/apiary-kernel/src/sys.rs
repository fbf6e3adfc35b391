//! Thin, safe wrappers over the libbpf-sys calls apiary needs on raw file descriptors: pinning,
//! object lookup by id, info queries and link creation. Everything that operates on an object
//! that another process loaded goes through here, because libbpf's own attach helpers need the
//! `bpf_program` of the process that opened the object.

use crate::error::{check, KernelError, Result};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| KernelError::Invalid(format!("path {} contains a NUL byte", path.display())))
}

pub(crate) fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| KernelError::Invalid(format!("{s:?} contains a NUL byte")))
}

fn owned(ret: i32, call: &str) -> Result<OwnedFd> {
    let fd = check(ret, call)?;
    // SAFETY: libbpf returned a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pin `fd` at `path`, creating parent directories on bpffs.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| mkdir_error(parent, e))?;
    }
    let c = cpath(path)?;
    // SAFETY: valid fd and NUL-terminated path.
    let ret = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if ret == -libc::EEXIST {
        return Err(KernelError::PinExists {
            path: path.to_path_buf(),
        });
    }
    check(ret, &format!("pin {}", path.display())).map(|_| ())
}

/// bpffs refuses names with a dot (EPERM), which a user's `--bpffs /sys/fs/bpf/my.app` meets
/// before anything else does.
pub(crate) fn mkdir_error(dir: &Path, e: std::io::Error) -> KernelError {
    let dotted = dir
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| c.contains('.') && *c != "." && *c != "..");
    match (e.raw_os_error(), dotted) {
        (Some(libc::EPERM), Some(name)) => KernelError::Invalid(format!(
            "cannot create {}: bpffs does not allow a '.' in names ({name:?}); choose a --bpffs directory without dots",
            dir.display()
        )),
        _ => KernelError::syscall(format!("mkdir {}", dir.display()), e),
    }
}

/// Open a pinned object.
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: NUL-terminated path.
    let ret = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    owned(ret, &format!("open pinned object {}", path.display()))
}

/// Remove a pin; a missing pin is not an error (removal is idempotent so rollback can retry).
pub fn unpin(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::syscall(format!("unpin {}", path.display()), e)),
    }
}

pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper.
    let ret = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    owned(ret, &format!("open program id {id}"))
        .map_err(|e| not_found(e, || format!("program id {id}")))
}

pub fn map_fd_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper.
    let ret = unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) };
    owned(ret, &format!("open map id {id}")).map_err(|e| not_found(e, || format!("map id {id}")))
}

pub fn link_fd_by_id(id: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper.
    let ret = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
    owned(ret, &format!("open link id {id}")).map_err(|e| not_found(e, || format!("link id {id}")))
}

fn not_found(e: KernelError, what: impl FnOnce() -> String) -> KernelError {
    if e.errno() == Some(libc::ENOENT) {
        KernelError::NotFound { what: what() }
    } else {
        e
    }
}

/// What the kernel reports about a program.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
    pub prog_type: String,
    pub tag: String,
    pub jited_len: u32,
    pub xlated_len: u32,
    pub map_ids: Vec<u32>,
    pub btf_id: u32,
    pub verified_insns: u32,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub load_time_boot_ns: u64,
    pub created_by_uid: u32,
    pub gpl_compatible: bool,
}

fn c_name(raw: &[std::os::raw::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn prog_info(fd: BorrowedFd<'_>) -> Result<ProgInfo> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a properly sized, zeroed struct.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    check(ret, "BPF_OBJ_GET_INFO_BY_FD (program)")?;
    let nr = info.nr_map_ids;
    let mut map_ids = vec![0u32; nr as usize];
    if nr > 0 {
        let mut info2 = libbpf_sys::bpf_prog_info {
            nr_map_ids: nr,
            map_ids: map_ids.as_mut_ptr() as u64,
            ..Default::default()
        };
        let mut len2 = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: map_ids has room for nr entries.
        let ret =
            unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info2, &mut len2) };
        check(ret, "BPF_OBJ_GET_INFO_BY_FD (program maps)")?;
        map_ids.truncate(info2.nr_map_ids.min(nr) as usize);
    }
    Ok(ProgInfo {
        id: info.id,
        name: c_name(&info.name),
        prog_type: prog_type_name(info.type_),
        tag: info.tag.iter().map(|b| format!("{b:02x}")).collect(),
        jited_len: info.jited_prog_len,
        xlated_len: info.xlated_prog_len,
        map_ids,
        btf_id: info.btf_id,
        verified_insns: info.verified_insns,
        run_cnt: info.run_cnt,
        run_time_ns: info.run_time_ns,
        load_time_boot_ns: info.load_time,
        created_by_uid: info.created_by_uid,
        gpl_compatible: info.gpl_compatible() != 0,
    })
}

pub fn prog_type_name(t: u32) -> String {
    // SAFETY: libbpf returns a static string or NULL.
    let p = unsafe { libbpf_sys::libbpf_bpf_prog_type_str(t) };
    static_str(p).unwrap_or_else(|| format!("type{t}"))
}

pub fn map_type_name(t: u32) -> String {
    // SAFETY: libbpf returns a static string or NULL.
    let p = unsafe { libbpf_sys::libbpf_bpf_map_type_str(t) };
    static_str(p).unwrap_or_else(|| format!("type{t}"))
}

pub fn link_type_name(t: u32) -> String {
    // SAFETY: libbpf returns a static string or NULL.
    let p = unsafe { libbpf_sys::libbpf_bpf_link_type_str(t) };
    static_str(p).unwrap_or_else(|| format!("type{t}"))
}

fn static_str(p: *const std::os::raw::c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null static NUL-terminated string from libbpf.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MapInfo {
    pub id: u32,
    pub name: String,
    pub map_type: String,
    pub map_type_raw: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
}

pub fn map_info(fd: BorrowedFd<'_>) -> Result<MapInfo> {
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_map_info>() as u32;
    // SAFETY: info is a properly sized, zeroed struct.
    let ret = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    check(ret, "BPF_OBJ_GET_INFO_BY_FD (map)")?;
    Ok(MapInfo {
        id: info.id,
        name: c_name(&info.name),
        map_type: map_type_name(info.type_),
        map_type_raw: info.type_,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        flags: info.map_flags,
        btf_id: info.btf_id,
        btf_key_type_id: info.btf_key_type_id,
        btf_value_type_id: info.btf_value_type_id,
    })
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    pub link_type: String,
}

pub fn link_info(fd: BorrowedFd<'_>) -> Result<LinkInfo> {
    let mut info = libbpf_sys::bpf_link_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: info is a properly sized, zeroed struct.
    let ret = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    check(ret, "BPF_OBJ_GET_INFO_BY_FD (link)")?;
    Ok(LinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        link_type: link_type_name(info.type_),
    })
}

/// Iterate the ids of one kind of kernel object (programs, maps, links).
pub fn ids(kind: IdKind) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: plain syscall wrappers writing one u32.
        let ret = unsafe {
            match kind {
                IdKind::Program => libbpf_sys::bpf_prog_get_next_id(cur, &mut next),
                IdKind::Map => libbpf_sys::bpf_map_get_next_id(cur, &mut next),
                IdKind::Link => libbpf_sys::bpf_link_get_next_id(cur, &mut next),
            }
        };
        if ret != 0 {
            break;
        }
        out.push(next);
        cur = next;
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub enum IdKind {
    Program,
    Map,
    Link,
}

/// BPF_LINK_CREATE with the options a hook needs.
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: i32,
    attach_type: libbpf_sys::bpf_attach_type,
    opts: &libbpf_sys::bpf_link_create_opts,
    call: &str,
) -> Result<OwnedFd> {
    let mut o = *opts;
    o.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    // SAFETY: options struct is sized and initialised.
    let ret = unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), target, attach_type, &o) };
    owned(ret, call)
}

/// BPF_RAW_TRACEPOINT_OPEN: raw tracepoints by name, and tracing programs (tp_btf, fentry,
/// fexit, lsm) whose target was fixed at load time when `name` is None.
pub fn raw_tracepoint_open(name: Option<&str>, prog: BorrowedFd<'_>) -> Result<OwnedFd> {
    let c = name.map(cstr).transpose()?;
    let ptr = c.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null());
    // SAFETY: ptr is NULL or a NUL-terminated string that outlives the call.
    let ret = unsafe { libbpf_sys::bpf_raw_tracepoint_open(ptr, prog.as_raw_fd()) };
    owned(ret, "BPF_RAW_TRACEPOINT_OPEN")
}

/// Turn on run-time statistics (run_cnt/run_time_ns) for as long as the returned fd is open.
pub fn enable_stats() -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper.
    let ret = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    owned(ret, "BPF_ENABLE_STATS")
}

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// perf_event_open(2); libc has no wrapper.
pub fn perf_event_open(
    attr: &libbpf_sys::perf_event_attr,
    pid: i32,
    cpu: i32,
    call: &str,
) -> Result<OwnedFd> {
    // SAFETY: attr is a valid perf_event_attr with its size set by the caller.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const libbpf_sys::perf_event_attr,
            pid,
            cpu,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(KernelError::syscall(call, io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

pub fn num_possible_cpus() -> Result<usize> {
    // SAFETY: plain libbpf helper.
    let n = unsafe { libbpf_sys::libbpf_num_possible_cpus() };
    check(n, "count possible CPUs").map(|n| n as usize)
}

/// The raw BTF blob the kernel holds under `id` (a program's or map's BTF).
pub fn btf_raw_by_id(id: u32) -> Result<Vec<u8>> {
    // SAFETY: libbpf returns an owned btf or NULL with errno set.
    let btf = unsafe { libbpf_sys::btf__load_from_kernel_by_id(id) };
    if btf.is_null() {
        return Err(KernelError::syscall(
            format!("load BTF id {id}"),
            io::Error::last_os_error(),
        ));
    }
    let mut size = 0u32;
    // SAFETY: btf is valid until freed below; raw data is copied before that.
    let out = unsafe {
        let p = libbpf_sys::btf__raw_data(btf, &mut size) as *const u8;
        let v = if p.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p, size as usize).to_vec()
        };
        libbpf_sys::btf__free(btf);
        v
    };
    Ok(out)
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    pub retval: u32,
    /// Average nanoseconds per run, as the kernel measured it over `repeat` runs.
    pub duration_ns: u32,
}

/// Run a program `repeat` times (at least once) over `data` with BPF_PROG_TEST_RUN.
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> Result<TestRun> {
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: data.as_ptr() as *const _,
        data_size_in: data.len() as u32,
        repeat: repeat.min(i32::MAX as u32) as i32,
        ..Default::default()
    };
    // SAFETY: data outlives the call; no output buffers are given.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    check(ret, "BPF_PROG_TEST_RUN")?;
    Ok(TestRun {
        retval: opts.retval,
        duration_ns: opts.duration,
    })
}

/// Detach a link from its hook now (BPF_LINK_DETACH), before its last reference goes: the kernel
/// releases links from a workqueue, so without this a hook can still look busy right after its
/// pin is removed. Links that cannot be detached this way (perf-event based ones) are left to
/// the release; that is not an error.
pub fn link_detach_now(path: &Path) {
    if let Ok(fd) = obj_get(path) {
        // SAFETY: plain syscall wrapper on a valid fd.
        let _ = unsafe { libbpf_sys::bpf_link_detach(fd.as_raw_fd()) };
    }
}
