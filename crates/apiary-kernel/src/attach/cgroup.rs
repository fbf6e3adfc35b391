//! cgroup hooks through bpf_links on a cgroup v2 directory.

use crate::error::{KernelError, Result};
use crate::sys;
use apiary_core::types::cgroup::{
    CgroupDirection, CgroupHook, CgroupSkbAttach, CgroupSockAddrAttach, CgroupSockAttach,
    CgroupSockoptAttach, CgroupSysctlAttach,
};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

fn open_cgroup(path: &Path) -> Result<File> {
    let f = File::open(path).map_err(|e| KernelError::TargetNotFound {
        target: format!("cgroup {}", path.display()),
        reason: format!("{e} (give a cgroup v2 directory, e.g. /sys/fs/cgroup/unified/NAME)"),
    })?;
    if !path.is_dir() {
        return Err(KernelError::TargetNotFound {
            target: format!("cgroup {}", path.display()),
            reason: "not a directory".into(),
        });
    }
    Ok(f)
}

fn link(
    prog: BorrowedFd<'_>,
    path: &Path,
    attach_type: libbpf_sys::bpf_attach_type,
    what: &str,
) -> Result<OwnedFd> {
    let cg = open_cgroup(path)?;
    let opts = libbpf_sys::bpf_link_create_opts::default();
    sys::link_create(
        prog,
        cg.as_raw_fd(),
        attach_type,
        &opts,
        &format!("attach {what} to {}", path.display()),
    )
    .map_err(|e| match e.errno() {
        Some(libc::EBADF) => KernelError::TargetNotFound {
            target: format!("cgroup {}", path.display()),
            reason: "not a cgroup v2 directory".into(),
        },
        _ => e,
    })
}

pub(super) fn skb(prog: BorrowedFd<'_>, spec: &CgroupSkbAttach) -> Result<OwnedFd> {
    let t = match spec.direction {
        CgroupDirection::Ingress => libbpf_sys::BPF_CGROUP_INET_INGRESS,
        CgroupDirection::Egress => libbpf_sys::BPF_CGROUP_INET_EGRESS,
    };
    link(prog, &spec.cgroup, t, "cgroup_skb")
}

pub(super) fn sock_create(prog: BorrowedFd<'_>, spec: &CgroupSockAttach) -> Result<OwnedFd> {
    link(
        prog,
        &spec.cgroup,
        libbpf_sys::BPF_CGROUP_INET_SOCK_CREATE,
        "cgroup/sock_create",
    )
}

pub(super) fn sock_addr(prog: BorrowedFd<'_>, spec: &CgroupSockAddrAttach) -> Result<OwnedFd> {
    hook(prog, &spec.cgroup, spec.hook)
}

pub(super) fn sockopt(prog: BorrowedFd<'_>, spec: &CgroupSockoptAttach) -> Result<OwnedFd> {
    hook(prog, &spec.cgroup, spec.hook)
}

pub(super) fn sysctl(prog: BorrowedFd<'_>, spec: &CgroupSysctlAttach) -> Result<OwnedFd> {
    hook(prog, &spec.cgroup, None)
}

/// A socket-address, sockopt or sysctl hook: the attach type the program was loaded for.
fn hook(prog: BorrowedFd<'_>, path: &Path, hook: Option<CgroupHook>) -> Result<OwnedFd> {
    use libbpf_sys as s;
    let (t, what) = match hook {
        Some(CgroupHook::Connect4) => (s::BPF_CGROUP_INET4_CONNECT, "cgroup/connect4"),
        Some(CgroupHook::Connect6) => (s::BPF_CGROUP_INET6_CONNECT, "cgroup/connect6"),
        Some(CgroupHook::Bind4) => (s::BPF_CGROUP_INET4_BIND, "cgroup/bind4"),
        Some(CgroupHook::Bind6) => (s::BPF_CGROUP_INET6_BIND, "cgroup/bind6"),
        Some(CgroupHook::Sendmsg4) => (s::BPF_CGROUP_UDP4_SENDMSG, "cgroup/sendmsg4"),
        Some(CgroupHook::Sendmsg6) => (s::BPF_CGROUP_UDP6_SENDMSG, "cgroup/sendmsg6"),
        Some(CgroupHook::Recvmsg4) => (s::BPF_CGROUP_UDP4_RECVMSG, "cgroup/recvmsg4"),
        Some(CgroupHook::Recvmsg6) => (s::BPF_CGROUP_UDP6_RECVMSG, "cgroup/recvmsg6"),
        Some(CgroupHook::Getsockopt) => (s::BPF_CGROUP_GETSOCKOPT, "cgroup/getsockopt"),
        Some(CgroupHook::Setsockopt) => (s::BPF_CGROUP_SETSOCKOPT, "cgroup/setsockopt"),
        None => (s::BPF_CGROUP_SYSCTL, "cgroup/sysctl"),
    };
    link(prog, path, t, what)
}
