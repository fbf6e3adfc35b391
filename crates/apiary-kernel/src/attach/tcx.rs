//! TCX links (kernel 6.6+): the kernel keeps an ordered list per interface and direction, and
//! apiary inserts relative to its neighbours so that lower priorities run first.

use crate::error::{KernelError, Result};
use crate::{netns, sys};
use apiary_core::types::tcx::TcxAttach;
use apiary_core::TcDirection;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Insert before or after the link with this kernel id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcxAnchor {
    Before(u32),
    After(u32),
}

/// The spec's priority is not used here: the order comes from `anchor`, which the caller
/// chose from the priorities of the links already there.
pub(super) fn attach(
    prog: BorrowedFd<'_>,
    spec: &TcxAttach,
    anchor: Option<TcxAnchor>,
) -> Result<OwnedFd> {
    let (iface, ns, direction) = (spec.iface.as_str(), spec.netns.as_deref(), spec.direction);
    netns::in_netns(ns, || {
        let ifindex = netns::ifindex(iface, ns)?;
        let attach_type = match direction {
            TcDirection::Ingress => libbpf_sys::BPF_TCX_INGRESS,
            TcDirection::Egress => libbpf_sys::BPF_TCX_EGRESS,
        };
        let mut opts = libbpf_sys::bpf_link_create_opts::default();
        match anchor {
            Some(TcxAnchor::Before(id)) => {
                opts.flags =
                    libbpf_sys::BPF_F_BEFORE | libbpf_sys::BPF_F_LINK | libbpf_sys::BPF_F_ID;
                opts.__bindgen_anon_1.tcx.relative_id = id;
            }
            Some(TcxAnchor::After(id)) => {
                opts.flags =
                    libbpf_sys::BPF_F_AFTER | libbpf_sys::BPF_F_LINK | libbpf_sys::BPF_F_ID;
                opts.__bindgen_anon_1.tcx.relative_id = id;
            }
            None => {}
        }
        sys::link_create(prog, ifindex as i32, attach_type, &opts, "attach TCX").map_err(
            |e| match e.errno() {
                Some(libc::ENOENT) if anchor.is_some() => KernelError::Invalid(format!(
                    "the TCX link apiary wanted to order against on {iface} is gone; retry"
                )),
                _ => e,
            },
        )
    })
}
