//! The program types an application may declare, in one table: the value of `type`, the member
//! that must accompany it, and apiary's program type. The CEL rules of the CRD and the local
//! validation are both generated from it, so they cannot disagree.

use super::spec::ApplicationProgram;
use apiary_core::ProgramType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// bpfman's spellings for bpfman's types; apiary's others in the same style.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BpfProgramType {
    #[default]
    #[serde(rename = "XDP")]
    Xdp,
    #[serde(rename = "TC")]
    Tc,
    #[serde(rename = "TCX")]
    Tcx,
    FEntry,
    FExit,
    KProbe,
    KRetProbe,
    UProbe,
    URetProbe,
    TracePoint,
    RawTracePoint,
    TpBtf,
    Iter,
    Lsm,
    CgroupSkb,
    CgroupSock,
    CgroupSockAddr,
    CgroupSockopt,
    CgroupSysctl,
    PerfEvent,
    Netfilter,
    SkLookup,
}

pub struct TypeEntry {
    pub ty: BpfProgramType,
    /// The value of `type`.
    pub name: &'static str,
    /// The member holding the links.
    pub member: &'static str,
    pub program_type: ProgramType,
    /// A return probe of its program type.
    pub retprobe: bool,
}

const fn entry(
    ty: BpfProgramType,
    name: &'static str,
    member: &'static str,
    program_type: ProgramType,
    retprobe: bool,
) -> TypeEntry {
    TypeEntry {
        ty,
        name,
        member,
        program_type,
        retprobe,
    }
}

pub const TYPES: &[TypeEntry] = &[
    entry(BpfProgramType::Xdp, "XDP", "xdp", ProgramType::Xdp, false),
    entry(BpfProgramType::Tc, "TC", "tc", ProgramType::Tc, false),
    entry(BpfProgramType::Tcx, "TCX", "tcx", ProgramType::Tcx, false),
    entry(
        BpfProgramType::FEntry,
        "FEntry",
        "fentry",
        ProgramType::Fentry,
        false,
    ),
    entry(
        BpfProgramType::FExit,
        "FExit",
        "fexit",
        ProgramType::Fexit,
        false,
    ),
    entry(
        BpfProgramType::KProbe,
        "KProbe",
        "kprobe",
        ProgramType::Kprobe,
        false,
    ),
    entry(
        BpfProgramType::KRetProbe,
        "KRetProbe",
        "kretprobe",
        ProgramType::Kprobe,
        true,
    ),
    entry(
        BpfProgramType::UProbe,
        "UProbe",
        "uprobe",
        ProgramType::Uprobe,
        false,
    ),
    entry(
        BpfProgramType::URetProbe,
        "URetProbe",
        "uretprobe",
        ProgramType::Uprobe,
        true,
    ),
    entry(
        BpfProgramType::TracePoint,
        "TracePoint",
        "tracepoint",
        ProgramType::Tracepoint,
        false,
    ),
    entry(
        BpfProgramType::RawTracePoint,
        "RawTracePoint",
        "rawTracepoint",
        ProgramType::RawTracepoint,
        false,
    ),
    entry(
        BpfProgramType::TpBtf,
        "TpBtf",
        "tpBtf",
        ProgramType::TpBtf,
        false,
    ),
    entry(
        BpfProgramType::Iter,
        "Iter",
        "iter",
        ProgramType::Iter,
        false,
    ),
    entry(BpfProgramType::Lsm, "Lsm", "lsm", ProgramType::Lsm, false),
    entry(
        BpfProgramType::CgroupSkb,
        "CgroupSkb",
        "cgroupSkb",
        ProgramType::CgroupSkb,
        false,
    ),
    entry(
        BpfProgramType::CgroupSock,
        "CgroupSock",
        "cgroupSock",
        ProgramType::CgroupSock,
        false,
    ),
    entry(
        BpfProgramType::CgroupSockAddr,
        "CgroupSockAddr",
        "cgroupSockAddr",
        ProgramType::CgroupSockAddr,
        false,
    ),
    entry(
        BpfProgramType::CgroupSockopt,
        "CgroupSockopt",
        "cgroupSockopt",
        ProgramType::CgroupSockopt,
        false,
    ),
    entry(
        BpfProgramType::CgroupSysctl,
        "CgroupSysctl",
        "cgroupSysctl",
        ProgramType::CgroupSysctl,
        false,
    ),
    entry(
        BpfProgramType::PerfEvent,
        "PerfEvent",
        "perfEvent",
        ProgramType::PerfEvent,
        false,
    ),
    entry(
        BpfProgramType::Netfilter,
        "Netfilter",
        "netfilter",
        ProgramType::Netfilter,
        false,
    ),
    entry(
        BpfProgramType::SkLookup,
        "SkLookup",
        "skLookup",
        ProgramType::SkLookup,
        false,
    ),
];

impl BpfProgramType {
    pub fn entry(self) -> &'static TypeEntry {
        // Every variant has an entry (checked by a test), so the fallback is never taken.
        TYPES.iter().find(|e| e.ty == self).unwrap_or(&TYPES[0])
    }
    pub fn name(self) -> &'static str {
        self.entry().name
    }
    pub fn member(self) -> &'static str {
        self.entry().member
    }
    pub fn program_type(self) -> ProgramType {
        self.entry().program_type
    }
}

impl std::fmt::Display for BpfProgramType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ApplicationProgram {
    /// Each member and whether it is set, in the table's order.
    pub fn members(&self) -> [(&'static str, bool); 22] {
        [
            ("xdp", self.xdp.is_some()),
            ("tc", self.tc.is_some()),
            ("tcx", self.tcx.is_some()),
            ("fentry", self.fentry.is_some()),
            ("fexit", self.fexit.is_some()),
            ("kprobe", self.kprobe.is_some()),
            ("kretprobe", self.kretprobe.is_some()),
            ("uprobe", self.uprobe.is_some()),
            ("uretprobe", self.uretprobe.is_some()),
            ("tracepoint", self.tracepoint.is_some()),
            ("rawTracepoint", self.raw_tracepoint.is_some()),
            ("tpBtf", self.tp_btf.is_some()),
            ("iter", self.iter.is_some()),
            ("lsm", self.lsm.is_some()),
            ("cgroupSkb", self.cgroup_skb.is_some()),
            ("cgroupSock", self.cgroup_sock.is_some()),
            ("cgroupSockAddr", self.cgroup_sock_addr.is_some()),
            ("cgroupSockopt", self.cgroup_sockopt.is_some()),
            ("cgroupSysctl", self.cgroup_sysctl.is_some()),
            ("perfEvent", self.perf_event.is_some()),
            ("netfilter", self.netfilter.is_some()),
            ("skLookup", self.sk_lookup.is_some()),
        ]
    }
}

/// The message of the rule tying `type` to its member, shared by the CEL rule and the local
/// check so both say the same.
pub fn member_message(e: &TypeEntry) -> String {
    format!(
        "{} configuration is required when type is {}, and forbidden otherwise",
        e.member, e.name
    )
}

/// schemars transform: one CEL rule per type, from the table.
pub fn member_rules(schema: &mut schemars::Schema) {
    let rules: Vec<serde_json::Value> = TYPES
        .iter()
        .map(|e| {
            serde_json::json!({
                "rule": format!(
                    "self.type == '{}' ? has(self.{}) : !has(self.{})",
                    e.name, e.member, e.member
                ),
                "message": member_message(e),
            })
        })
        .collect();
    schema.insert("x-kubernetes-validations".into(), rules.into());
}
