//! The one load sequence behind `load`, `update` and `reconcile`: the loader runs the object,
//! every chainable program's final instructions are captured, and what the load made is pinned
//! into a `PinSet` that the caller keeps once its records are written. The three differ only in
//! what they record and where the pins go.

use crate::error::{Error, Result};
use crate::manager::Manager;
use apiary_core::chain::Block;
use apiary_core::{ProgramId, ProgramType};
use apiary_kernel::core_cache::{Check, CoreCache};
use apiary_kernel::loader::{LoadedMapInfo, LoadedProgramInfo};
use apiary_kernel::{self as kernel, PinSet};
use apiary_store::{GlobalRecord, MapRecord};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// A load's kernel objects, each program's captured block, and the pins made so far.
pub(crate) struct Loaded {
    pub(crate) object: kernel::LoadedObject,
    /// Per program, in the order of `object.programs`: its block when its type can be chained.
    blocks: Vec<Option<Block>>,
    pub(crate) pins: PinSet,
}

impl Loaded {
    /// The one program a single-program load (update, restore) made.
    pub(crate) fn only_program(&self) -> Result<&LoadedProgramInfo> {
        self.object
            .programs
            .first()
            .ok_or_else(|| Error::Internal("the load made no program".into()))
    }

    pub(crate) fn block(&self, name: &str) -> Option<&Block> {
        let i = self.object.programs.iter().position(|p| p.name == name)?;
        self.blocks.get(i)?.as_ref()
    }

    /// A program's block as the store keeps it.
    pub(crate) fn block_json(&self, name: &str) -> Result<Option<String>> {
        self.block(name)
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Internal(format!("program {name}: block not serialisable: {e}")))
    }

    /// The maps this load created (not those it took from a pin).
    pub(crate) fn new_maps(&self) -> impl Iterator<Item = &LoadedMapInfo> {
        self.object.maps.iter().filter(|m| !m.reused)
    }

    /// Pin each program where `program_path` says, and each map this load created where
    /// `map_path` says (`None`: leave it to the program alone).
    pub(crate) fn pin(
        &mut self,
        mut program_path: impl FnMut(&LoadedProgramInfo) -> Result<PathBuf>,
        mut map_path: impl FnMut(&LoadedMapInfo) -> Result<Option<PathBuf>>,
    ) -> Result<()> {
        for p in &self.object.programs {
            let fd = self
                .object
                .program_fd(&p.name)
                .ok_or_else(|| Error::Internal(format!("program {} has no descriptor", p.name)))?;
            self.pins.pin(fd, &program_path(p)?)?;
        }
        for m in self.object.maps.iter().filter(|m| !m.reused) {
            let Some(path) = map_path(m)? else { continue };
            let fd = self
                .object
                .map_fd(&m.name)
                .ok_or_else(|| Error::Internal(format!("map {} has no descriptor", m.name)))?;
            self.pins.pin(fd, &path)?;
        }
        Ok(())
    }
}

impl Manager {
    /// Run `req` through the loader and capture the blocks of its chainable programs. A capture
    /// that fails is an error: a chainable program without its block could never join a chain.
    ///
    /// An object with CO-RE relocations loaded before gets the minimal kernel BTF kept for it
    /// (the CO-RE cache); after its first load, the entry is made.
    pub(crate) fn load_code(&self, req: kernel::LoadRequest<'_>) -> Result<Loaded> {
        self.load_code_on(&self.config().loader, req)
    }

    /// `load_code` on a loader of the caller's (a restore runs several at once).
    pub(crate) fn load_code_on(
        &self,
        loader: &kernel::Loader,
        mut req: kernel::LoadRequest<'_>,
    ) -> Result<Loaded> {
        let cache = self.core_cache();
        let check = cache.as_ref().and_then(|c| c.check(req.object));
        if let Some(Check::Hit(entry)) = &check {
            req.core_btf = Some(entry.clone());
        }
        let object = match (loader.load(&req), &req.core_btf) {
            // The entry could not answer (it never should): forget it and read the kernel's.
            (Err(_), Some(entry)) => {
                if let Some(c) = &cache {
                    c.forget(entry);
                }
                req.core_btf = None;
                loader.load(&req)?
            }
            (loaded, _) => loaded?,
        };
        // Only the first load of an object on this kernel reads it again to make its entry; an
        // object known to have none is not read again.
        if let (Some(c), Some(Check::Unseen)) = (&cache, &check) {
            if let Ok(info) = apiary_core::elf::inspect(req.object) {
                c.fill(req.object, &info);
            }
        }
        let blocks = object
            .programs
            .iter()
            .map(|p| capture(&object, &p.name, p.ty))
            .collect::<Result<Vec<_>>>()?;
        Ok(Loaded {
            object,
            blocks,
            pins: PinSet::new(),
        })
    }
}

impl Manager {
    /// The CO-RE cache under the state directory, unless `APIARY_CORE_CACHE=0`.
    fn core_cache(&self) -> Option<CoreCache> {
        (std::env::var_os("APIARY_CORE_CACHE").is_none_or(|v| v != "0"))
            .then(|| CoreCache::new(self.config().state_dir.join("core-cache")))
    }
}

fn capture(obj: &kernel::LoadedObject, name: &str, ty: ProgramType) -> Result<Option<Block>> {
    if !ty.chainable() {
        return Ok(None);
    }
    kernel::dispatcher::capture_block(obj, name)
        .map(Some)
        .map_err(|e| {
            Error::Internal(format!(
                "program {name}: capturing its instructions for XDP/TC chains failed: {e}"
            ))
        })
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
pub(crate) fn map_record(owner: ProgramId, m: &LoadedMapInfo, by_name: bool) -> MapRecord {
    MapRecord {
        by_name,
        id: apiary_core::MapId(0),
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
