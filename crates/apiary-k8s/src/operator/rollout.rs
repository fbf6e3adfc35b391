//! The operator's part of a staged rollout: from the spec, the previous rollout status and the
//! nodes' reports, the next rollout status. Pure (time is an argument), so the steps are
//! tested without a cluster. The agents act on the result: each runs the revision its node's
//! entry names.

use crate::crd::rollout::{
    self, HealthGate, NodeRollout, RevisionSource, RolloutPhase, RolloutSpec, RolloutStatus,
};
use crate::crd::ApplicationSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// The window when the gate names none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// What a node's agent reports of the application.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub revision: Option<String>,
    /// Its condition says Success.
    pub ok: bool,
    /// Its condition's message when it says Error.
    pub error: Option<String>,
    pub run_count: Option<u64>,
    pub gate_value: Option<u64>,
    pub observed_at: Option<Timestamp>,
}

/// The next rollout status, and when to look again without news (a gate window or a pause
/// ending).
pub fn step(
    spec: &ApplicationSpec,
    prev: Option<&RolloutStatus>,
    live: &[&str],
    reports: &BTreeMap<&str, Report>,
    now: Timestamp,
) -> (Option<RolloutStatus>, Option<Duration>) {
    let Some(rs) = &spec.rollout else {
        return (None, None);
    };
    let src = RevisionSource::of(spec);
    let rev = src.revision();
    let mut ro = prev.cloned().unwrap_or_default();
    if ro.current_revision.is_empty() {
        // First sight: what the spec says is what runs.
        return (
            Some(RolloutStatus {
                phase: RolloutPhase::Complete,
                current_revision: rev.clone(),
                target_revision: rev.clone(),
                revisions: BTreeMap::from([(rev.clone(), src)]),
                message: Some(format!("revision {rev}")),
                ..RolloutStatus::default()
            }),
            None,
        );
    }
    if rev == ro.current_revision {
        if ro.target_revision != rev {
            // The spec is back on the current revision (`apiary rollout undo`, or by hand):
            // every node returns to it.
            let t = Time(now);
            for n in ro.nodes.values_mut().filter(|n| n.revision != rev) {
                n.revision = rev.clone();
                n.rolled_back_at = Some(t.clone());
            }
            ro.target_revision = rev.clone();
            ro.phase = RolloutPhase::Complete;
            ro.failed_revision = None;
            ro.revisions.retain(|k, _| *k == rev);
            ro.message = Some(format!("back on revision {rev}"));
        }
        return (Some(ro), None);
    }
    if ro.failed_revision.as_deref() == Some(rev.as_str()) {
        // Rolled back: stays so until the spec changes.
        return (Some(ro), None);
    }
    if ro.target_revision != rev {
        // A new target (also one replacing a rollout in flight): every node starts from the
        // current revision again.
        let current = ro.current_revision.clone();
        let keep = ro.revisions.get(&current).cloned();
        ro.revisions = keep.map(|s| (current.clone(), s)).into_iter().collect();
        ro.revisions.insert(rev.clone(), src);
        ro.target_revision = rev.clone();
        ro.nodes.clear();
        ro.batch = 0;
        ro.batch_done_at = None;
        ro.failed_revision = None;
        ro.phase = RolloutPhase::Progressing;
        ro.message = Some(format!("rolling out revision {rev} (from {current})"));
    }
    let gate = rs.health_gate.clone().unwrap_or_default();
    let window = if rs.health_gate.is_some() {
        gate.window
            .as_deref()
            .and_then(rollout::parse_duration)
            .unwrap_or(DEFAULT_WINDOW)
    } else {
        Duration::ZERO
    };
    let mut next: Option<Duration> = None;
    let mut soon = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));

    // The gates of the nodes in flight.
    let mut failure: Option<(String, String)> = None;
    for (name, entry) in ro.nodes.iter_mut() {
        if entry.revision != ro.target_revision || passed(entry) {
            continue;
        }
        if !live.contains(&name.as_str()) {
            // Deleted, or its agent gone: it cannot pass or fail; it does not hold the
            // rollout (when its agent comes back it runs what the status then says).
            entry.gate = Some("Skipped: no agent".into());
            continue;
        }
        let r = reports.get(name.as_str()).cloned().unwrap_or_default();
        if r.revision.as_deref() != Some(ro.target_revision.as_str()) {
            entry.gate = Some("Switching".into());
            continue;
        }
        if let Some(why) = &r.error {
            failure = Some((name.clone(), why.clone()));
            break;
        }
        if !r.ok {
            entry.gate = Some("Switching".into());
            continue;
        }
        let since = entry.running_since.get_or_insert(Time(now)).0;
        if entry.run_count_at_start.is_none() {
            entry.run_count_at_start = r.run_count;
        }
        if let Some(why) = gate_breach(&gate, &r) {
            failure = Some((name.clone(), why));
            break;
        }
        let end = since + window_span(window);
        if now < end {
            entry.gate = Some("Waiting".into());
            soon(until(now, end));
            continue;
        }
        // The verdict needs a reading taken after the window ended.
        let fresh = window.is_zero() || r.observed_at.is_some_and(|t| t >= end);
        if !fresh {
            entry.gate = Some("Waiting".into());
            soon(Duration::from_millis(500));
            continue;
        }
        if gate.require_run_count_rising {
            match (entry.run_count_at_start, r.run_count) {
                (Some(a), Some(b)) if b > a => {}
                (a, b) => {
                    failure = Some((
                        name.clone(),
                        format!(
                            "run count did not rise in {}s ({} -> {}; no traffic, or BPF run-time stats off)",
                            window.as_secs(),
                            a.map_or("unknown".into(), |v| v.to_string()),
                            b.map_or("unknown".into(), |v| v.to_string())
                        ),
                    ));
                    break;
                }
            }
        }
        entry.gate = Some("Passed".into());
    }
    if let Some((node, why)) = failure {
        let t = Time(now);
        let mut back: Vec<String> = Vec::new();
        for (name, entry) in ro.nodes.iter_mut() {
            if entry.revision == ro.target_revision {
                entry.revision = ro.current_revision.clone();
                entry.rolled_back_at = Some(t.clone());
                back.push(name.clone());
            }
            if *name == node {
                entry.gate = Some(format!("Failed: {why}"));
            }
        }
        ro.message = Some(format!(
            "{node} failed its gate on revision {}: {why}; rolled back {} to revision {}",
            ro.target_revision,
            back.join(", "),
            ro.current_revision
        ));
        ro.failed_revision = Some(ro.target_revision.clone());
        ro.phase = RolloutPhase::RolledBack;
        return (Some(ro), None);
    }
    let in_flight = ro.nodes.iter().any(|(name, n)| {
        n.revision == ro.target_revision && !passed(n) && live.contains(&name.as_str())
    });
    if in_flight {
        return (Some(ro), next);
    }
    let mut remaining: Vec<&str> = live
        .iter()
        .copied()
        .filter(|n| {
            ro.nodes
                .get(*n)
                .is_none_or(|e| e.revision != ro.target_revision)
        })
        .collect();
    remaining.sort();
    if remaining.is_empty() {
        let n = ro.nodes.len();
        ro.phase = RolloutPhase::Complete;
        ro.current_revision = ro.target_revision.clone();
        let cur = ro.current_revision.clone();
        ro.revisions.retain(|k, _| *k == cur);
        ro.message = Some(format!("revision {cur} on all {n} node(s)"));
        return (Some(ro), None);
    }
    if ro.batch > 0 && ro.batch_done_at.is_none() {
        ro.batch_done_at = Some(Time(now));
    }
    if rs.paused {
        ro.phase = RolloutPhase::Paused;
        ro.message = Some(format!(
            "paused after batch {}: {} node(s) left on revision {}",
            ro.batch,
            remaining.len(),
            ro.current_revision
        ));
        return (Some(ro), None);
    }
    ro.phase = RolloutPhase::Progressing;
    let pause = rs
        .pause
        .as_deref()
        .and_then(rollout::parse_duration)
        .unwrap_or(Duration::ZERO);
    if let Some(done) = &ro.batch_done_at {
        let end = done.0 + window_span(pause);
        if ro.batch > 0 && now < end {
            return (Some(ro), Some(until(now, end)));
        }
    }
    let size = batch_size(rs, live.len());
    ro.batch += 1;
    ro.batch_done_at = None;
    let t = Time(now);
    let batch: Vec<&str> = remaining.into_iter().take(size).collect();
    for n in &batch {
        ro.nodes.insert(
            n.to_string(),
            NodeRollout {
                revision: ro.target_revision.clone(),
                batch: ro.batch,
                switched_at: Some(t.clone()),
                gate: Some("Switching".into()),
                ..NodeRollout::default()
            },
        );
    }
    ro.message = Some(format!(
        "batch {}: switching {} to revision {}",
        ro.batch,
        batch.join(", "),
        ro.target_revision
    ));
    (Some(ro), next)
}

fn passed(n: &NodeRollout) -> bool {
    n.gate.as_deref() == Some("Passed")
}

fn batch_size(rs: &RolloutSpec, selected: usize) -> usize {
    rollout::batch_size(rs, selected)
}

/// A reading that fails the gate at once (the map over its threshold).
fn gate_breach(gate: &HealthGate, r: &Report) -> Option<String> {
    let m = gate.max_map_value.as_ref()?;
    let v = r.gate_value?;
    (v > m.threshold).then(|| {
        format!(
            "map {}[{}] = {v}, over its threshold {}",
            m.map, m.key, m.threshold
        )
    })
}

fn window_span(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}

fn until(now: Timestamp, end: Timestamp) -> Duration {
    let ms = end.as_millisecond() - now.as_millisecond();
    Duration::from_millis(ms.max(0) as u64 + 50)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(globals: &[(&str, u8)], gate: Option<HealthGate>) -> ApplicationSpec {
        let mut s = crate::tests::spec(
            "nodeSelector: {}\nbyteCode: {path: /opt/x.o}\nprograms:\n- name: p\n  type: XDP\n  xdp:\n    links:\n    - interfaceSelector: {primaryNodeInterface: true}\n      priority: 5\n",
        );
        for (k, v) in globals {
            s.global_data.insert(
                k.to_string(),
                serde_json::from_value(serde_json::json!(base64_of(*v))).expect("base64"),
            );
        }
        s.rollout = Some(RolloutSpec {
            health_gate: gate,
            ..RolloutSpec::default()
        });
        s
    }

    fn base64_of(v: u8) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([v, 0, 0, 0, 0, 0, 0, 0])
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("time")
    }

    fn report(rev: &str, ok: bool, runs: u64, drops: u64, t: i64) -> Report {
        Report {
            revision: Some(rev.into()),
            ok,
            error: (!ok).then(|| "verifier says no".to_string()),
            run_count: Some(runs),
            gate_value: Some(drops),
            observed_at: Some(at(t)),
        }
    }

    #[test]
    fn batches_go_one_by_one_and_a_gate_breach_rolls_back() {
        let gate = HealthGate {
            window: Some("3s".into()),
            require_run_count_rising: true,
            max_map_value: Some(rollout::MapGate {
                map: "counts".into(),
                key: 1,
                threshold: 0,
            }),
        };
        let v1 = spec(&[("generation", 1)], Some(gate.clone()));
        let nodes = ["a", "b", "c"];
        let (ro, _) = step(&v1, None, &nodes, &BTreeMap::new(), at(0));
        let ro = ro.expect("rollout");
        let r1 = ro.current_revision.clone();
        assert_eq!(ro.phase, RolloutPhase::Complete);

        // v2: node a first.
        let v2 = spec(&[("generation", 2)], Some(gate.clone()));
        let r2 = rollout::revision(&v2);
        let (ro, _) = step(&v2, Some(&ro), &nodes, &BTreeMap::new(), at(1));
        let ro = ro.expect("rollout");
        assert_eq!(ro.phase, RolloutPhase::Progressing);
        assert_eq!(ro.nodes.keys().collect::<Vec<_>>(), ["a"]);
        // a runs v2 and its gate window passes with its run count rising: b is next.
        let reps = BTreeMap::from([("a", report(&r2, true, 10, 0, 2))]);
        let (ro, next) = step(&v2, Some(&ro), &nodes, &reps, at(2));
        let ro = ro.expect("rollout");
        assert!(next.is_some(), "a timer for the window's end");
        let reps = BTreeMap::from([("a", report(&r2, true, 20, 0, 6))]);
        let (ro, _) = step(&v2, Some(&ro), &nodes, &reps, at(6));
        let ro = ro.expect("rollout");
        assert_eq!(ro.nodes["a"].gate.as_deref(), Some("Passed"));
        assert_eq!(ro.nodes["b"].revision, r2);
        assert!(!ro.nodes.contains_key("c"));

        // b's drop counter rises: rolled back, a and b on v1, the message says so.
        let reps = BTreeMap::from([
            ("a", report(&r2, true, 30, 0, 7)),
            ("b", report(&r2, true, 5, 3, 7)),
        ]);
        let (ro, _) = step(&v2, Some(&ro), &nodes, &reps, at(7));
        let ro = ro.expect("rollout");
        assert_eq!(ro.phase, RolloutPhase::RolledBack);
        assert_eq!(ro.nodes["a"].revision, r1);
        assert_eq!(ro.nodes["b"].revision, r1);
        let m = ro.message.clone().unwrap_or_default();
        assert!(
            m.starts_with("b failed its gate")
                && m.contains("counts[1] = 3")
                && m.contains("rolled back a, b"),
            "{m}"
        );
        // It stays rolled back while the spec names the failed revision.
        let (again, _) = step(&v2, Some(&ro), &nodes, &reps, at(8));
        assert_eq!(again.as_ref(), Some(&ro));
    }

    #[test]
    fn a_refused_revision_fails_at_once_and_a_silent_program_fails_the_run_count_gate() {
        let gate = HealthGate {
            window: Some("3s".into()),
            require_run_count_rising: true,
            max_map_value: None,
        };
        let v1 = spec(&[], Some(gate.clone()));
        let nodes = ["a", "b"];
        let ro = step(&v1, None, &nodes, &BTreeMap::new(), at(0))
            .0
            .expect("ro");
        let v2 = spec(&[("x", 1)], Some(gate.clone()));
        let r2 = rollout::revision(&v2);
        let started = step(&v2, Some(&ro), &nodes, &BTreeMap::new(), at(1))
            .0
            .expect("ro");
        let refused = BTreeMap::from([("a", report(&r2, false, 0, 0, 2))]);
        let ro2 = step(&v2, Some(&started), &nodes, &refused, at(2))
            .0
            .expect("ro");
        assert_eq!(ro2.phase, RolloutPhase::RolledBack);
        assert!(ro2.message.unwrap_or_default().contains("verifier says no"));

        let quiet = BTreeMap::from([("a", report(&r2, true, 7, 0, 2))]);
        let ro3 = step(&v2, Some(&started), &nodes, &quiet, at(2))
            .0
            .expect("ro");
        let quiet = BTreeMap::from([("a", report(&r2, true, 7, 0, 6))]);
        let ro3 = step(&v2, Some(&ro3), &nodes, &quiet, at(6)).0.expect("ro");
        assert_eq!(ro3.phase, RolloutPhase::RolledBack);
        assert!(ro3
            .message
            .unwrap_or_default()
            .contains("run count did not rise"),);
    }
}
