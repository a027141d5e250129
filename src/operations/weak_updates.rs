//! `weak-updates/` links, laid out exactly as RHEL's `weak-modules` lays them out, so
//! bootkmod and kmod RPMs can share a system.
//!
//! A module installed for kernel K at `/lib/modules/K/extra/SUB` is offered to another
//! kernel J, when compatible, as the absolute symlink
//! `/lib/modules/J/weak-updates/SUB -> /lib/modules/K/extra/SUB`: the path below
//! `extra/` is kept, the link target is the target system's absolute path (it resolves
//! inside `--root`, see [`Root::resolve`]), and emptied directories are removed when a
//! link goes away.

pub use crate::model::ledger::{is_linked, weak_link_path as link_path};
use crate::model::root::Root;
use crate::operations::atomic::{remove_synced, replace_symlink};
use crate::operations::ledger::create_dirs;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Create or repair the link. Returns whether anything changed (with `dry_run`:
/// would change; nothing is written).
pub fn link(root: &Root, module: &Path, release: &str, dry_run: bool) -> Result<(PathBuf, bool)> {
    let link = link_path(module, release)?;
    if is_linked(root, &link, module) || dry_run {
        let changes = !is_linked(root, &link, module);
        return Ok((link, changes));
    }
    let host = root.host_entry(&link)?;
    if let Some(dir) = host.parent() {
        create_dirs(dir)?;
    }
    replace_symlink(module, &host)?;
    Ok((link, true))
}

/// Remove the link that offers `module` to `release`, if present, and the directories
/// it leaves empty below `weak-updates/`. Returns whether anything changed (with
/// `dry_run`: would change; nothing is removed).
pub fn unlink(root: &Root, module: &Path, release: &str, dry_run: bool) -> Result<bool> {
    let link = link_path(module, release)?;
    let host = root.host_entry(&link)?;
    let present = std::fs::symlink_metadata(&host).is_ok();
    if dry_run {
        return Ok(present);
    }
    if present {
        remove_synced(&host)?;
    }
    // Also when the link is already gone: a run that failed right after unlinking it
    // left the directories bootkmod made for it.
    let top = root.host(Path::new("/lib/modules").join(release).join("weak-updates"))?;
    let mut dir = host.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d == top || !d.starts_with(&top) || std::fs::remove_dir(&d).is_err() {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(present)
}

/// After a kernel's links are gone: when its package already deleted the tree, what
/// remains is `weak-updates/` (emptied, bootkmod's) and the directory holding it.
/// Remove those two when empty; a tree that still holds anything else is the kernel
/// package's to delete. Returns the directories removed (target-absolute).
pub fn prune_gone_tree(root: &Root, release: &str) -> Result<Vec<PathBuf>> {
    let tree = Path::new("/lib/modules").join(release);
    let weak = tree.join("weak-updates");
    let only_weak = std::fs::read_dir(root.host(&tree)?)
        .map(|d| d.flatten().all(|e| e.file_name() == "weak-updates"))
        .unwrap_or(false);
    let mut removed = Vec::new();
    if !only_weak {
        return Ok(removed);
    }
    for dir in [weak, tree] {
        // The directory itself: a link in its place is not bootkmod's to remove.
        let host = root.host_entry(&dir)?;
        match std::fs::remove_dir(&host) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Not empty (someone else's file): leave it and what holds it.
            Err(_) => break,
        }
        if let Some(parent) = host.parent() {
            crate::operations::atomic::sync_dir(parent)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_weak_modules_own() {
        assert_eq!(
            link_path(
                Path::new("/lib/modules/5.14.0-1.el9.x86_64/extra/mpt3sas/mpt3sas.ko.xz"),
                "5.14.0-2.el9.x86_64"
            )
            .unwrap(),
            Path::new("/lib/modules/5.14.0-2.el9.x86_64/weak-updates/mpt3sas/mpt3sas.ko.xz")
        );
        assert!(link_path(Path::new("/lib/modules/k/kernel/a.ko"), "j").is_err());
        assert!(link_path(Path::new("/lib/modules/k/extra"), "j").is_err());
        assert!(link_path(Path::new("/tmp/a.ko"), "j").is_err());
    }

    #[test]
    fn link_and_unlink_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let module = Path::new("/lib/modules/k/extra/a/a.ko");
        std::fs::create_dir_all(root.host_entry("/lib/modules/k/extra/a").unwrap()).unwrap();
        std::fs::write(root.host_entry(module).unwrap(), b"x").unwrap();
        let (planned, would) = link(&root, module, "j", true).unwrap();
        assert!(would && !root.host_entry(&planned).unwrap().exists(), "a dry run links nothing");
        let (l, changed) = link(&root, module, "j", false).unwrap();
        assert!(changed);
        assert_eq!(planned, l);
        assert_eq!(std::fs::read_link(root.host_entry(&l).unwrap()).unwrap(), module);
        assert_eq!(root.resolve(&l).unwrap(), module);
        assert!(!link(&root, module, "j", false).unwrap().1);
        assert!(unlink(&root, module, "j", true).unwrap());
        assert!(root.host_entry(&l).unwrap().is_symlink(), "a dry run unlinks nothing");
        assert!(unlink(&root, module, "j", false).unwrap());
        assert!(!root.host_entry("/lib/modules/j/weak-updates/a").unwrap().exists());
        assert!(root.host_entry("/lib/modules/j/weak-updates").unwrap().is_dir());
        assert!(!unlink(&root, module, "j", false).unwrap());
    }

    #[test]
    fn prune_removes_only_a_tree_reduced_to_an_empty_weak_updates() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(root.host_entry("/lib/modules/gone/weak-updates").unwrap())
            .unwrap();
        std::fs::create_dir_all(root.host_entry("/lib/modules/kept/weak-updates").unwrap())
            .unwrap();
        std::fs::write(root.host_entry("/lib/modules/kept/modules.dep").unwrap(), b"").unwrap();
        std::fs::create_dir_all(root.host_entry("/lib/modules/foreign/weak-updates/x").unwrap())
            .unwrap();
        assert_eq!(
            prune_gone_tree(&root, "gone").unwrap(),
            [Path::new("/lib/modules/gone/weak-updates"), Path::new("/lib/modules/gone")]
        );
        assert!(!root.host_entry("/lib/modules/gone").unwrap().exists());
        assert!(prune_gone_tree(&root, "kept").unwrap().is_empty());
        assert!(root.host_entry("/lib/modules/kept/weak-updates").unwrap().is_dir());
        assert!(prune_gone_tree(&root, "foreign").unwrap().is_empty());
        assert!(root.host_entry("/lib/modules/foreign/weak-updates/x").unwrap().is_dir());
        assert!(prune_gone_tree(&root, "never").unwrap().is_empty());
    }
}
