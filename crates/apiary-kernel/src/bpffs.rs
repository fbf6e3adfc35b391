//! bpffs: whether it is mounted, mounting it where tools expect it, and `PinSet`, the owned set
//! of pins one multi-step change makes (removed again unless the change completes).

use crate::error::{KernelError, Result};
use crate::sys;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
/// Where bpftool, libbpf and systemd expect bpffs.
const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

/// Whether bpffs is mounted at (or above) `path`.
pub fn is_bpffs(path: &Path) -> bool {
    let mut p = path.to_path_buf();
    loop {
        if p.exists() {
            return nix::sys::statfs::statfs(&p)
                .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
                .unwrap_or(false);
        }
        if !p.pop() {
            return false;
        }
    }
}

/// Make sure `root` is on bpffs. Like bpftool, mount it at /sys/fs/bpf when `root` is under
/// it and nothing is mounted there; any other place is the user's to mount.
pub fn ensure_mounted(root: &Path) -> Result<()> {
    if is_bpffs(root) {
        return Ok(());
    }
    let base = Path::new(DEFAULT_MOUNT);
    if root.starts_with(base) && !is_bpffs(base) {
        let _ = std::fs::create_dir_all(base);
        let mounted = nix::mount::mount(
            Some("bpf"),
            base,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
        if mounted.is_ok() && is_bpffs(root) {
            return Ok(());
        }
    }
    Err(KernelError::NotBpffs {
        path: root.to_path_buf(),
    })
}

/// The pins (and directories) one change has made so far. Dropping the set removes them, in
/// reverse order, unless `keep` was called: a change that fails half-way leaves nothing behind.
///
/// A pin whose path already exists (a hot update, a restore over a stale pin) is made beside it
/// and only moved over it by `keep`, so what ran before stays pinned until the change commits.
#[derive(Debug, Default)]
pub struct PinSet {
    made: Vec<Made>,
    kept: bool,
}

#[derive(Debug)]
enum Made {
    Pin(PathBuf),
    Staged { tmp: PathBuf, path: PathBuf },
    Dir(PathBuf),
}

impl PinSet {
    pub fn new() -> PinSet {
        PinSet::default()
    }

    /// Pin `fd` at `path` (creating its directory), or beside it when `path` exists.
    pub fn pin(&mut self, fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            self.dir(dir)?;
        }
        if std::fs::symlink_metadata(path).is_err() {
            sys::pin(fd, path)?;
            self.made.push(Made::Pin(path.to_path_buf()));
            return Ok(());
        }
        let tmp = staging_path(path);
        sys::unpin(&tmp)?; // left by a change that crashed before committing
        sys::pin(fd, &tmp)?;
        self.made.push(Made::Staged {
            tmp,
            path: path.to_path_buf(),
        });
        Ok(())
    }

    /// Create `dir` (and its parents) if missing; those this set created are removed on
    /// rollback when empty.
    pub fn dir(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while !d.exists() {
            missing.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| sys::mkdir_error(dir, e))?;
        self.made.extend(missing.into_iter().rev().map(Made::Dir));
        Ok(())
    }

    /// The change completed: move staged pins over the ones they replace and keep everything.
    pub fn keep(mut self) -> Result<()> {
        self.kept = true;
        for m in &self.made {
            if let Made::Staged { tmp, path } = m {
                std::fs::rename(tmp, path).map_err(|e| {
                    KernelError::syscall(format!("move pin {} into place", path.display()), e)
                })?;
            }
        }
        Ok(())
    }
}

impl Drop for PinSet {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for m in self.made.iter().rev() {
            match m {
                Made::Pin(p) | Made::Staged { tmp: p, .. } => {
                    let _ = sys::unpin(p);
                }
                Made::Dir(d) => {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
    }
}

/// Where a pin replacing `path` waits for its change to commit: beside it, so the final rename
/// stays on one filesystem. bpffs refuses names with a dot; a `~` is in no name apiary pins.
fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}~new"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_stays_in_the_same_directory() {
        assert_eq!(
            staging_path(Path::new("/sys/fs/bpf/apiary/programs/7")),
            PathBuf::from("/sys/fs/bpf/apiary/programs/7~new")
        );
    }

    #[test]
    fn dropped_set_removes_the_directories_it_made() {
        let base = std::env::temp_dir().join(format!("apiary-pinset-{}", std::process::id()));
        let deep = base.join("a/b");
        {
            let mut set = PinSet::new();
            set.dir(&deep).expect("mkdir");
            assert!(deep.is_dir());
        }
        assert!(!base.exists(), "every directory the set created is gone");

        std::fs::create_dir_all(&base).expect("mkdir");
        {
            let mut set = PinSet::new();
            set.dir(&deep).expect("mkdir");
            set.keep().expect("keep");
        }
        assert!(deep.is_dir(), "a kept set leaves them");
        let _ = std::fs::remove_dir_all(&base);
    }
}
