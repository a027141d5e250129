//! [`Root`]: the system bootkmod reads and changes, `/` or a mounted/unmounted tree
//! (`--root /mnt/sysimage`). Absolute paths of the target system are resolved inside it,
//! symlinks included (`weak-updates/` links are absolute and must stay inside the root).

use anyhow::{bail, Result};
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

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host path of the target-absolute `path` (symlinks not followed).
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        self.dir.join(rel)
    }

    /// Resolve `path` as the target system would see it (chroot-style): absolute symlink
    /// targets are taken relative to the root, and `..` never climbs above it. Returns the
    /// target-absolute path.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let mut pending: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut pending, path.as_ref());
        let mut resolved = PathBuf::from("/");
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.to_str() {
                Some("..") => {
                    resolved.pop();
                    continue;
                }
                Some(".") | Some("") => continue,
                _ => {}
            }
            let candidate = resolved.join(&part);
            match std::fs::read_link(self.path(&candidate)) {
                Ok(target) => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        bail!(
                            "too many levels of symbolic links resolving {}",
                            path.as_ref().display()
                        );
                    }
                    if target.is_absolute() {
                        resolved = PathBuf::from("/");
                    }
                    push_components(&mut pending, &target);
                }
                Err(_) => resolved = candidate,
            }
        }
        Ok(resolved)
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

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(root.path("/lib/modules/k/extra")).unwrap();
        std::fs::write(root.path("/lib/modules/k/extra/a.ko"), b"x").unwrap();
        std::fs::create_dir_all(root.path("/lib/modules/j/weak-updates")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/modules/k/extra/a.ko",
            root.path("/lib/modules/j/weak-updates/a.ko"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../../../../../etc", root.path("/lib/modules/j/esc"))
            .unwrap();
        assert_eq!(
            root.resolve("/lib/modules/j/weak-updates/a.ko").unwrap(),
            Path::new("/lib/modules/k/extra/a.ko")
        );
        assert_eq!(root.resolve("/lib/modules/j/esc/passwd").unwrap(), Path::new("/etc/passwd"));
        std::os::unix::fs::symlink("loop", root.path("/loop")).unwrap();
        assert!(root.resolve("/loop").is_err());
    }
}
