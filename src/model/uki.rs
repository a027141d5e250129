//! Unified Kernel Images as files on the target, read only (`formats::uki` owns the PE
//! layout; `operations::uki` writes them).
//!
//! [`open_initramfs`] is how everything that reads an initramfs opens one (`initramfs
//! ls/cat/extract`, inject, status and doctor): a UKI (a file starting with `MZ`) is read
//! through its `.initrd` section, anything else as it is.

use crate::formats::uki::Uki;
use crate::model::module::FileBytes;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Whether the file at `path` is a PE image (a UKI, if anything bootkmod reads).
pub fn is_pe(path: &Path) -> Result<bool> {
    let mut head = [0u8; 2];
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f.read(&mut head)?;
    Ok(Uki::looks_like(&head[..n]))
}

/// The facts of the UKI at `path` (mapped, not read).
pub fn read(path: &Path) -> Result<Uki> {
    let bytes = FileBytes::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Uki::parse(&bytes).with_context(|| path.display().to_string())
}

/// The facts of the file at `path` when it is a UKI; `None` for anything else.
pub fn read_if_uki(path: &Path) -> Result<Option<Uki>> {
    if !is_pe(path)? {
        return Ok(None);
    }
    read(path).map(Some)
}

/// The initramfs bytes of an image: the file itself, or a UKI's `.initrd` section, with
/// the UKI's facts.
pub fn open_initramfs(path: &Path) -> Result<(std::io::Take<File>, Option<Uki>)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let Some(facts) = read_if_uki(path)? else {
        return Ok((file.take(u64::MAX), None));
    };
    let Some((offset, len)) = facts.initrd else {
        bail!("{}: a Unified Kernel Image without an .initrd section", path.display());
    };
    file.seek(SeekFrom::Start(offset as u64))?;
    Ok((file.take(len as u64), Some(facts)))
}
