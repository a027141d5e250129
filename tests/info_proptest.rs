//! Property: `Module::from_bytes` never panics, whatever the bytes. Inputs are real
//! modules of the installed kernel and generated samples (32-bit, big-endian, extended
//! modversions, signed-looking), mutated: bytes overwritten (biased towards the ELF and
//! section headers, where lengths and offsets live), truncated, or extended.
//!
//! The parser has no `catch_unwind` (release builds abort on panic), so a panic here is
//! a real crash of the binary. Cases are bounded to keep the run to seconds.

mod common;

use bootkmod::formats::signature;
use bootkmod::model::module::{Module, ReadOptions};
use bootkmod::samples::{SampleArch, SampleModule};
use proptest::prelude::*;
use std::sync::OnceLock;

/// The inputs mutated by every case: a few small real modules, then samples.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut out = Vec::new();
        if let Some(release) = common::installed_kernel() {
            let mut files = common::kernel_modules(&release);
            files.retain(|p| std::fs::metadata(p).is_ok_and(|m| m.len() < 64 * 1024));
            // A spread over the tree, not just one directory.
            let step = (files.len() / 6).max(1);
            out.extend(files.iter().step_by(step).take(6).map(|p| std::fs::read(p).unwrap()));
        }
        for (arch, extended) in [
            (SampleArch::X86_64, false),
            (SampleArch::I386, false),
            (SampleArch::S390x, true),
            (SampleArch::PowerPc, false),
        ] {
            let mut s = SampleModule::new("prop", "6.1.0 SMP mod_unload modversions ");
            s.arch = arch;
            s.extended_versions = extended;
            s.import("module_layout", 1).export("prop_fn", 2, true, Some("NS"));
            let elf = s.to_elf().unwrap();
            // A real signature tail (PKCS#7 and trailer) taken from a real module: the
            // signature codec is mutated through it too.
            if let Some(real) = out.first() {
                if let Ok(Some((content, _))) = signature::split(real) {
                    let mut signed = elf.clone();
                    signed.extend_from_slice(&real[content.len()..]);
                    out.push(signed);
                }
            }
            out.push(elf);
        }
        out
    })
}

/// One change to an input.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite bytes at a position (fraction of the length) with values.
    Overwrite { at: f64, bytes: Vec<u8> },
    /// Overwrite within the first 64 bytes (the ELF header).
    Header { at: usize, bytes: Vec<u8> },
    /// Overwrite near the end of the ELF: section header table, signature trailer.
    Tail { back: usize, bytes: Vec<u8> },
    /// Keep only a prefix.
    Truncate { keep: f64 },
    /// Append bytes.
    Extend { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = || {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..8),
            // Values that make lengths and offsets lie.
            Just(vec![0xff; 8]),
            Just(vec![0x00; 8]),
            Just(vec![0x7f, 0xff, 0xff, 0xff]),
        ]
    };
    prop_oneof![
        (0.0..1.0f64, bytes()).prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        (0..64usize, bytes()).prop_map(|(at, bytes)| Mutation::Header { at, bytes }),
        (1..4096usize, bytes()).prop_map(|(back, bytes)| Mutation::Tail { back, bytes }),
        (0.0..1.0f64).prop_map(|keep| Mutation::Truncate { keep }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
    ]
}

fn apply(input: &mut Vec<u8>, m: &Mutation) {
    let overwrite = |input: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = input.get_mut(at + i) {
                *slot = *b;
            }
        }
    };
    match m {
        Mutation::Overwrite { at, bytes } => {
            let at = (*at * input.len() as f64) as usize;
            overwrite(input, at, bytes);
        }
        Mutation::Header { at, bytes } => overwrite(input, *at, bytes),
        Mutation::Tail { back, bytes } => {
            let at = input.len().saturating_sub(*back);
            overwrite(input, at, bytes);
        }
        Mutation::Truncate { keep } => input.truncate((*keep * input.len() as f64) as usize),
        Mutation::Extend { bytes } => input.extend_from_slice(bytes),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics(pick in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let corpus = corpus();
        let mut input = corpus[pick.index(corpus.len())].clone();
        for m in &mutations {
            apply(&mut input, m);
        }
        // Ok or Err are both fine; returning at all is the property.
        let _ = Module::from_bytes(&input, ReadOptions::default());
    }
}

/// The unmutated corpus parses: the property above is not vacuous.
#[test]
fn corpus_parses_unmutated() {
    for (i, input) in corpus().iter().enumerate() {
        Module::from_bytes(input, ReadOptions::default())
            .unwrap_or_else(|e| panic!("corpus entry {i}: {e:#}"));
    }
}
