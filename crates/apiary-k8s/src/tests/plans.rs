use super::spec;
use crate::crd::*;
use crate::facts::*;
use crate::plan::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn names(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

/// Node n1 (zone=a, role=edge): eth0 (primary), eth1, veth7, lo; netns `blue` with b0 and lo;
/// two pods of app=web (one in ns shop, one in ns lab) and one of app=db.
fn node() -> NodeFacts {
    let pod = |ns: &str, name: &str, app: &str, netns: &str, pid: i32| PodFacts {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        netns: PathBuf::from(netns),
        containers: vec![
            ContainerFacts {
                name: "main".into(),
                pid,
            },
            ContainerFacts {
                name: "sidecar".into(),
                pid: pid + 1,
            },
        ],
    };
    NodeFacts {
        name: "n1".into(),
        labels: BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("role".to_string(), "edge".to_string()),
        ]),
        root: NetnsFacts {
            name: None,
            path: None,
            interfaces: names(&["eth0", "eth1", "lo", "veth7"]),
            primary: Some("eth0".into()),
        },
        netns: vec![
            NetnsFacts {
                name: Some("blue".into()),
                path: Some("/var/run/netns/blue".into()),
                interfaces: names(&["b0", "lo"]),
                primary: Some("b0".into()),
            },
            NetnsFacts {
                name: None,
                path: Some("/proc/100/ns/net".into()),
                interfaces: names(&["eth0", "lo"]),
                primary: Some("eth0".into()),
            },
        ],
        pods: vec![
            pod("shop", "web-1", "web", "/proc/100/ns/net", 100),
            pod("lab", "web-2", "web", "/proc/200/ns/net", 200),
            pod("shop", "db-1", "db", "/proc/300/ns/net", 300),
        ],
    }
}

/// Plan one program from its YAML entry.
fn one(program: &str) -> DesiredProgram {
    let s = spec(&format!("byteCode: {{path: /o.o}}\nprograms:\n- {program}"));
    assert_eq!(
        crate::validate::problems(&s),
        Vec::<String>::new(),
        "test spec is invalid"
    );
    let p = plan(&s, &node());
    assert!(p.selected);
    p.programs.into_iter().next().unwrap()
}

fn hooks(p: &DesiredProgram) -> Vec<String> {
    p.links.iter().map(|l| l.spec.describe()).collect()
}

fn problems(p: &DesiredProgram) -> Vec<String> {
    p.problems
        .iter()
        .map(|p| format!("{}: {}", p.link, p.message))
        .collect()
}

#[test]
fn node_selector_follows_kubernetes_semantics() {
    let with = |sel: &str| {
        let s = spec(&format!(
            "nodeSelector: {sel}\nbyteCode: {{path: /o.o}}\nprograms: [{{name: f, type: TracePoint, tracepoint: {{links: [{{name: a/b}}]}}}}]"
        ));
        let p = plan(&s, &node());
        assert_eq!(p.programs.is_empty(), !p.selected);
        p.selected
    };
    assert!(with("{}"));
    assert!(with("{matchLabels: {zone: a}}"));
    assert!(with("{matchLabels: {zone: a, role: edge}}"));
    assert!(!with("{matchLabels: {zone: b}}"));
    assert!(!with("{matchLabels: {zone: a, gpu: 'yes'}}"));
    assert!(with(
        "{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}"
    ));
    assert!(!with(
        "{matchExpressions: [{key: zone, operator: In, values: [b]}]}"
    ));
    assert!(!with(
        "{matchExpressions: [{key: zone, operator: NotIn, values: [a]}]}"
    ));
    assert!(with(
        "{matchExpressions: [{key: gpu, operator: NotIn, values: [a]}]}"
    ));
    assert!(with("{matchExpressions: [{key: role, operator: Exists}]}"));
    assert!(!with("{matchExpressions: [{key: gpu, operator: Exists}]}"));
    assert!(with(
        "{matchExpressions: [{key: gpu, operator: DoesNotExist}]}"
    ));
    assert!(!with(
        "{matchExpressions: [{key: zone, operator: DoesNotExist}]}"
    ));
    assert!(!with(
        "{matchLabels: {zone: a}, matchExpressions: [{key: role, operator: In, values: [core]}]}"
    ));
}

#[test]
fn interfaces_by_name_primary_and_discovery() {
    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth1, eth9]}, priority: 50}]}}");
    assert_eq!(hooks(&p), ["xdp eth1 prio=50 mode=auto"]);
    assert_eq!(problems(&p), ["0: interface eth9 not found in node n1"]);
    assert_eq!(
        p.links[0].info,
        LinkInfo {
            interface: Some("eth1".into()),
            netns: None,
            direction: None,
            priority: Some(50),
        }
    );

    let p = one(
        "{name: f, type: XDP, xdp: {links: [{interfaceSelector: {primaryNodeInterface: true}}]}}",
    );
    assert_eq!(
        hooks(&p),
        ["xdp eth0 prio=1000 mode=auto"],
        "priority defaults to 1000"
    );

    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfacesDiscoveryConfig: {interfaceAutoDiscovery: true}}}]}}");
    assert_eq!(
        hooks(&p),
        [
            "xdp eth0 prio=1000 mode=auto",
            "xdp eth1 prio=1000 mode=auto",
            "xdp veth7 prio=1000 mode=auto"
        ],
        "lo is excluded by default"
    );
    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfacesDiscoveryConfig: {excludeInterfaces: [eth0]}}}]}}");
    assert_eq!(
        hooks(&p),
        [
            "xdp eth1 prio=1000 mode=auto",
            "xdp lo prio=1000 mode=auto",
            "xdp veth7 prio=1000 mode=auto"
        ]
    );
    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfacesDiscoveryConfig: {allowedInterfaces: ['/^eth[0-9]$/', veth7, lo]}}}]}}");
    assert_eq!(
        hooks(&p),
        [
            "xdp eth0 prio=1000 mode=auto",
            "xdp eth1 prio=1000 mode=auto",
            "xdp veth7 prio=1000 mode=auto"
        ],
        "exclusion wins over allowance"
    );
}

#[test]
fn discovery_alone() {
    let present = names(&["lo", "eth0", "veth1", "br-x", "eth0"]).unwrap();
    let d = |y: &str| discover(&serde_yaml_ng::from_str(y).unwrap(), &present);
    assert_eq!(d("{}"), ["br-x", "eth0", "veth1"]);
    assert_eq!(d("{allowedInterfaces: ['/^br-/']}"), ["br-x"]);
    assert_eq!(
        d("{allowedInterfaces: []}"),
        Vec::<String>::new(),
        "an empty allow list allows nothing"
    );
    assert_eq!(
        d("{excludeInterfaces: []}"),
        ["br-x", "eth0", "lo", "veth1"]
    );
}

#[test]
fn network_namespaces_by_name_and_by_pod() {
    let p = one("{name: f, type: TC, tc: {links: [{interfaceSelector: {interfaces: [b0]}, direction: Egress, priority: 7, networkNamespaces: {names: [blue, /var/run/netns/green]}}]}}");
    // blue is known and has b0; green is not known, so the name is used as given.
    assert_eq!(
        hooks(&p),
        [
            "tc b0 egress prio=7 netns=/var/run/netns/blue",
            "tc b0 egress prio=7 netns=/var/run/netns/green",
        ]
    );
    assert_eq!(p.links[0].info.direction, Some(Direction::Egress));
    assert_eq!(
        p.links[0].info.netns,
        Some(PathBuf::from("/var/run/netns/blue"))
    );

    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth0]}, networkNamespaces: {names: [blue]}}]}}");
    assert!(hooks(&p).is_empty());
    assert_eq!(
        problems(&p),
        ["0: interface eth0 not found in network namespace blue on node n1"]
    );

    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {primaryNodeInterface: true}, networkNamespaces: {names: [blue, green]}}]}}");
    assert_eq!(
        hooks(&p),
        ["xdp b0 netns=/var/run/netns/blue prio=1000 mode=auto"]
    );
    assert_eq!(problems(&p), ["0: network namespace green on node n1 has no primary interface (none holds its address)"]);

    let p = one("{name: f, type: TCX, tcx: {links: [{interfaceSelector: {interfacesDiscoveryConfig: {}}, direction: Ingress, networkNamespaces: {names: [green]}}]}}");
    assert_eq!(
        problems(&p),
        ["0: cannot discover interfaces: network namespace green on node n1 is not known"]
    );

    // Pods: the label selector, and the namespace when given.
    let p = one("{name: f, type: TCX, tcx: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: Ingress, priority: 3, networkNamespaces: {pods: {matchLabels: {app: web}}}}]}}");
    assert_eq!(
        hooks(&p),
        [
            "tcx eth0 ingress prio=3 netns=/proc/100/ns/net",
            "tcx eth0 ingress prio=3 netns=/proc/200/ns/net",
        ]
    );
    let p = one("{name: f, type: TCX, tcx: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: Ingress, networkNamespaces: {namespace: shop, pods: {matchLabels: {app: web}}}}]}}");
    assert_eq!(
        hooks(&p),
        ["tcx eth0 ingress prio=1000 netns=/proc/100/ns/net"]
    );
    let p = one("{name: f, type: TCX, tcx: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: Ingress, networkNamespaces: {namespace: lab, pods: {matchLabels: {app: db}}}}]}}");
    assert!(hooks(&p).is_empty());
    assert_eq!(
        problems(&p),
        ["0: no pod on node n1 matches networkNamespaces.pods in namespace lab"]
    );
}

#[test]
fn the_member_named_after_the_type_gives_the_links() {
    let cases: &[(&str, apiary_core::ProgramType, &[&str])] = &[
        ("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth0]}, priority: 1}]}}", apiary_core::ProgramType::Xdp, &["xdp eth0 prio=1 mode=auto"]),
        ("{name: f, type: TC, tc: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: Ingress}]}}", apiary_core::ProgramType::Tc, &["tc eth0 ingress prio=1000"]),
        ("{name: f, type: TCX, tcx: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: Egress, priority: 9}]}}", apiary_core::ProgramType::Tcx, &["tcx eth0 egress prio=9"]),
        ("{name: f, type: FEntry, fentry: {function: do_unlinkat, links: [{mode: Attach}]}}", apiary_core::ProgramType::Fentry, &["fentry"]),
        ("{name: f, type: FExit, fexit: {function: do_unlinkat, links: [{mode: Attach}]}}", apiary_core::ProgramType::Fexit, &["fexit"]),
        ("{name: f, type: FEntry, fentry: {function: do_unlinkat}}", apiary_core::ProgramType::Fentry, &[]),
        ("{name: f, type: KProbe, kprobe: {links: [{function: try_to_wake_up, offset: 8}]}}", apiary_core::ProgramType::Kprobe, &["kprobe try_to_wake_up+0x8"]),
        ("{name: f, type: KRetProbe, kretprobe: {links: [{function: try_to_wake_up}]}}", apiary_core::ProgramType::Kprobe, &["kretprobe try_to_wake_up+0x0"]),
        ("{name: f, type: UProbe, uprobe: {links: [{target: libc, function: malloc, pid: 42}]}}", apiary_core::ProgramType::Uprobe, &["uprobe libc:malloc+0x0 pid=42"]),
        ("{name: f, type: URetProbe, uretprobe: {links: [{target: /bin/sh, offset: 16}]}}", apiary_core::ProgramType::Uprobe, &["uretprobe /bin/sh:+0x10"]),
        ("{name: f, type: TracePoint, tracepoint: {links: [{name: syscalls/sys_enter_kill}, {name: sched/sched_switch}]}}", apiary_core::ProgramType::Tracepoint, &["tracepoint syscalls/sys_enter_kill", "tracepoint sched/sched_switch"]),
        ("{name: f, type: RawTracePoint, rawTracepoint: {links: [{name: sys_enter}]}}", apiary_core::ProgramType::RawTracepoint, &["raw_tp sys_enter"]),
        ("{name: f, type: TpBtf, tpBtf: {links: [{mode: Attach}]}}", apiary_core::ProgramType::TpBtf, &["tp_btf"]),
        ("{name: f, type: Iter, iter: {links: [{mode: Attach}]}}", apiary_core::ProgramType::Iter, &["iter"]),
        ("{name: f, type: Lsm, lsm: {links: [{mode: Attach}]}}", apiary_core::ProgramType::Lsm, &["lsm"]),
        ("{name: f, type: CgroupSkb, cgroupSkb: {links: [{cgroupPath: /sys/fs/cgroup/x, direction: Egress}]}}", apiary_core::ProgramType::CgroupSkb, &["cgroup_skb /sys/fs/cgroup/x egress"]),
        ("{name: f, type: CgroupSock, cgroupSock: {links: [{cgroupPath: /sys/fs/cgroup/x}]}}", apiary_core::ProgramType::CgroupSock, &["cgroup_sock /sys/fs/cgroup/x"]),
        ("{name: f, type: CgroupSockAddr, cgroupSockAddr: {links: [{cgroupPath: /cg, hook: connect4}, {cgroupPath: /cg2}]}}", apiary_core::ProgramType::CgroupSockAddr, &["cgroup/connect4 /cg", "cgroup/(from section) /cg2"]),
        ("{name: f, type: CgroupSockopt, cgroupSockopt: {links: [{cgroupPath: /cg, hook: getsockopt}]}}", apiary_core::ProgramType::CgroupSockopt, &["cgroup/getsockopt /cg"]),
        ("{name: f, type: CgroupSysctl, cgroupSysctl: {links: [{cgroupPath: /cg}]}}", apiary_core::ProgramType::CgroupSysctl, &["cgroup/sysctl /cg"]),
        ("{name: f, type: PerfEvent, perfEvent: {links: [{event: CpuClock}, {event: TaskClock, frequency: 7, cpu: 1}]}}", apiary_core::ProgramType::PerfEvent, &["perf_event cpuclock 99hz", "perf_event taskclock 7hz cpu=1"]),
        ("{name: f, type: Netfilter, netfilter: {links: [{hook: PreRouting, priority: -100}, {hook: Output, family: IPv6, priority: 5, defrag: true, networkNamespaces: {names: [blue]}}]}}", apiary_core::ProgramType::Netfilter, &["netfilter ipv4 prerouting prio=-100", "netfilter ipv6 output prio=5 defrag netns=/var/run/netns/blue"]),
        ("{name: f, type: SkLookup, skLookup: {links: [{}, {networkNamespaces: {names: [blue]}}]}}", apiary_core::ProgramType::SkLookup, &["sk_lookup netns=/proc/self/ns/net", "sk_lookup netns=/var/run/netns/blue"]),
    ];
    let mut types = std::collections::BTreeSet::new();
    for (yaml, ty, want) in cases {
        let p = one(yaml);
        assert_eq!(p.program_type, *ty, "{yaml}");
        assert_eq!(hooks(&p), *want, "{yaml}");
        assert!(p.problems.is_empty(), "{yaml}: {:?}", p.problems);
        for l in &p.links {
            assert!(ty.compatible_with(l.spec.program_type()), "{yaml}");
            assert_eq!(l.spec.validate(), Ok(()), "{yaml}");
        }
        types.insert(p.ty.name());
    }
    assert_eq!(types.len(), TYPES.len(), "every type is covered");
    assert_eq!(one(cases[3].0).function.as_deref(), Some("do_unlinkat"));
}

#[test]
fn proceed_on_values_map_to_apiary_verdicts() {
    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth0]}, proceedOn: [Pass, TX, ReDirect, DispatcherReturn]}]}}");
    let v = serde_json::to_value(&p.links[0].spec).unwrap();
    assert_eq!(
        v["proceed_on"],
        serde_json::json!(["pass", "tx", "redirect", "dispatcher_return"])
    );
    let p = one("{name: f, type: TC, tc: {links: [{interfaceSelector: {interfaces: [eth0]}, direction: Ingress, proceedOn: [UnSpec, OK, Shot, Pipe, DispatcherReturn]}]}}");
    let v = serde_json::to_value(&p.links[0].spec).unwrap();
    assert_eq!(
        v["proceed_on"],
        serde_json::json!(["unspec", "ok", "shot", "pipe", "dispatcher_return"])
    );
    assert_eq!(p.links[0].spec.validate(), Ok(()));
    // Omitted: apiary's (and bpfman's) defaults apply.
    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth0]}}]}}");
    assert!(serde_json::to_value(&p.links[0].spec)
        .unwrap()
        .get("proceed_on")
        .is_none());
}

#[test]
fn uprobes_in_containers_go_through_the_container_root() {
    let p = one("{name: f, type: UProbe, uprobe: {links: [{target: /usr/bin/app, function: handle, containers: {namespace: shop, pods: {matchLabels: {app: web}}, containerNames: [main]}}]}}");
    assert_eq!(hooks(&p), ["uprobe /proc/100/root/usr/bin/app:handle+0x0"]);
    let p = one("{name: f, type: UProbe, uprobe: {links: [{target: /usr/bin/app, function: handle, containers: {pods: {matchLabels: {app: web}}}}]}}");
    assert_eq!(
        hooks(&p).len(),
        4,
        "two pods, two containers each: {:?}",
        hooks(&p)
    );
    let p = one("{name: f, type: UProbe, uprobe: {links: [{target: libc, function: malloc, containers: {pods: {}}}]}}");
    assert!(hooks(&p).is_empty());
    assert_eq!(
        problems(&p),
        ["0: uprobe target \"libc\": inside containers the target must be an absolute path"]
    );
    let p = one("{name: f, type: UProbe, uprobe: {links: [{target: /a, function: m, containers: {pods: {matchLabels: {app: none}}}}]}}");
    assert_eq!(
        problems(&p),
        ["0: no container on node n1 matches uprobe containers"]
    );
}

#[test]
fn overlapping_selectors_give_one_link() {
    let p = one("{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth0]}}, {interfaceSelector: {primaryNodeInterface: true}}]}}");
    assert_eq!(hooks(&p), ["xdp eth0 prio=1000 mode=auto"]);
}

#[test]
fn load_plan_and_fingerprint() {
    let base = "byteCode: {path: /o.o}\nprograms: [{name: f, type: TracePoint, tracepoint: {}}]";
    let fp = |y: &str| plan(&spec(y), &node()).load.fingerprint;
    let p = plan(&spec(base), &node());
    assert_eq!(p.load.source, Source::Path("/o.o".into()));
    assert!(p.load.globals.is_empty());
    assert_eq!(fp(base), fp(base), "stable");
    // Links and programs are not load inputs; the object and its globals are.
    assert_eq!(
        fp(base),
        fp("byteCode: {path: /o.o}\nprograms: [{name: g, type: XDP, xdp: {}}]")
    );
    assert_ne!(
        fp(base),
        fp("byteCode: {path: /p.o}\nprograms: [{name: f, type: TracePoint, tracepoint: {}}]")
    );
    let g1 = "byteCode: {path: /o.o}\nglobalData: {increment: AgAAAAAAAAA=}\nprograms: [{name: f, type: TracePoint, tracepoint: {}}]";
    let g2 = g1.replace("AgAAAAAAAAA=", "AwAAAAAAAAA=");
    assert_ne!(fp(base), fp(g1));
    assert_ne!(fp(g1), fp(&g2));
    assert_eq!(
        plan(&spec(g1), &node()).load.globals,
        [("increment".to_string(), vec![2, 0, 0, 0, 0, 0, 0, 0])]
    );
    let img = plan(
        &spec("byteCode: {image: {url: reg/x:1}}\nprograms: [{name: f, type: XDP, xdp: {}}]"),
        &node(),
    );
    assert_eq!(
        img.load.source,
        Source::Image {
            url: "reg/x:1".into(),
            pull_policy: PullPolicy::IfNotPresent
        }
    );
}

#[test]
fn key_line_keeps_what_the_verifier_objected_to() {
    let e = "the verifier rejected program \"f\":\n0: (b7) r0 = 0\n1: (79) r1 = *(u64 *)(r0 +32)\nR0 invalid mem access 'scalar'\nprocessed 2 insns (limit 1000000) max_states_per_insn 0\n";
    assert_eq!(
        crate::execute::key_line(&e),
        "the verifier rejected program \"f\": R0 invalid mem access 'scalar'"
    );
    assert_eq!(crate::execute::key_line(&"one line"), "one line");
}

#[test]
fn a_verifier_rejection_reads_as_where_and_why() {
    let log = "; __u64 *v = bpf_map_lookup_elem(&m, &k); @ prog.bpf.c:22\n6: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,map=m,ks=4,vs=8)\n; return *v + 1; @ prog.bpf.c:23\n7: (61) r0 = *(u32 *)(r0 +0)\nR0 invalid mem access 'map_value_or_null'\nprocessed 7 insns (limit 1000000)\n";
    let e = apiary::Error::Kernel(apiary::kernel::KernelError::verifier("f", log, 40));
    assert_eq!(
        crate::execute::error_line(&e),
        "the verifier rejected program \"f\": prog.bpf.c:23: check the value returned by \
         bpf_map_lookup_elem for NULL before using it (R0 invalid mem access 'map_value_or_null')"
    );
    let other = apiary::Error::InvalidArgument("bad global".into());
    assert_eq!(crate::execute::error_line(&other), other.to_string());
}
