//! The `apiary` binary: parse flags, validate them into typed requests, call the manager, print.

mod agent;
mod args;
mod daemon;
mod image;
mod k8s;
mod output;

use anyhow::Result;
use apiary::{Api, Config, Manager, ObjectSource};
use args::{ApiCommand, Cli, Command, GetCmd, ListCmd, LoadCmd, MapCmd, Output, RunArgs};
use clap::Parser;

fn main() {
    // The daemon's loader process (`apiary serve` starts this binary again with this hidden
    // argument): serve loads on stdin before anything else of the CLI is set up.
    if std::env::args_os().nth(1).as_deref() == Some(apiary_kernel::worker::WORKER_ARG.as_ref()) {
        std::process::exit(apiary_kernel::worker::serve());
    }
    // Die quietly on a closed pipe (`apiary list | head`), like other command-line tools.
    // SAFETY: restoring the default disposition of a signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
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

fn run(cli: Cli) -> Result<()> {
    // `package` writes a file named by -o; everything else prints in the format -o names.
    let format: Output = match &cli.command {
        Command::Package { .. } => Output::Table,
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
        Command::K8s { what } => k8s::run(what),
        Command::Run(args) => run_foreground(args, format),
        Command::Serve(a) => daemon::serve(a, cli.state_dir.clone(), cli.bpffs.clone()),
        Command::Agent(a) => agent::run(a, cli.state_dir.clone(), cli.bpffs.clone()),
        // Reconcile repairs this host's kernel state, so it always runs in-process.
        Command::Reconcile => {
            let report = Manager::open(config())?.reconcile()?;
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
    let pkg = apiary::package::Package::build(name, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", object.display()))?;
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

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn run_foreground(a: RunArgs, format: Output) -> Result<()> {
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
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut note = |m: &str| eprintln!("{m}");
    let summary = apiary::run::run(&spec, &mut lock, &mut note, &|| {
        STOP.load(std::sync::atomic::Ordering::SeqCst)
    })?;
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
