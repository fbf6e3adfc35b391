//! `apiary csi` (and `apiary agent --csi-endpoint`): the CSI node plugin, driver
//! `csi.apiary.io`, which gives pods the maps of a loaded program in an inline volume.

use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// Flags of the plugin, shared by `apiary csi` and `apiary agent`.
#[derive(Args, Debug, Clone)]
pub struct CsiFlags {
    /// Refuse publishing anywhere but under this directory (the kubelet's pods directory,
    /// /var/lib/kubelet/pods on a standard node).
    #[arg(long, value_name = "DIR")]
    pub kubelet_pods_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CsiArgs {
    /// The unix socket to serve the CSI Identity and Node services on (the global --endpoint
    /// names a daemon to talk to, so this one has its own name).
    #[arg(long, env = "CSI_ENDPOINT", default_value = apiary_csi::DEFAULT_ENDPOINT)]
    pub csi_endpoint: String,
    /// This node's name, the plugin's node id (default: the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    #[command(flatten)]
    pub flags: CsiFlags,
}

/// The plugin's configuration: its volumes live in the state directory's `csi`.
pub fn config(
    endpoint: String,
    node_name: Option<String>,
    flags: CsiFlags,
    state_dir: &Path,
) -> Result<apiary_csi::CsiConfig> {
    let node_id = match node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| anyhow::anyhow!("--node-name not given and no host name: {e}"))?,
    };
    Ok(apiary_csi::CsiConfig {
        endpoint,
        node_id,
        volumes_dir: state_dir.join("csi"),
        pods_dir: flags.kubelet_pods_dir,
    })
}

/// `apiary csi`: programs and maps come from this node's store, read in this process.
pub fn run(a: CsiArgs, state_dir: PathBuf, bpffs: PathBuf) -> Result<()> {
    let cfg = config(a.csi_endpoint, a.node_name, a.flags, &state_dir)?;
    let manager = apiary::Manager::open(apiary::Config {
        state_dir,
        bpffs,
        loader: apiary_kernel::Loader::in_process(),
    })?;
    let api: Arc<dyn apiary::Api> = Arc::new(manager);
    init_logging();
    apiary_csi::run(cfg, api)?;
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
