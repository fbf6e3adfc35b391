//! `apiary k8s manifests` against the real kube-apiserver of scripts/kube-testenv.sh: the whole
//! output passes the apiserver's own validation (a server-side dry run); then the RBAC it grants
//! is created for real, each component gets a ServiceAccount token, and the node agent runs on a
//! simulated node with that token only: it converges an application (programs counting pings)
//! and releases it on delete. Least privilege: `kubectl auth can-i` says each component may do
//! what its code needs and nothing else, and the agent, with any one of its rules (or its
//! create / delete verbs) taken away, reports the apiserver refusing exactly that.

mod common;

use common::kube::*;
use common::*;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// `apiary k8s manifests ARGS` as its documents.
fn manifests(args: &[&str]) -> (String, Vec<Value>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["k8s", "manifests"])
        .args(args)
        .output()
        .expect("apiary k8s manifests");
    let r = Run::from(out);
    assert!(r.ok, "apiary k8s manifests {args:?}: {}", r.stderr);
    let docs = serde_yaml_ng::Deserializer::from_str(&r.stdout)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .collect();
    (r.stdout, docs)
}

/// A namespace of the test's own (namespaced objects need it to exist even for a dry run).
/// Nothing empties a terminating namespace here, so it is left behind, uniquely named.
fn namespace(k: &Kube) -> String {
    let ns = unique("apiary-m").to_lowercase();
    k.ok(&["create", "namespace", &ns], None);
    ns
}

fn apply_list(k: &Kube, items: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    k.ok(&["apply", "-f", "-"], Some(&list.to_string()));
}

const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The ClusterRoles and their bindings have fixed names: the tests that make them take turns.
static RBAC_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The cluster-wide RBAC objects the test made, removed on drop.
struct RbacCleanup<'a>(&'a Kube);

impl Drop for RbacCleanup<'_> {
    fn drop(&mut self) {
        for kind in ["clusterrolebinding", "clusterrole"] {
            for name in ["apiary-agent", "apiary-operator"] {
                let _ = self
                    .0
                    .run(&["delete", kind, name, "--ignore-not-found"], None);
            }
        }
        // The Roles on the agents' Leases have fixed names in kube-node-lease.
        for kind in ["rolebinding", "role"] {
            for name in ["apiary-agent", "apiary-operator"] {
                let _ = self.0.run(
                    &[
                        "delete",
                        kind,
                        name,
                        "-n",
                        "kube-node-lease",
                        "--ignore-not-found",
                    ],
                    None,
                );
            }
        }
    }
}

/// A kubeconfig that authenticates with a token of service account `sa` in `ns`.
fn token_kubeconfig(k: &Kube, ns: &str, sa: &str, dir: &Path) -> PathBuf {
    let token = k
        .ok(&["create", "token", sa, "-n", ns, "--duration", "1h"], None)
        .trim()
        .to_string();
    assert!(!token.is_empty());
    let admin: Value =
        serde_json::from_str(&k.ok(&["config", "view", "--raw", "--minify", "-o", "json"], None))
            .expect("kubeconfig JSON");
    let cluster = &admin["clusters"][0]["cluster"];
    // JSON is YAML: the kubeconfig is written as JSON.
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"],
        }}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
        "current-context": "c",
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, config.to_string()).expect("write kubeconfig");
    path
}

/// `kubectl auth can-i` for the service account (with its groups, as the apiserver sees it).
/// `what` is RESOURCE, RESOURCE/status (the subresource) or RESOURCE/NAME; `scope` a namespace,
/// None for all of them.
fn can(k: &Kube, ns: &str, sa: &str, verb: &str, what: &str, scope: Option<&str>) -> bool {
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let group = format!("system:serviceaccounts:{ns}");
    let mut args: Vec<String> = ["auth", "can-i", verb]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match what.split_once('/') {
        Some((r, "status")) => args.extend([r.to_string(), "--subresource=status".into()]),
        _ => args.push(what.to_string()),
    }
    for (flag, value) in [
        ("--as", user.as_str()),
        ("--as-group", "system:serviceaccounts"),
        ("--as-group", group.as_str()),
        ("--as-group", "system:authenticated"),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    match scope {
        Some(n) => args.extend(["-n".to_string(), n.to_string()]),
        None => args.push("--all-namespaces".into()),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = k.run(&args, None);
    match r.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl {args:?}: {other} {}", r.stderr),
    }
}

#[test]
fn the_manifests_pass_the_apiservers_validation() {
    let Some(k) = kube() else { return };
    k.install();
    let ns = namespace(&k);
    // A selector value YAML 1.1 reads as a boolean, to prove it reaches the apiserver as text.
    let args = [
        "--namespace",
        &ns,
        "--image",
        "registry.example/apiary:test",
        "--csi",
        "--node-selector",
        "apiary-pool=y",
        "--toleration",
        "dedicated=ebpf:NoSchedule",
        "--agent-tls-secret",
        "apiary-agent-tls",
    ];
    let (yaml, docs) = manifests(&args);
    // Namespace, CRDs, CSIDriver; per component a ServiceAccount, ClusterRole, binding and a
    // Role + binding on the agents' Leases; the operator's Lease Role + binding; two workloads.
    assert_eq!(
        docs.len(),
        1 + apiary_k8s::crd::crds().len() + 1 + 2 * 5 + 2 + 2,
        "{yaml}"
    );
    let r = k.run(
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&yaml),
    );
    assert!(r.ok, "server-side dry run refused:\n{}", r.stderr);
    // What the apiserver answered: every object, validated and defaulted.
    let answer: Value = serde_json::from_str(&r.stdout).expect("kubectl JSON");
    let items = answer["items"].as_array().expect("a list");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    let want: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, want);
    let ds = items
        .iter()
        .find(|i| i["kind"] == "DaemonSet")
        .expect("the DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["apiary-pool"], "y", "{pod}");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    // The priority class it names is one every cluster has.
    k.ok(&["get", "priorityclass", "system-node-critical"], None);
    let driver = items
        .iter()
        .find(|i| i["kind"] == "CSIDriver")
        .expect("the CSIDriver");
    assert_eq!(driver["spec"]["volumeLifecycleModes"], json!(["Ephemeral"]));
    // The agent's TLS listener: its Secret mounted read-only where its flags point.
    let secret = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "agent-tls"))
        .expect("the agent-tls volume");
    assert_eq!(
        secret["secret"]["secretName"], "apiary-agent-tls",
        "{secret}"
    );
    // The agent's arguments are the real CLI's (checked by its parser, up to --help).
    let agent = &manifests(&[
        "--namespace",
        &ns,
        "--csi",
        "--agent-tls-secret",
        "apiary-agent-tls",
    ])
    .1;
    let args: Vec<String> = agent
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .and_then(|d| d["spec"]["template"]["spec"]["containers"][0]["args"].as_array())
        .expect("the agent's arguments")
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_default()
                .replace("$(NODE_NAME)", "node-x")
        })
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("apiary agent --help");
    let r = Run::from(out);
    assert!(r.ok, "apiary {args:?} refused: {}", r.stderr);
    // Nothing but the namespace was created.
    assert!(k
        .run(&["get", "daemonset", "apiary-agent", "-n", &ns], None)
        .stderr
        .contains("NotFound"));
}

#[test]
fn each_component_may_do_what_it_needs_and_nothing_more() {
    let Some(k) = kube() else { return };
    k.install();
    let ns = namespace(&k);
    let _turn = RBAC_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _cleanup = RbacCleanup(&k);
    let (_, docs) = manifests(&["--namespace", &ns]);
    let rbac: Vec<Value> = docs
        .into_iter()
        .filter(|d| RBAC_KINDS.iter().any(|k| d["kind"] == *k))
        .collect();
    apply_list(&k, rbac);

    let agent = |verb: &str, what: &str| can(&k, &ns, "apiary-agent", verb, what, None);
    // Everything the agent's code calls.
    for (verbs, what) in [
        (&["list", "watch", "patch"][..], "nodes"),
        (&["list", "watch", "patch"], "clusterbpfapplications"),
        (&["list", "watch", "patch"], "bpfapplications"),
        (
            &["create", "patch", "delete"],
            "clusterbpfapplicationstates",
        ),
        (&["create", "patch", "delete"], "bpfapplicationstates"),
        (&["patch"], "clusterbpfapplicationstates/status"),
        (&["patch"], "bpfapplicationstates/status"),
        (&["list", "watch"], "tracejobs"),
        (&["patch"], "tracejobs/status"),
    ] {
        for v in verbs {
            assert!(agent(v, what), "the agent may not {v} {what}");
        }
    }
    for v in ["create", "patch"] {
        assert!(
            can(
                &k,
                &ns,
                "apiary-agent",
                v,
                "leases",
                Some("kube-node-lease")
            ),
            "the agent may not {v} its Lease"
        );
    }
    // Nothing else: no secrets, config, pods; Nodes only patched (the trace endpoint's
    // annotation); applications are the users', their status the operator's; state objects
    // are written, never read back.
    for (v, what) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("list", "configmaps"),
        ("create", "pods"),
        ("get", "nodes"),
        ("update", "nodes"),
        ("delete", "nodes"),
        ("patch", "nodes/status"),
        ("create", "clusterbpfapplications"),
        ("delete", "clusterbpfapplications"),
        ("delete", "bpfapplications"),
        ("update", "clusterbpfapplications"),
        ("patch", "clusterbpfapplications/status"),
        ("patch", "bpfapplications/status"),
        ("get", "clusterbpfapplicationstates"),
        ("list", "clusterbpfapplicationstates"),
        ("watch", "bpfapplicationstates"),
        ("update", "clusterbpfapplicationstates"),
        ("create", "tracejobs"),
        ("delete", "tracejobs"),
        ("create", "leases"),
        ("create", "customresourcedefinitions"),
        ("impersonate", "serviceaccounts"),
        ("escalate", "clusterroles"),
        ("bind", "clusterroles"),
    ] {
        assert!(!agent(v, what), "the agent may {v} {what}");
    }

    let op = |verb: &str, what: &str, scope: Option<&str>| {
        can(&k, &ns, "apiary-operator", verb, what, scope)
    };
    for (verbs, what) in [
        (&["list", "watch", "patch"][..], "clusterbpfapplications"),
        (&["list", "watch", "patch"], "bpfapplications"),
        (&["patch"], "clusterbpfapplications/status"),
        (&["patch"], "bpfapplications/status"),
        (&["list", "watch", "delete"], "clusterbpfapplicationstates"),
        (&["list", "watch", "delete"], "bpfapplicationstates"),
        (&["list", "watch"], "nodes"),
    ] {
        for v in verbs {
            assert!(op(v, what, None), "the operator may not {v} {what}");
        }
    }
    for v in ["list", "watch"] {
        assert!(
            op(v, "leases", Some("kube-node-lease")),
            "the operator may not {v} the agents' Leases"
        );
    }
    for v in ["create", "get", "update"] {
        assert!(
            op(v, "leases/apiary-operator", Some(ns.as_str())),
            "the operator may not {v} its Lease"
        );
    }
    for (v, what, scope) in [
        ("get", "secrets", None),
        ("list", "configmaps", None),
        ("create", "clusterbpfapplications", None),
        ("delete", "clusterbpfapplications", None),
        ("delete", "bpfapplications", None),
        ("create", "clusterbpfapplicationstates", None),
        ("patch", "clusterbpfapplicationstates", None),
        ("patch", "clusterbpfapplicationstates/status", None),
        ("get", "nodes", None),
        ("patch", "nodes", None),
        ("delete", "nodes", None),
        // Leases: its own, in its namespace only.
        ("update", "leases/kube-scheduler", Some(ns.as_str())),
        ("delete", "leases/apiary-operator", Some(ns.as_str())),
        ("create", "leases", Some("kube-system")),
        ("update", "leases/apiary-operator", Some("kube-system")),
        ("update", "leases", Some("kube-node-lease")),
        ("list", "tracejobs", None),
    ] {
        assert!(
            !op(v, what, scope),
            "the operator may {v} {what} in {scope:?}"
        );
    }

    // The operator's token, used for real: its Lease may be created, read and renewed; another
    // Lease in its namespace, or one elsewhere, is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = token_kubeconfig(&k, &ns, "apiary-operator", dir.path());
    let as_operator = Kube {
        kubeconfig: cfg,
        kubectl: k.kubectl.clone(),
    };
    let lease = |name: &str, ns: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15}})
        .to_string()
    };
    as_operator.ok(&["create", "-f", "-"], Some(&lease("apiary-operator", &ns)));
    let mut got = as_operator
        .get_in("lease", "apiary-operator", &ns)
        .expect("its Lease");
    got["spec"]["holderIdentity"] = json!("renewed");
    as_operator.ok(&["replace", "-f", "-"], Some(&got.to_string()));
    k.ok(&["create", "-f", "-"], Some(&lease("someone-else", &ns)));
    let r = as_operator.run(&["get", "lease", "someone-else", "-n", &ns], None);
    assert!(!r.ok && r.stderr.contains("forbidden"), "{}", r.stderr);
    let r = as_operator.run(&["create", "-f", "-"], Some(&lease("x", "default")));
    assert!(!r.ok && r.stderr.contains("forbidden"), "{}", r.stderr);
}

impl Kube {
    /// A namespaced object as JSON, or None when it does not exist.
    fn get_in(&self, what: &str, name: &str, ns: &str) -> Option<Value> {
        let r = self.run(&["get", what, name, "-n", ns, "-o", "json"], None);
        r.ok.then(|| serde_json::from_str(&r.stdout).expect("kubectl JSON"))
    }
}

/// The answer to `GET PATH` on 127.0.0.1:`port` ("" when nothing answers).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Whether the agent's log, from byte `from`, reports the apiserver refusing `verb` on
/// `resource`.
fn refused(node: &SimNode, from: usize, verb: &str, resource: &str) -> bool {
    let log = node.log_text();
    let needle = format!("cannot {verb} resource \"{resource}\"");
    log.get(from..).is_some_and(|l| l.contains(&needle))
}

#[test]
fn the_agent_converges_with_exactly_the_rbac_the_manifests_grant() {
    if !privileged() {
        return;
    }
    let Some(k) = kube() else { return };
    k.install();
    let ns = namespace(&k);
    let _turn = RBAC_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _rbac = RbacCleanup(&k);
    let (_, docs) = manifests(&["--namespace", &ns]);
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "apiary-agent")
        .expect("the agent's ClusterRole")
        .clone();
    let rbac: Vec<Value> = docs
        .into_iter()
        .filter(|d| RBAC_KINDS.iter().any(|k| d["kind"] == *k))
        .collect();
    apply_list(&k, rbac);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = token_kubeconfig(&k, &ns, "apiary-agent", dir.path());
    let whoami = Kube {
        kubeconfig: cfg.clone(),
        kubectl: k.kubectl.clone(),
    }
    .ok(&["auth", "whoami", "-o", "json"], None);
    assert!(
        whoami.contains(&format!("system:serviceaccount:{ns}:apiary-agent")),
        "{whoami}"
    );

    // The agent with the token only: an application converges, its programs count pings, and
    // deleting it unloads and releases it.
    let sel = format!("apiary-test/{}", unique("m").to_lowercase());
    let mut node = SimNode::with_kubeconfig(&k, &[(&sel, "yes")], cfg);
    // The operator with its token only writes the applications' summaries.
    let op_cfg = token_kubeconfig(&k, &ns, "apiary-operator", dir.path());
    let operator = Operator::start_with(&op_cfg, &ns, &unique("op-m-"));
    let app = unique("mapp-").to_lowercase();
    let mut cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let obj = fixture("k8s_app");
    k.ok(&["apply", "-f", "-"], Some(&app_yaml(&app, &sel, &obj, 10)));
    assert!(
        eventually(30, || converged(&k, &app, &node, 10)),
        "no convergence with the manifests' RBAC: {:?}\n{}",
        state(&k, &app, &node),
        node.log_text()
    );
    assert!(
        eventually(30, || app_condition(&k, &app)
            == ("Success".into(), "1/1 nodes ready".into())),
        "summary: {:?}",
        app_condition(&k, &app)
    );
    // The node's finalizer and the operator's (other tests' operators may add theirs).
    let fin = finalizers(&k, &app);
    assert!(
        fin.contains(&format!("apiary.io/node-{}", node.name))
            && fin.contains(&"apiary.io/operator".to_string()),
        "finalizers: {fin:?}"
    );
    // What the liveness probe reads: the agent's metrics (on a port of the test's own).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    node.kill9();
    node.extra_args = vec!["--metrics".into(), format!("127.0.0.1:{port}")];
    node.start(&k);
    assert!(
        eventually(30, || http_get(port, "/metrics")
            .starts_with("HTTP/1.1 200")),
        "no metrics on {port}:\n{}",
        node.log_text()
    );
    assert!(
        eventually(30, || converged(&k, &app, &node, 10)),
        "not converged after the restart:\n{}",
        node.log_text()
    );
    let (xdp, _) = node.programs(&app)["xdp_count"];
    let before = node.counter(xdp, 0);
    assert!(node.net.ping(3), "ping through {}", node.name);
    assert!(
        node.counter(xdp, 0) >= before + 3,
        "the XDP program did not count"
    );
    delete_and_wait_released(&k, &app, || node.log_text());
    assert!(node.programs(&app).is_empty());
    assert!(state(&k, &app, &node).is_none());

    // A namespaced application: its state object in its namespace, with the same rights.
    let nsapp = format!("{app}-ns");
    let _ns_cleanup = Cleanup {
        k: &k,
        apps: vec![nsapp.clone()],
        namespace: Some(&ns),
    };
    let yaml = app_yaml(&nsapp, &sel, &obj, 10)
        .replace("kind: ClusterBpfApplication", "kind: BpfApplication")
        .replace(
            &format!("  name: {nsapp}\n"),
            &format!("  name: {nsapp}\n  namespace: {ns}\n"),
        );
    k.ok(&["apply", "-f", "-"], Some(&yaml));
    let ns_state = || {
        k.get_in(
            "bpfapplicationstate",
            &format!("{nsapp}-{}", node.name),
            &ns,
        )
    };
    assert!(
        eventually(30, || ns_state()
            .is_some_and(|s| condition(&s).0 == "Success")),
        "no Success state for the namespaced application: {:?}\n{}",
        ns_state(),
        node.log_text()
    );
    k.ok(
        &[
            "delete",
            "-n",
            &ns,
            "bpfapplication",
            &nsapp,
            "--wait=false",
        ],
        None,
    );
    assert!(
        eventually(30, || k.get_in("bpfapplication", &nsapp, &ns).is_none()),
        "the namespaced application was not released:\n{}",
        node.log_text()
    );
    assert!(ns_state().is_none(), "its state object was left");
    assert!(
        !node.log_text().contains("forbidden"),
        "the agent was refused something:\n{}",
        node.log_text()
    );
    assert!(
        !operator.log_text().contains("forbidden"),
        "the operator was refused something:\n{}",
        operator.log_text()
    );

    // Each rule is needed: without it (or without one verb of it), the apiserver refuses the
    // agent that very call.
    let rules = role["rules"].as_array().expect("rules").clone();
    // The rule (found by a resource it names), the verb taken away or None for the whole rule,
    // the call the apiserver must then refuse, and whether the application must be deleted to
    // make the agent try it.
    let cases: [(&str, Option<&str>, &str, &str, bool); 7] = [
        ("nodes", None, "list", "nodes", false),
        (
            "clusterbpfapplications",
            None,
            "list",
            "clusterbpfapplications",
            false,
        ),
        (
            "clusterbpfapplications",
            Some("patch"),
            "patch",
            "clusterbpfapplications",
            false,
        ),
        ("tracejobs", None, "list", "tracejobs", false),
        (
            "clusterbpfapplicationstates",
            Some("create"),
            "create",
            "clusterbpfapplicationstates",
            false,
        ),
        (
            "clusterbpfapplicationstates",
            Some("delete"),
            "delete",
            "clusterbpfapplicationstates",
            true,
        ),
        (
            "clusterbpfapplicationstates/status",
            None,
            "patch",
            "clusterbpfapplicationstates/status",
            false,
        ),
    ];
    for (i, (names, verb, call, resource, delete)) in cases.into_iter().enumerate() {
        let rule = rules
            .iter()
            .position(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == names))
            })
            .unwrap_or_else(|| panic!("no rule names {names}"));
        let mut reduced = rules.clone();
        match verb {
            None => {
                reduced.remove(rule);
            }
            Some(v) => {
                let verbs = reduced[rule]["verbs"].as_array_mut().expect("verbs");
                verbs.retain(|x| x != v);
            }
        }
        let mut r = role.clone();
        r["rules"] = Value::Array(reduced);
        node.kill9();
        // The rule is taken away before the agent starts; for a delete, only once the
        // application has converged with every rule.
        let name = format!("{app}-{i}");
        cleanup.apps.push(name.clone());
        let from = node.log_text().len();
        if delete {
            apply_list(&k, vec![role.clone()]);
            node.start(&k);
            k.ok(
                &["apply", "-f", "-"],
                Some(&app_yaml(&name, &sel, &obj, 10)),
            );
            assert!(
                eventually(30, || converged(&k, &name, &node, 10)),
                "case {i}: no convergence before the delete:\n{}",
                node.log_text()
            );
            apply_list(&k, vec![r]);
            k.ok(
                &["delete", "clusterbpfapplication", &name, "--wait=false"],
                None,
            );
        } else {
            apply_list(&k, vec![r]);
            node.start(&k);
            k.ok(
                &["apply", "-f", "-"],
                Some(&app_yaml(&name, &sel, &obj, 10)),
            );
        }
        assert!(
            eventually(30, || refused(&node, from, call, resource)),
            "case {i}: without {verb:?} of rule {rule}, the agent was not refused {call} \
             {resource}:\n{}",
            node.log_text().get(from..).unwrap_or_default()
        );
        node.kill9();
        apply_list(&k, vec![role.clone()]);
        // One application at a time (their links share the node's hooks): this one goes now,
        // its finalizer stripped; the next agent unloads what it left.
        drop(Cleanup {
            k: &k,
            apps: vec![name],
            namespace: None,
        });
    }
    drop(node);
}
