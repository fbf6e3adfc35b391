//! Kubernetes declarations on this host: `apiary apply -f` and `apiary delete -f` read
//! BpfApplication / ClusterBpfApplication objects (apiary's group or bpfman-operator's) and
//! converge this host with the same reconciler the node agent runs; `apiary get applications`
//! lists what is applied; `apiary k8s crds` prints the CRDs for a cluster, `apiary k8s
//! manifests` everything else it needs.

use crate::output::Printer;
use anyhow::{Context, Result};
use apiary::Api;
use apiary_k8s::document::{self, AppKey, Application};
use apiary_k8s::{execute, facts, plan, validate};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// This node's name, as nodeSelector sees it (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// A label of this node for nodeSelector, KEY=VALUE (repeatable); kubernetes.io/hostname,
    /// kubernetes.io/os and kubernetes.io/arch are always set.
    #[arg(long = "node-label", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// A YAML or JSON file, a directory (its .yaml, .yml and .json files), or - for standard
    /// input; repeatable. Files may hold several documents.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum K8sCmd {
    /// Print apiary's CRDs as multi-document YAML (`apiary k8s crds | kubectl apply -f -`).
    Crds,
    /// Apply the CRDs to the cluster (server-side apply) and wait until they are served.
    Install {
        /// The kubeconfig to use (default: in-cluster, else KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// How long to wait for the CRDs to be established.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print everything a cluster needs as multi-document YAML (`| kubectl apply -f -`): the
    /// namespace, the CRDs, a ServiceAccount with least-privilege RBAC per component, the agent
    /// DaemonSet and the operator Deployment (and with --csi the CSIDriver and its registrar).
    Manifests(ManifestArgs),
}

#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// The image of the agent and the operator (holding `apiary` on PATH).
    #[arg(long, default_value = apiary_k8s::manifests::DEFAULT_IMAGE)]
    pub image: String,
    /// The namespace the components run in (created).
    #[arg(long, default_value = apiary_k8s::manifests::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Run the agent only on nodes with this label, KEY=VALUE (repeatable; default every
    /// Linux node).
    #[arg(long = "node-selector", value_parser = manifest_label)]
    pub node_selector: Vec<(String, String)>,
    /// A taint the agent tolerates, KEY[=VALUE][:EFFECT] (repeatable; default every taint,
    /// so tainted nodes run it too).
    #[arg(long = "toleration", value_parser = manifest_toleration)]
    pub tolerations: Vec<apiary_k8s::manifests::Toleration>,
    /// The kubelet's root directory on the nodes.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: String,
    /// Include the CSI driver: the CSIDriver object and the node-driver-registrar sidecar.
    #[arg(long)]
    pub csi: bool,
    /// The node-driver-registrar image (with --csi).
    #[arg(long, default_value = apiary_k8s::manifests::DEFAULT_REGISTRAR_IMAGE)]
    pub registrar_image: String,
    /// A Secret in the namespace (type kubernetes.io/tls, plus ca.crt: the CA of allowed
    /// clients) for the agent's mutual-TLS listener on port 9443 of each node, which trace
    /// jobs stream from. Without it, `apiary trace run node/...` finds no agent endpoint.
    #[arg(long)]
    pub agent_tls_secret: Option<String>,
}

fn manifest_label(s: &str) -> Result<(String, String), String> {
    apiary_k8s::manifests::parse_label(s).map_err(|e| e.to_string())
}

fn manifest_toleration(s: &str) -> Result<apiary_k8s::manifests::Toleration, String> {
    apiary_k8s::manifests::parse_toleration(s).map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("invalid label {s:?}: expected KEY=VALUE"))
}

/// A `--kubeconfig` given on the command line must exist and parse: refused before anything
/// starts (a daemon's socket, a watch), as a usage error.
pub fn check_kubeconfig(path: Option<&std::path::Path>) -> Result<()> {
    if let Some(p) = path {
        apiary_k8s::install::check_kubeconfig(p)
            .map_err(|e| apiary::Error::InvalidArgument(e.to_string()))?;
    }
    Ok(())
}

pub fn run(cmd: K8sCmd) -> Result<()> {
    match cmd {
        K8sCmd::Crds => {
            print!("{}", apiary_k8s::crd::crds_yaml()?);
            Ok(())
        }
        K8sCmd::Install {
            kubeconfig,
            timeout,
        } => {
            crate::k8s::check_kubeconfig(kubeconfig.as_deref())?;
            let names = apiary_k8s::install::install_blocking(kubeconfig.as_deref(), timeout)?;
            for n in names {
                println!("{n} established");
            }
            Ok(())
        }
        K8sCmd::Manifests(a) => {
            let options = apiary_k8s::manifests::Options {
                image: a.image,
                namespace: a.namespace,
                node_selector: a.node_selector.into_iter().collect(),
                tolerations: a.tolerations,
                kubelet_dir: a.kubelet_dir,
                csi: a.csi.then_some(a.registrar_image),
                agent_tls_secret: a.agent_tls_secret,
            };
            let yaml = apiary_k8s::manifests::manifests(&options)
                .map_err(invalid)?
                .to_yaml()?;
            print!("{yaml}");
            Ok(())
        }
    }
}

/// Bad input is the user's to fix: it exits with the invalid-argument status, before anything
/// is changed.
fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    apiary::Error::InvalidArgument(e.to_string()).into()
}

/// Every application in the files, checked, each declared once.
fn read(files: &FileArgs, check: bool) -> Result<Vec<Application>> {
    let mut apps: Vec<Application> = Vec::new();
    for f in &files.files {
        for (origin, text) in sources(f)? {
            for app in document::parse(&text, &origin).map_err(invalid)? {
                if check {
                    validate::check(&app).map_err(invalid)?;
                }
                if let Some(first) = apps.iter().find(|a| a.key == app.key) {
                    return Err(invalid(apiary_k8s::DocumentError::Duplicate {
                        key: app.key.to_string(),
                        first: first.origin.clone(),
                        second: app.origin.clone(),
                    }));
                }
                apps.push(app);
            }
        }
    }
    Ok(apps)
}

/// (origin, text) of each file `arg` names.
fn sources(arg: &str) -> Result<Vec<(String, String)>> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(vec![("<stdin>".into(), text)]);
    }
    let path = Path::new(arg);
    let read = |p: &Path| -> Result<(String, String)> {
        let text = std::fs::read_to_string(p)
            .map_err(|e| invalid(format!("cannot read {}: {e}", p.display())))?;
        Ok((p.display().to_string(), text))
    };
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        files.iter().map(|p| read(p)).collect()
    } else {
        Ok(vec![read(path)?])
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub fn apply(args: ApplyArgs, api: &dyn Api, out: &Printer) -> Result<()> {
    // Everything is read and checked before anything changes.
    let apps = read(&args.files, true)?;
    let name = args.node_name.clone().unwrap_or_else(host_name);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
    ]);
    labels.extend(args.node_labels);
    let netns: Vec<String> = apps.iter().flat_map(netns_names).collect();
    let node = facts::local(&name, labels, &netns);

    let mut reports = Vec::new();
    for app in &apps {
        let plan = plan::plan(&app.spec, &node);
        reports.push(execute::apply(api, &app.key, &plan)?);
    }
    let text = reports
        .iter()
        .map(|r| describe(r, &name))
        .collect::<Vec<_>>()
        .join("\n");
    out.message(&text, serde_json::to_value(&reports)?)?;
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.application.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} application(s) did not fully apply: {} (see the status above)",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The `ip netns` names the applications' links name, whose interfaces the plan needs.
fn netns_names(app: &Application) -> Vec<String> {
    // Read back from the spec as JSON: every `networkNamespaces.names` wherever it appears.
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "networkNamespaces" {
                        if let Some(names) = v.get("names").and_then(|n| n.as_array()) {
                            out.extend(names.iter().filter_map(|n| n.as_str().map(String::from)));
                        }
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(&app.spec) {
        walk(&v, &mut out);
    }
    out
}

fn describe(r: &execute::ApplyReport, node: &str) -> String {
    use apiary_k8s::crd::{AppLoadStatus, LinkStatus};
    let c = &r.changes;
    let mut s = format!("{}: ", r.application);
    if r.state.app_load_status == AppLoadStatus::NotSelected {
        s.push_str(&format!("not selected on node {node} (nodeSelector)"));
    } else if c.is_empty() {
        s.push_str("unchanged");
    } else {
        s.push_str(&format!(
            "loaded {}, unloaded {}, attached {}, detached {}",
            c.loaded, c.unloaded, c.attached, c.detached
        ));
    }
    if let Some(why) = &c.reloaded_all {
        s.push_str(&format!(" (reloaded: {why})"));
    }
    if r.state.app_load_status == AppLoadStatus::NotSelected && c.unloaded > 0 {
        s.push_str(&format!("; unloaded {}", c.unloaded));
    }
    for p in &r.state.programs {
        let id = p
            .program_id
            .map(|i| format!("kernel id {i}"))
            .unwrap_or_else(|| "not loaded".into());
        s.push_str(&format!(
            "\n  {} ({}): {id}, {:?}",
            p.name, p.ty, p.program_link_status
        ));
        if p.program_id.is_none() {
            if let Some(m) = &p.message {
                s.push_str(&format!(": {m}"));
            }
        }
        for l in &p.links {
            let what = match l.link_status {
                LinkStatus::Attached => format!(
                    "attached (link {})",
                    l.apiary_link_id.map(|i| i.to_string()).unwrap_or_default()
                ),
                LinkStatus::NotAttached | LinkStatus::AttachError => format!(
                    "{:?}: {}",
                    l.link_status,
                    l.message.as_deref().unwrap_or("")
                ),
            };
            s.push_str(&format!("\n    {}: {what}", l.hook));
        }
    }
    s
}

pub fn delete(files: FileArgs, api: &dyn Api, out: &Printer) -> Result<()> {
    let apps = read(&files, false)?;
    let mut done = Vec::new();
    let mut lines = Vec::new();
    for app in &apps {
        let c = execute::delete(api, &app.key)?;
        lines.push(if c.unloaded == 0 {
            format!("{}: nothing loaded", app.key)
        } else {
            format!("{}: unloaded {} program(s)", app.key, c.unloaded)
        });
        done.push(
            serde_json::json!({ "application": app.key.to_string(), "unloaded": c.unloaded }),
        );
    }
    out.message(&lines.join("\n"), serde_json::Value::Array(done))
}

pub fn get_applications(api: &dyn Api, out: &Printer) -> Result<()> {
    let apps = execute::applications(api)?;
    let mut rows = vec!["APPLICATION  PROGRAMS  LINKS  KERNEL IDS".to_string()];
    let mut json = Vec::new();
    for (app, programs) in &apps {
        let names: Vec<String> = programs.iter().map(|p| p.name.clone()).collect();
        let links: usize = programs.iter().map(|p| p.links.len()).sum();
        let ids: Vec<String> = programs.iter().map(|p| p.kernel_id.to_string()).collect();
        rows.push(format!(
            "{app}  {}  {links}  {}",
            names.join(","),
            ids.join(",")
        ));
        let key: Option<AppKey> = app.parse().ok();
        json.push(serde_json::json!({
            "application": app,
            "kind": key.as_ref().map(|k| k.kind.name()),
            "namespace": key.as_ref().and_then(|k| k.namespace.clone()),
            "name": key.as_ref().map(|k| k.name.clone()),
            "programs": programs,
        }));
    }
    out.message(&rows.join("\n"), serde_json::Value::Array(json))
}
