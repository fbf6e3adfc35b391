//! XDP through a bpf_link (so the attachment can be pinned and atomically updated).

use crate::error::{KernelError, Result};
use crate::{netns, sys};
use apiary_core::types::xdp::XdpAttach;
use apiary_core::XdpMode;
use std::os::fd::{BorrowedFd, OwnedFd};

/// One program (a chain's dispatcher or a single program) on the interface; chain membership
/// (priority, proceed-on) is the manager's business.
pub(super) fn attach(prog: BorrowedFd<'_>, spec: &XdpAttach) -> Result<OwnedFd> {
    let (iface, ns, mode) = (spec.iface.as_str(), spec.netns.as_deref(), spec.mode);
    netns::in_netns(ns, || {
        let ifindex = netns::ifindex(iface, ns)?;
        let flags = match mode {
            // No mode flag: the kernel uses the driver's XDP when it has one, generic otherwise.
            XdpMode::Auto => 0,
            XdpMode::Drv => libbpf_sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
        };
        let opts = libbpf_sys::bpf_link_create_opts {
            flags,
            ..Default::default()
        };
        sys::link_create(
            prog,
            ifindex as i32,
            libbpf_sys::BPF_XDP,
            &opts,
            "attach XDP",
        )
        .map_err(|e| match e.errno() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => KernelError::HookBusy {
                hook: format!("XDP on {iface}"),
                reason:
                    "another XDP program is already attached to this interface; detach it first"
                        .into(),
            },
            Some(libc::EOPNOTSUPP) => KernelError::NotSupported {
                feature: format!("XDP {mode:?} mode on {iface}").to_lowercase(),
                reason: "the driver has no native XDP support; use --mode skb".into(),
            },
            _ => e,
        })
    })
}
