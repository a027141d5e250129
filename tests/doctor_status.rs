//! `status` and the kernel-install plugin ask doctor (issue 13): adding a kernel whose
//! image would not mount root says so before the reboot. On real Debian kernels under an
//! unmounted root (no `/proc` or `/sys` there: the chain is the snapshot saved at
//! `/var/lib/bootkmod/doctor-snapshot.json`, root behind a megasas controller):
//!
//! - no chain, or an unreadable one: status judges nothing, says so, and exits as
//!   before (a note, never a verdict, never a crash);
//! - the installed kernel, its image holding the controller's driver: no alert;
//! - `kernel-install add` of a kernel whose image lacks the driver: the plugin (and
//!   Debian's postinst.d hook) warns loudly naming the kernel and the driver (and does
//!   not fail the install); status
//!   alerts naming it and exits 3; after `doctor --fix` both are quiet;
//! - the image judged: the staged one, else the last INITRD of the command line, else
//!   the kernel's images where the system keeps them;
//! - a kernel doctor cannot judge (no `modules.dep.bin`) is a note; the others are
//!   still judged;
//! - where `/proc` and `/sys` can be read, the live chain wins over a saved snapshot;
//!   a btrfs root (anonymous `0:N` in mountinfo) is followed through its mount source.
//! - a kernel booted by two images (its own and a stale boot entry's initrd): a
//!   verdict for each, status alerts on the stale one, `doctor --fix` fixes it alone.

mod common;

use common::doctor_host::{
    add_modules, bk, image_verdicts, image_with, megasas_host, megasas_snapshot, text, MegasasHost,
    DRIVER,
};
use common::keep::{json_of, TargetRoot};
use common::machine::synthetic_release;
use common::run;
use std::path::Path;
use std::process::{Command, Output};

const SAVED: &str = "/var/lib/bootkmod/doctor-snapshot.json";

fn plugin(root: &TargetRoot, release: &str, staging: Option<&Path>) -> Output {
    plugin_with_initrds(root, release, staging, &[])
}

/// The plugin as `kernel-install add KVER ENTRY KERNEL INITRD...` runs it.
fn plugin_with_initrds(
    root: &TargetRoot,
    release: &str,
    staging: Option<&Path>,
    initrds: &[&Path],
) -> Output {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-install/60-bootkmod-doctor.install");
    let mut cmd = Command::new(script);
    cmd.args(["add", release, "/nonexistent/entry", &format!("/boot/vmlinuz-{release}")])
        .args(initrds)
        .env("BOOTKMOD_ROOT", root.path())
        .env("BOOTKMOD", common::bootkmod_bin())
        .env_remove("KERNEL_INSTALL_STAGING_AREA");
    if let Some(dir) = staging {
        cmd.env("KERNEL_INSTALL_STAGING_AREA", dir);
    }
    run(&mut cmd)
}

/// Debian's counterpart, run as a kernel package's postinst runs it.
fn postinst_hook(root: &TargetRoot, release: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("initramfs-tools/kernel/postinst.d/zz-bootkmod-doctor");
    run(Command::new(script)
        .args([release, &format!("/boot/vmlinuz-{release}")])
        .env("BOOTKMOD_ROOT", root.path())
        .env("BOOTKMOD", common::bootkmod_bin()))
}

fn status(root: &TargetRoot, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = bk(root, &[&["--json", "status"][..], args].concat());
    let report = json_of(&out);
    let shown = bk(root, &[&["status"][..], args].concat());
    assert_eq!(shown.status.code(), out.status.code(), "{}", text(&shown));
    (out.status.code(), report, String::from_utf8_lossy(&shown.stdout).into_owned())
}

fn doctor_alerts<'a>(report: &'a serde_json::Value, release: &str) -> Vec<&'a serde_json::Value> {
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["kernel"] == release
                && a["problem"].as_str().unwrap().contains("initramfs would not mount root")
        })
        .collect()
}

#[test]
fn status_and_kernel_install_warn_of_a_kernel_whose_image_would_not_mount_root() {
    let Some(MegasasHost { release: kver, src: newer, root }) = megasas_host(&[]) else { return };
    let later = synthetic_release(&kver, "later");
    image_with(&root, &kver, &["ext4", "sd_mod", DRIVER]);

    // No chain at all: nothing judged, and said so; status as before.
    let (code, report, shown) = status(&root, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(report["doctor"]["kernels"].as_array().unwrap().is_empty(), "{report:#}");
    let note = report["doctor"]["notes"][0].as_str().unwrap_or_default();
    assert!(note.contains("no snapshot saved at") && note.contains(SAVED), "{note}");
    assert!(shown.contains("doctor: not judged:") && !shown.contains("mounts root"), "{shown}");
    // The plugin cannot judge either: it says so and lets the install go on.
    let out = plugin(&root, &kver, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root not checked"), "{}", text(&out));

    // A saved snapshot that is not one: a note, not a crash, not a verdict.
    std::fs::create_dir_all(root.at("/var/lib/bootkmod")).unwrap();
    std::fs::write(root.at(SAVED), "{").unwrap();
    let (code, report, shown) = status(&root, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let note = report["doctor"]["notes"][0].as_str().unwrap_or_default();
    assert!(note.contains("not a bootkmod doctor snapshot"), "{report:#}");
    assert!(shown.contains("doctor: not judged:"), "{shown}");

    // The snapshot: the installed kernel's image mounts root; no alert.
    std::fs::write(root.at(SAVED), megasas_snapshot()).unwrap();
    let (code, report, shown) = status(&root, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["doctor"]["kernels"][0]["release"], kver.as_str());
    assert_eq!(report["doctor"]["kernels"][0]["ok"], true, "{report:#}");
    assert!(report["doctor"]["chain"]["saved"].as_str().unwrap().ends_with(SAVED), "{report:#}");
    assert!(report["alerts"].as_array().unwrap().is_empty(), "{report:#}");
    assert!(shown.contains("doctor: every kernel's initramfs mounts root"), "{shown}");
    let out = plugin(&root, &kver, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("!!!"), "{}", text(&out));

    // A new kernel whose image was built without the controller's driver.
    root.add_kernel(&newer, &later, &newer.symvers());
    add_modules(&root, &newer, &kver, &later, &["sd_mod", DRIVER]);
    image_with(&root, &later, &["ext4", "sd_mod"]);
    let out = plugin(&root, &later, None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "a warning, not a failed kernel install: {err}");
    assert!(err.contains(&format!("kernel {later}: its initramfs would NOT mount root")), "{err}");
    assert!(err.contains(&format!("{DRIVER} is not in the image")), "{err}");
    let out = postinst_hook(&root, &later);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "a warning, not a failed package: {err}");
    assert!(err.contains(&format!("kernel {later}: its initramfs would NOT mount root")), "{err}");
    let (code, report, shown) = status(&root, &[]);
    assert_eq!(code, Some(3), "{report:#}");
    let alerts = doctor_alerts(&report, &later);
    assert_eq!(alerts.len(), 1, "{report:#}");
    assert!(alerts[0]["problem"].as_str().unwrap().contains(DRIVER), "{report:#}");
    assert!(alerts[0]["next"].as_str().unwrap().contains("doctor --fix"), "{report:#}");
    assert!(doctor_alerts(&report, &kver).is_empty(), "{report:#}");
    assert!(
        shown.lines().any(|l| l.starts_with(&format!("!!! kernel {later}: its initramfs"))),
        "{shown}"
    );
    assert!(shown.contains(&format!("doctor: AT RISK {later}")), "{shown}");
    // Only the good kernel asked: fine.
    let (code, report, _) = status(&root, &["--kver", &kver]);
    assert_eq!(code, Some(0), "{report:#}");

    // A staged image (kernel-install's staging area) is the one judged.
    let staging = tempfile::tempdir().unwrap();
    std::fs::copy(root.at(format!("/boot/initrd.img-{kver}")), staging.path().join("initrd"))
        .unwrap();
    let out = plugin(&root, &kver, Some(staging.path()));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("!!!"), "{}", text(&out));
    std::fs::write(staging.path().join("initrd"), common::keep::tiny_image(&kver)).unwrap();
    let out = plugin(&root, &kver, Some(staging.path()));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would NOT mount root"),
        "{}",
        text(&out)
    );

    // No staged image, INITRDs on the command line: the last one is judged (its files
    // win), not the distribution's image.
    let (good, bad) = (staging.path().join("good.img"), staging.path().join("bad.img"));
    std::fs::copy(root.at(format!("/boot/initrd.img-{kver}")), &good).unwrap();
    std::fs::rename(staging.path().join("initrd"), &bad).unwrap();
    let out = plugin_with_initrds(&root, &kver, None, &[&good, &bad]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("would NOT mount root"), "{err}");
    let out = plugin_with_initrds(&root, &kver, None, &[&bad, &good]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("!!!"), "{}", text(&out));

    // Fixed as the warning says: quiet again.
    let out = bk(&root, &["doctor", "--fix", "--kver", &later]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for out in [plugin(&root, &later, None), postinst_hook(&root, &later)] {
        assert!(out.status.success(), "{}", text(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("!!!"), "{}", text(&out));
    }
    let (code, report, _) = status(&root, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(report["doctor"]["kernels"].as_array().unwrap().iter().all(|k| k["ok"] == true));

    // A kernel doctor cannot judge: a note naming it; the other is still judged.
    std::fs::remove_file(root.at(format!("/lib/modules/{later}/modules.dep.bin"))).unwrap();
    let (_, report, shown) = status(&root, &[]);
    let judged: Vec<&str> = report["doctor"]["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["release"].as_str())
        .collect();
    assert_eq!(judged, [kver.as_str()], "{report:#}");
    let why = report["doctor"]["not_judged"][&later].as_str().unwrap_or_default();
    assert!(why.contains("modules.dep.bin"), "{report:#}");
    assert!(shown.contains(&format!("doctor: not judged: {later}")), "{shown}");
}

/// A sysfs-shaped tree under the root as the kernel laid it out for QEMU's megasas in the guest that recorded topology (a)
/// (`/sys/dev/block/8:0` → the disk, its `device` → the SCSI device bound to `sd`, up
/// to the PCI function bound to `megaraid_sas`), and `/proc/self/mountinfo` mounting
/// it at the root.
fn fake_live_system(root: &TargetRoot) {
    use std::os::unix::fs::symlink;
    let sys = root.at("/sys");
    let pci = "devices/pci0000:00/0000:00:02.0";
    let scsi = format!("{pci}/host0/target0:2:0/0:2:0:0");
    for dir in [
        format!("{scsi}/block/sda"),
        "bus/pci/drivers/megaraid_sas".into(),
        "bus/scsi/drivers/sd".into(),
        "dev/block".into(),
    ] {
        std::fs::create_dir_all(sys.join(dir)).unwrap();
    }
    let pci_dir = sys.join(pci);
    std::fs::write(
        pci_dir.join("modalias"),
        "pci:v00001000d00000060sv00001000sd00001013bc01sc04i00\n",
    )
    .unwrap();
    symlink("../../../bus/pci/drivers/megaraid_sas", pci_dir.join("driver")).unwrap();
    symlink("../../../bus/pci", pci_dir.join("subsystem")).unwrap();
    symlink("../../../../module/megaraid_sas", sys.join("bus/pci/drivers/megaraid_sas/module"))
        .unwrap();
    let scsi_dir = sys.join(&scsi);
    std::fs::write(scsi_dir.join("modalias"), "scsi:t-0x00\n").unwrap();
    symlink("../../../../../../bus/scsi/drivers/sd", scsi_dir.join("driver")).unwrap();
    symlink("../../../../../../bus/scsi", scsi_dir.join("subsystem")).unwrap();
    symlink("../../../../module/sd_mod", sys.join("bus/scsi/drivers/sd/module")).unwrap();
    symlink("../../../0:2:0:0", scsi_dir.join("block/sda/device")).unwrap();
    symlink(format!("../../{scsi}/block/sda"), sys.join("dev/block/8:0")).unwrap();
    let at = std::fs::canonicalize(root.path()).unwrap();
    std::fs::create_dir_all(root.at("/proc/self")).unwrap();
    std::fs::write(
        root.at("/proc/self/mountinfo"),
        format!("1 0 8:0 / {} rw,relatime - ext4 /dev/sda rw\n", at.display()),
    )
    .unwrap();
}

/// Where `/proc` and `/sys` can be read, status judges the live chain, not a saved
/// snapshot (here one of another host, whose controller the image lacks).
#[test]
fn status_prefers_the_live_chain_to_a_saved_snapshot() {
    let Some(MegasasHost { release: kver, root, .. }) = megasas_host(&["vmw_pvscsi"]) else {
        return;
    };
    image_with(&root, &kver, &["ext4", "sd_mod", DRIVER]);
    std::fs::create_dir_all(root.at("/var/lib/bootkmod")).unwrap();
    let elsewhere = megasas_snapshot()
        .replace(
            "pci:v00001000d00000060sv00001000sd00001013bc01sc04i00",
            "pci:v000015ADd000007C0sv000015ADsd000007C0bc01sc07i00",
        )
        .replace(DRIVER, "vmw_pvscsi");
    std::fs::write(root.at(SAVED), elsewhere).unwrap();
    // The saved snapshot alone: the image lacks vmw_pvscsi.
    let (code, report, _) = status(&root, &[]);
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(doctor_alerts(&report, &kver).len(), 1, "{report:#}");

    fake_live_system(&root);
    let (code, report, shown) = status(&root, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["doctor"]["chain"], "live", "{report:#}");
    assert_eq!(report["doctor"]["kernels"][0]["ok"], true, "{report:#}");
    assert!(shown.contains("(the live system's chain)"), "{shown}");
    // doctor reads the same chain from it: what --save writes is the snapshot's twin.
    let out = bk(&root, &["doctor", "--save", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    let saved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected: serde_json::Value = serde_json::from_str(&megasas_snapshot()).unwrap();
    expected["recorded_on"] = saved["recorded_on"].clone();
    assert_eq!(saved["devices"], expected["devices"], "{saved:#}");
    assert_eq!(saved["mounts"], expected["mounts"], "{saved:#}");

    // btrfs shows an anonymous MAJ:MIN (0:N) in mountinfo: the chain follows the mount
    // source to its block device instead, so the controller is still judged.
    std::os::unix::fs::symlink(
        "../../devices/pci0000:00/0000:00:02.0/host0/target0:2:0/0:2:0:0/block/sda",
        {
            std::fs::create_dir_all(root.at("/sys/class/block")).unwrap();
            root.at("/sys/class/block/sda")
        },
    )
    .unwrap();
    std::fs::create_dir_all(root.at("/dev")).unwrap();
    std::fs::write(root.at("/dev/sda"), b"").unwrap();
    let at = std::fs::canonicalize(root.path()).unwrap();
    std::fs::write(
        root.at("/proc/self/mountinfo"),
        format!("1 0 0:33 / {} rw - btrfs {}/dev/sda rw\n", at.display(), at.display()),
    )
    .unwrap();
    let out = bk(&root, &["--json", "doctor"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "the image has no btrfs: {report:#}");
    let needs: Vec<&str> =
        report["needs"].as_array().unwrap().iter().filter_map(|n| n["link"].as_str()).collect();
    assert!(needs.contains(&"filesystem btrfs"), "{needs:?}");
    assert!(needs.iter().any(|n| n.contains(DRIVER)), "the controller is judged: {needs:?}");
    let problems = report["kernels"][0]["problems"].to_string();
    assert!(problems.contains("btrfs") && !problems.contains(DRIVER), "{problems}");
}

/// A kernel booted by two images (its distribution image and another boot entry's
/// initrd) is judged on each: a good primary image does not hide a stale one. doctor
/// gives a verdict per image, status alerts naming the stale one, and `doctor --fix`
/// injects into that one, leaving the good one untouched.
#[test]
fn doctor_and_status_judge_every_image_that_boots_a_kernel() {
    let Some(MegasasHost { release: kver, root, .. }) = megasas_host(&[]) else { return };
    // The second entry's initrd was built before the controller's driver went in.
    image_with(&root, &kver, &["ext4", "sd_mod"]);
    let primary = format!("/boot/initrd.img-{kver}");
    std::fs::copy(root.at(&primary), root.at("/boot/initrd-stale.img")).unwrap();
    image_with(&root, &kver, &[DRIVER]);
    std::fs::create_dir_all(root.at("/boot/loader/entries")).unwrap();
    std::fs::write(
        root.at(format!("/boot/loader/entries/stale-{kver}.conf")),
        format!("title stale\nversion {kver}\nlinux /vmlinuz-{kver}\ninitrd /initrd-stale.img\n"),
    )
    .unwrap();
    std::fs::create_dir_all(root.at("/var/lib/bootkmod")).unwrap();
    std::fs::write(root.at(SAVED), megasas_snapshot()).unwrap();

    let good = format!("initrd.img-{kver}");
    let out = bk(&root, &["--json", "doctor"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    assert_eq!(
        image_verdicts(&report, &kver),
        [("initrd-stale.img".to_string(), false), (good.clone(), true)],
        "{report:#}"
    );
    let shown = String::from_utf8_lossy(&bk(&root, &["doctor"]).stdout).into_owned();
    assert!(shown.contains(&format!("{kver} initrd-stale.img")), "{shown}");

    let (code, report, shown) = status(&root, &[]);
    assert_eq!(code, Some(3), "{report:#}");
    let alerts = doctor_alerts(&report, &kver);
    assert!(!alerts.is_empty(), "{report:#}");
    assert!(alerts.iter().all(|a| a["path"] == "/boot/initrd-stale.img"), "{report:#}");
    assert!(alerts.iter().any(|a| a["problem"].as_str().unwrap().contains(DRIVER)), "{report:#}");
    assert_eq!(shown.matches(&format!("doctor: AT RISK {kver}")).count(), 1, "{shown}");

    let before = std::fs::read(root.at(&primary)).unwrap();
    let out = bk(&root, &["--json", "doctor", "--fix", "--kver", &kver]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        image_verdicts(&report, &kver),
        [("initrd-stale.img".to_string(), true), (good, true)],
        "{report:#}"
    );
    assert_eq!(std::fs::read(root.at(&primary)).unwrap(), before, "the good image untouched");
    let (code, report, _) = status(&root, &[]);
    assert_eq!(code, Some(0), "{report:#}");
}
