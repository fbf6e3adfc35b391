//! Attach specs: where a loaded program should run. One enum variant per hook; the data each
//! hook needs lives in its variant, so adding a hook means one variant and one kernel file.

use crate::program::{CgroupHook, ProgramType};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode, falling back to generic (skb) mode where the driver has no XDP support,
    /// as `ip link set xdp` does.
    #[default]
    Auto,
    Drv,
    Skb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcDirection {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDirection {
    Ingress,
    Egress,
}

/// The kernel's software perf events that a `perf-event` program can be driven by (hardware
/// events are often absent in VMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SoftwareEvent {
    CpuClock,
    TaskClock,
}

/// The netfilter hooks a program can run at (NF_INET_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetfilterHook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetfilterFamily {
    Ipv4,
    Ipv6,
}

impl NetfilterHook {
    pub const ALL: &'static [NetfilterHook] = &[
        NetfilterHook::Prerouting,
        NetfilterHook::Input,
        NetfilterHook::Forward,
        NetfilterHook::Output,
        NetfilterHook::Postrouting,
    ];
    pub fn name(self) -> &'static str {
        match self {
            NetfilterHook::Prerouting => "prerouting",
            NetfilterHook::Input => "input",
            NetfilterHook::Forward => "forward",
            NetfilterHook::Output => "output",
            NetfilterHook::Postrouting => "postrouting",
        }
    }
}

impl std::str::FromStr for NetfilterHook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.trim().to_ascii_lowercase();
        NetfilterHook::ALL
            .iter()
            .copied()
            .find(|h| h.name() == n)
            .ok_or_else(|| {
                format!("unknown netfilter hook {s:?}: expected prerouting, input, forward, output or postrouting")
            })
    }
}

impl NetfilterFamily {
    pub fn name(self) -> &'static str {
        match self {
            NetfilterFamily::Ipv4 => "ipv4",
            NetfilterFamily::Ipv6 => "ipv6",
        }
    }
}

impl std::str::FromStr for NetfilterFamily {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ipv4" | "ip" | "inet" => Ok(NetfilterFamily::Ipv4),
            "ipv6" | "ip6" | "inet6" => Ok(NetfilterFamily::Ipv6),
            _ => Err(format!(
                "unknown netfilter family {s:?}: expected ipv4 or ipv6"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AttachSpec {
    Tracepoint {
        /// `category/name`, e.g. `syscalls/sys_enter_getppid`.
        tracepoint: String,
    },
    RawTracepoint {
        tracepoint: String,
    },
    /// The target is fixed at load time by the section name (`tp_btf/sched_switch`).
    TpBtf,
    /// A program in the interface's XDP chain (apiary's dispatcher), run in priority order.
    Xdp {
        iface: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<PathBuf>,
        #[serde(default)]
        mode: XdpMode,
        #[serde(default = "default_priority")]
        priority: u32,
        /// Verdict names after which the chain continues; empty means the default set.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        proceed_on: Vec<String>,
    },
    /// A program in the interface's TC chain for one direction (a dispatcher on a TCX link),
    /// or, with `legacy`, a single cls_bpf filter on the clsact qdisc.
    Tc {
        iface: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<PathBuf>,
        direction: TcDirection,
        #[serde(default = "default_priority")]
        priority: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        proceed_on: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        legacy: bool,
    },
    Tcx {
        iface: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<PathBuf>,
        direction: TcDirection,
        priority: u32,
    },
    Uprobe {
        /// A path, or a library name resolved like the dynamic loader does (`libc`).
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fn_name: Option<String>,
        #[serde(default)]
        offset: u64,
        #[serde(default)]
        retprobe: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
    },
    Kprobe {
        fn_name: String,
        #[serde(default)]
        offset: u64,
        #[serde(default)]
        retprobe: bool,
    },
    CgroupSkb {
        cgroup: PathBuf,
        direction: CgroupDirection,
    },
    CgroupSock {
        cgroup: PathBuf,
    },
    /// A socket-address hook (`connect4`, `bind6`...) of a cgroup; the hook follows the
    /// program's section when not given.
    CgroupSockAddr {
        cgroup: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<CgroupHook>,
    },
    /// `getsockopt`/`setsockopt` of a cgroup; the hook follows the section when not given.
    CgroupSockopt {
        cgroup: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<CgroupHook>,
    },
    CgroupSysctl {
        cgroup: PathBuf,
    },
    /// A netfilter hook of one address family, in a network namespace; lower priorities run
    /// first, among netfilter's own hooks (conntrack is -200, filter 0).
    Netfilter {
        hook: NetfilterHook,
        family: NetfilterFamily,
        priority: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<PathBuf>,
        /// Have netfilter defragment packets before the program sees them.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        defrag: bool,
    },
    PerfEvent {
        event: SoftwareEvent,
        /// Samples per second on each CPU.
        frequency: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu: Option<u32>,
    },
    /// An sk_lookup program for a network namespace's socket lookups.
    SkLookup {
        netns: PathBuf,
    },
    /// A BPF iterator; its target (`iter/task`) was fixed at load time. Reading the pinned link
    /// runs it.
    Iter,
    /// Targets for fentry/fexit/lsm come from the section name at load time.
    Fentry,
    Fexit,
    Lsm,
}

fn parse_offset(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Chain slots default to the last priority, so a program attached without one runs after
/// those that asked for a place.
pub fn default_priority() -> u32 {
    1000
}

impl AttachSpec {
    /// The hook a program's section name itself names, read the way libbpf's auto-attach reads
    /// it (`tracepoint/CAT/NAME`, `raw_tp/NAME`, `kprobe/FN+OFF`, `uretprobe/PATH:FN`), so
    /// `apiary run` attaches through the same code, with the same errors, as `apiary attach`.
    /// `None` when the section names no target (or one apiary does not parse: libbpf then
    /// attaches it itself).
    pub fn from_section(ty: ProgramType, section: &str) -> Option<AttachSpec> {
        let (head, rest) = section.split_once('/').unwrap_or((section, ""));
        let spec = match ty {
            ProgramType::Tracepoint => {
                let (cat, name) = rest.split_once('/')?;
                if cat.is_empty() || name.is_empty() {
                    return None;
                }
                AttachSpec::Tracepoint {
                    tracepoint: rest.to_string(),
                }
            }
            ProgramType::RawTracepoint if !rest.is_empty() => AttachSpec::RawTracepoint {
                tracepoint: rest.to_string(),
            },
            ProgramType::TpBtf => AttachSpec::TpBtf,
            ProgramType::Iter => AttachSpec::Iter,
            ProgramType::Fentry => AttachSpec::Fentry,
            ProgramType::Fexit => AttachSpec::Fexit,
            ProgramType::Lsm => AttachSpec::Lsm,
            ProgramType::Kprobe if matches!(head, "kprobe" | "kretprobe") && !rest.is_empty() => {
                let (fn_name, offset) = match rest.split_once('+') {
                    Some((f, off)) => (f, parse_offset(off)?),
                    None => (rest, 0),
                };
                AttachSpec::Kprobe {
                    fn_name: fn_name.to_string(),
                    offset,
                    retprobe: head == "kretprobe",
                }
            }
            ProgramType::Uprobe => {
                // `uprobe/PATH:FN[+OFF]`; PATH keeps its leading slash (`uprobe//bin/sh:main`).
                let (target, func) = rest.rsplit_once(':')?;
                let (fn_name, offset) = match func.split_once('+') {
                    Some((f, off)) => (f, parse_offset(off)?),
                    None => (func, 0),
                };
                if target.is_empty() || fn_name.is_empty() {
                    return None;
                }
                AttachSpec::Uprobe {
                    target: target.to_string(),
                    fn_name: Some(fn_name.to_string()),
                    offset,
                    retprobe: ProgramType::section_is_retprobe(section),
                    pid: None,
                }
            }
            ProgramType::RawTracepoint
            | ProgramType::Kprobe
            | ProgramType::Xdp
            | ProgramType::Tc
            | ProgramType::Tcx
            | ProgramType::CgroupSkb
            | ProgramType::CgroupSock
            | ProgramType::CgroupSockAddr
            | ProgramType::CgroupSockopt
            | ProgramType::CgroupSysctl
            | ProgramType::Netfilter
            | ProgramType::SkLookup
            | ProgramType::PerfEvent
            | ProgramType::SocketFilter => return None,
        };
        Some(spec)
    }

    /// Fill in what the program's section decides (the cgroup hook of a socket-address or
    /// sockopt program), before the spec is checked and recorded.
    pub fn resolve(&mut self, section: &str) -> Result<(), String> {
        if let AttachSpec::CgroupSockAddr { hook, .. } | AttachSpec::CgroupSockopt { hook, .. } =
            self
        {
            if hook.is_none() {
                *hook = Some(CgroupHook::from_section(section).ok_or_else(|| {
                    format!("section {section:?} names no cgroup hook; give one with --hook")
                })?);
            }
        }
        Ok(())
    }

    /// The chain this spec joins, if it is a chain member: (kind, proceed-on names, priority).
    pub fn chain(&self) -> Option<(crate::chain::ChainKind, &[String], u32)> {
        match self {
            AttachSpec::Xdp {
                proceed_on,
                priority,
                ..
            } => Some((crate::chain::ChainKind::Xdp, proceed_on, *priority)),
            AttachSpec::Tc {
                proceed_on,
                priority,
                legacy: false,
                ..
            } => Some((crate::chain::ChainKind::Tc, proceed_on, *priority)),
            _ => None,
        }
    }

    /// The program type this attach point takes.
    pub fn program_type(&self) -> ProgramType {
        match self {
            AttachSpec::Tracepoint { .. } => ProgramType::Tracepoint,
            AttachSpec::RawTracepoint { .. } => ProgramType::RawTracepoint,
            AttachSpec::TpBtf => ProgramType::TpBtf,
            AttachSpec::Xdp { .. } => ProgramType::Xdp,
            AttachSpec::Tc { .. } => ProgramType::Tc,
            AttachSpec::Tcx { .. } => ProgramType::Tcx,
            AttachSpec::Uprobe { .. } => ProgramType::Uprobe,
            AttachSpec::Kprobe { .. } => ProgramType::Kprobe,
            AttachSpec::CgroupSkb { .. } => ProgramType::CgroupSkb,
            AttachSpec::CgroupSock { .. } => ProgramType::CgroupSock,
            AttachSpec::CgroupSockAddr { .. } => ProgramType::CgroupSockAddr,
            AttachSpec::CgroupSockopt { .. } => ProgramType::CgroupSockopt,
            AttachSpec::CgroupSysctl { .. } => ProgramType::CgroupSysctl,
            AttachSpec::Netfilter { .. } => ProgramType::Netfilter,
            AttachSpec::Iter => ProgramType::Iter,
            AttachSpec::SkLookup { .. } => ProgramType::SkLookup,
            AttachSpec::PerfEvent { .. } => ProgramType::PerfEvent,
            AttachSpec::Fentry => ProgramType::Fentry,
            AttachSpec::Fexit => ProgramType::Fexit,
            AttachSpec::Lsm => ProgramType::Lsm,
        }
    }

    /// Check what can be checked without the kernel.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            AttachSpec::Tracepoint { tracepoint } => {
                let mut parts = tracepoint.split('/');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(c), Some(n), None) if valid_tp_part(c) && valid_tp_part(n) => Ok(()),
                    _ => Err(format!(
                        "invalid tracepoint {tracepoint:?}: expected CATEGORY/NAME, e.g. syscalls/sys_enter_getppid"
                    )),
                }
            }
            AttachSpec::RawTracepoint { tracepoint } => {
                if valid_tp_part(tracepoint) {
                    Ok(())
                } else {
                    Err(format!("invalid raw tracepoint name {tracepoint:?}"))
                }
            }
            AttachSpec::Xdp { iface, .. } | AttachSpec::Tc { iface, .. } => {
                validate_iface(iface)?;
                if let Some((kind, names, priority)) = self.chain() {
                    crate::chain::Priority::new(priority as i64).map_err(|e| e.to_string())?;
                    if !names.is_empty() {
                        crate::chain::ProceedOn::from_names(kind, names)
                            .map_err(|e| e.to_string())?;
                    }
                } else if let AttachSpec::Tc { proceed_on, .. } = self {
                    if !proceed_on.is_empty() {
                        return Err(
                            "--proceed-on applies to chains, not to a --legacy tc filter".into(),
                        );
                    }
                }
                Ok(())
            }
            AttachSpec::Tcx { iface, .. } => validate_iface(iface),
            AttachSpec::Uprobe {
                target,
                fn_name,
                offset,
                ..
            } => {
                if target.is_empty() {
                    return Err("uprobe target is empty: give a path or a library name".into());
                }
                if fn_name.is_none() && *offset == 0 {
                    return Err("uprobe needs --fn-name or a non-zero --offset".into());
                }
                Ok(())
            }
            AttachSpec::Kprobe { fn_name, .. } => {
                if fn_name.is_empty() {
                    Err("kprobe needs --fn-name".into())
                } else {
                    Ok(())
                }
            }
            AttachSpec::PerfEvent { frequency, .. } => {
                if *frequency == 0 {
                    Err("perf-event frequency must be at least 1".into())
                } else {
                    Ok(())
                }
            }
            AttachSpec::Netfilter { priority, .. } => {
                // netfilter reserves the extremes for its own first and last hooks.
                if *priority == i32::MIN || *priority == i32::MAX {
                    Err(format!(
                        "netfilter priority {priority} is reserved; choose one between them"
                    ))
                } else {
                    Ok(())
                }
            }
            AttachSpec::CgroupSockAddr { hook: Some(h), .. }
            | AttachSpec::CgroupSockopt { hook: Some(h), .. }
                if h.program_type() != self.program_type() =>
            {
                Err(format!(
                    "cgroup hook {} is for {} programs, not {}",
                    h.name(),
                    h.program_type(),
                    self.program_type()
                ))
            }
            AttachSpec::TpBtf
            | AttachSpec::Iter
            | AttachSpec::SkLookup { .. }
            | AttachSpec::CgroupSkb { .. }
            | AttachSpec::CgroupSock { .. }
            | AttachSpec::CgroupSockAddr { .. }
            | AttachSpec::CgroupSockopt { .. }
            | AttachSpec::CgroupSysctl { .. }
            | AttachSpec::Fentry
            | AttachSpec::Fexit
            | AttachSpec::Lsm => Ok(()),
        }
    }

    /// A short human description of the attach point, for tables.
    pub fn describe(&self) -> String {
        let ns = |n: &Option<PathBuf>| match n {
            Some(p) => format!(" netns={}", p.display()),
            None => String::new(),
        };
        match self {
            AttachSpec::Tracepoint { tracepoint } => format!("tracepoint {tracepoint}"),
            AttachSpec::RawTracepoint { tracepoint } => format!("raw_tp {tracepoint}"),
            AttachSpec::TpBtf => "tp_btf".into(),
            AttachSpec::Xdp {
                iface,
                netns,
                mode,
                priority,
                ..
            } => {
                format!(
                    "xdp {iface}{} prio={priority} mode={}",
                    ns(netns),
                    format!("{mode:?}").to_lowercase()
                )
            }
            AttachSpec::Tc {
                iface,
                netns,
                direction,
                priority,
                legacy,
                ..
            } => {
                if *legacy {
                    format!("tc {iface} {} legacy{}", dir_name(*direction), ns(netns))
                } else {
                    format!(
                        "tc {iface} {} prio={priority}{}",
                        dir_name(*direction),
                        ns(netns)
                    )
                }
            }
            AttachSpec::Tcx {
                iface,
                netns,
                direction,
                priority,
            } => {
                format!(
                    "tcx {iface} {} prio={priority}{}",
                    dir_name(*direction),
                    ns(netns)
                )
            }
            AttachSpec::Uprobe {
                target,
                fn_name,
                offset,
                retprobe,
                pid,
            } => {
                let kind = if *retprobe { "uretprobe" } else { "uprobe" };
                let f = fn_name.as_deref().unwrap_or("");
                let p = pid.map(|p| format!(" pid={p}")).unwrap_or_default();
                format!("{kind} {target}:{f}+{offset:#x}{p}")
            }
            AttachSpec::Kprobe {
                fn_name,
                offset,
                retprobe,
            } => {
                let kind = if *retprobe { "kretprobe" } else { "kprobe" };
                format!("{kind} {fn_name}+{offset:#x}")
            }
            AttachSpec::CgroupSkb { cgroup, direction } => {
                let d = match direction {
                    CgroupDirection::Ingress => "ingress",
                    CgroupDirection::Egress => "egress",
                };
                format!("cgroup_skb {} {d}", cgroup.display())
            }
            AttachSpec::CgroupSock { cgroup } => format!("cgroup_sock {}", cgroup.display()),
            AttachSpec::CgroupSockAddr { cgroup, hook }
            | AttachSpec::CgroupSockopt { cgroup, hook } => {
                let h = hook.map(CgroupHook::name).unwrap_or("(from section)");
                format!("cgroup/{h} {}", cgroup.display())
            }
            AttachSpec::CgroupSysctl { cgroup } => format!("cgroup/sysctl {}", cgroup.display()),
            AttachSpec::Netfilter {
                hook,
                family,
                priority,
                netns,
                defrag,
            } => format!(
                "netfilter {} {} prio={priority}{}{}",
                family.name(),
                hook.name(),
                if *defrag { " defrag" } else { "" },
                ns(netns)
            ),
            AttachSpec::PerfEvent {
                event,
                frequency,
                cpu,
            } => {
                let c = cpu.map(|c| format!(" cpu={c}")).unwrap_or_default();
                format!("perf_event {event:?} {frequency}Hz{c}").to_lowercase()
            }
            AttachSpec::Iter => "iter".into(),
            AttachSpec::SkLookup { netns } => format!("sk_lookup netns={}", netns.display()),
            AttachSpec::Fentry => "fentry".into(),
            AttachSpec::Fexit => "fexit".into(),
            AttachSpec::Lsm => "lsm".into(),
        }
    }
}

pub fn dir_name(d: TcDirection) -> &'static str {
    match d {
        TcDirection::Ingress => "ingress",
        TcDirection::Egress => "egress",
    }
}

impl fmt::Display for AttachSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn valid_tp_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Interface names are at most 15 bytes (IFNAMSIZ - 1) and contain no '/' or whitespace.
pub fn validate_iface(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.chars().any(char::is_whitespace)
    {
        Err(format!("invalid interface name {name:?}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_named_by_sections() {
        let f = AttachSpec::from_section;
        assert_eq!(
            f(ProgramType::Tracepoint, "tp/syscalls/sys_enter_openat"),
            Some(AttachSpec::Tracepoint {
                tracepoint: "syscalls/sys_enter_openat".into()
            })
        );
        assert_eq!(f(ProgramType::Tracepoint, "tracepoint"), None);
        assert_eq!(
            f(ProgramType::RawTracepoint, "raw_tp/sched_switch"),
            Some(AttachSpec::RawTracepoint {
                tracepoint: "sched_switch".into()
            })
        );
        assert_eq!(
            f(ProgramType::Kprobe, "kretprobe/do_unlinkat+0x10"),
            Some(AttachSpec::Kprobe {
                fn_name: "do_unlinkat".into(),
                offset: 16,
                retprobe: true
            })
        );
        assert_eq!(f(ProgramType::Kprobe, "ksyscall/openat"), None);
        assert_eq!(
            f(ProgramType::Uprobe, "uretprobe//usr/bin/bash:readline"),
            Some(AttachSpec::Uprobe {
                target: "/usr/bin/bash".into(),
                fn_name: Some("readline".into()),
                offset: 0,
                retprobe: true,
                pid: None
            })
        );
        assert_eq!(f(ProgramType::Uprobe, "uprobe"), None);
        assert_eq!(f(ProgramType::Xdp, "xdp"), None);
    }

    #[test]
    fn validation() {
        assert!(AttachSpec::Tracepoint {
            tracepoint: "syscalls/sys_enter_getppid".into()
        }
        .validate()
        .is_ok());
        assert!(AttachSpec::Tracepoint {
            tracepoint: "nocategory".into()
        }
        .validate()
        .is_err());
        assert!(validate_iface("veth0").is_ok());
        assert!(validate_iface("a-very-long-interface-name").is_err());
        let u = AttachSpec::Uprobe {
            target: "libc".into(),
            fn_name: None,
            offset: 0,
            retprobe: false,
            pid: None,
        };
        assert!(u.validate().unwrap_err().contains("--fn-name"));
    }

    #[test]
    fn json_is_stable() {
        let s = AttachSpec::Tcx {
            iface: "veth0".into(),
            netns: None,
            direction: TcDirection::Ingress,
            priority: 5,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"type":"tcx","iface":"veth0","direction":"ingress","priority":5}"#
        );
        let back: AttachSpec = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        // Older records without chain fields read as default chain members.
        let x: AttachSpec = serde_json::from_str(r#"{"type":"xdp","iface":"veth0"}"#).unwrap();
        assert_eq!(x.chain().map(|c| c.2), Some(1000));
    }

    #[test]
    fn chain_options_are_checked() {
        let x = |p: u32, on: &[&str]| AttachSpec::Xdp {
            iface: "veth0".into(),
            netns: None,
            mode: XdpMode::Auto,
            priority: p,
            proceed_on: on.iter().map(|s| s.to_string()).collect(),
        };
        assert!(x(50, &["pass", "dispatcher_return"]).validate().is_ok());
        assert!(x(0, &[]).validate().unwrap_err().contains("priority"));
        assert!(x(1001, &[]).validate().is_err());
        let e = x(5, &["bogus"]).validate().unwrap_err();
        assert!(e.contains("bogus") && e.contains("pass"), "{e}");
    }
}
