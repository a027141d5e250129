//! [`AtomicSet`]: write a set of files in one directory all-or-nothing. The one owner
//! of atomic writes in bootkmod.
//!
//! Flow of [`AtomicSet::commit`]:
//!
//! 1. every new content goes to a temp file beside its target (same directory, so the
//!    rename cannot cross filesystems), mode 0644, written and fsynced;
//! 2. existing targets are hard-linked to backup names;
//! 3. temp files are renamed over their targets; if one rename fails, the targets
//!    already replaced are restored from their backups;
//! 4. backups are removed and the directory is fsynced, making the renames durable.
//!
//! A crash before step 3 leaves the old set; during step 3 the directory may hold a
//! mix for a moment, but temp and backup names (`.NAME.bootkmod-*`) make any leftovers
//! recognisable. Readers never see a partially written file.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Files to replace together in `dir`.
#[derive(Debug)]
pub struct AtomicSet {
    dir: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    mode: u32,
}

impl AtomicSet {
    pub fn new(dir: impl Into<PathBuf>) -> AtomicSet {
        AtomicSet { dir: dir.into(), files: Vec::new(), mode: 0o644 }
    }

    /// Add a file (a plain name inside the directory).
    pub fn file(mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> AtomicSet {
        self.files.push((name.into(), bytes.into()));
        self
    }

    /// Permission bits of the new files (default 0644).
    pub fn mode(mut self, mode: u32) -> AtomicSet {
        self.mode = mode;
        self
    }

    /// Write everything or nothing. See the module overview.
    pub fn commit(self) -> Result<()> {
        for (name, _) in &self.files {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                anyhow::bail!("{name:?} is not a plain file name inside {}", self.dir.display());
            }
        }
        let tag = format!("bootkmod-{}", std::process::id());
        let temp = |name: &str| self.dir.join(format!(".{name}.{tag}.new"));
        let backup = |name: &str| self.dir.join(format!(".{name}.{tag}.old"));

        let mut written: Vec<PathBuf> = Vec::new();
        let cleanup = |paths: &[PathBuf]| {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        };
        for (name, bytes) in &self.files {
            let path = temp(name);
            if let Err(e) = write_synced(&path, bytes, self.mode) {
                cleanup(&written);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            written.push(path);
        }

        let mut backups: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (name, _) in &self.files {
            let target = self.dir.join(name);
            if target.exists() {
                let b = backup(name);
                let _ = std::fs::remove_file(&b);
                if let Err(e) = std::fs::hard_link(&target, &b) {
                    cleanup(&written);
                    cleanup(&backups.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>());
                    return Err(e).with_context(|| format!("{}: cannot back up", target.display()));
                }
                backups.push((b, target));
            }
        }

        let mut replaced: Vec<PathBuf> = Vec::new();
        for ((name, _), tmp) in self.files.iter().zip(&written) {
            let target = self.dir.join(name);
            if let Err(e) = std::fs::rename(tmp, &target) {
                // Put back what was already replaced; remove what did not exist before.
                for t in &replaced {
                    match backups.iter().find(|(_, orig)| orig == t) {
                        Some((b, _)) => {
                            let _ = std::fs::rename(b, t);
                        }
                        None => {
                            let _ = std::fs::remove_file(t);
                        }
                    }
                }
                cleanup(&written);
                cleanup(&backups.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>());
                return Err(e).with_context(|| format!("{}: cannot replace", target.display()));
            }
            replaced.push(target);
        }
        cleanup(&backups.into_iter().map(|(b, _)| b).collect::<Vec<_>>());
        sync_dir(&self.dir)
    }
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    f.write_all(bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    f.sync_all().with_context(|| format!("{}: cannot fsync", path.display()))?;
    Ok(())
}

/// Point `link` at `target` atomically: a new symlink under a temp name beside it,
/// renamed over whatever `link` was, then the directory fsynced. Readers see the old
/// link or the new one, never none (weak-updates links are replaced in place).
pub fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    let dir = link.parent().with_context(|| format!("{}: no parent directory", link.display()))?;
    let name = link.file_name().with_context(|| format!("{}: no file name", link.display()))?;
    let temp = dir.join(format!(".{}.bootkmod-{}.new", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp)
        .with_context(|| format!("{}: cannot create symlink", temp.display()))?;
    if let Err(e) = std::fs::rename(&temp, link) {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("{}: cannot replace", link.display()));
    }
    sync_dir(dir)
}

/// Remove a file or symlink (absent is fine) and fsync its directory.
pub fn remove_synced(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot remove", path.display())),
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// fsync a directory so renames inside it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: cannot fsync directory", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_all_files_and_leaves_no_temporaries() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"old").unwrap();
        AtomicSet::new(t.path())
            .file("a", b"new a".to_vec())
            .file("b", b"new b".to_vec())
            .commit()
            .unwrap();
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"new a");
        assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"new b");
        let names: Vec<_> =
            std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path().join("b")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_failing_file_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"old").unwrap();
        // "d" is a directory: it cannot be backed up or replaced by a file.
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/x"), b"x").unwrap();
        let err =
            AtomicSet::new(t.path()).file("a", b"new".to_vec()).file("d", b"new".to_vec()).commit();
        assert!(err.is_err());
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"old");
        let names: Vec<_> =
            std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(AtomicSet::new(t.path()).file("../x", b"".to_vec()).commit().is_err());
    }
}
