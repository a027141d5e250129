//! Boot proof: a real Debian kernel under QEMU mounts its ext4 root behind a controller
//! whose driver is a module only after `bootkmod inject`. The image's `/init` loads
//! drivers through kmod's real `modprobe` by the modalias of each device, so the boot
//! succeeds only when the injected files *and* the regenerated `.bin` indexes are right
//! (including `sd_mod`, which the plan must add for a SCSI host driver).
//!
//! Coverage (8 boots, 2 at a time): each controller fails before injection; megasas
//! after gzip/append, xz/rebuild, zstd/append; pvscsi after gzip/rebuild, xz/append,
//! zstd/rebuild. The dracut image proof is in `inject_dracut.rs`.

mod common;

use common::inject::{base_image, MODPROBE_BROKEN};
use common::qemu::{self, Boot, Controller};
use std::path::Path;

/// The base image: busybox, kmod's modprobe, ext4 and its dependencies. No SCSI at all.
const BASE_MODULES: &[&str] = &["ext4"];

fn boot(release: &str, image: &Path, controller: Controller) -> Option<qemu::BootLog> {
    let kernel = qemu::host_kernel(release)?;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("root.img");
    qemu::ext4_disk(&disk)?;
    let mut b = Boot::new(kernel, image).disk(&disk, controller);
    // Software emulation on a loaded 2-core host can take minutes; the markers decide.
    b.timeout = std::time::Duration::from_secs(300);
    b.run()
}

fn inject(image: &Path, driver: &str, rebuild: bool) {
    let mut cmd = common::bootkmod();
    cmd.args(["inject", "--no-backup", "--image"]).arg(image).arg(driver);
    if rebuild {
        cmd.arg("--rebuild");
    }
    let out = common::run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bootkmod inject {driver} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified:"), "no verification in:\n{stdout}");
    assert!(stdout.contains("sd_mod"), "the plan must add sd_mod:\n{stdout}");
}

fn proof(controller: Controller, driver: &str, kind: &str, rebuild: bool) {
    let Some(release) = common::installed_kernel() else { return };
    let Some((_dir, image)) = base_image(&release, BASE_MODULES, controller.device(), kind) else {
        return;
    };
    inject(&image, driver, rebuild);
    let Some(log) = boot(&release, &image, controller) else { return };
    assert!(!log.serial.contains(MODPROBE_BROKEN), "modprobe cannot run:\n{}", log.tail());
    assert!(
        log.root_mounted(),
        "{driver} ({kind}, rebuild={rebuild}): no root mount after injection; serial tail:\n{}",
        log.tail()
    );
    eprintln!(
        "{driver} {kind} rebuild={rebuild}: root mounted in {:.1}s",
        log.elapsed.as_secs_f64()
    );
}

fn fails_without(controller: Controller) {
    let Some(release) = common::installed_kernel() else { return };
    let Some((_dir, image)) = base_image(&release, BASE_MODULES, controller.device(), "gzip")
    else {
        return;
    };
    let Some(log) = boot(&release, &image, controller) else { return };
    assert!(!log.serial.contains(MODPROBE_BROKEN), "modprobe cannot run:\n{}", log.tail());
    assert!(
        log.root_failed() && !log.root_mounted(),
        "expected the failure marker before injection; serial tail:\n{}",
        log.tail()
    );
}

#[test]
fn megasas_root_fails_before_injection() {
    fails_without(Controller::Megasas);
}

#[test]
fn pvscsi_root_fails_before_injection() {
    fails_without(Controller::Pvscsi);
}

#[test]
fn megasas_gzip_append() {
    proof(Controller::Megasas, "megaraid_sas", "gzip", false);
}

#[test]
fn megasas_xz_rebuild() {
    proof(Controller::Megasas, "megaraid_sas", "xz", true);
}

#[test]
fn megasas_zstd_append() {
    proof(Controller::Megasas, "megaraid_sas", "zstd", false);
}

#[test]
fn pvscsi_gzip_rebuild() {
    proof(Controller::Pvscsi, "vmw_pvscsi", "gzip", true);
}

#[test]
fn pvscsi_xz_append() {
    proof(Controller::Pvscsi, "vmw_pvscsi", "xz", false);
}

#[test]
fn pvscsi_zstd_rebuild() {
    proof(Controller::Pvscsi, "vmw_pvscsi", "zstd", true);
}
