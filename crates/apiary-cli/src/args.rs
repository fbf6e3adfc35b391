//! Command-line grammar. The vocabulary follows bpfman's CLI (`load file --path --programs
//! TYPE:FUNCTION`, `-g`, `-m`, `--map-owner-id`, `attach ID TYPE ...`).

use apiary_core::{AttachSpec, TcDirection};
use clap::{Args, Parser, Subcommand};
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

// Every subcommand enum is `defer`red: clap builds a subcommand's arguments only when it is the
// one invoked (building the whole tree took 0.6 ms of every command). Deferred, the doc comment
// of an `Args` struct or subcommand enum would replace the about of the subcommand that holds it,
// so those types carry plain `//` comments (tests/docs.rs compares the help).
#[derive(Subcommand, Debug)]
#[command(defer = true)]
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
    /// Run the Kubernetes node agent: load the applications whose nodeSelector matches this
    /// node, report per-node state objects, and serve the local socket like `apiary serve`.
    Agent(crate::agent::AgentArgs),
    /// Run the CSI node plugin (driver csi.apiary.io): pods get the maps of a loaded program in
    /// an inline volume, on a bpf filesystem of its own owned by their fsGroup.
    Csi(crate::csi::CsiArgs),
    /// Run the Kubernetes operator: one replica at a time (a Lease elects it) writes each
    /// application's status over all nodes, owns its finalizer, and cleans up after deleted nodes.
    Operator(crate::operator::OperatorArgs),
    /// Kubernetes: a staged rollout of an application's new bytecode or global data.
    Rollout {
        #[command(subcommand)]
        what: crate::rollout::RolloutCmd,
    },
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
    /// Trace: run a bpftrace script or an object and stream its output (here, or through a
    /// daemon with --endpoint).
    Trace {
        #[command(subcommand)]
        what: crate::trace::TraceCmd,
    },
    /// Kubernetes: the CRDs (see also `apply`, `delete`, `get applications`).
    K8s {
        #[command(subcommand)]
        what: crate::k8s::K8sCmd,
    },
    /// Write a single-file package (object + metadata) that `apiary run` accepts.
    Package {
        /// The BPF object file.
        object: PathBuf,
    },
    /// Compile a BPF C source into NAME.bpf.o and NAME.package.json (in the directory -o names,
    /// default the current one): clang for BPF, with a vmlinux.h from the kernel's BTF and
    /// libbpf's headers, so no Makefile is needed. An event struct in NAME.bpf.h or NAME.h next
    /// to the source is the package's event type.
    Build {
        /// The source (NAME.bpf.c).
        source: PathBuf,
        #[command(flatten)]
        flags: CompileFlags,
    },
    /// Print a shell completion script (bash, zsh or fish).
    Completions { shell: clap_complete::Shell },
    /// Man pages: apiary(1) on stdout, or with -o DIR every page (apiary-SUBCOMMAND.1 too)
    /// written into DIR.
    Man,
}

// How `build` (and `run` of a .c source) compiles.
#[derive(Args, Debug, Clone, Default)]
pub struct CompileFlags {
    /// An include directory, searched first (repeatable).
    #[arg(short = 'I', value_name = "DIR")]
    pub includes: Vec<PathBuf>,
    /// A preprocessor define: NAME or NAME=VALUE (repeatable).
    #[arg(short = 'D', value_name = "NAME[=VALUE]")]
    pub defines: Vec<String>,
    /// Generate vmlinux.h from this BTF file instead of the running kernel's.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
}

/// The commands that work on apiary's state, in-process or through a daemon (`--endpoint`).
// Parsed once per process; boxing the large variants would only complicate the grammar.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ApiCommand {
    /// Load programs into the kernel (and optionally attach in the same step).
    #[command(subcommand)]
    Load(LoadCmd),
    /// Attach a loaded program to a hook; one program may have many links.
    Attach {
        program_id: apiary_core::ProgramId,
        #[command(subcommand)]
        target: AttachSpec,
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
    /// Apply BpfApplication / ClusterBpfApplication objects (apiary.io or bpfman.io) to this host.
    Apply(crate::k8s::ApplyArgs),
    /// Unload everything the applications in the files applied.
    Delete(crate::k8s::FileArgs),
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
    /// An object file, an apiary package (.json), an http(s) URL of either, or a BPF C source
    /// (NAME.bpf.c, built first as `apiary build` does).
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
    /// A network namespace: a name from `ip netns` or a path.
    #[arg(long, value_parser = apiary_core::attach::parse_netns)]
    pub netns: Option<PathBuf>,
    /// cgroup v2 directory for cgroup programs.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Load and attach only these programs (comma list of function names); default: all.
    #[arg(long, value_delimiter = ',')]
    pub programs: Vec<String>,
    /// For a .c source: how it is compiled (it is built into the cache directory first).
    #[command(flatten)]
    pub compile: CompileFlags,
    /// Serve the declared map metrics and the run's own counters at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Metric declarations (YAML) to use instead of the package's / NAME.metrics.yaml.
    #[arg(long, value_name = "FILE")]
    pub metrics_config: Option<PathBuf>,
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

// OTLP/HTTP export (`run` and `serve`).
#[derive(Args, Debug, Clone)]
pub struct OtlpArgs {
    /// Push metrics (and for `run`, events as log records) to this OTLP/HTTP collector, e.g.
    /// http://127.0.0.1:4318 (protobuf to URL/v1/metrics and URL/v1/logs).
    #[arg(long, value_name = "URL", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub otlp_interval: std::time::Duration,
}

impl OtlpArgs {
    pub fn config(&self, service: &str) -> Option<apiary::metrics::otlp::OtlpConfig> {
        self.otlp_endpoint
            .as_ref()
            .map(|e| apiary::metrics::otlp::OtlpConfig {
                endpoint: e.clone(),
                interval: self.otlp_interval,
                service: service.to_string(),
            })
    }
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
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
    pub attach: Option<AttachSpec>,
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
    pub attach: Option<AttachSpec>,
}

// What every load takes, whatever the object's source.
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
    /// Metric declarations (YAML) recorded with the programs: the daemon's /metrics exports
    /// the maps they name.
    #[arg(long, value_name = "FILE", value_parser = parse_metrics_config)]
    pub metrics_config: Option<String>,
    /// Reuse the maps of this program (by name) instead of creating new ones.
    #[arg(long)]
    pub map_owner_id: Option<apiary_core::ProgramId>,
}

impl LoadOptions {
    pub fn into_spec(
        self,
        source: apiary::ObjectSource,
        attach: Option<AttachSpec>,
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
            metadata: self
                .metadata
                .into_iter()
                .chain(
                    self.metrics_config
                        .map(|d| (apiary::metrics::METADATA_KEY.to_string(), d)),
                )
                .collect(),
            map_owner_id: self.map_owner_id,
            attach,
        }
    }
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
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
#[command(defer = true)]
pub enum GetCmd {
    /// The applications `apply` applied, with their programs.
    Applications,
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
        /// A network namespace: a name from `ip netns` or a path.
        #[arg(long, value_parser = apiary_core::attach::parse_netns)]
        netns: Option<PathBuf>,
    },
}

/// `get chain IFACE HOOK`.
pub fn hook_ref(
    iface: String,
    hook: &str,
    netns: Option<PathBuf>,
) -> Result<apiary_core::Hook, String> {
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
    Ok(apiary_core::Hook {
        kind,
        iface,
        netns,
        direction,
        mode: apiary_core::XdpMode::Auto,
    })
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
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

/// `--metrics-config FILE` of a load: checked here, recorded as JSON.
fn parse_metrics_config(path: &str) -> Result<String, String> {
    apiary::metrics::Decls::read(std::path::Path::new(path))
        .map(|d| d.to_json())
        .map_err(|e| e.to_string())
}

/// An OTLP/HTTP base URL: http(s), without the signal path that is appended per request.
pub fn parse_otlp_endpoint(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("an http:// or https:// URL, e.g. http://127.0.0.1:4318")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host".into());
    }
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/v1/metrics") || trimmed.ends_with("/v1/logs") {
        return Err("give the base URL: /v1/metrics and /v1/logs are appended".into());
    }
    Ok(url.to_string())
}
