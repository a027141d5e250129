//! `install` and `refresh`: keep prebuilt modules in the boot path of every kernel.
//!
//! Flow of [`install`], all under the ledger's [`Lock`]:
//!
//! 1. finish any operation a killed run left in the journal ([`recover`]);
//! 2. read each module, keep its bytes in the store, and record the whole operation as
//!    the ledger's journal (nothing outside `var/lib/bootkmod` has changed yet);
//! 3. place each module in `lib/modules/<built-for>/extra/<name>/` (RHEL's layout, what
//!    kmod RPMs use), atomically;
//! 4. [`refresh`] every installed kernel: check the whole set against it
//!    (`engines::compat`, the kernel loader's rules); compatible → weak-updates link
//!    (`operations::weak_updates`), incompatible → no link, and a locally built module
//!    of the same name (akmods/DKMS, in `extra/` or `updates/`) is used if *it* is
//!    compatible; native depmod for each kernel whose tree changed; the image step
//!    (`operations::images`);
//! 5. clear the journal.
//!
//! Every step is idempotent, so running the journaled operation again completes it.
//!
//! The image step injects by default; with [`ImageMethod::Regenerate`] the target's own
//! dracut rebuilds each image that needs the drivers (`operations::dracut`), after the
//! kernel's verdicts are saved in the ledger for its `90bootkmod` module to read.
//!
//! A dry run ([`InstallOptions::dry_run`]) goes through the same steps on a copy of the
//! ledger, with the given modules read from where they are, and writes nothing: not the
//! store, the journal, the lock file, links, indexes nor images. Its report says what
//! a real run would do.
//!
//! [`Policy`] decides whether a kernel that would boot without a root-critical module
//! is an error (`refuse`, the default) or a warning.

use crate::engines::compat::{self, Outcome, Verdict};
use crate::model::kernel::{self, Interest, Kernel, KernelOptions};
use crate::model::module::{name_from_path, sha256_hex, Module, ReadOptions};
use crate::model::root::Root;
use crate::model::tree::ModuleTree;
use crate::operations::atomic::AtomicSet;
use crate::operations::ledger::{
    create_dirs, failpoint, ImageMethod, Journal, KernelRecord, Ledger, Lock, ModuleOnKernel,
    ModuleRecord, Placement, StateDir,
};
use crate::operations::{depmod, images, remove, weak_updates};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How install (or a refresh) was asked to treat the modules and the system.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The modules are needed to mount root.
    pub root_critical: bool,
    /// How each image that needs the drivers gets them.
    pub images: ImageMethod,
    /// Report what would be done; change nothing under the root.
    pub dry_run: bool,
}

/// What to do when a kernel would boot without a root-critical module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Fail the operation (kernel-install and dracut stop), naming driver and kernel.
    Refuse,
    /// Say so and carry on.
    Warn,
}

/// Target-absolute path of the admin's configuration.
pub const CONFIG_FILE: &str = "/etc/bootkmod/bootkmod.conf";

impl Policy {
    /// `policy=warn|refuse` from `etc/bootkmod/bootkmod.conf` under the root (default
    /// refuse). Unknown values are an error: a typo must not silently mean "warn".
    pub fn read(root: &Root) -> Result<Policy> {
        let path = root.host(CONFIG_FILE)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::Refuse),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        };
        let mut policy = Policy::Refuse;
        for line in text.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("policy=") {
                policy = match value.trim() {
                    "warn" => Policy::Warn,
                    "refuse" => Policy::Refuse,
                    other => bail!("{}: policy={other} is not warn or refuse", path.display()),
                };
            }
        }
        Ok(policy)
    }
}

/// One kernel after a refresh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelOutcome {
    pub release: String,
    pub record: KernelRecord,
    /// depmod was run because the tree changed.
    pub depmod: bool,
    /// Root-critical modules this kernel would boot without, with the first reason.
    pub at_risk: Vec<String>,
}

/// What an install or refresh did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstallReport {
    pub installed: Vec<ModuleRecord>,
    pub kernels: Vec<KernelOutcome>,
    /// An interrupted operation that was completed first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
    pub policy: Policy,
    /// Nothing was changed: the report says what a real run would do.
    pub dry_run: bool,
}

impl InstallReport {
    /// The refusal message when policy forbids the outcome.
    pub fn refusal(&self) -> Option<String> {
        if self.policy == Policy::Warn {
            return None;
        }
        let risks: Vec<String> =
            self.kernels.iter().flat_map(|k| k.at_risk.iter().cloned()).collect();
        (!risks.is_empty()).then(|| {
            format!(
                "{} (policy=refuse; set policy=warn in {CONFIG_FILE} to allow)",
                risks.join("; ")
            )
        })
    }
}

/// Install module files under `root`. See the module overview.
pub fn install(root: &Root, files: &[PathBuf], opts: &InstallOptions) -> Result<InstallReport> {
    check_image_method(root, opts.images)?;
    // A root whose kernels are out of reach (its links name host paths) has none: say
    // so, rather than place a module under the built-for release's tree on its own.
    crate::model::kernel::releases_present(root)?;
    let state = StateDir::new(root);
    let lock = lock_for(&state, opts.dry_run)?;
    let mut ledger = state.load()?;
    let recovered = start(&state, &mut ledger, lock.as_ref(), opts.dry_run)?;

    let mut records = Vec::new();
    let mut given = BTreeMap::new();
    for file in files {
        let bytes =
            std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
        let module = Module::from_bytes(&bytes, ReadOptions::default())
            .with_context(|| format!("{}", file.display()))?;
        let name = module.name();
        let built_for = module
            .vermagic()
            .and_then(|v| v.split_whitespace().next())
            .filter(|r| !r.is_empty() && !r.contains('/') && *r != "." && *r != "..")
            .with_context(|| format!("{}: no usable vermagic to tell its kernel", file.display()))?
            .to_string();
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| name_from_path(Path::new(n)) == name)
            .unwrap_or_else(|| format!("{name}.ko"));
        let sha256 = sha256_hex(&bytes);
        if !opts.dry_run {
            state.store(&sha256, &bytes)?;
        }
        given.insert(sha256.clone(), module);
        records.push(ModuleRecord {
            path: Path::new("/lib/modules")
                .join(&built_for)
                .join("extra")
                .join(&name)
                .join(file_name),
            name,
            sha256,
            origin: file.display().to_string(),
            built_for,
            root_critical: opts.root_critical,
        });
    }
    let kernels = match &lock {
        Some(lock) if !opts.dry_run => {
            ledger.journal =
                Some(Journal::Install { modules: records.clone(), images: opts.images });
            state.save(&ledger, lock)?;
            failpoint("install:journaled");
            apply(&state, &mut ledger, lock)?
        }
        _ => {
            for record in &records {
                ledger.modules.insert(record.name.clone(), record.clone());
            }
            let run = Run { state: &state, lock: None, images: opts.images, dry_run: true, given };
            refresh(&run, &mut ledger, &[])?
        }
    };
    Ok(InstallReport {
        installed: records,
        kernels,
        recovered,
        policy: Policy::read(root)?,
        dry_run: opts.dry_run,
    })
}

/// Re-evaluate the ledger's modules for `kernels` (every installed kernel when empty):
/// what `kernel-install add` runs for a new kernel.
pub fn refresh_kernels(
    root: &Root,
    kernels: &[String],
    opts: &InstallOptions,
) -> Result<InstallReport> {
    check_image_method(root, opts.images)?;
    let state = StateDir::new(root);
    let lock = lock_for(&state, opts.dry_run)?;
    let mut ledger = state.load()?;
    let recovered = start(&state, &mut ledger, lock.as_ref(), opts.dry_run)?;
    let outcomes = match &lock {
        Some(lock) if !opts.dry_run => {
            ledger.journal =
                Some(Journal::Refresh { kernels: kernels.to_vec(), images: opts.images });
            state.save(&ledger, lock)?;
            apply(&state, &mut ledger, lock)?
        }
        _ => {
            let run = Run {
                state: &state,
                lock: None,
                images: opts.images,
                dry_run: true,
                given: BTreeMap::new(),
            };
            refresh(&run, &mut ledger, kernels)?
        }
    };
    Ok(InstallReport {
        installed: Vec::new(),
        kernels: outcomes,
        recovered,
        policy: Policy::read(root)?,
        dry_run: opts.dry_run,
    })
}

/// Fail before anything changes when the images cannot be updated as asked.
fn check_image_method(root: &Root, images: ImageMethod) -> Result<()> {
    match images {
        ImageMethod::Regenerate => crate::operations::dracut::find(root).map(drop),
        ImageMethod::Inject => Ok(()),
    }
}

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
                state
                    .root
                    .shown(
                        Path::new(crate::operations::ledger::STATE_DIR)
                            .join(crate::operations::ledger::LEDGER_FILE)
                    )
                    .display(),
                describe(journal)
            ),
            None => Ok(None),
        },
    }
}

/// What a journaled operation is, in words.
fn describe(journal: &Journal) -> String {
    match journal {
        Journal::Install { modules, .. } => format!(
            "install of {}",
            modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
        Journal::Remove { names } => format!("remove of {}", names.join(", ")),
        Journal::Refresh { .. } => "refresh".to_string(),
        Journal::ForgetKernel { release } => format!("removal of kernel {release}"),
    }
}

/// Complete the operation a killed run left in the journal, if any. Returns its name.
pub fn recover(state: &StateDir, ledger: &mut Ledger, lock: &Lock) -> Result<Option<String>> {
    let Some(journal) = ledger.journal.clone() else { return Ok(None) };
    let what = describe(&journal);
    tracing::warn!("completing the interrupted {what}");
    apply(state, ledger, lock)?;
    Ok(Some(what))
}

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
}

/// Run the journaled operation to its end and clear the journal.
fn apply(state: &StateDir, ledger: &mut Ledger, lock: &Lock) -> Result<Vec<KernelOutcome>> {
    let Some(journal) = ledger.journal.clone() else { return Ok(Vec::new()) };
    let root = &state.root;
    let run =
        |images| Run { state, lock: Some(lock), images, dry_run: false, given: BTreeMap::new() };
    let outcomes = match journal {
        Journal::Install { modules, images } => {
            for record in &modules {
                if let Some(old) = ledger.modules.get(&record.name).cloned() {
                    if old.path != record.path {
                        // Another file of that name was installed before: take it out.
                        remove::take_out(root, ledger, &old)?;
                    }
                }
                place(state, record)?;
                failpoint("install:placed");
                ledger.modules.insert(record.name.clone(), record.clone());
            }
            refresh(&run(images), ledger, &[])?
        }
        Journal::Refresh { kernels, images } => refresh(&run(images), ledger, &kernels)?,
        Journal::Remove { names } => {
            remove::apply(&run(ImageMethod::Inject), ledger, &names)?;
            Vec::new()
        }
        Journal::ForgetKernel { release } => {
            remove::forget_kernel_apply(root, ledger, &release)?;
            Vec::new()
        }
    };
    ledger.journal = None;
    state.save(ledger, lock)?;
    Ok(outcomes)
}

/// Put a module's stored bytes at its installed path, unless already there.
fn place(state: &StateDir, record: &ModuleRecord) -> Result<()> {
    if state.root.read(&record.path).is_ok_and(|b| sha256_hex(&b) == record.sha256) {
        return Ok(());
    }
    // The file itself is replaced (a link there too), never written through.
    let host = state.root.host_entry(&record.path)?;
    let bytes = state.stored(&record.sha256)?;
    let (dir, name) = match (host.parent(), host.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => bail!("{}: not a file path", host.display()),
    };
    create_dirs(&dir)?;
    AtomicSet::new(dir).file(name, bytes).commit().map(drop)
}

/// Check, link, fall back, depmod and update images for `only` kernels (all when empty).
/// Records the outcome in the ledger (not saved here).
/// Kernels `kernel-install remove` announced are left out of a refresh of every
/// kernel; naming one (kernel-install add) takes it back.
pub(crate) fn refresh(
    run: &Run,
    ledger: &mut Ledger,
    only: &[String],
) -> Result<Vec<KernelOutcome>> {
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
    let modules = records
        .iter()
        .map(|r| match run.given.get(&r.sha256) {
            Some(m) => Ok(m.clone()),
            None => Module::read(&root.host(&r.path)?, ReadOptions::default()),
        })
        .collect::<Result<Vec<_>>>()?;
    // (Dry run) is the installed file the recorded one? A new module is not there yet,
    // so inject cannot plan from the tree.
    let in_place = |r: &ModuleRecord| root.read(&r.path).is_ok_and(|b| sha256_hex(&b) == r.sha256);
    let opts = KernelOptions { interest: Some(Interest::of(&modules)), ..Default::default() };

    let mut outcomes = Vec::new();
    for release in releases {
        let kernel = Kernel::read(root, &release, &opts)?;
        let verdicts = compat::check_set(&kernel, &modules);
        let mut changed = false;
        let mut placed = true;
        let mut record = KernelRecord::default();
        let mut at_risk = Vec::new();
        for (r, verdict) in records.iter().zip(&verdicts) {
            let reasons = refusals(verdict);
            let mut entry = ModuleOnKernel {
                compatible: verdict.compatible,
                reasons: reasons.clone(),
                placement: Placement::Refused,
                link: None,
                fallback: None,
            };
            if r.built_for == release {
                entry.placement =
                    if verdict.compatible { Placement::Own } else { Placement::Refused };
                placed &= !run.dry_run || !verdict.compatible || in_place(r);
            } else if verdict.compatible {
                let (link, did) = weak_updates::link(root, &r.path, &release, run.dry_run)?;
                placed &= !run.dry_run || (!did && in_place(r));
                // A run killed between linking and depmod left the link unindexed.
                changed |= did || !indexed(root, &release, &link);
                entry.placement = Placement::WeakUpdates;
                entry.link = Some(link);
            } else {
                changed |= weak_updates::unlink(root, &r.path, &release, run.dry_run)?;
                if let Ok(link) = weak_updates::link_path(&r.path, &release) {
                    changed |= indexed(root, &release, &link);
                }
                if let Some(local) = local_fallback(root, &kernel, &r.name, &r.path)? {
                    entry.placement = Placement::LocalFallback;
                    entry.fallback = Some(local);
                }
            }
            if r.built_for == release {
                // The tree gained the file (install) or holds it unchanged: depmod only
                // when its indexes do not list it yet.
                changed |= !indexed(root, &release, &r.path);
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
        if changed && !run.dry_run {
            depmod::run(root, &release, false)
                .with_context(|| format!("depmod for kernel {release}"))?;
        }
        let usable: Vec<String> = record
            .modules
            .iter()
            .filter(|(_, m)| m.usable_on_boot())
            .map(|(name, _)| name.clone())
            .collect();
        let previous = ledger.kernels.get(&release).and_then(|k| k.image.clone());
        if let (ImageMethod::Regenerate, Some(lock)) = (run.images, run.lock) {
            if !run.dry_run && !usable.is_empty() {
                // The target's 90bootkmod asks `bootkmod status --dracut` for this
                // kernel's verdicts: they must be in the saved ledger before dracut runs.
                let pending = KernelRecord { image: previous.clone(), ..record.clone() };
                ledger.kernels.insert(release.clone(), pending);
                run.state.save(ledger, lock)?;
            }
        }
        let opts = images::UpdateOptions { method: run.images, dry_run: run.dry_run, placed };
        record.image = images::update(root, &release, &usable, previous.as_ref(), opts)?;
        ledger.kernels.insert(release.clone(), record.clone());
        outcomes.push(KernelOutcome { release, record, depmod: changed, at_risk });
    }
    Ok(outcomes)
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
    ours: &Path,
) -> Result<Option<PathBuf>> {
    let tree = ModuleTree::new(root.clone(), &kernel.release);
    let mut candidates = BTreeMap::new();
    for sub in ["updates", "extra"] {
        let dir = root.host(tree.dir().join(sub))?;
        if !dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        crate::model::tree::walk(root, &dir, &mut files)
            .with_context(|| format!("reading {}", dir.display()))?;
        for f in files.into_iter().filter(|f| name_from_path(f) == name) {
            if let Some(target) = root.target_of(&f) {
                if target != ours {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_to_refuse_and_rejects_typos() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        assert_eq!(Policy::read(&root).unwrap(), Policy::Refuse);
        std::fs::create_dir_all(root.host_entry("/etc/bootkmod").unwrap()).unwrap();
        std::fs::write(root.host_entry(CONFIG_FILE).unwrap(), "# comment\npolicy=warn\n").unwrap();
        assert_eq!(Policy::read(&root).unwrap(), Policy::Warn);
        std::fs::write(root.host_entry(CONFIG_FILE).unwrap(), "policy=warm\n").unwrap();
        let err = format!("{:#}", Policy::read(&root).unwrap_err());
        assert!(err.contains("bootkmod.conf: policy=warm is not warn or refuse"), "{err}");
    }
}
