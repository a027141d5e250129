//! The export table of a linked kernel (`vmlinux`): what the module loader resolves
//! symbols against, read from the image itself rather than from `Module.symvers`.
//!
//! Sections (the linker sorts each by symbol name, so index `i` of a ksymtab and of its
//! kcrctab describe the same symbol):
//! - `__ksymtab` (`EXPORT_SYMBOL`) and `__ksymtab_gpl` (`EXPORT_SYMBOL_GPL`): one
//!   `struct kernel_symbol` per export, `{ value, name, namespace }`. On architectures
//!   with `CONFIG_HAVE_ARCH_PREL32_RELOCATIONS` (x86, 32- and 64-bit; arm64; ppc64; ...)
//!   each field is a signed 32-bit offset from the field's own address (12-byte
//!   entries); elsewhere each is an absolute pointer of the target's word size (on a
//!   32-bit target also 12 bytes).
//!   A namespace of 0 or the empty string is the default namespace.
//! - `__kcrctab` and `__kcrctab_gpl`: one u32 CRC per entry of the matching ksymtab, in
//!   target byte order (present only with `CONFIG_MODVERSIONS`).
//! - `__ksymtab_strings`: the NUL-terminated names and namespaces the entries point at.
//!
//! Which entry layout an image uses is decided by the image, not by a table of
//! architectures: the layout under which every name lands inside `__ksymtab_strings`
//! (and whose entry count matches the CRC table) is the one. Every offset is checked;
//! hostile input is an error, never a panic.

use super::elf::{Class, ElfModule, Section};
use anyhow::{bail, Context, Result};

/// One symbol the kernel image exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageExport {
    pub symbol: String,
    /// `None` when the kernel is built without modversions (no kcrctab).
    pub crc: Option<u32>,
    pub gpl: bool,
    pub namespace: Option<String>,
}

/// How `struct kernel_symbol` is laid out in this image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryLayout {
    /// Three signed 32-bit offsets, each relative to its own address.
    Prel32,
    /// Three absolute pointers of the word size.
    Absolute,
}

/// The export table of a kernel image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportTable {
    /// `uname -m` name of the image's architecture.
    pub arch: String,
    pub layout: EntryLayout,
    /// In image order: `__ksymtab`'s entries, then `__ksymtab_gpl`'s.
    pub exports: Vec<ImageExport>,
}

/// Read the export table of an uncompressed vmlinux.
pub fn read(vmlinux: &[u8]) -> Result<ExportTable> {
    let elf = ElfModule::parse_image(vmlinux)?;
    let strings = elf
        .section("__ksymtab_strings")
        .context("no __ksymtab_strings section: not a kernel image with exports")?;
    let plain =
        elf.section("__ksymtab").context("no __ksymtab section: the image exports nothing")?;
    let gpl = elf.section("__ksymtab_gpl");
    let table = |tab: &Section, crcs: Option<&str>| -> Result<(EntryLayout, Vec<Entry>)> {
        let crc_section = crcs.and_then(|c| elf.section(c));
        read_table(&elf, vmlinux, tab, crc_section, strings)
    };
    let (layout, mut entries) = table(plain, Some("__kcrctab"))?;
    let mut exports: Vec<ImageExport> = entries.drain(..).map(|e| e.export(false)).collect();
    if let Some(gpl) = gpl {
        let (gpl_layout, entries) = table(gpl, Some("__kcrctab_gpl"))?;
        if gpl_layout != layout && !entries.is_empty() && !exports.is_empty() {
            bail!("__ksymtab and __ksymtab_gpl disagree about the entry layout");
        }
        exports.extend(entries.into_iter().map(|e| e.export(true)));
    }
    Ok(ExportTable { arch: elf.arch(), layout, exports })
}

struct Entry {
    symbol: String,
    crc: Option<u32>,
    namespace: Option<String>,
}

impl Entry {
    fn export(self, gpl: bool) -> ImageExport {
        ImageExport { symbol: self.symbol, crc: self.crc, gpl, namespace: self.namespace }
    }
}

/// Entries of one ksymtab, with their CRCs, under the first layout that reads cleanly.
fn read_table(
    elf: &ElfModule,
    bytes: &[u8],
    tab: &Section,
    crcs: Option<&Section>,
    strings: &Section,
) -> Result<(EntryLayout, Vec<Entry>)> {
    let tab_bytes = bytes.get(tab.range.clone()).context("ksymtab outside the image")?;
    let crc_bytes = match crcs {
        Some(c) => Some(bytes.get(c.range.clone()).context("kcrctab outside the image")?),
        None => None,
    };
    let string_bytes = bytes.get(strings.range.clone()).context("strings outside the image")?;
    let word = elf.class.word_size();
    let layouts: &[(EntryLayout, usize)] = match elf.class {
        Class::Elf64 => &[(EntryLayout::Prel32, 12), (EntryLayout::Absolute, 24)],
        // Both are 12 bytes on 32-bit: only the names tell them apart.
        Class::Elf32 => &[(EntryLayout::Prel32, 12), (EntryLayout::Absolute, 12)],
    };
    let mut first_error = None;
    for &(layout, size) in layouts {
        let attempt = (|| -> Result<Vec<Entry>> {
            if tab_bytes.len() % size != 0 {
                bail!("{} is {} bytes, not a multiple of {size}", tab.name, tab_bytes.len());
            }
            let count = tab_bytes.len() / size;
            if let Some(c) = crc_bytes {
                if c.len() != count * 4 {
                    bail!(
                        "{} has {} bytes for {count} entries of {} (4 bytes each expected)",
                        crcs.map_or("", |c| c.name.as_str()),
                        c.len(),
                        tab.name
                    );
                }
            }
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let at = i * size;
                // The address a field refers to, under this layout.
                let target = |field: usize| -> Option<u64> {
                    let pos = at + field * (size / 3);
                    match layout {
                        EntryLayout::Prel32 => {
                            let raw = elf.endian.u32(tab_bytes.get(pos..pos + 4)?.try_into().ok()?);
                            if raw == 0 && field == 2 {
                                return Some(0);
                            }
                            let here = tab.addr.checked_add(pos as u64)?;
                            Some(here.wrapping_add(raw as i32 as i64 as u64))
                        }
                        EntryLayout::Absolute => {
                            let b = tab_bytes.get(pos..pos + word)?;
                            Some(match word {
                                4 => u64::from(elf.endian.u32(b.try_into().ok()?)),
                                _ => elf.endian.u64(b.try_into().ok()?),
                            })
                        }
                    }
                };
                let string = |addr: u64| -> Option<String> {
                    let offset = usize::try_from(addr.checked_sub(strings.addr)?).ok()?;
                    let tail = string_bytes.get(offset..)?;
                    let end = tail.iter().position(|&b| b == 0)?;
                    String::from_utf8(tail[..end].to_vec()).ok()
                };
                let symbol =
                    target(1).and_then(string).filter(|s| !s.is_empty()).with_context(|| {
                        format!("{} entry {i}: its name lies outside __ksymtab_strings", tab.name)
                    })?;
                let namespace = match target(2) {
                    Some(0) => None,
                    Some(addr) => Some(string(addr).with_context(|| {
                        format!(
                            "{} entry {i} ({symbol}): its namespace lies outside __ksymtab_strings",
                            tab.name
                        )
                    })?),
                    None => bail!("{} entry {i} is truncated", tab.name),
                }
                .filter(|ns| !ns.is_empty());
                let crc = match crc_bytes {
                    Some(c) => Some(
                        elf.endian
                            .u32(c.get(i * 4..i * 4 + 4).context("kcrctab truncated")?.try_into()?),
                    ),
                    None => None,
                };
                out.push(Entry { symbol, crc, namespace });
            }
            Ok(out)
        })();
        match attempt {
            Ok(entries) => return Ok((layout, entries)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow::anyhow!("{}: no entry layout fits", tab.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian executable with the export sections, laid out at
    /// known addresses: `__ksymtab` (PREL32) at 0x1000, `__ksymtab_gpl` at 0x2000,
    /// strings at 0x3000, CRCs beside.
    struct Image {
        sections: Vec<(&'static str, u64, Vec<u8>)>,
    }

    impl Image {
        fn bytes(&self) -> Vec<u8> {
            // Layout: header, section data, name table, section headers.
            let mut out = vec![0u8; 64];
            let mut names = vec![0u8];
            let mut headers = vec![[0u8; 64]];
            for (name, addr, data) in &self.sections {
                let offset = out.len() as u64;
                out.extend_from_slice(data);
                let mut h = [0u8; 64];
                h[0..4].copy_from_slice(&(names.len() as u32).to_le_bytes());
                h[4..8].copy_from_slice(&1u32.to_le_bytes());
                h[16..24].copy_from_slice(&addr.to_le_bytes());
                h[24..32].copy_from_slice(&offset.to_le_bytes());
                h[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
                headers.push(h);
                names.extend_from_slice(name.as_bytes());
                names.push(0);
            }
            let names_offset = out.len() as u64;
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&(names.len() as u32).to_le_bytes());
            h[4..8].copy_from_slice(&3u32.to_le_bytes());
            h[24..32].copy_from_slice(&names_offset.to_le_bytes());
            names.extend_from_slice(b".shstrtab\0");
            h[32..40].copy_from_slice(&(names.len() as u64).to_le_bytes());
            headers.push(h);
            out.extend_from_slice(&names);
            while !out.len().is_multiple_of(8) {
                out.push(0);
            }
            let shoff = out.len() as u64;
            for h in &headers {
                out.extend_from_slice(h);
            }
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = 2;
            out[5] = 1;
            out[6] = 1;
            out[16..18].copy_from_slice(&2u16.to_le_bytes());
            out[18..20].copy_from_slice(&62u16.to_le_bytes());
            out[40..48].copy_from_slice(&shoff.to_le_bytes());
            out[58..60].copy_from_slice(&64u16.to_le_bytes());
            out[60..62].copy_from_slice(&(headers.len() as u16).to_le_bytes());
            out[62..64].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
            out
        }
    }

    /// PREL32 entries at `base` naming strings at the given offsets of a table at 0x3000.
    fn prel32(base: u64, entries: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &(name, ns)) in entries.iter().enumerate() {
            let at = base + i as u64 * 12;
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(&((0x3000 + name) as i64 - (at + 4) as i64).to_le_bytes()[..4]);
            let ns = if ns == 0 { 0 } else { (0x3000 + ns) as i64 - (at + 8) as i64 };
            out.extend_from_slice(&ns.to_le_bytes()[..4]);
        }
        out
    }

    fn sample() -> Image {
        let strings = b"alpha\0beta\0gamma\0NS_ONE\0\0".to_vec();
        Image {
            sections: vec![
                ("__ksymtab", 0x1000, prel32(0x1000, &[(0, 0), (6, 23)])),
                ("__ksymtab_gpl", 0x2000, prel32(0x2000, &[(11, 17)])),
                (
                    "__kcrctab",
                    0x4000,
                    [0x11u32, 0x22].iter().flat_map(|c| c.to_le_bytes()).collect(),
                ),
                ("__kcrctab_gpl", 0x5000, 0x33u32.to_le_bytes().to_vec()),
                ("__ksymtab_strings", 0x3000, strings),
            ],
        }
    }

    #[test]
    fn reads_prel32_exports_crcs_gpl_and_namespaces() {
        let t = read(&sample().bytes()).unwrap();
        assert_eq!(t.layout, EntryLayout::Prel32);
        assert_eq!(t.arch, "x86_64");
        let got: Vec<_> = t
            .exports
            .iter()
            .map(|e| (e.symbol.as_str(), e.crc, e.gpl, e.namespace.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("alpha", Some(0x11), false, None),
                // offset 23 is the empty string: the default namespace.
                ("beta", Some(0x22), false, None),
                ("gamma", Some(0x33), true, Some("NS_ONE")),
            ]
        );
    }

    #[test]
    fn absolute_entries_are_read_when_prel32_does_not_fit() {
        let mut image = sample();
        let mut abs = Vec::new();
        for name in [0x3000u64, 0x3006] {
            abs.extend_from_slice(&0u64.to_le_bytes());
            abs.extend_from_slice(&name.to_le_bytes());
            abs.extend_from_slice(&0u64.to_le_bytes());
        }
        image.sections[0].2 = abs;
        image.sections.remove(1);
        image.sections.remove(2);
        let t = read(&image.bytes()).unwrap();
        assert_eq!(t.layout, EntryLayout::Absolute);
        assert_eq!(t.exports.len(), 2);
        assert_eq!(t.exports[1].symbol, "beta");
    }

    #[test]
    fn hostile_tables_are_errors() {
        let good = sample().bytes();
        for cut in [0, 10, 64, 100, good.len() / 2, good.len() - 1] {
            assert!(read(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A name offset out of range.
        let mut image = sample();
        image.sections[0].2[4..8].copy_from_slice(&0x7fff_0000i32.to_le_bytes());
        let err = format!("{:#}", read(&image.bytes()).unwrap_err());
        assert!(err.contains("outside __ksymtab_strings"), "{err}");
        // A CRC table of the wrong length.
        let mut image = sample();
        image.sections[2].2.push(0);
        assert!(read(&image.bytes()).is_err());
        // A ksymtab of a size no layout divides.
        let mut image = sample();
        image.sections[0].2.truncate(13);
        assert!(read(&image.bytes()).is_err());
        // No export sections at all.
        let mut image = sample();
        image.sections.retain(|s| s.0 != "__ksymtab");
        assert!(format!("{:#}", read(&image.bytes()).unwrap_err()).contains("no __ksymtab"));
        // Strings without a terminating NUL.
        let mut image = sample();
        image.sections[4].2 = b"alpha".to_vec();
        assert!(read(&image.bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn corrupting_any_byte_never_panics(at in 0usize..2000, value in proptest::num::u8::ANY) {
            let mut bytes = sample().bytes();
            if at < bytes.len() {
                bytes[at] = value;
            }
            let _ = read(&bytes);
        }
    }
}
