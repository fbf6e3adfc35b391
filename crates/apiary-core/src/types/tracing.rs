//! BPF trampoline and BTF-typed programs (kernel types TRACING and LSM): tp_btf, fentry, fexit
//! and lsm. Their target is a BTF id fixed at load time from the section name, so their attach
//! options are empty.

use crate::attach::{AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunEvent, TypeInfo};
use serde::{Deserialize, Serialize};

/// A BTF tracepoint; the target comes from the program's section (`tp_btf/sched_switch`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TpBtfAttach {}

/// fentry (target from the section).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct FentryAttach {}

/// fexit (target from the section).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct FexitAttach {}

/// BPF LSM (hook from the section).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LsmAttach {}

pub const TP_BTF: TypeInfo = TypeInfo {
    section_prefixes: &["tp_btf"],
    labels: &["tp_btf"],
    requires: "kernel BTF (/sys/kernel/btf/vmlinux)",
    event: RunEvent::Tracepoint,
    default_spec: |_: &RunTargets, _: &str| Some(AttachSpec::TpBtf(TpBtfAttach {})),
    ..TypeInfo::base(ProgramType::TpBtf, "tp-btf")
};

pub const FENTRY: TypeInfo = TypeInfo {
    section_prefixes: &["fentry", "fentry.s"],
    labels: &["fentry"],
    requires: "BPF trampolines and kernel BTF",
    event: RunEvent::Function,
    default_spec: |_: &RunTargets, _: &str| Some(AttachSpec::Fentry(FentryAttach {})),
    ..TypeInfo::base(ProgramType::Fentry, "fentry")
};

pub const FEXIT: TypeInfo = TypeInfo {
    section_prefixes: &["fexit", "fexit.s"],
    return_prefixes: &["fexit", "fexit.s"],
    labels: &["fexit"],
    requires: "BPF trampolines and kernel BTF",
    event: RunEvent::Function,
    default_spec: |_: &RunTargets, _: &str| Some(AttachSpec::Fexit(FexitAttach {})),
    ..TypeInfo::base(ProgramType::Fexit, "fexit")
};

pub const LSM: TypeInfo = TypeInfo {
    section_prefixes: &["lsm", "lsm.s"],
    labels: &["lsm"],
    requires: "BPF trampolines and the bpf LSM (lsm=...,bpf)",
    default_spec: |_: &RunTargets, _: &str| Some(AttachSpec::Lsm(LsmAttach {})),
    ..TypeInfo::base(ProgramType::Lsm, "lsm")
};

impl AttachOptions for TpBtfAttach {
    const TYPE: ProgramType = ProgramType::TpBtf;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "tp_btf".into()
    }
}

impl AttachOptions for FentryAttach {
    const TYPE: ProgramType = ProgramType::Fentry;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "fentry".into()
    }
}

impl AttachOptions for FexitAttach {
    const TYPE: ProgramType = ProgramType::Fexit;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "fexit".into()
    }
}

impl AttachOptions for LsmAttach {
    const TYPE: ProgramType = ProgramType::Lsm;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "lsm".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_sections() {
        assert_eq!(
            AttachSpec::from_section(ProgramType::Fexit, "fexit/do_unlinkat"),
            Some(AttachSpec::Fexit(FexitAttach {}))
        );
        assert!(ProgramType::section_is_retprobe("fexit/do_unlinkat"));
        assert!(!ProgramType::section_is_retprobe("fentry/do_unlinkat"));
        assert_eq!(AttachSpec::TpBtf(TpBtfAttach {}).describe(), "tp_btf");
    }
}
