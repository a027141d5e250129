//! Sample modules: well-formed `.ko` files generated in process.
//!
//! They are what the embedded demo runs on (no installed kernel needed) and the test
//! fixtures for what no real kernel ships: extended modversions, 32-bit and big-endian
//! targets, namespaced and GPL-only exports, odd `struct module` sizes. The layout follows
//! what modpost and the linker produce for a real module, so kmod's tools read them too.

use crate::formats::elf::{Class, Endian};
use crate::formats::modinfo::ModInfo;
use crate::formats::modversions::{self, VersionEntry};
use crate::model::module::Export;
use anyhow::{Context, Result};
use object::write::{Object, StandardSection, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

/// Target architectures the builder can emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleArch {
    X86_64,
    I386,
    /// 64-bit big-endian.
    S390x,
    /// 32-bit big-endian.
    PowerPc,
    Aarch64,
}

impl SampleArch {
    /// Every architecture the builder emits.
    pub const ALL: [SampleArch; 5] = [
        SampleArch::X86_64,
        SampleArch::I386,
        SampleArch::S390x,
        SampleArch::PowerPc,
        SampleArch::Aarch64,
    ];

    fn object(self) -> (Architecture, Endianness) {
        match self {
            SampleArch::X86_64 => (Architecture::X86_64, Endianness::Little),
            SampleArch::I386 => (Architecture::I386, Endianness::Little),
            SampleArch::S390x => (Architecture::S390x, Endianness::Big),
            SampleArch::PowerPc => (Architecture::PowerPc, Endianness::Big),
            SampleArch::Aarch64 => (Architecture::Aarch64, Endianness::Little),
        }
    }
    pub fn class(self) -> Class {
        match self {
            SampleArch::I386 | SampleArch::PowerPc => Class::Elf32,
            _ => Class::Elf64,
        }
    }
    pub fn endian(self) -> Endian {
        match self.object().1 {
            Endianness::Little => Endian::Little,
            Endianness::Big => Endian::Big,
        }
    }
}

/// A module to generate.
#[derive(Debug, Clone)]
pub struct SampleModule {
    pub arch: SampleArch,
    pub modinfo: ModInfo,
    pub versions: Vec<VersionEntry>,
    /// Write `__version_ext_crcs`/`__version_ext_names` (and no `__versions`).
    pub extended_versions: bool,
    pub exports: Vec<Export>,
    pub undefined: Vec<String>,
    /// Size of `.gnu.linkonce.this_module`; `None` leaves the section out.
    pub this_module_size: Option<u64>,
}

/// `sizeof(struct module)` of Debian's 6.1 amd64 kernels, a plausible default.
pub const DEFAULT_THIS_MODULE_SIZE: u64 = 896;

impl SampleModule {
    /// An x86-64 module with the `.modinfo` keys modpost always writes.
    pub fn new(name: &str, vermagic: &str) -> SampleModule {
        let mut modinfo = ModInfo::default();
        modinfo.push("license", "GPL");
        modinfo.push("description", format!("bootkmod sample module {name}"));
        modinfo.push("depends", "");
        modinfo.push("retpoline", "Y");
        modinfo.push("name", name);
        modinfo.push("vermagic", vermagic);
        SampleModule {
            arch: SampleArch::X86_64,
            modinfo,
            versions: Vec::new(),
            extended_versions: false,
            exports: Vec::new(),
            undefined: Vec::new(),
            this_module_size: Some(DEFAULT_THIS_MODULE_SIZE),
        }
    }

    /// Replace every value of `key` with one value.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        let mut info = ModInfo::default();
        let mut done = false;
        for (k, v) in self.modinfo.entries() {
            if k == key {
                if !done {
                    info.push(k.clone(), value);
                    done = true;
                }
            } else {
                info.push(k.clone(), v.clone());
            }
        }
        if !done {
            info.push(key, value);
        }
        self.modinfo = info;
        self
    }

    /// Import `symbol` with `crc` (an undefined symbol plus its modversions entry).
    pub fn import(&mut self, symbol: &str, crc: u32) -> &mut Self {
        self.undefined.push(symbol.to_string());
        self.versions.push(VersionEntry { crc: u64::from(crc), symbol: symbol.to_string() });
        self
    }

    /// Export `symbol`.
    pub fn export(
        &mut self,
        symbol: &str,
        crc: u32,
        gpl: bool,
        namespace: Option<&str>,
    ) -> &mut Self {
        self.exports.push(Export {
            name: symbol.to_string(),
            crc: Some(crc),
            gpl,
            namespace: namespace.map(str::to_string),
        });
        self
    }

    /// The ELF bytes of the module (unsigned, uncompressed).
    pub fn to_elf(&self) -> Result<Vec<u8>> {
        let (arch, endian) = self.arch.object();
        let (class, target_endian) = (self.arch.class(), self.arch.endian());
        let mut obj = Object::new(BinaryFormat::Elf, arch, endian);

        let text = obj.section_id(StandardSection::Text);
        obj.append_section_data(text, &[0xc3; 16], 16);
        // A global function in .text: init_module, and each exported symbol's body.
        let function = |obj: &mut Object, name: &str| {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: 0,
                size: 16,
                kind: SymbolKind::Text,
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Section(text),
                flags: SymbolFlags::None,
            });
        };
        function(&mut obj, "init_module");

        let section = |obj: &mut Object, name: &str, kind: SectionKind, data: &[u8], align: u64| {
            let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), kind);
            obj.append_section_data(id, data, align);
            id
        };
        let local = |obj: &mut Object, name: String, value: u64, sec| {
            obj.add_symbol(Symbol {
                name: name.into_bytes(),
                value,
                size: 0,
                kind: SymbolKind::Data,
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::Section(sec),
                flags: SymbolFlags::None,
            });
        };

        section(&mut obj, ".modinfo", SectionKind::ReadOnlyString, &self.modinfo.to_bytes(), 1);
        if self.extended_versions {
            let (crcs, names) = modversions::encode_extended(&self.versions, target_endian);
            section(&mut obj, "__version_ext_crcs", SectionKind::ReadOnlyData, &crcs, 4);
            section(&mut obj, "__version_ext_names", SectionKind::ReadOnlyString, &names, 1);
        } else if !self.versions.is_empty() {
            let v = modversions::encode_classic(&self.versions, class, target_endian);
            section(&mut obj, "__versions", SectionKind::ReadOnlyData, &v, 32);
        }
        if let Some(size) = self.this_module_size {
            let len = usize::try_from(size).context("struct module size")?;
            section(&mut obj, ".gnu.linkonce.this_module", SectionKind::Data, &vec![0; len], 64);
        }

        // Exports: ksymtab entries (12 bytes each, as with PREL32 relocations), CRCs in
        // __kcrctab*, names and namespaces in __ksymtab_strings.
        if !self.exports.is_empty() {
            let mut strings = Vec::new();
            let mut name_offsets = Vec::new();
            for e in &self.exports {
                name_offsets.push(strings.len() as u64);
                strings.extend_from_slice(e.name.as_bytes());
                strings.push(0);
            }
            let mut ns_offsets = Vec::new();
            for e in &self.exports {
                ns_offsets.push(strings.len() as u64);
                if let Some(ns) = &e.namespace {
                    strings.extend_from_slice(ns.as_bytes());
                }
                strings.push(0);
            }
            let strtab =
                section(&mut obj, "__ksymtab_strings", SectionKind::ReadOnlyString, &strings, 1);
            for gpl in [false, true] {
                let group: Vec<(usize, &Export)> =
                    self.exports.iter().enumerate().filter(|(_, e)| e.gpl == gpl).collect();
                if group.is_empty() {
                    continue;
                }
                let (ksym, kcrc) = if gpl {
                    ("__ksymtab_gpl", "__kcrctab_gpl")
                } else {
                    ("__ksymtab", "__kcrctab")
                };
                let ksym = section(
                    &mut obj,
                    ksym,
                    SectionKind::ReadOnlyData,
                    &vec![0; 12 * group.len()],
                    4,
                );
                let mut crc_bytes = Vec::new();
                for (_, e) in &group {
                    let crc = e.crc.unwrap_or(0);
                    crc_bytes.extend_from_slice(&match target_endian {
                        Endian::Little => crc.to_le_bytes(),
                        Endian::Big => crc.to_be_bytes(),
                    });
                }
                let kcrc = section(&mut obj, kcrc, SectionKind::ReadOnlyData, &crc_bytes, 4);
                for (slot, (i, e)) in group.iter().enumerate() {
                    local(&mut obj, format!("__ksymtab_{}", e.name), 12 * slot as u64, ksym);
                    local(&mut obj, format!("__crc_{}", e.name), 4 * slot as u64, kcrc);
                    local(&mut obj, format!("__kstrtab_{}", e.name), name_offsets[*i], strtab);
                    local(&mut obj, format!("__kstrtabns_{}", e.name), ns_offsets[*i], strtab);
                    function(&mut obj, &e.name);
                }
            }
        }

        for name in &self.undefined {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Undefined,
                flags: SymbolFlags::None,
            });
        }
        obj.write().context("generating sample module ELF")
    }
}

/// The embedded demo set: a storage HBA driver and the library module it depends on,
/// both built for `release` (an amd64 vermagic with modversions).
pub fn demo_set(release: &str) -> Vec<SampleModule> {
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let mut core = SampleModule::new("demo_scsi_core", &vermagic);
    core.import("module_layout", 0x5b1a2c3d)
        .import("_printk", 0x92997ed8)
        .export("demo_scsi_host_alloc", 0x1a2b3c4d, true, None)
        .export("demo_scsi_add_host", 0x5e6f7a8b, false, None)
        .set("intree", "Y");
    let mut hba = SampleModule::new("demo_hba", &vermagic);
    hba.import("module_layout", 0x5b1a2c3d)
        .import("_printk", 0x92997ed8)
        .import("demo_scsi_host_alloc", 0x1a2b3c4d)
        .import("demo_scsi_add_host", 0x5e6f7a8b)
        .set("depends", "demo_scsi_core")
        .set("version", "1.0.0");
    hba.modinfo.push("alias", "pci:v00001000d0000005Dsv*sd*bc*sc*i*");
    hba.modinfo.push("alias", "pci:v00001000d0000005Fsv*sd*bc*sc*i*");
    hba.modinfo.push("firmware", "demo/hba-fw.bin");
    vec![core, hba]
}

/// A generated target system for the demo: a root with a sample kernel tree (its
/// in-tree library module, `modules.order`, `Module.symvers` for vmlinux's exports,
/// the HBA's firmware) and an initramfs for it that lacks the HBA driver.
#[derive(Debug, Clone)]
pub struct DemoSystem {
    pub root: std::path::PathBuf,
    /// gzip initramfs holding a sample filesystem module and its indexes.
    pub image: std::path::PathBuf,
    /// The HBA driver to inject, as a vendor would ship it (`.ko.xz`).
    pub driver: std::path::PathBuf,
    pub release: String,
}

/// Write a [`DemoSystem`] under `dir`.
pub fn demo_system(dir: &std::path::Path, release: &str) -> Result<DemoSystem> {
    use crate::engines::depmod::{DepModule, Graph, Inputs};
    use crate::engines::initramfs::write::ArchiveWriter;
    use crate::formats::compression::{Compression, Encoder, EncoderSettings};
    use crate::formats::cpio::{EntryMeta, Format, S_IFDIR, S_IFREG};
    use crate::model::module::{Module, ReadOptions};
    use std::io::Write;

    let set = demo_set(release);
    let (core, hba) = (&set[0], &set[1]);
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let mut fs_mod = SampleModule::new("demo_fs", &vermagic);
    fs_mod.import("module_layout", 0x5b1a2c3d).import("_printk", 0x92997ed8).set("intree", "Y");

    let root = dir.join("root");
    let tree = root.join("lib/modules").join(release);
    let write = |path: &std::path::Path, bytes: &[u8]| -> Result<()> {
        std::fs::create_dir_all(path.parent().context("path without parent")?)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    let fs_elf = fs_mod.to_elf()?;
    write(&tree.join("kernel/fs/demo_fs.ko"), &fs_elf)?;
    write(&tree.join("kernel/drivers/scsi/demo_scsi_core.ko"), &core.to_elf()?)?;
    write(
        &tree.join("modules.order"),
        b"kernel/fs/demo_fs.ko\nkernel/drivers/scsi/demo_scsi_core.ko\n",
    )?;
    write(&tree.join("modules.builtin"), b"")?;
    write(
        &tree.join("build/Module.symvers"),
        b"0x5b1a2c3d\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n0x92997ed8\t_printk\tvmlinux\tEXPORT_SYMBOL\t\n\
          0x1a2b3c4d\tdemo_scsi_host_alloc\tdrivers/scsi/demo_scsi_core\tEXPORT_SYMBOL_GPL\t\n\
          0x5e6f7a8b\tdemo_scsi_add_host\tdrivers/scsi/demo_scsi_core\tEXPORT_SYMBOL\t\n",
    )?;
    write(&root.join("lib/firmware/demo/hba-fw.bin"), b"demo HBA firmware\n")?;

    // The vendor's driver, xz-compressed with the CRC32 check the kernel needs.
    let driver = dir.join("demo_hba.ko.xz");
    let mut xz = Encoder::new(EncoderSettings::new(Compression::Xz), Vec::new())?;
    xz.write_all(&hba.to_elf()?)?;
    write(&driver, &xz.finish()?)?;

    // The image: the filesystem module and indexes computed for it alone.
    let mut module = Module::from_bytes(&fs_elf, ReadOptions::default())?;
    module.path = Some(format!("/lib/modules/{release}/kernel/fs/demo_fs.ko").into());
    let graph = Graph::build(Inputs {
        modules: vec![DepModule {
            name: "demo_fs".into(),
            target: format!("/lib/modules/{release}/kernel/fs/demo_fs.ko").into(),
            rel: Some("kernel/fs/demo_fs.ko".into()),
            module: module.into(),
        }],
        order: Some(b"kernel/fs/demo_fs.ko\n".to_vec()),
        builtin: Some(Vec::new()),
        builtin_modinfo: None,
    })?;
    let image = dir.join("initrd.img");
    let mut out = ArchiveWriter::new(
        std::fs::File::create(&image).with_context(|| format!("creating {}", image.display()))?,
        EncoderSettings::new(Compression::Gzip),
        Format::Newc,
    )?;
    let t = format!("lib/modules/{release}");
    for d in ["lib", "lib/modules", &t, &format!("{t}/kernel"), &format!("{t}/kernel/fs")] {
        out.add(&EntryMeta::new(d, S_IFDIR | 0o755), b"")?;
    }
    out.add(&EntryMeta::new(format!("{t}/kernel/fs/demo_fs.ko"), S_IFREG | 0o644), &fs_elf)?;
    out.add(
        &EntryMeta::new(format!("{t}/modules.order"), S_IFREG | 0o644),
        b"kernel/fs/demo_fs.ko\n",
    )?;
    for (name, bytes) in graph.files()? {
        out.add(&EntryMeta::new(format!("{t}/{name}"), S_IFREG | 0o644), &bytes)?;
    }
    out.finish()?;
    Ok(DemoSystem { root, image, driver, release: release.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::module::{Module, ReadOptions, VersionsLayout};

    #[test]
    fn every_arch_reads_back() {
        for arch in SampleArch::ALL {
            let mut s = SampleModule::new("m", "6.1.0 SMP mod_unload modversions ");
            s.arch = arch;
            s.import("module_layout", 0xdeadbeef).export("m_fn", 0x1234, true, Some("NS_X"));
            let m = Module::from_bytes(&s.to_elf().unwrap(), ReadOptions::default()).unwrap();
            assert_eq!(m.class, arch.class(), "{arch:?}");
            assert_eq!(m.endian, arch.endian(), "{arch:?}");
            assert_eq!(m.versions, s.versions, "{arch:?}");
            assert_eq!(m.exports, s.exports, "{arch:?}");
            assert_eq!(m.undefined, ["module_layout"]);
            assert_eq!(m.this_module_size, Some(DEFAULT_THIS_MODULE_SIZE));
            assert_eq!(m.name(), "m");
        }
    }

    #[test]
    fn extended_modversions_read_back() {
        let mut s = SampleModule::new("x", "6.14.0 SMP mod_unload modversions ");
        s.extended_versions = true;
        s.import("a_very_long_symbol_name_that_does_not_fit_in_the_classic_record_of_56", 7);
        let m = Module::from_bytes(&s.to_elf().unwrap(), ReadOptions::default()).unwrap();
        assert_eq!(m.versions_layout, Some(VersionsLayout::Extended));
        assert_eq!(m.versions, s.versions);
    }
}
