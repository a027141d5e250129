//! The merged view: the file tree the kernel builds from an image, with each name's
//! segment of origin.
//!
//! [`View`] is a [`Visitor`]: fed every entry in order, it applies what
//! `init/initramfs.c` does with the syscalls it makes, without touching disk:
//! - paths are resolved like the VFS does: `.` and `..` (never above the root), and
//!   symlinks in the middle of a path are followed inside the image (`lib/modules/x`
//!   lands in `usr/lib/modules/x` when `lib -> usr/lib`); a missing parent drops the
//!   entry (the kernel creates no parents);
//! - an existing name of another type is removed first (a directory only when empty),
//!   so a later directory replaces a symlink, a later file replaces a device;
//! - a regular file over an existing one rewrites that inode (its other hard links see
//!   the new content); a directory over a directory only updates its owner and mode; a
//!   device or symlink over an existing one of the same name is refused (`EEXIST`);
//! - hard links are recognised by (inode, device, type) with `nlink >= 2`, and the
//!   table is reset at each `TRAILER!!!`;
//! - non-file entries with a body are skipped, as the kernel skips their name.
//!
//! Contents are not kept: each inode records which entries wrote its bytes, so a second
//! pass over the image can stream them (see `operations::extract`).

use super::walk::{Entry, Visitor};
use crate::formats::cpio::{
    self, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;

/// Index of an inode in the view.
pub type InodeId = usize;

/// Where a name came from: the entry that last created or changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    pub segment: usize,
    /// The entry's running number in the image ([`Entry::seq`]).
    pub seq: u64,
}

/// One write of an entry's body into an inode, at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentWrite {
    pub seq: u64,
    pub len: u64,
    /// Whether the file was truncated first (false for a hard link's body).
    pub truncate: bool,
}

/// A file, directory, link or node as the kernel leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// A symlink's target.
    pub target: Vec<u8>,
    /// For regular files, the writes that make up the content, in image order.
    pub writes: Vec<ContentWrite>,
}

impl Inode {
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    /// Size of a regular file (writes at offset 0 without truncation keep a longer tail).
    pub fn size(&self) -> u64 {
        match self.file_type() {
            S_IFREG => self.writes.iter().map(|w| w.len).max().unwrap_or(0),
            S_IFLNK => self.target.len() as u64,
            _ => 0,
        }
    }

    /// The `ls -l` style type letter.
    pub fn type_char(&self) -> char {
        match self.file_type() {
            S_IFDIR => 'd',
            S_IFLNK => 'l',
            S_IFCHR => 'c',
            S_IFBLK => 'b',
            S_IFIFO => 'p',
            S_IFSOCK => 's',
            _ => '-',
        }
    }
}

/// A name in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    pub inode: InodeId,
    /// `None` only for the root when no entry declared it.
    pub origin: Option<Origin>,
}

/// An entry the kernel would not create, and why (for diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    pub name: String,
    pub origin: Origin,
    pub reason: &'static str,
}

/// The tree the kernel builds. Paths are relative, `/`-separated bytes; the root is
/// the empty path.
#[derive(Debug, Clone)]
pub struct View {
    inodes: Vec<Inode>,
    names: BTreeMap<Vec<u8>, Name>,
    /// Hard-link table: (ino, devmajor, devminor, type) -> first path.
    links: HashMap<(u32, u32, u32, u32), Vec<u8>>,
    dropped: Vec<Dropped>,
    /// When recording, what the last entries did to the tree, in order.
    effects: Option<Vec<Effect>>,
}

/// One change the kernel makes to its tree for an entry, in the order it makes them: what
/// a caller replays to reproduce the tree on disk in a single pass (`operations::extract`).
/// Paths are resolved view paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A name was removed (`unlink`, or `rmdir` of an empty directory).
    Remove {
        path: Vec<u8>,
        dir: bool,
    },
    Mkdir {
        path: Vec<u8>,
    },
    /// The entry's body is written at offset 0 of the file at `path`, created if missing.
    Write {
        path: Vec<u8>,
        truncate: bool,
    },
    /// A hard link `to` the name `from`.
    Link {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
    },
    /// A device node, fifo or socket.
    Mknod {
        path: Vec<u8>,
        inode: InodeId,
    },
}

/// One name of the view with its inode.
#[derive(Debug, Clone, Copy)]
pub struct ViewEntry<'a> {
    /// Relative path; empty for the root.
    pub path: &'a [u8],
    pub inode_id: InodeId,
    pub inode: &'a Inode,
    pub origin: Option<Origin>,
}

impl ViewEntry<'_> {
    /// The path as listed: `.` for the root.
    pub fn display_path(&self) -> String {
        if self.path.is_empty() {
            ".".into()
        } else {
            String::from_utf8_lossy(self.path).into_owned()
        }
    }
}

/// Bound on symlink hops while resolving, as the kernel's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

impl Default for View {
    fn default() -> Self {
        View::new()
    }
}

impl View {
    pub fn new() -> View {
        let root = Inode {
            mode: S_IFDIR | 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            rdev_major: 0,
            rdev_minor: 0,
            target: Vec::new(),
            writes: Vec::new(),
        };
        let mut names = BTreeMap::new();
        names.insert(Vec::new(), Name { inode: 0, origin: None });
        View {
            inodes: vec![root],
            names,
            links: HashMap::new(),
            dropped: Vec::new(),
            effects: None,
        }
    }

    /// Every name, sorted by path bytes; the root first, and only if an entry declared it.
    pub fn entries(&self) -> impl Iterator<Item = ViewEntry<'_>> {
        self.names.iter().filter(|(_, n)| n.origin.is_some()).map(|(path, n)| ViewEntry {
            path,
            inode_id: n.inode,
            inode: &self.inodes[n.inode],
            origin: n.origin,
        })
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id]
    }

    /// Start recording [`Effect`]s; [`View::take_effects`] drains them.
    pub fn record_effects(&mut self) {
        self.effects.get_or_insert_with(Vec::new);
    }

    /// The effects recorded since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.effects.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn effect(&mut self, effect: Effect) {
        if let Some(effects) = self.effects.as_mut() {
            effects.push(effect);
        }
    }

    /// Entries the kernel would skip, with the reason.
    pub fn dropped(&self) -> &[Dropped] {
        &self.dropped
    }

    /// Look a path up as a program inside the booted initramfs would: symlinks followed
    /// (also the last component when `follow`), never leaving the image root.
    pub fn lookup(&self, path: &[u8], follow: bool) -> Option<ViewEntry<'_>> {
        let resolved = self.resolve(path, follow)?;
        let (path, name) = self.names.get_key_value(&resolved)?;
        Some(ViewEntry {
            path,
            inode_id: name.inode,
            inode: &self.inodes[name.inode],
            origin: name.origin,
        })
    }

    fn get(&self, path: &[u8]) -> Option<&Inode> {
        self.names.get(path).map(|n| &self.inodes[n.inode])
    }

    /// Resolve `path` to the name it denotes. Intermediate symlinks are followed; the last
    /// component too when `follow`. `None` when an intermediate directory is missing,
    /// not a directory, or symlinks loop.
    fn resolve(&self, path: &[u8], follow: bool) -> Option<Vec<u8>> {
        let mut pending: Vec<Vec<u8>> =
            path.split(|&b| b == b'/').rev().map(<[u8]>::to_vec).collect();
        let mut current: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    current.pop();
                    continue;
                }
                _ => {}
            }
            let last = pending.iter().all(|p| p.is_empty() || p == b".");
            current.push(part);
            let candidate = current.join(&b'/');
            let Some(inode) = self.get(&candidate) else {
                if last {
                    return Some(candidate);
                }
                return None;
            };
            match inode.file_type() {
                S_IFLNK if !last || follow => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        return None;
                    }
                    current.pop();
                    if inode.target.starts_with(b"/") {
                        current.clear();
                    }
                    pending.extend(inode.target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                }
                S_IFDIR => {}
                _ if last => {}
                _ => return None,
            }
        }
        Some(current.join(&b'/'))
    }

    fn is_empty_dir(&self, path: &[u8]) -> bool {
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        !self.names.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// The kernel's `clean_path`: remove an existing name whose type differs from `fmode`
    /// (a directory only if empty). Returns whether the path is now free.
    fn clean_path(&mut self, path: &[u8], fmode: u32) -> bool {
        let Some(existing) = self.get(path) else { return true };
        if (existing.mode ^ fmode) & S_IFMT == 0 {
            return false;
        }
        let dir = existing.is_dir();
        if dir && (path.is_empty() || !self.is_empty_dir(path)) {
            return false;
        }
        self.names.remove(path);
        self.effect(Effect::Remove { path: path.to_vec(), dir });
        true
    }

    /// The kernel's `maybe_link`: 0 no link, 1 linked to an earlier name, -1 failed.
    fn maybe_link(&mut self, entry: &Entry, path: &[u8], origin: Origin) -> i8 {
        let h = &entry.header;
        if h.nlink < 2 {
            return 0;
        }
        let key = (h.ino, h.devmajor, h.devminor, h.mode & S_IFMT);
        let Some(old) = self.links.get(&key).cloned() else {
            self.links.insert(key, path.to_vec());
            return 0;
        };
        self.clean_path(path, 0);
        match self.names.get(&old) {
            Some(n) if !self.inodes[n.inode].is_dir() && !self.names.contains_key(path) => {
                let inode = n.inode;
                self.names.insert(path.to_vec(), Name { inode, origin: Some(origin) });
                self.effect(Effect::Link { from: old, to: path.to_vec() });
                1
            }
            _ => -1,
        }
    }

    fn drop_entry(&mut self, entry: &Entry, origin: Origin, reason: &'static str) {
        let name = String::from_utf8_lossy(&entry.name).into_owned();
        self.dropped.push(Dropped { name, origin, reason });
    }

    fn new_inode(&mut self, entry: &Entry) -> InodeId {
        let h = &entry.header;
        self.inodes.push(Inode {
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            rdev_major: h.rdevmajor,
            rdev_minor: h.rdevminor,
            target: Vec::new(),
            writes: Vec::new(),
        });
        self.inodes.len() - 1
    }

    /// chown + chmod (+ utime) on an existing inode, keeping its type.
    fn set_attrs(&mut self, id: InodeId, entry: &Entry) {
        let h = &entry.header;
        let inode = &mut self.inodes[id];
        inode.mode = (inode.mode & S_IFMT) | (h.mode & !S_IFMT);
        inode.uid = h.uid;
        inode.gid = h.gid;
        inode.mtime = h.mtime;
    }

    fn apply(&mut self, entry: &Entry, target: Vec<u8>) {
        let origin = Origin { segment: entry.segment, seq: entry.seq };
        if entry.is_trailer() {
            self.links.clear();
            return;
        }
        let h = &entry.header;
        let ftype = h.file_type();
        if ftype != S_IFREG && ftype != S_IFLNK && h.filesize != 0 {
            return self.drop_entry(entry, origin, "non-file entry with a body");
        }
        let Some(path) = self.resolve(&entry.name, false) else {
            return self.drop_entry(entry, origin, "parent directory missing");
        };
        match ftype {
            S_IFDIR => {
                self.clean_path(&path, S_IFDIR);
                let id = match self.names.get(&path) {
                    Some(n) => n.inode,
                    None => {
                        self.effect(Effect::Mkdir { path: path.clone() });
                        self.new_inode(entry)
                    }
                };
                self.set_attrs(id, entry);
                self.names.insert(path, Name { inode: id, origin: Some(origin) });
            }
            S_IFREG => {
                self.clean_path(&path, S_IFREG);
                let write =
                    ContentWrite { seq: entry.seq, len: u64::from(h.filesize), truncate: true };
                match self.maybe_link(entry, &path, origin) {
                    -1 => self.drop_entry(entry, origin, "hard link target missing"),
                    1 => {
                        let id = self.names[&path].inode;
                        self.inodes[id].writes.push(ContentWrite { truncate: false, ..write });
                        self.set_attrs(id, entry);
                        self.effect(Effect::Write { path, truncate: false });
                    }
                    _ => {
                        let id = match self.names.get(&path) {
                            Some(n) if self.inodes[n.inode].is_dir() => {
                                return self.drop_entry(
                                    entry,
                                    origin,
                                    "a non-empty directory is in the way",
                                )
                            }
                            Some(n) => {
                                let id = n.inode;
                                self.inodes[id].writes.clear();
                                id
                            }
                            None => self.new_inode(entry),
                        };
                        self.inodes[id].writes.push(write);
                        self.set_attrs(id, entry);
                        self.effect(Effect::Write { path: path.clone(), truncate: true });
                        self.names.insert(path, Name { inode: id, origin: Some(origin) });
                    }
                }
            }
            S_IFLNK => {
                self.clean_path(&path, 0);
                if self.names.contains_key(&path) {
                    return self.drop_entry(entry, origin, "a non-empty directory is in the way");
                }
                let id = self.new_inode(entry);
                self.inodes[id].target = target.clone();
                self.effect(Effect::Symlink { path: path.clone(), target });
                self.names.insert(path, Name { inode: id, origin: Some(origin) });
            }
            S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK => {
                self.clean_path(&path, ftype);
                if self.maybe_link(entry, &path, origin) != 0 {
                    return;
                }
                match self.names.get(&path).copied() {
                    // mknod fails with EEXIST; chown and chmod still apply.
                    Some(n) if !self.inodes[n.inode].is_dir() => self.set_attrs(n.inode, entry),
                    Some(_) => {
                        self.drop_entry(entry, origin, "a non-empty directory is in the way")
                    }
                    None => {
                        let id = self.new_inode(entry);
                        self.effect(Effect::Mknod { path: path.clone(), inode: id });
                        self.names.insert(path, Name { inode: id, origin: Some(origin) });
                    }
                }
            }
            _ => self.drop_entry(entry, origin, "unknown file type"),
        }
    }
}

impl Visitor for View {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        let mut target = Vec::new();
        if entry.header.file_type() == cpio::S_IFLNK {
            body.read_to_end(&mut target)?;
            // The kernel passes the target as a C string.
            target = cpio::name_from_field(&target).to_vec();
        }
        self.apply(entry, target);
        Ok(())
    }
}
