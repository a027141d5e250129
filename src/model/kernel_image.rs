//! The export table of an installed kernel, read from its own boot image
//! (`/boot/vmlinuz-KVER`) through [`crate::formats::kernel_image`] and
//! [`crate::formats::ksymtab`]: what the loader really checks modules against.
//!
//! [`crate::model::kernel::Kernel`] uses it as the source of vmlinux's exports when no
//! `Module.symvers` is installed (Debian without its headers package), and to check a
//! symvers file against the kernel it claims to describe ([`disagreement`]).

use super::root::Root;
use crate::formats::kernel_image;
use crate::formats::ksymtab::{self, ExportTable};
use crate::formats::symvers::SymversLine;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;

/// Where distributions put the boot image of kernel `release`, in search order.
fn candidates(release: &str) -> [String; 4] {
    [
        format!("/boot/vmlinuz-{release}"),
        format!("/lib/modules/{release}/vmlinuz"),
        format!("/boot/vmlinux-{release}"),
        format!("/boot/Image-{release}"),
    ]
}

/// The export table read from a kernel's boot image.
#[derive(Debug, Clone)]
pub struct ImageExports {
    /// Host path of the image read.
    pub path: PathBuf,
    pub table: ExportTable,
}

/// Read the export table of kernel `release` under `root`. The error says why nothing
/// could be read: no image, a raw image (arm64 `Image`), a corrupt one.
pub fn read(root: &Root, release: &str) -> Result<ImageExports> {
    let mut found = None;
    for c in candidates(release) {
        let host = root.host(&c)?;
        if host.is_file() {
            found = Some((c, host));
            break;
        }
    }
    let Some((shown, path)) = found else {
        bail!("no boot image (/boot/vmlinuz-{release})");
    };
    let bytes = std::fs::read(&path).with_context(|| format!("{shown}: cannot read"))?;
    let vmlinux = kernel_image::vmlinux(&bytes).with_context(|| shown.clone())?;
    let table = ksymtab::read(&vmlinux).with_context(|| shown.clone())?;
    Ok(ImageExports { path, table })
}

/// How a symvers file's vmlinux lines differ from the image's export table; empty when
/// they agree symbol for symbol (CRC, GPL-only, namespace).
pub fn disagreement<'a>(
    symvers: impl Iterator<Item = SymversLine<'a>>,
    table: &ExportTable,
) -> Vec<String> {
    let image: HashMap<&str, &ksymtab::ImageExport> =
        table.exports.iter().map(|e| (e.symbol.as_str(), e)).collect();
    let mut seen = 0usize;
    let mut differ = Vec::new();
    let mut only_symvers = Vec::new();
    for line in symvers.filter(SymversLine::is_vmlinux) {
        let Some(e) = image.get(line.symbol) else {
            only_symvers.push(line.symbol.to_string());
            continue;
        };
        seen += 1;
        let crc_differs = e.crc.is_some_and(|c| c != line.crc);
        if crc_differs || e.gpl != line.gpl || e.namespace.as_deref() != line.namespace {
            differ.push(line.symbol.to_string());
        }
    }
    let only_image = image.len().saturating_sub(seen);
    let mut out = Vec::new();
    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
    if !differ.is_empty() {
        out.push(format!(
            "{} exports differ (CRC, GPL-only or namespace; first {})",
            differ.len(),
            first(&differ)
        ));
    }
    if !only_symvers.is_empty() {
        out.push(format!(
            "{} exports are listed but not in the kernel (first {})",
            only_symvers.len(),
            first(&only_symvers)
        ));
    }
    if only_image > 0 {
        out.push(format!("{only_image} exports of the kernel are missing from it"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ksymtab::{EntryLayout, ImageExport};

    #[test]
    fn disagreement_counts_each_kind() {
        let table = ExportTable {
            arch: "x86_64".into(),
            layout: EntryLayout::Prel32,
            exports: vec![
                ImageExport { symbol: "a".into(), crc: Some(1), gpl: false, namespace: None },
                ImageExport { symbol: "b".into(), crc: Some(2), gpl: true, namespace: None },
                ImageExport { symbol: "c".into(), crc: Some(3), gpl: false, namespace: None },
            ],
        };
        let text = b"0x1\ta\tvmlinux\tEXPORT_SYMBOL\t\n0x2\tb\tvmlinux\tEXPORT_SYMBOL_GPL\t\n\
                     0x3\tc\tvmlinux\tEXPORT_SYMBOL\t\n0x9\tm\tdrivers/x\tEXPORT_SYMBOL\t\n";
        let lines = |t: &'static [u8]| crate::formats::symvers::lines(t).map(|l| l.unwrap());
        assert!(disagreement(lines(text), &table).is_empty());
        let bad = b"0x1\ta\tvmlinux\tEXPORT_SYMBOL\t\n0x7\tb\tvmlinux\tEXPORT_SYMBOL_GPL\t\n\
                    0x4\td\tvmlinux\tEXPORT_SYMBOL\t\n";
        let d = disagreement(lines(bad), &table);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("1 exports differ") && d[0].contains("first b"));
        assert!(d[1].contains("first d") && d[2].starts_with("1 exports of the kernel"));
    }
}
