//! The node agent: watches its Node and both application kinds, and on any change runs one
//! pass over every application, converging this node with the executor and reporting each
//! application's state in a `<app>-<node>` state object.
//!
//! Watches feed caches (reflectors); a change only wakes the pass loop, which reads the
//! caches. Passes never overlap, and changes during a pass wake one more. When the apiserver
//! is unreachable the caches keep their last content, so nothing is unloaded for lack of news;
//! the watchers reconnect with backoff and the next pass catches up.

pub mod announce;
mod pass;
mod rollout;
mod state;
pub mod trace;

use crate::crd::{BpfApplication, ClusterBpfApplication};
use crate::error::KubeError;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often every application is checked even without news (a pass changes nothing when the
/// node already matches).
const RESYNC: Duration = Duration::from_secs(60);
/// The first retry after a failed pass; doubled while passes keep failing.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// How often the node's interfaces are listed, for interface discovery and the primary
/// interface.
const INTERFACE_POLL: Duration = Duration::from_secs(1);
/// How often the node reports fresh readings (run count, gate map value) while a rollout's
/// health gate watches it.
const READINGS: Duration = Duration::from_secs(1);

/// What the agent is given.
pub struct AgentConfig {
    pub node_name: String,
    /// The network namespace holding the node's interfaces (None: this process's own).
    pub netns: Option<PathBuf>,
    /// The namespace of the Lease the agent renews to tell the operator it runs
    /// (`announce::DEFAULT_NAMESPACE` unless set).
    pub lease_namespace: String,
}

/// The finalizer this node's agent puts on the applications it loaded, so that deleting one
/// waits until the node unloaded it.
pub fn finalizer(node: &str) -> String {
    format!("apiary.io/node-{node}")
}

/// The state object of an application on a node.
pub fn state_name(app: &str, node: &str) -> String {
    format!("{app}-{node}")
}

/// Label of state objects naming their application.
pub const APP_LABEL: &str = "apiary.io/application";
/// Label of state objects naming their node.
pub const NODE_LABEL: &str = "apiary.io/node";

/// The caches the watches keep.
#[derive(Clone)]
pub(crate) struct Caches {
    pub node: Store<Node>,
    pub cluster_apps: Store<ClusterBpfApplication>,
    pub apps: Store<BpfApplication>,
}

/// Run the agent until the future is dropped. `api` is the manager of this node (shared with
/// the local gRPC socket).
pub async fn run(
    client: Client,
    api: Arc<dyn apiary::Api>,
    cfg: AgentConfig,
) -> Result<(), KubeError> {
    let wake = Arc::new(Notify::new());
    let node_filter =
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let caches = Caches {
        node: crate::cache::cache(Api::<Node>::all(client.clone()), node_filter, &wake, "node"),
        cluster_apps: crate::cache::cache(
            Api::<ClusterBpfApplication>::all(client.clone()),
            watcher::Config::default(),
            &wake,
            "clusterbpfapplications",
        ),
        apps: crate::cache::cache(
            Api::<BpfApplication>::all(client.clone()),
            watcher::Config::default(),
            &wake,
            "bpfapplications",
        ),
    };
    // Nothing is decided before every cache holds a complete list: an application missing
    // from a half-filled cache would look deleted and be unloaded.
    for ready in [
        caches.node.wait_until_ready().await.is_ok(),
        caches.cluster_apps.wait_until_ready().await.is_ok(),
        caches.apps.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return Err(KubeError::Start {
                what: "a watch ended before its first list".into(),
            });
        }
    }
    tracing::info!(node = %cfg.node_name, "watching the node and applications");
    // The operator tells a node without an agent from one whose agent is slow by this Lease.
    tokio::spawn(announce::renew(
        client.clone(),
        cfg.lease_namespace.clone(),
        cfg.node_name.clone(),
    ));

    let agent = Arc::new(pass::Agent::new(client, api, cfg, caches));
    tokio::spawn(resync(wake.clone()));
    let (a, w) = (agent.clone(), wake.clone());
    std::thread::Builder::new()
        .name("apiary-ifpoll".into())
        .spawn(move || poll_interfaces(a, w))
        .map_err(|e| KubeError::Start {
            what: format!("cannot start the interface poll: {e}"),
        })?;
    let mut retry = RETRY_FIRST;
    loop {
        let clean = agent.pass().await;
        if agent.readings_due() {
            let w = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(READINGS).await;
                w.notify_one();
            });
        }
        if clean {
            retry = RETRY_FIRST;
        } else {
            // Something failed (a conflict, an unreachable apiserver, a kernel refusal): try
            // again soon rather than at the next resync, backing off while it keeps failing.
            let w = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(retry).await;
                w.notify_one();
            });
            retry = (retry * 2).min(RESYNC);
        }
        wake.notified().await;
    }
}

async fn resync(wake: Arc<Notify>) {
    let mut tick = tokio::time::interval(RESYNC);
    tick.tick().await;
    loop {
        tick.tick().await;
        wake.notify_one();
    }
}

/// Wake a pass when the node's interfaces (or which one holds its address) differ from those
/// the last pass planned with. Compared with the pass's view, not the previous poll's, so an
/// interface that came and went between two looks (seen by a pass meanwhile) is not missed.
/// It looks when the kernel announces a link or address change in the node's namespace (a
/// netlink socket subscribed there), and at least every `INTERFACE_POLL` in any case.
/// A plain thread: it blocks on the socket and enters the node's netns, and must not wait behind
/// the runtime's blocking pool, which the passes and the gRPC requests use.
fn poll_interfaces(agent: Arc<pass::Agent>, wake: Arc<Notify>) {
    let events = link_events(agent.netns());
    if events.is_none() {
        tracing::warn!(
            "no netlink link events in the node's namespace; listing its interfaces every second"
        );
    }
    loop {
        let now = agent.interfaces();
        if agent.planned_with().is_some_and(|seen| seen != now) {
            tracing::info!(interfaces = ?now.0, "the node's interfaces changed");
            wake.notify_one();
        }
        match &events {
            Some(fd) => wait_for_event(fd),
            None => std::thread::sleep(INTERFACE_POLL),
        }
    }
}

/// A NETLINK_ROUTE socket in `netns` subscribed to link and address changes, with a receive
/// timeout of `INTERFACE_POLL` (so the thread still looks that often if an event is lost).
fn link_events(netns: Option<&std::path::Path>) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    apiary::kernel::netns::in_netns(netns, || {
        let sys = |what: &str| {
            apiary::kernel::KernelError::syscall(what, std::io::Error::last_os_error())
        };
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(sys("socket(AF_NETLINK)"));
        }
        // SAFETY: `raw` is a descriptor this call just made.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl is valid; the fields set are plain integers.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: a valid socket and a sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sys("bind(RTMGRP_LINK)"));
        }
        let timeout = libc::timeval {
            tv_sec: INTERFACE_POLL.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sys("setsockopt(SO_RCVTIMEO)"));
        }
        Ok(fd)
    })
    .ok()
}

/// Block until the kernel announces a change (or the timeout passes), then drain what queued.
fn wait_for_event(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8192];
    let mut flags = 0;
    loop {
        // SAFETY: a valid socket and a buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n <= 0 {
            return;
        }
        flags = libc::MSG_DONTWAIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A link appearing in the namespace is announced on the socket (root only: it makes a veth
    /// pair in a namespace of its own).
    #[test]
    fn link_changes_are_announced_on_the_netlink_socket() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("APIARY_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
                "needs root (APIARY_REQUIRE_PRIVILEGED=1)"
            );
            return;
        }
        let ns = format!("apiary-nl-{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(ip(&["netns", "add", &ns]));
        let path = std::path::PathBuf::from(format!("/var/run/netns/{ns}"));
        let fd = link_events(Some(&path)).expect("a netlink socket in the namespace");
        let added = ip(&[
            "-n", &ns, "link", "add", "nla", "type", "veth", "peer", "name", "nlb",
        ]);
        let mut buf = [0u8; 8192];
        // SAFETY: a valid socket and a buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let _ = ip(&["netns", "del", &ns]);
        assert!(added, "ip link add veth");
        assert!(n > 0, "the new link was announced");
    }
}
