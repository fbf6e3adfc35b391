//! TCX: a program on its own TCX link (Linux 6.6) of an interface and direction, in the
//! kernel's native order (lower priority runs first).

use crate::attach::{
    default_priority, describe_netns, dir_name, validate_iface, AttachOptions, TcDirection,
};
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[cfg(feature = "cli")]
use crate::attach::parse_netns;

/// A TCX link of its own, ordered by priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TcxAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub iface: String,
    /// A network namespace: a name from `ip netns` or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
    pub netns: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(long, value_enum))]
    pub direction: TcDirection,
    // Stored specs always carry it; the default is for messages that leave it out (gRPC).
    #[serde(default = "default_priority")]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = default_priority()))]
    pub priority: u32,
}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["tcx"],
    labels: &["tcx"],
    run: RunRule::Interface,
    requires: "TCX links (Linux 6.6)",
    // BPF_PROG_TYPE_SCHED_CLS, no expected attach type
    untyped: Some((3, 0)),
    chainable: true,
    link_update: true,
    default_spec: super::tc::for_run,
    ..TypeInfo::base(ProgramType::Tcx, "tcx")
};

impl AttachOptions for TcxAttach {
    const TYPE: ProgramType = ProgramType::Tcx;

    fn validate(&self) -> Result<(), String> {
        validate_iface(&self.iface)
    }

    fn describe(&self) -> String {
        format!(
            "tcx {} {} prio={}{}",
            self.iface,
            dir_name(self.direction),
            self.priority,
            describe_netns(&self.netns)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_and_validate() {
        let t = TcxAttach {
            iface: "veth0".into(),
            netns: None,
            direction: TcDirection::Ingress,
            priority: 5,
        };
        assert_eq!(t.describe(), "tcx veth0 ingress prio=5");
        assert!(t.validate().is_ok());
        assert!(TcxAttach {
            iface: String::new(),
            ..t
        }
        .validate()
        .is_err());
    }
}
