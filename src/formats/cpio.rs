//! The newc (`070701`) and crc (`070702`) cpio formats, as `init/initramfs.c` reads them.
//!
//! An entry is a 110-byte ASCII-hex header, the NUL-terminated name, zero padding to a
//! 4-byte boundary (counted from the start of the header), the body, and zero padding to
//! a 4-byte boundary again. The name `TRAILER!!!` ends an archive. In the crc variant the
//! `check` field is the 32-bit sum of the body's bytes.
//!
//! This module is pure: [`Header::parse`] turns bytes into a header (errors, never panics,
//! on hostile input), [`Writer`] turns entries into bytes on any [`Write`]. Walking a
//! stream of archives, segments and compression is the initramfs engine's job
//! (`engines::initramfs`).
//!
//! Why not the `cpio` crate: it requires UTF-8 names (an image's names are bytes), neither
//! computes nor checks crc sums, and its reader hides the byte offsets the segment walker
//! must track to apply the kernel's alignment rules.

use anyhow::{bail, Result};
use std::io::{self, Write};

/// Length of a newc/crc header.
pub const HEADER_LEN: usize = 110;
/// The name that ends an archive (and resets the kernel's hard-link table).
pub const TRAILER: &[u8] = b"TRAILER!!!";
/// The kernel's `PATH_MAX`: longer names (including the NUL) are skipped by the kernel.
pub const PATH_MAX: u32 = 4096;

/// File type bits of `mode`, as in `<sys/stat.h>`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Which of the two "new ASCII" formats a header uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `070701`: no checksum.
    Newc,
    /// `070702`: `check` holds the byte sum of the body.
    Crc,
}

impl Format {
    pub fn magic(self) -> &'static [u8; 6] {
        match self {
            Format::Newc => b"070701",
            Format::Crc => b"070702",
        }
    }
}

/// One parsed header. Field names follow the format's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub devmajor: u32,
    pub devminor: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
    /// Length of the name including its terminating NUL.
    pub namesize: u32,
    pub check: u32,
}

impl Header {
    /// Parse a header. Errors name what is wrong; the caller adds the offset.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header> {
        let format = match &bytes[..6] {
            b"070701" => Format::Newc,
            b"070702" => Format::Crc,
            b"070707" => bail!("old binary/odc cpio (070707): the kernel needs newc (-H newc)"),
            other => bail!("no cpio magic (found {:?})", String::from_utf8_lossy(other)),
        };
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let start = 6 + i * 8;
            *field = parse_hex(&bytes[start..start + 8])
                .ok_or_else(|| anyhow::anyhow!("header field {i} is not 8 hex digits"))?;
        }
        let [ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check] =
            fields;
        Ok(Header {
            format,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            devmajor,
            devminor,
            rdevmajor,
            rdevminor,
            namesize,
            check,
        })
    }

    /// Serialise to the 110 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..6].copy_from_slice(self.format.magic());
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            self.namesize,
            self.check,
        ];
        for (i, field) in fields.iter().enumerate() {
            let hex = format!("{field:08X}");
            out[6 + i * 8..14 + i * 8].copy_from_slice(hex.as_bytes());
        }
        out
    }

    /// Bytes from the start of the header to the start of the body (header, name, padding).
    pub fn name_span(&self) -> u64 {
        pad4(HEADER_LEN as u64 + u64::from(self.namesize))
    }

    /// Bytes of the body plus its padding.
    pub fn body_span(&self) -> u64 {
        pad4(u64::from(self.filesize))
    }

    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }
}

fn parse_hex(digits: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for &d in digits {
        let nibble = (d as char).to_digit(16)?;
        value = (value << 4) | nibble;
    }
    Some(value)
}

/// Round up to the next multiple of 4.
pub fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

/// The crc format's checksum: the wrapping 32-bit sum of the body's bytes.
pub fn checksum(body: &[u8], seed: u32) -> u32 {
    body.iter().fold(seed, |sum, &b| sum.wrapping_add(u32::from(b)))
}

/// The name as stored (without its NUL). The kernel treats the name as a C string: bytes
/// after an embedded NUL are ignored.
pub fn name_from_field(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or(field)
}

/// What to write for one entry. The body is passed separately to [`Writer::write_entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Path inside the archive, relative (no leading `/`), as bytes.
    pub name: Vec<u8>,
    /// Type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// Device numbers of a block/char device node.
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Hard links: entries sharing a non-zero `link_id` become links to one inode. Only
    /// the last entry of a group should carry the body (GNU cpio's convention); the
    /// writer assigns the group's inode number and link count.
    pub link_id: u64,
    pub nlink: u32,
}

impl EntryMeta {
    /// A directory, regular file or symlink entry with root ownership and the given mode.
    pub fn new(name: impl Into<Vec<u8>>, mode: u32) -> EntryMeta {
        EntryMeta {
            name: name.into(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            rdev_major: 0,
            rdev_minor: 0,
            link_id: 0,
            nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
        }
    }
}

/// Writes one archive (entries then trailer) to any [`Write`]. Inode numbers are
/// assigned in order, so the output depends only on the entries given: with a fixed
/// `mtime` in every entry the archive is reproducible.
pub struct Writer<W: Write> {
    out: W,
    format: Format,
    written: u64,
    next_ino: u32,
    link_inos: std::collections::HashMap<u64, u32>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, format: Format) -> Writer<W> {
        Writer { out, format, written: 0, next_ino: 1, link_inos: Default::default() }
    }

    /// Bytes written so far (the archive's length once finished).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Write one entry with its body (empty for directories and devices; the link target
    /// for symlinks).
    pub fn write_entry(&mut self, meta: &EntryMeta, body: &[u8]) -> io::Result<()> {
        if meta.name.contains(&0) || meta.name.len() as u64 >= u64::from(PATH_MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "entry name too long or holds NUL",
            ));
        }
        let filesize = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry body exceeds 4 GiB"))?;
        let ino = if meta.link_id != 0 {
            let next = &mut self.next_ino;
            *self.link_inos.entry(meta.link_id).or_insert_with(|| {
                *next += 1;
                *next - 1
            })
        } else {
            self.next_ino += 1;
            self.next_ino - 1
        };
        let header = Header {
            format: self.format,
            ino,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            nlink: meta.nlink,
            mtime: meta.mtime,
            filesize,
            devmajor: 0,
            devminor: 0,
            rdevmajor: meta.rdev_major,
            rdevminor: meta.rdev_minor,
            namesize: meta.name.len() as u32 + 1,
            check: match self.format {
                Format::Crc => checksum(body, 0),
                Format::Newc => 0,
            },
        };
        self.raw(&header.to_bytes())?;
        self.raw(&meta.name)?;
        self.raw(&[0])?;
        self.pad()?;
        self.raw(body)?;
        self.pad()
    }

    /// Write the trailer and return the inner writer. The archive ends 4-byte aligned.
    pub fn finish(mut self) -> io::Result<W> {
        let mut trailer = EntryMeta::new(TRAILER, 0);
        trailer.nlink = 1;
        self.next_ino = 0; // GNU cpio writes inode 0 for the trailer
        self.write_entry(&trailer, &[])?;
        Ok(self.out)
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (pad4(self.written) - self.written) as usize;
        self.raw(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A header GNU cpio wrote for `printf hi > a; echo a | cpio -o -H newc`.
    const GNU_HEADER: &[u8; HEADER_LEN] = b"070701002A0B4F000081A4000000000000000000000001655F3B1800000002000000080000000100000000000000000000000200000000";

    #[test]
    fn parses_a_gnu_cpio_header() {
        let h = Header::parse(GNU_HEADER).unwrap();
        assert_eq!(h.format, Format::Newc);
        assert_eq!(h.mode, S_IFREG | 0o644);
        assert_eq!(h.filesize, 2);
        assert_eq!(h.namesize, 2);
        assert_eq!(h.name_span(), 112);
        assert_eq!(h.to_bytes(), *GNU_HEADER);
    }

    #[test]
    fn rejects_bad_magic_and_digits_without_panicking() {
        let mut bad = *GNU_HEADER;
        bad[..6].copy_from_slice(b"070707");
        assert!(Header::parse(&bad).unwrap_err().to_string().contains("newc"));
        let mut bad = *GNU_HEADER;
        bad[20] = b'g';
        assert!(Header::parse(&bad).is_err());
        assert!(Header::parse(&[0xffu8; HEADER_LEN]).is_err());
    }

    #[test]
    fn writer_pads_and_checksums() {
        let mut w = Writer::new(Vec::new(), Format::Crc);
        w.write_entry(&EntryMeta::new("ab", S_IFREG | 0o600), b"xyz").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let h = Header::parse(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(h.check, u32::from(b'x') + u32::from(b'y') + u32::from(b'z'));
        assert_eq!(&bytes[110..113], b"ab\0");
        assert_eq!(&bytes[116..119], b"xyz");
        assert_eq!(name_from_field(b"a\0b"), b"a");
    }
}
