//! Module signing keys and the kernel's own `scripts/sign-file` (the oracle of
//! `bootkmod sign`; check_rules signs its fixtures with it), and sbsigntool's `sbsign`
//! for signed Unified Kernel Images.

use super::{missing, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A key pair made by openssl at test time.
pub struct Key {
    /// The private key, PEM.
    pub key: PathBuf,
    /// The self-signed certificate, PEM.
    pub cert_pem: PathBuf,
}

/// `openssl req -x509 -newkey rsa:BITS`: a PKCS#8 PEM key and a PEM certificate whose
/// subject (and issuer) CN is `"{name} signing key"`.
pub fn make_key_bits(dir: &Path, name: &str, bits: u32) -> Option<Key> {
    let openssl = tool("openssl")?;
    let key = dir.join(format!("{name}.key"));
    let cert_pem = dir.join(format!("{name}.pem"));
    let out = run(Command::new(openssl)
        .args(["req", "-new", "-x509", "-newkey"])
        .arg(format!("rsa:{bits}"))
        .args(["-nodes", "-days", "2", "-batch", "-subj"])
        .arg(format!("/CN={name} signing key"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert_pem));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(Key { key, cert_pem })
}

pub fn make_key(dir: &Path, name: &str) -> Option<Key> {
    make_key_bits(dir, name, 2048)
}

/// The installed kernel's `scripts/sign-file` (linux-kbuild, through linux-headers).
pub fn sign_file() -> Option<PathBuf> {
    let kver = super::installed_kernel()?;
    let p = Path::new("/lib/modules").join(kver).join("build/scripts/sign-file");
    if p.is_file() {
        return Some(p);
    }
    missing("the kernel's scripts/sign-file (linux-headers)")?;
    unreachable!()
}

/// `sign-file HASH KEY CERT FILE` on a copy of `module` written to `dir/name`; the
/// signed bytes.
pub fn sign_with(
    module: &[u8],
    hash: &str,
    key: &Path,
    cert: &Path,
    dir: &Path,
    name: &str,
) -> Option<Vec<u8>> {
    let path = dir.join(name);
    std::fs::write(&path, module).unwrap();
    let out = run(Command::new(sign_file()?).arg(hash).arg(key).arg(cert).arg(&path));
    assert!(out.status.success(), "sign-file: {}", String::from_utf8_lossy(&out.stderr));
    Some(std::fs::read(&path).unwrap())
}

/// sha256 with a [`Key`].
pub fn sign(module: &[u8], key: &Key, dir: &Path, name: &str) -> Option<Vec<u8>> {
    sign_with(module, "sha256", &key.key, &key.cert_pem, dir, name)
}

/// `sbsign` (sbsigntool) `unsigned` into `out` with `key`, as a distribution signs a UKI
/// for Secure Boot.
pub fn sbsign(unsigned: &Path, out: &Path, key: &Key) -> Option<()> {
    let sbsign = tool("sbsign")?;
    let o = run(Command::new(sbsign)
        .arg("--key")
        .arg(&key.key)
        .arg("--cert")
        .arg(&key.cert_pem)
        .arg("--output")
        .arg(out)
        .arg(unsigned));
    assert!(o.status.success(), "sbsign: {}", String::from_utf8_lossy(&o.stderr));
    Some(())
}
