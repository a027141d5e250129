//! Driver Update Disk writes: `dud build` (package plan → RPM → disk) and `dud apply`
//! (an inspection's taken files → a root's `updates/` directories → module indexes).
//!
//! - The RPM is assembled in memory with the `rpm` crate (v4 format, sha256 digests,
//!   gzip or xz payload as Anaconda's extractor requires), optionally signed with an
//!   OpenPGP secret key.
//! - The disk is ISO9660 with Rock Ridge and Joliet written by `hadris-iso` (no external
//!   tool): `rhdd3` and `rpms/<arch>/<package>.rpm` (one per build of the driver),
//!   volume label `OEMDRV` by default.
//!   With `SOURCE_DATE_EPOCH` every timestamp (RPM build time, file times, ISO volume
//!   dates, signature time) comes from it, so the same inputs give the same bytes.
//! - Every file lands through [`AtomicSet`] (temp file, fsync, rename, fsync dir).

use super::atomic::AtomicSet;
use crate::engines::dud::Inspection;
use crate::engines::dud_package::PackagePlan;
use crate::formats::dud::{rpms_dir, REPO_MARKER};
use crate::model::root::Root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What `dud build` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DudFormat {
    /// An ISO9660 image (Rock Ridge, Joliet) to attach as a disk or pass to `inst.dd=`.
    Iso,
    /// A directory tree (`rhdd3`, `rpms/<arch>/`) to copy onto any filesystem.
    Dir,
    /// The bare kmod RPM (`inst.dd=` accepts it directly).
    Rpm,
}

/// RPM payload compression; Anaconda's extractor reads only these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadCompression {
    Gzip,
    Xz,
}

/// How to write the package and the disk.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub format: DudFormat,
    pub label: String,
    pub payload: PayloadCompression,
    /// `SOURCE_DATE_EPOCH`: the one clock of a reproducible build.
    pub source_date: Option<u32>,
    /// ASCII-armoured OpenPGP secret key to sign the RPM with (no passphrase).
    pub sign_key: Option<Vec<u8>>,
}

/// The RPM bytes of a plan.
pub fn build_rpm(plan: &PackagePlan, opts: &BuildOptions) -> Result<Vec<u8>> {
    let mut config = rpm::BuildConfig::v4().compression(match opts.payload {
        PayloadCompression::Gzip => rpm::CompressionType::Gzip,
        PayloadCompression::Xz => rpm::CompressionType::Xz,
    });
    if let Some(t) = opts.source_date {
        config = config.source_date(t);
    }
    let mut builder = rpm::PackageBuilder::new(
        &plan.name,
        &plan.version,
        &plan.license,
        &plan.arch,
        &plan.summary,
    );
    builder
        .using_config(config)
        .release(plan.release.clone())
        .description(plan.description.clone())
        .build_host("bootkmod")
        .vendor("bootkmod");
    for f in &plan.files {
        builder
            .with_file_contents(
                f.content.clone(),
                rpm::FileOptions::new(f.path.clone()).permissions(f.mode),
            )
            .with_context(|| format!("adding {} to the package", f.path))?;
    }
    for d in &plan.provides {
        builder.provides(dependency(d));
    }
    for d in &plan.requires {
        builder.requires(dependency(d));
    }
    if !plan.post_install.is_empty() {
        builder.post_install_script(
            rpm::Scriptlet::new(plan.post_install.clone()).prog(vec!["/bin/sh"]),
        );
    }
    if !plan.post_uninstall.is_empty() {
        builder.post_uninstall_script(
            rpm::Scriptlet::new(plan.post_uninstall.clone()).prog(vec!["/bin/sh"]),
        );
    }
    let package = match &opts.sign_key {
        Some(key) => {
            let signer = rpm::signature::pgp::Signer::from_asc_bytes(key)
                .context("signing key: not a usable ASCII-armoured OpenPGP secret key")?;
            builder.build_and_sign(signer).context("building and signing the RPM")?
        }
        None => builder.build().context("building the RPM")?,
    };
    let mut out = Vec::new();
    package.write(&mut out).context("serialising the RPM")?;
    Ok(out)
}

fn dependency(d: &crate::engines::dud_package::Dep) -> rpm::Dependency {
    match d.op.as_str() {
        ">=" => rpm::Dependency::greater_eq(d.name.clone(), d.version.clone()),
        "=" => rpm::Dependency::eq(d.name.clone(), d.version.clone()),
        _ => rpm::Dependency::any(d.name.clone()),
    }
}

/// The ISO9660 image of a disk holding `rpms` (architecture, file name, bytes), each
/// under `rpms/<its arch>/`.
pub fn build_iso(rpms: &[(String, String, Vec<u8>)], opts: &BuildOptions) -> Result<Vec<u8>> {
    use hadris_fs::{Content, DateTime, Node, Tree};
    use hadris_iso::{IsoId, IsoOptions};
    let mut tree = Tree::new();
    tree.insert(REPO_MARKER, Node::file(Content::bytes(rhdd3_text())))
        .map_err(|e| anyhow::anyhow!("ISO tree: {e:?}"))?;
    for (arch, rpm_name, rpm_bytes) in rpms {
        tree.insert(
            format!("{}/{rpm_name}", rpms_dir(arch)),
            Node::file(Content::bytes(rpm_bytes.clone())),
        )
        .map_err(|e| anyhow::anyhow!("ISO tree: {e:?}"))?;
    }
    let time = DateTime::from_unix_seconds(i64::from(opts.source_date.unwrap_or_else(now)))
        .map_err(|e| anyhow::anyhow!("ISO time: {e:?}"))?;
    let iso_opts = IsoOptions::new()
        .with_id(IsoId::Volume, &opts.label)
        .with_id(IsoId::Application, "BOOTKMOD")
        .with_joliet()
        .with_rock_ridge()
        .with_time(time);
    let size = hadris_iso::plan(&tree, &iso_opts)
        .map_err(|e| anyhow::anyhow!("ISO layout: {e:?}"))?
        .size();
    let size = usize::try_from(size).context("ISO size")?;
    let block = hadris_storage::BlockSize::new(2048).context("ISO block size")?;
    let mut dev = hadris_storage::MemDevice::new(vec![0u8; size], block);
    hadris_iso::sync::write(&mut dev, &tree, &iso_opts)
        .map_err(|e| anyhow::anyhow!("writing ISO: {e:?}"))?;
    Ok(dev.into_inner())
}

fn rhdd3_text() -> &'static [u8] {
    b"Driver Update Disk version 3 (written by bootkmod)\n"
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// What `dud build` wrote (or would write, on a dry run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The first (oldest-release) package; the only one of a single-build disk.
    pub package: PackagePlan,
    pub format: DudFormat,
    pub output: PathBuf,
    pub rpm_file: String,
    pub rpm_size: usize,
    /// Every package on the disk, oldest built-for release first (one per build).
    pub builds: Vec<BuiltPackage>,
    pub signed: bool,
    pub written: Vec<PathBuf>,
    pub dry_run: bool,
}

/// One package of the disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltPackage {
    pub package: PackagePlan,
    pub rpm_file: String,
    pub rpm_size: usize,
}

/// Build the packages and write the disk at `out` in the requested format. With several
/// packages, `--format rpm` writes each under rpm's file name into the directory `out`.
pub fn build(
    plans: Vec<PackagePlan>,
    out: &Path,
    opts: &BuildOptions,
    dry_run: bool,
) -> Result<BuildReport> {
    if plans.is_empty() {
        bail!("no package to build");
    }
    // (architecture, rpm file name, bytes): each package goes under its own rpms/<arch>/.
    let mut rpms: Vec<(String, String, Vec<u8>)> = Vec::with_capacity(plans.len());
    for plan in &plans {
        rpms.push((plan.arch.clone(), plan.file_name(), build_rpm(plan, opts)?));
    }
    let mut written = Vec::new();
    let mut outputs: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    match opts.format {
        DudFormat::Rpm if rpms.len() == 1 => outputs.push((out.to_path_buf(), rpms[0].2.clone())),
        DudFormat::Rpm => outputs.extend(rpms.iter().map(|(_, n, b)| (out.join(n), b.clone()))),
        DudFormat::Iso => outputs.push((out.to_path_buf(), build_iso(&rpms, opts)?)),
        DudFormat::Dir => {
            outputs.push((out.join(REPO_MARKER), rhdd3_text().to_vec()));
            for (arch, name, bytes) in &rpms {
                outputs.push((out.join(rpms_dir(arch)).join(name), bytes.clone()));
            }
        }
    }
    if !dry_run {
        for (path, bytes) in &outputs {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{}: cannot create", dir.display()))?;
            }
            write_one(path, bytes)?;
            written.push(path.clone());
        }
    }
    let builds: Vec<BuiltPackage> = plans
        .into_iter()
        .zip(&rpms)
        .map(|(package, (_, rpm_file, bytes))| BuiltPackage {
            package,
            rpm_file: rpm_file.clone(),
            rpm_size: bytes.len(),
        })
        .collect();
    let first = builds[0].clone();
    Ok(BuildReport {
        format: opts.format,
        output: out.to_path_buf(),
        rpm_file: first.rpm_file,
        rpm_size: first.rpm_size,
        package: first.package,
        builds,
        signed: opts.sign_key.is_some(),
        written,
        dry_run,
    })
}

/// What `dud apply` wrote into the root.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    /// Target-absolute paths written (or that would be, on a dry run).
    pub files: Vec<String>,
    /// How the module indexes were regenerated (`depmod -b ROOT KVER`, or why not).
    pub indexes: String,
    pub dry_run: bool,
}

/// Copy the files an inspection takes into `root`, then regenerate `kver`'s indexes.
/// Destinations were checked to stay below `lib/modules/<kver>/updates/` and
/// `lib/firmware/updates/`; parents are resolved inside the root (a `lib -> usr/lib`
/// link is followed the way the target would, never out of it) and a symlink at the
/// destination is replaced, never written through.
pub fn apply(
    root: &Root,
    inspection: &Inspection,
    kver: &str,
    dry_run: bool,
) -> Result<ApplyReport> {
    // Never create a module tree for a kernel the root does not have.
    let tree = format!("/lib/modules/{kver}");
    if !root.host(&tree)?.is_dir() {
        bail!("{tree}: no module tree for kernel {kver} in {}", root.dir().display());
    }
    let mut files = Vec::new();
    for file in inspection.taken_files() {
        let Some(dest) = &file.destination else { continue };
        let target = Path::new("/").join(dest);
        let parent = target.parent().unwrap_or(Path::new("/"));
        let name = target.file_name().context("destination has no file name")?;
        let resolved_parent = root.resolve(parent)?;
        files.push(resolved_parent.join(name).display().to_string());
        if dry_run {
            continue;
        }
        let host_parent = root.host(&resolved_parent)?;
        std::fs::create_dir_all(&host_parent)
            .with_context(|| format!("{}: cannot create", host_parent.display()))?;
        let host = host_parent.join(name);
        if host.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            bail!("{}: is a directory, not replacing it", host.display());
        }
        write_one(&host, &file.content)?;
    }
    let indexes = if dry_run || files.is_empty() {
        "not regenerated (nothing written)".to_string()
    } else {
        regenerate_indexes(root, kver)?
    };
    Ok(ApplyReport { files, indexes, dry_run })
}

/// Replace one file atomically (a symlink at `path` is replaced, never followed).
fn write_one(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("no file name")?.to_string_lossy().into_owned();
    AtomicSet::new(dir).file(name, bytes.to_vec()).commit().map(|_| ())
}

/// Do the host's OS and the target resolve alike everything `depmod -b ROOT KVER`
/// reads: the configuration directories, the tree, and every link inside the tree?
fn links_alike_on_host(root: &Root, kver: &str) -> Result<bool> {
    let tree = PathBuf::from(format!("/lib/modules/{kver}"));
    for dir in crate::engines::depmod::config::CONFIG_DIRS {
        if !root.alike_on_host(dir)? {
            return Ok(false);
        }
    }
    if !root.alike_on_host(&tree)? {
        return Ok(false);
    }
    fn walk(root: &Root, dir: &Path) -> Result<bool> {
        let Ok(entries) = std::fs::read_dir(root.host(dir)?) else { return Ok(true) };
        for entry in entries.flatten() {
            // depmod never descends into the header links.
            if entry.file_name() == "build" || entry.file_name() == "source" {
                continue;
            }
            let kind = entry.file_type()?;
            let inside = dir.join(entry.file_name());
            if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                if !Root::link_alike_on_host(dir, &target) {
                    return Ok(false);
                }
            } else if kind.is_dir() && !walk(root, &inside)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
    walk(root, &tree)
}

/// Regenerate `kver`'s module indexes in `root`.
fn regenerate_indexes(root: &Root, kver: &str) -> Result<String> {
    // The system depmod is the reference while bootkmod's own index writer (issue 5,
    // `operations::depmod`) is in progress; it is the fallback where kmod is missing.
    // NATIVE DEPMOD: make `crate::operations::depmod::run` the first choice here once
    // issue 5 is closed.
    // kmod's `depmod -b ROOT` joins paths onto ROOT itself, so the host's OS follows
    // the target's links: an absolute one (weak-updates/, a `lib` link) would lead it
    // onto the host. It is used only where every link resolves alike on both sides;
    // bootkmod's own depmod, which resolves inside the root, everywhere else.
    let alike = links_alike_on_host(root, kver)?;
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .map(Path::new)
        .find(|p| alike && p.exists());
    let Some(depmod) = depmod else {
        let report = crate::operations::depmod::run(root, kver, false)?;
        return Ok(format!(
            "bootkmod depmod ({} modules) in {}",
            report.modules,
            report.dir.display()
        ));
    };
    if !root.host(format!("/lib/modules/{kver}"))?.is_dir() {
        bail!(
            "{}: no module tree for kernel {kver}",
            root.shown(format!("/lib/modules/{kver}")).display()
        );
    }
    let out = std::process::Command::new(depmod)
        .arg("-b")
        .arg(root.dir())
        .arg(kver)
        .output()
        .with_context(|| format!("cannot run {}", depmod.display()))?;
    if !out.status.success() {
        bail!(
            "depmod -b {} {kver} failed: {}",
            root.dir().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(format!("{} -b {} {kver}", depmod.display(), root.dir().display()))
}
