//! sk_lookup: picks the socket for a network namespace's incoming connections (Linux 5.9).

use crate::attach::AttachOptions;
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[cfg(feature = "cli")]
use crate::attach::parse_netns;

/// Socket lookups of a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct SkLookupAttach {
    /// A network namespace: a name from `ip netns` or a path.
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
    pub netns: PathBuf,
}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["sk_lookup"],
    labels: &["sk_lookup"],
    run: RunRule::Never(
        "an sk_lookup program steers a network namespace's connections to sockets an application puts in its map: use apiary attach ID sk-lookup --netns",
    ),
    requires: "sk_lookup (Linux 5.9)",
    // BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP
    untyped: Some((30, 36)),
    link_update: true,
    ..TypeInfo::base(ProgramType::SkLookup, "sk-lookup")
};

impl AttachOptions for SkLookupAttach {
    const TYPE: ProgramType = ProgramType::SkLookup;

    fn validate(&self) -> Result<(), String> {
        if self.netns.as_os_str().is_empty() {
            Err("sk-lookup needs --netns: a name from `ip netns` or a path".into())
        } else {
            Ok(())
        }
    }

    fn describe(&self) -> String {
        format!("sk_lookup netns={}", self.netns.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_netns() {
        let s = SkLookupAttach {
            netns: PathBuf::new(),
        };
        assert!(s.validate().unwrap_err().contains("--netns"));
        let s = SkLookupAttach {
            netns: "/var/run/netns/a".into(),
        };
        assert_eq!(s.describe(), "sk_lookup netns=/var/run/netns/a");
    }
}
