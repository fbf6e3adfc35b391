//! Raw tracepoints (`raw_tp/NAME`): a tracepoint's raw arguments, without tracefs.

use crate::attach::{valid_tp_part, AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunEvent, TypeInfo};
use serde::{Deserialize, Serialize};

/// A raw tracepoint by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RawTracepointAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub tracepoint: String,
}

pub const INFO: TypeInfo = TypeInfo {
    aliases: &["raw-tp", "rawtracepoint"],
    section_prefixes: &["raw_tracepoint", "raw_tp", "raw_tracepoint.w", "raw_tp.w"],
    labels: &["raw_tracepoint", "rawtracepoint", "raw_tp"],
    requires: "raw tracepoints",
    // BPF_PROG_TYPE_RAW_TRACEPOINT, no expected attach type
    untyped: Some((17, 0)),
    event: RunEvent::Tracepoint,
    default_spec: from_section,
    ..TypeInfo::base(ProgramType::RawTracepoint, "raw-tracepoint")
};

/// `raw_tp/NAME`.
fn from_section(_: &RunTargets, section: &str) -> Option<AttachSpec> {
    let (_, rest) = section.split_once('/')?;
    (!rest.is_empty()).then(|| {
        AttachSpec::RawTracepoint(RawTracepointAttach {
            tracepoint: rest.to_string(),
        })
    })
}

impl AttachOptions for RawTracepointAttach {
    const TYPE: ProgramType = ProgramType::RawTracepoint;

    fn validate(&self) -> Result<(), String> {
        if valid_tp_part(&self.tracepoint) {
            Ok(())
        } else {
            Err(format!("invalid raw tracepoint name {:?}", self.tracepoint))
        }
    }

    fn describe(&self) -> String {
        format!("raw_tp {}", self.tracepoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_validation() {
        assert_eq!(
            AttachSpec::from_section(ProgramType::RawTracepoint, "raw_tp/sched_switch"),
            Some(AttachSpec::RawTracepoint(RawTracepointAttach {
                tracepoint: "sched_switch".into()
            }))
        );
        assert_eq!(
            AttachSpec::from_section(ProgramType::RawTracepoint, "raw_tp"),
            None
        );
        let r = RawTracepointAttach {
            tracepoint: "sched/switch".into(),
        };
        assert!(r.validate().is_err());
    }
}
