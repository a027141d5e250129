//! `bootkmod install MODULE... [--root-critical]` and `bootkmod install --refresh
//! [--kver K]`: place prebuilt modules for every installed kernel they fit (extra/,
//! weak-updates/, depmod, initramfs), recorded in the ledger. Text or `--json`.
//! Exit 0 when done; 1 on error, when no kernel could be completed, or (with
//! `--refresh`) when a root-critical driver would be missing from a kernel and the policy
//! is `refuse`; 3 when done but a kernel is at risk or could not be completed (the
//! others went on). `--dry-run` reports the same and changes nothing.

use super::{print_json, Context};
use crate::exit::Exit;
use crate::model::ledger::{ImageMethod, Placement};
use crate::operations::install::{self, InstallOptions, InstallReport};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// Install prebuilt modules into every installed kernel they are compatible with.
///
/// Each module goes to lib/modules/<its kernel>/extra/<name>/ (RHEL's layout), is checked
/// against every kernel under ROOT with the kernel loader's rules, and is linked into
/// weak-updates/ where it would load. Where it would not, a locally built module of the
/// same name (akmods, DKMS) is used if compatible. depmod runs for each changed kernel,
/// and each kernel's initramfs gets the usable drivers: injected into the existing image
/// (the default), or, with --regenerate, rebuilt by the target's own dracut (chroot
/// ROOT dracut --force IMAGE KVER), whose 90bootkmod module carries them.
/// Runs serialize on a lock in ROOT/var/lib/bootkmod; an interrupted run is completed
/// by the next one.
///
/// Several builds of one driver are kept side by side (one per kernel build or kABI
/// stream, and updates): per kernel, its own build when it loads, else the newest
/// (rpm version order) that loads is linked. Never worse off: an install that would
/// leave a kernel without the usable build of a root-critical driver it has, or a new
/// build no installed kernel would take, is refused with exit 3 and nothing changed,
/// unless --force. --dry-run shows the per-kernel choice.
///
/// Examples:
///   bootkmod install ./mydrv.ko --root-critical
///   bootkmod install --root /mnt/sysimage ./hba.ko.xz --json
///   bootkmod install --root /mnt/sysimage --regenerate --root-critical ./hba.ko
///   bootkmod install --dry-run ./mydrv.ko              (say what would change)
///   bootkmod install --refresh --kver 6.1.0-57-amd64   (what kernel-install runs)
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InstallArgs {
    /// Module files (.ko, .ko.xz, .ko.zst, .ko.gz).
    #[arg(value_name = "MODULE", required_unless_present = "refresh")]
    pub modules: Vec<PathBuf>,

    /// The modules are needed to mount root: a kernel without them is at risk.
    #[arg(long)]
    pub root_critical: bool,

    /// Install nothing new: re-evaluate the installed modules for the kernels present.
    #[arg(long, conflicts_with_all = ["modules", "root_critical"])]
    pub refresh: bool,

    /// With --refresh: only this kernel (repeatable).
    #[arg(long, value_name = "KVER", requires = "refresh")]
    pub kver: Vec<String>,

    /// Rebuild each image that needs the drivers with the target's own dracut (chrooted
    /// into ROOT unless ROOT is /) instead of injecting them into the existing image.
    /// Needs dracut and bootkmod's 90bootkmod dracut module installed in the target.
    #[arg(long)]
    pub regenerate: bool,

    /// Report what would be done, in the same form; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Install even when a kernel would lose the usable build of a root-critical driver
    /// it has now, or when a new build would serve no installed kernel.
    #[arg(long, conflicts_with = "refresh")]
    pub force: bool,

    /// Sign each MODULE with this RSA key before it is placed (as `bootkmod sign` does;
    /// a signature already there is replaced). Needs --sign-cert.
    #[arg(long, value_name = "KEY", requires = "sign_cert", conflicts_with = "refresh")]
    pub sign_key: Option<PathBuf>,

    /// The certificate of --sign-key, as the kernel will know it (enrolled in MOK).
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,

    /// The digest --sign-key signs.
    #[arg(long, value_enum, default_value_t = super::sign::HashArg::Sha256, requires = "sign_key")]
    pub sign_hash: super::sign::HashArg,
}

pub fn run(ctx: &Context, args: InstallArgs) -> Result<Exit> {
    let opts = InstallOptions {
        root_critical: args.root_critical,
        images: if args.regenerate { ImageMethod::Regenerate } else { ImageMethod::Inject },
        dry_run: args.dry_run,
        force: args.force,
        signer: match (&args.sign_key, &args.sign_cert) {
            (Some(key), Some(cert)) => {
                Some(super::sign::load_signer(key, cert, args.sign_hash.into())?)
            }
            _ => None,
        },
    };
    let report = if args.refresh {
        install::refresh_kernels(&ctx.root, &args.kver, &opts)?
    } else {
        install::install(&ctx.root, &args.modules, &opts)?
    };
    if ctx.json {
        print_json(&report)?;
    } else {
        render(&mut std::io::stdout().lock(), &report)?;
    }
    if !report.refused.is_empty() {
        // Refused before anything changed (a dry run says it would be).
        for why in &report.refused {
            eprintln!("bootkmod: refused: {why}");
        }
        eprintln!("bootkmod: nothing was changed (--force installs anyway)");
        return Ok(Exit::Negative);
    }
    for warning in &report.warnings {
        eprintln!("bootkmod: warning: {warning}");
    }
    let failed: Vec<&str> = report
        .kernels
        .iter()
        .filter_map(|k| k.failure.as_ref().map(|_| k.release.as_str()))
        .collect();
    for k in report.kernels.iter().filter(|k| k.failure.is_some()) {
        eprintln!(
            "bootkmod: kernel {} not completed: {} (fix it, then run bootkmod install --refresh --kver {})",
            k.release,
            k.failure.as_deref().unwrap_or_default(),
            k.release
        );
    }
    // Policy gates the automation (kernel-install runs --refresh for a new kernel); an
    // admin's own install reports the risk with exit 3 instead.
    if let Some(refusal) = report.refusal().filter(|_| args.refresh) {
        eprintln!("bootkmod: {refusal}");
        return Ok(Exit::Error);
    }
    // Nothing could be done: every kernel failed.
    if !failed.is_empty() && failed.len() == report.kernels.len() {
        return Ok(Exit::Error);
    }
    let at_risk = report.kernels.iter().any(|k| !k.at_risk.is_empty());
    if at_risk {
        for risk in report.kernels.iter().flat_map(|k| &k.at_risk) {
            eprintln!("bootkmod: warning: {risk}");
        }
    }
    Ok(if at_risk || !failed.is_empty() { Exit::Negative } else { Exit::Ok })
}

fn render(out: &mut impl Write, report: &InstallReport) -> std::io::Result<()> {
    if report.dry_run {
        writeln!(out, "dry run: nothing was changed; a real run would do this:")?;
    }
    if let Some(r) = &report.recovered {
        writeln!(out, "completed the interrupted {r}")?;
    }
    if !report.refused.is_empty() {
        writeln!(out, "REFUSED, nothing changed; per kernel it would have been:")?;
    }
    for m in &report.installed {
        for b in &m.builds {
            let verb = if report.refused.is_empty() { "installed" } else { "not installed" };
            writeln!(out, "{verb} {} {} -> {}", m.name, b.label(), b.path.display())?;
        }
    }
    for p in &report.restored {
        writeln!(out, "restored {} from the store (it was missing or altered)", p.display())?;
    }
    for k in &report.kernels {
        for (name, m) in &k.record.modules {
            let what = match m.placement {
                Placement::Own => "own kernel, in extra/".to_string(),
                Placement::WeakUpdates => format!(
                    "compatible, linked {}",
                    m.link.as_ref().map_or(String::new(), |l| l.display().to_string())
                ),
                Placement::LocalFallback => format!(
                    "prebuilt refused ({}); using the locally built {}",
                    m.reasons.first().map_or("", String::as_str),
                    m.fallback.as_ref().map_or(String::new(), |f| f.display().to_string())
                ),
                Placement::Refused => {
                    format!("REFUSED: {}", m.reasons.first().map_or("", String::as_str))
                }
            };
            writeln!(out, "{:<28} {name}: {what}", k.release)?;
            let build = m.build.as_deref().and_then(|sha| {
                report.installed.iter().chain(&report.drivers).find_map(|r| r.build(sha))
            });
            if let Some(b) = build.filter(|_| m.usable_on_boot()) {
                writeln!(out, "{:<28}   build {}", "", b.label())?;
            }
            for p in &m.passed_over {
                writeln!(out, "{:<28}   not taken: {}", "", p.label())?;
            }
        }
        if k.depmod {
            writeln!(out, "{:<28} depmod: indexes rewritten", k.release)?;
        }
        if let Some(failure) = &k.failure {
            writeln!(out, "{:<28} NOT COMPLETED: {failure}", k.release)?;
            continue;
        }
        if let Some(image) = &k.record.image {
            // "updated"/"regenerated" only when the image's bytes changed.
            let state = match (image.updated, image.method, &image.note, k.image_changed) {
                (true, _, Some(note), _) => note.clone(),
                (true, Some(ImageMethod::Regenerate), None, true) => {
                    "regenerated by the target's dracut".to_string()
                }
                (true, _, None, true) => "updated by injection".to_string(),
                (true, _, None, false) => "already carries the drivers (unchanged)".to_string(),
                (false, _, note, _) => note.clone().unwrap_or_else(|| "not updated".into()),
            };
            writeln!(out, "{:<28} image {}: {state}", k.release, image.path.display())?;
        }
        // Every image that boots the kernel, and why (model::boot_images).
        let image = k.record.image.as_ref().map(|i| &i.path);
        for i in report.boot_images.get(&k.release).into_iter().flatten() {
            if Some(&i.path) == image {
                writeln!(out, "{:<28}   found as: {}", "", i.why)?;
            } else {
                let what = if i.exists { "also boots it" } else { "named but missing" };
                let state = match k.record.more_images.iter().find(|r| r.path == i.path) {
                    Some(r) if !r.updated => {
                        format!(": NOT UPDATED: {}", r.note.as_deref().unwrap_or("not updated"))
                    }
                    Some(r) => format!(": {}", r.note.as_deref().unwrap_or("carries the drivers")),
                    None => String::new(),
                };
                writeln!(
                    out,
                    "{:<28} image {} {what} ({}){state}",
                    k.release,
                    i.path.display(),
                    i.why
                )?;
            }
        }
    }
    Ok(())
}
