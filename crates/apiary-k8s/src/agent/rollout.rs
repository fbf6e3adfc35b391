//! The agent's part of a staged rollout: switch the node's programs to the revision the
//! operator allows with the manager's hot update (maps and links kept, no packet unhandled),
//! and take the readings the health gate needs (run count, a map value).

// The manager's error passes through unboxed, as the executor returns it.
#![allow(clippy::result_large_err)]

use crate::crd::rollout::MapGate;
use crate::document::AppKey;
use crate::error::ApplyError;
use crate::execute;
use crate::plan::{Plan, Source};
use apiary::{Api, MapRef, UpdateSpec};
use apiary_core::ProgramId;
use std::collections::{BTreeMap, BTreeSet};

/// What a switch did.
#[derive(Default)]
pub(crate) struct Switched {
    /// Programs running the plan's code (switched now or already), or kept on their old code
    /// because the switch failed: the executor leaves them as they are.
    pub keep: BTreeSet<ProgramId>,
    /// Program name → why the new code was refused (the old code still runs).
    pub failed: BTreeMap<String, String>,
}

fn manager(key: &AppKey, step: &'static str) -> impl Fn(apiary::Error) -> ApplyError {
    let application = key.to_string();
    move |error| ApplyError::Manager {
        application: application.clone(),
        step,
        error,
    }
}

/// Switch every loaded program of `key` whose code or global data differs from `plan`'s in
/// place. Only for an object file on the node (an image's object goes through the reload
/// the executor does); programs the plan no longer has are left to the executor.
pub(crate) fn switch(api: &dyn Api, key: &AppKey, plan: &Plan) -> Result<Switched, ApplyError> {
    let mut out = Switched::default();
    let Source::Path(path) = &plan.load.source else {
        return Ok(out);
    };
    let Ok(bytes) = std::fs::read(path) else {
        // The load reports the missing file.
        return Ok(out);
    };
    let Ok(info) = apiary_core::elf::inspect(&bytes) else {
        return Ok(out);
    };
    let canonical = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.clone())
        .display()
        .to_string();
    let wanted: BTreeMap<&str, &[u8]> = plan
        .load
        .globals
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    for p in execute::loaded(api, key)? {
        let Some(id) = p.id else { continue };
        if !plan.programs.iter().any(|d| d.name == p.name)
            || p.source.as_deref() != Some(canonical.as_str())
        {
            continue;
        }
        let detail = api
            .get_program(id)
            .map_err(manager(key, "reading a program"))?;
        // A recorded value the plan does not set goes back to the object's default, so
        // returning to a revision that sets fewer globals undoes the newer one's values.
        let mut raw: Vec<(String, Vec<u8>)> = Vec::new();
        let mut differs = false;
        for g in &detail.globals {
            let want = match wanted.get(g.name.as_str()) {
                Some(b) => b.to_vec(),
                None => match info.global(&g.name) {
                    Some(v) => v.default.clone(),
                    None => continue,
                },
            };
            differs |= hex::encode(&want) != g.hex;
            raw.push((g.name.clone(), want));
        }
        for (name, b) in &wanted {
            if !detail.globals.iter().any(|g| g.name == *name) {
                let default = info.global(name).map(|v| v.default.as_slice());
                differs |= default != Some(*b);
                raw.push((name.to_string(), b.to_vec()));
            }
        }
        out.keep.insert(id);
        if !differs {
            continue;
        }
        let spec = UpdateSpec {
            path: path.clone(),
            program: Some(p.name.clone()),
            raw_globals: raw,
            typed_globals: Vec::new(),
        };
        match api.update(id, spec) {
            Ok(r) => {
                tracing::info!(application = %key, program = %p.name, old = r.old_kernel_id, new = r.new_kernel_id, links = r.links_updated, maps = r.maps_kept, millis = r.millis, "switched in place")
            }
            Err(e) => {
                tracing::warn!(application = %key, program = %p.name, error = %e, "the new revision was refused; the old code keeps running");
                out.failed.insert(p.name.clone(), execute::key_line(&e));
            }
        }
    }
    Ok(out)
}

/// The programs' total run count (0 when the kernel does not count) and the gate's map
/// value.
pub(crate) fn readings(
    api: &dyn Api,
    key: &AppKey,
    gate: Option<&MapGate>,
) -> (Option<u64>, Option<u64>) {
    let Ok(programs) = execute::loaded(api, key) else {
        return (None, None);
    };
    let mut runs: Option<u64> = None;
    let mut value: Option<u64> = None;
    for p in &programs {
        let Some(id) = p.id else { continue };
        if let Ok(d) = api.get_program(id) {
            // The daemon the agent runs in holds BPF_ENABLE_STATS, which the sysctl that
            // `stats_enabled` reads does not show: the count is taken as it is.
            if let Some(k) = &d.kernel {
                runs = Some(runs.unwrap_or(0) + k.run_cnt);
            }
        }
        if let (None, Some(g)) = (value, gate) {
            value = map_value(api, id, g);
        }
    }
    (runs, value)
}

/// The gate's entry: its value read as little-endian unsigned integers of 8 bytes (or fewer),
/// summed (a per-CPU map has one per CPU).
fn map_value(api: &dyn Api, program: ProgramId, g: &MapGate) -> Option<u64> {
    let dump = api
        .dump_map(&MapRef::ProgramMap(program, g.map.clone()), 100_000)
        .ok()?;
    let entry = dump.entries.iter().find(|e| {
        hex::decode(&e.key_hex).is_ok_and(|k| {
            let mut b = [0u8; 8];
            let n = k.len().min(8);
            b[..n].copy_from_slice(&k[..n]);
            k.len() <= 8 && u64::from_le_bytes(b) == g.key
        })
    });
    // An array map holds every key; a hash without the key counts as zero.
    let Some(entry) = entry else { return Some(0) };
    let bytes = hex::decode(&entry.value_hex).ok()?;
    Some(
        bytes
            .chunks(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .fold(0u64, u64::saturating_add),
    )
}
