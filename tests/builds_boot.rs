//! Boot proof for builds side by side (issue 21): a root with two kernels of different
//! ABI — the installed one and Debian's rt flavour, which refuse each other's modules
//! (`module_layout`) — and a build of the "vendor" driver for each (virtio_blk from
//! each kernel's own tree, taken out of the trees under the root). One install of both
//! builds gives each kernel its own, in its `extra/` as a kmod RPM would place it; each
//! kernel then boots in QEMU from the image install updated and mounts its root disk
//! (virtio-blk) through the build it was given: the guest prints the sha256 of the
//! virtio_blk it loads. The virtio core virtio_blk needs stays in-tree (in each tree
//! under the root, and in the base image with the PCI transport).

mod common;

use common::check::module_in;
use common::keep::{json_of, Source, TargetRoot};
use common::qemu::{self, Boot, Controller, InitramfsDir, ROOT_FAIL, ROOT_OK};
use common::{bootkmod, installed_kernel, missing, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// ext4 and what it needs, in load order (Debian 6.1 builds them as modules).
const EXT4: &[&str] = &["crc16.ko", "mbcache.ko", "jbd2.ko", "crc32c_generic.ko", "ext4.ko"];
/// The virtio core virtio_blk links against (modules in Debian 6.1), in load order.
const VIRTIO_CORE: &[&str] = &["virtio_ring.ko", "virtio.ko"];
/// The PCI transport QEMU's virtio-blk-pci device needs, in load order.
const VIRTIO_PCI: &[&str] =
    &["virtio_pci_legacy_dev.ko", "virtio_pci_modern_dev.ko", "virtio_pci.ko"];

/// busybox, ext4's modules from `src`'s tree, and an /init that loads them, then the one
/// virtio_blk the image holds (printing its sha256), and mounts the disk read-only.
fn base_image(src: &Source, release: &str, out: &Path) -> Option<()> {
    let dir = InitramfsDir::busybox()?;
    let mut script = String::from(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for file in EXT4.iter().chain(VIRTIO_CORE).chain(VIRTIO_PCI) {
        let from = module_in(&src.root, &src.kver, file);
        let rel = format!("lib/modules/{release}/kernel/{file}");
        dir.file(&rel, &std::fs::read(from).unwrap(), 0o644);
        script.push_str(&format!("insmod /{rel} || echo BOOTKMOD-INSMOD-FAIL {file}\n"));
    }
    script.push_str(&format!(
        "for p in $(find /lib/modules /usr/lib/modules -name virtio_blk.ko 2>/dev/null); do\n\
         echo \"BOOTKMOD-DRIVER $p $(sha256sum $p)\"; insmod $p && break; done\n\
         i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done\n\
         mkdir -p /newroot\n\
         if mount -t ext4 -o ro /dev/vda /newroot && [ -e /newroot/bootkmod-root ]; \
         then echo {ROOT_OK}; else echo {ROOT_FAIL}; fi\npoweroff -f\n"
    ));
    dir.init(&script);
    dir.pack(out)
}

/// Take the in-tree virtio_blk out of `src`'s tree under the root (the driver is the
/// vendor's now), add the virtio core it needs from `src`, and index the tree again
/// with kmod's depmod.
fn vendor_tree(root: &TargetRoot, src: &Source) {
    let release = src.kver.as_str();
    let tree = root.at(format!("/lib/modules/{release}"));
    let found = module_in(root.path(), release, "virtio_blk.ko");
    std::fs::remove_file(&found).unwrap();
    let order = std::fs::read_to_string(tree.join("modules.order")).unwrap();
    let mut kept: Vec<String> =
        order.lines().filter(|l| !l.ends_with("/virtio_blk.ko")).map(str::to_string).collect();
    let src_tree = src.root.join(format!("lib/modules/{release}"));
    for file in VIRTIO_CORE {
        let from = module_in(&src.root, release, file);
        let rel = from.strip_prefix(&src_tree).unwrap().to_path_buf();
        std::fs::create_dir_all(tree.join(&rel).parent().unwrap()).unwrap();
        std::fs::copy(&from, tree.join(&rel)).unwrap();
        kept.push(rel.display().to_string());
    }
    std::fs::write(tree.join("modules.order"), kept.join("\n") + "\n").unwrap();
    let depmod = tool("depmod").unwrap();
    let st = run(Command::new(depmod).arg("-b").arg(root.path()).arg(release));
    assert!(st.status.success(), "depmod: {}", String::from_utf8_lossy(&st.stderr));
}

fn vmlinuz(src: &Source) -> Option<PathBuf> {
    let p = src.root.join(format!("boot/vmlinuz-{}", src.kver));
    if p.is_file() {
        return Some(p);
    }
    missing(&format!("kernel image {}", p.display()))?;
    unreachable!()
}

#[test]
fn each_kernel_boots_through_its_own_build() {
    let Some(kver) = installed_kernel() else { return };
    let Some(host) = Source::of(&kver, &kver) else { return };
    // Debian's rt flavour of the installed ABI, as .ci/setup.d/kernels picked it.
    let Some(others) = common::machine::other_kernels() else { return };
    let Some(rt) = Source::of(&others.rt, &kver) else { return };
    let Some(host_kernel) = qemu::host_kernel(&kver) else { return };
    let Some(rt_kernel) = vmlinuz(&rt) else { return };
    let Some(_) = tool("depmod") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("root.ext4");
    let Some(()) = qemu::ext4_disk(&disk) else { return };

    let root = TargetRoot::new();
    let mut builds = Vec::new();
    for src in [&host, &rt] {
        root.add_kernel(src, &src.kver, &src.symvers());
        vendor_tree(&root, src);
        let image = root.at(format!("/boot/initrd.img-{}", src.kver));
        let Some(()) = base_image(src, &src.kver, &image) else { return };
        let vendor = scratch.path().join(&src.kver).join("virtio_blk.ko");
        std::fs::create_dir_all(vendor.parent().unwrap()).unwrap();
        std::fs::copy(module_in(&src.root, &src.kver, "virtio_blk.ko"), &vendor).unwrap();
        builds.push(vendor);
    }

    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["--json", "install", "--root-critical"])
        .args(&builds));
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    for (src, build, other) in [(&host, &builds[0], &builds[1]), (&rt, &builds[1], &builds[0])] {
        let k = report["kernels"].as_array().unwrap().iter().find(|k| k["release"] == src.kver);
        let m = &k.unwrap()["record"]["modules"]["virtio_blk"];
        let sha = bootkmod::model::module::sha256_hex(&std::fs::read(build).unwrap());
        let other_sha = bootkmod::model::module::sha256_hex(&std::fs::read(other).unwrap());
        assert_eq!(m["placement"], "own", "{}: {m:#}", src.kver);
        assert_eq!(m["build"], sha.as_str(), "{}: {m:#}", src.kver);
        // The other kernel's build is newer or not, but never loads here.
        if let Some(p) = m["passed_over"].as_array().and_then(|p| p.first()) {
            assert_eq!(p["sha256"], other_sha.as_str());
            assert!(p["why"].as_str().unwrap().contains("module_layout"), "{p:#}");
        }
        let placed = root.at(format!("/lib/modules/{}/extra/virtio_blk/virtio_blk.ko", src.kver));
        assert_eq!(std::fs::read(&placed).unwrap(), std::fs::read(build).unwrap());
        assert!(!root.at(format!("/lib/modules/{}/weak-updates/virtio_blk", src.kver)).exists());
    }
    let status = run(bootkmod().arg("--root").arg(root.path()).arg("status"));
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));

    for (src, kernel, build) in [(&host, &host_kernel, &builds[0]), (&rt, &rt_kernel, &builds[1])] {
        let image = root.at(format!("/boot/initrd.img-{}", src.kver));
        let Some(log) = Boot::new(kernel, &image).disk(&disk, Controller::VirtioBlk).run() else {
            return;
        };
        assert!(log.root_mounted(), "{}: root did not mount:\n{}", src.kver, log.tail());
        let sha = bootkmod::model::module::sha256_hex(&std::fs::read(build).unwrap());
        let loaded: Vec<&str> = log.lines_with("BOOTKMOD-DRIVER").collect();
        assert!(
            loaded.first().is_some_and(|l| l.contains(&sha)),
            "{}: the guest did not load its own build {sha}: {loaded:?}\n{}",
            src.kver,
            log.tail()
        );
    }
}
