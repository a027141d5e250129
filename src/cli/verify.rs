//! `bootkmod verify [--json]`: re-hash every module, stored copy, weak-updates link and
//! initramfs image the ledger vouches for; list the drift. Exit 3 when anything drifted.

use super::{print_json, Context};
use crate::engines::status;
use crate::exit::Exit;
use crate::model::ledger;
use anyhow::Result;

/// Re-hash what bootkmod installed and report anything tampered with or replaced, after
/// what `status` reports first (an interrupted or failed operation, a kernel not
/// completed, a driver placed but not in its image, an unrecorded link).
///
/// Examples:
///   bootkmod verify
///   bootkmod verify --root /mnt/sysimage --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {}

pub fn run(ctx: &Context, _args: VerifyArgs) -> Result<Exit> {
    let ledger = ledger::load(&ctx.root)?;
    // What status reports first is drift too: no state a crash or an error leaves is "ok".
    let kernels = status::status(&ctx.root, &ledger)?;
    let mut drift: Vec<status::Drift> = status::alerts(&ctx.root, &ledger, &kernels)
        .into_iter()
        .map(|a| status::Drift {
            problem: match &a.kernel {
                Some(k) => format!("kernel {k}: {} (next: {})", a.problem, a.next),
                None => format!("{} (next: {})", a.problem, a.next),
            },
            path: a.path,
        })
        .collect();
    drift.extend(status::verify(&ctx.root, &ledger)?);
    if ctx.json {
        print_json(&drift)?;
    } else if drift.is_empty() {
        println!(
            "ok: {} module(s) and {} kernel(s) as recorded",
            ledger.modules.len(),
            ledger.kernels.len()
        );
    } else {
        for d in &drift {
            println!("DRIFT {}: {}", d.path.display(), d.problem);
        }
    }
    Ok(if drift.is_empty() { Exit::Ok } else { Exit::Negative })
}
