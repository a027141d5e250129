//! Boot proof for install: the image of the driver's own kernel, updated by
//! `bootkmod install --root-critical` under an unmounted root, boots a real Debian
//! kernel in QEMU to a root filesystem on the out-of-tree `bkram` disk. The image's
//! `/init` loads the driver through kmod's real `modprobe` (so the image's indexes must
//! be right), makes a filesystem on `/dev/bkram0`, mounts it, remounts it read-only and
//! finds its marker. The same image before install must fail: the driver comes from
//! the install.

mod common;

use common::inject::add_kmod;
use common::keep::Setup;
use common::qemu::{self, Boot, InitramfsDir, ROOT_FAIL, ROOT_OK};
use common::{bootkmod, run, tool};
use std::path::Path;
use std::process::Command;

fn init() -> String {
    format!(
        r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
/sbin/modprobe ext4 || echo "BOOTKMOD-MODPROBE-FAIL ext4"
/sbin/modprobe bkram || echo "BOOTKMOD-MODPROBE-FAIL bkram"
n=0
while [ $n -lt 10 ] && [ ! -b /dev/bkram0 ]; do sleep 0.3; n=$((n+1)); done
mkdir -p /newroot
if mke2fs -q /dev/bkram0 && mount -t ext4 /dev/bkram0 /newroot && touch /newroot/bootkmod-root \
  && umount /newroot && mount -t ext4 -o ro /dev/bkram0 /newroot && [ -e /newroot/bootkmod-root ]
then echo {ROOT_OK}; else echo {ROOT_FAIL}; fi
poweroff -f
"#
    )
}

/// busybox + kmod + ext4 (and its dependencies), indexes by kmod's depmod; no bkram.
fn base_image(release: &str, out: &Path) -> Option<()> {
    let dir = InitramfsDir::busybox()?;
    dir.modules_from_host(release, &["ext4"])?;
    let src = Path::new("/lib/modules").join(release);
    let dst = dir.path().join("lib/modules").join(release);
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let st = run(Command::new(tool("depmod")?).arg("-b").arg(dir.path()).arg(release));
    assert!(st.status.success(), "depmod: {}", String::from_utf8_lossy(&st.stderr));
    add_kmod(dir.path())?;
    dir.init(&init());
    dir.pack(out)
}

#[test]
fn installed_driver_mounts_root_in_qemu() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: build }) = Setup::new() else {
        return;
    };
    let Some(kernel) = qemu::host_kernel(&kver) else { return };
    root.add_kernel(&newer, &kver, &symvers);
    let image = root.at(format!("/boot/initrd.img-{kver}"));
    let Some(()) = base_image(&kver, &image) else { return };
    let before = build.path().join("before.img");
    std::fs::copy(&image, &before).unwrap();

    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical"])
        .arg(&bkram));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("status"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let Some(log) = Boot::new(&kernel, &before).run() else { return };
    assert!(log.root_failed(), "without the driver root must not mount:\n{}", log.tail());
    let Some(log) = Boot::new(&kernel, &image).run() else { return };
    assert!(log.root_mounted(), "root on bkram did not mount:\n{}", log.tail());
}
