//! cargo-fuzz target `kernel_image`: see `fuzz/targets.rs` for what it reads, and
//! docs/testing.md for how to run it and what it has run.
#![no_main]

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::kernel_image(data));
