//! Operations: apply plans. Every write happens here, atomically (temp file in the same
//! directory, fsync, rename, fsync directory).

pub mod atomic;
pub mod depmod;
pub mod extract;
pub mod inject;
pub mod pack;
