//! `bootkmod dud build|inspect|apply`: Driver Update Disks for Anaconda.

use super::{print_json, Context};
use crate::engines::dud::{inspect, Inspection};
use crate::engines::dud_package::{
    plan_builds, plan_installer_package, read_modules, split_builds, FirmwareFile, PackageOptions,
    PackagedModule,
};
use crate::exit::Exit;
use crate::formats::dud::rpm_arch;
use crate::formats::elf::Endian;
use crate::model::dud::Medium;
use crate::model::kernel::{Interest, Kernel, KernelOptions};
use crate::model::root::Root;
use crate::operations::dud::{self as ops, BuildOptions, DudFormat, PayloadCompression};
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::PathBuf;

/// Build, inspect and apply Driver Update Disks (Anaconda's `inst.dd=`, kickstart
/// `driverdisk`, a volume labelled OEMDRV).
#[derive(Debug, clap::Args)]
pub struct DudArgs {
    #[command(subcommand)]
    pub command: DudCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DudCommand {
    Build(BuildArgs),
    Inspect(InspectArgs),
    Apply(ApplyArgs),
}

/// Build a Driver Update Disk from prebuilt modules, with no toolchain.
///
/// One kmod RPM per build: the modules built for one kernel release (Name: kmod-NAME,
/// Provides: kernel-modules >= their vermagic release), on an ISO9660 disk labelled
/// OEMDRV (or as a directory tree, or the bare RPM). Builds of one driver for several
/// kernels give one RPM each, named kmod-NAME-RELEASE; Anaconda takes every one whose
/// release is not above the installer's kernel (see `dud inspect`). Modules built for
/// several architectures go under rpms/<arch>/ of one disk (x86_64 and aarch64 in one
/// ISO). Set SOURCE_DATE_EPOCH for byte-identical rebuilds.
///
/// --with-bootkmod adds bootkmod itself as an installer enhancement (package
/// bootkmod-installer, Provides: installer-enhancement >= 19.0): Anaconda extracts it to
/// /usr/bin/bootkmod of the installer environment, so kickstart %pre and %post --nochroot
/// scripts run `bootkmod` from PATH. Give it the portable binary of each architecture
/// (scripts/dist: bootkmod-VERSION-x86_64, bootkmod-VERSION-aarch64; glibc <= 2.28, so it
/// starts in RHEL 8's installer); without a value, the running bootkmod goes.
///
/// Examples:
///   bootkmod dud build ./megaraid_sas.ko -o dd.iso
///   bootkmod dud build el9_2/megaraid_sas.ko el9_4/megaraid_sas.ko -o dd.iso
///   bootkmod dud build a.ko b.ko --firmware fw.bin --name vendor-hba --version 1.2 -o dd.iso
///   bootkmod dud build ./x.ko --format rpm -o . --sign-key key.asc
///   bootkmod dud build x86_64/hba.ko aarch64/hba.ko -o dd.iso \
///       --with-bootkmod bootkmod-0.1.0-x86_64 --with-bootkmod bootkmod-0.1.0-aarch64
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, disable_version_flag = true)]
pub struct BuildArgs {
    /// Module files (.ko, .ko.xz, .ko.zst, .ko.gz); shipped as plain .ko.
    #[arg(required = true, value_name = "MODULE")]
    pub modules: Vec<PathBuf>,
    /// Firmware files to ship under /lib/firmware (sub-directory from the module's
    /// firmware= entry when one names the file).
    #[arg(long, value_name = "FILE")]
    pub firmware: Vec<PathBuf>,
    /// Output: the ISO file, the directory, or the RPM file (a directory for --format
    /// rpm puts the RPM in it under rpm's own file name; with several builds it is
    /// always a directory).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "iso")]
    pub format: DudFormat,
    /// Package name after `kmod-` (default: the first module's name; with several
    /// builds, the first module of the oldest one).
    #[arg(long)]
    pub name: Option<String>,
    /// Package version (default: the first module's version=).
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long, default_value = "1")]
    pub release: String,
    /// Target architecture (uname -m); modules built for another are refused.
    #[arg(long)]
    pub arch: Option<String>,
    /// Add `Requires: kernel(SYM) = CRC` for every symbol version the modules need
    /// from outside the package; dnf must find them in the target kernel's Provides.
    #[arg(long)]
    pub kabi_requires: bool,
    /// Volume label of the ISO (Anaconda auto-detects OEMDRV).
    #[arg(long, default_value = crate::formats::dud::AUTO_LABEL)]
    pub label: String,
    #[arg(long, value_enum, default_value = "xz")]
    pub payload: PayloadCompression,
    /// Sign the RPM with this ASCII-armoured OpenPGP secret key (no passphrase).
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Refuse modules that would not load on the kernel tree under DIR (the full
    /// `bootkmod check` rules: module_layout, vermagic, symbol CRCs, signatures...).
    #[arg(long, value_name = "DIR")]
    pub check_root: Option<PathBuf>,
    /// Kernel release to check against under --check-root (default: the modules'
    /// vermagic release; each build its own when there are several).
    #[arg(long, value_name = "K", requires = "check_root")]
    pub check_kver: Option<String>,
    /// Also carry a bootkmod program into the installer (repeatable, one per
    /// architecture; no value: this bootkmod).
    #[arg(long, value_name = "BINARY", num_args = 0..=1, default_missing_value = "")]
    pub with_bootkmod: Vec<String>,
    /// Compute and show the package, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Show what Anaconda would take from a driver disk for a kernel, and why not the rest.
///
/// DUD is an ISO image, a directory, or a bare .rpm. Exit 0 when something would be
/// taken, 3 when nothing would.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The driver disk: an ISO image, a directory, or a bare .rpm.
    #[arg(value_name = "DUD")]
    pub dud: PathBuf,
    /// The installer kernel's release, exactly as `uname -r` prints it.
    #[arg(long, value_name = "K")]
    pub kver: String,
    /// Architecture (uname -m) whose rpms/ directory Anaconda reads.
    #[arg(long, value_name = "A", default_value = std::env::consts::ARCH)]
    pub arch: String,
    /// Installer version installer-enhancement Provides are compared with (Anaconda's
    /// driver-update step always says 19.0).
    #[arg(long, value_name = "V", default_value = crate::formats::dud::ANACONDA_DD_VERSION)]
    pub installer_version: Option<String>,
}

/// Do to a root what Anaconda's driver-update step does.
///
/// Copies the modules and firmware Anaconda would take into ROOT/lib/modules/K/updates/
/// and ROOT/lib/firmware/updates/, then regenerates K's module indexes. For %pre/%post
/// scripts and tests. Exit 3 when nothing on the disk is for K. A disk on which K takes
/// several builds of one module is refused (Anaconda's outcome there follows directory
/// order; `dud inspect` shows it).
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The driver disk: an ISO image, a directory, or a bare .rpm.
    #[arg(value_name = "DUD")]
    pub dud: PathBuf,
    /// Kernel release of the root whose updates/ directory receives the modules.
    #[arg(long, value_name = "K")]
    pub kver: String,
    /// Architecture (uname -m) whose rpms/ directory is read.
    #[arg(long, value_name = "A", default_value = std::env::consts::ARCH)]
    pub arch: String,
    /// Show what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Context, args: DudArgs) -> Result<Exit> {
    match args.command {
        DudCommand::Build(a) => build(ctx, a),
        DudCommand::Inspect(a) => run_inspect(ctx, a),
        DudCommand::Apply(a) => apply(ctx, a),
    }
}

fn source_date_epoch() -> Result<Option<u32>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u32>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(None),
    }
}

fn build(ctx: &Context, args: BuildArgs) -> Result<Exit> {
    let modules = read_modules(&args.modules)?;
    let firmware = args
        .firmware
        .iter()
        .map(|p| {
            let content =
                std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            Ok(FirmwareFile { path: p.clone(), content })
        })
        .collect::<Result<Vec<_>>>()?;
    // One set of builds per architecture (rpms/<arch>/ each), in the order first given.
    let mut by_arch: Vec<(String, Vec<PackagedModule>)> = Vec::new();
    for m in modules {
        let own = args.arch.clone().unwrap_or_else(|| {
            rpm_arch(m.module.machine, m.module.endian == Endian::Big).unwrap_or_default().into()
        });
        match by_arch.iter_mut().find(|(a, _)| *a == own) {
            Some((_, list)) => list.push(m),
            None => by_arch.push((own, vec![m])),
        }
    }
    let mut arch_builds = Vec::new();
    for (_, list) in by_arch {
        arch_builds.push(split_builds(list, args.arch.as_deref())?);
    }
    let total: usize = arch_builds.iter().map(Vec::len).sum();
    if total > 1 && args.check_kver.is_some() {
        eprintln!(
            "bootkmod: --check-kver names one kernel, but the modules are builds for {total} \
             kernels; without it each build is checked against its own release under \
             --check-root"
        );
        return Ok(Exit::Usage);
    }
    let options = PackageOptions {
        name: args.name,
        version: args.version,
        release: args.release.clone(),
        arch: args.arch,
        kabi_requires: args.kabi_requires,
        name_suffix: None,
    };
    let mut plans = Vec::new();
    for builds in &arch_builds {
        let targets = match &args.check_root {
            Some(dir) => builds
                .iter()
                .map(|build| {
                    let release = args.check_kver.clone().unwrap_or(build.kernel_release.clone());
                    let set: Vec<_> = build.modules.iter().map(|m| m.module.clone()).collect();
                    let opts =
                        KernelOptions { interest: Some(Interest::of(&set)), ..Default::default() };
                    Kernel::read(&Root::new(dir), &release, &opts).map(Some)
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        plans.extend(plan_builds(builds, &firmware, &options, &targets)?);
    }
    for binary in &args.with_bootkmod {
        let path = match binary.as_str() {
            "" => std::env::current_exe().context("cannot find the running bootkmod")?,
            p => PathBuf::from(p),
        };
        let bytes =
            std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let plan = plan_installer_package(&bytes, env!("CARGO_PKG_VERSION"), &args.release)
            .with_context(|| format!("--with-bootkmod {}", path.display()))?;
        if plans.iter().any(|p| p.name == plan.name && p.arch == plan.arch) {
            anyhow::bail!("--with-bootkmod {}: a second {} program", path.display(), plan.arch);
        }
        if !plans.iter().any(|p| p.arch == plan.arch) {
            eprintln!(
                "bootkmod: warning: --with-bootkmod {} is for {}, and no module on the disk is",
                path.display(),
                plan.arch
            );
        }
        plans.push(plan);
    }
    let sign_key = match &args.sign_key {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?),
        None => None,
    };
    let opts = BuildOptions {
        format: args.format,
        label: args.label,
        payload: args.payload,
        source_date: source_date_epoch()?,
        sign_key,
    };
    let output = match plans.as_slice() {
        [only] if args.format == DudFormat::Rpm && args.output.is_dir() => {
            args.output.join(only.file_name())
        }
        _ => args.output,
    };
    for w in plans.iter().flat_map(|p| &p.warnings) {
        eprintln!("bootkmod: warning: {w}");
    }
    let report = ops::build(plans, &output, &opts, args.dry_run)?;
    if ctx.json {
        print_json(&report)?;
        return Ok(Exit::Ok);
    }
    let mut out = std::io::stdout().lock();
    for built in &report.builds {
        let p = &built.package;
        let target = match p.kernel_release.as_str() {
            "" => "the installer".to_string(),
            k => format!("kernel {k}"),
        };
        writeln!(out, "{} {}-{}.{} for {target}", p.name, p.version, p.release, p.arch)?;
        for d in &p.provides {
            writeln!(out, "  Provides: {d}")?;
        }
        for d in &p.requires {
            writeln!(out, "  Requires: {d}")?;
        }
        for f in &p.files {
            writeln!(out, "  {:>8}  {}", f.size, f.path)?;
        }
    }
    let verb = if report.dry_run { "would write" } else { "wrote" };
    let sizes: Vec<String> = report.builds.iter().map(|b| b.rpm_size.to_string()).collect();
    writeln!(
        out,
        "{verb} {} ({:?}, RPM {} bytes{})",
        report.output.display(),
        report.format,
        sizes.join(" + "),
        if report.signed { ", signed" } else { "" }
    )?;
    Ok(Exit::Ok)
}

fn inspect_medium(
    dud: &std::path::Path,
    kver: &str,
    arch: &str,
    installer: Option<&str>,
) -> Result<Inspection> {
    let medium = Medium::read(dud, arch)?;
    Ok(inspect(&medium, kver, arch, installer))
}

fn run_inspect(ctx: &Context, args: InspectArgs) -> Result<Exit> {
    let inspection =
        inspect_medium(&args.dud, &args.kver, &args.arch, args.installer_version.as_deref())?;
    let exit = if inspection.takes_anything() { Exit::Ok } else { Exit::Negative };
    if ctx.json {
        print_json(&inspection)?;
        return Ok(exit);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} ({:?}) for kernel {} on {}",
        inspection.source, inspection.kind, inspection.kernel, inspection.arch
    )?;
    if inspection.repos.is_empty() {
        writeln!(out, "  no driver-disk repo (a directory with rhdd3 and rpms/)")?;
        for iso in &inspection.nested_isos {
            writeln!(out, "  Anaconda would open the image {iso} instead")?;
        }
    }
    for repo in &inspection.repos {
        let dir = if repo.dir.is_empty() { "/" } else { repo.dir.as_str() };
        writeln!(out, "  repo {dir}")?;
        if let Some(note) = &repo.note {
            writeln!(out, "    {note}")?;
        }
        for p in &repo.packages {
            let verdict = if p.taken { "TAKEN" } else { "skipped" };
            writeln!(out, "    {verdict:<8} {} ({})", p.nevra, p.path)?;
            for pv in &p.provides {
                writeln!(
                    out,
                    "      Provides: {}  [{}]",
                    pv.provide,
                    if pv.holds { "holds" } else { "does not hold" }
                )?;
            }
            for r in &p.reasons {
                writeln!(out, "      why: {r}")?;
            }
            for f in &p.files {
                match (&f.destination, &f.note, f.class) {
                    (Some(d), _, _) => writeln!(out, "      {} -> /{d}", f.path)?,
                    (None, Some(n), _) => writeln!(out, "      {}: {n}", f.path)?,
                    (None, None, Some(c)) => writeln!(out, "      {}: extracted as {c:?}", f.path)?,
                    (None, None, None) => writeln!(out, "      {}: not extracted", f.path)?,
                }
            }
        }
    }
    for m in &inspection.module_builds {
        writeln!(out, "  module {}: {} builds on the disk", m.module, m.builds.len())?;
        for b in &m.builds {
            let verdict = if b.taken { "TAKEN" } else { "skipped" };
            writeln!(out, "    {verdict:<8} {} ({})", b.nevra, b.kernel_modules.join(", "))?;
        }
        match &m.loaded {
            Some(build) => writeln!(out, "    Anaconda loads {build}: {}", m.why)?,
            None if m.undecided => writeln!(out, "    UNDECIDED: {}", m.why)?,
            None => writeln!(out, "    none taken: {}", m.why)?,
        }
    }
    Ok(exit)
}

fn apply(ctx: &Context, args: ApplyArgs) -> Result<Exit> {
    let inspection = inspect_medium(&ctx.root.confine(&args.dud)?, &args.kver, &args.arch, None)?;
    if !inspection.takes_anything() {
        eprintln!(
            "bootkmod: {}: nothing on it is for kernel {} on {} (see `bootkmod dud inspect`)",
            args.dud.display(),
            args.kver,
            args.arch
        );
        return Ok(Exit::Negative);
    }
    // Anaconda's own result is decided by directory order there: no build is "the one".
    if let Some(m) = inspection.module_builds.iter().find(|m| m.undecided) {
        anyhow::bail!(
            "{}: refusing to pick one of several builds of {}: {}",
            args.dud.display(),
            m.module,
            m.why
        );
    }
    let report = ops::apply(&ctx.root, &inspection, &args.kver, args.dry_run)?;
    if ctx.json {
        print_json(&report)?;
        return Ok(Exit::Ok);
    }
    let mut out = std::io::stdout().lock();
    let verb = if report.dry_run { "would write" } else { "wrote" };
    for f in &report.files {
        writeln!(out, "{verb} {}", ctx.root.shown(f).display())?;
    }
    writeln!(out, "indexes: {}", report.indexes)?;
    Ok(Exit::Ok)
}
