//! The CRD's CEL rules, evaluated without an apiserver (kube-cel), agree with the local
//! validation: both refuse the same objects, and both accept the valid ones.

use crate::crd::*;
use crate::validate::problems;

fn object(spec: &str) -> ClusterBpfApplication {
    let spec: ApplicationSpec = super::spec(spec);
    ClusterBpfApplication::new("a", ClusterBpfApplicationSpec { app: spec })
}

fn cel(o: &ClusterBpfApplication) -> Vec<String> {
    match kube::core::cel::validate_cel(o) {
        Ok(()) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn cel_rules_and_local_validation_agree() {
    let cases: &[(&str, Option<&str>)] = &[
        ("byteCode: {path: /o.o}\nprograms: [{name: f, type: XDP, xdp: {links: [{interfaceSelector: {interfaces: [eth0]}}]}}]", None),
        ("byteCode: {path: /o.o, image: {url: r/x:1}}\nprograms: [{name: f, type: XDP, xdp: {}}]", Some("byteCode needs exactly one source")),
        ("byteCode: {}\nprograms: [{name: f, type: XDP, xdp: {}}]", Some("byteCode needs exactly one source")),
        ("byteCode: {path: /o.o}\nprograms: [{name: f, type: XDP}]", Some("xdp configuration is required when type is XDP")),
        ("byteCode: {path: /o.o}\nprograms: [{name: f, type: TracePoint, tracepoint: {}, kprobe: {}}]", Some("kprobe configuration is required when type is KProbe")),
        ("byteCode: {path: /o.o}\nprograms: [{name: f, type: SkLookup, skLookup: {links: [{networkNamespaces: {names: [a], pods: {}}}]}}]", Some("selects by pods or by names")),
        ("byteCode: {path: /o.o}\nprograms: [{name: f, type: XDP, xdp: {links: [{interfaceSelector: {primaryNodeInterface: false}}]}}]", Some("primaryNodeInterface accepts only true")),
        ("byteCode: {path: /o.o}\nprograms: [{name: f, type: UProbe, uprobe: {links: [{target: libc}]}}]", Some("a uprobe needs a function or a non-zero offset")),
    ];
    for e in TYPES {
        // Every type with its member is accepted by both.
        let ok = format!(
            "byteCode: {{path: /o.o}}\nprograms: [{{name: f, type: {}, {}: {{{}}}}}]",
            e.name,
            e.member,
            if matches!(e.ty, BpfProgramType::FEntry | BpfProgramType::FExit) {
                "function: x"
            } else {
                ""
            }
        );
        let o = object(&ok);
        assert_eq!(cel(&o), Vec::<String>::new(), "{}", e.name);
        assert_eq!(problems(&o.spec.app), Vec::<String>::new(), "{}", e.name);
    }
    for (spec, refused) in cases {
        let o = object(spec);
        let (c, l) = (cel(&o), problems(&o.spec.app));
        match refused {
            None => {
                assert_eq!(c, Vec::<String>::new(), "CEL refused {spec}");
                assert_eq!(l, Vec::<String>::new(), "local refused {spec}");
            }
            Some(m) => {
                assert!(c.iter().any(|x| x.contains(m)), "CEL: {spec}: {c:?}");
                assert!(l.iter().any(|x| x.contains(m)), "local: {spec}: {l:?}");
            }
        }
    }
}
