//! A Unified Kernel Image: a PE/COFF EFI executable (systemd's stub) carrying the kernel
//! (`.linux`), its initramfs (`.initrd`), command line (`.cmdline`), os-release
//! (`.osrel`) and kernel release (`.uname`) as sections; Secure Boot signs it with an
//! Authenticode signature in the PE certificate table (data directory 4).
//!
//! Read with the `object` crate's PE reader (bounds-checked; already a dependency for
//! writing sample modules), which [`Pe::read`] turns into the layout this module
//! checks and rewrites: every section's raw data inside the file, no two sections
//! overlapping in the file or in memory, alignments powers of two.
//!
//! Writing ([`replace_initrd`]) gives a UKI a new `.initrd` and keeps it a valid PE:
//! the sections before `.initrd` (the stub's code and data, and payload placed before
//! it) keep their bytes, addresses and file offsets; `.initrd` keeps its address and
//! grows, and the sections after it in memory (a ukify layout puts `.linux` there) are
//! moved up, each keeping its address's alignment (up to 2 MiB, so a kernel placed on a
//! 2 MiB boundary stays on one), and laid out in the file after the kept ones. Only UKI
//! payload sections ([`PAYLOAD`]) are ever moved, and none that the entry point or a
//! data directory points into: the stub finds its payload by section name, so nothing
//! else refers to their addresses. `SizeOfImage`, `SizeOfInitializedData` and the
//! sections' `VirtualAddress`/`VirtualSize`/`PointerToRawData`/`SizeOfRawData` follow;
//! a COFF symbol table after the sections (objcopy keeps the stub's) moves with the end
//! of the file. The PE checksum is recomputed when the image had one (objcopy writes
//! it) and left 0 when it was 0 (ukify writes 0; EFI loaders do not check it).
//!
//! A signed image is never rewritten here: [`strip_signature`] removes the certificate
//! table first, and the caller re-signs (`operations::uki`).

use anyhow::{bail, Context, Result};
use object::pe::ImageSectionHeader;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile32, PeFile64};
use object::LittleEndian as LE;

/// The facts of a UKI, and where its payload sections are in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Uki {
    /// `.uname`: the kernel release it boots.
    pub uname: Option<String>,
    /// `.osrel`: its os-release text.
    pub osrel: Option<String>,
    /// `.cmdline`: the kernel command line built in.
    pub cmdline: Option<String>,
    /// File ranges of `.linux` and `.initrd` (offset, length).
    pub linux: Option<(usize, usize)>,
    pub initrd: Option<(usize, usize)>,
    /// The Authenticode certificate table (offset, length), when signed.
    pub signature: Option<(usize, usize)>,
}

/// Data directory 4: the certificate table (a file offset, not an address).
const CERTIFICATE_TABLE: usize = 4;

/// Sections a UKI builder adds to the stub (systemd-stub(7), ukify): the only ones
/// [`replace_initrd`] moves.
pub const PAYLOAD: &[&str] = &[
    ".linux", ".initrd", ".osrel", ".cmdline", ".uname", ".splash", ".dtb", ".dtbauto", ".hwids",
    ".ucode", ".pcrsig", ".pcrpkey", ".profile", ".sbom", ".efifw",
];

/// A section as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// Offset of its 40-byte header in the file.
    header: usize,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
    pub characteristics: u32,
}

impl Section {
    /// Bytes the section occupies in memory (a zero `VirtualSize` means the raw size).
    fn extent(&self) -> u64 {
        u64::from(if self.virtual_size > 0 { self.virtual_size } else { self.raw_size })
    }

    fn raw_end(&self) -> u64 {
        u64::from(self.raw_offset) + u64::from(self.raw_size)
    }

    /// The payload bytes: the smaller of the raw size (rounded up to the file
    /// alignment) and the virtual size.
    fn payload(&self) -> (usize, usize) {
        let len = if self.virtual_size > 0 {
            self.raw_size.min(self.virtual_size)
        } else {
            self.raw_size
        };
        (self.raw_offset as usize, len as usize)
    }
}

/// The layout of a PE image: what [`replace_initrd`] reads and writes.
#[derive(Debug, Clone)]
pub struct Pe {
    /// Offset of the optional header.
    optional: usize,
    /// Offset of the data directories, and how many there are.
    directories: usize,
    pub directory: Vec<(u32, u32)>,
    pub sections: Vec<Section>,
    pub file_alignment: u32,
    pub section_alignment: u32,
    pub size_of_headers: u32,
    pub size_of_image: u32,
    pub size_of_initialized_data: u32,
    pub entry_point: u32,
    pub checksum: u32,
    pub symbol_table: u32,
    /// Offset of the COFF file header's `PointerToSymbolTable`.
    symbol_table_field: usize,
}

// Offsets inside the optional header (PE/COFF specification; equal for PE32 and PE32+
// up to the data directories).
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_CHECKSUM: usize = 64;
// Offsets inside a section header.
const SEC_VIRTUAL_SIZE: usize = 8;
const SEC_VIRTUAL_ADDRESS: usize = 12;
const SEC_RAW_SIZE: usize = 16;
const SEC_RAW_OFFSET: usize = 20;

impl Pe {
    /// Read and check a PE image's layout (PE32 or PE32+).
    pub fn read(bytes: &[u8]) -> Result<Pe> {
        if bytes.get(..2) != Some(b"MZ") {
            bail!("not a PE file (no MZ header)");
        }
        match PeFile64::parse(bytes) {
            Ok(pe) => Self::from_object(&pe, bytes),
            Err(_) => Self::from_object(&PeFile32::parse(bytes).context("not a PE file")?, bytes),
        }
    }

    fn from_object<H: ImageNtHeaders>(
        pe: &object::read::pe::PeFile<'_, H>,
        bytes: &[u8],
    ) -> Result<Pe> {
        let nt = pe.dos_header().nt_headers_offset() as usize;
        let optional = nt + 4 + std::mem::size_of::<object::pe::ImageFileHeader>();
        let headers = pe.nt_headers();
        let file = headers.file_header();
        let opt = headers.optional_header();
        let table = optional + usize::from(file.size_of_optional_header.get(LE));
        let directory: Vec<(u32, u32)> = pe
            .data_directories()
            .iter()
            .map(|d| (d.virtual_address.get(LE), d.size.get(LE)))
            .collect();
        let directories = optional + std::mem::size_of::<H::ImageOptionalHeader>();
        let sections: Vec<Section> = pe
            .section_table()
            .iter()
            .enumerate()
            .map(|(i, s): (usize, &ImageSectionHeader)| Section {
                name: String::from_utf8_lossy(s.raw_name()).trim_end_matches('\0').to_string(),
                header: table + i * std::mem::size_of::<ImageSectionHeader>(),
                virtual_address: s.virtual_address.get(LE),
                virtual_size: s.virtual_size.get(LE),
                raw_offset: s.pointer_to_raw_data.get(LE),
                raw_size: s.size_of_raw_data.get(LE),
                characteristics: s.characteristics.get(LE),
            })
            .collect();
        let layout = Pe {
            optional,
            directories,
            directory,
            sections,
            file_alignment: opt.file_alignment(),
            section_alignment: opt.section_alignment(),
            size_of_headers: opt.size_of_headers(),
            size_of_image: opt.size_of_image(),
            size_of_initialized_data: opt.size_of_initialized_data(),
            entry_point: opt.address_of_entry_point(),
            checksum: opt.check_sum(),
            symbol_table: file.pointer_to_symbol_table.get(LE),
            symbol_table_field: nt + 4 + 8,
        };
        layout.check(bytes.len())?;
        Ok(layout)
    }

    /// What every reader and the rewrite rely on.
    fn check(&self, len: usize) -> Result<()> {
        for (what, a) in
            [("FileAlignment", self.file_alignment), ("SectionAlignment", self.section_alignment)]
        {
            if !a.is_power_of_two() {
                bail!("{what} {a:#x} is not a power of two");
            }
        }
        let len = len as u64;
        if u64::from(self.size_of_headers) > len {
            bail!("SizeOfHeaders {:#x} runs past the end of the file", self.size_of_headers);
        }
        for s in &self.sections {
            if s.raw_size > 0 && s.raw_end() > len {
                bail!(
                    "section {} runs past the end of the file ({:#x} + {:#x} > {len:#x})",
                    s.name,
                    s.raw_offset,
                    s.raw_size
                );
            }
            if u64::from(s.virtual_address) + s.extent() > u64::from(u32::MAX) {
                bail!("section {} runs past the 4 GiB address space", s.name);
            }
        }
        for (i, a) in self.sections.iter().enumerate() {
            for b in &self.sections[i + 1..] {
                let file = a.raw_size > 0
                    && b.raw_size > 0
                    && u64::from(a.raw_offset) < b.raw_end()
                    && u64::from(b.raw_offset) < a.raw_end();
                let va = |s: &Section| {
                    (u64::from(s.virtual_address), u64::from(s.virtual_address) + s.extent())
                };
                let ((a0, a1), (b0, b1)) = (va(a), va(b));
                let memory = a1 > a0 && b1 > b0 && a0 < b1 && b0 < a1;
                if file || memory {
                    bail!(
                        "sections {} and {} overlap in {}",
                        a.name,
                        b.name,
                        if file { "the file" } else { "memory" }
                    );
                }
            }
        }
        Ok(())
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The certificate table (file offset, length), when the image is signed.
    pub fn signature(&self) -> Option<(usize, usize)> {
        self.directory
            .get(CERTIFICATE_TABLE)
            .filter(|(_, len)| *len > 0)
            .map(|&(off, len)| (off as usize, len as usize))
    }

    /// The checksum the specification gives for `bytes` (this image's file).
    pub fn computed_checksum(&self, bytes: &[u8]) -> u32 {
        checksum(bytes, self.checksum_offset())
    }

    fn checksum_offset(&self) -> usize {
        self.optional + OPT_CHECKSUM
    }

    fn directory_offset(&self, index: usize) -> usize {
        self.directories + index * 8
    }
}

impl Uki {
    /// Read a PE file's UKI sections. An EFI file without `.linux` is not a UKI.
    pub fn parse(bytes: &[u8]) -> Result<Uki> {
        let pe = Pe::read(bytes)?;
        let range = |name: &str| pe.section(name).filter(|s| s.raw_size > 0).map(Section::payload);
        let text = |name: &str| {
            range(name).map(|(o, l)| {
                String::from_utf8_lossy(&bytes[o..o + l]).trim_end_matches(['\0', '\n']).to_string()
            })
        };
        let linux = range(".linux");
        if linux.is_none() {
            bail!("a PE file without a .linux section: not a Unified Kernel Image");
        }
        Ok(Uki {
            uname: text(".uname"),
            osrel: text(".osrel"),
            cmdline: text(".cmdline"),
            linux,
            initrd: range(".initrd"),
            signature: pe.signature(),
        })
    }

    /// Whether a file starts like a PE image (`MZ`): an initramfs never does.
    pub fn looks_like(head: &[u8]) -> bool {
        head.starts_with(b"MZ")
    }

    /// `PRETTY_NAME` (else `NAME`) of `.osrel`.
    pub fn os_name(&self) -> Option<String> {
        let osrel = self.osrel.as_deref()?;
        let get = |key: &str| {
            osrel.lines().find_map(|l| {
                l.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim_matches('"').to_string())
            })
        };
        get("PRETTY_NAME").or_else(|| get("NAME"))
    }
}

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn to_u32(value: u64, what: &str) -> Result<u32> {
    u32::try_from(value).ok().with_context(|| format!("{what} {value:#x} does not fit a PE image"))
}

/// The PE checksum (PE/COFF specification, "CheckSum"): the file as little-endian
/// 16-bit words, the checksum field itself taken as zero, summed with the carries
/// folded back in, plus the file's length.
pub fn checksum(bytes: &[u8], field: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, pair) in bytes.chunks(2).enumerate() {
        let at = i * 2;
        if at >= field && at < field + 4 {
            continue;
        }
        let word = u64::from(pair[0]) | pair.get(1).map_or(0, |&b| u64::from(b) << 8);
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// Set the checksum of a rewritten image: recomputed when the image had one, left 0
/// when it had none.
fn finish_checksum(bytes: &mut [u8], pe: &Pe) {
    let field = pe.checksum_offset();
    if pe.checksum != 0 {
        let sum = checksum(bytes, field);
        put32(bytes, field, sum);
    }
}

/// The image without its Authenticode signature: the certificate table (which must be
/// the end of the file, where signing tools put it) cut off and data directory 4
/// cleared. An unsigned image comes back unchanged.
pub fn strip_signature(bytes: &[u8]) -> Result<Vec<u8>> {
    let pe = Pe::read(bytes)?;
    let Some((offset, len)) = pe.signature() else { return Ok(bytes.to_vec()) };
    if offset.checked_add(len) != Some(bytes.len()) {
        bail!(
            "the certificate table ({offset:#x} + {len:#x}) is not the end of the file \
             ({:#x}): not stripping a signature bootkmod cannot delimit",
            bytes.len()
        );
    }
    if pe.sections.iter().any(|s| s.raw_size > 0 && s.raw_end() > offset as u64) {
        bail!("the certificate table overlaps a section");
    }
    let mut out = bytes[..offset].to_vec();
    let at = pe.directory_offset(CERTIFICATE_TABLE);
    put32(&mut out, at, 0);
    put32(&mut out, at + 4, 0);
    finish_checksum(&mut out, &pe);
    Ok(out)
}

/// What [`replace_initrd`] did to the layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rewrite {
    pub initrd_before: u32,
    pub initrd_after: u32,
    /// Sections moved up behind the grown `.initrd` (name, old address, new address).
    pub moved: Vec<(String, u32, u32)>,
    pub size_of_image: u32,
    /// The checksum written (0: none, as before).
    pub checksum: u32,
}

/// `bytes` (an unsigned UKI) with `initrd` as its `.initrd` section. See the module
/// overview for the layout rules.
pub fn replace_initrd(bytes: &[u8], initrd: &[u8]) -> Result<(Vec<u8>, Rewrite)> {
    let pe = Pe::read(bytes)?;
    if let Some((offset, len)) = pe.signature() {
        bail!("the image is signed (certificate table at {offset:#x}, {len} bytes): strip the signature first");
    }
    let Some(old) = pe.section(".initrd").cloned() else {
        bail!("no .initrd section to replace");
    };
    let (fa, sa) = (u64::from(pe.file_alignment), u64::from(pe.section_alignment));
    // Everything at or above .initrd in memory is laid out anew, in address order.
    let mut moved: Vec<&Section> =
        pe.sections.iter().filter(|s| s.virtual_address >= old.virtual_address).collect();
    moved.sort_by_key(|s| s.virtual_address);
    for s in &moved {
        if !PAYLOAD.contains(&s.name.as_str()) {
            bail!(
                "section {} lies after .initrd and is not UKI payload: bootkmod moves only {}",
                s.name,
                PAYLOAD.join(" ")
            );
        }
        let (start, end) =
            (u64::from(s.virtual_address), u64::from(s.virtual_address) + s.extent());
        if (start..end).contains(&u64::from(pe.entry_point)) {
            bail!("the entry point lies in section {}, which would move", s.name);
        }
        for (i, &(rva, size)) in pe.directory.iter().enumerate() {
            let (d0, d1) = (u64::from(rva), u64::from(rva) + u64::from(size));
            if i != CERTIFICATE_TABLE && size > 0 && d0 < end && start < d1 {
                bail!("data directory {i} points into section {}, which would move", s.name);
            }
        }
    }
    let is_moved = |s: &Section| s.virtual_address >= old.virtual_address;
    // The file keeps everything up to the end of the kept sections' data.
    let kept_end = pe
        .sections
        .iter()
        .filter(|s| !is_moved(s) && s.raw_size > 0)
        .map(Section::raw_end)
        .chain([u64::from(pe.size_of_headers)])
        .max()
        .unwrap_or(0);
    let old_end = pe.sections.iter().map(Section::raw_end).chain([kept_end]).max().unwrap_or(0);
    let symbols = u64::from(pe.symbol_table);
    if symbols != 0 && symbols < old_end && symbols >= kept_end {
        bail!("the COFF symbol table lies among the sections that would move");
    }
    let mut out = bytes[..kept_end as usize].to_vec();
    let mut file = align_up(kept_end, fa);
    let mut memory = u64::from(old.virtual_address);
    let mut rewrite = Rewrite {
        initrd_before: old.payload().1 as u32,
        initrd_after: to_u32(initrd.len() as u64, ".initrd size")?,
        moved: Vec::new(),
        size_of_image: 0,
        checksum: 0,
    };
    let mut headers: Vec<(usize, u32, u32, u32, u32)> = Vec::new();
    for s in &moved {
        let is_initrd = s.header == old.header;
        let (data, virtual_size) = if is_initrd {
            (initrd, rewrite.initrd_after)
        } else {
            let (o, l) = (s.raw_offset as usize, s.raw_size as usize);
            (&bytes[o..o + l], s.virtual_size)
        };
        let address = if is_initrd {
            memory
        } else {
            // Keep the address's own alignment (a kernel on 2 MiB stays on 2 MiB).
            let natural = 1u64 << s.virtual_address.trailing_zeros().min(21);
            align_up(memory, natural.max(sa))
        };
        let raw_size = if is_initrd { align_up(data.len() as u64, fa) } else { data.len() as u64 };
        let offset = if data.is_empty() { 0 } else { file };
        out.resize(file as usize, 0);
        out.extend_from_slice(data);
        file = align_up(file + raw_size, fa);
        out.resize(file as usize, 0);
        let extent = if virtual_size > 0 { u64::from(virtual_size) } else { raw_size };
        memory = address + extent;
        if !is_initrd && address != u64::from(s.virtual_address) {
            rewrite.moved.push((s.name.clone(), s.virtual_address, to_u32(address, "address")?));
        }
        headers.push((
            s.header,
            to_u32(address, "section address")?,
            virtual_size,
            to_u32(offset, "file offset")?,
            to_u32(raw_size, "section size")?,
        ));
    }
    // What followed the sections (objcopy's COFF symbol table) follows them again.
    let trailing = &bytes[(old_end as usize).min(bytes.len())..];
    let new_end = out.len() as u64;
    out.extend_from_slice(trailing);
    for (header, address, virtual_size, offset, raw_size) in headers {
        put32(&mut out, header + SEC_VIRTUAL_ADDRESS, address);
        put32(&mut out, header + SEC_VIRTUAL_SIZE, virtual_size);
        put32(&mut out, header + SEC_RAW_OFFSET, offset);
        put32(&mut out, header + SEC_RAW_SIZE, raw_size);
    }
    if symbols >= old_end {
        let moved_to = to_u32(symbols - old_end + new_end, "symbol table offset")?;
        put32(&mut out, pe.symbol_table_field, moved_to);
    }
    let top = Pe::read(&out)
        .context("the rewritten image")?
        .sections
        .iter()
        .fold(0u64, |m, s| m.max(u64::from(s.virtual_address) + s.extent()));
    rewrite.size_of_image = to_u32(align_up(top, sa), "SizeOfImage")?;
    put32(&mut out, pe.optional + OPT_SIZE_OF_IMAGE, rewrite.size_of_image);
    if old.characteristics & object::pe::IMAGE_SCN_CNT_INITIALIZED_DATA != 0 {
        let grown = i64::from(pe.size_of_initialized_data)
            + align_up(initrd.len() as u64, fa) as i64
            - i64::from(old.raw_size);
        put32(
            &mut out,
            pe.optional + OPT_SIZE_OF_INITIALIZED_DATA,
            grown.clamp(0, u32::MAX.into()) as u32,
        );
    }
    finish_checksum(&mut out, &pe);
    rewrite.checksum = if pe.checksum != 0 { checksum(&out, pe.checksum_offset()) } else { 0 };
    Ok((out, rewrite))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FA: u32 = 0x200;
    const SA: u32 = 0x1000;

    /// A section of a synthetic image: name, address, content.
    struct S<'a>(&'a str, u32, &'a [u8]);

    /// A PE32+ EFI application: `.text` (the entry point) at 0x1000, then `sections`
    /// with their raw data in the given order; a nonzero checksum when `sum`; `trailer`
    /// bytes after the sections, named as the COFF symbol table.
    fn image(sections: &[S], sum: bool, trailer: &[u8]) -> Vec<u8> {
        let n = sections.len() + 1;
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        let nt = 0x80;
        b[nt..nt + 4].copy_from_slice(b"PE\0\0");
        b[nt + 4..nt + 6].copy_from_slice(&0x8664u16.to_le_bytes());
        b[nt + 6..nt + 8].copy_from_slice(&(n as u16).to_le_bytes());
        b[nt + 20..nt + 22].copy_from_slice(&240u16.to_le_bytes());
        b[nt + 22..nt + 24].copy_from_slice(&0x206u16.to_le_bytes());
        let o = nt + 24;
        b[o..o + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        put32(&mut b, o + 16, 0x1000); // entry point
        put32(&mut b, o + 32, SA);
        put32(&mut b, o + 36, FA);
        put32(&mut b, o + 60, 0x400);
        b[o + 68..o + 70].copy_from_slice(&10u16.to_le_bytes());
        put32(&mut b, o + 108, 16);
        let table = o + 240;
        let mut all = vec![S(".text", 0x1000, &[0xc3; 0x10])];
        all.extend(sections.iter().map(|s| S(s.0, s.1, s.2)));
        let mut top = 0;
        for (i, s) in all.iter().enumerate() {
            let h = table + i * 40;
            b[h..h + s.0.len()].copy_from_slice(s.0.as_bytes());
            let offset = b.len() as u32;
            b.extend_from_slice(s.2);
            b.resize(align_up(b.len() as u64, FA.into()) as usize, 0);
            put32(&mut b, h + 8, s.2.len() as u32);
            put32(&mut b, h + 12, s.1);
            put32(&mut b, h + 16, align_up(s.2.len() as u64, FA.into()) as u32);
            put32(&mut b, h + 20, offset);
            let flags = if i == 0 { 0x6000_0020 } else { 0x4000_0040 };
            put32(&mut b, h + 36, flags);
            top = top.max(s.1 as u64 + s.2.len() as u64);
        }
        put32(&mut b, o + 56, align_up(top, SA.into()) as u32);
        put32(&mut b, o + 8, 0x10000);
        if !trailer.is_empty() {
            let at = b.len() as u32;
            put32(&mut b, nt + 12, at);
            b.extend_from_slice(trailer);
        }
        if sum {
            let s = checksum(&b, o + OPT_CHECKSUM);
            put32(&mut b, o + OPT_CHECKSUM, s);
        }
        b
    }

    fn objcopy_layout(initrd: &[u8], sum: bool) -> Vec<u8> {
        image(
            &[
                S(".osrel", 0x20000, b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
                S(".cmdline", 0x30000, b"console=ttyS0 root=/dev/sda\n"),
                S(".uname", 0x40000, b"6.1.0-57-amd64"),
                S(".linux", 0x200_0000, &[0x4d; 0x1234]),
                S(".initrd", 0x300_0000, initrd),
            ],
            sum,
            b"symbols and strings",
        )
    }

    fn section<'a>(bytes: &'a [u8], name: &str) -> &'a [u8] {
        let pe = Pe::read(bytes).unwrap();
        let (o, l) = pe.section(name).unwrap().payload();
        &bytes[o..o + l]
    }

    #[test]
    fn facts_of_a_uki() {
        let b = objcopy_layout(b"070701...", true);
        let uki = Uki::parse(&b).unwrap();
        assert_eq!(uki.uname.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(uki.os_name().as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(uki.cmdline.as_deref(), Some("console=ttyS0 root=/dev/sda"));
        assert_eq!(uki.linux.unwrap().1, 0x1234);
        assert_eq!(uki.initrd.unwrap().1, 9);
        assert_eq!(uki.signature, None);
        let no_linux = image(&[S(".initrd", 0x2000, b"x")], false, b"");
        assert!(Uki::parse(&no_linux)
            .unwrap_err()
            .to_string()
            .contains("not a Unified Kernel Image"));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert!(Uki::parse(b"").is_err());
        assert!(Uki::parse(b"MZ").is_err());
        let good = objcopy_layout(&[7; 3000], true);
        // Every truncation: an error or a smaller image, never a panic.
        for n in (0..good.len()).step_by(7) {
            let cut = &good[..n];
            let _ = Uki::parse(cut);
            let _ = replace_initrd(cut, b"new");
            let _ = strip_signature(cut);
        }
        // Cut inside .initrd's raw data: the section runs past the end of the file.
        let cut = &good[..good.len() - 1000];
        let err = Uki::parse(cut).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
        // Every single byte of the headers flipped: no panic anywhere.
        for at in 0..0x400 {
            let mut bad = good.clone();
            bad[at] ^= 0xff;
            let _ = Uki::parse(&bad);
            let _ = replace_initrd(&bad, &[1; 5000]);
            let _ = strip_signature(&bad);
        }
    }

    /// The header of section `i` (0 is `.text`) of a synthetic image.
    fn header(i: usize) -> usize {
        0x80 + 24 + 240 + i * 40
    }

    #[test]
    fn overlapping_sections_are_refused() {
        let good = objcopy_layout(b"initrd", false);
        // .uname's raw data pointed at .cmdline's.
        let mut file = good.clone();
        let cmdline_raw =
            u32::from_le_bytes(file[header(2) + 20..header(2) + 24].try_into().unwrap());
        put32(&mut file, header(3) + 20, cmdline_raw);
        let err = Uki::parse(&file).unwrap_err().to_string();
        assert!(err.contains("overlap in the file"), "{err}");
        // .linux's address inside .cmdline's memory.
        let mut memory = good.clone();
        put32(&mut memory, header(4) + 12, 0x30004);
        let err = Uki::parse(&memory).unwrap_err().to_string();
        assert!(err.contains("overlap in memory"), "{err}");
        // A section far past the end of the file.
        let mut past = good.clone();
        put32(&mut past, header(5) + 20, 0xffff_ff00);
        assert!(Uki::parse(&past).unwrap_err().to_string().contains("past the end"));
        // An alignment that is no power of two.
        let mut align = good;
        put32(&mut align, 0x80 + 24 + 36, 0x300);
        assert!(Uki::parse(&align).unwrap_err().to_string().contains("power of two"));
    }

    #[test]
    fn initrd_last_grows_in_place_and_the_checksum_follows() {
        let old = objcopy_layout(&[1; 1000], true);
        let new_initrd: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let (new, rewrite) = replace_initrd(&old, &new_initrd).unwrap();
        assert_eq!(section(&new, ".initrd"), new_initrd.as_slice());
        for name in [".text", ".osrel", ".cmdline", ".uname", ".linux"] {
            assert_eq!(section(&new, name), section(&old, name), "{name}");
        }
        let (a, b) = (Pe::read(&old).unwrap(), Pe::read(&new).unwrap());
        for (x, y) in a.sections.iter().zip(&b.sections) {
            if x.name != ".initrd" {
                assert_eq!((x.virtual_address, x.raw_offset), (y.virtual_address, y.raw_offset));
            }
        }
        let initrd = b.section(".initrd").unwrap();
        assert_eq!((initrd.virtual_address, initrd.virtual_size), (0x300_0000, 70_000));
        assert_eq!(initrd.raw_size % FA, 0);
        assert_eq!(b.size_of_image, align_up(0x300_0000 + 70_000, SA.into()) as u32);
        assert_eq!(rewrite.size_of_image, b.size_of_image);
        assert_eq!(b.size_of_initialized_data, 0x10000 + initrd.raw_size - 0x400);
        assert!(rewrite.moved.is_empty());
        // The checksum is the one the specification gives for the new bytes.
        assert_eq!(b.checksum, checksum(&new, b.checksum_offset()));
        assert_ne!(b.checksum, a.checksum);
        // The symbol table moved with the end of the file.
        let at = b.symbol_table as usize;
        assert_eq!(&new[at..], b"symbols and strings");
        // Smaller again, and without a checksum when there was none.
        let plain = objcopy_layout(&[1; 1000], false);
        let (small, _) = replace_initrd(&plain, b"tiny").unwrap();
        assert_eq!(section(&small, ".initrd"), b"tiny");
        assert_eq!(Pe::read(&small).unwrap().checksum, 0);
    }

    #[test]
    fn sections_after_initrd_move_up_keeping_their_alignment() {
        // ukify's order: .initrd before .linux, adjacent.
        let old = image(
            &[
                S(".osrel", 0x20000, b"NAME=x\n"),
                S(".uname", 0x21000, b"6.1.0-57-amd64"),
                S(".initrd", 0x22000, &[2; 0x1800]),
                S(".linux", 0x200000, &[9; 0x3000]),
                S(".sbom", 0x204000, b"sbom"),
            ],
            false,
            b"",
        );
        let new_initrd = vec![3u8; 0x20_0000];
        let (new, rewrite) = replace_initrd(&old, &new_initrd).unwrap();
        let pe = Pe::read(&new).unwrap();
        let linux = pe.section(".linux").unwrap();
        assert!(linux.virtual_address >= 0x22000 + 0x20_0000);
        assert_eq!(
            linux.virtual_address % 0x20_0000,
            0,
            "a 2 MiB kernel address stays 2 MiB aligned"
        );
        let sbom = pe.section(".sbom").unwrap();
        assert!(sbom.virtual_address >= linux.virtual_address + 0x3000);
        assert_eq!(section(&new, ".linux"), section(&old, ".linux"));
        assert_eq!(section(&new, ".sbom"), b"sbom");
        assert_eq!(section(&new, ".initrd"), new_initrd.as_slice());
        assert_eq!(rewrite.moved.len(), 2);
        assert_eq!(Uki::parse(&new).unwrap().uname.as_deref(), Some("6.1.0-57-amd64"));
    }

    #[test]
    fn refuses_what_it_cannot_move_or_must_not_touch() {
        // A stub section after .initrd.
        let stub_after = image(
            &[S(".linux", 0x20000, b"k"), S(".initrd", 0x30000, b"i"), S(".data", 0x40000, b"d")],
            false,
            b"",
        );
        let err = replace_initrd(&stub_after, b"more").unwrap_err().to_string();
        assert!(err.contains(".data lies after .initrd"), "{err}");
        // No .initrd.
        let none = image(&[S(".linux", 0x20000, b"k")], false, b"");
        assert!(replace_initrd(&none, b"x").unwrap_err().to_string().contains("no .initrd"));
        // A data directory pointing into .initrd.
        let mut dir = objcopy_layout(b"i", false);
        let d = 0x80 + 24 + 112 + 5 * 8;
        put32(&mut dir, d, 0x300_0000);
        put32(&mut dir, d + 4, 1);
        let err = replace_initrd(&dir, b"x").unwrap_err().to_string();
        assert!(err.contains("data directory 5"), "{err}");
    }

    #[test]
    fn signatures_are_stripped_only_when_delimited_and_never_rewritten() {
        let mut signed = objcopy_layout(b"initrd", true);
        let at = signed.len();
        signed.extend_from_slice(&[0x30; 0x108]);
        let d = 0x80 + 24 + 112 + CERTIFICATE_TABLE * 8;
        put32(&mut signed, d, at as u32);
        put32(&mut signed, d + 4, 0x108);
        assert_eq!(Uki::parse(&signed).unwrap().signature, Some((at, 0x108)));
        let err = replace_initrd(&signed, b"x").unwrap_err().to_string();
        assert!(err.contains("signed"), "{err}");
        let stripped = strip_signature(&signed).unwrap();
        assert_eq!(stripped.len(), at);
        assert_eq!(Uki::parse(&stripped).unwrap().signature, None);
        let pe = Pe::read(&stripped).unwrap();
        assert_eq!(pe.checksum, checksum(&stripped, pe.checksum_offset()));
        // A table that is not the end of the file is not cut.
        let mut inside = signed.clone();
        inside.extend_from_slice(b"more");
        assert!(strip_signature(&inside).unwrap_err().to_string().contains("not the end"));
    }
}
