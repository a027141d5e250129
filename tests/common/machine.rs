//! What this machine and this user provide the tests: the caches (the CI cache that
//! `.ci/setup.d` fills as root, and a writable cache for fixtures the tests build), the
//! other Debian kernel builds `.ci/setup.d/kernels` picked relative to the installed
//! kernel, release names derived from the installed one, and privileges.
//!
//! Nothing here may panic on a cache another user made: a cache this user cannot read
//! or write is passed over (the fixture is rebuilt in the user's own cache, or the test
//! skips naming what it lacks).

use super::{installed_kernel, missing, skip};
use std::path::{Path, PathBuf};

/// The shared CI cache `.ci/install-deps` fills when run as root.
pub const CI_CACHE: &str = "/var/cache/bootkmod-ci";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A non-root user's own cache: `$XDG_CACHE_HOME/bootkmod-tests` or
/// `$HOME/.cache/bootkmod-tests` (what `.ci/setup.d/kernels` uses without root too).
fn user_cache() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let home =
        std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".cache"));
    xdg.or(home).map(|d| d.join("bootkmod-tests"))
}

/// Where prepared inputs (kernel builds, QEMU, pykickstart) are looked for, in order:
/// `$BOOTKMOD_CACHE` alone when set; else root's CI cache, with a non-root user's own
/// cache first.
pub fn input_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("BOOTKMOD_CACHE").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if !is_root() {
        dirs.extend(user_cache());
    }
    dirs.push(PathBuf::from(CI_CACHE));
    dirs
}

/// A prepared input (`rel` below a cache, e.g. `qemu/usr/bin/qemu-system-x86_64`) this
/// user can read; `None` when no cache has it. One that exists but cannot be read is a
/// skip naming it (under CI a failure), never a panic.
pub fn input(rel: &str) -> Option<PathBuf> {
    let mut unreadable = None;
    for dir in input_dirs() {
        let p = dir.join(rel);
        if p.exists() {
            let readable = if p.is_dir() {
                std::fs::read_dir(&p).is_ok()
            } else {
                std::fs::File::open(&p).is_ok()
            };
            if readable {
                return Some(p);
            }
            unreadable.get_or_insert(p);
        }
    }
    if let Some(p) = unreadable {
        skip(&format!("{} exists but this user cannot read it", p.display()))?;
    }
    None
}

/// A directory this user can write for fixtures the tests build and keep between runs
/// (dracut images, extracted vmlinux): `$BOOTKMOD_CACHE` or root's CI cache when writable,
/// else the user's own cache, else a per-user directory under the temp dir.
pub fn fixture_cache(sub: &str) -> PathBuf {
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("BOOTKMOD_CACHE").filter(|v| !v.is_empty()) {
        bases.push(dir.into());
    } else if is_root() {
        bases.push(CI_CACHE.into());
    }
    bases.extend(user_cache());
    bases.push(std::env::temp_dir().join(format!("bootkmod-tests-{}", nix::unistd::geteuid())));
    for base in bases {
        let dir = base.join(sub);
        if std::fs::create_dir_all(&dir).is_ok() && tempfile::tempfile_in(&dir).is_ok() {
            return dir;
        }
    }
    panic!(
        "no writable cache directory for {sub} (not even under {})",
        std::env::temp_dir().display()
    )
}

/// The builds `.ci/setup.d/kernels` picked beside the installed kernel.
#[derive(Debug, Clone)]
pub struct OtherKernels {
    pub installed: String,
    /// The newest older ABI of the installed flavour the archive had.
    pub older: String,
    pub older_root: PathBuf,
    /// The rt flavour of the installed ABI.
    pub rt: String,
    pub rt_root: PathBuf,
}

/// Read `kernels/picked` and the unpacked trees it names. Skips (fails under CI) when
/// the script has not run, or ran for another installed kernel.
pub fn other_kernels() -> Option<OtherKernels> {
    let installed = installed_kernel()?;
    let Some(picked) = input("kernels/picked") else {
        missing("kernels/picked in the test cache (run .ci/setup.d/kernels)")?;
        unreachable!()
    };
    let text = std::fs::read_to_string(&picked).unwrap_or_default();
    let field = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
    };
    let (Some(for_kernel), Some(older), Some(rt)) =
        (field("installed"), field("older"), field("rt"))
    else {
        missing(&format!("a complete {} (rerun .ci/setup.d/kernels)", picked.display()))?;
        unreachable!()
    };
    if for_kernel != installed {
        missing(&format!(
            "kernel builds picked for {installed} ({} is for {for_kernel}: rerun .ci/setup.d/kernels)",
            picked.display()
        ))?;
    }
    let tree = |kver: &str| -> Option<PathBuf> {
        let marker = picked.with_file_name(kver).join(".complete");
        if marker.is_file() {
            return Some(picked.with_file_name(kver));
        }
        missing(&format!("{} (rerun .ci/setup.d/kernels)", marker.display()))?;
        unreachable!()
    };
    let older_root = tree(&older)?;
    let rt_root = tree(&rt)?;
    Some(OtherKernels { installed, older, older_root, rt, rt_root })
}

/// A release name for a synthetic copy of `kver` (a kABI-compatible rebuild, a broken
/// one): `tag` is appended to the ABI number, `6.1.0-57-amd64` + `kabi` →
/// `6.1.0-57kabi-amd64`. It sorts after `kver` in byte order (`-` sorts before every
/// letter), which is how bootkmod lists kernels, whatever the installed release is.
pub fn synthetic_release(kver: &str, tag: &str) -> String {
    assert!(
        tag.starts_with(|c: char| c.is_ascii_lowercase()),
        "tag {tag:?} must start with a letter"
    );
    // Debian: <upstream>-<abi>-<flavour>; the tag goes right after <abi>.
    let mut parts = kver.splitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(upstream), Some(abi), Some(flavour)) => format!("{upstream}-{abi}{tag}-{flavour}"),
        _ => format!("{kver}{tag}"),
    }
}

/// Compare kernel releases the way `sort -V` does for them: runs of digits by value,
/// everything else byte by byte (`6.1.0-9-amd64` < `6.1.0-10-amd64`).
pub fn release_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    a.len().cmp(&b.len()).then(a.cmp(b))
}

/// Put `from` at `to`: a hard link when allowed (cheap), else a copy. Hard links into
/// files another user owns need root (`fs.protected_hardlinks`).
pub fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}

/// Recreate the tree `src` at `dst`: directories made, files linked or copied
/// ([`link_or_copy`]), symlinks recreated as they are.
pub fn clone_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if kind.is_dir() {
            clone_tree(&from, &to);
        } else {
            link_or_copy(&from, &to);
        }
    }
}
