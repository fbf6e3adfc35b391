//! Publishing a volume: a fresh bpffs instance of its own under the plugin's state directory,
//! the requested maps pinned into it with the pod's fsGroup as their group, then bind-mounted
//! at the kubelet's target path. A fresh instance (not a subdirectory of the host's bpffs)
//! means the pod sees exactly these maps and nothing of the host, and unmounting it removes
//! every pin at once.
//!
//! Every step that changes the system is recorded in an undo list; a failure anywhere undoes
//! what was done, newest first, so a refused request leaves nothing mounted or pinned. The
//! volume's record (a small JSON file beside its mount) is what makes both calls idempotent
//! and lets unpublish find the mount after a restart of the plugin.

use crate::error::CsiError;
use crate::mounts;
use crate::resolve::{self, Resolved};
use apiary::kernel::sys;
use nix::mount::{mount, MsFlags};
use nix::unistd::{chown, Gid, Uid};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

const RECORD: &str = "volume.json";
const INSTANCE: &str = "bpffs";
/// The directory of the instance that the target shows (bpffs names have no dots).
const SHOWN: &str = "volume";

/// A publish request, checked.
#[derive(Debug, Clone)]
pub struct Publish {
    pub volume_id: String,
    pub target: PathBuf,
    pub readonly: bool,
    /// The pod's fsGroup: group of the pins (0660, or 0440 read-only).
    pub group: Option<u32>,
    pub request: resolve::Request,
}

/// What was published, as recorded beside the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    volume_id: String,
    target: PathBuf,
    readonly: bool,
    group: Option<u32>,
    program: String,
    maps: Vec<String>,
}

impl Record {
    fn of(p: &Publish) -> Record {
        Record {
            volume_id: p.volume_id.clone(),
            target: p.target.clone(),
            readonly: p.readonly,
            group: p.group,
            program: p.request.program.clone(),
            maps: p.request.maps.clone(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "volume_id": self.volume_id,
            "target": self.target,
            "readonly": self.readonly,
            "group": self.group,
            "program": self.program,
            "maps": self.maps,
        })
    }

    fn from_json(v: &Value) -> Option<Record> {
        Some(Record {
            volume_id: v.get("volume_id")?.as_str()?.to_string(),
            target: PathBuf::from(v.get("target")?.as_str()?),
            readonly: v.get("readonly")?.as_bool()?,
            group: match v.get("group")? {
                Value::Null => None,
                g => Some(u32::try_from(g.as_u64()?).ok()?),
            },
            program: v.get("program")?.as_str()?.to_string(),
            maps: v
                .get("maps")?
                .as_array()?
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
        })
    }
}

/// One step to take back.
enum Undo {
    RemoveDir(PathBuf),
    RemoveFile(PathBuf),
    Unmount(PathBuf),
}

/// Steps taken so far; dropped without `commit`, it takes them back, newest first.
#[derive(Default)]
struct Steps(Vec<Undo>);

impl Steps {
    fn push(&mut self, u: Undo) {
        self.0.push(u);
    }
    fn commit(mut self) {
        self.0.clear();
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        while let Some(step) = self.0.pop() {
            // Best effort: the error being returned is the one the caller needs to see.
            let result = match &step {
                Undo::RemoveDir(p) => std::fs::remove_dir(p).map_err(|e| e.to_string()),
                Undo::RemoveFile(p) => std::fs::remove_file(p).map_err(|e| e.to_string()),
                Undo::Unmount(p) => mounts::unmount_all(p).map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "csi: could not undo a step of a failed publish");
            }
        }
    }
}

/// The plugin's volumes: where their instances live, which targets are allowed, and the lock
/// that keeps two calls from working on the same paths at once.
pub struct Volumes {
    root: PathBuf,
    pods_dir: Option<PathBuf>,
    lock: Mutex<()>,
}

impl Volumes {
    /// `root` holds one directory per volume; `pods_dir` (the kubelet's pods directory), when
    /// given, is the only place targets may be.
    pub fn new(root: PathBuf, pods_dir: Option<PathBuf>) -> Result<Volumes, CsiError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| CsiError::io("create", &root, e))?;
        let pods_dir = pods_dir
            .map(|p| p.canonicalize().map_err(|e| CsiError::io("resolve", &p, e)))
            .transpose()?;
        Ok(Volumes {
            root,
            pods_dir,
            lock: Mutex::new(()),
        })
    }

    /// A volume's directory: named by a digest of its id, so no id (`..`, slashes, a very long
    /// one) reaches a path.
    fn dir_of(&self, volume_id: &str) -> PathBuf {
        let digest = Sha256::digest(volume_id.as_bytes());
        self.root.join(hex::encode(&digest[..16]))
    }

    /// Refuse a target that is relative, climbs with `..`, or (with a pods directory) lies
    /// outside it, also through a symbolic link in the part that exists.
    pub fn check_target(&self, raw: &str) -> Result<PathBuf, CsiError> {
        let bad = |why: &str| {
            Err(CsiError::InvalidArgument(format!(
                "target path {raw:?}: {why}"
            )))
        };
        let p = Path::new(raw);
        if !p.is_absolute() {
            return bad("not an absolute path");
        }
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return bad("'..' is not allowed");
        }
        if p.parent().is_none() {
            return bad("not a directory to mount on");
        }
        let p: PathBuf = p.components().collect();
        if let Ok(md) = std::fs::symlink_metadata(&p) {
            if md.file_type().is_symlink() {
                return bad("a symbolic link");
            }
            if !md.is_dir() {
                return bad("exists and is not a directory");
            }
        }
        if let Some(pods) = &self.pods_dir {
            // The deepest part that exists, with its links resolved, must be inside; the rest
            // is created by this plugin, so holds no links.
            let mut existing = p.parent();
            while let Some(d) = existing {
                if d.exists() {
                    break;
                }
                existing = d.parent();
            }
            let real = existing
                .map(|d| d.canonicalize())
                .transpose()
                .map_err(|e| CsiError::io("resolve", &p, e))?;
            let inside = p.starts_with(pods) && real.is_some_and(|r| r.starts_with(pods));
            if !inside || p == *pods {
                return bad(&format!(
                    "outside the kubelet's pods directory {} (--kubelet-pods-dir)",
                    pods.display()
                ));
            }
        }
        Ok(p)
    }

    fn read_record(dir: &Path) -> Result<Option<Record>, CsiError> {
        let path = dir.join(RECORD);
        match std::fs::read(&path) {
            Ok(b) => Ok(serde_json::from_slice(&b)
                .ok()
                .as_ref()
                .and_then(Record::from_json)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CsiError::io("read", path, e)),
        }
    }

    /// NodePublishVolume. `resolve` is asked for the maps only once the request is known to
    /// need a new mount, so a repeated call does not depend on the program still being there.
    pub fn publish(
        &self,
        p: &Publish,
        resolve: impl FnOnce(&resolve::Request) -> Result<Vec<Resolved>, CsiError>,
    ) -> Result<(), CsiError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir_of(&p.volume_id);
        let want = Record::of(p);
        if let Some(rec) = Self::read_record(&dir)? {
            let live = mounts::mounted_at(&rec.target)?.is_some();
            if live && rec == want {
                return Ok(());
            }
            if live {
                return Err(CsiError::AlreadyExists(format!(
                    "volume {:?} is already published at {} with other attributes; unpublish it first",
                    p.volume_id,
                    rec.target.display()
                )));
            }
            // A publish cut short (the plugin was killed half-way): clear it and start again.
            self.teardown(&dir, &rec)?;
        } else if dir.exists() {
            self.teardown_dir(&dir)?;
        }
        if mounts::mounted_at(&p.target)?.is_some() {
            return Err(CsiError::FailedPrecondition(format!(
                "something not published by this plugin is mounted at {}",
                p.target.display()
            )));
        }
        let maps = resolve(&p.request)?;
        let mut steps = Steps::default();
        mkdir(&dir, 0o700, &mut steps)?;
        let instance = dir.join(INSTANCE);
        mkdir(&instance, 0o700, &mut steps)?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("bpf"), &instance, Some("bpf"), flags, None::<&str>)
            .map_err(|e| CsiError::errno("mount bpffs on", &instance, e))?;
        steps.push(Undo::Unmount(instance.clone()));
        // A new instance starts with the kernel's preloaded iterators (maps.debug,
        // progs.debug, which list every map and program of the host and cannot be removed):
        // the pins go in a directory of the instance, and only that is shown to the pod.
        let shown = instance.join(SHOWN);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&shown)
            .map_err(|e| CsiError::io("create", &shown, e))?;
        let gid = p.group.map(Gid::from_raw);
        let pin_mode = match (p.group.is_some(), p.readonly) {
            (true, false) => 0o660,
            (true, true) => 0o440,
            (false, false) => 0o600,
            (false, true) => 0o400,
        };
        for m in &maps {
            let fd = sys::map_fd_by_id(m.kernel_id).map_err(|_| {
                CsiError::NotFound(format!(
                    "map {:?} (kernel id {}) is gone; the program is being replaced?",
                    m.name, m.kernel_id
                ))
            })?;
            // Kernel ids are reused: the map must still be the one the manager named.
            let info = sys::map_info(fd.as_fd())?;
            if !m.name.starts_with(&info.name) || info.name.is_empty() {
                return Err(CsiError::NotFound(format!(
                    "map {:?} (kernel id {}) is gone; the id now belongs to map {:?}",
                    m.name, m.kernel_id, info.name
                )));
            }
            let pin = shown.join(&m.name);
            sys::pin(fd.as_fd(), &pin)?;
            chown(&pin, Some(Uid::from_raw(0)), gid)
                .map_err(|e| CsiError::errno("chown", &pin, e))?;
            set_mode(&pin, pin_mode)?;
        }
        chown(&shown, Some(Uid::from_raw(0)), gid)
            .map_err(|e| CsiError::errno("chown", &shown, e))?;
        set_mode(&shown, 0o750)?;
        // The target: kubelet makes its parent; the plugin makes the directory itself.
        if !p.target.exists() {
            mkdir(&p.target, 0o750, &mut steps)?;
        }
        let record = dir.join(RECORD);
        let text = serde_json::to_vec_pretty(&want.to_json())
            .map_err(|e| CsiError::Worker(format!("cannot encode the volume record: {e}")))?;
        std::fs::write(&record, text).map_err(|e| CsiError::io("write", &record, e))?;
        steps.push(Undo::RemoveFile(record));
        mount(
            Some(&shown),
            &p.target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| CsiError::errno("bind-mount onto", &p.target, e))?;
        steps.push(Undo::Unmount(p.target.clone()));
        // A bind mount takes its own flags only on a remount.
        let mut bind = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
        if p.readonly {
            bind |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, &p.target, None::<&str>, bind, None::<&str>)
            .map_err(|e| CsiError::errno("remount", &p.target, e))?;
        steps.commit();
        tracing::info!(
            volume = %p.volume_id,
            target = %p.target.display(),
            program = %p.request.program,
            maps = %p.request.maps.join(","),
            "csi: published"
        );
        Ok(())
    }

    /// NodeUnpublishVolume: unmount the target and the volume's instance, remove both
    /// directories. A volume not (or no longer) published is not an error.
    pub fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), CsiError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir_of(volume_id);
        match Self::read_record(&dir)? {
            Some(rec) if rec.target != target => Err(CsiError::NotFound(format!(
                "volume {volume_id:?} is published at {}, not at {}",
                rec.target.display(),
                target.display()
            ))),
            Some(rec) => self.teardown(&dir, &rec),
            None => {
                if dir.exists() {
                    self.teardown_dir(&dir)?;
                }
                // Already unpublished: what remains is at most the empty directory.
                if mounts::mounted_at(target)?.is_none() {
                    remove_dir_if_empty(target)?;
                }
                Ok(())
            }
        }
    }

    fn teardown(&self, dir: &Path, rec: &Record) -> Result<(), CsiError> {
        if mounts::mounted_at(&rec.target)?.as_deref() == Some("bpf") {
            mounts::unmount_all(&rec.target)?;
        }
        remove_dir_if_empty(&rec.target)?;
        self.teardown_dir(dir)
    }

    /// Unmount and remove a volume's own directory (its instance and record).
    fn teardown_dir(&self, dir: &Path) -> Result<(), CsiError> {
        let instance = dir.join(INSTANCE);
        mounts::unmount_all(&instance)?;
        remove_dir_if_empty(&instance)?;
        let record = dir.join(RECORD);
        match std::fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CsiError::io("remove", record, e)),
        }
        remove_dir_if_empty(dir)
    }

    /// The volumes published now (for the tests and for logs): their record directories.
    pub fn published(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.root)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn mkdir(p: &Path, mode: u32, steps: &mut Steps) -> Result<(), CsiError> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(|e| CsiError::io("create", p, e))?;
    steps.push(Undo::RemoveDir(p.to_path_buf()));
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), CsiError> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| CsiError::io("chmod", p, e))
}

/// Remove a directory the plugin made; one that is gone is fine, one that is not empty holds
/// something else's files and stays (a warning, not a failure the kubelet would retry forever).
fn remove_dir_if_empty(p: &Path) -> Result<(), CsiError> {
    match std::fs::remove_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOTEMPTY)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            tracing::warn!(path = %p.display(), "csi: left in place, it is not an empty directory");
            Ok(())
        }
        Err(e) => Err(CsiError::io("remove", p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_inside_the_pods_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let pods = tmp.path().join("pods");
        std::fs::create_dir_all(pods.join("uid/volumes")).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, pods.join("link")).unwrap();
        let v = Volumes::new(tmp.path().join("state"), Some(pods.clone())).unwrap();
        let ok = pods.join("uid/volumes/mount");
        assert_eq!(v.check_target(ok.to_str().unwrap()).unwrap(), ok);
        // Not made yet below an existing part: still inside.
        assert!(v
            .check_target(pods.join("new/a/b").to_str().unwrap())
            .is_ok());
        for bad in [
            "relative/path".to_string(),
            "/".to_string(),
            pods.display().to_string(),
            pods.join("../outside/x").display().to_string(),
            pods.join("link/x").display().to_string(),
            pods.join("link").display().to_string(),
            outside.join("x").display().to_string(),
        ] {
            assert!(
                matches!(v.check_target(&bad), Err(CsiError::InvalidArgument(_))),
                "{bad}"
            );
        }
        // Without a pods directory, any absolute path without `..` will do.
        let free = Volumes::new(tmp.path().join("state2"), None).unwrap();
        assert!(free
            .check_target(outside.join("x").to_str().unwrap())
            .is_ok());
    }

    #[test]
    fn volume_ids_never_reach_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Volumes::new(tmp.path().to_path_buf(), None).unwrap();
        for id in ["../../etc", "a/b", "", &"x".repeat(5000)] {
            let d = v.dir_of(id);
            assert_eq!(d.parent(), Some(tmp.path()));
            assert_eq!(d.file_name().unwrap().len(), 32);
        }
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            volume_id: "v".into(),
            target: "/t".into(),
            readonly: true,
            group: Some(7),
            program: "p".into(),
            maps: vec!["a".into()],
        };
        assert_eq!(Record::from_json(&r.to_json()), Some(r));
    }
}
