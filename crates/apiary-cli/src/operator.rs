//! `apiary operator`: the cluster-wide operator (leader-elected; several replicas may run), and
//! with `--web` the cluster view drawn from its caches.

use crate::daemon::WebArgs;
use anyhow::Result;
use apiary_api::server::web::{self, Answer, Site};
use apiary_k8s::operator::{ClusterReader, OperatorConfig};
use clap::Args;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// The kubeconfig to use (default: the pod's service account, in a cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the leader-election Lease `apiary-operator`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's name in the Lease (default: HOSTNAME-PID).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The namespace of the agents' Leases (as given to `apiary agent --lease-namespace`).
    #[arg(long, default_value = apiary_k8s::agent::announce::DEFAULT_NAMESPACE)]
    pub agent_lease_namespace: String,
    /// The cluster view (applications × nodes) on --web ADDR.
    #[command(flatten)]
    pub web: WebArgs,
}

/// The cluster view: its page, and `/api/cluster` from the operator's caches.
struct ClusterSite(ClusterReader);

impl Site for ClusterSite {
    fn answer(self: Arc<Self>, path: String) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(async move {
            if path == "/api/cluster" {
                return Answer::json("200 OK", &self.0.view());
            }
            web::cluster_asset(&path).unwrap_or_else(|| Answer::text("404 Not Found", "see /"))
        })
    }
}

pub fn run(a: OperatorArgs) -> Result<()> {
    crate::k8s::check_kubeconfig(a.kubeconfig.as_deref())?;
    let identity = a.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "apiary".into());
        format!("{host}-{}", std::process::id())
    });
    // The view's address and credentials fail the start, before anything talks to the cluster.
    let web = a
        .web
        .flags()
        .config()?
        .map(|cfg| web::bind(&cfg).map(|bound| (cfg.addr, bound)))
        .transpose()?;
    let cfg = OperatorConfig {
        lease_namespace: a.lease_namespace,
        identity,
        agent_lease_namespace: a.agent_lease_namespace,
    };
    crate::daemon::init_logging("info", apiary_api::server::LogFormat::Text)?;
    let serve_view = move |reader: ClusterReader| {
        let Some((addr, (listener, access))) = web else {
            return;
        };
        match web::spawn_forever(listener, Arc::new(ClusterSite(reader)), access) {
            Ok(()) => eprintln!("serving the cluster view on {addr}"),
            Err(e) => eprintln!("error: cannot serve the cluster view on {addr}: {e}"),
        }
    };
    apiary_k8s::operator::run_blocking(a.kubeconfig.as_deref(), cfg, serve_view)?;
    Ok(())
}
