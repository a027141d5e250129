//! The images of each kernel as install/remove see them (initramfs files and UKIs):
//! where they are, their digests, a pre-bootkmod backup for `remove`, and the injection
//! step (a UKI through its `.initrd`, `operations::uki`; a signed one left as it is).
//!
//! Injection itself belongs to `operations::inject` (issue 6): [`update`] keeps a
//! backup of the image as it was before bootkmod first changed it, then asks inject to
//! add the kernel's usable modules *by name from the kernel's own tree* (so the image
//! gets the file depmod chose: `extra/`, `weak-updates/` or a local fallback), with
//! early loading, and records the result. Inject is idempotent: an image already
//! carrying the modules is left byte for byte as it is.
//!
//! With [`ImageMethod::Regenerate`] the target's own dracut rebuilds the image instead
//! (`operations::dracut`); the backup and the recorded digest are the same.

use crate::engines::inject::PlanOptions;
pub use crate::model::ledger::find_image as find;
use crate::model::ledger::{default_image, ImageMethod, Placement};
use crate::model::module::sha256_hex;
use crate::model::root::Root;
use crate::operations::atomic::{remove_synced, AtomicSet};
use crate::operations::inject::{self, InjectOptions, ModuleArg};
use crate::operations::ledger::{create_dirs, ImageRecord, Ledger, STATE_DIR};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// sha256 of a file under the root.
pub fn digest(root: &Root, path: &Path) -> Result<String> {
    Ok(sha256_hex(&root.read(path)?))
}

/// Target-absolute path of the copy [`backup`] keeps of `image` as it is at `sha256`.
pub fn backup_path(image: &Path, sha256: &str) -> PathBuf {
    let name = format!(
        "{}.{}",
        image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        &sha256[..16.min(sha256.len())]
    );
    Path::new(STATE_DIR).join("backup").join(name)
}

/// Keep the image as it is now, once: the copy `remove` restores.
pub fn backup(root: &Root, image: &Path, sha256: &str) -> Result<PathBuf> {
    let target = backup_path(image, sha256);
    let host_target = root.host_entry(&target)?;
    if !host_target.is_file() {
        let (dir, name) = match (host_target.parent(), host_target.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
            _ => anyhow::bail!("{}: not a file path", host_target.display()),
        };
        create_dirs(&dir)?;
        let bytes = root.read(image)?;
        AtomicSet::new(&dir).file(name, bytes).commit()?;
    }
    Ok(target)
}

/// What [`undo`] did to an image bootkmod had changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Undone {
    /// Still the image bootkmod wrote: the backup from before bootkmod went back.
    Restored,
    /// Rebuilt by another tool since (or no backup): bootkmod's files were taken out of
    /// it, the rest left as that tool made it.
    TakenOut,
    /// Rebuilt by another tool since, without bootkmod's files: left as it is.
    LeftAsIs,
}

impl Undone {
    /// The ledger's note for an image after remove.
    pub fn note(self) -> &'static str {
        match self {
            Undone::Restored => "restored from backup by remove",
            Undone::TakenOut => {
                "rebuilt by another tool since; remove took bootkmod's drivers out of it"
            }
            Undone::LeftAsIs => {
                "rebuilt by another tool since, without bootkmod's drivers; left as it is"
            }
        }
    }
}

/// Per kernel, the tree-relative paths where `names` are placed (own file, weak-updates
/// link): what an image rebuilt by another tool may hold of them, for [`undo`].
pub fn placed_in_trees(ledger: &Ledger, names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (release, kernel) in &ledger.kernels {
        let base = PathBuf::from(format!("/lib/modules/{release}"));
        for name in names {
            let (Some(on), Some(m)) = (kernel.modules.get(name), ledger.modules.get(name)) else {
                continue;
            };
            let path = match (on.placement, &on.link) {
                (Placement::Own, _) => m.build_on(on).map(|b| &b.path),
                (Placement::WeakUpdates, Some(link)) => Some(link),
                _ => None,
            };
            if let Some(rel) = path.and_then(|p| p.strip_prefix(&base).ok()) {
                out.entry(release.clone()).or_default().push(rel.display().to_string());
            }
        }
    }
    out
}

/// Undo bootkmod's change to the image of `release` without reverting another writer:
/// the backup is restored only while the image is still the one bootkmod wrote (its
/// digest is the recorded one); otherwise the files at `rels` (tree-relative, where
/// bootkmod put them) are taken out of the current image, or it is left as it is when
/// none is there. A missing image is left missing.
pub fn undo(
    root: &Root,
    release: &str,
    record: &ImageRecord,
    rels: &[String],
    dry_run: bool,
) -> Result<Undone> {
    let host = root.host(&record.path)?;
    if !host.is_file() {
        drop_backup(root, record, dry_run)?;
        return Ok(Undone::LeftAsIs);
    }
    if record.backup.is_some() && digest(root, &record.path)? == record.sha256 {
        if !dry_run {
            restore(root, record)?;
        }
        return Ok(Undone::Restored);
    }
    let report = inject::take_out(root, &host, release, rels, dry_run)
        .with_context(|| format!("taking drivers out of the initramfs of {release}"))?;
    drop_backup(root, record, dry_run)?;
    Ok(if report.removal.changes() { Undone::TakenOut } else { Undone::LeftAsIs })
}

/// Delete the backup of an image that was not restored: it is from before another tool's
/// rebuild (or of an image that is gone), never to be put back, and a whole image in size.
fn drop_backup(root: &Root, record: &ImageRecord, dry_run: bool) -> Result<()> {
    match &record.backup {
        Some(backup) if !dry_run => remove_synced(&root.host_entry(backup)?),
        _ => Ok(()),
    }
}

/// Put back the backed-up bytes of an image (atomic replace). Only for an image that is
/// still the one bootkmod wrote: [`undo`] decides.
pub fn restore(root: &Root, record: &ImageRecord) -> Result<bool> {
    let Some(backup) = &record.backup else { return Ok(false) };
    let bytes = root.read(backup).context("cannot read the backup")?;
    // The image as the target names it: through a link there, the file it names.
    let host = root.host(&record.path)?;
    let (dir, name) = match (host.parent(), host.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => anyhow::bail!("{}: not a file path", host.display()),
    };
    AtomicSet::new(dir).file(name, bytes).commit()?;
    Ok(true)
}

/// How [`update`] is to bring an image up to date.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateOptions {
    pub method: ImageMethod,
    /// Say what would be done; write nothing.
    pub dry_run: bool,
    /// (Dry run) every usable module is already where the kernel's tree offers it, so
    /// inject can plan from the tree; otherwise a real run would place them first.
    pub placed: bool,
}

/// What [`update`] left: the image's record, and whether its bytes changed (dry run:
/// would change), so that a report says "updated" only when it was.
#[derive(Debug, Clone)]
pub struct Updated {
    pub record: ImageRecord,
    pub changed: bool,
}

/// Bring the image of `release` up to date with the modules usable on it (names).
/// `previous` is what the ledger knew of the image. With [`ImageMethod::Regenerate`],
/// the target's dracut builds the image (named as the distribution names it when there
/// is none yet); the ledger must already hold the kernel's verdicts, which its
/// `90bootkmod` module reads.
pub fn update(
    root: &Root,
    release: &str,
    usable: &[String],
    previous: Option<&ImageRecord>,
    opts: UpdateOptions,
) -> Result<Option<Updated>> {
    update_at(root, release, find(root, release), usable, previous, opts)
}

/// Every other image that boots `release` and receives drivers
/// (`model::boot_images`), besides `primary`: each is brought up to date like the
/// primary one ([`update_at`]), a Unified Kernel Image through its `.initrd`.
pub fn others(root: &Root, release: &str, primary: Option<&Path>) -> Vec<PathBuf> {
    let mut images = crate::model::boot_images::receiving(root, release);
    images.retain(|p| Some(p.as_path()) != primary);
    images
}

/// [`update`] of the image at `found` (target-absolute; `None`: the kernel has none).
pub fn update_at(
    root: &Root,
    release: &str,
    found: Option<PathBuf>,
    usable: &[String],
    previous: Option<&ImageRecord>,
    opts: UpdateOptions,
) -> Result<Option<Updated>> {
    let path = match (&found, opts.method) {
        (Some(p), _) => p.clone(),
        (None, ImageMethod::Regenerate) if !usable.is_empty() => default_image(root, release),
        (None, _) => return Ok(None),
    };
    let sha256 = match &found {
        Some(p) => digest(root, p)?,
        None => String::new(),
    };
    // The backup is the image before bootkmod's change; once another tool rebuilt the
    // image, restoring it would revert that tool: the current image is backed up instead.
    let mut backup_copy =
        previous.filter(|p| p.path == path && p.sha256 == sha256).and_then(|p| p.backup.clone());
    if let Some(stale) = previous.filter(|p| p.path == path).and_then(|p| p.backup.as_ref()) {
        // Never to be restored again, and a whole image in size. When the current image
        // happens to be that same one, the copy taken below is the same file anew.
        if backup_copy.is_none() && !opts.dry_run {
            remove_synced(&root.host_entry(stale)?)?;
        }
    }
    if usable.is_empty() {
        // bootkmod's injected image still in place, and nothing of the ledger belongs in
        // it any more (a remove whose restore failed, a driver no longer compatible):
        // put back the image as it was before. An image rebuilt since is left alone.
        let injected = previous
            .filter(|p| p.path == path && p.updated && p.sha256 == sha256 && p.backup.is_some());
        if let Some(injected) = injected {
            let note = "restored from backup: no module of the ledger is usable on this kernel";
            let (sha256, changed) = if opts.dry_run {
                (sha256, true)
            } else {
                restore(root, injected)?;
                let after = digest(root, &path)?;
                let changed = after != sha256;
                (after, changed)
            };
            let record = ImageRecord {
                path,
                sha256,
                updated: false,
                method: None,
                note: Some(note.to_string()),
                backup: backup_copy,
            };
            return Ok(Some(Updated { record, changed }));
        }
        let note = "no module of the ledger is usable on this kernel".to_string();
        let record = ImageRecord {
            path,
            sha256,
            updated: false,
            method: None,
            note: Some(note),
            backup: backup_copy,
        };
        return Ok(Some(Updated { record, changed: false }));
    }
    // dracut rebuilds an initramfs; a UKI is only ever injected into (its `.initrd`), and
    // a signed one not at all: re-signing needs keys install is not given. It is left as
    // it is, recorded not updated with the command that signs it (a risk for the kernel
    // when a driver is root-critical).
    let uki = match &found {
        Some(p) => crate::model::uki::read_if_uki(&root.host(p)?)?,
        None => None,
    };
    if uki.as_ref().is_some_and(|u| u.signature.is_some()) {
        let record = ImageRecord {
            note: Some(crate::operations::uki::signed_refusal(&path, usable)),
            path,
            sha256,
            updated: false,
            method: None,
            backup: backup_copy,
        };
        return Ok(Some(Updated { record, changed: false }));
    }
    let fresh_backup = backup_copy.is_none() && found.is_some();
    if fresh_backup {
        backup_copy = Some(if opts.dry_run {
            backup_path(&path, &sha256)
        } else {
            backup(root, &path, &sha256)?
        });
    }
    let names = usable.join(", ");
    if opts.method == ImageMethod::Regenerate && uki.is_none() {
        if opts.dry_run {
            // Fails here as the real run would when the target has no dracut.
            crate::operations::dracut::find(root)?;
            let note = format!("dry run: the target's dracut would rebuild it with {names}");
            let record = ImageRecord {
                path,
                sha256,
                updated: true,
                method: Some(ImageMethod::Regenerate),
                note: Some(note),
                backup: backup_copy,
            };
            return Ok(Some(Updated { record, changed: true }));
        }
        crate::operations::dracut::regenerate(root, &path, release)?;
        let after = digest(root, &path)?;
        let changed = after != sha256;
        let record = ImageRecord {
            sha256: after,
            path,
            updated: true,
            method: Some(ImageMethod::Regenerate),
            note: None,
            backup: backup_copy,
        };
        return Ok(Some(Updated { record, changed }));
    }
    if opts.dry_run && !opts.placed {
        let note = format!("dry run: {names} would be injected once placed");
        let record = ImageRecord {
            path,
            sha256,
            updated: true,
            method: Some(ImageMethod::Inject),
            note: Some(note),
            backup: backup_copy,
        };
        return Ok(Some(Updated { record, changed: true }));
    }
    let inject_opts = InjectOptions {
        release: Some(release.to_string()),
        backup: false,
        dry_run: opts.dry_run,
        plan: PlanOptions { load_early: true, ..PlanOptions::default() },
        ..InjectOptions::default()
    };
    let args: Vec<ModuleArg> = usable.iter().map(|n| ModuleArg::Name(n.clone())).collect();
    let report =
        crate::operations::uki::inject_either(root, &root.host(&path)?, &args, &inject_opts)
            .with_context(|| format!("injecting into the image {} of {release}", path.display()))?;
    let report =
        report.with_context(|| format!("{}: signed while bootkmod injected", path.display()))?;
    if fresh_backup && report.outcome == inject::Outcome::Unchanged {
        // The image already held every driver (another tool carried them, as the
        // initramfs-tools hook does): bootkmod did not change it, so a copy of it is no
        // "before bootkmod", and restoring it on remove would keep the drivers there.
        if let Some(copy) = backup_copy.take().filter(|_| !opts.dry_run) {
            remove_synced(&root.host_entry(&copy)?)?;
        }
    }
    let (updated, note) = match report.outcome {
        inject::Outcome::Written | inject::Outcome::Unchanged => (true, None),
        inject::Outcome::Planned => (true, Some(format!("dry run: {names} would be injected"))),
        other => (false, Some(format!("not updated: inject ended {other:?}"))),
    };
    // A dry run's plan would write; a real run changed the image when its digest did.
    let planned = matches!(report.outcome, inject::Outcome::Planned);
    let after = if opts.dry_run { sha256.clone() } else { digest(root, &path)? };
    let changed = planned || after != sha256;
    let record = ImageRecord {
        sha256: after,
        path,
        updated,
        method: updated.then_some(ImageMethod::Inject),
        note,
        backup: backup_copy,
    };
    Ok(Some(Updated { record, changed }))
}
