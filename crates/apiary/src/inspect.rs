//! `apiary inspect`: what an object holds, read from its ELF and BTF without loading it.

use crate::error::{Error, Result};
use crate::package::{globals_of, PackageGlobal};
use apiary_core::program::RunRule;
use apiary_core::ProgramType;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub source: String,
    pub license: Option<String>,
    pub btf: bool,
    pub btf_ext: bool,
    pub programs: Vec<InspectProgram>,
    pub maps: Vec<InspectMap>,
    pub globals: Vec<PackageGlobal>,
    pub externs: Vec<String>,
    /// Event type per ring buffer / perf event array, where one can be found.
    pub event_types: BTreeMap<String, String>,
    /// A package's metric declarations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::Decls>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectProgram {
    pub name: String,
    pub section: String,
    #[serde(rename = "type")]
    pub prog_type: Option<String>,
    /// Where `apiary run` attaches it.
    pub attach: String,
    pub insns: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectMap {
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub key: Option<String>,
    pub value: Option<String>,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
    pub max_entries: Option<u32>,
}

/// The attach target a section name implies, as `apiary run` uses it.
fn attach_of(section: &str, ty: Option<ProgramType>) -> String {
    let Some(ty) = ty else {
        return "(unknown section)".into();
    };
    match ty.info().run {
        RunRule::Section => match apiary_core::AttachSpec::from_section(ty, section) {
            Some(spec) => spec.describe(),
            None => match section.split_once('/') {
                Some((_, rest)) if !rest.is_empty() => format!("{rest} (attached by libbpf)"),
                _ => "(none in the section: use apiary attach)".into(),
            },
        },
        RunRule::Interface => "an interface (--iface)".into(),
        RunRule::Cgroup => "a cgroup (--cgroup)".into(),
        RunRule::CpuClock => "cpu-clock at 99 Hz on every CPU".into(),
        RunRule::SectionOnly(_) => match apiary_core::AttachSpec::from_section(ty, section) {
            Some(spec) => spec.describe(),
            None => "(none in the section: use apiary attach)".into(),
        },
        RunRule::Never(_) => "not by run (see apiary run)".into(),
    }
}

pub fn inspect(source: &str) -> Result<Inspection> {
    let fetched = crate::source::fetch(source)?;
    let mut info = apiary_core::elf::inspect(&fetched.object).map_err(|error| Error::Object {
        source_name: source.to_string(),
        error,
    })?;
    let mut event_types = apiary_core::events::event_type_names(&mut info, &fetched.object);
    // A package's object lacks the DWARF some of its event types came from: it records them.
    if let Some(p) = &fetched.package {
        event_types.extend(p.event_types.clone());
    }
    Ok(Inspection {
        source: source.to_string(),
        license: info.license.clone(),
        btf: info.has_btf,
        btf_ext: info.has_btf_ext,
        programs: info
            .programs
            .iter()
            .map(|p| {
                let ty = ProgramType::from_section(&p.section);
                InspectProgram {
                    name: p.name.clone(),
                    section: p.section.clone(),
                    prog_type: ty.map(|t| t.to_string()),
                    attach: attach_of(&p.section, ty),
                    insns: p.insn_count,
                }
            })
            .collect(),
        maps: info
            .maps
            .iter()
            .map(|m| InspectMap {
                name: m.name.clone(),
                map_type: m.map_type_name.clone(),
                key: m.key_type_name.clone(),
                value: m.value_type_name.clone(),
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
            })
            .collect(),
        globals: globals_of(&info),
        externs: info.externs.clone(),
        event_types,
        metrics: fetched.package.as_ref().and_then(|p| p.metrics.clone()),
    })
}
