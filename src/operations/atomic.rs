//! [`AtomicSet`]: write a set of files in one directory all-or-nothing; [`Staged`]: one
//! large file streamed into place (an initramfs), checked before its rename; [`Lock`]:
//! the one `flock`. The one owner of atomic writes in bootkmod.
//!
//! Flow of [`AtomicSet::commit`]:
//!
//! 0. files whose current content already equals the new content are left alone:
//!    re-running on an unchanged input writes nothing (weak-modules runs depmod again
//!    and again);
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
//!
//! [`Staged::commit`] of a file the caller read ([`ReplaceOptions::expect`]) does not
//! check and then rename: writers that take no lock (dracut, `update-initramfs`) rename
//! their own new image over the same name at any moment, and one landing between the
//! check and the rename would be silently overwritten. It swaps the new file with the
//! target in one step (`renameat2(RENAME_EXCHANGE)`), then checks that what it swapped
//! out is the file the caller read, and swaps back when it is not: the other writer's
//! image stays, and the caller gets an error, never a lost write.

use crate::operations::failpoint::{failpoint, step};
use anyhow::{bail, Context, Result};
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

    /// Write everything or nothing. See the module overview. Returns the names of the
    /// files actually replaced (unchanged ones are not).
    pub fn commit(mut self) -> Result<Vec<String>> {
        for (name, _) in &self.files {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                anyhow::bail!("{name:?} is not a plain file name inside {}", self.dir.display());
            }
        }
        let dir = self.dir.clone();
        // A symlink in a target's place is replaced, never read or written through: it
        // may name a file outside the root.
        self.files.retain(|(name, bytes)| {
            read_no_follow(&dir.join(name)).map_or(true, |current| current != *bytes)
        });
        if self.files.is_empty() {
            return Ok(Vec::new());
        }
        let tag = format!("bootkmod-{}", std::process::id());
        let temp = |name: &str| self.dir.join(format!(".{name}.{tag}.new"));
        let backup = |name: &str| self.dir.join(format!(".{name}.{tag}.old"));

        let cleanup = |paths: &[PathBuf]| {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        };
        // Write every temp file in its own thread: the fsyncs then overlap and the
        // filesystem can commit them together instead of one journal flush each.
        let paths: Vec<PathBuf> = self.files.iter().map(|(name, _)| temp(name)).collect();
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let workers: Vec<_> = self
                .files
                .iter()
                .zip(&paths)
                .map(|((_, bytes), path)| s.spawn(move || write_synced(path, bytes, self.mode)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("writer thread panicked")))
                })
                .collect()
        });
        let failed = results.into_iter().find_map(Result::err);
        let written: Vec<PathBuf> = paths;
        if let Some(e) = failed {
            cleanup(&written);
            return Err(e);
        }

        let mut backups: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (name, _) in &self.files {
            let target = self.dir.join(name);
            if std::fs::symlink_metadata(&target).is_ok() {
                let b = backup(name);
                let _ = std::fs::remove_file(&b);
                if let Err(e) = step("link", &b).and_then(|()| std::fs::hard_link(&target, &b)) {
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
            if let Err(e) = step("rename", &target).and_then(|()| std::fs::rename(tmp, &target)) {
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
        sync_dir(&self.dir)?;
        Ok(self.files.into_iter().map(|(name, _)| name).collect())
    }
}

/// The content of the file at `path`, refusing to follow a symlink there.
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The directory a file path is in (`.` for a bare name).
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An exclusive `flock`, held until dropped (or until the process dies, so a killed
/// run never leaves it taken).
#[derive(Debug)]
pub struct Lock {
    _flock: nix::fcntl::Flock<File>,
}

impl Lock {
    /// Lock `path`, waiting for any other holder: a directory as it is (no file left
    /// behind, e.g. `/boot` for the images in it), anything else as a lock file,
    /// created when missing.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        let file = if path.is_dir() {
            File::open(path)
        } else {
            OpenOptions::new().create(true).truncate(false).write(true).open(path)
        }
        .with_context(|| format!("{}: cannot open to lock", path.display()))?;
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("{}: cannot lock", path.display()))?;
        Ok(Lock { _flock: flock })
    }
}

/// What tells one version of a file from another without reading it: any writer that
/// replaces it (a new inode) or changes it (size, mtime) changes this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    pub size: u64,
    mtime: (i64, i64),
}

impl FileIdentity {
    /// The file at `path`, following symlinks.
    pub fn of(path: &Path) -> Result<FileIdentity> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
        Ok(FileIdentity::from(&meta))
    }
}

impl From<&std::fs::Metadata> for FileIdentity {
    fn from(m: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// How [`Staged::commit`] treats the file it replaces.
#[derive(Debug, Clone, Default)]
pub struct ReplaceOptions {
    /// Keep the previous content under this name (same directory): a hard link made
    /// just before the rename, so the backup is always a complete old file.
    pub backup: Option<PathBuf>,
    /// Give the new file the owner, mode and extended attributes (SELinux label
    /// included) of this file; default: those of the target when it exists.
    pub like: Option<PathBuf>,
    /// The target as the caller read it. The commit then replaces exactly that file or
    /// nothing: when another writer has replaced or changed the target since, the
    /// commit fails and leaves the other writer's file in place (module overview).
    pub expect: Option<FileIdentity>,
}

/// Replace one (possibly large) file atomically, streaming its new content: the new
/// content is written to a temp file beside the target ([`Staged::file`]), then
/// [`Staged::commit`] gives it the old file's attributes, fsyncs and checks it, puts it
/// in place (swapped with the file the caller read, when it names one: module overview),
/// keeps the old file as the backup and fsyncs the directory. A crash or kill at any
/// point leaves the target either old or new, whole. Dropped without a commit, the
/// temp file is removed and the target never changed: a caller may start writing before
/// it knows whether it will replace anything.
#[derive(Debug)]
pub struct Staged {
    target: PathBuf,
    dir: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl Staged {
    /// Create the temp file (mode 0600 until commit gives it its final attributes).
    pub fn beside(target: &Path) -> Result<Staged> {
        let dir = dir_of(target);
        let name = target
            .file_name()
            .with_context(|| format!("{}: not a file path", target.display()))?
            .to_string_lossy()
            .into_owned();
        let temp = dir.join(format!(".{name}.bootkmod-{}.new", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("{}: cannot create", temp.display()))?;
        Ok(Staged { target: target.to_path_buf(), dir, temp, file: Some(file) })
    }

    /// The temp file, open for writing.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("a staged file is open until commit")
    }

    /// Give the temp file the target's owner, mode and xattrs (or `opts.like`'s), fsync
    /// it while `check` reads it (both must finish), then put it in place: with
    /// `opts.expect`, swapped with the target and the swapped-out file checked (module
    /// overview), which becomes the backup; else the backup linked and the temp file
    /// renamed over the target. Last, fsync the directory. What `check` proves holds for
    /// the bytes that become the target; an error from it, or from any step, leaves the
    /// target as it was (another writer's file included).
    pub fn commit(
        mut self,
        opts: &ReplaceOptions,
        check: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let (target, temp) = (&self.target, &self.temp);
        let f = self.file.take().expect("a staged file is committed once");
        let like = opts.like.clone().or_else(|| target.exists().then(|| target.clone()));
        if let Some(like) = &like {
            copy_attributes(like, &f).with_context(|| {
                format!(
                    "{}: cannot copy owner, mode and labels of {}",
                    temp.display(),
                    like.display()
                )
            })?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        // The check reads what the page cache holds while the disk catches up: both
        // must finish before the rename, neither needs the other.
        step("write", temp).with_context(|| format!("{}: cannot write", temp.display()))?;
        std::thread::scope(|scope| {
            let synced = scope.spawn(|| step("fsync", temp).and_then(|()| f.sync_all()));
            let checked = check(temp);
            let synced = synced.join().map_err(|_| anyhow::anyhow!("fsync thread panicked"))?;
            synced.with_context(|| format!("{}: cannot fsync", temp.display()))?;
            checked
        })?;
        let ours = FileIdentity::from(&f.metadata()?);
        drop(f);
        // The worst moment for another writer's rename: everything is checked, nothing
        // is swapped yet (the race test stops here).
        failpoint("staged:exchange");
        if let Some(expect) = opts.expect {
            match exchange(temp, target) {
                Ok(()) => return self.after_exchange(expect, ours, opts),
                Err(e) if exchange_unsupported(&e) => {
                    // A filesystem without RENAME_EXCHANGE: the check and the rename are
                    // two steps, as close together as they can be.
                    tracing::debug!("{}: no RENAME_EXCHANGE here ({e})", target.display());
                    if FileIdentity::of(target)? != expect {
                        bail!("{}", replaced_meanwhile(target));
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot replace", target.display()))
                }
            }
        }
        if let (Some(backup), true) = (&opts.backup, target.exists()) {
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            let link = self.dir.join(format!(".{name}.bootkmod-{}.bak", std::process::id()));
            let _ = std::fs::remove_file(&link);
            step("link", &link)
                .and_then(|()| std::fs::hard_link(target, &link))
                .with_context(|| format!("{}: cannot back up", target.display()))?;
            if let Err(e) = step("rename", backup).and_then(|()| std::fs::rename(&link, backup)) {
                let _ = std::fs::remove_file(&link);
                return Err(e)
                    .with_context(|| format!("{}: cannot create backup", backup.display()));
            }
        }
        step("rename", target)
            .and_then(|()| std::fs::rename(temp, target))
            .with_context(|| format!("{}: cannot replace", target.display()))?;
        // Renamed: nothing left for drop to remove.
        self.temp = PathBuf::new();
        sync_dir(&self.dir)
    }

    /// The new file is the target now and the temp name holds what was swapped out.
    /// When that is the file the caller read, it becomes the backup (or goes); when not,
    /// another writer renamed its file in after the caller read the target: swap back,
    /// so that file stays, and fail.
    fn after_exchange(
        mut self,
        expect: FileIdentity,
        ours: FileIdentity,
        opts: &ReplaceOptions,
    ) -> Result<()> {
        let (target, temp) = (&self.target, &self.temp);
        // Followed like the caller's read was (an image named through a symlink).
        if FileIdentity::of(temp).is_ok_and(|id| id == expect) {
            match &opts.backup {
                Some(backup) => std::fs::rename(temp, backup)
                    .with_context(|| format!("{}: cannot create backup", backup.display()))?,
                None => std::fs::remove_file(temp)
                    .with_context(|| format!("{}: cannot remove", temp.display()))?,
            }
            self.temp = PathBuf::new();
            return sync_dir(&self.dir);
        }
        exchange(temp, target).with_context(|| {
            format!(
                "{}: replaced by another writer while bootkmod replaced it, and cannot be \
                 swapped back: that writer's file is now {}",
                target.display(),
                temp.display()
            )
        })?;
        if FileIdentity::of(temp).ok() != Some(ours) {
            // A third rename came between the two swaps: what the temp name holds now is
            // not bootkmod's to remove.
            let kept = std::mem::take(&mut self.temp);
            bail!(
                "{}: replaced by other writers while bootkmod replaced it; {} is one of \
                 their files, left for the admin",
                target.display(),
                kept.display()
            );
        }
        sync_dir(&self.dir)?;
        bail!("{}", replaced_meanwhile(target))
    }
}

/// The error of a commit that found the target replaced since it was read.
fn replaced_meanwhile(target: &Path) -> String {
    format!(
        "{}: another writer (dracut? update-initramfs?) replaced it while bootkmod was \
         writing; kept that writer's file, changed nothing: run the command again",
        target.display()
    )
}

/// Swap two names in one step (both must exist).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    step("rename", b)?;
    renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE).map_err(std::io::Error::from)
}

/// Whether `renameat2(RENAME_EXCHANGE)` failed because this kernel or filesystem lacks
/// it (not because of the files).
fn exchange_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP))
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Owner, permission bits and extended attributes (`security.selinux` among them) of
/// `from` onto the open file `to`.
fn copy_attributes(from: &Path, to: &File) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(from)?;
    std::os::unix::fs::fchown(to, Some(meta.uid()), Some(meta.gid()))?;
    to.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    for (name, value) in xattrs(from)? {
        set_xattr(to, &name, &value)?;
    }
    Ok(())
}

/// Every extended attribute of a file (none when the filesystem has no xattrs).
fn xattrs(path: &Path) -> Result<Vec<(std::ffi::CString, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: listxattr/getxattr write at most `len` bytes into buffers we own.
    let len = unsafe { libc::listxattr(c_path.as_ptr(), std::ptr::null_mut(), 0) };
    if len <= 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; len as usize];
    let len = unsafe { libc::listxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Ok(Vec::new());
    }
    names.truncate(len as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let c_name = std::ffi::CString::new(name)?;
        let size =
            unsafe { libc::getxattr(c_path.as_ptr(), c_name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            continue;
        }
        let mut value = vec![0u8; size as usize];
        let size = unsafe {
            libc::getxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len())
        };
        if size >= 0 {
            value.truncate(size as usize);
            out.push((c_name, value));
        }
    }
    Ok(out)
}

fn set_xattr(file: &File, name: &std::ffi::CStr, value: &[u8]) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fsetxattr reads `value.len()` bytes from a live slice.
    let rc = unsafe {
        libc::fsetxattr(file.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot set attribute {}", name.to_string_lossy()));
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    step("write", path)
        .and_then(|()| f.write_all(bytes))
        .with_context(|| format!("{}: cannot write", path.display()))?;
    step("fsync", path)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("{}: cannot fsync", path.display()))?;
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
    step("symlink", &temp)
        .and_then(|()| std::os::unix::fs::symlink(target, &temp))
        .with_context(|| format!("{}: cannot create symlink", temp.display()))?;
    if let Err(e) = step("rename", link).and_then(|()| std::fs::rename(&temp, link)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("{}: cannot replace", link.display()));
    }
    sync_dir(dir)
}

/// Remove a file or symlink (absent is fine) and fsync its directory.
pub fn remove_synced(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match step("unlink", path).and_then(|()| std::fs::remove_file(path)) {
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
    step("fsync", dir)
        .and_then(|()| File::open(dir))
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
        let written = AtomicSet::new(t.path())
            .file("a", b"new a".to_vec())
            .file("b", b"new b".to_vec())
            .commit()
            .unwrap();
        assert_eq!(written, ["a", "b"]);
        let again = AtomicSet::new(t.path())
            .file("a", b"new a".to_vec())
            .file("b", b"newer b".to_vec())
            .commit()
            .unwrap();
        assert_eq!(again, ["b"], "an unchanged file is not rewritten");
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"new a");
        assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"newer b");
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

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn stage(target: &Path, bytes: &[u8]) -> Staged {
        let mut staged = Staged::beside(target).unwrap();
        staged.file().write_all(bytes).unwrap();
        staged
    }

    #[test]
    fn staged_commit_swaps_in_and_keeps_what_it_read_as_the_backup() {
        let t = tempfile::tempdir().unwrap();
        let (img, bak) = (t.path().join("img"), t.path().join("img.bak"));
        std::fs::write(&img, b"old").unwrap();
        let opts = ReplaceOptions {
            backup: Some(bak.clone()),
            expect: Some(FileIdentity::of(&img).unwrap()),
            ..ReplaceOptions::default()
        };
        stage(&img, b"new").commit(&opts, |_| Ok(())).unwrap();
        assert_eq!(std::fs::read(&img).unwrap(), b"new");
        assert_eq!(std::fs::read(&bak).unwrap(), b"old");
        assert_eq!(names(t.path()), ["img", "img.bak"]);
    }

    #[test]
    fn staged_commit_keeps_a_file_another_writer_renamed_in_after_the_check() {
        let t = tempfile::tempdir().unwrap();
        let (img, bak) = (t.path().join("img"), t.path().join("img.bak"));
        std::fs::write(&img, b"old").unwrap();
        let opts = ReplaceOptions {
            backup: Some(bak.clone()),
            expect: Some(FileIdentity::of(&img).unwrap()),
            ..ReplaceOptions::default()
        };
        // The other writer (dracut: write a temp file, rename it over the image) strikes
        // after the caller's check passed, just before the commit swaps.
        let err = stage(&img, b"new")
            .commit(&opts, |_| {
                let theirs = t.path().join("img.12345");
                std::fs::write(&theirs, b"theirs").unwrap();
                std::fs::rename(&theirs, &img).unwrap();
                Ok(())
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("another writer"), "{err:#}");
        assert_eq!(std::fs::read(&img).unwrap(), b"theirs");
        assert_eq!(names(t.path()), ["img"], "no backup, no temp file left");
    }

    #[test]
    fn staged_commit_refuses_a_target_changed_in_place() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("img");
        std::fs::write(&img, b"old").unwrap();
        let opts = ReplaceOptions {
            expect: Some(FileIdentity::of(&img).unwrap()),
            ..ReplaceOptions::default()
        };
        let err = stage(&img, b"new")
            .commit(&opts, |_| {
                std::fs::OpenOptions::new().append(true).open(&img)?.write_all(b" more")?;
                Ok(())
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("another writer"), "{err:#}");
        assert_eq!(std::fs::read(&img).unwrap(), b"old more");
        assert_eq!(names(t.path()), ["img"]);
    }
}
