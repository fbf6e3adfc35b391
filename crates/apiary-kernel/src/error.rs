//! Kernel-side errors. Each variant carries what a user needs to act on it.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read object file {path}: {error}")]
    ReadObject { path: PathBuf, error: io::Error },

    #[error("{path} is not a BPF object file: {reason}")]
    NotBpfObject { path: String, reason: String },

    #[error("program {name:?} not found in {object}; it contains: {available}")]
    UnknownProgram {
        name: String,
        object: String,
        available: String,
    },

    #[error("program {name:?} is in section {section:?}, which is {actual}, not {requested}")]
    TypeMismatch {
        name: String,
        section: String,
        actual: String,
        requested: String,
    },

    #[error("global {name:?} not found in the object's .rodata/.data/.bss; it has: {available}")]
    UnknownGlobal { name: String, available: String },

    #[error("global {name:?}: {reason}")]
    BadGlobal { name: String, reason: String },

    #[error("map {name:?}: {reason}")]
    MapReuse { name: String, reason: String },

    /// `verifier_log` is the raw log's tail; `diagnosis` reads the whole log (see
    /// apiary_core::verifier), and is what a person sees first.
    #[error("the verifier rejected program {program:?}\n{}verifier log:\n{verifier_log}", .diagnosis.summary())]
    Verifier {
        program: String,
        verifier_log: String,
        diagnosis: Box<apiary_core::verifier::Diagnosis>,
    },

    #[error("loading program {program:?} failed: {error}{}", hint_suffix(.hint))]
    Load {
        program: String,
        error: io::Error,
        hint: Option<String>,
    },

    #[error("{feature}: not supported by this kernel: {reason}")]
    NotSupported { feature: String, reason: String },

    /// Something the kernel may well run but apiary does not handle yet.
    #[error("{feature}: apiary does not support this yet: {reason}")]
    Unsupported { feature: String, reason: String },

    #[error("interface {name:?} does not exist{}", netns_suffix(.netns))]
    UnknownInterface {
        name: String,
        netns: Option<PathBuf>,
    },

    #[error("network namespace {path}: {reason}")]
    BadNetns { path: PathBuf, reason: String },

    #[error("attach target {target} not found: {reason}")]
    TargetNotFound { target: String, reason: String },

    #[error("{hook} is already in use: {reason}")]
    HookBusy { hook: String, reason: String },

    #[error("{} is already pinned, but apiary's store does not know it: another store shares this bpffs directory, or a crash left it behind; remove it (rm {}) or use another --bpffs", .path.display(), .path.display())]
    PinExists { path: PathBuf },

    #[error("{} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf` or choose another --bpffs", .path.display())]
    NotBpffs { path: PathBuf },

    #[error("{call} failed: {error}")]
    Syscall { call: String, error: io::Error },

    #[error("{op}: {error}")]
    Libbpf { op: String, error: libbpf_rs::Error },

    #[error("kernel object {what} not found")]
    NotFound { what: String },

    #[error("{0}")]
    Invalid(String),

    /// A chain that cannot be composed (apiary_core::chain explains which slot and why).
    #[error(transparent)]
    Chain(#[from] apiary_core::chain::ChainError),

    /// The loader process (see `worker`) died or broke the protocol during a load. Its kernel
    /// objects died with it: nothing of the load exists.
    #[error("the loader process {what} while loading {object}; nothing was loaded")]
    LoaderFailed { object: String, what: String },
}

fn netns_suffix(n: &Option<PathBuf>) -> String {
    match n {
        Some(p) => format!(" in network namespace {}", p.display()),
        None => String::new(),
    }
}

fn hint_suffix(h: &Option<String>) -> String {
    match h {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

impl KernelError {
    pub fn syscall(call: impl Into<String>, source: io::Error) -> Self {
        KernelError::Syscall {
            call: call.into(),
            error: source,
        }
    }

    /// A verifier rejection, from the whole log (the error keeps its last `tail_lines`).
    pub fn verifier(program: impl Into<String>, log: &str, tail_lines: usize) -> Self {
        let diagnosis = apiary_core::verifier::diagnose(log, tail_lines);
        KernelError::Verifier {
            program: program.into(),
            verifier_log: diagnosis.log_tail.clone(),
            diagnosis: Box::new(diagnosis),
        }
    }

    pub fn libbpf(op: impl Into<String>, source: libbpf_rs::Error) -> Self {
        KernelError::Libbpf {
            op: op.into(),
            error: source,
        }
    }

    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Syscall { error, .. } | KernelError::Load { error, .. } => {
                error.raw_os_error()
            }
            _ => None,
        }
    }
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Turn a libbpf-style negative return into an io::Error.
pub(crate) fn check(ret: i32, call: &str) -> Result<i32> {
    if ret < 0 {
        Err(KernelError::syscall(
            call,
            io::Error::from_raw_os_error(-ret),
        ))
    } else {
        Ok(ret)
    }
}
