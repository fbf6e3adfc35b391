//! `apiary trace run`: a bpftrace script or an object, run on this host (in-process, bpftrace
//! as a child) or through a daemon (`--endpoint`), its output printed as it comes; Ctrl-C
//! stops it and bpftrace still prints its maps.

use anyhow::{bail, Context, Result};
use apiary::trace::{Output, Program, TraceSpec};
use apiary_api::pb;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum TraceCmd {
    /// Run a bpftrace script (-e TEXT or -f FILE) or an object/package, printing its output
    /// until it ends, --duration passes or Ctrl-C (bpftrace then prints its maps).
    Run(TraceRunArgs),
    /// Kubernetes: every trace job, with each node's phase and output size.
    Get {
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Kubernetes: a job's kept output from every node that ran it (-f: then follow it).
    Logs {
        job: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Kubernetes: follow a running job's output; Ctrl-C stops the job (maps still print).
    Attach {
        job: String,
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Kubernetes: delete a job; every node stops it and removes its kept output.
    Delete {
        job: String,
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct TraceRunArgs {
    /// bpftrace program text.
    #[arg(short = 'e', long = "expr", conflicts_with = "file")]
    pub script: Option<String>,
    /// A bpftrace script file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Stop after this long (e.g. 30s); default: until it ends or Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Set a global of an object by value: NAME=VALUE.
    #[arg(long = "set", value_parser = parse_kv)]
    pub set: Vec<(String, String)>,
    /// Kubernetes: run on every node with these labels (key=value[,key=value...]).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Kubernetes: every node stops the job this long after it was created.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<std::time::Duration>,
    /// Kubernetes: the kubeconfig (default: KUBECONFIG, in-cluster, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// [node/NAME] then, without -e/-f, the object, package, BPF C source (built first) or
    /// `image REF`; then positional arguments ($1, $2...; after `--` when one starts with a
    /// dash).
    pub rest: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    apiary_core::parse::parse_kv(s)
}

/// What `trace run`'s arguments name: the program, and its positional arguments.
struct Parsed {
    program: Program,
    /// The object's bytes, for a daemon (it runs them from a file of its own).
    object: Option<(String, Vec<u8>)>,
    args: Vec<String>,
}

fn parse(a: &TraceRunArgs) -> Result<Parsed> {
    let mut rest = a.rest.clone();
    if rest.first().is_some_and(|t| t.starts_with("node/")) {
        rest.remove(0);
    }
    let script = match (&a.script, &a.file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        (None, None) => None,
    };
    if let Some(script) = script {
        return Ok(Parsed {
            program: Program::Bpftrace { script },
            object: None,
            args: rest,
        });
    }
    if rest.is_empty() {
        bail!("nothing to run: give -e 'SCRIPT', -f FILE, an object/package or image REF");
    }
    let mut source = rest.remove(0);
    // A C source is built into the cache first, as `apiary run` does; its package runs.
    if apiary::build::is_c_source(&source) {
        let src = PathBuf::from(&source);
        let out_dir = apiary::build::run_out_dir(&apiary::build::default_cache_dir(), &src);
        let built = apiary::build::build(&crate::build_spec(
            &src,
            &crate::args::CompileFlags::default(),
            out_dir,
        ))
        .map_err(apiary::Error::from)?;
        crate::report_build(&built);
        source = built.package.display().to_string();
    }
    if source == "image" {
        if rest.is_empty() {
            bail!("image: give the image's reference (REGISTRY/REPO:TAG or @DIGEST)");
        }
        return Ok(Parsed {
            program: Program::Image {
                reference: rest.remove(0),
            },
            object: None,
            args: rest,
        });
    }
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        None
    } else {
        Some(std::fs::read(&source).with_context(|| format!("cannot read {source}"))?)
    };
    Ok(Parsed {
        program: Program::Object {
            source: source.clone(),
        },
        object: bytes.map(|b| (source, b)),
        args: rest,
    })
}

pub fn run(
    cmd: TraceCmd,
    remote: &crate::daemon::ClientArgs,
    state_dir: &std::path::Path,
    json: bool,
) -> Result<()> {
    match cmd {
        TraceCmd::Run(a) => {
            let target = a.rest.first().filter(|t| t.starts_with("node/")).cloned();
            if target.is_some() || a.selector.is_some() {
                let p = parse(&a)?;
                let program = crate::trace_jobs::program(p.program, &a.set, p.args)?;
                return crate::trace_jobs::run(
                    crate::trace_jobs::JobRun {
                        target,
                        selector: a.selector,
                        program,
                        duration: a.duration,
                        deadline: a.deadline,
                        kubeconfig: a.kubeconfig,
                        json,
                    },
                    remote,
                );
            }
            trace_run(a, remote, state_dir, json)
        }
        TraceCmd::Get { kubeconfig } => crate::trace_jobs::get(kubeconfig, json),
        TraceCmd::Logs {
            job,
            follow,
            kubeconfig,
        } => crate::trace_jobs::logs(&job, follow, false, kubeconfig, remote, json),
        TraceCmd::Attach { job, kubeconfig } => {
            crate::trace_jobs::logs(&job, true, true, kubeconfig, remote, json)
        }
        TraceCmd::Delete { job, kubeconfig } => crate::trace_jobs::delete(&job, kubeconfig),
    }
}

fn trace_run(
    a: TraceRunArgs,
    remote: &crate::daemon::ClientArgs,
    state_dir: &std::path::Path,
    json: bool,
) -> Result<()> {
    let p = parse(&a)?;
    crate::stop_on_signals();
    let stop = || crate::STOP.load(Ordering::SeqCst);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed_write = None;
    let mut print = |text: &str, to_stdout: bool| {
        let r = if to_stdout {
            out.write_all(text.as_bytes()).and_then(|_| out.flush())
        } else {
            std::io::stderr().write_all(text.as_bytes())
        };
        if let Err(e) = r {
            failed_write.get_or_insert(e);
            return false;
        }
        true
    };
    let exit = match &remote.endpoint {
        None => {
            // In-process, an image is pulled with this host's settings (APIARY_CONFIG or
            // /etc/apiary/apiary.toml), into the cache under the state directory.
            let images = match &p.program {
                Program::Image { .. } => {
                    Some(std::sync::Arc::new(apiary::images::ImageSettings::load(
                        apiary::images::config_path().as_deref(),
                        state_dir,
                    )?))
                }
                _ => None,
            };
            let mut spec = TraceSpec::new(p.program);
            spec.images = images;
            spec.set = a.set;
            spec.args = p.args;
            spec.duration = a.duration;
            spec.json = json;
            let r = apiary::trace::run(
                &spec,
                &mut |o| match o {
                    Output::Stdout(t) => print(t, true),
                    Output::Events { text, .. } => print(text, true),
                    Output::Stderr(t) | Output::Note(t) => print(t, false),
                    Output::EventTypes(_) => true,
                },
                &stop,
            )?;
            apiary_api::server::trace::exit_pb(&r)
        }
        Some(endpoint) => {
            let api = remote.connect(endpoint)?;
            let req = request(&p, &a.set, a.duration, json)?;
            apiary_api::trace_client::trace(
                &api,
                req,
                &mut |m| {
                    use pb::trace_output::Kind;
                    match &m.kind {
                        Some(Kind::Stdout(t)) => {
                            print(t, true);
                        }
                        Some(Kind::Events(e)) => {
                            print(&e.text, true);
                        }
                        Some(Kind::Stderr(t)) | Some(Kind::Note(t)) => {
                            print(t, false);
                        }
                        _ => {}
                    }
                },
                &stop,
            )?
        }
    };
    if let Some(e) = failed_write {
        bail!("writing output: {e}");
    }
    report(&exit)
}

/// The request a daemon gets for these arguments.
fn request(
    p: &Parsed,
    set: &[(String, String)],
    duration: Option<std::time::Duration>,
    json: bool,
) -> Result<pb::TraceRequest> {
    let (program, object_name) = match (&p.program, &p.object) {
        (Program::Bpftrace { script }, _) => (
            pb::trace_request::Program::Script(script.clone()),
            String::new(),
        ),
        (Program::Object { .. }, Some((name, bytes))) => (
            pb::trace_request::Program::Object(bytes.clone()),
            name.clone(),
        ),
        (Program::Image { reference }, _) => (
            pb::trace_request::Program::Image(reference.clone()),
            String::new(),
        ),
        (Program::Object { source }, None) => {
            bail!("{source}: through a daemon, give a local object or package file")
        }
    };
    Ok(pb::TraceRequest {
        program: Some(program),
        set: set.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        args: p.args.clone(),
        duration_millis: duration.map(|d| d.as_millis() as u64),
        json,
        object_name,
    })
}

/// One line on stderr about how the run ended; an error when it failed.
fn report(e: &pb::TraceExit) -> Result<()> {
    if !e.error.is_empty() {
        bail!("{}", e.error);
    }
    let how = if e.stopped { "stopped" } else { "ended" };
    let mut line = match (e.code, e.signal) {
        (Some(c), _) => format!("{how}: exit status {c}"),
        (None, Some(s)) => format!("{how}: killed by signal {s}"),
        (None, None) => how.to_string(),
    };
    if e.events > 0 || e.lost > 0 {
        line.push_str(&format!("; {} event(s)", e.events));
        if e.lost > 0 {
            line.push_str(&format!(", {} lost", e.lost));
        }
    }
    eprintln!("{line}; nothing left loaded");
    match (e.code, e.signal) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => bail!("bpftrace exited with status {c}"),
        (None, Some(s)) => bail!("bpftrace was killed by signal {s}"),
        (None, None) => Ok(()),
    }
}
