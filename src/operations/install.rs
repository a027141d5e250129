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
//! [`Policy`] decides whether a kernel that would boot without a root-critical module
//! is an error (`refuse`, the default) or a warning.

use crate::engines::compat::{self, Outcome, Verdict};
use crate::model::kernel::{self, Interest, Kernel, KernelOptions};
use crate::model::module::{name_from_path, sha256_hex, Module, ReadOptions};
use crate::model::root::Root;
use crate::model::tree::ModuleTree;
use crate::operations::atomic::AtomicSet;
use crate::operations::ledger::{
    create_dirs, failpoint, Journal, KernelRecord, Ledger, Lock, ModuleOnKernel, ModuleRecord,
    Placement, StateDir,
};
use crate::operations::{depmod, images, remove, weak_updates};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How install was asked to treat the modules.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The modules are needed to mount root.
    pub root_critical: bool,
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
        let path = root.path(CONFIG_FILE);
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
    let state = StateDir::new(root);
    let lock = state.lock()?;
    let mut ledger = state.load()?;
    let recovered = recover(&state, &mut ledger, &lock)?;

    let mut records = Vec::new();
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
        state.store(&sha256, &bytes)?;
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
    ledger.journal = Some(Journal::Install { modules: records.clone() });
    state.save(&ledger, &lock)?;
    failpoint("install:journaled");
    let kernels = apply(&state, &mut ledger, &lock)?;
    Ok(InstallReport { installed: records, kernels, recovered, policy: Policy::read(root)? })
}

/// Re-evaluate the ledger's modules for `kernels` (every installed kernel when empty):
/// what `kernel-install add` runs for a new kernel.
pub fn refresh_kernels(root: &Root, kernels: &[String]) -> Result<InstallReport> {
    let state = StateDir::new(root);
    let lock = state.lock()?;
    let mut ledger = state.load()?;
    let recovered = recover(&state, &mut ledger, &lock)?;
    ledger.journal = Some(Journal::Refresh { kernels: kernels.to_vec() });
    state.save(&ledger, &lock)?;
    let outcomes = apply(&state, &mut ledger, &lock)?;
    Ok(InstallReport {
        installed: Vec::new(),
        kernels: outcomes,
        recovered,
        policy: Policy::read(root)?,
    })
}

/// Complete the operation a killed run left in the journal, if any. Returns its name.
pub fn recover(state: &StateDir, ledger: &mut Ledger, lock: &Lock) -> Result<Option<String>> {
    let Some(journal) = ledger.journal.clone() else { return Ok(None) };
    let what = match &journal {
        Journal::Install { modules } => format!(
            "install of {}",
            modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
        Journal::Remove { names } => format!("remove of {}", names.join(", ")),
        Journal::Refresh { .. } => "refresh".to_string(),
    };
    tracing::warn!("completing the interrupted {what}");
    apply(state, ledger, lock)?;
    Ok(Some(what))
}

/// Run the journaled operation to its end and clear the journal.
fn apply(state: &StateDir, ledger: &mut Ledger, lock: &Lock) -> Result<Vec<KernelOutcome>> {
    let Some(journal) = ledger.journal.clone() else { return Ok(Vec::new()) };
    let root = &state.root;
    let outcomes = match journal {
        Journal::Install { modules } => {
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
            refresh(root, ledger, &[])?
        }
        Journal::Refresh { kernels } => refresh(root, ledger, &kernels)?,
        Journal::Remove { names } => {
            remove::apply(root, ledger, &names)?;
            Vec::new()
        }
    };
    ledger.journal = None;
    state.save(ledger, lock)?;
    Ok(outcomes)
}

/// Put a module's stored bytes at its installed path, unless already there.
fn place(state: &StateDir, record: &ModuleRecord) -> Result<()> {
    let host = state.root.path(&record.path);
    if std::fs::read(&host).is_ok_and(|b| sha256_hex(&b) == record.sha256) {
        return Ok(());
    }
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
pub(crate) fn refresh(
    root: &Root,
    ledger: &mut Ledger,
    only: &[String],
) -> Result<Vec<KernelOutcome>> {
    let installed = kernel::releases(root)?;
    ledger.kernels.retain(|k, _| installed.contains(k));
    let releases: Vec<String> =
        installed.into_iter().filter(|r| only.is_empty() || only.contains(r)).collect();
    let records: Vec<ModuleRecord> = ledger.modules.values().cloned().collect();
    let modules = records
        .iter()
        .map(|r| Module::read(&root.path(&r.path), ReadOptions::default()))
        .collect::<Result<Vec<_>>>()?;
    let opts = KernelOptions { interest: Some(Interest::of(&modules)), ..Default::default() };

    let mut outcomes = Vec::new();
    for release in releases {
        let kernel = Kernel::read(root, &release, &opts)?;
        let verdicts = compat::check_set(&kernel, &modules);
        let mut changed = false;
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
            } else if verdict.compatible {
                let (link, did) = weak_updates::link(root, &r.path, &release)?;
                // A run killed between linking and depmod left the link unindexed.
                changed |= did || !indexed(root, &release, &link);
                entry.placement = Placement::WeakUpdates;
                entry.link = Some(link);
            } else {
                changed |= weak_updates::unlink(root, &r.path, &release)?;
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
        if changed {
            depmod::run(root, &release, false)
                .with_context(|| format!("depmod for kernel {release}"))?;
        }
        let usable: Vec<String> = record
            .modules
            .iter()
            .filter(|(_, m)| m.usable_on_boot())
            .map(|(name, _)| name.clone())
            .collect();
        let previous = ledger.kernels.get(&release).and_then(|k| k.image.as_ref());
        record.image = images::update(root, &release, &usable, previous)?;
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
fn indexed(root: &Root, release: &str, module: &Path) -> bool {
    let dep = root.path(Path::new("/lib/modules").join(release).join("modules.dep"));
    let rel = module.strip_prefix(Path::new("/lib/modules").join(release)).ok();
    match (std::fs::read_to_string(dep), rel) {
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
        let dir = tree.host_dir().join(sub);
        if !dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        crate::model::tree::walk(&dir, &mut files)
            .with_context(|| format!("reading {}", dir.display()))?;
        for f in files.into_iter().filter(|f| name_from_path(f) == name) {
            let rel = f.strip_prefix(root.dir()).map(|r| Path::new("/").join(r));
            if let Ok(target) = rel {
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
        std::fs::create_dir_all(root.path("/etc/bootkmod")).unwrap();
        std::fs::write(root.path(CONFIG_FILE), "# comment\npolicy=warn\n").unwrap();
        assert_eq!(Policy::read(&root).unwrap(), Policy::Warn);
        std::fs::write(root.path(CONFIG_FILE), "policy=warm\n").unwrap();
        let err = format!("{:#}", Policy::read(&root).unwrap_err());
        assert!(err.contains("bootkmod.conf: policy=warm is not warn or refuse"), "{err}");
    }
}
