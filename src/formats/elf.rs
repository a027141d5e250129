//! The ELF container of a kernel module: a relocatable object (`ET_REL`).
//!
//! This is the only place that talks to `goblin`. It turns the bytes of an uncompressed
//! module into plain values: the identity (class, endianness, machine), the sections by
//! name, and the symbol table. The module-specific meaning of those sections lives in
//! the sibling codecs (`modinfo`, `modversions`, `signature`) and in `model::module`.

use anyhow::{bail, Context, Result};
use goblin::elf::{header, section_header, sym, Elf};

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
}

/// Byte order of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
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
}

/// One section of the object, with its file range already bounds-checked.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub kind: u32,
    /// Byte range in the file; empty for `SHT_NOBITS`.
    pub range: std::ops::Range<usize>,
    /// `sh_size` as declared (for `SHT_NOBITS` this is the in-memory size).
    pub size: u64,
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

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub value: u64,
    pub place: SymbolPlace,
    pub global: bool,
}

/// The parsed container of a module.
#[derive(Debug, Clone)]
pub struct ElfModule {
    pub class: Class,
    pub endian: Endian,
    /// `e_machine`, e.g. 62 for x86-64.
    pub machine: u16,
    pub sections: Vec<Section>,
    pub symbols: Vec<Symbol>,
}

/// Human name of an `e_machine` value, for reports.
pub fn machine_name(machine: u16) -> String {
    match machine {
        header::EM_386 => "i386".into(),
        header::EM_X86_64 => "x86_64".into(),
        header::EM_AARCH64 => "aarch64".into(),
        header::EM_ARM => "arm".into(),
        header::EM_PPC => "ppc".into(),
        header::EM_PPC64 => "ppc64".into(),
        header::EM_S390 => "s390".into(),
        header::EM_RISCV => "riscv".into(),
        header::EM_MIPS => "mips".into(),
        header::EM_LOONGARCH => "loongarch".into(),
        other => format!("machine-{other}"),
    }
}

impl ElfModule {
    /// Parse an uncompressed module. Errors (never panics) on anything that is not a
    /// well-formed relocatable ELF object.
    pub fn parse(bytes: &[u8]) -> Result<ElfModule> {
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            bail!("not an ELF file (no \\x7fELF magic)");
        }
        // goblin does its own bounds checks; a panic inside it on hostile input would be
        // a bug we want to surface as an error rather than abort the whole run.
        let elf = std::panic::catch_unwind(|| Elf::parse(bytes))
            .map_err(|_| anyhow::anyhow!("malformed ELF (parser panicked)"))?
            .context("malformed ELF")?;
        if elf.header.e_type != header::ET_REL {
            bail!(
                "ELF type {} is not a relocatable object (ET_REL); kernel modules are",
                header::et_to_str(elf.header.e_type)
            );
        }
        let class = if elf.is_64 { Class::Elf64 } else { Class::Elf32 };
        let endian = if elf.little_endian { Endian::Little } else { Endian::Big };

        let mut sections = Vec::with_capacity(elf.section_headers.len());
        for (index, sh) in elf.section_headers.iter().enumerate() {
            let name = elf.shdr_strtab.get_at(sh.sh_name).unwrap_or_default().to_string();
            let range = if sh.sh_type == section_header::SHT_NOBITS {
                0..0
            } else {
                let start = usize::try_from(sh.sh_offset).ok();
                let end = start.and_then(|s| s.checked_add(usize::try_from(sh.sh_size).ok()?));
                match (start, end) {
                    (Some(s), Some(e)) if e <= bytes.len() => s..e,
                    _ => bail!(
                        "section {index} ({name}) claims bytes {}..+{} beyond the file's {} bytes",
                        sh.sh_offset,
                        sh.sh_size,
                        bytes.len()
                    ),
                }
            };
            sections.push(Section { name, kind: sh.sh_type, range, size: sh.sh_size });
        }

        let mut symbols = Vec::with_capacity(elf.syms.len());
        for s in elf.syms.iter() {
            let place = match s.st_shndx as u32 {
                section_header::SHN_UNDEF => SymbolPlace::Undefined,
                section_header::SHN_ABS => SymbolPlace::Absolute,
                section_header::SHN_COMMON => SymbolPlace::Common,
                i if (i as usize) < sections.len() => SymbolPlace::Section(i as usize),
                _ => SymbolPlace::Absolute, // reserved/extended indexes: not a section we read
            };
            let name = elf.strtab.get_at(s.st_name).unwrap_or_default().to_string();
            symbols.push(Symbol {
                name,
                value: s.st_value,
                place,
                global: matches!(s.st_bind(), sym::STB_GLOBAL | sym::STB_WEAK),
            });
        }
        Ok(ElfModule { class, endian, machine: elf.header.e_machine, sections, symbols })
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Bytes of a named section (empty for `SHT_NOBITS`).
    pub fn section_bytes<'a>(&self, bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.section(name).map(|s| &bytes[s.range.clone()])
    }

    /// Read a 32-bit value at `offset` inside section `index`, in target byte order.
    pub fn read_u32(&self, bytes: &[u8], index: usize, offset: u64) -> Option<u32> {
        let section = self.sections.get(index)?;
        let start = section.range.start.checked_add(usize::try_from(offset).ok()?)?;
        let end = start.checked_add(4)?;
        if end > section.range.end {
            return None;
        }
        Some(self.endian.u32(bytes[start..end].try_into().ok()?))
    }
}
