//! `bootkmod sign`: replace a module file with its signed form (`engines::sign`),
//! atomically (`AtomicSet`: temp file beside it, fsync, rename), keeping its mode. A file
//! already signed by the same key with the same hash is left alone, byte for byte.

use crate::engines::sign::{sign_module, Signer};
use crate::formats::signature::Signature;
use crate::operations::atomic::{dir_of, AtomicSet};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What signing one file did (or, dry, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignReport {
    pub path: PathBuf,
    /// The file's codec, kept (`none`, `xz`, `zstd`, `gzip`).
    pub compression: &'static str,
    pub hash: &'static str,
    pub signer: String,
    /// The signature the file carried before, replaced.
    pub replaced: Option<Signature>,
    /// The file's bytes changed (false: it was already signed so).
    pub changed: bool,
    pub dry_run: bool,
}

/// Sign `path` in place (or, with `output`, write the signed file there).
pub fn sign_file(
    path: &Path,
    output: Option<&Path>,
    signer: &Signer,
    dry_run: bool,
) -> Result<SignReport> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let signed = sign_module(&bytes, signer).with_context(|| format!("{}", path.display()))?;
    let target = output.unwrap_or(path);
    let current = std::fs::read(target).ok();
    let changed = current.as_deref() != Some(&signed.bytes[..]);
    if changed && !dry_run {
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        let name = target
            .file_name()
            .with_context(|| format!("{}: not a file name", target.display()))?
            .to_string_lossy()
            .into_owned();
        AtomicSet::new(dir_of(target))
            .file(name, signed.bytes)
            .mode(mode)
            .commit()
            .with_context(|| format!("{}: cannot write", target.display()))?;
    }
    Ok(SignReport {
        path: target.to_path_buf(),
        compression: signed.compression.name(),
        hash: signer.hash.name(),
        signer: signer.describe(),
        replaced: signed.replaced,
        changed,
        dry_run,
    })
}
