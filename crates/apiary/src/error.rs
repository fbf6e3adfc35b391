//! The manager's error: every failure a front door can report, with a code that both the CLI
//! (exit status) and the gRPC API (status code) map from in one place.

use apiary_core::elf::ElfError;
use apiary_kernel::KernelError;
use apiary_store::StoreError;

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
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

/// Classes of error, named after the gRPC codes they map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    AlreadyExists,
    Unimplemented,
    PermissionDenied,
    ResourceExhausted,
    Internal,
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
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Internal(_) | Error::Store(_) => ErrorCode::Internal,
            Error::Kernel(k) => match k {
                KernelError::ReadObject { .. }
                | KernelError::NotBpfObject { .. }
                | KernelError::UnknownProgram { .. }
                | KernelError::TypeMismatch { .. }
                | KernelError::UnknownGlobal { .. }
                | KernelError::BadGlobal { .. }
                | KernelError::Verifier { .. }
                | KernelError::UnknownInterface { .. }
                | KernelError::BadNetns { .. }
                | KernelError::TargetNotFound { .. }
                | KernelError::Invalid(_) => ErrorCode::InvalidArgument,
                KernelError::MapReuse { .. }
                | KernelError::HookBusy { .. }
                | KernelError::PinExists { .. } => ErrorCode::FailedPrecondition,
                KernelError::NotSupported { .. } => ErrorCode::Unimplemented,
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
