//! The end of `cargo test`: how many tests of this run skipped, and why, one line per
//! reason, so a newcomer sees what was not exercised. cargo runs integration test
//! binaries in name order, so this one (`zz_`) runs after all the others (only the
//! doc-tests follow). The skips come from the run's skip log (`tests/common/skips.rs`).
//!
//! The summary is written straight to stderr: libtest captures only `print!`-style
//! output of passing tests, and this is meant to be seen. `.ci/run` folds the count into
//! its closing line. Under CI (`BOOTKMOD_REQUIRE_ORACLES`) a skip already failed its own
//! test; a recorded one here fails too.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

#[test]
fn summary_of_skipped_tests() {
    let skipped = common::skips::recorded();
    let _ = std::fs::remove_file(common::skips::log_path());
    // One test may skip for the same reason more than once (helpers called in a loop).
    let mut by_reason: BTreeMap<&str, std::collections::BTreeSet<(&str, &str)>> = BTreeMap::new();
    for s in &skipped {
        by_reason.entry(&s.reason).or_default().insert((&s.binary, &s.test));
    }
    let tests: std::collections::BTreeSet<(&str, &str)> =
        by_reason.values().flatten().copied().collect();
    let mut text = format!("bootkmod tests: {} skipped\n", tests.len());
    let mut reasons: Vec<_> = by_reason.iter().collect();
    reasons.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    for (reason, which) in reasons {
        let mut names: Vec<String> =
            which.iter().take(3).map(|(b, t)| format!("{b}::{t}")).collect();
        if which.len() > 3 {
            names.push(format!("{} more", which.len() - 3));
        }
        text.push_str(&format!("  {:>3} × {reason} ({})\n", which.len(), names.join(", ")));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
    assert!(
        !common::oracles_required() || tests.is_empty(),
        "{} is set but tests skipped:\n{text}",
        common::REQUIRE_ENV
    );
}
