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
    /// Whether an application's rollout gate is watching this node: the loop then reports
    /// fresh readings every `READINGS`.
    readings_due: std::sync::atomic::AtomicBool,
}

/// The node's interfaces and its primary interface.
pub(crate) type Interfaces = (Option<Vec<String>>, Option<String>);

/// An application as the pass sees it, whichever its kind.
struct App {
    r: AppRef,
    /// The spec this node runs: with a rollout, the revision the operator allows it.
    spec: ApplicationSpec,
    deleting: bool,
    /// With a rollout: the revision `spec` is, and whether the gate wants readings.
    rollout: Option<NodeRollout>,
}

struct NodeRollout {
    revision: String,
    readings: bool,
    gate: Option<crate::crd::rollout::MapGate>,
}

/// The spec of an application on `node`, and its rollout part.
fn for_node(
    spec: &ApplicationSpec,
    status: Option<&crate::crd::ApplicationStatus>,
    node: &str,
) -> (ApplicationSpec, Option<NodeRollout>) {
    use crate::crd::rollout::{self, RolloutPhase};
    let Some(rs) = &spec.rollout else {
        return (spec.clone(), None);
    };
    let ro = status.and_then(|s| s.rollout.as_ref());
    let (effective, revision) = rollout::spec_for_node(spec, ro, node);
    // Readings while this node is on the target inside a running rollout and its gate has
    // not decided yet.
    let readings = ro.is_some_and(|ro| {
        matches!(ro.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
            && ro.nodes.get(node).is_some_and(|n| {
                n.revision == ro.target_revision
                    && !n
                        .gate
                        .as_deref()
                        .is_some_and(|g| g.starts_with("Passed") || g.starts_with("Failed"))
            })
    });
    let gate = rs
        .health_gate
        .as_ref()
        .and_then(|g| g.max_map_value.clone());
    (
        effective,
        Some(NodeRollout {
            revision,
            readings,
            gate,
        }),
    )
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
            readings_due: std::sync::atomic::AtomicBool::new(false),
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

    /// Whether the last pass found a rollout gate watching this node.
    pub fn readings_due(&self) -> bool {
        self.readings_due.load(std::sync::atomic::Ordering::Relaxed)
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
        let node = &self.cfg.node_name;
        for a in self.caches.cluster_apps.state() {
            let (spec, rollout) = for_node(&a.spec.app, a.status.as_ref(), node);
            out.push(App {
                r: AppRef::of(&*a, AppKind::ClusterBpfApplication),
                spec,
                deleting: a.metadata.deletion_timestamp.is_some(),
                rollout,
            });
        }
        for a in self.caches.apps.state() {
            let (spec, rollout) = for_node(&a.spec.app, a.status.as_ref(), node);
            out.push(App {
                r: AppRef::of(&*a, AppKind::BpfApplication),
                spec,
                deleting: a.metadata.deletion_timestamp.is_some(),
                rollout,
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
        self.readings_due.store(
            apps.iter()
                .any(|a| a.rollout.as_ref().is_some_and(|r| r.readings)),
            std::sync::atomic::Ordering::Relaxed,
        );
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
            let hot = app.rollout.is_some();
            let gate = app
                .rollout
                .as_ref()
                .filter(|r| r.readings)
                .map(|r| r.gate.clone());
            let report = blocking(move || {
                // With a rollout, a new revision is switched in place (maps and links kept).
                let switched = if hot {
                    super::rollout::switch(api.as_ref(), &key, &plan)?
                } else {
                    super::rollout::Switched::default()
                };
                let mut r = execute::apply_with(api.as_ref(), &key, &plan, &switched.keep)?;
                for p in &mut r.state.programs {
                    if let Some(why) = switched.failed.get(&p.name) {
                        p.program_link_status = crate::crd::ProgramLinkStatus::Error;
                        p.message = Some(format!("the new revision was refused: {why}"));
                    }
                }
                if let Some(gate) = gate {
                    let (runs, value) = super::rollout::readings(api.as_ref(), &key, gate.as_ref());
                    r.state.run_count = runs;
                    r.state.gate_value = value;
                    r.state.observed_at =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::now(),
                        ));
                }
                Ok(r)
            })
            .await;
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
        let status = ApplicationStateStatus {
            revision: app.rollout.as_ref().map(|r| r.revision.clone()),
            ..status
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
