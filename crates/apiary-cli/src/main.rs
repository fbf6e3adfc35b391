//! The `apiary` binary: parse flags, validate them into typed requests, call the manager, print.

mod args;
mod output;

use anyhow::Result;
use apiary::{Config, LoadSpec, Manager, ObjectSource};
use args::{Cli, Command, GetCmd, ListCmd, LoadCmd, MapCmd};
use clap::Parser;
use std::collections::BTreeMap;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let out = output::Printer::new(cli.output);
    let mgr = Manager::open(Config { state_dir: cli.state_dir, bpffs: cli.bpffs })?;
    match cli.command {
        Command::Load(LoadCmd::File(f)) => {
            let spec = LoadSpec {
                source: ObjectSource::Path(f.path),
                programs: f.programs.into_iter().map(|(t, n)| (Some(t), n)).collect(),
                raw_globals: f.globals,
                typed_globals: f.set,
                metadata: f.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                map_owner_id: f.map_owner_id,
                attach: f.attach.map(|a| a.into_spec()),
            };
            out.programs(&mgr.load(spec)?)
        }
        Command::Attach { program_id, target } => out.link(&mgr.attach(program_id, target.into_spec())?),
        Command::Detach { link_id } => {
            mgr.detach(link_id)?;
            out.message(&format!("detached link {link_id}"), serde_json::json!({ "detached": link_id }))
        }
        Command::Unload { program_ids, force } => {
            let done = mgr.unload(&program_ids, force)?;
            let ids: Vec<String> = done.iter().map(|i| i.to_string()).collect();
            out.message(&format!("unloaded program(s) {}", ids.join(", ")), serde_json::json!({ "unloaded": done }))
        }
        Command::List { what } => match what {
            ListCmd::Programs { all, metadata } => {
                out.programs(&mgr.list_programs(all, &metadata.into_iter().collect())?)
            }
            ListCmd::Links { program } => out.links(&mgr.list_links(program)?),
            ListCmd::Maps { all } => out.maps(&mgr.list_maps(all)?),
        },
        Command::Get { what } => match what {
            GetCmd::Program { id } => out.program_detail(&mgr.get_program(id)?),
            GetCmd::Link { id } => out.link(&mgr.get_link(id)?),
        },
        Command::Map { what } => match what {
            MapCmd::Dump { map, limit } => out.map_dump(&mgr.dump_map(&map, limit)?),
        },
    }
}
