//! `bootkmod check MODULE... --kver K | --all-kernels`: will these prebuilt modules load
//! on that kernel? Reads the modules and the kernel(s), asks `engines::compat`, renders
//! a table per kernel (or one line per kernel with `--all-kernels`), or `--json`.
//! Exit 0 when every module is compatible with every kernel checked, 3 otherwise.

use super::{print_json, Context};
use crate::engines::compat::Reason;
use crate::engines::compat::{self, Outcome, Verdict};
use crate::exit::Exit;
use crate::model::kernel::{
    self, ImageExportsUse, Interest, Kernel, KernelOptions, SecureBootMode, VmlinuxExports,
};
use crate::model::module::{Module, ReadOptions};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// Decide whether prebuilt modules will load on a target kernel, and say why not.
///
/// The modules are checked together as a set: add-on modules that depend on each other
/// pass or fail as a group. Each failing rule is listed in the kernel loader's order, so
/// the first one is what the kernel would print.
///
/// Examples:
///   bootkmod check ./mydrv.ko --kver 6.1.0-56-amd64
///   bootkmod check ./core.ko ./hba.ko.xz --all-kernels --root /mnt/sysimage
///   bootkmod check ./mydrv.ko --kver 6.1.0-56-amd64 --trusted-key vendor.der --secure-boot on
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    /// Module files (.ko, .ko.xz, .ko.zst, .ko.gz).
    #[arg(required = true, value_name = "MODULE")]
    pub modules: Vec<PathBuf>,

    /// The target kernel release.
    #[arg(long, value_name = "KVER", required_unless_present = "all_kernels")]
    pub kver: Option<String>,

    /// Check against every kernel under ROOT/lib/modules, one line per kernel.
    #[arg(long, conflicts_with_all = ["kver", "symvers"])]
    pub all_kernels: bool,

    /// The kernel's Module.symvers or symvers.gz (default: searched under ROOT; without
    /// one, vmlinux's exports are read from ROOT/boot/vmlinuz-KVER).
    #[arg(long, value_name = "FILE")]
    pub symvers: Option<PathBuf>,

    /// Ignore any symvers file: judge by the export table in the kernel's boot image
    /// alone, as on a host without the kernel's headers package.
    #[arg(long, conflicts_with_all = ["symvers", "verify_symvers"])]
    pub no_symvers: bool,

    /// A certificate (DER or PEM) the kernel trusts besides its own build key, e.g. a
    /// vendor key enrolled in MOK. Repeatable.
    #[arg(long = "trusted-key", value_name = "CERT")]
    pub trusted_keys: Vec<PathBuf>,

    /// Whether the host refuses modules without a trusted signature.
    #[arg(long, value_enum, default_value_t = SecureBoot::Auto)]
    pub secure_boot: SecureBoot,

    /// Read the exports of every in-tree .ko file, as depmod does, instead of trusting
    /// symvers for them (slower; exact when in-tree modules were replaced).
    #[arg(long)]
    pub scan_modules: bool,

    /// Also read the kernel's own export table from its boot image (/boot/vmlinuz-KVER)
    /// when a symvers file is found, warn where they disagree, and judge by the image
    /// (about a second per kernel to decompress it). Without symvers the image is
    /// always read.
    #[arg(long)]
    pub verify_symvers: bool,
}

/// `--secure-boot` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecureBoot {
    /// Read the kernel command line, lockdown and EFI Secure Boot state under ROOT.
    Auto,
    /// Assume enforcement.
    On,
    /// Assume none (a kernel built with MODULE_SIG_FORCE still enforces).
    Off,
}

#[derive(serde::Serialize)]
struct KernelReport<'a> {
    kernel: &'a Kernel,
    arch: Option<String>,
    compatible: bool,
    verdicts: &'a [Verdict],
}

pub fn run(ctx: &Context, args: CheckArgs) -> Result<Exit> {
    let modules = args
        .modules
        .iter()
        .map(|p| Module::read(p, ReadOptions::default()))
        .collect::<Result<Vec<_>>>()?;
    let releases = match &args.kver {
        Some(k) => vec![k.clone()],
        None => kernel::releases_present(&ctx.root)?,
    };
    let opts = KernelOptions {
        symvers: args.symvers.clone(),
        ignore_symvers: args.no_symvers,
        trusted_keys: args.trusted_keys.clone(),
        secure_boot: match args.secure_boot {
            SecureBoot::Auto => SecureBootMode::Auto,
            SecureBoot::On => SecureBootMode::On,
            SecureBoot::Off => SecureBootMode::Off,
        },
        scan_modules: args.scan_modules,
        interest: Some(Interest::of(&modules)),
        image_exports: if args.verify_symvers {
            ImageExportsUse::Compare
        } else {
            ImageExportsUse::WithoutSymvers
        },
    };
    let mut results = Vec::new();
    for release in &releases {
        let kernel = Kernel::read(&ctx.root, release, &opts)?;
        for warning in &kernel.warnings {
            eprintln!("bootkmod: warning: kernel {release}: {warning}");
        }
        let verdicts = compat::check_set(&kernel, &modules);
        results.push((kernel, verdicts));
    }
    let all_ok = results.iter().all(|(_, v)| v.iter().all(|v| v.compatible));

    if ctx.json {
        let reports: Vec<KernelReport> = results
            .iter()
            .map(|(k, v)| KernelReport {
                kernel: k,
                arch: k.arch(),
                compatible: v.iter().all(|v| v.compatible),
                verdicts: v,
            })
            .collect();
        print_json(&reports)?;
    } else {
        let mut out = std::io::stdout().lock();
        for (kernel, verdicts) in &results {
            if args.all_kernels {
                write_line(&mut out, kernel, verdicts)?;
            } else {
                write_table(&mut out, kernel, verdicts, ctx.verbose)?;
            }
        }
    }
    Ok(if all_ok { Exit::Ok } else { Exit::Negative })
}

/// One line per kernel: release, verdict, and the first refusal of each failing module.
fn write_line(out: &mut impl Write, kernel: &Kernel, verdicts: &[Verdict]) -> std::io::Result<()> {
    let failing: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.compatible)
        .filter_map(|v| v.first_refusal().map(|r| r.message.clone()))
        .collect();
    if failing.is_empty() {
        writeln!(out, "{:<28} compatible", kernel.release)
    } else {
        writeln!(out, "{:<28} INCOMPATIBLE  {}", kernel.release, failing.join("; "))
    }
}

/// The per-kernel table: a header naming the facts used, one row per module, and every
/// reason under it.
fn write_table(
    out: &mut impl Write,
    kernel: &Kernel,
    verdicts: &[Verdict],
    verbose: bool,
) -> std::io::Result<()> {
    let exports = match &kernel.vmlinux_exports {
        VmlinuxExports::Symvers => {
            format!(
                "symvers {}",
                kernel.symvers.as_ref().map_or(String::new(), |p| p.display().to_string())
            )
        }
        VmlinuxExports::Image { path } => format!("exports from {}", path.display()),
        VmlinuxExports::Missing { .. } => "no export table".to_string(),
    };
    writeln!(
        out,
        "kernel {} ({}), {}, signatures {} ({})",
        kernel.release,
        kernel.arch().unwrap_or_else(|| "arch unknown".into()),
        exports,
        if kernel.enforcement.enforced { "enforced" } else { "not enforced" },
        kernel.enforcement.because
    )?;
    let width = verdicts.iter().map(|v| v.module.len()).max().unwrap_or(6).max(6);
    writeln!(out, "  {:<width$}  VERDICT", "MODULE")?;
    for v in verdicts {
        let taints = v.reasons.iter().filter(|r| r.outcome == Outcome::Taint).count();
        let verdict = match (v.compatible, taints) {
            (true, 0) => "compatible".to_string(),
            (true, n) => format!("compatible, with {n} warning(s)"),
            (false, _) => "INCOMPATIBLE".to_string(),
        };
        writeln!(out, "  {:<width$}  {verdict}", v.module)?;
        let (shown, rest) = shown_reasons(v, verbose);
        for r in shown {
            let tag = match r.outcome {
                Outcome::Refused => "refused",
                Outcome::Taint => "taint",
            };
            writeln!(out, "    {tag:<8} {:<18} {}", r.rule.name(), r.message)?;
        }
        if let Some(rest) = rest {
            writeln!(out, "    {rest}")?;
        }
        if !v.unchecked.is_empty() {
            writeln!(out, "    unchecked (kernel facts missing): {}", v.unchecked.join(", "))?;
        }
    }
    Ok(())
}

/// The reasons of one verdict worth a line: all of them with `verbose`; otherwise the
/// first (the loader's first refusal, or the first taint), and a line counting the rest
/// by kind (`and 79 more: 70 unknown-symbol, 9 symbol-crc refused; ...`). A module of
/// another build fails dozens of symbol rules for one cause; the first says which.
pub(crate) fn shown_reasons(v: &Verdict, verbose: bool) -> (&[Reason], Option<String>) {
    if verbose || v.reasons.len() <= 1 {
        return (&v.reasons, None);
    }
    let rest = &v.reasons[1..];
    let mut kinds: Vec<(Outcome, &str, usize)> = Vec::new();
    for r in rest {
        match kinds.iter_mut().find(|(o, n, _)| *o == r.outcome && *n == r.rule.name()) {
            Some(k) => k.2 += 1,
            None => kinds.push((r.outcome, r.rule.name(), 1)),
        }
    }
    let part = |outcome: Outcome, word: &str| {
        let list: Vec<String> = kinds
            .iter()
            .filter(|k| k.0 == outcome)
            .map(|(_, name, n)| format!("{n} {name}"))
            .collect();
        (!list.is_empty()).then(|| format!("{} {word}", list.join(", ")))
    };
    let parts: Vec<String> = [part(Outcome::Refused, "refused"), part(Outcome::Taint, "taint")]
        .into_iter()
        .flatten()
        .collect();
    (
        &v.reasons[..1],
        Some(format!("and {} more: {} (-v or --json lists them)", rest.len(), parts.join("; "))),
    )
}
