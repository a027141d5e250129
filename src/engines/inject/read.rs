//! Reading an image once, with the kernel's unpacking rules, into what injection needs:
//! the merged view, the modules under each `lib/modules/<kver>` tree (parsed, sha256 on
//! request) and the small files the plan reads whole.

use crate::engines::depmod::config::CONFIG_DIRS;
use crate::engines::initramfs::view::View;
use crate::engines::initramfs::walk::{self, Entry, Resume, Segment, Visitor};
use crate::engines::initramfs::{kernel_versions, KernelTree};
use crate::formats::compression::Compression;
use crate::formats::cpio::S_IFREG;
use crate::model::modprobe::{ModprobeConfig, MODPROBE_DIRS};
use crate::model::module::{name_from_path, Module, ReadOptions};
use crate::model::tree::{is_module_file, module_codec};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A module file found in the image.
#[derive(Debug, Clone)]
pub struct ImageModule {
    pub module: Arc<Module>,
    /// sha256 of the module's content once decompressed (what the kernel receives), when
    /// [`Digests`] asked for it: one module stored as `.ko` and as `.ko.xz` is the same
    /// module.
    pub sha256: Option<String>,
}

/// What an image holds, as far as injection cares.
#[derive(Debug)]
pub struct ImageContents {
    pub view: View,
    pub segments: Vec<Segment>,
    /// Module files under any `lib/modules/<kver>/`, by resolved path.
    pub modules: BTreeMap<String, ImageModule>,
    /// Small files kept whole (index/order files, depmod.d, early-load files), by
    /// resolved path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Module files that could not be parsed (path: error).
    pub warnings: Vec<String>,
    /// Where the walk ended: the start of anything appended later.
    pub end: Resume,
    /// The writes of kept files and modules, for dropping those a later entry replaced.
    seqs: HashMap<String, u64>,
}

/// Which image modules get a sha256 while reading. Hashing every module costs about as
/// much as decoding a zstd image, and a plan compares only the modules it was asked
/// for (dependencies already in the image are kept as they are).
#[derive(Debug, Clone, Copy)]
pub enum Digests<'a> {
    All,
    /// Modules with these names (as `name_from_path` gives them).
    Named(&'a HashSet<String>),
}

impl Digests<'_> {
    fn wants(&self, path: &str) -> bool {
        match self {
            Digests::All => true,
            Digests::Named(names) => names.contains(&name_from_path(Path::new(path))),
        }
    }
}

/// A configuration file of an image: `(file name, (image path, text))`.
pub type ConfigFile<'a> = (String, (String, &'a [u8]));

/// Whether a raw entry name may be something [`ImageContents`] keeps: only these bodies
/// are read into memory.
fn worth_reading(name: &[u8]) -> bool {
    let s = String::from_utf8_lossy(name);
    s.contains("modules")
        || s.contains("depmod.d")
        || s.contains("modprobe.d")
        || s.contains("cmdline.d")
        || s.contains("conf/")
}

/// Is this resolved path a small file the plan reads?
fn kept_file(path: &str) -> bool {
    let tree_file =
        tree_of(path).is_some_and(|(_, rest)| !rest.contains('/') && rest.starts_with("modules."));
    tree_file
        || CONFIG_DIRS.iter().any(|d| {
            path.strip_prefix(d.trim_start_matches('/')).is_some_and(|r| r.starts_with('/'))
        })
        || MODPROBE_DIRS.iter().any(|d| {
            path.strip_prefix(d.trim_start_matches('/')).is_some_and(|r| r.starts_with('/'))
        })
        || path.starts_with("etc/cmdline.d/")
        || path == "conf/modules"
        || path.starts_with("etc/modules-load.d/")
        || path.starts_with("usr/lib/modules-load.d/")
}

/// The module suffix of a path (`.ko`, `.ko.xz`...), for messages.
fn suffix_of(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.find(".ko").map_or(file, |i| &file[i..])
}

/// `usr/lib/modules/K/kernel/x.ko` → (`usr/lib/modules/K`, `kernel/x.ko`).
fn tree_of(path: &str) -> Option<(&str, &str)> {
    for base in ["lib/modules/", "usr/lib/modules/"] {
        if let Some(rest) = path.strip_prefix(base) {
            let (release, rel) = rest.split_once('/')?;
            if release.is_empty() || rel.is_empty() {
                return None;
            }
            return Some((&path[..base.len() + release.len()], rel));
        }
    }
    None
}

struct Collector<'a> {
    contents: ImageContents,
    digests: Digests<'a>,
    /// One buffer for every body: modules are parsed from it, not kept.
    bytes: Vec<u8>,
}

impl Visitor for Collector<'_> {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        let c = &mut self.contents;
        if entry.header.file_type() != S_IFREG || !worth_reading(&entry.name) {
            return c.view.entry(entry, body);
        }
        let bytes = &mut self.bytes;
        bytes.clear();
        body.read_to_end(bytes)?;
        c.view.entry(entry, &mut bytes.as_slice())?;
        let Some(found) = c.view.lookup(&entry.name, false) else { return Ok(()) };
        let path = String::from_utf8_lossy(found.path).into_owned();
        if is_module_file(&path) && tree_of(&path).is_some() {
            let digests = self.digests.wants(&path);
            match Module::from_bytes(bytes, ReadOptions { digests, ..ReadOptions::default() }) {
                Ok(mut module) => {
                    module.path = Some(PathBuf::from(&path));
                    let sha256 = module.digests.take().map(|d| d.elf);
                    c.seqs.insert(path.clone(), entry.seq);
                    c.files.remove(&path);
                    c.modules.insert(path, ImageModule { module: module.into(), sha256 });
                }
                Err(e) => c.warnings.push(format!("{path} in the image: {e:#}")),
            }
        } else if kept_file(&path) {
            c.seqs.insert(path.clone(), entry.seq);
            c.modules.remove(&path);
            c.files.insert(path, bytes.clone());
        }
        Ok(())
    }
}

impl ImageContents {
    /// Walk an image once. `source` names it in errors.
    pub fn read<R: BufRead + Send>(
        image: R,
        source: &str,
        digests: Digests,
    ) -> Result<ImageContents> {
        let empty = ImageContents {
            view: View::new(),
            segments: Vec::new(),
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
            warnings: Vec::new(),
            end: Resume::default(),
            seqs: HashMap::new(),
        };
        empty.resume(image, source, digests)
    }

    /// Read on from where the walk that made `self` ended: `image` yields the bytes
    /// appended after [`ImageContents::end`]'s offset. The result is what
    /// [`ImageContents::read`] of the whole image would give.
    pub fn resume<R: BufRead + Send>(
        self,
        image: R,
        source: &str,
        digests: Digests,
    ) -> Result<ImageContents> {
        let start = self.end;
        let mut c = Collector { contents: self, digests, bytes: Vec::new() };
        let (segments, end) = walk::walk_from(image, source, start, &mut c)?;
        let mut contents = c.contents;
        contents.segments.extend(segments);
        contents.end = end;
        // Keep only what is still there: a later entry may have replaced a file by a
        // link, a directory or a file outside any tree.
        let ImageContents { view, seqs, modules, files, .. } = &mut contents;
        let current = |path: &String| {
            let last = view
                .lookup(path.as_bytes(), false)
                .filter(|e| e.inode.file_type() == S_IFREG)
                .and_then(|e| e.inode.writes.last().map(|w| w.seq));
            last.is_some() && last == seqs.get(path).copied()
        };
        modules.retain(|p, _| current(p));
        files.retain(|p, _| current(p));
        Ok(contents)
    }

    /// The kernel trees the image holds.
    pub fn trees(&self) -> Vec<KernelTree> {
        kernel_versions(&self.view)
    }

    pub(super) fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Module files whose content is not what their name promises (`x.ko.xz` holding an
    /// uncompressed ELF, `x.ko` holding xz data), as `path: holds CODEC`; only those
    /// for which `wanted(path)` says yes.
    pub fn misencoded(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(path, _)| wanted(path))
            .filter_map(|(path, m)| {
                let promised = module_codec(path)?;
                let held = m.module.compression;
                (held != promised).then(|| {
                    let held =
                        if held == Compression::None { "uncompressed data" } else { held.name() };
                    format!("{path}: named as {} but holds {held}", suffix_of(path))
                })
            })
            .collect()
    }

    /// Does a regular file (symlinks followed) exist at `path`?
    pub fn has_file(&self, path: &str) -> bool {
        self.view.lookup(path.as_bytes(), true).is_some_and(|e| e.inode.file_type() == S_IFREG)
    }

    /// The image's modprobe.d files, per directory of [`MODPROBE_DIRS`] (dracut copies
    /// the host's `/etc/modprobe.d` in): `(file name, (image path, text))`.
    pub fn modprobe_dirs(&self) -> Vec<Vec<ConfigFile<'_>>> {
        MODPROBE_DIRS
            .iter()
            .map(|dir| {
                let dir = format!("{}/", dir.trim_start_matches('/'));
                self.files
                    .iter()
                    .filter_map(|(p, text)| {
                        let name = p.strip_prefix(&dir)?;
                        (!name.contains('/'))
                            .then(|| (name.to_string(), (p.clone(), text.as_slice())))
                    })
                    .collect()
            })
            .collect()
    }

    /// The modprobe configuration the image's modprobe reads for `tree`: its
    /// modprobe.d files and, in their reading order, `softdep` (the tree's
    /// `modules.softdep`, or text standing in for it).
    pub fn modprobe_config(&self, softdep: Option<&[u8]>) -> ModprobeConfig {
        let files = ModprobeConfig::reading_order(
            self.modprobe_dirs(),
            softdep.map(|t| ("modules.softdep".to_string(), t)),
        );
        ModprobeConfig::from_files(files.into_iter().map(|(_, f)| f), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::inject::testing::segment;
    use crate::formats::cpio::S_IFLNK;
    use crate::model::module::sha256_hex;

    #[test]
    fn resuming_after_a_prefix_reads_what_a_whole_read_does() {
        use crate::formats::cpio::S_IFDIR;
        let module = |name: &str| {
            crate::samples::SampleModule::new(name, "6.1.0-k SMP mod_unload modversions ")
                .to_elf()
                .unwrap()
        };
        let (a, b) = (module("a"), module("b"));
        let dir = S_IFDIR | 0o755;
        let file = S_IFREG | 0o644;
        let mut whole = segment(&[
            ("lib", dir, b""),
            ("lib/modules", dir, b""),
            ("lib/modules/k", dir, b""),
            ("lib/modules/k/kernel", dir, b""),
            ("lib/modules/k/kernel/a.ko", file, &a),
            ("lib/modules/k/kernel/gone.ko", file, &a),
            ("lib/modules/k/modules.dep", file, b"old\n"),
        ]);
        let prefix_len = whole.len();
        whole.extend(segment(&[
            ("lib/modules/k/modules.dep", file, b"new\n"),
            ("lib/modules/k/updates", dir, b""),
            ("lib/modules/k/updates/b.ko", file, &b),
            // A later entry of another type: the module is gone from the tree.
            ("lib/modules/k/kernel/gone.ko", S_IFLNK | 0o777, b"a.ko"),
        ]));
        let names: HashSet<String> = ["b".to_string()].into();
        let at_once = ImageContents::read(&whole[..], "whole", Digests::Named(&names)).unwrap();
        let first = ImageContents::read(&whole[..prefix_len], "first", Digests::All).unwrap();
        assert_eq!(first.end.offset, prefix_len as u64);
        assert!(first.modules.contains_key("lib/modules/k/kernel/gone.ko"));
        let resumed = first.resume(&whole[prefix_len..], "rest", Digests::Named(&names)).unwrap();

        assert_eq!(resumed.segments, at_once.segments);
        assert_eq!(resumed.end, at_once.end);
        assert_eq!(resumed.files, at_once.files);
        assert_eq!(resumed.files["lib/modules/k/modules.dep"], b"new\n");
        let listing = |c: &ImageContents| -> Vec<(String, Option<String>)> {
            c.modules.iter().map(|(p, m)| (p.clone(), m.sha256.clone())).collect()
        };
        let keys: Vec<&str> = resumed.modules.keys().map(String::as_str).collect();
        assert_eq!(keys, ["lib/modules/k/kernel/a.ko", "lib/modules/k/updates/b.ko"]);
        // Digests only where asked: `a` was hashed by the first read (All), `b` by both.
        assert_eq!(resumed.modules["lib/modules/k/updates/b.ko"].sha256, Some(sha256_hex(&b)));
        assert_eq!(at_once.modules["lib/modules/k/kernel/a.ko"].sha256, None);
        assert_eq!(listing(&at_once)[1], listing(&resumed)[1]);
        assert!(resumed.has_file("lib/modules/k/updates/b.ko"));
        let gone = resumed.view.lookup(b"lib/modules/k/kernel/gone.ko", false).unwrap();
        assert_eq!(gone.inode.file_type(), S_IFLNK);
    }

    #[test]
    fn tree_paths_split_at_the_release() {
        assert_eq!(
            tree_of("usr/lib/modules/6.1/kernel/a.ko"),
            Some(("usr/lib/modules/6.1", "kernel/a.ko"))
        );
        assert_eq!(
            tree_of("lib/modules/6.1/modules.dep"),
            Some(("lib/modules/6.1", "modules.dep"))
        );
        assert_eq!(tree_of("lib/modules/6.1"), None);
        assert_eq!(tree_of("etc/modules"), None);
    }
}
