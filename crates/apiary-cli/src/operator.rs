//! `apiary operator`: the cluster-wide operator (leader-elected; several replicas may run).

use anyhow::Result;
use apiary_k8s::operator::OperatorConfig;
use clap::Args;
use std::path::PathBuf;

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
}

pub fn run(a: OperatorArgs) -> Result<()> {
    if let Some(p) = &a.kubeconfig {
        apiary_k8s::install::check_kubeconfig(p)
            .map_err(|e| apiary::Error::InvalidArgument(e.to_string()))?;
    }
    let identity = a.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "apiary".into());
        format!("{host}-{}", std::process::id())
    });
    let cfg = OperatorConfig {
        lease_namespace: a.lease_namespace,
        identity,
        agent_lease_namespace: a.agent_lease_namespace,
    };
    crate::daemon::init_logging("info", apiary_api::server::LogFormat::Text)?;
    apiary_k8s::operator::run_blocking(a.kubeconfig.as_deref(), cfg)?;
    Ok(())
}
