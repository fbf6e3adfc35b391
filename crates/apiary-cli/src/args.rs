//! Command-line grammar. The vocabulary follows bpfman's CLI (`load file --path --programs
//! TYPE:FUNCTION`, `-g`, `-m`, `--map-owner-id`, `attach ID TYPE ...`).

use apiary_core::attach::SoftwareEvent;
use apiary_core::{AttachSpec, CgroupDirection, TcDirection, XdpMode};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "apiary",
    version,
    about = "Manage eBPF programs: load, attach, chain, inspect, unload"
)]
pub struct Cli {
    /// Where the store lives.
    #[arg(
        long,
        global = true,
        env = "APIARY_STATE_DIR",
        default_value = "/var/lib/apiary"
    )]
    pub state_dir: PathBuf,
    /// apiary's directory on a bpf filesystem, where programs, maps and links are pinned.
    #[arg(
        long,
        global = true,
        env = "APIARY_BPFFS",
        default_value = "/sys/fs/bpf/apiary"
    )]
    pub bpffs: PathBuf,
    /// Output format: table, json or yaml. For `package`, the file to write.
    #[arg(short = 'o', long = "output", global = true, default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub remote: crate::daemon::ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Output::Table),
            "json" => Ok(Output::Json),
            "yaml" => Ok(Output::Yaml),
            other => Err(format!(
                "invalid output format {other:?}: expected table, json or yaml"
            )),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Api(ApiCommand),
    /// Make the kernel match the store: restore programs, links and chains the store records but
    /// the kernel lost (after a reboot, or pins removed behind apiary's back), and remove pins in
    /// apiary's directory that no record explains. The daemon does this when it starts.
    Reconcile,
    /// Run the daemon: serve these operations over gRPC on a unix socket (and optionally TCP
    /// with mutual TLS), with Prometheus metrics; clients use `--endpoint`.
    Serve(crate::daemon::ServeArgs),
    /// Bytecode images: build, push, pull, inspect, list, remove, sign, verify.
    Image {
        #[command(subcommand)]
        what: crate::image::ImageCmd,
    },
    /// Show what an object holds: programs, maps, globals with types and defaults, licence, BTF.
    Inspect {
        /// An object file, an apiary package, or an http(s) URL of either.
        source: String,
    },
    /// Load an object in the foreground, attach every program from its section name, print the
    /// events its ring buffers and perf event arrays deliver, and unload it all on exit.
    Run(RunArgs),
    /// Write a single-file package (object + metadata) that `apiary run` accepts.
    Package {
        /// The BPF object file.
        object: PathBuf,
    },
}

/// The commands that work on apiary's state, in-process or through a daemon (`--endpoint`).
// Parsed once per process; boxing the large variants would only complicate the grammar.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// Load programs into the kernel (and optionally attach in the same step).
    #[command(subcommand)]
    Load(LoadCmd),
    /// Attach a loaded program to a hook; one program may have many links.
    Attach {
        program_id: apiary_core::ProgramId,
        #[command(subcommand)]
        target: AttachCmd,
    },
    /// Remove one link.
    Detach { link_id: apiary_core::LinkId },
    /// Unload programs; programs borrowing another's maps go first.
    Unload {
        #[arg(required = true)]
        program_ids: Vec<apiary_core::ProgramId>,
        /// Detach the programs' links first instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// List programs, links or maps.
    List {
        #[command(subcommand)]
        what: ListCmd,
    },
    /// Show one program or link in detail.
    Get {
        #[command(subcommand)]
        what: GetCmd,
    },
    /// Read maps.
    Map {
        #[command(subcommand)]
        what: MapCmd,
    },
    /// Replace a program's code, keeping its maps and attach points (hot update).
    Update {
        program_id: apiary_core::ProgramId,
        /// The new object.
        #[arg(short, long)]
        path: PathBuf,
        /// The program in the new object (default: the same name).
        #[arg(long)]
        program: Option<String>,
        #[arg(short = 'g', long = "global", value_parser = parse_hex)]
        globals: Vec<(String, Vec<u8>)>,
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An object file, an apiary package (.json), or an http(s) URL of either.
    pub source: String,
    #[arg(short = 'g', long = "global", value_parser = parse_hex)]
    pub globals: Vec<(String, Vec<u8>)>,
    /// Set a global by value: NAME=VALUE (see `apiary inspect`).
    #[arg(long = "set", value_parser = parse_kv)]
    pub set: Vec<(String, String)>,
    /// Stop after this long (e.g. 10s, 1m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Decode events as this struct (from the object's BTF, or its DWARF for a struct only a
    /// local variable uses); MAP=TYPE[,MAP=TYPE...] for one type per map.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Print this map every --interval (repeatable).
    #[arg(long = "dump-map")]
    pub dump_maps: Vec<String>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: std::time::Duration,
    /// Interface for XDP/TC programs.
    #[arg(long)]
    pub iface: Option<String>,
    #[arg(long)]
    pub netns: Option<String>,
    /// cgroup v2 directory for cgroup programs.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Load and attach only these programs (comma list of function names); default: all.
    #[arg(long, value_delimiter = ',')]
    pub programs: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum LoadCmd {
    /// Load from a local object file.
    File(LoadFile),
    /// Load from a bytecode image in a registry (bpfman's format), checking its signature.
    Image(LoadImage),
}

#[derive(Args, Debug)]
pub struct LoadImage {
    /// REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST.
    #[arg(short = 'i', long)]
    pub image_url: String,
    /// Always, IfNotPresent or Never.
    #[arg(long, default_value = "IfNotPresent", value_parser = crate::image::parse_pull_policy)]
    pub pull_policy: apiary::oci::PullPolicy,
    #[command(flatten)]
    pub opts: LoadOptions,
    #[command(flatten)]
    pub registry: crate::image::RegistryArgs,
    /// Attach right away; if the attach fails the load is undone.
    #[command(subcommand)]
    pub attach: Option<AttachCmd>,
}

#[derive(Args, Debug)]
pub struct LoadFile {
    /// The BPF object file (ELF, compiled with clang -target bpf).
    #[arg(short, long)]
    pub path: PathBuf,
    #[command(flatten)]
    pub opts: LoadOptions,
    /// Attach right away; if the attach fails the load is undone.
    #[command(subcommand)]
    pub attach: Option<AttachCmd>,
}

/// What every load takes, whatever the object's source.
#[derive(Args, Debug)]
pub struct LoadOptions {
    /// TYPE:FUNCTION of each program to load; may repeat. Default: the object's only program,
    /// or the programs an image's label lists.
    #[arg(long = "programs", value_delimiter = ',', value_parser = parse_selector)]
    pub programs: Vec<(apiary_core::ProgramType, String)>,
    /// Set a global's raw bytes: NAME=HEX (bpfman compatible).
    #[arg(short = 'g', long = "global", value_parser = parse_hex)]
    pub globals: Vec<(String, Vec<u8>)>,
    /// Set a global by value, checked against its BTF type: NAME=VALUE.
    #[arg(long = "set", value_parser = parse_kv)]
    pub set: Vec<(String, String)>,
    /// Metadata to record with the programs: KEY=VALUE.
    #[arg(short = 'm', long = "metadata", value_parser = parse_kv)]
    pub metadata: Vec<(String, String)>,
    /// Reuse the maps of this program (by name) instead of creating new ones.
    #[arg(long)]
    pub map_owner_id: Option<apiary_core::ProgramId>,
}

impl LoadOptions {
    pub fn into_spec(
        self,
        source: apiary::ObjectSource,
        attach: Option<AttachCmd>,
    ) -> apiary::LoadSpec {
        apiary::LoadSpec {
            source,
            programs: self
                .programs
                .into_iter()
                .map(|(t, n)| (Some(t), n))
                .collect(),
            raw_globals: self.globals,
            typed_globals: self.set,
            metadata: self.metadata.into_iter().collect(),
            map_owner_id: self.map_owner_id,
            attach: attach.map(|a| a.into_spec()),
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum AttachCmd {
    /// A tracepoint, CATEGORY/NAME.
    Tracepoint {
        #[arg(long)]
        tracepoint: String,
    },
    /// A raw tracepoint by name.
    RawTracepoint {
        #[arg(long)]
        tracepoint: String,
    },
    /// A BTF tracepoint; the target comes from the program's section.
    TpBtf,
    /// A BPF iterator (target from the section, `iter/task`): the link is pinned; reading the
    /// pin (`cat`, shown by `get link`) runs it.
    Iter,
    /// Socket lookups of a network namespace (sk_lookup).
    SkLookup {
        /// A network namespace: a name from `ip netns` or a path.
        #[arg(long)]
        netns: String,
    },
    /// XDP on an interface, in its chain of programs (run in priority order).
    Xdp {
        #[arg(long)]
        iface: String,
        /// Network namespace: a name from `ip netns` or a path.
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
        mode: ModeArg,
        /// 1 (runs first) to 1000 (runs last); ties run in attach order.
        #[arg(long, default_value_t = 1000)]
        priority: u32,
        /// Verdicts after which the chain goes on: aborted, drop, pass, tx, redirect,
        /// dispatcher_return (default pass,dispatcher_return).
        #[arg(long, value_delimiter = ',')]
        proceed_on: Vec<String>,
    },
    /// TC on an interface and direction, in its chain of programs (a dispatcher on a TCX link).
    Tc {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum)]
        direction: DirArg,
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, default_value_t = 1000)]
        priority: u32,
        /// TC actions after which the chain goes on: unspec, ok, reclassify, shot, pipe, stolen,
        /// queued, repeat, redirect, trap, dispatcher_return (default ok,pipe,dispatcher_return).
        #[arg(long, value_delimiter = ',')]
        proceed_on: Vec<String>,
        /// A single cls_bpf filter on the clsact qdisc instead of a chain (kernels without TCX).
        #[arg(long)]
        legacy: bool,
    },
    /// TCX link, ordered by priority (lower runs first).
    Tcx {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum)]
        direction: DirArg,
        #[arg(long, default_value_t = 1000)]
        priority: u32,
        #[arg(long)]
        netns: Option<String>,
    },
    /// A user-space function: path or library name (libc), and symbol and/or offset.
    Uprobe {
        #[arg(long)]
        target: String,
        #[arg(long)]
        fn_name: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        retprobe: bool,
        /// Only this process.
        #[arg(long)]
        pid: Option<i32>,
    },
    /// A kernel function.
    Kprobe {
        #[arg(long)]
        fn_name: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        retprobe: bool,
    },
    /// cgroup v2 ingress or egress packets.
    CgroupSkb {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long, value_enum, default_value_t = DirArg::Ingress)]
        direction: DirArg,
    },
    /// Socket creation in a cgroup v2.
    CgroupSock {
        #[arg(long)]
        cgroup: PathBuf,
    },
    /// A socket-address hook (connect4/6, bind4/6, sendmsg4/6, recvmsg4/6) of a cgroup v2.
    CgroupSockAddr {
        #[arg(long)]
        cgroup: PathBuf,
        /// Default: the hook the program's section names (cgroup/connect4).
        #[arg(long)]
        hook: Option<apiary_core::program::CgroupHook>,
    },
    /// getsockopt/setsockopt calls in a cgroup v2.
    CgroupSockopt {
        #[arg(long)]
        cgroup: PathBuf,
        /// Default: the hook the program's section names (cgroup/getsockopt).
        #[arg(long)]
        hook: Option<apiary_core::program::CgroupHook>,
    },
    /// sysctl reads and writes (/proc/sys) in a cgroup v2.
    CgroupSysctl {
        #[arg(long)]
        cgroup: PathBuf,
    },
    /// A netfilter hook (Linux 6.4), in a network namespace.
    Netfilter {
        /// prerouting, input, forward, output or postrouting.
        #[arg(long)]
        hook: apiary_core::NetfilterHook,
        #[arg(long, default_value = "ipv4")]
        family: apiary_core::NetfilterFamily,
        /// Lower runs first, among netfilter's own hooks (conntrack -200, filter 0).
        #[arg(long, allow_hyphen_values = true)]
        priority: i32,
        /// A network namespace: a name from `ip netns` or a path.
        #[arg(long)]
        netns: Option<String>,
        /// Defragment IP packets before the program sees them.
        #[arg(long)]
        defrag: bool,
    },
    /// A software perf event sampled on every CPU.
    PerfEvent {
        #[arg(long, value_enum, default_value_t = EventArg::CpuClock)]
        event: EventArg,
        /// Samples per second per CPU.
        #[arg(long, default_value_t = 99)]
        frequency: u64,
        #[arg(long)]
        cpu: Option<u32>,
    },
    /// fentry (target from the section).
    Fentry,
    /// fexit (target from the section).
    Fexit,
    /// BPF LSM (hook from the section).
    Lsm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Auto,
    Drv,
    Skb,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DirArg {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EventArg {
    CpuClock,
    TaskClock,
}

#[derive(Subcommand, Debug)]
pub enum ListCmd {
    Programs {
        /// Also show programs apiary does not manage.
        #[arg(long)]
        all: bool,
        /// Only programs with this metadata: KEY=VALUE.
        #[arg(short = 'm', long = "metadata", value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
    },
    Links {
        /// Only this program's links.
        #[arg(long)]
        program: Option<apiary_core::ProgramId>,
    },
    Maps {
        #[arg(long)]
        all: bool,
    },
    /// Every XDP and TC chain, with its programs in run order.
    Chains,
}

#[derive(Subcommand, Debug)]
pub enum GetCmd {
    Program {
        id: apiary_core::ProgramId,
    },
    Link {
        id: apiary_core::LinkId,
    },
    /// One chain: order, priorities, proceed-on sets and per-program counters.
    Chain {
        iface: String,
        /// xdp, tc (ingress), tc-ingress or tc-egress.
        hook: String,
        #[arg(long)]
        netns: Option<String>,
    },
}

/// `get chain IFACE HOOK`.
pub fn hook_ref(
    iface: String,
    hook: &str,
    netns: Option<String>,
) -> Result<apiary::chain::HookRef, String> {
    use apiary_core::chain::ChainKind;
    let (kind, direction) = match hook {
        "xdp" => (ChainKind::Xdp, None),
        "tc" | "tc-ingress" | "ingress" => (ChainKind::Tc, Some(TcDirection::Ingress)),
        "tc-egress" | "egress" => (ChainKind::Tc, Some(TcDirection::Egress)),
        other => {
            return Err(format!(
                "unknown hook {other:?}: expected xdp, tc-ingress or tc-egress"
            ))
        }
    };
    Ok(apiary::chain::HookRef {
        kind,
        iface,
        netns: netns_path(netns),
        direction,
    })
}

#[derive(Subcommand, Debug)]
pub enum MapCmd {
    /// Print a map's entries, decoded with its BTF types when present.
    Dump {
        /// A kernel MAP_ID or PROGRAM_ID:MAP_NAME.
        map: apiary::MapRef,
        /// At most this many entries.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
}

fn parse_selector(s: &str) -> Result<(apiary_core::ProgramType, String), String> {
    apiary_core::parse::parse_program_selector(s)
}

fn parse_hex(s: &str) -> Result<(String, Vec<u8>), String> {
    apiary_core::parse::parse_hex_global(s)
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    apiary_core::parse::parse_kv(s)
}

/// `--netns NAME` means `ip netns`'s /var/run/netns/NAME; anything with a slash is a path.
pub fn netns_path(n: Option<String>) -> Option<PathBuf> {
    n.map(|n| {
        if n.contains('/') {
            PathBuf::from(n)
        } else {
            PathBuf::from("/var/run/netns").join(n)
        }
    })
}

fn dir(d: DirArg) -> TcDirection {
    match d {
        DirArg::Ingress => TcDirection::Ingress,
        DirArg::Egress => TcDirection::Egress,
    }
}

impl AttachCmd {
    pub fn into_spec(self) -> AttachSpec {
        match self {
            AttachCmd::Tracepoint { tracepoint } => AttachSpec::Tracepoint { tracepoint },
            AttachCmd::RawTracepoint { tracepoint } => AttachSpec::RawTracepoint { tracepoint },
            AttachCmd::TpBtf => AttachSpec::TpBtf,
            AttachCmd::Iter => AttachSpec::Iter,
            AttachCmd::SkLookup { netns } => AttachSpec::SkLookup {
                netns: netns_path(Some(netns)).unwrap_or_default(),
            },
            AttachCmd::Xdp {
                iface,
                netns,
                mode,
                priority,
                proceed_on,
            } => AttachSpec::Xdp {
                iface,
                netns: netns_path(netns),
                mode: match mode {
                    ModeArg::Auto => XdpMode::Auto,
                    ModeArg::Drv => XdpMode::Drv,
                    ModeArg::Skb => XdpMode::Skb,
                },
                priority,
                proceed_on,
            },
            AttachCmd::Tc {
                iface,
                direction,
                netns,
                priority,
                proceed_on,
                legacy,
            } => AttachSpec::Tc {
                iface,
                netns: netns_path(netns),
                direction: dir(direction),
                priority,
                proceed_on,
                legacy,
            },
            AttachCmd::Tcx {
                iface,
                direction,
                priority,
                netns,
            } => AttachSpec::Tcx {
                iface,
                netns: netns_path(netns),
                direction: dir(direction),
                priority,
            },
            AttachCmd::Uprobe {
                target,
                fn_name,
                offset,
                retprobe,
                pid,
            } => AttachSpec::Uprobe {
                target,
                fn_name,
                offset,
                retprobe,
                pid,
            },
            AttachCmd::Kprobe {
                fn_name,
                offset,
                retprobe,
            } => AttachSpec::Kprobe {
                fn_name,
                offset,
                retprobe,
            },
            AttachCmd::CgroupSkb { cgroup, direction } => AttachSpec::CgroupSkb {
                cgroup,
                direction: match direction {
                    DirArg::Ingress => CgroupDirection::Ingress,
                    DirArg::Egress => CgroupDirection::Egress,
                },
            },
            AttachCmd::CgroupSock { cgroup } => AttachSpec::CgroupSock { cgroup },
            AttachCmd::CgroupSockAddr { cgroup, hook } => {
                AttachSpec::CgroupSockAddr { cgroup, hook }
            }
            AttachCmd::CgroupSockopt { cgroup, hook } => AttachSpec::CgroupSockopt { cgroup, hook },
            AttachCmd::CgroupSysctl { cgroup } => AttachSpec::CgroupSysctl { cgroup },
            AttachCmd::Netfilter {
                hook,
                family,
                priority,
                netns,
                defrag,
            } => AttachSpec::Netfilter {
                hook,
                family,
                priority,
                netns: netns_path(netns),
                defrag,
            },
            AttachCmd::PerfEvent {
                event,
                frequency,
                cpu,
            } => AttachSpec::PerfEvent {
                event: match event {
                    EventArg::CpuClock => SoftwareEvent::CpuClock,
                    EventArg::TaskClock => SoftwareEvent::TaskClock,
                },
                frequency,
                cpu,
            },
            AttachCmd::Fentry => AttachSpec::Fentry,
            AttachCmd::Fexit => AttachSpec::Fexit,
            AttachCmd::Lsm => AttachSpec::Lsm,
        }
    }
}
