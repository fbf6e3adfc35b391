//! TraceJob: a bpftrace script or an apiary object run on chosen nodes for a while, with what
//! each node did in its own entry of the status (each node's agent owns its entry through a
//! field manager of its own, so nodes never conflict).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Run a tracing program on the nodes nodeName or nodeSelector picks.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apiary.io",
    version = "v1alpha1",
    kind = "TraceJob",
    status = "TraceJobStatus",
    shortname = "trace",
    category = "apiary",
    doc = "A bpftrace script or an apiary object run on chosen nodes, its output kept by each node's agent",
    printcolumn = r#"{"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"}"#,
    printcolumn = r#"{"name": "Duration", "type": "string", "jsonPath": ".spec.duration"}"#,
    printcolumn = r#"{"name": "Stop", "type": "boolean", "jsonPath": ".spec.stop"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TraceJobSpec {
    /// One node, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Every node whose labels match (when nodeName is not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    pub program: TraceProgram,
    /// How long each node runs it (e.g. 30s, 5m); unset: until stopped or the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Seconds after the job's creation when every node stops it, whatever the duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Set to stop the job on every node (bpftrace is interrupted and prints its maps).
    #[serde(default)]
    pub stop: bool,
    /// Events of objects as JSON lines rather than table rows.
    #[serde(default)]
    pub json: bool,
}

/// What runs: exactly one of bpftrace, object, image, package.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceProgram {
    /// bpftrace program text (run with the node's bpftrace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpftrace: Option<String>,
    /// An object or package on the node's filesystem, or an http(s) URL of either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// A bytecode image, pulled by the node with its registry settings and signature policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// An apiary package (its JSON text) carried in the job itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Globals of the object set by value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// Positional arguments ($1, $2... in bpftrace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TraceJobStatus {
    /// Per node, by node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeTraceStatus>,
}

/// What one node did with the job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTraceStatus {
    /// Pending, Running, Succeeded, Failed or Stopped.
    pub phase: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Bytes of output the run produced (the node keeps the last MiB).
    #[serde(default)]
    pub output_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The phases of a node's run.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const STOPPED: &str = "Stopped";

    /// Whether a run in this phase is over.
    pub fn is_final(p: &str) -> bool {
        matches!(p, SUCCEEDED | FAILED | STOPPED)
    }
}

impl TraceJobSpec {
    /// Whether the job runs on a node with this name and these labels.
    pub fn selects(&self, node: &str, labels: &BTreeMap<String, String>) -> bool {
        match (&self.node_name, &self.node_selector) {
            (Some(n), _) => n == node,
            (None, Some(sel)) => crate::facts::selector_matches(sel, labels),
            (None, None) => false,
        }
    }
}
