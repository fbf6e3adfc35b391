//! The cluster as the web view draws it: applications × nodes, each cell what that node made of
//! the application (from its state object), the application's summary condition and rollout
//! (from its status, which the operator writes). Built from plain inputs by `cluster_view` (unit
//! tested); the operator feeds it from its caches (`operator::ClusterReader`).

use crate::crd::rollout::{RolloutPhase, RolloutStatus};
use crate::crd::ApplicationStateStatus;
use crate::facts::selector_matches;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize, PartialEq)]
pub struct ClusterView {
    pub nodes: Vec<NodeCol>,
    pub applications: Vec<AppRow>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct NodeCol {
    pub name: String,
    /// `running`, `missing` or `unknown` (nothing says either way).
    pub agent: &'static str,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct AppRow {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The first condition of the application's status: type, reason, message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<CondView>,
    pub ready: usize,
    pub selected: usize,
    /// Per node name; nodes the selector does not pick are absent.
    pub cells: BTreeMap<String, Cell>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// A rollout as the page draws it: its phase, and how many of its nodes run the target.
#[derive(Debug, Serialize, PartialEq)]
pub struct RolloutView {
    pub phase: String,
    /// The revision being rolled out.
    pub target: String,
    /// Nodes allowed the target revision so far, of the `total` selected.
    pub updated: usize,
    pub total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Clone)]
pub struct CondView {
    #[serde(rename = "type")]
    pub ty: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Cell {
    /// `ready`, `error`, `pending` or `no-agent`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The revision a rollout lets this node run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One application as the view needs it.
pub struct AppInput {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub selector: LabelSelector,
    /// The application's status as stored (the operator's fields are read by name).
    pub status: Option<serde_json::Value>,
}

pub struct StateInput {
    pub namespace: Option<String>,
    pub application: String,
    pub node: String,
    pub status: Option<ApplicationStateStatus>,
}

pub struct NodeInput {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Whether an agent runs there, when something says.
    pub agent: Option<bool>,
}

pub fn cluster_view(apps: &[AppInput], states: &[StateInput], nodes: &[NodeInput]) -> ClusterView {
    let mut applications: Vec<AppRow> = apps
        .iter()
        .map(|a| {
            let rollout: Option<RolloutStatus> = a
                .status
                .as_ref()
                .and_then(|s| s.get("rollout"))
                .and_then(|r| serde_json::from_value(r.clone()).ok());
            let mut cells = BTreeMap::new();
            for n in nodes
                .iter()
                .filter(|n| selector_matches(&a.selector, &n.labels))
            {
                let state = states.iter().find(|s| {
                    s.node == n.name && s.application == a.name && s.namespace == a.namespace
                });
                let mut c = cell(state.and_then(|s| s.status.as_ref()), n);
                c.revision = rollout
                    .as_ref()
                    .and_then(|r| r.nodes.get(&n.name))
                    .map(|r| r.revision.clone());
                cells.insert(n.name.clone(), c);
            }
            let selected = cells.len();
            AppRow {
                kind: a.kind,
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                condition: a.status.as_ref().and_then(first_condition),
                ready: cells.values().filter(|c| c.state == "ready").count(),
                selected,
                cells,
                rollout: rollout.as_ref().map(|r| rollout_view(r, selected)),
            }
        })
        .collect();
    applications
        .sort_by(|a, b| (&a.namespace, &a.name, a.kind).cmp(&(&b.namespace, &b.name, b.kind)));
    let mut nodes: Vec<NodeCol> = nodes
        .iter()
        .map(|n| NodeCol {
            name: n.name.clone(),
            agent: match n.agent {
                Some(true) => "running",
                Some(false) => "missing",
                None => "unknown",
            },
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterView {
        nodes,
        applications,
    }
}

/// What one selected node made of an application.
fn cell(status: Option<&ApplicationStateStatus>, node: &NodeInput) -> Cell {
    let cond = status.and_then(|s| s.conditions.first());
    match cond {
        Some(c) if c.type_ == "Success" => Cell {
            state: "ready",
            message: Some(c.message.clone()),
            revision: None,
        },
        Some(c) if c.type_ == "Error" => Cell {
            state: "error",
            message: Some(c.message.clone()),
            revision: None,
        },
        _ if node.agent == Some(false) => Cell {
            state: "no-agent",
            message: Some("no apiary agent runs on this node".into()),
            revision: None,
        },
        Some(c) => Cell {
            state: "pending",
            message: Some(c.message.clone()),
            revision: None,
        },
        None => Cell {
            state: "pending",
            message: Some("the node's agent has not reported yet".into()),
            revision: None,
        },
    }
}

/// `selected`: the nodes the application selects (the rollout records only those it switched).
fn rollout_view(r: &RolloutStatus, selected: usize) -> RolloutView {
    RolloutView {
        phase: format!("{:?}", r.phase),
        target: r.target_revision.clone(),
        // A complete rollout leaves every node on its revision (the record may be empty).
        updated: if r.phase == RolloutPhase::Complete {
            selected
        } else {
            r.nodes
                .values()
                .filter(|n| n.revision == r.target_revision)
                .count()
        },
        total: selected,
        message: r.message.clone(),
    }
}

fn first_condition(status: &serde_json::Value) -> Option<CondView> {
    let c = status.get("conditions")?.as_array()?.first()?;
    let s = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(CondView {
        ty: s("type"),
        reason: s("reason"),
        message: s("message"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn cond(ty: &str, msg: &str) -> Condition {
        Condition {
            type_: ty.into(),
            status: "True".into(),
            reason: ty.into(),
            message: msg.into(),
            last_transition_time: Time(Default::default()),
            observed_generation: None,
        }
    }

    fn node(name: &str, role: &str, agent: Option<bool>) -> NodeInput {
        NodeInput {
            name: name.into(),
            labels: [("role".to_string(), role.to_string())].into(),
            agent,
        }
    }

    #[test]
    fn cells_follow_the_selector_the_states_and_the_agents() {
        let selector = LabelSelector {
            match_labels: Some([("role".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let apps = [AppInput {
            kind: "ClusterBpfApplication",
            namespace: None,
            name: "counter".into(),
            selector,
            status: Some(serde_json::json!({
                "conditions": [{"type": "Error", "reason": "Error", "message": "1/3 nodes ready"}],
                "rollout": {
                    "phase": "Progressing", "currentRevision": "aaa", "targetRevision": "bbb",
                    "nodes": {"a": {"revision": "bbb"}, "b": {"revision": "aaa"}},
                    "message": "batch 1 of 3"
                }
            })),
        }];
        let state = |n: &str, c: Option<Condition>| StateInput {
            namespace: None,
            application: "counter".into(),
            node: n.into(),
            status: Some(ApplicationStateStatus {
                conditions: c.into_iter().collect(),
                ..Default::default()
            }),
        };
        let states = [
            state("a", Some(cond("Success", "2 link(s) attached"))),
            state("b", Some(cond("Error", "interface eth9 not found"))),
        ];
        let nodes = [
            node("c", "web", Some(false)),
            node("a", "web", Some(true)),
            node("b", "web", None),
            node("d", "db", Some(true)),
        ];
        let v = cluster_view(&apps, &states, &nodes);
        let names: Vec<_> = v.nodes.iter().map(|n| (n.name.as_str(), n.agent)).collect();
        assert_eq!(
            names,
            [
                ("a", "running"),
                ("b", "unknown"),
                ("c", "missing"),
                ("d", "running")
            ]
        );
        let app = &v.applications[0];
        assert_eq!((app.ready, app.selected), (1, 3));
        assert_eq!(app.cells["a"].state, "ready");
        assert_eq!(app.cells["b"].state, "error");
        assert_eq!(
            app.cells["b"].message.as_deref(),
            Some("interface eth9 not found")
        );
        assert_eq!(app.cells["c"].state, "no-agent");
        assert!(!app.cells.contains_key("d"), "not selected");
        assert_eq!(app.condition.as_ref().unwrap().message, "1/3 nodes ready");
        let r = app.rollout.as_ref().unwrap();
        assert_eq!(
            (r.phase.as_str(), r.target.as_str(), r.updated, r.total),
            ("Progressing", "bbb", 1, 3)
        );
        assert_eq!(app.cells["a"].revision.as_deref(), Some("bbb"));
        assert_eq!(app.cells["b"].revision.as_deref(), Some("aaa"));
    }
}
