//! netfilter: a program at a netfilter hook (Linux 6.4) of one address family, in a network
//! namespace, ordered among netfilter's own hooks by priority.

use crate::attach::{describe_netns, AttachOptions};
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[cfg(feature = "cli")]
use crate::attach::parse_netns;

/// The netfilter hooks a program can run at (NF_INET_*). Read through `FromStr`, so any
/// front door accepts the spellings the CLI does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NetfilterHook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NetfilterFamily {
    Ipv4,
    Ipv6,
}

impl NetfilterHook {
    pub const ALL: &'static [NetfilterHook] = &[
        NetfilterHook::Prerouting,
        NetfilterHook::Input,
        NetfilterHook::Forward,
        NetfilterHook::Output,
        NetfilterHook::Postrouting,
    ];
    pub fn name(self) -> &'static str {
        match self {
            NetfilterHook::Prerouting => "prerouting",
            NetfilterHook::Input => "input",
            NetfilterHook::Forward => "forward",
            NetfilterHook::Output => "output",
            NetfilterHook::Postrouting => "postrouting",
        }
    }
}

impl std::str::FromStr for NetfilterHook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.trim().to_ascii_lowercase();
        NetfilterHook::ALL
            .iter()
            .copied()
            .find(|h| h.name() == n)
            .ok_or_else(|| {
                format!("unknown netfilter hook {s:?}: expected prerouting, input, forward, output or postrouting")
            })
    }
}

impl TryFrom<String> for NetfilterHook {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl TryFrom<String> for NetfilterFamily {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl NetfilterFamily {
    pub fn name(self) -> &'static str {
        match self {
            NetfilterFamily::Ipv4 => "ipv4",
            NetfilterFamily::Ipv6 => "ipv6",
        }
    }
}

impl std::str::FromStr for NetfilterFamily {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ipv4" | "ip" | "inet" => Ok(NetfilterFamily::Ipv4),
            "ipv6" | "ip6" | "inet6" => Ok(NetfilterFamily::Ipv6),
            _ => Err(format!(
                "unknown netfilter family {s:?}: expected ipv4 or ipv6"
            )),
        }
    }
}

/// A netfilter hook of one address family, in a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct NetfilterAttach {
    /// prerouting, input, forward, output or postrouting.
    #[cfg_attr(feature = "cli", arg(long))]
    pub hook: NetfilterHook,
    #[cfg_attr(feature = "cli", arg(long, default_value = "ipv4"))]
    pub family: NetfilterFamily,
    /// Lower runs first, among netfilter's own hooks (conntrack -200, filter 0).
    #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
    pub priority: i32,
    /// A network namespace: a name from `ip netns` or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
    pub netns: Option<PathBuf>,
    /// Defragment IP packets before the program sees them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub defrag: bool,
}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["netfilter"],
    labels: &["netfilter"],
    run: RunRule::Never(
        "a netfilter program needs a hook, family and priority: use apiary attach ID netfilter",
    ),
    requires: "netfilter BPF links (Linux 6.4, CONFIG_NETFILTER_BPF_LINK)",
    // BPF_PROG_TYPE_NETFILTER, BPF_NETFILTER
    untyped: Some((32, 45)),
    ..TypeInfo::base(ProgramType::Netfilter, "netfilter")
};

impl AttachOptions for NetfilterAttach {
    const TYPE: ProgramType = ProgramType::Netfilter;

    fn validate(&self) -> Result<(), String> {
        // netfilter reserves the extremes for its own first and last hooks.
        if self.priority == i32::MIN || self.priority == i32::MAX {
            Err(format!(
                "netfilter priority {} is reserved; choose one between them",
                self.priority
            ))
        } else {
            Ok(())
        }
    }

    fn describe(&self) -> String {
        format!(
            "netfilter {} {} prio={}{}{}",
            self.family.name(),
            self.hook.name(),
            self.priority,
            if self.defrag { " defrag" } else { "" },
            describe_netns(&self.netns)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_priorities() {
        assert_eq!("INPUT".parse::<NetfilterHook>(), Ok(NetfilterHook::Input));
        assert!("sideways"
            .parse::<NetfilterHook>()
            .unwrap_err()
            .contains("unknown netfilter hook"));
        assert_eq!(
            "inet6".parse::<NetfilterFamily>(),
            Ok(NetfilterFamily::Ipv6)
        );
        let n = NetfilterAttach {
            hook: NetfilterHook::Input,
            family: NetfilterFamily::Ipv4,
            priority: i32::MIN,
            netns: None,
            defrag: true,
        };
        assert!(n.validate().unwrap_err().contains("reserved"));
        let j: NetfilterAttach =
            serde_json::from_str(r#"{"hook":"Input","family":"inet","priority":1}"#).unwrap();
        assert_eq!(
            (j.hook, j.family),
            (NetfilterHook::Input, NetfilterFamily::Ipv4)
        );
        assert_eq!(
            NetfilterAttach { priority: -5, ..n }.describe(),
            "netfilter ipv4 input prio=-5 defrag"
        );
    }
}
