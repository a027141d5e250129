//! `bootkmod check MODULE... --kver K | --all-kernels`: will these prebuilt modules load
//! on that kernel? Reads the modules and the kernel(s), asks `engines::compat`, renders
//! a table per kernel (or one line per kernel with `--all-kernels`), or `--json`.
//! Exit 0 when every module is compatible with every kernel checked, 3 otherwise.

use super::{print_json, Context};
use crate::engines::compat::{self, Outcome, Verdict};
use crate::exit::Exit;
use crate::model::kernel::{self, Interest, Kernel, KernelOptions, SecureBootMode};
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

    /// The kernel's Module.symvers or symvers.gz (default: searched under ROOT).
    #[arg(long, value_name = "FILE")]
    pub symvers: Option<PathBuf>,

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
        trusted_keys: args.trusted_keys.clone(),
        secure_boot: match args.secure_boot {
            SecureBoot::Auto => SecureBootMode::Auto,
            SecureBoot::On => SecureBootMode::On,
            SecureBoot::Off => SecureBootMode::Off,
        },
        scan_modules: args.scan_modules,
        interest: Some(Interest::of(&modules)),
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
                write_table(&mut out, kernel, verdicts)?;
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
fn write_table(out: &mut impl Write, kernel: &Kernel, verdicts: &[Verdict]) -> std::io::Result<()> {
    let symvers = kernel.symvers.as_ref().map_or("none".into(), |p| p.display().to_string());
    writeln!(
        out,
        "kernel {} ({}), symvers {}, signatures {} ({})",
        kernel.release,
        kernel.arch().unwrap_or_else(|| "arch unknown".into()),
        symvers,
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
        for r in &v.reasons {
            let tag = match r.outcome {
                Outcome::Refused => "refused",
                Outcome::Taint => "taint",
            };
            writeln!(out, "    {tag:<8} {:<18} {}", r.rule.name(), r.message)?;
        }
        if !v.unchecked.is_empty() {
            writeln!(out, "    unchecked (kernel facts missing): {}", v.unchecked.join(", "))?;
        }
    }
    Ok(())
}
