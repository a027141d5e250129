//! Helpers for the keep (install/status/remove) tests: a target root holding several
//! real Debian kernels (each a small subset of its modules, its config, its symvers
//! where bootkmod and kmod look, a tiny initramfs, indexes by kmod's depmod), kABI copies of a kernel under
//! another release name, and snapshots of trees to prove what changed and what did not.

use super::machine::other_kernels;
use bootkmod::formats::cpio::{EntryMeta, Format, Writer};
use bootkmod::formats::symvers::{self, SymversEntry};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The modules each test kernel carries: a block driver and ext4 with its dependencies.
pub const SUBSET: &[&str] =
    &["virtio_blk.ko", "ext4.ko", "jbd2.ko", "mbcache.ko", "crc16.ko", "crc32c_generic.ko"];

/// What most keep tests start from: the installed kernel `kver` as a source tree with
/// its symvers, `bkram` built against its headers (in `scratch`, a temp dir tests may
/// use for more), and an empty target root. `None` when a part is missing (the
/// missing-oracle rule applies).
pub struct Setup {
    pub kver: String,
    pub newer: Source,
    pub symvers: Vec<SymversEntry>,
    pub bkram: PathBuf,
    pub root: TargetRoot,
    pub scratch: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Option<Setup> {
        let kver = super::installed_kernel()?;
        let newer = Source::of(&kver, &kver)?;
        let scratch = tempfile::tempdir().unwrap();
        let bkram = super::check::build_bkram(&kver, scratch.path())?;
        let symvers = newer.symvers();
        Some(Setup { kver, newer, symvers, bkram, root: TargetRoot::new(), scratch })
    }
}

/// Where a Debian kernel's files come from: the host (`/`) or an unpacked build.
pub struct Source {
    pub root: PathBuf,
    pub kver: String,
}

impl Source {
    /// The installed kernel, or a build `.ci/setup.d/kernels` picked beside it
    /// ([`other_kernels`]).
    pub fn of(kver: &str, installed: &str) -> Option<Source> {
        if kver == installed {
            return Some(Source { root: PathBuf::from("/"), kver: kver.to_string() });
        }
        let other = other_kernels()?;
        let root = match kver {
            k if k == other.older => other.older_root,
            k if k == other.rt => other.rt_root,
            _ => panic!("{kver} is neither the installed kernel nor a build picked beside it"),
        };
        Some(Source { root, kver: kver.to_string() })
    }

    pub fn symvers(&self) -> Vec<SymversEntry> {
        let p = self.root.join(format!("usr/src/linux-headers-{}/Module.symvers", self.kver));
        symvers::parse(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap()
    }
}

/// A target root in a temporary directory.
pub struct TargetRoot {
    pub dir: tempfile::TempDir,
}

impl TargetRoot {
    pub fn new() -> TargetRoot {
        TargetRoot { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of a target-absolute path.
    pub fn at(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p.as_ref().strip_prefix("/").unwrap_or(p.as_ref()))
    }

    /// Add kernel `release` made of `src`'s subset modules, config and `symvers`
    /// (written as Debian's headers would hold it), with a small initramfs and the
    /// indexes kmod's depmod writes, as the kernel package leaves them.
    pub fn add_kernel(&self, src: &Source, release: &str, symvers_entries: &[SymversEntry]) {
        let from = src.root.join("lib/modules").join(&src.kver);
        let to = self.at(format!("/lib/modules/{release}"));
        let order = std::fs::read_to_string(from.join("modules.order")).unwrap();
        let mut kept = Vec::new();
        for line in order.lines() {
            let file = line.rsplit('/').next().unwrap_or_default();
            if SUBSET.contains(&file) {
                let dest = to.join(line);
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                super::machine::link_or_copy(&from.join(line), &dest);
                kept.push(line.to_string());
            }
        }
        assert_eq!(kept.len(), SUBSET.len(), "subset incomplete in {}", from.display());
        std::fs::write(to.join("modules.order"), kept.join("\n") + "\n").unwrap();
        for f in ["modules.builtin", "modules.builtin.modinfo"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
        let headers = self.at(format!("/usr/src/linux-headers-{release}"));
        std::fs::create_dir_all(&headers).unwrap();
        std::fs::write(headers.join("Module.symvers"), symvers::write(symvers_entries)).unwrap();
        std::os::unix::fs::symlink(format!("/usr/src/linux-headers-{release}"), to.join("build"))
            .unwrap();
        std::fs::create_dir_all(self.at("/boot")).unwrap();
        std::fs::copy(
            src.root.join(format!("boot/config-{}", src.kver)),
            self.at(format!("/boot/config-{release}")),
        )
        .unwrap();
        std::fs::write(self.at(format!("/boot/initrd.img-{release}")), tiny_image(release))
            .unwrap();
        // The kernel package's postinst runs depmod: every installed tree has indexes.
        if let Some(depmod) = super::tool("depmod") {
            let out = super::run(
                std::process::Command::new(depmod).arg("-b").arg(self.path()).arg(release),
            );
            assert!(out.status.success(), "depmod: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Default for TargetRoot {
    fn default() -> Self {
        TargetRoot::new()
    }
}

/// A raw newc initramfs with an `/init` and the kernel's module directory.
pub fn tiny_image(release: &str) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), Format::Newc);
    for dir in ["usr", "usr/lib", "usr/lib/modules"] {
        w.write_entry(&EntryMeta::new(dir, 0o040755), b"").unwrap();
    }
    let tree = format!("usr/lib/modules/{release}");
    w.write_entry(&EntryMeta::new(tree.as_bytes(), 0o040755), b"").unwrap();
    w.write_entry(&EntryMeta::new("init", 0o100755), b"#!/bin/sh\n").unwrap();
    w.finish().unwrap()
}

/// `symbol`'s CRC changed, as a kABI break would change it.
pub fn break_symbol(entries: &[SymversEntry], symbol: &str) -> Vec<SymversEntry> {
    let mut out = entries.to_vec();
    let e = out.iter_mut().find(|e| e.symbol == symbol).expect("symbol in symvers");
    e.crc ^= 0x5a5a_5a5a;
    out
}

/// Every path below `dir` with its kind, size, mtime and link target: any change shows.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let link = std::fs::read_link(&p).ok();
            out.insert(
                p.clone(),
                format!("{:?} {} {:?} {:?}", m.file_type(), m.len(), m.modified().ok(), link),
            );
            if m.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// sha256 of every file below `dir` (images, for byte-for-byte restores).
pub fn digests(dir: &Path) -> BTreeMap<PathBuf, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.path(), bootkmod::model::module::sha256_hex(&std::fs::read(e.path()).unwrap())))
        .collect()
}

/// Every path below `dir` with what it is: a file's mode and sha256, a link's target, a
/// directory's mode. Equal fingerprints mean nothing under `dir` was created, removed,
/// rewritten or re-pointed (the ledger included, being a file there).
pub fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, top: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode();
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {mode:o}")
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {mode:o} {}", bootkmod::model::module::sha256_hex(&bytes))
            };
            out.insert(p.strip_prefix(top).unwrap().to_path_buf(), what);
            if m.is_dir() {
                walk(&p, top, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The keys of two fingerprints that differ, for a readable assertion message.
pub fn fingerprint_diff(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{}: {:?} -> {:?}", k.display(), before.get(k), after.get(k)))
        .collect()
}

/// Parse a command's stdout as JSON, showing both streams when it is not.
/// The entry of `release` in a report's `kernels` array (install, status).
pub fn kernel_of<'a>(report: &'a serde_json::Value, release: &str) -> &'a serde_json::Value {
    report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["release"] == release)
        .unwrap_or_else(|| panic!("{release} missing from {report:#}"))
}

pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Debian's dracut modules plus the repository's `90bootkmod`, copied to `dir`, for a
/// dracut run that must not touch the host's `/usr/lib/dracut`.
pub fn dracut_with_bootkmod(dir: &Path) {
    let st = super::run(std::process::Command::new("cp").arg("-a").arg("/usr/lib/dracut").arg(dir));
    assert!(st.status.success(), "cp /usr/lib/dracut: {}", String::from_utf8_lossy(&st.stderr));
    let st = super::run(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("dracut-module/90bootkmod"))
            .arg(dir.join("modules.d/")),
    );
    assert!(st.status.success(), "cp 90bootkmod: {}", String::from_utf8_lossy(&st.stderr));
}

/// Assert that both listers, bootkmod's `initramfs ls` and dracut's `lsinitrd`, see
/// `release`'s bkram and bootkmod's early-load file in `image`; `lsinitrd`'s listing
/// is returned for more checks.
pub fn assert_image_carries_bkram(image: &Path, release: &str, lsinitrd: &Path) -> String {
    let want = format!("lib/modules/{release}/extra/bkram/bkram.ko");
    let ls = super::run(super::bootkmod().args(["initramfs", "ls"]).arg(image));
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(listing.contains(&want), "bootkmod initramfs ls lacks {want}:\n{listing}");
    let ls = super::run(std::process::Command::new(lsinitrd).arg(image));
    let listing = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(listing.contains(&want), "lsinitrd lacks {want}:\n{listing}");
    assert!(listing.contains("etc/modules-load.d/bootkmod.conf"), "{listing}");
    listing
}
