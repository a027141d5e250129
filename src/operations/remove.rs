//! `remove`: take installed modules back out of every kernel and image, then forget them;
//! and forget a kernel that is being removed.
//!
//! Flow of [`remove`], under the ledger's lock and journaled like install: for each
//! module, unlink it from every kernel's `weak-updates/` and delete its file from
//! `extra/` (and the emptied `extra/<name>/`); native depmod for each kernel whose tree
//! changed; every image bootkmod changed is restored from the backup kept before its
//! first change, byte for byte, while it is still the image bootkmod wrote (its
//! recorded digest); an image another tool (update-initramfs, dracut) rebuilt since is
//! never reverted: bootkmod's drivers are taken out of it, or it is left as it is when
//! they are not in it (`images::undo`); the module is dropped from the ledger. A kernel
//! whose depmod or image fails is recorded with its reason and the others go on; a failed
//! operation never blocks the next `remove` (`operations::journal`). A dry run reports
//! the same and changes nothing.
//!
//! [`forget_kernel`] is what `kernel-install remove KVER` runs: the kernel's
//! weak-updates links to bootkmod's modules go (and the directories left empty, up to
//! the tree itself when the package already deleted the rest), depmod runs if the tree
//! is still a kernel's, the kernel's image backup and its ledger entry are dropped, and
//! status stops listing it. The modules themselves stay: other kernels use them (a
//! module built for that kernel keeps its file in that kernel's `extra/`, as kmod RPMs
//! do). It is idempotent: a kernel bootkmod never saw, or whose tree is gone, is fine.
//!
//! [`remove_builds`] (`remove NAME --version V`, `--sha256 S`, `--unused`) takes some
//! builds of a driver out and lets every kernel choose again among the builds left
//! (`operations::journal::remove_builds`). Like install, it is refused before anything
//! changes when a kernel would lose the usable build of a root-critical driver it has
//! (`operations::refresh::guard`), unless forced.

use crate::model::root::Root;
use crate::operations::journal::{self, lock_for, start};
use crate::operations::ledger::{
    failpoint, Build, BuildRef, ImageMethod, Journal, Ledger, Placement, StateDir,
};
use crate::operations::refresh::{self, guard, indexed, KernelOutcome, Run};
use crate::operations::{images, weak_updates};
use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What a remove did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoveReport {
    pub removed: Vec<String>,
    /// Kernels whose indexes were rewritten.
    pub depmod: Vec<String>,
    /// Images put back as they were before bootkmod (still the ones bootkmod wrote).
    pub restored: Vec<String>,
    /// Images another tool rebuilt since bootkmod wrote them: the removed drivers were
    /// taken out, everything else left as that tool made it (never the old backup).
    pub taken_out: Vec<String>,
    /// Images another tool rebuilt since, already without the removed drivers.
    pub left_as_is: Vec<String>,
    /// Kernels that could not be completed, with the reason (also in the ledger); the
    /// others went on.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures: std::collections::BTreeMap<String, String>,
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
    let Some(lock) = lock.filter(|_| !dry_run) else {
        let depmod = touched_kernels(root, &ledger, &names)?;
        let placed = images::placed_in_trees(&ledger, &names);
        let mut undone = Vec::new();
        for (release, kernel) in &ledger.kernels {
            for image in kernel.images().filter(|i| i.updated) {
                let rels = placed.get(release).map(Vec::as_slice).unwrap_or_default();
                undone.push((image.path.clone(), images::undo(root, release, image, rels, true)?));
            }
        }
        let report = RemoveReport::new(names, depmod, &undone, recovered, dry_run);
        return Ok(report);
    };
    ledger.journal = Some(Journal::Remove { names: names.clone() });
    state.save(&ledger, &lock)?;
    failpoint("remove:journaled");
    let applied = journal::apply(&state, &mut ledger, &lock)?;
    let mut report =
        RemoveReport::new(names, applied.depmod.clone(), &applied.images, recovered, false);
    report.failures =
        applied.failures().into_iter().map(|(k, why)| (k.to_string(), why.to_string())).collect();
    Ok(report)
}

impl RemoveReport {
    fn new(
        removed: Vec<String>,
        depmod: Vec<String>,
        undone: &[(PathBuf, images::Undone)],
        recovered: Option<String>,
        dry_run: bool,
    ) -> RemoveReport {
        let which = |what| {
            undone
                .iter()
                .filter(|(_, u)| *u == what)
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
        };
        RemoveReport {
            restored: which(images::Undone::Restored),
            taken_out: which(images::Undone::TakenOut),
            left_as_is: which(images::Undone::LeftAsIs),
            failures: Default::default(),
            removed,
            depmod,
            recovered,
            dry_run,
        }
    }
}

/// The installed kernels whose indexes removing `names` changes (what the real run
/// reports: depmod writes there): those whose `modules.dep` lists the module's file or
/// its `weak-updates/` link. Reads only.
fn touched_kernels(root: &Root, ledger: &Ledger, names: &[String]) -> Result<Vec<String>> {
    let installed = crate::model::kernel::releases(root)?;
    let mut touched = Vec::new();
    for release in &installed {
        let listed = names
            .iter()
            .filter_map(|n| ledger.modules.get(n))
            .flat_map(|record| &record.builds)
            .any(|b| {
                indexed(root, release, &b.path)
                    || weak_updates::link_path(&b.path, release)
                        .is_ok_and(|link| indexed(root, release, &link))
            });
        if listed {
            touched.push(release.clone());
        }
    }
    Ok(touched)
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
    failpoint("remove-kernel:journaled");
    let done = journal::apply(&state, &mut ledger, &lock)?.forgotten.unwrap_or_default();
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

/// Which build(s) of a driver `remove --version/--sha256/--unused` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSelector {
    /// Every build whose `version=` is this.
    Version(String),
    /// The build whose sha256 is this, or starts with it (unambiguously).
    Sha256(String),
    /// Every build no kernel uses.
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
    /// Kernels that could not be completed, with the reason (also in the ledger); the
    /// others went on.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failures: std::collections::BTreeMap<String, String>,
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

/// Remove the builds `selector` names (of `names`; of every driver when empty) and
/// choose again per kernel among the builds left. See the module overview.
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
    let mut report = RemoveBuildsReport {
        removed: removed.clone(),
        kernels: Vec::new(),
        depmod: Vec::new(),
        recovered,
        dry_run,
        failures: Default::default(),
        refused: Vec::new(),
    };
    if removed.is_empty() {
        return Ok(report);
    }
    // The removal run dry on a copy of the ledger: the guard's input and the dry run's
    // report.
    let mut planned = ledger.clone();
    let dry = Run {
        state: &state,
        lock: None,
        images: ImageMethod::Inject,
        dry_run: true,
        given: Default::default(),
        resumed: false,
        leaving: removed
            .iter()
            .filter_map(|b| ledger.modules.get(&b.name)?.build(&b.sha256))
            .map(|b| b.path.clone())
            .collect(),
    };
    let plan = refresh::refresh(&dry, &mut planned, &[])?.kernels;
    let refused = guard(&ledger, &plan);
    let Some(lock) = lock.filter(|_| !dry_run && (refused.is_empty() || force)) else {
        report.depmod = plan.iter().filter(|k| k.depmod).map(|k| k.release.clone()).collect();
        report.kernels = plan;
        report.refused = refused;
        return Ok(report);
    };
    ledger.journal = Some(Journal::RemoveBuilds { builds: removed });
    state.save(&ledger, &lock)?;
    failpoint("remove:journaled");
    let applied = journal::apply(&state, &mut ledger, &lock)?;
    report.failures =
        applied.failures().into_iter().map(|(k, why)| (k.to_string(), why.to_string())).collect();
    let mut depmod: BTreeSet<String> = applied.depmod.into_iter().collect();
    depmod.extend(applied.refreshed.kernels.iter().filter(|k| k.depmod).map(|k| k.release.clone()));
    report.depmod = depmod.into_iter().collect();
    report.kernels = applied.refreshed.kernels;
    Ok(report)
}
