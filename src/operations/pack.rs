//! Packing a directory tree into an image segment (`bootkmod initramfs create`).
//!
//! Walks DIR without following symlinks, sorted by name bytes, and writes each entry
//! through `engines::initramfs::write`: hard links share an inode number and, as GNU
//! cpio does, only the last link of a group carries the body. With a fixed mtime the
//! output is reproducible. The image is written atomically (temp file in the target
//! directory, fsync, rename, fsync directory).

use crate::engines::initramfs::write::ArchiveWriter;
use crate::formats::compression::EncoderSettings;
use crate::formats::cpio::{EntryMeta, Format, S_IFLNK, S_IFMT, S_IFREG};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::BufWriter;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How to pack.
#[derive(Debug, Clone, Copy)]
pub struct PackOptions {
    pub compression: EncoderSettings,
    pub format: Format,
    /// Use this mtime for every entry (reproducible output) instead of the files' own.
    pub mtime: Option<u32>,
}

/// Pack `dir` into `image`; returns the image's size.
pub fn pack_directory(dir: &Path, image: &Path, options: &PackOptions) -> Result<u64> {
    let mut found = Vec::new();
    collect(dir, Path::new(""), &mut found)?;
    // Hard-link groups: the last member carries the body.
    let mut group_size: HashMap<(u64, u64), u32> = HashMap::new();
    for (_, meta) in &found {
        if !meta.is_dir() && meta.nlink() > 1 {
            *group_size.entry((meta.dev(), meta.ino())).or_default() += 1;
        }
    }
    let parent = image.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    let mut writer = ArchiveWriter::new(
        BufWriter::new(temp.as_file_mut()),
        options.compression,
        options.format,
    )?;
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    for (rel, meta) in &found {
        let mut entry = EntryMeta::new(rel.as_os_str().as_bytes(), meta.mode());
        entry.uid = meta.uid();
        entry.gid = meta.gid();
        entry.mtime = options.mtime.unwrap_or(meta.mtime().clamp(0, i64::from(u32::MAX)) as u32);
        entry.rdev_major = nix::sys::stat::major(meta.rdev()) as u32;
        entry.rdev_minor = nix::sys::stat::minor(meta.rdev()) as u32;
        let key = (meta.dev(), meta.ino());
        let mut carries_body = true;
        if let Some(&size) = group_size.get(&key) {
            entry.link_id = meta.ino().max(1);
            entry.nlink = size;
            let n = seen.entry(key).or_default();
            *n += 1;
            carries_body = *n == size;
        }
        let full = dir.join(rel);
        let body = match meta.mode() & S_IFMT {
            S_IFREG if carries_body => {
                std::fs::read(&full).with_context(|| format!("cannot read {}", full.display()))?
            }
            S_IFLNK => std::fs::read_link(&full)?.as_os_str().as_bytes().to_vec(),
            _ => Vec::new(),
        };
        writer.add(&entry, &body).with_context(|| format!("cannot write {}", image.display()))?;
    }
    let out = writer.finish()?;
    out.into_inner().map_err(|e| e.into_error())?;
    temp.as_file().sync_all()?;
    let size = temp.as_file().metadata()?.len();
    temp.persist(image).with_context(|| format!("cannot write {}", image.display()))?;
    std::fs::File::open(parent)?.sync_all()?;
    Ok(size)
}

fn collect(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> Result<()> {
    let here = dir.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&here)
        .with_context(|| format!("cannot read {}", here.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let rel = rel.join(&name);
        let meta = std::fs::symlink_metadata(dir.join(&rel))?;
        let is_dir = meta.is_dir();
        out.push((rel.clone(), meta));
        if is_dir {
            collect(dir, &rel, out)?;
        }
    }
    Ok(())
}
