//! `apiary rollout status|pause|resume|undo APP [-n NS]`: a staged rollout, as the operator
//! records it in the application's status.

use anyhow::Result;
use apiary_k8s::operator::control::{self, Target};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum RolloutCmd {
    /// The rollout: phase, revisions, and per node its revision, switch time and gate.
    Status(RolloutTarget),
    /// Start no new batch (nodes in flight finish their gate).
    Pause(RolloutTarget),
    /// Go on with the next batch.
    Resume(RolloutTarget),
    /// Put the current revision's bytecode and global data back in the spec: every node
    /// returns to it.
    Undo(RolloutTarget),
}

#[derive(Args, Debug)]
pub struct RolloutTarget {
    /// The application (a ClusterBpfApplication, or with -n a BpfApplication).
    pub app: String,
    /// The BpfApplication's namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig to use (default: in-cluster, then the usual lookup).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

pub fn run(cmd: RolloutCmd, json: bool) -> Result<()> {
    let t = match &cmd {
        RolloutCmd::Status(t)
        | RolloutCmd::Pause(t)
        | RolloutCmd::Resume(t)
        | RolloutCmd::Undo(t) => t,
    };
    crate::k8s::check_kubeconfig(t.kubeconfig.as_deref())?;
    let target = Target {
        name: t.app.clone(),
        namespace: t.namespace.clone(),
    };
    let kc = t.kubeconfig.as_deref();
    match &cmd {
        RolloutCmd::Status(_) => {
            let ro = control::blocking(kc, |c| async move { control::status(&c, &target).await })?;
            print_status(ro.as_ref(), json)?;
        }
        RolloutCmd::Pause(_) => {
            control::blocking(kc, |c| async move {
                control::set_paused(&c, &target, true).await
            })?;
            println!("paused");
        }
        RolloutCmd::Resume(_) => {
            control::blocking(kc, |c| async move {
                control::set_paused(&c, &target, false).await
            })?;
            println!("resumed");
        }
        RolloutCmd::Undo(_) => {
            let rev = control::blocking(kc, |c| async move { control::undo(&c, &target).await })?;
            println!("rolling back to revision {rev}");
        }
    }
    Ok(())
}

fn print_status(ro: Option<&apiary_k8s::crd::rollout::RolloutStatus>, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&ro)?);
        return Ok(());
    }
    let Some(ro) = ro else {
        println!("no rollout recorded (no spec.rollout, or no operator running)");
        return Ok(());
    };
    println!("phase:    {:?}", ro.phase);
    println!("current:  {}", ro.current_revision);
    println!("target:   {}", ro.target_revision);
    if let Some(m) = &ro.message {
        println!("message:  {m}");
    }
    if !ro.nodes.is_empty() {
        println!(
            "{:<28} {:<14} {:>5}  {:<22} GATE",
            "NODE", "REVISION", "BATCH", "SWITCHED"
        );
        for (name, n) in &ro.nodes {
            let at = n
                .switched_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            println!(
                "{:<28} {:<14} {:>5}  {:<22} {}",
                name,
                n.revision,
                n.batch,
                at,
                n.gate.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}
