//! Shared test support. Each area keeps its helpers in its own file here.
#![allow(dead_code)]

pub mod dud;
pub mod foreign;
pub mod machine;
pub mod qemu;
pub mod skips;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Set by `.ci/run`: a missing oracle tool or fixture is a failure, not a skip.
pub const REQUIRE_ENV: &str = "BOOTKMOD_REQUIRE_ORACLES";

pub fn oracles_required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skip (return `None`) or, under CI, fail: the one policy for every missing oracle.
pub fn missing(what: &str) -> Option<std::convert::Infallible> {
    if oracles_required() {
        panic!("{what} is missing and {REQUIRE_ENV} is set: .ci/install-deps must provide it");
    }
    skip(&format!("{what} is missing (install with .ci/install-deps)"))
}

/// Skip the current test for `reason` (what it lacks: a tool, a cache, a privilege) and
/// record it for the end-of-run summary (`tests/zz_skipped.rs`); under CI
/// (`BOOTKMOD_REQUIRE_ORACLES`) nothing may skip, so this fails instead.
pub fn skip(reason: &str) -> Option<std::convert::Infallible> {
    if oracles_required() {
        panic!("cannot run: {reason}; {REQUIRE_ENV} is set, so nothing may skip");
    }
    eprintln!("SKIP: {reason}");
    skips::record(reason);
    None
}

/// Skip unless running as root; `what` names what needs it.
pub fn need_root(what: &str) -> Option<()> {
    if machine::is_root() {
        return Some(());
    }
    skip(&format!("{what} needs root"))?;
    unreachable!()
}

/// Path of an oracle tool on PATH (or in /sbin, /usr/sbin).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    missing(&format!("tool `{name}`"))?;
    unreachable!()
}

/// Names another bootkmod binary for the tests to judge instead of cargo's build of this
/// tree: a release artefact such as `dist/bootkmod-VERSION-x86_64` (scripts/dist), so
/// the CLI suite proves the binary that ships.
pub const BIN_ENV: &str = "BOOTKMOD_BIN";

/// The bootkmod binary under test: `$BOOTKMOD_BIN`, else cargo's build.
pub fn bootkmod_bin() -> PathBuf {
    match std::env::var_os(BIN_ENV) {
        Some(bin) if !bin.is_empty() => {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "{BIN_ENV}={} is not a file", bin.display());
            std::fs::canonicalize(&bin).unwrap_or(bin)
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_bootkmod")),
    }
}

/// Where scripts/dist put the release artefacts: `$BOOTKMOD_DIST`, else the tree's
/// `dist/`.
pub fn dist_dir() -> PathBuf {
    std::env::var_os("BOOTKMOD_DIST")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("dist"))
}

/// The release artefact `name` in [`dist_dir`]; missing: skip, or fail under
/// `BOOTKMOD_REQUIRE_ORACLES`.
pub fn dist_artefact(name: &str) -> Option<PathBuf> {
    let p = dist_dir().join(name);
    if p.is_file() {
        return Some(p);
    }
    missing(&format!("{} (build it with scripts/dist)", p.display()))?;
    unreachable!()
}

/// The bootkmod binary under test.
pub fn bootkmod() -> Command {
    Command::new(bootkmod_bin())
}

/// Cargo's (debug) build of bootkmod, whatever `$BOOTKMOD_BIN` says: only it carries the
/// failpoint hooks (`operations::failpoint`) that crash and fault tests arm, which a
/// release binary leaves out by design.
pub fn bootkmod_hooked() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bootkmod"))
}

/// `cmd` (built by a helper around [`bootkmod`]) as cargo's build runs it, to arm a
/// failpoint: same arguments, environment and directory.
pub fn hooked(cmd: &Command) -> Command {
    let mut c = bootkmod_hooked();
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    c
}

/// A directory holding the binary under test as `bootkmod`, for tools that find it on
/// PATH (`$BOOTKMOD_BIN` may be named `bootkmod-VERSION-ARCH`).
pub fn bootkmod_path_dir() -> PathBuf {
    let bin = bootkmod_bin();
    if bin.file_name().is_some_and(|n| n == "bootkmod") {
        return bin.parent().expect("a binary has a directory").to_path_buf();
    }
    let dir = std::env::temp_dir().join(format!("bootkmod-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("bootkmod");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    dir
}

/// Run and capture; panics with the command's stderr if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The release of the Debian kernel installed for the oracle tests (the newest tree under
/// /lib/modules with a `kernel/` directory, in version order like `sort -V`).
pub fn installed_kernel() -> Option<String> {
    let mut releases: Vec<String> = std::fs::read_dir("/lib/modules")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("kernel").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort_by(|a, b| machine::release_order(a, b));
    match releases.pop() {
        Some(r) => Some(r),
        None => {
            missing("an installed kernel under /lib/modules (linux-image-amd64)")?;
            unreachable!()
        }
    }
}

/// Every module file of an installed kernel, sorted.
pub fn kernel_modules(release: &str) -> Vec<PathBuf> {
    kernel_modules_in(Path::new("/"), release)
}

/// Every module file under `root`'s `lib/modules/RELEASE/kernel` (an unpacked kernel
/// package of any architecture), sorted.
pub fn kernel_modules_in(root: &Path, release: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, out);
            } else if p.to_string_lossy().contains(".ko") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("lib/modules").join(release).join("kernel"), &mut out);
    out.sort();
    out
}
pub mod builds;
pub mod check;
pub mod chroot;
pub mod depmod;
pub mod doctor;
pub mod doctor_host;
pub mod initramfs;
pub mod inject;
pub mod jail;
pub mod keep;
pub mod kmod;
pub mod sign;
