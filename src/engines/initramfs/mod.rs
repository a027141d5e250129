//! The initramfs engine: reads images exactly as the kernel's unpacker does.
//!
//! Flow: [`walk::walk`] reads an image front to back from a `BufRead`, finding its
//! [`walk::Segment`]s (raw cpio runs and compressed streams, with zero padding between)
//! and handing every cpio [`walk::Entry`] with a reader over its body to a
//! [`walk::Visitor`]. [`view::View`] is the visitor that builds the tree the kernel would
//! build, with each name's segment of origin. Listing needs one pass; extracting or
//! printing contents needs a second pass that streams the bodies the view selected (see
//! `operations::extract`), so an image is never held in memory.
//!
//! Writing images is [`write`]: entries to a newc archive, compressed like any codec,
//! onto any `Write` — the building block an overlay injection appends with.

pub mod view;
pub mod walk;
pub mod write;

use anyhow::Result;
use std::io::BufRead;
use view::View;
use walk::Segment;

/// Read a whole image into its merged view (bodies are skipped, not stored).
pub fn read_view<R: BufRead + Send>(image: R, source: &str) -> Result<(View, Vec<Segment>)> {
    let mut view = View::new();
    let segments = walk::walk(image, source, &mut view)?;
    Ok((view, segments))
}

/// A `lib/modules/<release>` tree found in an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelTree {
    pub release: String,
    /// Where it is in the image (after resolving `lib -> usr/lib`).
    pub path: String,
    /// Module files (`*.ko`, `*.ko.xz`, `*.ko.zst`, `*.ko.gz`) under it.
    pub modules: usize,
}

/// The kernel module trees an image holds, as the booted initramfs sees them under
/// `/lib/modules` (and `/usr/lib/modules`).
pub fn kernel_versions(view: &View) -> Vec<KernelTree> {
    let mut bases: Vec<Vec<u8>> = Vec::new();
    for dir in [&b"lib/modules"[..], b"usr/lib/modules"] {
        if let Some(found) = view.lookup(dir, true) {
            if found.inode.is_dir() && !bases.iter().any(|b| b == found.path) {
                bases.push(found.path.to_vec());
            }
        }
    }
    let mut trees = Vec::new();
    for base in bases {
        let prefix = [base.as_slice(), b"/"].concat();
        for entry in view.entries() {
            let Some(release) = entry.path.strip_prefix(prefix.as_slice()) else { continue };
            if release.contains(&b'/') || !entry.inode.is_dir() {
                continue;
            }
            let tree_prefix = [entry.path, b"/"].concat();
            let modules = view
                .entries()
                .filter(|e| {
                    e.path.starts_with(&tree_prefix)
                        && e.inode.file_type() == crate::formats::cpio::S_IFREG
                })
                .filter(|e| is_module_name(e.path))
                .count();
            trees.push(KernelTree {
                release: String::from_utf8_lossy(release).into_owned(),
                path: entry.display_path(),
                modules,
            });
        }
    }
    trees
}

fn is_module_name(path: &[u8]) -> bool {
    [&b".ko"[..], b".ko.xz", b".ko.zst", b".ko.gz"].iter().any(|ext| path.ends_with(ext))
}
