//! `remove`: take installed modules back out of every kernel and image, then forget them.
//!
//! Flow, under the ledger's lock and journaled like install: for each module, unlink it
//! from every kernel's `weak-updates/` and delete its file from `extra/` (and the
//! emptied `extra/<name>/`); native depmod for each kernel whose tree changed; every
//! image bootkmod changed is restored from the backup kept before its first change,
//! byte for byte; the module is dropped from the ledger.

use crate::model::root::Root;
use crate::operations::atomic::remove_synced;
use crate::operations::ledger::{failpoint, Journal, Ledger, ModuleRecord, StateDir};
use crate::operations::{depmod, images, install, weak_updates};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

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
}

/// Remove modules by name (`-` and `_` are the same).
pub fn remove(root: &Root, names: &[String]) -> Result<RemoveReport> {
    let state = StateDir::new(root);
    let lock = state.lock()?;
    let mut ledger = state.load()?;
    let recovered = install::recover(&state, &mut ledger, &lock)?;
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
    ledger.journal = Some(Journal::Remove { names: names.clone() });
    state.save(&ledger, &lock)?;
    failpoint("remove:journaled");
    let depmod = apply(root, &mut ledger, &names)?;
    ledger.journal = None;
    state.save(&ledger, &lock)?;
    Ok(RemoveReport { removed: names, depmod, restored: restorable, recovered })
}

/// The journaled part: idempotent. Returns the kernels depmod ran for.
pub(crate) fn apply(root: &Root, ledger: &mut Ledger, names: &[String]) -> Result<Vec<String>> {
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for name in names {
        let Some(record) = ledger.modules.get(name).cloned() else { continue };
        // Every kernel that had it gets depmod, even when a killed run already removed
        // the file or link: its indexes may still list the module.
        changed.insert(record.built_for.clone());
        changed.extend(
            ledger
                .kernels
                .iter()
                .filter(|(_, k)| k.modules.contains_key(name))
                .map(|(r, _)| r.clone()),
        );
        changed.extend(take_out(root, ledger, &record)?);
        failpoint("remove:unlinked");
    }
    let installed = crate::model::kernel::releases(root)?;
    for release in changed.iter().filter(|r| installed.contains(r)) {
        depmod::run(root, release, false)
            .with_context(|| format!("depmod for kernel {release}"))?;
    }
    // Images: put back what bootkmod changed. Other modules still installed are
    // re-offered by the next install/refresh.
    for kernel in ledger.kernels.values_mut() {
        if let Some(image) = kernel.image.as_mut().filter(|i| i.updated) {
            if images::restore(root, image)? {
                image.updated = false;
                image.sha256 = images::digest(root, &image.path)?;
                image.note = Some("restored from backup by remove".into());
            }
        }
    }
    // What remains installed goes back into the restored images.
    if !ledger.modules.is_empty() {
        install::refresh(root, ledger, &[])?;
    }
    Ok(changed.into_iter().collect())
}

/// Unlink a module everywhere, delete its file, drop it from the ledger. Returns the
/// kernels whose trees changed (depmod is the caller's).
pub(crate) fn take_out(
    root: &Root,
    ledger: &mut Ledger,
    record: &ModuleRecord,
) -> Result<BTreeSet<String>> {
    let mut changed = BTreeSet::new();
    let lib_modules = root.path("/lib/modules");
    let releases: Vec<String> = std::fs::read_dir(&lib_modules)
        .with_context(|| format!("{}: cannot list kernels", lib_modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for release in &releases {
        if weak_updates::unlink(root, &record.path, release)? {
            changed.insert(release.clone());
        }
    }
    let host = root.path(&record.path);
    if std::fs::symlink_metadata(&host).is_ok() {
        remove_synced(&host)?;
        changed.insert(record.built_for.clone());
    }
    // extra/<name>/ was bootkmod's; leave it only if something else lives there.
    if let Some(dir) = host.parent() {
        if dir.file_name().is_some_and(|n| n.to_string_lossy() == record.name)
            && dir.parent().and_then(Path::file_name).is_some_and(|n| n == "extra")
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    ledger.modules.remove(&record.name);
    for kernel in ledger.kernels.values_mut() {
        kernel.modules.remove(&record.name);
    }
    Ok(changed)
}
