//! apiary packages: one JSON file with the object (gzip, base64) and what `inspect` knows about
//! it, so a tool can be shared as a single file or URL and run with `apiary run`.

use apiary_core::btf;
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

impl Package {
    pub fn build(name: &str, object: &[u8]) -> Result<Package, String> {
        let mut info = elf::inspect(object).map_err(|e| e.to_string())?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(object).map_err(|e| e.to_string())?;
        let compressed = gz.finish().map_err(|e| e.to_string())?;
        let event_types = apiary_core::events::event_type_names(&mut info, object);
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
