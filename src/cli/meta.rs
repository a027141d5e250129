//! `bootkmod completions SHELL` and `bootkmod man`: generated from the clap definition,
//! so they can never drift from the real options.

use super::Cli;
use crate::exit::Exit;
use clap::CommandFactory;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff) on stdout: `bootkmod man > bootkmod.1`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<Exit> {
    clap_complete::generate(args.shell, &mut Cli::command(), "bootkmod", &mut std::io::stdout());
    Ok(Exit::Ok)
}

pub fn man(_: ManArgs) -> anyhow::Result<Exit> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(Exit::Ok)
}
