//! Test support for the depmod area: cheap copies of the installed kernel tree (hard
//! links) into a temporary root, and kmod's depmod/modprobe as oracles.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files of the kernel package depmod reads; never generated, so never compared.
pub const INPUTS: &[&str] = &["modules.order", "modules.builtin", "modules.builtin.modinfo"];

/// A temporary root holding `lib/modules/<release>`.
pub struct TreeRoot {
    pub dir: tempfile::TempDir,
    pub release: String,
}

/// A generated module for `release`, importing `module_layout` as every modversions
/// build does.
pub fn sample(release: &str, name: &str) -> bootkmod::samples::SampleModule {
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let mut s = bootkmod::samples::SampleModule::new(name, &vermagic);
    s.import("module_layout", 0x1234_5678);
    s
}

impl TreeRoot {
    /// A root whose `lib/modules/<release>` exists and is empty.
    pub fn empty(release: &str) -> TreeRoot {
        let root = TreeRoot { dir: tempfile::tempdir().unwrap(), release: release.into() };
        std::fs::create_dir_all(root.tree()).unwrap();
        root
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of the tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.path().join("lib/modules").join(&self.release)
    }

    /// Copy the installed tree's module files whose tree-relative path satisfies
    /// `keep`, plus the kernel package's inputs. Hard links when possible.
    pub fn copy_installed(release: &str, keep: impl Fn(&str) -> bool) -> TreeRoot {
        Self::copy_tree(Path::new("/"), release, keep)
    }

    /// [`TreeRoot::copy_installed`] from the tree of kernel `release` under `from` (an
    /// unpacked kernel package).
    pub fn copy_tree(from: &Path, release: &str, keep: impl Fn(&str) -> bool) -> TreeRoot {
        let dir = tempfile::tempdir().unwrap();
        let root = TreeRoot { dir, release: release.to_string() };
        let src = from.join("lib/modules").join(release);
        for m in super::kernel_modules_in(from, release) {
            let rel = m.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if keep(&rel) {
                root.place(&rel, &m);
            }
        }
        for input in INPUTS {
            let from = src.join(input);
            if from.exists() {
                std::fs::copy(&from, root.tree().join(input)).unwrap();
            }
        }
        root
    }

    /// Put `from` at tree-relative `rel` (hard link, or copy across filesystems).
    pub fn place(&self, rel: &str, from: &Path) {
        let to = self.tree().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        super::machine::link_or_copy(from, &to);
    }

    /// A relative symlink at tree-relative `rel` pointing to `target`.
    pub fn symlink(&self, rel: &str, target: &str) {
        let at = self.tree().join(rel);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    }

    /// Run kmod's depmod on this root (`-C` so it reads the root's depmod.d, not the
    /// host's). Panics on failure.
    pub fn run_depmod(&self, depmod: &Path) {
        let conf = self.root().join("etc/depmod.d");
        std::fs::create_dir_all(&conf).unwrap();
        let out = super::run(
            Command::new(depmod).arg("-b").arg(self.root()).arg("-C").arg(&conf).arg(&self.release),
        );
        assert!(out.status.success(), "depmod failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every index file kmod wrote (the tree's `modules.*` minus the inputs), sorted.
    pub fn written_indexes(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.tree())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("modules.") && !INPUTS.contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }
}

/// Assert byte equality of `ours` (name, bytes) with what kmod wrote into `root`,
/// and that both wrote the same set of files.
pub fn assert_same_indexes(root: &TreeRoot, ours: &[(&str, Vec<u8>)]) {
    let theirs = root.written_indexes();
    let mut our_names: Vec<String> = ours.iter().map(|(n, _)| n.to_string()).collect();
    our_names.sort();
    assert_eq!(our_names, theirs, "different sets of index files");
    let mut differ = Vec::new();
    for (name, bytes) in ours {
        let kmod = std::fs::read(root.tree().join(name)).unwrap();
        if &kmod != bytes {
            let at = kmod
                .iter()
                .zip(bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(kmod.len().min(bytes.len()));
            differ.push(format!(
                "{name}: kmod {} bytes, ours {} bytes, first difference at {at}",
                kmod.len(),
                bytes.len()
            ));
        }
    }
    assert!(differ.is_empty(), "indexes differ from kmod's depmod:\n{}", differ.join("\n"));
}

/// Module names of a `modules.dep` text, in file order.
pub fn dep_names(modules_dep: &str) -> Vec<String> {
    modules_dep
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|p| {
            let base = p.rsplit('/').next().unwrap_or(p);
            base.split('.').next().unwrap_or(base).replace('-', "_")
        })
        .collect()
}

/// The storage closure: modules under drivers/{ata,nvme,block,scsi} and fs/ext4
/// (taken in modules.order order) plus everything they need per the installed
/// modules.dep, capped at about `max` modules — an initramfs-sized set.
pub fn storage_subset(release: &str, max: usize) -> std::collections::BTreeSet<String> {
    let tree = Path::new("/lib/modules").join(release);
    let dep = std::fs::read_to_string(tree.join("modules.dep")).unwrap();
    let deps: std::collections::HashMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    let order = std::fs::read_to_string(tree.join("modules.order")).unwrap();
    let prefixes = [
        "kernel/drivers/ata/",
        "kernel/drivers/nvme/",
        "kernel/drivers/block/",
        "kernel/fs/ext4/",
        "kernel/drivers/scsi/",
    ];
    let mut set = std::collections::BTreeSet::new();
    for line in order.lines() {
        if !prefixes.iter().any(|p| line.starts_with(p)) {
            continue;
        }
        let Some((path, d)) = deps.get_key_value(line) else { continue };
        let mut with: Vec<&str> = d.clone();
        with.push(path);
        let new = with.iter().filter(|m| !set.contains(**m)).count();
        if set.len() + new > max {
            continue;
        }
        set.extend(with.into_iter().map(str::to_string));
    }
    set
}
