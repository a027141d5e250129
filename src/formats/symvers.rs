//! `Module.symvers` / `symvers.gz`: the exports of a kernel build, one per line.
//!
//! Each line is tab-separated: `0xCRC  symbol  module|vmlinux  EXPORT_SYMBOL[_GPL]
//! [namespace]`. Kernels before 5.4 write four fields (no namespace column); newer
//! ones write five, the last empty for the default namespace. RHEL ships the file
//! gzip-compressed as `/boot/symvers-KVER.gz`; decompression is the caller's job
//! ([`super::compression`]), this codec sees plain text.

use anyhow::{bail, Result};
use std::fmt::Write as _;

/// One exported symbol of a kernel build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SymversEntry {
    pub crc: u32,
    pub symbol: String,
    /// `vmlinux`, or the module's path in the build without `.ko` (`drivers/scsi/scsi_mod`).
    pub module: String,
    /// Exported with `EXPORT_SYMBOL_GPL` (or the historical `_GPL_FUTURE`).
    pub gpl: bool,
    /// `EXPORT_SYMBOL_NS` namespace; `None` for the default namespace.
    pub namespace: Option<String>,
}

impl SymversEntry {
    /// Is this export provided by the kernel image itself?
    pub fn is_vmlinux(&self) -> bool {
        self.module == "vmlinux" || self.module == "vmlinux.o"
    }
}

/// One line of a symvers text, borrowed: lets a reader keep only the symbols it needs
/// without allocating for the tens of thousands it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymversLine<'a> {
    pub crc: u32,
    pub symbol: &'a str,
    pub module: &'a str,
    pub gpl: bool,
    pub namespace: Option<&'a str>,
}

impl SymversLine<'_> {
    pub fn is_vmlinux(&self) -> bool {
        self.module == "vmlinux" || self.module == "vmlinux.o"
    }

    pub fn to_entry(&self) -> SymversEntry {
        SymversEntry {
            crc: self.crc,
            symbol: self.symbol.to_string(),
            module: self.module.to_string(),
            gpl: self.gpl,
            namespace: self.namespace.map(str::to_string),
        }
    }
}

/// The lines of a symvers text, in order. Blank lines are skipped; any other malformed
/// line is an error naming its line number.
pub fn lines(text: &[u8]) -> impl Iterator<Item = Result<SymversLine<'_>>> {
    text.split(|&b| b == b'\n').enumerate().filter_map(|(index, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(parse_line(line).map_err(|e| anyhow::anyhow!("line {}: {e}", index + 1)))
    })
}

/// Parse a whole symvers text into owned entries.
pub fn parse(text: &[u8]) -> Result<Vec<SymversEntry>> {
    lines(text).map(|l| l.map(|l| l.to_entry())).collect()
}

fn parse_line(line: &[u8]) -> Result<SymversLine<'_>> {
    let line = std::str::from_utf8(line).map_err(|_| anyhow::anyhow!("not UTF-8"))?;
    let mut fields = line.split('\t');
    let mut next = || fields.next();
    let (Some(crc), Some(symbol), Some(module), Some(kind)) = (next(), next(), next(), next())
    else {
        bail!("{} tab-separated fields, expected 4 or 5", line.split('\t').count());
    };
    let namespace = next().unwrap_or("");
    if next().is_some() {
        bail!("{} tab-separated fields, expected 4 or 5", line.split('\t').count());
    }
    let hex = crc.strip_prefix("0x").or_else(|| crc.strip_prefix("0X")).unwrap_or(crc);
    let Ok(crc) = u32::from_str_radix(hex, 16) else { bail!("bad CRC {crc:?}") };
    if symbol.is_empty() {
        bail!("empty symbol name");
    }
    let gpl = match kind {
        "EXPORT_SYMBOL" | "EXPORT_UNUSED_SYMBOL" => false,
        "EXPORT_SYMBOL_GPL" | "EXPORT_SYMBOL_GPL_FUTURE" | "EXPORT_UNUSED_SYMBOL_GPL" => true,
        other => bail!("unknown export type {other:?}"),
    };
    Ok(SymversLine {
        crc,
        symbol,
        module,
        gpl,
        namespace: (!namespace.is_empty()).then_some(namespace),
    })
}

/// Write entries in the five-field layout (fixtures, and the round-trip property).
pub fn write(entries: &[SymversEntry]) -> Vec<u8> {
    let mut s = String::with_capacity(entries.len() * 60);
    for e in entries {
        let kind = if e.gpl { "EXPORT_SYMBOL_GPL" } else { "EXPORT_SYMBOL" };
        let ns = e.namespace.as_deref().unwrap_or("");
        let _ = writeln!(s, "0x{:08x}\t{}\t{}\t{kind}\t{ns}", e.crc, e.symbol, e.module);
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_and_five_fields() {
        let text = b"0x4c9d28b0\tphys_base\tvmlinux\tEXPORT_SYMBOL\t\n\
            0x039823de\tinit_uts_ns\tvmlinux\tEXPORT_SYMBOL_GPL\n\
            \n\
            0x12345678\tusb_stor_probe1\tdrivers/usb/storage/usb-storage\tEXPORT_SYMBOL_GPL\tUSB_STORAGE\n";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].crc, 0x4c9d28b0);
        assert!(!e[0].gpl && e[0].namespace.is_none() && e[0].is_vmlinux());
        assert!(e[1].gpl && e[1].namespace.is_none());
        assert_eq!(e[2].namespace.as_deref(), Some("USB_STORAGE"));
        assert_eq!(e[2].module, "drivers/usb/storage/usb-storage");
        assert_eq!(parse(&write(&e)).unwrap(), e);
    }

    #[test]
    fn malformed_lines_name_their_number() {
        for bad in
            [&b"x\n0xzz\ta\tvmlinux\tEXPORT_SYMBOL\n"[..], b"0x1\ta\n", b"0x1\ta\tv\tEXPORT_FOO\n"]
        {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("line "), "{err}");
        }
        assert!(parse(b"\xff\xfe\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
