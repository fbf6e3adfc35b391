//! Tracepoints (tracefs events, `tracepoint/CATEGORY/NAME`) through a perf event.

use crate::attach::{valid_tp_part, AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunEvent, TypeInfo};
use serde::{Deserialize, Serialize};

/// A tracepoint, CATEGORY/NAME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TracepointAttach {
    /// `category/name`, e.g. `syscalls/sys_enter_getppid`.
    #[cfg_attr(feature = "cli", arg(long))]
    pub tracepoint: String,
}

pub const INFO: TypeInfo = TypeInfo {
    aliases: &["tp"],
    section_prefixes: &["tracepoint", "tp"],
    labels: &["tracepoint"],
    requires: "tracefs tracepoints",
    // BPF_PROG_TYPE_TRACEPOINT, no expected attach type
    untyped: Some((5, 0)),
    event: RunEvent::Tracepoint,
    default_spec: from_section,
    ..TypeInfo::base(ProgramType::Tracepoint, "tracepoint")
};

/// `tracepoint/CAT/NAME` or `tp/CAT/NAME`.
fn from_section(_: &RunTargets, section: &str) -> Option<AttachSpec> {
    let (_, rest) = section.split_once('/')?;
    let (cat, name) = rest.split_once('/')?;
    if cat.is_empty() || name.is_empty() {
        return None;
    }
    Some(AttachSpec::Tracepoint(TracepointAttach {
        tracepoint: rest.to_string(),
    }))
}

impl AttachOptions for TracepointAttach {
    const TYPE: ProgramType = ProgramType::Tracepoint;

    fn validate(&self) -> Result<(), String> {
        let mut parts = self.tracepoint.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(n), None) if valid_tp_part(c) && valid_tp_part(n) => Ok(()),
            _ => Err(format!(
                "invalid tracepoint {:?}: expected CATEGORY/NAME, e.g. syscalls/sys_enter_getppid",
                self.tracepoint
            )),
        }
    }

    fn describe(&self) -> String {
        format!("tracepoint {}", self.tracepoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_validation() {
        let f = AttachSpec::from_section;
        assert_eq!(
            f(ProgramType::Tracepoint, "tp/syscalls/sys_enter_openat"),
            Some(AttachSpec::Tracepoint(TracepointAttach {
                tracepoint: "syscalls/sys_enter_openat".into()
            }))
        );
        assert_eq!(f(ProgramType::Tracepoint, "tracepoint"), None);
        let tp = |s: &str| TracepointAttach {
            tracepoint: s.into(),
        };
        assert!(tp("syscalls/sys_enter_getppid").validate().is_ok());
        assert!(tp("nocategory").validate().is_err());
        assert!(tp("a/b/c").validate().is_err());
    }
}
