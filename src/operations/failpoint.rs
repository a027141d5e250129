//! Test hooks in the writing paths, compiled only into debug builds (what `cargo test`
//! runs) or with the `failpoints` feature; a release build has none and ignores the
//! variable.
//!
//! `BOOTKMOD_FAILPOINT=NAME` makes the process SIGKILL itself when it reaches the point
//! `NAME` (a crash mid-operation must be recoverable); `BOOTKMOD_FAILPOINT=NAME=stop`
//! makes it SIGSTOP itself there, so a test can act at exactly that moment (another
//! writer's rename, say) and then let it go on with SIGCONT.

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
