//! `bootkmod remove NAME...`: take installed drivers out of every kernel (links, files,
//! depmod) and restore the images bootkmod changed; drop them from the ledger.
//! `bootkmod remove --kernel KVER`: forget a kernel that is being removed (what the
//! kernel-install plugin runs). `--dry-run` reports the same and changes nothing.

use super::{print_json, Context};
use crate::exit::Exit;
use crate::operations::remove::{
    self, BuildSelector, ForgetReport, RemoveBuildsReport, RemoveReport,
};
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
/// With --version V or --sha256 S, remove one build of the driver and choose again per
/// kernel among the builds left (links, depmod and images follow); refused with exit 3
/// and nothing changed when a kernel would lose the usable build of a root-critical
/// driver it has, unless --force. --unused removes the builds no kernel uses.
///
/// Examples:
///   bootkmod remove mydrv
///   bootkmod remove mydrv --version 07.725.01.00       (one build; the others stay)
///   bootkmod remove --unused --dry-run                 (list the builds no kernel uses)
///   bootkmod remove --root /mnt/sysimage hba --json
///   bootkmod remove --dry-run mydrv                    (say what would change)
///   bootkmod remove --kernel 6.1.0-55-amd64            (what kernel-install runs)
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, disable_version_flag = true)]
pub struct RemoveArgs {
    /// Module names as installed (`-` and `_` are the same).
    #[arg(required_unless_present_any = ["kernel", "unused"], value_name = "NAME")]
    pub names: Vec<String>,

    /// Forget this kernel (being removed) instead of removing drivers.
    #[arg(long, value_name = "KVER", conflicts_with = "names")]
    pub kernel: Option<String>,

    /// Remove only the build(s) of NAME with this version (modinfo's version=), then
    /// choose again per kernel among the builds left.
    #[arg(long, value_name = "V", conflicts_with_all = ["kernel", "sha256", "unused"])]
    pub version: Option<String>,

    /// Remove only the build of NAME with this sha256 (or an unambiguous prefix).
    #[arg(long, value_name = "SHA256", conflicts_with_all = ["kernel", "unused"])]
    pub sha256: Option<String>,

    /// Remove every build no kernel uses (of NAME..., or of every driver).
    #[arg(long, conflicts_with = "kernel")]
    pub unused: bool,

    /// With --version/--sha256: remove even when a kernel would lose the usable build
    /// of a root-critical driver it has now.
    #[arg(long)]
    pub force: bool,

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
    let selector = match (&args.version, &args.sha256, args.unused) {
        (Some(v), _, _) => Some(BuildSelector::Version(v.clone())),
        (_, Some(s), _) => Some(BuildSelector::Sha256(s.to_ascii_lowercase())),
        (_, _, true) => Some(BuildSelector::Unused),
        _ => None,
    };
    if let Some(selector) = selector {
        if selector != BuildSelector::Unused && args.names.len() != 1 {
            anyhow::bail!("--version and --sha256 take exactly one driver NAME");
        }
        let report =
            remove::remove_builds(&ctx.root, &args.names, &selector, args.force, args.dry_run)?;
        if ctx.json {
            print_json(&report)?;
        } else {
            render_builds(&report);
        }
        if !report.refused.is_empty() {
            for why in &report.refused {
                eprintln!("bootkmod: refused: {why}");
            }
            eprintln!("bootkmod: nothing was changed (--force removes anyway)");
            return Ok(Exit::Negative);
        }
        for (k, why) in &report.failures {
            eprintln!(
                "bootkmod: kernel {k} not completed: {why} (fix it, then run bootkmod install --refresh --kver {k})"
            );
        }
        return Ok(if report.failures.is_empty() { Exit::Ok } else { Exit::Negative });
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

fn render_builds(report: &RemoveBuildsReport) {
    if report.dry_run {
        println!("dry run: nothing was changed; a real run would do this:");
    }
    if !report.refused.is_empty() {
        println!("REFUSED, nothing changed; per kernel it would have been:");
    }
    if let Some(r) = &report.recovered {
        println!("completed the interrupted {r}");
    }
    if report.removed.is_empty() {
        println!("no build to remove");
    }
    for b in &report.removed {
        println!("removed build {} of {}", b.sha256, b.name);
    }
    for k in &report.kernels {
        for (name, m) in &k.record.modules {
            let what = match (m.usable_on_boot(), &m.build) {
                (true, Some(sha)) => format!("served by build {sha} ({:?})", m.placement),
                (true, None) => format!("{:?}", m.placement),
                (false, _) => {
                    format!("NO USABLE BUILD: {}", m.reasons.first().map_or("", String::as_str))
                }
            };
            println!("{:<28} {name}: {what}", k.release);
        }
        if k.depmod {
            println!("{:<28} depmod: indexes rewritten", k.release);
        }
        if let Some(why) = &k.failure {
            println!("{:<28} NOT COMPLETED: {why}", k.release);
        }
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
