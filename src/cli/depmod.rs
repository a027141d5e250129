//! `bootkmod depmod [KVER] [--dry-run]`: write kmod-compatible module indexes.

use super::{print_json, Context};
use crate::exit::Exit;
use crate::model::root::running_release;
use crate::operations::depmod;
use anyhow::Result;

/// Write the module indexes (modules.dep, modules.alias, ... and their .bin forms) of a
/// kernel's module tree, byte-identical to kmod's depmod, all files or none.
///
/// Honours depmod.d (search, override, external, exclude) from the root; symlinks such
/// as weak-updates/ are followed inside the root.
///
/// Examples:
///   bootkmod depmod 6.1.0-56-amd64
///   bootkmod depmod --root /mnt/sysimage 5.14.0-362.8.1.el9_3.x86_64
///   bootkmod depmod --dry-run --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DepmodArgs {
    /// Kernel release (default: the running kernel).
    #[arg(value_name = "KVER")]
    pub kver: Option<String>,

    /// Compute everything, write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Context, args: DepmodArgs) -> Result<Exit> {
    let release = args.kver.unwrap_or_else(running_release);
    let report = depmod::run(&ctx.root, &release, args.dry_run)?;
    for w in &report.warnings {
        eprintln!("bootkmod: warning: {w}");
    }
    if ctx.json {
        print_json(&report)?;
    } else {
        let what = if report.dry_run {
            format!("would write {} index files", report.files.len())
        } else {
            format!(
                "wrote {} of {} index files ({} unchanged)",
                report.written.len(),
                report.files.len(),
                report.files.len() - report.written.len()
            )
        };
        println!(
            "{what} for {} modules ({} symbols) in {}",
            report.modules,
            report.symbols,
            report.dir.display()
        );
    }
    Ok(Exit::Ok)
}
