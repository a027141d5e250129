//! bootkmod on kernels of other architectures, judged by kmod and by the rules: Debian's
//! arm64 (64-bit little-endian), s390x (64-bit big-endian) and i386 (32-bit) builds,
//! unpacked by `.ci/setup.d/foreign-kernels` (picked relative to what the archive
//! offers, so s390x may sit at another ABI).
//!
//! - `info` equals `modinfo -F F` on every module of each tree for every field of
//!   [`FIELDS`], and `info --modversions` equals `modprobe --dump-modversions`;
//! - `depmod` on each whole tree writes kmod's indexes byte for byte;
//! - `check` across them: each build's own modules load on it; a module of another
//!   architecture is refused, the architecture first; i386's bzImage gives the same
//!   export table as its Module.symvers (ELF32, PREL32 entries), while arm64's raw
//!   Image and the s390 image say what they are instead of an export table.

mod common;

use bootkmod::engines::compat::{self, Rule};
use bootkmod::engines::depmod;
use bootkmod::model::kernel::{Kernel, KernelOptions, SecureBootMode, VmlinuxExports};
use bootkmod::model::kernel_image;
use bootkmod::model::module::{Module, ReadOptions};
use bootkmod::model::root::Root;
use common::depmod::{assert_same_indexes, TreeRoot};
use common::foreign::{foreign_kernels, ForeignKernel};
use common::kmod::{self, FIELDS};
use std::path::PathBuf;

fn build(arch: &str) -> Option<ForeignKernel> {
    foreign_kernels()?.into_iter().find(|k| k.arch == arch)
}

/// Every module of `arch`'s tree: each modinfo field and the modversions, as kmod says.
fn info_equals_kmod(arch: &str) {
    let Some(k) = build(arch) else { return };
    if common::tool("modinfo").is_none() || common::tool("modprobe").is_none() {
        return;
    }
    let modules = k.modules();
    assert!(modules.len() > 1000, "{arch}: {} modules", modules.len());
    for field in FIELDS {
        kmod::assert_same_output(
            &format!("{arch} -F {field}"),
            &modules,
            &modules,
            &|files| kmod::bootkmod_field(field, files),
            &|files| kmod::modinfo_field(field, files).expect("modinfo"),
        );
    }
    kmod::assert_same_output(
        &format!("{arch} --modversions"),
        &modules,
        &modules,
        &kmod::bootkmod_modversions,
        &|files| kmod::modprobe_modversions(files).expect("modprobe"),
    );
    // The comparison means something: the tree is of the architecture it claims.
    let first = Module::read(&modules[0], ReadOptions::default()).unwrap();
    assert_eq!(first.arch(), bootkmod::formats::elf::canonical_arch(arch));
    println!(
        "{arch} {}: {} modules x {} modinfo fields + modversions: 0 differences",
        k.release,
        modules.len(),
        FIELDS.len()
    );
}

#[test]
fn info_equals_kmod_on_every_arm64_module() {
    info_equals_kmod("arm64");
}

#[test]
fn info_equals_kmod_on_every_s390x_module() {
    info_equals_kmod("s390x");
}

#[test]
fn info_equals_kmod_on_every_i386_module() {
    info_equals_kmod("i386");
}

#[test]
fn depmod_is_byte_identical_on_each_whole_tree() {
    let Some(kernels) = foreign_kernels() else { return };
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    for k in kernels {
        let root = TreeRoot::copy_tree(&k.root, &k.release, |_| true);
        let graph = depmod::compute(&Root::new(root.root()), &root.release).unwrap();
        let ours = graph.files().unwrap();
        root.run_depmod(&kmod_depmod);
        assert_same_indexes(&root, &ours);
        let modules = std::fs::read_to_string(root.tree().join("modules.dep")).unwrap();
        println!(
            "{} {}: depmod indexes byte-identical ({} files, {} modules)",
            k.arch,
            k.release,
            ours.len(),
            modules.lines().count()
        );
    }
}

/// A driver every Debian flavour builds as a module.
fn driver(k: &ForeignKernel) -> PathBuf {
    k.modules()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("virtio_blk.ko")))
        .unwrap_or_else(|| panic!("{}: no virtio_blk", k.release))
}

#[test]
fn check_across_architectures() {
    let Some(kernels) = foreign_kernels() else { return };
    let Some(installed) = common::installed_kernel() else { return };
    let opts = KernelOptions { secure_boot: SecureBootMode::Off, ..Default::default() };
    let host = Kernel::read(&Root::new("/"), &installed, &opts).unwrap();
    let mut checked = 0;
    for k in &kernels {
        let root = Root::new(&k.root);
        let kernel = Kernel::read(&root, &k.release, &opts).unwrap();
        assert_eq!(kernel.vmlinux_exports, VmlinuxExports::Symvers, "{}", k.release);
        let own = Module::read(&driver(k), ReadOptions::default()).unwrap();
        // Its own build: loads (unsigned-key taints aside, none here: Debian signs them).
        let v = compat::check(&kernel, &own);
        assert!(v.compatible && v.reasons.is_empty(), "{} on its own kernel: {:#?}", k.arch, v);
        // On the x86_64 host kernel: refused, and the architecture is the first reason.
        let v = compat::check(&host, &own);
        let first = v.first_refusal().unwrap_or_else(|| panic!("{} loads on x86_64", k.arch));
        let want = if own.class == host.class.unwrap() { Rule::Machine } else { Rule::ElfClass };
        assert_eq!(first.rule, want, "{}: {:#?}", k.arch, v.reasons);
        checked += 2;
        // Every other foreign build refuses it the same way.
        for other in kernels.iter().filter(|o| o.arch != k.arch) {
            let their = Kernel::read(&Root::new(&other.root), &other.release, &opts).unwrap();
            let v = compat::check(&their, &own);
            let first = v.first_refusal().expect("refused");
            assert!(
                matches!(first.rule, Rule::Machine | Rule::ElfClass),
                "{} module on {}: {:#?}",
                k.arch,
                other.arch,
                v.reasons
            );
            checked += 1;
        }
        // The CLI says it first, on one line per kernel.
        let out = common::run(
            common::bootkmod()
                .args(["check", "--secure-boot", "off", "--kver", &installed])
                .arg(driver(k)),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{text}");
        let first_reason = text.lines().find(|l| l.contains("refused")).unwrap_or_default();
        assert!(first_reason.contains(want.name()), "{}: {text}", k.arch);
    }
    println!("{checked} cross-architecture verdicts as expected");
}

/// What the boot image of each architecture gives: i386's bzImage (ELF32, PREL32
/// entries) the same exports as its symvers; arm64's raw Image and the s390 image a
/// reason, which `check --no-symvers` reports instead of any symbol.
#[test]
fn boot_images_of_other_architectures() {
    let Some(kernels) = foreign_kernels() else { return };
    for k in &kernels {
        let root = Root::new(&k.root);
        let read = kernel_image::read(&root, &k.release);
        match k.arch.as_str() {
            "i386" => {
                let image = read.unwrap_or_else(|e| panic!("{}: {e:#}", k.release));
                assert_eq!(image.table.arch, "i386");
                // x86 selects PREL32 relocations in both widths.
                assert_eq!(image.table.layout, bootkmod::formats::ksymtab::EntryLayout::Prel32);
                let text = std::fs::read(k.symvers()).unwrap();
                let lines = bootkmod::formats::symvers::lines(&text).map(|l| l.unwrap());
                let differences = kernel_image::disagreement(lines, &image.table);
                assert!(differences.is_empty(), "{}: {differences:?}", k.release);
                println!(
                    "i386 {}: {} exports from the bzImage ({:?} entries) equal its symvers",
                    k.release,
                    image.table.exports.len(),
                    image.table.layout
                );
            }
            arch => {
                let err = format!("{:#}", read.unwrap_err());
                let what = if arch == "arm64" { "arm64 Image" } else { "s390 image" };
                assert!(err.contains(what) && err.contains("no section headers"), "{err}");
                let opts = KernelOptions {
                    ignore_symvers: true,
                    secure_boot: SecureBootMode::Off,
                    ..Default::default()
                };
                let kernel = Kernel::read(&root, &k.release, &opts).unwrap();
                let VmlinuxExports::Missing { why } = &kernel.vmlinux_exports else {
                    panic!("{:?}", kernel.vmlinux_exports)
                };
                assert!(why.contains(what), "{why}");
                let v = compat::check(
                    &kernel,
                    &Module::read(&driver(k), ReadOptions::default()).unwrap(),
                );
                assert_eq!(v.first_refusal().map(|r| r.rule), Some(Rule::ExportTable), "{v:#?}");
                println!("{arch} {}: {err}", k.release);
            }
        }
    }
}
