//! The frame of an RPM file (lead, signature header, main header), checked before the
//! `rpm` crate parses it. That crate (0.30) trusts each header's index: an entry whose
//! offset lies outside the header's data store makes it panic (found by the `dud_iso`
//! fuzz target; bootkmod's release build aborts on a panic), and the sizes a header
//! claims are allocated before they are read. A driver disk is untrusted input, so a
//! package whose frame is not sound is refused here with an error.
//!
//! Layout (rpm's `lib/header.c` and `rpmlead.c`): a 96-byte lead starting `ED AB EE DB`;
//! then two headers, each `8E AD E8 01`, 4 reserved bytes, be32 entry count, be32 data
//! size, the entries (16 bytes each: tag, type, be32 offset into the data, count), the
//! data; the signature header is padded to 8 bytes.

use anyhow::{bail, Result};

const LEAD_LEN: usize = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// rpm's own bounds on a header (`hdrchkTags`, `hdrchkData`).
const MAX_ENTRIES: u64 = 0xffff;
const MAX_DATA: u64 = 0x0fff_ffff;

/// Check the lead and both headers of an RPM file: every index entry's data lies
/// inside its header's data, and each header inside the file. Returns where the payload
/// starts.
pub fn check(file: &[u8]) -> Result<usize> {
    if file.len() < LEAD_LEN || file[..4] != LEAD_MAGIC {
        bail!("not an RPM: no lead");
    }
    let signature_end = check_header(file, LEAD_LEN, "signature header")?;
    check_header(file, signature_end.next_multiple_of(8), "header")
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Check the header at `at`; returns its end.
fn check_header(file: &[u8], at: usize, what: &str) -> Result<usize> {
    let Some(intro) = file.get(at..at + 16) else { bail!("RPM {what} truncated") };
    if intro[..4] != HEADER_MAGIC {
        bail!("RPM {what}: bad magic");
    }
    let (entries, data_len) = (u64::from(be32(intro, 8)), u64::from(be32(intro, 12)));
    if entries > MAX_ENTRIES || data_len > MAX_DATA {
        bail!("RPM {what}: {entries} entries, {data_len} bytes of data: beyond rpm's limits");
    }
    let index = at as u64 + 16;
    let data_start = index + 16 * entries;
    let end = data_start + data_len;
    if end > file.len() as u64 {
        bail!("RPM {what} claims {} bytes, the file has {}", end - at as u64, file.len() - at);
    }
    let (index, data_start, end) = (index as usize, data_start as usize, end as usize);
    let data = &file[data_start..end];
    for entry in file[index..data_start].chunks_exact(16) {
        let (tag, kind, offset, count) =
            (be32(entry, 0), be32(entry, 4), be32(entry, 8) as i32, u64::from(be32(entry, 12)));
        let Ok(offset) = usize::try_from(offset) else {
            bail!("RPM {what}: tag {tag} has a negative offset");
        };
        let Some(rest) = data.get(offset..) else {
            bail!("RPM {what}: tag {tag} points past the header's data");
        };
        let fits = match kind {
            0 => true,
            1 | 2 | 7 => count <= rest.len() as u64,
            3 => count * 2 <= rest.len() as u64,
            4 => count * 4 <= rest.len() as u64,
            5 => count * 8 <= rest.len() as u64,
            6 => rest.contains(&0),
            8 | 9 => strings_fit(rest, count),
            _ => bail!("RPM {what}: tag {tag} has unknown type {kind}"),
        };
        if !fits {
            bail!("RPM {what}: tag {tag} runs past the header's data");
        }
    }
    Ok(end)
}

/// Whether `count` NUL-terminated strings start at the front of `bytes`.
fn strings_fit(mut bytes: &[u8], count: u64) -> bool {
    for _ in 0..count {
        match bytes.iter().position(|&b| b == 0) {
            Some(nul) => bytes = &bytes[nul + 1..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lead, an empty signature header and a header with one entry.
    fn package(kind: u32, offset: i32, count: u32, data: &[u8]) -> Vec<u8> {
        let mut f = LEAD_MAGIC.to_vec();
        f.resize(LEAD_LEN, 0);
        f.extend_from_slice(&HEADER_MAGIC);
        f.extend_from_slice(&[0; 12]);
        f.extend_from_slice(&HEADER_MAGIC);
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(&1000u32.to_be_bytes());
        f.extend_from_slice(&kind.to_be_bytes());
        f.extend_from_slice(&offset.to_be_bytes());
        f.extend_from_slice(&count.to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn a_sound_frame_passes_and_ends_where_the_payload_starts() {
        let f = package(6, 0, 1, b"name\0");
        assert_eq!(check(&f).unwrap(), f.len());
        assert!(check(&package(8, 0, 2, b"a\0b\0")).is_ok());
        assert!(check(&package(4, 4, 1, &[0; 8])).is_ok());
    }

    #[test]
    fn entries_outside_their_data_are_errors() {
        // The shape of the fuzzer's find: an offset far past the header's data.
        assert!(check(&package(4, 167_776_420, 1, &[0; 8])).is_err());
        assert!(check(&package(6, -4, 1, b"name\0")).is_err());
        assert!(check(&package(4, 4, 2, &[0; 8])).is_err());
        assert!(check(&package(6, 0, 1, b"name")).is_err());
        assert!(check(&package(8, 0, 3, b"a\0b\0")).is_err());
        assert!(check(&package(12, 0, 1, b"a\0")).is_err());
    }

    #[test]
    fn truncations_and_lying_sizes_are_errors() {
        let f = package(6, 0, 1, b"name\0");
        for n in 0..f.len() {
            assert!(check(&f[..n]).is_err(), "cut at {n}");
        }
        let mut huge = f.clone();
        huge[LEAD_LEN + 16 + 8..LEAD_LEN + 16 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(check(&huge).is_err());
    }
}
