//! Planning: what one node should run for one application, from the spec and the node's facts
//! alone (no I/O). Selectors are expanded here: the node selector, interface selectors (names,
//! the primary interface, discovery), network namespaces (by name or by pod) and containers.
//! What cannot be resolved becomes a problem on that program, reported in its status, while the
//! rest of the application still converges.

use crate::crd::*;
use crate::facts::{selector_matches, slashed_regex, NetnsFacts, NodeFacts};
use crate::hooks;
use apiary_core::{AttachSpec, ProgramType};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Everything one node should have for one application.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Whether the node's labels match nodeSelector; if not, nothing is desired.
    pub selected: bool,
    pub load: LoadPlan,
    pub programs: Vec<DesiredProgram>,
}

/// How the application's object is loaded. All its programs are loaded together (sharing
/// maps), so a change here reloads every program.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    pub source: Source,
    pub globals: Vec<(String, Vec<u8>)>,
    /// Identifies the load inputs; recorded with each program, compared on the next apply.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(PathBuf),
    Image {
        url: String,
        pull_policy: PullPolicy,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredProgram {
    pub name: String,
    pub ty: BpfProgramType,
    pub program_type: ProgramType,
    /// fentry/fexit: the function the spec names (it must be the one the section names).
    pub function: Option<String>,
    pub links: Vec<DesiredLink>,
    /// Links that could not be planned, with the reason.
    pub problems: Vec<LinkProblem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredLink {
    pub spec: AttachSpec,
    pub info: LinkInfo,
}

/// The resolved target of a link, as the state object shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub interface: Option<String>,
    pub netns: Option<PathBuf>,
    pub direction: Option<Direction>,
    pub priority: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkProblem {
    /// Which entry of `links` (from 0).
    pub link: usize,
    pub message: String,
}

/// Plan `spec` (already validated) for the node `facts` describes.
pub fn plan(spec: &ApplicationSpec, facts: &NodeFacts) -> Plan {
    let load = load_plan(spec);
    if !selector_matches(&spec.node_selector, &facts.labels) {
        return Plan {
            selected: false,
            load,
            programs: Vec::new(),
        };
    }
    let programs = spec.programs.iter().map(|p| program(p, facts)).collect();
    Plan {
        selected: true,
        load,
        programs,
    }
}

fn load_plan(spec: &ApplicationSpec) -> LoadPlan {
    let source = match (&spec.byte_code.path, &spec.byte_code.image) {
        (Some(p), _) => Source::Path(PathBuf::from(p)),
        (None, Some(i)) => Source::Image {
            url: i.url.clone(),
            pull_policy: i.image_pull_policy,
        },
        // Validation refuses this; an empty path fails the load with a clear error.
        (None, None) => Source::Path(PathBuf::new()),
    };
    let globals: Vec<(String, Vec<u8>)> = spec
        .global_data
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&spec.byte_code).unwrap_or_default());
    for (k, v) in &globals {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    }
    LoadPlan {
        source,
        globals,
        fingerprint: hex::encode(&h.finalize()[..12]),
    }
}

/// Collects a program's links and problems while its member is expanded.
struct Out {
    links: Vec<DesiredLink>,
    problems: Vec<LinkProblem>,
}

impl Out {
    /// One link per interface link `i`'s selectors pick (XDP, TC, TCX), built by `spec`.
    fn per_interface(
        &mut self,
        i: usize,
        (sel, netns): (&InterfaceSelector, Option<&NetworkNamespaceSelector>),
        facts: &NodeFacts,
        direction: Option<Direction>,
        priority: i32,
        spec: impl Fn(&str, Option<PathBuf>) -> AttachSpec,
    ) {
        for (ns, iface) in interfaces(i, sel, netns, facts, self) {
            let info = LinkInfo {
                interface: Some(iface.clone()),
                netns: ns.clone(),
                direction,
                priority: Some(priority),
            };
            self.link(spec(&iface, ns), info);
        }
    }

    fn link(&mut self, spec: AttachSpec, info: LinkInfo) {
        // Two selectors naming the same hook give one link.
        if !self.links.iter().any(|l| l.spec == spec) {
            self.links.push(DesiredLink { spec, info });
        }
    }
    fn problem(&mut self, link: usize, message: String) {
        self.problems.push(LinkProblem { link, message });
    }
}

fn program(p: &ApplicationProgram, facts: &NodeFacts) -> DesiredProgram {
    let mut out = Out {
        links: Vec::new(),
        problems: Vec::new(),
    };
    let ret = p.ty.entry().retprobe;
    let mut function = None;
    match p.ty {
        BpfProgramType::Xdp => {
            for (i, l) in p.xdp.iter().flat_map(|m| m.links.iter()).enumerate() {
                let at = (&l.interface_selector, l.network_namespaces.as_ref());
                out.per_interface(i, at, facts, None, l.priority, |iface, netns| {
                    hooks::xdp(iface, netns, l.priority, &l.proceed_on)
                });
            }
        }
        BpfProgramType::Tc => {
            for (i, l) in p.tc.iter().flat_map(|m| m.links.iter()).enumerate() {
                let at = (&l.interface_selector, l.network_namespaces.as_ref());
                out.per_interface(
                    i,
                    at,
                    facts,
                    Some(l.direction),
                    l.priority,
                    |iface, netns| hooks::tc(iface, netns, l.direction, l.priority, &l.proceed_on),
                );
            }
        }
        BpfProgramType::Tcx => {
            for (i, l) in p.tcx.iter().flat_map(|m| m.links.iter()).enumerate() {
                let at = (&l.interface_selector, l.network_namespaces.as_ref());
                out.per_interface(
                    i,
                    at,
                    facts,
                    Some(l.direction),
                    l.priority,
                    |iface, netns| hooks::tcx(iface, netns, l.direction, l.priority),
                );
            }
        }
        BpfProgramType::FEntry | BpfProgramType::FExit => {
            let m = p.fentry.as_ref().or(p.fexit.as_ref());
            function = m.map(|m| m.function.clone());
            if m.is_some_and(|m| !m.links.is_empty()) {
                out.link(
                    hooks::fentry(p.ty == BpfProgramType::FExit),
                    LinkInfo::default(),
                );
            }
        }
        BpfProgramType::KProbe | BpfProgramType::KRetProbe => {
            for l in p
                .kprobe
                .iter()
                .chain(&p.kretprobe)
                .flat_map(|m| m.links.iter())
            {
                out.link(
                    hooks::kprobe(&l.function, l.offset, ret),
                    LinkInfo::default(),
                );
            }
        }
        BpfProgramType::UProbe | BpfProgramType::URetProbe => {
            for (i, l) in p
                .uprobe
                .iter()
                .chain(&p.uretprobe)
                .flat_map(|m| m.links.iter())
                .enumerate()
            {
                for target in uprobe_targets(i, l, facts, &mut out) {
                    let spec = hooks::uprobe(&target, l.function.as_deref(), l.offset, ret, l.pid);
                    out.link(spec, LinkInfo::default());
                }
            }
        }
        BpfProgramType::TracePoint => {
            for l in p.tracepoint.iter().flat_map(|m| m.links.iter()) {
                out.link(hooks::tracepoint(&l.name), LinkInfo::default());
            }
        }
        BpfProgramType::RawTracePoint => {
            for l in p.raw_tracepoint.iter().flat_map(|m| m.links.iter()) {
                out.link(hooks::raw_tracepoint(&l.name), LinkInfo::default());
            }
        }
        // Their target is in the section: one link when the member declares any.
        BpfProgramType::TpBtf if p.tp_btf.as_ref().is_some_and(|m| !m.links.is_empty()) => {
            out.link(hooks::tp_btf(), LinkInfo::default());
        }
        BpfProgramType::Iter if p.iter.as_ref().is_some_and(|m| !m.links.is_empty()) => {
            out.link(hooks::iter(), LinkInfo::default());
        }
        BpfProgramType::Lsm if p.lsm.as_ref().is_some_and(|m| !m.links.is_empty()) => {
            out.link(hooks::lsm(), LinkInfo::default());
        }
        BpfProgramType::TpBtf | BpfProgramType::Iter | BpfProgramType::Lsm => {}
        BpfProgramType::CgroupSkb => {
            for l in p.cgroup_skb.iter().flat_map(|m| m.links.iter()) {
                let info = LinkInfo {
                    direction: Some(l.direction),
                    ..LinkInfo::default()
                };
                out.link(hooks::cgroup_skb(&l.cgroup_path, l.direction), info);
            }
        }
        BpfProgramType::CgroupSock | BpfProgramType::CgroupSysctl => {
            let sysctl = p.ty == BpfProgramType::CgroupSysctl;
            for l in p
                .cgroup_sock
                .iter()
                .chain(&p.cgroup_sysctl)
                .flat_map(|m| m.links.iter())
            {
                let spec = if sysctl {
                    hooks::cgroup_sysctl(&l.cgroup_path)
                } else {
                    hooks::cgroup_sock(&l.cgroup_path)
                };
                out.link(spec, LinkInfo::default());
            }
        }
        BpfProgramType::CgroupSockAddr | BpfProgramType::CgroupSockopt => {
            let sockopt = p.ty == BpfProgramType::CgroupSockopt;
            for l in p
                .cgroup_sock_addr
                .iter()
                .chain(&p.cgroup_sockopt)
                .flat_map(|m| m.links.iter())
            {
                let spec = if sockopt {
                    hooks::cgroup_sockopt(&l.cgroup_path, l.hook)
                } else {
                    hooks::cgroup_sock_addr(&l.cgroup_path, l.hook)
                };
                out.link(spec, LinkInfo::default());
            }
        }
        BpfProgramType::PerfEvent => {
            for l in p.perf_event.iter().flat_map(|m| m.links.iter()) {
                out.link(
                    hooks::perf_event(l.event, l.frequency, l.cpu),
                    LinkInfo::default(),
                );
            }
        }
        BpfProgramType::Netfilter => {
            for (i, l) in p.netfilter.iter().flat_map(|m| m.links.iter()).enumerate() {
                for ns in namespaces(i, l.network_namespaces.as_ref(), facts, &mut out) {
                    let info = LinkInfo {
                        netns: ns.path.clone(),
                        priority: Some(l.priority),
                        ..LinkInfo::default()
                    };
                    let spec = hooks::netfilter(l.hook, l.family, l.priority, ns.path, l.defrag);
                    out.link(spec, info);
                }
            }
        }
        BpfProgramType::SkLookup => {
            for (i, l) in p.sk_lookup.iter().flat_map(|m| m.links.iter()).enumerate() {
                for ns in namespaces(i, l.network_namespaces.as_ref(), facts, &mut out) {
                    let info = LinkInfo {
                        netns: ns.path.clone(),
                        ..LinkInfo::default()
                    };
                    out.link(hooks::sk_lookup(ns.path), info);
                }
            }
        }
    }
    DesiredProgram {
        name: p.name.clone(),
        ty: p.ty,
        program_type: p.ty.program_type(),
        function,
        links: out.links,
        problems: out.problems,
    }
}

/// A network namespace a link is made in: its path (None: the node's own) and what is known
/// of it (None: nothing, so only interfaces named outright can be used).
struct Namespace {
    path: Option<PathBuf>,
    facts: Option<NetnsFacts>,
    /// For messages.
    label: String,
}

fn namespaces(
    link: usize,
    sel: Option<&NetworkNamespaceSelector>,
    facts: &NodeFacts,
    out: &mut Out,
) -> Vec<Namespace> {
    let Some(sel) = sel else {
        return vec![Namespace {
            // The node's own namespace: the agent of a node simulated in a namespace of its
            // own names it; on a real node it is this process's (None).
            path: facts.root.path.clone(),
            facts: Some(facts.root.clone()),
            label: format!("node {}", facts.name),
        }];
    };
    let mut found = Vec::new();
    if let Some(names) = &sel.names {
        for n in names {
            match apiary_core::attach::parse_netns(n) {
                Ok(path) => found.push(Namespace {
                    facts: facts.find_netns(n).cloned(),
                    path: Some(path),
                    label: format!("network namespace {n} on node {}", facts.name),
                }),
                Err(e) => out.problem(link, format!("network namespace {n:?}: {e}")),
            }
        }
    }
    if let Some(pods) = &sel.pods {
        let before = found.len();
        for pod in &facts.pods {
            let ns_ok = sel
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == pod.namespace);
            if !ns_ok || !selector_matches(pods, &pod.labels) {
                continue;
            }
            if found.iter().any(|f| f.path.as_ref() == Some(&pod.netns)) {
                continue;
            }
            found.push(Namespace {
                facts: facts
                    .netns
                    .iter()
                    .find(|n| n.path.as_ref() == Some(&pod.netns))
                    .cloned(),
                path: Some(pod.netns.clone()),
                label: format!("pod {}/{} on node {}", pod.namespace, pod.name, facts.name),
            });
        }
        if found.len() == before {
            out.problem(
                link,
                format!(
                    "no pod on node {} matches networkNamespaces.pods{}",
                    facts.name,
                    sel.namespace
                        .as_deref()
                        .map(|n| format!(" in namespace {n}"))
                        .unwrap_or_default()
                ),
            );
        }
    }
    found
}

/// The (network namespace, interface) pairs a network link selects.
fn interfaces(
    link: usize,
    sel: &InterfaceSelector,
    netns: Option<&NetworkNamespaceSelector>,
    facts: &NodeFacts,
    out: &mut Out,
) -> Vec<(Option<PathBuf>, String)> {
    let mut pairs = Vec::new();
    for ns in namespaces(link, netns, facts, out) {
        let known = ns.facts.as_ref().and_then(|f| f.interfaces.as_ref());
        if let Some(names) = &sel.interfaces {
            for n in names {
                if known.is_some_and(|k| !k.contains(n)) {
                    out.problem(link, format!("interface {n} not found in {}", ns.label));
                } else {
                    pairs.push((ns.path.clone(), n.clone()));
                }
            }
        } else if sel.primary_node_interface == Some(true) {
            match ns.facts.as_ref().and_then(|f| f.primary.clone()) {
                Some(p) => pairs.push((ns.path.clone(), p)),
                None => out.problem(
                    link,
                    format!(
                        "{} has no primary interface (none holds its address)",
                        ns.label
                    ),
                ),
            }
        } else if let Some(d) = &sel.interfaces_discovery_config {
            let Some(known) = known else {
                out.problem(
                    link,
                    format!("cannot discover interfaces: {} is not known", ns.label),
                );
                continue;
            };
            for n in discover(d, known) {
                pairs.push((ns.path.clone(), n));
            }
        }
    }
    pairs
}

/// The interfaces discovery selects: present, not excluded (default `lo`), and allowed when
/// an allow list is given (`/REGEX/` entries as expressions). Sorted, for stable plans.
pub fn discover(d: &InterfaceDiscovery, present: &[String]) -> Vec<String> {
    let default_exclude = vec!["lo".to_string()];
    let exclude = d.exclude_interfaces.as_ref().unwrap_or(&default_exclude);
    let allowed: Vec<Allow> = d
        .allowed_interfaces
        .iter()
        .flatten()
        .filter_map(|a| match slashed_regex(a) {
            Some(r) => regex::Regex::new(r).ok().map(Allow::Regex),
            None => Some(Allow::Name(a.clone())),
        })
        .collect();
    let mut out: Vec<String> = present
        .iter()
        .filter(|n| !exclude.contains(n))
        .filter(|n| {
            d.allowed_interfaces.is_none()
                || allowed.iter().any(|a| match a {
                    Allow::Name(x) => x == *n,
                    Allow::Regex(r) => r.is_match(n),
                })
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

enum Allow {
    Name(String),
    Regex(regex::Regex),
}

/// Where a uprobe's target is: on the node, or inside each selected container (through the
/// container's root as one of its processes sees it).
fn uprobe_targets(link: usize, l: &UprobeLink, facts: &NodeFacts, out: &mut Out) -> Vec<String> {
    let Some(c) = &l.containers else {
        return vec![l.target.clone()];
    };
    if !l.target.starts_with('/') {
        out.problem(
            link,
            format!(
                "uprobe target {:?}: inside containers the target must be an absolute path",
                l.target
            ),
        );
        return Vec::new();
    }
    let mut targets = Vec::new();
    for pod in &facts.pods {
        if c.namespace.as_deref().is_some_and(|ns| ns != pod.namespace)
            || !selector_matches(&c.pods, &pod.labels)
        {
            continue;
        }
        for ct in &pod.containers {
            if c.container_names
                .as_ref()
                .is_some_and(|n| !n.contains(&ct.name))
            {
                continue;
            }
            let t = format!("/proc/{}/root{}", ct.pid, l.target);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    if targets.is_empty() {
        out.problem(
            link,
            format!(
                "no container on node {} matches uprobe containers",
                facts.name
            ),
        );
    }
    targets
}
