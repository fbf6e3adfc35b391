//! The declared metrics of the daemon's programs: each managed program whose metadata carries
//! declarations ([`super::METADATA_KEY`]) has its maps read, every series labelled with the
//! program's id and name.

use super::{merge, Collector, Decls, Family};
use crate::{MapView, ProgramView};
use apiary_kernel::sys;
use std::collections::BTreeSet;
use std::os::fd::AsFd;

/// Kernel object names keep this many bytes (BPF_OBJ_NAME_LEN less the NUL).
const KERNEL_NAME_LEN: usize = 15;

/// Families of every program with declarations (same-named families merged), and a note per
/// program or map that could not be read. `taken`: names the endpoint already uses.
pub fn program_families(
    programs: &[ProgramView],
    maps: &[MapView],
    taken: &[&str],
) -> (Vec<Family>, Vec<String>) {
    let mut groups = Vec::new();
    let mut notes = Vec::new();
    // Programs of one object share its maps: each map is exported once, with the first.
    let mut seen_maps: BTreeSet<u32> = BTreeSet::new();
    for p in programs {
        let (Some(id), Some(text)) = (p.id, p.metadata.get(super::METADATA_KEY)) else {
            continue;
        };
        let decls = match Decls::parse(text, &format!("program {id}")) {
            Ok(d) => d,
            Err(e) => {
                notes.push(e.to_string());
                continue;
            }
        };
        // (kernel id, name) of every map of the program's load (the store links them all to
        // each of its programs), not only those its own instructions use: a tool's histogram
        // may be filled by another program of the object. For a program whose maps the store
        // does not list, the kernel's list and names (cut to 15 bytes). A declared map is
        // opened only when found here.
        let mut candidates: Vec<(u32, String)> = maps
            .iter()
            .filter(|m| m.used_by.contains(&id))
            .map(|m| (m.kernel_id, m.name.clone()))
            .collect();
        if candidates.is_empty() {
            match sys::prog_fd_by_id(p.kernel_id).and_then(|fd| sys::prog_info(fd.as_fd())) {
                Ok(i) => {
                    candidates = i
                        .map_ids
                        .into_iter()
                        .filter_map(|mid| {
                            let fd = sys::map_fd_by_id(mid).ok()?;
                            Some((mid, sys::map_info(fd.as_fd()).ok()?.name))
                        })
                        .collect()
                }
                Err(e) => {
                    notes.push(format!("program {id}: {e}"));
                    continue;
                }
            }
        }
        let mut used = Vec::new();
        let collector = Collector::new(
            &decls,
            |name| {
                let short: String = name.chars().take(KERNEL_NAME_LEN).collect();
                let i = candidates
                    .iter()
                    .position(|(_, n)| *n == name || *n == short)?;
                let (mid, _) = candidates.swap_remove(i);
                let fd = sys::map_fd_by_id(mid).ok()?;
                used.push(mid);
                Some(fd)
            },
            vec![
                ("program_id".to_string(), id.to_string()),
                ("program".to_string(), p.name.clone()),
            ],
        );
        let collector = match collector {
            Ok(c) => c,
            Err(e) => {
                notes.push(format!("program {id}: {e}"));
                continue;
            }
        };
        if !used.is_empty() && used.iter().all(|m| seen_maps.contains(m)) {
            continue;
        }
        seen_maps.extend(used);
        let (fams, errs) = collector.collect();
        notes.extend(errs.into_iter().map(|e| format!("program {id}: {e}")));
        groups.push(fams);
    }
    let fams = merge(groups, taken, &mut notes);
    (fams, notes)
}
