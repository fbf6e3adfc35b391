//! The apiary.v1 service over a `Manager`: each call is checked and converted, run on the
//! blocking pool (the manager's methods are synchronous and take file locks), logged, and its
//! error mapped to a status. Successful changes are published to `Watch` subscribers.

use crate::convert::{self, required, Invalid};
use crate::pb;
use crate::pb::apiary_server::Apiary;
use crate::status::to_status;
use apiary::{LoadSpec, Manager, ObjectSource, UpdateSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Events buffered per watcher before it is told it lagged.
const EVENT_BUFFER: usize = 1024;
/// The map dump entry limit when a request gives none (the CLI's default too).
const DEFAULT_DUMP_LIMIT: usize = 10_000;

#[derive(Clone)]
pub struct ApiaryService {
    inner: Arc<Inner>,
}

struct Inner {
    manager: Arc<Manager>,
    events: broadcast::Sender<pb::Event>,
    seq: AtomicU64,
    /// Flips to true when the daemon shuts down, ending Watch streams so that graceful
    /// shutdown does not wait for them forever.
    shutdown: watch::Receiver<bool>,
    uploads: PathBuf,
    uploads_made: AtomicU64,
    /// The daemon holds the kernel's BPF stats on, whatever the sysctl says.
    stats_on: bool,
}

impl ApiaryService {
    pub fn new(
        manager: Arc<Manager>,
        shutdown: watch::Receiver<bool>,
        stats_on: bool,
    ) -> ApiaryService {
        let uploads = manager.config().state_dir.join("uploads");
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        ApiaryService {
            inner: Arc::new(Inner {
                manager,
                events,
                seq: AtomicU64::new(0),
                shutdown,
                uploads,
                uploads_made: AtomicU64::new(0),
                stats_on,
            }),
        }
    }

    /// Run a manager call on the blocking pool and log its outcome.
    async fn blocking<T, F>(&self, method: &'static str, peer: &str, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Manager) -> apiary::Result<T> + Send + 'static,
    {
        let m = self.inner.manager.clone();
        let t0 = Instant::now();
        let r = tokio::task::spawn_blocking(move || f(&m))
            .await
            .map_err(|e| Status::internal(format!("{method} did not complete: {e}")))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(v) => {
                tracing::debug!(method, peer, ms, "ok");
                Ok(v)
            }
            Err(e) => {
                let status = to_status(&e);
                if status.code() == tonic::Code::Internal {
                    tracing::error!(method, peer, ms, code = ?status.code(), error = %e, "failed");
                } else {
                    tracing::info!(method, peer, ms, code = ?status.code(), error = %e, "refused");
                }
                Err(status)
            }
        }
    }

    fn publish(&self, kind: pb::EventKind, program_ids: Vec<i64>, link_ids: Vec<i64>) {
        let seq = self.inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let unix_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        tracing::info!(
            seq,
            kind = kind.as_str_name(),
            ?program_ids,
            ?link_ids,
            "state changed"
        );
        // No receivers is not an error: nobody is watching.
        let _ = self.inner.events.send(pb::Event {
            seq,
            kind: kind as i32,
            unix_millis,
            program_ids,
            link_ids,
            missed: 0,
        });
    }

    /// Write uploaded bytes to a private file the manager can read by path (an update takes a
    /// path); removed when the returned guard drops.
    fn upload(&self, name: &str, bytes: &[u8]) -> Result<Upload, Status> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = &self.inner.uploads;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
        let base = Path::new(name)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("object.o");
        let n = self.inner.uploads_made.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!("{}-{n}-{base}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Status::internal(format!("cannot write {}: {e}", path.display())))?;
        let guard = Upload(path.clone());
        f.write_all(bytes)
            .map_err(|e| Status::internal(format!("cannot write {}: {e}", path.display())))?;
        Ok(guard)
    }
}

struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Who is calling: the peer's uid and pid on the unix socket, its address over TCP.
fn peer<T>(req: &Request<T>) -> String {
    if let Some(info) = req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        if let Some(c) = info.peer_cred {
            return format!("uid={} pid={}", c.uid(), c.pid().unwrap_or(0));
        }
    }
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A daemon-side path must be absolute: the daemon's working directory means nothing to a
/// client.
fn object_source(o: pb::ObjectSource, field: &str) -> Result<ObjectSource, Invalid> {
    match required(o.object, &format!("{field}.object"))? {
        pb::object_source::Object::Bytes(bytes) => {
            let name = if o.name.is_empty() {
                "uploaded object".to_string()
            } else {
                o.name
            };
            Ok(ObjectSource::Bytes { name, bytes })
        }
        pb::object_source::Object::Image(i) => {
            let pull_policy = if i.pull_policy.is_empty() {
                apiary::oci::PullPolicy::IfNotPresent
            } else {
                i.pull_policy.parse().map_err(|e: apiary::oci::Error| {
                    Invalid::new(format!("{field}.image.pull_policy"), e.to_string())
                })?
            };
            if i.reference.is_empty() {
                return Err(Invalid::new(
                    format!("{field}.image.reference"),
                    "empty image reference".to_string(),
                ));
            }
            Ok(ObjectSource::Image {
                reference: i.reference,
                pull_policy,
            })
        }
        pb::object_source::Object::Path(p) => {
            let path = PathBuf::from(p);
            if !path.is_absolute() {
                return Err(Invalid::new(
                    format!("{field}.path"),
                    format!("{} is not absolute", path.display()),
                ));
            }
            Ok(ObjectSource::Path(path))
        }
    }
}

fn load_spec(r: pb::LoadRequest) -> Result<LoadSpec, Invalid> {
    let source = object_source(required(r.object, "object")?, "object")?;
    let programs = r
        .programs
        .into_iter()
        .map(|p| {
            if p.name.is_empty() {
                return Err(Invalid::new("programs.name", "is required"));
            }
            Ok((
                convert::program_type_from_proto(p.r#type, "programs.type")?,
                p.name,
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok(LoadSpec {
        source,
        programs,
        raw_globals: convert::raw_globals_from_proto(r.raw_globals),
        typed_globals: convert::typed_globals_from_proto(r.typed_globals),
        metadata: r.metadata,
        map_owner_id: r
            .map_owner_id
            .map(|i| convert::program_id(i, "map_owner_id"))
            .transpose()?,
        attach: r.attach.map(TryInto::try_into).transpose()?,
    })
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Apiary for ApiaryService {
    async fn load(
        &self,
        req: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let peer = peer(&req);
        let spec = load_spec(req.into_inner())?;
        let views = self.blocking("Load", &peer, move |m| m.load(spec)).await?;
        let pids = views.iter().filter_map(|v| v.id.map(|i| i.0)).collect();
        let lids = views
            .iter()
            .flat_map(|v| v.links.iter().map(|l| l.0))
            .collect();
        self.publish(pb::EventKind::Loaded, pids, lids);
        Ok(Response::new(pb::LoadResponse {
            programs: views.iter().map(Into::into).collect(),
        }))
    }

    async fn attach(
        &self,
        req: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        let peer = peer(&req);
        let r = req.into_inner();
        let id = convert::program_id(r.program_id, "program_id")?;
        let spec: apiary::core::AttachSpec = required(r.spec, "spec")?.try_into()?;
        let link = self
            .blocking("Attach", &peer, move |m| m.attach(id, spec))
            .await?;
        self.publish(pb::EventKind::Attached, vec![id.0], vec![link.id.0]);
        Ok(Response::new(pb::AttachResponse {
            link: Some((&link).into()),
        }))
    }

    async fn detach(
        &self,
        req: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::DetachResponse>, Status> {
        let peer = peer(&req);
        let id = convert::link_id(req.into_inner().link_id, "link_id")?;
        // The link's program, for the event; read before the link is gone.
        let program = self
            .blocking("Detach", &peer, move |m| {
                let program = m.get_link(id).ok().map(|l| l.program_id.0);
                m.detach(id).map(|()| program)
            })
            .await?;
        self.publish(
            pb::EventKind::Detached,
            program.into_iter().collect(),
            vec![id.0],
        );
        Ok(Response::new(pb::DetachResponse {}))
    }

    async fn unload(
        &self,
        req: Request<pb::UnloadRequest>,
    ) -> Result<Response<pb::UnloadResponse>, Status> {
        let peer = peer(&req);
        let r = req.into_inner();
        if r.program_ids.is_empty() {
            return Err(Invalid::new("program_ids", "is required").into());
        }
        let ids = r
            .program_ids
            .iter()
            .map(|i| convert::program_id(*i, "program_ids"))
            .collect::<Result<Vec<_>, _>>()?;
        let force = r.force;
        let (done, links) = self
            .blocking("Unload", &peer, move |m| {
                // The links a forced unload detaches, for the event.
                let links: Vec<i64> = if force {
                    ids.iter()
                        .flat_map(|p| m.list_links(Some(*p)).unwrap_or_default())
                        .map(|l| l.id.0)
                        .collect()
                } else {
                    Vec::new()
                };
                m.unload(&ids, force).map(|done| (done, links))
            })
            .await?;
        let done: Vec<i64> = done.iter().map(|i| i.0).collect();
        self.publish(pb::EventKind::Unloaded, done.clone(), links);
        Ok(Response::new(pb::UnloadResponse { unloaded: done }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let peer = peer(&req);
        let r = req.into_inner();
        let id = convert::program_id(r.program_id, "program_id")?;
        let (path, upload) = match object_source(required(r.object, "object")?, "object")? {
            ObjectSource::Path(p) => (p, None),
            ObjectSource::Bytes { name, bytes } => {
                let u = self.upload(&name, &bytes)?;
                (u.0.clone(), Some(u))
            }
            ObjectSource::Image { .. } => {
                return Err(Status::invalid_argument(
                    "object: update takes object bytes or a path, not an image",
                ))
            }
        };
        let spec = UpdateSpec {
            path,
            program: r.program,
            raw_globals: convert::raw_globals_from_proto(r.raw_globals),
            typed_globals: convert::typed_globals_from_proto(r.typed_globals),
        };
        let report = self
            .blocking("Update", &peer, move |m| m.update(id, spec))
            .await;
        drop(upload);
        let report = report?;
        self.publish(pb::EventKind::Updated, vec![id.0], Vec::new());
        Ok(Response::new(pb::UpdateResponse {
            report: Some((&report).into()),
        }))
    }

    async fn list_programs(
        &self,
        req: Request<pb::ListProgramsRequest>,
    ) -> Result<Response<pb::ListProgramsResponse>, Status> {
        let peer = peer(&req);
        let r = req.into_inner();
        let views = self
            .blocking("ListPrograms", &peer, move |m| {
                m.list_programs(r.all, &r.metadata)
            })
            .await?;
        Ok(Response::new(pb::ListProgramsResponse {
            programs: views.iter().map(Into::into).collect(),
        }))
    }

    async fn get_program(
        &self,
        req: Request<pb::GetProgramRequest>,
    ) -> Result<Response<pb::GetProgramResponse>, Status> {
        let peer = peer(&req);
        let id = convert::program_id(req.into_inner().id, "id")?;
        let mut d = self
            .blocking("GetProgram", &peer, move |m| m.get_program(id))
            .await?;
        d.stats_enabled |= self.inner.stats_on;
        Ok(Response::new(pb::GetProgramResponse {
            program: Some((&d).into()),
        }))
    }

    async fn list_links(
        &self,
        req: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let peer = peer(&req);
        let program = req
            .into_inner()
            .program_id
            .map(|i| convert::program_id(i, "program_id"))
            .transpose()?;
        let links = self
            .blocking("ListLinks", &peer, move |m| m.list_links(program))
            .await?;
        Ok(Response::new(pb::ListLinksResponse {
            links: links.iter().map(Into::into).collect(),
        }))
    }

    async fn get_link(
        &self,
        req: Request<pb::GetLinkRequest>,
    ) -> Result<Response<pb::GetLinkResponse>, Status> {
        let peer = peer(&req);
        let id = convert::link_id(req.into_inner().id, "id")?;
        let l = self
            .blocking("GetLink", &peer, move |m| m.get_link(id))
            .await?;
        Ok(Response::new(pb::GetLinkResponse {
            link: Some((&l).into()),
        }))
    }

    async fn list_maps(
        &self,
        req: Request<pb::ListMapsRequest>,
    ) -> Result<Response<pb::ListMapsResponse>, Status> {
        let peer = peer(&req);
        let all = req.into_inner().all;
        let maps = self
            .blocking("ListMaps", &peer, move |m| m.list_maps(all))
            .await?;
        Ok(Response::new(pb::ListMapsResponse {
            maps: maps.iter().map(Into::into).collect(),
        }))
    }

    async fn dump_map(
        &self,
        req: Request<pb::DumpMapRequest>,
    ) -> Result<Response<pb::DumpMapResponse>, Status> {
        let peer = peer(&req);
        let r = req.into_inner();
        let target = convert::map_ref_from_proto(r.map)?;
        let limit = match r.limit {
            None => DEFAULT_DUMP_LIMIT,
            Some(n) => usize::try_from(n).map_err(|_| Invalid::new("limit", "is out of range"))?,
        };
        let d = self
            .blocking("DumpMap", &peer, move |m| m.dump_map(&target, limit))
            .await?;
        Ok(Response::new(pb::DumpMapResponse {
            dump: Some((&d).into()),
        }))
    }

    async fn list_chains(
        &self,
        req: Request<pb::ListChainsRequest>,
    ) -> Result<Response<pb::ListChainsResponse>, Status> {
        let peer = peer(&req);
        let chains = self
            .blocking("ListChains", &peer, |m| m.list_chains())
            .await?;
        Ok(Response::new(pb::ListChainsResponse {
            chains: chains.iter().map(Into::into).collect(),
        }))
    }

    async fn get_chain(
        &self,
        req: Request<pb::GetChainRequest>,
    ) -> Result<Response<pb::GetChainResponse>, Status> {
        let peer = peer(&req);
        let hook: apiary::core::Hook = required(req.into_inner().hook, "hook")?.try_into()?;
        let c = self
            .blocking("GetChain", &peer, move |m| m.get_chain(&hook))
            .await?;
        Ok(Response::new(pb::GetChainResponse {
            chain: Some((&c).into()),
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = peer(&req);
        tracing::info!(peer, "watcher connected");
        let mut events = self.inner.events.subscribe();
        let mut shutdown = self.inner.shutdown.clone();
        let (tx, rx) = mpsc::channel::<Result<pb::Event, Status>>(64);
        // A task per watcher: it ends when the client goes away (tx closed) or the daemon stops.
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    e = events.recv() => e,
                    _ = super::until_stopped(&mut shutdown) => break,
                    _ = tx.closed() => break,
                };
                let event = match next {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(missed)) => pb::Event {
                        kind: pb::EventKind::Lagged as i32,
                        missed,
                        ..Default::default()
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if tx.send(Ok(event)).await.is_err() {
                    break;
                }
            }
            tracing::info!(peer, "watcher gone");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
