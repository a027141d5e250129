//! `doctor --fix` and `doctor --save`: the doctor's writes.
//!
//! [`fix`] hands each at-risk image to the inject operation with the modules the
//! verdict named ([`KernelVerdict::fix`]): inject closes over their dependencies and the
//! disk-class driver, regenerates the image's indexes (so its `modules.alias.bin` maps
//! the devices again), loads them early, verifies the written image and replaces it
//! atomically with a backup. A UKI goes through `operations::uki` (its `.initrd`); a
//! signed one is refused, as doctor holds no keys. The caller judges again afterwards.
//!
//! [`save`] writes a snapshot atomically.

use crate::engines::doctor::KernelVerdict;
use crate::engines::inject::PlanOptions;
use crate::model::root::Root;
use crate::model::root_chain::RootChain;
use crate::operations::atomic::AtomicSet;
use crate::operations::inject::{InjectOptions, ModuleArg, Outcome};
use crate::operations::uki;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What the fix did for one image of a kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FixReport {
    pub release: String,
    pub image: Option<PathBuf>,
    pub modules: Vec<String>,
    /// `written`, `unchanged`, `planned` (dry run), `refused`, `not_verified`, or
    /// `impossible` when nothing can be injected (see `why`).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
}

/// Inject what each at-risk image lacks (a UKI through its `.initrd`).
pub fn fix(root: &Root, kernels: &[KernelVerdict], dry_run: bool) -> Result<Vec<FixReport>> {
    let mut out = Vec::new();
    for k in kernels.iter().filter(|k| !k.ok) {
        let mut report = FixReport {
            release: k.release.clone(),
            image: k.image.clone(),
            modules: k.fix.clone(),
            outcome: "impossible".into(),
            why: None,
            backup: None,
        };
        match (&k.image, k.fix.is_empty()) {
            (None, _) => report.why = Some("the kernel has no initramfs to inject into".into()),
            (Some(_), true) => {
                report.why = Some(format!(
                    "nothing of kernel {}'s tree would help: {}",
                    k.release,
                    k.problems.join("; ")
                ))
            }
            (Some(image), false) => {
                let opts = InjectOptions {
                    release: Some(k.release.clone()),
                    dry_run,
                    plan: PlanOptions { load_early: true, ..PlanOptions::default() },
                    ..InjectOptions::default()
                };
                let args: Vec<ModuleArg> = k.fix.iter().cloned().map(ModuleArg::Name).collect();
                let done = uki::inject_either(root, image, &args, &opts).with_context(|| {
                    format!("fixing the image {} of {}", image.display(), k.release)
                })?;
                let Some(done) = done else {
                    report.outcome = "refused".into();
                    report.why = Some(uki::signed_refusal(image, &k.fix));
                    out.push(report);
                    continue;
                };
                report.backup = done.backup.clone();
                report.outcome = match done.outcome {
                    Outcome::Written => "written",
                    Outcome::Unchanged => "unchanged",
                    Outcome::Planned => "planned",
                    Outcome::Refused => "refused",
                    Outcome::NotVerified => "not_verified",
                }
                .into();
                if done.outcome == Outcome::Refused {
                    report.why = done.plan.verdicts.iter().find(|v| !v.compatible).map(|v| {
                        let first =
                            v.first_refusal().map_or(String::new(), |r| format!(": {}", r.message));
                        format!("bootkmod check refuses {} on {}{first}", v.module, v.kernel)
                    });
                }
            }
        }
        out.push(report);
    }
    Ok(out)
}

/// Write a snapshot to `path` (atomic: temp file, fsync, rename, fsync dir).
pub fn save(chain: &RootChain, path: &Path) -> Result<()> {
    let mut text = serde_json::to_string_pretty(chain)?;
    text.push('\n');
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => {
            let d = if d.as_os_str().is_empty() { Path::new(".") } else { d };
            (d.to_path_buf(), n.to_string_lossy().into_owned())
        }
        _ => anyhow::bail!("{}: not a file path", path.display()),
    };
    AtomicSet::new(&dir)
        .file(name, text.into_bytes())
        .commit()
        .with_context(|| format!("{}: cannot write the snapshot", path.display()))?;
    Ok(())
}
