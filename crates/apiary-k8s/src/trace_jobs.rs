//! The client side of trace jobs, for a program without an async runtime (the CLI): create a
//! TraceJob, find the nodes it selects and their agents' addresses, watch its per-node status,
//! stop and delete it. Each call makes its own small runtime, as `install_blocking` does.

use crate::crd::{NodeTraceStatus, TraceJob, TraceJobSpec};
use crate::error::{request, KubeError};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The annotation on a Node where its agent publishes the address of its TLS listener
/// (`https://HOST:PORT`).
pub const ENDPOINT_ANNOTATION: &str = "apiary.io/agent-endpoint";

/// A node a job selects, and where its agent listens (None: the agent published nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobNode {
    pub name: String,
    pub endpoint: Option<String>,
}

/// A cluster connection with a runtime to drive it.
pub struct Jobs {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Jobs {
    pub fn connect(kubeconfig: Option<&Path>) -> Result<Jobs, KubeError> {
        let rt = crate::install::runtime()?;
        let client = rt.block_on(crate::install::client(kubeconfig))?;
        Ok(Jobs { rt, client })
    }

    fn api(&self) -> Api<TraceJob> {
        Api::all(self.client.clone())
    }

    /// Create a job named `name`.
    pub fn create(&self, name: &str, spec: TraceJobSpec) -> Result<TraceJob, KubeError> {
        let job = TraceJob::new(name, spec);
        self.rt
            .block_on(self.api().create(&PostParams::default(), &job))
            .map_err(request(format!("creating trace job {name}")))
    }

    pub fn get(&self, name: &str) -> Result<Option<TraceJob>, KubeError> {
        self.rt
            .block_on(self.api().get_opt(name))
            .map_err(request(format!("reading trace job {name}")))
    }

    pub fn list(&self) -> Result<Vec<TraceJob>, KubeError> {
        self.rt
            .block_on(self.api().list(&ListParams::default()))
            .map(|l| l.items)
            .map_err(request("listing trace jobs"))
    }

    /// Ask every node to stop the job (their agents interrupt bpftrace, so maps print).
    pub fn stop(&self, name: &str) -> Result<(), KubeError> {
        let patch = serde_json::json!({ "spec": { "stop": true } });
        self.rt
            .block_on(
                self.api()
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .map(|_| ())
            .map_err(request(format!("stopping trace job {name}")))
    }

    /// Delete the job; the agents stop it and remove its kept output.
    pub fn delete(&self, name: &str) -> Result<bool, KubeError> {
        match self
            .rt
            .block_on(self.api().delete(name, &DeleteParams::default()))
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(request(format!("deleting trace job {name}"))(e)),
        }
    }

    /// The nodes `spec` selects, now, with their agents' addresses.
    pub fn nodes(&self, spec: &TraceJobSpec) -> Result<Vec<JobNode>, KubeError> {
        let nodes = self
            .rt
            .block_on(Api::<Node>::all(self.client.clone()).list(&ListParams::default()))
            .map_err(request("listing nodes"))?;
        Ok(nodes
            .items
            .iter()
            .filter(|n| spec.selects(&n.name_any(), n.labels()))
            .map(|n| JobNode {
                name: n.name_any(),
                endpoint: n.annotations().get(ENDPOINT_ANNOTATION).cloned(),
            })
            .collect())
    }

    /// The job's per-node status now (empty when it is gone).
    /// Record `nodes` as Pending in the job's status (server-side apply under the client's own
    /// field manager): each node's agent takes its entry over when it starts the job, so what
    /// `trace get` shows for a node whose agent never does is that it is waiting. A node whose
    /// agent was quicker keeps its entry (the apply conflicts, and is made again without it).
    pub fn mark_pending(&self, name: &str, nodes: &[String]) -> Result<(), KubeError> {
        for _ in 0..3 {
            let status = self.status(name)?;
            let entries: serde_json::Map<String, serde_json::Value> = nodes
                .iter()
                .filter(|n| !status.contains_key(*n))
                .map(|n| {
                    (
                        n.clone(),
                        serde_json::json!({ "phase": crate::crd::phase::PENDING }),
                    )
                })
                .collect();
            if entries.is_empty() {
                return Ok(());
            }
            let body = serde_json::json!({
                "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
                "kind": "TraceJob",
                "metadata": { "name": name },
                "status": { "nodes": entries },
            });
            let params = PatchParams::apply("apiary-trace-client");
            match self
                .rt
                .block_on(self.api().patch_status(name, &params, &Patch::Apply(&body)))
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(request(format!("recording trace job {name} as pending"))(e)),
            }
        }
        Ok(())
    }

    pub fn status(&self, name: &str) -> Result<BTreeMap<String, NodeTraceStatus>, KubeError> {
        Ok(self
            .get(name)?
            .and_then(|j| j.status)
            .map(|s| s.nodes)
            .unwrap_or_default())
    }
}

/// Publish `endpoint` in this node's annotation, for clients to find its agent.
pub async fn publish_endpoint(
    client: &Client,
    node: &str,
    endpoint: &str,
) -> Result<(), KubeError> {
    let patch = serde_json::json!({
        "metadata": { "annotations": { ENDPOINT_ANNOTATION: endpoint } }
    });
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(request(format!(
            "annotating node {node} with its agent's address"
        )))
}

/// The address clients reach an agent listening on `listen` at: that address, or, when it
/// listens on every address, the node's InternalIP.
pub async fn agent_endpoint(
    client: &Client,
    node: &str,
    listen: std::net::SocketAddr,
) -> Result<String, KubeError> {
    if !listen.ip().is_unspecified() {
        return Ok(format!("https://{listen}"));
    }
    let n = Api::<Node>::all(client.clone())
        .get(node)
        .await
        .map_err(request(format!("reading node {node}")))?;
    let ip = n
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .ok_or_else(|| KubeError::Start {
            what: format!("node {node} has no InternalIP to publish its agent's address with"),
        })?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Ok(format!("https://{host}:{}", listen.port()))
}

/// Where a kubeconfig path given on the command line or in $KUBECONFIG is.
pub fn kubeconfig(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
}

/// `key=value[,key=value...]` (kubectl's -l, equality only) as a selector.
pub fn selector(
    s: &str,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector, String> {
    let mut labels = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("-l {s}: expected key=value[,key=value...]"))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        },
    )
}

/// A job's name.
pub fn name_of(j: &TraceJob) -> String {
    j.name_any()
}
