//! One pass of the agent over every application: converge the node, write the state objects,
//! keep the finalizers right, and unload what belongs to applications that no longer exist.

// The executor returns the manager's error unboxed (as the CLI expects); it only passes
// through the closures here.
#![allow(clippy::result_large_err)]

use super::state::{self, AppRef};
use super::{AgentConfig, Caches};
use crate::crd::{ApplicationSpec, ApplicationStateStatus};
use crate::document::{AppKey, AppKind};
use crate::{execute, facts, plan, validate};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub(crate) struct Agent {
    client: Client,
    api: Arc<dyn apiary::Api>,
    cfg: AgentConfig,
    caches: Caches,
    /// The last status written per state object (its key), so an unchanged one is not
    /// written again each pass.
    written: Mutex<BTreeMap<String, ApplicationStateStatus>>,
    /// The interfaces (and primary one) the last pass planned with.
    seen: Mutex<Option<Interfaces>>,
}

/// The node's interfaces and its primary interface.
pub(crate) type Interfaces = (Option<Vec<String>>, Option<String>);

/// An application as the pass sees it, whichever its kind.
struct App {
    r: AppRef,
    spec: ApplicationSpec,
    deleting: bool,
}

impl Agent {
    pub fn new(
        client: Client,
        api: Arc<dyn apiary::Api>,
        cfg: AgentConfig,
        caches: Caches,
    ) -> Agent {
        Agent {
            client,
            api,
            cfg,
            caches,
            written: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(None),
        }
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.caches.node.get(&ObjectRef::new(&self.cfg.node_name))
    }

    /// The Node's InternalIP: the primary interface is the one holding it.
    fn internal_ip(node: &Node) -> Option<IpAddr> {
        node.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse().ok())
    }

    /// The interfaces the last pass planned with (None before the first).
    pub fn planned_with(&self) -> Option<Interfaces> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }

    /// The network namespace holding the node's interfaces (None: this process's own).
    pub fn netns(&self) -> Option<&std::path::Path> {
        self.cfg.netns.as_deref()
    }

    /// The node's interfaces and primary interface now (blocking: it enters the netns).
    pub fn interfaces(&self) -> Interfaces {
        let ip = self.node().and_then(|n| Self::internal_ip(&n));
        facts::interfaces_snapshot(self.cfg.netns.as_deref(), ip)
    }

    fn applications(&self) -> Vec<App> {
        let mut out = Vec::new();
        for a in self.caches.cluster_apps.state() {
            out.push(App {
                r: AppRef::of(&*a, AppKind::ClusterBpfApplication),
                spec: a.spec.app.clone(),
                deleting: a.metadata.deletion_timestamp.is_some(),
            });
        }
        for a in self.caches.apps.state() {
            out.push(App {
                r: AppRef::of(&*a, AppKind::BpfApplication),
                spec: a.spec.app.clone(),
                deleting: a.metadata.deletion_timestamp.is_some(),
            });
        }
        out.sort_by(|a, b| a.r.key.cmp(&b.r.key));
        out
    }

    /// One pass over every application. Failures are logged per application; the pass goes
    /// on with the others. Returns whether everything went through (else the caller retries
    /// soon).
    pub async fn pass(&self) -> bool {
        let Some(node) = self.node() else {
            // Without its Node the agent cannot tell which applications select it; it
            // changes nothing rather than unload everything.
            tracing::warn!(node = %self.cfg.node_name, "no Node object of this name; waiting for it");
            return true;
        };
        let name = self.cfg.node_name.clone();
        let labels: BTreeMap<String, String> = node.labels().clone();
        let ip = Self::internal_ip(&node);
        let netns = self.cfg.netns.clone();
        let facts = match tokio::task::spawn_blocking(move || {
            facts::node(&name, labels, netns.as_deref(), ip)
        })
        .await
        {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the node's interfaces");
                return false;
            }
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((facts.root.interfaces.clone(), facts.root.primary.clone()));
        }
        let facts = Arc::new(facts);
        let apps = self.applications();
        let mut clean = true;
        for app in &apps {
            if let Err(e) = self.one(app, &facts).await {
                tracing::warn!(application = %app.r.key, error = %e, "not converged; retrying");
                clean = false;
            }
        }
        self.unload_orphans(&apps).await;
        clean
    }

    async fn one(&self, app: &App, facts: &Arc<facts::NodeFacts>) -> Result<(), crate::KubeError> {
        let node = &self.cfg.node_name;
        let selected =
            !app.deleting && facts::selector_matches(&app.spec.node_selector, &facts.labels);
        if !selected {
            let key = app.r.key.clone();
            let api = self.api.clone();
            let changes = blocking(move || execute::delete(api.as_ref(), &key)).await?;
            if changes.unloaded > 0 {
                tracing::info!(application = %app.r.key, unloaded = changes.unloaded, "unloaded (not selected or being deleted)");
            }
            state::delete(&self.client, &app.r, node).await?;
            self.written
                .lock()
                .map(|mut w| w.remove(&app.r.state_key(node)))
                .ok();
            state::remove_finalizer(&self.client, &app.r, node).await?;
            return Ok(());
        }
        state::ensure_finalizer(&self.client, &app.r, node).await?;
        let problems = validate::problems(&app.spec);
        let status = if problems.is_empty() {
            let plan = plan::plan(&app.spec, facts);
            let key = app.r.key.clone();
            let api = self.api.clone();
            let report = blocking(move || execute::apply(api.as_ref(), &key, &plan)).await;
            match report {
                Ok(r) => {
                    if !r.changes.is_empty() {
                        tracing::info!(application = %app.r.key, changes = ?r.changes, "converged");
                    }
                    state::with_condition(r.state)
                }
                Err(e) => state::failed(e.to_string()),
            }
        } else {
            state::failed(format!("invalid application: {}", problems.join("; ")))
        };
        let state_key = app.r.state_key(node);
        let unchanged = self
            .written
            .lock()
            .ok()
            .and_then(|w| w.get(&state_key).map(|s| state::same(s, &status)))
            .unwrap_or(false);
        if !unchanged {
            let count = state::write(&self.client, &app.r, node, status.clone()).await?;
            if let Ok(mut w) = self.written.lock() {
                w.insert(
                    state_key,
                    ApplicationStateStatus {
                        update_count: count,
                        ..status
                    },
                );
            }
        }
        Ok(())
    }

    /// Programs of applications that no longer exist (deleted while the agent was down, or
    /// with the finalizer removed by hand) are unloaded.
    async fn unload_orphans(&self, apps: &[App]) {
        let known: BTreeSet<String> = apps.iter().map(|a| a.r.key.to_string()).collect();
        let api = self.api.clone();
        let held = match tokio::task::spawn_blocking(move || {
            execute::applications(api.as_ref()).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the applications held");
                return;
            }
        };
        for key in held.keys().filter(|k| !known.contains(*k)) {
            let Ok(key) = key.parse::<AppKey>() else {
                continue;
            };
            let api = self.api.clone();
            let k = key.clone();
            match blocking(move || execute::delete(api.as_ref(), &k)).await {
                Ok(c) => {
                    tracing::info!(application = %key, unloaded = c.unloaded, "unloaded: the application no longer exists")
                }
                Err(e) => tracing::warn!(application = %key, error = %e, "cannot unload"),
            }
            let r = AppRef::gone(key);
            if let Err(e) = state::delete(&self.client, &r, &self.cfg.node_name).await {
                tracing::warn!(error = %e, "cannot delete a state object");
            }
        }
    }
}

/// Run a manager call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::ApplyError> + Send + 'static,
) -> Result<T, crate::KubeError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| crate::KubeError::Apply {
            what: e.to_string(),
        }),
        Err(e) => Err(crate::KubeError::Apply {
            what: format!("the manager call did not finish: {e}"),
        }),
    }
}
