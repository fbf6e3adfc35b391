//! Program types apiary manages, how libbpf section names map onto them, and which attach
//! kinds each one accepts.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The program types apiary knows how to attach. Named after the user-facing vocabulary
/// (bpfman's), not after the kernel's enum, because several kernel types share one attach path.
/// Everything other layers need to know about a type by name is in [`TYPES`].
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
    /// `cgroup/connect4`, `bind6`, `sendmsg4`...: socket address hooks of a cgroup.
    CgroupSockAddr,
    /// `cgroup/getsockopt`, `cgroup/setsockopt`.
    CgroupSockopt,
    /// `cgroup/sysctl`.
    CgroupSysctl,
    /// `netfilter`: a netfilter hook (Linux 6.4).
    Netfilter,
    /// `iter/task`, `iter/bpf_map`...: a BPF iterator, read from its link.
    Iter,
    /// `sk_lookup`: picks the socket for incoming connections of a network namespace.
    SkLookup,
    /// `usdt/PATH:PROVIDER:NAME`: a USDT probe of a user-space binary (uprobes at its sites).
    Usdt,
}

/// How `apiary run` attaches a program of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRule {
    /// The hook is in the section name (`tracepoint/CAT/NAME`).
    Section,
    /// To the interface given with `--iface`.
    Interface,
    /// To the cgroup given with `--cgroup`.
    Cgroup,
    /// Sampled by the cpu-clock software event on every CPU.
    CpuClock,
    /// Not by run, for this reason.
    Never(&'static str),
}

/// What apiary knows about one program type, in one place.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub ty: ProgramType,
    /// The name users type (`--programs TYPE:`, `attach ID TYPE`) and apiary prints.
    pub name: &'static str,
    /// Other spellings accepted from users (bpfman's, the kernel's).
    pub aliases: &'static [&'static str],
    /// libbpf section names (the part before the first `/`) that give this type, as libbpf and
    /// older loaders (iproute2, cilium/ebpf) read them.
    pub section_prefixes: &'static [&'static str],
    /// Whole section names that give this type where the prefix is shared (`cgroup/...`).
    pub sections: &'static [&'static str],
    /// Prefixes that mean a return probe.
    pub return_prefixes: &'static [&'static str],
    /// bpfman's `io.ebpf.programs` label values: the first is written (the second for return
    /// probes), all are read.
    pub labels: &'static [&'static str],
    pub run: RunRule,
    /// What the kernel must offer (shown by `inspect` and in errors).
    pub requires: &'static str,
    /// The kernel program type and expected attach type to load it with when libbpf cannot
    /// tell them from the section (`classifier/NAME`); `None` for types whose section must name
    /// their target (a BTF function, a cgroup hook).
    pub untyped: Option<(u32, u32)>,
}

/// Kernel uapi values (`enum bpf_prog_type`, `enum bpf_attach_type`) the table uses; checked
/// against libbpf's headers by a test in apiary-kernel.
pub mod uapi {
    pub const PROG_SOCKET_FILTER: u32 = 1;
    pub const PROG_KPROBE: u32 = 2;
    pub const PROG_SCHED_CLS: u32 = 3;
    pub const PROG_TRACEPOINT: u32 = 5;
    pub const PROG_XDP: u32 = 6;
    pub const PROG_PERF_EVENT: u32 = 7;
    pub const PROG_CGROUP_SKB: u32 = 8;
    pub const PROG_CGROUP_SOCK: u32 = 9;
    pub const PROG_RAW_TRACEPOINT: u32 = 17;
    pub const PROG_SK_LOOKUP: u32 = 30;
    pub const PROG_NETFILTER: u32 = 32;
    pub const ATTACH_CGROUP_INET_SOCK_CREATE: u32 = 2;
    pub const ATTACH_SK_LOOKUP: u32 = 36;
    pub const ATTACH_XDP: u32 = 37;
    pub const ATTACH_NETFILTER: u32 = 45;
}

const SOCKET_FILTER_RUN: &str = "a socket filter runs on a socket its own process opens \
    (setsockopt SO_ATTACH_BPF with the program's fd); no apiary command can attach it for that process";

/// One entry per program type; the rest of the code asks this table instead of matching on
/// section or label strings.
pub const TYPES: &[TypeInfo] = &[
    TypeInfo {
        ty: ProgramType::Xdp,
        name: "xdp",
        aliases: &[],
        section_prefixes: &["xdp", "xdp.frags"],
        sections: &[],
        return_prefixes: &[],
        labels: &["xdp"],
        run: RunRule::Interface,
        requires: "XDP (any kernel apiary runs on; generic mode where drivers lack it)",
        untyped: Some((uapi::PROG_XDP, uapi::ATTACH_XDP)),
    },
    TypeInfo {
        ty: ProgramType::Tc,
        name: "tc",
        aliases: &["classifier", "sched-cls"],
        section_prefixes: &["tc", "classifier"],
        sections: &[],
        return_prefixes: &[],
        labels: &["tc", "sched_cls", "classifier"],
        run: RunRule::Interface,
        requires: "TCX links (Linux 6.6) for chains; clsact for --legacy",
        untyped: Some((uapi::PROG_SCHED_CLS, 0)),
    },
    TypeInfo {
        ty: ProgramType::Tcx,
        name: "tcx",
        aliases: &[],
        section_prefixes: &["tcx"],
        sections: &[],
        return_prefixes: &[],
        labels: &["tcx"],
        run: RunRule::Interface,
        requires: "TCX links (Linux 6.6)",
        untyped: Some((uapi::PROG_SCHED_CLS, 0)),
    },
    TypeInfo {
        ty: ProgramType::Tracepoint,
        name: "tracepoint",
        aliases: &["tp"],
        section_prefixes: &["tracepoint", "tp"],
        sections: &[],
        return_prefixes: &[],
        labels: &["tracepoint"],
        run: RunRule::Section,
        requires: "tracefs tracepoints",
        untyped: Some((uapi::PROG_TRACEPOINT, 0)),
    },
    TypeInfo {
        ty: ProgramType::RawTracepoint,
        name: "raw-tracepoint",
        aliases: &["raw-tp", "rawtracepoint"],
        section_prefixes: &["raw_tracepoint", "raw_tp", "raw_tracepoint.w", "raw_tp.w"],
        sections: &[],
        return_prefixes: &[],
        labels: &["raw_tracepoint", "rawtracepoint", "raw_tp"],
        run: RunRule::Section,
        requires: "raw tracepoints",
        untyped: Some((uapi::PROG_RAW_TRACEPOINT, 0)),
    },
    TypeInfo {
        ty: ProgramType::TpBtf,
        name: "tp-btf",
        aliases: &[],
        section_prefixes: &["tp_btf"],
        sections: &[],
        return_prefixes: &[],
        labels: &["tp_btf"],
        run: RunRule::Section,
        requires: "kernel BTF (/sys/kernel/btf/vmlinux)",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::Kprobe,
        name: "kprobe",
        aliases: &["kretprobe"],
        section_prefixes: &["kprobe", "kretprobe", "ksyscall", "kretsyscall"],
        sections: &[],
        return_prefixes: &["kretprobe", "kretsyscall"],
        labels: &["kprobe", "kretprobe"],
        run: RunRule::Section,
        requires: "the kprobe PMU (/sys/bus/event_source/devices/kprobe)",
        untyped: Some((uapi::PROG_KPROBE, 0)),
    },
    TypeInfo {
        ty: ProgramType::Uprobe,
        name: "uprobe",
        aliases: &["uretprobe"],
        section_prefixes: &["uprobe", "uretprobe", "uprobe.s", "uretprobe.s"],
        sections: &[],
        return_prefixes: &["uretprobe", "uretprobe.s"],
        labels: &["uprobe", "uretprobe"],
        run: RunRule::Section,
        requires: "the uprobe PMU",
        untyped: Some((uapi::PROG_KPROBE, 0)),
    },
    TypeInfo {
        ty: ProgramType::CgroupSkb,
        name: "cgroup-skb",
        aliases: &[],
        section_prefixes: &["cgroup_skb"],
        sections: &["cgroup/skb"],
        return_prefixes: &[],
        labels: &["cgroup_skb"],
        run: RunRule::Cgroup,
        requires: "cgroup v2",
        untyped: Some((uapi::PROG_CGROUP_SKB, 0)),
    },
    TypeInfo {
        ty: ProgramType::CgroupSock,
        name: "cgroup-sock",
        aliases: &["sock-create"],
        section_prefixes: &[],
        sections: &[
            "cgroup/sock",
            "cgroup/sock_create",
            "cgroup/sock_release",
            "cgroup/post_bind4",
            "cgroup/post_bind6",
        ],
        return_prefixes: &[],
        labels: &["cgroup_sock"],
        run: RunRule::Cgroup,
        requires: "cgroup v2",
        untyped: Some((uapi::PROG_CGROUP_SOCK, uapi::ATTACH_CGROUP_INET_SOCK_CREATE)),
    },
    TypeInfo {
        ty: ProgramType::PerfEvent,
        name: "perf-event",
        aliases: &[],
        section_prefixes: &["perf_event"],
        sections: &[],
        return_prefixes: &[],
        labels: &["perf_event"],
        run: RunRule::CpuClock,
        requires: "perf events (software events suffice)",
        untyped: Some((uapi::PROG_PERF_EVENT, 0)),
    },
    TypeInfo {
        ty: ProgramType::Fentry,
        name: "fentry",
        aliases: &[],
        section_prefixes: &["fentry", "fentry.s"],
        sections: &[],
        return_prefixes: &[],
        labels: &["fentry"],
        run: RunRule::Section,
        requires: "BPF trampolines and kernel BTF",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::Fexit,
        name: "fexit",
        aliases: &[],
        section_prefixes: &["fexit", "fexit.s"],
        sections: &[],
        return_prefixes: &["fexit", "fexit.s"],
        labels: &["fexit"],
        run: RunRule::Section,
        requires: "BPF trampolines and kernel BTF",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::Lsm,
        name: "lsm",
        aliases: &[],
        section_prefixes: &["lsm", "lsm.s"],
        sections: &[],
        return_prefixes: &[],
        labels: &["lsm"],
        run: RunRule::Section,
        requires: "BPF trampolines and the bpf LSM (lsm=...,bpf)",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::SocketFilter,
        name: "socket-filter",
        aliases: &["socket"],
        section_prefixes: &["socket"],
        sections: &[],
        return_prefixes: &[],
        labels: &["socket_filter", "socket"],
        run: RunRule::Never(SOCKET_FILTER_RUN),
        requires: "nothing special",
        untyped: Some((uapi::PROG_SOCKET_FILTER, 0)),
    },
    TypeInfo {
        ty: ProgramType::CgroupSockAddr,
        name: "cgroup-sock-addr",
        aliases: &[],
        section_prefixes: &[],
        sections: CgroupHook::SOCK_ADDR_SECTIONS,
        return_prefixes: &[],
        labels: &["cgroup_sock_addr"],
        run: RunRule::Cgroup,
        requires: "cgroup v2",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::CgroupSockopt,
        name: "cgroup-sockopt",
        aliases: &[],
        section_prefixes: &[],
        sections: CgroupHook::SOCKOPT_SECTIONS,
        return_prefixes: &[],
        labels: &["cgroup_sockopt"],
        run: RunRule::Cgroup,
        requires: "cgroup v2",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::CgroupSysctl,
        name: "cgroup-sysctl",
        aliases: &[],
        section_prefixes: &[],
        sections: &["cgroup/sysctl"],
        return_prefixes: &[],
        labels: &["cgroup_sysctl"],
        run: RunRule::Cgroup,
        requires: "cgroup v2",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::Netfilter,
        name: "netfilter",
        aliases: &[],
        section_prefixes: &["netfilter"],
        sections: &[],
        return_prefixes: &[],
        labels: &["netfilter"],
        run: RunRule::Never(
            "a netfilter program needs a hook, family and priority: use apiary attach ID netfilter",
        ),
        requires: "netfilter BPF links (Linux 6.4, CONFIG_NETFILTER_BPF_LINK)",
        untyped: Some((uapi::PROG_NETFILTER, uapi::ATTACH_NETFILTER)),
    },
    TypeInfo {
        ty: ProgramType::Iter,
        name: "iter",
        aliases: &[],
        section_prefixes: &["iter", "iter.s"],
        sections: &[],
        return_prefixes: &[],
        labels: &["iter"],
        run: RunRule::Section,
        requires: "BPF iterators and kernel BTF",
        untyped: None,
    },
    TypeInfo {
        ty: ProgramType::SkLookup,
        name: "sk-lookup",
        aliases: &[],
        section_prefixes: &["sk_lookup"],
        sections: &[],
        return_prefixes: &[],
        labels: &["sk_lookup"],
        run: RunRule::Never(
            "an sk_lookup program steers a network namespace's connections to sockets an application puts in its map: use apiary attach ID sk-lookup --netns",
        ),
        requires: "sk_lookup (Linux 5.9)",
        untyped: Some((uapi::PROG_SK_LOOKUP, uapi::ATTACH_SK_LOOKUP)),
    },
    TypeInfo {
        ty: ProgramType::Usdt,
        name: "usdt",
        aliases: &[],
        section_prefixes: &["usdt", "usdt.s"],
        sections: &[],
        return_prefixes: &[],
        labels: &["usdt"],
        run: RunRule::Section,
        requires: "the uprobe PMU and BPF cookies (Linux 5.15); uprobe_multi links (6.6) when libbpf loads for them",
        // libbpf types every `usdt` section itself.
        untyped: None,
    },
];

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
    ProgramType::CgroupSockAddr,
    ProgramType::CgroupSockopt,
    ProgramType::CgroupSysctl,
    ProgramType::Netfilter,
    ProgramType::Iter,
    ProgramType::SkLookup,
    ProgramType::Usdt,
];

/// Normalise a name users or labels spell in several ways: lower case, `_` as `-`.
fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "-")
}

impl ProgramType {
    /// This type's entry in [`TYPES`].
    pub fn info(self) -> &'static TypeInfo {
        // Every type has an entry (checked by a test), so the fallback is never taken.
        TYPES.iter().find(|t| t.ty == self).unwrap_or(&TYPES[0])
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The program type libbpf would give a program in section `section`, following libbpf's
    /// section-name conventions (`SEC("tc")` and `SEC("classifier")` alike). The type decided
    /// here is only apiary's view; libbpf decides the kernel type itself from the same name.
    pub fn from_section(section: &str) -> Option<ProgramType> {
        let head = section.split('/').next().unwrap_or(section);
        TYPES
            .iter()
            .find(|t| t.sections.contains(&section))
            .or_else(|| TYPES.iter().find(|t| t.section_prefixes.contains(&head)))
            .map(|t| t.ty)
    }

    /// Whether the section name itself says the probe is a return probe.
    pub fn section_is_retprobe(section: &str) -> bool {
        let head = section.split('/').next().unwrap_or(section);
        TYPES.iter().any(|t| t.return_prefixes.contains(&head))
    }

    /// Parse the user's TYPE in `--programs TYPE:FN` (`kretprobe`/`uretprobe` are the probe
    /// types they are).
    pub fn parse_user(s: &str) -> Result<ProgramType, String> {
        let n = norm(s);
        TYPES
            .iter()
            .find(|t| t.name == n || t.aliases.contains(&n.as_str()))
            .map(|t| t.ty)
            .ok_or_else(|| {
                let names: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
                format!(
                    "unknown program type {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// The `io.ebpf.programs` label bpfman's images carry for a program in `section`; a section
    /// apiary has no type for keeps its libbpf prefix.
    pub fn label_for_section(section: &str) -> String {
        match ProgramType::from_section(section) {
            Some(ty) => {
                let labels = ty.info().labels;
                let i = usize::from(ProgramType::section_is_retprobe(section) && labels.len() > 1);
                labels.get(i).copied().unwrap_or(ty.name()).to_string()
            }
            None => section.split('/').next().unwrap_or(section).to_string(),
        }
    }

    /// The type an image label names, in apiary's, bpfman's or the kernel's spelling.
    pub fn from_label(label: &str) -> Option<ProgramType> {
        let n = norm(label);
        TYPES
            .iter()
            .find(|t| t.labels.iter().any(|l| norm(l) == n) || t.name == n)
            .map(|t| t.ty)
    }

    /// Whether programs of this type can join an XDP or TC chain (apiary's dispatcher).
    pub fn chainable(self) -> bool {
        match self {
            ProgramType::Xdp | ProgramType::Tc | ProgramType::Tcx => true,
            ProgramType::Tracepoint
            | ProgramType::RawTracepoint
            | ProgramType::TpBtf
            | ProgramType::Kprobe
            | ProgramType::Uprobe
            | ProgramType::CgroupSkb
            | ProgramType::CgroupSock
            | ProgramType::PerfEvent
            | ProgramType::Fentry
            | ProgramType::Fexit
            | ProgramType::Lsm
            | ProgramType::SocketFilter
            | ProgramType::CgroupSockAddr
            | ProgramType::CgroupSockopt
            | ProgramType::CgroupSysctl
            | ProgramType::Netfilter
            | ProgramType::Iter
            | ProgramType::SkLookup
            | ProgramType::Usdt => false,
        }
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
    fn every_type_has_one_entry() {
        for t in ALL_TYPES {
            assert_eq!(TYPES.iter().filter(|i| i.ty == *t).count(), 1, "{t:?}");
            assert_eq!(t.info().ty, *t);
            assert_eq!(
                ProgramType::from_label(&ProgramType::label_for_section(
                    t.info()
                        .section_prefixes
                        .first()
                        .or(t.info().sections.first())
                        .unwrap()
                )),
                Some(*t)
            );
        }
        assert_eq!(TYPES.len(), ALL_TYPES.len());
        assert_eq!(ProgramType::label_for_section("kretprobe/x"), "kretprobe");
        assert_eq!(ProgramType::label_for_section("sk_msg"), "sk_msg");
        assert_eq!(ProgramType::from_label("sched_cls"), Some(ProgramType::Tc));
        assert_eq!(ProgramType::from_label("probe"), None);
        assert_eq!(
            ProgramType::from_section("xdp/legacy"),
            Some(ProgramType::Xdp)
        );
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
