//! TC (sched_cls): a program on an interface's ingress or egress, in the direction's chain of
//! programs (a dispatcher on a TCX link), or with `legacy` a single cls_bpf filter on the
//! clsact qdisc, for kernels without TCX.

use super::tcx::TcxAttach;
use crate::attach::{
    default_priority, describe_netns, validate_iface, AttachOptions, AttachSpec, ChainJoin,
    RunTargets, XdpMode,
};
use crate::chain::ChainKind;
use crate::hook::Hook;
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[cfg(feature = "cli")]
use crate::attach::parse_netns;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum TcDirection {
    Ingress,
    Egress,
}

pub fn dir_name(d: TcDirection) -> &'static str {
    match d {
        TcDirection::Ingress => "ingress",
        TcDirection::Egress => "egress",
    }
}

/// TC on an interface and direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TcAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub iface: String,
    /// A network namespace: a name from `ip netns` or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
    pub netns: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(long, value_enum))]
    pub direction: TcDirection,
    /// 1 (runs first) to 1000 (runs last); ties run in attach order.
    #[serde(default = "default_priority")]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = default_priority()))]
    pub priority: u32,
    /// TC actions after which the chain goes on: unspec, ok, reclassify, shot, pipe, stolen,
    /// queued, repeat, redirect, trap, dispatcher_return (default ok,pipe,dispatcher_return).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "cli", arg(long, value_delimiter = ','))]
    pub proceed_on: Vec<String>,
    /// A single cls_bpf filter on the clsact qdisc instead of a chain (kernels without TCX).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub legacy: bool,
}

pub const INFO: TypeInfo = TypeInfo {
    aliases: &["classifier", "sched-cls"],
    section_prefixes: &["tc", "classifier"],
    labels: &["tc", "sched_cls", "classifier"],
    run: RunRule::Interface,
    requires: "TCX links (Linux 6.6) for chains; clsact for --legacy",
    // BPF_PROG_TYPE_SCHED_CLS, no expected attach type
    untyped: Some((3, 0)),
    chainable: true,
    default_spec: for_run,
    ..TypeInfo::base(ProgramType::Tc, "tc")
};

/// `apiary run --iface`: a TCX link of its own (no chain for a foreground run), in the direction
/// the section names (`tc/egress`), ingress otherwise. Shared with the tcx type.
pub(crate) fn for_run(t: &RunTargets, section: &str) -> Option<AttachSpec> {
    Some(AttachSpec::Tcx(TcxAttach {
        iface: t.iface(),
        netns: t.netns.clone(),
        direction: if section.contains("egress") {
            TcDirection::Egress
        } else {
            TcDirection::Ingress
        },
        priority: 0,
    }))
}

impl AttachOptions for TcAttach {
    const TYPE: ProgramType = ProgramType::Tc;

    fn validate(&self) -> Result<(), String> {
        validate_iface(&self.iface)?;
        match self.chain() {
            Some(c) => c.validate(),
            None if !self.proceed_on.is_empty() => {
                Err("--proceed-on applies to chains, not to a --legacy tc filter".into())
            }
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        let (iface, dir, ns) = (
            &self.iface,
            dir_name(self.direction),
            describe_netns(&self.netns),
        );
        if self.legacy {
            format!("tc {iface} {dir} legacy{ns}")
        } else {
            format!("tc {iface} {dir} prio={}{ns}", self.priority)
        }
    }

    fn chain(&self) -> Option<ChainJoin<'_>> {
        (!self.legacy).then(|| ChainJoin {
            hook: Hook {
                kind: ChainKind::Tc,
                iface: self.iface.clone(),
                netns: self.netns.clone(),
                direction: Some(self.direction),
                mode: XdpMode::Auto,
            },
            proceed_on: &self.proceed_on,
            priority: self.priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(legacy: bool, on: &[&str]) -> TcAttach {
        TcAttach {
            iface: "veth0".into(),
            netns: None,
            direction: TcDirection::Egress,
            priority: 20,
            proceed_on: on.iter().map(|s| s.to_string()).collect(),
            legacy,
        }
    }

    #[test]
    fn legacy_filters_are_not_chain_members() {
        assert!(tc(false, &["ok"]).validate().is_ok());
        assert!(tc(false, &["drop"]).validate().is_err());
        assert!(tc(true, &[]).chain().is_none());
        assert!(tc(true, &["ok"])
            .validate()
            .unwrap_err()
            .contains("--legacy"));
        assert_eq!(tc(true, &[]).describe(), "tc veth0 egress legacy");
        assert_eq!(tc(false, &[]).describe(), "tc veth0 egress prio=20");
    }
}
