//! apiary-kernel: the only crate that talks to the kernel. libbpf-rs/libbpf-sys for loading,
//! raw BPF syscalls for everything done on objects another process loaded (attach by fd,
//! pinning, info), netns switching, and one file per hook under `attach/`. `worker` runs
//! loads in a separate process for the daemon.

pub mod attach;
pub mod bpffs;
pub mod core_cache;
pub mod dispatcher;
pub mod error;
pub mod loader;
mod logcap;
pub mod maps;
pub mod netns;
pub mod session;
pub mod sys;
pub mod worker;

pub use attach::{attach, AttachContext, Attachment, TcFilter, TcxAnchor};
pub use error::{KernelError, Result};
pub use loader::{load, GlobalPatch, LoadRequest, LoadedObject, ProgramSelect};
pub use worker::{Loader, WorkerCommand};

pub use bpffs::{ensure_mounted, is_bpffs, PinSet};
