//! The initramfs image of each kernel as install/remove see it: where it is, its digest,
//! a pre-bootkmod backup for `remove`, and the injection step.
//!
//! Injection itself belongs to `operations::inject` (issue 6): [`update`] keeps a
//! backup of the image as it was before bootkmod first changed it, then asks inject to
//! add the kernel's usable modules *by name from the kernel's own tree* (so the image
//! gets the file depmod chose: `extra/`, `weak-updates/` or a local fallback), with
//! early loading, and records the result. Inject is idempotent: an image already
//! carrying the modules is left byte for byte as it is.

use crate::engines::inject::PlanOptions;
pub use crate::model::ledger::find_image as find;
use crate::model::module::sha256_hex;
use crate::model::root::Root;
use crate::operations::atomic::AtomicSet;
use crate::operations::inject::{self, InjectOptions, ModuleArg};
use crate::operations::ledger::{create_dirs, ImageRecord, STATE_DIR};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// sha256 of a file under the root.
pub fn digest(root: &Root, path: &Path) -> Result<String> {
    let host = root.path(path);
    let bytes = std::fs::read(&host).with_context(|| format!("{}: cannot read", host.display()))?;
    Ok(sha256_hex(&bytes))
}

/// Keep the image as it is now, once: the copy `remove` restores.
pub fn backup(root: &Root, image: &Path, sha256: &str) -> Result<PathBuf> {
    let name = format!(
        "{}.{}",
        image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        &sha256[..16.min(sha256.len())]
    );
    let target = Path::new(STATE_DIR).join("backup").join(&name);
    if !root.path(&target).is_file() {
        let dir = root.path(Path::new(STATE_DIR).join("backup"));
        create_dirs(&dir)?;
        let host = root.path(image);
        let bytes =
            std::fs::read(&host).with_context(|| format!("{}: cannot read", host.display()))?;
        AtomicSet::new(&dir).file(name, bytes).commit()?;
    }
    Ok(target)
}

/// Put back the backed-up bytes of an image (atomic replace).
pub fn restore(root: &Root, record: &ImageRecord) -> Result<bool> {
    let Some(backup) = &record.backup else { return Ok(false) };
    let host_backup = root.path(backup);
    let bytes = std::fs::read(&host_backup)
        .with_context(|| format!("{}: cannot read backup", host_backup.display()))?;
    let host = root.path(&record.path);
    let (dir, name) = match (host.parent(), host.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => anyhow::bail!("{}: not a file path", host.display()),
    };
    AtomicSet::new(dir).file(name, bytes).commit()?;
    Ok(true)
}

/// Bring the image of `release` up to date with the modules usable on it (names).
/// `previous` is what the ledger knew of the image.
pub fn update(
    root: &Root,
    release: &str,
    usable: &[String],
    previous: Option<&ImageRecord>,
) -> Result<Option<ImageRecord>> {
    let Some(path) = find(root, release) else { return Ok(None) };
    let sha256 = digest(root, &path)?;
    let mut backup_copy = previous.filter(|p| p.path == path).and_then(|p| p.backup.clone());
    if usable.is_empty() {
        let note = "no module of the ledger is usable on this kernel".to_string();
        return Ok(Some(ImageRecord {
            path,
            sha256,
            updated: false,
            note: Some(note),
            backup: backup_copy,
        }));
    }
    if backup_copy.is_none() {
        backup_copy = Some(backup(root, &path, &sha256)?);
    }
    let opts = InjectOptions {
        release: Some(release.to_string()),
        backup: false,
        plan: PlanOptions { load_early: true, ..PlanOptions::default() },
        ..InjectOptions::default()
    };
    let names: Vec<ModuleArg> = usable.iter().map(|n| ModuleArg::Name(n.clone())).collect();
    let report = inject::inject(root, &root.path(&path), &names, &opts)
        .with_context(|| format!("injecting into the initramfs of {release}"))?;
    let (updated, note) = match report.outcome {
        inject::Outcome::Written | inject::Outcome::Unchanged => (true, None),
        other => (false, Some(format!("not updated: inject ended {other:?}"))),
    };
    Ok(Some(ImageRecord { sha256: digest(root, &path)?, path, updated, note, backup: backup_copy }))
}
