//! The per-kernel step shared by `install`, `install --refresh` and `remove`: check the
//! ledger's modules against each kernel, link or fall back, depmod, and bring the image
//! up to date — one kernel at a time, each on its own.
//!
//! Flow of [`refresh`]: put back any installed module file that is missing or altered
//! from the store ([`place`]: the store holds the recorded sha256); read the modules;
//! then for every kernel (`KernelStep`): check every build of every driver as one set
//! (`engines::compat`, the kernel loader's rules) and choose one build per driver
//! (`engines::choose`: the kernel's own when it loads, else the newest that loads);
//! another kernel's build → weak-updates link (`operations::weak_updates`), the links
//! of the driver's other builds go; none usable → no link, and a locally built module
//! of the same name (akmods/DKMS, in `extra/` or `updates/`) is used if *it* is
//! compatible; native depmod when the tree changed; the image step
//! (`operations::images`).
//!
//! Fault isolation: a kernel whose step fails (an image serving another release, not an
//! initramfs, no space, a depmod or dracut failure) is recorded in the ledger with the
//! reason ([`KernelRecord::failure`]) and the other kernels go on. The next refresh of
//! that kernel, once the cause is fixed, completes it (depmod included).

use crate::engines::choose::{self, Candidate};
use crate::engines::compat::{self, Outcome, Verdict};
use crate::model::kernel::{self, ImageExportsUse, Interest, Kernel, KernelOptions};
use crate::model::module::{name_from_path, sha256_hex, Module, ReadOptions};
use crate::model::root::Root;
use crate::model::tree::ModuleTree;
use crate::operations::atomic::AtomicSet;
use crate::operations::ledger::{
    create_dirs, Build, ImageMethod, KernelRecord, Ledger, Lock, ModuleOnKernel, ModuleRecord,
    Placement, StateDir,
};
use crate::operations::{depmod, images, weak_updates};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a refresh may do, and with what.
pub(crate) struct Run<'a> {
    pub state: &'a StateDir,
    /// Held by a real run: regenerating saves the ledger before dracut reads it.
    pub lock: Option<&'a Lock>,
    pub images: ImageMethod,
    /// Write nothing; report what would be done.
    pub dry_run: bool,
    /// A dry run's modules from the command line, by sha256: not placed, so read here.
    pub given: BTreeMap<String, Module>,
    /// Completing an interrupted operation: a run killed while depmod renamed its index
    /// set in may have left `modules.dep` new and `modules.dep.bin` old, so no kernel's
    /// indexes are trusted; depmod rewrites only the files whose bytes differ.
    pub resumed: bool,
    /// Files of the builds being removed (target-absolute; `remove --version`): no
    /// candidates, not put back, no local fallback; their links go, and a kernel's
    /// own one is deleted before its depmod.
    pub leaving: Vec<PathBuf>,
}

/// One kernel after a refresh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelOutcome {
    pub release: String,
    pub record: KernelRecord,
    /// depmod rewrote the tree's indexes (dry run: would run because the tree changes).
    pub depmod: bool,
    /// The image's bytes changed (dry run: would change).
    pub image_changed: bool,
    /// Root-critical modules this kernel would boot without, with the first reason.
    pub at_risk: Vec<String>,
    /// This kernel could not be completed: the step and the reason (also in the
    /// ledger); the other kernels went on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// What a refresh did besides the kernels.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refreshed {
    pub kernels: Vec<KernelOutcome>,
    /// Installed module files put back from the store (target-absolute).
    pub restored: Vec<PathBuf>,
    /// Files of the trees that could not be read, each named (left out, not a stop).
    pub warnings: Vec<String>,
}

/// Put a build's stored bytes at its installed path, unless already there. Returns
/// whether it wrote (the file was missing or altered).
pub(crate) fn place(state: &StateDir, record: &Build) -> Result<bool> {
    if state.root.read(&record.path).is_ok_and(|b| sha256_hex(&b) == record.sha256) {
        return Ok(false);
    }
    // The file itself is replaced (a link there too), never written through.
    let host = state.root.host_entry(&record.path)?;
    let bytes = state.stored(&record.sha256)?;
    let (dir, name) = match (host.parent(), host.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => bail!("{}: not a file path", host.display()),
    };
    create_dirs(&dir)?;
    // A dangling link or other non-file in the way (an erased package's leftover)
    // would make the rename land in the wrong place: take it away first.
    if std::fs::symlink_metadata(&host).is_ok_and(|m| !m.is_file()) {
        crate::operations::atomic::remove_synced(&host)?;
    }
    AtomicSet::new(dir).file(name, bytes).commit()?;
    Ok(true)
}

/// Check, link, fall back, depmod and update images for `only` kernels (all when empty).
/// Records the outcome in the ledger (not saved here); a kernel that fails is recorded
/// with its reason and the others go on.
/// Kernels `kernel-install remove` announced are left out of a refresh of every
/// kernel; naming one (kernel-install add) takes it back.
pub(crate) fn refresh(run: &Run, ledger: &mut Ledger, only: &[String]) -> Result<Refreshed> {
    let root = &run.state.root;
    let installed = kernel::releases(root)?;
    ledger.kernels.retain(|k, _| installed.contains(k));
    ledger.removed_kernels.retain(|k| installed.contains(k) && !only.contains(k));
    let releases: Vec<String> = installed
        .into_iter()
        .filter(|r| {
            if only.is_empty() {
                !ledger.removed_kernels.contains(r)
            } else {
                only.contains(r)
            }
        })
        .collect();
    let records: Vec<ModuleRecord> = ledger.modules.values().cloned().collect();
    // Every build of every driver (issue 21), checked together as one set on each
    // kernel; the per-kernel choice among a driver's builds is `engines::choose`'s.
    // Builds being removed are no candidates, and their files are not put back.
    let builds: Vec<(String, Build)> = records
        .iter()
        .flat_map(|r| r.builds.iter().map(|b| (r.name.clone(), b.clone())))
        .filter(|(_, b)| !run.leaving.contains(&b.path))
        .collect();
    let mut done = Refreshed::default();
    // (Dry run) is the installed file the recorded one? A new module is not there yet,
    // so inject cannot plan from the tree.
    let in_place = |r: &Build| root.read(&r.path).is_ok_and(|b| sha256_hex(&b) == r.sha256);
    let mut modules = Vec::new();
    for (name, r) in &builds {
        if let Some(m) = run.given.get(&r.sha256) {
            modules.push(m.clone());
            continue;
        }
        // A file erased (by a package manager) or altered since: the store has the
        // recorded bytes. A dry run reads them from there and says it would put them back.
        if !in_place(r) {
            if run.dry_run {
                let bytes = run.state.stored(&r.sha256)?;
                modules.push(
                    Module::from_bytes(&bytes, ReadOptions::default())
                        .with_context(|| format!("stored copy of {name}"))?,
                );
                done.restored.push(r.path.clone());
                continue;
            }
            if place(run.state, r)? {
                tracing::warn!("{}: missing or altered; put back from the store", r.path.display());
                done.restored.push(r.path.clone());
            }
        }
        modules.push(Module::read(&root.host(&r.path)?, ReadOptions::default())?);
    }
    // The verdicts are recorded and acted on: judge by the kernel's own export table
    // whenever its image can be read, and say when its symvers disagrees.
    let opts = KernelOptions {
        interest: Some(Interest::of(&modules)),
        image_exports: ImageExportsUse::Compare,
        ..Default::default()
    };
    let placed_all = done.restored.is_empty() || !run.dry_run;
    for release in releases {
        let previous = ledger.kernels.get(&release).cloned().unwrap_or_default();
        let mut record = KernelRecord {
            image: previous.image.clone(),
            more_images: previous.more_images.clone(),
            ..KernelRecord::default()
        };
        let step = KernelStep {
            run,
            release: &release,
            records: &records,
            builds: &builds,
            modules: &modules,
            opts: &opts,
            previous: &previous,
            placed_all,
        };
        let outcome = match step.apply(ledger, &mut record, &mut done.warnings) {
            Ok(outcome) => outcome,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!("kernel {release} not completed: {reason}");
                record.failure = Some(reason.clone());
                let at_risk = records
                    .iter()
                    .filter(|r| r.root_critical)
                    .map(|r| {
                        format!(
                            "kernel {release} would boot without root-critical driver {}: not completed: {reason}",
                            r.name
                        )
                    })
                    .collect();
                KernelOutcome {
                    release: release.clone(),
                    record: record.clone(),
                    depmod: false,
                    image_changed: false,
                    at_risk,
                    failure: Some(reason),
                }
            }
        };
        ledger.kernels.insert(release, outcome.record.clone());
        done.kernels.push(outcome);
    }
    Ok(done)
}

/// One kernel's part of a refresh.
struct KernelStep<'a> {
    run: &'a Run<'a>,
    release: &'a str,
    records: &'a [ModuleRecord],
    /// Every build of every driver, with the driver's name, in the order of `modules`.
    builds: &'a [(String, Build)],
    modules: &'a [Module],
    opts: &'a KernelOptions,
    previous: &'a KernelRecord,
    /// (Dry run) every module file is where the ledger says.
    placed_all: bool,
}

impl KernelStep<'_> {
    /// Check, link, depmod, image; `record` holds what is done so far when it fails.
    fn apply(
        &self,
        ledger: &mut Ledger,
        record: &mut KernelRecord,
        warnings: &mut Vec<String>,
    ) -> Result<KernelOutcome> {
        let (run, release) = (self.run, self.release);
        let root = &run.state.root;
        let kernel = Kernel::read(root, release, self.opts)
            .with_context(|| format!("reading kernel {release}"))?;
        warnings.extend(kernel.warnings.iter().map(|w| format!("kernel {release}: {w}")));
        let verdicts = compat::check_set(&kernel, self.modules);
        // A kernel a failed run left behind gets its indexes rewritten whatever else.
        let mut changed = self.previous.failure.is_some() || run.resumed;
        let mut placed = self.placed_all;
        let mut at_risk = Vec::new();
        let in_place = |b: &Build| root.read(&b.path).is_ok_and(|f| sha256_hex(&f) == b.sha256);
        let all_refusals: Vec<Vec<String>> = verdicts.iter().map(refusals).collect();
        for r in self.records {
            let mine: Vec<usize> =
                (0..self.builds.len()).filter(|&i| self.builds[i].0 == r.name).collect();
            let candidates: Vec<Candidate> = mine
                .iter()
                .map(|&i| Candidate { build: &self.builds[i].1, refusals: &all_refusals[i] })
                .collect();
            let choice = choose::choose(release, &candidates);
            let serving = choice.serving.map(|c| candidates[c].build);
            let reported = choice.reported.map(|c| candidates[c]);
            let reasons = reported.map(|c| c.refusals.to_vec()).unwrap_or_default();
            let mut entry = ModuleOnKernel {
                compatible: serving.is_some(),
                reasons: reasons.clone(),
                placement: Placement::Refused,
                link: None,
                fallback: None,
                build: reported.map(|c| c.build.sha256.clone()),
                passed_over: choice.passed_over,
            };
            // The one weak-updates link this kernel keeps for the driver, if any; the
            // links of its other builds go (they may share the link's name).
            let keep_link = match serving {
                Some(b) if b.built_for != release => {
                    Some(weak_updates::link_path(&b.path, release)?)
                }
                _ => None,
            };
            for b in &r.builds {
                if b.built_for == release && run.leaving.contains(&b.path) {
                    // A build being removed, in its own kernel's extra/: deleted here,
                    // before this kernel's depmod, so the indexes go from old to new
                    // in one step.
                    let host = root.host_entry(&b.path)?;
                    let present = std::fs::symlink_metadata(&host).is_ok();
                    if present && !run.dry_run {
                        crate::operations::atomic::remove_synced(&host)?;
                    }
                    changed |= present || indexed(root, release, &b.path);
                    continue;
                }
                if b.built_for == release {
                    // The tree gained the file (install) or holds it unchanged: depmod
                    // only when its indexes do not list it yet.
                    changed |= !indexed(root, release, &b.path);
                    continue;
                }
                let link = weak_updates::link_path(&b.path, release)?;
                if keep_link.as_ref() != Some(&link) {
                    changed |= weak_updates::unlink(root, &b.path, release, run.dry_run)?;
                    changed |= indexed(root, release, &link);
                }
            }
            match serving {
                Some(b) if b.built_for == release => {
                    entry.placement = Placement::Own;
                    placed &= !run.dry_run || in_place(b);
                }
                Some(b) => {
                    let (link, did) = weak_updates::link(root, &b.path, release, run.dry_run)?;
                    placed &= !run.dry_run || (!did && in_place(b));
                    // A run killed between linking and depmod left the link unindexed.
                    changed |= did || !indexed(root, release, &link);
                    entry.placement = Placement::WeakUpdates;
                    entry.link = Some(link);
                }
                None => {
                    let ours: Vec<&Path> = r
                        .builds
                        .iter()
                        .map(|b| b.path.as_path())
                        .chain(run.leaving.iter().map(PathBuf::as_path))
                        .collect();
                    if let Some(local) = local_fallback(root, &kernel, &r.name, &ours)? {
                        entry.placement = Placement::LocalFallback;
                        entry.fallback = Some(local);
                    }
                }
            }
            if r.root_critical && !entry.usable_on_boot() {
                at_risk.push(format!(
                    "kernel {release} would boot without root-critical driver {}: {}",
                    r.name,
                    reasons.first().map_or("incompatible", String::as_str)
                ));
            }
            record.modules.insert(r.name.clone(), entry);
        }
        let mut depmod_wrote = changed;
        if changed && !run.dry_run {
            let report = depmod::run(root, release, false)
                .with_context(|| format!("depmod for kernel {release}"))?;
            depmod_wrote = !report.written.is_empty();
        }
        let usable: Vec<String> = record
            .modules
            .iter()
            .filter(|(_, m)| m.usable_on_boot())
            .map(|(name, _)| name.clone())
            .collect();
        let previous = self.previous.image.clone();
        if let (ImageMethod::Regenerate, Some(lock)) = (run.images, run.lock) {
            if !run.dry_run && !usable.is_empty() {
                // The target's 90bootkmod asks `bootkmod status --dracut` for this
                // kernel's verdicts: they must be in the saved ledger before dracut runs.
                let pending = KernelRecord {
                    image: previous.clone(),
                    more_images: self.previous.more_images.clone(),
                    ..record.clone()
                };
                ledger.kernels.insert(release.to_string(), pending);
                run.state.save(ledger, lock)?;
            }
        }
        let opts = images::UpdateOptions { method: run.images, dry_run: run.dry_run, placed };
        let updated = images::update(root, release, &usable, previous.as_ref(), opts)
            .with_context(|| format!("image of kernel {release}"))?;
        let mut image_changed = updated.as_ref().is_some_and(|u| u.changed);
        record.image = updated.map(|u| u.record);
        // Every other image that boots the kernel gets the same drivers: an image
        // bootkmod leaves out boots without them.
        let primary = record.image.as_ref().map(|i| i.path.clone());
        let mut more = Vec::new();
        for path in images::others(root, release, primary.as_deref()) {
            let before = self.previous.more_images.iter().find(|i| i.path == path);
            let updated =
                images::update_at(root, release, Some(path.clone()), &usable, before, opts)
                    .with_context(|| format!("image {} of kernel {release}", path.display()))?;
            if let Some(u) = updated {
                image_changed |= u.changed;
                more.push(u.record);
            }
        }
        record.more_images = more;
        // An image the drivers did not go into (a signed UKI; an injection that ended
        // otherwise) boots the kernel without them.
        let critical: Vec<&str> = self
            .records
            .iter()
            .filter(|r| r.root_critical && usable.contains(&r.name))
            .map(|r| r.name.as_str())
            .collect();
        if !critical.is_empty() {
            for image in record.image.iter().chain(&record.more_images).filter(|i| !i.updated) {
                at_risk.push(format!(
                    "kernel {release} would boot without root-critical driver {} from {}: {}",
                    critical.join(", "),
                    image.path.display(),
                    image.note.as_deref().unwrap_or("not updated")
                ));
            }
        }
        Ok(KernelOutcome {
            release: release.to_string(),
            record: record.clone(),
            depmod: depmod_wrote,
            image_changed,
            at_risk,
            failure: None,
        })
    }
}

/// The refusal messages of a verdict, the kernel's first one first.
fn refusals(verdict: &Verdict) -> Vec<String> {
    verdict
        .reasons
        .iter()
        .filter(|r| r.outcome == Outcome::Refused)
        .map(|r| r.message.clone())
        .collect()
}

/// Does the tree's modules.dep already list `module` (target-absolute)?
pub(crate) fn indexed(root: &Root, release: &str, module: &Path) -> bool {
    let dep = root.read(Path::new("/lib/modules").join(release).join("modules.dep"));
    let rel = module.strip_prefix(Path::new("/lib/modules").join(release)).ok();
    match (dep.map(|b| String::from_utf8_lossy(&b).into_owned()), rel) {
        (Ok(text), Some(rel)) => {
            let want = format!("{}:", rel.display());
            text.lines().any(|l| l.starts_with(&want))
        }
        _ => false,
    }
}

/// A module of the same name built locally for this kernel (akmods/DKMS put them in
/// `extra/` or `updates/`), not bootkmod's own file, that is compatible.
fn local_fallback(
    root: &Root,
    kernel: &Kernel,
    name: &str,
    ours: &[&Path],
) -> Result<Option<PathBuf>> {
    let tree = ModuleTree::new(root.clone(), &kernel.release);
    let mut candidates = BTreeMap::new();
    for sub in ["updates", "extra"] {
        let dir = root.host(tree.dir().join(sub))?;
        if !dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        crate::model::tree::walk(root, &dir, &mut files, &mut Vec::new())
            .with_context(|| format!("reading {}", dir.display()))?;
        for f in files.into_iter().filter(|f| name_from_path(f) == name) {
            if let Some(target) = root.target_of(&f) {
                if !ours.contains(&target.as_path()) {
                    candidates.insert(target, f);
                }
            }
        }
    }
    for (target, host) in candidates {
        let Ok(module) = Module::read(&host, ReadOptions::default()) else { continue };
        if compat::check(kernel, &module).compatible {
            return Ok(Some(target));
        }
    }
    Ok(None)
}

/// Never worse off (issue 21): the kernels that would lose a usable build of a
/// root-critical driver they have now (per the ledger `before`), one message each
/// naming kernel, driver and reason. `plan` is a dry refresh of the ledger as an
/// install or a removal of builds would leave it.
pub(crate) fn guard(before: &Ledger, plan: &[KernelOutcome]) -> Vec<String> {
    let mut lost = Vec::new();
    for outcome in plan {
        let Some(had) = before.kernels.get(&outcome.release) else { continue };
        for (name, was) in &had.modules {
            let critical = before.modules.get(name).is_some_and(|m| m.root_critical);
            if !critical || !was.usable_on_boot() {
                continue;
            }
            let now = outcome.record.modules.get(name);
            if now.is_some_and(ModuleOnKernel::usable_on_boot) {
                continue;
            }
            let why = now
                .and_then(|n| n.reasons.first().cloned())
                .unwrap_or_else(|| "no build of it would be left".to_string());
            lost.push(format!(
                "kernel {} would lose root-critical driver {name}, which it has now: {why}",
                outcome.release
            ));
        }
    }
    lost
}
