//! End to end at install time: a target root whose kernel tree lacks the root disk's
//! driver gets it from a Driver Update Disk (`dud apply`), then `bootkmod inject --kver`
//! from that root puts it into the root's own initramfs, and the real kernel, booted in
//! QEMU with the disk behind that controller, mounts its root filesystem.
//!
//! The image's `/init` loads drivers through kmod's `modprobe` by modalias, so the boot
//! succeeds only when the module that `dud apply` placed, its dependencies from the
//! root's tree and the regenerated `.bin` indexes are all right.

mod common;

use common::dud::{dud, ok};
use common::inject::base_image;
use common::qemu::{self, Boot, Controller};
use common::{installed_kernel, run, tool};
use std::path::Path;
use std::process::Command;

#[test]
fn a_driver_disk_then_inject_boots_a_root_that_lacked_the_driver() {
    let Some(kver) = installed_kernel() else { return };
    let Some(gzip) = tool("gzip") else { return };
    let host_tree = Path::new("/lib/modules").join(&kver);
    let pvscsi = host_tree.join("kernel/drivers/scsi/vmw_pvscsi.ko");
    let symvers = Path::new("/usr/src").join(format!("linux-headers-{kver}/Module.symvers"));
    if !pvscsi.is_file() || !symvers.is_file() {
        common::missing("vmw_pvscsi.ko and Module.symvers of the installed kernel");
        return;
    }

    // The target root: the installed kernel's tree without vmw_pvscsi (hard links where
    // allowed: the tree is 400 MB; copies for a user who may not link root's files), its
    // symvers and config, and an initramfs that lacks every SCSI driver.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("sysimage");
    let tree = root.join("lib/modules").join(&kver);
    common::machine::clone_tree(&host_tree, &tree);
    std::fs::remove_file(tree.join("kernel/drivers/scsi/vmw_pvscsi.ko")).unwrap();
    let boot_dir = root.join("boot");
    std::fs::create_dir_all(&boot_dir).unwrap();
    std::fs::copy(format!("/boot/config-{kver}"), boot_dir.join(format!("config-{kver}"))).unwrap();
    let gz = run(Command::new(gzip).arg("-c").arg(&symvers));
    std::fs::write(boot_dir.join(format!("symvers-{kver}.gz")), gz.stdout).unwrap();
    let root_arg = root.to_str().unwrap();
    ok(&run(common::bootkmod().args(["--root", root_arg, "depmod", &kver])));

    let Some((_img_dir, base)) = base_image(&kver, &["ext4"], Controller::Pvscsi.device(), "zstd")
    else {
        return;
    };
    let image = boot_dir.join(format!("initrd.img-{kver}"));
    std::fs::copy(&base, &image).unwrap();

    // Before: the root's tree cannot provide the driver, so inject refuses to guess.
    let before = run(common::bootkmod()
        .args(["--root", root_arg, "inject", "--kver", &kver])
        .args(["--dry-run", "vmw_pvscsi"]));
    assert!(!before.status.success(), "vmw_pvscsi must be missing from the root before the DUD");

    // The driver disk, as a vendor ships it, applied the way Anaconda's driver-update
    // step does.
    let iso = tmp.path().join("dd.iso");
    ok(&dud(&["build", pvscsi.to_str().unwrap(), "-o", iso.to_str().unwrap()]));
    ok(&dud(&["--root", root_arg, "apply", iso.to_str().unwrap(), "--kver", &kver]));

    let out = ok(&run(common::bootkmod()
        .args(["--root", root_arg, "inject", "--kver", &kver])
        .args(["--no-backup", "vmw_pvscsi"])));
    assert!(out.contains("verified:"), "inject must verify what it wrote:\n{out}");
    assert!(out.contains("sd_mod"), "a SCSI host driver needs sd_mod in the image:\n{out}");

    let Some(kernel) = qemu::host_kernel(&kver) else { return };
    let disk = tmp.path().join("root.img");
    let Some(()) = qemu::ext4_disk(&disk) else { return };
    let mut guest = Boot::new(kernel, &image).disk(&disk, Controller::Pvscsi);
    guest.timeout = std::time::Duration::from_secs(300);
    let Some(log) = guest.run() else { return };
    assert!(
        log.root_mounted(),
        "no root mount after dud apply + inject; serial tail:\n{}",
        log.tail()
    );
    eprintln!("dud apply + inject: root mounted in {:.1}s", log.elapsed.as_secs_f64());
}
