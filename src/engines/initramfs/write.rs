//! Writing archives: newc entries, compressed with any codec, onto any `Write`.
//!
//! [`ArchiveWriter`] is one segment: a cpio archive (entries then `TRAILER!!!`) inside
//! one compressed stream (or raw). An image is segments written one after another; a raw
//! segment that follows anything must start 4-byte aligned ([`padding_before_raw`]).
//! Output depends only on the entries given (inode numbers are assigned in order), so a
//! fixed mtime makes images reproducible.

use crate::formats::compression::{Encoder, EncoderSettings};
use crate::formats::cpio::{self, EntryMeta, Format};
use anyhow::Result;
use std::io::{self, Write};

/// One segment being written.
pub struct ArchiveWriter<W: Write> {
    cpio: cpio::Writer<Encoder<W>>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W, settings: EncoderSettings, format: Format) -> Result<ArchiveWriter<W>> {
        Ok(ArchiveWriter { cpio: cpio::Writer::new(Encoder::new(settings, out)?, format) })
    }

    /// Add an entry: `body` is the file content, or the target of a symlink.
    pub fn add(&mut self, meta: &EntryMeta, body: &[u8]) -> io::Result<()> {
        self.cpio.write_entry(meta, body)
    }

    /// Uncompressed bytes written so far.
    pub fn cpio_size(&self) -> u64 {
        self.cpio.written()
    }

    /// Write the trailer, end the compressed stream, return the writer.
    pub fn finish(self) -> io::Result<W> {
        self.cpio.finish()?.finish()
    }
}

/// Zero bytes to write at image offset `offset` before a raw cpio segment: the kernel
/// looks for a raw header only at 4-byte aligned offsets.
pub fn padding_before_raw(offset: u64) -> usize {
    (cpio::pad4(offset) - offset) as usize
}
