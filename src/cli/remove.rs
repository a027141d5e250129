//! `bootkmod remove NAME...`: take installed drivers out of every kernel (links, files,
//! depmod) and restore the images bootkmod changed; drop them from the ledger.

use super::{print_json, Context};
use crate::exit::Exit;
use crate::operations::remove;
use anyhow::Result;

/// Remove drivers bootkmod installed: unlink from weak-updates/, delete from extra/,
/// run depmod, restore every changed initramfs from its backup, forget them.
///
/// Examples:
///   bootkmod remove mydrv
///   bootkmod remove --root /mnt/sysimage hba --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RemoveArgs {
    /// Module names as installed (`-` and `_` are the same).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

pub fn run(ctx: &Context, args: RemoveArgs) -> Result<Exit> {
    let report = remove::remove(&ctx.root, &args.names)?;
    if ctx.json {
        print_json(&report)?;
    } else {
        if let Some(r) = &report.recovered {
            println!("completed the interrupted {r}");
        }
        for n in &report.removed {
            println!("removed {n}");
        }
        for k in &report.depmod {
            println!("{k:<28} depmod: indexes rewritten");
        }
        for i in &report.restored {
            println!("restored {i}");
        }
    }
    Ok(Exit::Ok)
}
