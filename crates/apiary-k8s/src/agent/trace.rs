//! Trace jobs on this node: the agent runs each TraceJob that selects its node once (with
//! `apiary::trace`, bpftrace as a child or an object in-process), keeps the newest MiB of its
//! output in its state directory, and reports the node's entry of the job's status under a
//! field manager of its own. A run stops at its duration, at the job's deadline, when the job
//! asks (`spec.stop`) or is deleted; a deleted job's kept output is removed too. A run the
//! agent was doing when it died is reported Failed ("agent restarted") when it starts again.

use crate::crd::{phase, NodeTraceStatus, TraceJob, GROUP, VERSION};
use crate::error::KubeError;
use apiary::trace::{Exit, Output, Program, TraceSpec};
use apiary::trace_output::{self, OutputLog};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};

/// How often running jobs are checked against their deadline.
const TICK: Duration = Duration::from_millis(500);
/// How often a running job's output size is reported (when it changed).
const BYTES_REPORT: Duration = Duration::from_secs(5);

/// Where the kept output of `job` is, under the agent's state directory.
pub fn output_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("trace-jobs").join(job)
}

fn field_manager(node: &str) -> String {
    format!("apiary-trace-{node}")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Why a node could not start a job (reported in its status entry).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("spec.program needs exactly one of bpftrace, object, image, package")]
    Program,
    #[error("spec.duration {value:?}: {reason}")]
    Duration { value: String, reason: String },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("image settings: {0}")]
    Images(apiary::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// A run in progress.
struct Running {
    started: String,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    reported_bytes: u64,
    reported_at: std::time::Instant,
}

/// A run that ended, for the loop to report.
struct Ended {
    job: String,
    status: NodeTraceStatus,
}

/// Run `agent` and this node's trace jobs together, until the agent ends. Trace jobs failing
/// to start (no RBAC to annotate the Node, no TraceJob CRD yet) must not take the applications
/// down: the failure is logged and tried again, backing off.
pub async fn beside(
    agent: impl std::future::Future<Output = Result<(), KubeError>>,
    client: Client,
    node: String,
    state_dir: PathBuf,
    listen: Option<std::net::SocketAddr>,
    manager: Arc<apiary::Manager>,
) -> Result<(), KubeError> {
    let traces = async {
        let mut wait = Duration::from_secs(1);
        loop {
            let r = run(
                client.clone(),
                node.clone(),
                state_dir.clone(),
                listen,
                manager.clone(),
            )
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, retry_in = ?wait, "trace jobs are not served");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    };
    tokio::select! {
        r = agent => r,
        () = traces => Ok(()),
    }
}

/// Run this node's trace jobs until the future is dropped.
pub async fn run(
    client: Client,
    node: String,
    state_dir: PathBuf,
    listen: Option<std::net::SocketAddr>,
    // For the image settings (registries, signature policy) images are pulled with.
    manager: Arc<apiary::Manager>,
) -> Result<(), KubeError> {
    // Clients find this agent's TLS listener (and its TraceStream) through its Node.
    if let Some(addr) = listen {
        let endpoint = crate::trace_jobs::agent_endpoint(&client, &node, addr).await?;
        crate::trace_jobs::publish_endpoint(&client, &node, &endpoint).await?;
        tracing::info!(%endpoint, "published the agent's address");
    }
    let wake = Arc::new(Notify::new());
    let nodes = crate::cache::cache(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node}")),
        &wake,
        "node",
    );
    let jobs = crate::cache::cache(
        Api::<TraceJob>::all(client.clone()),
        watcher::Config::default(),
        &wake,
        "tracejobs",
    );
    if nodes.wait_until_ready().await.is_err() || jobs.wait_until_ready().await.is_err() {
        return Err(KubeError::Start {
            what: "the trace job watch ended before its first list".into(),
        });
    }
    let api = Api::<TraceJob>::all(client);
    let root = state_dir.join("trace-jobs");
    // The agent's Tracer service serves TraceStream from here.
    trace_output::set_root(&root, &node);
    report_interrupted(&api, &node, &root).await;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        let labels = nodes
            .state()
            .first()
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        let all = jobs.state();
        // Start what selects this node and never ran here (a directory records that it did).
        for job in &all {
            let name = job.name_any();
            if job.metadata.deletion_timestamp.is_some()
                || job.spec.stop
                || running.contains_key(&name)
                || !job.spec.selects(&node, &labels)
            {
                continue;
            }
            let dir = output_dir(&state_dir, &name);
            if dir.exists() {
                continue;
            }
            match start(job, &dir, &manager, ended_tx.clone()) {
                Ok(r) => {
                    let s = NodeTraceStatus {
                        phase: phase::RUNNING.into(),
                        start_time: Some(r.started.clone()),
                        ..Default::default()
                    };
                    running.insert(name.clone(), r);
                    report(&api, &node, &name, &s).await;
                }
                Err(error) => {
                    let s = NodeTraceStatus {
                        phase: phase::FAILED.into(),
                        start_time: Some(now()),
                        end_time: Some(now()),
                        error: Some(error.to_string()),
                        ..Default::default()
                    };
                    report(&api, &node, &name, &s).await;
                }
            }
        }
        // Stop what was stopped, deleted or is past its deadline.
        for (name, r) in &mut running {
            let job = all.iter().find(|j| j.name_any() == *name);
            let stop = match job {
                None => true,
                Some(j) => {
                    j.metadata.deletion_timestamp.is_some() || j.spec.stop || past_deadline(j)
                }
            };
            if stop {
                r.stop.store(true, Ordering::SeqCst);
            }
            let bytes = r.bytes.load(Ordering::SeqCst);
            if bytes != r.reported_bytes && job.is_some() && r.reported_at.elapsed() >= BYTES_REPORT
            {
                r.reported_bytes = bytes;
                r.reported_at = std::time::Instant::now();
                // The whole entry: an apply drops the fields of this manager it leaves out.
                let s = NodeTraceStatus {
                    phase: phase::RUNNING.into(),
                    start_time: Some(r.started.clone()),
                    output_bytes: bytes,
                    ..Default::default()
                };
                report(&api, &node, name, &s).await;
            }
        }
        // Kept output of deleted jobs goes, once nothing writes it.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !running.contains_key(&name) && !all.iter().any(|j| j.name_any() == name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tick.tick() => {}
            Some(end) = ended_rx.recv() => {
                running.remove(&end.job);
                if all.iter().any(|j| j.name_any() == end.job) {
                    report(&api, &node, &end.job, &end.status).await;
                }
                tracing::info!(job = %end.job, phase = %end.status.phase, "trace job ended on this node");
            }
        }
    }
}

fn past_deadline(j: &TraceJob) -> bool {
    let (Some(secs), Some(created)) = (
        j.spec.active_deadline_seconds,
        j.metadata.creation_timestamp.as_ref(),
    ) else {
        return false;
    };
    let created: SystemTime = created.0.into();
    created + Duration::from_secs(secs.max(0) as u64) <= SystemTime::now()
}

/// What the job runs, as the runner's spec.
fn spec_of(job: &TraceJob, dir: &Path, manager: &apiary::Manager) -> Result<TraceSpec, StartError> {
    let p = &job.spec.program;
    let program = match (&p.bpftrace, &p.object, &p.package, &p.image) {
        (Some(script), None, None, None) => Program::Bpftrace {
            script: script.clone(),
        },
        (None, Some(source), None, None) => Program::Object {
            source: source.clone(),
        },
        (None, None, None, Some(reference)) => Program::Image {
            reference: reference.clone(),
        },
        (None, None, Some(text), None) => {
            let path = dir.join("package.json");
            std::fs::write(&path, text).map_err(|error| StartError::Write {
                path: path.clone(),
                error,
            })?;
            Program::Object {
                source: path.display().to_string(),
            }
        }
        _ => return Err(StartError::Program),
    };
    let images = match &program {
        Program::Image { .. } => Some(manager.image_settings().map_err(StartError::Images)?),
        _ => None,
    };
    let mut spec = TraceSpec::new(program);
    spec.images = images;
    spec.set = p
        .values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    spec.args = p.args.clone();
    spec.json = job.spec.json;
    spec.duration = job
        .spec
        .duration
        .as_deref()
        .map(|d| {
            humantime::parse_duration(d).map_err(|e| StartError::Duration {
                value: d.to_string(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    Ok(spec)
}

/// Start the job's run on a thread of its own; its end arrives on `ended`.
fn start(
    job: &TraceJob,
    dir: &Path,
    manager: &apiary::Manager,
    ended: mpsc::UnboundedSender<Ended>,
) -> Result<Running, StartError> {
    let name = job.name_any();
    let mut log = OutputLog::create(dir).map_err(|error| StartError::Write {
        path: dir.to_path_buf(),
        error,
    })?;
    let spec = match spec_of(job, dir, manager) {
        Ok(s) => s,
        Err(e) => {
            log.finish();
            return Err(e);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let (s, b) = (stop.clone(), bytes.clone());
    let started = now();
    let started_here = started.clone();
    tracing::info!(job = %name, "trace job starting on this node");
    std::thread::Builder::new()
        .name(format!("trace-{name}"))
        .spawn(move || {
            let mut write_err = None;
            let result = apiary::trace::run(
                &spec,
                &mut |o| {
                    let text = match o {
                        Output::Stdout(t) | Output::Stderr(t) | Output::Note(t) => t,
                        Output::Events { text, .. } => text,
                        Output::EventTypes(_) => return true,
                    };
                    if let Err(e) = log.append(text) {
                        write_err.get_or_insert(e.to_string());
                    }
                    b.store(log.total(), Ordering::SeqCst);
                    true
                },
                &|| s.load(Ordering::SeqCst),
            );
            let total = log.total();
            log.finish();
            let status = ended_status(&result, started, total, write_err);
            let _ = ended.send(Ended { job: name, status });
        })
        .map_err(StartError::Thread)?;
    Ok(Running {
        started: started_here,
        stop,
        bytes,
        reported_bytes: 0,
        reported_at: std::time::Instant::now(),
    })
}

/// The node's final entry for a run.
fn ended_status(
    r: &apiary::Result<Exit>,
    started: String,
    total: u64,
    write_err: Option<String>,
) -> NodeTraceStatus {
    let mut s = NodeTraceStatus {
        start_time: Some(started),
        end_time: Some(now()),
        output_bytes: total,
        ..Default::default()
    };
    match r {
        Err(e) => {
            s.phase = phase::FAILED.into();
            s.error = Some(e.to_string());
        }
        Ok(e) => {
            s.exit_code = e.code;
            s.phase = match (e.code, e.stopped) {
                (Some(0), true) => phase::STOPPED,
                (Some(0), false) => phase::SUCCEEDED,
                _ => phase::FAILED,
            }
            .into();
            if let Some(sig) = e.signal {
                s.error = Some(format!("bpftrace was killed by signal {sig}"));
            } else if e.code.is_some_and(|c| c != 0) {
                s.error = Some(format!(
                    "bpftrace exited with status {}",
                    e.code.unwrap_or(0)
                ));
            }
        }
    }
    if s.error.is_none() {
        s.error = write_err.map(|e| format!("output not kept: {e}"));
    }
    s
}

/// Runs this node was doing when its agent died: Failed, "agent restarted". The programs went
/// with the process (bpftrace gets SIGKILL when its parent dies; objects were never pinned).
async fn report_interrupted(api: &Api<TraceJob>, node: &str, root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !trace_output::interrupted(&dir) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = trace_output::kept(&dir)
            .map(|t| t.len() as u64)
            .unwrap_or(0);
        let s = NodeTraceStatus {
            phase: phase::FAILED.into(),
            end_time: Some(now()),
            output_bytes: bytes,
            error: Some("agent restarted".into()),
            ..Default::default()
        };
        report(api, node, &name, &s).await;
        trace_output::clear_interrupted(&dir);
        tracing::warn!(job = %name, "trace job was running when the agent stopped: marked Failed");
    }
}

async fn report(api: &Api<TraceJob>, node: &str, job: &str, s: &NodeTraceStatus) {
    let v = serde_json::to_value(s).unwrap_or_default();
    patch_node_status(api, node, job, v).await;
}

/// Server-side apply of this node's entry only: other nodes' entries have other managers.
async fn patch_node_status(api: &Api<TraceJob>, node: &str, job: &str, entry: serde_json::Value) {
    let body = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "TraceJob",
        "metadata": { "name": job },
        "status": { "nodes": { node: entry } },
    });
    let params = PatchParams::apply(&field_manager(node)).force();
    if let Err(e) = api.patch_status(job, &params, &Patch::Apply(&body)).await {
        // A job deleted meanwhile has no status to write; anything else is retried by the
        // next report (the final one carries everything).
        tracing::warn!(job, error = %e, "cannot write the trace job's status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TraceJobSpec, TraceProgram};

    fn exit(code: Option<i32>, signal: Option<i32>, stopped: bool) -> apiary::Result<Exit> {
        Ok(Exit {
            code,
            signal,
            stopped,
            ..Default::default()
        })
    }

    #[test]
    fn how_a_run_ended_becomes_its_phase() {
        let phase_of = |r| ended_status(&r, "t".into(), 0, None);
        assert_eq!(phase_of(exit(Some(0), None, false)).phase, phase::SUCCEEDED);
        assert_eq!(phase_of(exit(Some(0), None, true)).phase, phase::STOPPED);
        let s = phase_of(exit(Some(1), None, false));
        assert_eq!((s.phase.as_str(), s.exit_code), (phase::FAILED, Some(1)));
        assert_eq!(s.error.as_deref(), Some("bpftrace exited with status 1"));
        let s = phase_of(exit(None, Some(9), true));
        assert_eq!(s.phase, phase::FAILED);
        assert_eq!(s.error.as_deref(), Some("bpftrace was killed by signal 9"));
        let s = phase_of(Err(apiary::Error::InvalidArgument("no such map".into())));
        assert_eq!(s.phase, phase::FAILED);
        assert!(s.error.unwrap().contains("no such map"));
    }

    #[test]
    fn deadlines_count_from_creation() {
        let mut j = TraceJob::new("j", TraceJobSpec::default());
        assert!(!past_deadline(&j), "no deadline");
        j.spec.active_deadline_seconds = Some(60);
        let created =
            k8s_openapi::jiff::Timestamp::try_from(SystemTime::now() - Duration::from_secs(120))
                .unwrap();
        j.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created,
        ));
        assert!(past_deadline(&j));
        j.spec.active_deadline_seconds = Some(600);
        assert!(!past_deadline(&j));
    }

    #[test]
    fn a_job_names_exactly_one_program() {
        let job = |p: TraceProgram| {
            TraceJob::new(
                "j",
                TraceJobSpec {
                    program: p,
                    duration: Some("30s".into()),
                    ..Default::default()
                },
            )
        };
        let state = std::env::temp_dir().join(format!("apiary-trace-spec-{}", std::process::id()));
        let m = apiary::Manager::open(apiary::Config {
            state_dir: state.clone(),
            ..Default::default()
        })
        .unwrap();
        let dir = std::env::temp_dir();
        let s = spec_of(
            &job(TraceProgram {
                bpftrace: Some("BEGIN {}".into()),
                args: vec!["7".into()],
                ..Default::default()
            }),
            &dir,
            &m,
        )
        .unwrap();
        assert_eq!(s.duration, Some(Duration::from_secs(30)));
        assert_eq!(s.args, vec!["7".to_string()]);
        let e = spec_of(
            &job(TraceProgram {
                bpftrace: Some("BEGIN {}".into()),
                object: Some("/x.o".into()),
                ..Default::default()
            }),
            &dir,
            &m,
        )
        .unwrap_err();
        assert!(matches!(e, StartError::Program), "{e}");
        drop(m);
        let _ = std::fs::remove_dir_all(&state);
    }
}
