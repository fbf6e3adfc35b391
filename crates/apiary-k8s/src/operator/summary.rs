//! The application's status from what the caches hold: which nodes the selector picks, which
//! of them run an agent, and what each agent's state object says. Pure, so the wording and the
//! counts are tested without a cluster.

use crate::crd::{AppLoadStatus, ApplicationStatus};
use crate::facts;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use std::collections::{BTreeMap, BTreeSet};

/// How many problem nodes a message names before it says "and N more".
const NAMED: usize = 3;

/// A Node as the operator sees it (metadata only).
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// One node's state object of the application.
pub struct StateView<'a> {
    pub node: &'a str,
    pub load: AppLoadStatus,
    /// The state's condition: (type, message).
    pub condition: Option<(&'a str, &'a str)>,
}

/// What the summary is computed from.
pub struct Input<'a> {
    pub selector: &'a LabelSelector,
    pub deleting: bool,
    pub generation: Option<i64>,
    pub nodes: &'a [NodeView<'a>],
    /// Nodes whose agent's Lease is live.
    pub agents: &'a BTreeSet<String>,
    pub states: &'a [StateView<'a>],
}

enum NodeIs<'a> {
    Ready,
    Failed(&'a str),
    WithoutAgent,
    Pending,
}

/// The status to write, its condition's time left at the epoch (the caller keeps the current
/// one when the type is unchanged).
pub fn summarize(input: &Input) -> ApplicationStatus {
    if input.deleting {
        return deleting(input);
    }
    let by_node: BTreeMap<&str, &StateView> = input.states.iter().map(|s| (s.node, s)).collect();
    let mut selected: Vec<&NodeView> = input
        .nodes
        .iter()
        .filter(|n| facts::selector_matches(input.selector, n.labels))
        .collect();
    selected.sort_by_key(|n| n.name);
    let verdicts: Vec<(&str, NodeIs)> = selected
        .iter()
        .map(|n| {
            let state = by_node.get(n.name);
            let v = if !input.agents.contains(n.name) {
                // A state left by an agent that died says nothing current.
                NodeIs::WithoutAgent
            } else {
                match state.and_then(|s| s.condition) {
                    Some(("Success", _)) => NodeIs::Ready,
                    Some(("Error", why)) => NodeIs::Failed(why),
                    _ => NodeIs::Pending,
                }
            };
            (n.name, v)
        })
        .collect();
    let count = |f: fn(&NodeIs) -> bool| verdicts.iter().filter(|(_, v)| f(v)).count() as u32;
    let ready = count(|v| matches!(v, NodeIs::Ready));
    let errors = count(|v| matches!(v, NodeIs::Failed(_)));
    let without = count(|v| matches!(v, NodeIs::WithoutAgent));
    let pending = count(|v| matches!(v, NodeIs::Pending));
    let total = selected.len() as u32;

    // Problems in the order a person acts on them: failures, missing agents, then waiting.
    let mut problems: Vec<String> = Vec::new();
    for (name, v) in &verdicts {
        if let NodeIs::Failed(why) = v {
            problems.push(format!("{name}: {why}"));
        }
    }
    for (name, v) in &verdicts {
        if matches!(v, NodeIs::WithoutAgent) {
            problems.push(format!("{name}: no apiary agent"));
        }
    }
    for (name, v) in &verdicts {
        if matches!(v, NodeIs::Pending) {
            problems.push(format!("{name}: waiting for its agent's report"));
        }
    }
    let (ty, message) = if total == 0 {
        ("Pending", "no node selected".to_string())
    } else {
        let mut m = format!("{ready}/{total} nodes ready");
        let mut counts = Vec::new();
        if errors > 0 {
            counts.push(plural(errors, "error", "errors"));
        }
        if without > 0 {
            counts.push(format!("{without} without agent"));
        }
        if pending > 0 {
            counts.push(format!("{pending} pending"));
        }
        if !counts.is_empty() {
            m.push_str(", ");
            m.push_str(&counts.join(", "));
            m.push_str(": ");
            m.push_str(&named(&problems));
        }
        let ty = if errors + without > 0 {
            "Error"
        } else if pending > 0 {
            "Pending"
        } else {
            "Success"
        };
        (ty, m)
    };
    ApplicationStatus {
        conditions: vec![condition(ty, message)],
        ready: Some(format!("{ready}/{total}")),
        nodes_selected: total,
        nodes_ready: ready,
        nodes_error: errors,
        nodes_pending: pending,
        nodes_without_agent: without,
        observed_generation: input.generation,
        rollout: None,
    }
}

/// While the application is deleted: which nodes still hold it.
fn deleting(input: &Input) -> ApplicationStatus {
    let mut left: Vec<&StateView> = input.states.iter().collect();
    left.sort_by_key(|s| s.node);
    let failed: Vec<String> = left
        .iter()
        .filter(|s| s.load == AppLoadStatus::UnloadError)
        .map(|s| format!("{}: {}", s.node, s.condition.map(|c| c.1).unwrap_or("")))
        .collect();
    let (ty, message) = if !failed.is_empty() {
        ("DeleteError", format!("cannot unload: {}", named(&failed)))
    } else if left.is_empty() {
        ("Pending", "deleting".to_string())
    } else {
        let nodes: Vec<String> = left.iter().map(|s| s.node.to_string()).collect();
        (
            "Pending",
            format!(
                "deleting: waiting for {} to unload: {}",
                plural(left.len() as u32, "node", "nodes"),
                named(&nodes)
            ),
        )
    };
    ApplicationStatus {
        conditions: vec![condition(ty, message)],
        ready: Some(format!("0/{}", left.len())),
        observed_generation: input.generation,
        ..ApplicationStatus::default()
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn named(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED {
        s.push_str(&format!("; and {} more", items.len() - NAMED));
    }
    s
}

fn condition(ty: &str, message: String) -> Condition {
    Condition {
        type_: ty.into(),
        status: "True".into(),
        reason: ty.into(),
        message,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(key: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(&[(key, "yes")])),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn a_node_without_agent_is_named_and_does_not_keep_the_application_pending() {
        let yes = labels(&[("pick", "yes")]);
        let no = labels(&[]);
        let nodes = [
            NodeView {
                name: "node-a",
                labels: &yes,
            },
            NodeView {
                name: "node-b",
                labels: &yes,
            },
            NodeView {
                name: "node-c",
                labels: &yes,
            },
            NodeView {
                name: "node-d",
                labels: &no,
            },
        ];
        let agents: BTreeSet<String> = ["node-a", "node-b", "node-d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let states = [
            StateView {
                node: "node-a",
                load: AppLoadStatus::LoadSuccess,
                condition: Some(("Success", "1 program(s) loaded")),
            },
            StateView {
                node: "node-b",
                load: AppLoadStatus::LoadSuccess,
                condition: Some(("Success", "1 program(s) loaded")),
            },
        ];
        let sel = selector("pick");
        let s = summarize(&Input {
            selector: &sel,
            deleting: false,
            generation: Some(2),
            nodes: &nodes,
            agents: &agents,
            states: &states,
        });
        assert_eq!(s.ready.as_deref(), Some("2/3"));
        assert_eq!(
            (s.nodes_selected, s.nodes_ready, s.nodes_without_agent),
            (3, 2, 1)
        );
        assert_eq!(s.conditions[0].type_, "Error");
        assert_eq!(
            s.conditions[0].message,
            "2/3 nodes ready, 1 without agent: node-c: no apiary agent"
        );
    }

    #[test]
    fn errors_come_first_with_the_agent_s_words_and_long_lists_are_cut() {
        let yes = labels(&[("pick", "yes")]);
        let names: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
        let nodes: Vec<NodeView> = names
            .iter()
            .map(|n| NodeView {
                name: n,
                labels: &yes,
            })
            .collect();
        let agents: BTreeSet<String> = names.iter().take(5).cloned().collect();
        let states: Vec<StateView> = names
            .iter()
            .take(4)
            .map(|n| StateView {
                node: n,
                load: AppLoadStatus::LoadError,
                condition: Some(("Error", "interface eth9 not found")),
            })
            .collect();
        let sel = selector("pick");
        let s = summarize(&Input {
            selector: &sel,
            deleting: false,
            generation: None,
            nodes: &nodes,
            agents: &agents,
            states: &states,
        });
        assert_eq!(
            s.conditions[0].message,
            "0/6 nodes ready, 4 errors, 1 without agent, 1 pending: n0: interface eth9 not found; \
             n1: interface eth9 not found; n2: interface eth9 not found; and 3 more"
        );
        assert_eq!((s.nodes_error, s.nodes_pending), (4, 1));
    }

    #[test]
    fn all_ready_is_success_and_none_selected_is_pending() {
        let yes = labels(&[("pick", "yes")]);
        let nodes = [NodeView {
            name: "a",
            labels: &yes,
        }];
        let agents: BTreeSet<String> = ["a".to_string()].into();
        let states = [StateView {
            node: "a",
            load: AppLoadStatus::LoadSuccess,
            condition: Some(("Success", "ok")),
        }];
        let sel = selector("pick");
        let input = Input {
            selector: &sel,
            deleting: false,
            generation: None,
            nodes: &nodes,
            agents: &agents,
            states: &states,
        };
        let s = summarize(&input);
        assert_eq!(
            (
                s.conditions[0].type_.as_str(),
                s.conditions[0].message.as_str()
            ),
            ("Success", "1/1 nodes ready")
        );
        let other = selector("other");
        let s = summarize(&Input {
            selector: &other,
            ..input
        });
        assert_eq!(
            (
                s.conditions[0].type_.as_str(),
                s.conditions[0].message.as_str()
            ),
            ("Pending", "no node selected")
        );
    }
}
