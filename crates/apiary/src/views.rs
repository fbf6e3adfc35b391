//! What the manager returns: plain serialisable views. Their JSON is the stable output of
//! `-o json`, so fields are only ever added.

use apiary_core::{AttachSpec, LinkId, ProgramId};
use apiary_kernel::sys::{MapInfo, ProgInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramView {
    /// apiary's id; None for programs apiary does not manage (`list --all`).
    pub id: Option<ProgramId>,
    pub kernel_id: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub prog_type: String,
    pub section: Option<String>,
    pub source: Option<String>,
    pub links: Vec<LinkId>,
    pub attach_points: Vec<String>,
    pub loaded_at: Option<String>,
    pub map_owner_id: Option<ProgramId>,
    pub metadata: BTreeMap<String, String>,
    pub managed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkView {
    pub id: LinkId,
    pub program_id: ProgramId,
    pub program_name: String,
    pub spec: AttachSpec,
    pub attach_point: String,
    pub kernel_link_ids: Vec<u32>,
    pub created_at: String,
    /// How to read what the link produces (an iterator: `cat PIN`), when that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_with: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapView {
    pub kernel_id: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// The program whose load created the map (None if apiary does not manage it).
    pub owner_id: Option<ProgramId>,
    /// Managed programs using it.
    pub used_by: Vec<ProgramId>,
    pub managed: bool,
    /// Declared with LIBBPF_PIN_BY_NAME: shared by name between the programs that declare it,
    /// and removed with the last of them.
    #[serde(default)]
    pub pinned_by_name: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramDetail {
    #[serde(flatten)]
    pub program: ProgramView,
    pub tag: String,
    pub globals: Vec<apiary_store::GlobalRecord>,
    pub maps: Vec<MapView>,
    pub link_details: Vec<LinkView>,
    /// The kernel's view; None when the record's program is gone from the kernel.
    pub kernel: Option<ProgInfo>,
    pub kernel_error: Option<String>,
    /// Whether run_cnt/run_time_ns are being counted (kernel.bpf_stats_enabled).
    pub stats_enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapDump {
    pub map: MapInfo,
    pub entries: Vec<MapDumpEntry>,
    /// Whether keys and values were decoded with the map's BTF types.
    pub decoded: bool,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapDumpEntry {
    pub key: serde_json::Value,
    pub value: serde_json::Value,
    pub key_hex: String,
    pub value_hex: String,
}
