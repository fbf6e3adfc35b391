//! cgroup v2 hooks, each a bpf_link on a cgroup directory: packets (cgroup_skb), socket
//! creation (cgroup_sock), socket addresses (connect4, bind6...), socket options and sysctls.
//! The kernel loads a program for one attach type, named by its section (`cgroup/connect4`).

use crate::attach::{AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunRule, TypeInfo};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum CgroupDirection {
    Ingress,
    Egress,
}

/// Which cgroup hook a socket-address or sockopt program runs at; the program's section names
/// it (`cgroup/connect4`), since the kernel loads the program for that one hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupHook {
    Connect4,
    Connect6,
    Bind4,
    Bind6,
    Sendmsg4,
    Sendmsg6,
    Recvmsg4,
    Recvmsg6,
    Getsockopt,
    Setsockopt,
}

impl CgroupHook {
    pub const ALL: &'static [CgroupHook] = &[
        CgroupHook::Connect4,
        CgroupHook::Connect6,
        CgroupHook::Bind4,
        CgroupHook::Bind6,
        CgroupHook::Sendmsg4,
        CgroupHook::Sendmsg6,
        CgroupHook::Recvmsg4,
        CgroupHook::Recvmsg6,
        CgroupHook::Getsockopt,
        CgroupHook::Setsockopt,
    ];
    const SOCK_ADDR_SECTIONS: &'static [&'static str] = &[
        "cgroup/connect4",
        "cgroup/connect6",
        "cgroup/bind4",
        "cgroup/bind6",
        "cgroup/sendmsg4",
        "cgroup/sendmsg6",
        "cgroup/recvmsg4",
        "cgroup/recvmsg6",
    ];
    const SOCKOPT_SECTIONS: &'static [&'static str] = &["cgroup/getsockopt", "cgroup/setsockopt"];

    pub fn name(self) -> &'static str {
        match self {
            CgroupHook::Connect4 => "connect4",
            CgroupHook::Connect6 => "connect6",
            CgroupHook::Bind4 => "bind4",
            CgroupHook::Bind6 => "bind6",
            CgroupHook::Sendmsg4 => "sendmsg4",
            CgroupHook::Sendmsg6 => "sendmsg6",
            CgroupHook::Recvmsg4 => "recvmsg4",
            CgroupHook::Recvmsg6 => "recvmsg6",
            CgroupHook::Getsockopt => "getsockopt",
            CgroupHook::Setsockopt => "setsockopt",
        }
    }

    /// The program type that runs at this hook.
    pub fn program_type(self) -> ProgramType {
        match self {
            CgroupHook::Getsockopt | CgroupHook::Setsockopt => ProgramType::CgroupSockopt,
            CgroupHook::Connect4
            | CgroupHook::Connect6
            | CgroupHook::Bind4
            | CgroupHook::Bind6
            | CgroupHook::Sendmsg4
            | CgroupHook::Sendmsg6
            | CgroupHook::Recvmsg4
            | CgroupHook::Recvmsg6 => ProgramType::CgroupSockAddr,
        }
    }

    /// The hook a section (`cgroup/connect4`) names.
    pub fn from_section(section: &str) -> Option<CgroupHook> {
        let name = section.strip_prefix("cgroup/")?;
        CgroupHook::ALL.iter().copied().find(|h| h.name() == name)
    }
}

impl FromStr for CgroupHook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.trim().to_ascii_lowercase();
        CgroupHook::ALL
            .iter()
            .copied()
            .find(|h| h.name() == n)
            .ok_or_else(|| {
                let names: Vec<&str> = CgroupHook::ALL.iter().map(|h| h.name()).collect();
                format!(
                    "unknown cgroup hook {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// An optional hook where an empty name also means "from the section" (the gRPC message's
/// empty string).
fn hook_or_section<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CgroupHook>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) if !s.is_empty() => s.parse().map(Some).map_err(serde::de::Error::custom),
        Some(_) | None => Ok(None),
    }
}

/// cgroup v2 ingress or egress packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CgroupSkbAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub cgroup: PathBuf,
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = CgroupDirection::Ingress))]
    pub direction: CgroupDirection,
}

/// Socket creation in a cgroup v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CgroupSockAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub cgroup: PathBuf,
}

/// A socket-address hook of a cgroup v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CgroupSockAddrAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub cgroup: PathBuf,
    /// Default: the hook the program's section names (cgroup/connect4).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "hook_or_section"
    )]
    #[cfg_attr(feature = "cli", arg(long))]
    pub hook: Option<CgroupHook>,
}

/// getsockopt/setsockopt calls in a cgroup v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CgroupSockoptAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub cgroup: PathBuf,
    /// Default: the hook the program's section names (cgroup/getsockopt).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "hook_or_section"
    )]
    #[cfg_attr(feature = "cli", arg(long))]
    pub hook: Option<CgroupHook>,
}

/// sysctl reads and writes (/proc/sys) in a cgroup v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CgroupSysctlAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub cgroup: PathBuf,
}

pub const SKB: TypeInfo = TypeInfo {
    section_prefixes: &["cgroup_skb"],
    sections: &["cgroup/skb"],
    labels: &["cgroup_skb"],
    run: RunRule::Cgroup,
    requires: "cgroup v2",
    // BPF_PROG_TYPE_CGROUP_SKB, no expected attach type
    untyped: Some((8, 0)),
    link_update: true,
    default_spec: |t: &RunTargets, section: &str| {
        Some(AttachSpec::CgroupSkb(CgroupSkbAttach {
            cgroup: t.cgroup(),
            direction: if section.contains("egress") {
                CgroupDirection::Egress
            } else {
                CgroupDirection::Ingress
            },
        }))
    },
    ..TypeInfo::base(ProgramType::CgroupSkb, "cgroup-skb")
};

pub const SOCK: TypeInfo = TypeInfo {
    aliases: &["sock-create"],
    sections: &[
        "cgroup/sock",
        "cgroup/sock_create",
        "cgroup/sock_release",
        "cgroup/post_bind4",
        "cgroup/post_bind6",
    ],
    labels: &["cgroup_sock"],
    run: RunRule::Cgroup,
    requires: "cgroup v2",
    // BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_CREATE
    untyped: Some((9, 2)),
    link_update: true,
    default_spec: |t: &RunTargets, _: &str| {
        Some(AttachSpec::CgroupSock(CgroupSockAttach {
            cgroup: t.cgroup(),
        }))
    },
    ..TypeInfo::base(ProgramType::CgroupSock, "cgroup-sock")
};

pub const SOCK_ADDR: TypeInfo = TypeInfo {
    sections: CgroupHook::SOCK_ADDR_SECTIONS,
    labels: &["cgroup_sock_addr"],
    run: RunRule::Cgroup,
    requires: "cgroup v2",
    link_update: true,
    default_spec: |t: &RunTargets, section: &str| {
        Some(AttachSpec::CgroupSockAddr(CgroupSockAddrAttach {
            cgroup: t.cgroup(),
            hook: CgroupHook::from_section(section),
        }))
    },
    ..TypeInfo::base(ProgramType::CgroupSockAddr, "cgroup-sock-addr")
};

pub const SOCKOPT: TypeInfo = TypeInfo {
    sections: CgroupHook::SOCKOPT_SECTIONS,
    labels: &["cgroup_sockopt"],
    run: RunRule::Cgroup,
    requires: "cgroup v2",
    link_update: true,
    default_spec: |t: &RunTargets, section: &str| {
        Some(AttachSpec::CgroupSockopt(CgroupSockoptAttach {
            cgroup: t.cgroup(),
            hook: CgroupHook::from_section(section),
        }))
    },
    ..TypeInfo::base(ProgramType::CgroupSockopt, "cgroup-sockopt")
};

pub const SYSCTL: TypeInfo = TypeInfo {
    sections: &["cgroup/sysctl"],
    labels: &["cgroup_sysctl"],
    run: RunRule::Cgroup,
    requires: "cgroup v2",
    link_update: true,
    default_spec: |t: &RunTargets, _: &str| {
        Some(AttachSpec::CgroupSysctl(CgroupSysctlAttach {
            cgroup: t.cgroup(),
        }))
    },
    ..TypeInfo::base(ProgramType::CgroupSysctl, "cgroup-sysctl")
};

/// The hook of a socket-address or sockopt spec: the one given, which must be of the spec's
/// type, else the one the section names.
fn resolve_hook(hook: &mut Option<CgroupHook>, section: &str) -> Result<(), String> {
    if hook.is_none() {
        *hook = Some(CgroupHook::from_section(section).ok_or_else(|| {
            format!("section {section:?} names no cgroup hook; give one with --hook")
        })?);
    }
    Ok(())
}

fn validate_hook(hook: Option<CgroupHook>, ty: ProgramType) -> Result<(), String> {
    match hook {
        Some(h) if h.program_type() != ty => Err(format!(
            "cgroup hook {} is for {} programs, not {ty}",
            h.name(),
            h.program_type(),
        )),
        Some(_) | None => Ok(()),
    }
}

fn describe_hook(hook: Option<CgroupHook>, cgroup: &std::path::Path) -> String {
    let h = hook.map(CgroupHook::name).unwrap_or("(from section)");
    format!("cgroup/{h} {}", cgroup.display())
}

impl AttachOptions for CgroupSkbAttach {
    const TYPE: ProgramType = ProgramType::CgroupSkb;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        let d = match self.direction {
            CgroupDirection::Ingress => "ingress",
            CgroupDirection::Egress => "egress",
        };
        format!("cgroup_skb {} {d}", self.cgroup.display())
    }
}

impl AttachOptions for CgroupSockAttach {
    const TYPE: ProgramType = ProgramType::CgroupSock;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        format!("cgroup_sock {}", self.cgroup.display())
    }
}

impl AttachOptions for CgroupSockAddrAttach {
    const TYPE: ProgramType = ProgramType::CgroupSockAddr;
    fn validate(&self) -> Result<(), String> {
        validate_hook(self.hook, Self::TYPE)
    }
    fn describe(&self) -> String {
        describe_hook(self.hook, &self.cgroup)
    }
    fn resolve(&mut self, section: &str) -> Result<(), String> {
        resolve_hook(&mut self.hook, section)
    }
}

impl AttachOptions for CgroupSockoptAttach {
    const TYPE: ProgramType = ProgramType::CgroupSockopt;
    fn validate(&self) -> Result<(), String> {
        validate_hook(self.hook, Self::TYPE)
    }
    fn describe(&self) -> String {
        describe_hook(self.hook, &self.cgroup)
    }
    fn resolve(&mut self, section: &str) -> Result<(), String> {
        resolve_hook(&mut self.hook, section)
    }
}

impl AttachOptions for CgroupSysctlAttach {
    const TYPE: ProgramType = ProgramType::CgroupSysctl;
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        format!("cgroup/sysctl {}", self.cgroup.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_follow_sections() {
        let mut s = CgroupSockAddrAttach {
            cgroup: "/sys/fs/cgroup/x".into(),
            hook: None,
        };
        assert!(s.resolve("cgroup/skb").unwrap_err().contains("--hook"));
        s.resolve("cgroup/connect6").unwrap();
        assert_eq!(s.hook, Some(CgroupHook::Connect6));
        assert_eq!(s.describe(), "cgroup/connect6 /sys/fs/cgroup/x");
        s.hook = Some(CgroupHook::Getsockopt);
        let e = s.validate().unwrap_err();
        assert!(e.contains("cgroup-sockopt programs"), "{e}");
        assert_eq!(
            ProgramType::from_section("cgroup/sock_create"),
            Some(ProgramType::CgroupSock)
        );
        assert_eq!(
            ProgramType::from_section("cgroup/setsockopt"),
            Some(ProgramType::CgroupSockopt)
        );
    }

    #[test]
    fn empty_hook_reads_as_from_section() {
        let s: CgroupSockoptAttach =
            serde_json::from_str(r#"{"cgroup":"/sys/fs/cgroup/x","hook":""}"#).unwrap();
        assert_eq!(s.hook, None);
        let s: CgroupSockoptAttach =
            serde_json::from_str(r#"{"cgroup":"/sys/fs/cgroup/x","hook":"getsockopt"}"#).unwrap();
        assert_eq!(s.hook, Some(CgroupHook::Getsockopt));
        assert!(serde_json::from_str::<CgroupSockoptAttach>(
            r#"{"cgroup":"/x","hook":"sideways"}"#
        )
        .is_err());
    }
}
