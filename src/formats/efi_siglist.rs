//! UEFI signature databases: the `EFI_SIGNATURE_LIST` records that the `db`, `KEK`,
//! `PK` variables and shim's `MokListRT` hold, and the 4-byte attribute prefix efivarfs
//! puts before every variable's value.
//!
//! Layout (UEFI specification, "Signature Database"; all integers little-endian):
//!
//! ```text
//! EFI_SIGNATURE_LIST
//!   SignatureType        GUID (16)   e.g. EFI_CERT_X509_GUID: each entry is a DER certificate
//!   SignatureListSize    u32         the whole list, this header included
//!   SignatureHeaderSize  u32         bytes of type-specific header after this one (0 for X.509)
//!   SignatureSize        u32         bytes of each entry: owner GUID (16) + data
//!   SignatureHeader      [SignatureHeaderSize]
//!   Signatures           [SignatureSize] * n
//!     SignatureOwner     GUID (16)   who enrolled it (shim's own GUID for MOK keys)
//!     SignatureData      [SignatureSize - 16]
//! ```
//!
//! A variable is lists back to back. A GUID is stored as a little-endian u32, two
//! little-endian u16 and eight bytes in order. Every size is checked against what is
//! left: hostile input is an error, never a panic or an allocation it asks for.

use anyhow::{bail, Result};

/// A UEFI GUID as stored (mixed-endian bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// From its text form `aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee`.
    pub fn parse(text: &str) -> Result<Guid> {
        let parts: Vec<&str> = text.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5
            || parts.iter().zip(lens).any(|(p, n)| p.len() != n)
            || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!("{text:?} is not a GUID");
        }
        let hex: String = parts.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
        }
        // The first three fields are stored little-endian.
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Ok(Guid(b))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

/// `EFI_CERT_X509_GUID`: entries are DER X.509 certificates.
pub const CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
/// `EFI_CERT_SHA256_GUID`: entries are SHA-256 digests (of binaries, in `db`/`dbx`).
pub const CERT_SHA256: &str = "c1c41626-504c-4092-aca9-41f936934328";
/// Vendor GUID of the global EFI variables (`SecureBoot`, `db`'s is another).
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Vendor GUID of the image security database variables (`db`, `dbx`).
pub const IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// shim's vendor GUID (`MokListRT`, `MokSBStateRT`; also the owner of MOK entries).
pub const SHIM_LOCK: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";

/// Size of an `EFI_SIGNATURE_LIST` header.
const LIST_HEADER: usize = 16 + 4 + 4 + 4;

/// One entry of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub owner: Guid,
    pub data: Vec<u8>,
}

/// One `EFI_SIGNATURE_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList {
    pub kind: Guid,
    /// The type-specific header (empty for X.509 and SHA-256 lists).
    pub header: Vec<u8>,
    pub signatures: Vec<Signature>,
}

impl SignatureList {
    /// Is this a list of X.509 certificates?
    pub fn is_x509(&self) -> bool {
        Guid::parse(CERT_X509).is_ok_and(|g| g == self.kind)
    }
}

/// The value of an efivarfs file: the bytes after its 4-byte attribute word.
pub fn efivar_value(file: &[u8]) -> Result<(u32, &[u8])> {
    let Some((attrs, value)) = file.split_first_chunk::<4>() else {
        bail!("efivarfs variable of {} bytes: shorter than its 4-byte attributes", file.len())
    };
    Ok((u32::from_le_bytes(*attrs), value))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Every list of a signature database value (no attribute prefix).
pub fn parse(mut bytes: &[u8]) -> Result<Vec<SignatureList>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while !bytes.is_empty() {
        if bytes.len() < LIST_HEADER {
            bail!(
                "signature list at byte {offset}: {} bytes left, a list header is {LIST_HEADER}",
                bytes.len()
            );
        }
        let kind = Guid(bytes[..16].try_into().expect("16 bytes"));
        let [list_size, header_size, sig_size] = [16, 20, 24].map(|at| u32_at(bytes, at) as usize);
        if list_size < LIST_HEADER || list_size > bytes.len() {
            bail!(
                "signature list at byte {offset}: SignatureListSize {list_size} is not within the {} bytes left",
                bytes.len()
            );
        }
        let body = &bytes[LIST_HEADER..list_size];
        if header_size > body.len() {
            bail!(
                "signature list at byte {offset}: SignatureHeaderSize {header_size} exceeds the list"
            );
        }
        let (header, entries) = body.split_at(header_size);
        if sig_size <= 16 {
            bail!(
                "signature list at byte {offset}: SignatureSize {sig_size} leaves no room for data after the owner GUID"
            );
        }
        if entries.len() % sig_size != 0 {
            bail!(
                "signature list at byte {offset}: {} bytes of entries are not a whole number of {sig_size}-byte signatures",
                entries.len()
            );
        }
        let signatures = entries
            .chunks_exact(sig_size)
            .map(|e| Signature {
                owner: Guid(e[..16].try_into().expect("16 bytes")),
                data: e[16..].to_vec(),
            })
            .collect();
        out.push(SignatureList { kind, header: header.to_vec(), signatures });
        bytes = &bytes[list_size..];
        offset += list_size;
    }
    Ok(out)
}

/// The bytes of `lists` (no attribute prefix). Every signature of a list must be the
/// same size; an X.509 list therefore holds one certificate (as `cert-to-efi-sig-list`
/// writes it).
pub fn write(lists: &[SignatureList]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for list in lists {
        let data_len = list.signatures.first().map_or(0, |s| s.data.len());
        if list.signatures.iter().any(|s| s.data.len() != data_len) {
            bail!("a signature list holds signatures of one size");
        }
        let sig_size = 16 + data_len;
        let total = LIST_HEADER + list.header.len() + sig_size * list.signatures.len();
        let as_u32 = |n: usize| {
            u32::try_from(n).map_err(|_| anyhow::anyhow!("signature list too large ({n} bytes)"))
        };
        out.extend_from_slice(&list.kind.0);
        for n in [total, list.header.len(), sig_size] {
            out.extend_from_slice(&as_u32(n)?.to_le_bytes());
        }
        out.extend_from_slice(&list.header);
        for s in &list.signatures {
            out.extend_from_slice(&s.owner.0);
            out.extend_from_slice(&s.data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x509_list(owner: &str, cert: &[u8]) -> SignatureList {
        SignatureList {
            kind: Guid::parse(CERT_X509).unwrap(),
            header: Vec::new(),
            signatures: vec![Signature { owner: Guid::parse(owner).unwrap(), data: cert.to_vec() }],
        }
    }

    #[test]
    fn guids_are_stored_mixed_endian_and_print_back() {
        let g = Guid::parse(CERT_X509).unwrap();
        assert_eq!(
            g.0,
            [
                0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b,
                0xf0, 0x72
            ]
        );
        assert_eq!(g.to_string(), CERT_X509);
        for bad in [
            "",
            "a5c059a1-94e4-4aa7-87b5",
            "a5c059a1-94e4-4aa7-87b5-ab155c2bf07g",
            "+5c059a1-94e4-4aa7-87b5-ab155c2bf072",
        ] {
            assert!(Guid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_round_trip_with_a_header_and_several_entries() {
        let lists = vec![
            x509_list(SHIM_LOCK, b"\x30\x03\x02\x01\x01"),
            SignatureList {
                kind: Guid::parse(CERT_SHA256).unwrap(),
                header: vec![7, 7],
                signatures: (0..3)
                    .map(|i| Signature { owner: Guid([i; 16]), data: vec![i; 32] })
                    .collect(),
            },
        ];
        let bytes = write(&lists).unwrap();
        assert_eq!(bytes.len(), 28 + 16 + 5 + 28 + 2 + 3 * 48);
        let back = parse(&bytes).unwrap();
        assert_eq!(back, lists);
        assert!(back[0].is_x509() && !back[1].is_x509());
        assert_eq!(back[0].signatures[0].owner.to_string(), SHIM_LOCK);
        assert!(parse(&[]).unwrap().is_empty());
        assert_eq!(efivar_value(&[7, 0, 0, 0, 1]).unwrap(), (7, &[1u8][..]));
        assert!(efivar_value(&[7, 0, 0]).is_err());
    }

    #[test]
    fn hostile_lists_are_errors() {
        let good = write(&[x509_list(SHIM_LOCK, &[0x30; 40])]).unwrap();
        // Every truncation.
        for n in 1..good.len() {
            assert!(parse(&good[..n]).is_err(), "truncated to {n}");
        }
        let with = |at: usize, v: u32| {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            b
        };
        for (what, bytes) in [
            ("list size 0", with(16, 0)),
            ("list size below its header", with(16, 27)),
            ("list size past the end", with(16, u32::MAX)),
            ("header size past the list", with(20, u32::MAX)),
            ("header size eats the entry", with(20, 57)),
            ("signature size 0", with(24, 0)),
            ("signature size only the owner", with(24, 16)),
            ("signature size not dividing", with(24, 17)),
            ("signature size huge", with(24, u32::MAX)),
        ] {
            assert!(parse(&bytes).is_err(), "{what}");
        }
        // A valid list then garbage.
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert!(parse(&trailing).is_err());
        // An empty list (no entries) is well formed.
        let empty = SignatureList {
            kind: Guid::parse(CERT_X509).unwrap(),
            header: vec![],
            signatures: vec![],
        };
        let bytes = write(std::slice::from_ref(&empty)).unwrap();
        let mut patched = bytes.clone();
        patched[24..28].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(parse(&patched).unwrap()[0].signatures, vec![]);
        assert!(write(&[SignatureList {
            signatures: vec![
                Signature { owner: Guid([0; 16]), data: vec![1] },
                Signature { owner: Guid([0; 16]), data: vec![1, 2] }
            ],
            ..empty
        }])
        .is_err());
    }
}
