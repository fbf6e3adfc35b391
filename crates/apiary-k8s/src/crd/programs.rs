//! The member of a program entry named after its type (`xdp`, `tc`, `tracepoint`...): its
//! links, in bpfman's shapes for bpfman's types and in the same style for apiary's others.

use super::spec::{ContainerSelector, InterfaceSelector, NetworkNamespaceSelector};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_priority() -> i32 {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Direction {
    Ingress,
    Egress,
}

/// XDP verdicts after which an XDP chain goes on to its next program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum XdpProceedOn {
    Aborted,
    Drop,
    Pass,
    #[serde(rename = "TX")]
    Tx,
    ReDirect,
    DispatcherReturn,
}

/// TC actions after which a TC chain goes on to its next program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TcProceedOn {
    UnSpec,
    #[serde(rename = "OK")]
    Ok,
    ReClassify,
    Shot,
    Pipe,
    Stolen,
    Queued,
    Repeat,
    ReDirect,
    Trap,
    DispatcherReturn,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct XdpProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<XdpLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct XdpLink {
    pub interface_selector: InterfaceSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaceSelector>,
    /// 1 (runs first) to 1000 (runs last) in the interface's chain.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 1, max = 1000))]
    pub priority: i32,
    /// Default: Pass, DispatcherReturn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub proceed_on: Vec<XdpProceedOn>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TcProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<TcLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcLink {
    pub interface_selector: InterfaceSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaceSelector>,
    pub direction: Direction,
    /// 1 (runs first) to 1000 (runs last) in the interface's chain for the direction.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 1, max = 1000))]
    pub priority: i32,
    /// Default: OK, Pipe, DispatcherReturn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 11))]
    pub proceed_on: Vec<TcProceedOn>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TcxProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<TcxLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcxLink {
    pub interface_selector: InterfaceSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaceSelector>,
    pub direction: Direction,
    /// The kernel's own TCX order: lower runs first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 1, max = 1000))]
    pub priority: i32,
}

/// fentry/fexit: the target function is fixed when the program loads; `links` holds at most
/// one entry, whose presence attaches it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct FentryProgram {
    /// The kernel function (it must be the one the program's section names).
    #[schemars(length(min = 1, max = 64))]
    pub function: String,
    #[serde(default)]
    #[schemars(length(max = 1))]
    pub links: Vec<AttachMode>,
}

/// Types whose target the section names (tp_btf, iter, lsm): at most one entry; its presence
/// attaches the program.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct AttachOnlyProgram {
    #[serde(default)]
    #[schemars(length(max = 1))]
    pub links: Vec<AttachMode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttachMode {
    pub mode: AttachModeValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AttachModeValue {
    Attach,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct KprobeProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<KprobeLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KprobeLink {
    #[schemars(length(min = 1, max = 64))]
    pub function: String,
    /// Added to the function's address (kprobes only: a kretprobe's must be 0).
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct UprobeProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<UprobeLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.function) || (has(self.offset) && self.offset > 0)",
    "message": "a uprobe needs a function or a non-zero offset"
}]))]
pub struct UprobeLink {
    /// A library name (`libc`) or an absolute path.
    #[schemars(length(min = 1))]
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default)]
    pub offset: u64,
    /// Only this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The target inside these containers instead of on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<ContainerSelector>,
}

/// tracepoint (`CATEGORY/NAME`) and raw tracepoint (`NAME`) programs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TracepointProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<TracepointLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TracepointLink {
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CgroupSkbProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<CgroupSkbLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CgroupSkbLink {
    /// A cgroup v2 directory.
    #[schemars(length(min = 1))]
    pub cgroup_path: String,
    pub direction: Direction,
}

/// cgroup_sock and cgroup_sysctl programs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CgroupProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<CgroupLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CgroupLink {
    #[schemars(length(min = 1))]
    pub cgroup_path: String,
}

/// Socket-address (connect4, bind6...) and sockopt (getsockopt, setsockopt) programs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CgroupHookProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<CgroupHookLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CgroupHookLink {
    #[schemars(length(min = 1))]
    pub cgroup_path: String,
    /// Default: the hook the program's section names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<CgroupHookName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CgroupHookName {
    Connect4,
    Connect6,
    Bind4,
    Bind6,
    Sendmsg4,
    Sendmsg6,
    Recvmsg4,
    Recvmsg6,
    Getsockopt,
    Setsockopt,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct PerfEventProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<PerfEventLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PerfEventLink {
    pub event: SoftwareEventName,
    /// Samples per second per CPU.
    #[serde(default = "default_frequency")]
    #[schemars(range(min = 1))]
    pub frequency: u64,
    /// One CPU instead of all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
}

fn default_frequency() -> u64 {
    99
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SoftwareEventName {
    CpuClock,
    TaskClock,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct NetfilterProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<NetfilterLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetfilterLink {
    pub hook: NetfilterHookName,
    #[serde(default)]
    pub family: NetfilterFamilyName,
    /// Among netfilter's own hooks: lower runs first (conntrack -200, filter 0).
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaceSelector>,
    /// Defragment IP packets before the program sees them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub defrag: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NetfilterHookName {
    PreRouting,
    Input,
    Forward,
    Output,
    PostRouting,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NetfilterFamilyName {
    #[default]
    #[serde(rename = "IPv4")]
    Ipv4,
    #[serde(rename = "IPv6")]
    Ipv6,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SkLookupProgram {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub links: Vec<SkLookupLink>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkLookupLink {
    /// Default: the node's own network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaceSelector>,
}
