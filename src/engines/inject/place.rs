//! Where files land in the image: the copy depmod chooses among several, the placement
//! of a new module against it, paths resolved through the image's symlinks with missing
//! parents created, and firmware.

use super::plan::{Action, NewEntry, PlanOptions, PlannedFirmware, Request, Sources};
use super::read::ImageContents;
use crate::engines::depmod::config::{depmod_file_name, Candidate, Config, CONFIG_DIRS};
use crate::engines::initramfs::view::View;
use crate::formats::cpio::{S_IFDIR, S_IFREG};
use crate::model::modprobe::effective_files;
use crate::model::module::name_from_path;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The image's tree as depmod would see it.
pub(super) struct TreeState {
    /// Module name → tree-relative path of the copy depmod chooses.
    pub(super) chosen: BTreeMap<String, String>,
    pub(super) config: Config,
    pub(super) builtin: HashSet<String>,
    pub(super) order: Option<Vec<u8>>,
    pub(super) builtin_file: Option<Vec<u8>>,
    pub(super) builtin_modinfo: Option<Vec<u8>>,
    pub(super) tree: String,
    pub(super) release: String,
    /// Tree-relative path → sha256, for the in-image modules the image was read with
    /// digests of ([`Digests`]). Placement treats a missing digest as a different file
    /// (rewritten: correct, only not idempotent), so callers hash the requested names.
    pub(super) shas: BTreeMap<String, String>,
}

impl TreeState {
    pub(super) fn new(
        image: &ImageContents,
        tree: &str,
        sources: &mut dyn Sources,
    ) -> Result<TreeState> {
        let release = tree.rsplit('/').next().unwrap_or(tree).to_string();
        // depmod.d of the image, by kmod's rule for configuration directories.
        let mut config = Config::default();
        let per_dir = CONFIG_DIRS
            .iter()
            .map(|dir| {
                let dir = format!("{}/", dir.trim_start_matches('/'));
                image
                    .files
                    .keys()
                    .filter_map(|p| {
                        let file = p.strip_prefix(&dir)?;
                        (!file.contains('/')).then(|| (file.to_string(), p.as_str()))
                    })
                    .collect()
            })
            .collect();
        for (_, path) in effective_files(per_dir, depmod_file_name) {
            let text = String::from_utf8_lossy(image.file(path).unwrap_or_default());
            config.parse(&text, Path::new(path), &release);
        }
        config.finish();

        let mut chosen: BTreeMap<String, String> = BTreeMap::new();
        let mut shas = BTreeMap::new();
        let prefix = format!("{tree}/");
        for (path, m) in image.modules.range(prefix.clone()..) {
            let Some(rel) = path.strip_prefix(&prefix) else { break };
            let name = name_from_path(Path::new(rel));
            let keep_old = chosen.get(&name).is_some_and(|old| {
                config.existing_wins(
                    &candidate(&release, &name, old),
                    &candidate(&release, &name, rel),
                )
            });
            if !keep_old {
                chosen.insert(name, rel.to_string());
            }
            if let Some(sha) = &m.sha256 {
                shas.insert(rel.to_string(), sha.clone());
            }
        }
        let mut file = |name: &str| -> Result<Option<Vec<u8>>> {
            match image.file(&format!("{tree}/{name}")) {
                Some(b) => Ok(Some(b.to_vec())),
                None => sources.tree_file(name),
            }
        };
        let order = file("modules.order")?;
        let builtin_file = file("modules.builtin")?;
        let builtin_modinfo = file("modules.builtin.modinfo")?;
        let builtin = builtin_file
            .as_deref()
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| name_from_path(Path::new(l)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(TreeState {
            chosen,
            config,
            builtin,
            order,
            builtin_file,
            builtin_modinfo,
            tree: tree.to_string(),
            release,
            shas,
        })
    }

    /// Where a module goes (tree-relative), whether that adds, replaces or finds it
    /// present, and the in-image copy it shadows.
    pub(super) fn placement(
        &self,
        name: &str,
        req: &Request,
        sha256: &str,
    ) -> (String, Action, Option<String>) {
        let new_rel = req.default_rel();
        let Some(old_rel) = self.chosen.get(name) else { return (new_rel, Action::Add, None) };
        let old_sha = self.shas.get(old_rel).map(String::as_str);
        let same_dir = parent(old_rel) == parent(&new_rel);
        let old_wins = self.config.existing_wins(
            &candidate(&self.release, name, old_rel),
            &candidate(&self.release, name, &new_rel),
        );
        if *old_rel == new_rel || same_dir || old_wins {
            // Overwrite the copy depmod would choose, at its own path.
            let action = if old_sha == Some(sha256) { Action::Present } else { Action::Replace };
            return (old_rel.clone(), action, None);
        }
        match self.shas.get(&new_rel) {
            Some(s) if s == sha256 => {
                (new_rel, Action::Present, Some(format!("{}/{old_rel}", self.tree)))
            }
            Some(_) => (new_rel, Action::Replace, Some(format!("{}/{old_rel}", self.tree))),
            None => (new_rel, Action::Add, Some(format!("{}/{old_rel}", self.tree))),
        }
    }
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

fn candidate(release: &str, name: &str, rel: &str) -> Candidate {
    Candidate {
        name: name.to_string(),
        target: PathBuf::from(format!("/lib/modules/{release}/{rel}")),
        rel: Some(rel.to_string()),
        match_len: (parent(rel).len() + usize::from(rel.contains('/')) + name.len()).min(rel.len()),
        // Only compared by path, never read.
        host: PathBuf::new(),
    }
}

/// Turns image paths into entries: resolved through the image's symlinks, with the
/// missing parent directories created first (the kernel creates no parents).
pub(super) struct Placer<'a> {
    pub(super) view: &'a View,
    pub(super) created: Vec<Vec<u8>>,
    /// Directory entries, in creation order.
    pub(super) entries: Vec<NewEntry>,
}

impl Placer<'_> {
    pub(super) fn place(&mut self, path: &str) -> Result<Vec<u8>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let Some((last, dirs)) = parts.split_last() else { bail!("empty path in the image") };
        let mut base: Vec<u8> = Vec::new();
        for part in dirs {
            let mut candidate = base.clone();
            if !candidate.is_empty() {
                candidate.push(b'/');
            }
            candidate.extend_from_slice(part.as_bytes());
            if self.created.contains(&candidate) {
                base = candidate;
                continue;
            }
            match self.view.lookup(&candidate, true) {
                Some(e) if e.inode.is_dir() => base = e.path.to_vec(),
                Some(e) => bail!(
                    "{} in the image is not a directory (needed for {path})",
                    e.display_path()
                ),
                None => {
                    self.entries.push(NewEntry {
                        path: candidate.clone(),
                        mode: S_IFDIR | 0o755,
                        body: Vec::new(),
                    });
                    self.created.push(candidate.clone());
                    base = candidate;
                }
            }
        }
        if !base.is_empty() {
            base.push(b'/');
        }
        base.extend_from_slice(last.as_bytes());
        Ok(base)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn firmware(
        &mut self,
        image: &ImageContents,
        sources: &mut dyn Sources,
        fw: &str,
        needed_by: &str,
        opts: &PlanOptions,
        entries: &mut Vec<NewEntry>,
        warnings: &mut Vec<String>,
    ) -> Result<PlannedFirmware> {
        let base = format!("lib/firmware/{fw}");
        for suffix in ["", ".xz", ".zst"] {
            let path = format!("{base}{suffix}");
            if image.has_file(&path) {
                return Ok(PlannedFirmware {
                    name: fw.into(),
                    needed_by: needed_by.into(),
                    action: "present",
                    path,
                });
            }
        }
        match sources.firmware(fw)? {
            Some((found, bytes)) => {
                let path = format!("lib/firmware/{found}");
                let resolved = self.place(&path)?;
                if !entries.iter().any(|e| e.path == resolved) {
                    entries.push(NewEntry { path: resolved, mode: S_IFREG | 0o644, body: bytes });
                }
                Ok(PlannedFirmware { name: fw.into(), needed_by: needed_by.into(), action: "add", path })
            }
            None if opts.allow_missing_firmware => {
                warnings.push(format!("firmware {fw} for {needed_by} not found under lib/firmware"));
                Ok(PlannedFirmware { name: fw.into(), needed_by: needed_by.into(), action: "missing", path: base })
            }
            None => bail!(
                "{needed_by} needs firmware {fw}, found neither in the image nor under ROOT/lib/firmware (--allow-missing-firmware to inject anyway)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::inject::testing::image;
    use crate::formats::cpio::S_IFLNK;

    #[test]
    fn placing_follows_the_lib_symlink_and_creates_missing_parents() {
        let img = image(&[
            ("usr", S_IFDIR | 0o755, b""),
            ("usr/lib", S_IFDIR | 0o755, b""),
            ("usr/lib/modules", S_IFDIR | 0o755, b""),
            ("lib", S_IFLNK | 0o777, b"usr/lib"),
        ]);
        let mut placer = Placer { view: &img.view, created: Vec::new(), entries: Vec::new() };
        let path = placer.place("lib/modules/6.1/updates/x.ko").unwrap();
        assert_eq!(path, b"usr/lib/modules/6.1/updates/x.ko");
        let dirs: Vec<&[u8]> = placer.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(dirs, [&b"usr/lib/modules/6.1"[..], b"usr/lib/modules/6.1/updates"]);
        // A second file in the same place creates nothing more.
        placer.place("lib/modules/6.1/updates/y.ko").unwrap();
        assert_eq!(placer.entries.len(), 2);
        // A file in the way of a directory is an error, not a replacement.
        let img = image(&[("etc", S_IFREG | 0o644, b"x")]);
        let mut placer = Placer { view: &img.view, created: Vec::new(), entries: Vec::new() };
        assert!(placer.place("etc/cmdline.d/a.conf").is_err());
    }
}
