//! The boot image of a kernel (`/boot/vmlinuz-KVER`): where the ELF `vmlinux` inside it
//! is, and how to get it out.
//!
//! What each layout holds (checked on Debian's images):
//! - **x86 bzImage** (x86_64, i386): real-mode setup code, then the protected-mode part
//!   with a compressed payload. The setup header (magic `HdrS` at 0x202, boot protocol
//!   2.08 or later) gives `setup_sects` (0x1f1; 0 means 4), `payload_offset` (0x248) and
//!   `payload_length` (0x24c), relative to the start of the protected-mode code at
//!   `(setup_sects + 1) * 512`. The payload is `vmlinux` (an ELF image, stripped of
//!   symbols but not of section headers; relocation data may follow it) compressed with
//!   one of the kernel's codecs, with its decompressed size appended as a little-endian
//!   u32.
//! - **ELF** (`vmlinux` itself, as some distributions ship it): used as it is.
//! - **A whole-file compressed stream** (a gzip'd `Image`, `vmlinux.gz`): decoded, then
//!   looked at again.
//! - **arm64 `Image`** (magic `ARM\x64` at 56; Debian ships it uncompressed), the s390
//!   image (IPL words at 8; its payload is compressed `objcopy -O binary` output) and
//!   arm's `zImage`: the kernel's memory image with no section headers, so the export
//!   table cannot be located in it. [`KernelImage::Raw`] says so rather than guessing.
//!
//! Pure: bytes in, values out. [`vmlinux`] decodes; [`identify`] only looks.

use super::compression::{Compression, StreamDecoder};
use anyhow::{bail, Context, Result};
use std::borrow::Cow;
use std::io::Read;

/// Upper bound on a decoded kernel image (Debian's 6.1 vmlinux is 66 MB; debug builds
/// reach a few hundred): protects against decompression bombs.
pub const MAX_DECODED_IMAGE: u64 = 1 << 30;

/// What a kernel boot image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelImage {
    /// An x86 bzImage; `payload` is the byte range of the compressed vmlinux (without
    /// the appended size), `decoded_size` what that size says.
    BzImage { compression: Compression, payload: std::ops::Range<usize>, decoded_size: u32 },
    /// An ELF file: vmlinux as it is.
    Elf,
    /// The whole file is one compressed stream.
    Compressed(Compression),
    /// A raw memory image (`what` names it: "arm64 Image", ...): no sections to read.
    Raw { what: &'static str },
}

impl KernelImage {
    /// One line for reports: `bzImage (xz payload)`, `arm64 Image (raw)`.
    pub fn describe(&self) -> String {
        match self {
            KernelImage::BzImage { compression, .. } => format!("bzImage ({compression} payload)"),
            KernelImage::Elf => "ELF vmlinux".to_string(),
            KernelImage::Compressed(c) => format!("{c}-compressed image"),
            KernelImage::Raw { what } => format!("{what} (raw binary, no section headers)"),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Identify a kernel boot image by its headers. Errors on an x86 setup header whose
/// payload fields are out of range, and on bytes that are no kernel image bootkmod knows.
pub fn identify(bytes: &[u8]) -> Result<KernelImage> {
    if bytes.starts_with(b"\x7fELF") {
        return Ok(KernelImage::Elf);
    }
    if bytes.get(0x202..0x206) == Some(&b"HdrS"[..]) {
        return bzimage(bytes);
    }
    if bytes.get(56..60) == Some(&b"ARM\x64"[..]) {
        return Ok(KernelImage::Raw { what: "arm64 Image" });
    }
    if bytes.get(36..40) == Some(&[0x18, 0x28, 0x6f, 0x01][..]) {
        return Ok(KernelImage::Raw { what: "arm zImage" });
    }
    // s390's IPL PSW and CCWs: its decompressor unpacks a raw `objcopy -O binary` image.
    if bytes.get(8..16) == Some(&[0x02, 0x00, 0x00, 0x18, 0x60, 0x00, 0x00, 0x50][..]) {
        return Ok(KernelImage::Raw { what: "s390 image" });
    }
    match Compression::detect(bytes) {
        Compression::None => bail!(
            "not a kernel image bootkmod can read (no bzImage setup header, ELF header, \
             arm64 Image header or compression magic)"
        ),
        c => Ok(KernelImage::Compressed(c)),
    }
}

fn bzimage(bytes: &[u8]) -> Result<KernelImage> {
    let version = bytes
        .get(0x206..0x208)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
        .context("truncated bzImage setup header")?;
    if version < 0x0208 {
        bail!(
            "bzImage boot protocol {}.{:02} predates the payload fields (2.08)",
            version >> 8,
            version & 0xff
        );
    }
    let setup_sects = match bytes.get(0x1f1).copied().context("truncated bzImage setup header")? {
        0 => 4,
        n => usize::from(n),
    };
    let (offset, length) = u32_at(bytes, 0x248)
        .zip(u32_at(bytes, 0x24c))
        .context("truncated bzImage setup header (no payload fields)")?;
    let start = (setup_sects + 1) * 512 + offset as usize;
    let end = start.checked_add(length as usize).context("bzImage payload range overflows")?;
    if end > bytes.len() || length < 8 {
        bail!(
            "bzImage payload {start}..{end} ({length} bytes) does not fit the {} bytes of the image",
            bytes.len()
        );
    }
    let compression = Compression::detect(&bytes[start..end]);
    if compression == Compression::None {
        bail!("bzImage payload at {start} carries no known compression magic");
    }
    let decoded_size = u32_at(bytes, end - 4).context("bzImage payload without its size")?;
    Ok(KernelImage::BzImage { compression, payload: start..end - 4, decoded_size })
}

/// Decode one compressed stream that must decode to at most `limit` bytes.
fn decode(kind: Compression, bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    let decoder = StreamDecoder::new(kind, bytes)?;
    let mut out = Vec::new();
    let read = decoder
        .take(limit + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("corrupt {kind} data in the kernel image"))?;
    if read as u64 > limit {
        bail!("the kernel image's {kind} data decodes to more than {limit} bytes");
    }
    Ok(out)
}

/// The ELF vmlinux inside a boot image, decoding what is compressed. Errors say what the
/// image is when no ELF can be had from it (a raw arm64 `Image`).
pub fn vmlinux(bytes: &[u8]) -> Result<Cow<'_, [u8]>> {
    let kind = identify(bytes)?;
    let elf = match &kind {
        KernelImage::Elf => return Ok(Cow::Borrowed(bytes)),
        KernelImage::BzImage { compression, payload, decoded_size } => {
            let limit = u64::from(*decoded_size).min(MAX_DECODED_IMAGE);
            decode(*compression, &bytes[payload.clone()], limit)?
        }
        KernelImage::Compressed(c) => {
            let inner = decode(*c, bytes, MAX_DECODED_IMAGE)?;
            match identify(&inner)? {
                KernelImage::Elf => inner,
                other => bail!("a {c}-compressed {} holds no ELF vmlinux", other.describe()),
            }
        }
        KernelImage::Raw { .. } => {
            bail!("{}: the export table cannot be located in it", kind.describe())
        }
    };
    if !elf.starts_with(b"\x7fELF") {
        bail!("the {} does not decode to an ELF vmlinux", kind.describe());
    }
    Ok(Cow::Owned(elf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::compression::encode_all;

    /// A bzImage with `setup_sects` 1 (1 KiB before the payload) around `payload`.
    fn bzimage_of(payload: &[u8], decoded: u32) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        b.extend_from_slice(payload);
        b.extend_from_slice(&decoded.to_le_bytes());
        b.extend_from_slice(&[0u8; 64]); // trailing padding, as real images have
        b
    }

    fn elf_like() -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend((0..5000u32).flat_map(|i| i.to_le_bytes()));
        v
    }

    #[test]
    fn bzimage_payloads_of_each_codec_decode() {
        let inner = elf_like();
        for kind in [Compression::Gzip, Compression::Xz, Compression::Zstd, Compression::Bzip2] {
            let image = bzimage_of(&encode_all(kind, &inner).unwrap(), inner.len() as u32);
            assert!(
                matches!(identify(&image).unwrap(), KernelImage::BzImage { compression, .. } if compression == kind)
            );
            assert_eq!(vmlinux(&image).unwrap().as_ref(), &inner[..], "{kind}");
        }
        assert_eq!(vmlinux(&inner).unwrap().as_ref(), &inner[..]);
        let gz = encode_all(Compression::Gzip, &inner).unwrap();
        assert_eq!(vmlinux(&gz).unwrap().as_ref(), &inner[..]);
    }

    #[test]
    fn hostile_images_are_errors() {
        let inner = elf_like();
        let good = bzimage_of(&encode_all(Compression::Xz, &inner).unwrap(), inner.len() as u32);
        // Truncated anywhere: an error, never a panic.
        for cut in [0, 10, 0x1f1, 0x203, 0x249, 1024, 1100, good.len() - 80] {
            assert!(vmlinux(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Payload fields out of range.
        let mut bad = good.clone();
        bad[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(format!("{:#}", identify(&bad).unwrap_err()).contains("does not fit"));
        let mut bad = good.clone();
        bad[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(identify(&bad).is_err());
        // Corrupt compressed data.
        let mut bad = good.clone();
        for b in &mut bad[1100..1200] {
            *b ^= 0x5a;
        }
        assert!(vmlinux(&bad).is_err());
        // A size that lies low is a bomb limit, not a crash.
        let small = bzimage_of(&encode_all(Compression::Xz, &inner).unwrap(), 100);
        assert!(format!("{:#}", vmlinux(&small).unwrap_err()).contains("more than 100 bytes"));
        // Old boot protocol, no magic, a payload that decodes to something not ELF.
        let mut old = good.clone();
        old[0x206..0x208].copy_from_slice(&0x0205u16.to_le_bytes());
        assert!(format!("{:#}", identify(&old).unwrap_err()).contains("predates"));
        assert!(identify(&[0u8; 4096]).is_err());
        let not_elf = bzimage_of(&encode_all(Compression::Gzip, b"hello").unwrap(), 5);
        assert!(
            format!("{:#}", vmlinux(&not_elf).unwrap_err()).contains("does not decode to an ELF")
        );
    }

    #[test]
    fn raw_arm64_image_says_what_it_is() {
        let mut image = vec![0u8; 4096];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(identify(&image).unwrap(), KernelImage::Raw { what: "arm64 Image" });
        let err = format!("{:#}", vmlinux(&image).unwrap_err());
        assert!(err.contains("arm64 Image") && err.contains("cannot be located"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1400), hdr in proptest::bool::ANY) {
            if hdr && bytes.len() > 0x250 {
                bytes[0x202..0x206].copy_from_slice(b"HdrS");
            }
            let _ = vmlinux(&bytes);
        }
    }
}
