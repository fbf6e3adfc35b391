//! The node agent: watches its Node and both application kinds, and on any change runs one
//! pass over every application, converging this node with the executor and reporting each
//! application's state in a `<app>-<node>` state object.
//!
//! Watches feed caches (reflectors); a change only wakes the pass loop, which reads the
//! caches. Passes never overlap, and changes during a pass wake one more. When the apiserver
//! is unreachable the caches keep their last content, so nothing is unloaded for lack of news;
//! the watchers reconnect with backoff and the next pass catches up.

mod pass;
mod state;

use crate::crd::{
    BpfApplication, BpfApplicationState, ClusterBpfApplication, ClusterBpfApplicationState,
};
use crate::error::KubeError;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often every application is checked even without news (a pass changes nothing when the
/// node already matches).
const RESYNC: Duration = Duration::from_secs(60);
/// The first retry after a failed pass; doubled while passes keep failing.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// How often the node's interfaces are listed, for interface discovery and the primary
/// interface.
const INTERFACE_POLL: Duration = Duration::from_secs(1);

/// What the agent is given.
pub struct AgentConfig {
    pub node_name: String,
    /// The network namespace holding the node's interfaces (None: this process's own).
    pub netns: Option<PathBuf>,
}

/// The finalizer this node's agent puts on the applications it loaded, so that deleting one
/// waits until the node unloaded it.
pub fn finalizer(node: &str) -> String {
    format!("apiary.io/node-{node}")
}

/// The state object of an application on a node.
pub fn state_name(app: &str, node: &str) -> String {
    format!("{app}-{node}")
}

/// Label of state objects naming their application.
pub const APP_LABEL: &str = "apiary.io/application";
/// Label of state objects naming their node.
pub const NODE_LABEL: &str = "apiary.io/node";

/// The caches the watches keep.
#[derive(Clone)]
pub(crate) struct Caches {
    pub node: Store<Node>,
    pub cluster_apps: Store<ClusterBpfApplication>,
    pub apps: Store<BpfApplication>,
    /// Every node's state objects, for the applications' summary ("2/2 nodes").
    pub cluster_states: Store<ClusterBpfApplicationState>,
    pub states: Store<BpfApplicationState>,
}

/// Run the agent until the future is dropped. `api` is the manager of this node (shared with
/// the local gRPC socket).
pub async fn run(
    client: Client,
    api: Arc<dyn apiary::Api>,
    cfg: AgentConfig,
) -> Result<(), KubeError> {
    let wake = Arc::new(Notify::new());
    let node_filter =
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let caches = Caches {
        node: watch(Api::<Node>::all(client.clone()), node_filter, &wake),
        cluster_apps: watch(
            Api::<ClusterBpfApplication>::all(client.clone()),
            watcher::Config::default(),
            &wake,
        ),
        apps: watch(
            Api::<BpfApplication>::all(client.clone()),
            watcher::Config::default(),
            &wake,
        ),
        cluster_states: watch(
            Api::<ClusterBpfApplicationState>::all(client.clone()),
            watcher::Config::default(),
            &wake,
        ),
        states: watch(
            Api::<BpfApplicationState>::all(client.clone()),
            watcher::Config::default(),
            &wake,
        ),
    };
    // Nothing is decided before every cache holds a complete list: an application missing
    // from a half-filled cache would look deleted and be unloaded.
    for ready in [
        caches.node.wait_until_ready().await.is_ok(),
        caches.cluster_apps.wait_until_ready().await.is_ok(),
        caches.apps.wait_until_ready().await.is_ok(),
        caches.cluster_states.wait_until_ready().await.is_ok(),
        caches.states.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return Err(KubeError::Start {
                what: "a watch ended before its first list".into(),
            });
        }
    }
    tracing::info!(node = %cfg.node_name, "watching the node and applications");

    let agent = Arc::new(pass::Agent::new(client, api, cfg, caches));
    tokio::spawn(resync(wake.clone()));
    let (a, w) = (agent.clone(), wake.clone());
    std::thread::Builder::new()
        .name("apiary-ifpoll".into())
        .spawn(move || poll_interfaces(a, w))
        .map_err(|e| KubeError::Start {
            what: format!("cannot start the interface poll: {e}"),
        })?;
    let mut retry = RETRY_FIRST;
    loop {
        if agent.pass().await {
            retry = RETRY_FIRST;
        } else {
            // Something failed (a conflict, an unreachable apiserver, a kernel refusal): try
            // again soon rather than at the next resync, backing off while it keeps failing.
            let w = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(retry).await;
                w.notify_one();
            });
            retry = (retry * 2).min(RESYNC);
        }
        wake.notified().await;
    }
}

/// Keep a cache of `api`'s objects up to date, waking the pass loop on every change.
fn watch<K>(api: Api<K>, config: watcher::Config, wake: &Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let wake = wake.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                // The watcher retries with backoff; the cache keeps its content meanwhile.
                Err(e) => tracing::warn!(error = %e, "watch interrupted; retrying"),
            }
        }
    });
    reader
}

async fn resync(wake: Arc<Notify>) {
    let mut tick = tokio::time::interval(RESYNC);
    tick.tick().await;
    loop {
        tick.tick().await;
        wake.notify_one();
    }
}

/// Wake a pass when the node's interfaces (or which one holds its address) differ from those
/// the last pass planned with. Compared with the pass's view, not the previous poll's, so an
/// interface that came and went between two polls (seen by a pass meanwhile) is not missed.
/// A plain thread: listing them enters the node's netns, and the poll must not wait behind
/// the runtime's blocking pool, which the passes and the gRPC requests use.
fn poll_interfaces(agent: Arc<pass::Agent>, wake: Arc<Notify>) {
    loop {
        let now = agent.interfaces();
        if agent.planned_with().is_some_and(|seen| seen != now) {
            tracing::info!(interfaces = ?now.0, "the node's interfaces changed");
            wake.notify_one();
        }
        std::thread::sleep(INTERFACE_POLL);
    }
}
