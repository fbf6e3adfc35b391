//! The CSI node plugin (`apiary csi`), driven over its socket with the client generated from
//! its proto: csi-sanity's verdict, a real publish read by an unprivileged process in the
//! pod's fsGroup, and bad requests refused with nothing left mounted. Root only.

mod common;

use apiary_csi::pb;
use common::*;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::transport::Channel;
use tonic::Code;

/// The pod's fsGroup in these tests: no user on the host has it.
const FS_GROUP: u32 = 4242;
/// `nobody`: the unprivileged user that reads the published map.
const NOBODY: u32 = 65534;

/// Reads element 0 of a pinned array map of u64 with bpf(2) (BPF_OBJ_GET, then
/// BPF_MAP_LOOKUP_ELEM), as an unprivileged pod's reader would; `ro` asks for a read-only fd.
/// Prints the value, or `errno NAME` and exits 3.
const READER: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = libc.syscall(NR_BPF, cmd, buf, len(attr))
    if r < 0:
        print("errno " + os.strerror(ctypes.get_errno()))
        sys.exit(3)
    return r
path = ctypes.create_string_buffer(sys.argv[1].encode())
flags = (1 << 3) if sys.argv[2] == "ro" else 0
fd = bpf(7, struct.pack("=QIIi4x", ctypes.addressof(path), 0, flags, 0))
key = ctypes.create_string_buffer(struct.pack("=I", 0), 4)
val = ctypes.create_string_buffer(8)
bpf(1, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0))
print(struct.unpack("=Q", val.raw)[0])
"#;

/// A running `apiary csi` over an `Apiary` instance's store, with its kubelet-like pods
/// directory, and a client for it.
struct Plugin {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
    rt: tokio::runtime::Runtime,
    node: pb::node_client::NodeClient<Channel>,
    identity: pb::identity_client::IdentityClient<Channel>,
    /// The apiary instance's state directory (the plugin's volumes are in its `csi`).
    state: PathBuf,
}

impl Plugin {
    fn start(a: &Apiary) -> Plugin {
        Plugin::spawn(a, |_| {
            vec!["csi".into(), "--node-name".into(), "node-1".into()]
        })
    }

    /// `apiary agent --csi-endpoint`: the plugin inside the node agent, on the agent's
    /// manager. The agent's apiserver is unreachable (its watches retry in the background),
    /// which the plugin does not need.
    fn start_in_agent(a: &Apiary) -> Plugin {
        Plugin::spawn(a, |dir| {
            let kubeconfig = dir.join("kubeconfig");
            std::fs::write(
                &kubeconfig,
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
            )
            .expect("kubeconfig");
            vec![
                "agent".into(),
                "--node-name".into(),
                "node-1".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "--socket".into(),
                dir.join("apiary.sock").display().to_string(),
            ]
        })
    }

    fn spawn(a: &Apiary, command: impl FnOnce(&Path) -> Vec<String>) -> Plugin {
        let dir = tempfile::tempdir().expect("tempdir");
        // The unprivileged reader walks to the target through here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::create_dir(dir.path().join("pods")).expect("pods dir");
        let socket = dir.path().join("csi.sock");
        let log = dir.path().join("plugin.log");
        let child = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .env("APIARY_STATE_DIR", a.state.path())
            .env("APIARY_BPFFS", &a.bpffs)
            .env_remove("APIARY_ENDPOINT")
            .args(command(dir.path()))
            .arg("--csi-endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--kubelet-pods-dir")
            .arg(dir.path().join("pods"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start apiary");
        assert!(
            eventually(20, || std::os::unix::net::UnixStream::connect(&socket)
                .is_ok()),
            "the plugin did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
                    .expect("endpoint")
                    .connect(),
            )
            .expect("connect");
        Plugin {
            child,
            dir,
            socket,
            log,
            rt,
            node: pb::node_client::NodeClient::new(channel.clone()),
            identity: pb::identity_client::IdentityClient::new(channel),
            state: a.state.path().to_path_buf(),
        }
    }

    fn pods(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// A target as the kubelet names it, with its parent made (the kubelet's part).
    fn target(&self, pod: &str) -> PathBuf {
        let parent = self.pods().join(pod).join("volumes/kubernetes.io~csi/maps");
        std::fs::create_dir_all(&parent).expect("target parent");
        parent.join("mount")
    }

    fn publish(&self, r: pb::NodePublishVolumeRequest) -> Result<(), tonic::Status> {
        let mut node = self.node.clone();
        self.rt.block_on(node.node_publish_volume(r)).map(|_| ())
    }

    fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), tonic::Status> {
        let mut node = self.node.clone();
        self.rt
            .block_on(node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: volume_id.into(),
                target_path: target.display().to_string(),
            }))
            .map(|_| ())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        // A test that failed half-way may leave a volume published: unmount it, so a failure
        // does not leave mounts behind on the host.
        for m in mounts_under(&[self.dir.path(), &self.state]) {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
    }
}

fn capability(group: Option<u32>) -> pb::VolumeCapability {
    use pb::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
    pb::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: Vec::new(),
            volume_mount_group: group.map(|g| g.to_string()).unwrap_or_default(),
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A publish request as the kubelet sends it for an inline volume of a pod in `default`.
fn request(volume_id: &str, target: &Path, attrs: &[(&str, &str)]) -> pb::NodePublishVolumeRequest {
    let mut ctx: HashMap<String, String> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ctx.insert("csi.storage.k8s.io/pod.namespace".into(), "default".into());
    ctx.insert("csi.storage.k8s.io/ephemeral".into(), "true".into());
    pb::NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability(Some(FS_GROUP))),
        readonly: false,
        volume_context: ctx,
        ..Default::default()
    }
}

/// Mount points under any of `dirs`, from this process's mount table (the plugin's too: same
/// mount namespace).
fn mounts_under(dirs: &[&Path]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| dirs.iter().any(|d| Path::new(p).starts_with(d)))
        .collect()
}

/// Mount options of the mount at `p` (per-mount, field 6).
fn mount_options(p: &Path) -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&p.display().to_string()))
        .and_then(|l| l.split(' ').nth(5).map(str::to_string))
}

/// What the plugin keeps per volume (record and bpffs instance), under the state directory.
fn volume_dirs(a: &Apiary) -> Vec<PathBuf> {
    std::fs::read_dir(a.state.path().join("csi"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Run the reader as `uid` with only group `gid`; Ok(value) or Err(its error line).
fn read_as(uid: u32, gid: u32, pin: &Path, mode: &str, script: &Path) -> Result<u64, String> {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
            "/usr/bin/python3",
        ])
        .arg(script)
        .arg(pin)
        .arg(mode)
        .output()
        .expect("run setpriv");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        text.parse()
            .map_err(|e| format!("reader printed {text:?}: {e}"))
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn write_reader(dir: &Path) -> PathBuf {
    let p = dir.join("reader.py");
    std::fs::write(&p, READER).expect("reader");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    p
}

const APP: &str = "BpfApplication/default/counter";

#[test]
fn published_map_is_read_by_a_non_root_member_of_the_fs_group() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let plugin = Plugin::start(&a);
    let reader = write_reader(plugin.dir.path());
    let attrs = [
        ("csi.apiary.io/program", "counter"),
        ("csi.apiary.io/maps", "packets"),
    ];
    let target = plugin.target("pod-a");

    // Before the program is loaded on the node: NotFound, so the kubelet retries; nothing made.
    let e = plugin
        .publish(request("vol-a", &target, &attrs))
        .expect_err("no program yet");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(!target.exists() && volume_dirs(&a).is_empty());

    // The application, as the node agent records it, counting pings on the node's veth.
    let net = NetPair::new();
    let obj = fixture("net");
    let meta = format!("apiary.dev/application={APP}");
    let id = a.load_one(&[
        "--path",
        obj.to_str().unwrap(),
        "--programs",
        "xdp:xdp_count",
        "-m",
        &meta,
    ]);
    a.attach(id, &["xdp", "--iface", &net.if_b, "--netns", &net.ns_b]);
    assert!(net.ping(5), "pings pass the counting program");

    plugin
        .publish(request("vol-a", &target, &attrs))
        .unwrap_or_else(|e| panic!("publish: {e:?}\n{}", plugin.log()));
    // Repeating the call changes nothing and succeeds (the kubelet repeats calls).
    plugin
        .publish(request("vol-a", &target, &attrs))
        .expect("publish is idempotent");
    assert_eq!(
        mount_options(&target)
            .as_deref()
            .map(|o| o.starts_with("rw")),
        Some(true)
    );

    let pin = target.join("packets");
    let md = std::fs::metadata(&pin).expect("the map is pinned at the target");
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (0, FS_GROUP, 0o660)
    );
    // The volume holds the requested map and nothing else.
    let names: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["packets"]);

    let dumped = a.counter(&format!("{id}:packets"), 0);
    assert!(dumped >= 5, "the program counted the pings: {dumped}");
    let read = read_as(NOBODY, FS_GROUP, &pin, "rw", &reader)
        .expect("a non-root member of the fsGroup opens and reads the pinned map");
    assert_eq!(read, dumped, "the pod reads what `apiary map dump` shows");
    // The same map, not a copy: more pings show through the volume.
    assert!(net.ping(3));
    let dumped = a.counter(&format!("{id}:packets"), 0);
    assert_eq!(read_as(NOBODY, FS_GROUP, &pin, "rw", &reader), Ok(dumped));
    assert!(dumped >= read + 3);
    // Outside the group, the pin's mode keeps the user out.
    let denied = read_as(NOBODY, NOBODY, &pin, "ro", &reader).expect_err("not in the group");
    assert!(denied.contains("Permission denied"), "{denied}");

    plugin.unpublish("vol-a", &target).expect("unpublish");
    plugin
        .unpublish("vol-a", &target)
        .expect("unpublish is idempotent");
    assert_eq!(
        mounts_under(&[plugin.dir.path(), a.state.path()]),
        Vec::<String>::new()
    );
    assert!(!target.exists(), "the target directory is removed");
    assert!(volume_dirs(&a).is_empty(), "no instance or record is left");

    // Read-only: the pins are 0440 and the mount is ro; a read-only fd is what the group gets.
    let ro_target = plugin.target("pod-b");
    let mut r = request("vol-b", &ro_target, &attrs);
    r.readonly = true;
    plugin.publish(r).expect("read-only publish");
    let pin = ro_target.join("packets");
    let md = std::fs::metadata(&pin).expect("pinned");
    assert_eq!((md.gid(), md.mode() & 0o777), (FS_GROUP, 0o440));
    assert_eq!(
        mount_options(&ro_target)
            .as_deref()
            .map(|o| o.starts_with("ro")),
        Some(true)
    );
    let dumped = a.counter(&format!("{id}:packets"), 0);
    assert_eq!(read_as(NOBODY, FS_GROUP, &pin, "ro", &reader), Ok(dumped));
    let denied = read_as(NOBODY, FS_GROUP, &pin, "rw", &reader).expect_err("read-only volume");
    assert!(denied.contains("Permission denied"), "{denied}");
    plugin.unpublish("vol-b", &ro_target).expect("unpublish");
    assert_eq!(
        mounts_under(&[plugin.dir.path(), a.state.path()]),
        Vec::<String>::new()
    );
    assert!(volume_dirs(&a).is_empty());
    // The program's own pins are untouched by the volumes coming and going.
    assert_eq!(a.counter(&format!("{id}:packets"), 0), dumped);
}

#[test]
fn bad_requests_are_refused_with_csi_codes_and_leave_nothing_mounted() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let plugin = Plugin::start(&a);
    let obj = fixture("net");
    let id = a.load_one(&[
        "--path",
        obj.to_str().unwrap(),
        "--programs",
        "xdp:xdp_count",
    ]);
    let id = id.to_string();
    let good = [
        ("csi.apiary.io/program", id.as_str()),
        ("csi.apiary.io/maps", "packets"),
    ];
    let target = plugin.target("pod-x");
    let outside = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(outside.path(), plugin.pods().join("escape")).expect("symlink");

    let cases: Vec<(&str, pb::NodePublishVolumeRequest, Code)> = vec![
        (
            "unknown program",
            request(
                "v1",
                &target,
                &[
                    ("csi.apiary.io/program", "nosuch"),
                    ("csi.apiary.io/maps", "packets"),
                ],
            ),
            Code::NotFound,
        ),
        (
            "unknown map",
            request(
                "v2",
                &target,
                &[
                    ("csi.apiary.io/program", &id),
                    ("csi.apiary.io/maps", "packets,nosuch"),
                ],
            ),
            Code::NotFound,
        ),
        (
            "missing target",
            request("v3", Path::new(""), &good),
            Code::InvalidArgument,
        ),
        (
            "target outside the pods directory",
            request("v4", &outside.path().join("mount"), &good),
            Code::InvalidArgument,
        ),
        (
            "target leaving the pods directory through a link",
            request("v5", &plugin.pods().join("escape/mount"), &good),
            Code::InvalidArgument,
        ),
        (
            "target climbing with ..",
            request("v6", &plugin.pods().join("../mount"), &good),
            Code::InvalidArgument,
        ),
        (
            "missing volume id",
            request("", &target, &good),
            Code::InvalidArgument,
        ),
        (
            "missing capability",
            pb::NodePublishVolumeRequest {
                volume_capability: None,
                ..request("v7", &target, &good)
            },
            Code::InvalidArgument,
        ),
        (
            "block capability",
            pb::NodePublishVolumeRequest {
                volume_capability: Some(pb::VolumeCapability {
                    access_type: Some(pb::volume_capability::AccessType::Block(
                        pb::volume_capability::BlockVolume {},
                    )),
                    access_mode: None,
                }),
                ..request("v8", &target, &good)
            },
            Code::InvalidArgument,
        ),
        (
            "no program attribute",
            request("v9", &target, &[("csi.apiary.io/maps", "packets")]),
            Code::InvalidArgument,
        ),
        (
            "a map name with a path in it",
            request(
                "v10",
                &target,
                &[
                    ("csi.apiary.io/program", &id),
                    ("csi.apiary.io/maps", "../packets"),
                ],
            ),
            Code::InvalidArgument,
        ),
        (
            "a persistent (not inline) volume",
            pb::NodePublishVolumeRequest {
                volume_context: HashMap::from([
                    ("csi.apiary.io/program".to_string(), id.clone()),
                    ("csi.apiary.io/maps".to_string(), "packets".to_string()),
                    (
                        "csi.storage.k8s.io/ephemeral".to_string(),
                        "false".to_string(),
                    ),
                ]),
                ..request("v11", &target, &good)
            },
            Code::InvalidArgument,
        ),
        (
            "a non-numeric fsGroup",
            pb::NodePublishVolumeRequest {
                volume_capability: Some(pb::VolumeCapability {
                    access_type: Some(pb::volume_capability::AccessType::Mount(
                        pb::volume_capability::MountVolume {
                            volume_mount_group: "wheel".into(),
                            ..Default::default()
                        },
                    )),
                    access_mode: None,
                }),
                ..request("v12", &target, &good)
            },
            Code::InvalidArgument,
        ),
    ];
    for (what, req, code) in cases {
        let e = plugin.publish(req).expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}\n{}", plugin.log());
        assert_eq!(
            mounts_under(&[plugin.dir.path(), a.state.path(), outside.path()]),
            Vec::<String>::new(),
            "{what}: nothing stays mounted"
        );
        assert!(
            volume_dirs(&a).is_empty(),
            "{what}: no instance or record is left"
        );
        assert!(!target.exists(), "{what}: the target is not made");
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "{what}"
        );
    }
    // The map exists after all (the failed call above asked for two): the unknown one alone
    // failed the request, and its companion was not left pinned.
    let e = plugin
        .unpublish("", &target)
        .expect_err("unpublish without a volume id");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = plugin
        .unpublish("v1", Path::new(""))
        .expect_err("unpublish without a target");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = plugin
        .unpublish("v1", &outside.path().join("mount"))
        .expect_err("unpublish outside the pods directory");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Hostile ids cannot reach a path: they only name the volume's record.
    for vid in ["../../../../etc", &"x".repeat(10_000), "a/b\0c"] {
        plugin
            .publish(request(vid, &target, &good))
            .unwrap_or_else(|e| panic!("publish {:.20}: {e:?}", vid));
        plugin.unpublish(vid, &target).expect("unpublish");
    }
    assert_eq!(
        mounts_under(&[plugin.dir.path(), a.state.path()]),
        Vec::<String>::new()
    );
    assert!(volume_dirs(&a).is_empty());

    // After all of that the plugin still answers.
    let mut identity = plugin.identity.clone();
    let info = plugin
        .rt
        .block_on(identity.get_plugin_info(pb::GetPluginInfoRequest {}))
        .expect("plugin info")
        .into_inner();
    assert_eq!(info.name, "csi.apiary.io");
    let probe = plugin
        .rt
        .block_on(identity.probe(pb::ProbeRequest {}))
        .expect("probe")
        .into_inner();
    assert_eq!(probe.ready, Some(true));
}

/// csi-sanity's tallies: (passed, failed, pending, skipped), from its summary line.
fn sanity_summary(out: &str) -> Option<(u32, u32, u32, u32)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains(" Passed") && l.contains(" Failed"))?;
    let count = |label: &str| -> Option<u32> {
        let at = line.find(label)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    Some((
        count(" Passed")?,
        count(" Failed")?,
        count(" Pending").unwrap_or(0),
        count(" Skipped").unwrap_or(0),
    ))
}

#[test]
fn csi_sanity_passes_for_the_identity_and_node_services() {
    if !privileged() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("sh")
        .arg(root.join("scripts/csi-sanity.sh"))
        .arg("path")
        .output()
        .expect("run scripts/csi-sanity.sh");
    assert!(
        out.status.success(),
        "building csi-sanity failed (Go 1.26 and the module proxy are needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());

    let a = Apiary::new();
    let obj = fixture("net");
    let meta = format!("apiary.dev/application={APP}");
    a.load_one(&[
        "--path",
        obj.to_str().unwrap(),
        "--programs",
        "xdp:xdp_count",
        "-m",
        &meta,
    ]);
    let plugin = Plugin::start(&a);
    let work = plugin.dir.path();
    // The stand-in controller turns csi-sanity's test volume parameters into the volume
    // context, as the kubelet does with an inline volume's attributes.
    let params = work.join("params.yaml");
    std::fs::write(
        &params,
        "csi.apiary.io/program: counter\ncsi.apiary.io/maps: packets\ncsi.storage.k8s.io/pod.namespace: default\ncsi.storage.k8s.io/ephemeral: \"true\"\n",
    )
    .expect("params");
    let ctl_socket = work.join("controller.sock");
    let mut controller = Command::new(bin.join("controller"))
        .arg("--endpoint")
        .arg(&ctl_socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the stand-in controller");
    assert!(eventually(10, || std::os::unix::net::UnixStream::connect(
        &ctl_socket
    )
    .is_ok()));
    let out = Command::new(bin.join("csi-sanity"))
        .current_dir(work)
        .arg(format!("--csi.endpoint=unix://{}", plugin.socket.display()))
        .arg(format!(
            "--csi.controllerendpoint=unix://{}",
            ctl_socket.display()
        ))
        .arg(format!("--csi.testvolumeparameters={}", params.display()))
        // Inside the pods directory the plugin was given.
        .arg(format!(
            "--csi.mountdir={}",
            plugin.pods().join("sanity-mount").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            plugin.pods().join("sanity-staging").display()
        ))
        .args([
            "--ginkgo.focus=Node Service|Identity Service",
            "--ginkgo.no-color",
            "--ginkgo.v",
        ])
        .output()
        .expect("run csi-sanity");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(controller.id() as i32, libc::SIGTERM);
    }
    let _ = controller.wait();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (passed, failed, pending, skipped) = sanity_summary(&text)
        .unwrap_or_else(|| panic!("no csi-sanity summary in its output:\n{text}"));
    eprintln!("csi-sanity: {passed} passed, {failed} failed, {pending} pending, {skipped} skipped");
    assert!(
        out.status.success() && failed == 0,
        "csi-sanity failed:\n{text}\n{}",
        plugin.log()
    );
    assert!(
        passed >= 11,
        "csi-sanity ran fewer specs than expected:\n{text}"
    );
    // Its publish test really published the program's map (and unpublished it).
    assert!(text.contains("should remove target path"), "{text}");
    assert!(plugin.log().contains("csi: published"), "{}", plugin.log());
    assert_eq!(mounts_under(&[work, a.state.path()]), Vec::<String>::new());
    assert!(volume_dirs(&a).is_empty());
}

#[test]
fn the_agent_serves_the_plugin_on_its_own_manager() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let plugin = Plugin::start_in_agent(&a);
    let daemon = format!("unix://{}", plugin.dir.path().join("apiary.sock").display());
    let apiary = |args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .env_remove("APIARY_ENDPOINT")
            .args(["--endpoint", &daemon])
            .args(args)
            .output()
            .expect("apiary");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Loaded through the agent's daemon, named as the agent names a ClusterBpfApplication.
    let obj = fixture("net");
    let loaded: serde_json::Value = serde_json::from_str(&apiary(&[
        "load",
        "file",
        "--path",
        obj.to_str().unwrap(),
        "--programs",
        "xdp:xdp_count",
        "-m",
        "apiary.dev/application=ClusterBpfApplication//counter",
        "-o",
        "json",
    ]))
    .expect("json");
    let id = loaded[0]["id"].as_i64().expect("id").to_string();
    let target = plugin.target("pod-c");
    // bpfman's attribute keys; the pod's namespace has no application of that name, so the
    // cluster-scoped one is found.
    plugin
        .publish(request(
            "vol-c",
            &target,
            &[
                ("csi.bpfman.io/program", "counter"),
                ("csi.bpfman.io/maps", "packets"),
            ],
        ))
        .unwrap_or_else(|e| panic!("publish: {e:?}\n{}", plugin.log()));
    // The pin is the program's own map (its kernel id), not a copy.
    let detail: serde_json::Value =
        serde_json::from_str(&apiary(&["get", "program", &id, "-o", "json"])).expect("json");
    let kernel_id = detail["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|m| m["name"] == "packets")
        .and_then(|m| m["kernel_id"].as_u64())
        .expect("packets map");
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(target.join("packets"))
        .output()
        .expect("bpftool");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    assert_eq!(shown["id"].as_u64(), Some(kernel_id), "{shown}");
    plugin.unpublish("vol-c", &target).expect("unpublish");
    assert_eq!(
        mounts_under(&[plugin.dir.path(), a.state.path()]),
        Vec::<String>::new()
    );
    assert!(volume_dirs(&a).is_empty());
    apiary(&["unload", &id]);
}
