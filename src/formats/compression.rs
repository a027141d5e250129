//! Compression formats, detected by magic bytes (never by file name).
//!
//! The kernel recognises a compressed stream by its first bytes (`lib/decompress.c`);
//! module files (`.ko.xz`, `.ko.zst`, `.ko.gz`) are whole-file compressed the same way.
//! This module owns the table of magics and the whole-buffer decoders. Streaming decoders
//! that report where a stream ended (needed to walk initramfs segments) build on the same
//! [`Compression`] value.

use anyhow::{bail, Context, Result};
use std::io::Read;

/// A compression format the kernel knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    None,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    /// Legacy `.lzma` (LZMA-alone) stream.
    Lzma,
    /// The kernel's legacy lz4 framing (magic `0x184C2102`).
    Lz4Legacy,
    /// lzop; recognised so it can be named in errors, not decoded.
    Lzo,
}

impl Compression {
    /// Identify a stream by its first bytes. `None` means "no known magic".
    pub fn detect(bytes: &[u8]) -> Compression {
        const TABLE: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x1f, 0x9e], Compression::Gzip), // old gzip magic, accepted by the kernel
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4Legacy),
            (&[0x89, b'L', b'Z', b'O', 0x00], Compression::Lzo),
        ];
        TABLE
            .iter()
            .find(|(magic, _)| bytes.starts_with(magic))
            .map_or(Compression::None, |&(_, c)| c)
    }

    /// The conventional name, as used in reports and `--compress` options.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Lz4Legacy => "lz4",
            Compression::Lzo => "lzo",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Upper bound on what one decoded module may grow to: protects against decompression
/// bombs. The largest in-tree module of a distribution kernel is a few tens of MiB.
pub const MAX_DECODED_MODULE: u64 = 1 << 30;

/// Decode a whole buffer holding exactly one stream (a compressed module file).
/// Returns the input unchanged (borrowed) when it carries no compression magic.
pub fn decode_all(bytes: &[u8], limit: u64) -> Result<std::borrow::Cow<'_, [u8]>> {
    let kind = Compression::detect(bytes);
    let reader: Box<dyn Read + '_> = match kind {
        Compression::None => return Ok(std::borrow::Cow::Borrowed(bytes)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(bytes)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(bytes)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(bytes)),
        Compression::Lzma => Box::new(liblzma::read::XzDecoder::new_stream(
            bytes,
            liblzma::stream::Stream::new_lzma_decoder(u64::MAX)?,
        )),
        Compression::Lz4Legacy | Compression::Lzo => {
            bail!("unsupported compression {kind} for a module file")
        }
    };
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(3));
    let read = reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("corrupt {kind} data"))?;
    if read as u64 > limit {
        bail!("{kind} data decodes to more than {limit} bytes");
    }
    Ok(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_by_magic_not_name() {
        assert_eq!(Compression::detect(b"\x7fELF"), Compression::None);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::detect(b"\xfd7zXZ\0..."), Compression::Xz);
        assert_eq!(Compression::detect(&[0x02, 0x21, 0x4c, 0x18]), Compression::Lz4Legacy);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn round_trips_each_module_compression() {
        let data = b"\x7fELF module bytes ".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&data).unwrap();
        let xz = xz.finish().unwrap();
        for enc in [gz, zst, xz] {
            assert_eq!(decode_all(&enc, MAX_DECODED_MODULE).unwrap().as_ref(), &data[..]);
        }
    }

    #[test]
    fn garbage_after_magic_is_an_error_and_bombs_are_bounded() {
        assert!(decode_all(b"\x28\xb5\x2f\xfdgarbage", MAX_DECODED_MODULE).is_err());
        assert!(decode_all(b"\x1f\x8bgarbage", MAX_DECODED_MODULE).is_err());
        let zeros = zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap();
        assert!(decode_all(&zeros, 1000).is_err());
    }
}
