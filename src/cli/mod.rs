//! The command line: argument parsing, logging setup, exit codes. One file per command;
//! each calls the library and renders text or JSON. No logic of its own.

mod check;
mod demo;
mod depmod;
mod deps;
mod doctor;
mod dud;
mod info;
mod initramfs;
mod inject;
mod install;
mod meta;
mod remove;
pub(crate) mod sign;
mod status;
mod verify;

use crate::exit::Exit;
use crate::model::root::Root;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Verify prebuilt storage kernel modules and get them into the boot path, without a
/// compiler.
///
/// Start with `bootkmod demo`: it runs the main flow on generated sample modules, with no
/// root and no installed kernel. Exit codes: 0 ok, 1 error, 2 usage, 3 checked and found
/// incompatible or not present.
///
/// Long work (reading or rebuilding a large image) draws a progress line on stderr when
/// it is a terminal; BOOTKMOD_PROGRESS=1 forces it on, =0 off.
#[derive(Debug, Parser)]
#[command(name = "bootkmod", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The system to read and change: `/`, or a tree such as /mnt/sysimage.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more to stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Info(info::InfoArgs),
    Check(check::CheckArgs),
    Initramfs(initramfs::InitramfsArgs),
    Inject(inject::InjectArgs),
    Demo(demo::DemoArgs),
    Depmod(depmod::DepmodArgs),
    Deps(deps::DepsArgs),
    Doctor(doctor::DoctorArgs),
    Install(install::InstallArgs),
    Status(status::StatusArgs),
    Verify(verify::VerifyArgs),
    Remove(remove::RemoveArgs),
    Sign(sign::SignArgs),
    Dud(dud::DudArgs),
    Completions(meta::CompletionsArgs),
    Man(meta::ManArgs),
}

/// Parse, run, and map the outcome to an exit code. Errors print as one line on stderr.
pub fn main() -> Exit {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage { Exit::Usage } else { Exit::Ok };
        }
    };
    init_logging(cli.verbose);
    let ctx = Context { root: Root::new(&cli.root), json: cli.json, verbose: cli.verbose > 0 };
    let result = match cli.command {
        Command::Info(args) => info::run(&ctx, args),
        Command::Check(args) => check::run(&ctx, args),
        Command::Initramfs(args) => initramfs::run(&ctx, args),
        Command::Inject(args) => inject::run(&ctx, args),
        Command::Demo(args) => demo::run(&ctx, args),
        Command::Depmod(args) => depmod::run(&ctx, args),
        Command::Deps(args) => deps::run(&ctx, args),
        Command::Doctor(args) => doctor::run(&ctx, args),
        Command::Install(args) => install::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::Remove(args) => remove::run(&ctx, args),
        Command::Sign(args) => sign::run(&ctx, args),
        Command::Dud(args) => dud::run(&ctx, args),
        Command::Completions(args) => meta::completions(args),
        Command::Man(args) => meta::man(args),
    };
    match result {
        Ok(exit) => exit,
        // `bootkmod doctor | head` is not an error: the reader had enough.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Exit::Ok
        }
        Err(e) => {
            eprintln!("bootkmod: {e:#}");
            Exit::Error
        }
    }
}

/// What every command gets from the global options.
pub struct Context {
    pub root: Root,
    pub json: bool,
    /// `-v` given: reports list everything (every reason of a refusal), not a summary.
    pub verbose: bool,
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    use std::io::Write;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
