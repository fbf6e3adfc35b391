//! Conversions between apiary's types (requests, views) and the apiary.v1 messages, both ways:
//! the server turns requests into the manager's types and views into messages; the client does
//! the reverse, so the CLI prints the same thing whichever front door it used.
//!
//! Everything that comes off the wire is checked here: a missing required field, an unknown
//! enum value or a non-positive id is an `Invalid`, which the server reports as
//! INVALID_ARGUMENT before the manager sees the request.

use crate::pb;
use apiary::chain::{ChainMemberView, ChainView};
use apiary::core::attach::SoftwareEvent;
use apiary::core::chain::ChainKind;
use apiary::core::Hook;
use apiary::core::{
    AttachSpec, CgroupDirection, LinkId, ProgramId, ProgramType, TcDirection, XdpMode,
};
use apiary::kernel::sys::{MapInfo, ProgInfo};
use apiary::{
    LinkView, MapDump, MapDumpEntry, MapRef, MapView, ProgramDetail, ProgramView, UpdateReport,
};
use apiary_store::GlobalRecord;
use std::path::PathBuf;

/// A message that does not make a valid request (or, on the client, a valid answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type Result<T, E = Invalid> = std::result::Result<T, E>;

/// The value of a required message field.
pub fn required<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| Invalid::new(field, "is required"))
}

pub fn program_id(v: i64, field: &str) -> Result<ProgramId> {
    if v > 0 {
        Ok(ProgramId(v))
    } else {
        Err(Invalid::new(
            field,
            format!("invalid program id {v}: expected a positive integer"),
        ))
    }
}

pub fn link_id(v: i64, field: &str) -> Result<LinkId> {
    if v > 0 {
        Ok(LinkId(v))
    } else {
        Err(Invalid::new(
            field,
            format!("invalid link id {v}: expected a positive integer"),
        ))
    }
}

fn opt_program_id(v: Option<i64>, field: &str) -> Result<Option<ProgramId>> {
    v.map(|v| program_id(v, field)).transpose()
}

fn to_usize(v: u64, field: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Invalid::new(field, format!("{v} is out of range")))
}

// ------------------------------------------------------------------------------ enums

pub fn program_type_to_proto(t: ProgramType) -> pb::ProgramType {
    match t {
        ProgramType::Xdp => pb::ProgramType::Xdp,
        ProgramType::Tc => pb::ProgramType::Tc,
        ProgramType::Tcx => pb::ProgramType::Tcx,
        ProgramType::Tracepoint => pb::ProgramType::Tracepoint,
        ProgramType::RawTracepoint => pb::ProgramType::RawTracepoint,
        ProgramType::TpBtf => pb::ProgramType::TpBtf,
        ProgramType::Kprobe => pb::ProgramType::Kprobe,
        ProgramType::Uprobe => pb::ProgramType::Uprobe,
        ProgramType::CgroupSkb => pb::ProgramType::CgroupSkb,
        ProgramType::CgroupSock => pb::ProgramType::CgroupSock,
        ProgramType::PerfEvent => pb::ProgramType::PerfEvent,
        ProgramType::Fentry => pb::ProgramType::Fentry,
        ProgramType::Fexit => pb::ProgramType::Fexit,
        ProgramType::Lsm => pb::ProgramType::Lsm,
        ProgramType::SocketFilter => pb::ProgramType::SocketFilter,
        ProgramType::CgroupSockAddr => pb::ProgramType::CgroupSockAddr,
        ProgramType::CgroupSockopt => pb::ProgramType::CgroupSockopt,
        ProgramType::CgroupSysctl => pb::ProgramType::CgroupSysctl,
        ProgramType::Netfilter => pb::ProgramType::Netfilter,
        ProgramType::Iter => pb::ProgramType::Iter,
        ProgramType::SkLookup => pb::ProgramType::SkLookup,
        ProgramType::Usdt => pb::ProgramType::Usdt,
    }
}

/// None for PROGRAM_TYPE_UNSPECIFIED (the section decides).
pub fn program_type_from_proto(v: i32, field: &str) -> Result<Option<ProgramType>> {
    let t = pb::ProgramType::try_from(v)
        .map_err(|_| Invalid::new(field, format!("unknown program type {v}")))?;
    Ok(Some(match t {
        pb::ProgramType::Unspecified => return Ok(None),
        pb::ProgramType::Xdp => ProgramType::Xdp,
        pb::ProgramType::Tc => ProgramType::Tc,
        pb::ProgramType::Tcx => ProgramType::Tcx,
        pb::ProgramType::Tracepoint => ProgramType::Tracepoint,
        pb::ProgramType::RawTracepoint => ProgramType::RawTracepoint,
        pb::ProgramType::TpBtf => ProgramType::TpBtf,
        pb::ProgramType::Kprobe => ProgramType::Kprobe,
        pb::ProgramType::Uprobe => ProgramType::Uprobe,
        pb::ProgramType::CgroupSkb => ProgramType::CgroupSkb,
        pb::ProgramType::CgroupSock => ProgramType::CgroupSock,
        pb::ProgramType::PerfEvent => ProgramType::PerfEvent,
        pb::ProgramType::Fentry => ProgramType::Fentry,
        pb::ProgramType::Fexit => ProgramType::Fexit,
        pb::ProgramType::Lsm => ProgramType::Lsm,
        pb::ProgramType::SocketFilter => ProgramType::SocketFilter,
        pb::ProgramType::CgroupSockAddr => ProgramType::CgroupSockAddr,
        pb::ProgramType::CgroupSockopt => ProgramType::CgroupSockopt,
        pb::ProgramType::CgroupSysctl => ProgramType::CgroupSysctl,
        pb::ProgramType::Netfilter => ProgramType::Netfilter,
        pb::ProgramType::Iter => ProgramType::Iter,
        pb::ProgramType::SkLookup => ProgramType::SkLookup,
        pb::ProgramType::Usdt => ProgramType::Usdt,
    }))
}

fn cgroup_hook_to_proto(
    cgroup: &std::path::Path,
    hook: Option<apiary_core::program::CgroupHook>,
) -> pb::CgroupHookAttach {
    pb::CgroupHookAttach {
        cgroup: cgroup.to_string_lossy().into_owned(),
        hook: hook.map(|h| h.name().to_string()).unwrap_or_default(),
    }
}

fn cgroup_hook_from_proto(
    hook: &str,
    field: &str,
) -> Result<Option<apiary_core::program::CgroupHook>> {
    if hook.is_empty() {
        return Ok(None);
    }
    hook.parse()
        .map(Some)
        .map_err(|e: String| Invalid::new(field, e))
}

fn xdp_mode_to_proto(m: XdpMode) -> pb::XdpMode {
    match m {
        XdpMode::Auto => pb::XdpMode::Auto,
        XdpMode::Drv => pb::XdpMode::Drv,
        XdpMode::Skb => pb::XdpMode::Skb,
    }
}

fn xdp_mode_from_proto(v: i32) -> Result<XdpMode> {
    match pb::XdpMode::try_from(v) {
        Ok(pb::XdpMode::Auto) => Ok(XdpMode::Auto),
        Ok(pb::XdpMode::Drv) => Ok(XdpMode::Drv),
        Ok(pb::XdpMode::Skb) => Ok(XdpMode::Skb),
        Err(_) => Err(Invalid::new("xdp.mode", format!("unknown XDP mode {v}"))),
    }
}

fn tc_direction_to_proto(d: TcDirection) -> pb::Direction {
    match d {
        TcDirection::Ingress => pb::Direction::Ingress,
        TcDirection::Egress => pb::Direction::Egress,
    }
}

/// Directions are required where they appear: there is no sensible default to guess.
fn direction_from_proto(v: i32, field: &str) -> Result<TcDirection> {
    match pb::Direction::try_from(v) {
        Ok(pb::Direction::Ingress) => Ok(TcDirection::Ingress),
        Ok(pb::Direction::Egress) => Ok(TcDirection::Egress),
        Ok(pb::Direction::Unspecified) => {
            Err(Invalid::new(field, "is required: ingress or egress"))
        }
        Err(_) => Err(Invalid::new(field, format!("unknown direction {v}"))),
    }
}

fn cgroup_direction_to_proto(d: CgroupDirection) -> pb::Direction {
    match d {
        CgroupDirection::Ingress => pb::Direction::Ingress,
        CgroupDirection::Egress => pb::Direction::Egress,
    }
}

fn software_event_to_proto(e: SoftwareEvent) -> pb::SoftwareEvent {
    match e {
        SoftwareEvent::CpuClock => pb::SoftwareEvent::CpuClock,
        SoftwareEvent::TaskClock => pb::SoftwareEvent::TaskClock,
    }
}

fn software_event_from_proto(v: i32) -> Result<SoftwareEvent> {
    match pb::SoftwareEvent::try_from(v) {
        Ok(pb::SoftwareEvent::CpuClock) => Ok(SoftwareEvent::CpuClock),
        Ok(pb::SoftwareEvent::TaskClock) => Ok(SoftwareEvent::TaskClock),
        Ok(pb::SoftwareEvent::Unspecified) => Err(Invalid::new(
            "perf_event.event",
            "is required: cpu-clock or task-clock",
        )),
        Err(_) => Err(Invalid::new(
            "perf_event.event",
            format!("unknown software event {v}"),
        )),
    }
}

fn chain_kind_to_proto(k: ChainKind) -> pb::ChainKind {
    match k {
        ChainKind::Xdp => pb::ChainKind::Xdp,
        ChainKind::Tc => pb::ChainKind::Tc,
    }
}

// ------------------------------------------------------------------------------ attach specs

fn path_str(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn opt_path(s: Option<String>) -> Option<PathBuf> {
    s.map(PathBuf::from)
}

impl From<&AttachSpec> for pb::AttachSpec {
    fn from(spec: &AttachSpec) -> Self {
        use pb::attach_spec::Hook;
        let hook = match spec {
            AttachSpec::Tracepoint { tracepoint } => Hook::Tracepoint(pb::TracepointAttach {
                tracepoint: tracepoint.clone(),
            }),
            AttachSpec::RawTracepoint { tracepoint } => {
                Hook::RawTracepoint(pb::RawTracepointAttach {
                    tracepoint: tracepoint.clone(),
                })
            }
            AttachSpec::TpBtf => Hook::TpBtf(pb::Empty {}),
            AttachSpec::Iter => Hook::Iter(pb::Empty {}),
            AttachSpec::SkLookup { netns } => Hook::SkLookup(pb::SkLookupAttach {
                netns: netns.to_string_lossy().into_owned(),
            }),
            AttachSpec::Xdp {
                iface,
                netns,
                mode,
                priority,
                proceed_on,
            } => Hook::Xdp(pb::XdpAttach {
                iface: iface.clone(),
                netns: path_str(netns),
                mode: xdp_mode_to_proto(*mode) as i32,
                priority: Some(*priority),
                proceed_on: proceed_on.clone(),
            }),
            AttachSpec::Tc {
                iface,
                netns,
                direction,
                priority,
                proceed_on,
                legacy,
            } => Hook::Tc(pb::TcAttach {
                iface: iface.clone(),
                netns: path_str(netns),
                direction: tc_direction_to_proto(*direction) as i32,
                priority: Some(*priority),
                proceed_on: proceed_on.clone(),
                legacy: *legacy,
            }),
            AttachSpec::Tcx {
                iface,
                netns,
                direction,
                priority,
            } => Hook::Tcx(pb::TcxAttach {
                iface: iface.clone(),
                netns: path_str(netns),
                direction: tc_direction_to_proto(*direction) as i32,
                priority: Some(*priority),
            }),
            AttachSpec::Uprobe {
                target,
                fn_name,
                offset,
                retprobe,
                pid,
            } => Hook::Uprobe(pb::UprobeAttach {
                target: target.clone(),
                fn_name: fn_name.clone(),
                offset: *offset,
                retprobe: *retprobe,
                pid: *pid,
            }),
            AttachSpec::Usdt {
                target,
                provider,
                name,
                pid,
            } => Hook::Usdt(pb::UsdtAttach {
                target: target.clone(),
                provider: provider.clone(),
                name: name.clone(),
                pid: *pid,
            }),
            AttachSpec::Kprobe {
                fn_name,
                offset,
                retprobe,
            } => Hook::Kprobe(pb::KprobeAttach {
                fn_name: fn_name.clone(),
                offset: *offset,
                retprobe: *retprobe,
            }),
            AttachSpec::CgroupSkb { cgroup, direction } => Hook::CgroupSkb(pb::CgroupSkbAttach {
                cgroup: cgroup.to_string_lossy().into_owned(),
                direction: cgroup_direction_to_proto(*direction) as i32,
            }),
            AttachSpec::CgroupSock { cgroup } => Hook::CgroupSock(pb::CgroupSockAttach {
                cgroup: cgroup.to_string_lossy().into_owned(),
            }),
            AttachSpec::CgroupSockAddr { cgroup, hook } => {
                Hook::CgroupSockAddr(cgroup_hook_to_proto(cgroup, *hook))
            }
            AttachSpec::CgroupSockopt { cgroup, hook } => {
                Hook::CgroupSockopt(cgroup_hook_to_proto(cgroup, *hook))
            }
            AttachSpec::CgroupSysctl { cgroup } => Hook::CgroupSysctl(pb::CgroupSockAttach {
                cgroup: cgroup.to_string_lossy().into_owned(),
            }),
            AttachSpec::Netfilter {
                hook,
                family,
                priority,
                netns,
                defrag,
            } => Hook::Netfilter(pb::NetfilterAttach {
                hook: hook.name().to_string(),
                family: family.name().to_string(),
                priority: *priority,
                netns: netns.as_ref().map(|p| p.to_string_lossy().into_owned()),
                defrag: *defrag,
            }),
            AttachSpec::PerfEvent {
                event,
                frequency,
                cpu,
            } => Hook::PerfEvent(pb::PerfEventAttach {
                event: software_event_to_proto(*event) as i32,
                frequency: *frequency,
                cpu: *cpu,
            }),
            AttachSpec::Fentry => Hook::Fentry(pb::Empty {}),
            AttachSpec::Fexit => Hook::Fexit(pb::Empty {}),
            AttachSpec::Lsm => Hook::Lsm(pb::Empty {}),
        };
        pb::AttachSpec { hook: Some(hook) }
    }
}

impl TryFrom<pb::AttachSpec> for AttachSpec {
    type Error = Invalid;
    fn try_from(spec: pb::AttachSpec) -> Result<Self> {
        use pb::attach_spec::Hook;
        let priority = |p: Option<u32>| p.unwrap_or_else(apiary::core::attach::default_priority);
        Ok(match required(spec.hook, "attach.hook")? {
            Hook::Tracepoint(t) => AttachSpec::Tracepoint {
                tracepoint: t.tracepoint,
            },
            Hook::RawTracepoint(t) => AttachSpec::RawTracepoint {
                tracepoint: t.tracepoint,
            },
            Hook::TpBtf(_) => AttachSpec::TpBtf,
            Hook::Iter(_) => AttachSpec::Iter,
            Hook::SkLookup(s) => {
                if s.netns.is_empty() {
                    return Err(Invalid::new("sk_lookup.netns", "is empty"));
                }
                AttachSpec::SkLookup {
                    netns: PathBuf::from(s.netns),
                }
            }
            Hook::Xdp(x) => AttachSpec::Xdp {
                iface: x.iface,
                netns: opt_path(x.netns),
                mode: xdp_mode_from_proto(x.mode)?,
                priority: priority(x.priority),
                proceed_on: x.proceed_on,
            },
            Hook::Tc(t) => AttachSpec::Tc {
                iface: t.iface,
                netns: opt_path(t.netns),
                direction: direction_from_proto(t.direction, "tc.direction")?,
                priority: priority(t.priority),
                proceed_on: t.proceed_on,
                legacy: t.legacy,
            },
            Hook::Tcx(t) => AttachSpec::Tcx {
                iface: t.iface,
                netns: opt_path(t.netns),
                direction: direction_from_proto(t.direction, "tcx.direction")?,
                priority: priority(t.priority),
            },
            Hook::Uprobe(u) => AttachSpec::Uprobe {
                target: u.target,
                fn_name: u.fn_name,
                offset: u.offset,
                retprobe: u.retprobe,
                pid: u.pid,
            },
            Hook::Usdt(u) => AttachSpec::Usdt {
                target: u.target,
                provider: u.provider,
                name: u.name,
                pid: u.pid,
            },
            Hook::Kprobe(k) => AttachSpec::Kprobe {
                fn_name: k.fn_name,
                offset: k.offset,
                retprobe: k.retprobe,
            },
            Hook::CgroupSkb(c) => AttachSpec::CgroupSkb {
                cgroup: PathBuf::from(c.cgroup),
                direction: match direction_from_proto(c.direction, "cgroup_skb.direction")? {
                    TcDirection::Ingress => CgroupDirection::Ingress,
                    TcDirection::Egress => CgroupDirection::Egress,
                },
            },
            Hook::CgroupSock(c) => AttachSpec::CgroupSock {
                cgroup: PathBuf::from(c.cgroup),
            },
            Hook::CgroupSockAddr(c) => AttachSpec::CgroupSockAddr {
                hook: cgroup_hook_from_proto(&c.hook, "cgroup_sock_addr.hook")?,
                cgroup: PathBuf::from(c.cgroup),
            },
            Hook::CgroupSockopt(c) => AttachSpec::CgroupSockopt {
                hook: cgroup_hook_from_proto(&c.hook, "cgroup_sockopt.hook")?,
                cgroup: PathBuf::from(c.cgroup),
            },
            Hook::CgroupSysctl(c) => AttachSpec::CgroupSysctl {
                cgroup: PathBuf::from(c.cgroup),
            },
            Hook::Netfilter(n) => AttachSpec::Netfilter {
                hook: n
                    .hook
                    .parse()
                    .map_err(|e: String| Invalid::new("netfilter.hook", e))?,
                family: n
                    .family
                    .parse()
                    .map_err(|e: String| Invalid::new("netfilter.family", e))?,
                priority: n.priority,
                netns: n.netns.map(PathBuf::from),
                defrag: n.defrag,
            },
            Hook::PerfEvent(p) => AttachSpec::PerfEvent {
                event: software_event_from_proto(p.event)?,
                frequency: p.frequency,
                cpu: p.cpu,
            },
            Hook::Fentry(_) => AttachSpec::Fentry,
            Hook::Fexit(_) => AttachSpec::Fexit,
            Hook::Lsm(_) => AttachSpec::Lsm,
        })
    }
}

// ------------------------------------------------------------------------------ views

impl From<&ProgramView> for pb::Program {
    fn from(p: &ProgramView) -> Self {
        pb::Program {
            id: p.id.map(|i| i.0),
            kernel_id: p.kernel_id,
            name: p.name.clone(),
            r#type: p.prog_type.clone(),
            section: p.section.clone(),
            source: p.source.clone(),
            links: p.links.iter().map(|l| l.0).collect(),
            attach_points: p.attach_points.clone(),
            loaded_at: p.loaded_at.clone(),
            map_owner_id: p.map_owner_id.map(|i| i.0),
            metadata: p.metadata.clone(),
            managed: p.managed,
        }
    }
}

impl TryFrom<pb::Program> for ProgramView {
    type Error = Invalid;
    fn try_from(p: pb::Program) -> Result<Self> {
        Ok(ProgramView {
            id: opt_program_id(p.id, "program.id")?,
            kernel_id: p.kernel_id,
            name: p.name,
            prog_type: p.r#type,
            section: p.section,
            source: p.source,
            links: p
                .links
                .into_iter()
                .map(|l| link_id(l, "program.links"))
                .collect::<Result<_>>()?,
            attach_points: p.attach_points,
            loaded_at: p.loaded_at,
            map_owner_id: opt_program_id(p.map_owner_id, "program.map_owner_id")?,
            metadata: p.metadata,
            managed: p.managed,
        })
    }
}

impl From<&LinkView> for pb::Link {
    fn from(l: &LinkView) -> Self {
        pb::Link {
            id: l.id.0,
            program_id: l.program_id.0,
            program_name: l.program_name.clone(),
            spec: Some((&l.spec).into()),
            attach_point: l.attach_point.clone(),
            kernel_link_ids: l.kernel_link_ids.clone(),
            created_at: l.created_at.clone(),
            read_with: l.read_with.clone(),
        }
    }
}

impl TryFrom<pb::Link> for LinkView {
    type Error = Invalid;
    fn try_from(l: pb::Link) -> Result<Self> {
        Ok(LinkView {
            id: link_id(l.id, "link.id")?,
            program_id: program_id(l.program_id, "link.program_id")?,
            program_name: l.program_name,
            spec: required(l.spec, "link.spec")?.try_into()?,
            attach_point: l.attach_point,
            kernel_link_ids: l.kernel_link_ids,
            created_at: l.created_at,
            read_with: l.read_with,
        })
    }
}

impl From<&MapView> for pb::Map {
    fn from(m: &MapView) -> Self {
        pb::Map {
            kernel_id: m.kernel_id,
            name: m.name.clone(),
            r#type: m.map_type.clone(),
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            owner_id: m.owner_id.map(|i| i.0),
            used_by: m.used_by.iter().map(|i| i.0).collect(),
            managed: m.managed,
            pinned_by_name: m.pinned_by_name,
        }
    }
}

impl TryFrom<pb::Map> for MapView {
    type Error = Invalid;
    fn try_from(m: pb::Map) -> Result<Self> {
        Ok(MapView {
            kernel_id: m.kernel_id,
            name: m.name,
            map_type: m.r#type,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            owner_id: opt_program_id(m.owner_id, "map.owner_id")?,
            used_by: m
                .used_by
                .into_iter()
                .map(|i| program_id(i, "map.used_by"))
                .collect::<Result<_>>()?,
            managed: m.managed,
            pinned_by_name: m.pinned_by_name,
        })
    }
}

impl From<&ProgInfo> for pb::KernelProgramInfo {
    fn from(i: &ProgInfo) -> Self {
        pb::KernelProgramInfo {
            id: i.id,
            name: i.name.clone(),
            prog_type: i.prog_type.clone(),
            tag: i.tag.clone(),
            jited_len: i.jited_len,
            xlated_len: i.xlated_len,
            map_ids: i.map_ids.clone(),
            btf_id: i.btf_id,
            verified_insns: i.verified_insns,
            run_cnt: i.run_cnt,
            run_time_ns: i.run_time_ns,
            load_time_boot_ns: i.load_time_boot_ns,
            created_by_uid: i.created_by_uid,
            gpl_compatible: i.gpl_compatible,
        }
    }
}

impl From<pb::KernelProgramInfo> for ProgInfo {
    fn from(i: pb::KernelProgramInfo) -> Self {
        ProgInfo {
            id: i.id,
            name: i.name,
            prog_type: i.prog_type,
            tag: i.tag,
            jited_len: i.jited_len,
            xlated_len: i.xlated_len,
            map_ids: i.map_ids,
            btf_id: i.btf_id,
            verified_insns: i.verified_insns,
            run_cnt: i.run_cnt,
            run_time_ns: i.run_time_ns,
            load_time_boot_ns: i.load_time_boot_ns,
            created_by_uid: i.created_by_uid,
            gpl_compatible: i.gpl_compatible,
        }
    }
}

impl From<&ProgramDetail> for pb::ProgramDetail {
    fn from(d: &ProgramDetail) -> Self {
        pb::ProgramDetail {
            program: Some((&d.program).into()),
            tag: d.tag.clone(),
            globals: d
                .globals
                .iter()
                .map(|g| pb::Global {
                    name: g.name.clone(),
                    section: g.section.clone(),
                    offset: g.offset as u64,
                    hex: g.hex.clone(),
                })
                .collect(),
            maps: d.maps.iter().map(Into::into).collect(),
            link_details: d.link_details.iter().map(Into::into).collect(),
            kernel: d.kernel.as_ref().map(Into::into),
            kernel_error: d.kernel_error.clone(),
            stats_enabled: d.stats_enabled,
        }
    }
}

impl TryFrom<pb::ProgramDetail> for ProgramDetail {
    type Error = Invalid;
    fn try_from(d: pb::ProgramDetail) -> Result<Self> {
        Ok(ProgramDetail {
            program: required(d.program, "program")?.try_into()?,
            tag: d.tag,
            globals: d
                .globals
                .into_iter()
                .map(|g| {
                    Ok(GlobalRecord {
                        name: g.name,
                        section: g.section,
                        offset: to_usize(g.offset, "globals.offset")?,
                        hex: g.hex,
                    })
                })
                .collect::<Result<_>>()?,
            maps: d
                .maps
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            link_details: d
                .link_details
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            kernel: d.kernel.map(Into::into),
            kernel_error: d.kernel_error,
            stats_enabled: d.stats_enabled,
        })
    }
}

impl From<&MapInfo> for pb::KernelMapInfo {
    fn from(i: &MapInfo) -> Self {
        pb::KernelMapInfo {
            id: i.id,
            name: i.name.clone(),
            map_type: i.map_type.clone(),
            map_type_raw: i.map_type_raw,
            key_size: i.key_size,
            value_size: i.value_size,
            max_entries: i.max_entries,
            flags: i.flags,
            btf_id: i.btf_id,
            btf_key_type_id: i.btf_key_type_id,
            btf_value_type_id: i.btf_value_type_id,
        }
    }
}

impl From<pb::KernelMapInfo> for MapInfo {
    fn from(i: pb::KernelMapInfo) -> Self {
        MapInfo {
            id: i.id,
            name: i.name,
            map_type: i.map_type,
            map_type_raw: i.map_type_raw,
            key_size: i.key_size,
            value_size: i.value_size,
            max_entries: i.max_entries,
            flags: i.flags,
            btf_id: i.btf_id,
            btf_key_type_id: i.btf_key_type_id,
            btf_value_type_id: i.btf_value_type_id,
        }
    }
}

impl From<&MapDump> for pb::MapDump {
    fn from(d: &MapDump) -> Self {
        pb::MapDump {
            map: Some((&d.map).into()),
            entries: d
                .entries
                .iter()
                .map(|e| pb::MapDumpEntry {
                    key_json: e.key.to_string(),
                    value_json: e.value.to_string(),
                    key_hex: e.key_hex.clone(),
                    value_hex: e.value_hex.clone(),
                })
                .collect(),
            decoded: d.decoded,
            truncated: d.truncated,
        }
    }
}

impl TryFrom<pb::MapDump> for MapDump {
    type Error = Invalid;
    fn try_from(d: pb::MapDump) -> Result<Self> {
        let json = |s: &str, field: &str| {
            serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| Invalid::new(field, format!("not JSON: {e}")))
        };
        Ok(MapDump {
            map: required(d.map, "dump.map")?.into(),
            entries: d
                .entries
                .into_iter()
                .map(|e| {
                    Ok(MapDumpEntry {
                        key: json(&e.key_json, "entries.key_json")?,
                        value: json(&e.value_json, "entries.value_json")?,
                        key_hex: e.key_hex,
                        value_hex: e.value_hex,
                    })
                })
                .collect::<Result<_>>()?,
            decoded: d.decoded,
            truncated: d.truncated,
        })
    }
}

impl From<&ChainView> for pb::Chain {
    fn from(c: &ChainView) -> Self {
        pb::Chain {
            id: c.id.0,
            kind: c.kind.clone(),
            iface: c.iface.clone(),
            netns: c.netns.clone(),
            direction: c.direction.clone(),
            mode: c.mode.clone(),
            link_kernel_id: c.link_kernel_id,
            dispatcher_kernel_id: c.dispatcher_kernel_id,
            programs: c
                .programs
                .iter()
                .map(|m| pb::ChainMember {
                    position: m.position as u64,
                    link_id: m.link_id.0,
                    program_id: m.program_id.0,
                    name: m.name.clone(),
                    priority: m.priority,
                    proceed_on: m.proceed_on.clone(),
                    runs: m.runs,
                    verdicts: m.verdicts.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::Chain> for ChainView {
    type Error = Invalid;
    fn try_from(c: pb::Chain) -> Result<Self> {
        Ok(ChainView {
            id: apiary::core::ChainId(c.id),
            kind: c.kind,
            iface: c.iface,
            netns: c.netns,
            direction: c.direction,
            mode: c.mode,
            link_kernel_id: c.link_kernel_id,
            dispatcher_kernel_id: c.dispatcher_kernel_id,
            programs: c
                .programs
                .into_iter()
                .map(|m| {
                    Ok(ChainMemberView {
                        position: to_usize(m.position, "chain.programs.position")?,
                        link_id: link_id(m.link_id, "chain.programs.link_id")?,
                        program_id: program_id(m.program_id, "chain.programs.program_id")?,
                        name: m.name,
                        priority: m.priority,
                        proceed_on: m.proceed_on,
                        runs: m.runs,
                        verdicts: m.verdicts,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

impl From<&Hook> for pb::HookRef {
    fn from(h: &Hook) -> Self {
        pb::HookRef {
            kind: chain_kind_to_proto(h.kind) as i32,
            iface: h.iface.clone(),
            netns: path_str(&h.netns),
            direction: h
                .direction
                .map(tc_direction_to_proto)
                .unwrap_or(pb::Direction::Unspecified) as i32,
        }
    }
}

impl TryFrom<pb::HookRef> for Hook {
    type Error = Invalid;
    fn try_from(h: pb::HookRef) -> Result<Self> {
        let kind = match pb::ChainKind::try_from(h.kind) {
            Ok(pb::ChainKind::Xdp) => ChainKind::Xdp,
            Ok(pb::ChainKind::Tc) => ChainKind::Tc,
            Ok(pb::ChainKind::Unspecified) => {
                return Err(Invalid::new("hook.kind", "is required: xdp or tc"))
            }
            Err(_) => {
                return Err(Invalid::new(
                    "hook.kind",
                    format!("unknown chain kind {}", h.kind),
                ))
            }
        };
        let direction = match kind {
            ChainKind::Tc => Some(direction_from_proto(h.direction, "hook.direction")?),
            ChainKind::Xdp => {
                if h.direction != pb::Direction::Unspecified as i32 {
                    return Err(Invalid::new(
                        "hook.direction",
                        "XDP chains have no direction",
                    ));
                }
                None
            }
        };
        if h.iface.is_empty() {
            return Err(Invalid::new("hook.iface", "is required"));
        }
        Ok(Hook {
            kind,
            iface: h.iface,
            netns: opt_path(h.netns),
            direction,
            // Finding a chain does not need its mode.
            mode: apiary::core::XdpMode::Auto,
        })
    }
}

impl From<&UpdateReport> for pb::UpdateReport {
    fn from(r: &UpdateReport) -> Self {
        pb::UpdateReport {
            id: r.id.0,
            name: r.name.clone(),
            old_kernel_id: r.old_kernel_id,
            new_kernel_id: r.new_kernel_id,
            links_updated: r.links_updated as u64,
            maps_kept: r.maps_kept as u64,
            millis: r.millis,
        }
    }
}

impl TryFrom<pb::UpdateReport> for UpdateReport {
    type Error = Invalid;
    fn try_from(r: pb::UpdateReport) -> Result<Self> {
        Ok(UpdateReport {
            id: program_id(r.id, "report.id")?,
            name: r.name,
            old_kernel_id: r.old_kernel_id,
            new_kernel_id: r.new_kernel_id,
            links_updated: to_usize(r.links_updated, "report.links_updated")?,
            maps_kept: to_usize(r.maps_kept, "report.maps_kept")?,
            millis: r.millis,
        })
    }
}

// ------------------------------------------------------------------------------ request parts

pub fn map_ref_to_proto(m: &MapRef) -> pb::dump_map_request::Map {
    match m {
        MapRef::KernelId(id) => pb::dump_map_request::Map::KernelId(*id),
        MapRef::ProgramMap(pid, name) => pb::dump_map_request::Map::ProgramMap(pb::ProgramMapRef {
            program_id: pid.0,
            map_name: name.clone(),
        }),
    }
}

pub fn map_ref_from_proto(m: Option<pb::dump_map_request::Map>) -> Result<MapRef> {
    match required(m, "map")? {
        pb::dump_map_request::Map::KernelId(0) => {
            Err(Invalid::new("map.kernel_id", "must be positive"))
        }
        pb::dump_map_request::Map::KernelId(id) => Ok(MapRef::KernelId(id)),
        pb::dump_map_request::Map::ProgramMap(r) => {
            if r.map_name.is_empty() {
                return Err(Invalid::new("map.program_map.map_name", "is required"));
            }
            Ok(MapRef::ProgramMap(
                program_id(r.program_id, "map.program_map.program_id")?,
                r.map_name,
            ))
        }
    }
}

pub fn raw_globals_to_proto(g: &[(String, Vec<u8>)]) -> Vec<pb::RawGlobal> {
    g.iter()
        .map(|(name, value)| pb::RawGlobal {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

pub fn typed_globals_to_proto(g: &[(String, String)]) -> Vec<pb::TypedGlobal> {
    g.iter()
        .map(|(name, value)| pb::TypedGlobal {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

pub fn raw_globals_from_proto(g: Vec<pb::RawGlobal>) -> Vec<(String, Vec<u8>)> {
    g.into_iter().map(|g| (g.name, g.value)).collect()
}

pub fn typed_globals_from_proto(g: Vec<pb::TypedGlobal>) -> Vec<(String, String)> {
    g.into_iter().map(|g| (g.name, g.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn round_trip(spec: AttachSpec) {
        let p: pb::AttachSpec = (&spec).into();
        let back: AttachSpec = p.try_into().expect("converts back");
        assert_eq!(back, spec);
    }

    #[test]
    fn every_attach_spec_round_trips() {
        let specs = vec![
            AttachSpec::Tracepoint {
                tracepoint: "syscalls/sys_enter_getppid".into(),
            },
            AttachSpec::RawTracepoint {
                tracepoint: "sys_enter".into(),
            },
            AttachSpec::TpBtf,
            AttachSpec::Iter,
            AttachSpec::SkLookup {
                netns: "/var/run/netns/x".into(),
            },
            AttachSpec::Xdp {
                iface: "veth0".into(),
                netns: Some("/var/run/netns/a".into()),
                mode: XdpMode::Skb,
                priority: 50,
                proceed_on: vec!["pass".into(), "drop".into()],
            },
            AttachSpec::Tc {
                iface: "veth0".into(),
                netns: None,
                direction: TcDirection::Egress,
                priority: 7,
                proceed_on: vec![],
                legacy: true,
            },
            AttachSpec::Tcx {
                iface: "veth0".into(),
                netns: None,
                direction: TcDirection::Ingress,
                priority: 3,
            },
            AttachSpec::Uprobe {
                target: "libc".into(),
                fn_name: Some("getppid".into()),
                offset: 8,
                retprobe: true,
                pid: Some(42),
            },
            AttachSpec::Usdt {
                target: "/usr/bin/app".into(),
                provider: "app".into(),
                name: "request".into(),
                pid: Some(7),
            },
            AttachSpec::Kprobe {
                fn_name: "do_nanosleep".into(),
                offset: 0,
                retprobe: true,
            },
            AttachSpec::CgroupSkb {
                cgroup: "/sys/fs/cgroup/x".into(),
                direction: CgroupDirection::Egress,
            },
            AttachSpec::CgroupSock {
                cgroup: "/sys/fs/cgroup/x".into(),
            },
            AttachSpec::CgroupSockAddr {
                cgroup: "/sys/fs/cgroup/x".into(),
                hook: Some(apiary_core::program::CgroupHook::Connect6),
            },
            AttachSpec::CgroupSockopt {
                cgroup: "/sys/fs/cgroup/x".into(),
                hook: None,
            },
            AttachSpec::CgroupSysctl {
                cgroup: "/sys/fs/cgroup/x".into(),
            },
            AttachSpec::Netfilter {
                hook: apiary_core::NetfilterHook::Forward,
                family: apiary_core::NetfilterFamily::Ipv6,
                priority: -5,
                netns: Some("/var/run/netns/x".into()),
                defrag: true,
            },
            AttachSpec::PerfEvent {
                event: SoftwareEvent::TaskClock,
                frequency: 99,
                cpu: Some(1),
            },
            AttachSpec::Fentry,
            AttachSpec::Fexit,
            AttachSpec::Lsm,
        ];
        for s in specs {
            round_trip(s);
        }
    }

    #[test]
    fn missing_and_unknown_fields_are_invalid() {
        let e = AttachSpec::try_from(pb::AttachSpec { hook: None }).unwrap_err();
        assert_eq!(e.field, "attach.hook");
        let tc = pb::AttachSpec {
            hook: Some(pb::attach_spec::Hook::Tc(pb::TcAttach {
                iface: "veth0".into(),
                ..Default::default()
            })),
        };
        assert!(AttachSpec::try_from(tc)
            .unwrap_err()
            .to_string()
            .contains("tc.direction"));
        let xdp = pb::AttachSpec {
            hook: Some(pb::attach_spec::Hook::Xdp(pb::XdpAttach {
                iface: "veth0".into(),
                mode: 99,
                ..Default::default()
            })),
        };
        assert!(AttachSpec::try_from(xdp)
            .unwrap_err()
            .reason
            .contains("unknown XDP mode"));
        assert!(program_type_from_proto(1000, "programs.type").is_err());
        assert_eq!(program_type_from_proto(0, "programs.type"), Ok(None));
        assert!(program_id(0, "id").is_err());
        assert!(map_ref_from_proto(None).is_err());
    }

    #[test]
    fn priority_defaults_when_unset() {
        let xdp = pb::AttachSpec {
            hook: Some(pb::attach_spec::Hook::Xdp(pb::XdpAttach {
                iface: "veth0".into(),
                ..Default::default()
            })),
        };
        match AttachSpec::try_from(xdp).unwrap() {
            AttachSpec::Xdp { priority, .. } => assert_eq!(priority, 1000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn views_round_trip() {
        let p = ProgramView {
            id: Some(ProgramId(3)),
            kernel_id: 77,
            name: "count".into(),
            prog_type: "tracepoint".into(),
            section: Some("tracepoint/syscalls/sys_enter_getppid".into()),
            source: Some("/tmp/x.o".into()),
            links: vec![LinkId(4)],
            attach_points: vec!["tracepoint syscalls/sys_enter_getppid".into()],
            loaded_at: Some("2026-01-01T00:00:00Z".into()),
            map_owner_id: None,
            metadata: BTreeMap::from([("app".to_string(), "web".to_string())]),
            managed: true,
        };
        let back: ProgramView = pb::Program::from(&p).try_into().unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&p).unwrap()
        );

        let dump = MapDump {
            map: MapInfo {
                id: 9,
                name: "counts".into(),
                key_size: 4,
                value_size: 8,
                max_entries: 1,
                ..Default::default()
            },
            entries: vec![MapDumpEntry {
                key: serde_json::json!(0),
                value: serde_json::json!({"b": 1, "a": [1, 2]}),
                key_hex: "00000000".into(),
                value_hex: "01".into(),
            }],
            decoded: true,
            truncated: false,
        };
        let back: MapDump = pb::MapDump::from(&dump).try_into().unwrap();
        // Field order inside decoded values survives (serde_json keeps insertion order here).
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&dump).unwrap()
        );

        let hook = Hook {
            kind: ChainKind::Tc,
            iface: "veth0".into(),
            netns: None,
            direction: Some(TcDirection::Egress),
            mode: apiary::core::XdpMode::Auto,
        };
        assert_eq!(Hook::try_from(pb::HookRef::from(&hook)).unwrap(), hook);
        let xdp_with_dir = pb::HookRef {
            kind: 1,
            iface: "veth0".into(),
            netns: None,
            direction: 1,
        };
        assert!(Hook::try_from(xdp_with_dir).is_err());
    }
}
