//! Queries: programs, links and maps as `list` and `get` show them, and map dumps.

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::views::*;
use apiary_core::{AttachSpec, LinkId, ProgramId};
use apiary_kernel::{sys, KernelError};
use apiary_store::{self as store, LinkRecord, MapRecord, ProgramRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;

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

impl Manager {
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

#[cfg(test)]
mod tests {
    use super::*;

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
