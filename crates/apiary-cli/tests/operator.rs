//! The operator against the real kube-apiserver of scripts/kube-testenv.sh, with simulated
//! nodes (tests/common/kube.rs): the application's status over the nodes (a node without an
//! agent named, then counted when its agent starts), leader election between two operators
//! (only the Lease holder writes; killed, the other takes over), and a deleted Node's state
//! object and finalizer cleaned up so deleting the application completes.

mod common;

use common::kube::*;
use common::*;
use serde_json::Value;
use std::sync::Mutex;

/// The tests run one at a time: an operator serves every application in the cluster, so a
/// test's proof of who wrote a status must not see another test's operator.
static SERIAL: Mutex<()> = Mutex::new(());

fn xdp_app(name: &str, selector_label: &str) -> String {
    format!(
        r#"apiVersion: apiary.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {name}
spec:
  nodeSelector:
    matchLabels:
      {selector_label}: "yes"
  byteCode:
    path: {obj}
  programs:
  - name: xdp_count
    type: XDP
    xdp:
      links:
      - interfaceSelector: {{primaryNodeInterface: true}}
        priority: 10
"#,
        obj = fixture("k8s_app").display()
    )
}

fn app_status(k: &Kube, app: &str) -> Value {
    k.get("clusterbpfapplication", app)
        .map(|a| a["status"].clone())
        .unwrap_or(Value::Null)
}

fn lease_holder(k: &Kube, ns: &str) -> Option<String> {
    let r = k.run(
        &["get", "lease", "apiary-operator", "-n", ns, "-o", "json"],
        None,
    );
    if !r.ok {
        return None;
    }
    let v: Value = serde_json::from_str(&r.stdout).ok()?;
    v["spec"]["holderIdentity"].as_str().map(String::from)
}

fn setup() -> Option<(std::sync::MutexGuard<'static, ()>, Kube)> {
    if !privileged() {
        return None;
    }
    let k = kube()?;
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    k.install();
    Some((guard, k))
}

#[test]
fn status_names_a_node_without_agent_and_a_deleted_node_is_cleaned_up() {
    let Some((_serial, k)) = setup() else { return };
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let mut nodes = [
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::without_agent(&k, &[(&sel, "yes")]),
    ];
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let operator = own_operator(&k);
    k.ok(&["apply", "-f", "-"], Some(&xdp_app(&app, &sel)));

    // Two of three selected nodes run an agent: 2/3, the third named, and not Pending.
    let third = nodes[2].name.clone();
    assert!(
        eventually(30, || {
            let s = app_status(&k, &app);
            s["ready"] == "2/3"
                && s["nodesWithoutAgent"] == 1
                && s["conditions"][0]["type"] == "Error"
                && s["conditions"][0]["message"]
                    == format!("2/3 nodes ready, 1 without agent: {third}: no apiary agent")
                        .as_str()
        }),
        "status: {}\n{}",
        app_status(&k, &app),
        operator.log_text()
    );
    let s = app_status(&k, &app);
    assert_eq!(
        (&s["nodesSelected"], &s["nodesReady"], &s["nodesError"]),
        (&Value::from(3), &Value::from(2), &Value::from(0)),
        "{s}"
    );
    // The printer columns show it.
    let table = k.ok(&["get", "clusterbpfapplication", &app], None);
    assert!(
        table.contains("READY") && table.contains("2/3") && table.contains("no apiary agent"),
        "{table}"
    );
    // The agents did the loading: the program counts packets through a ready node.
    let progs = nodes[0].programs(&app);
    let (xdp, _) = progs["xdp_count"];
    let before = nodes[0].counter(xdp, 0);
    assert!(nodes[0].net.ping(2), "ping through {}", nodes[0].name);
    assert!(nodes[0].counter(xdp, 0) >= before + 2);

    // The third node's agent starts: 3/3, Success.
    nodes[2].start(&k);
    assert!(
        eventually(30, || {
            let s = app_status(&k, &app);
            s["ready"] == "3/3"
                && s["conditions"][0]["type"] == "Success"
                && s["conditions"][0]["message"] == "3/3 nodes ready"
        }),
        "status: {}\n{}",
        app_status(&k, &app),
        nodes[2].log_text()
    );
    let finalizers_now = finalizers(&k, &app);
    assert!(
        finalizers_now.contains(&"apiary.io/operator".to_string()) && finalizers_now.len() == 4,
        "{finalizers_now:?}"
    );

    // A node is deleted (its agent gone with it): its state object and finalizer are removed
    // by the operator, and the status counts the two left.
    let gone = nodes[1].name.clone();
    nodes[1].kill9();
    k.ok(&["delete", "node", &gone], None);
    assert!(
        eventually(30, || state(&k, &app, &nodes[1]).is_none()
            && !finalizers(&k, &app).iter().any(|f| f.ends_with(&gone))),
        "the deleted node's leftovers stay: {:?} {:?}\n{}",
        state(&k, &app, &nodes[1]),
        finalizers(&k, &app),
        operator.log_text()
    );
    assert!(
        eventually(30, || app_status(&k, &app)["ready"] == "2/2"),
        "status: {}",
        app_status(&k, &app)
    );

    // Deleting the application completes: the live agents unload, the operator lets go.
    delete_and_wait_released(&k, &app, || operator.log_text());
    for n in [&nodes[0], &nodes[2]] {
        assert!(n.programs(&app).is_empty(), "left on {}", n.name);
        assert!(state(&k, &app, n).is_none(), "state left for {}", n.name);
    }
}

#[test]
fn of_two_operators_only_the_lease_holder_writes_and_the_other_takes_over() {
    let Some((_serial, k)) = setup() else { return };
    let ns = lease_namespace(&k);
    let mut ops = [
        Operator::start(&k, &ns, &unique("op-a-")),
        Operator::start(&k, &ns, &unique("op-b-")),
    ];
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let mut nodes = vec![
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::without_agent(&k, &[(&sel, "yes")]),
    ];
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    k.ok(&["apply", "-f", "-"], Some(&xdp_app(&app, &sel)));
    assert!(
        eventually(30, || app_status(&k, &app)["ready"] == "1/2"),
        "status: {}\n{}\n{}",
        app_status(&k, &app),
        ops[0].log_text(),
        ops[1].log_text()
    );
    let holder = lease_holder(&k, &ns).expect("the Lease has a holder");
    let leader = ops
        .iter()
        .position(|o| o.identity == holder)
        .expect("the holder is one of the two");
    let standby = 1 - leader;
    let written = |o: &Operator| o.log_text().contains("status written");
    assert!(written(&ops[leader]), "{}", ops[leader].log_text());
    assert!(
        !written(&ops[standby]) && !ops[standby].log_text().contains("became the leader"),
        "the standby wrote:\n{}",
        ops[standby].log_text()
    );

    // kill -9 the leader, then change what the status says: the standby takes the Lease over
    // once it expires and writes 2/2.
    ops[leader].kill9();
    nodes[1].start(&k);
    assert!(
        eventually(60, || app_status(&k, &app)["ready"] == "2/2"),
        "status: {}\n{}",
        app_status(&k, &app),
        ops[standby].log_text()
    );
    assert_eq!(
        lease_holder(&k, &ns).as_deref(),
        Some(ops[standby].identity.as_str())
    );
    let log = ops[standby].log_text();
    assert!(
        log.contains("became the leader") && log.contains("status written"),
        "{log}"
    );
    // Stopped the way Kubernetes stops a pod, the leader gives the Lease up on its way out
    // (a successor need not wait for it to expire).
    let status = ops[standby].terminate().expect("the operator ran");
    assert!(status.success(), "exit: {status}");
    assert_eq!(lease_holder(&k, &ns), None, "the Lease was not released");
    assert!(ops[standby]
        .log_text()
        .contains("released the operator Lease"));
    drop(nodes);
}

/// An application on the rollout fixture with a staged rollout, batch 1, a 3-second gate: the
/// run count must rise (the TCX program's: the kernel does not count an XDP chain member on
/// its own) and the drop counter (counts[1]) stay at 0.
fn rollout_app(name: &str, selector_label: &str, globals: &[(&str, u8)]) -> String {
    let tcx = "  - name: tcx_count
    type: TCX
    tcx:
      links:
      - interfaceSelector: {primaryNodeInterface: true}
        direction: Ingress
        priority: 10
";
    rollout_fixture_app(
        name,
        selector_label,
        globals,
        "    batchSize: 1
    healthGate:
      window: 3s
      requireRunCountRising: true
      maxMapValue: {map: counts, key: 1, threshold: 0}
",
        &format!("{ROLLOUT_XDP}{tcx}"),
    )
}

/// Pings through every node's interface, every 100 ms, until dropped: the gate's run count
/// rises, a dropping revision shows in its counter, and the counters prove traffic was seen
/// throughout.
struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pinger {
    fn start(nodes: &[SimNode]) -> Pinger {
        let targets: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.net.ns_a.clone(), n.net.ip_b.clone()))
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for (ns, ip) in &targets {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-q", ip])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        Pinger {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rollout(k: &Kube, app: &str) -> Value {
    app_status(k, app)["rollout"].clone()
}

/// The revision a node's agent reports running.
fn running(k: &Kube, app: &str, n: &SimNode) -> Option<String> {
    state(k, app, n).and_then(|s| s["status"]["revision"].as_str().map(String::from))
}

#[test]
fn a_global_data_change_rolls_out_node_by_node_and_a_bad_one_rolls_back_after_the_first() {
    let Some((_serial, k)) = setup() else { return };
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let nodes = vec![
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
    ];
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let operator = own_operator(&k);
    let _pinger = Pinger::start(&nodes);
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(&app, &sel, &[("generation", 1)])),
    );
    assert!(
        eventually(30, || app_status(&k, &app)["ready"] == "3/3"
            && rollout(&k, &app)["phase"] == "Complete"),
        "status: {}\n{}",
        app_status(&k, &app),
        operator.log_text()
    );
    let rev1 = rollout(&k, &app)["currentRevision"]
        .as_str()
        .expect("a revision")
        .to_string();
    let before: Vec<(i64, u64, u64)> = nodes
        .iter()
        .map(|n| {
            let (id, kid) = n.programs(&app)["xdp_count"];
            (id, kid, n.counter(id, 0))
        })
        .collect();

    // A good revision: node by node, each after the previous passed its 3-second gate.
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(&app, &sel, &[("generation", 2)])),
    );
    assert!(
        eventually(90, || {
            let r = rollout(&k, &app);
            r["phase"] == "Complete" && r["currentRevision"] != rev1.as_str()
        }),
        "rollout: {}\n{}",
        rollout(&k, &app),
        operator.log_text()
    );
    let r = rollout(&k, &app);
    let rev2 = r["currentRevision"].as_str().unwrap().to_string();
    let mut order: Vec<&SimNode> = nodes.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    let entry = |n: &SimNode| r["nodes"][n.name.as_str()].clone();
    let mut last: Option<String> = None;
    for (i, n) in order.iter().enumerate() {
        let e = entry(n);
        assert_eq!(e["batch"], i as u64 + 1, "{r}");
        assert_eq!(e["gate"], "Passed", "{r}");
        let at = e["switchedAt"].as_str().expect("switchedAt").to_string();
        let since = e["runningSince"]
            .as_str()
            .expect("runningSince")
            .to_string();
        // RFC 3339 in UTC compares as text; each node switched after the previous one had
        // run the new revision for the whole window.
        if let Some(prev) = &last {
            assert!(
                at > *prev,
                "{} switched at {at}, not after {prev}: {r}",
                n.name
            );
        }
        last = Some(since);
        assert_eq!(running(&k, &app, n).as_deref(), Some(rev2.as_str()));
    }
    // Switched in place: the same apiary program, new kernel code, the map (and its counts)
    // kept.
    for (n, (id, kid, count)) in nodes.iter().zip(&before) {
        let (id2, kid2) = n.programs(&app)["xdp_count"];
        assert_eq!(id2, *id, "the program was replaced on {}", n.name);
        assert_ne!(kid2, *kid, "the code did not change on {}", n.name);
        assert!(n.counter(id2, 0) > *count, "counts reset on {}", n.name);
    }
    assert!(
        operator.log_text().contains("rollout"),
        "{}",
        operator.log_text()
    );

    // A bad revision (drops every ping, counted in counts[1]): the first node fails its gate,
    // goes back to the good revision, and the others never leave it.
    let first = order[0];
    let counted = first.counter(first.programs(&app)["xdp_count"].0, 0);
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(
            &app,
            &sel,
            &[("generation", 2), ("drop_icmp", 1)],
        )),
    );
    assert!(
        eventually(60, || rollout(&k, &app)["phase"] == "RolledBack"),
        "rollout: {}\n{}",
        rollout(&k, &app),
        operator.log_text()
    );
    let r = rollout(&k, &app);
    let message = r["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(&format!("{} failed its gate", first.name))
            && message.contains("counts[1]")
            && message.contains(&format!("rolled back {} to revision {rev2}", first.name)),
        "{message}"
    );
    assert_eq!(r["currentRevision"], rev2.as_str(), "{r}");
    let entries = r["nodes"].as_object().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "only the first node was switched: {r}");
    assert!(
        entries[&first.name]["gate"]
            .as_str()
            .is_some_and(|g| g.starts_with("Failed")),
        "{r}"
    );
    for n in &nodes {
        assert!(
            eventually(30, || running(&k, &app, n).as_deref()
                == Some(rev2.as_str())),
            "{} is not back on {rev2}: {:?}",
            n.name,
            state(&k, &app, n)
        );
    }
    // The first node passes pings again; its counter kept counting through both switches.
    assert!(
        eventually(30, || first.net.ping(1)),
        "pings still dropped on {}",
        first.name
    );
    let id = first.programs(&app)["xdp_count"].0;
    assert!(
        first.counter(id, 0) > counted,
        "counts lost on {}",
        first.name
    );
    assert!(first.counter(id, 1) > 0, "the bad revision dropped nothing");

    // `apiary rollout status` says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["rollout", "status", &app, "--kubeconfig"])
        .arg(&k.kubeconfig)
        .output()
        .expect("apiary rollout status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RolledBack") && text.contains(&first.name),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Chaos mid-rollout: kill -9 the operator (another takes the Lease over) and an agent (it
/// restarts), delete a node: the rollout completes on the nodes left, the deleted node's
/// state object and finalizer are removed, and deleting the application leaves nothing.
#[test]
fn a_rollout_converges_through_killed_operator_and_agent_and_a_deleted_node() {
    let Some((_serial, k)) = setup() else { return };
    let ns = lease_namespace(&k);
    let mut first_op = Operator::start(&k, &ns, &unique("op-a-"));
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let mut nodes = vec![
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
    ];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let _pinger = Pinger::start(&nodes);
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(&app, &sel, &[("generation", 1)])),
    );
    assert!(
        eventually(30, || app_status(&k, &app)["ready"] == "3/3"
            && rollout(&k, &app)["phase"] == "Complete"),
        "status: {}\n{}",
        app_status(&k, &app),
        first_op.log_text()
    );
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(&app, &sel, &[("generation", 2)])),
    );
    // The first batch is under way: kill -9 the operator and the second node's agent, and
    // delete the third node (its agent gone with it).
    assert!(
        eventually(30, || rollout(&k, &app)["nodes"]
            .as_object()
            .is_some_and(|n| n.contains_key(&nodes[0].name))),
        "no batch started: {}",
        rollout(&k, &app)
    );
    first_op.kill9();
    nodes[1].kill9();
    let gone = nodes[2].name.clone();
    nodes[2].kill9();
    k.ok(&["delete", "node", &gone], None);
    let second_op = Operator::start(&k, &ns, &unique("op-b-"));
    nodes[1].start(&k);

    assert!(
        eventually(90, || {
            let s = app_status(&k, &app);
            s["rollout"]["phase"] == "Complete"
                && s["rollout"]["currentRevision"] == s["rollout"]["targetRevision"]
                && s["rollout"]["nodes"]
                    .as_object()
                    .is_some_and(|n| n.len() == 2 && !n.contains_key(&gone))
                && s["ready"] == "2/2"
        }),
        "status: {}\n{}",
        app_status(&k, &app),
        second_op.log_text()
    );
    let target = rollout(&k, &app)["targetRevision"]
        .as_str()
        .unwrap()
        .to_string();
    for n in &nodes[..2] {
        assert!(
            eventually(30, || running(&k, &app, n).as_deref()
                == Some(target.as_str())),
            "{} does not run {target}: {:?}",
            n.name,
            state(&k, &app, n)
        );
    }
    assert!(
        eventually(30, || state(&k, &app, &nodes[2]).is_none()
            && !finalizers(&k, &app).iter().any(|f| f.ends_with(&gone))),
        "the deleted node's leftovers stay: {:?}",
        finalizers(&k, &app)
    );
    // Nothing leaked: deleting the application unloads it from the live nodes and completes.
    delete_and_wait_released(&k, &app, || second_op.log_text());
    for n in &nodes[..2] {
        assert!(n.programs(&app).is_empty(), "left on {}", n.name);
        let links = n.json(&["list", "links"]);
        assert_eq!(
            links.as_array().map(Vec::len),
            Some(0),
            "links left: {links}"
        );
    }
}

/// The operator's ClusterRole and Roles exactly as its module's doc comment (and the README)
/// list the API calls it makes.
fn operator_rbac(user: &str, lease_ns: &str, agent_ns: &str) -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {user}}}
rules:
- apiGroups: [apiary.io]
  resources: [clusterbpfapplications, bpfapplications]
  verbs: [list, watch, patch]
- apiGroups: [apiary.io]
  resources: [clusterbpfapplications/status, bpfapplications/status]
  verbs: [patch]
- apiGroups: [apiary.io]
  resources: [clusterbpfapplicationstates, bpfapplicationstates]
  verbs: [list, watch, delete]
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {user}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {user}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {user}-agents, namespace: {agent_ns}}}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}-agents, namespace: {agent_ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}-agents}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {user}-lease, namespace: {lease_ns}}}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [apiary-operator]
  verbs: [get, update]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}-lease, namespace: {lease_ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}-lease}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"#
    )
}

/// The operator with only the RBAC its documented API calls need serves a namespaced
/// application: its status, a deleted node's state object removed, its finalizer released.
#[test]
fn the_operator_needs_no_more_rbac_than_its_documented_calls_for_a_namespaced_application() {
    let Some((_serial, k)) = setup() else { return };
    let user = unique("apiary-operator-").to_lowercase();
    let lease_ns = lease_namespace(&k);
    k.ok(
        &["apply", "-f", "-"],
        Some(&operator_rbac(&user, &lease_ns, "kube-node-lease")),
    );
    let dir = k
        .kubeconfig
        .parent()
        .expect("the control plane's directory");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kube-testenv.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .args(["user", &user, "--dir"])
        .arg(dir)
        .output()
        .expect("kube-testenv.sh user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restricted = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Without the binding's rights nothing else is allowed (the RBAC is really in force).
    let denied = k.run(
        &[
            "--kubeconfig",
            restricted.to_str().unwrap(),
            "get",
            "configmaps",
            "-A",
        ],
        None,
    );
    assert!(
        !denied.ok && denied.stderr.contains("forbidden"),
        "{}",
        denied.stderr
    );

    let operator = Operator::start_with(&restricted, &lease_ns, &unique("op-rbac-"));
    let ns = unique("apps-").to_lowercase();
    k.ok(&["create", "namespace", &ns], None);
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let mut nodes = [
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
    ];
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: Some(&ns),
    };
    let yaml = xdp_app(&app, &sel)
        .replace("kind: ClusterBpfApplication", "kind: BpfApplication")
        .replace(
            &format!("  name: {app}\n"),
            &format!("  name: {app}\n  namespace: {ns}\n"),
        );
    k.ok(&["apply", "-f", "-"], Some(&yaml));
    let status = || {
        k.get(
            &format!("bpfapplication.apiary.io/{app}"),
            &format!("-n={ns}"),
        )
        .map(|a| a["status"].clone())
        .unwrap_or(Value::Null)
    };
    assert!(
        eventually(30, || status()["ready"] == "2/2"
            && status()["conditions"][0]["message"] == "2/2 nodes ready"),
        "status: {}\n{}",
        status(),
        operator.log_text()
    );
    let fin = |k: &Kube| -> Vec<String> {
        k.get(
            &format!("bpfapplication.apiary.io/{app}"),
            &format!("-n={ns}"),
        )
        .and_then(|a| a["metadata"]["finalizers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
    };
    assert!(
        fin(&k).contains(&"apiary.io/operator".to_string()),
        "{:?}",
        fin(&k)
    );

    // A deleted node: its state object (namespaced) and finalizer go.
    let gone = nodes[1].name.clone();
    nodes[1].kill9();
    k.ok(&["delete", "node", &gone], None);
    let state_of = |n: &str| {
        k.run(
            &[
                "get",
                "bpfapplicationstate",
                &format!("{app}-{n}"),
                "-n",
                &ns,
            ],
            None,
        )
        .ok
    };
    assert!(
        eventually(30, || !state_of(&gone)
            && !fin(&k).iter().any(|f| f.ends_with(&gone))
            && status()["ready"] == "1/1"),
        "status: {} finalizers {:?}\n{}",
        status(),
        fin(&k),
        operator.log_text()
    );
    k.ok(
        &["delete", "bpfapplication", &app, "-n", &ns, "--wait=false"],
        None,
    );
    assert!(
        eventually(30, || fin(&k).is_empty()
            && !k.run(&["get", "bpfapplication", &app, "-n", &ns], None).ok),
        "not released: {:?}\n{}",
        fin(&k),
        operator.log_text()
    );
    let log = operator.log_text();
    assert!(!log.contains("forbidden"), "{log}");
}

/// The apiserver unreachable mid-rollout (every connection of the operator and the agents cut
/// by a proxy, then restored on the same port): the watches reconnect, the operator keeps or
/// retakes its Lease, and the rollout completes on every node.
#[test]
fn a_rollout_completes_after_the_apiserver_was_unreachable_mid_way() {
    let Some((_serial, k)) = setup() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut proxy, proxied) = proxied_kubeconfig(&k, dir.path());
    rollout_through_an_outage(&k, &proxied, |operator| {
        // Cut until the operator notices (its Lease renewal or a watch fails), then restore.
        proxy.cut();
        assert!(
            eventually(60, || {
                assert_eq!(operator.exited(), None, "the operator died of the cut");
                let log = operator.log_text();
                log.contains("cannot read the operator Lease")
                    || log.contains("watch interrupted")
                    || log.contains("no longer the leader")
            }),
            "the operator did not notice the cut:\n{}",
            operator.log_text()
        );
        proxy.start();
    });
}

/// A control plane of the test's own, stopped on drop: the suite's is shared, and this one's
/// apiserver is restarted.
struct OwnControlPlane {
    dir: tempfile::TempDir,
    k: Kube,
}

impl OwnControlPlane {
    fn up() -> OwnControlPlane {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = dir.path().join("kube");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kube-testenv.sh");
        let out = std::process::Command::new("sh")
            .arg(&script)
            .args(["up", "--dir"])
            .arg(&cp)
            .output()
            .expect("kube-testenv.sh up");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let k = Kube {
            kubeconfig: cp.join("kubeconfig"),
            kubectl: kube().expect("the suite's control plane").kubectl,
        };
        OwnControlPlane { dir, k }
    }

    fn kube_testenv(&self, cmd: &str) -> std::process::Output {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kube-testenv.sh");
        std::process::Command::new("sh")
            .arg(script)
            .args([cmd, "--dir"])
            .arg(self.dir.path().join("kube"))
            .output()
            .expect("kube-testenv.sh")
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = self.kube_testenv("down");
    }
}

/// A real restart of the apiserver mid-rollout (SIGTERM, then started again on the same port
/// and etcd), on a control plane of the test's own: the operator and the agents live through
/// it and the rollout completes on every node.
#[test]
fn a_rollout_completes_across_an_apiserver_restart() {
    let Some((_serial, _suite)) = setup() else {
        return;
    };
    let cp = OwnControlPlane::up();
    cp.k.install();
    let k = &cp.k;
    rollout_through_an_outage(k, &k.kubeconfig, |operator| {
        let out = cp.kube_testenv("restart-apiserver");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(operator.exited(), None, "the operator died of the restart");
    });
}

/// An application on three nodes whose agents and operator use `kubeconfig`, a staged rollout
/// of a new revision, and `outage` once its first batch started; then the rollout must
/// complete on every node.
fn rollout_through_an_outage(
    k: &Kube,
    kubeconfig: &std::path::Path,
    outage: impl FnOnce(&mut Operator),
) {
    let ns = lease_namespace(k);
    let mut operator = Operator::start_with(kubeconfig, &ns, &unique("op-cut-"));
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let mut nodes = [
        SimNode::with_kubeconfig(k, &[(&sel, "yes")], kubeconfig.to_path_buf()),
        SimNode::with_kubeconfig(k, &[(&sel, "yes")], kubeconfig.to_path_buf()),
        SimNode::with_kubeconfig(k, &[(&sel, "yes")], kubeconfig.to_path_buf()),
    ];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let _pinger = Pinger::start(&nodes);
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(&app, &sel, &[("generation", 1)])),
    );
    assert!(
        eventually(30, || app_status(k, &app)["ready"] == "3/3"
            && rollout(k, &app)["phase"] == "Complete"),
        "status: {}\n{}",
        app_status(k, &app),
        operator.log_text()
    );
    k.ok(
        &["apply", "-f", "-"],
        Some(&rollout_app(&app, &sel, &[("generation", 2)])),
    );
    assert!(
        eventually(30, || rollout(k, &app)["nodes"]
            .as_object()
            .is_some_and(|n| n.contains_key(&nodes[0].name))),
        "no batch started: {}",
        rollout(k, &app)
    );
    outage(&mut operator);
    assert!(
        eventually(90, || {
            let r = rollout(k, &app);
            r["phase"] == "Complete"
                && r["currentRevision"] == r["targetRevision"]
                && r["nodes"].as_object().is_some_and(|n| n.len() == 3)
        }),
        "rollout: {}\n{}",
        rollout(k, &app),
        operator.log_text()
    );
    let target = rollout(k, &app)["targetRevision"]
        .as_str()
        .unwrap()
        .to_string();
    for n in &nodes {
        assert!(
            eventually(30, || running(k, &app, n).as_deref()
                == Some(target.as_str())),
            "{} does not run {target}: {:?}\n{}",
            n.name,
            state(k, &app, n),
            n.log_text()
        );
    }
}
