//! Boot proof on another architecture: Debian's arm64 kernel in `qemu-system-aarch64`
//! (software emulation, `virt` machine) with its ext4 root on a virtio-blk disk, whose
//! drivers (`virtio_pci`, `virtio_blk`) are modules there. The base image (arm64 static
//! busybox, ext4 and its dependencies, indexes written by kmod's depmod) cannot mount
//! root; after `bootkmod inject virtio_blk virtio_pci` into it, from the arm64 tree
//! under `--root`, it does. The guest's `/init` loads drivers with busybox's `modprobe`
//! by the modalias of every device, so the injected files and the rewritten text
//! indexes must both be right.
//!
//! Inputs: `.ci/setup.d/foreign-kernels` (the arm64 build), `.ci/setup.d/qemu-arm64`
//! (qemu-system-aarch64, arm64 busybox).

mod common;

use common::depmod::TreeRoot;
use common::foreign::foreign_kernels;
use common::inject::compress;
use common::qemu::{self, Arch, Boot, Controller, InitramfsDir, ROOT_FAIL, ROOT_OK};
use std::path::Path;
use std::process::Command;

/// `/init`: API filesystems, ext4, a few rounds of modprobe by modalias (a virtio disk
/// appears on the virtio bus only after the PCI transport's driver bound), then mount.
/// busybox's modprobe ignores ext4's `softdep pre: crc32c`, so crc32c_generic is loaded
/// by name, and `/sbin/modprobe` (the kernel's request_module helper) is busybox's.
fn init() -> String {
    format!(
        r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ln -s /bin/busybox /sbin/modprobe
modprobe crc32c_generic
modprobe ext4 || echo "BOOTKMOD-MODPROBE-FAIL ext4"
n=0
while [ $n -lt 8 ] && [ ! -b /dev/vda ]; do
  for a in /sys/bus/*/devices/*/modalias; do
    [ -r "$a" ] && modprobe -q "$(cat "$a")" 2>/dev/null
  done
  sleep 0.5
  n=$((n+1))
done
mkdir -p /newroot
if mount -t ext4 -o ro /dev/vda /newroot && [ -e /newroot/bootkmod-root ]; then echo {ROOT_OK}; else echo {ROOT_FAIL}; fi
poweroff -f
"#
    )
}

fn boot(kernel: &Path, image: &Path, disk: &Path) -> Option<qemu::BootLog> {
    let mut b = Boot::new(kernel, image).arch(Arch::Aarch64).disk(disk, Controller::VirtioBlk);
    b.timeout = std::time::Duration::from_secs(300);
    b.memory_mb = 512;
    b.run()
}

#[test]
fn arm64_root_mounts_only_after_injection() {
    let started = std::time::Instant::now();
    let Some(kernels) = foreign_kernels() else { return };
    let Some(k) = kernels.into_iter().find(|k| k.arch == "arm64") else { return };
    let Some(depmod) = common::tool("depmod") else { return };
    let Some(modprobe) = common::tool("modprobe") else { return };
    let kernel = k.root.join(format!("boot/vmlinuz-{}", k.release));

    // The arm64 tree as a root bootkmod may write into (hard links), with its symvers:
    // arm64's raw Image has no readable export table, so without it the check refuses.
    let tree = TreeRoot::copy_tree(&k.root, &k.release, |_| true);
    tree.run_depmod(&depmod);
    let headers = tree.root().join(format!("usr/src/linux-headers-{}", k.release));
    std::fs::create_dir_all(&headers).unwrap();
    std::fs::copy(k.symvers(), headers.join("Module.symvers")).unwrap();

    // The base image: ext4's closure (kmod's answer on the arm64 tree), kmod's indexes.
    let Some(dir) = InitramfsDir::busybox_for(Arch::Aarch64) else { return };
    let out = common::run(Command::new(&modprobe).arg("-d").arg(tree.root()).args([
        "-S",
        &k.release,
        "--show-depends",
        "ext4",
    ]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let prefix = tree.root().to_string_lossy().into_owned();
    let mut closure = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(path) = line.strip_prefix("insmod ").and_then(|p| p.split_whitespace().next())
        else {
            continue;
        };
        let inside = path.strip_prefix(&prefix).unwrap_or(path);
        let dst = dir.path().join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(path, &dst).unwrap();
        closure += 1;
    }
    assert!(closure >= 1);
    let modules_dir = dir.path().join("lib/modules").join(&k.release);
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        std::fs::copy(tree.tree().join(f), modules_dir.join(f)).unwrap();
    }
    let st = common::run(Command::new(&depmod).arg("-b").arg(dir.path()).arg(&k.release));
    assert!(st.status.success(), "depmod: {}", String::from_utf8_lossy(&st.stderr));
    dir.init(&init());
    let raw = tree.root().join("base.cpio");
    let Some(()) = dir.pack(&raw) else { return };
    let image_dir = tree.root().join("boot");
    std::fs::create_dir_all(&image_dir).unwrap();
    let image = image_dir.join(format!("initrd.img-{}", k.release));
    let Some(()) = compress(&raw, "gzip", &image) else { return };
    let disk = tree.root().join("root.img");
    let Some(()) = qemu::ext4_disk(&disk) else { return };

    let Some(before) = boot(&kernel, &image, &disk) else { return };
    assert!(
        before.root_failed() && !before.root_mounted(),
        "expected the failure marker before injection:\n{}",
        before.tail()
    );

    let out = common::run(common::bootkmod().arg("--root").arg(tree.root()).args([
        "inject",
        "--no-backup",
        "--kver",
        &k.release,
        "virtio_blk",
        "virtio_pci",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inject failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified:"), "{stdout}");

    let Some(after) = boot(&kernel, &image, &disk) else { return };
    assert!(after.root_mounted(), "no root mount after injection:\n{}", after.tail());
    eprintln!(
        "arm64 {}: root failed before injection ({:.1}s boot), mounted after ({:.1}s boot); \
         whole test {:.1}s",
        k.release,
        before.elapsed.as_secs_f64(),
        after.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
