//! The local image cache: content-addressed blobs plus the references that were pulled.
//!
//! This module owns the cache directory a caller hands in:
//!
//! ```text
//! <root>/blobs/sha256/<hex>       manifests, indexes, configs and layers, by digest
//! <root>/refs/<sha256(ref)>.json  {"reference", "digest", "pulled_at"}: what a reference resolved to
//! <root>/signatures/<hex>.json    cosign signatures fetched for that manifest digest
//! <root>/lock                     shared by writers, exclusive for removal
//! ```
//!
//! Every blob is re-hashed when it is read, so a cache tampered with after the pull is refused
//! like a tampered registry. Files are written to a temporary name and renamed, so readers never
//! see half a blob; removal takes the exclusive lock and then drops every blob no remaining
//! reference reaches.

use crate::error::{Error, Result};
use crate::image::{labels_from_config, Labels};
use crate::manifest::{sha256_digest, AnyManifest, ImageConfig};
use crate::reference::{validate_digest, ImageRef};
use base64ct::{Base64, Encoding};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A cache rooted at a directory (created on first write).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// One cached reference, as [`Cache::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedImage {
    pub reference: String,
    /// What the reference resolved to (an index or a manifest).
    pub digest: String,
    /// Seconds since the epoch.
    pub pulled_at: u64,
    /// The platform images whose content is cached.
    pub platforms: Vec<CachedPlatform>,
    /// Bytes of all cached blobs of this image.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedPlatform {
    /// From the index entry, or the config for a plain manifest.
    pub arch: Option<String>,
    pub digest: String,
    pub programs: Labels,
    pub maps: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    digest: String,
    pulled_at: u64,
}

/// A cosign signature as stored: the payload and the base64 signature from its annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSignature {
    /// base64 of the simple-signing payload.
    pub payload: String,
    pub signature: String,
}

impl StoredSignature {
    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        Base64::decode_vec(&self.payload).ok()
    }
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        validate_digest(digest).map_err(|reason| Error::cache(&self.root, reason))?;
        let hex = &digest["sha256:".len()..];
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let key = &sha256_digest(reference.as_bytes())["sha256:".len()..];
        self.root.join("refs").join(format!("{key}.json"))
    }

    fn signatures_path(&self, digest: &str) -> Result<PathBuf> {
        validate_digest(digest).map_err(|reason| Error::cache(&self.root, reason))?;
        Ok(self
            .root
            .join("signatures")
            .join(format!("{}.json", &digest["sha256:".len()..])))
    }

    /// The cached blob with `digest`, re-hashed; `None` if absent.
    pub fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(digest)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::cache(&path, e)),
        };
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("cached blob {} (remove it from the cache)", path.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(Some(bytes))
    }

    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            let _lock = self.lock(false)?;
            self.write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// The digest `image` resolved to when it was pulled: its own digest if it pins one and
    /// that manifest is cached, else the recorded tag's.
    pub fn lookup(&self, image: &ImageRef) -> Result<Option<String>> {
        if let Some(d) = &image.digest {
            return Ok(self.blob_path(d)?.exists().then(|| d.clone()));
        }
        let path = self.ref_path(&ref_key(image));
        match fs::read(&path) {
            Ok(b) => {
                let rec: RefRecord =
                    serde_json::from_slice(&b).map_err(|e| Error::cache(&path, e))?;
                Ok(Some(rec.digest))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::cache(&path, e)),
        }
    }

    pub(crate) fn put_ref(&self, image: &ImageRef, digest: &str) -> Result<()> {
        let reference = ref_key(image);
        let rec = RefRecord {
            reference: reference.clone(),
            digest: digest.to_string(),
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| Error::cache(&self.root, e))?;
        let _lock = self.lock(false)?;
        self.write_atomic(&self.ref_path(&reference), &bytes)
    }

    /// Cosign signatures stored for `digest`.
    pub fn signatures(&self, digest: &str) -> Result<Vec<StoredSignature>> {
        let path = self.signatures_path(digest)?;
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::cache(&path, e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::cache(&path, e)),
        }
    }

    pub(crate) fn put_signatures(&self, digest: &str, sigs: &[StoredSignature]) -> Result<()> {
        let path = self.signatures_path(digest)?;
        let bytes = serde_json::to_vec_pretty(sigs).map_err(|e| Error::cache(&path, e))?;
        let _lock = self.lock(false)?;
        self.write_atomic(&path, &bytes)
    }

    /// Every cached reference with its cached platform images.
    pub fn list(&self) -> Result<Vec<CachedImage>> {
        let mut out = Vec::new();
        for rec in self.records()? {
            let mut blobs = BTreeSet::new();
            let platforms = self.walk(&rec.digest, &mut blobs)?;
            let size = blobs
                .iter()
                .filter_map(|d| self.blob_path(d).ok())
                .filter_map(|p| fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            out.push(CachedImage {
                reference: rec.reference,
                digest: rec.digest,
                pulled_at: rec.pulled_at,
                platforms,
                size,
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes the cached references matching `ref_or_digest` (a reference, or a digest of an
    /// index or manifest), then every blob and signature no remaining reference reaches.
    /// Returns the number of references removed.
    pub fn remove(&self, ref_or_digest: &str) -> Result<usize> {
        let arg = ref_or_digest.trim();
        let by_digest = arg.starts_with("sha256:");
        let key = if by_digest {
            validate_digest(arg).map_err(|reason| Error::InvalidReference {
                reference: arg.to_string(),
                reason,
            })?;
            None
        } else {
            Some(ref_key(&arg.parse::<ImageRef>()?))
        };
        let _lock = self.lock(true)?;
        let mut removed = 0;
        for rec in self.records()? {
            let hit = match &key {
                Some(k) => &rec.reference == k,
                None => {
                    rec.digest == arg || {
                        let mut blobs = BTreeSet::new();
                        self.walk(&rec.digest, &mut blobs)?
                            .iter()
                            .any(|p| p.digest == arg)
                    }
                }
            };
            if hit {
                let path = self.ref_path(&rec.reference);
                fs::remove_file(&path).map_err(|e| Error::cache(&path, e))?;
                removed += 1;
            }
        }
        if removed == 0 {
            return Err(Error::NotCached {
                reference: key.unwrap_or_else(|| arg.to_string()),
            });
        }
        self.gc_locked()?;
        Ok(removed)
    }

    /// Drops blobs and signatures that no reference reaches. Called with the exclusive lock.
    fn gc_locked(&self) -> Result<()> {
        let mut keep = BTreeSet::new();
        for rec in self.records()? {
            self.walk(&rec.digest, &mut keep)?;
        }
        let keep_hex: BTreeSet<String> = keep
            .iter()
            .map(|d| d["sha256:".len()..].to_string())
            .collect();
        for (dir, suffix) in [
            (self.root.join("blobs/sha256"), ""),
            (self.root.join("signatures"), ".json"),
        ] {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::cache(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::cache(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(suffix).unwrap_or(&name);
                if !keep_hex.contains(hex) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn records(&self) -> Result<Vec<RefRecord>> {
        let dir = self.root.join("refs");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::cache(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::cache(&dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::cache(&path, e)),
            };
            out.push(serde_json::from_slice(&bytes).map_err(|e| Error::cache(&path, e))?);
        }
        Ok(out)
    }

    /// Collects the cached blobs reachable from `digest` into `blobs` and describes the cached
    /// platform images. Missing blobs are skipped (a partial pull, or another architecture).
    fn walk(&self, digest: &str, blobs: &mut BTreeSet<String>) -> Result<Vec<CachedPlatform>> {
        let Some(top) = self.get_blob(digest)? else {
            return Ok(Vec::new());
        };
        blobs.insert(digest.to_string());
        let mut platforms = Vec::new();
        let children: Vec<(Option<String>, String, Vec<u8>)> = match AnyManifest::parse(&top, None)?
        {
            AnyManifest::Index(index) => {
                let mut v = Vec::new();
                for d in index.manifests {
                    if let Some(bytes) = self.get_blob(&d.digest)? {
                        blobs.insert(d.digest.clone());
                        v.push((d.platform.map(|p| p.architecture), d.digest, bytes));
                    }
                }
                v
            }
            AnyManifest::Image(_) => vec![(None, digest.to_string(), top)],
        };
        for (arch, digest, bytes) in children {
            let AnyManifest::Image(m) = AnyManifest::parse(&bytes, None)? else {
                continue;
            };
            let mut labels = (Labels::new(), Labels::new());
            let mut arch = arch;
            if let Some(cfg) = self.get_blob(&m.config.digest)? {
                blobs.insert(m.config.digest.clone());
                if let Ok(cfg) = serde_json::from_slice::<ImageConfig>(&cfg) {
                    labels = labels_from_config(&digest, &cfg).unwrap_or_default();
                    if arch.is_none() && !cfg.architecture.is_empty() {
                        arch = Some(cfg.architecture.clone());
                    }
                }
            }
            for l in &m.layers {
                if self.blob_path(&l.digest)?.exists() {
                    blobs.insert(l.digest.clone());
                }
            }
            platforms.push(CachedPlatform {
                arch,
                digest,
                programs: labels.0,
                maps: labels.1,
            });
        }
        Ok(platforms)
    }

    fn lock(&self, exclusive: bool) -> Result<File> {
        fs::create_dir_all(&self.root).map_err(|e| Error::cache(&self.root, e))?;
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::cache(&path, e))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|e| Error::cache(&path, e))?;
        Ok(file)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| Error::cache(dir, e))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::cache(path, e)
        })
    }
}

/// The key a reference is recorded under: `registry/repo@digest` when pinned, else
/// `registry/repo:tag`.
fn ref_key(image: &ImageRef) -> String {
    match &image.digest {
        Some(d) => format!("{}@{d}", image.repository_name()),
        None => format!(
            "{}:{}",
            image.repository_name(),
            image.tag.as_deref().unwrap_or("latest")
        ),
    }
}
