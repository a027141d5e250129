//! Atomic file replacement: write a temporary file in the destination's directory,
//! fsync it, rename it over the destination, fsync the directory. A crash leaves either
//! the old file or the new one, never a torn one; a symlink at the destination is
//! replaced, never followed.

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replace `path` with `content` (mode `mode`) atomically. The directory must exist.
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".bootkmod-")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    tmp.write_all(content).with_context(|| format!("{}: write failed", path.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("{}: chmod failed", path.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("{}: fsync failed", path.display()))?;
    tmp.persist(path).with_context(|| format!("{}: rename failed", path.display()))?;
    sync_dir(dir)
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: fsync of directory failed", dir.display()))
}
