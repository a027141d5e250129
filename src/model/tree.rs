//! [`ModuleTree`]: a kernel's module directory, `lib/modules/<kver>` under a [`Root`].

use super::module::name_from_path;
use super::root::Root;
use crate::formats::compression::Compression;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ModuleTree {
    pub root: Root,
    pub release: String,
}

/// Is this file name a kernel module (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`)?
pub fn is_module_file(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|s| name.ends_with(s))
}

/// The codec a module file's name promises: `.ko` none, `.ko.xz` xz, `.ko.zst` zstd,
/// `.ko.gz` gzip; `None` for a name that is no module file. kmod picks the decoder by
/// content, but `xz -t`, packaging tools and people read the suffix: a file's content
/// must match its name.
pub fn module_codec(name: &str) -> Option<Compression> {
    [
        (".ko", Compression::None),
        (".ko.xz", Compression::Xz),
        (".ko.zst", Compression::Zstd),
        (".ko.gz", Compression::Gzip),
    ]
    .into_iter()
    .find(|(suffix, _)| name.ends_with(suffix))
    .map(|(_, codec)| codec)
}

impl ModuleTree {
    pub fn new(root: Root, release: impl Into<String>) -> ModuleTree {
        ModuleTree { root, release: release.into() }
    }

    /// Target-absolute path of the tree, `/lib/modules/<kver>`.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from("/lib/modules").join(&self.release)
    }

    /// Host path of the tree, resolved inside the root.
    pub fn host_dir(&self) -> Result<PathBuf> {
        self.root.host(self.dir())
    }

    /// Every module file below the tree (host paths), sorted; symlinked files included.
    /// A link that leads nowhere inside the root is left out with a logged warning.
    pub fn module_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.host_dir()?;
        let (mut out, mut dangling) = (Vec::new(), Vec::new());
        walk(&self.root, &dir, &mut out, &mut dangling)
            .with_context(|| format!("reading module tree {}", dir.display()))?;
        for warning in dangling {
            tracing::warn!("{warning}");
        }
        out.sort();
        Ok(out)
    }

    /// Find a module by name (`-` and `_` are the same), the way a user names it.
    pub fn find(&self, name: &str) -> Result<Option<PathBuf>> {
        let wanted = name.replace('-', "_");
        Ok(self.module_files()?.into_iter().find(|p| name_from_path(p) == wanted))
    }
}

/// Collect module files below `dir`, a host path resolved inside `root` (real
/// directories only; a symlinked file is collected as the file it names inside the root,
/// never as what the link would name on the host). A link to nothing there (left by an
/// erased kmod package) is not collected: `dangling` gets a warning naming the link, as
/// kmod's depmod reports it and carries on.
pub(crate) fn walk(
    root: &Root,
    dir: &Path,
    out: &mut Vec<PathBuf>,
    dangling: &mut Vec<String>,
) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // `build` and `source` are symlinks to header trees; real dirs only.
            walk(root, &path, out, dangling)?;
        } else if is_module_file(&entry.file_name().to_string_lossy()) {
            if !kind.is_symlink() {
                out.push(path);
                continue;
            }
            let file = root.confine(&path)?;
            if file.is_file() {
                out.push(file);
            } else {
                let link = root.target_of(&path).unwrap_or_else(|| path.clone());
                let to = std::fs::read_link(&path).unwrap_or_default();
                dangling.push(format!(
                    "{}: link to {}, which is not there: skipped",
                    link.display(),
                    to.display()
                ));
            }
        }
    }
    Ok(())
}
