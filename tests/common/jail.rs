//! Helpers for the `--root` jail tests: a target tree whose every directory bootkmod
//! touches is reached through a symlink (absolute or relative), a decoy tree on the host
//! at the absolute paths those links name, and a fingerprint of the decoy that shows any
//! read of a file or any change (bytes, mode, link target, mtime, ctime, atime).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// How the links of a jailed tree name their targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// `/tmp/decoy-XXXX/lib`: inside the root it names `ROOT/tmp/decoy-XXXX/lib`; the
    /// host's OS would follow it to the decoy.
    Absolute,
    /// The same place, spelled relative to the link's directory.
    Relative,
}

/// Replace the target-absolute `from` under `root` by a link to `to` (target-absolute):
/// what was at `from` moves to `to` (inside the root), the link is spelled per `links`.
pub fn relocate(root: &Path, from: &str, to: &str, links: Links) {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at(to).parent().unwrap()).unwrap();
    std::fs::rename(at(from), at(to))
        .unwrap_or_else(|e| panic!("moving {from} to {to} under {}: {e}", root.display()));
    link(root, from, to, links);
}

/// Create the link `from -> to` (both target-absolute) under `root`.
pub fn link(root: &Path, from: &str, to: &str, links: Links) {
    let spelled = match links {
        Links::Absolute => PathBuf::from(to),
        Links::Relative => relative(Path::new(from).parent().unwrap(), Path::new(to)),
    };
    let host = root.join(from.trim_start_matches('/'));
    std::fs::create_dir_all(host.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&spelled, &host).unwrap();
}

/// `to` spelled from directory `dir` (both target-absolute): up to `/`, then down.
fn relative(dir: &Path, to: &Path) -> PathBuf {
    let depth = dir.components().filter(|c| matches!(c, Component::Normal(_))).count();
    let mut out = PathBuf::new();
    for _ in 0..depth {
        out.push("..");
    }
    out.push(to.strip_prefix("/").unwrap());
    out
}

/// Everything below `dir`: kind, mode, size, link target, content digest (read with
/// O_NOATIME, so fingerprinting reads nothing twice in the atime's eyes), mtime and
/// ctime of every entry, atime of every file. Equal fingerprints: nothing below `dir`
/// was read, created, removed, rewritten, re-pointed or touched.
pub fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let times =
                format!("m{}.{} c{}.{}", m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {:o}", m.mode())
            } else {
                let mut bytes = Vec::new();
                use std::io::Read;
                // O_NOATIME is the owner's (or root's) to ask for: another user's file
                // (the host's /lib/modules, read by a non-root run) is read plainly, and
                // its atime is not judged (see root_jail).
                let noatime =
                    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(&p);
                let mut file = match noatime {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::File::open(&p),
                    other => other,
                }
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                file.read_to_end(&mut bytes).unwrap();
                let after = std::fs::symlink_metadata(&p).unwrap();
                format!(
                    "file {:o} {} a{}.{} {}",
                    m.mode(),
                    m.len(),
                    after.atime(),
                    after.atime_nsec(),
                    bootkmod::model::module::sha256_hex(&bytes)
                )
            };
            out.insert(p.clone(), format!("{what} {times}"));
            if m.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// The keys of two fingerprints that differ, for a readable assertion message.
pub fn diff(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{}: {:?} -> {:?}", k.display(), before.get(k), after.get(k)))
        .collect()
}
