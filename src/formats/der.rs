//! A minimal, bounds-checked DER reader, and the two things bootkmod reads with it:
//! the signer of a PKCS#7 module signature (in `formats::signature`, which builds on
//! this module, never the other way round) and the identity of an X.509 certificate
//! ([`CertIdentity`]: issuer common name and serial number), which is how a module
//! signature names its key. Certificates may be given as DER or PEM.
//!
//! Only definite-length, single-byte-tag DER is accepted: that is all module signatures
//! and signing certificates use. Every read is checked; hostile input is an error.
//!
//! The writing side is [`encode`] (one element, minimal length form, as DER demands),
//! what `signature::pkcs7_signed_data` builds a module signature with, and
//! [`signer_cert`], the parts of a certificate a signature copies (issuer, serial) and
//! the RSA public key it must match.

use anyhow::{bail, Context, Result};

/// One DER element: tag byte and contents.
#[derive(Clone, Copy)]
pub struct Der<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

/// Read one element from the front of `input`; returns it and the remainder.
pub fn der_next(input: &[u8]) -> Result<(Der<'_>, &[u8])> {
    let [tag, first, ..] = *input else { bail!("truncated DER element") };
    if tag & 0x1f == 0x1f {
        bail!("multi-byte DER tags are not used in module signatures or certificates");
    }
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || input.len() < 2 + n {
            bail!("bad DER length");
        }
        let len = input[2..2 + n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    let end = header.checked_add(len).filter(|&e| e <= input.len());
    let Some(end) = end else { bail!("DER element runs past its container") };
    Ok((Der { tag, body: &input[header..end] }, &input[end..]))
}

/// The children of a constructed element.
pub fn der_children(body: &[u8]) -> Result<Vec<Der<'_>>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (el, r) = der_next(rest)?;
        out.push(el);
        rest = r;
    }
    Ok(out)
}

pub fn expect<'a>(el: Der<'a>, tag: u8, what: &str) -> Result<Der<'a>> {
    if el.tag != tag {
        bail!("expected {what} (tag {tag:#04x}), found tag {:#04x}", el.tag);
    }
    Ok(el)
}

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const OID: u8 = 0x06;
pub const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT` (the version of a TBSCertificate).
const CONTEXT_0: u8 = 0xa0;

/// id-at-commonName (2.5.4.3).
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The first commonName in an X.501 Name.
pub fn common_name(name: Der<'_>) -> Result<Option<String>> {
    for rdn in der_children(expect(name, SEQUENCE, "Name")?.body)? {
        for atv in der_children(rdn.body)? {
            let parts = der_children(atv.body)?;
            if let [oid, value, ..] = parts.as_slice() {
                if oid.tag == OID && oid.body == CN_OID {
                    return Ok(Some(String::from_utf8_lossy(value.body).into_owned()));
                }
            }
        }
    }
    Ok(None)
}

/// An INTEGER's magnitude without DER's leading zero bytes: the form a module
/// signature's key id takes.
pub fn serial_bytes(integer: &[u8]) -> Vec<u8> {
    let first_nonzero = integer.iter().position(|&b| b != 0).unwrap_or(integer.len());
    integer[first_nonzero..].to_vec()
}

/// How a module signature names its key (PKCS#7 IssuerAndSerialNumber): the issuer's
/// common name and the certificate's serial number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertIdentity {
    pub issuer: Option<String>,
    /// Serial number bytes, leading zeros stripped.
    #[serde(serialize_with = "serialize_hex")]
    pub serial: Vec<u8>,
}

fn serialize_hex<S: serde::Serializer>(k: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key_id_hex(k))
}

/// `AA:BB:CC` upper-case hex, the form `modinfo` prints a signature's key id in (a
/// certificate serial or subject key identifier).
pub fn key_id_hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Read the identity of an X.509 certificate given as DER or PEM.
pub fn cert_identity(bytes: &[u8]) -> Result<CertIdentity> {
    let der = certificate_der(bytes)?;
    let fields = tbs_fields(&der)?;
    let [serial, _sig_alg, issuer, ..] = fields.as_slice() else { bail!("short TBSCertificate") };
    let serial = serial_bytes(expect(*serial, INTEGER, "serialNumber")?.body);
    Ok(CertIdentity { issuer: common_name(*issuer)?, serial })
}

/// Decode the first `CERTIFICATE` block of a PEM file.
pub fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>> {
    pem_block(pem, "CERTIFICATE")?.context("no complete PEM CERTIFICATE block")
}

/// Decode the first PEM block labelled exactly `label` (`-----BEGIN {label}-----`);
/// `None` when the text has none. A file may hold several blocks (the kernel's
/// `signing_key.pem` holds the private key and the certificate).
pub fn pem_block(pem: &[u8], label: &str) -> Result<Option<Vec<u8>>> {
    let text = String::from_utf8_lossy(pem);
    let begin = format!("-----BEGIN {label}-----");
    let mut inside = false;
    let mut b64 = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line == begin {
            inside = true;
        } else if line.starts_with("-----END") && inside {
            return base64_decode(&b64).map(Some);
        } else if inside {
            b64.push_str(line);
        }
    }
    if inside {
        bail!("PEM {label} block has no END line");
    }
    Ok(None)
}

/// One DER element: `tag`, the minimal length form, `body`.
pub fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

/// A constructed element from already encoded children.
pub fn encode_seq(tag: u8, children: &[&[u8]]) -> Vec<u8> {
    encode(tag, &children.concat())
}

/// What a module signature takes from its signer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerCert {
    /// The issuer `Name`, encoded (copied as is into IssuerAndSerialNumber).
    pub issuer: Vec<u8>,
    /// The serial number `INTEGER`, encoded.
    pub serial: Vec<u8>,
    pub identity: CertIdentity,
    /// The subject public key's RSA modulus and exponent (magnitudes, no leading
    /// zeros); `None` for a key of another kind.
    pub rsa_public: Option<(Vec<u8>, Vec<u8>)>,
}

/// rsaEncryption (1.2.840.113549.1.1.1).
pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const BIT_STRING: u8 = 0x03;

/// Read the signer's parts of an X.509 certificate given as DER or PEM.
pub fn signer_cert(bytes: &[u8]) -> Result<SignerCert> {
    let der = certificate_der(bytes)?;
    let fields = tbs_fields(&der)?;
    let [serial, _sig_alg, issuer, _validity, _subject, spki, ..] = fields.as_slice() else {
        bail!("short TBSCertificate")
    };
    let serial = expect(*serial, INTEGER, "serialNumber")?;
    let issuer = expect(*issuer, SEQUENCE, "issuer Name")?;
    let identity = CertIdentity { issuer: common_name(issuer)?, serial: serial_bytes(serial.body) };
    let spki = der_children(expect(*spki, SEQUENCE, "SubjectPublicKeyInfo")?.body)?;
    let [alg, key, ..] = spki.as_slice() else { bail!("short SubjectPublicKeyInfo") };
    let alg = der_children(expect(*alg, SEQUENCE, "AlgorithmIdentifier")?.body)?;
    let rsa_public = match alg.first() {
        Some(oid) if oid.tag == OID && oid.body == RSA_ENCRYPTION => {
            let bits = expect(*key, BIT_STRING, "subjectPublicKey")?.body;
            let Some((0, rsa_key)) = bits.split_first() else {
                bail!("subjectPublicKey has unused bits")
            };
            let (rsa_key, _) = der_next(rsa_key)?;
            let nums = der_children(expect(rsa_key, SEQUENCE, "RSAPublicKey")?.body)?;
            let [n, e, ..] = nums.as_slice() else { bail!("short RSAPublicKey") };
            Some((
                serial_bytes(expect(*n, INTEGER, "modulus")?.body),
                serial_bytes(expect(*e, INTEGER, "publicExponent")?.body),
            ))
        }
        _ => None,
    };
    Ok(SignerCert {
        issuer: encode(issuer.tag, issuer.body),
        serial: encode(serial.tag, serial.body),
        identity,
        rsa_public,
    })
}

/// The fields of a DER certificate's TBSCertificate, from the serial number on (the
/// optional `[0] EXPLICIT` version skipped).
fn tbs_fields(der: &[u8]) -> Result<Vec<Der<'_>>> {
    let (cert, _) = der_next(der).context("not a DER certificate")?;
    let parts = der_children(expect(cert, SEQUENCE, "Certificate")?.body)?;
    let Some(tbs) = parts.first() else { bail!("empty Certificate") };
    let mut fields = der_children(expect(*tbs, SEQUENCE, "TBSCertificate")?.body)?;
    if fields.first().is_some_and(|f| f.tag == CONTEXT_0) {
        fields.remove(0);
    }
    Ok(fields)
}

fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.trim_ascii_start().starts_with(b"-----") {
        pem_to_der(bytes)
    } else {
        Ok(bytes.to_vec())
    }
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            other => bail!("invalid base64 character {:?} in PEM", other as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of a tiny certificate skeleton: version, serial 0x00ff01, an algorithm id,
    /// issuer CN "Test CA".
    fn skeleton() -> Vec<u8> {
        let cn =
            [&[0x31, 0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x07][..], b"Test CA"]
                .concat();
        let issuer = [&[0x30, cn.len() as u8][..], &cn].concat();
        let tbs_body = [
            &[0xa0, 0x03, 0x02, 0x01, 0x02][..],
            &[0x02, 0x03, 0x00, 0xff, 0x01],
            &[0x30, 0x02, 0x06, 0x00],
            &issuer,
        ]
        .concat();
        let tbs = [&[0x30, tbs_body.len() as u8][..], &tbs_body].concat();
        [&[0x30, tbs.len() as u8][..], &tbs].concat()
    }

    #[test]
    fn reads_issuer_and_serial_from_der_and_pem() {
        let der = skeleton();
        let id = cert_identity(&der).unwrap();
        assert_eq!(id.issuer.as_deref(), Some("Test CA"));
        assert_eq!(id.serial, [0xff, 0x01]);
        let b64 = encode_b64(&der);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert_eq!(cert_identity(pem.as_bytes()).unwrap(), id);
    }

    #[test]
    fn truncations_are_errors_not_panics() {
        let der = skeleton();
        for n in 0..der.len() {
            let _ = cert_identity(&der[..n]);
        }
        assert!(cert_identity(&der[..der.len() - 1]).is_err());
        assert!(cert_identity(b"-----BEGIN CERTIFICATE-----\n!!\n").is_err());
    }

    #[test]
    fn encode_uses_the_minimal_length_form_and_reads_back() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000] {
            let body = vec![0x5a; len];
            let el = encode(OCTET_STRING_FOR_TEST, &body);
            let header = match len {
                0..=0x7f => 2,
                0x80..=0xff => 3,
                0x100..=0xffff => 4,
                _ => 5,
            };
            assert_eq!(el.len(), header + len, "length {len}");
            let (back, rest) = der_next(&el).unwrap();
            assert!(rest.is_empty());
            assert_eq!((back.tag, back.body), (OCTET_STRING_FOR_TEST, &body[..]));
        }
    }

    const OCTET_STRING_FOR_TEST: u8 = 0x04;

    #[test]
    fn pem_block_picks_its_label_among_several() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_block(pem, "PRIVATE KEY").unwrap(), Some(vec![0, 1, 2]));
        assert_eq!(pem_block(pem, "CERTIFICATE").unwrap(), Some(vec![3, 4, 5]));
        assert_eq!(pem_block(pem, "RSA PRIVATE KEY").unwrap(), None);
        assert!(pem_block(b"-----BEGIN PRIVATE KEY-----\nAAEC\n", "PRIVATE KEY").is_err());
    }

    #[test]
    fn signer_cert_of_a_skeleton_is_an_error_not_a_panic() {
        // The skeleton stops after the issuer: no validity, subject or key.
        let der = skeleton();
        assert!(signer_cert(&der).is_err());
        for n in 0..der.len() {
            let _ = signer_cert(&der[..n]);
        }
    }

    fn encode_b64(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = c.iter().enumerate().fold(0u32, |a, (i, &x)| a | u32::from(x) << (16 - 8 * i));
            for i in 0..=c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
            for _ in c.len()..3 {
                s.push('=');
            }
        }
        s
    }
}
