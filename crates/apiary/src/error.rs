//! The manager's error: every failure a front door can report, with a code that both the CLI
//! (exit status) and the gRPC API (status code) map from in one place.

use apiary_core::elf::ElfError;
use apiary_core::{LinkId, ProgramId};
use apiary_kernel::KernelError;
use apiary_store::StoreError;

fn list<T: ToString>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{source_name}: {error}")]
    Object {
        source_name: String,
        error: ElfError,
    },
    #[error("{kind} {id} not found{hint}")]
    NotFound {
        kind: &'static str,
        id: String,
        hint: String,
    },
    #[error("program {program} is recorded but its pin is missing ({reason}); run `apiary unload {program}` and load it again")]
    PinMissing { program: ProgramId, reason: String },
    #[error("program {program} ({name}) has {} link(s) (ids {}); detach them first or use --force", .links.len(), list(.links, ", "))]
    HasLinks {
        program: ProgramId,
        name: String,
        links: Vec<LinkId>,
    },
    #[error("program {program} ({name}) owns maps still used by program(s) {}; unload those first, or together: apiary unload {} {program}", list(.users, ", "), list(.users, " "))]
    MapsInUse {
        program: ProgramId,
        name: String,
        users: Vec<ProgramId>,
    },
    #[error("map {map} does not match the new code ({}); update keeps maps, so they must be the same — nothing was changed", .differences.join(", "))]
    MapMismatch {
        map: String,
        differences: Vec<String>,
    },
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
    /// An error a daemon reported, with the class it had there.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// Classes of error, named after the gRPC codes they map to (`Rejected` travels as
/// INVALID_ARGUMENT with its class in the status details). The CLI's exit status follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    AlreadyExists,
    /// The kernel lacks what the request needs.
    Unimplemented,
    /// The kernel refused the program (the verifier).
    Rejected,
    PermissionDenied,
    ResourceExhausted,
    /// The daemon could not be reached.
    Unavailable,
    Internal,
}

/// Every class, for round trips through names.
pub const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidArgument,
    ErrorCode::NotFound,
    ErrorCode::FailedPrecondition,
    ErrorCode::AlreadyExists,
    ErrorCode::Unimplemented,
    ErrorCode::Rejected,
    ErrorCode::PermissionDenied,
    ErrorCode::ResourceExhausted,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

impl ErrorCode {
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::NotFound => "not-found",
            ErrorCode::FailedPrecondition => "failed-precondition",
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Rejected => "rejected",
            ErrorCode::PermissionDenied => "permission-denied",
            ErrorCode::ResourceExhausted => "resource-exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ERROR_CODES.iter().copied().find(|c| c.name() == name)
    }

    /// The CLI's exit status for this class (documented in the README).
    pub fn exit_status(self) -> i32 {
        match self {
            ErrorCode::Internal | ErrorCode::ResourceExhausted => 1,
            ErrorCode::InvalidArgument => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::Rejected | ErrorCode::Unimplemented => 4,
            ErrorCode::PermissionDenied => 5,
            ErrorCode::FailedPrecondition | ErrorCode::AlreadyExists => 6,
            ErrorCode::Unavailable => 7,
        }
    }
}

impl Error {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        let hint = match kind {
            "program" => "; see `apiary list programs`",
            "link" => "; see `apiary list links`",
            "map" => "; see `apiary list maps`",
            _ => "",
        };
        Error::NotFound {
            kind,
            id: id.to_string(),
            hint: hint.to_string(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) | Error::Object { .. } => ErrorCode::InvalidArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::FailedPrecondition(_)
            | Error::PinMissing { .. }
            | Error::HasLinks { .. }
            | Error::MapsInUse { .. }
            | Error::MapMismatch { .. } => ErrorCode::FailedPrecondition,
            Error::Internal(_) | Error::Store(_) => ErrorCode::Internal,
            Error::Remote { code, .. } => *code,
            // A missing compiler is the machine's state; the rest is the source's fault.
            Error::Build(b) => match b {
                crate::build::BuildError::ToolMissing { .. } => ErrorCode::FailedPrecondition,
                crate::build::BuildError::Cache { .. }
                | crate::build::BuildError::Write { .. }
                | crate::build::BuildError::Package { .. } => ErrorCode::Internal,
                _ => ErrorCode::InvalidArgument,
            },
            Error::Kernel(k) => match k {
                KernelError::ReadObject { .. }
                | KernelError::NotBpfObject { .. }
                | KernelError::UnknownProgram { .. }
                | KernelError::TypeMismatch { .. }
                | KernelError::UnknownGlobal { .. }
                | KernelError::BadGlobal { .. }
                | KernelError::UnknownInterface { .. }
                | KernelError::BadNetns { .. }
                | KernelError::TargetNotFound { .. }
                | KernelError::Invalid(_) => ErrorCode::InvalidArgument,
                KernelError::MapReuse { .. }
                | KernelError::HookBusy { .. }
                | KernelError::PinExists { .. }
                | KernelError::NotBpffs { .. } => ErrorCode::FailedPrecondition,
                KernelError::NotSupported { .. } | KernelError::Unsupported { .. } => {
                    ErrorCode::Unimplemented
                }
                KernelError::Verifier { .. } => ErrorCode::Rejected,
                KernelError::Chain(_) => ErrorCode::InvalidArgument,
                KernelError::NotFound { .. } => ErrorCode::NotFound,
                KernelError::Load { error, .. } | KernelError::Syscall { error, .. } => {
                    match error.raw_os_error() {
                        Some(libc_eperm) if libc_eperm == 1 || libc_eperm == 13 => {
                            ErrorCode::PermissionDenied
                        }
                        Some(28) | Some(12) | Some(7) => ErrorCode::ResourceExhausted,
                        _ => ErrorCode::Internal,
                    }
                }
                KernelError::Libbpf { .. } | KernelError::LoaderFailed { .. } => {
                    ErrorCode::Internal
                }
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
