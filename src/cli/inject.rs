//! `bootkmod inject [--image IMAGE | --kver KVER] MODULE... [-o OUT]`: put verified
//! modules into an existing initramfs and prove it from the written bytes. Calls
//! `operations::inject`; renders the plan, the write and the verification as text or
//! `--json`. Exit 0 written/unchanged/planned, 3 refused by the check, 1 on errors.

use super::{print_json, Context};
use crate::engines::inject::{Action, Why};
use crate::exit::Exit;
use crate::model::kernel::{KernelOptions, SecureBootMode};
use crate::operations::inject::{self, InjectOptions, ModuleArg, Outcome, Report};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// Put a storage driver (and what it needs) into an existing initramfs image.
///
/// Checks each module against the image's kernel, adds its dependencies, soft
/// dependencies, firmware and the disk-class driver its disks need, regenerates the
/// image's module indexes natively, writes (one appended segment by default), and
/// verifies the written image. Running it again changes nothing.
///
/// Examples:
///   bootkmod inject --kver 6.1.0-56-amd64 megaraid_sas
///   bootkmod inject --image /boot/initrd.img-6.1.0-56-amd64 ./vendor_hba.ko.xz --load-early
///   bootkmod inject --root /mnt/sysimage --kver 5.14.0-362.el9.x86_64 ./hba.ko --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InjectArgs {
    /// Module files (.ko, .ko.xz, .ko.zst, .ko.gz) or module names from the target
    /// kernel's tree (ROOT/lib/modules/KVER).
    #[arg(required = true, value_name = "MODULE")]
    pub modules: Vec<String>,

    /// The initramfs image to change.
    #[arg(long, value_name = "IMAGE", required_unless_present = "kver")]
    pub image: Option<PathBuf>,

    /// The kernel release; without --image, its image is found under ROOT/boot
    /// (initramfs-KVER.img, initrd.img-KVER).
    #[arg(long, value_name = "KVER")]
    pub kver: Option<String>,

    /// Write the result here instead of replacing the image.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Print the plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Inject even if the check refuses a module.
    #[arg(long)]
    pub force: bool,

    /// Write one fresh image instead of appending an overlay segment.
    #[arg(long)]
    pub rebuild: bool,

    /// Do not keep IMAGE.bootkmod.bak when replacing in place.
    #[arg(long)]
    pub no_backup: bool,

    /// Load the modules early through the image's own mechanism (dracut rd.driver.pre,
    /// initramfs-tools conf/modules, or modules-load.d).
    #[arg(long)]
    pub load_early: bool,

    /// Firmware a module names but ROOT/lib/firmware lacks is a warning, not an error.
    #[arg(long)]
    pub allow_missing_firmware: bool,

    /// The kernel's Module.symvers or symvers.gz (default: searched under ROOT).
    #[arg(long, value_name = "FILE")]
    pub symvers: Option<PathBuf>,

    /// A certificate (DER or PEM) the kernel trusts besides its build key. Repeatable.
    #[arg(long = "trusted-key", value_name = "CERT")]
    pub trusted_keys: Vec<PathBuf>,

    /// A Unified Kernel Image: sign the rewritten image with this private key (PEM), by
    /// sbsign. A signed UKI is never rewritten without it (exit 3, nothing written).
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,

    /// The certificate of --sign-key (PEM), as the firmware or shim trusts it (db, MOK).
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: InjectArgs) -> Result<Exit> {
    let image = match (&args.image, &args.kver) {
        (Some(i), _) => i.clone(),
        (None, Some(k)) => inject::find_image(&ctx.root, k)?,
        (None, None) => unreachable!("clap requires --image or --kver"),
    };
    let modules: Vec<ModuleArg> = args.modules.iter().map(|m| ModuleArg::parse(m)).collect();
    let opts = InjectOptions {
        release: args.kver.clone(),
        output: args.output.clone(),
        dry_run: args.dry_run,
        rebuild: args.rebuild,
        backup: !args.no_backup,
        plan: crate::engines::inject::PlanOptions {
            force: args.force,
            load_early: args.load_early,
            allow_missing_firmware: args.allow_missing_firmware,
        },
        kernel: KernelOptions {
            symvers: args.symvers.clone(),
            trusted_keys: args.trusted_keys.clone(),
            secure_boot: SecureBootMode::Auto,
            ..KernelOptions::default()
        },
    };
    if crate::model::uki::is_pe(&ctx.root.confine(&image)?)? {
        return run_uki(ctx, &args, &image, &modules, &opts);
    }
    if args.sign_key.is_some() {
        anyhow::bail!(
            "--sign-key/--sign-cert sign a Unified Kernel Image; {} is an initramfs",
            image.display()
        );
    }
    let report = inject::inject(&ctx.root, &image, &modules, &opts)?;
    // With --kver: every image that boots the kernel, and why (model::boot_images).
    let boot_images = match (&args.image, &args.kver) {
        (None, Some(k)) => crate::model::boot_images::find(&ctx.root, k),
        _ => Vec::new(),
    };
    if ctx.json {
        #[derive(serde::Serialize)]
        struct WithImages<'a> {
            #[serde(flatten)]
            report: &'a Report,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            boot_images: Vec<crate::model::boot_images::BootImage>,
        }
        print_json(&WithImages { report: &report, boot_images })?;
    } else {
        let mut out = std::io::stdout().lock();
        write_report(&mut out, &report, ctx.verbose)?;
        for i in boot_images.iter().filter(|i| ctx.root.host(&i.path).ok() != Some(image.clone())) {
            let what = if i.exists { "also boots it" } else { "named, missing" };
            writeln!(out, "note:    {} {what}, not injected ({})", i.path.display(), i.why)?;
        }
        if let Some(i) =
            boot_images.iter().find(|i| ctx.root.host(&i.path).ok() == Some(image.clone()))
        {
            writeln!(out, "found:   {} ({})", i.path.display(), i.why)?;
        }
    }
    Ok(exit_of(&report))
}

/// `inject` into a Unified Kernel Image (`operations::uki`).
fn run_uki(
    ctx: &Context,
    args: &InjectArgs,
    image: &std::path::Path,
    modules: &[ModuleArg],
    opts: &InjectOptions,
) -> Result<Exit> {
    use crate::operations::uki::{self, SignWith, UkiOutcome};
    let sign = match (&args.sign_key, &args.sign_cert) {
        (Some(key), Some(cert)) => Some(SignWith { key: key.clone(), cert: cert.clone() }),
        _ => None,
    };
    let report = uki::inject(&ctx.root, image, modules, opts, sign.as_ref())?;
    if ctx.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        if let Some(r) = &report.initrd {
            write_report(&mut out, r, ctx.verbose)?;
        }
        match report.outcome {
            UkiOutcome::RefusedSigned => {
                let (offset, len) = report.signature.unwrap_or_default();
                writeln!(
                    out,
                    "refused: {} is a signed Unified Kernel Image (Authenticode certificate \
                     table at {offset:#x}, {len} bytes); rewriting it would break Secure Boot. \
                     Nothing written: give --sign-key KEY --sign-cert CERT to re-sign it",
                    report.uki.display()
                )?;
            }
            UkiOutcome::InitrdNotWritten => {
                writeln!(out, "uki:     {} not rewritten", report.uki.display())?;
            }
            UkiOutcome::Written => {
                if let Some(w) = &report.rewrite {
                    writeln!(
                        out,
                        "uki:     {} rewritten: .initrd {} -> {} bytes, SizeOfImage {:#x}{}",
                        report.output.display(),
                        w.initrd_before,
                        w.initrd_after,
                        w.size_of_image,
                        if w.moved.is_empty() {
                            String::new()
                        } else {
                            let names: Vec<&str> = w.moved.iter().map(|m| m.0.as_str()).collect();
                            format!(", moved {}", names.join(" "))
                        }
                    )?;
                }
                if let Some(cert) = &report.signed_with {
                    let old =
                        if report.signature.is_some() { "old signature stripped, " } else { "" };
                    writeln!(out, "signed:  {old}signed again by sbsign with {}", cert.display())?;
                }
            }
        }
    }
    Ok(match (report.outcome, &report.initrd) {
        (UkiOutcome::RefusedSigned, _) => Exit::Negative,
        (_, Some(r)) => exit_of(r),
        (_, None) => Exit::Error,
    })
}

/// The exit code of a report.
pub fn exit_of(report: &Report) -> Exit {
    match report.outcome {
        Outcome::Refused => Exit::Negative,
        Outcome::NotVerified => Exit::Error,
        Outcome::Written if !report.verification.as_ref().is_some_and(|v| v.ok) => Exit::Error,
        _ => Exit::Ok,
    }
}

/// Render a report as text.
pub fn write_report(out: &mut dyn Write, r: &Report, verbose: bool) -> std::io::Result<()> {
    let p = &r.plan;
    writeln!(out, "image:   {} (kernel {}, tree {})", r.image.display(), p.release, p.tree)?;
    for v in &p.verdicts {
        let state = if v.compatible { "compatible" } else { "REFUSED" };
        writeln!(out, "check:   {} {state}", v.module)?;
        let (shown, rest) = super::check::shown_reasons(v, verbose);
        for reason in shown {
            writeln!(out, "           {reason}")?;
        }
        if let Some(rest) = rest {
            writeln!(out, "           {rest}")?;
        }
    }
    if r.outcome == Outcome::Refused {
        writeln!(out, "refused: nothing written (use --force to inject anyway)")?;
        return Ok(());
    }
    for m in &p.modules {
        let why = match &m.why {
            Why::Requested => "requested".to_string(),
            Why::Dependency { of } => format!("needed by {of}"),
            Why::Softdep { of } => format!("soft dependency of {of}"),
            Why::DiskClass { of } => format!("disk driver for {of}"),
        };
        let action = match m.action {
            Action::Add => "add",
            Action::Replace => "replace",
            Action::Present => "present",
            Action::Builtin => "built-in",
        };
        writeln!(out, "module:  {action:<8} {:<20} {} ({why})", m.name, m.path)?;
        if let Some(s) = &m.shadows {
            writeln!(out, "           wins over {s}")?;
        }
    }
    for f in &p.firmware {
        writeln!(out, "firmware: {:<8} {} (for {})", f.action, f.path, f.needed_by)?;
    }
    if !p.indexes.is_empty() {
        writeln!(out, "indexes: {}", p.indexes.join(" "))?;
    }
    if let Some(e) = &p.early_load {
        let state = if e.changed { "write" } else { "present" };
        writeln!(out, "early:   {state} {} ({}): {}", e.path, e.mechanism, e.modules.join(" "))?;
    }
    for w in &p.warnings {
        writeln!(out, "warning: {w}")?;
    }
    match r.outcome {
        Outcome::Unchanged if r.output != r.image => writeln!(
            out,
            "unchanged: everything is already in the image; {} is a copy of it",
            r.output.display()
        )?,
        Outcome::Unchanged => writeln!(out, "unchanged: everything is already in the image")?,
        Outcome::Planned => writeln!(
            out,
            "dry run: would write {} entries ({}) to {}",
            p.entries.len(),
            mode_name(r),
            r.output.display()
        )?,
        Outcome::Written | Outcome::NotVerified => {
            if r.outcome == Outcome::Written {
                writeln!(out, "written: {} ({})", r.output.display(), mode_name(r))?;
            } else {
                writeln!(out, "NOT written: {} left unchanged", r.output.display())?;
            }
            if let Some(b) = &r.backup {
                writeln!(out, "backup:  {}", b.display())?;
            }
            if let Some(v) = &r.verification {
                for c in &v.chains {
                    let state = if c.complete { "ok" } else { "INCOMPLETE" };
                    writeln!(out, "verify:  {} {state}: {}", c.module, c.load.join(" -> "))?;
                    for m in &c.missing {
                        writeln!(out, "           missing {m}")?;
                    }
                }
                for m in &v.mismatched {
                    writeln!(out, "verify:  {m} does not hold the planned content")?;
                }
                for m in &v.misencoded {
                    writeln!(out, "verify:  {m}")?;
                }
                let state = if v.ok { "verified" } else { "VERIFICATION FAILED" };
                writeln!(out, "{state}: {} segments decode", v.segments)?;
            }
        }
        Outcome::Refused => {}
    }
    Ok(())
}

fn mode_name(r: &Report) -> &'static str {
    match r.mode {
        inject::Mode::Append => "appended one segment",
        inject::Mode::Rebuild => "rebuilt",
    }
}
