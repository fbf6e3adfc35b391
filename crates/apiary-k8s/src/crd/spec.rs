//! The spec both application kinds share: where the bytecode comes from, which nodes run it,
//! and the programs with their links. Field names and shapes follow bpfman-operator's
//! `bpfman.io/v1alpha1` BpfApplication / ClusterBpfApplication, so a bpfman object is read
//! unchanged; apiary's additions are optional fields and more program types.

use super::programs::*;
use super::types::BpfProgramType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an application declares: the same for the namespaced and the cluster-scoped kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The nodes to load the programs on; an empty selector selects every node.
    #[serde(default)]
    pub node_selector: LabelSelector,
    /// Values for global variables (`.rodata`, `.data`, `.bss`), raw bytes by name, set when the
    /// object is loaded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub global_data: BTreeMap<String, Base64Bytes>,
    pub byte_code: ByteCodeSelector,
    /// Share maps with another application's programs (their programs' labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_owner_selector: Option<LabelSelector>,
    /// The programs of the object to load; programs of one application share its maps.
    #[schemars(length(min = 1, max = 128))]
    pub programs: Vec<ApplicationProgram>,
    /// apiary's addition: a change of bytecode or global data reaches the nodes in batches,
    /// each gated on the programs' health, rolled back automatically when a gate fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::RolloutSpec>,
}

/// Where the object comes from: exactly one of `image` or `path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.image) != has(self.path)",
    "message": "byteCode needs exactly one source: image or path"
}]))]
pub struct ByteCodeSelector {
    /// A bytecode image in bpfman's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ByteCodeImage>,
    /// An object file on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(/[^/\x00]+)+/?$"))]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByteCodeImage {
    /// REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST.
    #[schemars(length(min = 1, max = 525))]
    pub url: String,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<ImagePullSecret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ImagePullSecret {
    pub name: String,
    pub namespace: String,
}

/// One program: its function name, its type, and the member named after the type (`xdp`,
/// `tc`, `tracepoint`...) holding its links. Exactly that member is present.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::types::member_rules)]
pub struct ApplicationProgram {
    /// The program's function name in the object.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    )]
    pub name: String,
    #[serde(rename = "type")]
    pub ty: BpfProgramType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<TcProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcx: Option<TcxProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fentry: Option<FentryProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fexit: Option<FentryProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kprobe: Option<KprobeProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kretprobe: Option<KprobeProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<UprobeProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uretprobe: Option<UprobeProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracepoint: Option<TracepointProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_tracepoint: Option<TracepointProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp_btf: Option<AttachOnlyProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iter: Option<AttachOnlyProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsm: Option<AttachOnlyProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_skb: Option<CgroupSkbProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sock: Option<CgroupProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sock_addr: Option<CgroupHookProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sockopt: Option<CgroupHookProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sysctl: Option<CgroupProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf_event: Option<PerfEventProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterProgram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk_lookup: Option<SkLookupProgram>,
}

/// Where a network program's links are made: in the node's own network namespace by default,
/// in those of the pods `pods` selects (bpfman's selector), or, apiary's addition for hosts
/// without pods, in network namespaces named like `ip netns` names them (or by path).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.pods) != has(self.names)",
    "message": "networkNamespaces selects by pods or by names, exactly one of them"
}]))]
pub struct NetworkNamespaceSelector {
    /// The Kubernetes namespace of the pods (cluster-scoped applications; default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pods whose network namespaces to use; an empty selector selects every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<LabelSelector>,
    /// Network namespaces on the node by `ip netns` name or path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

/// Which interfaces a link is made on: exactly one way of naming them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend(
    "minProperties" = 1,
    "maxProperties" = 1,
    "x-kubernetes-validations" = [{
        "rule": "!has(self.primaryNodeInterface) || self.primaryNodeInterface",
        "message": "primaryNodeInterface accepts only true"
    }]
))]
pub struct InterfaceSelector {
    /// Interfaces by name (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// The interface holding the node's InternalIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_node_interface: Option<bool>,
    /// Every interface present (and, with interfaceAutoDiscovery, those that appear later),
    /// less the excluded ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces_discovery_config: Option<InterfaceDiscovery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceDiscovery {
    /// Follow interfaces appearing and disappearing (the node agent watches netlink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_auto_discovery: Option<bool>,
    /// Names never selected; default `lo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_interfaces: Option<Vec<String>>,
    /// Only these names; `/REGEX/` entries match as regular expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_interfaces: Option<Vec<String>>,
}

/// Containers whose processes a uprobe applies to (bpfman's selector).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub pods: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_names: Option<Vec<String>>,
}

/// Raw bytes, base64 in JSON and YAML (as Kubernetes writes Go's `[]byte`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl Serialize for Base64Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

impl JsonSchema for Base64Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Base64Bytes".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "byte" })
    }
}
