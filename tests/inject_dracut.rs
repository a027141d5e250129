//! Boot proof on a real distribution image: Debian's `dracut --no-hostonly` built
//! without `megaraid_sas` (cached, see `common::inject::dracut_image`) cannot reach the
//! root filesystem behind a MegaRAID controller; after `bootkmod inject megaraid_sas` it
//! mounts it and switches to it. The root disk's own `/sbin/init` prints the success
//! marker, so the marker means "dracut mounted root and handed over".

mod common;

use common::inject::dracut_image;
use common::qemu::{self, Boot, Controller, ROOT_OK};
use common::{run, tool};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// An ext4 root whose `/sbin/init` (busybox-static) prints [`ROOT_OK`] and powers off.
fn root_disk(out: &Path) -> Option<()> {
    let mke2fs = tool("mke2fs")?;
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].iter().map(Path::new).find(|p| p.is_file())?;
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    for sub in ["bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    fs::copy(busybox, d.join("bin/busybox")).unwrap();
    fs::write(d.join("etc/os-release"), b"ID=bootkmod-test\n").unwrap();
    fs::write(d.join("bootkmod-root"), b"root\n").unwrap();
    let init =
        format!("#!/bin/busybox sh\n/bin/busybox echo {ROOT_OK}\n/bin/busybox poweroff -f\n");
    fs::write(d.join("sbin/init"), init).unwrap();
    fs::set_permissions(d.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    let st =
        run(Command::new(mke2fs).args(["-q", "-F", "-t", "ext4", "-d"]).arg(d).arg(out).arg("64M"));
    assert!(st.status.success(), "mke2fs: {}", String::from_utf8_lossy(&st.stderr));
    Some(())
}

/// The kernel's line when dracut's `sysroot.mount` mounted the disk: proof the driver
/// loaded even if the hand-over to the root's init were slow.
const KERNEL_MOUNTED: &str = "EXT4-fs (sda): mounted filesystem";

fn boot(
    release: &str,
    image: &Path,
    disk: &Path,
    device_wait: u64,
    timeout: u64,
) -> Option<qemu::BootLog> {
    let kernel = qemu::host_kernel(release)?;
    let mut b = Boot::new(kernel, image).disk(disk, Controller::Megasas).append(&format!(
        "root=/dev/sda rootfstype=ext4 ro rd.shell=0 rd.emergency=poweroff rd.timeout={device_wait}"
    ));
    b.timeout = Duration::from_secs(timeout);
    b.memory_mb = 1536;
    b.run()
}

#[test]
fn a_dracut_image_boots_to_root_only_after_injection() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(cached) = dracut_image(&release, &["megaraid_sas"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("initramfs.img");
    fs::copy(&cached, &image).unwrap();
    let disk = tmp.path().join("root.img");
    let Some(()) = root_disk(&disk) else { return };

    // Without the driver dracut waits for /dev/sda, gives up and powers off (or is
    // killed at the timeout): either way the disk is never mounted.
    let Some(before) = boot(&release, &image, &disk, 30, 150) else { return };
    assert!(
        !before.root_mounted() && !before.serial.contains(KERNEL_MOUNTED),
        "root mounted without the driver?\n{}",
        before.tail()
    );

    let out = run(common::bootkmod()
        .args(["inject", "--no-backup", "--image"])
        .arg(&image)
        .arg("megaraid_sas"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("verified:"), "{stdout}");

    let Some(after) = boot(&release, &image, &disk, 240, 300) else { return };
    assert!(
        after.serial.contains(KERNEL_MOUNTED),
        "no root mount after injection; serial tail:\n{}",
        after.tail()
    );
    assert!(after.root_mounted(), "root mounted but not handed over:\n{}", after.tail());
    eprintln!("dracut image: root reached in {:.1}s after injection", after.elapsed.as_secs_f64());
}
