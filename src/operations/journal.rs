//! The journaled steps of every writing operation, and how a run ends them.
//!
//! Before an operation changes anything outside `var/lib/bootkmod`, it records itself
//! as the ledger's [`Journal`]; every step below is idempotent, so:
//!
//! - **interrupted** (the run was killed or crashed: the journal is still there): the
//!   next run completes it first ([`start`], roll forward);
//! - **failed** (the run stopped on an error): [`apply`] records it in
//!   [`Ledger::failed`] with the error and the command that completes it, and releases
//!   the journal, so later runs — a `remove` above all — are not blocked by retrying it.
//!   The next operation that covers it ([`Journal::covers`]) and ends without failures
//!   clears the record;
//! - **completed with failures**: a kernel whose part failed is recorded in its
//!   [`KernelRecord::failure`](crate::model::ledger::KernelRecord) and the other kernels
//!   went on (`operations::refresh`); the journal ends.
//!
//! `install` and `remove` are front ends above this module; both need every kind of
//! step here, because either may find any kind of journal left behind.

use crate::model::root::Root;
use crate::operations::atomic::remove_synced;
use crate::operations::ledger::{
    failpoint, Build, BuildRef, FailedOperation, ImageMethod, Journal, Ledger, Lock, StateDir,
    LEDGER_FILE, STATE_DIR,
};
use crate::operations::refresh::{self, indexed, place, KernelOutcome, Refreshed, Run};
use crate::operations::{depmod, images, weak_updates};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The lock for a run: taken (and its file created) for a real run; for a dry run only
/// when the lock file exists, so that a dry run creates nothing.
pub(crate) fn lock_for(state: &StateDir, dry_run: bool) -> Result<Option<Lock>> {
    if dry_run {
        state.lock_if_present()
    } else {
        state.lock().map(Some)
    }
}

/// Before an operation: a real run completes what a killed run left in the journal
/// (returning its name); a dry run cannot tell what that would change, so it refuses.
/// Completing it may fail in turn: that is recorded (see the module overview) and the
/// requested operation goes on.
pub(crate) fn start(
    state: &StateDir,
    ledger: &mut Ledger,
    lock: Option<&Lock>,
    dry_run: bool,
) -> Result<Option<String>> {
    match (lock, dry_run) {
        (Some(lock), false) => recover(state, ledger, lock),
        _ => match &ledger.journal {
            Some(journal) => bail!(
                "{}: an interrupted {} is pending; run without --dry-run to complete it first",
                state.root.shown(Path::new(STATE_DIR).join(LEDGER_FILE)).display(),
                journal.describe()
            ),
            None => Ok(None),
        },
    }
}

/// Complete the operation a killed run left in the journal, if any. Returns its name.
pub fn recover(state: &StateDir, ledger: &mut Ledger, lock: &Lock) -> Result<Option<String>> {
    let Some(journal) = ledger.journal.clone() else { return Ok(None) };
    let what = journal.describe();
    tracing::warn!("completing the interrupted {what}");
    match run_to_end(state, ledger, lock, true) {
        Ok(_) => Ok(Some(what)),
        Err(e) => {
            // Recorded and released by apply: the requested operation goes on.
            tracing::warn!("the interrupted {what} failed again: {e:#} (see bootkmod status)");
            Ok(None)
        }
    }
}

/// What running the journal did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub refreshed: Refreshed,
    /// (remove) Kernels whose indexes depmod rewrote.
    pub depmod: Vec<String>,
    /// (remove) What became of each image bootkmod had changed.
    pub images: Vec<(PathBuf, images::Undone)>,
    /// (remove --kernel) What forgetting the kernel did.
    pub forgotten: Option<Forgotten>,
}

impl Applied {
    /// Kernels that could not be completed, with the reason.
    pub fn failures(&self) -> Vec<(&str, &str)> {
        self.refreshed
            .kernels
            .iter()
            .filter_map(|k| Some((k.release.as_str(), k.failure.as_deref()?)))
            .collect()
    }
}

/// Run the journaled operation to its end and clear the journal. On an error the
/// operation is recorded as failed and the journal released (the error is returned).
pub(crate) fn apply(state: &StateDir, ledger: &mut Ledger, lock: &Lock) -> Result<Applied> {
    run_to_end(state, ledger, lock, false)
}

/// [`apply`], or (`resumed`) the completion of a journal an earlier run left pending.
fn run_to_end(
    state: &StateDir,
    ledger: &mut Ledger,
    lock: &Lock,
    resumed: bool,
) -> Result<Applied> {
    let Some(journal) = ledger.journal.clone() else { return Ok(Applied::default()) };
    match run_journal(state, ledger, lock, &journal, resumed) {
        Ok(applied) => {
            ledger.journal = None;
            let failures = applied.failures();
            if failures.is_empty() {
                if ledger.failed.as_ref().is_some_and(|f| journal.covers(&f.journal)) {
                    ledger.failed = None;
                }
            } else {
                tracing::warn!(
                    "{} completed with failures: {}",
                    journal.describe(),
                    failures
                        .iter()
                        .map(|(k, why)| format!("kernel {k}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            state.save(ledger, lock)?;
            Ok(applied)
        }
        Err(e) => {
            ledger.journal = None;
            ledger.failed = Some(FailedOperation {
                operation: journal.describe(),
                journal: journal.clone(),
                error: format!("{e:#}"),
                next: journal.next_command(),
            });
            // If even this cannot be saved, the journal stays pending: the next run
            // completes it, as after a crash.
            if let Err(save) = state.save(ledger, lock) {
                tracing::warn!("cannot record the failure: {save:#}");
            }
            Err(e)
        }
    }
}

fn run_journal(
    state: &StateDir,
    ledger: &mut Ledger,
    lock: &Lock,
    journal: &Journal,
    resumed: bool,
) -> Result<Applied> {
    let root = &state.root;
    let run = |images| Run {
        state,
        lock: Some(lock),
        images,
        dry_run: false,
        given: BTreeMap::new(),
        resumed,
        leaving: Vec::new(),
    };
    let mut applied = Applied::default();
    match journal {
        Journal::Install { modules, images } => {
            // Builds are added beside the ones kept (issue 21); the refresh chooses one
            // per kernel.
            for record in modules {
                for build in &record.builds {
                    place(state, build)?;
                }
                failpoint("install:placed");
                ledger.add_builds(record);
            }
            applied.refreshed = refresh::refresh(&run(*images), ledger, &[])?;
        }
        Journal::Refresh { kernels, images } => {
            applied.refreshed = refresh::refresh(&run(*images), ledger, kernels)?;
        }
        Journal::Remove { names } => {
            applied = remove_modules(&run(ImageMethod::Inject), ledger, names)?;
        }
        Journal::RemoveBuilds { builds } => {
            applied = remove_builds(&run(ImageMethod::Inject), ledger, builds)?;
        }
        Journal::ForgetKernel { release } => {
            applied.forgotten = Some(forget_kernel(root, ledger, release)?);
        }
    }
    Ok(applied)
}

/// The journaled part of `remove`: idempotent. A kernel whose depmod or image undo
/// fails is recorded with the reason; the others go on.
pub(crate) fn remove_modules(run: &Run, ledger: &mut Ledger, names: &[String]) -> Result<Applied> {
    let root = &run.state.root;
    let mut changed: BTreeSet<String> = BTreeSet::new();
    // Where the drivers sit in each kernel's tree, read before they leave the ledger: what
    // an image another tool rebuilt may hold of them.
    let placed = images::placed_in_trees(ledger, names);
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
            changed.extend(take_out(root, name, build)?);
        }
        // Only once every build is out, so a failure leaves it recorded for `remove`
        // to finish.
        forget(ledger, name, None);
        failpoint("remove:unlinked");
    }
    let installed = crate::model::kernel::releases(root)?;
    let mut applied = Applied::default();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for release in changed.iter().filter(|r| installed.contains(r)) {
        match depmod::run(root, release, false) {
            Ok(report) if !report.written.is_empty() => applied.depmod.push(release.clone()),
            Ok(_) => {}
            Err(e) => {
                failed.insert(release.clone(), format!("depmod for kernel {release}: {e:#}"));
            }
        }
    }
    // Images: undo what bootkmod changed, never reverting another writer (see
    // images::undo). Other modules still installed are re-offered by the refresh below.
    for (release, image) in ledger
        .kernels
        .iter_mut()
        .flat_map(|(release, kernel)| kernel.images_mut().map(move |i| (release, i)))
        .filter(|(_, i)| i.updated)
    {
        let rels = placed.get(release).map(Vec::as_slice).unwrap_or_default();
        let undone = images::undo(root, release, image, rels, false).and_then(|undone| {
            image.note = Some(undone.note().into());
            image.updated = false;
            image.method = None;
            if undone != images::Undone::Restored {
                // A backup from before another tool's rebuild must never be restored.
                image.backup = None;
            }
            if root.host(&image.path).is_ok_and(|h| h.is_file()) {
                image.sha256 = images::digest(root, &image.path)?;
            }
            Ok(undone)
        });
        match undone {
            Ok(undone) => applied.images.push((image.path.clone(), undone)),
            Err(e) => {
                failed
                    .entry(release.clone())
                    .or_insert_with(|| format!("image {}: {e:#}", image.path.display()));
            }
        }
    }
    for (release, why) in &failed {
        tracing::warn!("kernel {release} not completed: {why}");
        ledger.kernels.entry(release.clone()).or_default().failure = Some(why.clone());
    }
    // What remains installed goes back into the restored images; a kernel left failed
    // gets its indexes rewritten.
    let failures = ledger.kernels.values().any(|k| k.failure.is_some());
    if !ledger.modules.is_empty() || failures {
        let only: Vec<String> = if ledger.modules.is_empty() {
            ledger
                .kernels
                .iter()
                .filter(|(_, k)| k.failure.is_some())
                .map(|(r, _)| r.clone())
                .collect()
        } else {
            Vec::new()
        };
        // A kernel the refresh completes (depmod again) is no longer failed.
        applied.refreshed = refresh::refresh(run, ledger, &only)?;
    } else {
        applied.refreshed.kernels = failed
            .into_iter()
            .map(|(release, why)| KernelOutcome {
                record: ledger.kernels.get(&release).cloned().unwrap_or_default(),
                release,
                depmod: false,
                image_changed: false,
                at_risk: Vec::new(),
                failure: Some(why),
            })
            .collect();
    }
    Ok(applied)
}

/// What forgetting a kernel did.
#[derive(Debug, Default)]
pub(crate) struct Forgotten {
    /// Directories removed because they were left empty (target-absolute).
    pub pruned: Vec<PathBuf>,
    /// depmod ran because the tree is still a kernel's.
    pub depmod: bool,
}

/// The journaled part of `remove --kernel`: idempotent.
pub(crate) fn forget_kernel(root: &Root, ledger: &mut Ledger, release: &str) -> Result<Forgotten> {
    let mut unlinked = false;
    for b in ledger.modules.values().flat_map(|m| &m.builds) {
        unlinked |= weak_updates::unlink(root, &b.path, release, false)?;
    }
    failpoint("remove-kernel:unlinked");
    let mut done = Forgotten::default();
    let installed = crate::model::kernel::releases(root).unwrap_or_default();
    let still_a_kernel = installed.iter().any(|k| k == release);
    // Kernels announced gone earlier whose trees are now deleted need no more mention.
    ledger.removed_kernels.retain(|k| installed.contains(k));
    if still_a_kernel {
        // kernel-install runs before the package deletes the files: keep the tree's
        // indexes true to it meanwhile, and remember the kernel is going.
        // A run killed after unlinking left the indexes listing the links.
        let listed = ledger.modules.values().flat_map(|m| &m.builds).any(|b| {
            weak_updates::link_path(&b.path, release).is_ok_and(|l| indexed(root, release, &l))
        });
        if unlinked || listed {
            depmod::run(root, release, false)
                .with_context(|| format!("depmod for kernel {release}"))?;
            done.depmod = true;
        }
        ledger.removed_kernels.insert(release.to_string());
    } else {
        done.pruned = weak_updates::prune_gone_tree(root, release)?;
    }
    let backups: Vec<PathBuf> = ledger
        .kernels
        .get(release)
        .into_iter()
        .flat_map(|k| k.images())
        .filter_map(|i| i.backup.clone())
        .filter(|b| root.host_entry(b).is_ok_and(|h| std::fs::symlink_metadata(h).is_ok()))
        .collect();
    for backup in &backups {
        remove_synced(&root.host_entry(backup)?)?;
    }
    ledger.kernels.remove(release);
    Ok(done)
}

/// The journaled part of `remove --version/--sha256/--unused`: idempotent. Every kernel
/// is refreshed with the builds left as the only candidates: links re-pointed (a
/// link is replaced, never removed and made again), a removed build's links and its
/// own kernel's file taken out before that kernel's depmod, images follow by
/// injection — each kernel isolated as in any refresh. Then what is left of each
/// build (its file in a tree that is no kernel's, links in kernels the refresh left
/// out) goes, and it is forgotten.
pub(crate) fn remove_builds(
    run: &Run,
    ledger: &mut Ledger,
    builds: &[BuildRef],
) -> Result<Applied> {
    let root = &run.state.root;
    let leaving: Vec<(String, Build)> = builds
        .iter()
        .filter_map(|r| {
            Some((r.name.clone(), ledger.modules.get(&r.name)?.build(&r.sha256)?.clone()))
        })
        .collect();
    let choose_again = Run {
        state: run.state,
        lock: run.lock,
        images: run.images,
        dry_run: run.dry_run,
        given: run.given.clone(),
        resumed: run.resumed,
        leaving: leaving.iter().map(|(_, b)| b.path.clone()).collect(),
    };
    let mut applied =
        Applied { refreshed: refresh::refresh(&choose_again, ledger, &[])?, ..Applied::default() };
    failpoint("remove:unlinked");
    // A kernel the refresh could not complete may still hold a build being removed (its
    // link, its own file): that build stays, recorded, until the removal is run again.
    let failed: Vec<(&str, &str)> = applied.failures();
    let mut held = Vec::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for (name, build) in &leaving {
        let holder = failed.iter().find(|(k, _)| {
            weak_updates::link_path(&build.path, k)
                .is_ok_and(|link| crate::model::ledger::is_linked(root, &link, &build.path))
                || (build.built_for == *k && root.read(&build.path).is_ok())
        });
        if let Some((k, why)) = holder {
            held.push(format!(
                "build {} of {name} kept: kernel {k} not completed: {why}",
                build.label()
            ));
            continue;
        }
        changed.extend(take_out(root, name, build)?);
        forget(ledger, name, Some(&build.sha256));
    }
    let installed = crate::model::kernel::releases(root)?;
    for release in changed.iter().filter(|r| installed.contains(r)) {
        match depmod::run(root, release, false) {
            Ok(report) if !report.written.is_empty() => applied.depmod.push(release.clone()),
            Ok(_) => {}
            Err(e) => {
                let why = format!("depmod for kernel {release}: {e:#}");
                tracing::warn!("kernel {release} not completed: {why}");
                ledger.kernels.entry(release.clone()).or_default().failure = Some(why);
            }
        }
    }
    if !held.is_empty() {
        // Recorded as failed (with the command that completes it): the rest is done.
        bail!("{}", held.join("; "));
    }
    Ok(applied)
}

/// Drop a driver (`sha256` `None`) or one build of it from the ledger; a driver left
/// without builds goes, with its per-kernel entries.
pub(crate) fn forget(ledger: &mut Ledger, name: &str, sha256: Option<&str>) {
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

/// Unlink one build of driver `name` everywhere (only links that point at it: another
/// build may hold the same link name) and delete its file. Returns the kernels whose
/// trees changed (depmod and the ledger are the caller's).
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
