//! Hot update: new code for a managed program, with its maps and attach points kept. The new
//! program is loaded reusing the old one's maps (after checking they match), then every link
//! moves to it without a gap — atomically with BPF_LINK_UPDATE where the link kind allows it,
//! by attaching the new program before detaching the old one where it does not — and finally
//! the program's pin and record switch over. Any failure before the switch leaves the old
//! program running and the store untouched.

use crate::attach::tc_filter;
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::pipeline::{
    global_records, is_internal_map, map_record, recorded_object_name, sha256_hex, Loaded,
};
use apiary_core::{ProgramId, ProgramType};
use apiary_kernel::{self as kernel, sys, AttachContext, Attachment, KernelError, TcFilter};
use apiary_store::{self as store, MapRecord};
use serde::Serialize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct UpdateSpec {
    pub path: PathBuf,
    /// The program in the new object; default: the same name as now.
    pub program: Option<String>,
    pub raw_globals: Vec<(String, Vec<u8>)>,
    pub typed_globals: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UpdateReport {
    pub id: ProgramId,
    pub name: String,
    pub old_kernel_id: u32,
    pub new_kernel_id: u32,
    pub links_updated: usize,
    pub maps_kept: usize,
    /// Wall time from taking the lock to the recorded switch.
    pub millis: f64,
}

/// The code an update switches to, as read from its object.
struct NewCode<'a> {
    bytes: &'a [u8],
    source: &'a str,
    globals: &'a [kernel::GlobalPatch],
    info: &'a apiary_core::elf::ObjectInfo,
}

/// A link switched so far, so a later failure can switch it back.
enum Moved {
    InPlace {
        link: OwnedFd,
    },
    Tc {
        filter: TcFilter,
    },
    Reattached {
        link_id: apiary_core::LinkId,
        new_count: usize,
        new_ids: Vec<u32>,
        old_count: usize,
    },
}

impl Manager {
    pub fn update(&self, id: ProgramId, spec: UpdateSpec) -> Result<UpdateReport> {
        let bytes = std::fs::read(&spec.path).map_err(|e| KernelError::ReadObject {
            path: spec.path.clone(),
            error: e,
        })?;
        let source = std::fs::canonicalize(&spec.path)
            .unwrap_or_else(|_| spec.path.clone())
            .display()
            .to_string();
        let info = apiary_core::elf::inspect(&bytes).map_err(|error| Error::Object {
            source_name: source.clone(),
            error,
        })?;

        let _lock = self.lock()?;
        let t0 = Instant::now();
        let rec = self.program_record(id)?;
        let name = spec.program.clone().unwrap_or_else(|| rec.name.clone());
        let pdef = info.program(&name).ok_or_else(|| {
            let names: Vec<&str> = info.programs.iter().map(|p| p.name.as_str()).collect();
            Error::InvalidArgument(format!(
                "{source} has no program {name:?} (it has: {}); choose with --program",
                names.join(", ")
            ))
        })?;
        let new_ty = ProgramType::from_section(&pdef.section).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "program {name}: unknown section {:?}",
                pdef.section
            ))
        })?;
        if !new_ty.compatible_with(rec.prog_type) {
            return Err(Error::InvalidArgument(format!(
                "program {id} is a {} program; the new code {name:?} is {new_ty} (section {:?})",
                rec.prog_type, pdef.section
            )));
        }

        // Maps: every map the new code shares by name with the old must match exactly.
        let old_maps = store::maps_of_program(self.store().read(), id)?;
        let mut reuse = Vec::new();
        let mut kept: Vec<MapRecord> = Vec::new();
        for m in &old_maps {
            if is_internal_map(&m.name) {
                continue;
            }
            let Some(d) = info.map(&m.name) else { continue };
            check_compatible(m, d, info.btf.as_ref())?;
            reuse.push((m.name.clone(), self.map_path(m)));
            kept.push(m.clone());
        }
        // Maps pinned by name that the new code declares and other programs already share.
        for (name, m) in self.shared_maps(&info)? {
            if !kept.iter().any(|k| k.id == m.id) {
                reuse.push((name, self.map_path(&m)));
                kept.push(m);
            }
        }

        // Globals: keep the values the program was loaded with where the new code has the same
        // variable, then apply the ones given now.
        let mut raw: Vec<(String, Vec<u8>)> = rec
            .globals
            .iter()
            .filter(|g| {
                info.global(&g.name)
                    .is_some_and(|ng| ng.size as usize * 2 == g.hex.len())
            })
            .filter_map(|g| hex::decode(&g.hex).ok().map(|b| (g.name.clone(), b)))
            .collect();
        raw.extend(spec.raw_globals.iter().cloned());
        let globals = apiary_core::globals::resolve(&info, &raw, &spec.typed_globals)
            .map_err(Error::InvalidArgument)?;

        let mut loaded = self.load_code(kernel::LoadRequest {
            object: &bytes,
            source: &source,
            programs: vec![kernel::ProgramSelect {
                ty: Some(new_ty),
                name: name.clone(),
            }],
            globals: globals.clone(),
            reuse_maps: reuse,
            object_name: recorded_object_name(&old_maps),
            core_btf: None,
        })?;
        let lp = loaded.only_program()?.clone();
        // The new code and its new maps are pinned beside the old pins now and moved over them
        // when everything else has switched.
        loaded.pin(
            |_| Ok(self.paths.program(id)),
            |m| {
                Ok(Some(if info.pinned_by_name(&m.name) {
                    // Nobody shared it (or it would have been reused): a new pin.
                    self.paths.shared_map(&m.name)
                } else {
                    self.paths.map(id, &m.name)
                }))
            },
        )?;
        let new_fd = loaded
            .object
            .program_fd(&name)
            .ok_or_else(|| Error::Internal("new program has no fd".into()))?;
        let old_fd = sys::obj_get(&self.paths.program(id)).map_err(|e| Error::PinMissing {
            program: id,
            reason: e.to_string(),
        })?;

        // Chains first: recompose each chain the program is in with the new code (the verifier
        // may still refuse the composition, and then nothing has changed yet).
        let new_block = loaded.block(&name).cloned();
        let old_block: Option<apiary_core::chain::Block> =
            store::get_program_block(self.store().read(), id)?
                .and_then(|j| serde_json::from_str(&j).ok());
        let chained = match &new_block {
            Some(b) => self.rechain_program(id, b)?,
            None => 0,
        };

        // Move every other link; on failure (or if recording fails) move back the ones moved.
        let links = store::list_links(self.store().read(), Some(id))?;
        let mut moved: Vec<Moved> = Vec::new();
        let mut pins = std::mem::take(&mut loaded.pins);
        let switched = (|| -> Result<()> {
            for l in &links {
                if l.kind == store::LinkKind::ChainMember {
                    continue;
                }
                if let Some(tc) = tc_filter(l) {
                    kernel::attach::replace_tc_filter(new_fd, &tc)?;
                    moved.push(Moved::Tc { filter: tc });
                } else if kernel::attach::updatable_in_place(&l.spec) {
                    for i in 0..l.kernel_link_ids.len() {
                        let link = sys::obj_get(&self.paths.link(l.id, i))?;
                        kernel::attach::update_link(link.as_fd(), new_fd, old_fd.as_fd())?;
                        moved.push(Moved::InPlace { link });
                    }
                } else {
                    let ctx = AttachContext::default();
                    let fds = match kernel::attach(new_fd, &l.spec, &ctx)? {
                        Attachment::Links(f) => f,
                        Attachment::TcFilter(_) => {
                            return Err(Error::Internal("unexpected tc filter".into()))
                        }
                    };
                    let mut new_ids = Vec::new();
                    for (i, f) in fds.iter().enumerate() {
                        pins.pin(f.as_fd(), &self.paths.link(l.id, i))?;
                        new_ids.push(sys::link_info(f.as_fd())?.id);
                    }
                    moved.push(Moved::Reattached {
                        link_id: l.id,
                        new_count: new_ids.len(),
                        new_ids,
                        old_count: l.kernel_link_ids.len(),
                    });
                }
            }
            let code = NewCode {
                bytes: &bytes,
                source: &source,
                globals: &globals,
                info: &info,
            };
            self.record_update(id, &loaded, &code, &old_maps, &kept, &moved)
        })();
        if let Err(e) = switched {
            for m in moved.iter().rev() {
                match m {
                    Moved::InPlace { link } => {
                        let _ = kernel::attach::update_link(link.as_fd(), old_fd.as_fd(), new_fd);
                    }
                    Moved::Tc { filter } => {
                        let _ = kernel::attach::replace_tc_filter(old_fd.as_fd(), filter);
                    }
                    Moved::Reattached { .. } => {} // dropping `pins` removes the new links
                }
            }
            if chained > 0 {
                if let Some(b) = &old_block {
                    let _ = self.rechain_program(id, b);
                }
            }
            return Err(e);
        }

        // Switch over: the new pins replace the old program, maps and perf-style links (which
        // releases them); old links beyond the new count go.
        for m in &moved {
            if let Moved::Reattached {
                link_id,
                new_count,
                old_count,
                ..
            } = m
            {
                for i in *new_count..*old_count {
                    sys::unpin(&self.paths.link(*link_id, i))?;
                }
            }
        }
        pins.keep()?;
        Ok(UpdateReport {
            id,
            name: rec.name,
            old_kernel_id: rec.kernel_id,
            new_kernel_id: lp.kernel_id,
            links_updated: links.len(),
            maps_kept: kept.len(),
            millis: t0.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Record the switch: the new code, its block, moved links' kernel ids, and which maps the
    /// program now uses (the kept ones plus those the new code created).
    fn record_update(
        &self,
        id: ProgramId,
        loaded: &Loaded,
        code: &NewCode<'_>,
        old_maps: &[MapRecord],
        kept: &[MapRecord],
        moved: &[Moved],
    ) -> Result<()> {
        let NewCode {
            bytes,
            source,
            globals,
            info,
        } = *code;
        let lp = loaded.only_program()?;
        let owned_before = store::maps_owned_by(self.store().read(), id)?;
        let block = loaded.block_json(&lp.name)?;
        let global_records = global_records(globals);
        let sha = sha256_hex(bytes);
        self.store().write(|tx| -> Result<()> {
            store::put_object(tx, &sha, bytes)?;
            store::set_program_code(tx, id, lp.kernel_id, &lp.tag, &sha, source, &global_records)?;
            store::set_program_block(tx, id, block.as_deref())?;
            for m in moved {
                if let Moved::Reattached {
                    link_id, new_ids, ..
                } = m
                {
                    store::set_link_kernel(tx, *link_id, new_ids, &store::LinkKind::Links)?;
                }
            }
            for m in old_maps {
                if !kept.iter().any(|k| k.id == m.id) && m.owner_id != id {
                    store::remove_program_map(tx, id, m.id)?;
                }
            }
            for m in kept {
                store::add_program_map(tx, id, m.id)?;
            }
            for m in loaded.new_maps() {
                let rec = map_record(id, m, info.pinned_by_name(&m.name));
                let map_id = match owned_before.iter().find(|o| o.name == m.name) {
                    Some(o) => {
                        store::set_map_kernel(tx, o.id, &rec)?;
                        o.id
                    }
                    None => store::insert_map(tx, &rec)?,
                };
                store::add_program_map(tx, id, map_id)?;
            }
            Ok(())
        })
    }
}

/// The new definition must describe the same map: type, sizes, capacity and (with BTF on both
/// sides) the same value type.
fn check_compatible(
    old: &MapRecord,
    new: &apiary_core::elf::MapDef,
    btf: Option<&apiary_core::btf::Btf>,
) -> Result<()> {
    let diffs = map_differences(old, new, btf);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::MapMismatch {
            map: old.name.clone(),
            differences: diffs,
        })
    }
}

/// How the map definition `new` differs from the existing map `old` (empty: the same map).
pub(crate) fn map_differences(
    old: &MapRecord,
    new: &apiary_core::elf::MapDef,
    btf: Option<&apiary_core::btf::Btf>,
) -> Vec<String> {
    let size = |explicit: Option<u32>, ty: Option<u32>| {
        explicit.or_else(|| ty.and_then(|t| btf.and_then(|b| b.size_of(t))))
    };
    let mut diffs = Vec::new();
    if new.map_type_name != old.map_type {
        diffs.push(format!("type {} -> {}", old.map_type, new.map_type_name));
    }
    let event_map = matches!(
        old.map_type.as_str(),
        "ringbuf" | "perf_event_array" | "user_ringbuf"
    );
    if !event_map {
        if let Some(k) = size(new.key_size, new.key_type) {
            if k != old.key_size {
                diffs.push(format!("key size {} -> {k}", old.key_size));
            }
        }
        if let Some(v) = size(new.value_size, new.value_type) {
            if v != old.value_size {
                diffs.push(format!("value size {} -> {v}", old.value_size));
            }
        }
    }
    if let Some(n) = new.max_entries {
        if n != old.max_entries {
            diffs.push(format!("max entries {} -> {n}", old.max_entries));
        }
    }
    if let (Ok(fd), Some(new_name)) = (
        sys::map_fd_by_id(old.kernel_id),
        new.value_type_name.as_ref(),
    ) {
        if let Ok(mi) = sys::map_info(fd.as_fd()) {
            if mi.btf_id != 0 && mi.btf_value_type_id != 0 {
                if let Ok(b) = sys::btf_raw_by_id(mi.btf_id)
                    .map_err(|_| ())
                    .and_then(|raw| apiary_core::btf::Btf::parse(&raw).map_err(|_| ()))
                {
                    let old_name = b.type_name(mi.btf_value_type_id);
                    if &old_name != new_name {
                        diffs.push(format!("value type {old_name} -> {new_name}"));
                    }
                }
            }
        }
    }
    diffs
}
