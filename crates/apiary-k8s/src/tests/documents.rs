use crate::crd::*;
use crate::document::{parse, AppKey, AppKind};
use crate::validate::problems;

/// A ClusterBpfApplication as bpfman-operator's documentation writes one (its newest schema).
const BPFMAN: &str = r#"
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  labels:
    app.kubernetes.io/name: clusterbpfapplication
  name: clusterbpfapplication-sample
spec:
  nodeSelector: {}
  byteCode:
    image:
      url: quay.io/bpfman-bytecode/go-app-counter:latest
      imagePullPolicy: IfNotPresent
  globalData:
    sampling: AgAAAA==
  programs:
    - name: kprobe_counter
      type: KProbe
      kprobe:
        links:
          - function: try_to_wake_up
            offset: 0
    - name: tracepoint_kill_recorder
      type: TracePoint
      tracepoint:
        links:
          - name: syscalls/sys_enter_kill
    - name: stats
      type: TC
      tc:
        links:
          - interfaceSelector:
              primaryNodeInterface: true
            priority: 55
            direction: Ingress
          - interfaceSelector:
              interfaces:
                - eth0
            priority: 0
            direction: Egress
            proceedOn:
              - Pipe
              - DispatcherReturn
            networkNamespaces:
              namespace: bpfman
              pods:
                matchLabels:
                  name: bpfman-daemon
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfacesDiscoveryConfig:
                interfaceAutoDiscovery: true
                excludeInterfaces: [lo]
                allowedInterfaces: [/eth*/]
            priority: 55
    - name: uprobe_counter
      type: UProbe
      uprobe:
        links:
          - function: malloc
            target: libc
            containers:
              namespace: bpfman
              pods:
                matchLabels:
                  name: bpfman-daemon
              containerNames:
                - bpfman
    - name: fentry_test
      type: FEntry
      fentry:
        function: do_unlinkat
        links:
          - mode: Attach
"#;

#[test]
fn a_bpfman_object_reads_unchanged_and_is_valid() {
    let apps = parse(BPFMAN, "bpfman.yaml").unwrap();
    assert_eq!(apps.len(), 1);
    let a = &apps[0];
    assert_eq!(a.group, "bpfman.io");
    assert_eq!(
        a.key,
        AppKey {
            kind: AppKind::ClusterBpfApplication,
            namespace: None,
            name: "clusterbpfapplication-sample".into()
        }
    );
    assert_eq!(
        a.key.to_string(),
        "ClusterBpfApplication//clusterbpfapplication-sample"
    );
    assert_eq!(a.key.to_string().parse::<AppKey>().unwrap(), a.key);
    assert_eq!(problems(&a.spec), Vec::<String>::new());
    assert_eq!(a.spec.global_data["sampling"].0, vec![2, 0, 0, 0]);
    let tc = a.spec.programs[2].tc.as_ref().unwrap();
    // bpfman's priority 0 (first) is apiary's 1.
    assert_eq!(tc.links[1].priority, 1);
    assert_eq!(
        tc.links[1].proceed_on,
        [TcProceedOn::Pipe, TcProceedOn::DispatcherReturn]
    );
    assert_eq!(a.spec.programs[0].ty, BpfProgramType::KProbe);
    // The same object in apiary's group keeps its priority 0, which apiary refuses.
    let ours = BPFMAN.replace("bpfman.io/v1alpha1", "apiary.io/v1alpha1");
    let apps = parse(&ours, "ours.yaml").unwrap();
    assert_eq!(apps[0].key, a.key, "the group is not part of the identity");
    let p = problems(&apps[0].spec);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("spec.programs[2].tc.links[1].priority 0"),
        "{p:?}"
    );
}

#[test]
fn several_documents_lists_and_empty_documents() {
    let text = format!(
        "---\n# only a comment\n---\n{}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: apiary.io/v1alpha1\n  kind: BpfApplication\n  metadata: {{name: b, namespace: team}}\n  spec:\n    byteCode: {{path: /x.o}}\n    programs: [{{name: f, type: TracePoint, tracepoint: {{links: [{{name: a/b}}]}}}}]\n- apiVersion: apiary.io/v1alpha1\n  kind: BpfApplication\n  metadata: {{name: c}}\n  spec:\n    byteCode: {{path: /x.o}}\n    programs: [{{name: f, type: TracePoint, tracepoint: {{}}}}]\n",
        BPFMAN
    );
    let apps = parse(&text, "many.yaml").unwrap();
    let keys: Vec<String> = apps.iter().map(|a| a.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "ClusterBpfApplication//clusterbpfapplication-sample",
            "BpfApplication/team/b",
            "BpfApplication/default/c"
        ]
    );
    assert_eq!(apps[1].origin, "many.yaml#3.items[0]");
    // Links default to none.
    assert!(apps[2].spec.programs[0]
        .tracepoint
        .as_ref()
        .unwrap()
        .links
        .is_empty());
}

fn err(text: &str) -> String {
    parse(text, "t.yaml").unwrap_err().to_string()
}

const HEAD: &str =
    "apiVersion: apiary.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata: {name: a}\n";

#[test]
fn documents_that_are_not_applications_are_refused_with_the_reason() {
    assert!(
        err("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {}\n")
            .contains("apiVersion \"apps/v1\" is not one apiary applies")
    );
    assert!(
        err("apiVersion: apiary.io/v1alpha1\nkind: BpfProgram\nmetadata: {name: a}\n")
            .contains("kind \"BpfProgram\" is not an application")
    );
    assert!(
        err("apiVersion: apiary.io/v1alpha1\nkind: BpfApplication\nspec: {}\n")
            .contains("metadata.name is missing")
    );
    assert!(err("apiVersion: apiary.io/v1alpha1\nkind: BpfApplication\nmetadata: {name: Bad_Name}\nspec: {}\n")
        .contains("metadata.name \"Bad_Name\""));
    assert!(err("kind: [").contains("t.yaml#1: not valid YAML"));
    let e = err(&format!(
        "{HEAD}spec:\n  byteCode: {{path: /x.o}}\n  programs: [{{name: f, type: Tracepoint}}]\n"
    ));
    assert!(
        e.contains("spec.programs[0].type: unknown variant `Tracepoint`"),
        "{e}"
    );
    let e = err(&format!("{HEAD}spec:\n  byteCode: {{path: /x.o}}\n  programs: [{{name: f, type: XDP, xdp: {{links: [{{interfaceSelector: {{interfaces: [a]}}, priorty: 3}}]}}}}]\n"));
    assert!(
        e.contains("unknown field(s): spec.programs[0].xdp.links[0].priorty"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}spec:\n  byteCode: {{path: /x.o}}\n  globalData: {{x: '%%%'}}\n  programs: []\n"
    ));
    assert!(e.contains("spec.globalData.x: not base64"), "{e}");
}

fn invalid(spec_yaml: &str) -> Vec<String> {
    problems(&super::spec(spec_yaml))
}

#[test]
fn validation_names_each_problem_with_its_path() {
    let p = invalid(
        "byteCode: {path: /x.o, image: {url: r/x:1}}\nprograms: [{name: f, type: XDP, xdp: {}}]",
    );
    assert_eq!(
        p,
        ["spec.byteCode: byteCode needs exactly one source: image or path"]
    );
    let p = invalid("byteCode: {}\nprograms: [{name: f, type: XDP, xdp: {}}]");
    assert_eq!(
        p,
        ["spec.byteCode: byteCode needs exactly one source: image or path"]
    );
    let p = invalid("byteCode: {path: /x.o}\nprograms: [{name: f, type: XDP}]");
    assert_eq!(p, ["spec.programs[0]: xdp configuration is required when type is XDP, and forbidden otherwise"]);
    let p = invalid("byteCode: {path: /x.o}\nprograms: [{name: f, type: XDP, xdp: {}, tc: {}}]");
    assert_eq!(p, ["spec.programs[0]: tc configuration is required when type is TC, and forbidden otherwise"]);
    let p = invalid("byteCode: {path: /x.o}\nprograms: []");
    assert_eq!(p, ["spec.programs: at least one program is required"]);
    let p = invalid("byteCode: {path: /x.o}\nprograms: [{name: f, type: XDP, xdp: {}}, {name: f, type: XDP, xdp: {}}, {name: 9x, type: XDP, xdp: {}}]");
    assert_eq!(
        p,
        [
            "spec.programs[1].name \"f\": declared twice",
            "spec.programs[2].name \"9x\": must be a C identifier of 1 to 64 characters",
        ]
    );
    let p = invalid("byteCode: {path: /x.o}\nprograms: [{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [a], primaryNodeInterface: true}, priority: 1001}]}}]");
    assert_eq!(p, [
        "spec.programs[0].xdp.links[0].interfaceSelector: exactly one of interfaces, primaryNodeInterface or interfacesDiscoveryConfig",
        "spec.programs[0].xdp.links[0].priority 1001: must be from 1 (runs first) to 1000 (runs last)",
    ]);
    let p = invalid("byteCode: {path: /x.o}\nprograms: [{name: f, type: TC, tc: {links: [{interfaceSelector: {primaryNodeInterface: false}, direction: Ingress, networkNamespaces: {names: [a], pods: {}}}]}}]");
    assert_eq!(p, [
        "spec.programs[0].tc.links[0].interfaceSelector: primaryNodeInterface accepts only true",
        "spec.programs[0].tc.links[0].networkNamespaces: networkNamespaces selects by pods or by names, exactly one of them",
    ]);
    let p = invalid("byteCode: {path: /x.o}\nprograms: [{name: f, type: KRetProbe, kretprobe: {links: [{function: x, offset: 4}]}}, {name: g, type: UProbe, uprobe: {links: [{target: libc}]}}, {name: h, type: TracePoint, tracepoint: {links: [{name: nocategory}]}}]");
    assert_eq!(p, [
        "spec.programs[0].kretprobe.links[0].offset: a kretprobe's offset must be 0",
        "spec.programs[1].uprobe.links[0]: a uprobe needs a function or a non-zero offset",
        "spec.programs[2].tracepoint.links[0].name \"nocategory\": expected CATEGORY/NAME, e.g. syscalls/sys_enter_kill",
    ]);
    let p = invalid("byteCode: {path: /x.o}\nnodeSelector: {matchExpressions: [{key: a, operator: Near}, {key: b, operator: In}]}\nprograms: [{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfacesDiscoveryConfig: {allowedInterfaces: ['/(/']}}}]}}]");
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].contains("unknown operator \"Near\""));
    assert!(p[1].contains("operator In needs values"));
    assert!(p[2].contains("allowedInterfaces \"/(/\""));
}
