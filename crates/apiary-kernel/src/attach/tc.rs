//! Legacy TC: a cls_bpf filter in direct-action mode on the interface's clsact qdisc. It is not
//! a bpf_link, so apiary records handle and priority to delete it later.

use super::TcFilter;
use crate::error::{KernelError, Result};
use crate::netns;
use apiary_core::types::tc::TcAttach;
use apiary_core::TcDirection;
use libbpf_rs::{TcHookBuilder, TC_EGRESS, TC_INGRESS};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

fn point(d: TcDirection) -> libbpf_rs::TcAttachPoint {
    match d {
        TcDirection::Ingress => TC_INGRESS,
        TcDirection::Egress => TC_EGRESS,
    }
}

/// A single filter (`--legacy`); chain members go through the dispatcher on a TCX link.
pub(super) fn attach(prog: BorrowedFd<'_>, spec: &TcAttach) -> Result<TcFilter> {
    let (iface, ns, direction) = (spec.iface.as_str(), spec.netns.as_deref(), spec.direction);
    netns::in_netns(ns, || {
        let ifindex = netns::ifindex(iface, ns)?;
        let mut builder = TcHookBuilder::new(prog.as_fd());
        builder
            .ifindex(ifindex as i32)
            .replace(false)
            .handle(0)
            .priority(0);
        let mut hook = builder.hook(point(direction));
        // The clsact qdisc may already exist (EEXIST); that is fine.
        if let Err(e) = hook.create() {
            if crate::loader::errno_of(&e) != Some(libc::EEXIST) {
                return Err(KernelError::libbpf(
                    format!("create clsact qdisc on {iface}"),
                    e,
                ));
            }
        }
        let attached = hook
            .attach()
            .map_err(|e| match crate::loader::errno_of(&e) {
                Some(libc::EEXIST) => KernelError::HookBusy {
                    hook: format!("tc {iface}"),
                    reason: "a filter with the same handle and priority exists".into(),
                },
                _ => KernelError::libbpf(format!("attach tc filter on {iface}"), e),
            })?;
        Ok(TcFilter {
            iface: iface.to_string(),
            netns: ns.map(Path::to_path_buf),
            ifindex,
            direction,
            handle: attached.get_handle(),
            priority: attached.get_priority(),
        })
    })
}

/// Delete a filter apiary created. A filter whose interface or namespace is gone is already
/// detached, which is not an error.
pub fn detach_tc_filter(prog: BorrowedFd<'_>, f: &TcFilter) -> Result<()> {
    let ns = f.netns.as_deref();
    if let Some(p) = ns {
        if !p.exists() {
            return Ok(());
        }
    }
    netns::in_netns(ns, || {
        let Ok(ifindex) = netns::ifindex(&f.iface, ns) else {
            return Ok(());
        };
        let mut builder = TcHookBuilder::new(prog.as_fd());
        builder
            .ifindex(ifindex as i32)
            .handle(f.handle)
            .priority(f.priority);
        let mut hook = builder.hook(point(f.direction));
        match hook.detach() {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    crate::loader::errno_of(&e),
                    Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EINVAL)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(KernelError::libbpf(
                format!("detach tc filter on {}", f.iface),
                e,
            )),
        }
    })
}

/// Swap the program of a filter apiary created, in place: same handle and priority, so the
/// kernel replaces it atomically and no packet passes unfiltered.
pub fn replace_tc_filter(prog: BorrowedFd<'_>, f: &TcFilter) -> Result<()> {
    let ns = f.netns.as_deref();
    netns::in_netns(ns, || {
        let ifindex = netns::ifindex(&f.iface, ns)?;
        let mut builder = TcHookBuilder::new(prog.as_fd());
        builder
            .ifindex(ifindex as i32)
            .replace(true)
            .handle(f.handle)
            .priority(f.priority);
        let mut hook = builder.hook(point(f.direction));
        hook.attach()
            .map(|_| ())
            .map_err(|e| KernelError::libbpf(format!("replace tc filter on {}", f.iface), e))
    })
}
