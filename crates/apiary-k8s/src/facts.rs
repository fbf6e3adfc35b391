//! What the planner knows about the node it plans for: its name and labels, its network
//! namespaces with their interfaces, its pods. The agent fills this from the Node object and
//! netlink; `apiary apply` from the local host. Label selectors are matched here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's own network namespace (where links go by default).
    pub root: NetnsFacts,
    /// Other network namespaces, known by path (and `ip netns` name).
    pub netns: Vec<NetnsFacts>,
    pub pods: Vec<PodFacts>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetnsFacts {
    /// `ip netns` name, when it has one.
    pub name: Option<String>,
    /// None for this process's own namespace (the node's, except for an agent given one).
    pub path: Option<PathBuf>,
    /// Interface names; None when they could not be listed.
    pub interfaces: Option<Vec<String>>,
    /// The primary interface: for the node, the one holding its InternalIP.
    pub primary: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's network namespace (`/proc/PID/ns/net` of its sandbox).
    pub netns: PathBuf,
    pub containers: Vec<ContainerFacts>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerFacts {
    pub name: String,
    /// A process of the container, whose root (`/proc/PID/root`) holds its files.
    pub pid: i32,
}

impl NodeFacts {
    /// The network namespace with this `ip netns` name or path.
    pub fn find_netns(&self, name_or_path: &str) -> Option<&NetnsFacts> {
        let path = apiary_core::attach::parse_netns(name_or_path).ok()?;
        self.netns
            .iter()
            .find(|n| n.name.as_deref() == Some(name_or_path) || n.path.as_deref() == Some(&path))
    }
}

/// Whether `labels` satisfy `sel` (Kubernetes semantics: every matchLabels pair and every
/// expression; the empty selector matches everything). An unknown operator matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    pairs && exprs
}

/// The regular expression of an `allowedInterfaces` entry written `/REGEX/`.
pub fn slashed_regex(entry: &str) -> Option<&str> {
    entry
        .strip_prefix('/')
        .and_then(|r| r.strip_suffix('/'))
        .filter(|r| !r.is_empty())
}

/// The facts of this host for `apiary apply`: its interfaces, those of the named network
/// namespaces asked for, and the primary interface (the default route's).
pub fn local(name: &str, labels: BTreeMap<String, String>, netns_names: &[String]) -> NodeFacts {
    let root = NetnsFacts {
        name: None,
        path: None,
        interfaces: list_interfaces(None),
        primary: default_route_interface(None),
    };
    let mut netns = Vec::new();
    for n in netns_names {
        let Ok(path) = apiary_core::attach::parse_netns(n) else {
            continue;
        };
        if netns
            .iter()
            .any(|f: &NetnsFacts| f.path.as_ref() == Some(&path))
            || !path.exists()
        {
            continue;
        }
        netns.push(NetnsFacts {
            name: (!n.contains('/')).then(|| n.clone()),
            interfaces: list_interfaces(Some(&path)),
            primary: default_route_interface(Some(&path)),
            path: Some(path),
        });
    }
    NodeFacts {
        name: name.to_string(),
        labels,
        root,
        netns,
        pods: Vec::new(),
    }
}

fn list_interfaces(netns: Option<&Path>) -> Option<Vec<String>> {
    apiary::kernel::netns::in_netns(netns, || {
        let mut names: Vec<String> = nix::net::if_::if_nameindex()
            .map(|list| {
                list.iter()
                    .map(|i| i.name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    })
    .ok()
}

/// The interface of the IPv4 default route, read in the namespace's own /proc view.
fn default_route_interface(netns: Option<&Path>) -> Option<String> {
    apiary::kernel::netns::in_netns(netns, || {
        let text = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
        Ok(text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
        }))
    })
    .ok()
    .flatten()
}

/// The facts of a Kubernetes node for the agent: the Node's name and labels, and its
/// interfaces in `netns` (the node's network namespace: None for this process's own, as on a
/// real node; a test gives each simulated node its own). The primary interface is the one
/// holding the Node's InternalIP; links planned for the node go into `netns`.
pub fn node(
    name: &str,
    labels: BTreeMap<String, String>,
    netns: Option<&Path>,
    internal_ip: Option<std::net::IpAddr>,
) -> NodeFacts {
    let root = NetnsFacts {
        name: None,
        path: netns.map(Path::to_path_buf),
        interfaces: list_interfaces(netns),
        primary: internal_ip.and_then(|ip| interface_with_address(netns, ip)),
    };
    NodeFacts {
        name: name.to_string(),
        labels,
        root,
        netns: Vec::new(),
        pods: Vec::new(),
    }
}

/// The interfaces of `netns` and the primary one, as the agent polls them to notice
/// interfaces appearing and disappearing.
pub fn interfaces_snapshot(
    netns: Option<&Path>,
    internal_ip: Option<std::net::IpAddr>,
) -> (Option<Vec<String>>, Option<String>) {
    (
        list_interfaces(netns),
        internal_ip.and_then(|ip| interface_with_address(netns, ip)),
    )
}

/// The interface of `netns` that holds `ip`.
fn interface_with_address(netns: Option<&Path>, ip: std::net::IpAddr) -> Option<String> {
    apiary::kernel::netns::in_netns(netns, || {
        let found = nix::ifaddrs::getifaddrs().ok().and_then(|mut addrs| {
            addrs.find_map(|a| {
                let addr = a.address?;
                let have: Option<std::net::IpAddr> = addr
                    .as_sockaddr_in()
                    .map(|s| std::net::IpAddr::V4(s.ip()))
                    .or_else(|| addr.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())));
                (have == Some(ip)).then_some(a.interface_name)
            })
        });
        Ok(found)
    })
    .ok()
    .flatten()
}
