//! The kernel is the final judge. Storage drivers of other Debian builds (an older ABI,
//! `-55`; the rt flavour, `-56-rt`), of the target build itself, the out-of-tree `bkram`
//! and a real module with one CRC changed get bootkmod verdicts against the installed
//! target kernel; then the target boots in QEMU with an initramfs that `insmod`s each
//! and prints what the loader said. Every verdict must match what the kernel did —
//! loaded, or refused with the same first reason — once booted by default and once with
//! `module.sig_enforce=1`.

mod common;

use bootkmod::engines::compat::{self, Rule, Verdict};
use bootkmod::model::kernel::{Kernel, KernelOptions, SecureBootMode, VmlinuxExports};
use bootkmod::model::module::{Module, ReadOptions};
use bootkmod::model::root::Root;
use common::check as ck;
use common::qemu::{self, Boot, InitramfsDir};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A module file to try, and a label for messages.
struct Candidate {
    label: String,
    file: PathBuf,
}

/// What the kernel's loader said about one insmod.
#[derive(Debug)]
struct Judgement {
    loaded: bool,
    messages: Vec<String>,
}

/// The loader's first refusal, as a rule; symbol-level messages are one class, since the
/// kernel reports them in symbol-table order.
fn kernel_rule(messages: &[String]) -> Option<Rule> {
    for m in messages {
        let rule = if m.contains("is rejected") {
            Rule::Signature
        } else if m.contains("section size must match") {
            Rule::StructModuleSize
        } else if m.contains("disagrees about version of symbol module_layout") {
            Rule::ModuleLayout
        } else if m.contains("version magic") {
            Rule::Vermagic
        } else if m.contains("disagrees about version of symbol") {
            Rule::SymbolCrc
        } else if m.contains("Unknown symbol") {
            Rule::UnknownSymbol
        } else if m.contains("does not import it") {
            Rule::Namespace
        } else if m.contains("ELF header") || m.contains("architecture") {
            Rule::Machine
        } else {
            continue;
        };
        return Some(rule);
    }
    None
}

fn symbol_level(rule: Rule) -> bool {
    matches!(rule, Rule::UnknownSymbol | Rule::GplOnly | Rule::SymbolCrc | Rule::Namespace)
}

/// Symbols named by the kernel after `marker` (`... symbol X` or `Unknown symbol X (err`).
fn kernel_symbols(messages: &[String], marker: &str) -> BTreeSet<String> {
    messages
        .iter()
        .filter_map(|m| m.split(marker).nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn our_symbols(v: &Verdict, rules: &[Rule]) -> BTreeSet<String> {
    v.reasons
        .iter()
        .filter(|r| rules.contains(&r.rule) && r.outcome == compat::Outcome::Refused)
        .filter_map(|r| r.symbol.clone())
        .collect()
}

/// Boot the target with an `/init` that loads the dependencies, then tries each
/// candidate, printing the loader's messages between markers and unloading successes.
fn judge(
    release: &str,
    candidates: &[Candidate],
    names: &[String],
    append: &str,
) -> Option<Vec<Judgement>> {
    let kernel = qemu::host_kernel(release)?;
    let initramfs = InitramfsDir::busybox()?;
    let deps = initramfs.modules_from_host(release, &["virtio_pci", "scsi_mod"])?;
    let mut init = String::from(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for d in &deps {
        init.push_str(&format!("insmod {d} || echo BKJ-DEP-FAIL {d}\n"));
    }
    for (i, c) in candidates.iter().enumerate() {
        let rel = format!("c/{i}.ko");
        initramfs.file(&rel, &std::fs::read(&c.file).unwrap(), 0o644);
        init.push_str(&format!(
            "dmesg -c >/dev/null\ninsmod /{rel}; rc=$?\necho BKJ-BEGIN {i} rc=$rc\n\
             dmesg -c | sed 's/^/BKJ-MSG {i} /'\necho BKJ-END {i}\n\
             [ $rc = 0 ] && rmmod {}\n",
            names[i]
        ));
    }
    init.push_str("echo BKJ-DONE\npoweroff -f\n");
    initramfs.init(&init);
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("initrd.cpio");
    initramfs.pack(&image)?;
    // loglevel=1 keeps console printk from interleaving with the markers; dmesg has all.
    let log = Boot::new(kernel, &image).append(&format!("loglevel=1 {append}")).run()?;
    assert!(
        log.serial.contains("BKJ-DONE"),
        "guest did not finish (timed out: {}, {:.0?}):\n{}",
        log.timed_out,
        log.elapsed,
        log.tail()
    );
    assert!(!log.serial.contains("BKJ-DEP-FAIL"), "a dependency failed:\n{}", log.serial);
    let mut out = Vec::new();
    for i in 0..candidates.len() {
        let begin = format!("BKJ-BEGIN {i} rc=");
        let rc = log
            .lines_with(&begin)
            .next()
            .and_then(|l| l.split(&begin).nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("no result for candidate {i}:\n{}", log.tail()));
        let prefix = format!("BKJ-MSG {i} ");
        let messages = log
            .lines_with(&prefix)
            .filter_map(|l| l.split(&prefix).nth(1))
            .map(str::to_string)
            .collect();
        out.push(Judgement { loaded: rc == "0", messages });
    }
    Some(out)
}

/// The judge's cases against the installed kernel `release`: storage drivers of the
/// target build, an older ABI and the rt flavour, the out-of-tree `bkram` and `bkns`, and
/// real modules altered in one place per loader rule. Files are written under `tmp`.
fn candidates(release: &str, tmp: &Path) -> Option<Vec<Candidate>> {
    let other = common::machine::other_kernels()?;
    let bkram = ck::build_bkram(release, tmp)?;

    let host = PathBuf::from("/");
    let mut candidates = Vec::new();
    for (label, root, kver) in [
        ("target", &host, release),
        ("older ABI", &other.older_root, other.older.as_str()),
        ("rt flavour", &other.rt_root, other.rt.as_str()),
    ] {
        for file in ["virtio_blk.ko", "vmw_pvscsi.ko", "megaraid_sas.ko"] {
            candidates.push(Candidate {
                label: format!("{label} {file}"),
                file: ck::module_in(root, kver, file),
            });
        }
    }
    candidates.push(Candidate { label: "out-of-tree bkram.ko".into(), file: bkram });

    // A real target module with one symbol CRC changed (signature dropped: an altered
    // signed module fails verification, which is fatal even without enforcement).
    let donor = ck::module_in(&host, release, "vmw_pvscsi.ko");
    let donor_module = Module::read(&donor, ReadOptions::default()).unwrap();
    let bytes = std::fs::read(&donor).unwrap();
    let (content, _) = bootkmod::formats::signature::split(&bytes).unwrap().unwrap();
    let mut unsigned = content.to_vec();
    let victim = donor_module.versions.iter().find(|v| v.symbol == "scsi_host_alloc").unwrap();
    ck::patch_version_crc(&mut unsigned, &victim.symbol, victim.crc as u32 ^ 0x10);
    let patched = tmp.join("vmw_pvscsi-crc.ko");
    std::fs::write(&patched, &unsigned).unwrap();
    candidates
        .push(Candidate { label: "target vmw_pvscsi.ko, one CRC changed".into(), file: patched });

    // One real fixture per remaining rule, each altered in one place (all unsigned). The
    // struct module section is grown, not shrunk: 6.1 loads it either way, and a short
    // one would have the kernel write past it.
    let variant = |label: &str, from: &PathBuf, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = ck::strip_signature(&std::fs::read(from).unwrap());
        edit(&mut bytes);
        let path = tmp.join(format!("variant-{}.ko", label.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        Candidate { label: label.to_string(), file: path }
    };
    let bkns = tmp.join("bkns.ko");
    candidates
        .push(Candidate { label: "out-of-tree bkns.ko (import_ns)".into(), file: bkns.clone() });
    candidates.push(variant("bkns import_ns altered", &bkns, &|b| {
        ck::patch_modinfo(b, "import_ns=DMA_BUF", "import_ns=DMA_BUG")
    }));
    let bkram = candidates.iter().find(|c| c.label.contains("bkram")).unwrap().file.clone();
    candidates.push(variant("bkram license BSD", &bkram, &|b| {
        ck::patch_modinfo(b, "license=GPL\0", "license=BSD\0")
    }));
    candidates.push(variant("vmw_pvscsi vermagic flag", &donor, &|b| {
        ck::patch_modinfo(b, " preempt ", " preemp7 ")
    }));
    candidates.push(variant("vmw_pvscsi struct module size", &donor, &|b| {
        let size = donor_module.this_module_size.unwrap();
        ck::patch_this_module_size(b, size + 64)
    }));
    candidates.push(variant("vmw_pvscsi without __versions", &donor, &|b| {
        ck::rename_section(b, "__versions", "__versionz")
    }));
    candidates
        .push(variant("vmw_pvscsi built for aarch64", &donor, &|b| ck::patch_machine(b, 183)));

    Some(candidates)
}

#[test]
fn verdicts_match_what_the_booted_kernel_does() {
    let Some(release) = common::installed_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(candidates) = candidates(&release, tmp.path()) else { return };
    let modules: Vec<Module> =
        candidates.iter().map(|c| Module::read(&c.file, ReadOptions::default()).unwrap()).collect();
    let names: Vec<String> = modules.iter().map(Module::name).collect();

    let modes = [(SecureBootMode::Off, ""), (SecureBootMode::On, "module.sig_enforce=1")];
    // Both guests boot at once (the harness allows two); the verdicts are compared after.
    let boots: Vec<Option<Vec<Judgement>>> = std::thread::scope(|s| {
        let handles: Vec<_> = modes
            .iter()
            .map(|(_, append)| s.spawn(|| judge(&release, &candidates, &names, append)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((mode, append), judgements) in modes.into_iter().zip(boots) {
        let Some(judgements) = judgements else { return };
        let opts = KernelOptions { secure_boot: mode, ..Default::default() };
        let kernel = Kernel::read(&Root::new("/"), &release, &opts).unwrap();
        let verdicts: Vec<Verdict> = modules.iter().map(|m| compat::check(&kernel, m)).collect();
        let mut report = String::new();
        let mut mismatches = 0;
        for ((c, v), j) in candidates.iter().zip(&verdicts).zip(&judgements) {
            let ours = v.first_refusal().map(|r| r.rule);
            let theirs = kernel_rule(&j.messages);
            let mut agree = v.compatible == j.loaded
                && match (ours, theirs) {
                    (None, None) => true,
                    (Some(a), Some(b)) if symbol_level(a) && symbol_level(b) => true,
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                };
            if agree && ours.is_some_and(symbol_level) {
                // Every symbol the kernel names, bootkmod names, and no more. A CRC or
                // namespace refusal is followed by "Unknown symbol X (err -22)"; only
                // err -2 (ENOENT) means nobody (visible) exports it.
                let crc = kernel_symbols(&j.messages, "disagrees about version of symbol ");
                let ns: BTreeSet<String> = kernel_symbols(&j.messages, "uses symbol (")
                    .into_iter()
                    .map(|s| s.trim_end_matches(')').to_string())
                    .collect();
                let unknown: BTreeSet<String> = j
                    .messages
                    .iter()
                    .filter(|m| m.contains("(err -2)"))
                    .filter_map(|m| m.split("Unknown symbol ").nth(1))
                    .filter_map(|rest| rest.split_whitespace().next())
                    .map(str::to_string)
                    .collect();
                agree = crc == our_symbols(v, &[Rule::SymbolCrc])
                    && ns == our_symbols(v, &[Rule::Namespace])
                    && unknown == our_symbols(v, &[Rule::UnknownSymbol, Rule::GplOnly]);
            }
            if !agree {
                mismatches += 1;
            }
            report.push_str(&format!(
                "{} {:<45} bootkmod: {:<14} kernel: {:<8} {:?} {:?}\n",
                if agree { "  " } else { "!!" },
                c.label,
                ours.map_or("loads".into(), |r| r.name().to_string()),
                if j.loaded { "loaded" } else { "refused" },
                theirs,
                j.messages.iter().take(2).collect::<Vec<_>>()
            ));
        }
        eprintln!("--- {mode:?} (append {append:?})\n{report}");
        assert_eq!(mismatches, 0, "verdicts disagree with the kernel ({mode:?}):\n{report}");
        // The judge must have seen both outcomes, or it proves nothing.
        assert!(judgements.iter().any(|j| j.loaded) && judgements.iter().any(|j| !j.loaded));
    }
}

/// The judge's cases again, against the same installed kernel read twice: with its
/// Module.symvers (the verdicts the boot above proves), and as on a host without the
/// headers package, where vmlinux's exports come from /boot/vmlinuz alone. Every
/// verdict, reason and first refusal must be the same.
#[test]
fn verdicts_without_symvers_are_those_with_it() {
    let Some(release) = common::installed_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(candidates) = candidates(&release, tmp.path()) else { return };
    let modules: Vec<Module> =
        candidates.iter().map(|c| Module::read(&c.file, ReadOptions::default()).unwrap()).collect();
    let root = Root::new("/");
    let mut compared = 0;
    let mut refused = 0;
    for mode in [SecureBootMode::Off, SecureBootMode::On] {
        let opts = KernelOptions { secure_boot: mode, ..Default::default() };
        let with = Kernel::read(&root, &release, &opts).unwrap();
        assert_eq!(with.vmlinux_exports, VmlinuxExports::Symvers, "{:?}", with.symvers);
        let opts = KernelOptions { ignore_symvers: true, ..opts };
        let without = Kernel::read(&root, &release, &opts).unwrap();
        assert!(
            matches!(&without.vmlinux_exports, VmlinuxExports::Image { .. }),
            "{:?}",
            without.vmlinux_exports
        );
        assert!(without.symvers.is_none() && without.warnings.is_empty(), "{:?}", without.warnings);
        for (c, m) in candidates.iter().zip(&modules) {
            let (a, b) = (compat::check(&with, m), compat::check(&without, m));
            let first = |v: &Verdict| v.first_refusal().map(|r| r.message.clone());
            assert_eq!(a.compatible, b.compatible, "{mode:?} {}", c.label);
            assert_eq!(first(&a), first(&b), "{mode:?} {}: first refusal", c.label);
            assert_eq!(a.reasons, b.reasons, "{mode:?} {}: reasons", c.label);
            assert_eq!(a.unchecked, b.unchecked, "{mode:?} {}", c.label);
            compared += 1;
            refused += usize::from(!a.compatible);
        }
    }
    eprintln!("{compared} verdicts ({refused} refusals) the same with and without symvers");
    assert!(refused > 0 && refused < compared);
}

/// With neither symvers nor a readable boot image, a module the tree's modules cannot
/// serve is refused for that reason, naming no symbol as unknown.
#[test]
fn without_any_export_table_the_verdict_says_so() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(other) = common::machine::other_kernels() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A tree holding one in-tree module (the reference for vermagic and signatures).
    let donor = ck::module_in(Path::new("/"), &release, "virtio_blk.ko");
    let dir = tmp.path().join(format!("lib/modules/{release}/kernel/drivers/block"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&donor, dir.join("virtio_blk.ko")).unwrap();
    let opts = KernelOptions { secure_boot: SecureBootMode::Off, ..Default::default() };
    let kernel = Kernel::read(&Root::new(tmp.path()), &release, &opts).unwrap();
    let VmlinuxExports::Missing { why } = &kernel.vmlinux_exports else {
        panic!("{:?}", kernel.vmlinux_exports)
    };
    assert!(why.contains("no boot image"), "{why}");
    let older = ck::module_in(&other.older_root, &other.older, "vmw_pvscsi.ko");
    let m = Module::read(&older, ReadOptions::default()).unwrap();
    let v = compat::check(&kernel, &m);
    let first = v.first_refusal().expect("refused");
    assert_eq!(first.rule, Rule::ExportTable, "{:#?}", v.reasons);
    assert!(first.message.contains("no export table for this kernel"), "{}", first.message);
    assert!(v.reasons.iter().all(|r| r.rule != Rule::UnknownSymbol), "{:#?}", v.reasons);
    assert!(v.unchecked.contains(&"module-layout".to_string()));

    // The CLI says the same, first.
    let out = common::run(
        common::bootkmod()
            .args(["--root"])
            .arg(tmp.path())
            .args(["check", "--secure-boot", "off", "--kver", &release])
            .arg(&older),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("no export table") && !text.contains("unknown symbol"), "{text}");
}
