//! Program types apiary manages, how libbpf section names map onto them, and which attach
//! kinds each one accepts.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The program types apiary knows how to attach. Named after the user-facing vocabulary
/// (bpfman's), not after the kernel's enum, because several kernel types share one attach path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramType {
    Xdp,
    Tc,
    Tcx,
    Tracepoint,
    RawTracepoint,
    TpBtf,
    Kprobe,
    Uprobe,
    CgroupSkb,
    CgroupSock,
    PerfEvent,
    Fentry,
    Fexit,
    Lsm,
    SocketFilter,
}

pub const ALL_TYPES: &[ProgramType] = &[
    ProgramType::Xdp,
    ProgramType::Tc,
    ProgramType::Tcx,
    ProgramType::Tracepoint,
    ProgramType::RawTracepoint,
    ProgramType::TpBtf,
    ProgramType::Kprobe,
    ProgramType::Uprobe,
    ProgramType::CgroupSkb,
    ProgramType::CgroupSock,
    ProgramType::PerfEvent,
    ProgramType::Fentry,
    ProgramType::Fexit,
    ProgramType::Lsm,
    ProgramType::SocketFilter,
];

impl ProgramType {
    pub fn name(self) -> &'static str {
        match self {
            ProgramType::Xdp => "xdp",
            ProgramType::Tc => "tc",
            ProgramType::Tcx => "tcx",
            ProgramType::Tracepoint => "tracepoint",
            ProgramType::RawTracepoint => "raw-tracepoint",
            ProgramType::TpBtf => "tp-btf",
            ProgramType::Kprobe => "kprobe",
            ProgramType::Uprobe => "uprobe",
            ProgramType::CgroupSkb => "cgroup-skb",
            ProgramType::CgroupSock => "cgroup-sock",
            ProgramType::PerfEvent => "perf-event",
            ProgramType::Fentry => "fentry",
            ProgramType::Fexit => "fexit",
            ProgramType::Lsm => "lsm",
            ProgramType::SocketFilter => "socket-filter",
        }
    }

    /// The program type libbpf would give a program in section `section`, following libbpf's
    /// section-name conventions (`SEC("tc")` and `SEC("classifier")` alike). The type decided
    /// here is only apiary's view; libbpf decides the kernel type itself from the same name.
    pub fn from_section(section: &str) -> Option<ProgramType> {
        let head = section.split('/').next().unwrap_or(section);
        let ty = match head {
            "xdp" | "xdp.frags" => ProgramType::Xdp,
            "tc" | "classifier" => ProgramType::Tc,
            "tcx" => ProgramType::Tcx,
            "tracepoint" | "tp" => ProgramType::Tracepoint,
            "raw_tracepoint" | "raw_tp" | "raw_tracepoint.w" | "raw_tp.w" => {
                ProgramType::RawTracepoint
            }
            "tp_btf" => ProgramType::TpBtf,
            "kprobe" | "kretprobe" | "ksyscall" | "kretsyscall" => ProgramType::Kprobe,
            "uprobe" | "uretprobe" | "uprobe.s" | "uretprobe.s" => ProgramType::Uprobe,
            "cgroup_skb" => ProgramType::CgroupSkb,
            "cgroup" => match section {
                "cgroup/skb" => ProgramType::CgroupSkb,
                "cgroup/sock"
                | "cgroup/sock_create"
                | "cgroup/sock_release"
                | "cgroup/post_bind4"
                | "cgroup/post_bind6" => ProgramType::CgroupSock,
                _ => return None,
            },
            "perf_event" => ProgramType::PerfEvent,
            "fentry" | "fentry.s" => ProgramType::Fentry,
            "fexit" | "fexit.s" => ProgramType::Fexit,
            "lsm" | "lsm.s" => ProgramType::Lsm,
            "socket" => ProgramType::SocketFilter,
            _ => return None,
        };
        Some(ty)
    }

    /// Whether the section name itself says the probe is a return probe.
    pub fn section_is_retprobe(section: &str) -> bool {
        let head = section.split('/').next().unwrap_or(section);
        matches!(
            head,
            "kretprobe" | "uretprobe" | "uretprobe.s" | "kretsyscall"
        )
    }

    /// Parse the user's TYPE in `--programs TYPE:FN`. `kretprobe`/`uretprobe` are accepted as the
    /// probe types they are.
    pub fn parse_user(s: &str) -> Result<ProgramType, String> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let ty = match norm.as_str() {
            "kretprobe" => ProgramType::Kprobe,
            "uretprobe" => ProgramType::Uprobe,
            "raw-tp" => ProgramType::RawTracepoint,
            "classifier" => ProgramType::Tc,
            "sock-create" => ProgramType::CgroupSock,
            other => match ALL_TYPES.iter().find(|t| t.name() == other) {
                Some(t) => *t,
                None => {
                    let names: Vec<&str> = ALL_TYPES.iter().map(|t| t.name()).collect();
                    return Err(format!(
                        "unknown program type {s:?}: expected one of {}",
                        names.join(", ")
                    ));
                }
            },
        };
        Ok(ty)
    }

    /// Whether a program loaded with type `self` can be attached as `other`. TC and TCX
    /// programs share the kernel type SCHED_CLS, so either attach works for either.
    pub fn compatible_with(self, other: ProgramType) -> bool {
        self == other
            || matches!(
                (self, other),
                (ProgramType::Tc, ProgramType::Tcx) | (ProgramType::Tcx, ProgramType::Tc)
            )
    }
}

impl fmt::Display for ProgramType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProgramType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ProgramType::parse_user(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections() {
        assert_eq!(ProgramType::from_section("tc"), Some(ProgramType::Tc));
        assert_eq!(
            ProgramType::from_section("classifier"),
            Some(ProgramType::Tc)
        );
        assert_eq!(
            ProgramType::from_section("tcx/ingress"),
            Some(ProgramType::Tcx)
        );
        assert_eq!(
            ProgramType::from_section("xdp.frags"),
            Some(ProgramType::Xdp)
        );
        assert_eq!(
            ProgramType::from_section("tracepoint/syscalls/sys_enter_getppid"),
            Some(ProgramType::Tracepoint)
        );
        assert_eq!(
            ProgramType::from_section("uretprobe//bin/true:main"),
            Some(ProgramType::Uprobe)
        );
        assert!(ProgramType::section_is_retprobe("uretprobe//bin/true:main"));
        assert_eq!(
            ProgramType::from_section("cgroup_skb/ingress"),
            Some(ProgramType::CgroupSkb)
        );
        assert_eq!(
            ProgramType::from_section("cgroup/sock_create"),
            Some(ProgramType::CgroupSock)
        );
        assert_eq!(ProgramType::from_section("license"), None);
    }

    #[test]
    fn user_names() {
        for t in ALL_TYPES {
            assert_eq!(ProgramType::parse_user(t.name()).unwrap(), *t);
        }
        assert_eq!(
            ProgramType::parse_user("raw_tracepoint").unwrap(),
            ProgramType::RawTracepoint
        );
        assert_eq!(
            ProgramType::parse_user("uretprobe").unwrap(),
            ProgramType::Uprobe
        );
        let e = ProgramType::parse_user("bogus").unwrap_err();
        assert!(
            e.contains("unknown program type") && e.contains("xdp"),
            "{e}"
        );
    }
}
