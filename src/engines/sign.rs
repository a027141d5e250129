//! Module signing: what the kernel's `scripts/sign-file` appends, computed in Rust.
//!
//! Flow of [`sign_module`]: decode the file's codec (a `.ko.xz` is signed inside, as the
//! kernel's build signs before it compresses and the loader verifies after it
//! decompresses) → drop a signature already appended (the loader checks only the last
//! one; a stale one is dead weight) → digest the ELF → RSA PKCS#1 v1.5 over it with the
//! [`Signer`]'s key → `formats::signature::pkcs7_signed_data` with the certificate's
//! issuer and serial → append the trailer → encode with the same codec again
//! (`compression::encode_module`, the build's own xz settings).
//!
//! RSA keys only (what `sign-file` is used with on every distribution kernel); the key
//! is PKCS#8 or PKCS#1, PEM or DER, unencrypted (sign-file's `KBUILD_SIGN_PIN` has no
//! counterpart: decrypt the key first). The certificate must hold the key's public half,
//! or the signature would name a key that cannot verify it.

use crate::formats::compression::{self, Compression};
use crate::formats::der::{self, SignerCert};
use crate::formats::signature::{self, SignHash, Signature};
use anyhow::{bail, Context, Result};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256, Sha512};

/// A private key and the certificate that names it.
#[derive(Clone)]
pub struct Signer {
    key: RsaPrivateKey,
    pub cert: SignerCert,
    pub hash: SignHash,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("Signer")
            .field("cert", &self.cert.identity)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From the bytes of a key file and a certificate file (the same file may hold
    /// both, as the kernel's `signing_key.pem` does).
    pub fn new(key_file: &[u8], cert_file: &[u8], hash: SignHash) -> Result<Signer> {
        let key = private_key(key_file)?;
        let cert = der::signer_cert(cert_file).context("cannot read the certificate")?;
        let Some((n, e)) = &cert.rsa_public else {
            bail!("the certificate's key is not RSA: bootkmod signs with RSA keys only")
        };
        if *n != key.n().to_bytes_be() || *e != key.e().to_bytes_be() {
            bail!(
                "the certificate ({}) does not hold this private key's public half: the \
                 kernel could not verify the signature",
                describe(&cert)
            );
        }
        Ok(Signer { key, cert, hash })
    }

    /// `CN (serial)`, how messages name the key.
    pub fn describe(&self) -> String {
        describe(&self.cert)
    }

    /// The PKCS#7 blob for `content` (the exact bytes the kernel hashes).
    fn pkcs7(&self, content: &[u8]) -> Result<Vec<u8>> {
        let (digest, scheme) = match self.hash {
            SignHash::Sha256 => (Sha256::digest(content).to_vec(), Pkcs1v15Sign::new::<Sha256>()),
            SignHash::Sha512 => (Sha512::digest(content).to_vec(), Pkcs1v15Sign::new::<Sha512>()),
        };
        // Blinded (OsRng): PKCS#1 v1.5 is deterministic, so the bytes do not change.
        let sig = self
            .key
            .sign_with_rng(&mut rsa::rand_core::OsRng, scheme, &digest)
            .context("RSA signing failed")?;
        Ok(signature::pkcs7_signed_data(self.hash, &self.cert.issuer, &self.cert.serial, &sig))
    }
}

fn describe(cert: &SignerCert) -> String {
    format!(
        "{} (serial {})",
        cert.identity.issuer.as_deref().unwrap_or("no common name"),
        der::key_id_hex(&cert.identity.serial)
    )
}

fn private_key(file: &[u8]) -> Result<RsaPrivateKey> {
    if der::pem_block(file, "ENCRYPTED PRIVATE KEY")?.is_some()
        || String::from_utf8_lossy(file).contains("Proc-Type: 4,ENCRYPTED")
    {
        bail!("the private key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN)");
    }
    let key = if let Some(der) = der::pem_block(file, "PRIVATE KEY")? {
        RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| anyhow::anyhow!("{e}"))
    } else if let Some(der) = der::pem_block(file, "RSA PRIVATE KEY")? {
        RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| anyhow::anyhow!("{e}"))
    } else if file.trim_ascii_start().starts_with(b"-----") {
        bail!("no PRIVATE KEY or RSA PRIVATE KEY block in the key file")
    } else {
        RsaPrivateKey::from_pkcs8_der(file)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(file))
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    key.context("not an RSA private key (PKCS#8 or PKCS#1, PEM or DER)")
}

/// A module file signed.
#[derive(Debug)]
pub struct Signed {
    /// The new file, in the codec the input was in.
    pub bytes: Vec<u8>,
    pub compression: Compression,
    /// The signature the input carried, replaced.
    pub replaced: Option<Signature>,
}

/// Sign a module file's bytes. See the module overview.
pub fn sign_module(file: &[u8], signer: &Signer) -> Result<Signed> {
    let compression = Compression::detect(file);
    let decoded = compression::decode_all(file, compression::MAX_DECODED_MODULE)?;
    let (content, replaced) = match signature::split(&decoded)? {
        Some((content, sig)) => (content, Some(sig)),
        None => (&decoded[..], None),
    };
    if !content.starts_with(b"\x7fELF") {
        bail!("not an ELF module (after {} decoding)", compression.name());
    }
    let blob = signer.pkcs7(content)?;
    let signed = signature::append_pkcs7(content, &blob);
    let bytes = match compression {
        Compression::None => signed,
        kind => compression::encode_module(kind, &signed)?,
    };
    Ok(Signed { bytes, compression, replaced })
}
