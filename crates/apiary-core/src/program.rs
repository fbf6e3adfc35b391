//! What apiary knows about a program type ([`TypeInfo`]) and the questions answered from the
//! table of them: section names, user spellings, image labels. Each type's entry is in its own
//! file under `types/`; the table is assembled in `types/mod.rs`.

use crate::attach::{AttachSpec, RunTargets};
use std::fmt;
use std::str::FromStr;

pub use crate::types::cgroup::CgroupHook;
pub use crate::types::{ProgramType, ALL_TYPES, TYPES};

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
    /// The hook is in the section name, and a section that names none is not attached (libbpf
    /// cannot attach it either), for this reason.
    SectionOnly(&'static str),
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
    /// The kernel program type and expected attach type (uapi numbers, `enum bpf_prog_type`
    /// and `enum bpf_attach_type`) to load it with when libbpf cannot tell them from the section
    /// (`classifier/NAME`); `None` for types whose section must name their target (a BTF
    /// function, a cgroup hook). A test in apiary-kernel checks them against libbpf's own
    /// section rules.
    pub untyped: Option<(u32, u32)>,
    /// Whether programs of this type can join an XDP or TC chain (apiary's dispatcher).
    pub chainable: bool,
    /// Whether its links can switch programs in place with BPF_LINK_UPDATE (atomically);
    /// perf_event-based links (tracepoints, probes, perf events) and tracing links cannot.
    pub link_update: bool,
    /// The perf PMU its probes go through (`/sys/bus/event_source/devices/kprobe`), so a
    /// failed auto-attach can say whether the kernel lacks it or the section lacks a target.
    pub pmu: Option<&'static str>,
    /// Which kernel event a program of this type in a section handles, when programs of other
    /// types can handle the same one (see [`run_event_key`](crate::attach::run_event_key)).
    pub event: RunEvent,
    /// The attach spec `apiary run` uses for a program in a section: the hook the section
    /// names (`tracepoint/CAT/NAME`; `None` when it names none apiary parses, and libbpf's
    /// auto-attach is used), or for interface, cgroup and perf types the one the run targets
    /// give.
    pub default_spec: fn(&RunTargets, &str) -> Option<AttachSpec>,
}

/// The kernel event a section names, shared between program types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// None shared with other types.
    None,
    /// A tracepoint (its raw and BTF forms are the same event): the section's last part.
    Tracepoint,
    /// The entry of a kernel function, or its return for return-probe sections.
    Function,
}

impl TypeInfo {
    /// An entry with nothing but its type and name: per-type files fill in the rest with
    /// struct update syntax, so a new field gets a default here instead of in every file.
    pub const fn base(ty: ProgramType, name: &'static str) -> TypeInfo {
        TypeInfo {
            ty,
            name,
            aliases: &[],
            section_prefixes: &[],
            sections: &[],
            return_prefixes: &[],
            labels: &[],
            run: RunRule::Section,
            requires: "",
            untyped: None,
            chainable: false,
            link_update: false,
            pmu: None,
            event: RunEvent::None,
            default_spec: no_spec,
        }
    }
}

fn no_spec(_: &RunTargets, _: &str) -> Option<AttachSpec> {
    None
}

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
        self.info().chainable
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
