//! A real out-of-tree storage driver: `tests/fixtures/bkram` (a blk-mq RAM disk) is built
//! with gcc + make against the installed linux-headers, then `bootkmod check` judges it
//! against that kernel (compatible) and against a symvers that changes one CRC it uses
//! (incompatible, naming that symbol). Also the command line's exit codes and JSON.

mod common;

use common::check as ck;
use std::path::Path;

fn check(args: &[&str], module: &Path) -> (i32, String) {
    let out = common::run(common::bootkmod().arg("check").arg(module).args(args));
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 3, "{}", String::from_utf8_lossy(&out.stderr));
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn built_block_driver_is_compatible_until_a_crc_it_uses_changes() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(symvers) = ck::installed_symvers(&kver) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(ko) = ck::build_bkram(&kver, tmp.path()) else { return };

    let (code, text) = check(&["--kver", &kver, "--secure-boot", "off"], &ko);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("bkram") && text.contains("compatible"), "{text}");

    // Under enforcement the unsigned build is refused, for that reason only.
    let (code, json) = check(&["--kver", &kver, "--secure-boot", "on", "--json"], &ko);
    assert_eq!(code, 3);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let reasons = report[0]["verdicts"][0]["reasons"].as_array().unwrap().clone();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0]["rule"], "signature");
    assert_eq!(reasons[0]["found"], "unsigned");

    // A kernel whose symvers changes the CRC of one symbol the driver uses.
    let module = bootkmod::model::module::Module::read(&ko, Default::default()).unwrap();
    let used = ["blk_mq_alloc_sq_tag_set", "__blk_mq_alloc_disk", "device_add_disk"]
        .into_iter()
        .find(|s| module.versions.iter().any(|v| v.symbol == *s))
        .expect("bkram imports a blk-mq symbol with a CRC");
    let mut entries = ck::read_symvers(&symvers);
    entries.iter_mut().filter(|e| e.symbol == used).for_each(|e| e.crc ^= 0x8000_0001);
    let changed = tmp.path().join("Module.symvers.changed");
    std::fs::write(&changed, bootkmod::formats::symvers::write(&entries)).unwrap();
    let changed = changed.to_string_lossy().into_owned();
    let (code, json) =
        check(&["--kver", &kver, "--secure-boot", "off", "--symvers", &changed, "--json"], &ko);
    assert_eq!(code, 3, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let verdict = &report[0]["verdicts"][0];
    assert_eq!(verdict["compatible"], false);
    let refused: Vec<_> = verdict["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["rule"], "symbol-crc");
    assert_eq!(refused[0]["symbol"], used);
}

#[test]
fn all_kernels_prints_one_line_per_kernel_and_usage_errors_exit_2() {
    let Some(kver) = common::installed_kernel() else { return };
    let ko = common::kernel_modules(&kver)
        .into_iter()
        .find(|p| p.ends_with("virtio_blk.ko"))
        .expect("virtio_blk.ko");
    let (code, text) = check(&["--all-kernels", "--secure-boot", "off"], &ko);
    let kernels =
        bootkmod::model::kernel::releases(&bootkmod::model::root::Root::new("/")).unwrap();
    assert_eq!(text.lines().count(), kernels.len(), "{text}");
    let line = text.lines().find(|l| l.starts_with(&kver)).unwrap();
    assert!(line.contains("compatible"), "{line}");
    assert_eq!(code == 0, !text.contains("INCOMPATIBLE"));

    let out = common::run(common::bootkmod().arg("check").arg(&ko));
    assert_eq!(out.status.code(), Some(2), "no --kver and no --all-kernels is a usage error");
    let out = common::run(common::bootkmod().args(["check", "/nonexistent.ko", "--kver", &kver]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent.ko"), "{err}");
}

/// An unpacked kernel tree as `--root` (as in `%post --nochroot` on /mnt/sysimage): the
/// headers' Module.symvers is found through the absolute `build` symlink, resolved inside
/// the root, and the root's own modules judge the others.
#[test]
fn another_root_is_read_through_its_own_symlinks() {
    let Some(other) = common::machine::other_kernels() else { return };
    let own = ck::module_in(&other.older_root, &other.older, "virtio_blk.ko");
    let rt = ck::module_in(&other.rt_root, &other.rt, "virtio_blk.ko");
    let root = other.older_root.to_string_lossy().into_owned();
    let args = ["--root", &root, "--kver", &other.older, "--secure-boot", "on", "--json"];
    let (code, json) = check(&args, &own);
    assert_eq!(code, 0, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let symvers = report[0]["kernel"]["symvers"].as_str().unwrap();
    assert!(
        symvers.starts_with(&root)
            && symvers.ends_with(&format!("linux-headers-{}/Module.symvers", other.older)),
        "{symvers}"
    );
    let (code, json) = check(&args, &rt);
    assert_eq!(code, 3);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rules: Vec<&str> = report[0]["verdicts"][0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(&rules[..3], ["signature", "module-layout", "vermagic"], "{rules:?}");
}
