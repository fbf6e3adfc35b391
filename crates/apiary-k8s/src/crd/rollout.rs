//! Staged rollout: what the user asks for (`spec.rollout`) and what the operator records
//! (`status.rollout`). A revision is a digest of what changes the code or its data (the
//! bytecode source and the global data); a change of links or selectors is applied at once.

use super::spec::{ApplicationSpec, Base64Bytes, ByteCodeSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// How a new revision reaches the nodes (absent: all at once).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Nodes switched per batch: a count (2) or a share of the selected nodes ("25%",
    /// rounded up). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<IntOrString>,
    /// Wait between batches ("10s", "1m"). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<String>,
    /// What a switched node must show before the next batch starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
    /// `apiary rollout pause` sets it: no new batch starts (nodes in flight finish their gate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// How long the node must stay healthy on the new revision ("30s"). Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The programs' run count (kernel.bpf_stats_enabled) must rise during the window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_run_count_rising: bool,
    /// A map value that must stay at or under a threshold during the window (e.g. a drop
    /// counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_map_value: Option<MapGate>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapGate {
    /// The map's name in the object.
    pub map: String,
    /// The key, as an integer (array maps, integer-keyed hashes). Default 0.
    #[serde(default)]
    pub key: u64,
    /// The value's largest allowed number (values read as unsigned little-endian integers;
    /// per-CPU values summed).
    pub threshold: u64,
}

/// What a revision loads: enough for an agent to run it while the spec names another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSource {
    pub byte_code: ByteCodeSelector,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub global_data: BTreeMap<String, Base64Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum RolloutPhase {
    /// Every node runs the current revision.
    #[default]
    Complete,
    /// Batches are switching to the target revision.
    Progressing,
    /// `apiary rollout pause`: no new batch starts.
    Paused,
    /// A node failed its gate: every switched node went back to the current revision.
    RolledBack,
    /// The rollout cannot go on (e.g. the previous revision's source is unknown).
    Failed,
}

/// The operator's record of a rollout.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub phase: RolloutPhase,
    /// The revision every node ran before this rollout (and runs after a rollback).
    pub current_revision: String,
    /// The revision of the spec.
    pub target_revision: String,
    /// A target that failed its gate: not tried again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// The sources of the current and target revisions, so agents can build either.
    #[serde(default)]
    pub revisions: BTreeMap<String, RevisionSource>,
    /// Per node: the revision it may run, and its switch and gate.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRollout>,
    /// The batch last started (1-based; 0: none yet).
    #[serde(default)]
    pub batch: u32,
    /// When the last batch passed its gates (the pause counts from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_done_at: Option<Time>,
    /// What happened, for a person: which node failed and why, that it rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRollout {
    /// The revision this node's agent runs.
    pub revision: String,
    /// The batch that switched it.
    #[serde(default)]
    pub batch: u32,
    /// When the operator let it switch to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<Time>,
    /// When its agent first reported the target running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Time>,
    /// The programs' run count then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_count_at_start: Option<u64>,
    /// Waiting, Passed, or Failed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// When it was sent back to the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<Time>,
}

impl RevisionSource {
    pub fn of(spec: &ApplicationSpec) -> RevisionSource {
        RevisionSource {
            byte_code: spec.byte_code.clone(),
            global_data: spec.global_data.clone(),
        }
    }

    /// The revision's name: a digest of the source as JSON (maps are ordered, so the same
    /// source always gives the same name).
    pub fn revision(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..6])
    }

    /// `spec` with this revision's code and data.
    pub fn apply_to(&self, spec: &ApplicationSpec) -> ApplicationSpec {
        let mut s = spec.clone();
        s.byte_code = self.byte_code.clone();
        s.global_data = self.global_data.clone();
        s
    }
}

/// The revision of `spec`.
pub fn revision(spec: &ApplicationSpec) -> String {
    RevisionSource::of(spec).revision()
}

/// What `node` should run of an application with a rollout: the spec itself, or the spec with
/// the revision the rollout status allows the node. Returns the spec and its revision.
pub fn spec_for_node(
    spec: &ApplicationSpec,
    status: Option<&RolloutStatus>,
    node: &str,
) -> (ApplicationSpec, String) {
    let own = revision(spec);
    let Some(ro) = status.filter(|_| spec.rollout.is_some()) else {
        return (spec.clone(), own);
    };
    if ro.current_revision.is_empty() {
        return (spec.clone(), own);
    }
    // A node the rollout has not reached runs the current revision; a spec change the
    // operator has not seen yet is not run before it decides.
    let allowed = ro
        .nodes
        .get(node)
        .map(|n| n.revision.as_str())
        .unwrap_or(ro.current_revision.as_str());
    if allowed == own {
        return (spec.clone(), own);
    }
    match ro.revisions.get(allowed) {
        Some(src) => (src.apply_to(spec), allowed.to_string()),
        // Unknown source (should not happen): run the spec rather than nothing.
        None => (spec.clone(), own),
    }
}

/// Nodes per batch for `selected` nodes.
pub fn batch_size(spec: &RolloutSpec, selected: usize) -> usize {
    let n = match &spec.batch_size {
        None => 1,
        Some(IntOrString::Int(i)) => (*i).max(1) as usize,
        Some(IntOrString::String(s)) => match s.strip_suffix('%').map(str::trim) {
            Some(p) => {
                let pct: f64 = p.parse().unwrap_or(100.0);
                ((selected as f64) * pct / 100.0).ceil() as usize
            }
            None => s.trim().parse().unwrap_or(1),
        },
    };
    n.max(1)
}

/// A duration like "30s", "500ms", "2m"; None when unreadable.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Some(std::time::Duration::from_secs_f64(secs))
}
