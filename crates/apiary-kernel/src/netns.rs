//! Running a piece of work inside another network namespace. setns(2) changes only the calling
//! thread, so the work runs on a short-lived thread and the caller's namespace is never touched.

use crate::error::{KernelError, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Run `f` in the network namespace at `netns` (a path such as `/var/run/netns/NAME` or
/// `/proc/PID/ns/net`), or in the current one when `netns` is None.
pub fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(path) = netns else { return f() };
    let file = File::open(path).map_err(|e| KernelError::BadNetns {
        path: path.to_path_buf(),
        reason: format!(
            "cannot open: {e} (create it with `ip netns add NAME`, or give /proc/PID/ns/net)"
        ),
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                KernelError::BadNetns {
                    path: path.to_path_buf(),
                    reason: format!("not a network namespace ({e})"),
                }
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(KernelError::Invalid(
                "network namespace worker thread panicked".into(),
            ))
        })
    })
}

/// Resolve an interface name to its index in the current thread's network namespace.
pub fn ifindex(name: &str, netns: Option<&Path>) -> Result<u32> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) => Ok(i),
        Err(_) => Err(KernelError::UnknownInterface {
            name: name.to_string(),
            netns: netns.map(PathBuf::from),
        }),
    }
}
