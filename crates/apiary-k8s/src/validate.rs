//! The checks the CRD's schema and CEL rules make on the apiserver, made again here for
//! objects that never pass one (`apiary apply -f`), with the same messages. A few checks the
//! schema cannot express are added (unique program names, a kretprobe's offset).

use crate::crd::*;
use crate::document::Application;
use crate::error::DocumentError;
use std::collections::BTreeSet;

/// Every problem of an application's spec; empty when it may be applied.
pub fn problems(spec: &ApplicationSpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.byte_code.image.is_some() == spec.byte_code.path.is_some() {
        out.push("spec.byteCode: byteCode needs exactly one source: image or path".to_string());
    }
    if let Some(p) = &spec.byte_code.path {
        if !p.starts_with('/') {
            out.push(format!(
                "spec.byteCode.path {p:?}: must be an absolute path"
            ));
        }
    }
    if let Some(i) = &spec.byte_code.image {
        if i.url.is_empty() {
            out.push("spec.byteCode.image.url: must not be empty".to_string());
        }
    }
    if spec.map_owner_selector.is_some() {
        out.push(
            "spec.mapOwnerSelector: not supported yet (programs of one application share maps without it)"
                .to_string(),
        );
    }
    selector("spec.nodeSelector", &spec.node_selector, &mut out);
    for k in spec.global_data.keys() {
        if k.is_empty() {
            out.push("spec.globalData: a global's name must not be empty".to_string());
        }
    }
    if spec.programs.is_empty() {
        out.push("spec.programs: at least one program is required".to_string());
    }
    if spec.programs.len() > 128 {
        out.push("spec.programs: at most 128 programs".to_string());
    }
    let mut names = BTreeSet::new();
    for (i, p) in spec.programs.iter().enumerate() {
        let at = format!("spec.programs[{i}]");
        if !valid_program_name(&p.name) {
            out.push(format!(
                "{at}.name {:?}: must be a C identifier of 1 to 64 characters",
                p.name
            ));
        }
        if !names.insert(p.name.as_str()) {
            out.push(format!("{at}.name {:?}: declared twice", p.name));
        }
        program(&at, p, &mut out);
    }
    out
}

/// `problems`, as the error `apply` reports.
pub fn check(app: &Application) -> Result<(), DocumentError> {
    let problems = problems(&app.spec);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DocumentError::Invalid {
            origin: app.origin.clone(),
            name: app.key.to_string(),
            problems,
        })
    }
}

fn valid_program_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn program(at: &str, p: &ApplicationProgram, out: &mut Vec<String>) {
    // The same rules as the CRD's CEL, from the same table.
    let present = p.members();
    for e in TYPES {
        let set = present.iter().any(|(m, s)| *m == e.member && *s);
        if (p.ty == e.ty) != set {
            out.push(format!("{at}: {}", member_message(e)));
        }
    }
    let links = |n: usize| format!("{at}.{}.links", p.ty.member()) + &format!("[{n}]");
    if let Some(m) = &p.xdp {
        for (i, l) in m.links.iter().enumerate() {
            let a = links(i);
            interfaces(&a, &l.interface_selector, out);
            netns(&a, l.network_namespaces.as_ref(), out);
            priority(&a, l.priority, out);
        }
    }
    if let Some(m) = &p.tc {
        for (i, l) in m.links.iter().enumerate() {
            let a = links(i);
            interfaces(&a, &l.interface_selector, out);
            netns(&a, l.network_namespaces.as_ref(), out);
            priority(&a, l.priority, out);
        }
    }
    if let Some(m) = &p.tcx {
        for (i, l) in m.links.iter().enumerate() {
            let a = links(i);
            interfaces(&a, &l.interface_selector, out);
            netns(&a, l.network_namespaces.as_ref(), out);
            priority(&a, l.priority, out);
        }
    }
    for m in [&p.fentry, &p.fexit].into_iter().flatten() {
        if m.function.is_empty() {
            out.push(format!(
                "{at}.{}.function: must not be empty",
                p.ty.member()
            ));
        }
        if m.links.len() > 1 {
            out.push(format!("{at}.{}.links: at most one entry", p.ty.member()));
        }
    }
    for m in [&p.tp_btf, &p.iter, &p.lsm].into_iter().flatten() {
        if m.links.len() > 1 {
            out.push(format!("{at}.{}.links: at most one entry", p.ty.member()));
        }
    }
    for m in [&p.kprobe, &p.kretprobe].into_iter().flatten() {
        for (i, l) in m.links.iter().enumerate() {
            if l.function.is_empty() {
                out.push(format!("{}.function: must not be empty", links(i)));
            }
            if p.ty == BpfProgramType::KRetProbe && l.offset != 0 {
                out.push(format!(
                    "{}.offset: a kretprobe's offset must be 0",
                    links(i)
                ));
            }
        }
    }
    for m in [&p.uprobe, &p.uretprobe].into_iter().flatten() {
        for (i, l) in m.links.iter().enumerate() {
            if l.target.is_empty() {
                out.push(format!("{}.target: must not be empty", links(i)));
            }
            if l.function.is_none() && l.offset == 0 {
                out.push(format!(
                    "{}: a uprobe needs a function or a non-zero offset",
                    links(i)
                ));
            }
            if let Some(c) = &l.containers {
                selector(&format!("{}.containers.pods", links(i)), &c.pods, out);
            }
        }
    }
    if let Some(m) = &p.tracepoint {
        for (i, l) in m.links.iter().enumerate() {
            let parts: Vec<&str> = l.name.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|s| s.is_empty()) {
                out.push(format!(
                    "{}.name {:?}: expected CATEGORY/NAME, e.g. syscalls/sys_enter_kill",
                    links(i),
                    l.name
                ));
            }
        }
    }
    if let Some(m) = &p.raw_tracepoint {
        for (i, l) in m.links.iter().enumerate() {
            if l.name.is_empty() || l.name.contains('/') {
                out.push(format!(
                    "{}.name {:?}: expected a raw tracepoint name, e.g. sched_switch",
                    links(i),
                    l.name
                ));
            }
        }
    }
    if let Some(m) = &p.netfilter {
        for (i, l) in m.links.iter().enumerate() {
            netns(&links(i), l.network_namespaces.as_ref(), out);
        }
    }
    if let Some(m) = &p.sk_lookup {
        for (i, l) in m.links.iter().enumerate() {
            netns(&links(i), l.network_namespaces.as_ref(), out);
        }
    }
    if let Some(m) = &p.perf_event {
        for (i, l) in m.links.iter().enumerate() {
            if l.frequency == 0 {
                out.push(format!("{}.frequency: must be at least 1", links(i)));
            }
        }
    }
}

fn interfaces(at: &str, s: &InterfaceSelector, out: &mut Vec<String>) {
    let n = usize::from(s.interfaces.is_some())
        + usize::from(s.primary_node_interface.is_some())
        + usize::from(s.interfaces_discovery_config.is_some());
    if n != 1 {
        out.push(format!(
            "{at}.interfaceSelector: exactly one of interfaces, primaryNodeInterface or interfacesDiscoveryConfig"
        ));
    }
    if s.primary_node_interface == Some(false) {
        out.push(format!(
            "{at}.interfaceSelector: primaryNodeInterface accepts only true"
        ));
    }
    if let Some(list) = &s.interfaces {
        if list.is_empty() {
            out.push(format!(
                "{at}.interfaceSelector.interfaces: name at least one"
            ));
        }
        for i in list {
            if let Err(e) = apiary_core::attach::validate_iface(i) {
                out.push(format!("{at}.interfaceSelector.interfaces: {e}"));
            }
        }
    }
    if let Some(d) = &s.interfaces_discovery_config {
        for a in d.allowed_interfaces.iter().flatten() {
            if let Some(re) = crate::facts::slashed_regex(a) {
                if let Err(e) = regex::Regex::new(re) {
                    out.push(format!(
                        "{at}.interfaceSelector.interfacesDiscoveryConfig.allowedInterfaces {a:?}: {e}"
                    ));
                }
            }
        }
    }
}

fn netns(at: &str, s: Option<&NetworkNamespaceSelector>, out: &mut Vec<String>) {
    let Some(s) = s else { return };
    if s.pods.is_some() == s.names.is_some() {
        out.push(format!(
            "{at}.networkNamespaces: networkNamespaces selects by pods or by names, exactly one of them"
        ));
    }
    if let Some(names) = &s.names {
        if names.is_empty() || names.iter().any(|n| n.is_empty()) {
            out.push(format!(
                "{at}.networkNamespaces.names: name at least one, none empty"
            ));
        }
    }
    if let Some(p) = &s.pods {
        selector(&format!("{at}.networkNamespaces.pods"), p, out);
    }
}

fn priority(at: &str, p: i32, out: &mut Vec<String>) {
    if !(1..=1000).contains(&p) {
        out.push(format!(
            "{at}.priority {p}: must be from 1 (runs first) to 1000 (runs last)"
        ));
    }
}

fn selector(
    at: &str,
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    out: &mut Vec<String>,
) {
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => out.push(format!(
                "{at}.matchExpressions[{i}]: operator {} needs values",
                e.operator
            )),
            "Exists" | "DoesNotExist" if n > 0 => out.push(format!(
                "{at}.matchExpressions[{i}]: operator {} takes no values",
                e.operator
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.push(format!(
                "{at}.matchExpressions[{i}]: unknown operator {other:?}: expected In, NotIn, Exists or DoesNotExist"
            )),
        }
    }
}
