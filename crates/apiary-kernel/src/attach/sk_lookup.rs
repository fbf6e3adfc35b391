//! sk_lookup through a BPF_SK_LOOKUP link on a network namespace.

use crate::error::{KernelError, Result};
use crate::sys;
use apiary_core::types::sk_lookup::SkLookupAttach;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub(super) fn attach(prog: BorrowedFd<'_>, spec: &SkLookupAttach) -> Result<OwnedFd> {
    let netns = spec.netns.as_path();
    let ns = std::fs::File::open(netns).map_err(|e| KernelError::BadNetns {
        path: netns.to_path_buf(),
        reason: format!(
            "cannot open: {e} (create it with `ip netns add NAME`, or give /proc/PID/ns/net)"
        ),
    })?;
    let opts = libbpf_sys::bpf_link_create_opts::default();
    sys::link_create(
        prog,
        ns.as_raw_fd(),
        libbpf_sys::BPF_SK_LOOKUP,
        &opts,
        &format!("attach sk_lookup to {}", netns.display()),
    )
    .map_err(|e| match e.errno() {
        Some(libc::EINVAL) | Some(libc::EBADF) => KernelError::BadNetns {
            path: netns.to_path_buf(),
            reason: "not a network namespace".into(),
        },
        _ => e,
    })
}
