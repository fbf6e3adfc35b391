//! The registry of program types: one file per type (or per kernel family of types, e.g. all
//! cgroup hooks in `cgroup.rs`) holds its attach options, validation, section conventions, image
//! label, run rule and requirements; this file only lists them. Adding a type is a file next
//! to this one plus a line in each list below.

pub mod cgroup;
pub mod iter;
pub mod kprobe;
pub mod netfilter;
pub mod perf_event;
pub mod raw_tracepoint;
pub mod sk_lookup;
pub mod socket_filter;
pub mod tc;
pub mod tcx;
pub mod tracepoint;
pub mod tracing;
pub mod uprobe;
pub mod usdt;
pub mod xdp;

use crate::attach::{AttachOptions, ChainJoin};
use crate::program::TypeInfo;
use serde::{Deserialize, Serialize};

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

/// One entry per program type; the rest of the code asks this table instead of matching on
/// section or label strings. Order matters where names overlap: the first match wins.
pub const TYPES: &[TypeInfo] = &[
    xdp::INFO,
    tc::INFO,
    tcx::INFO,
    tracepoint::INFO,
    raw_tracepoint::INFO,
    tracing::TP_BTF,
    kprobe::INFO,
    uprobe::INFO,
    cgroup::SKB,
    cgroup::SOCK,
    perf_event::INFO,
    tracing::FENTRY,
    tracing::FEXIT,
    tracing::LSM,
    socket_filter::INFO,
    cgroup::SOCK_ADDR,
    cgroup::SOCKOPT,
    cgroup::SYSCTL,
    netfilter::INFO,
    iter::INFO,
    sk_lookup::INFO,
    usdt::INFO,
];

/// Every program type, in [`TYPES`] order.
pub const ALL_TYPES: &[ProgramType] = &{
    let mut all = [ProgramType::Xdp; TYPES.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = TYPES[i].ty;
        i += 1;
    }
    all
};

// Where a loaded program should run: one variant per hook, holding that hook's options struct.
// Each variant is also the `apiary attach ID <hook>` subcommand (feature `cli`): its doc comment
// is the subcommand's help and the struct's fields are the flags.
//
// The JSON form (internally tagged `type`, kebab-case) is stored in users' stores: a variant's
// name and its struct's fields must not be renamed.
// (A plain comment: as a doc comment clap would show it as the help of `load file`/`attach`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Subcommand))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AttachSpec {
    /// A tracepoint, CATEGORY/NAME.
    Tracepoint(tracepoint::TracepointAttach),
    /// A raw tracepoint by name.
    RawTracepoint(raw_tracepoint::RawTracepointAttach),
    /// A BTF tracepoint; the target comes from the program's section (`tp_btf/sched_switch`).
    TpBtf(tracing::TpBtfAttach),
    /// XDP on an interface, in its chain of programs (apiary's dispatcher, run in priority
    /// order).
    Xdp(xdp::XdpAttach),
    /// TC on an interface and direction, in its chain of programs (a dispatcher on a TCX link),
    /// or, with --legacy, a single cls_bpf filter on the clsact qdisc.
    Tc(tc::TcAttach),
    /// A TCX link of its own, ordered by priority (lower runs first).
    Tcx(tcx::TcxAttach),
    /// A user-space function: a path or library name (libc), and a symbol and/or offset.
    Uprobe(uprobe::UprobeAttach),
    /// A USDT probe (`<sys/sdt.h>`) of a binary: a uprobe at each of its sites, its arguments
    /// readable with BPF_USDT.
    Usdt(usdt::UsdtAttach),
    /// A kernel function.
    Kprobe(kprobe::KprobeAttach),
    /// cgroup v2 ingress or egress packets.
    CgroupSkb(cgroup::CgroupSkbAttach),
    /// Socket creation in a cgroup v2.
    CgroupSock(cgroup::CgroupSockAttach),
    /// A socket-address hook (connect4/6, bind4/6, sendmsg4/6, recvmsg4/6) of a cgroup v2.
    CgroupSockAddr(cgroup::CgroupSockAddrAttach),
    /// getsockopt/setsockopt calls in a cgroup v2.
    CgroupSockopt(cgroup::CgroupSockoptAttach),
    /// sysctl reads and writes (/proc/sys) in a cgroup v2.
    CgroupSysctl(cgroup::CgroupSysctlAttach),
    /// A netfilter hook (Linux 6.4) of one address family, in a network namespace.
    Netfilter(netfilter::NetfilterAttach),
    /// A software perf event sampled on every CPU.
    PerfEvent(perf_event::PerfEventAttach),
    /// Socket lookups of a network namespace (sk_lookup).
    SkLookup(sk_lookup::SkLookupAttach),
    /// A BPF iterator (target from the section, `iter/task`): the link is pinned; reading the
    /// pin (`cat`, shown by `get link`) runs it.
    Iter(iter::IterAttach),
    /// fentry (target from the section).
    Fentry(tracing::FentryAttach),
    /// fexit (target from the section).
    Fexit(tracing::FexitAttach),
    /// BPF LSM (hook from the section).
    Lsm(tracing::LsmAttach),
}

/// `$body` with `$h` bound to the hook struct of whichever variant `$spec` is: the one match
/// over every variant, so the methods below are written once.
macro_rules! each_hook {
    ($spec:expr, $h:ident => $body:expr) => {
        match $spec {
            AttachSpec::Tracepoint($h) => $body,
            AttachSpec::RawTracepoint($h) => $body,
            AttachSpec::TpBtf($h) => $body,
            AttachSpec::Xdp($h) => $body,
            AttachSpec::Tc($h) => $body,
            AttachSpec::Tcx($h) => $body,
            AttachSpec::Uprobe($h) => $body,
            AttachSpec::Usdt($h) => $body,
            AttachSpec::Kprobe($h) => $body,
            AttachSpec::CgroupSkb($h) => $body,
            AttachSpec::CgroupSock($h) => $body,
            AttachSpec::CgroupSockAddr($h) => $body,
            AttachSpec::CgroupSockopt($h) => $body,
            AttachSpec::CgroupSysctl($h) => $body,
            AttachSpec::Netfilter($h) => $body,
            AttachSpec::PerfEvent($h) => $body,
            AttachSpec::SkLookup($h) => $body,
            AttachSpec::Iter($h) => $body,
            AttachSpec::Fentry($h) => $body,
            AttachSpec::Fexit($h) => $body,
            AttachSpec::Lsm($h) => $body,
        }
    };
}

fn type_of<H: AttachOptions>(_: &H) -> crate::program::ProgramType {
    H::TYPE
}

impl AttachSpec {
    /// The program type this attach point takes.
    pub fn program_type(&self) -> ProgramType {
        each_hook!(self, h => type_of(h))
    }

    /// Check what can be checked without the kernel.
    pub fn validate(&self) -> Result<(), String> {
        each_hook!(self, h => h.validate())
    }

    /// A short human description of the attach point, for tables.
    pub fn describe(&self) -> String {
        each_hook!(self, h => h.describe())
    }

    /// Fill in what the program's section decides (the cgroup hook of a socket-address or
    /// sockopt program), before the spec is checked and recorded.
    pub fn resolve(&mut self, section: &str) -> Result<(), String> {
        each_hook!(self, h => h.resolve(section))
    }

    /// The chain this spec joins, if it is a chain member.
    pub fn chain(&self) -> Option<ChainJoin<'_>> {
        each_hook!(self, h => h.chain())
    }
}

#[cfg(test)]
mod tests;
