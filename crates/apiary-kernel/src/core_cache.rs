//! The CO-RE cache: for each object loaded before, the small part of the kernel's BTF its CO-RE
//! relocations need (see `apiary_core::btf::core`), so later loads hand libbpf that file
//! (`btf_custom_path`) instead of letting it parse the whole vmlinux BTF (~5 MB) again.
//!
//! Entries are keyed by the object's digest and the kernel's BTF identity: the boot id, the
//! kernel release and the size of its BTF. The kernel's BTF cannot change while it runs, and a
//! reboot — into the same or another kernel — changes the boot id, so an entry is never served
//! for another kernel. The directory keeps the newest `MAX_ENTRIES` entries.

use apiary_core::btf;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
pub const MAX_ENTRIES: usize = 256;

/// What the cache holds for an object on the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Its minimal BTF: give it to libbpf.
    Hit(PathBuf),
    /// It was loaded before and has no CO-RE relocation a minimal BTF answers.
    Nothing,
    /// Not loaded on this kernel yet: make the entry after loading it.
    Unseen,
}

#[derive(Debug, Clone)]
pub struct CoreCache {
    dir: PathBuf,
}

/// What identifies the running kernel's BTF.
pub fn kernel_identity() -> Option<String> {
    let boot = std::fs::read_to_string(BOOT_ID).ok()?;
    let release = nix::sys::utsname::uname().ok()?;
    let size = std::fs::metadata(VMLINUX).ok()?.len();
    Some(format!(
        "{} {} {size}",
        boot.trim(),
        release.release().to_string_lossy()
    ))
}

/// The kernel's whole BTF, once per process (a daemon or a reconcile fills many entries), and
/// indexed, not parsed, per entry: an entry needs a few hundred of its 100k+ types.
fn kernel_btf() -> Option<&'static KernelBtf> {
    static KERNEL: std::sync::OnceLock<Option<KernelBtf>> = std::sync::OnceLock::new();
    KERNEL.get_or_init(KernelBtf::open).as_ref()
}

/// The kernel's BTF in place where the kernel allows mapping it (Linux 6.16 and later: the
/// kernel's own read-only pages, nothing copied, no memory of this process's), else read.
enum KernelBtf {
    Mapped { addr: *const u8, len: usize },
    Read(Vec<u8>),
}

// SAFETY: the mapping is read-only and lives as long as the process (never unmapped).
unsafe impl Send for KernelBtf {}
unsafe impl Sync for KernelBtf {}

impl KernelBtf {
    fn open() -> Option<KernelBtf> {
        let file = std::fs::File::open(VMLINUX).ok()?;
        let len = file.metadata().ok()?.len() as usize;
        if len > 0 {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh read-only private mapping of a file we opened; checked below.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if addr != libc::MAP_FAILED {
                return Some(KernelBtf::Mapped {
                    addr: addr as *const u8,
                    len,
                });
            }
        }
        std::fs::read(VMLINUX).ok().map(KernelBtf::Read)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: `len` bytes mapped read-only at `addr` for the life of the process.
            KernelBtf::Mapped { addr, len } => unsafe { std::slice::from_raw_parts(*addr, *len) },
            KernelBtf::Read(v) => v,
        }
    }
}

fn short_hash(b: &[u8], n: usize) -> String {
    let h = hex::encode(Sha256::digest(b));
    h[..n].to_string()
}

impl CoreCache {
    pub fn new(dir: impl Into<PathBuf>) -> CoreCache {
        CoreCache { dir: dir.into() }
    }

    /// Where the entry of `object` for a kernel of `identity` lives.
    pub fn entry(&self, object: &[u8], identity: &str) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.btf",
            short_hash(object, 32),
            short_hash(identity.as_bytes(), 16)
        ))
    }

    /// What the cache holds for `object` on the running kernel (`None`: no kernel identity).
    pub fn check(&self, object: &[u8]) -> Option<Check> {
        let p = self.entry(object, &kernel_identity()?);
        Some(match std::fs::metadata(&p) {
            Ok(m) if m.len() > 0 => Check::Hit(p),
            Ok(_) => Check::Nothing,
            Err(_) => Check::Unseen,
        })
    }

    /// The entry for `object` on the running kernel, if one was made.
    pub fn lookup(&self, object: &[u8]) -> Option<PathBuf> {
        match self.check(object)? {
            Check::Hit(p) => Some(p),
            Check::Nothing | Check::Unseen => None,
        }
    }

    /// Make the entry for `object` on the running kernel (after a load that parsed the whole
    /// BTF anyway). An object without CO-RE relocations a minimal BTF can answer gets an empty
    /// entry, so later loads know at once there is none. `None` when there is no BTF entry, or
    /// when anything needed cannot be read: the cache is only ever a shortcut.
    pub fn fill(&self, object: &[u8], info: &apiary_core::elf::ObjectInfo) -> Option<PathBuf> {
        let identity = kernel_identity()?;
        let blob = match info.btf.as_ref().filter(|_| !info.core_relos.is_empty()) {
            Some(local) => {
                let raw = kernel_btf()?;
                let kernel = btf::core::LazyBtf::index(raw.bytes()).ok()?;
                btf::core::minimal_target(local, &info.core_relos, &kernel)
            }
            None => None,
        };
        std::fs::create_dir_all(&self.dir).ok()?;
        let path = self.entry(object, &identity);
        // Unique per process and per call: threads of one restore may fill the same entry.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{seq}", std::process::id()));
        std::fs::write(&tmp, blob.as_deref().unwrap_or_default()).ok()?;
        std::fs::rename(&tmp, &path).ok()?;
        self.evict();
        blob.map(|_| path)
    }

    /// Forget an entry libbpf could not use (it is made again from the whole BTF).
    pub fn forget(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Keep the newest `MAX_ENTRIES` entries.
    fn evict(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "btf"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        entries.sort();
        for (_, p) in &entries[..entries.len() - MAX_ENTRIES] {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_kernel_identity_is_another_entry() {
        let c = CoreCache::new("/nonexistent");
        let obj = b"object bytes";
        let a = c.entry(obj, "boot-a 6.18.0 5000000");
        assert_eq!(a, c.entry(obj, "boot-a 6.18.0 5000000"));
        assert_ne!(a, c.entry(obj, "boot-b 6.18.0 5000000"), "a reboot");
        assert_ne!(a, c.entry(obj, "boot-a 6.19.0 5000000"), "another kernel");
        assert_ne!(a, c.entry(b"other object", "boot-a 6.18.0 5000000"));
    }

    #[test]
    fn the_running_kernel_has_an_identity() {
        let id = kernel_identity().expect("boot id, release and vmlinux BTF");
        assert_eq!(id.split(' ').count(), 3, "{id}");
    }
}
