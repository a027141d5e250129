//! Walking an image's segments the way `init/initramfs.c` (`unpack_to_rootfs`) does.
//!
//! The image is read once, front to back, from a [`BufRead`]; nothing is held whole.
//! At each position:
//! - a zero byte is padding and is skipped;
//! - `0` at a 4-byte aligned offset starts a raw (uncompressed) newc/crc entry; raw
//!   entries follow each other (with optional zero padding) until something else appears;
//! - anything else must be a compression magic: the stream is decoded in process, its
//!   output parsed as cpio entries, and the walk resumes exactly where the decoder
//!   stopped. Inside a compressed stream, zeros between entries are padding and any
//!   other byte than `0` is "junk"; the stream must end between entries.
//!
//! Each entry is handed to a [`Visitor`] with a reader over its body, so a caller can
//! list (ignore bodies), build the merged view, or stream contents to disk. crc-format
//! sums of regular files are verified as the kernel does.

use crate::formats::compression::{Compression, StreamDecoder};
use crate::formats::cpio::{self, Format, Header, HEADER_LEN};
use anyhow::{bail, Context, Result};
use std::io::{self, BufRead, Read};

/// One segment: a run of raw cpio entries, or one compressed stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    /// Position in the image, counting from 0.
    pub index: usize,
    /// Byte offset of the segment's first byte in the image.
    pub offset: u64,
    /// Bytes the segment occupies in the image (compressed size for compressed ones).
    pub length: u64,
    pub compression: Compression,
    /// The cpio variant of its first entry.
    pub format: Option<Format>,
    /// Size of the cpio data (the decompressed size for compressed segments).
    pub cpio_size: u64,
    /// Entries, trailers included.
    pub entries: u64,
    /// Whether a `TRAILER!!!` was seen in it.
    pub trailer: bool,
}

impl Segment {
    /// Offset just past the segment.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// One cpio entry as found in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Running number over the whole image (trailers included), for second passes.
    pub seq: u64,
    /// Index of the segment holding it.
    pub segment: usize,
    /// Offset of the header: in the image for raw segments, in the decompressed stream
    /// for compressed ones.
    pub offset: u64,
    pub header: Header,
    /// The name as the kernel reads it (up to the first NUL).
    pub name: Vec<u8>,
}

impl Entry {
    pub fn is_trailer(&self) -> bool {
        self.name == cpio::TRAILER
    }
}

/// What a walk reports to its caller.
pub trait Visitor {
    /// An entry (trailers included). `body` yields exactly `filesize` bytes; what the
    /// visitor leaves unread is skipped (and still checksummed) by the walker.
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()>;
    /// A segment is complete.
    fn segment(&mut self, _segment: &Segment) -> Result<()> {
        Ok(())
    }
}

/// A visitor that ignores everything (for `--segments`).
pub struct Ignore;
impl Visitor for Ignore {
    fn entry(&mut self, _: &Entry, _: &mut dyn Read) -> Result<()> {
        Ok(())
    }
}

/// Walk an image. Returns its segments; `source` names the image in errors.
pub fn walk<R: BufRead + Send>(
    image: R,
    source: &str,
    visitor: &mut dyn Visitor,
) -> Result<Vec<Segment>> {
    Ok(walk_from(image, source, Resume::default(), visitor)?.0)
}

/// Where a walk starts: the image's first byte, or where an earlier walk over a prefix
/// of the same image ended (to read only what was appended to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// Image offset of the reader's first byte.
    pub offset: u64,
    /// Index of the next segment.
    pub segment: usize,
    /// [`Entry::seq`] of the next entry.
    pub seq: u64,
}

/// Walk the rest of an image from `start`, `image` being positioned there. Returns the
/// segments found and where the walk ended (the end of the input).
pub fn walk_from<R: BufRead + Send>(
    image: R,
    source: &str,
    start: Resume,
    visitor: &mut dyn Visitor,
) -> Result<(Vec<Segment>, Resume)> {
    let walker = Walker {
        image: Positioned { inner: image, pos: start.offset },
        segments: Vec::new(),
        first_segment: start.segment,
        seq: start.seq,
    };
    walker.run(visitor).with_context(|| source.to_string())
}

/// A reader that knows its position; the kernel's alignment rules are about positions.
struct Positioned<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Positioned<R> {
    /// Skip zero bytes; return the next byte (not consumed) or `None` at the end.
    fn skip_zeros(&mut self) -> io::Result<Option<u8>> {
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|&b| b != 0) {
                Some(i) => {
                    let b = buf[i];
                    self.inner.consume(i);
                    self.pos += i as u64;
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.inner.consume(n);
                    self.pos += n as u64;
                }
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let k = (buf.len() as u64).min(n) as usize;
            self.inner.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Positioned<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

struct Walker<R> {
    image: Positioned<R>,
    segments: Vec<Segment>,
    first_segment: usize,
    seq: u64,
}

impl<R: BufRead + Send> Walker<R> {
    fn run(mut self, visitor: &mut dyn Visitor) -> Result<(Vec<Segment>, Resume)> {
        while let Some(byte) = self.image.skip_zeros()? {
            let offset = self.image.pos;
            let index = self.first_segment + self.segments.len();
            if byte == b'0' && offset.is_multiple_of(4) {
                let mut segment = new_segment(index, offset, Compression::None);
                let mut parser = Parser { input: &mut self.image, seq: &mut self.seq };
                // Raw entries: the kernel goes back to its outer loop after each one,
                // so a raw run ends at a trailer or at anything that is not an entry.
                loop {
                    let entry = parser.entry(index, visitor)?;
                    segment.entries += 1;
                    segment.format.get_or_insert(entry.header.format);
                    if entry.is_trailer() {
                        segment.trailer = true;
                        break;
                    }
                    match parser.input.skip_zeros()? {
                        Some(b'0') if parser.input.pos.is_multiple_of(4) => continue,
                        Some(_) if !parser.input.pos.is_multiple_of(4) => {
                            bail!("broken padding: data at unaligned offset {} after a raw cpio entry", parser.input.pos)
                        }
                        _ => break,
                    }
                }
                segment.length = self.image.pos - offset;
                segment.cpio_size = segment.length;
                visitor.segment(&segment)?;
                self.segments.push(segment);
                continue;
            }
            let kind = self.compressed(byte, offset)?;
            let mut segment = new_segment(index, offset, kind);
            let what = || format!("{kind} segment at offset {offset}");
            // The decoder runs on its own thread, a few chunks ahead of the parser: the two
            // halves of the work overlap, as in a `zstd -d | cpio -t` pipeline.
            let inner = &mut self.image.inner;
            let seq = &mut self.seq;
            let (cpio_size, consumed) = std::thread::scope(|scope| -> Result<(u64, u64)> {
                let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
                // Spent chunks go back to the decoder: no fresh pages per chunk.
                let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
                let decoding = scope.spawn(move || decode_into(kind, inner, tx, spent_rx));
                let mut decoded = Positioned { inner: ChunkReader::new(rx, spent_tx), pos: 0 };
                let mut parser = Parser { input: &mut decoded, seq };
                loop {
                    match parser.input.skip_zeros().with_context(what)? {
                        None => break,
                        Some(b'0') => {}
                        Some(_) => bail!(
                            "{}: junk within compressed archive at decompressed offset {}",
                            what(),
                            parser.input.pos
                        ),
                    }
                    let entry = parser.entry(index, visitor).with_context(what)?;
                    segment.entries += 1;
                    segment.format.get_or_insert(entry.header.format);
                    segment.trailer |= entry.is_trailer();
                }
                let cpio_size = decoded.pos;
                drop(decoded);
                let consumed = decoding
                    .join()
                    .map_err(|_| anyhow::anyhow!("{}: decoder thread panicked", what()))?
                    .with_context(what)?;
                Ok((cpio_size, consumed))
            })?;
            segment.cpio_size = cpio_size;
            self.image.pos += consumed;
            segment.length = consumed;
            if segment.entries == 0 {
                bail!("{}: holds no cpio entries", what());
            }
            visitor.segment(&segment)?;
            self.segments.push(segment);
        }
        let end = Resume {
            offset: self.image.pos,
            segment: self.first_segment + self.segments.len(),
            seq: self.seq,
        };
        Ok((self.segments, end))
    }

    /// The compression starting at `offset`, or the kernel's error for what is there.
    fn compressed(&mut self, first: u8, offset: u64) -> Result<Compression> {
        let head = self.image.inner.fill_buf()?;
        let kind = Compression::detect(head);
        match kind {
            Compression::None if first == b'0' => bail!(
                "invalid magic at start of compressed archive at offset {offset}: a raw cpio must start 4-byte aligned"
            ),
            Compression::None => bail!(
                "invalid magic at start of compressed archive at offset {offset} (byte {first:#04x})"
            ),
            Compression::Lzo => bail!("unsupported compression lzo at offset {offset}"),
            kind => Ok(kind),
        }
    }
}

/// Decoder thread: decode one stream of `kind` from `input` in chunks sent to the parser;
/// returns the compressed bytes consumed. Stops early when the parser hangs up.
fn decode_into<R: BufRead>(
    kind: Compression,
    input: &mut R,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<u64> {
    let mut decoder = StreamDecoder::new(kind, input)?;
    loop {
        let mut chunk = spent.try_recv().unwrap_or_default();
        chunk.resize(256 << 10, 0);
        let mut filled = 0;
        while filled < chunk.len() {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let message = e.to_string();
                    let _ = tx.send(Err(e));
                    bail!("corrupt data: {message}");
                }
            }
        }
        if filled == 0 {
            return Ok(decoder.consumed());
        }
        chunk.truncate(filled);
        if tx.send(Ok(chunk)).is_err() {
            return Ok(decoder.consumed());
        }
    }
}

/// The parser's side of the decoder thread: chunks as a `BufRead`.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(
        rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
        spent: std::sync::mpsc::SyncSender<Vec<u8>>,
    ) -> Self {
        ChunkReader { rx, spent, chunk: Vec::new(), pos: 0 }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.chunk, chunk);
                    let _ = self.spent.try_send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder finished: end of the decompressed stream.
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.pos..])
    }
    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.chunk.len());
    }
}

fn new_segment(index: usize, offset: u64, compression: Compression) -> Segment {
    Segment {
        index,
        offset,
        length: 0,
        compression,
        format: None,
        cpio_size: 0,
        entries: 0,
        trailer: false,
    }
}

/// Parses entries from a positioned reader (the image itself, or a decoded stream).
struct Parser<'a, R> {
    input: &'a mut Positioned<R>,
    seq: &'a mut u64,
}

impl<R: BufRead> Parser<'_, R> {
    /// Parse one entry at the current (aligned, `0`) position and hand it to `visitor`.
    fn entry(&mut self, segment: usize, visitor: &mut dyn Visitor) -> Result<Entry> {
        let offset = self.input.pos;
        let at = || format!("cpio entry at offset {offset}");
        let mut raw = [0u8; HEADER_LEN];
        self.input.read_exact(&mut raw).map_err(truncated).with_context(at)?;
        let header = Header::parse(&raw).with_context(at)?;
        if header.namesize == 0 || header.namesize > cpio::PATH_MAX {
            bail!("{}: name length {} is outside 1..={}", at(), header.namesize, cpio::PATH_MAX);
        }
        let mut name = vec![0u8; header.namesize as usize];
        self.input.read_exact(&mut name).map_err(truncated).with_context(at)?;
        let name = cpio::name_from_field(&name).to_vec();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let here = || format!("cpio entry {shown:?} at offset {offset}");
        if header.file_type() == cpio::S_IFLNK && header.filesize > cpio::PATH_MAX {
            bail!(
                "{}: symlink target of {} bytes exceeds {}",
                here(),
                header.filesize,
                cpio::PATH_MAX
            );
        }
        self.input
            .skip(header.name_span() - HEADER_LEN as u64 - u64::from(header.namesize))
            .map_err(truncated)
            .with_context(here)?;
        let entry = Entry { seq: *self.seq, segment, offset, header, name };
        *self.seq += 1;
        let h = &entry.header;
        // Only crc-format regular files carry a sum the kernel checks.
        let summed = h.format == Format::Crc && h.file_type() == cpio::S_IFREG;
        let mut body =
            Body { input: &mut *self.input, left: u64::from(h.filesize), sum: summed.then_some(0) };
        visitor.entry(&entry, &mut body)?;
        if summed {
            io::copy(&mut body, &mut io::sink()).map_err(truncated).with_context(here)?;
        } else {
            // What the visitor did not read is skipped in place, without copying.
            let left = body.left;
            body.input.skip(left).map_err(truncated).with_context(here)?;
        }
        let sum = body.sum.unwrap_or(0);
        if summed && sum != h.check {
            bail!("{}: bad data checksum (header {:#010x}, data {:#010x})", here(), h.check, sum);
        }
        let end = offset + h.name_span() + h.body_span();
        self.input.skip(end - self.input.pos).map_err(truncated).with_context(here)?;
        Ok(entry)
    }
}

fn truncated(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        anyhow::anyhow!("truncated: the image ends inside this entry")
    } else {
        anyhow::Error::new(e).context("corrupt data")
    }
}

/// The body of one entry: at most `left` bytes, summed as they pass when `sum` is set.
struct Body<'a, R> {
    input: &'a mut Positioned<R>,
    left: u64,
    sum: Option<u32>,
}

impl<R: BufRead> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = (buf.len() as u64).min(self.left) as usize;
        let n = self.input.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(sum) = self.sum.as_mut() {
            *sum = cpio::checksum(&buf[..n], *sum);
        }
        self.left -= n as u64;
        Ok(n)
    }
}
