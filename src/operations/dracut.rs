//! Run the target system's own dracut to rebuild a kernel's initramfs (`install
//! --regenerate`): the one place bootkmod spawns dracut.
//!
//! With `--root /` it is `dracut --force IMAGE KVER`; with another root it is `chroot
//! ROOT dracut --force IMAGE KVER`, what Anaconda does for `/mnt/sysimage`: the target's
//! dracut, its configuration and its modules (`90bootkmod` among them, which asks the
//! target's bootkmod for the ledger's drivers) build the image, never the host's.
//!
//! dracut writes a temporary name beside the image; bootkmod then fsyncs it and
//! renames it over the image, so a failed or killed dracut never leaves a half-written
//! image under the real name.

use crate::model::root::Root;
use crate::operations::atomic::{remove_synced, sync_dir};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where distributions install dracut (target-absolute).
const DRACUT_PATHS: &[&str] =
    &["/usr/bin/dracut", "/usr/sbin/dracut", "/bin/dracut", "/sbin/dracut"];

/// Target-absolute path of the dracut installed under `root`, or an error that says
/// there is none and what to do instead.
pub fn find(root: &Root) -> Result<PathBuf> {
    for p in DRACUT_PATHS {
        if root.host(p).is_ok_and(|h| h.is_file()) {
            return Ok(PathBuf::from(p));
        }
    }
    bail!(
        "no dracut under {} (looked for {}): install dracut in the target, or leave out \
         --regenerate to inject the drivers into the existing image (the default)",
        root.dir().display(),
        DRACUT_PATHS.join(", ")
    )
}

/// Is `root` the running system itself (no chroot needed)?
fn is_host(root: &Root) -> bool {
    match (std::fs::canonicalize(root.dir()), std::fs::canonicalize("/")) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Rebuild the initramfs of `release` at `image` (target-absolute) with the target's
/// dracut, replacing the image atomically.
pub fn regenerate(root: &Root, image: &Path, release: &str) -> Result<()> {
    let dracut = find(root)?;
    // Through a link at the image's place, the file it names (inside the root), as a
    // dracut writing the image would: the temp file goes beside that file.
    let image = &root.resolve(image)?;
    let host_image = root.host(image)?;
    let (dir, name) = match (host_image.parent(), image.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => bail!("{}: not a file path", image.display()),
    };
    crate::operations::ledger::create_dirs(&dir)?;
    let temp_name = format!(".{name}.bootkmod-{}.new", std::process::id());
    let temp = image.with_file_name(&temp_name);
    let host_temp = dir.join(&temp_name);
    let mut cmd = if is_host(root) {
        Command::new(&dracut)
    } else {
        let mut c = Command::new("chroot");
        c.arg(root.dir()).arg(&dracut);
        c
    };
    cmd.arg("--force").arg(&temp).arg(release);
    // The dracut module asks bootkmod about the root it runs in: a host path of the
    // outer root means nothing inside the chroot.
    cmd.env_remove("BOOTKMOD_ROOT");
    tracing::info!("running {cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&host_temp);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = why[why.len().saturating_sub(3)..].join(" | ");
        bail!(
            "dracut for kernel {release} under {} failed ({}): {tail}",
            root.dir().display(),
            out.status
        );
    }
    tracing::debug!("dracut: {}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::File::open(&host_temp)
        .with_context(|| format!("{}: dracut wrote no image", host_temp.display()))?;
    written.sync_all().with_context(|| format!("{}: cannot fsync", host_temp.display()))?;
    if let Err(e) = std::fs::rename(&host_temp, &host_image) {
        let _ = remove_synced(&host_temp);
        return Err(e).with_context(|| format!("{}: cannot replace", host_image.display()));
    }
    sync_dir(&dir)
}
