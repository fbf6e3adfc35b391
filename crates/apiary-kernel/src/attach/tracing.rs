//! Raw tracepoints, and the BTF-targeted tracing types (tp_btf, fentry, fexit, lsm) whose
//! target was fixed when the program was loaded.

use crate::error::{KernelError, Result};
use crate::sys;
use apiary_core::types::raw_tracepoint::RawTracepointAttach;
use std::os::fd::{BorrowedFd, OwnedFd};

pub(super) fn raw_tracepoint(prog: BorrowedFd<'_>, spec: &RawTracepointAttach) -> Result<OwnedFd> {
    let name = spec.tracepoint.as_str();
    sys::raw_tracepoint_open(Some(name), prog).map_err(|e| match e.errno() {
        Some(libc::ENOENT) => KernelError::TargetNotFound {
            target: format!("raw tracepoint {name}"),
            reason: "no such tracepoint in the kernel (see /sys/kernel/tracing/available_events)"
                .into(),
        },
        _ => e,
    })
}

pub(super) fn btf_target(prog: BorrowedFd<'_>, kind: &str) -> Result<OwnedFd> {
    sys::raw_tracepoint_open(None, prog).map_err(|e| match e.errno() {
        Some(libc::EPERM) | Some(ENOTSUPP) => KernelError::NotSupported {
            feature: format!("{kind} attach"),
            reason: "the kernel refused to attach a BPF trampoline".into(),
        },
        _ => e,
    })
}

/// ENOTSUPP (524) is kernel-internal and has no libc constant.
const ENOTSUPP: i32 = 524;
