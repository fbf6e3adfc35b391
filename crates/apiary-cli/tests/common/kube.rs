//! The Kubernetes tests' shared parts: the suite's control plane (scripts/kube-testenv.sh,
//! reached through KUBECONFIG and APIARY_KUBECTL), kubectl, simulated nodes (a Node object, a
//! network namespace with a veth pair, an agent process with its own store and bpffs dir each),
//! operator processes, and the cleanup of applications a test made.

use super::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The control plane of the suite, or None (skip) when there is none and none is required.
pub fn kube() -> Option<Kube> {
    match (std::env::var("KUBECONFIG"), std::env::var("APIARY_KUBECTL")) {
        (Ok(k), Ok(c)) if !k.is_empty() && !c.is_empty() => Some(Kube {
            kubeconfig: PathBuf::from(k),
            kubectl: PathBuf::from(c),
        }),
        _ => {
            assert!(
                std::env::var("APIARY_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
                "APIARY_REQUIRE_PRIVILEGED=1 but no KUBECONFIG/APIARY_KUBECTL: start scripts/kube-testenv.sh"
            );
            eprintln!("skipped: no KUBECONFIG / APIARY_KUBECTL (scripts/kube-testenv.sh up; eval \"$(scripts/kube-testenv.sh env)\")");
            None
        }
    }
}

pub struct Kube {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

impl Kube {
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut c = Command::new(&self.kubectl);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run kubectl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write to kubectl");
        }
        Run::from(child.wait_with_output().expect("kubectl"))
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let r = self.run(args, stdin);
        assert!(r.ok, "kubectl {args:?} failed:\n{}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// The object as JSON, or None when it does not exist.
    pub fn get(&self, what: &str, name: &str) -> Option<Value> {
        let r = self.run(&["get", what, name, "-o", "json"], None);
        if !r.ok {
            assert!(
                r.stderr.contains("NotFound"),
                "kubectl get {what} {name}: {}",
                r.stderr
            );
            return None;
        }
        Some(serde_json::from_str(&r.stdout).expect("kubectl JSON"))
    }

    pub fn install(&self) {
        let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["k8s", "install", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .output()
            .expect("apiary k8s install");
        let r = Run::from(out);
        assert!(r.ok, "apiary k8s install failed:\n{}{}", r.stdout, r.stderr);
        assert_eq!(
            r.stdout.matches("established").count(),
            apiary_k8s::crd::crds().len(),
            "{}",
            r.stdout
        );
    }
}

pub fn app_yaml(name: &str, selector_label: &str, obj: &std::path::Path, xdp_prio: u32) -> String {
    format!(
        r#"apiVersion: apiary.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {name}
spec:
  nodeSelector:
    matchLabels:
      {selector_label}: "yes"
  byteCode:
    path: {obj}
  programs:
  - name: xdp_count
    type: XDP
    xdp:
      links:
      - interfaceSelector: {{primaryNodeInterface: true}}
        priority: {xdp_prio}
  - name: tc_count
    type: TC
    tc:
      links:
      - interfaceSelector:
          interfacesDiscoveryConfig:
            interfaceAutoDiscovery: true
            allowedInterfaces: ["/^vb/"]
        direction: Ingress
        priority: 10
  - name: tp_getppid
    type: TracePoint
    tracepoint:
      links:
      - name: syscalls/sys_enter_getppid
"#,
        obj = obj.display()
    )
}

/// One simulated node: its Node object, network namespaces with a veth pair (the node's side
/// is `b`, holding the InternalIP), an agent process, its store and bpffs dir.
pub struct SimNode {
    pub name: String,
    /// The kubeconfig the agent uses (the suite's, or one through a proxy).
    pub kubeconfig: PathBuf,
    pub agent: Option<Child>,
    pub log: PathBuf,
    /// Dropped after the agent is stopped: unloads what is left and removes the pins.
    pub apiary: Apiary,
    /// apiary's config file for the agent (`APIARY_CONFIG`: registries it may pull from).
    pub config: Option<PathBuf>,
    /// More arguments for the agent, from its next start.
    pub extra_args: Vec<String>,
    pub net: NetPair,
}

impl SimNode {
    pub fn new(k: &Kube, labels: &[(&str, &str)]) -> SimNode {
        Self::with_kubeconfig(k, labels, k.kubeconfig.clone())
    }

    pub fn with_kubeconfig(k: &Kube, labels: &[(&str, &str)], kubeconfig: PathBuf) -> SimNode {
        let mut n = Self::stopped(k, labels, kubeconfig);
        n.start(k);
        n
    }

    /// A node whose agent is not started (`start` starts it).
    pub fn without_agent(k: &Kube, labels: &[(&str, &str)]) -> SimNode {
        Self::stopped(k, labels, k.kubeconfig.clone())
    }

    fn stopped(k: &Kube, labels: &[(&str, &str)], kubeconfig: PathBuf) -> SimNode {
        let net = NetPair::new();
        let name = unique("node-").to_lowercase();
        let mut label_lines = format!("    kubernetes.io/hostname: {name}\n");
        for (l, v) in labels {
            label_lines.push_str(&format!("    {l}: \"{v}\"\n"));
        }
        k.ok(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{label_lines}"
            )),
        );
        let status = serde_json::json!({"status": {"addresses": [
            {"type": "InternalIP", "address": net.ip_b},
            {"type": "Hostname", "address": name},
        ]}});
        k.ok(
            &[
                "patch",
                "node",
                &name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ],
            None,
        );
        let apiary = Apiary::new();
        let log = apiary.state.path().join("agent.log");
        SimNode {
            name,
            kubeconfig,
            agent: None,
            log,
            apiary,
            config: None,
            extra_args: Vec::new(),
            net,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.apiary.state.path().join("apiary.sock")
    }

    pub fn start(&mut self, _k: &Kube) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiary"));
        if let Some(c) = &self.config {
            cmd.env("APIARY_CONFIG", c);
        }
        let child = cmd
            .args([
                "agent",
                "--node-name",
                &self.name,
                "--netns",
                &self.net.ns_b,
                "--kubeconfig",
            ])
            .arg(&self.kubeconfig)
            .arg("--socket")
            .arg(self.socket())
            .args(&self.extra_args)
            .env("APIARY_STATE_DIR", self.apiary.state.path())
            .env("APIARY_BPFFS", &self.apiary.bpffs)
            .env_remove("APIARY_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start apiary agent");
        self.agent = Some(child);
        assert!(
            eventually(30, || self.socket().exists()),
            "the agent's socket did not appear:\n{}",
            self.log_text()
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `apiary ARGS -o json` through the agent's local socket.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(args)
            .args(["-o", "json"])
            .env(
                "APIARY_ENDPOINT",
                format!("unix://{}", self.socket().display()),
            )
            .output()
            .expect("apiary");
        let r = Run::from(out);
        assert!(
            r.ok,
            "apiary {args:?} on {}: {}{}",
            self.name, r.stdout, r.stderr
        );
        serde_json::from_str(&r.stdout).expect("JSON")
    }

    /// Program name -> (apiary id, kernel id) of the application on this node.
    pub fn programs(&self, app: &str) -> BTreeMap<String, (i64, u64)> {
        let key = format!("ClusterBpfApplication//{app}");
        self.json(&["get", "applications"])
            .as_array()
            .expect("array")
            .iter()
            .filter(|e| e["application"] == key.as_str())
            .flat_map(|e| e["programs"].as_array().cloned().unwrap_or_default())
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    (p["id"].as_i64().unwrap(), p["kernel_id"].as_u64().unwrap()),
                )
            })
            .collect()
    }

    pub fn counter(&self, program_id: i64, slot: u64) -> u64 {
        let v = self.json(&["map", "dump", &format!("{program_id}:counts")]);
        v["entries"]
            .as_array()
            .or(v.as_array())
            .into_iter()
            .flatten()
            .find(|e| e["key"].as_u64() == Some(slot))
            .and_then(|e| e["value"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.kill9();
        if let Some(k) = kube() {
            let _ = k.run(&["delete", "node", &self.name, "--wait=false"], None);
        }
    }
}

/// Applications a test made, removed on drop even when it fails: with no agent left to remove
/// its finalizer, it is stripped, and the state objects go with them.
pub struct Cleanup<'a> {
    pub k: &'a Kube,
    pub apps: Vec<String>,
    /// For BpfApplications: their namespace (None: ClusterBpfApplications).
    pub namespace: Option<&'a str>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let (kind, state, ns): (&str, &str, Vec<&str>) = match self.namespace {
            Some(ns) => ("bpfapplication", "bpfapplicationstate", vec!["-n", ns]),
            None => (
                "clusterbpfapplication",
                "clusterbpfapplicationstate",
                vec![],
            ),
        };
        for a in &self.apps {
            let run = |args: &[&str]| {
                let mut all = ns.clone();
                all.extend(args);
                let _ = self.k.run(&all, None);
            };
            run(&[
                "patch",
                kind,
                a,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
            run(&["delete", kind, a, "--wait=false", "--ignore-not-found"]);
            run(&[
                "delete",
                state,
                "-l",
                &format!("apiary.io/application={a}"),
                "--ignore-not-found",
            ]);
        }
    }
}

/// The node's state object of `app`, when it exists.
pub fn state(k: &Kube, app: &str, node: &SimNode) -> Option<Value> {
    k.get(
        "clusterbpfapplicationstate",
        &format!("{app}-{}", node.name),
    )
}

pub fn condition(s: &Value) -> (String, String) {
    let c = &s["status"]["conditions"][0];
    (
        c["type"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// Whether the node reports the application converged with every link at `xdp_prio`.
pub fn converged(k: &Kube, app: &str, node: &SimNode, xdp_prio: i64) -> bool {
    let Some(s) = state(k, app, node) else {
        return false;
    };
    condition(&s).0 == "Success"
        && s["status"]["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "xdp_count")
            .flat_map(|p| p["links"].as_array().cloned().unwrap_or_default())
            .any(|l| l["priority"].as_i64() == Some(xdp_prio) && l["linkStatus"] == "Attached")
}

/// The application's summary condition: (type, message).
pub fn app_condition(k: &Kube, app: &str) -> (String, String) {
    k.get("clusterbpfapplication", app)
        .map(|a| condition(&a))
        .unwrap_or_default()
}

/// Delete the ClusterBpfApplication `app` without waiting, then wait until it is gone (every
/// finalizer released); `context` (a log) goes into the failure message.
pub fn delete_and_wait_released(k: &Kube, app: &str, context: impl Fn() -> String) {
    k.ok(
        &["delete", "clusterbpfapplication", app, "--wait=false"],
        None,
    );
    assert!(
        eventually(30, || k.get("clusterbpfapplication", app).is_none()),
        "{app} was not released: finalizers {:?}\n{}",
        finalizers(k, app),
        context()
    );
}

pub fn finalizers(k: &Kube, app: &str) -> Vec<String> {
    k.get("clusterbpfapplication", app)
        .and_then(|a| a["metadata"]["finalizers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

/// An `apiary operator` process; killed on drop.
pub struct Operator {
    pub identity: String,
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Start an operator competing for the Lease in `lease_namespace`.
    pub fn start(k: &Kube, lease_namespace: &str, identity: &str) -> Operator {
        Self::start_with(&k.kubeconfig, lease_namespace, identity)
    }

    /// An operator using `kubeconfig` (e.g. a user with only the operator's RBAC).
    pub fn start_with(
        kubeconfig: &std::path::Path,
        lease_namespace: &str,
        identity: &str,
    ) -> Operator {
        Self::start_with_args(kubeconfig, lease_namespace, identity, &[])
    }

    /// [`Operator::start_with`], with more arguments (`--web ADDR`).
    pub fn start_with_args(
        kubeconfig: &std::path::Path,
        lease_namespace: &str,
        identity: &str,
        extra: &[&str],
    ) -> Operator {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["operator", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--lease-namespace", lease_namespace, "--identity", identity])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start apiary operator");
        Operator {
            identity: identity.to_string(),
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How it ended, if it did.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, as when its pod is deleted; its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: a signal to a child this test started and has not reaped.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().ok()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A namespace of its own for a test's operator Lease, so operators of different tests do not
/// compete (left behind: the test control plane has no controller to finish its deletion).
pub fn lease_namespace(k: &Kube) -> String {
    let ns = unique("lease-").to_lowercase();
    k.ok(&["create", "namespace", &ns], None);
    ns
}

/// An operator of its own for a test (the Lease in a namespace of its own).
pub fn own_operator(k: &Kube) -> Operator {
    let ns = lease_namespace(k);
    Operator::start(k, &ns, &unique("op-"))
}

/// A TCP forwarder to the apiserver that the test can cut (every connection reset, nothing
/// listening) and restore on the same port: the apiserver "unreachable" for the processes using it.
pub struct Proxy {
    pub port: u16,
    pub target: std::net::SocketAddr,
    pub up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    pub listener: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn new(target: std::net::SocketAddr) -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut p = Proxy {
            port,
            target,
            up: Default::default(),
            conns: Default::default(),
            listener: None,
        };
        p.start();
        p
    }

    pub fn start(&mut self) {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("proxy bind");
        l.set_nonblocking(true).expect("nonblocking");
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, target) = (self.up.clone(), self.conns.clone(), self.target);
        self.listener = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                let mut c = conns.lock().unwrap();
                c.push(client);
                c.push(server);
            }
        }));
    }

    /// Stop listening and reset every connection.
    pub fn cut(&mut self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A proxy to the suite's apiserver, and a kubeconfig through it (in `dir`).
pub fn proxied_kubeconfig(k: &Kube, dir: &std::path::Path) -> (Proxy, PathBuf) {
    let text = std::fs::read_to_string(&k.kubeconfig).expect("kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server in the kubeconfig")
        .to_string();
    let target: std::net::SocketAddr = server
        .trim_start_matches("https://")
        .parse()
        .expect("the server is https://IP:PORT");
    let proxy = Proxy::new(target);
    let proxied = dir.join("kubeconfig");
    std::fs::write(
        &proxied,
        text.replace(&server, &format!("https://127.0.0.1:{}", proxy.port)),
    )
    .expect("write the proxied kubeconfig");
    (proxy, proxied)
}

/// The XDP program of the rollout fixture (tests/fixtures/bpf/k8s_rollout.bpf.c).
pub const ROLLOUT_XDP: &str = "  - name: xdp_count
    type: XDP
    xdp:
      links:
      - interfaceSelector: {primaryNodeInterface: true}
        priority: 10
";

/// An application of the rollout fixture on the nodes labelled `selector_label: "yes"`: its
/// global values (each an 8-byte little-endian number), `rollout` (the lines under
/// `spec.rollout`, indented by 4) and `programs` (the items under `spec.programs`).
pub fn rollout_fixture_app(
    name: &str,
    selector_label: &str,
    globals: &[(&str, u8)],
    rollout: &str,
    programs: &str,
) -> String {
    use base64::Engine;
    let mut g = String::new();
    for (k, v) in globals {
        let b64 = base64::engine::general_purpose::STANDARD.encode([*v, 0, 0, 0, 0, 0, 0, 0]);
        g.push_str(&format!("    {k}: {b64}\n"));
    }
    format!(
        r#"apiVersion: apiary.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {name}
spec:
  nodeSelector:
    matchLabels:
      {selector_label}: "yes"
  byteCode:
    path: {obj}
  globalData:
{g}  rollout:
{rollout}  programs:
{programs}"#,
        obj = fixture("k8s_rollout").display()
    )
}
