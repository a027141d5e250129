//! `bootkmod info` judged by kmod on every module of the installed kernel, in each form a
//! module file can take: uncompressed, xz, zstd and gzip (copies made at test time with
//! the real compressors, fast settings).
//!
//! For every module and every field of [`FIELDS`], `bootkmod info -F F` must print exactly
//! what `modinfo -F F` prints, and `bootkmod info --modversions` exactly what
//! `modprobe --dump-modversions` prints. Both tools print values in argument order, so one
//! run over all files is compared as a whole; a difference is bisected to the first
//! module that differs.
//!
//! What kmod reads for each form:
//! - uncompressed, xz, zstd: `modprobe --dump-modversions` reads the same file bootkmod
//!   reads. `modinfo` does too for `vermagic` and `sig_key` (proving kmod decodes the
//!   copy, signature trailer included); for the other fields the oracle is `modinfo` on
//!   the uncompressed original, run once and shared by all forms. Running all fifteen
//!   `modinfo` passes on every compressed copy would cost about two CPU minutes of xz
//!   decoding to re-establish what the direct checks already show: that kmod decodes the
//!   copy to the original bytes.
//! - gzip: Debian's kmod is built without zlib (`modinfo --version` says `-ZLIB`), so its
//!   tools cannot read `.ko.gz`. The oracle for a gzip copy is kmod on the uncompressed
//!   file it was made from (the same bytes once decompressed).

mod common;

use common::kmod::{self, Form, FIELDS};
use common::{installed_kernel, kernel_modules, missing, tool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// `modinfo -F F` over every uncompressed module, per field: computed once, shared by the
/// four form tests (they run in parallel threads of one process).
fn modinfo_of_originals(field: &str, originals: &[PathBuf]) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(out) = cache.lock().expect("cache").get(field) {
        return out.clone();
    }
    let out = kmod::modinfo_field(field, originals).expect("modinfo");
    cache.lock().expect("cache").insert(field.to_string(), out.clone());
    out
}

/// Fields checked with `modinfo` reading the compressed copy itself.
const DIRECT_FIELDS: &[&str] = &["vermagic", "sig_key"];

fn compare_form(form: Form) {
    let Some(release) = installed_kernel() else { return };
    let originals = kernel_modules(&release);
    if originals.is_empty() {
        missing(&format!("modules of kernel {release}"));
        return;
    }
    if tool("modinfo").is_none() || tool("modprobe").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(ours) = kmod::compressed_copies(&originals, form, tmp.path()) else { return };
    let kmod_reads_it = form != Form::Gzip;

    for field in FIELDS {
        let whole = modinfo_of_originals(field, &originals);
        kmod::assert_same_output(
            &format!("{form:?} -F {field}"),
            &ours,
            &originals,
            &|files| kmod::bootkmod_field(field, files),
            &|files| {
                if files.len() == originals.len() {
                    whole.clone()
                } else {
                    kmod::modinfo_field(field, files).expect("modinfo")
                }
            },
        );
        if kmod_reads_it && form != Form::Plain && DIRECT_FIELDS.contains(field) {
            kmod::assert_same_output(
                &format!("{form:?} -F {field}, modinfo reading the {form:?} copy"),
                &ours,
                &ours,
                &|files| kmod::bootkmod_field(field, files),
                &|files| kmod::modinfo_field(field, files).expect("modinfo"),
            );
        }
    }
    let theirs: &[PathBuf] = if kmod_reads_it { &ours } else { &originals };
    kmod::assert_same_output(
        &format!("{form:?} --modversions"),
        &ours,
        theirs,
        &kmod::bootkmod_modversions,
        &|files| kmod::modprobe_modversions(files).expect("modprobe"),
    );
    println!(
        "compared {} modules of {release} ({form:?}) on {} modinfo fields and modversions",
        ours.len(),
        FIELDS.len()
    );
}

#[test]
fn oracle_every_module_uncompressed() {
    compare_form(Form::Plain);
}

#[test]
fn oracle_every_module_xz() {
    compare_form(Form::Xz);
}

#[test]
fn oracle_every_module_zstd() {
    compare_form(Form::Zstd);
}

#[test]
fn oracle_every_module_gzip() {
    compare_form(Form::Gzip);
}

/// The premise of running modprobe once per file: with several files it dumps only the
/// first (the rest are module parameters to it), while `bootkmod info --modversions`
/// dumps each file in turn.
#[test]
fn oracle_modprobe_dumps_only_its_first_file() {
    let Some(release) = installed_kernel() else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let files: Vec<PathBuf> = kernel_modules(&release).into_iter().take(3).collect();
    assert_eq!(files.len(), 3);
    let together = kmod::stdout_of(
        std::process::Command::new(&modprobe).arg("--dump-modversions").args(&files),
    );
    let first = kmod::modprobe_modversions(&files[..1]).expect("modprobe");
    let each = kmod::modprobe_modversions(&files).expect("modprobe");
    assert!(!first.is_empty() && each.len() > first.len());
    assert_eq!(together, first, "modprobe now dumps several files: run it once for all");
    assert_eq!(kmod::bootkmod_modversions(&files), each);
}
