//! `AttachSpec` ↔ `pb::AttachSpec` and `ProgramType` ↔ `pb::ProgramType`, generated from the
//! types rather than written per hook. build.rs gives the hook messages serde derives shaped
//! like apiary-core's JSON of `AttachSpec` (oneof tagged `type` in kebab-case, the same field
//! names, enum fields by name), so a spec converts by serialising one side and reading it as
//! the other. A new hook needs its message in the proto and nothing here.
//!
//! The rules that make the two shapes meet, checked by the tests below for every hook:
//! a hook message's fields are named like its core struct's; a proto enum's values are the core
//! enum's names in SCREAMING_SNAKE case behind the enum's prefix (`XDP_MODE_SKB` ↔ `skb`,
//! `SOFTWARE_EVENT_CPU_CLOCK` ↔ `cpu-clock`); `optional` proto fields left unset take the core
//! struct's serde default.

use crate::convert::Invalid;
use crate::pb;
use apiary::core::{AttachSpec, ProgramType};
use serde::{Deserialize, Deserializer, Serializer};

/// How a generated proto enum names its values (implemented for every enum by build.rs).
pub trait ProtoEnum {
    /// What the enum is, in words, for errors ("XDP mode").
    const WHAT: &'static str;
    /// The prefix every value name carries (`XDP_MODE_`).
    const PREFIX: &'static str;
    fn name_of(v: i32) -> Option<&'static str>;
    fn value_of(name: &str) -> Option<i32>;
}

/// apiary-core's name for a proto enum value: `SOFTWARE_EVENT_CPU_CLOCK` → `cpu-clock`; `None`
/// for a number the enum does not define.
pub fn core_name<E: ProtoEnum>(v: i32) -> Option<String> {
    let n = E::name_of(v)?;
    Some(
        n.strip_prefix(E::PREFIX)
            .unwrap_or(n)
            .to_ascii_lowercase()
            .replace('_', "-"),
    )
}

/// The proto value for apiary-core's name of it.
pub fn proto_value<E: ProtoEnum>(name: &str) -> Option<i32> {
    E::value_of(&format!(
        "{}{}",
        E::PREFIX,
        name.to_ascii_uppercase().replace('-', "_")
    ))
}

/// serde `serialize_with` for an enum field of a hook message. UNSPECIFIED is never a valid
/// hook option: where a proto enum has it, the core field is required.
pub fn ser_enum<E: ProtoEnum, S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    match core_name::<E>(*v) {
        Some(n) if n == "unspecified" => Err(S::Error::custom(format!("{} is required", E::WHAT))),
        Some(n) => s.serialize_str(&n),
        None => Err(S::Error::custom(format!("unknown {} {v}", E::WHAT))),
    }
}

/// serde `deserialize_with` for an enum field of a hook message.
pub fn de_enum<'de, E: ProtoEnum, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    proto_value::<E>(&s).ok_or_else(|| D::Error::custom(format!("unknown {} {s:?}", E::WHAT)))
}

/// The message for a spec. Fails only if the proto and apiary-core disagree on a hook's shape,
/// which the tests rule out for every hook.
pub fn to_proto(spec: &AttachSpec) -> Result<pb::attach_spec::Hook, Invalid> {
    let v = serde_json::to_value(spec).map_err(|e| Invalid::new("attach", e.to_string()))?;
    serde_json::from_value(v).map_err(|e| {
        Invalid::new(
            format!("attach.{}", spec.program_type()),
            format!("no proto form: {e}"),
        )
    })
}

/// The spec a message asks for. An enum number the proto does not define, an unset required
/// enum, or an option apiary-core rejects (a netfilter hook name) is `Invalid`.
pub fn from_proto(hook: pb::attach_spec::Hook) -> Result<AttachSpec, Invalid> {
    let v = serde_json::to_value(&hook).map_err(|e| Invalid::new("attach", e.to_string()))?;
    let kind = v
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("hook")
        .to_string();
    serde_json::from_value(v).map_err(|e| Invalid::new(format!("attach.{kind}"), e.to_string()))
}

pub fn program_type_to_proto(t: ProgramType) -> pb::ProgramType {
    // Every type has a value (checked by a test); a missing one would read as "any type".
    proto_value::<pb::ProgramType>(t.name())
        .and_then(|v| pb::ProgramType::try_from(v).ok())
        .unwrap_or(pb::ProgramType::Unspecified)
}

/// None for PROGRAM_TYPE_UNSPECIFIED (the section decides).
pub fn program_type_from_proto(v: i32, field: &str) -> Result<Option<ProgramType>, Invalid> {
    let unknown = || Invalid::new(field, format!("unknown program type {v}"));
    let name = core_name::<pb::ProgramType>(v).ok_or_else(unknown)?;
    if name == "unspecified" {
        return Ok(None);
    }
    ProgramType::parse_user(&name)
        .map(Some)
        .map_err(|_| unknown())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiary::core::program::ALL_TYPES;

    /// One spec per hook with every option set, and again with options left out, as stored.
    const SPECS: &[&str] = &[
        r#"{"type":"tracepoint","tracepoint":"syscalls/sys_enter_getppid"}"#,
        r#"{"type":"raw-tracepoint","tracepoint":"sys_enter"}"#,
        r#"{"type":"tp-btf"}"#,
        r#"{"type":"iter"}"#,
        r#"{"type":"sk-lookup","netns":"/var/run/netns/x"}"#,
        r#"{"type":"xdp","iface":"veth0","netns":"/var/run/netns/a","mode":"skb","priority":50,"proceed_on":["pass","drop"]}"#,
        r#"{"type":"xdp","iface":"veth0","mode":"auto","priority":1000}"#,
        r#"{"type":"tc","iface":"veth0","direction":"egress","priority":7,"legacy":true}"#,
        r#"{"type":"tc","iface":"veth0","netns":"/x","direction":"ingress","priority":1,"proceed_on":["ok"]}"#,
        r#"{"type":"tcx","iface":"veth0","direction":"ingress","priority":3}"#,
        r#"{"type":"uprobe","target":"libc","fn_name":"getppid","offset":8,"retprobe":true,"pid":42}"#,
        r#"{"type":"uprobe","target":"/bin/true","offset":16,"retprobe":false}"#,
        r#"{"type":"usdt","target":"/usr/bin/app","provider":"app","name":"request","pid":7}"#,
        r#"{"type":"usdt","target":"libc","provider":"libc","name":"setjmp"}"#,
        r#"{"type":"kprobe","fn_name":"do_nanosleep","offset":0,"retprobe":true}"#,
        r#"{"type":"cgroup-skb","cgroup":"/sys/fs/cgroup/x","direction":"egress"}"#,
        r#"{"type":"cgroup-sock","cgroup":"/sys/fs/cgroup/x"}"#,
        r#"{"type":"cgroup-sock-addr","cgroup":"/sys/fs/cgroup/x","hook":"connect6"}"#,
        r#"{"type":"cgroup-sockopt","cgroup":"/sys/fs/cgroup/x"}"#,
        r#"{"type":"cgroup-sysctl","cgroup":"/sys/fs/cgroup/x"}"#,
        r#"{"type":"netfilter","hook":"forward","family":"ipv6","priority":-5,"netns":"/var/run/netns/x","defrag":true}"#,
        r#"{"type":"netfilter","hook":"input","family":"ipv4","priority":0}"#,
        r#"{"type":"perf-event","event":"task-clock","frequency":99,"cpu":1}"#,
        r#"{"type":"fentry"}"#,
        r#"{"type":"fexit"}"#,
        r#"{"type":"lsm"}"#,
    ];

    #[test]
    fn every_hook_round_trips_through_its_message() {
        let mut seen = Vec::new();
        for j in SPECS {
            let spec: AttachSpec = serde_json::from_str(j).unwrap();
            let p = to_proto(&spec).unwrap_or_else(|e| panic!("{j}: {e}"));
            assert_eq!(from_proto(p).unwrap(), spec, "{j}");
            seen.push(spec.program_type());
        }
        for t in ALL_TYPES {
            if *t != ProgramType::SocketFilter {
                assert!(seen.contains(t), "no spec for {t}");
            }
        }
    }

    /// The first spec of `SPECS` for hook `kind`.
    fn first(kind: &str) -> AttachSpec {
        let tag = format!(r#"{{"type":"{kind}","#);
        let j = SPECS
            .iter()
            .find(|j| j.starts_with(&tag))
            .expect("a spec of that kind");
        serde_json::from_str(j).unwrap()
    }

    #[test]
    fn messages_carry_the_wire_values() {
        let spec = first("xdp");
        let pb::attach_spec::Hook::Xdp(x) = to_proto(&spec).unwrap() else {
            panic!("not xdp");
        };
        assert_eq!(x.mode, pb::XdpMode::Skb as i32);
        assert_eq!(x.priority, Some(50));
        assert_eq!(x.netns.as_deref(), Some("/var/run/netns/a"));
        let spec = first("perf-event");
        let pb::attach_spec::Hook::PerfEvent(p) = to_proto(&spec).unwrap() else {
            panic!("not perf");
        };
        assert_eq!(p.event, pb::SoftwareEvent::TaskClock as i32);
        let spec = first("cgroup-sockopt");
        let pb::attach_spec::Hook::CgroupSockopt(c) = to_proto(&spec).unwrap() else {
            panic!("not sockopt");
        };
        assert_eq!(c.hook, "");
    }

    #[test]
    fn every_program_type_has_a_proto_value() {
        for t in ALL_TYPES {
            let v = program_type_to_proto(*t);
            assert_ne!(v, pb::ProgramType::Unspecified, "{t}");
            assert_eq!(program_type_from_proto(v as i32, "t"), Ok(Some(*t)));
        }
        assert_eq!(
            program_type_to_proto(ProgramType::RawTracepoint),
            pb::ProgramType::RawTracepoint
        );
    }

    #[test]
    fn bad_messages_are_invalid() {
        let hook = |h| from_proto(h).unwrap_err().to_string();
        let e = hook(pb::attach_spec::Hook::Tc(pb::TcAttach {
            iface: "veth0".into(),
            ..Default::default()
        }));
        assert!(e.contains("direction is required"), "{e}");
        let e = hook(pb::attach_spec::Hook::Xdp(pb::XdpAttach {
            iface: "veth0".into(),
            mode: 99,
            ..Default::default()
        }));
        assert!(e.contains("unknown XDP mode 99"), "{e}");
        let e = hook(pb::attach_spec::Hook::Netfilter(pb::NetfilterAttach {
            hook: "sideways".into(),
            family: "ipv4".into(),
            ..Default::default()
        }));
        assert!(
            e.contains("attach.netfilter") && e.contains("unknown netfilter hook"),
            "{e}"
        );
        // Unset optional fields take apiary-core's defaults.
        let x = from_proto(pb::attach_spec::Hook::Tcx(pb::TcxAttach {
            iface: "veth0".into(),
            direction: pb::Direction::Egress as i32,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(x.describe(), "tcx veth0 egress prio=1000");
    }
}
