//! The initramfs image of each kernel as install/remove see it: where it is, its digest,
//! a pre-bootkmod backup for `remove`, and the injection step.
//!
//! Injection itself belongs to `operations::inject` (issue 6). Until that operation is
//! part of this build, [`update`] does not touch the image and says so in the
//! [`ImageRecord`] (`updated: false` with a note) — `status` then reports the kernel's
//! image as not carrying the driver, which is the truth.

pub use crate::model::ledger::find_image as find;
use crate::model::module::sha256_hex;
use crate::model::root::Root;
use crate::operations::atomic::AtomicSet;
use crate::operations::ledger::{create_dirs, ImageRecord, STATE_DIR};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Why an image was left alone while injection is missing from the build.
pub const INJECT_MISSING: &str =
    "not updated: initramfs injection (bootkmod inject, issue 6) is not in this build";

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

/// Bring the image of `release` up to date with the modules usable on it.
/// `previous` is what the ledger knew of the image.
pub fn update(
    root: &Root,
    release: &str,
    usable: &[PathBuf],
    previous: Option<&ImageRecord>,
) -> Result<Option<ImageRecord>> {
    let Some(path) = find(root, release) else { return Ok(None) };
    let sha256 = digest(root, &path)?;
    // An image bootkmod already updated and nobody changed since needs nothing.
    if let Some(prev) = previous.filter(|p| p.path == path && p.sha256 == sha256 && p.updated) {
        return Ok(Some(prev.clone()));
    }
    let note = if usable.is_empty() {
        Some("no module of the ledger is usable on this kernel".to_string())
    } else {
        Some(INJECT_MISSING.to_string())
    };
    Ok(Some(ImageRecord {
        path,
        sha256,
        updated: false,
        note,
        backup: previous.and_then(|p| p.backup.clone()),
    }))
}
