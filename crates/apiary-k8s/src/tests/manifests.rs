use crate::manifests::*;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn options() -> Options {
    Options {
        namespace: "apiary-test".into(),
        image: "registry.example/apiary:1".into(),
        ..Options::default()
    }
}

/// Every document of a YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .collect()
}

#[test]
fn the_yaml_reads_back_as_the_typed_objects_in_apply_order() {
    let mut o = options();
    o.csi = Some(DEFAULT_REGISTRAR_IMAGE.into());
    let m = manifests(&o).unwrap();
    let docs = documents(&m.to_yaml().unwrap());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CSIDriver",
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            // The agents' Leases (both components, kube-node-lease), the operator's own Lease.
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "DaemonSet",
            "Deployment",
        ]
    );
    // Lossless, the CRDs' multi-line descriptions included.
    assert_eq!(docs[1], serde_json::to_value(&m.crds[0]).unwrap());
    let n = docs.len();
    assert_eq!(docs[n - 2], serde_json::to_value(&m.daemon_set).unwrap());
    assert_eq!(docs[n - 1], serde_json::to_value(&m.deployment).unwrap());
}

/// kubectl reads YAML 1.1, where a plain `y` or `on` is a boolean: such strings are quoted.
#[test]
fn words_yaml_1_1_reads_as_booleans_are_quoted() {
    let mut o = options();
    o.node_selector = BTreeMap::from([
        ("pool".to_string(), "y".to_string()),
        ("on".to_string(), "off".to_string()),
    ]);
    o.tolerations = vec![parse_toleration("dedicated=yes:NoSchedule").unwrap()];
    let m = manifests(&o).unwrap();
    let yaml = m.to_yaml().unwrap();
    assert!(yaml.contains("pool: 'y'\n"), "{yaml}");
    assert!(yaml.contains("'on': 'off'\n"), "{yaml}");
    assert!(yaml.contains("value: 'yes'\n"), "{yaml}");
    let docs = documents(&yaml);
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    assert_eq!(ds, &serde_json::to_value(&m.daemon_set).unwrap());
    // A literal block's lines are text, never requoted.
    let text = crate::manifests::quote_yaml11_words("a: |-\n  on: y\n  - n\nb: n\n");
    assert_eq!(text, "a: |-\n  on: y\n  - n\nb: 'n'\n");
}

/// The rules of the `kind` named `name` in namespace `ns` (None: cluster-wide).
fn rules_of(docs: &[Value], kind: &str, name: &str, ns: Option<&str>) -> Vec<Value> {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == ns
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in {ns:?}"))["rules"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn rbac_is_the_tables_and_grants_nothing_wider() {
    let docs = documents(&manifests(&options()).unwrap().to_yaml().unwrap());
    const LEASES: Option<&str> = Some("kube-node-lease");
    let agent = rules_of(&docs, "ClusterRole", AGENT, None);
    assert_eq!(
        agent[0],
        json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch", "patch"]})
    );
    let agent_leases = rules_of(&docs, "Role", AGENT, LEASES);
    assert_eq!(
        agent_leases,
        [
            json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["create", "patch"]})
        ]
    );
    assert_eq!(agent.len() + agent_leases.len(), AGENT_RULES.len());
    let operator = rules_of(&docs, "ClusterRole", OPERATOR, None);
    let lease = rules_of(&docs, "Role", OPERATOR, Some("apiary-test"));
    let agents_leases = rules_of(&docs, "Role", OPERATOR, LEASES);
    assert_eq!(
        agents_leases,
        [
            json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["list", "watch"]})
        ]
    );
    assert_eq!(
        operator.len() + lease.len() + agents_leases.len(),
        OPERATOR_RULES.len()
    );
    assert_eq!(
        lease[1],
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
               "resourceNames": [OPERATOR_LEASE], "verbs": ["get", "update"]})
    );
    for r in AGENT_RULES.iter().chain(OPERATOR_RULES) {
        for v in r.verbs {
            assert!(
                ["get", "list", "watch", "create", "patch", "update", "delete"].contains(v),
                "{r:?}"
            );
        }
        for res in r.resources {
            assert!(!res.contains('*'), "{r:?}");
            assert!(
                !["secrets", "configmaps", "pods", "serviceaccounts"].contains(res),
                "{r:?}"
            );
        }
        assert!(!r.why.is_empty());
        if !r.names.is_empty() {
            // The apiserver cannot match a create or an unfiltered list by name.
            assert!(
                !r.verbs.contains(&"create") && !r.verbs.contains(&"list"),
                "{r:?}"
            );
        }
    }
    // Nodes are only read by the operator; the agent patches its own (the trace endpoint's
    // annotation) and never replaces or deletes one.
    for r in OPERATOR_RULES {
        if r.resources.contains(&"nodes") {
            assert_eq!(r.verbs, ["list", "watch"]);
        }
    }
    for r in AGENT_RULES {
        if r.resources.contains(&"nodes") {
            assert!(!r.verbs.contains(&"update") && !r.verbs.contains(&"delete"));
        }
    }
    // The bindings name the service accounts in the namespace.
    let b = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == AGENT)
        .unwrap();
    assert_eq!(
        b["subjects"],
        json!([{"kind": "ServiceAccount", "name": AGENT, "namespace": "apiary-test"}])
    );
}

#[test]
fn the_agent_daemonset_is_privileged_on_the_host_and_tolerates_every_taint_by_default() {
    let m = manifests(&options()).unwrap();
    let ds = serde_json::to_value(&m.daemon_set).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["serviceAccountName"], AGENT);
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    let c = &pod["containers"][0];
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
    assert_eq!(c["image"], "registry.example/apiary:1");
    assert_eq!(c["securityContext"]["privileged"], true);
    assert_eq!(
        c["env"][0],
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    );
    assert!(c["args"]
        .as_array()
        .unwrap()
        .contains(&json!("--node-name=$(NODE_NAME)")));
    let mounts: BTreeMap<String, (String, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_string(),
                (
                    m["mountPropagation"].as_str().unwrap_or("None").to_string(),
                    m["readOnly"] == true,
                ),
            )
        })
        .collect();
    assert_eq!(mounts["/sys/fs/bpf"], ("Bidirectional".into(), false));
    assert_eq!(
        mounts["/var/lib/kubelet/pods"],
        ("Bidirectional".into(), false)
    );
    assert_eq!(mounts["/lib/modules"], ("None".into(), true));
    for p in ["/sys/kernel/tracing", "/run/apiary", "/var/lib/apiary"] {
        assert!(mounts.contains_key(p), "{p}: {mounts:?}");
    }
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], AGENT_METRICS_PORT);

    // Given tolerations and a selector replace the defaults.
    let mut o = options();
    o.tolerations = vec![parse_toleration("gpu:NoSchedule").unwrap()];
    o.node_selector = BTreeMap::from([("pool".to_string(), "ebpf".to_string())]);
    let ds = serde_json::to_value(manifests(&o).unwrap().daemon_set).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(
        pod["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "pool": "ebpf"})
    );
}

#[test]
fn the_operator_runs_unprivileged() {
    let d = serde_json::to_value(manifests(&options()).unwrap().deployment).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], OPERATOR);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    // A scratch /tmp only, no host path.
    assert_eq!(
        pod["volumes"],
        json!([{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}])
    );
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc.get("privileged").is_none());
}

#[test]
fn csi_adds_the_driver_object_and_the_registrar() {
    assert!(manifests(&options()).unwrap().csi_driver.is_none());
    let mut o = options();
    o.csi = Some("registrar:9".into());
    let m = manifests(&o).unwrap();
    let d = serde_json::to_value(m.csi_driver.as_ref().unwrap()).unwrap();
    assert_eq!(d["metadata"]["name"], CSI_DRIVER);
    assert_eq!(
        d["spec"],
        json!({"attachRequired": false, "podInfoOnMount": true,
               "volumeLifecycleModes": ["Ephemeral"], "fsGroupPolicy": "File"})
    );
    let ds = serde_json::to_value(&m.daemon_set).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    let r = &pod["containers"][1];
    assert_eq!(r["image"], "registrar:9");
    assert!(r["args"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("--kubelet-registration-path={CSI_SOCKET}"))));
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["hostPath"]["path"] == "/var/lib/kubelet/plugins_registry"));
    // It sees the CSI socket's directory, not the daemon's socket.
    let paths: Vec<&str> = r["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(paths, ["/run/apiary/csi", "/registration"]);
    assert!(pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("--csi-endpoint={CSI_SOCKET}"))));
}

#[test]
fn options_are_checked() {
    let t = parse_toleration("k=v:NoExecute").unwrap();
    assert_eq!(
        (
            t.key.as_deref(),
            t.operator.as_deref(),
            t.value.as_deref(),
            t.effect.as_deref()
        ),
        (Some("k"), Some("Equal"), Some("v"), Some("NoExecute"))
    );
    let t = parse_toleration("k").unwrap();
    assert_eq!((t.operator.as_deref(), t.effect), (Some("Exists"), None));
    for bad in ["", "=v", "k:Sometimes", ":NoSchedule"] {
        assert!(parse_toleration(bad).is_err(), "{bad:?}");
    }
    assert!(parse_label("a=b").is_ok() && parse_label("=b").is_err() && parse_label("ab").is_err());
    for bad in ["Apiary", "-x", "x-", "a_b", "", &"x".repeat(64)] {
        let mut o = options();
        o.namespace = bad.to_string();
        let e = manifests(&o).unwrap_err().to_string();
        assert!(e.starts_with("--namespace"), "{bad:?}: {e}");
    }
}

#[test]
fn the_agent_tls_secret_gives_the_agent_its_listener() {
    let mut o = options();
    o.agent_tls_secret = Some("apiary-agent-tls".into());
    let m = manifests(&o).unwrap();
    let pod = m
        .daemon_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let agent = &pod.containers[0];
    let args = agent.args.as_ref().unwrap();
    for want in [
        format!("--listen=0.0.0.0:{AGENT_TLS_PORT}"),
        "--tls-cert=/etc/apiary/tls/tls.crt".to_string(),
        "--tls-key=/etc/apiary/tls/tls.key".to_string(),
        "--client-ca=/etc/apiary/tls/ca.crt".to_string(),
    ] {
        assert!(args.contains(&want), "{args:?}");
    }
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "agent-tls")
        .expect("the Secret's volume");
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("apiary-agent-tls")
    );
    let mount = agent
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "agent-tls")
        .expect("its mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/apiary/tls", Some(true))
    );
    // Without it, no listener.
    let plain = manifests(&options()).unwrap();
    let args = plain
        .daemon_set
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(!args.iter().any(|a| a.starts_with("--listen")), "{args:?}");
    // A name the apiserver would refuse is refused here.
    o.agent_tls_secret = Some("Bad_Name".into());
    let e = manifests(&o).unwrap_err().to_string();
    assert!(
        e.contains("--agent-tls-secret") && e.contains("lower-case"),
        "{e}"
    );
}
