//! `apiary completions SHELL` and `apiary man`: generated from the same clap grammar the binary
//! parses, so they never drift from it. scripts/setup.sh installs them where shells and man
//! look.

use anyhow::{Context, Result};
use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = crate::args::Cli::command();
    clap_complete::generate(shell, &mut cmd, "apiary", &mut std::io::stdout());
    Ok(())
}

/// `output` is the global -o: its default ("table") means stdout, anything else a directory.
pub fn man(output: &str) -> Result<()> {
    let cmd = crate::args::Cli::command();
    if output == "table" {
        let mut out = std::io::stdout().lock();
        return clap_mangen::Man::new(cmd)
            .render(&mut out)
            .context("writing the man page");
    }
    let dir = std::path::Path::new(output);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {output}"))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing man pages into {output}"))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    eprintln!("wrote {} man page(s) into {output}", pages.len());
    Ok(())
}
