//! Taking modules back out of an image another tool rebuilt since bootkmod wrote it:
//! restoring bootkmod's backup would revert that tool's newer image (microcode,
//! firmware, crypt settings), so instead the files bootkmod placed are dropped, the
//! image's indexes regenerated over what remains, and the names struck from the image's
//! early-load files. Everything else stays as the other tool made it.

use super::place::{Placer, TreeState};
use super::plan::{regenerated_indexes, NewEntry, Sources};
use super::read::ImageContents;
use crate::formats::cpio::S_IFREG;
use crate::model::module::name_from_path;
use std::collections::HashSet;
use std::path::Path;

/// What taking modules out of an image changes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removal {
    pub release: String,
    pub tree: String,
    /// Module files dropped (resolved paths in the image).
    pub dropped: Vec<String>,
    /// Index files whose content changes.
    pub indexes: Vec<String>,
    /// Early-load files the names were struck from.
    pub early_load: Vec<String>,
    pub warnings: Vec<String>,
    /// Entries to write in place of the image's (indexes, early-load files).
    #[serde(skip)]
    pub entries: Vec<NewEntry>,
}

impl Removal {
    /// Whether carrying it out changes the image.
    pub fn changes(&self) -> bool {
        !self.dropped.is_empty()
    }
}

/// Plan taking the module files at `rels` (tree-relative paths: where bootkmod put them,
/// `extra/...` or `weak-updates/...`) out of `tree` in `image`. Only those paths go:
/// an in-tree module of the same name stays, and keeps its early loading.
pub fn take_out(
    image: &ImageContents,
    tree: &str,
    rels: &[String],
    sources: &mut dyn Sources,
) -> anyhow::Result<Removal> {
    let state = TreeState::new(image, tree, sources)?;
    let dropped: Vec<String> = rels
        .iter()
        .map(|rel| format!("{tree}/{rel}"))
        .filter(|p| image.modules.contains_key(p))
        .collect();
    let mut removal = Removal {
        release: state.release.clone(),
        tree: tree.to_string(),
        dropped,
        indexes: Vec::new(),
        early_load: Vec::new(),
        warnings: Vec::new(),
        entries: Vec::new(),
    };
    if !removal.changes() {
        return Ok(removal);
    }
    let prefix = format!("{tree}/");
    let remaining: Vec<(String, String)> = image
        .modules
        .keys()
        .filter(|p| p.starts_with(&prefix) && !removal.dropped.contains(p))
        .map(|p| (name_from_path(Path::new(p.as_str())), p[prefix.len()..].to_string()))
        .collect();
    // Names with no copy left are struck from the early-load files.
    let gone: HashSet<String> = removal
        .dropped
        .iter()
        .map(|p| name_from_path(Path::new(p.as_str())))
        .filter(|n| !remaining.iter().any(|(r, _)| r == n))
        .collect();
    // depmod's choice among what remains: the chosen copy where it stays, else another.
    let mut chosen = state.chosen.clone();
    chosen.retain(|_, rel| !removal.dropped.contains(&format!("{tree}/{rel}")));
    for (name, rel) in remaining {
        chosen.entry(name).or_insert(rel);
    }
    let mut placer = Placer { view: &image.view, created: Vec::new(), entries: Vec::new() };
    removal.entries = regenerated_indexes(
        image,
        &state,
        &chosen,
        &[],
        &mut placer,
        &mut removal.indexes,
        &mut removal.warnings,
    )?;
    for (path, body) in &image.files {
        let Some(kept) = struck(path, body, &gone) else { continue };
        removal.early_load.push(path.clone());
        removal.entries.push(NewEntry {
            path: path.as_bytes().to_vec(),
            mode: S_IFREG | 0o644,
            body: kept,
        });
    }
    Ok(removal)
}

/// An early-load file without `names`, or `None` when it is none or does not list them:
/// `conf/modules` and `modules-load.d/*.conf` one name a line, dracut's
/// `rd.driver.pre=a,b` in `etc/cmdline.d/*.conf`.
fn struck(path: &str, body: &[u8], names: &HashSet<String>) -> Option<Vec<u8>> {
    let listed = |word: &str| names.contains(&word.replace('-', "_"));
    let text = String::from_utf8_lossy(body);
    let one_a_line = path == "conf/modules"
        || path.starts_with("etc/modules-load.d/")
        || path.starts_with("usr/lib/modules-load.d/");
    let mut out = String::new();
    let mut changed = false;
    if one_a_line {
        for line in text.lines() {
            // `name args...` in conf/modules.
            if line.split_whitespace().next().is_some_and(listed) {
                changed = true;
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    } else if path.starts_with("etc/cmdline.d/") {
        for (i, line) in text.lines().enumerate() {
            let mut words = Vec::new();
            for word in line.split_whitespace() {
                match word.strip_prefix("rd.driver.pre=") {
                    Some(list) => {
                        let kept: Vec<&str> = list.split(',').filter(|n| !listed(n)).collect();
                        changed |= kept.len() != list.split(',').count();
                        if !kept.is_empty() {
                            words.push(format!("rd.driver.pre={}", kept.join(",")));
                        }
                    }
                    None => words.push(word.to_string()),
                }
            }
            if i > 0 || !words.is_empty() {
                out.push(' ');
            }
            out.push_str(&words.join(" "));
            out.push('\n');
        }
    }
    changed.then(|| out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_load_files_lose_only_the_names() {
        let names: HashSet<String> = ["bkram".to_string()].into();
        assert_eq!(
            struck("conf/modules", b"ahci\nbkram\nsd_mod opt=1\n", &names).unwrap(),
            b"ahci\nsd_mod opt=1\n"
        );
        assert_eq!(struck("conf/modules", b"ahci\n", &names), None);
        assert_eq!(
            struck(
                "etc/cmdline.d/90-bootkmod.conf",
                b" rd.driver.pre=bkram,megaraid_sas\n",
                &names
            )
            .unwrap(),
            b" rd.driver.pre=megaraid_sas\n"
        );
        assert_eq!(struck("etc/modules-load.d/bootkmod.conf", b"bkram\n", &names).unwrap(), b"");
        assert_eq!(struck("usr/lib/modules/k/modules.dep", b"bkram.ko:\n", &names), None);
    }
}
