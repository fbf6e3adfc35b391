//! Conversions between apiary's types (requests, views) and the apiary.v1 messages, both ways:
//! the server turns requests into the manager's types and views into messages; the client does
//! the reverse, so the CLI prints the same thing whichever front door it used.
//!
//! Everything that comes off the wire is checked here: a missing required field, an unknown
//! enum value or a non-positive id is an `Invalid`, which the server reports as
//! INVALID_ARGUMENT before the manager sees the request.

use crate::pb;
use apiary::chain::{ChainMemberView, ChainView};
use apiary::core::chain::ChainKind;
use apiary::core::verifier::{Diagnosis, Hint, SourceLine};
use apiary::core::Hook;
use apiary::core::{AttachSpec, LinkId, ProgramId, TcDirection};
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

pub use crate::hooks::{program_type_from_proto, program_type_to_proto};

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

// Per hook, these go through serde (see hooks.rs): a new hook needs no arm here.

impl From<&AttachSpec> for pb::AttachSpec {
    fn from(spec: &AttachSpec) -> Self {
        match crate::hooks::to_proto(spec) {
            Ok(hook) => pb::AttachSpec { hook: Some(hook) },
            Err(e) => {
                // Only a proto that lost a hook apiary-core has can get here (every hook is
                // round-tripped by a test); the receiver then reports the missing hook.
                tracing::error!(%e, "attach spec has no proto form");
                pb::AttachSpec { hook: None }
            }
        }
    }
}

impl TryFrom<pb::AttachSpec> for AttachSpec {
    type Error = Invalid;
    fn try_from(spec: pb::AttachSpec) -> Result<Self> {
        crate::hooks::from_proto(required(spec.hook, "attach.hook")?)
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

// ------------------------------------------------------------------------ verifier diagnoses

/// A verifier rejection for the `apiary-verifier-bin` trailer (see status.rs).
pub fn verifier_to_pb(program: &str, d: &Diagnosis) -> pb::VerifierDiagnosis {
    pb::VerifierDiagnosis {
        program: program.to_string(),
        insn: d.insn,
        insn_text: d.insn_text.clone(),
        message: d.message.clone(),
        source: d.source.as_ref().map(|s| pb::VerifierSourceLine {
            file: s.file.clone(),
            line: s.line,
            text: s.text.clone(),
        }),
        registers: d
            .registers
            .iter()
            .map(|(name, state)| pb::VerifierRegister {
                name: name.clone(),
                state: state.clone(),
            })
            .collect(),
        hint: d.hint.map(|h| h.name().to_string()).unwrap_or_default(),
        log_tail: d.log_tail.clone(),
    }
}

/// The program name and the diagnosis back. A hint this client does not know (a newer
/// daemon's) reads as the generic one rather than as none: the server did recognise a cause.
pub fn verifier_from_pb(v: pb::VerifierDiagnosis) -> (String, Diagnosis) {
    let hint = match v.hint.as_str() {
        "" => None,
        name => Some(Hint::from_name(name).unwrap_or(Hint::Generic)),
    };
    let d = Diagnosis {
        insn: v.insn,
        insn_text: v.insn_text,
        message: v.message,
        source: v.source.map(|s| SourceLine {
            file: s.file,
            line: s.line,
            text: s.text,
        }),
        registers: v.registers.into_iter().map(|r| (r.name, r.state)).collect(),
        hint,
        log_tail: v.log_tail,
    };
    (v.program, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn attach_specs_convert_through_their_messages() {
        let spec: AttachSpec = serde_json::from_str(
            r#"{"type":"tc","iface":"veth0","direction":"egress","priority":7,"legacy":true}"#,
        )
        .unwrap();
        let p: pb::AttachSpec = (&spec).into();
        assert!(matches!(p.hook, Some(pb::attach_spec::Hook::Tc(_))));
        assert_eq!(AttachSpec::try_from(p).unwrap(), spec);
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
        let e = AttachSpec::try_from(tc).unwrap_err().to_string();
        assert!(e.contains("direction is required"), "{e}");
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
            AttachSpec::Xdp(x) => assert_eq!(x.priority, 1000),
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
