//! BPF iterators (`iter/task`, `iter/bpf_map`...): the target is fixed at load time from the
//! section; the link is pinned, and reading the pin runs the iterator once.

use crate::attach::{AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, TypeInfo};
use serde::{Deserialize, Serialize};

/// A BPF iterator; its target comes from the section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct IterAttach {}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["iter", "iter.s"],
    labels: &["iter"],
    requires: "BPF iterators and kernel BTF",
    link_update: true,
    default_spec: |_: &RunTargets, _: &str| Some(AttachSpec::Iter(IterAttach {})),
    ..TypeInfo::base(ProgramType::Iter, "iter")
};

impl AttachOptions for IterAttach {
    const TYPE: ProgramType = ProgramType::Iter;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "iter".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_attaches_from_the_section() {
        assert_eq!(
            AttachSpec::from_section(ProgramType::Iter, "iter/task"),
            Some(AttachSpec::Iter(IterAttach {}))
        );
        assert_eq!(
            ProgramType::from_section("iter.s/task"),
            Some(ProgramType::Iter)
        );
    }
}
