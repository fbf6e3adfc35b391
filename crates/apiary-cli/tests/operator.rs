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
    let r = k.run(&["get", "lease", "apiary-operator", "-n", ns, "-o", "json"], None);
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
    let mut nodes = vec![
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
                    == format!("2/3 nodes ready, 1 without agent: {third}: no apiary agent").as_str()
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
        finalizers_now.contains(&"apiary.io/operator".to_string())
            && finalizers_now.len() == 4,
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
    k.ok(
        &["delete", "clusterbpfapplication", &app, "--wait=false"],
        None,
    );
    assert!(
        eventually(30, || k.get("clusterbpfapplication", &app).is_none()),
        "not released: {:?}\n{}",
        finalizers(&k, &app),
        operator.log_text()
    );
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
    drop(nodes);
}
