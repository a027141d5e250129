//! Compression formats, detected by magic bytes (never by file name).
//!
//! The kernel recognises a compressed stream by its first bytes (`lib/decompress.c`);
//! module files (`.ko.xz`, `.ko.zst`, `.ko.gz`) are whole-file compressed the same way.
//! This module owns the table of magics and the whole-buffer decoders. Streaming decoders
//! that report where a stream ended (needed to walk initramfs segments) build on the same
//! [`Compression`] value.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Read, Write};

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

/// Encode a whole buffer as one stream of `kind` (a module file written under a name
/// that promises that codec). One thread: a module is small, and the result is then the
/// same bytes on every machine.
pub fn encode_all(kind: Compression, bytes: &[u8]) -> Result<Vec<u8>> {
    let settings = EncoderSettings { threads: 1, ..EncoderSettings::new(kind) };
    let mut encoder = Encoder::new(settings, Vec::with_capacity(bytes.len() / 2))?;
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Encode a module file as the kernel's build compresses what it installs
/// (`scripts/Makefile.modinst`): xz as `xz --check=crc32 --lzma2=dict=1MiB` (one thread,
/// so the same bytes as that command for the same input), the other codecs as
/// [`encode_all`].
pub fn encode_module(kind: Compression, bytes: &[u8]) -> Result<Vec<u8>> {
    if kind != Compression::Xz {
        return encode_all(kind, bytes);
    }
    use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
    let mut lzma2 = LzmaOptions::new_preset(6)?;
    lzma2.dict_size(1 << 20);
    let mut filters = Filters::new();
    filters.lzma2(&lzma2);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32)?;
    let mut encoder =
        liblzma::write::XzEncoder::new_stream(Vec::with_capacity(bytes.len() / 3), stream);
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// A [`BufRead`] that counts the bytes its consumer has consumed: how the segment walker
/// learns where a compressed stream ended (the kernel resumes right after the bytes its
/// decompressor used).
pub struct CountingReader<R> {
    inner: R,
    consumed: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: BufRead> CountingReader<R> {
    pub fn new(inner: R) -> CountingReader<R> {
        CountingReader { inner, consumed: Default::default() }
    }

    /// A handle that keeps reporting the count after the reader moved into a decoder.
    pub fn counter(&self) -> std::rc::Rc<std::cell::Cell<u64>> {
        self.consumed.clone()
    }
}

impl<R: BufRead> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.set(self.consumed.get() + n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.consumed.set(self.consumed.get() + amt as u64);
        self.inner.consume(amt);
    }
}

/// Decodes exactly one compressed stream of `kind` from `input` and stops where the
/// stream ends, as the kernel's in-process decompressors do (one gzip member, one xz
/// stream, one zstd frame, one bzip2 stream, one lzma stream; lz4 legacy runs to the end
/// of the input). [`StreamDecoder::consumed`] then tells how many input bytes it used.
pub struct StreamDecoder<'a> {
    inner: Box<dyn Read + 'a>,
    consumed: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new<R: BufRead + 'a>(kind: Compression, input: R) -> Result<StreamDecoder<'a>> {
        let input = CountingReader::new(input);
        let consumed = input.counter();
        let inner: Box<dyn Read + 'a> = match kind {
            Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
            // Multi-threaded across the stream's blocks (dracut and bootkmod write several);
            // like the single-threaded decoder it stops at the end of this one stream.
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_stream(
                input,
                liblzma::stream::MtStreamBuilder::new()
                    .threads(cores())
                    .memlimit_threading(512 << 20)
                    .memlimit_stop(u64::MAX)
                    .decoder()?,
            )),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(input)?.single_frame())
            }
            Compression::Bzip2 => Box::new(bzip2::bufread::BzDecoder::new(input)),
            Compression::Lzma => Box::new(liblzma::bufread::XzDecoder::new_stream(
                input,
                liblzma::stream::Stream::new_lzma_decoder(u64::MAX)?,
            )),
            Compression::Lz4Legacy => Box::new(Lz4LegacyDecoder::new(input)),
            Compression::Lzo => bail!("unsupported compression lzo"),
            Compression::None => bail!("not a compressed stream"),
        };
        Ok(StreamDecoder { inner, consumed })
    }

    /// Input bytes consumed so far; after the decoder returned end-of-stream, the
    /// compressed stream's exact length.
    pub fn consumed(&self) -> u64 {
        self.consumed.get()
    }
}

impl Read for StreamDecoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

/// The kernel's legacy lz4 framing: magic `0x184C2102`, then chunks of a little-endian
/// u32 compressed size and one lz4 block decoding to at most 8 MiB. There is no end
/// marker: the stream runs to the end of the input (so an lz4 segment must be last). A
/// repeated magic between chunks (concatenated `lz4 -l` outputs) is skipped.
pub const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of every chunk but the last.
pub const LZ4_LEGACY_CHUNK: usize = 8 << 20;

struct Lz4LegacyDecoder<R> {
    input: R,
    started: bool,
    chunk: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> Lz4LegacyDecoder<R> {
    fn new(input: R) -> Self {
        Lz4LegacyDecoder { input, started: false, chunk: Vec::new(), out: Vec::new(), pos: 0 }
    }

    /// Decode the next chunk into `out`; false at the end of the input.
    fn next_chunk(&mut self) -> std::io::Result<bool> {
        use std::io::{Error, ErrorKind};
        let corrupt =
            |what: &str| Error::new(ErrorKind::InvalidData, format!("lz4 legacy: {what}"));
        loop {
            let mut word = [0u8; 4];
            if self.input.fill_buf()?.is_empty() {
                if !self.started {
                    return Err(corrupt("empty stream"));
                }
                return Ok(false);
            }
            self.input.read_exact(&mut word).map_err(|_| corrupt("truncated chunk size"))?;
            let word = u32::from_le_bytes(word);
            if word == LZ4_LEGACY_MAGIC {
                self.started = true;
                continue;
            }
            if !self.started {
                return Err(corrupt("missing magic"));
            }
            let max = lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_CHUNK);
            if word == 0 || word as usize > max {
                return Err(corrupt(&format!(
                    "chunk size {word} out of range (an lz4 segment must be the last)"
                )));
            }
            self.chunk.resize(word as usize, 0);
            self.input.read_exact(&mut self.chunk).map_err(|_| corrupt("truncated chunk"))?;
            self.out.resize(LZ4_LEGACY_CHUNK, 0);
            let n = lz4_flex::block::decompress_into(&self.chunk, &mut self.out)
                .map_err(|e| corrupt(&format!("corrupt chunk: {e}")))?;
            self.out.truncate(n);
            self.pos = 0;
            return Ok(true);
        }
    }
}

impl<R: BufRead> Read for Lz4LegacyDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.out.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How to compress: the codec plus its knobs. Defaults are the kernel-compatible
/// settings: xz with the CRC32 check (the kernel's xz decoder knows no CRC64/SHA-256),
/// zstd and gzip at their usual levels, zstd on every core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub kind: Compression,
    /// Codec level; `None` picks the codec's customary default.
    pub level: Option<u32>,
    /// Worker threads where the codec allows (zstd); 0 means one per core.
    pub threads: u32,
}

impl EncoderSettings {
    pub fn new(kind: Compression) -> EncoderSettings {
        EncoderSettings { kind, level: None, threads: 0 }
    }
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Worker threads for a setting where 0 means one per core.
fn threads(setting: u32) -> u32 {
    if setting == 0 {
        cores()
    } else {
        setting
    }
}

/// A compressing [`Write`]; call [`Encoder::finish`] to end the stream and get the inner
/// writer back (dropping it without `finish` leaves a truncated stream).
pub struct Encoder<W: Write> {
    state: EncoderState<W>,
}

enum EncoderState<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Lz4(Lz4LegacyEncoder<W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(settings: EncoderSettings, out: W) -> Result<Encoder<W>> {
        use liblzma::stream::{Check, LzmaOptions, Stream};
        let level = settings.level;
        let state = match settings.kind {
            Compression::None => EncoderState::None(out),
            Compression::Gzip => EncoderState::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(level.unwrap_or(6).min(9)),
            )),
            // The kernel's xz decoder knows only CRC32 (and none) as check; several
            // blocks, as the multi-threaded encoder writes, are fine for it.
            Compression::Xz => EncoderState::Xz(liblzma::write::XzEncoder::new_stream(
                out,
                liblzma::stream::MtStreamBuilder::new()
                    .threads(threads(settings.threads))
                    .preset(level.unwrap_or(6).min(9))
                    .check(Check::Crc32)
                    .encoder()?,
            )),
            Compression::Lzma => EncoderState::Xz(liblzma::write::XzEncoder::new_stream(
                out,
                Stream::new_lzma_encoder(&LzmaOptions::new_preset(level.unwrap_or(6).min(9))?)?,
            )),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, level.unwrap_or(3) as i32)?;
                let threads = threads(settings.threads);
                if threads > 1 {
                    enc.multithread(threads)?;
                }
                enc.include_checksum(true)?;
                EncoderState::Zstd(enc)
            }
            Compression::Bzip2 => EncoderState::Bzip2(bzip2::write::BzEncoder::new(
                out,
                bzip2::Compression::new(level.unwrap_or(9).clamp(1, 9)),
            )),
            Compression::Lz4Legacy => EncoderState::Lz4(Lz4LegacyEncoder::new(out)),
            Compression::Lzo => bail!("unsupported compression lzo: bootkmod does not write lzo"),
        };
        Ok(Encoder { state })
    }

    /// End the stream; returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self.state {
            EncoderState::None(w) => Ok(w),
            EncoderState::Gzip(e) => e.finish(),
            EncoderState::Xz(e) => e.finish(),
            EncoderState::Zstd(e) => e.finish(),
            EncoderState::Bzip2(e) => e.finish(),
            EncoderState::Lz4(e) => e.finish(),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.state {
            EncoderState::None(w) => w,
            EncoderState::Gzip(e) => e,
            EncoderState::Xz(e) => e,
            EncoderState::Zstd(e) => e,
            EncoderState::Bzip2(e) => e,
            EncoderState::Lz4(e) => e,
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

/// Writes the kernel's legacy lz4 framing (what `lz4 -l` writes): the magic, then each
/// 8 MiB of input as a little-endian u32 block size and one lz4 block.
struct Lz4LegacyEncoder<W: Write> {
    out: W,
    pending: Vec<u8>,
    wrote_magic: bool,
}

impl<W: Write> Lz4LegacyEncoder<W> {
    fn new(out: W) -> Self {
        Lz4LegacyEncoder { out, pending: Vec::with_capacity(LZ4_LEGACY_CHUNK), wrote_magic: false }
    }

    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if !self.wrote_magic {
            self.out.write_all(&LZ4_LEGACY_MAGIC.to_le_bytes())?;
            self.wrote_magic = true;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = lz4_flex::block::compress(&self.pending);
        self.out.write_all(&(block.len() as u32).to_le_bytes())?;
        self.out.write_all(&block)?;
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.flush_chunk()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Lz4LegacyEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = LZ4_LEGACY_CHUNK - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == LZ4_LEGACY_CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
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
    fn stream_decoders_stop_where_the_stream_ends() {
        let data = b"0707010000 cpio-ish payload ".repeat(5000);
        for kind in [
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
            Compression::Bzip2,
            Compression::Lzma,
            Compression::Lz4Legacy,
        ] {
            let mut enc = Encoder::new(EncoderSettings::new(kind), Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let mut stream = enc.finish().unwrap();
            assert_eq!(Compression::detect(&stream), kind);
            let len = stream.len() as u64;
            if kind != Compression::Lz4Legacy {
                stream.extend_from_slice(b"\x00\x00\x00\x00070701 next segment");
            }
            let mut dec = StreamDecoder::new(kind, &stream[..]).unwrap();
            let mut out = Vec::new();
            dec.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{kind}");
            assert_eq!(dec.consumed(), len, "{kind} stopped at the wrong byte");
        }
    }

    #[test]
    fn multi_block_xz_stops_at_its_stream_end() {
        // Many blocks, decoded by several threads: the next segment must still start
        // right after the stream footer.
        let data: Vec<u8> =
            (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 29) as u8).collect();
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(256 << 10)
            .preset(1)
            .check(liblzma::stream::Check::Crc32)
            .encoder()
            .unwrap();
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(&data).unwrap();
        let mut image = enc.finish().unwrap();
        let len = image.len() as u64;
        image.extend_from_slice(b"\x00\x00\x00\x00070701");
        let mut dec = StreamDecoder::new(Compression::Xz, &image[..]).unwrap();
        let mut out = Vec::new();
        dec.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(dec.consumed(), len);
    }

    #[test]
    fn lz4_legacy_rejects_trailing_bytes_and_truncation() {
        let mut enc =
            Encoder::new(EncoderSettings::new(Compression::Lz4Legacy), Vec::new()).unwrap();
        enc.write_all(&[7u8; 1000]).unwrap();
        let good = enc.finish().unwrap();
        let mut out = Vec::new();
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 4]);
        assert!(StreamDecoder::new(Compression::Lz4Legacy, &padded[..])
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
        let cut = &good[..good.len() - 3];
        assert!(StreamDecoder::new(Compression::Lz4Legacy, cut)
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
    }

    #[test]
    fn garbage_after_magic_is_an_error_and_bombs_are_bounded() {
        assert!(decode_all(b"\x28\xb5\x2f\xfdgarbage", MAX_DECODED_MODULE).is_err());
        assert!(decode_all(b"\x1f\x8bgarbage", MAX_DECODED_MODULE).is_err());
        let zeros = zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap();
        assert!(decode_all(&zeros, 1000).is_err());
    }
}
