//! Attach specs: where a loaded program should run. Each hook's options are one struct in its
//! type's file under `types/` (validation, description, the spec `run` derives from a
//! section); [`AttachSpec`] (in `types/mod.rs`) is the enum of them. This module holds what is
//! shared: the [`AttachOptions`] trait every hook struct implements, `apiary run`'s targets, and
//! the small parsers the hooks use.

pub use crate::hook::ChainJoin;
use crate::program::{ProgramType, RunEvent, RunRule};
use std::path::PathBuf;

// The option enums other crates name through this module (hook structs are in their type's
// module under `types`).
pub use crate::types::cgroup::CgroupDirection;
pub use crate::types::netfilter::{NetfilterFamily, NetfilterHook};
pub use crate::types::perf_event::SoftwareEvent;
pub use crate::types::tc::{dir_name, TcDirection};
pub use crate::types::xdp::XdpMode;
pub use crate::types::AttachSpec;

/// What every hook's options struct answers. `AttachSpec`'s methods dispatch to these, so a
/// question about a hook is answered in the hook's own file.
pub trait AttachOptions {
    /// The program type this hook takes.
    const TYPE: ProgramType;

    /// Check what can be checked without the kernel.
    fn validate(&self) -> Result<(), String>;

    /// A short human description of the attach point, for tables.
    fn describe(&self) -> String;

    /// Fill in what the program's section decides (a cgroup hook), before the spec is checked
    /// and recorded.
    fn resolve(&mut self, _section: &str) -> Result<(), String> {
        Ok(())
    }

    /// The chain this spec joins, if it is a chain member.
    fn chain(&self) -> Option<ChainJoin<'_>> {
        None
    }
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
            | RunRule::SectionOnly(_)
            | RunRule::Never(_) => None,
        }
    }

    /// How `apiary run` attaches a program of type `ty` in `section`, by the type's run rule.
    pub fn attach(&self, ty: ProgramType, section: &str) -> RunAttach {
        if let Some(flag) = self.missing(ty) {
            return RunAttach::Needs(flag);
        }
        let info = ty.info();
        match info.run {
            RunRule::Never(why) => RunAttach::Skip(why),
            RunRule::SectionOnly(why) => (info.default_spec)(self, section)
                .map(RunAttach::Spec)
                .unwrap_or(RunAttach::Skip(why)),
            RunRule::Section | RunRule::Interface | RunRule::Cgroup | RunRule::CpuClock => {
                (info.default_spec)(self, section)
                    .map(RunAttach::Spec)
                    .unwrap_or(RunAttach::Libbpf)
            }
        }
    }

    /// The iface given, for types attached to one (checked by [`RunTargets::missing`] first).
    pub fn iface(&self) -> String {
        self.iface.clone().unwrap_or_default()
    }

    /// The cgroup given, for types attached to one.
    pub fn cgroup(&self) -> PathBuf {
        self.cgroup.clone().unwrap_or_default()
    }
}

/// The kernel event a program in `section` handles, when programs of different types can
/// handle the same one (a tracepoint, its raw tracepoint and its tp_btf form; the entry or the
/// return of a function), so `run` can say when a tool attached alternatives together.
pub fn run_event_key(ty: ProgramType, section: &str) -> Option<String> {
    let target = section.split_once('/').map(|(_, r)| r).unwrap_or("");
    let last = target.rsplit('/').next().unwrap_or(target);
    match ty.info().event {
        RunEvent::Tracepoint if !last.is_empty() => Some(format!("event {last}")),
        RunEvent::Function if !target.is_empty() => {
            Some(if ProgramType::section_is_retprobe(section) {
                format!("return of {target}")
            } else {
                format!("entry of {target}")
            })
        }
        RunEvent::Tracepoint | RunEvent::Function | RunEvent::None => None,
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

/// A decimal or `0x` hex offset, as section names write them (`kprobe/FN+0x10`).
pub(crate) fn parse_offset(s: &str) -> Option<u64> {
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

/// " netns=PATH" for descriptions, or nothing.
pub(crate) fn describe_netns(n: &Option<PathBuf>) -> String {
    match n {
        Some(p) => format!(" netns={}", p.display()),
        None => String::new(),
    }
}

pub(crate) fn valid_tp_part(s: &str) -> bool {
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

impl AttachSpec {
    /// The hook a program's section name itself names, read the way libbpf's auto-attach reads
    /// it (`tracepoint/CAT/NAME`, `raw_tp/NAME`, `kprobe/FN+OFF`, `uretprobe/PATH:FN`), so
    /// `apiary run` attaches through the same code, with the same errors, as `apiary attach`.
    /// `None` when the section names no target (or one apiary does not parse: libbpf then
    /// attaches it itself), and for types whose hook is not in the section (an interface).
    pub fn from_section(ty: ProgramType, section: &str) -> Option<AttachSpec> {
        let info = ty.info();
        match info.run {
            RunRule::Section | RunRule::SectionOnly(_) => {
                (info.default_spec)(&RunTargets::default(), section)
            }
            RunRule::Interface | RunRule::Cgroup | RunRule::CpuClock | RunRule::Never(_) => None,
        }
    }
}

impl std::fmt::Display for AttachSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate_iface("veth0").is_ok());
        assert!(validate_iface("a-very-long-interface-name").is_err());
    }

    #[test]
    fn run_event_keys() {
        let k = run_event_key;
        assert_eq!(
            k(ProgramType::RawTracepoint, "raw_tp/sched_switch").as_deref(),
            Some("event sched_switch")
        );
        assert_eq!(
            k(ProgramType::Tracepoint, "tp/sched/sched_switch").as_deref(),
            Some("event sched_switch")
        );
        assert_eq!(
            k(ProgramType::Fentry, "fentry/do_unlinkat").as_deref(),
            Some("entry of do_unlinkat")
        );
        assert_eq!(
            k(ProgramType::Kprobe, "kretprobe/do_unlinkat").as_deref(),
            Some("return of do_unlinkat")
        );
        assert_eq!(
            k(ProgramType::Fexit, "fexit/do_unlinkat").as_deref(),
            Some("return of do_unlinkat")
        );
        assert_eq!(k(ProgramType::Xdp, "xdp/foo"), None);
        assert_eq!(k(ProgramType::Kprobe, "kprobe"), None);
    }

    #[test]
    fn run_rules() {
        let t = RunTargets {
            iface: Some("veth0".into()),
            netns: None,
            cgroup: None,
        };
        assert!(matches!(
            t.attach(ProgramType::Tc, "tc/egress"),
            RunAttach::Spec(AttachSpec::Tcx(crate::types::tcx::TcxAttach {
                direction: TcDirection::Egress,
                priority: 0,
                ..
            }))
        ));
        assert_eq!(
            t.attach(ProgramType::CgroupSkb, "cgroup_skb/ingress"),
            RunAttach::Needs("--cgroup")
        );
        assert!(matches!(
            t.attach(ProgramType::SocketFilter, "socket"),
            RunAttach::Skip(_)
        ));
        assert_eq!(
            t.attach(ProgramType::Kprobe, "ksyscall/openat"),
            RunAttach::Libbpf
        );
    }
}
