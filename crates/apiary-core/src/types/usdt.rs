//! USDT probes (`<sys/sdt.h>`) of user-space binaries: a uprobe at each of the probe's sites,
//! its arguments described in the program's spec map (`BPF_USDT`). apiary attaches them itself
//! (libbpf's way needs its live object); the notes are read by [`crate::usdt`].

use crate::attach::{AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Serialize};

/// A USDT probe (`<sys/sdt.h>`) of a binary: a uprobe at each of its sites, its arguments
/// readable with BPF_USDT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct UsdtAttach {
    /// A path, or a library name resolved like the dynamic loader does (`libc`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub target: String,
    #[cfg_attr(feature = "cli", arg(long))]
    pub provider: String,
    #[cfg_attr(feature = "cli", arg(long))]
    pub name: String,
    /// Only this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub pid: Option<i32>,
}

pub const INFO: TypeInfo = TypeInfo {
    section_prefixes: &["usdt", "usdt.s"],
    labels: &["usdt"],
    // A section that names no probe is skipped, never handed to libbpf.
    run: RunRule::SectionOnly(
        "the section names no probe (usdt/PATH:PROVIDER:NAME): use apiary attach ID usdt --target --provider --name",
    ),
    requires: "the uprobe PMU and BPF cookies (Linux 5.15); uprobe_multi links (6.6) when libbpf loads for them",
    // libbpf types every `usdt` section itself.
    untyped: None,
    pmu: Some("/sys/bus/event_source/devices/uprobe"),
    default_spec: from_section,
    ..TypeInfo::base(ProgramType::Usdt, "usdt")
};

/// `usdt/PATH:PROVIDER:NAME`, as libbpf reads it; PATH keeps its leading slash.
fn from_section(_: &RunTargets, section: &str) -> Option<AttachSpec> {
    let (_, rest) = section.split_once('/')?;
    let mut parts = rest.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(p), Some(n), None) if !t.is_empty() && !p.is_empty() && !n.is_empty() => {
            Some(AttachSpec::Usdt(UsdtAttach {
                target: t.to_string(),
                provider: p.to_string(),
                name: n.to_string(),
                pid: None,
            }))
        }
        _ => None,
    }
}

impl AttachOptions for UsdtAttach {
    const TYPE: ProgramType = ProgramType::Usdt;

    fn validate(&self) -> Result<(), String> {
        if self.target.is_empty() {
            return Err("usdt target is empty: give a path or a library name".into());
        }
        if self.provider.is_empty() || self.name.is_empty() {
            return Err("usdt needs --provider and --name (see `readelf -n BINARY`)".into());
        }
        if self.pid.is_some_and(|p| p <= 0) {
            return Err("usdt --pid must be a process id (> 0)".into());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let p = self.pid.map(|p| format!(" pid={p}")).unwrap_or_default();
        format!("usdt {}:{}:{}{p}", self.target, self.provider, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::RunAttach;

    #[test]
    fn sections_run_and_validation() {
        let f = |s| AttachSpec::from_section(ProgramType::Usdt, s);
        assert_eq!(
            f("usdt//usr/bin/app:myapp:request"),
            Some(AttachSpec::Usdt(UsdtAttach {
                target: "/usr/bin/app".into(),
                provider: "myapp".into(),
                name: "request".into(),
                pid: None
            }))
        );
        assert_eq!(f("usdt"), None);
        assert_eq!(f("usdt/libc.so.6:libc"), None);
        // run: a section naming the probe attaches through apiary; a bare one is skipped,
        // never handed to libbpf (whose USDT attach needs its own live object).
        let run = RunTargets::default();
        assert!(matches!(
            run.attach(ProgramType::Usdt, "usdt//bin/app:app:req"),
            RunAttach::Spec(AttachSpec::Usdt(_))
        ));
        assert!(matches!(
            run.attach(ProgramType::Usdt, "usdt"),
            RunAttach::Skip(why) if why.contains("usdt/PATH:PROVIDER:NAME")
        ));
        let u = UsdtAttach {
            target: "/bin/app".into(),
            provider: "app".into(),
            name: String::new(),
            pid: Some(0),
        };
        assert!(u.validate().unwrap_err().contains("--name"));
        assert!(UsdtAttach {
            name: "req".into(),
            ..u
        }
        .validate()
        .unwrap_err()
        .contains("--pid"));
    }
}
