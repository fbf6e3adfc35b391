//! BPF iterators: a BPF_TRACE_ITER link (its target was fixed at load time from the section,
//! `iter/task`), and reading it, which runs the program once over the target's objects.

use crate::error::{KernelError, Result};
use crate::sys;
use apiary_core::types::iter::IterAttach;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Stop reading an iterator that writes more than this (a runaway program).
const MAX_OUTPUT: u64 = 64 << 20;

pub(super) fn attach(prog: BorrowedFd<'_>, _spec: &IterAttach) -> Result<OwnedFd> {
    let opts = libbpf_sys::bpf_link_create_opts::default();
    sys::link_create(
        prog,
        0,
        libbpf_sys::BPF_TRACE_ITER,
        &opts,
        "attach iterator",
    )
}

/// Run the iterator behind `link` once and return what it printed.
pub fn read(link: BorrowedFd<'_>) -> Result<Vec<u8>> {
    // SAFETY: plain syscall wrapper on a valid fd.
    let fd = unsafe { libbpf_sys::bpf_iter_create(link.as_raw_fd()) };
    if fd < 0 {
        return Err(KernelError::syscall(
            "BPF_ITER_CREATE",
            std::io::Error::from_raw_os_error(-fd),
        ));
    }
    // SAFETY: the kernel just handed us this fd; nobody else owns it.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut out = Vec::new();
    file.take(MAX_OUTPUT)
        .read_to_end(&mut out)
        .map_err(|e| KernelError::syscall("read iterator", e))?;
    Ok(out)
}
