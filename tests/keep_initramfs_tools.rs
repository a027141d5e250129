//! Debian's own image builder keeps the driver: in a chroot target (`common::chroot`,
//! initramfs-tools with bootkmod's hooks installed by `scripts/install-integration`),
//! `update-initramfs -u` after `bootkmod install --root-critical` rebuilds the image
//! from scratch and bootkmod's initramfs-tools hook carries the driver into it (judged
//! by initramfs-tools' own `lsinitramfs`), loaded early through `conf/modules`; QEMU
//! then mounts root through it behind a megasas controller, whose driver
//! (`megaraid_sas`, a copy of the installed kernel's, installed as if out of tree) the
//! target's kernel tree does not have, so an image built before the install lacks it.
//!
//! Installing a new kernel package, as its postinst does it (`run-parts --exit-on-error
//! --arg=KVER --arg=IMAGE /etc/kernel/postinst.d`), runs bootkmod's hook before Debian's
//! `initramfs-tools` hook: a kABI-compatible kernel's new image carries the driver from
//! `weak-updates/`; for a kernel that breaks a symbol the driver uses, the package's
//! postinst and `update-initramfs` fail naming driver and kernel (policy refuse), or
//! warn and build the image without it (policy warn). Removing the kABI kernel's
//! package (`run-parts ... /etc/kernel/postrm.d`) drops its weak-updates link and
//! bootkmod forgets it.

mod common;

use common::chroot::{Builder, ChrootTarget};
use common::keep::{break_symbol, json_of, Source, TargetRoot};
use common::qemu::{self, Boot, Controller, ROOT_OK};
use common::{installed_kernel, run, tool};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A kABI-compatible copy of the installed kernel under another release name.
const KABI: &str = "6.1.0-99kabi-amd64";
/// A copy whose symvers breaks a symbol the driver needs.
const BREAK: &str = "6.1.0-99break-amd64";
const DRIVER: &str = "megaraid_sas";

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `names` and their dependency closure from the installed kernel `kver` (kmod's
/// `modprobe --show-depends` as the oracle) added to the target's tree of `release`,
/// listed in its modules.order, indexes by kmod's depmod.
fn add_modules(stage: &TargetRoot, kver: &str, release: &str, names: &[&str]) -> Option<()> {
    let modprobe = tool("modprobe")?;
    let depmod = tool("depmod")?;
    let src = Path::new("/lib/modules").join(kver);
    let tree = stage.at(format!("/lib/modules/{release}"));
    let mut order = fs::read_to_string(tree.join("modules.order")).unwrap();
    for name in names {
        let out = run(Command::new(&modprobe).args(["--show-depends", "-S", kver, name]));
        assert!(out.status.success(), "modprobe --show-depends {name}: {}", text(&out));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else { continue };
            let rel = Path::new(path.trim()).strip_prefix(&src).unwrap().to_path_buf();
            let dest = tree.join(&rel);
            if dest.exists() {
                continue;
            }
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(src.join(&rel), &dest).unwrap();
            order.push_str(&format!("{}\n", rel.display()));
        }
    }
    fs::write(tree.join("modules.order"), order).unwrap();
    let out = run(Command::new(depmod).arg("-b").arg(stage.path()).arg(release));
    assert!(out.status.success(), "depmod: {}", text(&out));
    Some(())
}

/// A vmlinux symbol `module` needs (from its `__versions`), other than module_layout.
fn vmlinux_symbol_needed(
    module: &Path,
    symvers: &[bootkmod::formats::symvers::SymversEntry],
) -> String {
    let m = bootkmod::model::module::Module::read(module, Default::default()).unwrap();
    m.versions
        .iter()
        .map(|v| v.symbol.clone())
        .find(|n| {
            n != "module_layout" && symvers.iter().any(|e| &e.symbol == n && e.module == "vmlinux")
        })
        .expect("a vmlinux symbol in __versions")
}

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
    let init =
        format!("#!/bin/busybox sh\n/bin/busybox echo {ROOT_OK}\n/bin/busybox poweroff -f\n");
    fs::write(d.join("sbin/init"), init).unwrap();
    fs::set_permissions(d.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    let st =
        run(Command::new(mke2fs).args(["-q", "-F", "-t", "ext4", "-d"]).arg(d).arg(out).arg("64M"));
    assert!(st.status.success(), "mke2fs: {}", text(&st));
    Some(())
}

/// initramfs-tools' own listing of an image.
fn lsinitramfs(image: &Path) -> String {
    let out = run(Command::new(tool("lsinitramfs").unwrap()).arg(image));
    assert!(out.status.success(), "lsinitramfs: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn conf_modules(image: &Path) -> String {
    let out = run(common::bootkmod().args(["initramfs", "cat"]).arg(image).arg("conf/modules"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn update_initramfs_keeps_the_driver_and_the_kernel_postinst_hook_runs_first() {
    let Some(kver) = installed_kernel() else { return };
    let Some(_) = tool("update-initramfs") else { return };
    let Some(_) = tool("lsinitramfs") else { return };
    let Some(_) = tool("run-parts") else { return };
    let Some(_) = tool("unshare") else { return };
    // Mounting in a new namespace needs CAP_SYS_ADMIN; CI runs the tests as root.
    let Some(()) = common::need_root("building the target in a mount namespace (unshare)") else {
        return;
    };
    let Some(newer) = Source::of(&kver, &kver) else { return };
    let symvers = newer.symvers();
    let stage = TargetRoot::new();
    stage.add_kernel(&newer, &kver, &symvers);
    // The SCSI disk stack, but not the controller's driver.
    let Some(()) = add_modules(&stage, &kver, &kver, &["sd_mod"]) else { return };
    let host_driver =
        Path::new("/lib/modules").join(&kver).join("kernel/drivers/scsi/megaraid/megaraid_sas.ko");
    assert!(host_driver.is_file(), "{}", host_driver.display());
    let broken = vmlinux_symbol_needed(&host_driver, &symvers);
    let target = ChrootTarget::new(stage, Builder::InitramfsTools);
    let t = target.path().to_path_buf();
    let image = t.join(format!("boot/initrd.img-{kver}"));
    let vendor = t.join("tmp/megaraid_sas.ko");
    fs::copy(&host_driver, &vendor).unwrap();

    // Before bootkmod: the image update-initramfs builds lacks the controller's driver.
    let out = target.chroot_sh(&format!("update-initramfs -u -k {kver}"));
    assert!(out.status.success(), "update-initramfs before install: {}", text(&out));
    let listing = lsinitramfs(&image);
    assert!(!listing.contains("megaraid_sas.ko"), "{listing}");
    assert!(listing.contains("sd_mod.ko"), "{listing}");

    let out = target.bootkmod(&["install", "--root-critical", vendor.to_str().unwrap()]);
    assert!(out.status.success(), "install: {}", text(&out));

    // update-initramfs rebuilds from scratch: the hook carries the driver in.
    let out = target.chroot_sh(&format!("update-initramfs -u -k {kver}"));
    assert!(out.status.success(), "update-initramfs after install: {}", text(&out));
    let listing = lsinitramfs(&image);
    let at = format!("lib/modules/{kver}/extra/megaraid_sas/megaraid_sas.ko");
    assert!(listing.contains(&at), "lsinitramfs lacks {at}:\n{listing}");
    assert!(conf_modules(&image).lines().any(|l| l == DRIVER), "{}", conf_modules(&image));
    let out = target.bootkmod(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(0), "status: {}", text(&out));
    let status = json_of(&out);
    let k = status["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["release"] == kver.as_str())
        .unwrap();
    assert_eq!(k["modules"][0]["in_image"], true, "{status:#}");
    assert_eq!(k["image_note"], "rebuilt by another tool since bootkmod wrote it", "{status:#}");

    // The kernel mounts root through the driver the hook carried.
    let disk = target.path().join("tmp/root.img");
    let Some(()) = root_disk(&disk) else { return };
    let Some(kernel) = qemu::host_kernel(&kver) else { return };
    let mut boot = Boot::new(kernel, &image)
        .disk(&disk, Controller::Megasas)
        .append("root=/dev/sda rootfstype=ext4 ro");
    boot.timeout = Duration::from_secs(240);
    boot.memory_mb = 1024;
    let Some(log) = boot.run() else { return };
    assert!(log.root_mounted(), "root behind megasas did not mount:\n{}", log.tail());

    // A new kABI-compatible kernel package: bootkmod's postinst.d hook links the driver
    // before initramfs-tools builds the new image, which then carries it.
    target.stage.add_kernel(&newer, KABI, &symvers);
    let Some(()) = add_modules(&target.stage, &kver, KABI, &["sd_mod"]) else { return };
    fs::remove_file(t.join(format!("boot/initrd.img-{KABI}"))).ok();
    fs::remove_file(target.stage.at(format!("/boot/initrd.img-{KABI}"))).ok();
    fs::copy(
        target.stage.at(format!("/boot/config-{KABI}")),
        t.join(format!("boot/config-{KABI}")),
    )
    .unwrap();
    let postinst = |release: &str| {
        target.chroot_sh(&format!(
            "run-parts --report --exit-on-error --arg={release} --arg=/boot/vmlinuz-{release} /etc/kernel/postinst.d"
        ))
    };
    let out = postinst(KABI);
    assert!(out.status.success(), "postinst.d for {KABI}: {}", text(&out));
    let new_image = t.join(format!("boot/initrd.img-{KABI}"));
    let listing = lsinitramfs(&new_image);
    let at = format!("lib/modules/{KABI}/weak-updates/megaraid_sas/megaraid_sas.ko");
    assert!(listing.contains(&at), "lsinitramfs lacks {at}:\n{listing}");
    assert!(conf_modules(&new_image).lines().any(|l| l == DRIVER));

    // A kernel that breaks a symbol the driver needs: refused, naming driver and kernel.
    target.stage.add_kernel(&newer, BREAK, &break_symbol(&symvers, &broken));
    let Some(()) = add_modules(&target.stage, &kver, BREAK, &["sd_mod"]) else { return };
    fs::copy(
        target.stage.at(format!("/boot/config-{BREAK}")),
        t.join(format!("boot/config-{BREAK}")),
    )
    .unwrap();
    let break_image = t.join(format!("boot/initrd.img-{BREAK}"));
    fs::remove_file(&break_image).ok();
    let out = postinst(BREAK);
    let said = text(&out);
    assert!(!out.status.success(), "postinst.d accepted {BREAK}: {said}");
    assert!(said.contains(DRIVER) && said.contains(BREAK), "{said}");
    assert!(!break_image.exists(), "an image was built for {BREAK} without the driver");
    let out = target.chroot_sh(&format!("update-initramfs -c -k {BREAK}"));
    let said = text(&out);
    assert!(!out.status.success(), "update-initramfs built {BREAK}'s image: {said}");
    assert!(said.contains(DRIVER) && said.contains(BREAK), "{said}");

    // policy=warn: the image is built without the driver, with a warning naming both.
    fs::create_dir_all(t.join("etc/bootkmod")).unwrap();
    fs::write(t.join("etc/bootkmod/bootkmod.conf"), "policy=warn\n").unwrap();
    let out = postinst(BREAK);
    let said = text(&out);
    assert!(out.status.success(), "postinst.d under policy=warn: {said}");
    assert!(said.contains("warning") && said.contains(DRIVER) && said.contains(BREAK), "{said}");
    assert!(!lsinitramfs(&break_image).contains("megaraid_sas.ko"));
    // The initramfs-tools hook itself under policy=warn: the image is built, with its
    // warning naming driver and kernel.
    fs::remove_file(&break_image).unwrap();
    let out = target.chroot_sh(&format!("update-initramfs -c -k {BREAK}"));
    let said = text(&out);
    assert!(out.status.success(), "update-initramfs under policy=warn: {said}");
    assert!(said.contains("warning") && said.contains(DRIVER) && said.contains(BREAK), "{said}");
    assert!(!lsinitramfs(&break_image).contains("megaraid_sas.ko"));
    let out = target.bootkmod(&["status", "--kver", BREAK]);
    assert_eq!(out.status.code(), Some(3), "status: {}", text(&out));

    // Removing the kABI kernel's package (its postrm runs /etc/kernel/postrm.d):
    // bootkmod's hook drops the weak-updates link the package does not own and forgets
    // the kernel.
    let link =
        target.stage.at(format!("/lib/modules/{KABI}/weak-updates/megaraid_sas/megaraid_sas.ko"));
    assert!(link.symlink_metadata().is_ok(), "no weak-updates link for {KABI}");
    let out = target.chroot_sh(&format!(
        "run-parts --report --exit-on-error --arg={KABI} --arg=/boot/vmlinuz-{KABI} /etc/kernel/postrm.d"
    ));
    assert!(out.status.success(), "postrm.d for {KABI}: {}", text(&out));
    assert!(link.symlink_metadata().is_err(), "the weak-updates link of {KABI} outlived it");
    let status = json_of(&target.bootkmod(&["--json", "status"]));
    let releases: Vec<&str> = status["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["release"].as_str())
        .collect();
    assert!(!releases.contains(&KABI) && releases.contains(&kver.as_str()), "{status:#}");
}
