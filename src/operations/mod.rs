//! Operations: apply plans. Every write happens here, atomically (temp file in the same
//! directory, fsync, rename, fsync directory).

pub mod atomic;
pub mod depmod;
pub mod doctor;
pub mod dracut;
pub mod dud;
pub mod extract;
pub mod failpoint;
pub mod images;
pub mod inject;
pub mod install;
pub mod journal;
pub mod ledger;
pub mod pack;
pub mod refresh;
pub mod remove;
pub mod sign;
pub mod weak_updates;
