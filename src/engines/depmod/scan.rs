//! Finding the module files of a tree the way kmod's depmod does: a recursive walk of
//! `/lib/modules/<kver>` (and `external` directories) in directory order, skipping
//! `build`, `source` and excluded names, following symlinks *inside the root*
//! (`weak-updates/` links are absolute paths of the target system), and keeping one
//! file per module name according to [`Config::existing_wins`].

use super::config::{Candidate, Config};
use crate::model::module::name_from_path;
use crate::model::root::Root;
use crate::model::tree::is_module_file;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Walk depth bound: symlinked directories could otherwise loop forever.
const MAX_DEPTH: usize = 64;

/// The chosen file of every module name, in discovery order.
pub fn scan(
    root: &Root,
    tree: &Path,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<Vec<Candidate>> {
    let mut state =
        Scan { root, tree, config, by_name: HashMap::new(), chosen: Vec::new(), warnings };
    let host = root.host(tree)?;
    std::fs::read_dir(&host)
        .with_context(|| format!("cannot read module directory {}", host.display()))?;
    state.walk(tree, host, 0)?;
    for ext in &config.externals {
        let host = root.host(ext)?;
        state.walk(ext, host, 0)?;
    }
    Ok(state.chosen)
}

struct Scan<'a> {
    root: &'a Root,
    tree: &'a Path,
    config: &'a Config,
    by_name: HashMap<String, usize>,
    chosen: Vec<Candidate>,
    warnings: &'a mut Vec<String>,
}

impl Scan<'_> {
    /// Walk target directory `dir`, found on the host at `host` (already resolved).
    fn walk(&mut self, dir: &Path, host: PathBuf, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            self.warnings.push(format!("{}: directories nested too deep, skipped", dir.display()));
            return Ok(());
        }
        let entries = match std::fs::read_dir(&host) {
            Ok(e) => e,
            Err(e) => {
                self.warnings.push(format!("{}: {e}", host.display()));
                return Ok(());
            }
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", host.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "build" || name == "source" || self.config.excludes.contains(&name) {
                continue;
            }
            let target = dir.join(&name);
            let kind = entry.file_type()?;
            let (is_dir, is_file, file_host) = if kind.is_symlink() {
                let resolved = self.root.host(&target)?;
                match std::fs::metadata(&resolved) {
                    Ok(m) => (m.is_dir(), m.is_file(), resolved),
                    Err(e) => {
                        self.warnings.push(format!("{}: {e}", target.display()));
                        continue;
                    }
                }
            } else {
                (kind.is_dir(), kind.is_file(), host.join(&name))
            };
            if is_dir {
                self.walk(&target, file_host, depth + 1)?;
            } else if is_file && is_module_file(&name) {
                self.offer(target, file_host);
            }
        }
        Ok(())
    }

    fn offer(&mut self, target: PathBuf, host: PathBuf) {
        let name = name_from_path(&target);
        let rel = target.strip_prefix(self.tree).ok().map(|r| r.to_string_lossy().into_owned());
        let match_len =
            rel.as_deref().map_or(0, |r| r.rfind('/').map_or(0, |p| p + 1) + name.len());
        let candidate = Candidate { name: name.clone(), target, rel, match_len, host };
        match self.by_name.get(&name) {
            Some(&i) => {
                if !self.config.existing_wins(&self.chosen[i], &candidate) {
                    self.chosen[i] = candidate;
                }
            }
            None => {
                self.by_name.insert(name, self.chosen.len());
                self.chosen.push(candidate);
            }
        }
    }
}
