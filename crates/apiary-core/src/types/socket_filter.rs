//! Socket filters: run on a socket their own process opens (SO_ATTACH_BPF with the program's
//! fd), so apiary loads them but has no attach for them.

use crate::program::{ProgramType, RunRule, TypeInfo};

pub const INFO: TypeInfo = TypeInfo {
    aliases: &["socket"],
    section_prefixes: &["socket"],
    labels: &["socket_filter", "socket"],
    run: RunRule::Never(
        "a socket filter runs on a socket its own process opens \
         (setsockopt SO_ATTACH_BPF with the program's fd); no apiary command can attach it for that process",
    ),
    requires: "nothing special",
    // BPF_PROG_TYPE_SOCKET_FILTER, no expected attach type
    untyped: Some((1, 0)),
    ..TypeInfo::base(ProgramType::SocketFilter, "socket-filter")
};
