//! The skip log of one `cargo test` run, so its end can say what was not exercised.
//!
//! Every skip ([`super::skip`]) appends one line `binary<TAB>test<TAB>reason` to a file
//! shared by all test binaries of the run; `tests/zz_skipped.rs`, the integration test
//! cargo runs last (targets run in name order), prints one line per reason and removes
//! the file. A run is identified by the process that started the test binaries (cargo):
//! its pid and start time, so concurrent or earlier runs never mix.
//! `$BOOTKMOD_SKIP_LOG` names the file instead (for runners other than cargo).

use std::io::Write;
use std::path::PathBuf;

/// The skip log of the current run.
pub fn log_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BOOTKMOD_SKIP_LOG").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let parent = nix::unistd::getppid().as_raw();
    // Field 22 of /proc/PID/stat (after the parenthesised command name): start time.
    let started = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_string()))
        .and_then(|rest| rest.split_whitespace().nth(19).map(str::to_string))
        .unwrap_or_default();
    let uid = nix::unistd::geteuid();
    std::env::temp_dir().join(format!("bootkmod-skips-{uid}-{parent}-{started}.log"))
}

/// Append a skip of the current test.
pub fn record(reason: &str) {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(name, _hash)| name.to_string()))
        .unwrap_or_default();
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("{binary}\t{test}\t{}\n", reason.replace(['\n', '\t'], " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path())
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("warning: cannot record the skip in {}: {e}", log_path().display());
    }
}

/// One skipped test.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub binary: String,
    pub test: String,
    pub reason: String,
}

/// The skips recorded so far in this run.
pub fn recorded() -> Vec<Skipped> {
    let text = std::fs::read_to_string(log_path()).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some(Skipped {
                binary: f.next()?.to_string(),
                test: f.next()?.to_string(),
                reason: f.next()?.to_string(),
            })
        })
        .collect()
}
