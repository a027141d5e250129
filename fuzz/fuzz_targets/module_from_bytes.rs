//! Fuzz `Module::from_bytes`: any bytes, compressed or not, must give Ok or Err, never a
//! panic (release builds abort on panic). Seed the corpus with real modules, e.g.
//! `mkdir -p corpus/module_from_bytes && cp /lib/modules/$(uname -r)/kernel/drivers/scsi/*.ko corpus/module_from_bytes/`.
#![no_main]

use bootkmod::model::module::{Module, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Module::from_bytes(data, ReadOptions::default());
});
