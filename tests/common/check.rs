//! Helpers for the `check` tests: the installed kernel's symvers, scratch module trees
//! that depmod can scan, depmod's warnings parsed, CRC patching, the out-of-tree
//! `bkram` build, and synthetic kernel roots made of sample modules.

use super::{missing, run, tool};
use bootkmod::formats::elf::ElfModule;
use bootkmod::formats::modversions::RECORD_SIZE;
use bootkmod::formats::symvers::{self, SymversEntry};
use bootkmod::samples::SampleModule;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian keeps Module.symvers in the headers package.
pub fn installed_symvers(kver: &str) -> Option<PathBuf> {
    let p = PathBuf::from(format!("/usr/src/linux-headers-{kver}/Module.symvers"));
    if p.is_file() {
        return Some(p);
    }
    missing(&format!("{} (linux-headers-amd64)", p.display()))?;
    unreachable!()
}

pub fn read_symvers(path: &Path) -> Vec<SymversEntry> {
    symvers::parse(&std::fs::read(path).unwrap()).unwrap()
}

pub fn crc_of(entries: &[SymversEntry], symbol: &str) -> u32 {
    entries
        .iter()
        .find(|e| e.symbol == symbol)
        .unwrap_or_else(|| panic!("{symbol} not in symvers"))
        .crc
}

/// A scratch root whose `lib/modules/KVER/kernel` is the installed tree (a symlink, which
/// depmod follows) and whose `extra/` holds the test's modules.
pub struct ScratchTree {
    pub dir: tempfile::TempDir,
    pub kver: String,
}

impl ScratchTree {
    pub fn new(kver: &str) -> ScratchTree {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("lib/modules").join(kver);
        std::fs::create_dir_all(tree.join("extra")).unwrap();
        let real = Path::new("/lib/modules").join(kver);
        std::os::unix::fs::symlink(real.join("kernel"), tree.join("kernel")).unwrap();
        for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
            if real.join(f).is_file() {
                std::fs::copy(real.join(f), tree.join(f)).unwrap();
            }
        }
        ScratchTree { dir, kver: kver.to_string() }
    }

    pub fn extra(&self, file: &str) -> PathBuf {
        self.dir.path().join("lib/modules").join(&self.kver).join("extra").join(file)
    }

    /// Run `depmod -naeE SYMVERS` over the tree; its warnings, parsed.
    pub fn depmod_warnings(&self, symvers: &Path) -> Option<BTreeSet<DepmodWarning>> {
        let depmod = tool("depmod")?;
        let out = run(Command::new(depmod)
            .arg("-naeE")
            .arg(symvers)
            .arg("-b")
            .arg(self.dir.path())
            .arg(&self.kver));
        assert!(out.status.success(), "depmod failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(parse_depmod_warnings(&String::from_utf8_lossy(&out.stderr)))
    }
}

/// One `depmod -e` warning: the module file's name, and the symbol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepmodWarning {
    Disagrees { file: String, symbol: String },
    Unknown { file: String, symbol: String },
}

/// `depmod: WARNING: /path/x.ko disagrees about version of symbol S` and
/// `depmod: WARNING: /path/x.ko needs unknown symbol S`.
pub fn parse_depmod_warnings(stderr: &str) -> BTreeSet<DepmodWarning> {
    let mut out = BTreeSet::new();
    for line in stderr.lines() {
        let Some(rest) = line.split("WARNING: ").nth(1) else { continue };
        let file_of = |p: &str| Path::new(p).file_name().unwrap().to_string_lossy().into_owned();
        if let Some((path, sym)) = rest.split_once(" disagrees about version of symbol ") {
            out.insert(DepmodWarning::Disagrees { file: file_of(path), symbol: sym.trim().into() });
        } else if let Some((path, sym)) = rest.split_once(" needs unknown symbol ") {
            out.insert(DepmodWarning::Unknown { file: file_of(path), symbol: sym.trim().into() });
        }
    }
    out
}

/// Change the `__versions` CRC of `symbol` in a module file's bytes (uncompressed ELF).
pub fn patch_version_crc(bytes: &mut [u8], symbol: &str, new_crc: u32) {
    let elf = ElfModule::parse(bytes).unwrap();
    let range = elf.section("__versions").expect("module has __versions").range.clone();
    let mut at = range.start;
    while at + RECORD_SIZE <= range.end {
        let name = &bytes[at + 8..at + RECORD_SIZE];
        let len = name.iter().position(|&b| b == 0).unwrap();
        if &name[..len] == symbol.as_bytes() {
            bytes[at..at + 8].copy_from_slice(&u64::from(new_crc).to_le_bytes());
            return;
        }
        at += RECORD_SIZE;
    }
    panic!("{symbol} not in __versions");
}

/// Build `tests/fixtures/bkram` against the installed headers (gcc + make); returns the
/// path of `bkram.ko` (the RAM disk); `bkns.ko` (a namespace import) is built beside it.
pub fn build_bkram(kver: &str, into: &Path) -> Option<PathBuf> {
    let build = Path::new("/lib/modules").join(kver).join("build");
    if !build.join("Makefile").is_file() {
        missing(&format!("{} (linux-headers)", build.display()))?;
    }
    tool("gcc")?;
    let make = tool("make")?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bkram");
    for f in ["bkram.c", "bkns.c", "Kbuild"] {
        std::fs::copy(src.join(f), into.join(f)).unwrap();
    }
    let out = run(Command::new(make)
        .arg("-C")
        .arg(&build)
        .arg(format!("M={}", into.display()))
        .arg("modules"));
    assert!(
        out.status.success(),
        "building bkram failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(into.join("bkram.ko"))
}

/// A synthetic kernel under a temporary root: one in-tree reference module (the
/// kernel's vermagic, struct size, machine), a Module.symvers and a config.
pub struct SyntheticKernel {
    pub dir: tempfile::TempDir,
    pub kver: String,
}

pub const SYNTH_KVER: &str = "6.8.0-99-amd64";
pub const SYNTH_VERMAGIC: &str = "6.8.0-99-amd64 SMP preempt mod_unload modversions ";
pub const SYNTH_LAYOUT: u32 = 0x9060323f;

impl SyntheticKernel {
    /// `reference` is written as `kernel/drivers/ref/ref.ko`; `exports` as the symvers.
    pub fn new(reference_elf: &[u8], exports: &[SymversEntry], config: &str) -> SyntheticKernel {
        let dir = tempfile::tempdir().unwrap();
        add_kernel(dir.path(), SYNTH_KVER, reference_elf, exports, config);
        SyntheticKernel { dir, kver: SYNTH_KVER.to_string() }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// Add kernel `kver` to a synthetic root: a reference module, `modules.order`,
/// `build/Module.symvers`, `/boot/config-KVER`.
pub fn add_kernel(
    root: &Path,
    kver: &str,
    reference_elf: &[u8],
    exports: &[SymversEntry],
    config: &str,
) {
    let tree = root.join("lib/modules").join(kver);
    std::fs::create_dir_all(tree.join("kernel/drivers/ref")).unwrap();
    std::fs::write(tree.join("kernel/drivers/ref/ref.ko"), reference_elf).unwrap();
    std::fs::write(tree.join("modules.order"), "kernel/drivers/ref/ref.ko\n").unwrap();
    std::fs::create_dir_all(tree.join("build")).unwrap();
    std::fs::write(tree.join("build/Module.symvers"), symvers::write(exports)).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join(format!("boot/config-{kver}")), config).unwrap();
}

/// The default reference module of a synthetic kernel.
pub fn synth_reference() -> SampleModule {
    let mut m = SampleModule::new("ref", SYNTH_VERMAGIC);
    m.import("module_layout", SYNTH_LAYOUT).set("intree", "Y");
    m
}

pub fn vmlinux_export(symbol: &str, crc: u32, gpl: bool, ns: Option<&str>) -> SymversEntry {
    SymversEntry {
        crc,
        symbol: symbol.into(),
        module: "vmlinux".into(),
        gpl,
        namespace: ns.map(str::to_string),
    }
}

pub const SYNTH_CONFIG: &str = "CONFIG_MODVERSIONS=y\nCONFIG_MODULE_SIG=y\n\
    # CONFIG_MODULE_SIG_FORCE is not set\n\
    # CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS is not set\n";

/// Find `file` (e.g. `virtio_blk.ko`) in the module tree of `kver` under `root`.
pub fn module_in(root: &Path, kver: &str, file: &str) -> PathBuf {
    let tree = bootkmod::model::tree::ModuleTree::new(bootkmod::model::root::Root::new(root), kver);
    tree.module_files()
        .unwrap()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|f| f == file))
        .unwrap_or_else(|| panic!("{file} not in {kver} under {}", root.display()))
}

/// The module without its appended signature (an altered signed module fails signature
/// verification, which the kernel treats as fatal even without enforcement).
pub fn strip_signature(bytes: &[u8]) -> Vec<u8> {
    match bootkmod::formats::signature::split(bytes).unwrap() {
        Some((content, _)) => content.to_vec(),
        None => bytes.to_vec(),
    }
}

/// Replace `from` by `to` (same length) inside `.modinfo`.
pub fn patch_modinfo(bytes: &mut [u8], from: &str, to: &str) {
    assert_eq!(from.len(), to.len(), "same-length patches only");
    let elf = ElfModule::parse(bytes).unwrap();
    let range = elf.section(".modinfo").unwrap().range.clone();
    let section = &mut bytes[range];
    let at = section
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not in .modinfo"));
    section[at..at + from.len()].copy_from_slice(to.as_bytes());
}

/// Set `sh_size` of `.gnu.linkonce.this_module` (ELF64 little-endian only).
pub fn patch_this_module_size(bytes: &mut [u8], size: u64) {
    let elf = ElfModule::parse(bytes).unwrap();
    let index = elf.sections.iter().position(|s| s.name == ".gnu.linkonce.this_module").unwrap();
    let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
    let shentsize = u16::from_le_bytes(bytes[0x3a..0x3c].try_into().unwrap()) as usize;
    let at = shoff + index * shentsize + 0x20;
    bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
}

/// Set the ELF header's `e_machine` (little-endian files).
pub fn patch_machine(bytes: &mut [u8], machine: u16) {
    bytes[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
}

/// Rename a section (same length) in `.shstrtab`: the loader then no longer finds it.
pub fn rename_section(bytes: &mut [u8], from: &str, to: &str) {
    assert_eq!(from.len(), to.len(), "same-length renames only");
    let elf = ElfModule::parse(bytes).unwrap();
    let range = elf.section(".shstrtab").unwrap().range.clone();
    let needle = [b"\0", from.as_bytes(), b"\0"].concat();
    let table = &mut bytes[range];
    let at = table
        .windows(needle.len())
        .position(|w| w == &needle[..])
        .unwrap_or_else(|| panic!("section {from} not found"))
        + 1;
    table[at..at + from.len()].copy_from_slice(to.as_bytes());
}
