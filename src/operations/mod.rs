//! Operations: apply plans. Every write happens here, atomically (temp file in the same
//! directory, fsync, rename, fsync directory).

pub mod extract;
pub mod pack;
pub mod atomic;
pub mod depmod;
