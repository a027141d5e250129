//! What each fuzz target feeds its bytes to. One owner for both users:
//!
//! - the cargo-fuzz binaries in `fuzz_targets/` (nightly, libFuzzer), one per function;
//! - `tests/fuzz_corpora.rs` (stable, part of `cargo test`), which replays every file of
//!   `fuzz/corpus/<target>/` through the same function, so a parser change that makes a
//!   corpus input panic fails CI.
//!
//! Every function takes any bytes and must return (an `Err` inside is fine): a panic, an
//! abort, a hang or runaway memory is the bug a fuzzer reports.

use bootkmod::engines::initramfs;
use bootkmod::formats::{compression, der, kernel_image, kmod_index, ksymtab, signature, symvers};
use bootkmod::model::dud::{Medium, MediumKind, Repo, RpmOnMedium};
use bootkmod::model::module::{Module, ReadOptions};
use std::path::PathBuf;

/// A target's body: bytes in, nothing out; a panic is the finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/corpus/`) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("module_from_bytes", module_from_bytes),
    ("initramfs_walk", initramfs_walk),
    ("kmod_index", kmod_index),
    ("symvers", symvers),
    ("signature_der", signature_der),
    ("dud_iso", dud_iso),
    ("rpm_package", rpm_package),
    ("ledger_json", ledger_json),
    ("kernel_image", kernel_image),
];

/// A module file, compressed or not: decode, signature, ELF, modinfo, modversions.
pub fn module_from_bytes(data: &[u8]) {
    let _ = Module::from_bytes(data, ReadOptions::default());
}

/// An initramfs image: the segment walker with every codec (detected by magic), the
/// merged view the kernel would build, and the kernel trees found in it.
pub fn initramfs_walk(data: &[u8]) {
    if let Ok((view, _segments)) = initramfs::read_view(std::io::Cursor::new(data), "fuzz") {
        let _ = initramfs::kernel_versions(&view);
        for entry in view.entries() {
            let _ = entry.display_path();
        }
    }
}

/// A kmod `.bin` index: header, every key and value, one exact lookup and one wildcard
/// search (the two ways modprobe reads it).
pub fn kmod_index(data: &[u8]) {
    let Ok(index) = kmod_index::Index::parse(data) else { return };
    let _ = index.entries();
    let _ = index.lookup("megaraid_sas");
    let _ = index.search_wild("pci:v00001000d0000005Dsv*");
}

/// `Module.symvers`, or `symvers.gz` (any codec, detected by magic) as a kernel ships it.
pub fn symvers(data: &[u8]) {
    match compression::Compression::detect(data) {
        compression::Compression::None => {
            let _ = symvers::parse(data);
        }
        _ => {
            if let Ok(text) = compression::decode_all(data, 1 << 24) {
                let _ = symvers::parse(&text);
            }
        }
    }
}

/// The appended module signature (trailer and PKCS#7 signer info) and an X.509 signing
/// certificate as DER or PEM: both go through the one DER reader.
pub fn signature_der(data: &[u8]) {
    let _ = signature::split(data);
    let _ = der::cert_identity(data);
    let _ = der::signer_cert(data);
}

/// A driver disk ISO9660 image: mounted in memory, walked, and every package on it
/// judged as Anaconda would (which reads each RPM).
pub fn dud_iso(data: &[u8]) {
    if let Ok(medium) = Medium::from_iso_bytes(&PathBuf::from("fuzz.iso"), data.to_vec(), "x86_64")
    {
        let _ = bootkmod::engines::dud::inspect(&medium, "6.1.0-57-amd64", "x86_64", Some("39"));
    }
}

/// A bare RPM as a driver disk: header, Provides, payload listing, as `dud check` reads it.
pub fn rpm_package(data: &[u8]) {
    let medium = Medium {
        source: PathBuf::from("fuzz.rpm"),
        kind: MediumKind::Rpm,
        repos: vec![Repo {
            dir: String::new(),
            arches: Vec::new(),
            packages: vec![RpmOnMedium { path: "fuzz.rpm".into(), bytes: data.to_vec() }],
        }],
        nested_isos: Vec::new(),
    };
    let _ = bootkmod::engines::dud::inspect(&medium, "6.1.0-57-amd64", "x86_64", Some("39"));
}

/// `var/lib/bootkmod/ledger.json`: a hand-edited or truncated ledger is an error.
pub fn ledger_json(data: &[u8]) {
    // What `model::ledger::load` does with the file's bytes (its version check aside).
    let _ = serde_json::from_slice::<bootkmod::model::ledger::Ledger>(data);
}

/// A kernel boot image (`/boot/vmlinuz-KVER`): the bzImage setup header, the payload's
/// codec, and the export table of the vmlinux inside (or of the bytes as vmlinux).
pub fn kernel_image(data: &[u8]) {
    if let Ok(vmlinux) = kernel_image::vmlinux(data) {
        let _ = ksymtab::read(&vmlinux);
    }
}
