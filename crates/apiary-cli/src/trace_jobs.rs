//! `apiary trace` on Kubernetes: `run node/NAME | -l SELECTOR` creates a TraceJob and merges
//! the output of every selected node's agent (over mutual TLS, found through the Node's
//! annotation) into one stream; `get`, `logs [-f]`, `attach`, `delete` work on jobs by name.
//! Ctrl-C sets the job stopped: the agents interrupt bpftrace, its maps still arrive.

use anyhow::{bail, Context, Result};
use apiary_k8s::crd::{phase, TraceJobSpec, TraceProgram};
use apiary_k8s::trace_jobs::{JobNode, Jobs};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the job's status is read while waiting for nodes to start.
/// (Only until every node started it: a few reads; the first output waits on it.)
const STATUS_POLL: Duration = Duration::from_millis(50);
/// After Ctrl-C, how long nodes that never started the job are waited for.
const GIVE_UP_AFTER_STOP: Duration = Duration::from_secs(10);
/// How long a node's agent gets to start the job before the client stops waiting for it (its
/// agent may be down; the job still runs there when it comes back).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The job's program from `trace run`'s arguments.
pub fn program(
    what: apiary::trace::Program,
    set: &[(String, String)],
    args: Vec<String>,
) -> Result<TraceProgram> {
    use apiary::trace::Program;
    let mut p = TraceProgram {
        values: set.iter().cloned().collect(),
        args,
        ..Default::default()
    };
    match what {
        Program::Bpftrace { script } => p.bpftrace = Some(script),
        Program::Image { reference } => p.image = Some(reference),
        Program::Object { source } => {
            let local = std::path::Path::new(&source);
            // A package travels in the job; an object file is named by path (on the node).
            match std::fs::read(local).ok() {
                Some(b) if b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{') => {
                    p.package = Some(String::from_utf8(b).context("the package is not UTF-8")?)
                }
                Some(_) => {
                    let abs = std::fs::canonicalize(local).unwrap_or_else(|_| local.into());
                    p.object = Some(abs.display().to_string())
                }
                None => p.object = Some(source),
            }
        }
    }
    Ok(p)
}

fn job_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("trace-{:x}", nanos & 0xffff_ffff_ffff)
}

/// How lines are printed: with a NODE column, or a "node" field in JSON.
struct Printer {
    json: bool,
    width: usize,
    partial: BTreeMap<String, String>,
}

impl Printer {
    fn print(&mut self, node: &str, text: &str) -> std::io::Result<()> {
        let buf = self.partial.entry(node.to_string()).or_default();
        buf.push_str(text);
        let Some(end) = buf.rfind('\n') else {
            return Ok(());
        };
        // Whole lines go; the unfinished one stays (split, not drained char by char).
        let rest = buf.split_off(end + 1);
        let whole = std::mem::replace(buf, rest);
        let mut out = String::with_capacity(whole.len() + whole.len() / 4);
        let quoted = serde_json::Value::from(node).to_string();
        for line in whole.lines() {
            if self.json {
                // A JSON object (a decoded event) gets the node as its first member, spliced in
                // as text: re-parsing every event would cost more than decoding it did.
                match line.strip_prefix('{') {
                    Some(rest) if line.ends_with('}') => {
                        out.push_str("{\"node\":");
                        out.push_str(&quoted);
                        if rest != "}" {
                            out.push(',');
                        }
                        out.push_str(rest);
                    }
                    _ => {
                        out.push_str(&serde_json::json!({ "node": node, "line": line }).to_string())
                    }
                }
            } else {
                out.push_str(&format!("{node:<w$}  {line}", w = self.width));
            }
            out.push('\n');
        }
        let mut o = std::io::stdout().lock();
        o.write_all(out.as_bytes())?;
        o.flush()
    }
}

enum Piece {
    Text(String, String),
    Failed(String, String),
    Done,
}

/// Stream the output of `job` from each node as it starts it, until every started node's
/// stream ended (with `follow`; otherwise the kept output only). With `stop_on_ctrl_c`, Ctrl-C
/// sets the job stopped and the streams are read to their end.
fn stream(
    jobs: &Jobs,
    job: &str,
    nodes: &[JobNode],
    follow: bool,
    stop_on_ctrl_c: bool,
    tls: &crate::daemon::ClientArgs,
    json: bool,
) -> Result<()> {
    let mut p = Printer {
        json,
        width: nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4),
        partial: BTreeMap::new(),
    };
    if !json {
        println!("{:<w$}  OUTPUT", "NODE", w = p.width);
    }
    let (tx, rx) = mpsc::channel::<Piece>();
    let mut waiting: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut open = 0usize;
    let mut asked: Option<Instant> = None;
    let mut last_poll = Instant::now() - STATUS_POLL;
    let began = Instant::now();
    loop {
        if stop_on_ctrl_c && asked.is_none() && crate::STOP.load(Ordering::SeqCst) {
            jobs.stop(job)?;
            asked = Some(Instant::now());
        }
        if !waiting.is_empty() && last_poll.elapsed() >= STATUS_POLL {
            last_poll = Instant::now();
            let status = jobs.status(job)?;
            for n in nodes {
                // Started once its agent wrote its entry (Pending is the client's own).
                let started = status
                    .get(&n.name)
                    .is_some_and(|s| s.phase != phase::PENDING);
                if !waiting.contains(&n.name) || !started {
                    continue;
                }
                waiting.remove(&n.name);
                let Some(endpoint) = n.endpoint.clone() else {
                    eprintln!(
                        "{}: its agent published no address ({}); no output from it",
                        n.name,
                        apiary_k8s::trace_jobs::ENDPOINT_ANNOTATION
                    );
                    continue;
                };
                open += 1;
                let (tx, node, job) = (tx.clone(), n.name.clone(), job.to_string());
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let r = tls
                        .connect(&endpoint)
                        .map_err(|e| e.to_string())
                        .and_then(|api| {
                            apiary_api::trace_client::job_output(
                                &api,
                                &job,
                                &node,
                                follow,
                                &mut |t, remark| {
                                    let piece = if remark {
                                        Piece::Failed(node.clone(), t.trim_end().to_string())
                                    } else {
                                        Piece::Text(node.clone(), t.to_string())
                                    };
                                    let _ = tx.send(piece);
                                },
                            )
                            .map_err(|e| e.to_string())
                        });
                    if let Err(e) = r {
                        let _ = tx.send(Piece::Failed(node.clone(), e));
                    }
                    let _ = tx.send(Piece::Done);
                });
            }
            if asked.is_some_and(|t| t.elapsed() > GIVE_UP_AFTER_STOP) {
                for n in std::mem::take(&mut waiting) {
                    eprintln!("{n}: never started the job");
                }
            }
            if !waiting.is_empty() && began.elapsed() > START_TIMEOUT {
                for n in std::mem::take(&mut waiting) {
                    eprintln!(
                        "{n}: its agent has not started the job in {}s; not waiting for it (see `apiary trace get`)",
                        START_TIMEOUT.as_secs()
                    );
                }
            }
        }
        if waiting.is_empty() && open == 0 {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Piece::Text(node, t)) => p.print(&node, &t)?,
            Ok(Piece::Failed(node, e)) => eprintln!("{node}: {e}"),
            Ok(Piece::Done) => open -= 1,
            Err(_) => {}
        }
    }
    for (node, rest) in std::mem::take(&mut p.partial) {
        if !rest.is_empty() {
            p.print(&node, &(rest + "\n"))?;
        }
    }
    Ok(())
}

/// One line per node on stderr: how its run ended; an error when one failed.
fn summary(jobs: &Jobs, job: &str) -> Result<()> {
    // The agents report the end right after their stream closes; give them a moment.
    let end = Instant::now() + Duration::from_secs(10);
    if jobs.get(job)?.is_none() {
        eprintln!("trace job {job} was deleted");
        return Ok(());
    }
    let mut status = jobs.status(job)?;
    // Running ones are about to end; a node still Pending never started.
    while status.values().any(|s| s.phase == phase::RUNNING) && Instant::now() < end {
        std::thread::sleep(STATUS_POLL);
        status = jobs.status(job)?;
    }
    let mut failed = Vec::new();
    for (node, s) in &status {
        let mut line = format!("{node}: {} ({} bytes of output", s.phase, s.output_bytes);
        if let Some(c) = s.exit_code {
            line.push_str(&format!(", exit status {c}"));
        }
        line.push(')');
        if let Some(e) = &s.error {
            line.push_str(&format!(": {e}"));
        }
        eprintln!("{line}");
        if s.phase == phase::FAILED {
            failed.push(node.clone());
        }
    }
    if !failed.is_empty() {
        bail!("trace job {job} failed on {}", failed.join(", "));
    }
    Ok(())
}

pub struct JobRun {
    pub target: Option<String>,
    pub selector: Option<String>,
    pub program: TraceProgram,
    pub duration: Option<Duration>,
    pub deadline: Option<Duration>,
    pub kubeconfig: Option<PathBuf>,
    pub json: bool,
}

/// `trace run node/NAME | -l SELECTOR ...`.
pub fn run(r: JobRun, tls: &crate::daemon::ClientArgs) -> Result<()> {
    let jobs = Jobs::connect(apiary_k8s::trace_jobs::kubeconfig(r.kubeconfig.clone()).as_deref())?;
    let mut spec = TraceJobSpec {
        program: r.program,
        duration: r
            .duration
            .map(|d| humantime::format_duration(d).to_string()),
        active_deadline_seconds: r.deadline.map(|d| d.as_secs().max(1) as i64),
        json: r.json,
        ..Default::default()
    };
    match (&r.target, &r.selector) {
        (Some(t), _) => spec.node_name = Some(t.trim_start_matches("node/").to_string()),
        (None, Some(sel)) => {
            spec.node_selector =
                Some(apiary_k8s::trace_jobs::selector(sel).map_err(anyhow::Error::msg)?)
        }
        (None, None) => bail!("give node/NAME or -l SELECTOR"),
    }
    let nodes = jobs.nodes(&spec)?;
    if nodes.is_empty() {
        bail!("no node matches");
    }
    let name = job_name();
    jobs.create(&name, spec)?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    // Only what `trace get` shows before the agents start: the job runs without it (a user
    // may lack patch on tracejobs/status), so a failure is a note, not a stop that would leave
    // the job running unwatched.
    if let Err(e) = jobs.mark_pending(&name, &names) {
        eprintln!("note: {e}; `apiary trace get` shows no entry for a node until it starts");
    }
    eprintln!(
        "trace job {name} on {}",
        nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::stop_on_signals();
    stream(&jobs, &name, &nodes, true, true, tls, r.json)?;
    summary(&jobs, &name)
}

/// The nodes of `job` (from its status), with their agents' addresses: those that ran it, and
/// with `pending` those still waiting for their agent too (to follow them).
fn ran_on(jobs: &Jobs, job: &str, pending: bool) -> Result<Vec<JobNode>> {
    let j = jobs
        .get(job)?
        .with_context(|| format!("no trace job {job}"))?;
    let ran: BTreeSet<String> = j
        .status
        .map(|s| {
            s.nodes
                .into_iter()
                .filter(|(_, n)| pending || n.phase != phase::PENDING)
                .map(|(name, _)| name)
                .collect()
        })
        .unwrap_or_default();
    // Every node with an address, filtered to those in the status.
    let all = jobs.nodes(&TraceJobSpec {
        node_selector: Some(Default::default()),
        ..Default::default()
    })?;
    Ok(all.into_iter().filter(|n| ran.contains(&n.name)).collect())
}

/// `trace logs [-f] ID` and `trace attach ID`.
pub fn logs(
    job: &str,
    follow: bool,
    attach: bool,
    kubeconfig: Option<PathBuf>,
    tls: &crate::daemon::ClientArgs,
    json: bool,
) -> Result<()> {
    let jobs = Jobs::connect(apiary_k8s::trace_jobs::kubeconfig(kubeconfig).as_deref())?;
    let nodes = ran_on(&jobs, job, follow || attach)?;
    if attach {
        crate::stop_on_signals();
    }
    stream(&jobs, job, &nodes, follow || attach, attach, tls, json)?;
    if attach {
        summary(&jobs, job)?;
    }
    Ok(())
}

/// `trace get`: every job with each node's phase.
pub fn get(kubeconfig: Option<PathBuf>, json: bool) -> Result<()> {
    let jobs = Jobs::connect(apiary_k8s::trace_jobs::kubeconfig(kubeconfig).as_deref())?;
    let list = jobs.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<24}  {:<24}  {:<10}  {:>10}  ERROR",
        "NAME", "NODE", "PHASE", "BYTES"
    );
    for j in &list {
        let name = apiary_k8s::trace_jobs::name_of(j);
        let nodes = j
            .status
            .as_ref()
            .map(|s| s.nodes.clone())
            .unwrap_or_default();
        if nodes.is_empty() {
            println!("{name:<24}  {:<24}  {:<10}  {:>10}", "-", phase::PENDING, 0);
        }
        for (n, s) in nodes {
            println!(
                "{name:<24}  {n:<24}  {:<10}  {:>10}  {}",
                s.phase,
                s.output_bytes,
                s.error.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `trace delete ID`: the job goes; every node's agent stops it and removes its kept output.
pub fn delete(job: &str, kubeconfig: Option<PathBuf>) -> Result<()> {
    let jobs = Jobs::connect(apiary_k8s::trace_jobs::kubeconfig(kubeconfig).as_deref())?;
    if !jobs.delete(job)? {
        bail!("no trace job {job}");
    }
    eprintln!("deleted trace job {job}");
    Ok(())
}
