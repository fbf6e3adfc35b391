//! `apiary k8s manifests`: everything a cluster needs to run apiary, as typed objects printed as
//! one multi-document YAML stream: the namespace, the CRDs, one ServiceAccount with least-privilege
//! RBAC per component (agent, operator), the agent DaemonSet, the operator Deployment, and, with
//! CSI, the CSIDriver object and the node-driver-registrar sidecar.
//!
//! The RBAC rules are the tables `AGENT_RULES` and `OPERATOR_RULES`: each row says which verbs
//! on which resources and why the component's code needs them. When a component's API calls
//! change, its table is the one place to change.

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
/// Re-exported for the CLI's `--toleration` parser.
pub use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The namespace the components run in unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "apiary-system";
/// The image both components run unless `--image` says otherwise: a local name, since apiary
/// publishes no image (build one holding the `apiary` binary on PATH and push it where the
/// cluster pulls from).
pub const DEFAULT_IMAGE: &str = concat!("apiary:", env!("CARGO_PKG_VERSION"));
/// The node-driver-registrar sidecar's image unless `--registrar-image` says otherwise.
pub const DEFAULT_REGISTRAR_IMAGE: &str =
    "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0";
/// The CSI driver's name (the CSIDriver object, the pods' volumes).
pub const CSI_DRIVER: &str = "csi.apiary.io";
/// Where the agent serves the CSI socket (under /run/apiary, which is a host directory, so the
/// path is the same for the kubelet on the host).
pub const CSI_SOCKET: &str = "/run/apiary/csi/csi.sock";
/// The directory of `CSI_SOCKET`, all the registrar sidecar sees of the host's /run.
const CSI_SOCKET_DIR: &str = "/run/apiary/csi";
/// The agent's Prometheus listener, on the host's loopback (the pod uses the host's network):
/// the liveness probe reads it, so a hung runtime is restarted.
pub const AGENT_METRICS_PORT: i32 = 9464;
/// The agent's mutual-TLS gRPC listener (host network: this port on every node), with
/// `--agent-tls-secret`: trace jobs stream from it.
pub const AGENT_TLS_PORT: i32 = 9443;
/// Where the agent's TLS Secret is mounted.
const AGENT_TLS_DIR: &str = "/etc/apiary/tls";
/// The Lease the operator's leader election holds in its namespace.
pub const OPERATOR_LEASE: &str = "apiary-operator";

/// The agent's service account, roles and workload are named this.
pub const AGENT: &str = "apiary-agent";
/// The operator's service account, roles and workload are named this.
pub const OPERATOR: &str = "apiary-operator";

/// Where an RBAC rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole cluster (a ClusterRole).
    Cluster,
    /// The components' namespace only (a Role there).
    Namespace,
    /// The namespace of the agents' Leases, `kube-node-lease` (a Role there).
    AgentLeases,
}

/// One row of a component's RBAC: verbs on resources of one API group, and why the component
/// needs them (the README's table says the same).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub scope: Scope,
    /// The API group ("" is the core group).
    pub group: &'static str,
    pub resources: &'static [&'static str],
    /// Only these objects (empty: any). The apiserver cannot restrict `create` or an unfiltered
    /// `list` by name, so rows with names never hold those verbs.
    pub names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

const APPS: &[&str] = &["bpfapplications", "clusterbpfapplications"];
const APPS_STATUS: &[&str] = &["bpfapplications/status", "clusterbpfapplications/status"];
const STATES: &[&str] = &["bpfapplicationstates", "clusterbpfapplicationstates"];
const STATES_STATUS: &[&str] = &[
    "bpfapplicationstates/status",
    "clusterbpfapplicationstates/status",
];

/// What the node agent calls (crates/apiary-k8s/src/agent): watches (list + watch) of its Node,
/// of every application and of trace jobs; server-side applies (patch, and create for an object
/// that does not exist yet) of its finalizer, its state objects, its trace jobs' status and its
/// Lease; deletes of its own state objects. It watches no state objects: the operator
/// aggregates them.
pub const AGENT_RULES: &[Rule] = &[
    Rule {
        scope: Scope::Cluster,
        group: "",
        resources: &["nodes"],
        names: &[],
        verbs: &["list", "watch", "patch"],
        why: "watches its own Node (a field selector on its name): labels for nodeSelector, \
              InternalIP for the primary interface; patch: publishes its trace endpoint in the \
              annotation apiary.io/agent-endpoint",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: APPS,
        names: &[],
        verbs: &["list", "watch", "patch"],
        why: "watches every application; patch: server-side applies its finalizer \
              apiary.io/node-NODE, and removes it once the node unloaded the application",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: STATES,
        names: &[],
        verbs: &["create", "patch", "delete"],
        why: "server-side applies its node's state objects (create for the first write); \
              deletes them when an application is no longer selected or is deleted",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: STATES_STATUS,
        names: &[],
        verbs: &["patch"],
        why: "writes its node's state: programs, links, kernel ids, the condition",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: &["tracejobs"],
        names: &[],
        verbs: &["list", "watch"],
        why: "watches trace jobs for those that pick its node",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: &["tracejobs/status"],
        names: &[],
        verbs: &["patch"],
        why: "writes its node's entry of a trace job's status (phase, times, exit, bytes)",
    },
    Rule {
        scope: Scope::AgentLeases,
        group: "coordination.k8s.io",
        resources: &["leases"],
        names: &[],
        verbs: &["create", "patch"],
        why: "renews its Lease apiary-agent-NODE (server-side apply; create the first time), \
              so the operator tells a node without agent from one with",
    },
];

/// What the operator calls (crates/apiary-k8s/src/operator; its module comment has the same
/// table): caches of both application kinds, both state kinds, Nodes and the agents' Leases;
/// its finalizer and each application's status; deletes of state objects of deleted nodes; its
/// leader-election Lease.
pub const OPERATOR_RULES: &[Rule] = &[
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: APPS,
        names: &[],
        verbs: &["list", "watch", "patch"],
        why: "watches every application; patch: adds and removes its finalizer \
              apiary.io/operator",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: APPS_STATUS,
        names: &[],
        verbs: &["patch"],
        why: "writes each application's status: conditions, node counts, the rollout",
    },
    Rule {
        scope: Scope::Cluster,
        group: crate::crd::GROUP,
        resources: STATES,
        names: &[],
        verbs: &["list", "watch", "delete"],
        why: "aggregates the nodes' state objects; deletes those of Nodes that no longer exist",
    },
    Rule {
        scope: Scope::Cluster,
        group: "",
        resources: &["nodes"],
        names: &[],
        verbs: &["list", "watch"],
        why: "which nodes exist and their labels (a metadata watch), for the nodes an \
              application selects and the deleted ones",
    },
    Rule {
        scope: Scope::AgentLeases,
        group: "coordination.k8s.io",
        resources: &["leases"],
        names: &[],
        verbs: &["list", "watch"],
        why: "which nodes run a live agent (the agents' Leases)",
    },
    Rule {
        scope: Scope::Namespace,
        group: "coordination.k8s.io",
        resources: &["leases"],
        names: &[],
        verbs: &["create"],
        why: "leader election: creates its Lease when there is none (create cannot be limited \
              by name)",
    },
    Rule {
        scope: Scope::Namespace,
        group: "coordination.k8s.io",
        resources: &["leases"],
        names: &[OPERATOR_LEASE],
        verbs: &["get", "update"],
        why: "leader election: reads, renews and takes over its own Lease, no other",
    },
];

/// A bad option of `apiary k8s manifests`, or an object that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{option} {value:?}: {why}")]
    Option {
        option: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot write {kind} {name} as YAML: {error}")]
    Yaml {
        kind: &'static str,
        name: String,
        error: serde_yaml_ng::Error,
    },
}

/// What the manifests are made for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image of the agent and the operator.
    pub image: String,
    pub namespace: String,
    /// The agent runs on the nodes with these labels (empty: every Linux node).
    pub node_selector: BTreeMap<String, String>,
    /// The taints the agent tolerates (empty: every taint, so tainted nodes run it too).
    pub tolerations: Vec<Toleration>,
    /// The kubelet's root directory on the nodes (pods' volumes live under it).
    pub kubelet_dir: String,
    /// The CSI driver: the CSIDriver object and the registrar sidecar, with its image.
    pub csi: Option<String>,
    /// A Secret (kubernetes.io/tls plus `ca.crt`) for the agent's mutual-TLS listener on
    /// `AGENT_TLS_PORT`, where trace jobs stream their output to clients (None: no listener).
    pub agent_tls_secret: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: DEFAULT_IMAGE.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            kubelet_dir: "/var/lib/kubelet".into(),
            csi: None,
            agent_tls_secret: None,
        }
    }
}

/// Every object, typed.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub namespace: Namespace,
    pub crds: Vec<CustomResourceDefinition>,
    pub csi_driver: Option<CSIDriver>,
    pub service_accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub daemon_set: DaemonSet,
    pub deployment: Deployment,
}

/// A toleration from `KEY[=VALUE][:EFFECT]` (kubectl taint's spelling): with a value it
/// tolerates that value only, without one any value; without an effect every effect.
pub fn parse_toleration(s: &str) -> Result<Toleration, ManifestError> {
    let bad = |why: &str| ManifestError::Option {
        option: "--toleration",
        value: s.to_string(),
        why: why.to_string(),
    };
    let (rest, effect) = match s.rsplit_once(':') {
        Some((rest, effect)) => {
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(bad(
                    "the effect must be NoSchedule, PreferNoSchedule or NoExecute",
                ));
            }
            (rest, Some(effect.to_string()))
        }
        None => (s, None),
    };
    let (key, value) = match rest.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (rest, None),
    };
    if key.is_empty() {
        return Err(bad("expected KEY[=VALUE][:EFFECT]"));
    }
    Ok(Toleration {
        key: Some(key.to_string()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
        value,
        effect,
        ..Toleration::default()
    })
}

/// A node label `KEY=VALUE` for the agent's nodeSelector.
pub fn parse_label(s: &str) -> Result<(String, String), ManifestError> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| ManifestError::Option {
            option: "--node-selector",
            value: s.to_string(),
            why: "expected KEY=VALUE".into(),
        })
}

/// A namespace name must be a DNS-1123 label.
fn check_namespace(ns: &str) -> Result<(), ManifestError> {
    check_name("--namespace", ns, "a namespace")
}

/// A DNS label (namespace, Secret name as used here): lower-case letters, digits and '-'.
fn check_name(option: &'static str, name: &str, what: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Option {
            option,
            value: name.to_string(),
            why: format!(
                "{what} is lower-case letters, digits and '-', at most 63, starting and ending \
                 with a letter or digit"
            ),
        })
    }
}

fn labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "apiary".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "apiary".to_string(),
        ),
    ])
}

fn meta(name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(String::from),
        labels: Some(labels(component)),
        ..ObjectMeta::default()
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The rules of `table` that apply in `scope`, as RBAC's policy rules.
pub fn policy_rules(table: &[Rule], scope: Scope) -> Vec<PolicyRule> {
    table
        .iter()
        .filter(|r| r.scope == scope)
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.group.to_string()]),
            resources: Some(strings(r.resources)),
            resource_names: (!r.names.is_empty()).then(|| strings(r.names)),
            verbs: strings(r.verbs),
            non_resource_urls: None,
        })
        .collect()
}

/// A role (of either kind) bound to the component's service account.
fn binding_parts(name: &str, namespace: &str, kind: &str) -> (RoleRef, Vec<Subject>) {
    (
        RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
        },
        vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            api_group: None,
        }],
    )
}

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, propagation: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        mount_propagation: propagation.map(String::from),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// The agent's arguments: its node from the downward API, and the host's loopback for the
/// metrics the liveness probe reads; the CSI socket with the CSI driver; the mutual-TLS
/// listener (published on the Node for trace jobs: the node's InternalIP) with a TLS Secret.
fn agent_args(o: &Options) -> Vec<String> {
    let mut args = vec![
        "agent".to_string(),
        "--node-name=$(NODE_NAME)".to_string(),
        format!("--metrics=127.0.0.1:{AGENT_METRICS_PORT}"),
    ];
    if o.csi.is_some() {
        args.push(format!("--csi-endpoint={CSI_SOCKET}"));
    }
    if o.agent_tls_secret.is_some() {
        args.extend([
            format!("--listen=0.0.0.0:{AGENT_TLS_PORT}"),
            format!("--tls-cert={AGENT_TLS_DIR}/tls.crt"),
            format!("--tls-key={AGENT_TLS_DIR}/tls.key"),
            format!("--client-ca={AGENT_TLS_DIR}/ca.crt"),
        ]);
    }
    args
}

/// The operator's arguments: the Lease in its own namespace, held under its pod's name.
fn operator_args() -> Vec<String> {
    strings(&[
        "operator",
        "--lease-namespace=$(POD_NAMESPACE)",
        "--identity=$(POD_NAME)",
    ])
}

fn daemon_set(o: &Options) -> DaemonSet {
    let selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "apiary".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "agent".to_string(),
        ),
    ]);
    let kubelet = o.kubelet_dir.trim_end_matches('/');
    let mut volumes = vec![
        host_path("bpffs", "/sys/fs/bpf", "Directory"),
        host_path("tracefs", "/sys/kernel/tracing", "Directory"),
        host_path("run", "/run/apiary", "DirectoryOrCreate"),
        host_path("netns", "/run/netns", "DirectoryOrCreate"),
        host_path("state", "/var/lib/apiary", "DirectoryOrCreate"),
        host_path("pods", &format!("{kubelet}/pods"), "DirectoryOrCreate"),
        host_path("modules", "/lib/modules", "Directory"),
    ];
    let mut agent = Container {
        name: "agent".into(),
        image: Some(o.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["apiary".into()]),
        args: Some(agent_args(o)),
        env: Some(vec![field_env("NODE_NAME", "spec.nodeName")]),
        // Loading programs, pinning, joining network namespaces and mounting bpffs for pods:
        // nothing short of privileged does all of it.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            // Bidirectional: pins and the CSI driver's per-volume bpffs mounts must be seen by
            // the host (and so survive the agent's restarts).
            mount("bpffs", "/sys/fs/bpf", Some("Bidirectional"), false),
            mount("tracefs", "/sys/kernel/tracing", None, false),
            mount("run", "/run/apiary", None, false),
            // Network namespaces made after the agent started must appear in it.
            mount("netns", "/run/netns", Some("HostToContainer"), true),
            mount("state", "/var/lib/apiary", None, false),
            // The CSI driver's bind mounts into pods' volume directories reach the kubelet.
            mount(
                "pods",
                &format!("{kubelet}/pods"),
                Some("Bidirectional"),
                false,
            ),
            mount("modules", "/lib/modules", None, true),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                host: Some("127.0.0.1".into()),
                path: Some("/metrics".into()),
                port: IntOrString::Int(AGENT_METRICS_PORT),
                ..HTTPGetAction::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(20),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        ..Container::default()
    };
    if let Some(secret) = &o.agent_tls_secret {
        volumes.push(Volume {
            name: "agent-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        if let Some(m) = agent.volume_mounts.as_mut() {
            m.push(mount("agent-tls", AGENT_TLS_DIR, None, true));
        }
    }
    let mut containers = vec![agent];
    if let Some(image) = &o.csi {
        volumes.push(host_path("csi-socket", CSI_SOCKET_DIR, "DirectoryOrCreate"));
        volumes.push(host_path(
            "registration",
            &format!("{kubelet}/plugins_registry"),
            "DirectoryOrCreate",
        ));
        containers.push(registrar(image));
    }
    let tolerations = if o.tolerations.is_empty() {
        // Every taint: an application must be able to reach nodes that are tainted (control
        // plane, dedicated pools) — bpfman's most reported failure is a node without its daemon.
        vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]
    } else {
        o.tolerations.clone()
    };
    let mut node_selector = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
    node_selector.extend(o.node_selector.clone());
    DaemonSet {
        metadata: meta(AGENT, Some(&o.namespace), "agent"),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels("agent")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT.into()),
                    host_network: Some(true),
                    host_pid: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    // The node's dataplane: evicted last.
                    priority_class_name: Some("system-node-critical".into()),
                    node_selector: Some(node_selector),
                    tolerations: Some(tolerations),
                    containers,
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// The node-driver-registrar: tells the kubelet (through its plugin registration directory)
/// where the CSI socket is.
fn registrar(image: &str) -> Container {
    Container {
        name: "node-driver-registrar".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            format!("--csi-address={CSI_SOCKET}"),
            format!("--kubelet-registration-path={CSI_SOCKET}"),
            "--v=2".into(),
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        // The CSI socket's directory only: not the daemon's socket beside it.
        volume_mounts: Some(vec![
            mount("csi-socket", CSI_SOCKET_DIR, None, false),
            mount("registration", "/registration", None, false),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

fn deployment(o: &Options) -> Deployment {
    let selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "apiary".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "operator".to_string(),
        ),
    ]);
    let operator = Container {
        name: "operator".into(),
        image: Some(o.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["apiary".into()]),
        args: Some(operator_args()),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        // It only talks to the apiserver: no privilege of any kind.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![mount("tmp", "/tmp", None, false)]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "20m"), ("memory", "64Mi")])),
            limits: Some(quantities(&[("memory", "256Mi")])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: meta(OPERATOR, Some(&o.namespace), "operator"),
        spec: Some(DeploymentSpec {
            // One is enough; a second is safe (the Lease makes one of them active) and only
            // shortens a failover.
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels("operator")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(OPERATOR.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![operator],
                    // The root filesystem is read-only; a scratch /tmp is all it may write.
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("16Mi".into())),
                            medium: None,
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Every object for `o`.
pub fn manifests(o: &Options) -> Result<Manifests, ManifestError> {
    check_namespace(&o.namespace)?;
    if let Some(secret) = &o.agent_tls_secret {
        check_name("--agent-tls-secret", secret, "a Secret's name")?;
    }
    if o.image.trim().is_empty() {
        return Err(ManifestError::Option {
            option: "--image",
            value: o.image.clone(),
            why: "an image reference is needed".into(),
        });
    }
    let ns = o.namespace.as_str();
    let components = [
        ("agent", AGENT, AGENT_RULES),
        ("operator", OPERATOR, OPERATOR_RULES),
    ];
    let mut m = Manifests {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/part-of".to_string(),
                        "apiary".to_string(),
                    ),
                    // The agent's pod is privileged: a namespace under the Pod Security
                    // admission's defaults would refuse it.
                    (
                        "pod-security.kubernetes.io/enforce".to_string(),
                        "privileged".to_string(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
        crds: crate::crd::crds(),
        csi_driver: o.csi.as_ref().map(|_| CSIDriver {
            metadata: meta(CSI_DRIVER, None, "csi"),
            spec: CSIDriverSpec {
                attach_required: Some(false),
                pod_info_on_mount: Some(true),
                volume_lifecycle_modes: Some(vec!["Ephemeral".into()]),
                fs_group_policy: Some("File".into()),
                ..CSIDriverSpec::default()
            },
        }),
        service_accounts: Vec::new(),
        cluster_roles: Vec::new(),
        cluster_role_bindings: Vec::new(),
        roles: Vec::new(),
        role_bindings: Vec::new(),
        daemon_set: daemon_set(o),
        deployment: deployment(o),
    };
    for (component, name, table) in components {
        m.service_accounts.push(ServiceAccount {
            metadata: meta(name, Some(ns), component),
            ..ServiceAccount::default()
        });
        let cluster = policy_rules(table, Scope::Cluster);
        if !cluster.is_empty() {
            m.cluster_roles.push(ClusterRole {
                metadata: meta(name, None, component),
                rules: Some(cluster),
                aggregation_rule: None,
            });
            let (role_ref, subjects) = binding_parts(name, ns, "ClusterRole");
            m.cluster_role_bindings.push(ClusterRoleBinding {
                metadata: meta(name, None, component),
                role_ref,
                subjects: Some(subjects),
            });
        }
        for (scope, role_ns) in [
            (Scope::Namespace, ns),
            (
                Scope::AgentLeases,
                crate::agent::announce::DEFAULT_NAMESPACE,
            ),
        ] {
            let rules = policy_rules(table, scope);
            if rules.is_empty() {
                continue;
            }
            m.roles.push(Role {
                metadata: meta(name, Some(role_ns), component),
                rules: Some(rules),
            });
            let (role_ref, subjects) = binding_parts(name, ns, "Role");
            m.role_bindings.push(RoleBinding {
                metadata: meta(name, Some(role_ns), component),
                role_ref,
                subjects: Some(subjects),
            });
        }
    }
    Ok(m)
}

fn document<
    T: serde::Serialize + k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
>(
    out: &mut String,
    object: &T,
) -> Result<(), ManifestError> {
    let text = serde_yaml_ng::to_string(object).map_err(|error| ManifestError::Yaml {
        kind: T::KIND,
        name: object.metadata().name.clone().unwrap_or_default(),
        error,
    })?;
    out.push_str("---\n");
    out.push_str(&quote_yaml11_words(&text));
    Ok(())
}

/// Plain scalars that YAML 1.2 (the emitter's) reads as strings but YAML 1.1 reads as booleans,
/// as kubectl's parser does: a label value `y` or `on` would reach the apiserver as `true`.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Quote the keys and values of `text` (the emitter's block-style output) that YAML 1.1 would
/// read as booleans. Lines inside literal and folded block scalars are text and stay as they are.
pub(crate) fn quote_yaml11_words(text: &str) -> String {
    let ambiguous = |w: &str| YAML11_BOOLEANS.contains(&w);
    let mut out = String::with_capacity(text.len());
    // The indentation of the line that opened the block scalar being read, if any.
    let mut block: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block {
            if line.trim().is_empty() || indent > parent {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block = None;
        }
        // The line's items: "- " markers, then an optional "key:" and an optional value.
        let mut rest = &line[indent..];
        let mut prefix = line[..indent].to_string();
        while let Some(r) = rest.strip_prefix("- ") {
            prefix.push_str("- ");
            rest = r;
        }
        let (key, value) = if rest.starts_with(['\'', '"']) {
            // A quoted key (or a quoted value, which is never ambiguous): the value, if any,
            // follows the last ": ".
            match rest.rsplit_once(": ") {
                Some((k, v)) => (Some(k), Some(v)),
                None => (None, Some(rest)),
            }
        } else {
            match rest.split_once(": ") {
                Some((k, v)) => (Some(k), Some(v)),
                None => match rest.strip_suffix(':') {
                    Some(k) => (Some(k), None),
                    None => (None, Some(rest)),
                },
            }
        };
        if let Some(k) = key {
            if ambiguous(k) {
                prefix.push_str(&format!("'{k}'"));
            } else {
                prefix.push_str(k);
            }
            prefix.push(':');
            if value.is_some() {
                prefix.push(' ');
            }
        }
        if let Some(v) = value {
            if v.starts_with(['|', '>']) {
                block = Some(indent);
            }
            if ambiguous(v) {
                prefix.push_str(&format!("'{v}'"));
            } else {
                prefix.push_str(v);
            }
        }
        out.push_str(&prefix);
        out.push('\n');
    }
    out
}

impl Manifests {
    /// One multi-document YAML stream, in the order `kubectl apply` needs: the namespace and
    /// the CRDs before what lives in them, the RBAC before the workloads using it.
    pub fn to_yaml(&self) -> Result<String, ManifestError> {
        let mut out = String::new();
        document(&mut out, &self.namespace)?;
        for crd in &self.crds {
            document(&mut out, crd)?;
        }
        if let Some(d) = &self.csi_driver {
            document(&mut out, d)?;
        }
        for sa in &self.service_accounts {
            document(&mut out, sa)?;
        }
        for r in &self.cluster_roles {
            document(&mut out, r)?;
        }
        for b in &self.cluster_role_bindings {
            document(&mut out, b)?;
        }
        for r in &self.roles {
            document(&mut out, r)?;
        }
        for b in &self.role_bindings {
            document(&mut out, b)?;
        }
        document(&mut out, &self.daemon_set)?;
        document(&mut out, &self.deployment)?;
        Ok(out)
    }
}
