//! [`Root`]: the system bootkmod reads and changes, `/` or a mounted/unmounted tree
//! (`--root /mnt/sysimage`), and the one owner of access to it: a jail.
//!
//! Inside the tree, `/lib` names `ROOT/lib`, exactly as in a chroot: the kernel, chroot
//! and every package manager resolve the target's links that way, and real trees carry
//! absolute ones (`lib/modules/K/build`, `weak-updates/`, `/boot` links). Joining a
//! target path onto the root directory and handing it to the OS would instead follow
//! such a link on the host, reading or writing the host's own kernels. So the only ways
//! from a target path to a host path are here:
//!
//! - [`Root::host`]: every component resolved inside the root, the last one too (read,
//!   open, stat, readdir, create below it);
//! - [`Root::host_entry`]: the parents resolved, the last component kept as named
//!   (lstat, readlink, unlink, create a link, rename over it);
//! - [`Root::confine`]: a host path the user typed that lies under the root (`--image
//!   /mnt/sysimage/boot/x.img`) is taken as the target path it names.
//!
//! The host paths returned have no symlink left in any directory component, so the OS
//! follows nothing on its own. The resolution is done component by component with
//! `readlink` (what `openat2(RESOLVE_IN_ROOT)` does in the kernel), because bootkmod
//! hands paths on — to `std::fs`, to atomic temp+rename writes, to `chroot` and
//! `depmod` — not only descriptors. What it cannot exclude is a concurrent process
//! swapping a resolved directory for a link between resolution and use; the targets
//! here are installer trees and offline images, not adversaries racing bootkmod.
//!
//! Rule (checked by `tests/root_jail.rs`): no code outside this file joins a path onto
//! the root directory.

use anyhow::{bail, Context, Result};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    dir: PathBuf,
}

/// Bound on symlink hops while resolving, as the kernel's ELOOP limit.
const MAX_LINKS: usize = 40;

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// The root directory itself, for messages and for tools that chroot into it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Is this the running system's own `/`? Then the OS resolves exactly as a chroot
    /// would, and paths need no work.
    fn is_slash(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// The host path of a target-absolute path that is already resolved (no symlink
    /// in any directory component). Private: the one join onto the root directory.
    fn join(&self, resolved: &Path) -> PathBuf {
        let rel = resolved.strip_prefix("/").unwrap_or(resolved);
        if rel.as_os_str().is_empty() {
            return self.dir.clone();
        }
        self.dir.join(rel)
    }

    /// `path` as the user knows it under the root (`ROOT/lib/modules`), for messages and
    /// for output that must match a tool given `-b ROOT`. Text only: never opened, as
    /// the OS would follow the target's links on the host.
    pub fn shown(&self, path: impl AsRef<Path>) -> PathBuf {
        self.join(path.as_ref())
    }

    /// The host path where the target sees `path` (target-absolute), every symlink
    /// resolved inside the root, the last component's too.
    pub fn host(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        if self.is_slash() {
            return Ok(Path::new("/").join(path.as_ref()));
        }
        Ok(self.join(&self.resolve(path)?))
    }

    /// The host path of the entry `path` names itself: parents resolved inside the root,
    /// a symlink in the last component kept (to lstat, read, remove, create or replace
    /// the link, never what it points to).
    pub fn host_entry(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        if self.is_slash() {
            return Ok(Path::new("/").join(path.as_ref()));
        }
        Ok(self.join(&self.resolve_entry(path)?))
    }

    /// Target-absolute path of the entry `path` names: parents resolved, last kept.
    pub fn resolve_entry(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let path = path.as_ref();
        match (path.components().next_back(), path.parent()) {
            (Some(Component::Normal(name)), Some(parent)) => Ok(self.resolve(parent)?.join(name)),
            _ => self.resolve(path),
        }
    }

    /// The target path a user-given host path names when it lies under the root
    /// directory (compared after making both absolute, without following links).
    pub fn target_of(&self, host: &Path) -> Option<PathBuf> {
        if self.is_slash() {
            return None;
        }
        let dir = std::path::absolute(&self.dir).ok()?;
        let host = std::path::absolute(host).ok()?;
        let rel = host.strip_prefix(&dir).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// A host path the user gave (an image, an extraction directory): under the root it
    /// names a target path and is resolved inside the root; elsewhere it is the user's
    /// own file and stays as given.
    pub fn confine(&self, host: &Path) -> Result<PathBuf> {
        match self.target_of(host) {
            Some(target) => self.host(target),
            None => Ok(host.to_path_buf()),
        }
    }

    /// Read the whole file the target sees at `path`.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let host = self.host(path.as_ref())?;
        std::fs::read(&host).with_context(|| format!("{}: cannot read", host.display()))
    }

    /// The target of the link at `path` itself (its parents resolved inside the root).
    pub fn read_link(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let host = self.host_entry(path.as_ref())?;
        std::fs::read_link(&host).with_context(|| format!("{}: cannot read link", host.display()))
    }

    /// Would the host's OS, given `ROOT/path`, reach the same file as the target does:
    /// no absolute link and no `..` above the root on the way? Tools that take a base
    /// directory and join onto it themselves (`depmod -b`) are safe only then.
    pub fn alike_on_host(&self, path: impl AsRef<Path>) -> Result<bool> {
        Ok(self.is_slash() || self.walk(path.as_ref())?.1)
    }

    /// Is the link `target` found in the target directory `dir` (target-absolute) one
    /// the host's OS follows the way the target does: relative, never above the root?
    pub fn link_alike_on_host(dir: &Path, target: &Path) -> bool {
        let mut depth = dir.components().filter(|c| matches!(c, Component::Normal(_))).count();
        for c in target.components() {
            match c {
                Component::Normal(_) => depth += 1,
                Component::ParentDir if depth == 0 => return false,
                Component::ParentDir => depth -= 1,
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        true
    }

    /// Resolve `path` as the target system would see it (chroot-style): absolute symlink
    /// targets are taken relative to the root, and `..` never climbs above it. Returns the
    /// target-absolute path.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        Ok(self.walk(path.as_ref())?.0)
    }

    /// [`Root::resolve`], and whether the host's OS would have resolved `ROOT/path` the
    /// same way (no absolute link, no `..` at the root).
    fn walk(&self, path: &Path) -> Result<(PathBuf, bool)> {
        let mut alike = true;
        let mut pending: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut pending, path.as_ref());
        let mut resolved = PathBuf::from("/");
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.to_str() {
                Some("..") => {
                    alike &= resolved.pop();
                    continue;
                }
                Some(".") | Some("") => continue,
                _ => {}
            }
            let candidate = resolved.join(&part);
            // `resolved` holds no symlink, so the OS follows nothing reading this link.
            match std::fs::read_link(self.join(&candidate)) {
                Ok(target) => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        bail!("too many levels of symbolic links resolving {}", path.display());
                    }
                    if target.is_absolute() {
                        alike = false;
                        resolved = PathBuf::from("/");
                    }
                    push_components(&mut pending, &target);
                }
                Err(_) => resolved = candidate,
            }
        }
        Ok((resolved, alike))
    }
}

/// Push the components of `path` so that popping yields them in order.
fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

/// The release of the running kernel (`uname -r`).
pub fn running_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(t.path().join("lib/modules/k/extra")).unwrap();
        std::fs::write(t.path().join("lib/modules/k/extra/a.ko"), b"x").unwrap();
        std::fs::create_dir_all(t.path().join("lib/modules/j/weak-updates")).unwrap();
        symlink("/lib/modules/k/extra/a.ko", t.path().join("lib/modules/j/weak-updates/a.ko"))
            .unwrap();
        symlink("../../../../../../etc", t.path().join("lib/modules/j/esc")).unwrap();
        assert_eq!(
            root.resolve("/lib/modules/j/weak-updates/a.ko").unwrap(),
            Path::new("/lib/modules/k/extra/a.ko")
        );
        assert_eq!(root.resolve("/lib/modules/j/esc/passwd").unwrap(), Path::new("/etc/passwd"));
        symlink("loop", t.path().join("loop")).unwrap();
        assert!(root.resolve("/loop").is_err());
    }

    #[test]
    fn a_first_level_absolute_link_resolves_inside_never_on_the_host() {
        let host = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        // ROOT/lib -> HOST/lib (absolute): inside the tree it names ROOT/HOST/lib.
        std::fs::create_dir_all(host.path().join("lib/modules/decoy")).unwrap();
        let inside = t.path().join(host.path().strip_prefix("/").unwrap()).join("lib");
        std::fs::create_dir_all(inside.join("modules/k")).unwrap();
        symlink(host.path().join("lib"), t.path().join("lib")).unwrap();
        assert_eq!(root.host("/lib/modules/k").unwrap(), inside.join("modules/k"));
        assert_eq!(root.host("lib/modules/decoy").unwrap(), inside.join("modules/decoy"));
        assert!(!root.host("/lib/modules/decoy").unwrap().exists());
        // The entry itself: the link at ROOT/lib, not what it names.
        assert_eq!(root.host_entry("/lib").unwrap(), t.path().join("lib"));
        assert_eq!(root.host_entry("/lib/modules").unwrap(), inside.join("modules"));
        assert!(!root.alike_on_host("/lib/modules/k").unwrap());
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        symlink("usr/lib", t.path().join("rel")).unwrap();
        assert!(root.alike_on_host("/rel/x").unwrap());
        symlink("../../..", t.path().join("usr/lib/up")).unwrap();
        assert!(!root.alike_on_host("/usr/lib/up/usr").unwrap());
        assert!(Root::link_alike_on_host(
            Path::new("/lib/modules/k/weak-updates"),
            Path::new("../../j/extra/a.ko")
        ));
        assert!(!Root::link_alike_on_host(Path::new("/lib"), Path::new("../../etc")));
        assert!(!Root::link_alike_on_host(Path::new("/lib"), Path::new("/etc")));
    }

    #[test]
    fn user_paths_under_the_root_are_target_paths() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(t.path().join("real")).unwrap();
        symlink("/real", t.path().join("boot")).unwrap();
        assert_eq!(root.target_of(&t.path().join("boot/x.img")).unwrap(), Path::new("/boot/x.img"));
        assert_eq!(
            root.confine(&t.path().join("boot/x.img")).unwrap(),
            t.path().join("real/x.img")
        );
        assert_eq!(
            root.confine(Path::new("/elsewhere/x.ko")).unwrap(),
            Path::new("/elsewhere/x.ko")
        );
        let slash = Root::new("/");
        assert_eq!(slash.confine(Path::new("/boot/x")).unwrap(), Path::new("/boot/x"));
        assert_eq!(slash.host("/boot/x").unwrap(), Path::new("/boot/x"));
    }
}
