//! Model: facts read from files (through a [`root::Root`]), never written.

pub mod boot_images;
pub mod dud;
pub mod efi_keys;
pub mod kernel;
pub mod kernel_image;
pub mod ledger;
pub mod modprobe;
pub mod module;
pub mod root;
pub mod root_chain;
pub mod tree;
pub mod uki;
