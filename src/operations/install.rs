//! `install` and `refresh`: keep prebuilt modules in the boot path of every kernel.
//!
//! Flow of [`install`], all under the ledger's [`Lock`]:
//!
//! 1. finish any operation a killed run left in the journal ([`recover`]);
//! 2. read each module, keep its bytes in the store, and record the whole operation as
//!    the ledger's journal (nothing outside `var/lib/bootkmod` has changed yet);
//! 3. place each module in `lib/modules/<built-for>/extra/<name>/` (RHEL's layout, what
//!    kmod RPMs use), atomically;
//! 4. refresh every installed kernel (`operations::refresh`): check, link or fall back,
//!    depmod, image — each kernel on its own: one that fails is recorded with its
//!    reason and the others go on;
//! 5. clear the journal (`operations::journal`: a run that stops on an error records
//!    the operation as failed and releases the journal).
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
//!
//! Builds side by side (issue 21): a new file of a driver already installed is added
//! as another build beside the ones kept, and each kernel takes one (`engines::choose`).
//! Never worse off: before anything is written, a dry refresh of the ledger as it would
//! be is compared with the ledger as it is ([`guard`](crate::operations::refresh::guard));
//! an install that would take a usable build of a root-critical driver away from a
//! kernel, or add a build no installed kernel would take, is refused
//! ([`InstallReport::refused`]) unless [`InstallOptions::force`].

use crate::model::module::{name_from_path, sha256_hex, Module, ReadOptions};
use crate::model::root::Root;
pub use crate::operations::journal::recover;
use crate::operations::journal::{apply, lock_for, start, Applied};
use crate::operations::ledger::{
    failpoint, Build, ImageMethod, Journal, Ledger, ModuleRecord, Placement, StateDir,
};
pub use crate::operations::refresh::KernelOutcome;
use crate::operations::refresh::{guard, refresh, Refreshed, Run};
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
    /// Install even when a kernel would be left worse off, or a new build would serve
    /// no installed kernel.
    pub force: bool,
    /// Sign each given module with this key before it is stored and placed
    /// (`engines::sign`, what `sign-file` appends): what is placed is what was signed.
    pub signer: Option<crate::engines::sign::Signer>,
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

/// What an install or refresh did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstallReport {
    pub installed: Vec<ModuleRecord>,
    pub kernels: Vec<KernelOutcome>,
    /// Installed module files that were missing or altered, put back from the store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<PathBuf>,
    /// Files of the kernels' trees that could not be read (skipped), each named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// An interrupted operation that was completed first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
    pub policy: Policy,
    /// Nothing was changed: the report says what a real run would do.
    pub dry_run: bool,
    /// Why the install was refused before anything changed (empty: not refused); the
    /// kernels then say what it would have done.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Every driver with all its builds, as the run leaves them (refused or dry: would
    /// leave them): what the kernels' `build` digests refer to.
    pub drivers: Vec<ModuleRecord>,
    /// Per kernel, every image that boots it and why (`model::boot_images`); the drivers
    /// went into the one `receives_drivers` names first.
    pub boot_images: BTreeMap<String, Vec<crate::model::boot_images::BootImage>>,
}

fn boot_images_of(
    root: &Root,
    kernels: &[KernelOutcome],
) -> BTreeMap<String, Vec<crate::model::boot_images::BootImage>> {
    kernels
        .iter()
        .map(|k| (k.release.clone(), crate::model::boot_images::find(root, &k.release)))
        .collect()
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
        let bytes = match &opts.signer {
            Some(signer) => {
                crate::engines::sign::sign_module(&bytes, signer)
                    .with_context(|| format!("{}: cannot sign", file.display()))?
                    .bytes
            }
            None => bytes,
        };
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
        let version = module.modinfo.get("version").map(str::to_string);
        given.insert(sha256.clone(), (module, bytes));
        records.push(ModuleRecord {
            builds: vec![Build {
                path: Path::new("/lib/modules")
                    .join(&built_for)
                    .join("extra")
                    .join(&name)
                    .join(file_name),
                sha256,
                version,
                origin: file.display().to_string(),
                built_for,
            }],
            name,
            root_critical: opts.root_critical,
        });
    }
    // What every kernel would get, on a copy of the ledger before anything is written:
    // the dry run's report, and the guard of an install beside builds already kept (a
    // first install of a driver takes nothing from any kernel).
    let mut planned = ledger.clone();
    for record in &records {
        planned.add_builds(record);
    }
    let beside = records.iter().any(|r| ledger.modules.contains_key(&r.name));
    let mut refused = Vec::new();
    let mut plan = None;
    if opts.dry_run || beside {
        let run = Run {
            state: &state,
            lock: None,
            images: opts.images,
            dry_run: true,
            given: given.iter().map(|(sha, (m, _))| (sha.clone(), m.clone())).collect(),
            resumed: false,
            leaving: Vec::new(),
        };
        let done = refresh(&run, &mut planned, &[])?;
        refused = guard(&ledger, &done.kernels);
        refused.extend(unused_builds(&ledger, &records, &done.kernels));
        plan = Some(done);
    }
    let refuse = !refused.is_empty() && !opts.force;
    if opts.force {
        for why in &refused {
            tracing::warn!("forced past: {why}");
        }
    }
    let done: Refreshed = match (&lock, plan) {
        (Some(lock), _) if !opts.dry_run && !refuse => {
            for (sha256, (_, bytes)) in &given {
                state.store(sha256, bytes)?;
            }
            ledger.journal =
                Some(Journal::Install { modules: records.clone(), images: opts.images });
            state.save(&ledger, lock)?;
            failpoint("install:journaled");
            let done = apply(&state, &mut ledger, lock)?.refreshed;
            planned = ledger;
            done
        }
        (_, Some(plan)) => plan,
        // A real run without a lock does not happen (lock_for takes one).
        (_, None) => bail!("install: no lock held for a real run"),
    };
    Ok(InstallReport {
        boot_images: boot_images_of(root, &done.kernels),
        installed: records,
        kernels: done.kernels,
        restored: done.restored,
        warnings: done.warnings,
        recovered,
        policy: Policy::read(root)?,
        dry_run: opts.dry_run,
        refused: if refuse { refused } else { Vec::new() },
        drivers: planned.modules.into_values().collect(),
    })
}

/// An update no kernel takes: a new build of a driver that already has builds, which
/// would serve no installed kernel. The admin asked for it to take effect and it would
/// not (nor would the next dracut run carry it). One message per build, with each
/// kernel's reason.
fn unused_builds(before: &Ledger, new: &[ModuleRecord], plan: &[KernelOutcome]) -> Vec<String> {
    let mut unused = Vec::new();
    for record in new {
        let Some(kept) = before.modules.get(&record.name) else { continue };
        // A build kept already (the same file again) is not an update.
        for build in record.builds.iter().filter(|b| kept.build(&b.sha256).is_none()) {
            let serves = |k: &KernelOutcome| {
                k.record.modules.get(&record.name).is_some_and(|m| {
                    m.build.as_deref() == Some(build.sha256.as_str())
                        && matches!(m.placement, Placement::Own | Placement::WeakUpdates)
                        && m.compatible
                })
            };
            if plan.is_empty() || plan.iter().any(serves) {
                continue;
            }
            let reasons: Vec<String> = plan
                .iter()
                .map(|k| {
                    let on = k.record.modules.get(&record.name);
                    let why = on
                        .and_then(|m| m.passed_over.iter().find(|p| p.sha256 == build.sha256))
                        .map(|p| p.why.clone())
                        .or_else(|| {
                            on.filter(|m| m.build.as_deref() == Some(build.sha256.as_str()))
                                .and_then(|m| m.reasons.first().cloned())
                        })
                        .unwrap_or_else(|| "a newer build serves it".to_string());
                    format!("{}: {why}", k.release)
                })
                .collect();
            unused.push(format!(
                "build {} of {} would serve no installed kernel ({}); every kernel keeps \
                 the build it has",
                build.label(),
                record.name,
                reasons.join("; ")
            ));
        }
    }
    unused
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
    let done: Refreshed = match &lock {
        Some(lock) if !opts.dry_run => {
            ledger.journal =
                Some(Journal::Refresh { kernels: kernels.to_vec(), images: opts.images });
            state.save(&ledger, lock)?;
            failpoint("refresh:journaled");
            let Applied { refreshed, .. } = apply(&state, &mut ledger, lock)?;
            refreshed
        }
        _ => {
            let run = Run {
                state: &state,
                lock: None,
                images: opts.images,
                dry_run: true,
                given: BTreeMap::new(),
                resumed: false,
                leaving: Vec::new(),
            };
            refresh(&run, &mut ledger, kernels)?
        }
    };
    Ok(InstallReport {
        boot_images: boot_images_of(root, &done.kernels),
        installed: Vec::new(),
        kernels: done.kernels,
        restored: done.restored,
        warnings: done.warnings,
        recovered,
        policy: Policy::read(root)?,
        dry_run: opts.dry_run,
        refused: Vec::new(),
        drivers: ledger.modules.into_values().collect(),
    })
}

/// Fail before anything changes when the images cannot be updated as asked.
fn check_image_method(root: &Root, images: ImageMethod) -> Result<()> {
    match images {
        ImageMethod::Regenerate => crate::operations::dracut::find(root).map(drop),
        ImageMethod::Inject => Ok(()),
    }
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
