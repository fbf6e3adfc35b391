//! The `apiary` binary: parse flags, validate them into typed requests, call the manager, print.

mod agent;
mod args;
mod csi;
mod daemon;
mod docs;
mod image;
mod k8s;
mod operator;
mod output;
mod rollout;
mod trace;
mod trace_jobs;

use anyhow::Result;
use apiary::{Api, Config, Manager, ObjectSource};
use args::{ApiCommand, Cli, Command, GetCmd, ListCmd, LoadCmd, MapCmd, Output, RunArgs};
use clap::Parser;

fn main() {
    apiary::timing::mark("start");
    // The daemon's loader process (`apiary serve` starts this binary again with this hidden
    // argument): serve loads on stdin before anything else of the CLI is set up.
    if std::env::args_os().nth(1).as_deref() == Some(apiary_kernel::worker::WORKER_ARG.as_ref()) {
        std::process::exit(apiary_kernel::worker::serve());
    }
    let cli = Cli::parse();
    // Die quietly on a closed pipe (`apiary list | head`), like other command-line tools; but
    // a process that serves or keeps network connections must not die of a peer that hung up
    // (a vectored write to a reset socket raises SIGPIPE: the operator died of it when the
    // apiserver went away). `serve` and `agent` ignore it in the server.
    let serves = match &cli.command {
        Command::Operator(_) | Command::Csi(_) => true,
        Command::Run(r) => r.metrics.is_some() || r.otlp.otlp_endpoint.is_some(),
        _ => false,
    };
    // SAFETY: setting a signal's disposition is process-wide and done before any thread starts.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            if serves { libc::SIG_IGN } else { libc::SIG_DFL },
        );
    }
    apiary::timing::mark("args");
    let result = run(cli);
    apiary::timing::mark("output");
    let timing = apiary::timing::report();
    if !timing.is_empty() {
        eprintln!("{timing}");
    }
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        // The exit status tells scripts what kind of failure it was (README: exit status).
        let status = e
            .chain()
            .find_map(|c| {
                c.downcast_ref::<apiary::Error>()
                    .map(apiary::Error::code)
                    .or_else(|| {
                        c.downcast_ref::<apiary_api::ClientError>()
                            .map(|c| c.code())
                    })
            })
            .map(apiary::ErrorCode::exit_status)
            .unwrap_or(1);
        std::process::exit(status);
    }
}

/// `restoring: N/M programs` on a terminal, redrawn at most ten times a second; nothing when
/// stderr is not a terminal (scripts, tests).
fn progress() -> impl FnMut(usize, usize) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let mut last = std::time::Instant::now();
    move |done, total| {
        if !tty || total < 50 {
            return;
        }
        if done == total || last.elapsed() >= std::time::Duration::from_millis(100) {
            last = std::time::Instant::now();
            let mut e = std::io::stderr();
            let _ = write!(e, "\rchecking and restoring programs: {done}/{total}");
            if done == total {
                let _ = writeln!(e);
            }
            let _ = e.flush();
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // `package` writes a file named by -o; everything else prints in the format -o names.
    let format: Output = match &cli.command {
        Command::Package { .. } | Command::Build { .. } | Command::Man => Output::Table,
        _ => cli.output.parse().map_err(anyhow::Error::msg)?,
    };
    let out = output::Printer::new(format);
    // In-process loads stay in this process: a crash in libbpf only ends this command.
    let config = || Config {
        state_dir: cli.state_dir.clone(),
        bpffs: cli.bpffs.clone(),
        loader: apiary_kernel::Loader::in_process(),
    };
    match cli.command {
        // These work on objects, not on apiary's state: no store, no root needed for them.
        Command::Inspect { source } => inspect(&out, &source),
        Command::Image { what } => image::run(what, &cli.state_dir, format == Output::Json),
        Command::Package { object } => package(&object, &cli.output),
        Command::Build { source, flags } => build(&source, &flags, &cli.output),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(&cli.output),
        Command::K8s { what } => k8s::run(what),
        Command::Trace { what } => {
            trace::run(what, &cli.remote, &cli.state_dir, format == Output::Json)
        }
        Command::Run(args) => run_foreground(args, format),
        Command::Serve(a) => daemon::serve(a, cli.state_dir.clone(), cli.bpffs.clone()),
        Command::Agent(a) => agent::run(a, cli.state_dir.clone(), cli.bpffs.clone()),
        Command::Csi(a) => {
            // The plugin reads this node's store itself; a daemon's answers would come from
            // another mount namespace's view of the pins.
            if cli.remote.endpoint.is_some() {
                return Err(apiary::Error::InvalidArgument(
                    "apiary csi reads the store in this process: --endpoint (APIARY_ENDPOINT) does not apply; the plugin's socket is --csi-endpoint".into(),
                )
                .into());
            }
            csi::run(a, cli.state_dir.clone(), cli.bpffs.clone())
        }
        Command::Operator(a) => operator::run(a),
        Command::Rollout { what } => rollout::run(what, format == Output::Json),
        // Reconcile repairs this host's kernel state, so it always runs in-process.
        Command::Reconcile => {
            let report = Manager::open(config())?.reconcile_with(&mut progress())?;
            out.reconcile(&report)?;
            if !report.failures.is_empty() {
                anyhow::bail!(
                    "{} item(s) could not be restored (see above)",
                    report.failures.len()
                );
            }
            Ok(())
        }
        Command::Api(cmd) => {
            let mgr: Box<dyn Api> = match &cli.remote.endpoint {
                Some(endpoint) => Box::new(cli.remote.connect(endpoint)?),
                None => {
                    let m = Manager::open(config())?;
                    // In-process, `load image` takes registry flags; a daemon uses its own
                    // settings and signature policy.
                    if let ApiCommand::Load(LoadCmd::Image(i)) = &cmd {
                        m.set_image_settings(
                            i.registry.settings(&cli.state_dir, Some(&i.image_url))?,
                        );
                    }
                    Box::new(m)
                }
            };
            api_command(cmd, mgr.as_ref(), &out)
        }
    }
}

fn api_command(cmd: ApiCommand, mgr: &dyn Api, out: &output::Printer) -> Result<()> {
    match cmd {
        ApiCommand::Update {
            program_id,
            path,
            program,
            globals,
            set,
        } => {
            let r = mgr.update(
                program_id,
                apiary::UpdateSpec {
                    path,
                    program,
                    raw_globals: globals,
                    typed_globals: set,
                },
            )?;
            out.update(&r)
        }
        ApiCommand::Load(LoadCmd::File(f)) => {
            out.programs(&mgr.load(f.opts.into_spec(ObjectSource::Path(f.path), f.attach))?)
        }
        ApiCommand::Load(LoadCmd::Image(i)) => {
            let source = ObjectSource::Image {
                reference: i.image_url,
                pull_policy: i.pull_policy,
            };
            out.programs(&mgr.load(i.opts.into_spec(source, i.attach))?)
        }
        ApiCommand::Apply(a) => k8s::apply(a, mgr, out),
        ApiCommand::Delete(f) => k8s::delete(f, mgr, out),
        ApiCommand::Attach { program_id, target } => out.link(&mgr.attach(program_id, target)?),
        ApiCommand::Detach { link_id } => {
            mgr.detach(link_id)?;
            out.message(
                &format!("detached link {link_id}"),
                serde_json::json!({ "detached": link_id }),
            )
        }
        ApiCommand::Unload { program_ids, force } => {
            let done = mgr.unload(&program_ids, force)?;
            let ids: Vec<String> = done.iter().map(|i| i.to_string()).collect();
            out.message(
                &format!("unloaded program(s) {}", ids.join(", ")),
                serde_json::json!({ "unloaded": done }),
            )
        }
        ApiCommand::List { what } => match what {
            ListCmd::Programs { all, metadata } => {
                out.programs(&mgr.list_programs(all, &metadata.into_iter().collect())?)
            }
            ListCmd::Links { program } => out.links(&mgr.list_links(program)?),
            ListCmd::Maps { all } => out.maps(&mgr.list_maps(all)?),
            ListCmd::Chains => out.chains(&mgr.list_chains()?),
        },
        ApiCommand::Get { what } => match what {
            GetCmd::Applications => k8s::get_applications(mgr, out),
            GetCmd::Program { id } => out.program_detail(&mgr.get_program(id)?),
            GetCmd::Link { id } => out.link(&mgr.get_link(id)?),
            GetCmd::Chain { iface, hook, netns } => {
                let h = args::hook_ref(iface, &hook, netns).map_err(anyhow::Error::msg)?;
                out.chain(&mgr.get_chain(&h)?)
            }
        },
        ApiCommand::Map { what } => match what {
            MapCmd::Dump { map, limit } => out.map_dump(&mgr.dump_map(&map, limit)?),
        },
    }
}

fn inspect(out: &output::Printer, source: &str) -> Result<()> {
    let fetched = apiary::inspect(source)?;
    out.inspect(&fetched)
}

fn package(object: &std::path::Path, output: &str) -> Result<()> {
    let bytes = std::fs::read(object)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", object.display()))?;
    let name = object
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object")
        .trim_end_matches(".o")
        .trim_end_matches(".bpf");
    let mut pkg = apiary::package::Package::build(name, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", object.display()))?;
    // NAME.metrics.yaml beside the object (as `apiary build` finds it beside the source).
    let dir = object.parent().unwrap_or(std::path::Path::new(""));
    if let Some(decls) = ["yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{name}.metrics.{ext}")))
        .find(|p| p.is_file())
    {
        pkg.metrics = Some(apiary::metrics::Decls::read(&decls)?);
        eprintln!("metric declarations from {}", decls.display());
    }
    let path = if output == "table" {
        format!("{name}.package.json")
    } else {
        output.to_string()
    };
    let text = serde_json::to_string_pretty(&pkg)?;
    std::fs::write(&path, &text).map_err(|e| anyhow::anyhow!("cannot write {path}: {e}"))?;
    eprintln!(
        "wrote {path} ({} bytes; object {} bytes)",
        text.len(),
        bytes.len()
    );
    Ok(())
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C and SIGTERM set STOP instead of ending the process, so that what runs in the
/// foreground is stopped and cleaned up.
fn stop_on_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn build_spec(
    source: &std::path::Path,
    flags: &args::CompileFlags,
    out_dir: std::path::PathBuf,
) -> apiary::build::BuildSpec {
    apiary::build::BuildSpec {
        source: source.to_path_buf(),
        out_dir,
        includes: flags.includes.clone(),
        defines: flags.defines.clone(),
        btf: flags.btf.clone(),
        cache_dir: apiary::build::default_cache_dir(),
        clang: apiary::build::default_clang(),
    }
}

/// `apiary build`: -o names the output directory (the global flag's default means "here").
fn build(source: &std::path::Path, flags: &args::CompileFlags, output: &str) -> Result<()> {
    let out_dir = if output == "table" { "." } else { output };
    let built = apiary::build::build(&build_spec(source, flags, out_dir.into()))
        .map_err(apiary::Error::from)?;
    report_build(&built);
    Ok(())
}

fn report_build(b: &apiary::build::Built) {
    if !b.warnings.trim().is_empty() {
        eprint!("{}", b.warnings);
    }
    if let Some(t) = &b.header_event_type {
        eprintln!("event type from the header next to the source: struct {t}");
    }
    eprintln!(
        "compiled in {:.2}s: {} ({} bytes; {} without DWARF), {} ({} bytes)",
        b.compile_time.as_secs_f64(),
        b.object.display(),
        b.object_size,
        b.stripped_size,
        b.package.display(),
        b.package_size
    );
}

fn run_foreground(mut a: RunArgs, format: Output) -> Result<()> {
    // A C source is built into the cache first; what runs is its package.
    if apiary::build::is_c_source(&a.source) {
        let src = std::path::PathBuf::from(&a.source);
        let out_dir = apiary::build::run_out_dir(&apiary::build::default_cache_dir(), &src);
        let built = apiary::build::build(&build_spec(&src, &a.compile, out_dir))
            .map_err(apiary::Error::from)?;
        report_build(&built);
        // The package carries the event types its stripped object's DWARF held; a type named
        // with --event-type may be another one, which only the full object still has.
        // The declarations beside the source hold whichever of the two runs.
        if a.metrics_config.is_none() {
            a.metrics_config = apiary::build::metrics_config(&src);
        }
        let chosen = if a.event_type.is_some() {
            &built.object
        } else {
            &built.package
        };
        a.source = chosen.display().to_string();
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let spec = apiary::run::RunSpec {
        source: a.source,
        programs: a.programs,
        raw_globals: a.globals,
        typed_globals: a.set,
        targets: apiary_kernel::session::Targets {
            iface: a.iface,
            netns: a.netns,
            cgroup: a.cgroup,
        },
        event_type: a.event_type,
        duration: a.duration,
        dump_maps: a.dump_maps,
        interval: a.interval,
        json: format == Output::Json,
        metrics_config: a.metrics_config,
        otlp: a.otlp.config("apiary-run"),
    };
    // Bound before anything loads, so a taken port fails the run instead of its metrics.
    let metrics_listener = match a.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("--metrics {addr}: {e}"))?,
        ),
        None => None,
    };
    let mut hooks = apiary::run::RunHooks::default();
    if let Some(listener) = metrics_listener {
        hooks.on_metrics = Some(Box::new(
            move |m: std::sync::Arc<apiary::run::RunMetrics>| {
                let addr = listener.local_addr().ok();
                match apiary_api::server::metrics::serve_in_thread(
                    listener,
                    std::sync::Arc::new(move || m.text()),
                ) {
                    Ok(()) => {
                        if let Some(a) = addr {
                            eprintln!("serving metrics at http://{a}/metrics");
                        }
                    }
                    Err(e) => eprintln!("cannot serve metrics: {e}"),
                }
            },
        ));
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut note = |m: &str| eprintln!("{m}");
    let summary = apiary::run::run_with(
        &spec,
        &mut lock,
        &mut note,
        &|| STOP.load(std::sync::atomic::Ordering::SeqCst),
        hooks,
    )?;
    eprintln!(
        "{} event(s){}; detached and unloaded everything",
        summary.events,
        if summary.lost > 0 {
            format!(", {} lost", summary.lost)
        } else {
            String::new()
        }
    );
    Ok(())
}
