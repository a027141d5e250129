//! Every file in `kickstart/` is a valid kickstart for RHEL 8, 9 and 10, as pykickstart's
//! ksvalidator (pinned by `.ci/setup.d/pykickstart`) judges it.

mod common;

use common::dud::ksvalidator;
use common::run;
use std::process::Command;

#[test]
fn every_snippet_validates_for_rhel8_9_10() {
    let Some(validator) = ksvalidator() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kickstart");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ks"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "kickstart/ lost its snippets: {files:?}");
    for version in ["RHEL8", "RHEL9", "RHEL10"] {
        for file in &files {
            let out = run(Command::new(&validator).args(["-v", version]).arg(file));
            assert!(
                out.status.success(),
                "{} is not valid for {version}:\n{}{}",
                file.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_validator_rejects_a_broken_driverdisk_line() {
    let Some(validator) = ksvalidator() else { return };
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad.ks");
    std::fs::write(&bad, "driverdisk --no-such-option=1\n").unwrap();
    let out = run(Command::new(&validator).args(["-v", "RHEL9"]).arg(&bad));
    assert!(!out.status.success(), "the oracle must be able to say no");
}
