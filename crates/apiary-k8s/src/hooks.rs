//! The one place apiary-k8s builds `AttachSpec` values: one function per hook, from targets
//! the planner has already resolved (an interface name, a network namespace path). Keeping the
//! construction here keeps the rest of the crate independent of the enum's layout.

use crate::crd::{
    CgroupHookName, Direction, NetfilterFamilyName, NetfilterHookName, SoftwareEventName,
    TcProceedOn, XdpProceedOn,
};
use apiary_core::attach::{
    CgroupDirection, NetfilterFamily, NetfilterHook, SoftwareEvent, TcDirection, XdpMode,
};
use apiary_core::program::CgroupHook;
use apiary_core::types::{
    cgroup::{
        CgroupSkbAttach, CgroupSockAddrAttach, CgroupSockAttach, CgroupSockoptAttach,
        CgroupSysctlAttach,
    },
    iter::IterAttach,
    kprobe::KprobeAttach,
    netfilter::NetfilterAttach,
    perf_event::PerfEventAttach,
    raw_tracepoint::RawTracepointAttach,
    sk_lookup::SkLookupAttach,
    tc::TcAttach,
    tcx::TcxAttach,
    tracepoint::TracepointAttach,
    tracing::{FentryAttach, FexitAttach, LsmAttach, TpBtfAttach},
    uprobe::UprobeAttach,
    xdp::XdpAttach,
};
use apiary_core::AttachSpec;
use std::path::PathBuf;

fn prio(p: i32) -> u32 {
    // Validated to 1..=1000 before planning.
    p.clamp(1, 1000) as u32
}

pub fn xdp(iface: &str, netns: Option<PathBuf>, priority: i32, on: &[XdpProceedOn]) -> AttachSpec {
    AttachSpec::Xdp(XdpAttach {
        iface: iface.to_string(),
        netns,
        mode: XdpMode::Auto,
        priority: prio(priority),
        proceed_on: on.iter().map(|v| xdp_verdict(*v).to_string()).collect(),
    })
}

fn xdp_verdict(v: XdpProceedOn) -> &'static str {
    match v {
        XdpProceedOn::Aborted => "aborted",
        XdpProceedOn::Drop => "drop",
        XdpProceedOn::Pass => "pass",
        XdpProceedOn::Tx => "tx",
        XdpProceedOn::ReDirect => "redirect",
        XdpProceedOn::DispatcherReturn => "dispatcher_return",
    }
}

pub fn tc(
    iface: &str,
    netns: Option<PathBuf>,
    direction: Direction,
    priority: i32,
    on: &[TcProceedOn],
) -> AttachSpec {
    AttachSpec::Tc(TcAttach {
        iface: iface.to_string(),
        netns,
        direction: tc_direction(direction),
        priority: prio(priority),
        proceed_on: on.iter().map(|v| tc_action(*v).to_string()).collect(),
        legacy: false,
    })
}

fn tc_action(v: TcProceedOn) -> &'static str {
    match v {
        TcProceedOn::UnSpec => "unspec",
        TcProceedOn::Ok => "ok",
        TcProceedOn::ReClassify => "reclassify",
        TcProceedOn::Shot => "shot",
        TcProceedOn::Pipe => "pipe",
        TcProceedOn::Stolen => "stolen",
        TcProceedOn::Queued => "queued",
        TcProceedOn::Repeat => "repeat",
        TcProceedOn::ReDirect => "redirect",
        TcProceedOn::Trap => "trap",
        TcProceedOn::DispatcherReturn => "dispatcher_return",
    }
}

fn tc_direction(d: Direction) -> TcDirection {
    match d {
        Direction::Ingress => TcDirection::Ingress,
        Direction::Egress => TcDirection::Egress,
    }
}

pub fn tcx(iface: &str, netns: Option<PathBuf>, direction: Direction, priority: i32) -> AttachSpec {
    AttachSpec::Tcx(TcxAttach {
        iface: iface.to_string(),
        netns,
        direction: tc_direction(direction),
        priority: prio(priority),
    })
}

pub fn tracepoint(name: &str) -> AttachSpec {
    AttachSpec::Tracepoint(TracepointAttach {
        tracepoint: name.to_string(),
    })
}

pub fn raw_tracepoint(name: &str) -> AttachSpec {
    AttachSpec::RawTracepoint(RawTracepointAttach {
        tracepoint: name.to_string(),
    })
}

pub fn tp_btf() -> AttachSpec {
    AttachSpec::TpBtf(TpBtfAttach {})
}

pub fn iter() -> AttachSpec {
    AttachSpec::Iter(IterAttach {})
}

pub fn lsm() -> AttachSpec {
    AttachSpec::Lsm(LsmAttach {})
}

pub fn fentry(exit: bool) -> AttachSpec {
    if exit {
        AttachSpec::Fexit(FexitAttach {})
    } else {
        AttachSpec::Fentry(FentryAttach {})
    }
}

pub fn kprobe(function: &str, offset: u64, retprobe: bool) -> AttachSpec {
    AttachSpec::Kprobe(KprobeAttach {
        fn_name: function.to_string(),
        offset,
        retprobe,
    })
}

pub fn uprobe(
    target: &str,
    function: Option<&str>,
    offset: u64,
    retprobe: bool,
    pid: Option<i32>,
) -> AttachSpec {
    AttachSpec::Uprobe(UprobeAttach {
        target: target.to_string(),
        fn_name: function.map(str::to_string),
        offset,
        retprobe,
        pid,
    })
}

pub fn cgroup_skb(path: &str, direction: Direction) -> AttachSpec {
    AttachSpec::CgroupSkb(CgroupSkbAttach {
        cgroup: PathBuf::from(path),
        direction: match direction {
            Direction::Ingress => CgroupDirection::Ingress,
            Direction::Egress => CgroupDirection::Egress,
        },
    })
}

pub fn cgroup_sock(path: &str) -> AttachSpec {
    AttachSpec::CgroupSock(CgroupSockAttach {
        cgroup: PathBuf::from(path),
    })
}

pub fn cgroup_sysctl(path: &str) -> AttachSpec {
    AttachSpec::CgroupSysctl(CgroupSysctlAttach {
        cgroup: PathBuf::from(path),
    })
}

pub fn cgroup_sock_addr(path: &str, hook: Option<CgroupHookName>) -> AttachSpec {
    AttachSpec::CgroupSockAddr(CgroupSockAddrAttach {
        cgroup: PathBuf::from(path),
        hook: hook.map(cgroup_hook),
    })
}

pub fn cgroup_sockopt(path: &str, hook: Option<CgroupHookName>) -> AttachSpec {
    AttachSpec::CgroupSockopt(CgroupSockoptAttach {
        cgroup: PathBuf::from(path),
        hook: hook.map(cgroup_hook),
    })
}

fn cgroup_hook(h: CgroupHookName) -> CgroupHook {
    match h {
        CgroupHookName::Connect4 => CgroupHook::Connect4,
        CgroupHookName::Connect6 => CgroupHook::Connect6,
        CgroupHookName::Bind4 => CgroupHook::Bind4,
        CgroupHookName::Bind6 => CgroupHook::Bind6,
        CgroupHookName::Sendmsg4 => CgroupHook::Sendmsg4,
        CgroupHookName::Sendmsg6 => CgroupHook::Sendmsg6,
        CgroupHookName::Recvmsg4 => CgroupHook::Recvmsg4,
        CgroupHookName::Recvmsg6 => CgroupHook::Recvmsg6,
        CgroupHookName::Getsockopt => CgroupHook::Getsockopt,
        CgroupHookName::Setsockopt => CgroupHook::Setsockopt,
    }
}

pub fn perf_event(event: SoftwareEventName, frequency: u64, cpu: Option<u32>) -> AttachSpec {
    AttachSpec::PerfEvent(PerfEventAttach {
        event: match event {
            SoftwareEventName::CpuClock => SoftwareEvent::CpuClock,
            SoftwareEventName::TaskClock => SoftwareEvent::TaskClock,
        },
        frequency,
        cpu,
    })
}

pub fn netfilter(
    hook: NetfilterHookName,
    family: NetfilterFamilyName,
    priority: i32,
    netns: Option<PathBuf>,
    defrag: bool,
) -> AttachSpec {
    AttachSpec::Netfilter(NetfilterAttach {
        hook: match hook {
            NetfilterHookName::PreRouting => NetfilterHook::Prerouting,
            NetfilterHookName::Input => NetfilterHook::Input,
            NetfilterHookName::Forward => NetfilterHook::Forward,
            NetfilterHookName::Output => NetfilterHook::Output,
            NetfilterHookName::PostRouting => NetfilterHook::Postrouting,
        },
        family: match family {
            NetfilterFamilyName::Ipv4 => NetfilterFamily::Ipv4,
            NetfilterFamilyName::Ipv6 => NetfilterFamily::Ipv6,
        },
        priority,
        netns,
        defrag,
    })
}

/// sk_lookup needs a namespace path; the node's own is the process's.
pub fn sk_lookup(netns: Option<PathBuf>) -> AttachSpec {
    AttachSpec::SkLookup(SkLookupAttach {
        netns: netns.unwrap_or_else(|| PathBuf::from("/proc/self/ns/net")),
    })
}
