//! apiary's CSI node plugin (driver `csi.apiary.io`): a pod asks for the maps of a program in
//! an inline volume, and gets them pinned on a bpf filesystem of its own, owned by its
//! fsGroup, at the path the kubelet names. The pod then needs no hostPath of the node's bpffs
//! and no privileges to read its program's counters.
//!
//! The plugin serves the CSI Identity and Node services on a unix socket (the kubelet finds it
//! through the node-driver-registrar sidecar). It reads programs and maps from the manager, in
//! the agent's process (`apiary agent --csi-endpoint`) or from the store directly (`apiary csi`).

pub mod error;
pub mod manifests;
mod mounts;
pub mod resolve;
mod service;
mod volumes;

pub use error::CsiError;
pub use service::Plugin;
pub use volumes::Volumes;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The messages, servers and clients of csi.v1 (the subset in proto/csi/v1/csi.proto).
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("csi.v1");
}

/// The driver's name: the CSIDriver object's and the pod volumes' `driver`.
pub const DRIVER_NAME: &str = "csi.apiary.io";
/// Where the plugin listens unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/apiary/csi/csi.sock";

/// How to run the plugin.
#[derive(Debug, Clone)]
pub struct CsiConfig {
    /// `unix:///path/to.sock` or a plain absolute path.
    pub endpoint: String,
    /// This node's name (NodeGetInfo's node id).
    pub node_id: String,
    /// Where each volume's bpffs instance and record live.
    pub volumes_dir: PathBuf,
    /// The kubelet's pods directory: targets elsewhere are refused.
    pub pods_dir: Option<PathBuf>,
}

/// The socket path an endpoint names.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CsiError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(CsiError::InvalidArgument(format!(
            "CSI endpoint {endpoint:?}: expected unix:///absolute/path.sock"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Bind the socket: a socket file left by a plugin that died is replaced, a live one is not.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, CsiError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| CsiError::io("create", dir, e))?;
    }
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(CsiError::InvalidArgument(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(CsiError::FailedPrecondition(format!(
                "another process serves {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| CsiError::io("remove", path, e))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(|e| CsiError::io("bind", path, e))?;
    // The kubelet and the registrar run as root; nobody else has business here.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CsiError::io("chmod", path, e))?;
    Ok(listener)
}

/// Serve until `stop` completes, then remove the socket. Must run inside a tokio runtime.
pub async fn serve(
    cfg: CsiConfig,
    api: Arc<dyn apiary::Api>,
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<(), CsiError> {
    let path = socket_path(&cfg.endpoint)?;
    if cfg.node_id.is_empty() {
        return Err(CsiError::InvalidArgument(
            "the node name is required (--node-name or NODE_NAME)".into(),
        ));
    }
    let plugin = Arc::new(Plugin {
        api,
        volumes: Volumes::new(cfg.volumes_dir.clone(), cfg.pods_dir.clone())?,
        node_id: cfg.node_id.clone(),
    });
    let listener = bind(&path)?;
    tracing::info!(socket = %path.display(), driver = DRIVER_NAME, "csi: serving");
    let svc = service::Service(plugin);
    let server = tonic::transport::Server::builder()
        .add_service(pb::identity_server::IdentityServer::new(svc.clone()))
        .add_service(pb::node_server::NodeServer::new(svc))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
    // Stop at once, not gracefully: a graceful stop waits for every client to hang up, and
    // the kubelet keeps its connection open for as long as it runs.
    let result = tokio::select! {
        r = server => r.map_err(|e| CsiError::Worker(format!("the CSI server stopped: {e}"))),
        _ = stop => Ok(()),
    };
    let _ = std::fs::remove_file(&path);
    result
}

/// `apiary csi`: serve on a runtime of its own until SIGTERM or SIGINT. Like the daemon, it
/// ignores SIGPIPE for the whole process: the CLI restores its default disposition, and a
/// client hanging up while the server writes (a readiness probe that only connects) would end
/// the plugin without a word.
pub fn run(cfg: CsiConfig, api: Arc<dyn apiary::Api>) -> Result<(), CsiError> {
    // SAFETY: setting a signal's disposition to a constant.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CsiError::Worker(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| CsiError::Worker(format!("cannot watch SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| CsiError::Worker(format!("cannot watch SIGINT: {e}")))?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        serve(cfg, api, stop).await
    })
}

/// Serve beside other work on the current runtime (the node agent's); `on_error` is called if
/// the plugin cannot start or stops, so the caller decides what that means for its process.
pub fn spawn(
    cfg: CsiConfig,
    api: Arc<dyn apiary::Api>,
    on_error: impl FnOnce(CsiError) + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = serve(cfg, api, std::future::pending()).await {
            on_error(e);
        }
    });
}
