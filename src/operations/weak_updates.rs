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

/// Create or repair the link. Returns whether anything changed.
pub fn link(root: &Root, module: &Path, release: &str) -> Result<(PathBuf, bool)> {
    let link = link_path(module, release)?;
    if is_linked(root, &link, module) {
        return Ok((link, false));
    }
    let host = root.path(&link);
    if let Some(dir) = host.parent() {
        create_dirs(dir)?;
    }
    replace_symlink(module, &host)?;
    Ok((link, true))
}

/// Remove the link that offers `module` to `release`, if present, and the directories
/// it leaves empty below `weak-updates/`. Returns whether anything changed.
pub fn unlink(root: &Root, module: &Path, release: &str) -> Result<bool> {
    let link = link_path(module, release)?;
    let host = root.path(&link);
    if std::fs::symlink_metadata(&host).is_err() {
        return Ok(false);
    }
    remove_synced(&host)?;
    let top = root.path(Path::new("/lib/modules").join(release).join("weak-updates"));
    let mut dir = host.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d == top || !d.starts_with(&top) || std::fs::remove_dir(&d).is_err() {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(true)
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
        std::fs::create_dir_all(root.path("/lib/modules/k/extra/a")).unwrap();
        std::fs::write(root.path(module), b"x").unwrap();
        let (l, changed) = link(&root, module, "j").unwrap();
        assert!(changed);
        assert_eq!(std::fs::read_link(root.path(&l)).unwrap(), module);
        assert_eq!(root.resolve(&l).unwrap(), module);
        assert!(!link(&root, module, "j").unwrap().1);
        assert!(unlink(&root, module, "j").unwrap());
        assert!(!root.path("/lib/modules/j/weak-updates/a").exists());
        assert!(root.path("/lib/modules/j/weak-updates").is_dir());
        assert!(!unlink(&root, module, "j").unwrap());
    }
}
