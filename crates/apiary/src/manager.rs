//! The manager: load, attach, detach, unload, list and inspect, each one all-or-nothing across
//! the kernel, bpffs and the store.

use crate::error::{Error, Result};
use crate::lock::MutationLock;
use crate::views::*;
use apiary_core::elf;
use apiary_core::paths::PinPaths;
use apiary_core::types::tcx::TcxAttach;
use apiary_core::{AttachSpec, LinkId, ProgramId, ProgramType, TcDirection};
use apiary_kernel::{
    self as kernel, sys, AttachContext, Attachment, KernelError, TcFilter, TcxAnchor,
};
use apiary_store::{
    self as store, GlobalRecord, LinkRecord, MapRecord, NewProgram, ProgramRecord, Store,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
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

#[derive(Debug, Clone)]
pub enum ObjectSource {
    Path(PathBuf),
    Bytes {
        name: String,
        bytes: Vec<u8>,
    },
    /// A bytecode image, pulled (or taken from the cache) under the image settings' signature
    /// policy; the store records the digest that was loaded.
    Image {
        reference: String,
        pull_policy: apiary_oci::PullPolicy,
    },
}

impl ObjectSource {
    fn describe(&self) -> String {
        match self {
            ObjectSource::Path(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
            ObjectSource::Bytes { name, .. } => name.clone(),
            ObjectSource::Image { reference, .. } => reference.clone(),
        }
    }
}

/// A load request, validated by the front door's parser.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub source: ObjectSource,
    pub programs: Vec<(Option<ProgramType>, String)>,
    pub raw_globals: Vec<(String, Vec<u8>)>,
    pub typed_globals: Vec<(String, String)>,
    pub metadata: BTreeMap<String, String>,
    pub map_owner_id: Option<ProgramId>,
    /// Attach right after loading; if the attach fails the load is rolled back.
    pub attach: Option<AttachSpec>,
}

#[derive(Debug, Clone)]
pub enum MapRef {
    KernelId(u32),
    ProgramMap(ProgramId, String),
}

impl std::str::FromStr for MapRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((p, m)) if !m.is_empty() => Ok(MapRef::ProgramMap(p.parse()?, m.to_string())),
            _ => s
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .map(MapRef::KernelId)
                .ok_or_else(|| format!("invalid map reference {s:?}: expected a kernel MAP_ID or PROGRAM_ID:MAP_NAME")),
        }
    }
}

pub struct Manager {
    cfg: Config,
    pub(crate) paths: PinPaths,
    store: Mutex<Store>,
    images: Mutex<Option<std::sync::Arc<crate::images::ImageSettings>>>,
}

/// Undo list for a multi-step kernel change: pins made so far are removed if the change does
/// not complete.
pub(crate) struct Undo {
    pins: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    armed: bool,
}

impl Undo {
    pub(crate) fn new() -> Self {
        Undo {
            pins: Vec::new(),
            dirs: Vec::new(),
            armed: true,
        }
    }
    pub(crate) fn pin(&mut self, p: PathBuf) {
        self.pins.push(p);
    }
    pub(crate) fn dir(&mut self, p: PathBuf) {
        self.dirs.push(p);
    }
    pub(crate) fn commit(mut self) {
        self.armed = false;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for p in self.pins.iter().rev() {
            let _ = sys::unpin(p);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Globals as the store keeps them (hex), and back as the loader takes them.
pub(crate) fn global_records(globals: &[kernel::GlobalPatch]) -> Vec<GlobalRecord> {
    globals
        .iter()
        .map(|g| GlobalRecord {
            name: g.name.clone(),
            section: g.section.clone(),
            offset: g.offset,
            hex: hex::encode(&g.bytes),
        })
        .collect()
}

pub(crate) fn global_patches(records: &[GlobalRecord]) -> Result<Vec<kernel::GlobalPatch>> {
    records
        .iter()
        .map(|g| {
            Ok(kernel::GlobalPatch {
                name: g.name.clone(),
                section: g.section.clone(),
                offset: g.offset,
                bytes: hex::decode(&g.hex)
                    .map_err(|e| Error::Internal(format!("stored global {}: {e}", g.name)))?,
            })
        })
        .collect()
}

/// The record of a map a load created, owned by `owner`.
pub(crate) fn map_record(
    owner: ProgramId,
    m: &kernel::loader::LoadedMapInfo,
    by_name: bool,
) -> MapRecord {
    MapRecord {
        by_name,
        id: 0,
        owner_id: owner,
        name: m.name.clone(),
        map_type: m.info.map_type.clone(),
        kernel_id: m.info.id,
        key_size: m.info.key_size,
        value_size: m.info.value_size,
        max_entries: m.info.max_entries,
    }
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The object name a program's internal maps were created under (`NAME.rodata`), so that a
/// restore or a hot update from a differently named file keeps them. libbpf truncates the name
/// to fit each suffix, so the longest recorded prefix is the one that reproduces them all.
pub(crate) fn recorded_object_name(maps: &[MapRecord]) -> Option<String> {
    maps.iter()
        .filter_map(|m| m.name.split_once('.').map(|(p, _)| p))
        .max_by_key(|p| p.len())
        .map(str::to_string)
}

/// Is this a libbpf internal map (`.rodata`, `.bss`, `.data`, `.kconfig`)? Their names carry the
/// section after a dot. Each program keeps its own, so its globals stay its own.
pub(crate) fn is_internal_map(name: &str) -> bool {
    name.contains('.')
}

fn ensure_bpffs(root: &Path) -> Result<()> {
    if kernel::is_bpffs(root) {
        return Ok(());
    }
    let base = Path::new("/sys/fs/bpf");
    if root.starts_with(base) && !kernel::is_bpffs(base) {
        // Like bpftool, mount bpffs where it is expected when nothing is mounted there.
        let _ = std::fs::create_dir_all(base);
        if nix::mount::mount(
            Some("bpf"),
            base,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .is_ok()
            && kernel::is_bpffs(root)
        {
            return Ok(());
        }
    }
    Err(Error::FailedPrecondition(format!(
        "{} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf` or choose another --bpffs",
        root.display()
    )))
}

impl Manager {
    pub fn open(cfg: Config) -> Result<Manager> {
        let store = Store::open(&cfg.state_dir)?;
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
        ensure_bpffs(&self.cfg.bpffs)?;
        MutationLock::acquire(&self.cfg.state_dir)
    }

    fn link_view(&self, l: &LinkRecord, program_name: &str) -> LinkView {
        // Reading an iterator's pinned link runs it once.
        let read_with = matches!(l.spec, AttachSpec::Iter(_))
            .then(|| format!("cat {}", self.paths.link(l.id, 0).display()));
        LinkView {
            id: l.id,
            program_id: l.program_id,
            program_name: program_name.to_string(),
            attach_point: l.spec.describe(),
            spec: l.spec.clone(),
            kernel_link_ids: l.kernel_link_ids.clone(),
            created_at: l.created_at.clone(),
            read_with,
        }
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

    // ---------------------------------------------------------------- load

    pub fn load(&self, spec: LoadSpec) -> Result<Vec<ProgramView>> {
        let mut source = spec.source.describe();
        let mut spec = spec;
        let bytes = match &spec.source {
            ObjectSource::Path(p) => std::fs::read(p).map_err(|e| KernelError::ReadObject {
                path: p.clone(),
                error: e,
            })?,
            ObjectSource::Bytes { bytes, .. } => bytes.clone(),
            ObjectSource::Image {
                reference,
                pull_policy,
            } => {
                let settings = self.image_settings()?;
                let (img, verdict) = settings.pull(reference, *pull_policy)?;
                // Record exactly what was loaded: the manifest digest, not the tag.
                source = format!("{}@{}", img.reference.repository_name(), img.digest);
                let signature = match verdict {
                    apiary_oci::Verdict::NotChecked => "not checked".to_string(),
                    apiary_oci::Verdict::Verified(v) => format!("verified by key {}", v.key),
                    apiary_oci::Verdict::Warning(w) => format!("UNVERIFIED (policy warn): {w}"),
                };
                spec.metadata
                    .insert("apiary.dev/image".into(), reference.clone());
                spec.metadata
                    .insert("apiary.dev/image-signature".into(), signature);
                if spec.programs.is_empty() {
                    // The image's label names its programs; their types come from the sections.
                    spec.programs = img.programs.keys().map(|n| (None, n.clone())).collect();
                }
                img.object
            }
        };
        let info = elf::inspect(&bytes).map_err(|error| Error::Object {
            source_name: source.clone(),
            error,
        })?;
        let globals = apiary_core::globals::resolve(&info, &spec.raw_globals, &spec.typed_globals)
            .map_err(Error::InvalidArgument)?;
        if let Some(a) = &spec.attach {
            a.validate().map_err(Error::InvalidArgument)?;
            let n = if spec.programs.is_empty() {
                info.programs.len()
            } else {
                spec.programs.len()
            };
            if n != 1 {
                return Err(Error::InvalidArgument(
                    "attaching while loading needs exactly one program; load them first, then attach each".into(),
                ));
            }
        }
        for k in spec.metadata.keys() {
            if k.is_empty() {
                return Err(Error::InvalidArgument(
                    "metadata keys must not be empty".into(),
                ));
            }
        }

        let _lock = self.lock()?;
        // Map sharing: maps pinned by name are shared with this instance's other programs that
        // declare them; with --map-owner-id, the owner's other (non-internal) maps by name.
        let mut shared = self.shared_maps(&info)?;
        let mut reuse: Vec<(String, PathBuf)> = shared
            .values()
            .map(|m| (m.name.clone(), self.map_path(m)))
            .collect();
        if let Some(owner) = spec.map_owner_id {
            let rec = self.program_record(owner)?;
            let owner_id = rec.map_owner_id.unwrap_or(owner);
            let owner_maps_all = store::maps_of_program(self.store().read(), owner)?;
            let mut any = false;
            for m in owner_maps_all {
                if is_internal_map(&m.name) || !info.maps.iter().any(|d| d.name == m.name) {
                    continue;
                }
                any = true;
                if !shared.contains_key(&m.name) {
                    reuse.push((m.name.clone(), self.map_path(&m)));
                    shared.insert(m.name.clone(), m);
                }
            }
            if !any {
                return Err(Error::InvalidArgument(format!(
                    "--map-owner-id {owner}: the object shares no map names with program {owner_id}"
                )));
            }
        }

        let req = kernel::LoadRequest {
            object: &bytes,
            source: &source,
            programs: spec
                .programs
                .iter()
                .map(|(ty, name)| kernel::ProgramSelect {
                    ty: *ty,
                    name: name.clone(),
                })
                .collect(),
            globals: globals.clone(),
            reuse_maps: reuse,
            object_name: None,
        };
        let loaded = self.cfg.loader.load(&req)?;
        let sha = sha256_hex(&bytes);
        let global_records = global_records(&globals);

        // The records are committed first and the pins made after: a crash in between leaves
        // records without pins, which `reconcile` restores from the stored object, never pins
        // the store does not know. A pin that fails removes the records again.
        let ids = self.store().write(|tx| -> Result<Vec<ProgramId>> {
            store::put_object(tx, &sha, &bytes)?;
            let mut ids: Vec<ProgramId> = Vec::new();
            for p in &loaded.programs {
                let owner = spec.map_owner_id.or(ids.first().copied());
                let id = store::insert_program(
                    tx,
                    &NewProgram {
                        name: &p.name,
                        prog_type: p.ty,
                        section: &p.section,
                        source: &source,
                        object_sha256: &sha,
                        map_owner_id: owner,
                        globals: &global_records,
                        metadata: &spec.metadata,
                    },
                )?;
                store::set_program_kernel(tx, id, p.kernel_id, &p.tag)?;
                if let Some(block) = block_json(capture_block(&loaded, &p.name, p.ty).as_ref()) {
                    store::set_program_block(tx, id, Some(&block))?;
                }
                ids.push(id);
            }
            let first = *ids
                .first()
                .ok_or_else(|| Error::Internal("load produced no program".into()))?;
            for m in &loaded.maps {
                let map_id = if m.reused {
                    match shared.get(&m.name) {
                        Some(r) => r.id,
                        None => continue,
                    }
                } else {
                    store::insert_map(tx, &map_record(first, m, info.pinned_by_name(&m.name)))?
                };
                for id in &ids {
                    store::add_program_map(tx, *id, map_id)?;
                }
            }
            Ok(ids)
        })?;
        let first = ids[0];
        let mut undo = Undo::new();
        let pinned = (|| -> Result<()> {
            for (p, id) in loaded.programs.iter().zip(&ids) {
                let path = self.paths.program(*id);
                loaded.pin_program(&p.name, &path)?;
                undo.pin(path);
            }
            undo.dir(self.paths.map_owner_dir(first));
            for m in loaded.maps.iter().filter(|m| !m.reused) {
                let path = self.map_path(&map_record(first, m, info.pinned_by_name(&m.name)));
                loaded.pin_map(&m.name, &path)?;
                undo.pin(path);
            }
            Ok(())
        })();
        if let Err(e) = pinned {
            drop(undo);
            let _ = self.store().write(|tx| -> Result<()> {
                for id in ids.iter().rev() {
                    store::delete_program(tx, *id)?;
                }
                Ok(())
            });
            return Err(e);
        }
        undo.commit();
        drop(loaded);

        if let Some(a) = spec.attach {
            let id = ids[0];
            if let Err(e) = self.attach_locked(id, a) {
                // Roll back the load: the user asked for both or nothing.
                if let Err(re) = self.unload_locked(&[id], true) {
                    return Err(Error::Internal(format!(
                        "{e}; rolling back the load also failed: {re}"
                    )));
                }
                return Err(e);
            }
        }
        drop(_lock);
        let s = self.store();
        let links = store::list_links(s.read(), None)?;
        let mut out = Vec::new();
        for id in &ids {
            let r = store::get_program(s.read(), *id)?
                .ok_or_else(|| Error::not_found("program", id))?;
            let ls: Vec<&LinkRecord> = links.iter().filter(|l| l.program_id == *id).collect();
            out.push(program_view(&r, &ls));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- attach

    pub fn attach(&self, id: ProgramId, spec: AttachSpec) -> Result<LinkView> {
        spec.validate().map_err(Error::InvalidArgument)?;
        let _lock = self.lock()?;
        let link = self.attach_locked(id, spec)?;
        drop(_lock);
        self.get_link(link)
    }

    fn attach_locked(&self, id: ProgramId, mut spec: AttachSpec) -> Result<LinkId> {
        let prog = self.program_record(id)?;
        spec.resolve(&prog.section)
            .map_err(Error::InvalidArgument)?;
        spec.validate().map_err(Error::InvalidArgument)?;
        let want = spec.program_type();
        if !prog.prog_type.compatible_with(want) {
            return Err(Error::InvalidArgument(format!(
                "program {id} ({}) is a {} program (section {:?}); it cannot be attached as {want}",
                prog.name, prog.prog_type, prog.section
            )));
        }
        if spec.chain().is_some() {
            return self.attach_to_chain(&prog, &spec);
        }
        let existing = store::list_links(self.store().read(), None)?;
        let ctx = self.attach_context(&spec, &existing)?;
        let fd = sys::obj_get(&self.paths.program(id)).map_err(|e| {
            Error::FailedPrecondition(format!(
                "program {id} is recorded but its pin is missing ({e}); run `apiary unload {id}` and load it again"
            ))
        })?;
        let attachment = kernel::attach(fd.as_fd(), &spec, &ctx)?;

        let mut undo = Undo::new();
        let (fds, tc) = match attachment {
            Attachment::Links(fds) => (fds, None),
            Attachment::TcFilter(f) => (Vec::new(), Some(f)),
        };
        let mut kernel_ids = Vec::new();
        for f in &fds {
            kernel_ids.push(sys::link_info(f.as_fd())?.id);
        }
        // Record, then pin (see `load` for why this order).
        let extra = tc
            .as_ref()
            .map(|t| serde_json::to_value(t).unwrap_or_default());
        let res = self
            .store()
            .write(|tx| -> Result<LinkId> {
                let link = store::insert_link(tx, id, &spec)?;
                store::set_link_kernel(tx, link, &kernel_ids, extra.as_ref())?;
                Ok(link)
            })
            .and_then(|link| {
                let pinned = (|| -> Result<()> {
                    undo.dir(self.paths.link_dir(link));
                    for (i, f) in fds.iter().enumerate() {
                        let path = self.paths.link(link, i);
                        sys::pin(f.as_fd(), &path)?;
                        undo.pin(path);
                    }
                    Ok(())
                })();
                match pinned {
                    Ok(()) => Ok(link),
                    Err(e) => {
                        let _ = self
                            .store()
                            .write(|tx| -> Result<()> { Ok(store::delete_link(tx, link)?) });
                        Err(e)
                    }
                }
            });
        match res {
            Ok(link) => {
                undo.commit();
                Ok(link)
            }
            Err(e) => {
                drop(undo);
                if let Some(t) = &tc {
                    let _ = kernel::attach::detach_tc_filter(fd.as_fd(), t);
                }
                Err(e)
            }
        }
    }

    fn attach_context(&self, spec: &AttachSpec, existing: &[LinkRecord]) -> Result<AttachContext> {
        // Only legacy TC filters share a hook exclusively.
        let same_iface = |a: &AttachSpec| -> bool {
            let (AttachSpec::Tc(x), AttachSpec::Tc(y)) = (spec, a) else {
                return false;
            };
            x.legacy
                && y.legacy
                && x.iface == y.iface
                && x.netns == y.netns
                && x.direction == y.direction
        };
        if let Some(l) = existing.iter().find(|l| same_iface(&l.spec)) {
            return Err(KernelError::HookBusy {
                hook: spec.describe(),
                reason: format!(
                    "apiary link {} (program {}) is attached there; detach it first",
                    l.id, l.program_id
                ),
            }
            .into());
        }
        let mut ctx = AttachContext::default();
        if let AttachSpec::Tcx(TcxAttach {
            iface,
            netns,
            direction,
            priority,
        }) = spec
        {
            ctx.tcx_anchor = tcx_anchor(existing, iface, netns.as_deref(), *direction, *priority);
        }
        Ok(ctx)
    }

    // ---------------------------------------------------------------- detach / unload

    pub fn detach(&self, id: LinkId) -> Result<()> {
        let _lock = self.lock()?;
        let link = store::get_link(self.store().read(), id)?
            .ok_or_else(|| Error::not_found("link", id))?;
        self.detach_record(&link)
    }

    fn detach_record(&self, link: &LinkRecord) -> Result<()> {
        let slot = store::chain_slot_of_link(self.store().read(), link.id)?;
        if let Some(slot) = slot {
            return self.detach_from_chain(link.id, &slot);
        }
        if let Some(extra) = &link.extra {
            if let Ok(tc) = serde_json::from_value::<TcFilter>(extra.clone()) {
                match sys::obj_get(&self.paths.program(link.program_id)) {
                    Ok(fd) => kernel::attach::detach_tc_filter(fd.as_fd(), &tc)?,
                    Err(_) => {
                        return Err(Error::FailedPrecondition(format!(
                            "link {}: program {} pin is missing, cannot remove its tc filter",
                            link.id, link.program_id
                        )))
                    }
                }
            }
        }
        // Forget the link first, then unpin: a crash in between leaves a pin the store does not
        // know, which `reconcile` removes, rather than a record that would be re-attached.
        self.store()
            .write(|tx| -> Result<()> { Ok(store::delete_link(tx, link.id)?) })?;
        for i in 0..link.kernel_link_ids.len().max(1) {
            sys::link_detach_now(&self.paths.link(link.id, i));
            sys::unpin(&self.paths.link(link.id, i))?;
        }
        let _ = std::fs::remove_dir(self.paths.link_dir(link.id));
        Ok(())
    }

    /// Unload programs. Several ids may be given at once; programs that borrow another's maps
    /// are unloaded before the owner.
    pub fn unload(&self, ids: &[ProgramId], force: bool) -> Result<Vec<ProgramId>> {
        let _lock = self.lock()?;
        self.unload_locked(ids, force)
    }

    fn unload_locked(&self, ids: &[ProgramId], force: bool) -> Result<Vec<ProgramId>> {
        let set: HashSet<ProgramId> = ids.iter().copied().collect();
        let mut records = Vec::new();
        for id in ids {
            records.push(self.program_record(*id)?);
        }
        // Validate everything before changing anything.
        for r in &records {
            let links = store::list_links(self.store().read(), Some(r.id))?;
            if !links.is_empty() && !force {
                let l: Vec<String> = links.iter().map(|l| l.id.to_string()).collect();
                return Err(Error::FailedPrecondition(format!(
                    "program {} ({}) has {} link(s) (ids {}); detach them first or use --force",
                    r.id,
                    r.name,
                    links.len(),
                    l.join(", ")
                )));
            }
            let borrowers: Vec<ProgramId> = store::map_borrowers(self.store().read(), r.id)?
                .into_iter()
                .filter(|b| !set.contains(b))
                .collect();
            if !borrowers.is_empty() {
                let b: Vec<String> = borrowers.iter().map(|b| b.to_string()).collect();
                return Err(Error::FailedPrecondition(format!(
                    "program {} ({}) owns maps still used by program(s) {}; unload those first, or together: apiary unload {} {}",
                    r.id,
                    r.name,
                    b.join(", "),
                    b.join(" "),
                    r.id
                )));
            }
        }
        // Borrowers first, owners last.
        records.sort_by_key(|r| std::cmp::Reverse(r.id));
        let mut done = Vec::new();
        for r in &records {
            let links = store::list_links(self.store().read(), Some(r.id))?;
            for l in links {
                self.detach_record(&l)?;
            }
            // A map shared by name outlives this program while another program uses it: it
            // passes to the next user. Everything else it owns goes with it.
            let owned = store::maps_owned_by(self.store().read(), r.id)?;
            let gone = self.store().write(|tx| -> Result<Vec<MapRecord>> {
                let mut gone = Vec::new();
                for m in owned {
                    let next = store::map_users(tx, m.id)?.into_iter().find(|u| *u != r.id);
                    match next {
                        Some(u) if m.by_name => store::set_map_owner(tx, m.id, u)?,
                        _ => gone.push(m),
                    }
                }
                store::delete_program(tx, r.id)?;
                Ok(gone)
            })?;
            sys::unpin(&self.paths.program(r.id))?;
            for m in &gone {
                sys::unpin(&self.map_path(m))?;
            }
            let _ = std::fs::remove_dir(self.paths.map_owner_dir(r.id));
            done.push(r.id);
        }
        Ok(done)
    }

    // ---------------------------------------------------------------- queries

    pub fn list_programs(
        &self,
        all: bool,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<ProgramView>> {
        let (records, links) = {
            let s = self.store();
            (
                store::list_programs(s.read())?,
                store::list_links(s.read(), None)?,
            )
        };
        let mut by_prog: HashMap<ProgramId, Vec<&LinkRecord>> = HashMap::new();
        for l in &links {
            by_prog.entry(l.program_id).or_default().push(l);
        }
        let mut out = Vec::new();
        let mut managed_kids = HashSet::new();
        for r in records {
            managed_kids.insert(r.kernel_id);
            if !metadata.iter().all(|(k, v)| r.metadata.get(k) == Some(v)) {
                continue;
            }
            let ls = by_prog.get(&r.id).map(Vec::as_slice).unwrap_or(&[]);
            out.push(program_view(&r, ls));
        }
        if all && metadata.is_empty() {
            for kid in sys::ids(sys::IdKind::Program) {
                if managed_kids.contains(&kid) {
                    continue;
                }
                let Ok(fd) = sys::prog_fd_by_id(kid) else {
                    continue;
                };
                let Ok(info) = sys::prog_info(fd.as_fd()) else {
                    continue;
                };
                out.push(ProgramView {
                    id: None,
                    kernel_id: kid,
                    name: info.name,
                    prog_type: info.prog_type,
                    section: None,
                    source: None,
                    links: vec![],
                    attach_points: vec![],
                    loaded_at: None,
                    map_owner_id: None,
                    metadata: BTreeMap::new(),
                    managed: false,
                });
            }
        }
        Ok(out)
    }

    pub fn get_program(&self, id: ProgramId) -> Result<ProgramDetail> {
        let r = self.program_record(id)?;
        let links = store::list_links(self.store().read(), Some(id))?;
        let maps = store::maps_of_program(self.store().read(), id)?;
        let view = program_view(&r, &links.iter().collect::<Vec<_>>());
        let (kernel, kernel_error) =
            match sys::obj_get(&self.paths.program(id)).and_then(|fd| sys::prog_info(fd.as_fd())) {
                Ok(i) => (Some(i), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "not found in the kernel ({e}); bpffs may have been wiped"
                    )),
                ),
            };
        let link_details = links.iter().map(|l| self.link_view(l, &r.name)).collect();
        let maps = maps
            .iter()
            .map(|m| {
                Ok(managed_map_view(
                    m,
                    store::map_users(self.store().read(), m.id)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(ProgramDetail {
            program: view,
            tag: r.tag.clone(),
            globals: r.globals.clone(),
            maps,
            link_details,
            kernel,
            kernel_error,
            stats_enabled: std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                .map(|s| s.trim() == "1")
                .unwrap_or(false),
        })
    }

    pub fn list_links(&self, program: Option<ProgramId>) -> Result<Vec<LinkView>> {
        if let Some(p) = program {
            self.program_record(p)?;
        }
        let s = self.store();
        let names: HashMap<ProgramId, String> = store::list_programs(s.read())?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        Ok(store::list_links(s.read(), program)?
            .iter()
            .map(|l| {
                self.link_view(
                    l,
                    names.get(&l.program_id).map(String::as_str).unwrap_or(""),
                )
            })
            .collect())
    }

    pub fn get_link(&self, id: LinkId) -> Result<LinkView> {
        let l = store::get_link(self.store().read(), id)?
            .ok_or_else(|| Error::not_found("link", id))?;
        let p = self.program_record(l.program_id)?;
        Ok(self.link_view(&l, &p.name))
    }

    pub fn list_maps(&self, all: bool) -> Result<Vec<MapView>> {
        let s = self.store();
        let maps = store::list_maps(s.read())?;
        let mut out = Vec::new();
        let mut kids = HashSet::new();
        for m in &maps {
            kids.insert(m.kernel_id);
            let users = store::map_users(s.read(), m.id)?;
            out.push(managed_map_view(m, users));
        }
        drop(s);
        if all {
            for kid in sys::ids(sys::IdKind::Map) {
                if kids.contains(&kid) {
                    continue;
                }
                let Ok(fd) = sys::map_fd_by_id(kid) else {
                    continue;
                };
                let Ok(i) = sys::map_info(fd.as_fd()) else {
                    continue;
                };
                out.push(MapView {
                    kernel_id: kid,
                    name: i.name,
                    map_type: i.map_type,
                    key_size: i.key_size,
                    value_size: i.value_size,
                    max_entries: i.max_entries,
                    owner_id: None,
                    used_by: vec![],
                    managed: false,
                    pinned_by_name: false,
                });
            }
        }
        Ok(out)
    }

    pub fn dump_map(&self, target: &MapRef, limit: usize) -> Result<MapDump> {
        let fd = match target {
            MapRef::KernelId(id) => sys::map_fd_by_id(*id).map_err(|e| match e {
                KernelError::NotFound { .. } => Error::not_found("map", id),
                e => e.into(),
            })?,
            MapRef::ProgramMap(pid, name) => {
                self.program_record(*pid)?;
                let maps = store::maps_of_program(self.store().read(), *pid)?;
                let m = maps.iter().find(|m| &m.name == name).ok_or_else(|| {
                    let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
                    Error::NotFound {
                        kind: "map",
                        id: format!("{pid}:{name}"),
                        hint: format!("; program {pid} has maps: {}", names.join(", ")),
                    }
                })?;
                sys::obj_get(&self.map_path(m))?
            }
        };
        crate::mapdump::dump(fd.as_fd(), limit)
    }
}

pub(crate) fn program_view(r: &ProgramRecord, links: &[&LinkRecord]) -> ProgramView {
    ProgramView {
        id: Some(r.id),
        kernel_id: r.kernel_id,
        name: r.name.clone(),
        prog_type: r.prog_type.to_string(),
        section: Some(r.section.clone()),
        source: Some(r.source.clone()),
        links: links.iter().map(|l| l.id).collect(),
        attach_points: links.iter().map(|l| l.spec.describe()).collect(),
        loaded_at: Some(r.loaded_at.clone()),
        map_owner_id: r.map_owner_id,
        metadata: r.metadata.clone(),
        managed: true,
    }
}

fn managed_map_view(m: &MapRecord, used_by: Vec<ProgramId>) -> MapView {
    MapView {
        kernel_id: m.kernel_id,
        name: m.name.clone(),
        map_type: m.map_type.clone(),
        key_size: m.key_size,
        value_size: m.value_size,
        max_entries: m.max_entries,
        owner_id: Some(m.owner_id),
        used_by,
        managed: true,
        pinned_by_name: m.by_name,
    }
}

/// XDP and TC programs keep their final instructions so they can be composed into a chain by
/// any later process; a program that cannot be chained (e.g. it calls a module kfunc) simply
/// has none, and attaching it to a chain says why.
pub(crate) fn capture_block(
    loaded: &kernel::LoadedObject,
    name: &str,
    ty: ProgramType,
) -> Option<apiary_core::chain::Block> {
    if !ty.chainable() {
        return None;
    }
    apiary_kernel::dispatcher::capture_block(loaded, name).ok()
}

/// A block as the store keeps it.
pub(crate) fn block_json(block: Option<&apiary_core::chain::Block>) -> Option<String> {
    block.and_then(|b| serde_json::to_string(b).ok())
}

/// Where a new TCX link goes so that the list stays sorted by priority, ties in attach order:
/// before the first link with a higher priority, else after the last one.
fn tcx_anchor(
    existing: &[LinkRecord],
    iface: &str,
    netns: Option<&Path>,
    direction: TcDirection,
    priority: u32,
) -> Option<TcxAnchor> {
    let mut peers: Vec<(u32, LinkId, u32)> = existing
        .iter()
        .filter_map(|l| {
            // The TCX links already on this hook.
            let AttachSpec::Tcx(TcxAttach {
                iface: i,
                netns: n,
                direction: d,
                priority: p,
            }) = &l.spec
            else {
                return None;
            };
            (i == iface && n.as_deref() == netns && *d == direction)
                .then(|| l.kernel_link_ids.first().map(|k| (*p, l.id, *k)))
                .flatten()
        })
        .collect();
    peers.sort();
    if let Some((_, _, k)) = peers.iter().find(|(p, _, _)| *p > priority) {
        return Some(TcxAnchor::Before(*k));
    }
    peers.last().map(|(_, _, k)| TcxAnchor::After(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcx(id: i64, prio: u32, kid: u32) -> LinkRecord {
        LinkRecord {
            id: LinkId(id),
            program_id: ProgramId(1),
            spec: AttachSpec::Tcx(TcxAttach {
                iface: "veth0".into(),
                netns: None,
                direction: TcDirection::Ingress,
                priority: prio,
            }),
            kernel_link_ids: vec![kid],
            extra: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn tcx_order() {
        let ex = vec![tcx(1, 10, 100), tcx(2, 30, 200)];
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Ingress, 5),
            Some(TcxAnchor::Before(100))
        );
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Ingress, 10),
            Some(TcxAnchor::Before(200))
        );
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Ingress, 50),
            Some(TcxAnchor::After(200))
        );
        assert_eq!(
            tcx_anchor(&ex, "veth1", None, TcDirection::Ingress, 50),
            None
        );
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Egress, 50),
            None
        );
    }

    #[test]
    fn map_refs() {
        assert!(matches!("12".parse::<MapRef>(), Ok(MapRef::KernelId(12))));
        assert!(
            matches!("3:counts".parse::<MapRef>(), Ok(MapRef::ProgramMap(ProgramId(3), ref n)) if n == "counts")
        );
        assert!("x".parse::<MapRef>().is_err());
        assert!("0".parse::<MapRef>().is_err());
    }
}
