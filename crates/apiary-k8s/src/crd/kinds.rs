//! The four kinds: the applications users write and the per-node state objects the agent
//! writes, with their status subresources and printer columns.

use super::spec::ApplicationSpec;
use super::types::BpfProgramType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "apiary.io";
pub const VERSION: &str = "v1alpha1";
/// bpfman-operator's group: objects of it are accepted unchanged by `apiary apply`.
pub const BPFMAN_GROUP: &str = "bpfman.io";

/// Programs loaded on the selected nodes, for one namespace's workloads.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apiary.io",
    version = "v1alpha1",
    kind = "BpfApplication",
    namespaced,
    status = "ApplicationStatus",
    shortname = "bpfapp",
    category = "apiary",
    doc = "eBPF programs from one object, loaded and attached on the nodes nodeSelector selects",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.ready"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[0].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[0].message"}"#,
    printcolumn = r#"{"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase", "priority": 1}"#,
    printcolumn = r#"{"name": "Programs", "type": "string", "jsonPath": ".spec.programs[*].name", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
pub struct BpfApplicationSpec {
    #[serde(flatten)]
    pub app: ApplicationSpec,
}

/// Programs loaded on the selected nodes, for the whole cluster.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apiary.io",
    version = "v1alpha1",
    kind = "ClusterBpfApplication",
    status = "ApplicationStatus",
    shortname = "cbpfapp",
    category = "apiary",
    doc = "eBPF programs from one object, loaded and attached on the nodes nodeSelector selects",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.ready"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[0].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[0].message"}"#,
    printcolumn = r#"{"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase", "priority": 1}"#,
    printcolumn = r#"{"name": "Programs", "type": "string", "jsonPath": ".spec.programs[*].name", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
pub struct ClusterBpfApplicationSpec {
    #[serde(flatten)]
    pub app: ApplicationSpec,
}

/// The summary over all nodes (the operator writes it; nothing else does).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// One condition, of bpfman's types (Pending, Success, Error, DeleteError), whose message
    /// names the nodes that are not ready and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// "ready/selected", for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Nodes whose labels match nodeSelector.
    #[serde(default)]
    pub nodes_selected: u32,
    /// Selected nodes whose agent reports every program loaded and attached.
    #[serde(default)]
    pub nodes_ready: u32,
    /// Selected nodes whose agent reports a failure.
    #[serde(default)]
    pub nodes_error: u32,
    /// Selected nodes whose agent has not reported yet.
    #[serde(default)]
    pub nodes_pending: u32,
    /// Selected nodes with no live apiary agent (counted as not ready).
    #[serde(default)]
    pub nodes_without_agent: u32,
    /// The application's generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The staged rollout, when `spec.rollout` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::RolloutStatus>,
}

/// What one node made of a BpfApplication; named `<application>-<node>`.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apiary.io",
    version = "v1alpha1",
    kind = "BpfApplicationState",
    namespaced,
    status = "ApplicationStateStatus",
    shortname = "bpfappstate",
    category = "apiary",
    doc = "What one node loaded and attached for a BpfApplication, per program and link",
    printcolumn = r#"{"name": "Node", "type": "string", "jsonPath": ".spec.node"}"#,
    printcolumn = r#"{"name": "Application", "type": "string", "jsonPath": ".spec.application"}"#,
    printcolumn = r#"{"name": "Load", "type": "string", "jsonPath": ".status.appLoadStatus"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[0].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[0].message", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BpfApplicationStateSpec {
    pub node: String,
    pub application: String,
}

/// What one node made of a ClusterBpfApplication; named `<application>-<node>`.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apiary.io",
    version = "v1alpha1",
    kind = "ClusterBpfApplicationState",
    status = "ApplicationStateStatus",
    shortname = "cbpfappstate",
    category = "apiary",
    doc = "What one node loaded and attached for a ClusterBpfApplication, per program and link",
    printcolumn = r#"{"name": "Node", "type": "string", "jsonPath": ".spec.node"}"#,
    printcolumn = r#"{"name": "Application", "type": "string", "jsonPath": ".spec.application"}"#,
    printcolumn = r#"{"name": "Load", "type": "string", "jsonPath": ".status.appLoadStatus"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[0].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[0].message", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBpfApplicationStateSpec {
    pub node: String,
    pub application: String,
}

/// One node's state of one application: what the reconciler reports, per program and link.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStateStatus {
    /// Bumped by each write of the agent.
    #[serde(default)]
    pub update_count: i64,
    pub app_load_status: AppLoadStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The revision (of code and global data) this node runs, when the application has a
    /// rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The programs' total run count (kernel.bpf_stats_enabled), for the rollout's gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_count: Option<u64>,
    /// The value of the gate's map entry, for the rollout's gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_value: Option<u64>,
    /// When the agent took these readings (the operator's gate windows need fresh ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum AppLoadStatus {
    #[default]
    NotLoaded,
    /// Every program is loaded (links have their own status).
    LoadSuccess,
    /// At least one program is not loaded; its message says why.
    LoadError,
    UnloadSuccess,
    UnloadError,
    /// The node's labels do not match nodeSelector: nothing is loaded here.
    NotSelected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgramState {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: BpfProgramType,
    /// The kernel's program id, once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<u32>,
    /// apiary's id for the program on this node (`apiary get program ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apiary_id: Option<i64>,
    pub program_link_status: ProgramLinkStatus,
    /// What went wrong, in words a user can act on (the verifier's key line, the missing
    /// interface, the failed image pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProgramLinkStatus {
    /// Loaded, and every link is attached.
    Success,
    /// Not loaded, or a link failed.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    /// The hook, as `apiary list links` shows it.
    pub hook: String,
    /// The kernel's link id(s) (none for a chain member: the chain has one link).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_ids: Vec<u32>,
    /// apiary's link id on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apiary_link_id: Option<i64>,
    pub link_status: LinkStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LinkStatus {
    Attached,
    NotAttached,
    AttachError,
}
