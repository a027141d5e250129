//! Extracting an image's merged view into a directory, safely; printing one file.
//!
//! Flow: pass 1 builds the kernel's view of the image (`engines::initramfs`); the tree is
//! created from the view (directories, empty files, hard links, symlinks, and device
//! nodes only when asked and root); pass 2 streams the image again and writes each
//! body into the inode it ends up in; modes and mtimes are set last (directories deepest
//! first, so a read-only directory is filled before it is closed).
//!
//! Never outside DIR: the view's paths are already resolved (no `..`, no absolute
//! paths, intermediate symlinks followed *inside the image*), and every filesystem call
//! goes through a directory descriptor opened component by component with
//! `O_NOFOLLOW`, so neither a symlink from the image nor one already in DIR is followed.
//! (cap-std would give the same guarantee; these few `*at` calls through `nix`, already a
//! dependency, are all extraction needs.)

use crate::engines::initramfs::read_view;
use crate::engines::initramfs::view::{ContentWrite, Effect, Inode, InodeId, View};
use crate::engines::initramfs::walk::{self, Entry, Visitor};
use crate::formats::cpio::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG};
use anyhow::{bail, Context, Result};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{Mode, SFlag};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

/// What to extract and how.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Only these paths (and what is under them); all when empty.
    pub paths: Vec<String>,
    /// Create device nodes (needs root); otherwise they are skipped and counted.
    pub devices: bool,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractReport {
    pub directories: usize,
    pub files: usize,
    pub symlinks: usize,
    pub hardlinks: usize,
    pub devices: usize,
    /// Device nodes, fifos and sockets not created.
    pub skipped_nodes: usize,
}

/// Extract `image` into `dir` (created if missing).
pub fn extract(image: &Path, dir: &Path, options: &ExtractOptions) -> Result<ExtractReport> {
    let source = image.display().to_string();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = SafeDir::open(dir)?;
    let is_root = nix::unistd::geteuid().is_root();
    let make_devices = options.devices && is_root;
    let (view, selected) = if options.paths.is_empty() {
        // One pass: replay on disk what the kernel does, entry by entry.
        let mut view = View::new();
        view.record_effects();
        let mut replay = Replay { view, root: &root, make_devices, dir, buf: Vec::new() };
        walk::walk(BufReader::with_capacity(1 << 20, open(image)?), &source, &mut replay)?;
        (replay.view, None)
    } else {
        let (view, _) = read_view(BufReader::with_capacity(1 << 20, open(image)?), &source)?;
        let selected = select(&view, &options.paths)?;
        create_selected(&view, &selected, &root, make_devices, image, &source, dir)?;
        (view, Some(selected))
    };
    let in_selection = |path: &[u8]| selected.as_ref().is_none_or(|s| s.contains(path));
    let mut report = ExtractReport::default();
    let mut seen = HashSet::new();
    for e in view.entries().filter(|e| !e.path.is_empty() && in_selection(e.path)) {
        match e.inode.file_type() {
            S_IFDIR => report.directories += 1,
            S_IFREG if !seen.insert(e.inode_id) => report.hardlinks += 1,
            S_IFREG => report.files += 1,
            S_IFLNK => report.symlinks += 1,
            S_IFIFO => report.devices += 1,
            _ if make_devices => report.devices += 1,
            _ => report.skipped_nodes += 1,
        }
    }
    // Attributes last, deepest first, so read-only directories are already filled.
    let entries: Vec<_> = view.entries().filter(|e| in_selection(e.path)).collect();
    for entry in entries.iter().rev() {
        if entry.path.is_empty() || entry.inode.file_type() == S_IFLNK {
            continue;
        }
        let (parent, name) = root.parent(entry.path)?;
        let inode = entry.inode;
        let missing = inode.file_type() != S_IFDIR
            && inode.file_type() != S_IFREG
            && nix::sys::stat::fstatat(
                Some(parent.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_err();
        if missing {
            continue;
        }
        if is_root {
            let _ = nix::unistd::fchownat(
                Some(parent.as_raw_fd()),
                name,
                Some(inode.uid.into()),
                Some(inode.gid.into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        let at = || format!("{}: cannot set mode of {}", dir.display(), entry.display_path());
        nix::sys::stat::fchmodat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(inode.mode & !S_IFMT),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .or_else(|e| if e == nix::errno::Errno::EOPNOTSUPP { Ok(()) } else { Err(e) })
        .with_context(at)?;
        let time = nix::sys::time::TimeSpec::new(i64::from(inode.mtime), 0);
        nix::sys::stat::utimensat(
            Some(parent.as_raw_fd()),
            name,
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .with_context(at)?;
    }
    Ok(report)
}

/// PATHS mode: create the selected part of the final view, then stream the bodies in a
/// second pass (an entry's body is only known to be wanted once the view is complete).
fn create_selected(
    view: &View,
    selected: &HashSet<Vec<u8>>,
    root: &SafeDir,
    make_devices: bool,
    image: &Path,
    source: &str,
    dir: &Path,
) -> Result<()> {
    // Where each regular file's inode was first created, and which entries fill it.
    let mut primary: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut fills: HashMap<u64, (InodeId, bool)> = HashMap::new();
    for entry in view.entries().filter(|e| !e.path.is_empty() && selected.contains(e.path)) {
        let inode = entry.inode;
        match inode.file_type() {
            S_IFDIR => root.mkdir(entry.path)?,
            S_IFREG => {
                if let Some(first) = primary.get(&entry.inode_id) {
                    root.link(first, entry.path)?;
                    continue;
                }
                drop(root.open_file(entry.path, true)?);
                primary.insert(entry.inode_id, entry.path.to_vec());
                for w in &inode.writes {
                    fills.insert(w.seq, (entry.inode_id, w.truncate));
                }
            }
            S_IFLNK => root.symlink(entry.path, &inode.target)?,
            kind => root.mknod(entry.path, kind, inode, make_devices)?,
        }
    }
    if !fills.is_empty() {
        let mut writer = Filler { root, primary: &primary, fills: &fills, dir };
        walk::walk(BufReader::with_capacity(1 << 20, open(image)?), source, &mut writer)?;
    }
    Ok(())
}

/// One-pass extraction: the view applies each entry, and its effects are replayed in DIR
/// in the same order, bodies streaming straight into their files.
struct Replay<'a> {
    view: View,
    root: &'a SafeDir,
    make_devices: bool,
    dir: &'a Path,
    buf: Vec<u8>,
}

impl Visitor for Replay<'_> {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        self.view.entry(entry, body)?;
        for effect in self.view.take_effects() {
            let at = || {
                format!(
                    "{}: cannot extract {:?}",
                    self.dir.display(),
                    String::from_utf8_lossy(&entry.name)
                )
            };
            match effect {
                Effect::Remove { path, dir } => self.root.remove(&path, dir).with_context(at)?,
                Effect::Mkdir { path } => self.root.mkdir(&path)?,
                Effect::Write { path, truncate } => {
                    let mut file = self.root.open_file(&path, truncate)?;
                    copy_body(body, &mut file, &mut self.buf).with_context(at)?;
                }
                Effect::Link { from, to } => self.root.link(&from, &to)?,
                Effect::Symlink { path, target } => self.root.symlink(&path, &target)?,
                Effect::Mknod { path, inode } => {
                    let inode = self.view.inode(inode).clone();
                    self.root.mknod(&path, inode.file_type(), &inode, self.make_devices)?
                }
            }
        }
        Ok(())
    }
}

/// Copy a body with a buffer sized for module files rather than `io::copy`'s 8 KiB.
fn copy_body(body: &mut dyn Read, out: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(256 << 10, 0);
    loop {
        let n = body.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
    }
}

/// Write the content of the regular file at `path` (symlinks followed inside the image)
/// to `out`.
pub fn cat(image: &Path, path: &str, out: &mut dyn Write) -> Result<()> {
    let source = image.display().to_string();
    let (view, _) = read_view(BufReader::with_capacity(1 << 20, open(image)?), &source)?;
    let Some(found) = view.lookup(path.as_bytes(), true) else {
        bail!("{source}: no {path} in the image");
    };
    if found.inode.file_type() != S_IFREG {
        bail!("{source}: {path} is not a regular file");
    }
    let writes = found.inode.writes.clone();
    let single = writes.len() == 1;
    let mut visitor = Cat { writes, out: single.then_some(&mut *out), content: Vec::new() };
    walk::walk(BufReader::with_capacity(1 << 20, open(image)?), &source, &mut visitor)?;
    let content = std::mem::take(&mut visitor.content);
    drop(visitor);
    if !single {
        out.write_all(&content)?;
    }
    out.flush()?;
    Ok(())
}

/// Pass 2 of `cat`: streams a file written once, assembles one written several times
/// (a hard link's body written over an earlier one without truncation).
struct Cat<'w> {
    writes: Vec<ContentWrite>,
    out: Option<&'w mut dyn Write>,
    content: Vec<u8>,
}

impl Visitor for Cat<'_> {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        let Some(w) = self.writes.iter().find(|w| w.seq == entry.seq) else { return Ok(()) };
        if let Some(out) = self.out.as_mut() {
            io::copy(body, out)?;
            return Ok(());
        }
        if w.truncate {
            self.content.clear();
        }
        let mut data = Vec::new();
        body.read_to_end(&mut data)?;
        let n = data.len().min(self.content.len());
        self.content[..n].copy_from_slice(&data[..n]);
        self.content.extend_from_slice(&data[n..]);
        Ok(())
    }
}

/// The image's initramfs bytes (a Unified Kernel Image's `.initrd`).
fn open(image: &Path) -> Result<io::Take<File>> {
    Ok(crate::model::uki::open_initramfs(image)?.0)
}

/// The view paths to extract: `paths`, what is under them, and their ancestors.
fn select(view: &View, paths: &[String]) -> Result<HashSet<Vec<u8>>> {
    let mut roots = Vec::new();
    for p in paths {
        let Some(found) = view.lookup(p.as_bytes(), false) else { bail!("no {p} in the image") };
        roots.push(found.path.to_vec());
    }
    let mut selected = HashSet::new();
    for e in view.entries() {
        let under = roots.iter().any(|r| {
            r.is_empty()
                || e.path == r.as_slice()
                || (e.path.starts_with(r) && e.path.get(r.len()) == Some(&b'/'))
        });
        let above = roots.iter().any(|r| {
            r.starts_with(e.path) && (e.path.is_empty() || r.get(e.path.len()) == Some(&b'/'))
        });
        if under || above {
            selected.insert(e.path.to_vec());
        }
    }
    Ok(selected)
}

/// Remove a non-directory already at the place (an earlier extraction); directories stay.
fn remove_non_dir(parent: &OwnedFd, name: &OsStr) {
    let _ = nix::unistd::unlinkat(
        Some(parent.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

/// The extraction directory, reached only through descriptors.
struct SafeDir {
    fd: Rc<OwnedFd>,
    /// The last parent directory opened: consecutive entries mostly share one, and
    /// opening it component by component costs a syscall per level. Dropped whenever a
    /// name is removed, so it never points at a replaced directory.
    last_parent: RefCell<Option<(Vec<u8>, Rc<OwnedFd>)>>,
}

impl SafeDir {
    fn open(dir: &Path) -> Result<SafeDir> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open directory {}", dir.display()))?;
        Ok(SafeDir {
            fd: Rc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            last_parent: RefCell::new(None),
        })
    }

    /// The directory holding `path` (opened without following any symlink) and the last
    /// component's name.
    fn parent<'p>(&self, path: &'p [u8]) -> Result<(Rc<OwnedFd>, &'p OsStr)> {
        let mut parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let name = parts.pop().unwrap_or_default();
        for part in parts.iter().chain(std::iter::once(&name)) {
            if part.is_empty() || *part == b"." || *part == b".." {
                bail!("refusing unsafe path {:?}", String::from_utf8_lossy(path));
            }
        }
        let name = OsStr::from_bytes(name);
        if parts.is_empty() {
            return Ok((self.fd.clone(), name));
        }
        let parent_path = &path[..path.len() - name.len() - 1];
        if let Some((cached, fd)) = self.last_parent.borrow().as_ref() {
            if cached == parent_path {
                return Ok((fd.clone(), name));
            }
        }
        let mut fd = self.fd.try_clone()?;
        for part in parts {
            let next = openat(
                Some(fd.as_raw_fd()),
                OsStr::from_bytes(part),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| {
                format!(
                    "refusing to follow {:?}: not a directory inside the target",
                    String::from_utf8_lossy(path)
                )
            })?;
            fd = unsafe { OwnedFd::from_raw_fd(next) };
        }
        let fd = Rc::new(fd);
        *self.last_parent.borrow_mut() = Some((parent_path.to_vec(), fd.clone()));
        Ok((fd, name))
    }
}

impl SafeDir {
    fn describe(path: &[u8]) -> String {
        String::from_utf8_lossy(path).into_owned()
    }

    fn mkdir(&self, path: &[u8]) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot create directory {}", Self::describe(path)))
            }
        }
    }

    /// Open (creating) a regular file for writing, never through a symlink: a symlink
    /// left in DIR by something else is replaced.
    fn open_file(&self, path: &[u8], truncate: bool) -> Result<File> {
        let (parent, name) = self.parent(path)?;
        let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if truncate {
            flags |= OFlag::O_TRUNC;
        }
        let open =
            || openat(Some(parent.as_raw_fd()), name, flags, Mode::from_bits_truncate(0o600));
        let fd = match open() {
            Err(nix::errno::Errno::ELOOP) => {
                remove_non_dir(&parent, name);
                open()
            }
            other => other,
        }
        .with_context(|| format!("cannot write {}", Self::describe(path)))?;
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn remove(&self, path: &[u8], dir: bool) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        self.last_parent.borrow_mut().take();
        let how = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        match nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, how) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", Self::describe(path))),
        }
    }

    /// Run `make` in the parent of `path`; if the name is taken by a leftover non-directory,
    /// remove it and retry once.
    fn create(
        &self,
        path: &[u8],
        what: &str,
        make: impl Fn(&OwnedFd, &OsStr) -> nix::Result<()>,
    ) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        let result = match make(&parent, name) {
            Err(nix::errno::Errno::EEXIST) => {
                remove_non_dir(&parent, name);
                make(&parent, name)
            }
            other => other,
        };
        result.with_context(|| format!("cannot create {what} {}", Self::describe(path)))
    }

    fn link(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let (from_parent, from_name) = self.parent(from)?;
        self.create(to, "hard link", |parent, name| {
            nix::unistd::linkat(
                Some(from_parent.as_raw_fd()),
                from_name,
                Some(parent.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::empty(),
            )
        })
    }

    fn symlink(&self, path: &[u8], target: &[u8]) -> Result<()> {
        self.create(path, "symlink", |parent, name| {
            nix::unistd::symlinkat(OsStr::from_bytes(target), Some(parent.as_raw_fd()), name)
        })
    }

    /// Device nodes only when allowed; fifos always; sockets never (they are not files
    /// one can create meaningfully).
    fn mknod(&self, path: &[u8], kind: u32, inode: &Inode, make_devices: bool) -> Result<()> {
        let allowed = match kind {
            S_IFIFO => true,
            S_IFCHR | S_IFBLK => make_devices,
            _ => false,
        };
        if !allowed {
            return Ok(());
        }
        let dev = nix::sys::stat::makedev(u64::from(inode.rdev_major), u64::from(inode.rdev_minor));
        self.create(path, "node", |parent, name| {
            nix::sys::stat::mknodat(
                Some(parent.as_raw_fd()),
                name,
                SFlag::from_bits_truncate(kind),
                Mode::from_bits_truncate(0o600),
                dev,
            )
        })
    }
}

/// Pass 2: streams bodies into the files created in pass 1.
struct Filler<'a> {
    root: &'a SafeDir,
    primary: &'a HashMap<InodeId, Vec<u8>>,
    fills: &'a HashMap<u64, (InodeId, bool)>,
    dir: &'a Path,
}

impl Visitor for Filler<'_> {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        let Some(&(inode, truncate)) = self.fills.get(&entry.seq) else { return Ok(()) };
        let path = &self.primary[&inode];
        let (parent, name) = self.root.parent(path)?;
        let mut flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if truncate {
            flags |= OFlag::O_TRUNC;
        }
        let fd =
            openat(Some(parent.as_raw_fd()), name, flags, Mode::empty()).with_context(|| {
                format!("{}: cannot write {}", self.dir.display(), String::from_utf8_lossy(path))
            })?;
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        io::copy(body, &mut file)?;
        Ok(())
    }
}
