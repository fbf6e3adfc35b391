//! apiary packages: one JSON file with the object (gzip, base64) and what `inspect` knows about
//! it, so a tool can be shared as a single file or URL and run with `apiary run`.
//!
//! The object is stored without its DWARF: with `-g` and `vmlinux.h` DWARF is most of a tool's
//! object, and nothing loads it. The one thing apiary reads from DWARF, an event struct clang
//! left out of BTF (a local variable's type), is carried in `event_type_defs` instead, so the
//! events of a stripped object decode as they did.

use apiary_core::btf;
use apiary_core::btf::subset::TypeSubset;
use apiary_core::elf::{self, ObjectInfo};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

pub const FORMAT: &str = "apiary-package/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Package {
    pub format: String,
    pub name: String,
    pub created: String,
    /// sha256 of the uncompressed object.
    pub sha256: String,
    pub size: usize,
    pub license: Option<String>,
    pub programs: Vec<PackageProgram>,
    pub maps: Vec<PackageMap>,
    pub globals: Vec<PackageGlobal>,
    /// Event type per ring buffer / perf event array, where one could be found.
    pub event_types: BTreeMap<String, String>,
    /// Per event map, the definition of its event type when only the object's DWARF held it
    /// (DWARF is stripped from the packaged object).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub event_type_defs: BTreeMap<String, TypeSubset>,
    /// Size of the object before its DWARF was stripped (absent: nothing was stripped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_with_debug: Option<usize>,
    /// Which maps become metrics (from `prog.metrics.yaml` next to the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::Decls>,
    /// gzip, then base64 (standard alphabet).
    pub object: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageProgram {
    pub name: String,
    pub section: String,
    #[serde(rename = "type")]
    pub prog_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageMap {
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub key: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageGlobal {
    pub name: String,
    pub section: String,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub default: serde_json::Value,
    pub read_only: bool,
}

/// Globals with their types and decoded defaults; shared by `inspect` and packages.
pub fn globals_of(info: &ObjectInfo) -> Vec<PackageGlobal> {
    info.globals
        .iter()
        .map(|g| PackageGlobal {
            name: g.name.clone(),
            section: g.section.clone(),
            type_name: g.type_name.clone(),
            default: match (&info.btf, g.type_id) {
                (Some(b), Some(t)) => {
                    btf::decode(b, t, &g.default).unwrap_or_else(|_| hex::encode(&g.default).into())
                }
                _ => hex::encode(&g.default).into(),
            },
            read_only: g.read_only,
        })
        .collect()
}

/// Event types of the object's event maps: names, and the definitions of those only DWARF
/// holds. `hint` (a struct from the header next to a source, see `crate::build`) is the event
/// type when the object has exactly one event map and the hint names a type it has.
fn event_types_of(
    info: &mut ObjectInfo,
    object: &[u8],
    hint: Option<&str>,
) -> (BTreeMap<String, String>, BTreeMap<String, TypeSubset>) {
    let event_maps: Vec<String> = info
        .maps
        .iter()
        .filter(|m| m.map_type_name == "ringbuf" || m.map_type_name == "perf_event_array")
        .map(|m| m.name.clone())
        .collect();
    let hint = hint.filter(|_| event_maps.len() == 1);
    let (mut names, mut defs) = (BTreeMap::new(), BTreeMap::new());
    for m in event_maps {
        let found = hint
            .and_then(|h| apiary_core::events::event_type(info, object, &m, Some(h)).ok())
            .flatten()
            .or_else(|| {
                apiary_core::events::event_type(info, object, &m, None)
                    .ok()
                    .flatten()
            });
        let (Some(t), Some(b)) = (found, info.btf.as_ref()) else {
            continue;
        };
        names.insert(m.clone(), b.type_name(t.id));
        if !b.is_native(t.id) {
            if let Some(sub) = TypeSubset::extract(b, t.id) {
                defs.insert(m, sub);
            }
        }
    }
    (names, defs)
}

impl Package {
    pub fn build(name: &str, object: &[u8]) -> Result<Package, String> {
        Package::build_with(name, object, None)
    }

    /// A package of `object`, stripped of DWARF; `event_type_hint` as in [`event_types_of`].
    pub fn build_with(
        name: &str,
        full: &[u8],
        event_type_hint: Option<&str>,
    ) -> Result<Package, String> {
        let mut info = elf::inspect(full).map_err(|e| e.to_string())?;
        let (event_types, event_type_defs) = event_types_of(&mut info, full, event_type_hint);
        let object = apiary_core::strip::strip_debug(full).map_err(|e| e.to_string())?;
        let object = &object[..];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(object).map_err(|e| e.to_string())?;
        let compressed = gz.finish().map_err(|e| e.to_string())?;
        Ok(Package {
            format: FORMAT.into(),
            name: name.to_string(),
            created: apiary_store::now(),
            sha256: hex::encode(Sha256::digest(object)),
            size: object.len(),
            license: info.license.clone(),
            programs: info
                .programs
                .iter()
                .map(|p| PackageProgram {
                    name: p.name.clone(),
                    section: p.section.clone(),
                    prog_type: apiary_core::ProgramType::from_section(&p.section)
                        .map(|t| t.to_string()),
                })
                .collect(),
            maps: info
                .maps
                .iter()
                .map(|m| PackageMap {
                    name: m.name.clone(),
                    map_type: m.map_type_name.clone(),
                    key: m.key_type_name.clone(),
                    value: m.value_type_name.clone(),
                })
                .collect(),
            globals: globals_of(&info),
            event_types,
            event_type_defs,
            size_with_debug: (object.len() != full.len()).then_some(full.len()),
            metrics: None,
            object: base64::engine::general_purpose::STANDARD.encode(compressed),
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Package, String> {
        let p: Package =
            serde_json::from_slice(bytes).map_err(|e| format!("not an apiary package: {e}"))?;
        if p.format != FORMAT {
            return Err(format!(
                "unsupported package format {:?} (this apiary reads {FORMAT})",
                p.format
            ));
        }
        Ok(p)
    }

    /// The object, decompressed (bounded) and checked against the recorded digest.
    pub fn object(&self) -> Result<Vec<u8>, String> {
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(self.object.trim())
            .map_err(|e| format!("package object is not valid base64: {e}"))?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .take(crate::source::MAX_SOURCE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("package object is not valid gzip: {e}"))?;
        if out.len() as u64 > crate::source::MAX_SOURCE_BYTES {
            return Err("package object is larger than the limit".into());
        }
        let digest = hex::encode(Sha256::digest(&out));
        if digest != self.sha256 {
            return Err(format!(
                "package object digest mismatch: recorded {}, got {digest}",
                self.sha256
            ));
        }
        Ok(out)
    }
}
