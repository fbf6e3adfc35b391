//! `apiary agent`: the Kubernetes node agent, run inside the daemon so the node keeps its local
//! gRPC socket (`apiary --endpoint` works on the node while the agent manages it).

use anyhow::Result;
use apiary_k8s::agent::AgentConfig;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// This node's name: its Node object, the state objects' and the finalizer's suffix.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The kubeconfig to use (default: the pod's service account, in a cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The network namespace holding the node's interfaces (an `ip netns` name or a path);
    /// default: this process's own, as on a real node.
    #[arg(long)]
    pub netns: Option<String>,
    /// The namespace of the Lease this agent renews so the operator knows it runs.
    #[arg(long, default_value = apiary_k8s::agent::announce::DEFAULT_NAMESPACE)]
    pub lease_namespace: String,
    #[command(flatten)]
    pub serve: crate::daemon::ServeArgs,
    /// Also serve the CSI node plugin (driver csi.apiary.io) on this unix socket, e.g.
    /// unix:///var/lib/kubelet/plugins/csi.apiary.io/csi.sock.
    #[arg(long, value_name = "ENDPOINT")]
    pub csi_endpoint: Option<String>,
    #[command(flatten)]
    pub csi: crate::csi::CsiFlags,
}

pub fn run(a: AgentArgs, state_dir: PathBuf, bpffs: PathBuf) -> Result<()> {
    let netns = a
        .netns
        .as_deref()
        .map(apiary_core::attach::parse_netns)
        .transpose()
        .map_err(|e| apiary::Error::InvalidArgument(format!("--netns: {e}")))?;
    if let Some(p) = &netns {
        if !p.exists() {
            return Err(apiary::Error::InvalidArgument(format!(
                "--netns: {} does not exist",
                p.display()
            ))
            .into());
        }
    }
    let csi = a
        .csi_endpoint
        .map(|e| crate::csi::config(e, Some(a.node_name.clone()), a.csi, &state_dir))
        .transpose()?;
    let cfg = AgentConfig {
        node_name: a.node_name,
        netns,
        lease_namespace: a.lease_namespace,
    };
    let kubeconfig = a.kubeconfig;
    // Trace jobs: their output is kept under the state directory; the TLS listener's address
    // is published for their clients.
    let (trace_dir, listen) = (state_dir.clone(), a.serve.listen);
    // A wrong kubeconfig is refused before the daemon starts (and makes its socket).
    crate::k8s::check_kubeconfig(kubeconfig.as_deref())?;
    crate::daemon::serve_with(a.serve, state_dir, bpffs, move |manager| async move {
        let api: std::sync::Arc<dyn apiary::Api> = manager.clone();
        // The CSI plugin reads the same manager; without it pods would wait forever.
        if let Some(csi) = csi {
            apiary_csi::spawn(csi, api.clone(), |e| {
                eprintln!("error: the CSI plugin stopped: {e}");
                std::process::exit(1);
            });
        }
        let result = async {
            let client = apiary_k8s::install::client(kubeconfig.as_deref()).await?;
            let (c, node) = (client.clone(), cfg.node_name.clone());
            let agent = apiary_k8s::agent::run(client, api, cfg);
            apiary_k8s::agent::trace::beside(agent, c, node, trace_dir, listen, manager).await
        }
        .await;
        // The agent is the point of this process: without it, exit rather than serve on
        // looking healthy. Loaded programs stay (they are pinned); a restart adopts them.
        if let Err(e) = result {
            eprintln!("error: the agent stopped: {e}");
            std::process::exit(1);
        }
    })
}
