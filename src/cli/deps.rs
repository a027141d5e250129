//! `bootkmod deps NAME... [--kver K]`: what modprobe would load, from the indexes only.

use super::{print_json, Context};
use crate::engines::depmod::probe::{ShowOptions, Step, TreeIndexes};
use crate::exit::Exit;
use crate::model::root::running_release;
use anyhow::Result;

/// Show what `modprobe` would load for a module name, alias (pci:v...) or symbol:NAME,
/// in load order, like `modprobe --show-depends -d ROOT`: from the tree's .bin indexes
/// and the root's modprobe configuration (modprobe.d: aliases, softdep, blacklist,
/// install commands, options; the tree's modules.softdep; module options on
/// ROOT/proc/cmdline). No kmod needed. Exit 3 when a name resolves to nothing.
///
/// Examples:
///   bootkmod deps megaraid_sas
///   bootkmod --root /mnt/sysimage deps --kver 5.14.0-362.8.1.el9_3.x86_64 nvme
///   bootkmod deps 'pci:v00001000d0000005Dsv00001028sd00001F49bc01sc04i00'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DepsArgs {
    /// Module names, aliases or symbol:NAME.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    /// Kernel release whose tree to read (default: the running kernel).
    #[arg(long, value_name = "KVER")]
    pub kver: Option<String>,

    /// Like modprobe --ignore-install: show the named module's own file, ignoring its
    /// install command and soft dependencies.
    #[arg(long)]
    pub ignore_install: bool,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    name: &'a str,
    found: bool,
    steps: Vec<Step>,
}

pub fn run(ctx: &Context, args: DepsArgs) -> Result<Exit> {
    let release = args.kver.unwrap_or_else(running_release);
    let indexes = TreeIndexes::load(&ctx.root, &release)?;
    for w in &indexes.config.warnings {
        eprintln!("bootkmod: warning: {w}");
    }
    let opts = ShowOptions { ignore_install: args.ignore_install };
    let mut answers = Vec::new();
    for name in &args.names {
        let steps = indexes.show_depends_with(name, opts)?;
        answers.push(Answer { name, found: steps.is_some(), steps: steps.unwrap_or_default() });
    }
    let exit = if answers.iter().all(|a| a.found) { Exit::Ok } else { Exit::Negative };
    if ctx.json {
        print_json(&answers)?;
        return Ok(exit);
    }
    for a in &answers {
        if !a.found {
            eprintln!(
                "bootkmod: module {} not found in directory {}",
                a.name,
                indexes.dir.display()
            );
        }
        for step in &a.steps {
            // modprobe's format, trailing space (where options would go) included.
            println!("{}", step.line());
        }
    }
    Ok(exit)
}
