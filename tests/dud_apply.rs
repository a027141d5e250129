//! `bootkmod dud apply` on test roots: a kernel tree that lacks a real Debian driver
//! gets it from a driver disk, and kmod's modprobe (reading the indexes `depmod -b`
//! regenerated) resolves it there; symlinks in the root never lead a write outside it.

mod common;

use common::dud::{dud, ok};
use common::{installed_kernel, kernel_modules, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A root whose kernel tree holds the SCSI core but not the vmw_pvscsi driver, and a
/// driver disk built from the real vmw_pvscsi.ko.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    kver: String,
    iso: PathBuf,
    outside: PathBuf,
}

fn fixture(merged_usr: bool) -> Option<Fixture> {
    let kver = installed_kernel()?;
    tool("depmod")?;
    let modules = kernel_modules(&kver);
    let find =
        |name: &str| modules.iter().find(|p| p.file_name().is_some_and(|f| f == name)).cloned();
    let (Some(pvscsi), Some(scsi_mod), Some(scsi_common)) =
        (find("vmw_pvscsi.ko"), find("scsi_mod.ko"), find("scsi_common.ko"))
    else {
        common::missing("vmw_pvscsi, scsi_mod, scsi_common in the installed kernel")?;
        unreachable!()
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let lib = if merged_usr {
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        root.join("usr/lib")
    } else {
        root.join("lib")
    };
    let scsi = lib.join(format!("modules/{kver}/kernel/drivers/scsi"));
    std::fs::create_dir_all(&scsi).unwrap();
    for m in [&scsi_mod, &scsi_common] {
        std::fs::copy(m, scsi.join(m.file_name().unwrap())).unwrap();
    }
    let iso = tmp.path().join("dd.iso");
    ok(&dud(&["build", pvscsi.to_str().unwrap(), "-o", iso.to_str().unwrap()]));
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    Some(Fixture { root, kver, iso, outside, _tmp: tmp })
}

fn apply(f: &Fixture, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--root",
        f.root.to_str().unwrap(),
        "dud",
        "apply",
        f.iso.to_str().unwrap(),
        "--kver",
        &f.kver,
    ];
    args.extend_from_slice(extra);
    run(common::bootkmod().args(&args))
}

fn show_depends(f: &Fixture) -> Option<String> {
    let modprobe = tool("modprobe")?;
    let out = run(Command::new(modprobe).arg("-d").arg(&f.root).args([
        "-S",
        &f.kver,
        "--show-depends",
        "vmw_pvscsi",
    ]));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed_path(f: &Fixture) -> PathBuf {
    f.root.join(format!("lib/modules/{}/updates/extra/vmw_pvscsi/vmw_pvscsi.ko", f.kver))
}

#[test]
fn a_tree_without_the_driver_gets_it_and_modprobe_finds_it() {
    let Some(f) = fixture(false) else { return };
    assert_eq!(show_depends(&f).unwrap_or_default(), "", "the tree lacks the driver before");

    let dry = apply(&f, &["--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&dry)).unwrap();
    assert_eq!(v["dry_run"], true);
    assert!(!installed_path(&f).exists(), "a dry run writes nothing");

    let text = ok(&apply(&f, &[]));
    assert!(text.contains("depmod -b"), "{text}");
    assert!(installed_path(&f).is_file());
    let Some(deps) = show_depends(&f) else { return };
    let want = format!(
        "{}/lib/modules/{}/updates/extra/vmw_pvscsi/vmw_pvscsi.ko",
        f.root.display(),
        f.kver
    );
    assert!(deps.lines().any(|l| l.starts_with("insmod ") && l.contains(&want)), "{deps}");
    assert!(
        deps.contains("scsi_mod.ko"),
        "dependencies resolved from the regenerated indexes: {deps}"
    );

    // Applying again is idempotent.
    ok(&apply(&f, &[]));
    assert!(installed_path(&f).is_file());
}

#[test]
fn merged_usr_roots_resolve_lib_inside_the_root() {
    let Some(f) = fixture(true) else { return };
    ok(&apply(&f, &[]));
    assert!(f
        .root
        .join(format!("usr/lib/modules/{}/updates/extra/vmw_pvscsi/vmw_pvscsi.ko", f.kver))
        .is_file());
    assert!(
        f.root.join("lib").symlink_metadata().unwrap().file_type().is_symlink(),
        "lib link left alone"
    );
}

#[test]
fn symlinks_in_the_root_never_lead_outside() {
    let Some(f) = fixture(false) else { return };
    // An absolute link for updates/ points at a directory outside the root on the host.
    let updates = f.root.join(format!("lib/modules/{}/updates", f.kver));
    std::os::unix::fs::symlink(&f.outside, &updates).unwrap();
    ok(&apply(&f, &[]));
    assert_eq!(
        std::fs::read_dir(&f.outside).unwrap().count(),
        0,
        "nothing written outside the root"
    );
    let inside =
        f.root.join(f.outside.strip_prefix("/").unwrap()).join("extra/vmw_pvscsi/vmw_pvscsi.ko");
    assert!(inside.is_file(), "the link was resolved inside the root, as the target sees it");

    // A symlink at the destination itself is replaced, not written through.
    std::fs::remove_file(&updates).unwrap();
    let victim = f.outside.join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let dest = installed_path(&f);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, &dest).unwrap();
    ok(&apply(&f, &[]));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(!dest.symlink_metadata().unwrap().file_type().is_symlink());
}

#[test]
fn a_disk_for_another_kernel_applies_nothing() {
    let Some(f) = fixture(false) else { return };
    let out = run(common::bootkmod().args([
        "--root",
        f.root.to_str().unwrap(),
        "dud",
        "apply",
        f.iso.to_str().unwrap(),
        "--kver",
        "6.1.0-1-amd64",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new(&f.root.join("lib/modules/6.1.0-1-amd64")).exists());
}

#[test]
fn a_kernel_the_root_does_not_have_gets_no_tree() {
    let Some(f) = fixture(false) else { return };
    // Newer than the disk's Provides, so taken, but the root has no such kernel.
    let out = run(common::bootkmod().args([
        "--root",
        f.root.to_str().unwrap(),
        "dud",
        "apply",
        f.iso.to_str().unwrap(),
        "--kver",
        "6.1.0-99-amd64",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no module tree for kernel 6.1.0-99-amd64")
    );
    assert!(!f.root.join("lib/modules/6.1.0-99-amd64").exists());
}
