//! Fault injection for the tests: a write, fsync or rename that fails with ENOSPC, EROFS
//! or EIO, or a SIGKILL, at a chosen point of a run. Compiled in only in debug builds
//! (what `cargo test` runs); in a release build every hook is an empty function.
//!
//! Environment (read once per process):
//!
//! - `BOOTKMOD_FAULT=KIND@N`: the Nth I/O step of the process (counted from 1) fails
//!   with KIND — `enospc`, `erofs`, `eio` — or, for `kill`, the process kills itself
//!   with SIGKILL just before it;
//! - `BOOTKMOD_FAULT_TRACE=FILE`: append `N STEP PATH` per step, so a test learns how
//!   many points a command has and what they are;
//! - `BOOTKMOD_FAILPOINT=NAME`: SIGKILL at the named journaled step ([`failpoint`]).
//!
//! The steps are the writes of `operations::atomic` (the one owner of atomic writes)
//! and of the ledger's directories: `write` (a new file's content), `fsync` (a file or
//! a directory), `rename`, `link` (a backup hard link), `symlink`, `unlink`, `mkdir`.

use std::path::Path;

/// One I/O step about to happen: fails (or kills) when the environment says so.
#[cfg(debug_assertions)]
pub fn step(what: &str, path: &Path) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static PLAN: OnceLock<(Option<(String, usize)>, Option<std::path::PathBuf>)> = OnceLock::new();
    let (fault, trace) = PLAN.get_or_init(|| {
        let fault = std::env::var("BOOTKMOD_FAULT").ok().and_then(|v| {
            let (kind, n) = v.split_once('@')?;
            Some((kind.to_string(), n.parse().ok()?))
        });
        (fault, std::env::var_os("BOOTKMOD_FAULT_TRACE").map(Into::into))
    });
    if fault.is_none() && trace.is_none() {
        return Ok(());
    }
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(trace) = trace {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(trace) {
            let _ = writeln!(f, "{n} {what} {}", path.display());
        }
    }
    match fault {
        Some((kind, at)) if *at == n => {
            let errno = match kind.as_str() {
                "enospc" => libc::ENOSPC,
                "erofs" => libc::EROFS,
                "eio" => libc::EIO,
                "kill" => {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                    return Ok(());
                }
                _ => return Ok(()),
            };
            Err(std::io::Error::from_raw_os_error(errno))
        }
        _ => Ok(()),
    }
}

/// One I/O step about to happen (release build: nothing).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn step(_what: &str, _path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// When `BOOTKMOD_FAILPOINT` names this point, the process kills itself with SIGKILL
/// right here: how the tests prove a crash mid-operation is recoverable.
#[cfg(debug_assertions)]
pub fn failpoint(name: &str) {
    if std::env::var("BOOTKMOD_FAILPOINT").is_ok_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// A journaled step (release build: nothing).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn failpoint(_name: &str) {}
