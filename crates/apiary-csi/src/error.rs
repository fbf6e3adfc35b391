//! What a CSI call can fail with, and the gRPC code each failure is answered with. The codes
//! are the ones the CSI specification gives each case, because the kubelet acts on them: it
//! retries NOT_FOUND (the program is not loaded on this node yet) and reports the others.

use std::path::PathBuf;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// A required field is missing or a value is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The program, the application or a map is not (yet) on this node.
    #[error("{0}")]
    NotFound(String),
    /// The volume is already published, but differently (another target or other maps).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be served in the node's current state (an ambiguous name).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call is not part of what this plugin serves.
    #[error("{0}")]
    Unimplemented(String),
    /// A system call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The manager failed to answer.
    #[error("apiary: {0}")]
    Manager(#[from] apiary::Error),
    /// The kernel refused a BPF operation.
    #[error("{0}")]
    Kernel(#[from] apiary::kernel::KernelError),
    /// The worker thread that ran the call stopped (it panicked or the runtime is closing).
    #[error("the call's worker stopped: {0}")]
    Worker(String),
}

impl CsiError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> CsiError {
        CsiError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn errno(what: &'static str, path: impl Into<PathBuf>, e: nix::errno::Errno) -> CsiError {
        CsiError::io(what, path, std::io::Error::from_raw_os_error(e as i32))
    }

    pub fn code(&self) -> Code {
        match self {
            CsiError::InvalidArgument(_) => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::Unimplemented(_) => Code::Unimplemented,
            CsiError::Manager(e) => match e.code() {
                apiary::ErrorCode::NotFound => Code::NotFound,
                apiary::ErrorCode::InvalidArgument => Code::InvalidArgument,
                _ => Code::Internal,
            },
            CsiError::Io { .. } | CsiError::Kernel(_) | CsiError::Worker(_) => Code::Internal,
        }
    }
}

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
