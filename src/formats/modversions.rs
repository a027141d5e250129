//! Modversions: the CRCs a module expects for the symbols it imports.
//!
//! Classic layout (`__versions`): fixed records of `MODULE_NAME_LEN` (64) bytes, a
//! `unsigned long` CRC (its value is 32-bit) followed by the NUL-padded symbol name.
//! Extended layout (kernels with `CONFIG_EXTENDED_MODVERSIONS`): `__version_ext_crcs`, an
//! array of u32, and `__version_ext_names`, the names NUL-terminated back to back. When
//! the extended sections are present the kernel reads only those.

use super::elf::{Class, Endian};
use anyhow::{bail, Result};

/// Bytes of one `struct modversion_info` record.
pub const RECORD_SIZE: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionEntry {
    /// The CRC word as stored. Kernels store 32-bit values; a 64-bit word with high bits
    /// set is kept as is (and printed as is, like kmod).
    pub crc: u64,
    pub symbol: String,
}

/// Decode `__versions`.
pub fn parse_classic(section: &[u8], class: Class, endian: Endian) -> Result<Vec<VersionEntry>> {
    if !section.len().is_multiple_of(RECORD_SIZE) {
        bail!(
            "__versions is {} bytes, not a multiple of the {RECORD_SIZE}-byte record",
            section.len()
        );
    }
    let word = class.word_size();
    section
        .chunks_exact(RECORD_SIZE)
        .map(|rec| {
            let crc = match class {
                Class::Elf64 => endian.u64(rec[..8].try_into().expect("8 bytes")),
                Class::Elf32 => u64::from(endian.u32(rec[..4].try_into().expect("4 bytes"))),
            };
            let name = &rec[word..];
            let Some(len) = name.iter().position(|&b| b == 0) else {
                bail!("__versions record has a symbol name without a terminating NUL");
            };
            Ok(VersionEntry { crc, symbol: String::from_utf8_lossy(&name[..len]).into_owned() })
        })
        .collect()
}

/// Encode `__versions` (used by the sample module builder).
pub fn encode_classic(entries: &[VersionEntry], class: Class, endian: Endian) -> Vec<u8> {
    let word = class.word_size();
    let mut out = Vec::with_capacity(entries.len() * RECORD_SIZE);
    for e in entries {
        let mut rec = [0u8; RECORD_SIZE];
        match (class, endian) {
            (Class::Elf64, Endian::Little) => rec[..8].copy_from_slice(&e.crc.to_le_bytes()),
            (Class::Elf64, Endian::Big) => rec[..8].copy_from_slice(&e.crc.to_be_bytes()),
            (Class::Elf32, Endian::Little) => {
                rec[..4].copy_from_slice(&(e.crc as u32).to_le_bytes())
            }
            (Class::Elf32, Endian::Big) => rec[..4].copy_from_slice(&(e.crc as u32).to_be_bytes()),
        }
        let name = e.symbol.as_bytes();
        let n = name.len().min(RECORD_SIZE - word - 1);
        rec[word..word + n].copy_from_slice(&name[..n]);
        out.extend_from_slice(&rec);
    }
    out
}

/// Decode the extended pair of sections.
pub fn parse_extended(crcs: &[u8], names: &[u8], endian: Endian) -> Result<Vec<VersionEntry>> {
    if !crcs.len().is_multiple_of(4) {
        bail!("__version_ext_crcs is {} bytes, not a multiple of 4", crcs.len());
    }
    let mut name_iter = names.split(|&b| b == 0);
    let entries: Result<Vec<_>> = crcs
        .chunks_exact(4)
        .map(|c| {
            let crc = u64::from(endian.u32(c.try_into().expect("4 bytes")));
            match name_iter.next() {
                Some(n) if !n.is_empty() => {
                    Ok(VersionEntry { crc, symbol: String::from_utf8_lossy(n).into_owned() })
                }
                _ => bail!("__version_ext_names has fewer names than __version_ext_crcs has CRCs"),
            }
        })
        .collect();
    entries
}

/// Encode the extended pair of sections: (crcs, names).
pub fn encode_extended(entries: &[VersionEntry], endian: Endian) -> (Vec<u8>, Vec<u8>) {
    let mut crcs = Vec::new();
    let mut names = Vec::new();
    for e in entries {
        let c = e.crc as u32;
        crcs.extend_from_slice(&match endian {
            Endian::Little => c.to_le_bytes(),
            Endian::Big => c.to_be_bytes(),
        });
        names.extend_from_slice(e.symbol.as_bytes());
        names.push(0);
    }
    (crcs, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<VersionEntry> {
        vec![
            VersionEntry { crc: 0x81e6b37f, symbol: "module_layout".into() },
            VersionEntry { crc: 0x1, symbol: "printk".into() },
        ]
    }

    #[test]
    fn classic_round_trips_in_all_layouts() {
        for class in [Class::Elf32, Class::Elf64] {
            for endian in [Endian::Little, Endian::Big] {
                let bytes = encode_classic(&sample(), class, endian);
                assert_eq!(bytes.len(), 2 * RECORD_SIZE);
                assert_eq!(parse_classic(&bytes, class, endian).unwrap(), sample());
            }
        }
    }

    #[test]
    fn extended_round_trips() {
        let (c, n) = encode_extended(&sample(), Endian::Big);
        assert_eq!(parse_extended(&c, &n, Endian::Big).unwrap(), sample());
        assert!(parse_extended(&c, b"only_one\0", Endian::Big).is_err());
    }

    #[test]
    fn rejects_ragged_and_unterminated() {
        assert!(parse_classic(&[0u8; 65], Class::Elf64, Endian::Little).is_err());
        let mut rec = [b'a'; 64];
        rec[..8].fill(0);
        assert!(parse_classic(&rec, Class::Elf64, Endian::Little).is_err());
    }
}
