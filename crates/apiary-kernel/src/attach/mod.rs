//! Attaching a loaded program (by fd, so any process can do it) to its hook. One file per
//! hook (or kernel family of hooks), each taking its type's options struct from apiary-core;
//! this module only dispatches on the spec and defines what an attachment is.

mod cgroup;
mod iter;
mod netfilter;
mod perf;
mod probe;
mod sk_lookup;
mod tc;
mod tcx;
mod tracing;
mod usdt;
mod xdp;

pub use iter::read as read_iter;
pub use probe::resolve_uprobe_target;
pub use tc::{detach_tc_filter, replace_tc_filter};
pub use tcx::TcxAnchor;
pub use usdt::spec_ids as usdt_spec_ids;

use crate::error::Result;
use apiary_core::{AttachSpec, TcDirection};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// What an attach produced in the kernel.
#[derive(Debug)]
pub enum Attachment {
    /// bpf_links; pinning them keeps the program attached after the process exits.
    Links(Vec<OwnedFd>),
    /// A legacy TC filter is not a link: it lives in the clsact qdisc until deleted.
    TcFilter(TcFilter),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcFilter {
    pub iface: String,
    pub netns: Option<PathBuf>,
    pub ifindex: u32,
    pub direction: TcDirection,
    pub handle: u32,
    pub priority: u32,
}

/// Everything an attach may need beyond the spec.
#[derive(Debug, Clone, Default)]
pub struct AttachContext {
    /// For TCX: where to insert relative to existing links, so priorities hold.
    pub tcx_anchor: Option<TcxAnchor>,
}

pub fn attach(prog: BorrowedFd<'_>, spec: &AttachSpec, ctx: &AttachContext) -> Result<Attachment> {
    let one = |fd: OwnedFd| Ok(Attachment::Links(vec![fd]));
    match spec {
        AttachSpec::Tracepoint(h) => one(perf::tracepoint(prog, h)?),
        AttachSpec::RawTracepoint(h) => one(tracing::raw_tracepoint(prog, h)?),
        AttachSpec::TpBtf(_) => one(tracing::btf_target(prog, "tp_btf")?),
        AttachSpec::Iter(h) => one(iter::attach(prog, h)?),
        AttachSpec::SkLookup(h) => one(sk_lookup::attach(prog, h)?),
        AttachSpec::Fentry(_) => one(tracing::btf_target(prog, "fentry")?),
        AttachSpec::Fexit(_) => one(tracing::btf_target(prog, "fexit")?),
        AttachSpec::Lsm(_) => one(tracing::btf_target(prog, "lsm")?),
        AttachSpec::Xdp(h) => one(xdp::attach(prog, h)?),
        AttachSpec::Tc(h) => Ok(Attachment::TcFilter(tc::attach(prog, h)?)),
        AttachSpec::Tcx(h) => one(tcx::attach(prog, h, ctx.tcx_anchor)?),
        AttachSpec::Uprobe(h) => one(probe::uprobe(prog, h)?),
        AttachSpec::Usdt(h) => Ok(Attachment::Links(usdt::attach(prog, h)?)),
        AttachSpec::Kprobe(h) => one(probe::kprobe(prog, h)?),
        AttachSpec::CgroupSkb(h) => one(cgroup::skb(prog, h)?),
        AttachSpec::CgroupSock(h) => one(cgroup::sock_create(prog, h)?),
        AttachSpec::CgroupSockAddr(h) => one(cgroup::sock_addr(prog, h)?),
        AttachSpec::CgroupSockopt(h) => one(cgroup::sockopt(prog, h)?),
        AttachSpec::CgroupSysctl(h) => one(cgroup::sysctl(prog, h)?),
        AttachSpec::Netfilter(h) => one(netfilter::attach(prog, h)?),
        AttachSpec::PerfEvent(h) => Ok(Attachment::Links(perf::software(prog, h)?)),
    }
}

/// Whether links of this kind can switch programs in place with BPF_LINK_UPDATE (atomically);
/// the type table says (perf_event-based and tracing links cannot).
pub fn updatable_in_place(spec: &AttachSpec) -> bool {
    spec.program_type().info().link_update
}

/// Point an existing link at another program, atomically; fails if the link no longer runs
/// `old` (BPF_F_REPLACE), so a concurrent change is never overwritten.
pub fn update_link(link: BorrowedFd<'_>, new: BorrowedFd<'_>, old: BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let opts = libbpf_sys::bpf_link_update_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_update_opts>() as _,
        flags: libbpf_sys::BPF_F_REPLACE,
        old_prog_fd: old.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: valid fds and a sized options struct.
    let ret = unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), new.as_raw_fd(), &opts) };
    crate::error::check(ret, "BPF_LINK_UPDATE").map(|_| ())
}
