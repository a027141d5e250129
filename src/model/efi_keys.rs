//! The keys a target's firmware and shim trust, and its Secure Boot state, read from
//! efivarfs under the root (`/sys/firmware/efi/efivars`):
//!
//! - `SecureBoot-8be4df61-…`: one byte, 1 when the firmware boots in Secure Boot mode;
//! - `MokSBStateRT-605dab50-…`: one byte, 1 when the user told shim to stop validating
//!   (`mokutil --disable-validation`): the kernel then does not lock down;
//! - `MokListRT-605dab50-…` (and `MokListRT1`, `MokListRT2`… when shim splits a long
//!   list): the Machine Owner Keys shim mirrors for the kernel, which puts them on its
//!   `.platform`/`.machine` keyring and trusts them for modules (Debian, RHEL, Ubuntu
//!   kernels);
//! - `db-d719b2cb-…`: the firmware's allowed signature database; its X.509 keys are
//!   trusted for modules too by kernels built with `CONFIG_INTEGRITY_PLATFORM_KEYRING`
//!   and `CONFIG_LOAD_UEFI_KEYS` (distribution kernels).
//!
//! Each variable is a 4-byte attribute word then `EFI_SIGNATURE_LIST`s
//! (`formats::efi_siglist`); X.509 entries become [`EfiKey`]s, other entries (hashes)
//! are not keys and are left out. A variable that cannot be decoded is a warning, not an
//! error: the other variables still say what they hold.
//!
//! The kernel's builtin keys (`.builtin_trusted_keys`) are not in efivarfs; bootkmod
//! learns its build key from the signature of an in-tree module (`model::kernel`).

use crate::formats::der::{self, CertIdentity};
use crate::formats::efi_siglist::{self, EFI_GLOBAL_VARIABLE, IMAGE_SECURITY_DATABASE, SHIM_LOCK};
use crate::model::root::Root;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Target-absolute directory of efivarfs.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Where tools that sign modules locally keep the certificate to enroll, in the order
/// bootkmod looks: DKMS 3 (`mok.pub`, DER), Debian/Ubuntu's shim-signed, Fedora's
/// akmods.
pub const LOCAL_SIGNING_CERTS: &[&str] = &[
    "/var/lib/dkms/mok.pub",
    "/var/lib/shim-signed/mok/MOK.der",
    "/etc/pki/akmods/certs/public_key.der",
];

/// One X.509 key from an EFI signature database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EfiKey {
    /// The variable it came from (`MokListRT`, `db`).
    pub variable: String,
    /// Who enrolled it (the entry's owner GUID).
    pub owner: String,
    #[serde(flatten)]
    pub identity: CertIdentity,
}

/// A certificate a local module-signing tool keeps, to be enrolled with mokutil.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalCert {
    /// Target-absolute.
    pub path: PathBuf,
    #[serde(flatten)]
    pub identity: CertIdentity,
}

impl EfiKeys {
    /// The local certificate of the key `identity` names, if the target keeps one.
    pub fn local_cert(&self, issuer: Option<&str>, serial: &[u8]) -> Option<&LocalCert> {
        self.local_certs.iter().find(|c| {
            c.identity.serial == serial
                && (issuer.is_none() || c.identity.issuer.as_deref() == issuer)
        })
    }
}

/// What efivarfs under the root says.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EfiKeys {
    /// `SecureBoot`: `None` when the variable is absent (no EFI, or efivarfs not there).
    pub secure_boot: Option<bool>,
    /// `MokSBStateRT` is 1: shim does not validate, the kernel does not lock down.
    pub shim_validation_disabled: bool,
    pub keys: Vec<EfiKey>,
    /// Local signing certificates found on the target (DKMS, shim-signed, akmods).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_certs: Vec<LocalCert>,
    /// Variables that were present but could not be decoded, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn variable(name: &str, guid: &str) -> PathBuf {
    Path::new(EFIVARS).join(format!("{name}-{guid}"))
}

/// Bytes of a variable's file, `None` when absent.
fn read_var(root: &Root, name: &str, guid: &str) -> Result<Option<Vec<u8>>> {
    let host = root.host(variable(name, guid))?;
    match std::fs::read(&host) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", host.display())),
    }
}

/// A one-byte boolean variable's value (`None`: absent or empty).
fn flag(root: &Root, name: &str, guid: &str) -> Result<Option<bool>> {
    let Some(file) = read_var(root, name, guid)? else { return Ok(None) };
    let (_, value) = efi_siglist::efivar_value(&file)
        .with_context(|| format!("{}", variable(name, guid).display()))?;
    Ok(value.first().map(|b| *b == 1))
}

/// X.509 keys of one signature database value, named `variable`.
fn keys_of(value: &[u8], variable: &str) -> Result<Vec<EfiKey>> {
    let mut out = Vec::new();
    for list in efi_siglist::parse(value)?.iter().filter(|l| l.is_x509()) {
        for (i, s) in list.signatures.iter().enumerate() {
            let identity = der::cert_identity(&s.data)
                .with_context(|| format!("{variable}: X.509 entry {} is no certificate", i + 1))?;
            out.push(EfiKey {
                variable: variable.to_string(),
                owner: s.owner.to_string(),
                identity,
            });
        }
    }
    Ok(out)
}

/// Read Secure Boot state and trusted keys from efivarfs under `root`. See the module
/// overview. A variable that cannot be read or decoded is a warning; the error is only
/// for a root whose efivarfs path cannot be resolved inside it.
pub fn read(root: &Root) -> Result<EfiKeys> {
    let mut out = EfiKeys::default();
    match flag(root, "SecureBoot", EFI_GLOBAL_VARIABLE) {
        Ok(v) => out.secure_boot = v,
        Err(e) => out.warnings.push(format!("{e:#}")),
    }
    match flag(root, "MokSBStateRT", SHIM_LOCK) {
        Ok(v) => out.shim_validation_disabled = v == Some(true),
        Err(e) => out.warnings.push(format!("{e:#}")),
    }
    // shim mirrors a list too large for one variable as MokListRT, MokListRT1, ...,
    // numbered without gaps.
    let mut present = Vec::new();
    for i in 0..64 {
        let name = if i == 0 { "MokListRT".to_string() } else { format!("MokListRT{i}") };
        match read_var(root, &name, SHIM_LOCK) {
            Ok(Some(file)) => present.push((name, SHIM_LOCK, file)),
            Ok(None) if i == 0 => continue,
            Ok(None) => break,
            Err(e) => out.warnings.push(format!("{e:#}")),
        }
    }
    match read_var(root, "db", IMAGE_SECURITY_DATABASE) {
        Ok(Some(file)) => present.push(("db".to_string(), IMAGE_SECURITY_DATABASE, file)),
        Ok(None) => {}
        Err(e) => out.warnings.push(format!("{e:#}")),
    }
    for (name, guid, file) in present {
        let decoded = efi_siglist::efivar_value(&file)
            .and_then(|(_, value)| keys_of(value, &name))
            .with_context(|| format!("{}", variable(&name, guid).display()));
        match decoded {
            Ok(keys) => out.keys.extend(keys),
            Err(e) => out.warnings.push(format!("{e:#}")),
        }
    }
    out.local_certs = local_certs(root);
    Ok(out)
}

/// The local signing certificates under `root` ([`LOCAL_SIGNING_CERTS`] that exist and
/// are certificates), each with its key: the file `mokutil --import` wants for a module
/// that key signed.
fn local_certs(root: &Root) -> Vec<LocalCert> {
    LOCAL_SIGNING_CERTS
        .iter()
        .filter_map(|p| {
            let identity = der::cert_identity(&root.read(p).ok()?).ok()?;
            Some(LocalCert { path: PathBuf::from(p), identity })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::efi_siglist::{Guid, Signature, SignatureList, CERT_X509};

    fn put(root: &Path, name: &str, guid: &str, value: &[u8]) {
        let dir = root.join(EFIVARS.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = 7u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(value);
        std::fs::write(dir.join(format!("{name}-{guid}")), bytes).unwrap();
    }

    #[test]
    fn absent_efivars_is_nothing_and_garbage_is_a_warning() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        assert_eq!(read(&root).unwrap(), EfiKeys::default());
        put(t.path(), "SecureBoot", EFI_GLOBAL_VARIABLE, &[1]);
        put(t.path(), "MokSBStateRT", SHIM_LOCK, &[1]);
        put(t.path(), "MokListRT", SHIM_LOCK, &[1, 2, 3]);
        let bad_cert = efi_siglist::write(&[SignatureList {
            kind: Guid::parse(CERT_X509).unwrap(),
            header: vec![],
            signatures: vec![Signature { owner: Guid([1; 16]), data: b"not DER".to_vec() }],
        }])
        .unwrap();
        put(t.path(), "db", IMAGE_SECURITY_DATABASE, &bad_cert);
        let keys = read(&root).unwrap();
        assert_eq!(keys.secure_boot, Some(true));
        assert!(keys.shim_validation_disabled);
        assert!(keys.keys.is_empty());
        assert_eq!(keys.warnings.len(), 2, "{:?}", keys.warnings);
        assert!(keys.warnings[0].contains("MokListRT-"), "{:?}", keys.warnings);
        assert!(keys.warnings[1].contains("no certificate"), "{:?}", keys.warnings);
    }
}
