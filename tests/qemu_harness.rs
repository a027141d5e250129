//! The boot harness itself: a real kernel mounts root through a module-only controller
//! driver when the initramfs carries it, and reports failure when it does not. Every
//! boot-proof test elsewhere relies on these two markers meaning what they say.

mod common;
use common::qemu::{self, Boot, Controller, InitramfsDir};

fn boot_with(modules: &[&str], controller: Controller) -> Option<qemu::BootLog> {
    let release = common::installed_kernel()?;
    let kernel = qemu::host_kernel(&release)?;
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("root.img");
    qemu::ext4_disk(&disk)?;
    let initramfs = InitramfsDir::busybox()?;
    let order = initramfs.modules_from_host(&release, modules)?;
    initramfs.init(&qemu::mount_root_init(&order, controller.device()));
    let image = tmp.path().join("initrd.cpio");
    initramfs.pack(&image)?;
    Boot::new(kernel, &image).disk(&disk, controller).run()
}

#[test]
fn root_mounts_when_the_controller_driver_is_present() {
    let Some(log) = boot_with(&["ext4", "virtio_pci", "virtio_blk"], Controller::VirtioBlk) else {
        return;
    };
    assert!(log.root_mounted(), "expected the root mount marker; serial tail:\n{}", log.tail());
    eprintln!("booted to the root mount in {:.1}s", log.elapsed.as_secs_f64());
}

#[test]
fn root_fails_without_the_controller_driver() {
    let Some(log) = boot_with(&["ext4", "virtio_pci"], Controller::VirtioBlk) else {
        return;
    };
    assert!(
        log.root_failed() && !log.root_mounted(),
        "expected the failure marker; serial tail:\n{}",
        log.tail()
    );
}
