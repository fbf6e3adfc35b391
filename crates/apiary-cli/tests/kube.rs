//! Against the real kube-apiserver of scripts/kube-testenv.sh (the suite exports KUBECONFIG and
//! APIARY_KUBECTL): `apiary k8s install` and the CRDs' CEL rules; then the node agent on three
//! simulated nodes (a Node object, a network namespace with a veth pair, an agent process with
//! its own store and bpffs dir each): loaded where selected, label changes load and unload,
//! kill -9 and restart converges without doubling, delete unloads everything. The harness is
//! tests/common/kube.rs (shared with operator.rs).

mod common;

use common::kube::*;
use common::*;
use serde_json::Value;
use std::process::Command;

#[test]
fn install_applies_the_crds_and_the_apiserver_enforces_their_rules() {
    let Some(k) = kube() else { return };
    k.install();
    // Installing again changes nothing and succeeds (server-side apply).
    k.install();
    let crd = k
        .get("crd", "clusterbpfapplications.apiary.io")
        .expect("the CRD exists");
    assert_eq!(crd["spec"]["group"], "apiary.io");

    let name = unique("cel-").to_lowercase();
    // Valid: accepted. It selects no node, so no agent acts on it.
    let valid = format!(
        "apiVersion: apiary.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {name}\nspec:\n  nodeSelector: {{matchLabels: {{apiary-test/none: nowhere}}}}\n  byteCode: {{path: /opt/x.o}}\n  programs:\n  - name: p\n    type: XDP\n    xdp:\n      links:\n      - interfaceSelector: {{primaryNodeInterface: true}}\n        priority: 5\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&valid));
    let got = k
        .get("clusterbpfapplication", &name)
        .expect("stored by the apiserver");
    assert_eq!(got["spec"]["programs"][0]["xdp"]["links"][0]["priority"], 5);
    // The printer columns are served.
    let table = k.ok(&["get", "clusterbpfapplications", &name], None);
    assert!(
        table.contains("READY") && table.contains("STATUS") && table.contains(&name),
        "{table}"
    );

    // Two bytecode sources: refused with the rule's message.
    let two = valid.replace(&name, &format!("{name}-two")).replace(
        "byteCode: {path: /opt/x.o}",
        "byteCode: {path: /opt/x.o, image: {url: quay.io/x/y:1}}",
    );
    let r = k.run(&["apply", "-f", "-"], Some(&two));
    assert!(!r.ok, "two sources accepted: {}", r.stdout);
    assert!(
        r.stderr
            .contains("byteCode needs exactly one source: image or path"),
        "{}",
        r.stderr
    );
    // The member named after the type missing: refused with the rule's message.
    let missing = valid
        .replace(&name, &format!("{name}-missing"))
        .replace("    type: XDP\n    xdp:", "    type: TC\n    xdp:");
    let r = k.run(&["apply", "-f", "-"], Some(&missing));
    assert!(!r.ok, "missing member accepted: {}", r.stdout);
    assert!(
        r.stderr
            .contains("tc configuration is required when type is TC"),
        "{}",
        r.stderr
    );
    for n in [format!("{name}-two"), format!("{name}-missing")] {
        assert!(
            k.get("clusterbpfapplication", &n).is_none(),
            "{n} was stored"
        );
    }
    // An operator of a test running meanwhile may have put its finalizer on it and be gone
    // since: the cleanup strips it rather than wait.
    drop(Cleanup {
        k: &k,
        apps: vec![name.clone()],
        namespace: None,
    });
    assert!(
        eventually(30, || k.get("clusterbpfapplication", &name).is_none()),
        "{name} was not deleted"
    );
}

#[test]
fn agents_load_where_selected_follow_labels_survive_kill9_and_unload_on_delete() {
    if !privileged() {
        return;
    }
    let Some(k) = kube() else { return };
    k.install();
    let sel = format!("apiary-test/{}", unique("sel").to_lowercase());
    let mut nodes = vec![
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[(&sel, "yes")]),
        SimNode::new(&k, &[]),
    ];
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone(), format!("{app}-bad")],
        namespace: None,
    };
    // The operator writes the application's summary over the nodes.
    let _operator = own_operator(&k);
    let obj = fixture("k8s_app");
    k.ok(&["apply", "-f", "-"], Some(&app_yaml(&app, &sel, &obj, 10)));

    // Loaded on the two selected nodes, with state objects reporting kernel ids and Success.
    for n in &nodes[..2] {
        assert!(
            eventually(30, || converged(&k, &app, n, 10)),
            "node {} did not converge: {:?}\n{}",
            n.name,
            state(&k, &app, n),
            n.log_text()
        );
        let progs = n.programs(&app);
        assert_eq!(
            progs.keys().collect::<Vec<_>>(),
            ["tc_count", "tp_getppid", "xdp_count"],
            "on {}",
            n.name
        );
        let s = state(&k, &app, n).expect("state");
        assert_eq!(s["metadata"]["labels"]["apiary.io/node"], n.name.as_str());
        assert_eq!(
            s["metadata"]["labels"]["apiary.io/application"],
            app.as_str()
        );
        for p in s["status"]["programs"].as_array().expect("programs") {
            let kid = p["programId"].as_u64().expect("kernel id");
            assert_eq!(progs[p["name"].as_str().unwrap()].1, kid, "{p}");
            for l in p["links"].as_array().expect("links") {
                assert_eq!(l["linkStatus"], "Attached", "{l}");
            }
        }
        // The primary interface (holding the InternalIP) and the discovered one are the
        // node's veth end.
        let hooks: Vec<String> = s["status"]["programs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["links"].as_array().cloned().unwrap_or_default())
            .filter_map(|l| l["interfaceName"].as_str().map(String::from))
            .collect();
        assert_eq!(hooks, [n.net.if_b.clone(), n.net.if_b.clone()], "{s}");
    }
    // One finalizer per node that loaded it, and the operator's.
    assert!(
        eventually(30, || finalizers(&k, &app).len() == 3),
        "{:?}",
        finalizers(&k, &app)
    );
    // The application's summary over the nodes.
    assert!(
        eventually(30, || app_condition(&k, &app)
            == ("Success".into(), "2/2 nodes ready".into())),
        "summary: {:?}",
        app_condition(&k, &app)
    );
    // Not selected: nothing loaded, no state object.
    assert!(nodes[2].programs(&app).is_empty());
    assert!(state(&k, &app, &nodes[2]).is_none());

    // Pings through each selected node's veth are counted by that node's programs.
    for (i, n) in nodes[..2].iter().enumerate() {
        let progs = n.programs(&app);
        let (xdp, _) = progs["xdp_count"];
        let (tc, _) = progs["tc_count"];
        let before = (n.counter(xdp, 0), n.counter(tc, 2));
        assert!(n.net.ping(3 + i as u32), "ping through {}", n.name);
        let after = (n.counter(xdp, 0), n.counter(tc, 2));
        assert!(
            after.0 >= before.0 + 3 + i as u64,
            "xdp on {}: {before:?} -> {after:?}",
            n.name
        );
        assert!(
            after.1 >= before.1 + 3 + i as u64,
            "tc on {}: {before:?} -> {after:?}",
            n.name
        );
    }

    // An interface appearing in the node's namespace that discovery allows gets its link (the
    // agent polls the interfaces); removed, the link goes.
    let extra = format!("vbx{}", &nodes[0].net.if_b[2..]);
    let extra = &extra[..extra.len().min(15)];
    let tc_links = |n: &SimNode| -> Vec<String> {
        state(&k, &app, n)
            .and_then(|s| s["status"]["programs"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|p| p["name"] == "tc_count")
            .flat_map(|p| p["links"].as_array().cloned().unwrap_or_default())
            .filter(|l| l["linkStatus"] == "Attached")
            .filter_map(|l| l["interfaceName"].as_str().map(String::from))
            .collect()
    };
    let ip = |args: &[&str]| {
        let st = Command::new("ip")
            .args(["-n", &nodes[0].net.ns_b])
            .args(args)
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    // A veth pair inside the namespace (no dummy driver on every kernel); its peer's name is
    // outside what discovery allows.
    let peer = format!("xq{}", &extra[3..]);
    ip(&["link", "add", extra, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", extra, "up"]);
    assert!(
        eventually(30, || tc_links(&nodes[0]).contains(&extra.to_string())),
        "no link on the new interface: {:?}",
        tc_links(&nodes[0])
    );
    ip(&["link", "del", extra]);
    assert!(
        eventually(30, || tc_links(&nodes[0]) == [nodes[0].net.if_b.clone()]),
        "the link on the removed interface is still reported: {:?}\n{}",
        tc_links(&nodes[0]),
        nodes[0].log_text()
    );

    // A program the verifier rejects: an Error condition carrying the verifier's key line,
    // on the node's state object and in the application's summary.
    let bad = format!("{app}-bad");
    let bad_yaml = format!(
        "apiVersion: apiary.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {bad}\nspec:\n  nodeSelector: {{matchLabels: {{{sel}: \"yes\"}}}}\n  byteCode: {{path: {}}}\n  programs:\n  - name: out_of_bounds\n    type: XDP\n    xdp:\n      links:\n      - interfaceSelector: {{primaryNodeInterface: true}}\n        priority: 50\n",
        fixture("bad_verifier").display()
    );
    k.ok(&["apply", "-f", "-"], Some(&bad_yaml));
    let verifier = "outside of the allowed memory range";
    // Where, then why: the C line (from the object's BTF line info) before the verifier's words.
    let place = "bad_verifier.bpf.c:18: ";
    assert!(
        eventually(30, || state(&k, &bad, &nodes[0])
            .map(|s| condition(&s))
            .is_some_and(|(t, m)| t == "Error"
                && m.contains(place)
                && m.contains(verifier))),
        "no verifier error: {:?}",
        state(&k, &bad, &nodes[0])
    );
    assert!(
        eventually(30, || {
            let (t, m) = app_condition(&k, &bad);
            t == "Error" && m.starts_with("0/2 nodes") && m.contains(verifier)
        }),
        "summary: {:?}",
        app_condition(&k, &bad)
    );
    delete_and_wait_released(&k, &bad, String::new);

    // Label the third node: loaded there.
    k.ok(
        &["label", "node", &nodes[2].name, &format!("{sel}=yes")],
        None,
    );
    assert!(
        eventually(30, || converged(&k, &app, &nodes[2], 10)),
        "the labelled node did not converge:\n{}",
        nodes[2].log_text()
    );
    assert_eq!(nodes[2].programs(&app).len(), 3);
    assert!(
        eventually(30, || app_condition(&k, &app).1 == "3/3 nodes ready"),
        "summary: {:?}",
        app_condition(&k, &app)
    );
    // Remove the label: unloaded, state object and finalizer gone.
    k.ok(&["label", "node", &nodes[2].name, &format!("{sel}-")], None);
    assert!(
        eventually(30, || nodes[2].programs(&app).is_empty()
            && state(&k, &app, &nodes[2]).is_none()
            && !finalizers(&k, &app)
                .iter()
                .any(|f| f.ends_with(&nodes[2].name))),
        "not unloaded from the unlabelled node:\n{}",
        nodes[2].log_text()
    );

    // kill -9 an agent, change the application meanwhile, restart: it converges, adopting
    // the programs the change keeps (same kernel ids), and nothing is doubled.
    let before = nodes[1].programs(&app);
    nodes[1].kill9();
    k.ok(&["apply", "-f", "-"], Some(&app_yaml(&app, &sel, &obj, 30)));
    assert!(eventually(30, || converged(&k, &app, &nodes[0], 30)));
    nodes[1].start(&k);
    assert!(
        eventually(30, || converged(&k, &app, &nodes[1], 30)),
        "the restarted agent did not converge: {:?}\n{}",
        state(&k, &app, &nodes[1]),
        nodes[1].log_text()
    );
    let after = nodes[1].programs(&app);
    assert_eq!(
        before, after,
        "programs reloaded or doubled across the restart"
    );
    let links = nodes[1].json(&["list", "links"]);
    assert_eq!(links.as_array().map(Vec::len), Some(3), "{links}");

    // Delete the application: unloaded everywhere, finalizers gone, then the object; no pins.
    delete_and_wait_released(&k, &app, String::new);
    for n in &nodes {
        assert!(n.programs(&app).is_empty(), "left on {}", n.name);
        assert!(state(&k, &app, n).is_none(), "state left for {}", n.name);
        assert!(
            n.apiary.pins().is_empty(),
            "pins left on {}: {:?}",
            n.name,
            n.apiary.pins()
        );
    }
    for n in &mut nodes {
        n.kill9();
    }
}

#[test]
fn programs_keep_running_while_the_apiserver_is_unreachable_and_the_agent_catches_up() {
    if !privileged() {
        return;
    }
    let Some(k) = kube() else { return };
    k.install();
    // An operator of the test's own (operators of other tests may put their finalizer on any
    // application and be gone by its deletion; a live one removes it).
    let _operator = own_operator(&k);
    // The agent reaches the apiserver through a proxy the test cuts.
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, proxied) = proxied_kubeconfig(&k, dir.path());

    let sel = format!("apiary-test/{}", unique("cut").to_lowercase());
    let mut node = SimNode::with_kubeconfig(&k, &[(&sel, "yes")], proxied);
    let app = unique("app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let obj = fixture("k8s_app");
    k.ok(&["apply", "-f", "-"], Some(&app_yaml(&app, &sel, &obj, 10)));
    assert!(
        eventually(30, || converged(&k, &app, &node, 10)),
        "not converged: {}",
        node.log_text()
    );
    let before = node.programs(&app);

    // Cut: the agent notices, and the programs keep running (they count pings).
    proxy.cut();
    assert!(
        eventually(30, || node.log_text().contains("watch interrupted")),
        "the agent did not notice the outage:\n{}",
        node.log_text()
    );
    let (xdp, _) = before["xdp_count"];
    let count = node.counter(xdp, 0);
    assert!(node.net.ping(3));
    assert!(
        node.counter(xdp, 0) >= count + 3,
        "XDP stopped counting during the outage"
    );
    assert_eq!(
        node.programs(&app),
        before,
        "programs changed during the outage"
    );
    assert!(
        node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        node.log_text()
    );

    // Changed meanwhile; once the apiserver is reachable again the agent catches up.
    k.ok(&["apply", "-f", "-"], Some(&app_yaml(&app, &sel, &obj, 30)));
    proxy.start();
    assert!(
        eventually(60, || converged(&k, &app, &node, 30)),
        "not converged after the outage: {:?}\n{}",
        state(&k, &app, &node),
        node.log_text()
    );
    assert_eq!(
        node.programs(&app),
        before,
        "programs reloaded after the outage"
    );

    delete_and_wait_released(&k, &app, String::new);
    assert!(node.programs(&app).is_empty());
    node.kill9();
}

#[test]
fn a_namespaced_application_gets_its_state_object_in_its_namespace() {
    if !privileged() {
        return;
    }
    let Some(k) = kube() else { return };
    k.install();
    let _operator = own_operator(&k);
    // A namespace that is never deleted (no controller-manager empties terminating ones).
    let ns = "apiary-test";
    let _ = k.run(&["create", "namespace", ns], None);
    let sel = format!("apiary-test/{}", unique("ns").to_lowercase());
    let mut node = SimNode::new(&k, &[(&sel, "yes")]);
    let app = unique("nsapp-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: Some(ns),
    };
    let yaml = app_yaml(&app, &sel, &fixture("k8s_app"), 10)
        .replace("kind: ClusterBpfApplication", "kind: BpfApplication")
        .replace(
            &format!("  name: {app}\n"),
            &format!("  name: {app}\n  namespace: {ns}\n"),
        );
    k.ok(&["apply", "-f", "-"], Some(&yaml));
    let state_name = format!("{app}-{}", node.name);
    let get_state = || {
        let r = k.run(
            &[
                "get",
                "-n",
                ns,
                "bpfapplicationstate",
                &state_name,
                "-o",
                "json",
            ],
            None,
        );
        r.ok.then(|| serde_json::from_str::<Value>(&r.stdout).expect("JSON"))
    };
    assert!(
        eventually(30, || get_state()
            .is_some_and(|s| condition(&s).0 == "Success")),
        "no Success state: {:?}\n{}",
        get_state(),
        node.log_text()
    );
    let key = format!("BpfApplication/{ns}/{app}");
    let held = node.json(&["get", "applications"]);
    let programs = held
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["application"] == key.as_str())
        .map(|e| e["programs"].as_array().map(Vec::len).unwrap_or(0));
    assert_eq!(programs, Some(3), "{held}");
    k.ok(
        &["delete", "-n", ns, "bpfapplication", &app, "--wait=false"],
        None,
    );
    assert!(
        eventually(30, || !k
            .run(&["get", "-n", ns, "bpfapplication", &app], None)
            .ok),
        "not released:\n{}",
        node.log_text()
    );
    assert!(get_state().is_none(), "state object left");
    assert!(node
        .json(&["get", "applications"])
        .as_array()
        .unwrap()
        .is_empty());
    node.kill9();
}

/// kubectl apply of a ClusterBpfApplication whose bytecode is an image in a registry on
/// 127.0.0.1 (built and pushed with apiary's own image commands): the agent pulls it, loads and
/// attaches its programs on the selected node, the store records the image's digest, pings are
/// counted, and deleting the application releases everything.
#[test]
fn an_application_from_an_image_in_the_test_registry_runs_where_selected() {
    if !privileged() {
        return;
    }
    let Some(k) = kube() else { return };
    k.install();
    let _operator = own_operator(&k);
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = apiary_fixtures::RegistryProcess::start(dir.path(), &|_| String::new());
    let image = format!("{}/apiary/k8s-app:v1", registry.addr);
    let builder = Apiary::new();
    let obj = fixture("k8s_app");
    builder.ok(&[
        "image",
        "build",
        "--bytecode",
        obj.to_str().unwrap(),
        "-t",
        &image,
    ]);
    builder.ok(&["image", "push", &image, "--tls-verify=false"]);
    let config = dir.path().join("apiary.toml");
    std::fs::write(
        &config,
        format!("[images]\ninsecure_registries = [\"{}\"]\n", registry.addr),
    )
    .expect("config");

    let sel = format!("apiary-test/{}", unique("img").to_lowercase());
    let mut node = SimNode::new(&k, &[(&sel, "yes")]);
    node.kill9();
    node.config = Some(config);
    node.start(&k);
    let app = unique("img-app-").to_lowercase();
    let _cleanup = Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let yaml = app_yaml(&app, &sel, &obj, 20).replace(
        &format!("    path: {}\n", obj.display()),
        &format!("    image:\n      url: {image}\n      imagePullPolicy: IfNotPresent\n"),
    );
    assert!(yaml.contains("image:"), "{yaml}");
    k.ok(&["apply", "-f", "-"], Some(&yaml));
    assert!(
        eventually(30, || converged(&k, &app, &node, 20)),
        "did not converge: {:?}\n{}",
        state(&k, &app, &node),
        node.log_text()
    );
    let progs = node.programs(&app);
    assert_eq!(
        progs.keys().collect::<Vec<_>>(),
        ["tc_count", "tp_getppid", "xdp_count"]
    );
    let (xdp, _) = progs["xdp_count"];
    let p = node.json(&["get", "program", &xdp.to_string()]);
    let source = p["source"].as_str().unwrap_or_default();
    assert!(
        source.starts_with(&format!("{}/apiary/k8s-app@sha256:", registry.addr)),
        "the store records the image's digest: {source}"
    );
    let before = node.counter(xdp, 0);
    assert!(node.net.ping(5), "pings through the node's veth");
    assert!(
        eventually(10, || node.counter(xdp, 0) >= before + 5),
        "the image's XDP program counted the pings"
    );

    k.ok(
        &["delete", "clusterbpfapplication", &app, "--wait=false"],
        None,
    );
    assert!(
        eventually(30, || node.programs(&app).is_empty()
            && k.get("clusterbpfapplication", &app).is_none()),
        "deleting the application unloads it:\n{}",
        node.log_text()
    );
}
