//! Attaching a loaded program (by fd, so any process can do it) to its hook. One file per
//! hook; this module only dispatches on the spec and defines what an attachment is.

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
    let links = match spec {
        AttachSpec::Tracepoint { tracepoint } => vec![perf::tracepoint(prog, tracepoint)?],
        AttachSpec::RawTracepoint { tracepoint } => {
            vec![tracing::raw_tracepoint(prog, tracepoint)?]
        }
        AttachSpec::TpBtf => vec![tracing::btf_target(prog, "tp_btf")?],
        AttachSpec::Iter => vec![iter::attach(prog)?],
        AttachSpec::SkLookup { netns } => vec![sk_lookup::attach(prog, netns)?],
        AttachSpec::Fentry => vec![tracing::btf_target(prog, "fentry")?],
        AttachSpec::Fexit => vec![tracing::btf_target(prog, "fexit")?],
        AttachSpec::Lsm => vec![tracing::btf_target(prog, "lsm")?],
        // Chain membership (priority, proceed-on) is the manager's business: here an XDP or
        // TC attach puts one program (a dispatcher or a single program) on the hook.
        AttachSpec::Xdp {
            iface, netns, mode, ..
        } => vec![xdp::attach(prog, iface, netns.as_deref(), *mode)?],
        AttachSpec::Tc {
            iface,
            netns,
            direction,
            ..
        } => {
            return Ok(Attachment::TcFilter(tc::attach(
                prog,
                iface,
                netns.as_deref(),
                *direction,
            )?))
        }
        AttachSpec::Tcx {
            iface,
            netns,
            direction,
            ..
        } => {
            vec![tcx::attach(
                prog,
                iface,
                netns.as_deref(),
                *direction,
                ctx.tcx_anchor,
            )?]
        }
        AttachSpec::Uprobe {
            target,
            fn_name,
            offset,
            retprobe,
            pid,
        } => {
            vec![probe::uprobe(
                prog,
                target,
                fn_name.as_deref(),
                *offset,
                *retprobe,
                *pid,
            )?]
        }
        AttachSpec::Usdt {
            target,
            provider,
            name,
            pid,
        } => usdt::attach(prog, target, provider, name, *pid)?,
        AttachSpec::Kprobe {
            fn_name,
            offset,
            retprobe,
        } => {
            vec![probe::kprobe(prog, fn_name, *offset, *retprobe)?]
        }
        AttachSpec::CgroupSkb { cgroup, direction } => vec![cgroup::skb(prog, cgroup, *direction)?],
        AttachSpec::CgroupSock { cgroup } => vec![cgroup::sock_create(prog, cgroup)?],
        AttachSpec::CgroupSockAddr { cgroup, hook }
        | AttachSpec::CgroupSockopt { cgroup, hook } => {
            vec![cgroup::hook(prog, cgroup, *hook)?]
        }
        AttachSpec::CgroupSysctl { cgroup } => vec![cgroup::hook(prog, cgroup, None)?],
        AttachSpec::Netfilter {
            hook,
            family,
            priority,
            netns,
            defrag,
        } => vec![netfilter::attach(
            prog,
            *hook,
            *family,
            *priority,
            netns.as_deref(),
            *defrag,
        )?],
        AttachSpec::PerfEvent {
            event,
            frequency,
            cpu,
        } => perf::software(prog, *event, *frequency, *cpu)?,
    };
    Ok(Attachment::Links(links))
}

/// Whether links of this kind can switch programs in place with BPF_LINK_UPDATE (atomically).
/// perf_event-based links (tracepoints, probes, perf events) and tracing links cannot.
pub fn updatable_in_place(spec: &AttachSpec) -> bool {
    match spec {
        AttachSpec::Xdp { .. }
        | AttachSpec::Tcx { .. }
        | AttachSpec::CgroupSkb { .. }
        | AttachSpec::CgroupSock { .. }
        | AttachSpec::CgroupSockAddr { .. }
        | AttachSpec::CgroupSockopt { .. }
        | AttachSpec::CgroupSysctl { .. }
        | AttachSpec::Iter
        | AttachSpec::SkLookup { .. } => true,
        AttachSpec::Tracepoint { .. }
        | AttachSpec::RawTracepoint { .. }
        | AttachSpec::TpBtf
        | AttachSpec::Tc { .. }
        | AttachSpec::Netfilter { .. }
        | AttachSpec::Uprobe { .. }
        | AttachSpec::Usdt { .. }
        | AttachSpec::Kprobe { .. }
        | AttachSpec::PerfEvent { .. }
        | AttachSpec::Fentry
        | AttachSpec::Fexit
        | AttachSpec::Lsm => false,
    }
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
