//! `bootkmod remove NAME...`: take installed drivers out of every kernel (links, files,
//! depmod) and restore the images bootkmod changed; drop them from the ledger.
//! `bootkmod remove --kernel KVER`: forget a kernel that is being removed (what the
//! kernel-install plugin runs). `--dry-run` reports the same and changes nothing.

use super::{print_json, Context};
use crate::exit::Exit;
use crate::operations::remove::{self, ForgetReport, RemoveReport};
use anyhow::Result;

/// Remove drivers bootkmod installed: unlink from weak-updates/, delete from extra/,
/// run depmod, restore every changed initramfs from its backup, forget them.
///
/// With --kernel KVER, remove no driver but bootkmod's traces for a kernel that is
/// being removed: its weak-updates/ links (and the directories left empty), its
/// initramfs backup, its ledger entry; status stops listing it. The drivers stay for
/// the other kernels. Safe to run for a kernel bootkmod never saw or whose module tree
/// is already gone (kernel-install runs it on every kernel removal).
///
/// Examples:
///   bootkmod remove mydrv
///   bootkmod remove --root /mnt/sysimage hba --json
///   bootkmod remove --dry-run mydrv                    (say what would change)
///   bootkmod remove --kernel 6.1.0-55-amd64            (what kernel-install runs)
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RemoveArgs {
    /// Module names as installed (`-` and `_` are the same).
    #[arg(required_unless_present = "kernel", value_name = "NAME")]
    pub names: Vec<String>,

    /// Forget this kernel (being removed) instead of removing drivers.
    #[arg(long, value_name = "KVER", conflicts_with = "names")]
    pub kernel: Option<String>,

    /// Report what would be done, in the same form; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Context, args: RemoveArgs) -> Result<Exit> {
    if let Some(kernel) = &args.kernel {
        let report = remove::forget_kernel(&ctx.root, kernel, args.dry_run)?;
        if ctx.json {
            print_json(&report)?;
        } else {
            render_forget(&report);
        }
        return Ok(Exit::Ok);
    }
    let report = remove::remove(&ctx.root, &args.names, args.dry_run)?;
    if ctx.json {
        print_json(&report)?;
    } else {
        render(&report);
    }
    for (k, why) in &report.failures {
        eprintln!(
            "bootkmod: kernel {k} not completed: {why} (fix it, then run bootkmod install --refresh --kver {k})"
        );
    }
    Ok(if report.failures.is_empty() { Exit::Ok } else { Exit::Negative })
}

fn render(report: &RemoveReport) {
    if report.dry_run {
        println!("dry run: nothing was changed; a real run would do this:");
    }
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
    for i in &report.taken_out {
        println!("took the drivers out of {i} (rebuilt by another tool since; not reverted)");
    }
    for i in &report.left_as_is {
        println!("left {i} as it is (rebuilt by another tool since, without the drivers)");
    }
    for (k, why) in &report.failures {
        println!("{k:<28} NOT COMPLETED: {why}");
    }
}

fn render_forget(report: &ForgetReport) {
    if report.dry_run {
        println!("dry run: nothing was changed; a real run would do this:");
    }
    if let Some(r) = &report.recovered {
        println!("completed the interrupted {r}");
    }
    let k = &report.kernel;
    if !report.known && report.unlinked.is_empty() && report.backup.is_none() {
        println!("{k:<28} nothing of bootkmod's for this kernel");
        return;
    }
    for l in &report.unlinked {
        println!("{k:<28} unlinked {}", l.display());
    }
    for d in &report.pruned {
        println!("{k:<28} removed empty {}", d.display());
    }
    if report.depmod {
        println!("{k:<28} depmod: indexes rewritten");
    }
    if let Some(b) = &report.backup {
        println!("{k:<28} removed image backup {}", b.display());
    }
    for m in &report.kept {
        println!("{k:<28} kept {} (built for this kernel; other kernels use it)", m.display());
    }
    println!("{k:<28} forgotten");
}
