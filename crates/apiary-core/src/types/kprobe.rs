//! kprobes and kretprobes: a kernel function's entry (or an offset in it) or its return,
//! through the kprobe PMU.

use crate::attach::{parse_offset, AttachOptions, AttachSpec, RunTargets};
use crate::program::{ProgramType, RunEvent, TypeInfo};
use serde::{Deserialize, Serialize};

/// A kernel function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct KprobeAttach {
    #[cfg_attr(feature = "cli", arg(long))]
    pub fn_name: String,
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub offset: u64,
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long))]
    pub retprobe: bool,
}

pub const INFO: TypeInfo = TypeInfo {
    aliases: &["kretprobe"],
    section_prefixes: &["kprobe", "kretprobe", "ksyscall", "kretsyscall"],
    return_prefixes: &["kretprobe", "kretsyscall"],
    labels: &["kprobe", "kretprobe"],
    requires: "the kprobe PMU (/sys/bus/event_source/devices/kprobe)",
    // BPF_PROG_TYPE_KPROBE, no expected attach type
    untyped: Some((2, 0)),
    pmu: Some("/sys/bus/event_source/devices/kprobe"),
    event: RunEvent::Function,
    default_spec: from_section,
    ..TypeInfo::base(ProgramType::Kprobe, "kprobe")
};

/// `kprobe/FN[+OFF]`, `kretprobe/FN`; `ksyscall/NAME` is left to libbpf, which knows the
/// architecture's syscall wrapper names.
fn from_section(_: &RunTargets, section: &str) -> Option<AttachSpec> {
    let (head, rest) = section.split_once('/')?;
    if !matches!(head, "kprobe" | "kretprobe") || rest.is_empty() {
        return None;
    }
    let (fn_name, offset) = match rest.split_once('+') {
        Some((f, off)) => (f, parse_offset(off)?),
        None => (rest, 0),
    };
    Some(AttachSpec::Kprobe(KprobeAttach {
        fn_name: fn_name.to_string(),
        offset,
        retprobe: head == "kretprobe",
    }))
}

impl AttachOptions for KprobeAttach {
    const TYPE: ProgramType = ProgramType::Kprobe;

    fn validate(&self) -> Result<(), String> {
        if self.fn_name.is_empty() {
            Err("kprobe needs --fn-name".into())
        } else {
            Ok(())
        }
    }

    fn describe(&self) -> String {
        let kind = if self.retprobe { "kretprobe" } else { "kprobe" };
        format!("{kind} {}+{:#x}", self.fn_name, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections() {
        let f = |s| AttachSpec::from_section(ProgramType::Kprobe, s);
        assert_eq!(
            f("kretprobe/do_unlinkat+0x10"),
            Some(AttachSpec::Kprobe(KprobeAttach {
                fn_name: "do_unlinkat".into(),
                offset: 16,
                retprobe: true
            }))
        );
        assert_eq!(f("ksyscall/openat"), None);
        assert_eq!(f("kprobe/f+zz"), None);
        assert_eq!(
            AttachSpec::Kprobe(KprobeAttach {
                fn_name: "f".into(),
                offset: 0,
                retprobe: false
            })
            .describe(),
            "kprobe f+0x0"
        );
    }
}
