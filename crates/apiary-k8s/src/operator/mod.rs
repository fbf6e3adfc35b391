//! The operator: one active replica (leader election through a Lease) aggregates the per-node
//! state objects into each application's status, owns the application's finalizer, and cleans
//! up after nodes that are gone, so deleting an application never hangs.
//!
//! It watches only what it needs, each into an in-memory cache (reflector):
//! both application kinds, both state kinds (by the `apiary.io/application` label), Nodes as
//! metadata only (names and labels), and the agents' Leases (by the `apiary.io/agent-node`
//! label, in one namespace). Any change wakes one pass, after a short debounce that gathers a
//! burst; a pass recomputes every application's status in memory and writes only those that
//! differ. The only timer is the next expiry of an agent's Lease. Nothing is listed on a
//! schedule.
//!
//! # The API calls it makes (the operator's ClusterRole must grant exactly these)
//!
//! | group / resource | verbs | why |
//! |---|---|---|
//! | apiary.io `clusterbpfapplications` | list, watch, patch | cache; finalizer (apply, merge) |
//! | apiary.io `bpfapplications` (all namespaces) | list, watch, patch | cache; finalizer |
//! | apiary.io `clusterbpfapplications/status` | patch | the summary (apply) |
//! | apiary.io `bpfapplications/status` | patch | the summary (apply) |
//! | apiary.io `clusterbpfapplicationstates` | list, watch, delete | cache; states of gone nodes |
//! | apiary.io `bpfapplicationstates` (all namespaces) | list, watch, delete | same |
//! | core `nodes` | list, watch (metadata only) | which nodes exist, their labels |
//! | coordination.k8s.io `leases`, agents' namespace | list, watch | which nodes run an agent |
//! | coordination.k8s.io `leases`, own namespace, name `apiary-operator` | get, create, update | leader election |
//!
//! (`create` on leases cannot be limited by name in RBAC; `get`/`update` can.)

pub mod control;
mod elect;
pub mod rollout;
pub mod summary;
mod write;

pub use elect::{DURATION as LEADER_LEASE_DURATION, LEASE_NAME};

use crate::agent::announce;
use crate::agent::APP_LABEL;
use crate::crd::ApplicationSpec;
use crate::crd::{
    ApplicationStateStatus, ApplicationStatus, BpfApplication, BpfApplicationState,
    ClusterBpfApplication, ClusterBpfApplicationState,
};
use crate::document::{AppKey, AppKind};
use crate::error::KubeError;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The finalizer the operator keeps on every application until its state objects are gone.
pub const FINALIZER: &str = "apiary.io/operator";
/// The field manager of the operator's writes.
pub const FIELD_MANAGER: &str = "apiary-operator";
/// After a change, wait this long for the rest of a burst before a pass.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The first retry after a failed pass; doubled while passes keep failing.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the operator is given.
pub struct OperatorConfig {
    /// The namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// This replica's name in the Lease (unique per replica).
    pub identity: String,
    /// The namespace of the agents' Leases.
    pub agent_lease_namespace: String,
}

struct Caches {
    cluster_apps: Store<ClusterBpfApplication>,
    apps: Store<BpfApplication>,
    cluster_states: Store<ClusterBpfApplicationState>,
    states: Store<BpfApplicationState>,
    nodes: Store<PartialObjectMeta<Node>>,
    agents: Store<Lease>,
}

/// What the operator's caches hold, read for the cluster view (`apiary operator --web`). Every
/// replica has one, the leader or not: the view needs no extra API calls.
#[derive(Clone)]
pub struct ClusterReader {
    caches: Arc<Caches>,
}

impl ClusterReader {
    /// Applications × nodes as the caches hold them now.
    pub fn view(&self) -> crate::view::ClusterView {
        let c = &self.caches;
        let apps: Vec<crate::view::AppInput> = c
            .applications()
            .into_iter()
            .map(|a| crate::view::AppInput {
                kind: a.key.kind.name(),
                namespace: a.key.namespace,
                name: a.key.name,
                selector: a.spec.node_selector,
                status: a.status.and_then(|s| serde_json::to_value(s).ok()),
            })
            .collect();
        let states: Vec<crate::view::StateInput> = c
            .states()
            .into_iter()
            .map(|s| crate::view::StateInput {
                namespace: s.app.namespace,
                application: s.app.name,
                node: s.node,
                status: s.status,
            })
            .collect();
        let (live, _) = c.agents();
        let nodes: Vec<crate::view::NodeInput> = c
            .nodes
            .state()
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                crate::view::NodeInput {
                    agent: Some(live.contains(&name)),
                    labels: n.metadata.labels.clone().unwrap_or_default(),
                    name,
                }
            })
            .collect();
        crate::view::cluster_view(&apps, &states, &nodes)
    }
}

/// Run the operator until the future is dropped.
pub async fn run(client: Client, cfg: OperatorConfig) -> Result<(), KubeError> {
    run_with(client, cfg, |_| {}).await
}

/// [`run`], handing `on_ready` a reader of the caches once they are filled (from within the
/// runtime, so it may spawn tasks).
pub async fn run_with(
    client: Client,
    cfg: OperatorConfig,
    on_ready: impl FnOnce(ClusterReader),
) -> Result<(), KubeError> {
    let wake = Arc::new(Notify::new());
    let (leader_tx, leader) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let elector = tokio::spawn(elect::run(
        client.clone(),
        cfg.lease_namespace.clone(),
        cfg.identity.clone(),
        leader_tx,
        wake.clone(),
        stop,
    ));
    let by_app = || watcher::Config::default().labels(APP_LABEL);
    let caches = Arc::new(Caches {
        cluster_apps: crate::cache::cache(
            Api::all(client.clone()),
            watcher::Config::default(),
            &wake,
            "clusterbpfapplications",
        ),
        apps: crate::cache::cache(
            Api::all(client.clone()),
            watcher::Config::default(),
            &wake,
            "bpfapplications",
        ),
        cluster_states: crate::cache::cache(
            Api::all(client.clone()),
            by_app(),
            &wake,
            "clusterbpfapplicationstates",
        ),
        states: crate::cache::cache(
            Api::all(client.clone()),
            by_app(),
            &wake,
            "bpfapplicationstates",
        ),
        nodes: crate::cache::cache(
            Api::all(client.clone()),
            watcher::Config::default(),
            &wake,
            "nodes",
        ),
        agents: crate::cache::cache(
            Api::namespaced(client.clone(), &cfg.agent_lease_namespace),
            watcher::Config::default().labels(announce::NODE_LABEL),
            &wake,
            "agent leases",
        ),
    });
    // A half-filled cache would make present nodes look deleted and their states removed.
    for ready in [
        caches.cluster_apps.wait_until_ready().await.is_ok(),
        caches.apps.wait_until_ready().await.is_ok(),
        caches.cluster_states.wait_until_ready().await.is_ok(),
        caches.states.wait_until_ready().await.is_ok(),
        caches.nodes.wait_until_ready().await.is_ok(),
        caches.agents.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return Err(KubeError::Start {
                what: "a watch ended before its first list".into(),
            });
        }
    }
    on_ready(ClusterReader {
        caches: caches.clone(),
    });
    tracing::info!(identity = %cfg.identity, "operator caches filled; waiting for the Lease");
    tokio::select! {
        never = passes(&client, &caches, &wake, &leader) => match never {},
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            // The elector releases the Lease if it holds it; no pass runs meanwhile.
            let _ = stop_tx.send(true);
            let _ = elector.await;
            Ok(())
        }
    }
}

/// SIGTERM (a pod's deletion) or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        // Without signal handlers the process ends the default way.
        _ => std::future::pending().await,
    }
}

/// Passes for as long as the process runs: after a change (debounced), when an agent's Lease
/// runs out, and on retry after a failed write; only while this replica leads.
async fn passes(
    client: &Client,
    caches: &Caches,
    wake: &Arc<Notify>,
    leader: &watch::Receiver<bool>,
) -> std::convert::Infallible {
    let mut retry = RETRY_FIRST;
    let mut next_expiry: Option<Duration> = None;
    loop {
        match next_expiry {
            // An agent's Lease runs out then: its nodes change to "no apiary agent".
            Some(d) => {
                let _ = tokio::time::timeout(d, wake.notified()).await;
            }
            None => wake.notified().await,
        }
        tokio::time::sleep(DEBOUNCE).await;
        if !*leader.borrow() {
            next_expiry = None;
            continue;
        }
        let (clean, expiry) = pass(client, caches).await;
        next_expiry = expiry;
        if clean {
            retry = RETRY_FIRST;
        } else {
            let w = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(retry).await;
                w.notify_one();
            });
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

/// `run_with` for a program without an async runtime of its own (the CLI).
pub fn run_blocking(
    kubeconfig: Option<&std::path::Path>,
    cfg: OperatorConfig,
    on_ready: impl FnOnce(ClusterReader),
) -> Result<(), KubeError> {
    crate::install::blocking(kubeconfig, |client| run_with(client, cfg, on_ready))
}

/// An application as a pass sees it, whichever its kind.
struct App {
    key: AppKey,
    meta: ObjectMeta,
    spec: ApplicationSpec,
    status: Option<ApplicationStatus>,
}

/// A state object as a pass sees it.
struct State {
    app: AppKey,
    name: String,
    node: String,
    status: Option<ApplicationStateStatus>,
}

fn app_key(kind: AppKind, meta: &ObjectMeta) -> AppKey {
    AppKey {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

impl Caches {
    fn applications(&self) -> Vec<App> {
        let mut out: Vec<App> = Vec::new();
        for a in self.cluster_apps.state() {
            out.push(App {
                key: app_key(AppKind::ClusterBpfApplication, &a.metadata),
                meta: a.metadata.clone(),
                spec: a.spec.app.clone(),
                status: a.status.clone(),
            });
        }
        for a in self.apps.state() {
            out.push(App {
                key: app_key(AppKind::BpfApplication, &a.metadata),
                meta: a.metadata.clone(),
                spec: a.spec.app.clone(),
                status: a.status.clone(),
            });
        }
        out
    }

    fn states(&self) -> Vec<State> {
        let mut out: Vec<State> = Vec::new();
        for s in self.cluster_states.state() {
            out.push(State {
                app: AppKey {
                    kind: AppKind::ClusterBpfApplication,
                    namespace: None,
                    name: s.spec.application.clone(),
                },
                name: s.metadata.name.clone().unwrap_or_default(),
                node: s.spec.node.clone(),
                status: s.status.clone(),
            });
        }
        for s in self.states.state() {
            out.push(State {
                app: AppKey {
                    kind: AppKind::BpfApplication,
                    namespace: s.metadata.namespace.clone(),
                    name: s.spec.application.clone(),
                },
                name: s.metadata.name.clone().unwrap_or_default(),
                node: s.spec.node.clone(),
                status: s.status.clone(),
            });
        }
        out
    }

    /// Nodes whose agent's Lease is live, and how long until the first of them runs out.
    fn agents(&self) -> (BTreeSet<String>, Option<Duration>) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut live = BTreeSet::new();
        let mut next: Option<Duration> = None;
        for l in self.agents.state() {
            let Some(spec) = &l.spec else { continue };
            let node = l
                .metadata
                .labels
                .as_ref()
                .and_then(|m| m.get(announce::NODE_LABEL))
                .cloned()
                .unwrap_or_default();
            let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
                continue;
            };
            let left = (renew.0.as_millisecond() + i64::from(secs) * 1000) - now.as_millisecond();
            if left > 0 {
                live.insert(node);
                let d = Duration::from_millis(left as u64 + 100);
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        (live, next)
    }
}

/// One pass over every application. Returns whether every write went through, and when to
/// look again without news (an agent's Lease expiring, a rollout's gate window or pause ending).
async fn pass(client: &Client, caches: &Caches) -> (bool, Option<Duration>) {
    let nodes_meta = caches.nodes.state();
    let labels_of: Vec<(String, BTreeMap<String, String>)> = nodes_meta
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                n.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect();
    let existing: BTreeSet<&str> = labels_of.iter().map(|(n, _)| n.as_str()).collect();
    let (agents, expiry) = caches.agents();
    let mut states_by_app: BTreeMap<String, Vec<State>> = BTreeMap::new();
    for s in caches.states() {
        states_by_app.entry(s.app.to_string()).or_default().push(s);
    }
    let mut clean = true;
    let mut next = expiry;
    for app in caches.applications() {
        let states = states_by_app
            .remove(&app.key.to_string())
            .unwrap_or_default();
        match one(client, &app, &states, &labels_of, &existing, &agents).await {
            Ok(Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(application = %app.key, error = %e, "not reconciled; retrying");
                clean = false;
            }
        }
    }
    // State objects whose application is gone (its finalizer stripped by hand, or deleted
    // while no operator ran) and whose node is gone too: no agent will ever remove them.
    for states in states_by_app.values() {
        for s in states
            .iter()
            .filter(|s| !existing.contains(s.node.as_str()))
        {
            if let Err(e) = write::delete_state(client, &s.app, &s.name).await {
                tracing::warn!(error = %e, "cannot delete an orphaned state object");
                clean = false;
            }
        }
    }
    (clean, next)
}

async fn one(
    client: &Client,
    app: &App,
    states: &[State],
    nodes: &[(String, BTreeMap<String, String>)],
    existing: &BTreeSet<&str>,
    agents: &BTreeSet<String>,
) -> Result<Option<Duration>, KubeError> {
    let deleting = app.meta.deletion_timestamp.is_some();
    let finalizers = app.meta.finalizers.clone().unwrap_or_default();
    // A node's leftovers are cleaned when the node is gone, and, while the application is
    // deleted, when no agent runs there either (one that comes back unloads what it holds
    // for applications that no longer exist).
    let abandoned = |node: &str| !existing.contains(node) || (deleting && !agents.contains(node));
    let mut live_states: Vec<&State> = Vec::new();
    for s in states {
        if abandoned(&s.node) {
            tracing::info!(application = %app.key, node = %s.node, "removing the state object of a node that is gone");
            write::delete_state(client, &app.key, &s.name).await?;
        } else {
            live_states.push(s);
        }
    }
    let keep: Vec<String> = finalizers
        .iter()
        .filter(|f| {
            f.strip_prefix("apiary.io/node-")
                .is_none_or(|node| !abandoned(node))
        })
        .cloned()
        .collect();
    if keep.len() != finalizers.len() {
        tracing::info!(application = %app.key, dropped = ?finalizers.iter().filter(|f| !keep.contains(f)).collect::<Vec<_>>(), "dropping finalizers of nodes that are gone");
        let rv = app.meta.resource_version.clone().unwrap_or_default();
        write::keep_finalizers(client, &app.key, &keep, &rv).await?;
    }
    if deleting {
        if live_states.is_empty() {
            if finalizers.iter().any(|f| f == FINALIZER) {
                write::own_finalizer(client, &app.key, false).await?;
            }
            return Ok(None);
        }
    } else if !finalizers.iter().any(|f| f == FINALIZER) {
        write::own_finalizer(client, &app.key, true).await?;
    }

    let node_views: Vec<summary::NodeView> = nodes
        .iter()
        .map(|(name, labels)| summary::NodeView { name, labels })
        .collect();
    let state_views: Vec<summary::StateView> = live_states
        .iter()
        .map(|s| summary::StateView {
            node: &s.node,
            load: s
                .status
                .as_ref()
                .map(|st| st.app_load_status)
                .unwrap_or_default(),
            condition: s
                .status
                .as_ref()
                .and_then(|st| st.conditions.first())
                .map(|c| (c.type_.as_str(), c.message.as_str())),
        })
        .collect();
    let mut want = summary::summarize(&summary::Input {
        selector: &app.spec.node_selector,
        deleting,
        generation: app.meta.generation,
        nodes: &node_views,
        agents,
        states: &state_views,
    });
    let current = app.status.clone().unwrap_or_default();
    let mut next = None;
    if !deleting {
        // The rollout moves on the selected nodes that run an agent.
        let mut live: Vec<&str> = nodes
            .iter()
            .filter(|(n, labels)| {
                agents.contains(n)
                    && crate::facts::selector_matches(&app.spec.node_selector, labels)
            })
            .map(|(n, _)| n.as_str())
            .collect();
        live.sort();
        let reports: BTreeMap<&str, rollout::Report> = live_states
            .iter()
            .map(|s| (s.node.as_str(), report(s.status.as_ref())))
            .collect();
        let (ro, when) = rollout::step(
            &app.spec,
            current.rollout.as_ref(),
            &live,
            &reports,
            k8s_openapi::jiff::Timestamp::now(),
        );
        want.rollout = ro;
        next = when;
    }
    // The condition keeps its time while its type stays the same.
    let kept = current
        .conditions
        .first()
        .filter(|c| want.conditions.first().is_some_and(|w| w.type_ == c.type_))
        .map(|c| c.last_transition_time.clone());
    for c in &mut want.conditions {
        c.last_transition_time = kept
            .clone()
            .unwrap_or(Time(k8s_openapi::jiff::Timestamp::now()));
    }
    if want != current {
        write::status(client, &app.key, &want).await?;
        let c = want.conditions.first();
        tracing::info!(
            application = %app.key,
            ready = want.ready.as_deref().unwrap_or(""),
            condition = c.map(|c| c.type_.as_str()).unwrap_or(""),
            message = c.map(|c| c.message.as_str()).unwrap_or(""),
            "status written"
        );
        if want.rollout != current.rollout {
            if let Some(ro) = &want.rollout {
                tracing::info!(application = %app.key, phase = ?ro.phase, message = ro.message.as_deref().unwrap_or(""), "rollout");
            }
        }
    }
    Ok(next)
}

/// A node's report for the rollout, from its state object.
fn report(s: Option<&ApplicationStateStatus>) -> rollout::Report {
    let Some(s) = s else {
        return rollout::Report::default();
    };
    let c = s.conditions.first();
    rollout::Report {
        revision: s.revision.clone(),
        ok: c.is_some_and(|c| c.type_ == "Success"),
        error: c.filter(|c| c.type_ == "Error").map(|c| c.message.clone()),
        run_count: s.run_count,
        gate_value: s.gate_value,
        observed_at: s.observed_at.as_ref().map(|t| t.0),
    }
}
