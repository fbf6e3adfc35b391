//! `RemoteApi`: the `apiary::Api` trait over gRPC, for the CLI's `--endpoint`. It is blocking,
//! like the in-process `Manager`, and owns a small current-thread runtime to drive tonic.
//!
//! Objects named by a path are read here and sent as bytes: the daemon may not see the
//! client's filesystem (another mount namespace, another host over TCP).

use crate::convert::{self, Invalid};
use crate::pb;
use crate::pb::apiary_client::ApiaryClient;
use crate::status::from_status;
use apiary::chain::ChainView;
use apiary::core::Hook;
use apiary::core::{AttachSpec, LinkId, ProgramId};
use apiary::kernel::KernelError;
use apiary::{
    Api, Error, LinkView, LoadSpec, MapDump, MapRef, MapView, ObjectSource, ProgramDetail,
    ProgramView, UpdateReport, UpdateSpec,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The client's limit on answers; the daemon's default limit on requests is the same.
pub const MAX_MESSAGE_BYTES: usize = crate::server::config::DEFAULT_MAX_MESSAGE_BYTES;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Client certificate and key, and the CA that signed the daemon's certificate (for https://).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("cannot read {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("cannot start the client runtime: {0}")]
    Runtime(std::io::Error),
}

impl ClientError {
    /// The class of the error, as for the daemon's own errors (exit status, README).
    pub fn code(&self) -> apiary::ErrorCode {
        match self {
            ClientError::BadEndpoint { .. } | ClientError::ReadFile { .. } => {
                apiary::ErrorCode::InvalidArgument
            }
            ClientError::Connect { .. } => apiary::ErrorCode::Unavailable,
            ClientError::Runtime(_) => apiary::ErrorCode::Internal,
        }
    }
}

pub struct RemoteApi {
    rt: tokio::runtime::Runtime,
    client: ApiaryClient<Channel>,
    /// For the other services on the same connection (`Tracer`).
    channel: Channel,
    endpoint: String,
}

impl std::fmt::Debug for RemoteApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteApi")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// What the OS said, with a hint where the fix is not obvious.
fn connect_reason(e: &tonic::transport::Error, unix: bool) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied if unix => {
                    format!("{io}: only root and members of the socket's group may use the daemon")
                }
                std::io::ErrorKind::NotFound if unix => format!("{io}: is `apiary serve` running?"),
                std::io::ErrorKind::ConnectionRefused => {
                    format!("{io}: is `apiary serve` running?")
                }
                _ => io.to_string(),
            };
        }
        cur = s.source();
    }
    crate::server::error_chain(e)
}

impl RemoteApi {
    /// Connect to `unix:///path/to/socket` or `https://host:port` (mutual TLS).
    pub fn connect(endpoint: &str, tls: &ClientTls) -> Result<RemoteApi, ClientError> {
        let bad = |reason: &str| ClientError::BadEndpoint {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        let unix = endpoint.starts_with("unix:");
        let ep = if unix {
            let path = endpoint
                .trim_start_matches("unix://")
                .trim_start_matches("unix:");
            if !path.starts_with('/') {
                return Err(bad("expected unix:///absolute/path/to/socket"));
            }
            Endpoint::from_shared(format!("unix://{path}")).map_err(|e| bad(&e.to_string()))?
        } else if endpoint.starts_with("https://") {
            let ca = tls.ca.as_deref().ok_or_else(|| {
                bad("https needs --server-ca (the CA that signed the daemon's certificate)")
            })?;
            let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            match (&tls.cert, &tls.key) {
                (Some(c), Some(k)) => cfg = cfg.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => return Err(bad("--client-cert and --client-key go together")),
            }
            Endpoint::from_shared(endpoint.to_string())
                .map_err(|e| bad(&e.to_string()))?
                .tls_config(cfg)
                .map_err(|e| bad(&crate::server::error_chain(&e)))?
        } else if endpoint.starts_with("http://") {
            return Err(bad("the daemon's TCP listener requires mutual TLS: use https:// with --client-cert, --client-key and --server-ca"));
        } else {
            return Err(bad("expected unix:///path/to/socket or https://host:port"));
        };
        let ep = ep.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let channel = {
            let _quiet = SigpipeBlocked::new();
            rt.block_on(ep.connect())
        }
        .map_err(|e| ClientError::Connect {
            endpoint: endpoint.to_string(),
            reason: connect_reason(&e, unix),
        })?;
        let client = ApiaryClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(usize::MAX);
        Ok(RemoteApi {
            rt,
            channel,
            client,
            endpoint: endpoint.to_string(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The connection, for clients of the other services the daemon serves (`Tracer`).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated client, for calls the `Api` trait does not cover (`watch`).
    pub fn client(&self) -> ApiaryClient<Channel> {
        self.client.clone()
    }

    /// Run a future on this client's runtime (e.g. to read a `watch` stream).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        let _quiet = SigpipeBlocked::new();
        self.rt.block_on(f)
    }

    fn call<T, Fut>(&self, f: impl FnOnce(ApiaryClient<Channel>) -> Fut) -> apiary::Result<T>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.block_on(f(self.client.clone()))
            .map(|r| r.into_inner())
            .map_err(|s| from_status(&s, &self.endpoint))
    }
}

/// Writing to a connection the daemon closed (or refused at the TLS handshake) raises SIGPIPE
/// on unix sockets, and its default action, which the CLI restores for `apiary list | head`,
/// would kill the client without a word. While this guard lives the signal is blocked on this
/// thread (the current-thread runtime does all its I/O here), so the write fails with EPIPE
/// and becomes an error message; a SIGPIPE left pending is consumed before the old mask returns.
struct SigpipeBlocked {
    old: libc::sigset_t,
}

impl SigpipeBlocked {
    fn new() -> SigpipeBlocked {
        // SAFETY: sigset_t is plain data that sigemptyset initialises; pthread_sigmask only
        // changes this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SigpipeBlocked { old }
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        // SAFETY: as above; sigwait returns at once because SIGPIPE is pending.
        unsafe {
            if libc::sigismember(&self.old, libc::SIGPIPE) == 0 {
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut pending);
                if libc::sigismember(&pending, libc::SIGPIPE) == 1 {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGPIPE);
                    let mut sig = 0;
                    libc::sigwait(&set, &mut sig);
                }
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(p).map_err(|error| ClientError::ReadFile {
        path: p.to_path_buf(),
        error,
    })
}

/// An answer the client cannot make sense of: a daemon of another version, most likely.
fn bad_answer(e: Invalid) -> Error {
    Error::Internal(format!(
        "the daemon sent an answer this client does not understand: {e}"
    ))
}

fn missing(field: &str) -> Error {
    bad_answer(Invalid::new(field, "is missing"))
}

/// The object's bytes and the name it is recorded under: the same canonical path an
/// in-process load records, so `list programs` shows the same source either way.
fn object_bytes(path: &Path) -> apiary::Result<pb::ObjectSource> {
    let bytes = std::fs::read(path).map_err(|error| KernelError::ReadObject {
        path: path.to_path_buf(),
        error,
    })?;
    // What the daemon would refuse is refused here, without sending it: the same error for a
    // file that is not a BPF object, and a clear one for one larger than a request may be.
    apiary_core::elf::check_ident(&bytes).map_err(|error| apiary::Error::Object {
        source_name: path.display().to_string(),
        error,
    })?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(apiary::Error::InvalidArgument(format!(
            "{}: {} bytes, more than a request to the daemon may carry ({MAX_MESSAGE_BYTES}); \
             strip its debug sections (llvm-strip -g) or load it in-process",
            path.display(),
            bytes.len()
        )));
    }
    let name = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    Ok(pb::ObjectSource {
        object: Some(pb::object_source::Object::Bytes(bytes)),
        name,
    })
}

fn views<P, V>(items: Vec<P>) -> apiary::Result<Vec<V>>
where
    V: TryFrom<P, Error = Invalid>,
{
    items
        .into_iter()
        .map(|p| V::try_from(p).map_err(bad_answer))
        .collect()
}

impl Api for RemoteApi {
    fn load(&self, spec: LoadSpec) -> apiary::Result<Vec<ProgramView>> {
        let object = match &spec.source {
            ObjectSource::Path(p) => object_bytes(p)?,
            ObjectSource::Bytes { name, bytes } => pb::ObjectSource {
                object: Some(pb::object_source::Object::Bytes(bytes.clone())),
                name: name.clone(),
            },
            ObjectSource::Image {
                reference,
                pull_policy,
            } => pb::ObjectSource {
                object: Some(pb::object_source::Object::Image(pb::ImageSource {
                    reference: reference.clone(),
                    pull_policy: pull_policy.to_string(),
                })),
                name: String::new(),
            },
        };
        let req = pb::LoadRequest {
            object: Some(object),
            programs: spec
                .programs
                .iter()
                .map(|(t, name)| pb::ProgramSelector {
                    r#type: t
                        .map(convert::program_type_to_proto)
                        .unwrap_or(pb::ProgramType::Unspecified) as i32,
                    name: name.clone(),
                })
                .collect(),
            raw_globals: convert::raw_globals_to_proto(&spec.raw_globals),
            typed_globals: convert::typed_globals_to_proto(&spec.typed_globals),
            metadata: spec.metadata.clone(),
            map_owner_id: spec.map_owner_id.map(|i| i.0),
            attach: spec.attach.as_ref().map(Into::into),
        };
        let r = self.call(|mut c| async move { c.load(req).await })?;
        views(r.programs)
    }

    fn attach(&self, id: ProgramId, spec: AttachSpec) -> apiary::Result<LinkView> {
        let req = pb::AttachRequest {
            program_id: id.0,
            spec: Some((&spec).into()),
        };
        let r = self.call(|mut c| async move { c.attach(req).await })?;
        r.link
            .ok_or_else(|| missing("link"))?
            .try_into()
            .map_err(bad_answer)
    }

    fn detach(&self, id: LinkId) -> apiary::Result<()> {
        self.call(|mut c| async move { c.detach(pb::DetachRequest { link_id: id.0 }).await })
            .map(|_| ())
    }

    fn unload(&self, ids: &[ProgramId], force: bool) -> apiary::Result<Vec<ProgramId>> {
        let req = pb::UnloadRequest {
            program_ids: ids.iter().map(|i| i.0).collect(),
            force,
        };
        let r = self.call(|mut c| async move { c.unload(req).await })?;
        r.unloaded
            .into_iter()
            .map(|i| convert::program_id(i, "unloaded").map_err(bad_answer))
            .collect()
    }

    fn update(&self, id: ProgramId, spec: UpdateSpec) -> apiary::Result<UpdateReport> {
        let req = pb::UpdateRequest {
            program_id: id.0,
            object: Some(object_bytes(&spec.path)?),
            program: spec.program.clone(),
            raw_globals: convert::raw_globals_to_proto(&spec.raw_globals),
            typed_globals: convert::typed_globals_to_proto(&spec.typed_globals),
        };
        let r = self.call(|mut c| async move { c.update(req).await })?;
        r.report
            .ok_or_else(|| missing("report"))?
            .try_into()
            .map_err(bad_answer)
    }

    fn list_programs(
        &self,
        all: bool,
        metadata: &BTreeMap<String, String>,
    ) -> apiary::Result<Vec<ProgramView>> {
        let req = pb::ListProgramsRequest {
            all,
            metadata: metadata.clone(),
        };
        let r = self.call(|mut c| async move { c.list_programs(req).await })?;
        views(r.programs)
    }

    fn get_program(&self, id: ProgramId) -> apiary::Result<ProgramDetail> {
        let r = self
            .call(|mut c| async move { c.get_program(pb::GetProgramRequest { id: id.0 }).await })?;
        r.program
            .ok_or_else(|| missing("program"))?
            .try_into()
            .map_err(bad_answer)
    }

    fn list_links(&self, program: Option<ProgramId>) -> apiary::Result<Vec<LinkView>> {
        let req = pb::ListLinksRequest {
            program_id: program.map(|p| p.0),
        };
        let r = self.call(|mut c| async move { c.list_links(req).await })?;
        views(r.links)
    }

    fn get_link(&self, id: LinkId) -> apiary::Result<LinkView> {
        let r =
            self.call(|mut c| async move { c.get_link(pb::GetLinkRequest { id: id.0 }).await })?;
        r.link
            .ok_or_else(|| missing("link"))?
            .try_into()
            .map_err(bad_answer)
    }

    fn list_maps(&self, all: bool) -> apiary::Result<Vec<MapView>> {
        let r = self.call(|mut c| async move { c.list_maps(pb::ListMapsRequest { all }).await })?;
        views(r.maps)
    }

    fn dump_map(&self, target: &MapRef, limit: usize) -> apiary::Result<MapDump> {
        let req = pb::DumpMapRequest {
            map: Some(convert::map_ref_to_proto(target)),
            limit: Some(limit as u64),
        };
        let r = self.call(|mut c| async move { c.dump_map(req).await })?;
        r.dump
            .ok_or_else(|| missing("dump"))?
            .try_into()
            .map_err(bad_answer)
    }

    fn list_chains(&self) -> apiary::Result<Vec<ChainView>> {
        let r = self.call(|mut c| async move { c.list_chains(pb::ListChainsRequest {}).await })?;
        views(r.chains)
    }

    fn get_chain(&self, hook: &Hook) -> apiary::Result<ChainView> {
        let req = pb::GetChainRequest {
            hook: Some(hook.into()),
        };
        let r = self.call(|mut c| async move { c.get_chain(req).await })?;
        r.chain
            .ok_or_else(|| missing("chain"))?
            .try_into()
            .map_err(bad_answer)
    }
}
