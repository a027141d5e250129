//! Agreement with `depmod -naeE`, the CRC check RHEL's weak-modules relies on: for the
//! installed Debian kernel tree and its Module.symvers, bootkmod's refusals on symbol
//! CRCs and unknown symbols must name exactly the modules and symbols depmod warns about.

mod common;

use bootkmod::engines::compat::{self, Rule};
use bootkmod::model::kernel::{Interest, Kernel, KernelOptions, SecureBootMode};
use bootkmod::model::module::{Module, ReadOptions};
use bootkmod::model::root::Root;
use bootkmod::samples::SampleModule;
use common::check::{self as ck, DepmodWarning};
use std::collections::BTreeSet;

fn kernel(kver: &str, scan_modules: bool, interest: Option<Interest>) -> Kernel {
    let opts = KernelOptions {
        secure_boot: SecureBootMode::Off,
        scan_modules,
        interest,
        ..KernelOptions::default()
    };
    Kernel::read(&Root::new("/"), kver, &opts).unwrap()
}

/// What depmod would say, derived from bootkmod's verdicts.
fn as_depmod_warnings(verdicts: &[compat::Verdict]) -> BTreeSet<DepmodWarning> {
    let mut out = BTreeSet::new();
    for v in verdicts {
        let file = v.path.as_ref().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        for r in &v.reasons {
            let symbol = r.symbol.clone().unwrap_or_default();
            match r.rule {
                // depmod reads symbol CRCs from __versions, module_layout included.
                Rule::SymbolCrc | Rule::ModuleLayout => {
                    out.insert(DepmodWarning::Disagrees { file: file.clone(), symbol });
                }
                Rule::UnknownSymbol => {
                    out.insert(DepmodWarning::Unknown { file: file.clone(), symbol });
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn verdicts_agree_with_depmod_crc_check() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(symvers) = ck::installed_symvers(&kver) else { return };
    let entries = ck::read_symvers(&symvers);
    let vermagic = Module::read(&common::kernel_modules(&kver)[0], ReadOptions::default())
        .unwrap()
        .vermagic()
        .unwrap()
        .to_string();
    let tree = ck::ScratchTree::new(&kver);

    // 1. A real in-tree module with one __versions CRC changed.
    let donor = common::kernel_modules(&kver)
        .into_iter()
        .find(|p| p.ends_with("vmw_pvscsi.ko"))
        .expect("vmw_pvscsi.ko in the installed tree");
    let donor_module = Module::read(&donor, ReadOptions::default()).unwrap();
    let changed = donor_module
        .versions
        .iter()
        .map(|v| v.symbol.clone())
        .find(|s| s != "module_layout")
        .unwrap();
    let mut bytes = std::fs::read(&donor).unwrap();
    let crc = ck::crc_of(&entries, &changed);
    ck::patch_version_crc(&mut bytes, &changed, crc ^ 0x1);
    std::fs::write(tree.extra("bkcheck_crc.ko"), &bytes).unwrap();

    // 2. A module needing a symbol nobody exports.
    let real = |m: &mut SampleModule| {
        m.import("module_layout", ck::crc_of(&entries, "module_layout"))
            .import("_printk", ck::crc_of(&entries, "_printk"));
    };
    let mut unknown = SampleModule::new("bkcheck_unknown", &vermagic);
    real(&mut unknown);
    unknown.import("bkcheck_nobody_exports", 0x12345678);

    // 3. A module whose dependency is missing from the tree.
    let mut user = SampleModule::new("bkcheck_user", &vermagic);
    real(&mut user);
    user.import("bkcheck_lib_fn", 0xabcdef01).set("depends", "bkcheck_lib");

    // 4. A pair that is complete: library and user with matching CRCs.
    let mut lib2 = SampleModule::new("bkcheck_lib2", &vermagic);
    real(&mut lib2);
    lib2.export("bkcheck_lib2_fn", 0x0badcafe, true, None);
    let mut user2 = SampleModule::new("bkcheck_user2", &vermagic);
    real(&mut user2);
    user2.import("bkcheck_lib2_fn", 0x0badcafe).set("depends", "bkcheck_lib2");

    for m in [&unknown, &user, &lib2, &user2] {
        let name = m.modinfo.get("name").unwrap();
        std::fs::write(tree.extra(&format!("{name}.ko")), m.to_elf().unwrap()).unwrap();
    }

    let Some(depmod) = tree.depmod_warnings(&symvers) else { return };
    let expected: BTreeSet<DepmodWarning> = [
        DepmodWarning::Disagrees { file: "bkcheck_crc.ko".into(), symbol: changed.clone() },
        DepmodWarning::Unknown {
            file: "bkcheck_unknown.ko".into(),
            symbol: "bkcheck_nobody_exports".into(),
        },
        DepmodWarning::Unknown { file: "bkcheck_user.ko".into(), symbol: "bkcheck_lib_fn".into() },
    ]
    .into();
    assert_eq!(depmod, expected, "depmod's own warnings are not what the cases were built for");

    let mut extras: Vec<Module> = std::fs::read_dir(tree.extra(""))
        .unwrap()
        .map(|e| Module::read(&e.unwrap().path(), ReadOptions::default()).unwrap())
        .collect();
    extras.sort_by(|a, b| a.path.cmp(&b.path));
    // Every way of reading the kernel must agree: symvers for in-tree exports or the .ko
    // files themselves, all facts or only those the modules can ask about.
    for (scan, interest) in [(false, None), (true, None), (false, Some(Interest::of(&extras)))] {
        let k = kernel(&kver, scan, interest);
        let verdicts = compat::check_set(&k, &extras);
        assert_eq!(as_depmod_warnings(&verdicts), depmod, "scan_modules={scan}");
        let by_file =
            |f: &str| verdicts.iter().find(|v| v.path.as_ref().unwrap().ends_with(f)).unwrap();
        for bad in ["bkcheck_crc.ko", "bkcheck_unknown.ko", "bkcheck_user.ko"] {
            assert!(!by_file(bad).compatible, "{bad} must be incompatible");
        }
        for good in ["bkcheck_lib2.ko", "bkcheck_user2.ko"] {
            assert!(by_file(good).compatible, "{good}: {:?}", by_file(good).reasons);
        }
        let dep = by_file("bkcheck_user.ko");
        assert!(
            dep.reasons
                .iter()
                .any(|r| r.rule == Rule::Depends && r.symbol.as_deref() == Some("bkcheck_lib")),
            "missing dependency not named: {:?}",
            dep.reasons
        );
    }
}

/// The whole installed tree: depmod warns about nothing, bootkmod refuses nothing.
#[test]
fn every_in_tree_module_is_compatible_like_depmod_says() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(symvers) = ck::installed_symvers(&kver) else { return };
    let tree = ck::ScratchTree::new(&kver);
    let Some(depmod) = tree.depmod_warnings(&symvers) else { return };
    let modules: Vec<Module> = common::kernel_modules(&kver)
        .iter()
        .map(|p| Module::read(p, ReadOptions::default()).unwrap())
        .collect();
    let k = kernel(&kver, false, None);
    let verdicts = compat::check_set(&k, &modules);
    assert_eq!(as_depmod_warnings(&verdicts), depmod);
    let refused: Vec<_> = verdicts.iter().filter(|v| !v.compatible).collect();
    assert!(refused.is_empty(), "in-tree modules refused: {:?}", &refused[..refused.len().min(3)]);
    // Signed by the build's own key: no signature taint either, even under enforcement.
    let mut k = k;
    k.enforcement.enforced = true;
    assert!(compat::check_set(&k, &modules[..50]).iter().all(|v| v.reasons.is_empty()));
}

/// Across builds: leaf storage drivers (no exports of their own) of the rt flavour and of
/// the older ABI, dropped into the target's tree, draw exactly the CRC and unknown-symbol
/// warnings from depmod that bootkmod's refusals name — thousands for rt; for the older
/// ABI none when its Module.symvers equals the installed one's (Debian's ABI bumps
/// within one upstream release, e.g. 6.1.0-56 beside 6.1.0-57, measured equal).
#[test]
fn other_builds_drivers_agree_with_depmod_on_the_target() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(symvers) = ck::installed_symvers(&kver) else { return };
    let Some(others) = common::machine::other_kernels() else { return };
    let k = kernel(&kver, false, None);
    let older_symvers =
        others.older_root.join(format!("usr/src/linux-headers-{}/Module.symvers", others.older));
    let same_crcs = ck::read_symvers(&older_symvers) == ck::read_symvers(&symvers);
    let builds = [
        (others.rt.as_str(), &others.rt_root, Some(true)),
        // A different symvers may or may not touch what the leaf drivers use.
        (others.older.as_str(), &others.older_root, same_crcs.then_some(false)),
    ];
    for (other, root, expect_warnings) in builds {
        let tree = ck::ScratchTree::new(&kver);
        let files =
            bootkmod::model::tree::ModuleTree::new(Root::new(root), other).module_files().unwrap();
        let mut extras = Vec::new();
        for f in files {
            let p = f.to_string_lossy();
            if !(p.contains("/drivers/scsi/") || p.contains("/drivers/block/")) {
                continue;
            }
            let m = Module::read(&f, ReadOptions::default()).unwrap();
            if !m.exports.is_empty() {
                continue;
            }
            // A distinct file name: depmod names modules by file, and must not see them
            // as duplicates of the target's own.
            let dest = tree.extra(&format!("x_{}", f.file_name().unwrap().to_string_lossy()));
            std::fs::copy(&f, &dest).unwrap();
            extras.push(Module::read(&dest, ReadOptions::default()).unwrap());
        }
        assert!(extras.len() > 20, "only {} leaf drivers in {other}", extras.len());
        let Some(depmod) = tree.depmod_warnings(&symvers) else { return };
        if let Some(expected) = expect_warnings {
            assert_eq!(!depmod.is_empty(), expected, "{other}: {} warnings", depmod.len());
        }
        let verdicts: Vec<_> = extras.iter().map(|m| compat::check(&k, m)).collect();
        let ours = as_depmod_warnings(&verdicts);
        let only_ours: Vec<_> = ours.difference(&depmod).take(5).collect();
        let only_depmod: Vec<_> = depmod.difference(&ours).take(5).collect();
        assert!(
            only_ours.is_empty() && only_depmod.is_empty(),
            "{other}: bootkmod only {only_ours:?}, depmod only {only_depmod:?}"
        );
        eprintln!(
            "{other}: {} leaf drivers, {} depmod warnings, all matched",
            extras.len(),
            depmod.len()
        );
    }
}
