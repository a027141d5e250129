//! The fuzzers' corpora replayed on the stable toolchain: every file under
//! `fuzz/corpus/<target>/` goes through the same function its cargo-fuzz target calls
//! (`fuzz/targets.rs`), so a parser change that makes any of them panic fails CI. The
//! long runs that grew the corpora are nightly-only (docs/testing.md).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, body) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} has no inputs");
    let mut panicked = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| body(&bytes)).is_err() {
            panicked.push(file.display().to_string());
        }
    }
    println!("{target}: replayed {} inputs", files.len());
    assert!(panicked.is_empty(), "{target} panicked on: {panicked:#?}");
}

#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for name in &names {
        assert!(fuzz.join(format!("{name}.rs")).is_file(), "no fuzz/fuzz_targets/{name}.rs");
    }
    let this = std::fs::read_to_string(file!()).unwrap();
    for name in &names {
        assert!(this.contains(&format!("replay(\"{name}\")")), "{name} is not replayed here");
    }
}

#[test]
fn module_from_bytes_corpus() {
    replay("module_from_bytes");
}

#[test]
fn initramfs_walk_corpus() {
    replay("initramfs_walk");
}

#[test]
fn kmod_index_corpus() {
    replay("kmod_index");
}

#[test]
fn symvers_corpus() {
    replay("symvers");
}

#[test]
fn signature_der_corpus() {
    replay("signature_der");
}

#[test]
fn dud_iso_corpus() {
    replay("dud_iso");
}

#[test]
fn rpm_package_corpus() {
    replay("rpm_package");
}

#[test]
fn ledger_json_corpus() {
    replay("ledger_json");
}

#[test]
fn kernel_image_corpus() {
    replay("kernel_image");
}
