//! The appended module signature.
//!
//! Layout at the end of a signed module (kernel `include/linux/module_signature.h`):
//! `[ELF][signature data][struct module_signature, 12 bytes]["~Module signature appended~\n"]`.
//! The 12-byte trailer is `algo, hash, id_type, signer_len, key_id_len: u8; pad[3];
//! sig_len: be32`. For `id_type == PKCS#7` (every modern kernel) the first five bytes are
//! zero and the signer, key id and hash algorithm are inside the PKCS#7 `SignedData`,
//! read with the bounds-checked DER walker in [`super::der`].
//!
//! The writing side ([`pkcs7_signed_data`], [`append_pkcs7`]) builds what the kernel's
//! `scripts/sign-file` appends: a CMS `SignedData`, detached (no content), no
//! certificates, one signer named by issuer and serial number, no signed attributes (so
//! the RSA signature is over the module's own digest), digest algorithm without
//! parameters, `rsaEncryption` with NULL parameters — the same bytes for the same key.

/// How key ids are shown; owned by [`super::der`], which certificates need it for too.
pub use super::der::key_id_hex;
use super::der::{
    common_name, der_children, der_next, expect, serial_bytes, INTEGER, OID, SEQUENCE, SET,
};
use anyhow::{bail, Context, Result};

/// The marker the kernel looks for at the very end of the file.
pub const MAGIC: &[u8] = b"~Module signature appended~\n";
const TRAILER: usize = 12;

/// What kind of identifier the signature carries (`id_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum IdType {
    #[serde(rename = "PGP")]
    Pgp,
    #[serde(rename = "X509")]
    X509,
    #[serde(rename = "PKCS#7")]
    Pkcs7,
}

impl IdType {
    pub fn name(self) -> &'static str {
        match self {
            IdType::Pgp => "PGP",
            IdType::X509 => "X509",
            IdType::Pkcs7 => "PKCS#7",
        }
    }
}

/// The facts of an appended signature, as `modinfo` reports them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signature {
    pub id_type: IdType,
    /// Hash algorithm name (`sha256`, ...), when known.
    pub hash: Option<String>,
    /// Signer name: the issuer's common name for PKCS#7.
    pub signer: Option<String>,
    /// Key identifier bytes: the certificate serial (or subject key id) for PKCS#7.
    #[serde(serialize_with = "serialize_key_id")]
    pub key_id: Vec<u8>,
    /// Length of the raw signature data.
    pub sig_len: usize,
}

fn serialize_key_id<S: serde::Serializer>(k: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key_id_hex(k))
}

/// Names of the kernel's `enum hash_algo` values used by the legacy (non-PKCS#7) layout.
const LEGACY_HASHES: &[&str] =
    &["md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3"];

/// Split a module file into (signed content, signature). `None` when unsigned.
pub fn split(file: &[u8]) -> Result<Option<(&[u8], Signature)>> {
    let Some(body) = file.strip_suffix(MAGIC) else {
        return Ok(None);
    };
    if body.len() < TRAILER {
        bail!("signature marker present but the {TRAILER}-byte signature trailer is truncated");
    }
    let (rest, trailer) = body.split_at(body.len() - TRAILER);
    let [_algo, hash, id_type, signer_len, key_id_len, _, _, _, l0, l1, l2, l3] =
        <[u8; TRAILER]>::try_from(trailer).expect("split_at gave 12 bytes");
    let sig_len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    let total = sig_len + signer_len as usize + key_id_len as usize;
    if total > rest.len() {
        bail!("signature claims {total} bytes but only {} precede its trailer", rest.len());
    }
    let (content, data) = rest.split_at(rest.len() - total);
    let signature = match id_type {
        2 => parse_pkcs7(data).context("malformed PKCS#7 module signature")?,
        0 | 1 => {
            let (signer, rest) = data.split_at(signer_len as usize);
            let (key_id, _sig) = rest.split_at(key_id_len as usize);
            Signature {
                id_type: if id_type == 0 { IdType::Pgp } else { IdType::X509 },
                hash: LEGACY_HASHES.get(hash as usize).map(|s| s.to_string()),
                signer: Some(String::from_utf8_lossy(signer).into_owned()),
                key_id: key_id.to_vec(),
                sig_len,
            }
        }
        other => bail!("unknown signature id_type {other}"),
    };
    Ok(Some((content, signature)))
}

/// The digests a module can be signed with (`sign-file`'s first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignHash {
    Sha256,
    Sha512,
}

impl SignHash {
    pub fn name(self) -> &'static str {
        match self {
            SignHash::Sha256 => "sha256",
            SignHash::Sha512 => "sha512",
        }
    }

    /// The DER body of the hash's OID.
    fn oid(self) -> &'static [u8] {
        let name = self.name();
        HASH_OIDS.iter().find(|(_, n)| *n == name).map(|(o, _)| *o).expect("listed hash")
    }
}

/// id-signedData (1.2.840.113549.1.7.2) and id-data (1.2.840.113549.1.7.1).
const SIGNED_DATA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const DATA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OCTET_STRING: u8 = 0x04;
const NULL: &[u8] = &[0x05, 0x00];

/// The PKCS#7 `ContentInfo { SignedData }` of a module signature: `issuer` and `serial`
/// are the encoded Name and INTEGER of the signer's certificate
/// ([`super::der::SignerCert`]), `rsa_signature` the PKCS#1 v1.5 signature of the
/// module's `hash` digest.
pub fn pkcs7_signed_data(
    hash: SignHash,
    issuer: &[u8],
    serial: &[u8],
    rsa_signature: &[u8],
) -> Vec<u8> {
    use super::der::{encode, encode_seq};
    let digest_alg = encode_seq(SEQUENCE, &[&encode(OID, hash.oid())]);
    let rsa_alg = encode_seq(SEQUENCE, &[&encode(OID, super::der::RSA_ENCRYPTION), NULL]);
    let version = encode(INTEGER, &[1]);
    let signer_info = encode_seq(
        SEQUENCE,
        &[
            &version,
            &encode_seq(SEQUENCE, &[issuer, serial]),
            &digest_alg,
            &rsa_alg,
            &encode(OCTET_STRING, rsa_signature),
        ],
    );
    let signed_data = encode_seq(
        SEQUENCE,
        &[
            &version,
            &encode(SET, &digest_alg),
            &encode_seq(SEQUENCE, &[&encode(OID, DATA_OID)]),
            &encode(SET, &signer_info),
        ],
    );
    encode_seq(SEQUENCE, &[&encode(OID, SIGNED_DATA_OID), &encode(0xa0, &signed_data)])
}

/// Build the bytes to append to a module for a PKCS#7 (DER) signature blob.
pub fn append_pkcs7(module: &[u8], pkcs7_der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(module.len() + pkcs7_der.len() + TRAILER + MAGIC.len());
    out.extend_from_slice(module);
    out.extend_from_slice(pkcs7_der);
    out.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&(pkcs7_der.len() as u32).to_be_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// DER bodies of the hash algorithm OIDs a module signature can name.
const HASH_OIDS: &[(&[u8], &str)] = &[
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x04], "md4"),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05], "md5"),
    (&[0x2b, 0x0e, 0x03, 0x02, 0x1a], "sha1"),
    (&[0x2b, 0x24, 0x03, 0x02, 0x01], "rmd160"),
    (&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01], "sha256"),
    (&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02], "sha384"),
    (&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03], "sha512"),
    (&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04], "sha224"),
    (&[0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x11], "sm3"),
];

/// Extract signer, key id and hash from a PKCS#7 `ContentInfo { signedData }`.
fn parse_pkcs7(data: &[u8]) -> Result<Signature> {
    let (content_info, _) = der_next(data)?;
    let ci = der_children(expect(content_info, SEQUENCE, "ContentInfo")?.body)?;
    let [_oid, explicit, ..] = ci.as_slice() else { bail!("ContentInfo has no content") };
    let (signed_data, _) = der_next(explicit.body)?;
    let sd = der_children(expect(signed_data, SEQUENCE, "SignedData")?.body)?;
    // signerInfos is the last SET of SignedData.
    let Some(signer_infos) = sd.iter().rev().find(|e| e.tag == SET) else {
        bail!("SignedData has no signerInfos");
    };
    let (signer_info, _) = der_next(signer_infos.body).context("no SignerInfo")?;
    let si = der_children(expect(signer_info, SEQUENCE, "SignerInfo")?.body)?;
    let [_version, sid, digest_alg, ..] = si.as_slice() else { bail!("short SignerInfo") };

    let (signer, key_id) = match sid.tag {
        SEQUENCE => {
            // IssuerAndSerialNumber { issuer Name, serialNumber INTEGER }
            let parts = der_children(sid.body)?;
            let [issuer, serial, ..] = parts.as_slice() else { bail!("short IssuerAndSerial") };
            let serial = expect(*serial, INTEGER, "serialNumber")?.body;
            (common_name(*issuer)?, serial_bytes(serial))
        }
        // [0] SubjectKeyIdentifier
        0x80 | 0xa0 => (None, sid.body.to_vec()),
        other => bail!("unknown SignerIdentifier tag {other:#04x}"),
    };
    let alg = der_children(expect(*digest_alg, SEQUENCE, "digestAlgorithm")?.body)?;
    let hash = alg
        .first()
        .filter(|e| e.tag == OID)
        .and_then(|oid| HASH_OIDS.iter().find(|(o, _)| *o == oid.body))
        .map(|(_, n)| n.to_string());
    let sig_len = data.len();
    Ok(Signature { id_type: IdType::Pkcs7, hash, signer, key_id, sig_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_is_none() {
        assert!(split(b"\x7fELF...").unwrap().is_none());
    }

    #[test]
    fn truncated_trailer_is_an_error() {
        let mut f = b"xx".to_vec();
        f.extend_from_slice(MAGIC);
        assert!(split(&f).is_err());
    }

    #[test]
    fn lying_length_is_an_error() {
        let mut f = vec![0u8; 4];
        f.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]);
        f.extend_from_slice(MAGIC);
        assert!(split(&f).is_err());
    }

    #[test]
    fn legacy_layout() {
        let mut f = b"ELF".to_vec();
        f.extend_from_slice(b"Signer");
        f.extend_from_slice(&[0xab, 0xcd]);
        f.extend_from_slice(&[9, 9, 9]);
        f.extend_from_slice(&[0, 4, 1, 6, 2, 0, 0, 0, 0, 0, 0, 3]);
        f.extend_from_slice(MAGIC);
        let (content, sig) = split(&f).unwrap().unwrap();
        assert_eq!(content, b"ELF");
        assert_eq!(sig.id_type, IdType::X509);
        assert_eq!(sig.hash.as_deref(), Some("sha256"));
        assert_eq!(sig.signer.as_deref(), Some("Signer"));
        assert_eq!(key_id_hex(&sig.key_id), "AB:CD");
    }

    #[test]
    fn built_signature_reads_back() {
        // Issuer CN "K", serial 0x00ff01 (DER keeps the sign byte; the key id drops it).
        let issuer =
            [0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'K'];
        let serial = [0x02, 0x03, 0x00, 0xff, 0x01];
        for hash in [SignHash::Sha256, SignHash::Sha512] {
            let blob = pkcs7_signed_data(hash, &issuer, &serial, &[7; 300]);
            let f = append_pkcs7(b"ELF", &blob);
            let (content, sig) = split(&f).unwrap().unwrap();
            assert_eq!(content, b"ELF");
            assert_eq!(sig.id_type, IdType::Pkcs7);
            assert_eq!(sig.hash.as_deref(), Some(hash.name()));
            assert_eq!(sig.signer.as_deref(), Some("K"));
            assert_eq!(sig.key_id, [0xff, 0x01]);
            assert_eq!(sig.sig_len, blob.len());
        }
    }

    #[test]
    fn garbage_pkcs7_is_an_error_not_a_panic() {
        for blob in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x02\x06\x00"] {
            let f = append_pkcs7(b"ELF", blob);
            let _ = split(&f); // must not panic
        }
        assert!(split(&append_pkcs7(b"ELF", b"\x30\x03\x02\x01\x00")).is_err());
    }
}
