//! apiary-core: the pure part of apiary. Identifiers, program and attach specs, validation,
//! BTF and ELF reading, paths derived from a root. No I/O and no libbpf here, so almost all of
//! the rules can be unit-tested without root.

pub mod attach;
pub mod btf;
pub mod chain;
pub mod dwarf;
pub mod elf;
pub mod events;
pub mod globals;
pub mod ids;
pub mod parse;
pub mod paths;
pub mod program;
pub mod types;

pub use attach::{
    AttachSpec, CgroupDirection, NetfilterFamily, NetfilterHook, TcDirection, XdpMode,
};
pub use ids::{LinkId, ProgramId};
pub use program::ProgramType;
