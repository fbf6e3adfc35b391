//! perf_event: a program sampled by a software perf event on every CPU (or one).

use crate::attach::{AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};

/// The kernel's software perf events that a `perf-event` program can be driven by (hardware
/// events are often absent in VMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum SoftwareEvent {
    CpuClock,
    TaskClock,
}

/// A software perf event sampled on every CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct PerfEventAttach {
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = SoftwareEvent::CpuClock))]
    pub event: SoftwareEvent,
    /// Samples per second per CPU.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 99))]
    pub frequency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpu: Option<u32>,
}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["perf_event"],
    labels: &["perf_event"],
    run: RunRule::CpuClock,
    requires: "perf events (software events suffice)",
    // BPF_PROG_TYPE_PERF_EVENT, no expected attach type
    untyped: Some((7, 0)),
    default_spec: |_: &RunTargets, _: &str| {
        Some(AttachSpec::PerfEvent(PerfEventAttach {
            event: SoftwareEvent::CpuClock,
            frequency: 99,
            cpu: None,
        }))
    },
    ..TypeInfo::base(ProgramType::PerfEvent, "perf-event")
};

impl AttachOptions for PerfEventAttach {
    const TYPE: ProgramType = ProgramType::PerfEvent;

    fn validate(&self) -> Result<(), String> {
        if self.frequency == 0 {
            Err("perf-event frequency must be at least 1".into())
        } else {
            Ok(())
        }
    }

    fn describe(&self) -> String {
        let c = self.cpu.map(|c| format!(" cpu={c}")).unwrap_or_default();
        format!("perf_event {:?} {}Hz{c}", self.event, self.frequency).to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_and_description() {
        let p = PerfEventAttach {
            event: SoftwareEvent::TaskClock,
            frequency: 0,
            cpu: Some(1),
        };
        assert!(p.validate().is_err());
        assert_eq!(
            PerfEventAttach { frequency: 9, ..p }.describe(),
            "perf_event taskclock 9hz cpu=1"
        );
    }
}
