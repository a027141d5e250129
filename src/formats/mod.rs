//! Formats: pure byte codecs. Bytes in, values out (and back); no filesystem, no
//! global state. This is where fuzzing and property tests aim.

pub mod bls;
pub mod compression;
pub mod cpio;
pub mod der;
pub mod dud;
pub mod elf;
pub mod kconfig;
pub mod kernel_image;
pub mod kmod_index;
pub mod ksymtab;
pub mod luks;
pub mod modinfo;
pub mod modprobe_conf;
pub mod modversions;
pub mod rpm_header;
pub mod rpmvercmp;
pub mod signature;
pub mod symvers;
pub mod uki;
