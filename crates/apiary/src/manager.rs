//! The manager: its configuration, store, mutation lock and pin paths, which every operation
//! shares. The operations, each all-or-nothing across the kernel, bpffs and the store, live
//! beside it: `load`, `attach` (attach, detach, unload), `queries`, `update`, `reconcile`,
//! `chain`, with the load sequence they share in `pipeline`.

use crate::error::{Error, Result};
use crate::lock::MutationLock;
use apiary_core::elf;
use apiary_core::paths::PinPaths;
use apiary_core::ProgramId;
use apiary_kernel as kernel;
use apiary_store::{self as store, MapRecord, ProgramRecord, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    /// Where objects are opened and loaded: in this process, or (the daemon) in a loader
    /// process that a crash in libbpf cannot take the manager down with.
    pub loader: kernel::Loader,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/apiary"),
            bpffs: PathBuf::from("/sys/fs/bpf/apiary"),
            loader: kernel::Loader::in_process(),
        }
    }
}

pub struct Manager {
    cfg: Config,
    pub(crate) paths: PinPaths,
    store: Mutex<Store>,
    images: Mutex<Option<std::sync::Arc<crate::images::ImageSettings>>>,
}

impl Manager {
    pub fn open(cfg: Config) -> Result<Manager> {
        let store = Store::open(&cfg.state_dir)?;
        crate::timing::mark("store open");
        Ok(Manager {
            paths: PinPaths::new(&cfg.bpffs),
            cfg,
            store: Mutex::new(store),
            images: Mutex::new(None),
        })
    }

    /// Use these image settings instead of the config file's (flags on the command line).
    pub fn set_image_settings(&self, s: crate::images::ImageSettings) {
        *self.images.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(s));
    }

    /// The image settings: set explicitly, or read once from the config file.
    pub fn image_settings(&self) -> Result<std::sync::Arc<crate::images::ImageSettings>> {
        let mut g = self.images.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let s = std::sync::Arc::new(crate::images::ImageSettings::load(
            crate::images::config_path().as_deref(),
            &self.cfg.state_dir,
        )?);
        *g = Some(s.clone());
        Ok(s)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock(&self) -> Result<MutationLock> {
        kernel::ensure_mounted(&self.cfg.bpffs)?;
        let lock = MutationLock::acquire(&self.cfg.state_dir);
        crate::timing::mark("lock");
        lock
    }

    /// Where map `m` is pinned.
    pub(crate) fn map_path(&self, m: &MapRecord) -> PathBuf {
        if m.by_name {
            self.paths.shared_map(&m.name)
        } else {
            self.paths.map(m.owner_id, &m.name)
        }
    }

    /// The maps of `info` declared with LIBBPF_PIN_BY_NAME that a program of this instance
    /// already shares, by name. A map of the same name but another definition is refused:
    /// libbpf would fail on it with a bare EINVAL, or worse, reuse it.
    pub(crate) fn shared_maps(&self, info: &elf::ObjectInfo) -> Result<HashMap<String, MapRecord>> {
        let mut out = HashMap::new();
        let s = self.store();
        for d in info.maps.iter().filter(|d| info.pinned_by_name(&d.name)) {
            let Some(rec) = store::shared_map(s.read(), &d.name)? else {
                continue;
            };
            let diffs = crate::update::map_differences(&rec, d, info.btf.as_ref());
            if !diffs.is_empty() {
                let users = store::map_users(s.read(), rec.id)?;
                let users: Vec<String> = users.iter().map(ToString::to_string).collect();
                return Err(Error::FailedPrecondition(format!(
                    "map {:?} is pinned by name (LIBBPF_PIN_BY_NAME), and the map of that name that program(s) {} share differs from this object's ({}); rename the map in one of the objects, or unload {} first",
                    d.name,
                    users.join(", "),
                    diffs.join(", "),
                    users.join(" "),
                )));
            }
            out.insert(d.name.clone(), rec);
        }
        Ok(out)
    }

    pub(crate) fn program_record(&self, id: ProgramId) -> Result<ProgramRecord> {
        store::get_program(self.store().read(), id)?.ok_or_else(|| Error::not_found("program", id))
    }
}
