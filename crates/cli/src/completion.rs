//! `kiln completion SHELL` and `kiln man DIR`: shell completions
//! (clap_complete) and manual pages (clap_mangen), both generated from the
//! clap definitions, so they always match the binary.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _};

use crate::Failure;
use crate::args::Cli;

/// `kiln completion`.
#[derive(Debug, Args)]
#[command(long_about = "Print a completion script for SHELL on stdout.\n\n\
bash: `source <(kiln completion bash)`, or save it as \
/usr/share/bash-completion/completions/kiln; zsh: save it as `_kiln` in a directory of $fpath; \
fish: save it as ~/.config/fish/completions/kiln.fish.")]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `kiln man`.
#[derive(Debug, Args)]
#[command(
    long_about = "Write the manual pages (roff) into DIR: kiln.1 and one page per \
command (kiln-build.1, kiln-builds-ls.1, …). Read one with `man -l DIR/kiln-build.1`, or \
install them under /usr/local/share/man/man1."
)]
pub struct ManArgs {
    /// The directory (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

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
