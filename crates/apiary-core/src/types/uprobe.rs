//! uprobes and uretprobes: a user-space function (a path or a library name, a symbol and/or
//! offset), optionally in one process, through the uprobe PMU.

use crate::attach::{parse_offset, AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, TypeInfo};
use serde::{Deserialize, Serialize};

/// A user-space function: a path or library name (libc), and a symbol and/or offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct UprobeAttach {
    /// A path, or a library name resolved like the dynamic loader does (`libc`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub fn_name: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub offset: u64,
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long))]
    pub retprobe: bool,
    /// Only this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub pid: Option<i32>,
}

pub const INFO: TypeInfo = TypeInfo {
    aliases: &["uretprobe"],
    section_prefixes: &["uprobe", "uretprobe", "uprobe.s", "uretprobe.s"],
    return_prefixes: &["uretprobe", "uretprobe.s"],
    labels: &["uprobe", "uretprobe"],
    requires: "the uprobe PMU",
    // BPF_PROG_TYPE_KPROBE, no expected attach type
    untyped: Some((2, 0)),
    pmu: Some("/sys/bus/event_source/devices/uprobe"),
    default_spec: from_section,
    ..TypeInfo::base(ProgramType::Uprobe, "uprobe")
};

/// `uprobe/PATH:FN[+OFF]`; PATH keeps its leading slash (`uprobe//bin/sh:main`).
fn from_section(_: &RunTargets, section: &str) -> Option<AttachSpec> {
    let (_, rest) = section.split_once('/')?;
    let (target, func) = rest.rsplit_once(':')?;
    let (fn_name, offset) = match func.split_once('+') {
        Some((f, off)) => (f, parse_offset(off)?),
        None => (func, 0),
    };
    if target.is_empty() || fn_name.is_empty() {
        return None;
    }
    Some(AttachSpec::Uprobe(UprobeAttach {
        target: target.to_string(),
        fn_name: Some(fn_name.to_string()),
        offset,
        retprobe: ProgramType::section_is_retprobe(section),
        pid: None,
    }))
}

impl AttachOptions for UprobeAttach {
    const TYPE: ProgramType = ProgramType::Uprobe;

    fn validate(&self) -> Result<(), String> {
        if self.target.is_empty() {
            return Err("uprobe target is empty: give a path or a library name".into());
        }
        if self.fn_name.is_none() && self.offset == 0 {
            return Err("uprobe needs --fn-name or a non-zero --offset".into());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let kind = if self.retprobe { "uretprobe" } else { "uprobe" };
        let f = self.fn_name.as_deref().unwrap_or("");
        let p = self.pid.map(|p| format!(" pid={p}")).unwrap_or_default();
        format!("{kind} {}:{f}+{:#x}{p}", self.target, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_validation() {
        let f = |s| AttachSpec::from_section(ProgramType::Uprobe, s);
        assert_eq!(
            f("uretprobe//usr/bin/bash:readline"),
            Some(AttachSpec::Uprobe(UprobeAttach {
                target: "/usr/bin/bash".into(),
                fn_name: Some("readline".into()),
                offset: 0,
                retprobe: true,
                pid: None
            }))
        );
        assert_eq!(f("uprobe"), None);
        let u = UprobeAttach {
            target: "libc".into(),
            fn_name: None,
            offset: 0,
            retprobe: false,
            pid: None,
        };
        assert!(u.validate().unwrap_err().contains("--fn-name"));
    }
}
