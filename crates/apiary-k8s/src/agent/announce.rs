//! The agent announces itself with a coordination.k8s.io Lease per node, `apiary-agent-NODE`
//! (as the kubelet does with its node Lease): renewed every `RENEW`, valid for `DURATION`. The
//! operator watches these Leases, so a selected node whose agent never started, or died, is
//! reported by name instead of holding its applications in Pending.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use std::time::Duration;

/// Where the agents' Leases live unless configured: the namespace Kubernetes keeps node
/// heartbeats in, present in every cluster.
pub const DEFAULT_NAMESPACE: &str = "kube-node-lease";
/// Label of an agent's Lease naming its node (the operator watches Leases by it).
pub const NODE_LABEL: &str = "apiary.io/agent-node";
/// How long a renewal is worth: three missed renewals and the node counts as without agent.
pub const DURATION: Duration = Duration::from_secs(30);
const RENEW: Duration = Duration::from_secs(10);
/// After a failed renewal (apiserver away, namespace missing), try again sooner.
const RETRY: Duration = Duration::from_secs(2);

/// The Lease of `node`'s agent.
pub fn lease_name(node: &str) -> String {
    format!("apiary-agent-{node}")
}

/// Renew this node's Lease forever.
pub async fn renew(client: Client, namespace: String, node: String) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let name = lease_name(&node);
    let params = PatchParams::apply(&format!("apiary-agent-{node}")).force();
    loop {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": name, "labels": { NODE_LABEL: node } },
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": DURATION.as_secs(),
                "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
            },
        });
        let next = match api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => RENEW,
            Err(e) => {
                tracing::warn!(lease = %name, namespace = %namespace, error = %e, "cannot renew the agent's Lease");
                RETRY
            }
        };
        tokio::time::sleep(next).await;
    }
}
