//! `apiary apply -f` / `delete -f` / `get applications` on the real kernel: a ClusterBpfApplication
//! with XDP, TC and tracepoint programs from one object is loaded and attached, counts pings
//! through a veth and its own getppid() calls; re-applying changes nothing; a priority change
//! reorders the chain; removing a program unloads only it; delete leaves nothing behind; a
//! bpfman.io object applies unchanged; bad objects are refused before anything is loaded.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

fn getppid_calls(n: u32) {
    Command::new(apiary_fixtures::uprobe_target())
        .arg(n.to_string())
        .output()
        .expect("run the getppid caller");
}

/// The test application: xdp_count and xdp_second chained on b's veth end (in b's netns), a
/// TC ingress program there, and a tracepoint program; `skip` leaves programs out.
fn app_yaml(name: &str, net: &NetPair, xdp_prio: u32, second_prio: u32, skip: &[&str]) -> String {
    let obj = fixture("k8s_app");
    let (ns, ifc) = (&net.ns_b, &net.if_b);
    let programs = [
        (
            "xdp_count",
            format!(
                "    type: XDP\n    xdp:\n      links:\n      - interfaceSelector: {{interfaces: [{ifc}]}}\n        networkNamespaces: {{names: [{ns}]}}\n        priority: {xdp_prio}\n"
            ),
        ),
        (
            "xdp_second",
            format!(
                "    type: XDP\n    xdp:\n      links:\n      - interfaceSelector: {{interfaces: [{ifc}]}}\n        networkNamespaces: {{names: [{ns}]}}\n        priority: {second_prio}\n        proceedOn: [Pass, DispatcherReturn]\n"
            ),
        ),
        (
            "tc_count",
            format!(
                "    type: TC\n    tc:\n      links:\n      - interfaceSelector: {{interfaces: [{ifc}]}}\n        networkNamespaces: {{names: [{ns}]}}\n        direction: Ingress\n        priority: 10\n"
            ),
        ),
        (
            "tp_getppid",
            "    type: TracePoint\n    tracepoint:\n      links:\n      - name: syscalls/sys_enter_getppid\n".to_string(),
        ),
    ];
    let mut y = format!(
        "apiVersion: apiary.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {name}\nspec:\n  nodeSelector: {{}}\n  byteCode:\n    path: {}\n  programs:\n",
        obj.display()
    );
    for (p, body) in programs.iter().filter(|(p, _)| !skip.contains(p)) {
        y.push_str(&format!("  - name: {p}\n{body}"));
    }
    y
}

fn write(dir: &tempfile::TempDir, file: &str, text: &str) -> String {
    let p = dir.path().join(file);
    std::fs::write(&p, text).expect("write yaml");
    p.display().to_string()
}

/// Program name -> (apiary id, kernel id) of the application's programs.
fn programs_of(a: &Apiary, app: &str) -> BTreeMap<String, (i64, u64)> {
    let v = a.json(&["get", "applications"]);
    v.as_array()
        .expect("array")
        .iter()
        .filter(|e| e["application"] == app)
        .flat_map(|e| e["programs"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                (p["id"].as_i64().unwrap(), p["kernel_id"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn apply(a: &Apiary, file: &str) -> Value {
    let v = a.json(&["apply", "-f", file]);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let r = v[0].clone();
    for p in r["state"]["programs"].as_array().unwrap() {
        assert_eq!(p["programLinkStatus"], "Success", "{p}");
        for l in p["links"].as_array().unwrap() {
            assert_eq!(l["linkStatus"], "Attached", "{l}");
        }
    }
    r
}

fn slot(a: &Apiary, program_id: i64, slot: u64) -> u64 {
    a.counter(&format!("{program_id}:counts"), slot)
}

fn chain_order(a: &Apiary, net: &NetPair) -> Vec<(String, u64)> {
    let v = a.json(&["get", "chain", &net.if_b, "xdp", "--netns", &net.ns_b]);
    v["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["priority"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn apply_converges_in_one_pass_and_delete_removes_everything() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("app-").to_lowercase();
    let key = format!("ClusterBpfApplication//{name}");
    let file = write(&dir, "app.yaml", &app_yaml(&name, &net, 10, 20, &[]));

    // Apply: four programs loaded, four links attached, in one command.
    let r = apply(&a, &file);
    assert_eq!(r["application"], key.as_str());
    let c = &r["changes"];
    assert_eq!(
        (c["loaded"].as_u64(), c["attached"].as_u64()),
        (Some(4), Some(4)),
        "{r}"
    );
    let progs = programs_of(&a, &key);
    assert_eq!(
        progs.keys().collect::<Vec<_>>(),
        ["tc_count", "tp_getppid", "xdp_count", "xdp_second"]
    );
    let status_ids: Vec<u64> = r["state"]["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["programId"].as_u64().unwrap())
        .collect();
    for (_, kid) in progs.values() {
        assert!(status_ids.contains(kid), "status reports kernel id {kid}");
    }
    assert_eq!(
        chain_order(&a, &net),
        [("xdp_count".into(), 10), ("xdp_second".into(), 20)]
    );

    // They run: pings through the veth reach XDP (both chain members) and TC; getppid() calls
    // reach the tracepoint program. All four share the application's one map.
    let owner = progs["xdp_count"].0;
    assert!(net.ping(5));
    getppid_calls(7);
    assert!(slot(&a, owner, 0) >= 5, "xdp_count counted the pings");
    assert!(slot(&a, owner, 1) >= 5, "xdp_second, after it in the chain");
    assert!(slot(&a, owner, 2) >= 5, "tc_count");
    assert!(slot(&a, owner, 3) >= 7, "tp_getppid");
    assert_eq!(
        slot(&a, progs["tc_count"].0, 2),
        slot(&a, owner, 2),
        "one map shared by the application's programs"
    );

    // Re-apply: nothing changes, the same kernel programs stay.
    let r = apply(&a, &file);
    let c = &r["changes"];
    for k in ["loaded", "unloaded", "attached", "detached"] {
        assert_eq!(c[k], 0, "re-apply changed {k}: {r}");
    }
    assert_eq!(programs_of(&a, &key), progs);

    // A priority change moves xdp_count behind xdp_second, on the same programs.
    write(&dir, "app.yaml", &app_yaml(&name, &net, 30, 20, &[]));
    let r = apply(&a, &file);
    assert_eq!(
        (
            r["changes"]["detached"].as_u64(),
            r["changes"]["attached"].as_u64()
        ),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(
        chain_order(&a, &net),
        [("xdp_second".into(), 20), ("xdp_count".into(), 30)]
    );
    assert_eq!(programs_of(&a, &key), progs);
    let before = slot(&a, owner, 0);
    assert!(net.ping(3));
    assert!(
        slot(&a, owner, 0) >= before + 3,
        "the moved program still runs"
    );

    // Removing a program from the YAML unloads it alone.
    write(
        &dir,
        "app.yaml",
        &app_yaml(&name, &net, 30, 20, &["tp_getppid"]),
    );
    let r = apply(&a, &file);
    assert_eq!(r["changes"]["unloaded"], 1, "{r}");
    let now = programs_of(&a, &key);
    let mut expect = progs.clone();
    let gone = expect.remove("tp_getppid").unwrap();
    assert_eq!(now, expect);
    assert!(eventually(5, || !Apiary::kernel_prog_ids().contains(&gone.1)));
    // ... and adding it back loads it alone, sharing the application's map again.
    write(&dir, "app.yaml", &app_yaml(&name, &net, 30, 20, &[]));
    let r = apply(&a, &file);
    assert_eq!(
        (
            r["changes"]["loaded"].as_u64(),
            r["changes"]["unloaded"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let back = programs_of(&a, &key)["tp_getppid"];
    let before = slot(&a, owner, 3);
    getppid_calls(4);
    assert!(
        slot(&a, owner, 3) >= before + 4,
        "the re-added program writes the shared map"
    );
    assert!(slot(&a, back.0, 3) >= before + 4);

    // Delete: nothing of it is left, in apiary or in the kernel.
    let out = a.ok(&["delete", "-f", &file]);
    assert!(out.contains("unloaded 4 program(s)"), "{out}");
    assert!(programs_of(&a, &key).is_empty());
    assert!(a.json(&["list", "links"]).as_array().unwrap().is_empty());
    assert!(a.pins().is_empty(), "pins left: {:?}", a.pins());
    let kids: Vec<u64> = progs.values().map(|(_, k)| *k).chain([back.1]).collect();
    assert!(eventually(5, || {
        let live = Apiary::kernel_prog_ids();
        kids.iter().all(|k| !live.contains(k))
    }));
    let out = a.ok(&["delete", "-f", &file]);
    assert!(out.contains("nothing loaded"), "{out}");
}

/// A ClusterBpfApplication exactly as bpfman-operator takes it (its group, priority 0,
/// bpfman's proceed-on spellings), on an interface of this host's own namespace.
#[test]
fn an_unchanged_bpfman_object_applies() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    // An interface in this host's namespace (its peer in the test's netns): bpfman objects name
    // interfaces of the node itself. Deleting the netns removes both ends.
    let root_if = format!("kr{}", &net.if_a[2..]);
    let ok = Command::new("ip")
        .args([
            "link", "add", &root_if, "type", "veth", "peer", "name", "kpeer", "netns", &net.ns_a,
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "create a veth in the root namespace");
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _gone = Gone(root_if.clone());
    let name = unique("bpfman-").to_lowercase();
    let yaml = format!(
        r#"apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  labels:
    app.kubernetes.io/name: clusterbpfapplication
  name: {name}
spec:
  nodeSelector: {{}}
  byteCode:
    path: {obj}
  programs:
    - name: xdp_count
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfaces:
                - {root_if}
            priority: 0
            proceedOn:
              - Pass
              - DispatcherReturn
    - name: tc_count
      type: TC
      tc:
        links:
          - interfaceSelector:
              interfaces:
                - {root_if}
            priority: 55
            direction: Egress
            proceedOn:
              - Pipe
              - DispatcherReturn
    - name: tp_getppid
      type: TracePoint
      tracepoint:
        links:
          - name: syscalls/sys_enter_getppid
"#,
        obj = fixture("k8s_app").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "bpfman.yaml", &yaml);
    let r = apply(&a, &file);
    assert_eq!(r["changes"]["attached"], 3, "{r}");
    let v = a.json(&["get", "chain", &root_if, "xdp"]);
    assert_eq!(v["programs"][0]["name"], "xdp_count");
    assert_eq!(v["programs"][0]["priority"], 1, "bpfman's 0 is apiary's 1");
    let progs = programs_of(&a, &format!("ClusterBpfApplication//{name}"));
    let before = slot(&a, progs["tp_getppid"].0, 3);
    getppid_calls(5);
    assert!(slot(&a, progs["tp_getppid"].0, 3) >= before + 5);
    // Re-applying is a no-op here too; delete removes it.
    let r = apply(&a, &file);
    assert_eq!(r["changes"]["loaded"], 0);
    a.ok(&["delete", "-f", &file]);
    assert!(a.program_ids().is_empty());
}

#[test]
fn bad_objects_are_refused_before_anything_is_loaded() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let good = app_yaml("good", &net, 10, 20, &[]);
    let obj = fixture("k8s_app").display().to_string();
    let cases = [
        (
            "unknown type",
            good.replace("type: TracePoint", "type: Tracepointy"),
            "spec.programs[3].type: unknown variant `Tracepointy`",
        ),
        (
            "two bytecode sources",
            good.replace(
                &format!("    path: {obj}\n"),
                &format!("    path: {obj}\n    image: {{url: 127.0.0.1:5000/x:1}}\n"),
            ),
            "spec.byteCode: byteCode needs exactly one source: image or path",
        ),
        (
            "missing member",
            good.replace(
                "    tracepoint:\n      links:\n      - name: syscalls/sys_enter_getppid\n",
                "",
            ),
            "spec.programs[3]: tracepoint configuration is required when type is TracePoint, and forbidden otherwise",
        ),
        (
            "member of another type",
            good.replace("type: TC\n", "type: TCX\n"),
            "tcx configuration is required when type is TCX, and forbidden otherwise",
        ),
        (
            "a bad second document",
            format!(
                "{}---\n{}",
                app_yaml("first", &net, 10, 20, &[]),
                good.replace("priority: 10\n", "priority: 0\n")
            ),
            "spec.programs[0].xdp.links[0].priority 0: must be from 1 (runs first) to 1000 (runs last)",
        ),
    ];
    for (what, yaml, message) in cases {
        let file = write(&dir, "bad.yaml", &yaml);
        let r = a.run(&["apply", "-f", &file]);
        assert_eq!(
            r.code,
            Some(2),
            "{what}: exit status 2 (invalid argument): {}",
            r.stderr
        );
        assert!(r.stderr.starts_with("error: "), "{what}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{what}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
        assert!(a.program_ids().is_empty(), "{what}: nothing may be loaded");
    }
    // Standard input works like a file.
    let mut child = a
        .cmd()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            good.replace("type: XDP\n    xdp:", "type: XDP\n    tc:")
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<stdin>#1"));
}

/// A program the object does not have fails alone: the application's other programs load
/// and attach, and the status says what is wrong.
#[test]
fn a_failing_program_is_reported_and_the_rest_converges() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: apiary.io/v1alpha1\nkind: BpfApplication\nmetadata: {{name: partial, namespace: team}}\nspec:\n  byteCode: {{path: {}}}\n  programs:\n  - {{name: tp_getppid, type: TracePoint, tracepoint: {{links: [{{name: syscalls/sys_enter_getppid}}]}}}}\n  - {{name: no_such_fn, type: TracePoint, tracepoint: {{links: [{{name: syscalls/sys_enter_getppid}}]}}}}\n  - {{name: xdp_count, type: XDP, xdp: {{links: [{{interfaceSelector: {{interfaces: [nosuchif0]}}}}]}}}}\n",
        fixture("k8s_app").display()
    );
    let file = write(&dir, "partial.yaml", &yaml);
    let r = a.run(&["apply", "-f", &file, "-o", "json"]);
    assert!(!r.ok, "a failed program fails the command");
    assert!(
        r.stderr
            .contains("did not fully apply: BpfApplication/team/partial"),
        "{}",
        r.stderr
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let state = &v[0]["state"];
    assert_eq!(state["appLoadStatus"], "LoadError");
    let p = |n: &str| {
        state["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(p("tp_getppid")["programLinkStatus"], "Success");
    assert!(p("tp_getppid")["programId"].as_u64().is_some());
    let missing = p("no_such_fn");
    assert_eq!(missing["programLinkStatus"], "Error");
    assert!(missing.get("programId").is_none());
    assert!(
        missing["message"].as_str().unwrap().contains("no_such_fn"),
        "{missing}"
    );
    let x = p("xdp_count");
    assert_eq!(
        x["programLinkStatus"], "Error",
        "loaded, but its link failed"
    );
    assert_eq!(x["links"][0]["linkStatus"], "AttachError");
    assert!(
        x["links"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchif0"),
        "{x}"
    );
    // The good program runs.
    let id = programs_of(&a, "BpfApplication/team/partial")["tp_getppid"].0;
    getppid_calls(3);
    assert!(slot(&a, id, 3) >= 3);
    a.ok(&["delete", "-f", &file]);
    assert!(a.program_ids().is_empty());
}

/// nodeSelector against this host's labels: not selected, nothing loads; selected (through
/// --node-label), it loads; the label gone, it unloads.
#[test]
fn node_selector_decides_and_a_lost_label_unloads() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: apiary.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata: {{name: picky}}\nspec:\n  nodeSelector: {{matchLabels: {{apiary-test: 'yes'}}}}\n  byteCode: {{path: {}}}\n  programs:\n  - {{name: tp_getppid, type: TracePoint, tracepoint: {{links: [{{name: syscalls/sys_enter_getppid}}]}}}}\n",
        fixture("k8s_app").display()
    );
    let file = write(&dir, "picky.yaml", &yaml);
    let out = a.ok(&["apply", "-f", &file, "--node-name", "n7"]);
    assert!(out.contains("not selected on node n7"), "{out}");
    assert!(a.program_ids().is_empty());
    let v = a.json(&["apply", "-f", &file, "--node-label", "apiary-test=yes"]);
    assert_eq!(v[0]["state"]["appLoadStatus"], "LoadSuccess");
    assert_eq!(a.program_ids().len(), 1);
    let v = a.json(&["apply", "-f", &file]);
    assert_eq!(v[0]["state"]["appLoadStatus"], "NotSelected");
    assert_eq!(v[0]["changes"]["unloaded"], 1);
    assert!(a.program_ids().is_empty());
}
