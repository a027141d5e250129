//! `remove`: take installed modules back out of every kernel and image, then forget them;
//! and forget a kernel that is being removed.
//!
//! Flow of [`remove`], under the ledger's lock and journaled like install: for each
//! module, unlink it from every kernel's `weak-updates/` and delete its file from
//! `extra/` (and the emptied `extra/<name>/`); native depmod for each kernel whose tree
//! changed; every image bootkmod changed is restored from the backup kept before its
//! first change, byte for byte; the module is dropped from the ledger. A dry run
//! reports the same and changes nothing.
//!
//! [`forget_kernel`] is what `kernel-install remove KVER` runs: the kernel's
//! weak-updates links to bootkmod's modules go (and the directories left empty, up to
//! the tree itself when the package already deleted the rest), depmod runs if the tree
//! is still a kernel's, the kernel's image backup and its ledger entry are dropped, and
//! status stops listing it. The modules themselves stay: other kernels use them (a
//! module built for that kernel keeps its file in that kernel's `extra/`, as kmod RPMs
//! do). It is idempotent: a kernel bootkmod never saw, or whose tree is gone, is fine.

use crate::model::root::Root;
use crate::operations::atomic::remove_synced;
use crate::operations::install::{lock_for, start, KernelOutcome, Run};
use crate::operations::ledger::{
    failpoint, Build, BuildRef, ImageMethod, Journal, Ledger, Placement, StateDir,
};
use crate::operations::{depmod, images, install, weak_updates};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a remove did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoveReport {
    pub removed: Vec<String>,
    /// Kernels whose indexes were rewritten.
    pub depmod: Vec<String>,
    /// Images put back as they were before bootkmod.
    pub restored: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
    /// Nothing was changed: the report says what a real run would do.
    pub dry_run: bool,
}

/// Remove modules by name (`-` and `_` are the same).
pub fn remove(root: &Root, names: &[String], dry_run: bool) -> Result<RemoveReport> {
    let state = StateDir::new(root);
    let lock = lock_for(&state, dry_run)?;
    let mut ledger = state.load()?;
    let recovered = start(&state, &mut ledger, lock.as_ref(), dry_run)?;
    let names: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
    for n in &names {
        if !ledger.modules.contains_key(n) {
            bail!(
                "{n} is not installed by bootkmod under {} (see bootkmod status)",
                root.dir().display()
            );
        }
    }
    let restorable: Vec<String> = ledger
        .kernels
        .values()
        .filter_map(|k| k.image.as_ref())
        .filter(|i| i.updated && i.backup.is_some())
        .map(|i| i.path.display().to_string())
        .collect();
    let Some(lock) = lock.filter(|_| !dry_run) else {
        let depmod = touched_kernels(root, &ledger, &names)?;
        return Ok(RemoveReport {
            removed: names,
            depmod,
            restored: restorable,
            recovered,
            dry_run,
        });
    };
    ledger.journal = Some(Journal::Remove { names: names.clone() });
    state.save(&ledger, &lock)?;
    failpoint("remove:journaled");
    let run = Run {
        state: &state,
        lock: Some(&lock),
        images: ImageMethod::Inject,
        dry_run: false,
        given: Default::default(),
    };
    let depmod = apply(&run, &mut ledger, &names)?;
    ledger.journal = None;
    state.save(&ledger, &lock)?;
    Ok(RemoveReport { removed: names, depmod, restored: restorable, recovered, dry_run })
}

/// The installed kernels whose trees removing `names` changes (depmod runs for them):
/// each module's own kernel, every kernel the ledger has it on, every kernel with a
/// link to it. Reads only.
fn touched_kernels(root: &Root, ledger: &Ledger, names: &[String]) -> Result<Vec<String>> {
    let installed = crate::model::kernel::releases(root)?;
    let mut touched = BTreeSet::new();
    for name in names {
        let Some(record) = ledger.modules.get(name) else { continue };
        touched.extend(record.builds.iter().map(|b| b.built_for.clone()));
        touched.extend(
            ledger
                .kernels
                .iter()
                .filter(|(_, k)| k.modules.contains_key(name))
                .map(|(r, _)| r.clone()),
        );
        for release in &installed {
            for b in &record.builds {
                if weak_updates::unlink(root, &b.path, release, true)? {
                    touched.insert(release.clone());
                }
            }
        }
    }
    Ok(touched.into_iter().filter(|r| installed.contains(r)).collect())
}

/// The journaled part: idempotent. Returns the kernels depmod ran for.
pub(crate) fn apply(run: &Run, ledger: &mut Ledger, names: &[String]) -> Result<Vec<String>> {
    let root = &run.state.root;
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for name in names {
        let Some(record) = ledger.modules.get(name).cloned() else { continue };
        // Every kernel that had it gets depmod, even when a killed run already removed
        // the file or link: its indexes may still list the module.
        changed.extend(record.builds.iter().map(|b| b.built_for.clone()));
        changed.extend(
            ledger
                .kernels
                .iter()
                .filter(|(_, k)| k.modules.contains_key(name))
                .map(|(r, _)| r.clone()),
        );
        for build in &record.builds {
            changed.extend(take_out(root, &record.name, build)?);
        }
        forget(ledger, &record.name, None);
        failpoint("remove:unlinked");
    }
    let installed = crate::model::kernel::releases(root)?;
    let changed: Vec<String> = changed.into_iter().filter(|r| installed.contains(r)).collect();
    for release in &changed {
        depmod::run(root, release, false)
            .with_context(|| format!("depmod for kernel {release}"))?;
    }
    // Images: put back what bootkmod changed. Other modules still installed are
    // re-offered by the next install/refresh.
    for kernel in ledger.kernels.values_mut() {
        if let Some(image) = kernel.image.as_mut().filter(|i| i.updated) {
            if images::restore(root, image)? {
                image.updated = false;
                image.method = None;
                image.sha256 = images::digest(root, &image.path)?;
                image.note = Some("restored from backup by remove".into());
            }
        }
    }
    // What remains installed goes back into the restored images.
    if !ledger.modules.is_empty() {
        install::refresh(run, ledger, &[])?;
    }
    Ok(changed)
}

/// What forgetting a kernel did (or, in a dry run, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetReport {
    pub kernel: String,
    /// The ledger had a record of this kernel.
    pub known: bool,
    /// weak-updates links removed (target-absolute).
    pub unlinked: Vec<PathBuf>,
    /// Directories removed because they were left empty (target-absolute).
    pub pruned: Vec<PathBuf>,
    /// The kernel's image backup removed from the state directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// depmod ran because the tree is still a kernel's.
    pub depmod: bool,
    /// Modules built for this kernel, whose files stay for the other kernels.
    pub kept: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
    pub dry_run: bool,
}

/// Drop bootkmod's traces for kernel `release` (kernel-install remove). See the module
/// overview.
pub fn forget_kernel(root: &Root, release: &str, dry_run: bool) -> Result<ForgetReport> {
    if release.is_empty() || release.contains('/') || release == "." || release == ".." {
        bail!("{release:?} is not a kernel release");
    }
    let state = StateDir::new(root);
    // Nothing installed here: nothing to forget, and nothing to create.
    if !state.dir()?.join(crate::operations::ledger::LEDGER_FILE).is_file() {
        return Ok(ForgetReport { dry_run, ..plan_forget(root, &Ledger::default(), release)? });
    }
    let lock = lock_for(&state, dry_run)?;
    let mut ledger = state.load()?;
    let recovered = start(&state, &mut ledger, lock.as_ref(), dry_run)?;
    let mut report = plan_forget(root, &ledger, release)?;
    report.recovered = recovered;
    report.dry_run = dry_run;
    let Some(lock) = lock.filter(|_| !dry_run) else { return Ok(report) };
    ledger.journal = Some(Journal::ForgetKernel { release: release.to_string() });
    state.save(&ledger, &lock)?;
    let done = forget_kernel_apply(root, &mut ledger, release)?;
    ledger.journal = None;
    state.save(&ledger, &lock)?;
    report.pruned = done.pruned;
    report.depmod = done.depmod;
    Ok(report)
}

/// What forgetting `release` touches, read from the ledger and the disk.
fn plan_forget(root: &Root, ledger: &Ledger, release: &str) -> Result<ForgetReport> {
    let mut unlinked = Vec::new();
    let mut kept = Vec::new();
    for b in ledger.modules.values().flat_map(|m| &m.builds) {
        let link = weak_updates::link_path(&b.path, release)?;
        if !unlinked.contains(&link) && weak_updates::unlink(root, &b.path, release, true)? {
            unlinked.push(link);
        }
        if b.built_for == release {
            kept.push(b.path.clone());
        }
    }
    let record = ledger.kernels.get(release);
    let backup = record
        .and_then(|k| k.image.as_ref())
        .and_then(|i| i.backup.clone())
        .filter(|b| root.host_entry(b).is_ok_and(|h| std::fs::symlink_metadata(h).is_ok()));
    Ok(ForgetReport {
        kernel: release.to_string(),
        known: record.is_some() || ledger.removed_kernels.contains(release),
        unlinked,
        pruned: Vec::new(),
        backup,
        depmod: false,
        kept,
        recovered: None,
        dry_run: false,
    })
}

/// The journaled part of [`forget_kernel`]: idempotent.
pub(crate) fn forget_kernel_apply(
    root: &Root,
    ledger: &mut Ledger,
    release: &str,
) -> Result<ForgetReport> {
    let mut report = plan_forget(root, ledger, release)?;
    for b in ledger.modules.values().flat_map(|m| &m.builds) {
        weak_updates::unlink(root, &b.path, release, false)?;
    }
    failpoint("remove-kernel:unlinked");
    let installed = crate::model::kernel::releases(root).unwrap_or_default();
    let still_a_kernel = installed.iter().any(|k| k == release);
    // Kernels announced gone earlier whose trees are now deleted need no more mention.
    ledger.removed_kernels.retain(|k| installed.contains(k));
    if still_a_kernel {
        // kernel-install runs before the package deletes the files: keep the tree's
        // indexes true to it meanwhile, and remember the kernel is going.
        // A run killed after unlinking left the indexes listing the links.
        let listed = ledger.modules.values().flat_map(|m| &m.builds).any(|b| {
            weak_updates::link_path(&b.path, release)
                .is_ok_and(|l| install::indexed(root, release, &l))
        });
        if !report.unlinked.is_empty() || listed {
            depmod::run(root, release, false)
                .with_context(|| format!("depmod for kernel {release}"))?;
            report.depmod = true;
        }
        ledger.removed_kernels.insert(release.to_string());
    } else {
        report.pruned = weak_updates::prune_gone_tree(root, release)?;
    }
    if let Some(backup) = &report.backup {
        remove_synced(&root.host_entry(backup)?)?;
    }
    ledger.kernels.remove(release);
    Ok(report)
}

/// Unlink one build everywhere (only links that point at it), delete its file. Returns
/// the kernels whose trees changed (depmod and the ledger are the caller's).
pub(crate) fn take_out(root: &Root, name: &str, build: &Build) -> Result<BTreeSet<String>> {
    let mut changed = BTreeSet::new();
    let lib_modules = root.host("/lib/modules")?;
    let releases: Vec<String> = std::fs::read_dir(&lib_modules)
        .with_context(|| format!("{}: cannot list kernels", lib_modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for release in &releases {
        let link = weak_updates::link_path(&build.path, release)?;
        // Another build of the driver may hold the same link name: leave that one.
        let foreign = root.read_link(&link).is_ok_and(|t| t != build.path);
        if !foreign && weak_updates::unlink(root, &build.path, release, false)? {
            changed.insert(release.clone());
        }
    }
    let host = root.host_entry(&build.path)?;
    if std::fs::symlink_metadata(&host).is_ok() {
        remove_synced(&host)?;
        changed.insert(build.built_for.clone());
    }
    // extra/<name>/ was bootkmod's; leave it only if something else lives there.
    if let Some(dir) = host.parent() {
        if dir.file_name().is_some_and(|n| n.to_string_lossy() == name)
            && dir.parent().and_then(Path::file_name).is_some_and(|n| n == "extra")
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(changed)
}

/// Drop a driver (`sha256` `None`) or one build of it from the ledger; a driver left
/// without builds goes, with its per-kernel entries.
fn forget(ledger: &mut Ledger, name: &str, sha256: Option<&str>) {
    if let (Some(record), Some(sha)) = (ledger.modules.get_mut(name), sha256) {
        record.builds.retain(|b| b.sha256 != sha);
        if !record.builds.is_empty() {
            return;
        }
    }
    ledger.modules.remove(name);
    for kernel in ledger.kernels.values_mut() {
        kernel.modules.remove(name);
    }
}

/// Which build(s) of a driver `remove --version/--sha256` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSelector {
    /// Every build whose `version=` is this.
    Version(String),
    /// The build whose sha256 is this, or starts with it (unambiguously).
    Sha256(String),
    /// Every build no kernel uses (`remove --unused`).
    Unused,
}

/// What removing builds did or, refused or in a dry run, would do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoveBuildsReport {
    pub removed: Vec<BuildRef>,
    /// Per kernel, which build serves it afterwards (as install reports it).
    pub kernels: Vec<KernelOutcome>,
    /// Kernels whose indexes were (or would be) rewritten.
    pub depmod: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
    pub dry_run: bool,
    /// Why the removal was refused before anything changed (empty: not refused).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// The builds `selector` names among `names`' (every driver when empty), checked.
fn select_builds(
    ledger: &Ledger,
    names: &[String],
    selector: &BuildSelector,
) -> Result<Vec<BuildRef>> {
    let mut out = Vec::new();
    let names: Vec<&String> =
        if names.is_empty() { ledger.modules.keys().collect() } else { names.iter().collect() };
    for name in names {
        let Some(record) = ledger.modules.get(name) else {
            bail!("{name} is not installed by bootkmod (see bootkmod status)");
        };
        let serving: BTreeSet<&str> = ledger
            .kernels
            .iter()
            .filter(|(k, _)| !ledger.removed_kernels.contains(*k))
            .filter_map(|(_, k)| k.modules.get(name))
            .filter(|on| on.usable_on_boot() && on.placement != Placement::LocalFallback)
            .filter_map(|on| record.build_on(on))
            .map(|b| b.sha256.as_str())
            .collect();
        let picked: Vec<&Build> = match selector {
            BuildSelector::Version(v) => {
                record.builds.iter().filter(|b| b.version.as_deref() == Some(v)).collect()
            }
            BuildSelector::Sha256(s) => {
                record.builds.iter().filter(|b| b.sha256.starts_with(s.as_str())).collect()
            }
            BuildSelector::Unused => {
                record.builds.iter().filter(|b| !serving.contains(b.sha256.as_str())).collect()
            }
        };
        let labels = || record.builds.iter().map(Build::label).collect::<Vec<_>>().join(", ");
        match (selector, picked.len()) {
            (BuildSelector::Unused, _) => {}
            (_, 0) => bail!("{name} has no such build; its builds: {}", labels()),
            (BuildSelector::Sha256(s), n) if n > 1 => {
                bail!("sha256 {s} names {n} builds of {name}; give more digits ({})", labels())
            }
            _ => {}
        }
        out.extend(
            picked.into_iter().map(|b| BuildRef { name: name.clone(), sha256: b.sha256.clone() }),
        );
    }
    Ok(out)
}

/// Remove the builds `selector` names (of `names`, or of every driver for
/// [`BuildSelector::Unused`]) and choose again per kernel among the builds left.
/// Refused before anything changes when a kernel would lose a usable build of a
/// root-critical driver (unless `force`).
pub fn remove_builds(
    root: &Root,
    names: &[String],
    selector: &BuildSelector,
    force: bool,
    dry_run: bool,
) -> Result<RemoveBuildsReport> {
    let state = StateDir::new(root);
    let lock = lock_for(&state, dry_run)?;
    let mut ledger = state.load()?;
    let recovered = start(&state, &mut ledger, lock.as_ref(), dry_run)?;
    let names: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
    let removed = select_builds(&ledger, &names, selector)?;
    let mut planned = ledger.clone();
    for b in &removed {
        forget(&mut planned, &b.name, Some(&b.sha256));
    }
    let dry = Run {
        state: &state,
        lock: None,
        images: ImageMethod::Inject,
        dry_run: true,
        given: Default::default(),
    };
    let plan =
        if removed.is_empty() { Vec::new() } else { install::refresh(&dry, &mut planned, &[])? };
    let refused = install::guard(&ledger, &plan);
    let mut report = RemoveBuildsReport {
        removed: removed.clone(),
        depmod: plan.iter().filter(|k| k.depmod).map(|k| k.release.clone()).collect(),
        kernels: plan,
        recovered,
        dry_run,
        refused: Vec::new(),
    };
    if !refused.is_empty() && !force {
        report.refused = refused;
        return Ok(report);
    }
    let Some(lock) = lock.filter(|_| !dry_run && !removed.is_empty()) else { return Ok(report) };
    ledger.journal = Some(Journal::RemoveBuilds { builds: removed });
    state.save(&ledger, &lock)?;
    failpoint("remove:journaled");
    let run = Run {
        state: &state,
        lock: Some(&lock),
        images: ImageMethod::Inject,
        dry_run: false,
        given: Default::default(),
    };
    report.kernels = apply_builds(&run, &mut ledger, report.removed.as_slice())?;
    report.depmod = report.kernels.iter().filter(|k| k.depmod).map(|k| k.release.clone()).collect();
    ledger.journal = None;
    state.save(&ledger, &lock)?;
    Ok(report)
}

/// The journaled part of [`remove_builds`]: idempotent. Takes each build's links and
/// file out, forgets it, then refreshes every kernel: the builds left are chosen
/// again, depmod runs where the tree changed, and images follow by injection.
pub(crate) fn apply_builds(
    run: &Run,
    ledger: &mut Ledger,
    builds: &[BuildRef],
) -> Result<Vec<KernelOutcome>> {
    let root = &run.state.root;
    let mut changed = BTreeSet::new();
    for r in builds {
        let Some(build) = ledger.modules.get(&r.name).and_then(|m| m.build(&r.sha256)).cloned()
        else {
            continue;
        };
        changed.extend(take_out(root, &r.name, &build)?);
        forget(ledger, &r.name, Some(&r.sha256));
    }
    failpoint("remove:unlinked");
    let installed = crate::model::kernel::releases(root)?;
    for release in changed.iter().filter(|r| installed.contains(*r)) {
        depmod::run(root, release, false)
            .with_context(|| format!("depmod for kernel {release}"))?;
    }
    let mut outcomes = install::refresh(run, ledger, &[])?;
    for k in &mut outcomes {
        k.depmod |= changed.contains(&k.release);
    }
    Ok(outcomes)
}
