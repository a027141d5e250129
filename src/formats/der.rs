//! A minimal, bounds-checked DER reader, and the two things bootkmod reads with it:
//! the signer of a PKCS#7 module signature (in `formats::signature`, which builds on
//! this module, never the other way round) and the identity of an X.509 certificate
//! ([`CertIdentity`]: issuer common name and serial number), which is how a module
//! signature names its key. Certificates may be given as DER or PEM.
//!
//! Only definite-length, single-byte-tag DER is accepted: that is all module signatures
//! and signing certificates use. Every read is checked; hostile input is an error.

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
    let der = if bytes.starts_with(b"-----BEGIN") || bytes.trim_ascii_start().starts_with(b"---") {
        pem_to_der(bytes)?
    } else {
        bytes.to_vec()
    };
    let (cert, _) = der_next(&der).context("not a DER certificate")?;
    let parts = der_children(expect(cert, SEQUENCE, "Certificate")?.body)?;
    let Some(tbs) = parts.first() else { bail!("empty Certificate") };
    let fields = der_children(expect(*tbs, SEQUENCE, "TBSCertificate")?.body)?;
    // The version is optional ([0] EXPLICIT); skip it when present.
    let fields = match fields.first() {
        Some(f) if f.tag == CONTEXT_0 => &fields[1..],
        _ => &fields[..],
    };
    let [serial, _sig_alg, issuer, ..] = fields else { bail!("short TBSCertificate") };
    let serial = serial_bytes(expect(*serial, INTEGER, "serialNumber")?.body);
    Ok(CertIdentity { issuer: common_name(*issuer)?, serial })
}

/// Decode the first `CERTIFICATE` block of a PEM file.
pub fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut inside = false;
    let mut b64 = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
        } else if line.starts_with("-----END") && inside {
            return base64_decode(&b64);
        } else if inside {
            b64.push_str(line);
        }
    }
    bail!("no complete PEM CERTIFICATE block")
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
