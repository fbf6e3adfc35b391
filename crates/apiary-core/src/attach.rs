//! Attach specs: where a loaded program should run. One enum variant per hook; the data each
//! hook needs lives in its variant, so adding a hook means one variant and one kernel file.

use crate::program::{CgroupHook, ProgramType, RunRule};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum TcDirection {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum CgroupDirection {
    Ingress,
    Egress,
}

/// The kernel's software perf events that a `perf-event` program can be driven by (hardware
/// events are often absent in VMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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

/// Each variant is also the `apiary attach ID <hook>` subcommand (feature `cli`): its doc comment
/// is the subcommand's help and its fields are the flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Subcommand))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AttachSpec {
    /// A tracepoint, CATEGORY/NAME.
    Tracepoint {
        /// `category/name`, e.g. `syscalls/sys_enter_getppid`.
        #[cfg_attr(feature = "cli", arg(long))]
        tracepoint: String,
    },
    /// A raw tracepoint by name.
    RawTracepoint {
        #[cfg_attr(feature = "cli", arg(long))]
        tracepoint: String,
    },
    /// A BTF tracepoint; the target comes from the program's section (`tp_btf/sched_switch`).
    TpBtf,
    /// XDP on an interface, in its chain of programs (apiary's dispatcher, run in priority
    /// order).
    Xdp {
        #[cfg_attr(feature = "cli", arg(long))]
        iface: String,
        /// A network namespace: a name from `ip netns` or a path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
        netns: Option<PathBuf>,
        #[serde(default)]
        #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = XdpMode::Auto))]
        mode: XdpMode,
        /// 1 (runs first) to 1000 (runs last); ties run in attach order.
        #[serde(default = "default_priority")]
        #[cfg_attr(feature = "cli", arg(long, default_value_t = default_priority()))]
        priority: u32,
        /// Verdicts after which the chain goes on: aborted, drop, pass, tx, redirect,
        /// dispatcher_return (default pass,dispatcher_return).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[cfg_attr(feature = "cli", arg(long, value_delimiter = ','))]
        proceed_on: Vec<String>,
    },
    /// TC on an interface and direction, in its chain of programs (a dispatcher on a TCX link),
    /// or, with --legacy, a single cls_bpf filter on the clsact qdisc.
    Tc {
        #[cfg_attr(feature = "cli", arg(long))]
        iface: String,
        /// A network namespace: a name from `ip netns` or a path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
        netns: Option<PathBuf>,
        #[cfg_attr(feature = "cli", arg(long, value_enum))]
        direction: TcDirection,
        /// 1 (runs first) to 1000 (runs last); ties run in attach order.
        #[serde(default = "default_priority")]
        #[cfg_attr(feature = "cli", arg(long, default_value_t = default_priority()))]
        priority: u32,
        /// TC actions after which the chain goes on: unspec, ok, reclassify, shot, pipe, stolen,
        /// queued, repeat, redirect, trap, dispatcher_return (default ok,pipe,dispatcher_return).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[cfg_attr(feature = "cli", arg(long, value_delimiter = ','))]
        proceed_on: Vec<String>,
        /// A single cls_bpf filter on the clsact qdisc instead of a chain (kernels without TCX).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        #[cfg_attr(feature = "cli", arg(long))]
        legacy: bool,
    },
    /// A TCX link of its own, ordered by priority (lower runs first).
    Tcx {
        #[cfg_attr(feature = "cli", arg(long))]
        iface: String,
        /// A network namespace: a name from `ip netns` or a path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
        netns: Option<PathBuf>,
        #[cfg_attr(feature = "cli", arg(long, value_enum))]
        direction: TcDirection,
        #[cfg_attr(feature = "cli", arg(long, default_value_t = default_priority()))]
        priority: u32,
    },
    /// A user-space function: a path or library name (libc), and a symbol and/or offset.
    Uprobe {
        /// A path, or a library name resolved like the dynamic loader does (`libc`).
        #[cfg_attr(feature = "cli", arg(long))]
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long))]
        fn_name: Option<String>,
        #[serde(default)]
        #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
        offset: u64,
        #[serde(default)]
        #[cfg_attr(feature = "cli", arg(long))]
        retprobe: bool,
        /// Only this process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long))]
        pid: Option<i32>,
    },
    /// A USDT probe (`<sys/sdt.h>`) of a binary: a uprobe at each of its sites, its arguments
    /// readable with BPF_USDT.
    Usdt {
        /// A path, or a library name resolved like the dynamic loader does (`libc`).
        #[cfg_attr(feature = "cli", arg(long))]
        target: String,
        #[cfg_attr(feature = "cli", arg(long))]
        provider: String,
        #[cfg_attr(feature = "cli", arg(long))]
        name: String,
        /// Only this process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long))]
        pid: Option<i32>,
    },
    /// A kernel function.
    Kprobe {
        #[cfg_attr(feature = "cli", arg(long))]
        fn_name: String,
        #[serde(default)]
        #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
        offset: u64,
        #[serde(default)]
        #[cfg_attr(feature = "cli", arg(long))]
        retprobe: bool,
    },
    /// cgroup v2 ingress or egress packets.
    CgroupSkb {
        #[cfg_attr(feature = "cli", arg(long))]
        cgroup: PathBuf,
        #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = CgroupDirection::Ingress))]
        direction: CgroupDirection,
    },
    /// Socket creation in a cgroup v2.
    CgroupSock {
        #[cfg_attr(feature = "cli", arg(long))]
        cgroup: PathBuf,
    },
    /// A socket-address hook (connect4/6, bind4/6, sendmsg4/6, recvmsg4/6) of a cgroup v2.
    CgroupSockAddr {
        #[cfg_attr(feature = "cli", arg(long))]
        cgroup: PathBuf,
        /// Default: the hook the program's section names (cgroup/connect4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long))]
        hook: Option<CgroupHook>,
    },
    /// getsockopt/setsockopt calls in a cgroup v2.
    CgroupSockopt {
        #[cfg_attr(feature = "cli", arg(long))]
        cgroup: PathBuf,
        /// Default: the hook the program's section names (cgroup/getsockopt).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long))]
        hook: Option<CgroupHook>,
    },
    /// sysctl reads and writes (/proc/sys) in a cgroup v2.
    CgroupSysctl {
        #[cfg_attr(feature = "cli", arg(long))]
        cgroup: PathBuf,
    },
    /// A netfilter hook (Linux 6.4) of one address family, in a network namespace.
    Netfilter {
        /// prerouting, input, forward, output or postrouting.
        #[cfg_attr(feature = "cli", arg(long))]
        hook: NetfilterHook,
        #[cfg_attr(feature = "cli", arg(long, default_value = "ipv4"))]
        family: NetfilterFamily,
        /// Lower runs first, among netfilter's own hooks (conntrack -200, filter 0).
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        priority: i32,
        /// A network namespace: a name from `ip netns` or a path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
        netns: Option<PathBuf>,
        /// Defragment IP packets before the program sees them.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        #[cfg_attr(feature = "cli", arg(long))]
        defrag: bool,
    },
    /// A software perf event sampled on every CPU.
    PerfEvent {
        #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = SoftwareEvent::CpuClock))]
        event: SoftwareEvent,
        /// Samples per second per CPU.
        #[cfg_attr(feature = "cli", arg(long, default_value_t = 99))]
        frequency: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "cli", arg(long))]
        cpu: Option<u32>,
    },
    /// Socket lookups of a network namespace (sk_lookup).
    SkLookup {
        /// A network namespace: a name from `ip netns` or a path.
        #[cfg_attr(feature = "cli", arg(long, value_parser = parse_netns))]
        netns: PathBuf,
    },
    /// A BPF iterator (target from the section, `iter/task`): the link is pinned; reading the
    /// pin (`cat`, shown by `get link`) runs it.
    Iter,
    /// fentry (target from the section).
    Fentry,
    /// fexit (target from the section).
    Fexit,
    /// BPF LSM (hook from the section).
    Lsm,
}

/// What `apiary run` is given to attach to beyond the programs' sections.
#[derive(Debug, Clone, Default)]
pub struct RunTargets {
    /// For XDP and TC programs.
    pub iface: Option<String>,
    pub netns: Option<PathBuf>,
    /// For cgroup programs.
    pub cgroup: Option<PathBuf>,
}

/// How `apiary run` attaches one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAttach {
    /// Through the same attach code as `apiary attach`.
    Spec(AttachSpec),
    /// The section names the hook in a form apiary does not parse: libbpf's auto-attach.
    Libbpf,
    /// Not attached, for this reason.
    Skip(&'static str),
    /// It needs this flag.
    Needs(&'static str),
}

impl RunTargets {
    /// The flag a program of type `ty` would need and was not given, checked before loading.
    pub fn missing(&self, ty: ProgramType) -> Option<&'static str> {
        match ty.info().run {
            RunRule::Interface if self.iface.is_none() => Some("--iface"),
            RunRule::Cgroup if self.cgroup.is_none() => Some("--cgroup"),
            RunRule::Interface
            | RunRule::Cgroup
            | RunRule::Section
            | RunRule::CpuClock
            | RunRule::Never(_) => None,
        }
    }

    /// How `apiary run` attaches a program of type `ty` in `section`, by the type's run rule.
    pub fn attach(&self, ty: ProgramType, section: &str) -> RunAttach {
        if let Some(flag) = self.missing(ty) {
            return RunAttach::Needs(flag);
        }
        let egress = section.contains("egress");
        let iface = self.iface.clone().unwrap_or_default();
        let cgroup = self.cgroup.clone().unwrap_or_default();
        let spec = match ty {
            ProgramType::Xdp => AttachSpec::Xdp {
                iface,
                netns: self.netns.clone(),
                mode: XdpMode::Auto,
                priority: default_priority(),
                proceed_on: Vec::new(),
            },
            ProgramType::Tc | ProgramType::Tcx => AttachSpec::Tcx {
                iface,
                netns: self.netns.clone(),
                direction: if egress {
                    TcDirection::Egress
                } else {
                    TcDirection::Ingress
                },
                priority: 0,
            },
            ProgramType::CgroupSkb => AttachSpec::CgroupSkb {
                cgroup,
                direction: if egress {
                    CgroupDirection::Egress
                } else {
                    CgroupDirection::Ingress
                },
            },
            ProgramType::CgroupSock => AttachSpec::CgroupSock { cgroup },
            ProgramType::CgroupSockAddr => AttachSpec::CgroupSockAddr {
                cgroup,
                hook: CgroupHook::from_section(section),
            },
            ProgramType::CgroupSockopt => AttachSpec::CgroupSockopt {
                cgroup,
                hook: CgroupHook::from_section(section),
            },
            ProgramType::CgroupSysctl => AttachSpec::CgroupSysctl { cgroup },
            ProgramType::PerfEvent => AttachSpec::PerfEvent {
                event: SoftwareEvent::CpuClock,
                frequency: 99,
                cpu: None,
            },
            // apiary attaches USDT probes itself (libbpf's way needs its live object), so a
            // section that names no probe is not handed to libbpf.
            ProgramType::Usdt => {
                return AttachSpec::from_section(ty, section)
                    .map(RunAttach::Spec)
                    .unwrap_or(RunAttach::Skip(
                        "the section names no probe (usdt/PATH:PROVIDER:NAME): use apiary attach ID usdt --target --provider --name",
                    ))
            }
            ProgramType::Tracepoint
            | ProgramType::RawTracepoint
            | ProgramType::TpBtf
            | ProgramType::Iter
            | ProgramType::Kprobe
            | ProgramType::Uprobe
            | ProgramType::Fentry
            | ProgramType::Fexit
            | ProgramType::Lsm
            | ProgramType::SocketFilter
            | ProgramType::Netfilter
            | ProgramType::SkLookup => {
                return match ty.info().run {
                    RunRule::Never(why) => RunAttach::Skip(why),
                    RunRule::Section | RunRule::Interface | RunRule::Cgroup | RunRule::CpuClock => {
                        AttachSpec::from_section(ty, section)
                            .map(RunAttach::Spec)
                            .unwrap_or(RunAttach::Libbpf)
                    }
                }
            }
        };
        RunAttach::Spec(spec)
    }
}

/// The kernel event a program in `section` handles, when programs of different types can
/// handle the same one (a tracepoint, its raw tracepoint and its tp_btf form; the entry or the
/// return of a function), so `run` can say when a tool attached alternatives together.
pub fn run_event_key(ty: ProgramType, section: &str) -> Option<String> {
    let target = section.split_once('/').map(|(_, r)| r).unwrap_or("");
    let last = target.rsplit('/').next().unwrap_or(target);
    let retprobe = ProgramType::section_is_retprobe(section);
    match ty {
        ProgramType::Tracepoint | ProgramType::RawTracepoint | ProgramType::TpBtf
            if !last.is_empty() =>
        {
            Some(format!("event {last}"))
        }
        ProgramType::Kprobe | ProgramType::Fentry if !target.is_empty() && !retprobe => {
            Some(format!("entry of {target}"))
        }
        ProgramType::Kprobe | ProgramType::Fexit if !target.is_empty() => {
            Some(format!("return of {target}"))
        }
        ProgramType::Tracepoint
        | ProgramType::RawTracepoint
        | ProgramType::TpBtf
        | ProgramType::Kprobe
        | ProgramType::Fentry
        | ProgramType::Fexit
        | ProgramType::Lsm
        | ProgramType::Uprobe
        | ProgramType::Xdp
        | ProgramType::Tc
        | ProgramType::Tcx
        | ProgramType::CgroupSkb
        | ProgramType::CgroupSock
        | ProgramType::CgroupSockAddr
        | ProgramType::CgroupSockopt
        | ProgramType::CgroupSysctl
        | ProgramType::Netfilter
        | ProgramType::Iter
        | ProgramType::SkLookup
        | ProgramType::Usdt
        | ProgramType::PerfEvent
        | ProgramType::SocketFilter => None,
    }
}

/// A network namespace as users name it: a name from `ip netns` (under /var/run/netns), or a
/// path (`/proc/PID/ns/net`).
pub fn parse_netns(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty network namespace".into());
    }
    Ok(if s.contains('/') {
        PathBuf::from(s)
    } else {
        PathBuf::from("/var/run/netns").join(s)
    })
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
            ProgramType::Usdt => {
                // `usdt/PATH:PROVIDER:NAME`, as libbpf reads it; PATH keeps its leading slash.
                let mut parts = rest.split(':');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(t), Some(p), Some(n), None)
                        if !t.is_empty() && !p.is_empty() && !n.is_empty() =>
                    {
                        AttachSpec::Usdt {
                            target: t.to_string(),
                            provider: p.to_string(),
                            name: n.to_string(),
                            pid: None,
                        }
                    }
                    _ => return None,
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
            AttachSpec::Usdt { .. } => ProgramType::Usdt,
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
                if let Some(join) = self.chain() {
                    crate::chain::Priority::new(join.priority as i64).map_err(|e| e.to_string())?;
                    if !join.proceed_on.is_empty() {
                        crate::chain::ProceedOn::from_names(join.hook.kind, join.proceed_on)
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
            AttachSpec::Usdt {
                target,
                provider,
                name,
                pid,
            } => {
                if target.is_empty() {
                    return Err("usdt target is empty: give a path or a library name".into());
                }
                if provider.is_empty() || name.is_empty() {
                    return Err("usdt needs --provider and --name (see `readelf -n BINARY`)".into());
                }
                if pid.is_some_and(|p| p <= 0) {
                    return Err("usdt --pid must be a process id (> 0)".into());
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
            AttachSpec::Usdt {
                target,
                provider,
                name,
                pid,
            } => {
                let p = pid.map(|p| format!(" pid={p}")).unwrap_or_default();
                format!("usdt {target}:{provider}:{name}{p}")
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
        assert_eq!(
            f(ProgramType::Usdt, "usdt//usr/bin/app:myapp:request"),
            Some(AttachSpec::Usdt {
                target: "/usr/bin/app".into(),
                provider: "myapp".into(),
                name: "request".into(),
                pid: None
            })
        );
        assert_eq!(f(ProgramType::Usdt, "usdt"), None);
        assert_eq!(f(ProgramType::Usdt, "usdt/libc.so.6:libc"), None);
        // run: a section naming the probe attaches through apiary; a bare one is skipped,
        // never handed to libbpf (whose USDT attach needs its own live object).
        let run = RunTargets::default();
        assert!(matches!(
            run.attach(ProgramType::Usdt, "usdt//bin/app:app:req"),
            RunAttach::Spec(AttachSpec::Usdt { .. })
        ));
        assert!(matches!(
            run.attach(ProgramType::Usdt, "usdt"),
            RunAttach::Skip(why) if why.contains("usdt/PATH:PROVIDER:NAME")
        ));
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
        assert_eq!(x.chain().map(|c| c.priority), Some(1000));
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
