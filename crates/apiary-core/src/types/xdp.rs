//! XDP: a program on an interface's receive path, in the interface's chain of programs
//! (apiary's dispatcher runs them in priority order).

use crate::attach::{
    default_priority, describe_netns, validate_iface, AttachOptions, AttachSpec, ChainJoin,
    RunTargets,
};
use crate::chain::ChainKind;
use crate::hook::Hook;
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[cfg(feature = "cli")]
use crate::attach::parse_netns;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum XdpMode {
    /// Driver mode, falling back to generic (skb) mode where the driver has no XDP support,
    /// as `ip link set xdp` does.
    #[default]
    Auto,
    Drv,
    Skb,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Drv => "drv",
            XdpMode::Skb => "skb",
        }
    }
}

/// XDP on an interface, in its chain of programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct XdpAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub iface: String,
    /// A network namespace: a name from `ip netns` or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = XdpMode::Auto))]
    pub mode: XdpMode,
    /// 1 (runs first) to 1000 (runs last); ties run in attach order.
    #[serde(default = "default_priority")]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = default_priority()))]
    pub priority: u32,
    /// Verdicts after which the chain goes on: aborted, drop, pass, tx, redirect,
    /// dispatcher_return (default pass,dispatcher_return).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "cli", arg(long, value_delimiter = ','))]
    pub proceed_on: Vec<String>,
}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["xdp", "xdp.frags"],
    labels: &["xdp"],
    run: RunRule::Interface,
    requires: "XDP (any kernel apiary runs on; generic mode where drivers lack it)",
    // BPF_PROG_TYPE_XDP, BPF_XDP
    untyped: Some((6, 37)),
    chainable: true,
    link_update: true,
    default_spec: for_run,
    ..TypeInfo::base(ProgramType::Xdp, "xdp")
};

/// `apiary run --iface`: a slot at the end of the interface's chain.
fn for_run(t: &RunTargets, _section: &str) -> Option<AttachSpec> {
    Some(AttachSpec::Xdp(XdpAttach {
        iface: t.iface(),
        netns: t.netns.clone(),
        mode: XdpMode::Auto,
        priority: default_priority(),
        proceed_on: Vec::new(),
    }))
}

impl AttachOptions for XdpAttach {
    const TYPE: ProgramType = ProgramType::Xdp;

    fn validate(&self) -> Result<(), String> {
        validate_iface(&self.iface)?;
        self.chain().map_or(Ok(()), |c| c.validate())
    }

    fn describe(&self) -> String {
        format!(
            "xdp {}{} prio={} mode={}",
            self.iface,
            describe_netns(&self.netns),
            self.priority,
            self.mode.name()
        )
    }

    fn chain(&self) -> Option<ChainJoin<'_>> {
        Some(ChainJoin {
            hook: Hook {
                kind: ChainKind::Xdp,
                iface: self.iface.clone(),
                netns: self.netns.clone(),
                direction: None,
                mode: self.mode,
            },
            proceed_on: &self.proceed_on,
            priority: self.priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_options_are_checked() {
        let x = |p: u32, on: &[&str]| XdpAttach {
            iface: "veth0".into(),
            netns: None,
            mode: XdpMode::Auto,
            priority: p,
            proceed_on: on.iter().map(|s| s.to_string()).collect(),
        };
        assert!(x(50, &["pass", "dispatcher_return"]).validate().is_ok());
        assert!(x(0, &[]).validate().unwrap_err().contains("priority"));
        assert!(x(1001, &[]).validate().is_err());
        let e = x(5, &["bogus"]).validate().unwrap_err();
        assert!(e.contains("bogus") && e.contains("pass"), "{e}");
        assert!(XdpAttach {
            iface: "a/b".into(),
            ..x(5, &[])
        }
        .validate()
        .is_err());
    }

    #[test]
    fn describe() {
        let x = XdpAttach {
            iface: "veth0".into(),
            netns: Some("/var/run/netns/a".into()),
            mode: XdpMode::Skb,
            priority: 7,
            proceed_on: vec![],
        };
        assert_eq!(
            x.describe(),
            "xdp veth0 netns=/var/run/netns/a prio=7 mode=skb"
        );
    }
}
