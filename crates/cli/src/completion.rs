//! `kiln completion SHELL` and `kiln man DIR`: shell completions
//! (clap_complete) and manual pages (clap_mangen), both generated from the
//! clap definitions, so they always match the binary.

use std::io::Write as _;
use std::path::PathBuf;

use clap::CommandFactory as _;

use crate::args::Cli;
use crate::args::{CompletionArgs, ManArgs};
use crate::failure::Failure;

/// `kiln completion SHELL`.
pub fn completion(args: &CompletionArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "kiln", &mut buf);
    std::io::stdout()
        .lock()
        .write_all(&buf)
        .map_err(|e| Failure::Other(anyhow::anyhow!("writing the completion script: {e}")))?;
    Ok(())
}

/// `kiln man DIR`.
pub fn man(args: &ManArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::Other(anyhow::anyhow!("creating {}: {e}", args.dir.display())))?;
    let mut written = Vec::new();
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    fn walk(
        cmd: &clap::Command,
        dir: &std::path::Path,
        written: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, written)?;
        }
        let page = clap_mangen::Man::new(cmd.clone())
            .date(crate::version::DATE)
            .source(format!("kiln {}", env!("CARGO_PKG_VERSION")))
            .manual("kiln manual");
        written.push(page.generate_to(dir)?);
        Ok(())
    }
    walk(&cmd, &args.dir, &mut written).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "writing manual pages into {}: {e}",
            args.dir.display()
        ))
    })?;
    let mut out = std::io::stdout().lock();
    written.sort();
    for p in written {
        let _ = writeln!(out, "{}", p.display());
    }
    Ok(())
}
