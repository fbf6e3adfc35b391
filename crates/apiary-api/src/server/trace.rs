//! The Tracer service: `Trace` runs a bpftrace script or an object on this host (the runner in
//! `apiary::trace`) on a thread of its own and streams what it prints; `StopTrace` interrupts
//! a run so that bpftrace still prints its maps into the same stream before it ends.

use crate::pb;
use apiary::trace::{self, Output, Program, TraceSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Messages buffered per trace before the runner waits for the client to read.
const BUFFERED: usize = 256;
/// Traces one daemon runs at once (each is a thread, and a bpftrace process or an object's
/// programs): more are refused with RESOURCE_EXHAUSTED rather than piling up.
pub const MAX_RUNNING: usize = 32;

pub struct TracerService {
    shutdown: watch::Receiver<bool>,
    /// Each running trace counts as a request in flight until its last output is sent, so that
    /// a daemon's shutdown (which stops the trace, as Ctrl-C would) waits for the maps bpftrace
    /// prints at the end.
    inflight: super::inflight::InFlight,
    /// For the image settings (registries, signature policy) images are pulled with.
    manager: Arc<apiary::Manager>,
    running: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>,
    next: AtomicU64,
}

impl TracerService {
    pub(super) fn new(
        shutdown: watch::Receiver<bool>,
        inflight: super::inflight::InFlight,
        manager: Arc<apiary::Manager>,
    ) -> TracerService {
        TracerService {
            shutdown,
            inflight,
            manager,
            running: Arc::default(),
            next: AtomicU64::new(1),
        }
    }
}

/// A runner's output as a stream message.
pub fn to_pb(o: Output<'_>) -> pb::TraceOutput {
    use pb::trace_output::Kind;
    let kind = match o {
        Output::Stdout(t) => Kind::Stdout(t.to_string()),
        Output::Stderr(t) => Kind::Stderr(t.to_string()),
        Output::Note(t) => Kind::Note(t.to_string()),
        Output::EventTypes(t) => Kind::EventTypes(pb::TraceEventTypes {
            types: t.iter().cloned().collect(),
        }),
        Output::Events { event_type, text } => Kind::Events(pb::TraceEvents {
            event_type: event_type.to_string(),
            text: text.to_string(),
            count: text.bytes().filter(|b| *b == b'\n').count() as u64,
        }),
    };
    pb::TraceOutput { kind: Some(kind) }
}

/// A run's end as the proto says it (also what the CLI prints for an in-process run).
pub fn exit_pb(e: &trace::Exit) -> pb::TraceExit {
    pb::TraceExit {
        code: e.code,
        signal: e.signal,
        stopped: e.stopped,
        events: e.events,
        lost: e.lost,
        error: String::new(),
    }
}

/// How a run ended, as the stream's last message.
pub fn exit_to_pb(r: &apiary::Result<trace::Exit>) -> pb::TraceOutput {
    let exit = match r {
        Ok(e) => exit_pb(e),
        Err(e) => pb::TraceExit {
            error: e.to_string(),
            ..Default::default()
        },
    };
    pb::TraceOutput {
        kind: Some(pb::trace_output::Kind::Exit(exit)),
    }
}

/// The grpc-timeout header (`30S`, `500m`...): the client's deadline for the call.
fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// An object sent by the client, in a file for as long as its run lasts.
struct TempObject(std::path::PathBuf);

impl Drop for TempObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tonic::async_trait]
impl pb::tracer_server::Tracer for TracerService {
    type TraceStream = ReceiverStream<Result<pb::TraceOutput, Status>>;

    async fn trace(
        &self,
        req: Request<pb::TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        let deadline = grpc_timeout(req.metadata());
        let r = req.into_inner();
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (program, temp) = match r.program {
            Some(pb::trace_request::Program::Script(script)) => {
                (Program::Bpftrace { script }, None)
            }
            Some(pb::trace_request::Program::Object(bytes)) => {
                let path = std::env::temp_dir()
                    .join(format!("apiary-trace-{}-{id}.obj", std::process::id()));
                std::fs::write(&path, &bytes).map_err(|e| {
                    Status::internal(format!("cannot write {}: {e}", path.display()))
                })?;
                let source = path.display().to_string();
                (Program::Object { source }, Some(TempObject(path)))
            }
            Some(pb::trace_request::Program::Image(reference)) => {
                (Program::Image { reference }, None)
            }
            None => {
                return Err(Status::invalid_argument(
                    "a trace needs a script, an object or an image",
                ))
            }
        };
        let mut set = Vec::new();
        for kv in &r.set {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Status::invalid_argument(format!("--set {kv}: expected NAME=VALUE"))
            })?;
            set.push((k.to_string(), v.to_string()));
        }
        let images = match &program {
            Program::Image { .. } => Some(
                self.manager
                    .image_settings()
                    .map_err(|e| crate::status::to_status(&e))?,
            ),
            _ => None,
        };
        let mut spec = TraceSpec::new(program);
        spec.images = images;
        spec.set = set;
        spec.args = r.args;
        spec.json = r.json;
        // The call's deadline bounds the run too, so that its output still reaches the client.
        spec.duration = match (r.duration_millis.map(Duration::from_millis), deadline) {
            (Some(d), Some(t)) => Some(d.min(t.saturating_sub(Duration::from_millis(500)))),
            (d, t) => d.or(t.map(|t| t.saturating_sub(Duration::from_millis(500)))),
        };
        let flag = Arc::new(AtomicBool::new(false));
        {
            let mut running = self
                .running
                .lock()
                .map_err(|_| Status::internal("trace table poisoned"))?;
            if running.len() >= MAX_RUNNING {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_RUNNING} traces are running on this host already; stop one first"
                )));
            }
            running.insert(id, flag.clone());
        }
        let (tx, rx) = mpsc::channel(BUFFERED);
        let shutdown = self.shutdown.clone();
        let running = self.running.clone();
        let in_flight = self.inflight.enter();
        tracing::info!(id, "trace started");
        let started = pb::TraceOutput {
            kind: Some(pb::trace_output::Kind::Started(pb::TraceStarted { id })),
        };
        // A thread of its own: a run lasts as long as the client wants, and must not hold one
        // of the few blocking threads the manager's calls use.
        std::thread::Builder::new()
            .name(format!("apiary-trace-{id}"))
            .spawn(move || {
                let _temp = temp;
                let _ = tx.blocking_send(Ok(started));
                let mut sink = |o: Output<'_>| tx.blocking_send(Ok(to_pb(o))).is_ok();
                // A client that went away closed the channel: nobody reads what follows.
                let stop = || flag.load(Ordering::SeqCst) || *shutdown.borrow() || tx.is_closed();
                let result = trace::run(&spec, &mut sink, &stop);
                if let Err(e) = &result {
                    tracing::warn!(id, error = %e, "trace failed");
                }
                let _ = tx.blocking_send(Ok(exit_to_pb(&result)));
                if let Ok(mut m) = running.lock() {
                    m.remove(&id);
                }
                tracing::info!(id, "trace ended");
                drop(in_flight);
            })
            .map_err(|e| Status::internal(format!("cannot start a trace thread: {e}")))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type TraceStreamStream = ReceiverStream<Result<pb::TraceOutput, Status>>;

    async fn trace_stream(
        &self,
        req: Request<pb::TraceStreamRequest>,
    ) -> Result<Response<Self::TraceStreamStream>, Status> {
        let r = req.into_inner();
        let (root, node) = apiary::trace_output::root().ok_or_else(|| {
            Status::failed_precondition("this daemon is not a node agent: it runs no trace jobs")
        })?;
        if !r.node.is_empty() && r.node != *node {
            return Err(Status::invalid_argument(format!(
                "this is the agent of node {node}, not of {}",
                r.node
            )));
        }
        // Job names are Kubernetes object names: no path separators, but check anyway.
        if r.job.is_empty() || r.job.contains('/') || r.job.starts_with('.') {
            return Err(Status::invalid_argument(format!(
                "bad job name {:?}",
                r.job
            )));
        }
        let dir = root.join(&r.job);
        if !dir.exists() {
            return Err(Status::not_found(format!(
                "node {node} has no output of trace job {}",
                r.job
            )));
        }
        let (kept, live) = apiary::trace_output::follow(&dir, r.follow)
            .map_err(|e| Status::internal(format!("reading {}: {e}", dir.display())))?;
        let (tx, rx) = mpsc::channel(BUFFERED);
        let stdout = |t: String| pb::TraceOutput {
            kind: Some(pb::trace_output::Kind::Stdout(t)),
        };
        std::thread::Builder::new()
            .name("apiary-trace-follow".into())
            .spawn(move || {
                if !kept.is_empty() && tx.blocking_send(Ok(stdout(kept))).is_err() {
                    return;
                }
                let Some(live) = live else { return };
                // Pieces that queued up meanwhile go out together.
                while let Ok(first) = live.recv() {
                    let mut batch = first.to_string();
                    while batch.len() < 64 * 1024 {
                        match live.try_recv() {
                            Ok(more) => batch.push_str(&more),
                            Err(_) => break,
                        }
                    }
                    if tx.blocking_send(Ok(stdout(batch))).is_err() {
                        return;
                    }
                }
                // The queue closed while the run goes on: this client fell behind and was
                // dropped. Say so rather than look like the end of the run.
                if apiary::trace_output::is_live(&dir) {
                    let msg = pb::TraceOutput {
                        kind: Some(pb::trace_output::Kind::Stderr(format!(
                            "apiary: this client fell more than {} pieces of output behind and was cut off; the job goes on (`apiary trace logs` has the kept part)\n",
                            apiary::trace_output::FOLLOWER_QUEUE
                        ))),
                    };
                    let _ = tx.blocking_send(Ok(msg));
                }
            })
            .map_err(|e| Status::internal(format!("cannot start a thread: {e}")))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stop_trace(
        &self,
        req: Request<pb::StopTraceRequest>,
    ) -> Result<Response<pb::StopTraceResponse>, Status> {
        let id = req.into_inner().id;
        let flag = self
            .running
            .lock()
            .map_err(|_| Status::internal("trace table poisoned"))?
            .get(&id)
            .cloned();
        match flag {
            Some(f) => {
                f.store(true, Ordering::SeqCst);
                Ok(Response::new(pb::StopTraceResponse {}))
            }
            None => Err(Status::not_found(format!("no running trace {id}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("grpc-timeout", "30S".parse().unwrap());
        assert_eq!(grpc_timeout(&md), Some(Duration::from_secs(30)));
        md.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&md), Some(Duration::from_millis(250)));
        md.insert("grpc-timeout", "bogus".parse().unwrap());
        assert_eq!(grpc_timeout(&md), None);
    }
}
