//! `load`: an object (file, bytes, image) into the kernel, recorded and pinned, and attached
//! too when asked — all or nothing.

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::pipeline::{global_records, is_internal_map, map_record, sha256_hex};
use crate::queries::program_view;
use crate::views::*;
use apiary_core::elf;
use apiary_core::{AttachSpec, ProgramId, ProgramType};
use apiary_kernel::{self as kernel, KernelError};
use apiary_store::{self as store, LinkRecord, NewProgram};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

impl Manager {
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
            core_btf: None,
        };
        let mut loaded = self.load_code(req)?;
        crate::timing::mark("kernel load");
        let sha = sha256_hex(&bytes);
        let global_records = global_records(&globals);

        // The records are committed first and the pins made after: a crash in between leaves
        // records without pins, which `reconcile` restores from the stored object, never pins
        // the store does not know. A pin that fails removes the records again.
        let ids = self.store().write(|tx| -> Result<Vec<ProgramId>> {
            store::put_object(tx, &sha, &bytes)?;
            let mut ids: Vec<ProgramId> = Vec::new();
            for p in &loaded.object.programs {
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
                if let Some(block) = loaded.block_json(&p.name)? {
                    store::set_program_block(tx, id, Some(&block))?;
                }
                ids.push(id);
            }
            let first = *ids
                .first()
                .ok_or_else(|| Error::Internal("load produced no program".into()))?;
            for m in &loaded.object.maps {
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
        let names: Vec<String> = loaded
            .object
            .programs
            .iter()
            .map(|p| p.name.clone())
            .collect();
        crate::timing::mark("record");
        let pinned = loaded
            .pin(
                |p| {
                    let i = names.iter().position(|n| *n == p.name).unwrap_or(0);
                    Ok(self.paths.program(ids[i]))
                },
                |m| {
                    let rec = map_record(first, m, info.pinned_by_name(&m.name));
                    Ok(Some(self.map_path(&rec)))
                },
            )
            .and_then(|()| Ok(loaded.pins.keep()?));
        if let Err(e) = pinned {
            let _ = self.store().write(|tx| -> Result<()> {
                for id in ids.iter().rev() {
                    store::delete_program(tx, *id)?;
                }
                Ok(())
            });
            return Err(e);
        }

        crate::timing::mark("pin");
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
            crate::timing::mark("attach");
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
}
