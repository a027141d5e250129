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
use crate::engines::initramfs::view::{ContentWrite, InodeId, View};
use crate::engines::initramfs::walk::{self, Entry, Visitor};
use crate::formats::cpio::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG};
use anyhow::{bail, Context, Result};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{Mode, SFlag};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    let (view, _) = read_view(BufReader::with_capacity(1 << 20, open(image)?), &source)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = SafeDir::open(dir)?;
    let selected = select(&view, &options.paths)?;
    let is_root = nix::unistd::geteuid().is_root();
    let mut report = ExtractReport::default();
    // Where each regular file's inode was first created, and which entries fill it.
    let mut primary: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut fills: HashMap<u64, (InodeId, bool)> = HashMap::new();
    for entry in view.entries().filter(|e| selected.as_ref().map_or(true, |s| s.contains(e.path))) {
        if entry.path.is_empty() {
            continue;
        }
        let inode = entry.inode;
        let (parent, name) = root.parent(entry.path)?;
        let at = || format!("{}: cannot create {}", dir.display(), entry.display_path());
        match inode.file_type() {
            S_IFDIR => {
                match nix::sys::stat::mkdirat(
                    Some(parent.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o700),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e).with_context(at),
                }
                report.directories += 1;
            }
            S_IFREG => {
                remove_non_dir(&parent, name);
                if let Some(first) = primary.get(&entry.inode_id) {
                    let (first_parent, first_name) = root.parent(first)?;
                    nix::unistd::linkat(
                        Some(first_parent.as_raw_fd()),
                        first_name,
                        Some(parent.as_raw_fd()),
                        name,
                        nix::fcntl::AtFlags::empty(),
                    )
                    .with_context(at)?;
                    report.hardlinks += 1;
                    continue;
                }
                let flags = OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_TRUNC
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let fd =
                    openat(Some(parent.as_raw_fd()), name, flags, Mode::from_bits_truncate(0o600))
                        .with_context(at)?;
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                primary.insert(entry.inode_id, entry.path.to_vec());
                for w in &inode.writes {
                    fills.insert(w.seq, (entry.inode_id, w.truncate));
                }
                report.files += 1;
            }
            S_IFLNK => {
                remove_non_dir(&parent, name);
                nix::unistd::symlinkat(
                    OsStr::from_bytes(&inode.target),
                    Some(parent.as_raw_fd()),
                    name,
                )
                .with_context(at)?;
                report.symlinks += 1;
            }
            kind @ (S_IFCHR | S_IFBLK | S_IFIFO)
                if (options.devices && is_root) || kind == S_IFIFO =>
            {
                remove_non_dir(&parent, name);
                let dev = nix::sys::stat::makedev(
                    u64::from(inode.rdev_major),
                    u64::from(inode.rdev_minor),
                );
                nix::sys::stat::mknodat(
                    Some(parent.as_raw_fd()),
                    name,
                    SFlag::from_bits_truncate(kind),
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .with_context(at)?;
                report.devices += 1;
            }
            _ => report.skipped_nodes += 1,
        }
    }
    if !fills.is_empty() {
        let mut writer = Filler { root: &root, primary: &primary, fills: &fills, dir };
        walk::walk(BufReader::with_capacity(1 << 20, open(image)?), &source, &mut writer)?;
    }
    // Attributes last, deepest first, so read-only directories are already filled.
    let entries: Vec<_> =
        view.entries().filter(|e| selected.as_ref().map_or(true, |s| s.contains(e.path))).collect();
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

fn open(image: &Path) -> Result<File> {
    File::open(image).with_context(|| format!("cannot open {}", image.display()))
}

/// The view paths to extract (with their ancestors), or `None` for everything.
fn select(view: &View, paths: &[String]) -> Result<Option<HashSet<Vec<u8>>>> {
    if paths.is_empty() {
        return Ok(None);
    }
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
    Ok(Some(selected))
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
    fd: OwnedFd,
}

impl SafeDir {
    fn open(dir: &Path) -> Result<SafeDir> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open directory {}", dir.display()))?;
        Ok(SafeDir { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The directory holding `path` (opened without following any symlink) and the last
    /// component's name.
    fn parent<'p>(&self, path: &'p [u8]) -> Result<(OwnedFd, &'p OsStr)> {
        let mut parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let name = parts.pop().unwrap_or_default();
        for part in parts.iter().chain(std::iter::once(&name)) {
            if part.is_empty() || *part == b"." || *part == b".." {
                bail!("refusing unsafe path {:?}", String::from_utf8_lossy(path));
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
        Ok((fd, OsStr::from_bytes(name)))
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
