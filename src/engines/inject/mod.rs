//! The injection plan: what must go into an initramfs so that a storage driver loads from
//! it, computed without writing anything.
//!
//! Flow:
//!
//! 1. [`ImageContents::read`] walks the image once (the kernel's unpacking rules, via
//!    `engines::initramfs`), keeping the merged [`View`], every module under a
//!    `lib/modules/<kver>` tree (parsed; with its sha256 when [`Digests`] asks) and the
//!    few small files the plan reads whole: index and order files, `depmod.d`,
//!    early-load configuration. [`ImageContents::resume`] reads on into bytes appended
//!    later, so a verification need not decode the original segments again.
//! 2. [`plan`] checks the requested modules against the target kernel
//!    (`engines::compat`), closes over `depends=`, `softdep=` and the disk-class driver a
//!    controller needs to produce a block device ([`DISK_CLASS`]), skips what is built in
//!    or already present with the same sha256, places each new file where depmod's search
//!    order makes it win over an in-image copy, adds missing firmware, regenerates the
//!    image's indexes with native depmod (`engines::depmod::Graph`) over the resulting
//!    module set, and (with `load_early`) the image's own early-load mechanism.
//! 3. The result is a [`Plan`]: a report (serialisable, what `--dry-run` prints) plus the
//!    cpio entries to add ([`NewEntry`]). Entries use resolved paths, so a `lib ->
//!    usr/lib` symlink in the image is followed, never replaced.
//!
//! Reading files of the target system is the caller's job ([`Sources`]): this module
//! never touches disk.
//!
//! One file per concern: `read` (the image's contents), `plan` (requests, the
//! closure and the [`Plan`]), `place` (where files land: depmod's choice among copies,
//! resolved paths, firmware), `early_load` (the image's own early-load mechanism),
//! `chains` (the index-driven check of a written image), `take_out` (modules taken back
//! out of an image another tool rebuilt).

mod chains;
mod early_load;
mod place;
mod plan;
mod read;
mod take_out;

pub use chains::{chains, Chain};
pub use early_load::EarlyLoad;
pub use plan::{
    choose_tree, plan, Action, NewEntry, Origin, Plan, PlanOptions, PlannedFirmware, PlannedModule,
    Request, Sources, Why, DISK_CLASS,
};
pub use read::{Digests, ImageContents, ImageModule};
pub use take_out::{take_out, Removal};

#[cfg(test)]
mod testing {
    use super::*;
    use crate::formats::cpio::{self, EntryMeta, Format};

    /// One raw newc segment of these (name, mode, body) entries, with its trailer.
    pub fn segment(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut w = cpio::Writer::new(Vec::new(), Format::Newc);
        for (name, mode, body) in entries {
            w.write_entry(&EntryMeta::new(name.as_bytes(), *mode), body).unwrap();
        }
        w.finish().unwrap()
    }

    pub fn image(entries: &[(&str, u32, &[u8])]) -> ImageContents {
        ImageContents::read(&segment(entries)[..], "test image", Digests::All).unwrap()
    }
}
