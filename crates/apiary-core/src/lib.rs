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
pub mod hook;
pub mod ids;
pub mod parse;
pub mod paths;
pub mod program;
pub mod strip;
pub mod types;
pub mod usdt;
pub mod verifier;

pub use attach::{
    AttachSpec, CgroupDirection, NetfilterFamily, NetfilterHook, TcDirection, XdpMode,
};
pub use hook::Hook;
pub use ids::{ChainId, LinkId, MapId, ProgramId};
pub use program::ProgramType;
