//! `bootkmod info` judged by kmod on generated modules no real kernel here ships: signed
//! with a key made for the test (so every `sig_*` field is checked against values we
//! know), and 32-bit and big-endian targets (kmod reads foreign-endian ELF).
//!
//! Signing follows the kernel's `scripts/sign-file`: a detached CMS signature in DER,
//! without signed attributes or certificates, appended with the 12-byte trailer and the
//! marker string ([`signature::append_pkcs7`]).

mod common;

use bootkmod::formats::signature;
use bootkmod::samples::{SampleArch, SampleModule};
use common::kmod::{self, FIELDS};
use common::{run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

const SERIAL: &str = "0x1BADC0DE2BADF00D";
const SIGNER: &str = "bootkmod test signing key";

/// A throw-away signing key and self-signed certificate in `dir`.
fn make_key(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let openssl = tool("openssl")?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = run(Command::new(openssl)
        .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/O=bootkmod tests/CN={SIGNER}"), "-set_serial", SERIAL])
        .args(["-addext", "subjectKeyIdentifier=hash", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    Some((key, cert))
}

/// `module` signed the way sign-file does it; `keyid` names the signer by subject key id
/// instead of issuer and serial.
fn sign(module: &Path, key: &Path, cert: &Path, hash: &str, keyid: bool) -> Vec<u8> {
    let sig = module.with_extension("p7s");
    let mut cmd = Command::new(tool("openssl").expect("openssl"));
    cmd.args(["cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap", "-outform", "DER"])
        .args(["-md", hash, "-signer"])
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .arg("-in")
        .arg(module)
        .arg("-out")
        .arg(&sig);
    if keyid {
        cmd.arg("-keyid");
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "openssl cms: {}", String::from_utf8_lossy(&out.stderr));
    let elf = std::fs::read(module).unwrap();
    signature::append_pkcs7(&elf, &std::fs::read(&sig).unwrap())
}

fn sample(name: &str, arch: SampleArch) -> SampleModule {
    let mut s = SampleModule::new(name, "6.1.0-56-amd64 SMP preempt mod_unload modversions ");
    s.arch = arch;
    s.import("module_layout", 0x9060323f)
        .import("_printk", 0x92997ed8)
        .import("a_symbol_with_a_long_name_that_still_fits_in_56_bytes", 0xdeadbeef)
        .export("sample_fn", 0x1234, false, None)
        .set("softdep", "pre: crc32c")
        .set("import_ns", "SCSI_DEMO")
        .set("srcversion", "0123456789ABCDEF0123456");
    s.modinfo.push("alias", "pci:v00001000d00000001sv*sd*bc*sc*i*");
    s.modinfo.push("alias", "scsi:t-0x00");
    s.modinfo.push("firmware", "sample/fw-1.bin");
    s
}

fn compare_all_fields(files: &[PathBuf]) {
    for field in FIELDS {
        let ours = kmod::bootkmod_field(field, files);
        let theirs = kmod::modinfo_field(field, files).expect("modinfo");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "-F {field} on {files:?}"
        );
    }
}

#[test]
fn signed_samples_match_modinfo() {
    if tool("modinfo").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((key, cert)) = make_key(dir.path()) else { return };
    let mut files = Vec::new();
    for (hash, keyid) in [("sha256", false), ("sha512", false), ("sha256", true)] {
        let name = format!("signed_{hash}_{}", if keyid { "skid" } else { "serial" });
        let plain = dir.path().join(format!("{name}.unsigned"));
        std::fs::write(&plain, sample(&name, SampleArch::X86_64).to_elf().unwrap()).unwrap();
        let path = dir.path().join(format!("{name}.ko"));
        std::fs::write(&path, sign(&plain, &key, &cert, hash, keyid)).unwrap();
        files.push(path);
    }
    // Issuer-and-serial signatures (what sign-file writes by default) match kmod in
    // every field.
    compare_all_fields(&files[..2]);
    // A subject-key-id signature (`sign-file -k`), which the kernel accepts: kmod 30
    // parses signatures with OpenSSL's PKCS7 type, which cannot represent it, and prints
    // no signature fields at all. bootkmod reports it. Pinned so a kmod that learns to
    // read it shows up here.
    let skid = &files[2..];
    assert_eq!(kmod::modinfo_field("sig_id", skid).expect("modinfo"), b"");
    assert_eq!(kmod::bootkmod_field("sig_id", skid), b"PKCS#7\n");
    for field in FIELDS.iter().filter(|f| !f.starts_with("sig")) {
        assert_eq!(kmod::bootkmod_field(field, skid), kmod::modinfo_field(field, skid).unwrap());
    }

    // The values are the ones we put in, not just whatever both tools agree on.
    let field = |f: &str, i: usize| {
        String::from_utf8(kmod::bootkmod_field(f, &files[i..=i])).unwrap().trim_end().to_string()
    };
    assert_eq!(field("sig_id", 0), "PKCS#7");
    assert_eq!(field("signer", 0), SIGNER);
    assert_eq!(field("sig_key", 0), "1B:AD:C0:DE:2B:AD:F0:0D");
    assert_eq!(field("sig_hashalgo", 0), "sha256");
    assert_eq!(field("sig_hashalgo", 1), "sha512");
    // With -keyid the signer is named by subject key id: a 20-byte SHA-1.
    assert_eq!(field("sig_key", 2).split(':').count(), 20);
}

#[test]
fn foreign_class_and_endian_samples_match_kmod() {
    if tool("modinfo").is_none() || tool("modprobe").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for arch in SampleArch::ALL {
        let path = dir.path().join(format!("sample_{arch:?}.ko").to_lowercase());
        std::fs::write(&path, sample(&format!("s_{arch:?}"), arch).to_elf().unwrap()).unwrap();
        files.push(path);
    }
    compare_all_fields(&files);
    let ours = kmod::bootkmod_modversions(&files);
    let theirs = kmod::modprobe_modversions(&files).expect("modprobe");
    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    // Non-vacuous: three records per file, the 32-bit CRC words read in target order.
    assert_eq!(ours.iter().filter(|&&b| b == b'\n').count(), 3 * files.len());
    assert!(String::from_utf8_lossy(&ours).contains("0xdeadbeef\ta_symbol_with_a_long_name"));
}
