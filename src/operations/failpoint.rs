//! Test hooks in the writing paths, compiled only into debug builds (what `cargo test`
//! runs) or with the `failpoints` feature; a release build has none and ignores the
//! variables.
//!
//! `BOOTKMOD_FAILPOINT=NAME` makes the process SIGKILL itself when it reaches the point
//! `NAME` (a crash mid-operation must be recoverable); `BOOTKMOD_FAILPOINT=NAME=stop`
//! makes it SIGSTOP itself there, so a test can act at exactly that moment (another
//! writer's rename, say) and then let it go on with SIGCONT.
//!
//! `BOOTKMOD_FAULT=KIND@N` makes the Nth I/O step of the process (counted from 1) fail
//! with KIND — `enospc`, `erofs`, `eio` — or, for `kill`, kills the process with SIGKILL
//! just before it; `BOOTKMOD_FAULT_TRACE=FILE` appends `N STEP PATH` per step, so a test
//! learns how many points a command has and what they are. The steps are the writes of
//! `operations::atomic` (the one owner of atomic writes) and of the ledger's directories:
//! `write` (a new file's content), `fsync` (a file or a directory), `rename`, `link` (a
//! backup hard link), `symlink`, `unlink`, `mkdir`.

use std::path::Path;

/// Act as `BOOTKMOD_FAILPOINT` asks when it names the point `name`; else nothing.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn failpoint(name: &str) {
    use nix::sys::signal::{raise, Signal};
    let Ok(asked) = std::env::var("BOOTKMOD_FAILPOINT") else { return };
    if asked == name {
        let _ = raise(Signal::SIGKILL);
    } else if asked.strip_suffix("=stop") == Some(name) {
        let _ = raise(Signal::SIGSTOP);
    }
}

/// Release build: no hooks.
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline(always)]
pub fn failpoint(_name: &str) {}

/// One I/O step about to happen: fails (or kills) when the environment says so.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn step(what: &str, path: &Path) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    /// The fault asked for (kind, step number) and the trace file, read once.
    type Plan = (Option<(String, usize)>, Option<std::path::PathBuf>);
    static PLAN: OnceLock<Plan> = OnceLock::new();
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
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline(always)]
pub fn step(_what: &str, _path: &Path) -> std::io::Result<()> {
    Ok(())
}
