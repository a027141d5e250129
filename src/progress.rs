//! Progress of long work, for a person watching a terminal: one line on stderr,
//! rewritten in place, at most ten times a second, erased when the work is done.
//!
//! Shown only when stderr is a terminal, so kickstart logs, pipes and `--json` consumers
//! never see it; `BOOTKMOD_PROGRESS=1` forces it on (and `0` off), for tests and for
//! logs that want it. Like `tracing`, a side channel the operations write to; results
//! and errors never go through it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Whether progress lines are drawn.
pub fn enabled() -> bool {
    match std::env::var("BOOTKMOD_PROGRESS").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::io::stderr().is_terminal(),
    }
}

/// One piece of long work over a known number of bytes (or items).
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    drawn: Option<Instant>,
    enabled: bool,
}

const EVERY: Duration = Duration::from_millis(100);

impl Progress {
    /// `what` names the work (`reading /boot/initrd.img-6.1.0-56-amd64`); `total` is its
    /// size in the unit [`Progress::advance`] counts (0: unknown).
    pub fn new(what: impl Into<String>, total: u64) -> Progress {
        Progress { what: what.into(), total, done: 0, drawn: None, enabled: enabled() }
    }

    /// `n` more units done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.enabled || self.drawn.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        let line = match (self.done.min(self.total) * 100).checked_div(self.total) {
            Some(pct) => format!("{}: {pct}%", self.what),
            None => format!("{}: {}", self.what, self.done),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = Some(Instant::now());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// A reader that reports the bytes passing through it.
pub struct Reading<R> {
    pub inner: R,
    pub progress: Progress,
}

impl<R: std::io::Read> std::io::Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
