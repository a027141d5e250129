//! The ELF container of a kernel module: a relocatable object (`ET_REL`).
//!
//! Turns the bytes of an uncompressed module into plain values: the identity (class,
//! endianness, machine), the sections by name, and, on demand, the symbol table. The
//! module-specific meaning of those sections lives in the sibling codecs (`modinfo`,
//! `modversions`, `signature`) and in `model::module`.
//!
//! A module needs only the ELF header, the section header table, the section name table
//! and the symbol table, so this reader parses exactly those, lazily, with every offset
//! and size checked against the buffer before use. It does not use a general ELF crate:
//! goblin's full parse walks relocations and builds every string table eagerly (most of
//! the time spent reading a kernel tree), and a reader this small can be shown never to
//! panic, which matters because release builds abort on panic.

use anyhow::{bail, Context, Result};

/// ELF class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Class {
    #[serde(rename = "ELF32")]
    Elf32,
    #[serde(rename = "ELF64")]
    Elf64,
}

impl Class {
    /// Size of the target's `unsigned long` in bytes.
    pub fn word_size(self) -> usize {
        match self {
            Class::Elf32 => 4,
            Class::Elf64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Elf32 => "ELF32",
            Class::Elf64 => "ELF64",
        }
    }
}

/// Byte order of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    pub fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }
    pub fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
    pub fn u64(self, b: [u8; 8]) -> u64 {
        match self {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        }
    }
}

/// `e_machine` values bootkmod names (from the ELF ABI registry).
pub mod machine {
    pub const SPARC: u16 = 2;
    pub const I386: u16 = 3;
    pub const MIPS: u16 = 8;
    pub const PARISC: u16 = 15;
    pub const PPC: u16 = 20;
    pub const PPC64: u16 = 21;
    pub const S390: u16 = 22;
    pub const ARM: u16 = 40;
    pub const SPARCV9: u16 = 43;
    pub const X86_64: u16 = 62;
    pub const AARCH64: u16 = 183;
    pub const RISCV: u16 = 243;
    pub const LOONGARCH: u16 = 258;
}

const ET_REL: u16 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const SHT_SYMTAB_SHNDX: u32 = 18;
const SHN_UNDEF: u16 = 0;
const SHN_LORESERVE: u16 = 0xff00;
const SHN_ABS: u16 = 0xfff1;
const SHN_COMMON: u16 = 0xfff2;
const SHN_XINDEX: u16 = 0xffff;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;

/// One section of the object, with its file range already bounds-checked.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub kind: u32,
    /// Byte range in the file; empty for `SHT_NOBITS`.
    pub range: std::ops::Range<usize>,
    /// `sh_size` as declared (for `SHT_NOBITS` this is the in-memory size).
    pub size: u64,
    /// `sh_link`: for a symbol table, the index of its string table.
    pub link: u32,
    /// `sh_addr`: the section's address in memory; 0 in a relocatable module, the link
    /// address in a kernel image (where relative export entries point).
    pub addr: u64,
}

/// Where a symbol is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolPlace {
    Undefined,
    Absolute,
    Common,
    /// Index into [`ElfModule::sections`].
    Section(usize),
}

/// A symbol; its name borrows from the file bytes (reading a whole kernel tree would
/// otherwise allocate a string for each of millions of symbols).
#[derive(Debug, Clone)]
pub struct Symbol<'a> {
    pub name: std::borrow::Cow<'a, str>,
    pub value: u64,
    pub place: SymbolPlace,
    pub global: bool,
}

/// The parsed container of a module: identity and sections. Symbols are read on demand
/// with [`ElfModule::symbols`].
#[derive(Debug, Clone)]
pub struct ElfModule {
    pub class: Class,
    pub endian: Endian,
    /// `e_machine`, e.g. 62 for x86-64.
    pub machine: u16,
    pub sections: Vec<Section>,
}

/// The architecture a module is built for, as `uname -m` names it (`x86_64`, `aarch64`,
/// `ppc64le`, `s390x`, ...): the name a target kernel is compared by.
pub fn arch_name(machine: u16, class: Class, endian: Endian) -> String {
    let big = endian == Endian::Big;
    let wide = class == Class::Elf64;
    let name = match machine {
        machine::I386 => "i386",
        machine::X86_64 => "x86_64",
        machine::AARCH64 if big => "aarch64_be",
        machine::AARCH64 => "aarch64",
        machine::ARM if big => "armeb",
        machine::ARM => "arm",
        machine::PPC => "ppc",
        machine::PPC64 if big => "ppc64",
        machine::PPC64 => "ppc64le",
        machine::S390 if wide => "s390x",
        machine::S390 => "s390",
        machine::RISCV if wide => "riscv64",
        machine::RISCV => "riscv32",
        machine::MIPS if wide && big => "mips64",
        machine::MIPS if wide => "mips64el",
        machine::MIPS if big => "mips",
        machine::MIPS => "mipsel",
        machine::LOONGARCH if wide => "loongarch64",
        machine::LOONGARCH => "loongarch32",
        machine::SPARC => "sparc",
        machine::SPARCV9 => "sparc64",
        machine::PARISC if wide => "parisc64",
        machine::PARISC => "parisc",
        other => return format!("machine-{other}"),
    };
    name.to_string()
}

/// The name of an `e_machine` value alone (`x86_64`, `ppc64`, `s390`), for callers that
/// know the machine but not the class or byte order; [`arch_name`] is exact.
pub fn machine_name(machine: u16) -> String {
    match machine {
        machine::PPC64 => "ppc64".to_string(),
        machine::S390 => "s390".to_string(),
        machine::RISCV => "riscv".to_string(),
        machine::MIPS => "mips".to_string(),
        machine::LOONGARCH => "loongarch".to_string(),
        machine::PARISC => "parisc".to_string(),
        other => arch_name(other, Class::Elf64, Endian::Little),
    }
}

/// The `uname -m` name for an architecture named any common way: Debian's (`amd64`,
/// `arm64`, `ppc64el`, `i386`), RPM's (`i686`, `armv7hl`) or the kernel's (`x86`, `arm64`).
/// Unknown names are returned unchanged.
pub fn canonical_arch(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "amd64" | "x86-64" | "x86_64" => "x86_64",
        "i386" | "i486" | "i586" | "i686" | "x86" => "i386",
        "arm64" | "aarch64" => "aarch64",
        "ppc64el" | "ppc64le" => "ppc64le",
        "armhf" | "armel" | "armv7l" | "armv7hl" | "armv6l" | "arm" => "arm",
        "riscv64" => "riscv64",
        "loong64" | "loongarch64" => "loongarch64",
        _ => return lower,
    };
    canonical.to_string()
}

/// Machines whose kernels exist in only one ELF class: a header that claims the other
/// class is corrupt or hostile, not a module for some other kernel.
fn required_class(machine: u16) -> Option<Class> {
    match machine {
        machine::X86_64 | machine::AARCH64 | machine::PPC64 | machine::SPARCV9 => {
            Some(Class::Elf64)
        }
        machine::I386 | machine::ARM | machine::PPC | machine::SPARC => Some(Class::Elf32),
        _ => None,
    }
}

/// Bounds-checked fixed-size reads in the file's byte order.
struct Reader<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

impl Reader<'_> {
    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.bytes.get(at..at.checked_add(N)?)?.try_into().ok()
    }
    fn u8(&self, at: usize) -> Option<u8> {
        self.bytes.get(at).copied()
    }
    fn u16(&self, at: usize) -> Option<u16> {
        Some(self.endian.u16(self.array(at)?))
    }
    fn u32(&self, at: usize) -> Option<u32> {
        Some(self.endian.u32(self.array(at)?))
    }
    fn u64(&self, at: usize) -> Option<u64> {
        Some(self.endian.u64(self.array(at)?))
    }
    /// A word: u32 on ELF32, u64 on ELF64.
    fn word(&self, class: Class, at: usize) -> Option<u64> {
        match class {
            Class::Elf32 => self.u32(at).map(u64::from),
            Class::Elf64 => self.u64(at),
        }
    }
}

/// Raw section header fields, before names are resolved.
struct RawSection {
    name: u32,
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

/// A file range `offset..offset+size`, if it lies inside a buffer of `len` bytes.
fn file_range(offset: u64, size: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    (end <= len).then_some(start..end)
}

/// A name as text: borrowed when valid UTF-8 (the fast, usual case), else lossy.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The NUL-terminated string at `offset` in `table`.
fn string_at(table: &[u8], offset: u32) -> Option<&[u8]> {
    let tail = table.get(usize::try_from(offset).ok()?..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(&tail[..end])
}

impl ElfModule {
    /// Parse an uncompressed module: header and section table. Errors (never panics) on
    /// anything that is not a well-formed relocatable ELF object.
    pub fn parse(bytes: &[u8]) -> Result<ElfModule> {
        Self::parse_as(bytes, true)
    }

    /// Parse a linked kernel image (`vmlinux`, `ET_EXEC` or `ET_DYN`): the same header and
    /// section table, with the same checks, for the sections its export table lives in.
    pub fn parse_image(bytes: &[u8]) -> Result<ElfModule> {
        Self::parse_as(bytes, false)
    }

    fn parse_as(bytes: &[u8], module: bool) -> Result<ElfModule> {
        if bytes.len() < 4 && b"\x7fELF".starts_with(bytes) {
            bail!("truncated ELF header ({} bytes)", bytes.len());
        }
        if !bytes.starts_with(b"\x7fELF") {
            bail!("not an ELF file (no \\x7fELF magic)");
        }
        let ident = bytes.get(..16).context("truncated ELF header")?;
        let class = match ident[4] {
            1 => Class::Elf32,
            2 => Class::Elf64,
            other => bail!("unknown ELF class {other} (1 is ELF32, 2 is ELF64)"),
        };
        let endian = match ident[5] {
            1 => Endian::Little,
            2 => Endian::Big,
            other => bail!("unknown ELF data encoding {other} (1 is little-, 2 is big-endian)"),
        };
        let r = Reader { bytes, endian };
        // Field offsets of Elf32_Ehdr / Elf64_Ehdr.
        let (header_size, shoff_at, shentsize_at, shdr_size) = match class {
            Class::Elf32 => (52, 32, 46, 40),
            Class::Elf64 => (64, 40, 58, 64),
        };
        if bytes.len() < header_size {
            bail!("truncated ELF header ({} of {header_size} bytes)", bytes.len());
        }
        let header = |v: Option<u64>| v.context("truncated ELF header");
        let e_type = header(r.u16(16).map(u64::from))? as u16;
        if module && e_type != ET_REL {
            bail!("ELF type {e_type} is not a relocatable object (ET_REL, 1); kernel modules are");
        }
        if !module && !matches!(e_type, ET_EXEC | ET_DYN) {
            bail!("ELF type {e_type} is not a linked image (ET_EXEC, 2, or ET_DYN, 3); vmlinux is");
        }
        let machine = header(r.u16(18).map(u64::from))? as u16;
        if let Some(required) = required_class(machine) {
            if required != class {
                bail!(
                    "{} header for {}, which only exists as {}: corrupt ELF identification",
                    class.name(),
                    arch_name(machine, required, endian),
                    required.name()
                );
            }
        }
        let shoff = header(r.word(class, shoff_at))?;
        let shentsize = header(r.u16(shentsize_at).map(u64::from))?;
        let mut shnum = header(r.u16(shentsize_at + 2).map(u64::from))?;
        let mut shstrndx = header(r.u16(shentsize_at + 4).map(u64::from))?;
        if shoff == 0 {
            bail!("no section header table (e_shoff is 0); bootkmod needs its sections");
        }
        if shentsize != shdr_size as u64 {
            bail!(
                "section header entries are {shentsize} bytes, not {shdr_size} for {}",
                class.name()
            );
        }

        let section_at = |index: u64| -> Result<RawSection> {
            let at = index
                .checked_mul(shdr_size as u64)
                .and_then(|o| o.checked_add(shoff))
                .and_then(|o| usize::try_from(o).ok())
                .context("section header offset overflows")?;
            let field = |v: Option<u64>| {
                v.with_context(|| {
                    format!(
                        "section header {index} at offset {at} lies beyond the {} bytes of ELF data",
                        bytes.len()
                    )
                })
            };
            // Field offsets of Elf32_Shdr / Elf64_Shdr.
            let (addr_at, offset_at, size_at, link_at) = match class {
                Class::Elf32 => (12, 16, 20, 24),
                Class::Elf64 => (16, 24, 32, 40),
            };
            Ok(RawSection {
                name: field(r.u32(at).map(u64::from))? as u32,
                kind: field(r.u32(at + 4).map(u64::from))? as u32,
                addr: field(r.word(class, at + addr_at))?,
                offset: field(r.word(class, at + offset_at))?,
                size: field(r.word(class, at + size_at))?,
                link: field(r.u32(at + link_at).map(u64::from))? as u32,
            })
        };

        // Extended numbering: with 0xff00 sections or more, the real count and name
        // table index live in section 0.
        if shnum == 0 || shstrndx == u64::from(SHN_XINDEX) {
            let first = section_at(0)?;
            if shnum == 0 {
                shnum = first.size;
            }
            if shstrndx == u64::from(SHN_XINDEX) {
                shstrndx = u64::from(first.link);
            }
        }
        let table_end = shnum.checked_mul(shdr_size as u64).and_then(|n| n.checked_add(shoff));
        if !matches!(table_end, Some(end) if end <= bytes.len() as u64) {
            bail!(
                "section header table ({shnum} entries at offset {shoff}) runs past the end \
                 of the {} bytes of ELF data",
                bytes.len()
            );
        }
        let raw: Vec<RawSection> = (0..shnum).map(section_at).collect::<Result<_>>()?;

        let names = raw.get(shstrndx as usize).with_context(|| {
            format!("section name table index {shstrndx} is not among the {shnum} sections")
        })?;
        let names = file_range(names.offset, names.size, bytes.len())
            .map(|range| &bytes[range])
            .with_context(|| {
                format!(
                    "section name table claims bytes {}..+{} beyond the {} bytes of ELF data",
                    names.offset,
                    names.size,
                    bytes.len()
                )
            })?;

        let mut sections = Vec::with_capacity(raw.len());
        for (index, sh) in raw.into_iter().enumerate() {
            let name = match string_at(names, sh.name) {
                Some(n) => text(n).into_owned(),
                None => {
                    bail!("section {index} has a name offset {} outside the name table", sh.name)
                }
            };
            let range = if sh.kind == SHT_NOBITS {
                0..0
            } else {
                match file_range(sh.offset, sh.size, bytes.len()) {
                    Some(range) => range,
                    None => bail!(
                        "section {index} ({name}) claims bytes {}..+{} beyond the {} bytes of ELF data",
                        sh.offset,
                        sh.size,
                        bytes.len()
                    ),
                }
            };
            sections.push(Section {
                name,
                kind: sh.kind,
                range,
                size: sh.size,
                link: sh.link,
                addr: sh.addr,
            });
        }
        Ok(ElfModule { class, endian, machine, sections })
    }

    /// The architecture, as `uname -m` names it.
    pub fn arch(&self) -> String {
        arch_name(self.machine, self.class, self.endian)
    }

    /// The symbol table (`SHT_SYMTAB`), without the null symbol. Empty when absent.
    pub fn symbols<'a>(&self, bytes: &'a [u8]) -> Result<Vec<Symbol<'a>>> {
        let Some(symtab) = self.sections.iter().find(|s| s.kind == SHT_SYMTAB) else {
            return Ok(Vec::new());
        };
        let strtab = self
            .sections
            .get(symtab.link as usize)
            .with_context(|| format!("symbol table links to missing section {}", symtab.link))?;
        let strings = &bytes[strtab.range.clone()];
        // A symbol's section index beyond 0xff00 is in the parallel SHT_SYMTAB_SHNDX table.
        let extended = self.sections.iter().find(|s| s.kind == SHT_SYMTAB_SHNDX);
        let entry = match self.class {
            Class::Elf32 => 16,
            Class::Elf64 => 24,
        };
        let table = &bytes[symtab.range.clone()];
        let r = Reader { bytes: table, endian: self.endian };
        let count = table.len() / entry;
        let mut symbols = Vec::with_capacity(count.saturating_sub(1));
        for i in 1..count {
            let at = i * entry;
            // Field offsets of Elf32_Sym / Elf64_Sym; `at + entry <= table.len()`.
            let (value, info, shndx) = match self.class {
                Class::Elf32 => (r.u32(at + 4).map(u64::from), r.u8(at + 12), r.u16(at + 14)),
                Class::Elf64 => (r.u64(at + 8), r.u8(at + 4), r.u16(at + 6)),
            };
            let (Some(name), Some(value), Some(info), Some(shndx)) =
                (r.u32(at), value, info, shndx)
            else {
                bail!("symbol {i} is truncated");
            };
            let index = if shndx == SHN_XINDEX {
                extended
                    .and_then(|x| {
                        Reader { bytes: &bytes[x.range.clone()], endian: self.endian }.u32(i * 4)
                    })
                    .with_context(|| format!("symbol {i} has an extended section index but no SHT_SYMTAB_SHNDX entry"))?
                    as usize
            } else {
                shndx as usize
            };
            let place = match shndx {
                SHN_UNDEF => SymbolPlace::Undefined,
                SHN_ABS => SymbolPlace::Absolute,
                SHN_COMMON => SymbolPlace::Common,
                _ if shndx != SHN_XINDEX && shndx >= SHN_LORESERVE => SymbolPlace::Absolute,
                _ if index < self.sections.len() => SymbolPlace::Section(index),
                _ => bail!(
                    "symbol {i} lives in section {index}, beyond the {} sections",
                    self.sections.len()
                ),
            };
            let name = match string_at(strings, name) {
                Some(n) => text(n),
                None => bail!("symbol {i} has a name offset {name} outside its string table"),
            };
            let global = matches!(info >> 4, STB_GLOBAL | STB_WEAK);
            symbols.push(Symbol { name, value, place, global });
        }
        Ok(symbols)
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Bytes of a named section (empty for `SHT_NOBITS`).
    pub fn section_bytes<'a>(&self, bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.section(name).and_then(|s| bytes.get(s.range.clone()))
    }

    /// Read a 32-bit value at `offset` inside section `index`, in target byte order.
    pub fn read_u32(&self, bytes: &[u8], index: usize, offset: u64) -> Option<u32> {
        let section = self.sections.get(index)?;
        let start = section.range.start.checked_add(usize::try_from(offset).ok()?)?;
        let end = start.checked_add(4)?;
        if end > section.range.end {
            return None;
        }
        Some(self.endian.u32(bytes.get(start..end)?.try_into().ok()?))
    }
}

/// The machine (`e_machine`) and byte order of an ELF *program* (`ET_EXEC`, or `ET_DYN`
/// as position-independent executables are): what a driver disk needs to know to put a
/// bootkmod binary under the right `rpms/<arch>/`. Errors, never panics, on anything
/// else (a module, a truncated header, not ELF).
pub fn program_machine(bytes: &[u8]) -> Result<(u16, Endian)> {
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    if !bytes.starts_with(b"\x7fELF") {
        bail!("not an ELF program (no \\x7fELF magic)");
    }
    let ident = bytes.get(..20).context("truncated ELF header")?;
    let endian = match ident[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        other => bail!("unknown ELF data encoding {other} (1 is little-, 2 is big-endian)"),
    };
    let r = Reader { bytes, endian };
    let e_type = r.u16(16).context("truncated ELF header")?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        bail!("ELF type {e_type} is not a program (ET_EXEC 2 or ET_DYN 3)");
    }
    Ok((r.u16(18).context("truncated ELF header")?, endian))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian header for x86_64 with no sections yet.
    #[test]
    fn program_machine_reads_programs_and_refuses_the_rest() {
        assert_eq!(program_machine(&header64(2, machine::X86_64)).unwrap(), (62, Endian::Little));
        assert_eq!(program_machine(&header64(3, machine::AARCH64)).unwrap(), (183, Endian::Little));
        assert!(program_machine(&header64(ET_REL, machine::X86_64))
            .unwrap_err()
            .to_string()
            .contains("not a program"));
        for cut in 0..20 {
            assert!(program_machine(&header64(2, machine::X86_64)[..cut]).is_err());
        }
        assert!(program_machine(b"#!/bin/sh\n").is_err());
    }

    fn header64(e_type: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[58..60].copy_from_slice(&64u16.to_le_bytes());
        h
    }

    fn error(bytes: &[u8]) -> String {
        format!("{:#}", ElfModule::parse(bytes).unwrap_err())
    }

    #[test]
    fn rejects_what_is_not_a_module() {
        assert!(error(b"MZ\x90\0").contains("not an ELF file"));
        assert!(error(b"\x7fELF\x02\x01").contains("truncated ELF header"));
        assert!(error(&header64(2, machine::X86_64)).contains("not a relocatable object"));
        assert!(error(&header64(ET_REL, machine::X86_64)).contains("no section header table"));
        let mut bad_class = header64(ET_REL, machine::X86_64);
        bad_class[4] = 7;
        assert!(error(&bad_class).contains("unknown ELF class 7"));
    }

    #[test]
    fn class_contradicting_machine_is_an_error() {
        let mut h = header64(ET_REL, machine::X86_64);
        h[4] = 1; // claims ELF32
        h.resize(64, 0);
        assert!(error(&h).contains("x86_64, which only exists as ELF64"), "{}", error(&h));
    }

    #[test]
    fn section_table_past_eof_is_an_error() {
        let mut h = header64(ET_REL, machine::X86_64);
        h[40..48].copy_from_slice(&64u64.to_le_bytes());
        h[60..62].copy_from_slice(&1000u16.to_le_bytes());
        assert!(error(&h).contains("runs past the end"), "{}", error(&h));
        h[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!error(&h).is_empty());
    }

    #[test]
    fn arch_names_follow_uname() {
        assert_eq!(arch_name(machine::X86_64, Class::Elf64, Endian::Little), "x86_64");
        assert_eq!(arch_name(machine::PPC64, Class::Elf64, Endian::Little), "ppc64le");
        assert_eq!(arch_name(machine::S390, Class::Elf64, Endian::Big), "s390x");
        assert_eq!(canonical_arch("amd64"), "x86_64");
        assert_eq!(canonical_arch("i686"), "i386");
        assert_eq!(canonical_arch("arm64"), "aarch64");
    }
}
