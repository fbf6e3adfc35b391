//! Reconcile: make the kernel match the store. Run by the daemon at start and by
//! `apiary reconcile` (e.g. from a boot script). Programs, links and chains the store records but
//! the kernel no longer holds (bpffs wiped by a reboot, pins removed behind apiary's back, an
//! operation interrupted after its record was committed) are restored from the stored objects;
//! pins in apiary's directory that the store does not know (an operation interrupted after its
//! record was removed) are removed. What cannot be restored is reported, never silently dropped.

use crate::attach::{link_kind, tc_filter};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::pipeline::{global_patches, is_internal_map, recorded_object_name};
use apiary_core::{ChainId, LinkId, ProgramId};
use apiary_kernel::{self as kernel, sys, AttachContext, Attachment, PinSet, TcFilter};
use apiary_store::{self as store, LinkRecord, MapRecord, ProgramRecord};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub programs_ok: usize,
    pub restored_programs: Vec<ProgramId>,
    /// Map pins made again from the kernel's live map (a load interrupted between pinning its
    /// program and its maps).
    #[serde(default)]
    pub repinned_maps: Vec<PathBuf>,
    pub reattached_links: Vec<LinkId>,
    pub rebuilt_chains: Vec<ChainId>,
    /// Pins under apiary's directory that no record explains; removed.
    pub removed_unknown_pins: Vec<PathBuf>,
    /// What could not be restored, and why.
    pub failures: Vec<String>,
}

impl ReconcileReport {
    pub fn is_clean(&self) -> bool {
        self.restored_programs.is_empty()
            && self.repinned_maps.is_empty()
            && self.reattached_links.is_empty()
            && self.rebuilt_chains.is_empty()
            && self.removed_unknown_pins.is_empty()
            && self.failures.is_empty()
    }
}

/// Checkpoints the store's WAL again when a reconcile ends, however it ends.
struct Checkpoint<'m>(&'m Manager);

impl Drop for Checkpoint<'_> {
    fn drop(&mut self) {
        // A failed checkpoint loses nothing (the WAL holds every commit); the next one retries.
        let _ = self.0.store().set_checkpointing(true);
    }
}

/// Threads restoring programs: one per CPU (the kernel's verifier is the work).
fn load_threads() -> usize {
    threads_or(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Threads attaching links again. An attach mostly waits in the kernel (perf_event_open of a
/// syscall tracepoint sleeps on a mutex and on other CPUs), and concurrent attaches overlap
/// their waits: measured on 2 CPUs (Linux 6.18), 1,000 tracepoint links take 1.3–1.6 s on one
/// thread and 0.7–0.9 s on 16.
fn attach_threads() -> usize {
    threads_or(16)
}

/// `default`, unless `APIARY_RESTORE_THREADS=N` chooses (1: one after another).
fn threads_or(default: usize) -> usize {
    std::env::var("APIARY_RESTORE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, 64)
}

/// A program the kernel lost, with its maps' records.
type Lost<'p> = (&'p ProgramRecord, Vec<MapRecord>);

fn alive(path: &Path) -> bool {
    sys::obj_get(path).is_ok()
}

impl Manager {
    pub fn reconcile(&self) -> Result<ReconcileReport> {
        self.reconcile_with(&mut |_, _| {})
    }

    /// `reconcile`, telling `progress(done, total)` after each recorded program is checked (and
    /// restored if it had to be), so a terminal can show a restore of many programs moving.
    pub fn reconcile_with(
        &self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<ReconcileReport> {
        let _lock = self.lock()?;
        self.store().set_checkpointing(false)?;
        let _checkpoint = Checkpoint(self);
        let mut report = ReconcileReport::default();
        let programs = store::list_programs(self.store().read())?;
        let mut lost = Vec::new();
        for (done, p) in programs.iter().enumerate() {
            progress(done, programs.len());
            let maps = store::maps_of_program(self.store().read(), p.id)?;
            if !alive(&self.paths.program(p.id)) {
                lost.push((p, maps));
                continue;
            }
            report.programs_ok += 1;
            // Its maps live as long as it does; a pin missing beside a live program is made
            // again from the kernel's map.
            for m in maps {
                let path = self.map_path(&m);
                if alive(&path) {
                    continue;
                }
                let repinned = sys::map_fd_by_id(m.kernel_id).and_then(|fd| {
                    if sys::map_info(fd.as_fd())?.id != m.kernel_id {
                        return Err(kernel::KernelError::Invalid("map id changed".into()));
                    }
                    sys::pin(fd.as_fd(), &path)
                });
                match repinned {
                    Ok(()) => report.repinned_maps.push(path),
                    Err(e) => report.failures.push(format!(
                        "map {} of program {} ({}): its pin is missing and the kernel map {} cannot be pinned again: {e}",
                        m.name, p.id, p.name, m.kernel_id
                    )),
                }
            }
        }
        crate::timing::mark("check programs");
        let groups = self.sharing_groups(lost);
        let mut done = report.programs_ok;
        let outcomes = self.in_parallel(
            load_threads(),
            &groups,
            &|loader, group| {
                group
                    .iter()
                    .map(|(p, maps)| (*p, self.restore_program(loader, p, maps)))
                    .collect::<Vec<_>>()
            },
            &mut |r| {
                done += r.len();
                progress(done, programs.len())
            },
        );
        let mut outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
        outcomes.sort_by_key(|(p, _)| p.id);
        let mut restored: HashSet<ProgramId> = HashSet::new();
        for (p, result) in outcomes {
            match result {
                Ok(()) => {
                    restored.insert(p.id);
                    report.restored_programs.push(p.id);
                }
                Err(e) => report
                    .failures
                    .push(format!("program {} ({}): {e}", p.id, p.name)),
            }
        }

        progress(programs.len(), programs.len());
        crate::timing::mark("restore programs");
        let links = store::list_links(self.store().read(), None)?;
        let lost_links: Vec<(&LinkRecord, Option<TcFilter>)> = links
            .iter()
            .filter(|l| l.kind != store::LinkKind::ChainMember)
            .map(|l| (l, tc_filter(l)))
            .filter(|(l, tc)| {
                let pins_ok =
                    (0..l.kernel_link_ids.len()).all(|i| alive(&self.paths.link(l.id, i)));
                !pins_ok || (tc.is_some() && restored.contains(&l.program_id))
            })
            .collect();
        let outcomes = self.in_parallel(
            attach_threads(),
            &lost_links,
            &|_, (l, tc)| self.reattach(l, tc.as_ref()),
            &mut |_| {},
        );
        for ((l, _), result) in lost_links.iter().zip(outcomes) {
            match result {
                Ok(()) => report.reattached_links.push(l.id),
                Err(e) => report
                    .failures
                    .push(format!("link {} of program {}: {e}", l.id, l.program_id)),
            }
        }

        crate::timing::mark("links");
        let chains = store::list_chains(self.store().read())?;
        for ch in chains {
            let link_ok = alive(&self.paths.chain_pin(ch.id, "link"));
            let disp_ok = alive(&self.paths.chain_pin(ch.id, "dispatcher"));
            let members = store::chain_slots(self.store().read(), ch.id)?;
            let touched = members.iter().any(|m| restored.contains(&m.program_id));
            if link_ok && disp_ok && !touched {
                continue;
            }
            match self.rebuild_chain(&ch) {
                Ok(()) => report.rebuilt_chains.push(ch.id),
                Err(e) => report.failures.push(format!("{}: {e}", ch.hook)),
            }
        }

        crate::timing::mark("chains");
        report.removed_unknown_pins = self.remove_unknown_pins()?;
        crate::timing::mark("unknown pins");
        Ok(report)
    }

    /// The lost programs in groups that must be restored one after another, in id order: those
    /// sharing a map pin (a program borrowing another's maps, maps pinned by name), because the
    /// first one restored pins the map the others then reuse. Groups are independent.
    fn sharing_groups<'p>(&self, lost: Vec<Lost<'p>>) -> Vec<Vec<Lost<'p>>> {
        let mut group_of_pin: HashMap<PathBuf, usize> = HashMap::new();
        // Union-find over the lost programs' indexes.
        let mut parent: Vec<usize> = (0..lost.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (i, (_, maps)) in lost.iter().enumerate() {
            for m in maps {
                match group_of_pin.entry(self.map_path(m)) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let (a, b) = (root(&mut parent, *e.get()), root(&mut parent, i));
                        parent[a.max(b)] = a.min(b);
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(i);
                    }
                }
            }
        }
        let mut groups: Vec<Vec<Lost>> = Vec::new();
        let mut index: HashMap<usize, usize> = HashMap::new();
        for (i, p) in lost.into_iter().enumerate() {
            let r = root(&mut parent, i);
            let g = *index.entry(r).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(p);
        }
        groups
    }

    /// `work` over `items` on up to `threads` threads, results in the items' order, `progress`
    /// told of each as it ends. The kernel verifies programs of different loads at the same time
    /// (libbpf's logs are kept per thread). Each thread has a loader of its own: the daemon's
    /// loader process serves one load at a time, so the other threads' loaders start loader
    /// processes of their own at their first load, stopped when the restore ends.
    fn in_parallel<T: Sync, R: Send>(
        &self,
        threads: usize,
        items: &[T],
        work: &(dyn Fn(&kernel::Loader, &T) -> R + Sync),
        progress: &mut dyn FnMut(&R),
    ) -> Vec<R> {
        let loader = &self.config().loader;
        let threads = threads.min(items.len());
        if threads <= 1 {
            return items
                .iter()
                .map(|item| {
                    let r = work(loader, item);
                    progress(&r);
                    r
                })
                .collect();
        }
        let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            for t in 0..threads {
                let tx = tx.clone();
                let next = &next;
                let loader = if t == 0 {
                    loader.clone()
                } else {
                    loader.sibling()
                };
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if tx.send((i, work(&loader, item))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for (i, r) in rx {
                progress(&r);
                results[i] = Some(r);
            }
        });
        // Every index was sent once unless a thread panicked, which `scope` has re-raised.
        results.into_iter().flatten().collect()
    }

    /// Load a recorded program again from its stored object, with its recorded globals, reusing
    /// whatever maps are still pinned, and pin it where it was.
    fn restore_program(
        &self,
        loader: &kernel::Loader,
        p: &ProgramRecord,
        maps: &[MapRecord],
    ) -> Result<()> {
        let bytes = store::get_object(self.store().read(), &p.object_sha256)?
            .ok_or_else(|| Error::Internal(format!("the store lost object {}", p.object_sha256)))?;
        let reuse: Vec<(String, PathBuf)> = maps
            .iter()
            .map(|m| (m.name.clone(), self.map_path(m)))
            .filter(|(_, path)| alive(path))
            .collect();
        let globals = global_patches(&p.globals)?;
        let mut loaded = self.load_code_on(
            loader,
            kernel::LoadRequest {
                object: &bytes,
                source: &p.source,
                programs: vec![kernel::ProgramSelect {
                    ty: Some(p.prog_type),
                    name: p.name.clone(),
                }],
                globals,
                reuse_maps: reuse.clone(),
                object_name: recorded_object_name(maps),
                core_btf: None,
            },
        )?;
        let lp = loaded.only_program()?.clone();
        // Maps this program owns (or shares from an owner whose pin is gone) are pinned where
        // the record says; a map the record does not know is this load's own internal copy.
        let mut remade = Vec::new();
        for m in loaded.new_maps() {
            match maps.iter().find(|r| r.name == m.name) {
                Some(rec) => remade.push(store::MapRecord {
                    kernel_id: m.info.id,
                    ..rec.clone()
                }),
                None if is_internal_map(&m.name) => {}
                None => {
                    return Err(Error::Internal(format!(
                        "map {} is not recorded for program {}",
                        m.name, p.id
                    )))
                }
            }
        }
        loaded.pin(
            |_| Ok(self.paths.program(p.id)),
            |m| {
                Ok(remade
                    .iter()
                    .find(|r| r.name == m.name)
                    .map(|r| self.map_path(r)))
            },
        )?;
        let block = loaded.block_json(&p.name)?;
        self.store().write(|tx| -> Result<()> {
            store::set_program_kernel(tx, p.id, lp.kernel_id, &lp.tag)?;
            for rec in &remade {
                store::set_map_kernel(tx, rec.id, rec)?;
            }
            if let Some(b) = &block {
                store::set_program_block(tx, p.id, Some(b))?;
            }
            Ok(())
        })?;
        loaded.pins.keep()?;
        Ok(())
    }

    fn reattach(&self, l: &LinkRecord, tc: Option<&TcFilter>) -> Result<()> {
        let fd = sys::obj_get(&self.paths.program(l.program_id))?;
        if let Some(f) = tc {
            // Same handle and priority: replaces a filter that still runs the old program.
            if kernel::attach::replace_tc_filter(fd.as_fd(), f).is_ok() {
                return Ok(());
            }
        }
        for i in 0..l.kernel_link_ids.len() {
            let _ = sys::unpin(&self.paths.link(l.id, i));
        }
        let fds = match kernel::attach(fd.as_fd(), &l.spec, &AttachContext::default())? {
            Attachment::Links(f) => f,
            Attachment::TcFilter(f) => {
                self.store().write(|tx| -> Result<()> {
                    Ok(store::set_link_kernel(tx, l.id, &[], &link_kind(Some(&f)))?)
                })?;
                return Ok(());
            }
        };
        let mut pins = PinSet::new();
        let mut ids = Vec::new();
        for (i, f) in fds.iter().enumerate() {
            pins.pin(f.as_fd(), &self.paths.link(l.id, i))?;
            ids.push(sys::link_info(f.as_fd())?.id);
        }
        self.store()
            .write(|tx| -> Result<()> { Ok(store::set_link_kernel(tx, l.id, &ids, &l.kind)?) })?;
        Ok(pins.keep()?)
    }

    /// Remove pins that no record explains: leftovers of operations interrupted after their
    /// records were removed (or of temporary names during an update).
    fn remove_unknown_pins(&self) -> Result<Vec<PathBuf>> {
        let s = self.store();
        let programs: HashSet<i64> = store::list_programs(s.read())?
            .iter()
            .map(|p| p.id.0)
            .collect();
        let links: Vec<LinkRecord> = store::list_links(s.read(), None)?;
        let link_pins: HashSet<PathBuf> = links
            .iter()
            .flat_map(|l| (0..l.kernel_link_ids.len()).map(move |i| (l.id, i)))
            .map(|(id, i)| self.paths.link(id, i))
            .collect();
        let map_pins: HashSet<PathBuf> = store::list_maps(s.read())?
            .iter()
            .map(|m| self.map_path(m))
            .collect();
        let chains: HashSet<ChainId> = store::list_chains(s.read())?.iter().map(|c| c.id).collect();
        drop(s);
        let mut removed = Vec::new();
        let mut visit = |path: PathBuf, known: bool| {
            if !known && sys::unpin(&path).is_ok() {
                removed.push(path);
            }
        };
        for f in files(&self.paths.programs_dir()) {
            let known = f
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|id| programs.contains(&id));
            visit(f, known);
        }
        for f in files(&self.paths.maps_dir()) {
            let known = map_pins.contains(&f);
            visit(f, known);
        }
        for f in files(&self.paths.links_dir()) {
            let known = link_pins.contains(&f);
            visit(f, known);
        }
        let chains_dir = self.paths.root().join("chains");
        for f in files(&chains_dir) {
            let chain = f
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<ChainId>().ok());
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let known = chain.is_some_and(|c| chains.contains(&c))
                && crate::chain::chain_pin_names().contains(&name);
            visit(f, known);
        }
        for d in [
            self.paths.programs_dir(),
            self.paths.maps_dir(),
            self.paths.links_dir(),
            chains_dir,
        ] {
            remove_empty_dirs(&d);
        }
        Ok(removed)
    }
}

/// Files (pins) under `dir`, at any depth.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn remove_empty_dirs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                remove_empty_dirs(&p);
                let _ = std::fs::remove_dir(&p);
            }
        }
    }
}
