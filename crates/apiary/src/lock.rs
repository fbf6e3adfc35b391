//! Serialising kernel mutations across processes. A store transaction alone cannot cover a
//! kernel change (pins and links are made outside SQLite), so every mutation holds an
//! exclusive flock on a file in the state dir from the first check to the commit.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::path::Path;

pub struct MutationLock {
    file: File,
}

impl MutationLock {
    pub fn acquire(state_dir: &Path) -> Result<MutationLock> {
        let path = state_dir.join("apiary.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::Internal(format!("cannot open lock file {}: {e}", path.display()))
            })?;
        file.lock()
            .map_err(|e| Error::Internal(format!("cannot lock {}: {e}", path.display())))?;
        Ok(MutationLock { file })
    }
}

impl Drop for MutationLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
