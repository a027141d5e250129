//! A Unified Kernel Image: a PE/COFF EFI executable (systemd's stub) carrying the kernel
//! (`.linux`), its initramfs (`.initrd`), command line (`.cmdline`), os-release
//! (`.osrel`) and kernel release (`.uname`) as sections; Secure Boot signs it with an
//! Authenticode signature in the PE certificate table (data directory 4).
//!
//! Read with the `object` crate's PE reader (bounds-checked; already a dependency for
//! writing sample modules): this module only names the sections a UKI has.

use anyhow::{bail, Context, Result};
use object::read::pe::{ImageNtHeaders, PeFile32, PeFile64};
use object::{Object, ObjectSection};

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

const CERTIFICATE_TABLE: usize = 4;

impl Uki {
    /// Read a PE file's UKI sections. An EFI file without `.linux` is not a UKI.
    pub fn parse(bytes: &[u8]) -> Result<Uki> {
        if bytes.get(..2) != Some(b"MZ") {
            bail!("not a PE file (no MZ header)");
        }
        match PeFile64::parse(bytes) {
            Ok(pe) => Self::from_pe(&pe, bytes),
            Err(_) => Self::from_pe(&PeFile32::parse(bytes).context("not a PE file")?, bytes),
        }
    }

    fn from_pe<H: ImageNtHeaders>(
        pe: &object::read::pe::PeFile<'_, H>,
        bytes: &[u8],
    ) -> Result<Uki> {
        let range = |name: &str| -> Result<Option<(usize, usize)>> {
            let Some(s) = pe.section_by_name(name) else { return Ok(None) };
            let Some((off, len)) = s.file_range() else { return Ok(None) };
            let (off, len) = (off as usize, len as usize);
            // A section's raw size is rounded up to the file alignment: the payload is
            // the smaller of the raw size and the virtual size.
            let virt = s.size() as usize;
            let len = if virt > 0 { len.min(virt) } else { len };
            if off.checked_add(len).is_none_or(|end| end > bytes.len()) {
                bail!("section {name} runs past the end of the file");
            }
            Ok(Some((off, len)))
        };
        let text = |name: &str| -> Result<Option<String>> {
            Ok(range(name)?.map(|(o, l)| {
                String::from_utf8_lossy(&bytes[o..o + l]).trim_end_matches(['\0', '\n']).to_string()
            }))
        };
        let linux = range(".linux")?;
        if linux.is_none() {
            bail!("a PE file without a .linux section: not a Unified Kernel Image");
        }
        let signature = pe
            .data_directories()
            .get(CERTIFICATE_TABLE)
            .map(|d| {
                (
                    d.virtual_address.get(object::LittleEndian) as usize,
                    d.size.get(object::LittleEndian) as usize,
                )
            })
            .filter(|(_, len)| *len > 0);
        Ok(Uki {
            uname: text(".uname")?,
            osrel: text(".osrel")?,
            cmdline: text(".cmdline")?,
            linux,
            initrd: range(".initrd")?,
            signature,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert!(Uki::parse(b"").is_err());
        assert!(Uki::parse(b"MZ").is_err());
        let mut pe = b"MZ".to_vec();
        pe.resize(0x40, 0);
        pe[0x3c] = 0x40;
        pe.extend_from_slice(b"PE\0\0");
        for n in 0..pe.len() + 8 {
            let mut cut = pe.clone();
            cut.resize(n.max(2), 0xff);
            let _ = Uki::parse(&cut);
        }
    }
}
