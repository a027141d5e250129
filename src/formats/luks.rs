//! LUKS headers, the one fact the doctor reads from them: the cipher a crypt device's
//! data segment uses, in dm-crypt's `cipher-chainmode-ivmode` form (`aes-xts-plain64`),
//! and the kernel crypto modules that spec asks for.
//!
//! Layout (cryptsetup's on-disk format documents): both versions start with the magic
//! `LUKS\xba\xbe` and a big-endian `u16` version. LUKS1 then holds the cipher name and
//! mode as NUL-padded 32-byte fields at offsets 8 and 40. LUKS2's binary header holds
//! the header size (`u64` BE at offset 8); its JSON area starts at 4096 and lists
//! `segments`, each with an `encryption` spec.

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// LUKS2's binary header, before its JSON area.
const LUKS2_BINARY_HEADER: usize = 4096;
/// Most of a header worth reading: LUKS2 headers are 16 KiB by default, at most 4 MiB.
pub const MAX_HEADER: usize = 4 << 20;

/// Bytes of the device a header whose first [`FIRST_READ`] bytes are `head` needs read for
/// [`cipher`]: LUKS1's fixed header, LUKS2's `hdr_size` (at most [`MAX_HEADER`]); 0 when
/// `head` is no LUKS header.
pub fn header_len(head: &[u8]) -> usize {
    if !is_luks(head) {
        return 0;
    }
    match head.get(6..8).map(|v| u16::from_be_bytes([v[0], v[1]])) {
        Some(2) => head
            .get(8..16)
            .map(|s| u64::from_be_bytes(s.try_into().unwrap_or_default()))
            .and_then(|n| usize::try_from(n).ok())
            .map_or(FIRST_READ, |n| n.clamp(FIRST_READ, MAX_HEADER)),
        _ => FIRST_READ,
    }
}

/// What to read first: LUKS1's whole header, LUKS2's binary header.
pub const FIRST_READ: usize = LUKS2_BINARY_HEADER;

/// Whether `bytes` start with a LUKS header.
pub fn is_luks(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The cipher spec of a LUKS header's (first) data segment.
pub fn cipher(bytes: &[u8]) -> Result<String> {
    if !is_luks(bytes) {
        bail!("not a LUKS header");
    }
    let version = bytes.get(6..8).map(|v| u16::from_be_bytes([v[0], v[1]]));
    match version {
        Some(1) => {
            let field = |at: usize| -> Result<String> {
                let raw = bytes.get(at..at + 32).context("LUKS1 header truncated")?;
                let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                let text = std::str::from_utf8(&raw[..end]).context("LUKS1 cipher not text")?;
                if text.is_empty() {
                    bail!("LUKS1 header names no cipher");
                }
                Ok(text.to_string())
            };
            Ok(format!("{}-{}", field(8)?, field(40)?))
        }
        Some(2) => {
            let size = bytes
                .get(8..16)
                .map(|s| u64::from_be_bytes(s.try_into().unwrap_or_default()))
                .context("LUKS2 header truncated")?;
            let end = usize::try_from(size).ok().filter(|s| *s > LUKS2_BINARY_HEADER);
            let end = end.context("LUKS2 header size out of range")?.min(bytes.len());
            let area = bytes.get(LUKS2_BINARY_HEADER..end).context("LUKS2 JSON area missing")?;
            let area = &area[..area.iter().position(|b| *b == 0).unwrap_or(area.len())];
            let json: serde_json::Value =
                serde_json::from_slice(area).context("LUKS2 JSON area is not JSON")?;
            let segments = json["segments"].as_object().context("LUKS2 header has no segments")?;
            let mut keys: Vec<&String> = segments.keys().collect();
            keys.sort_by_key(|k| k.parse::<u64>().unwrap_or(u64::MAX));
            keys.iter()
                .find_map(|k| segments[*k]["encryption"].as_str())
                .map(str::to_string)
                .context("LUKS2 segments name no encryption")
        }
        Some(v) => bail!("LUKS version {v} is not known"),
        None => bail!("LUKS header truncated"),
    }
}

/// The names the kernel asks modprobe for (`crypto-NAME`) to set up a dm-crypt cipher
/// spec: the cipher, the chaining mode, and an IV generator that is a crypto template
/// itself (`essiv:sha256` needs `essiv` and `sha256`). `plain`, `plain64`, `benbi` and
/// the like are dm-crypt's own. A kernel crypto API spec (`capi:xts(aes)-plain64`) names
/// the algorithms inside.
pub fn crypto_modules(spec: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        let n = n.trim();
        if !n.is_empty() && !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    };
    if let Some(capi) = spec.strip_prefix("capi:") {
        let algs = capi.split_once('-').map_or(capi, |(a, _)| a);
        for n in algs.split(['(', ')', ',']) {
            add(n);
        }
        return names.into_iter().map(|n| format!("crypto-{n}")).collect();
    }
    let mut parts = spec.splitn(3, '-');
    if let Some(cipher) = parts.next() {
        add(cipher);
    }
    if let Some(mode) = parts.next() {
        add(mode);
    }
    if let Some(iv) = parts.next() {
        if let Some((generator, hash)) = iv.split_once(':') {
            if generator == "essiv" {
                add("essiv");
            }
            add(hash);
        }
    }
    names.into_iter().map(|n| format!("crypto-{n}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luks1(name: &str, mode: &str) -> Vec<u8> {
        let mut h = vec![0u8; 592];
        h[..6].copy_from_slice(MAGIC);
        h[7] = 1;
        h[8..8 + name.len()].copy_from_slice(name.as_bytes());
        h[40..40 + mode.len()].copy_from_slice(mode.as_bytes());
        h
    }

    fn luks2(json: &str) -> Vec<u8> {
        let mut h = vec![0u8; 16384];
        h[..6].copy_from_slice(MAGIC);
        h[7] = 2;
        h[8..16].copy_from_slice(&16384u64.to_be_bytes());
        h[4096..4096 + json.len()].copy_from_slice(json.as_bytes());
        h
    }

    #[test]
    fn both_versions_give_the_data_segments_cipher() {
        assert_eq!(cipher(&luks1("aes", "cbc-essiv:sha256")).unwrap(), "aes-cbc-essiv:sha256");
        let j = r#"{"segments":{"1":{"encryption":"serpent-xts-plain64"},"0":{"type":"crypt","encryption":"aes-xts-plain64"}}}"#;
        assert_eq!(cipher(&luks2(j)).unwrap(), "aes-xts-plain64");
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert!(cipher(b"").is_err());
        assert!(cipher(b"LUKS\xba\xbe").is_err());
        assert!(cipher(&luks1("", "xts")).is_err());
        let mut h = luks2("{}");
        assert!(cipher(&h).is_err());
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(cipher(&h).is_err());
        h[8..16].copy_from_slice(&10u64.to_be_bytes());
        assert!(cipher(&h).is_err());
        assert!(cipher(&luks2("not json")).is_err());
        let mut v9 = luks1("aes", "xts");
        v9[7] = 9;
        assert!(cipher(&v9).is_err());
    }

    #[test]
    fn header_len_asks_for_the_whole_json_area_and_no_more() {
        assert_eq!(header_len(&luks2("{}")), 16384);
        assert_eq!(header_len(&luks1("aes", "xts")), FIRST_READ);
        assert_eq!(header_len(b"not luks"), 0);
        let mut huge = luks2("{}");
        huge[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(header_len(&huge), MAX_HEADER);
    }

    #[test]
    fn specs_name_their_crypto_modules() {
        assert_eq!(crypto_modules("aes-xts-plain64"), ["crypto-aes", "crypto-xts"]);
        assert_eq!(
            crypto_modules("aes-cbc-essiv:sha256"),
            ["crypto-aes", "crypto-cbc", "crypto-essiv", "crypto-sha256"]
        );
        assert_eq!(crypto_modules("capi:xts(aes)-plain64"), ["crypto-xts", "crypto-aes"]);
        assert_eq!(crypto_modules("aes"), ["crypto-aes"]);
    }
}
