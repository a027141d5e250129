//! The keep flow on real Debian kernels under an unmounted root: install places an
//! out-of-tree driver built at test time for its own kernel, links it into the
//! weak-updates/ of every kernel it would load on (a real older ABI build and a kABI
//! copy), refuses the rt flavour with the kernel's own first reason (`module_layout`)
//! and a copy whose symvers breaks one symbol the driver uses (symbol named); kmod's
//! modprobe resolves the driver through bootkmod's indexes; status exits 3 naming the
//! kernels at risk; the kernel-install plugin picks the driver up for a further
//! compatible kernel and refuses a breaking one; remove restores everything byte for
//! byte; the host's /lib/modules and /boot never change.

mod common;

use common::check::build_bkram;
use common::keep::{break_symbol, digests, kernel_of, snapshot, Setup, Source, TargetRoot};
use common::machine::{other_kernels, synthetic_release};
use common::{bootkmod, installed_kernel, run, tool};
use std::path::Path;
use std::process::Command;

/// One of the symbols bkram takes from vmlinux.
const BROKEN_SYMBOL: &str = "put_disk";

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn install_status_kernel_install_remove_on_real_kernels() {
    let Some(kver) = installed_kernel() else { return };
    // The older ABI and the rt flavour .ci/setup.d/kernels picked beside it.
    let Some(others) = other_kernels() else { return };
    let (older_kver, rt_kver) = (others.older.as_str(), others.rt.as_str());
    // kABI copies of the installed kernel: names derived from it (they sort after it).
    let [kabi, kbreak, later, later_kbreak] =
        ["kabi", "kbreak", "kabi2", "kbreak2"].map(|tag| synthetic_release(&kver, tag));
    let [kabi, kbreak, later, later_kbreak] =
        [&kabi, &kbreak, &later, &later_kbreak].map(String::as_str);
    let Some(newer) = Source::of(&kver, &kver) else { return };
    let Some(older) = Source::of(older_kver, &kver) else { return };
    let Some(rt) = Source::of(rt_kver, &kver) else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let build = tempfile::tempdir().unwrap();
    let Some(bkram) = build_bkram(&kver, build.path()) else { return };

    let host_modules = snapshot(Path::new("/lib/modules"));
    let host_boot = snapshot(Path::new("/boot"));

    let root = TargetRoot::new();
    let newer_symvers = newer.symvers();
    root.add_kernel(&newer, &kver, &newer_symvers);
    root.add_kernel(&older, older_kver, &older.symvers());
    root.add_kernel(&rt, rt_kver, &rt.symvers());
    root.add_kernel(&newer, kabi, &newer_symvers);
    root.add_kernel(&newer, kbreak, &break_symbol(&newer_symvers, BROKEN_SYMBOL));
    let images_before = digests(&root.at("/boot"));

    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .arg("--json")
        .args(["install", "--root-critical"])
        .arg(&bkram));
    let report = json(&out);
    assert_eq!(out.status.code(), Some(3), "at-risk kernels: exit 3\n{report:#}");

    // Own kernel: RHEL's extra/<name>/ layout, identical bytes.
    let placed = root.at(format!("/lib/modules/{kver}/extra/bkram/bkram.ko"));
    assert_eq!(std::fs::read(&placed).unwrap(), std::fs::read(&bkram).unwrap());
    let target = format!("/lib/modules/{kver}/extra/bkram/bkram.ko");
    let kernel = |release: &str| kernel_of(&report, release).clone();
    assert_eq!(kernel(&kver)["record"]["modules"]["bkram"]["placement"], "own");
    // Compatible kernels: an absolute link at weak-updates/<path below extra/>.
    for release in [older_kver, kabi] {
        let link = root.at(format!("/lib/modules/{release}/weak-updates/bkram/bkram.ko"));
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&target), "{release}");
        assert_eq!(kernel(release)["record"]["modules"]["bkram"]["placement"], "weak-updates");
        assert!(kernel(release)["at_risk"].as_array().unwrap().is_empty());
    }
    // Refused kernels: no link, and the kernel's reason.
    for (release, needle) in [(rt_kver, "module_layout"), (kbreak, BROKEN_SYMBOL)] {
        assert!(!root.at(format!("/lib/modules/{release}/weak-updates")).exists(), "{release}");
        let m = &kernel(release)["record"]["modules"]["bkram"];
        assert_eq!(m["placement"], "refused");
        let first = m["reasons"][0].as_str().unwrap();
        assert!(first.contains(needle), "{release}: first reason {first:?} lacks {needle}");
        let risk = kernel(release)["at_risk"][0].as_str().unwrap().to_string();
        assert!(risk.contains(release) && risk.contains("bkram"), "{risk}");
    }
    // kmod's modprobe finds the driver through the indexes bootkmod's depmod wrote.
    for (release, path) in [
        (kver.as_str(), "extra/bkram/bkram.ko".to_string()),
        (older_kver, "weak-updates/bkram/bkram.ko".to_string()),
        (kabi, "weak-updates/bkram/bkram.ko".to_string()),
    ] {
        let out = run(Command::new(&modprobe).arg("-d").arg(root.path()).args([
            "-S",
            release,
            "--show-depends",
            "bkram",
        ]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{release}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("/lib/modules/{release}/{path}")), "{release}: {text}");
    }
    for release in [rt_kver, kbreak] {
        let out = run(Command::new(&modprobe).arg("-d").arg(root.path()).args([
            "-S",
            release,
            "--show-depends",
            "bkram",
        ]));
        assert!(!out.status.success(), "{release}: modprobe must not find bkram");
    }

    // status: exit 3, the refused kernels named with their reasons.
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("status"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    for (release, needle) in [(rt_kver, "module_layout"), (kbreak, BROKEN_SYMBOL)] {
        let banner = text
            .lines()
            .find(|l| l.starts_with("!!! AT RISK") && l.contains(release))
            .unwrap_or_else(|| panic!("no banner for {release}:\n{text}"));
        assert!(banner.contains("bkram") && banner.contains(needle), "{banner}");
    }
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
    let status = json(&out);
    for k in status["kernels"].as_array().unwrap() {
        let m = &k["modules"][0];
        let release = k["release"].as_str().unwrap();
        let good = [kver.as_str(), older_kver, kabi].contains(&release);
        assert_eq!(m["compatible"], good, "{release}");
        assert_eq!(m["placed"], good, "{release}");
        assert_eq!(m["in_image"], good, "{release}: injected only where usable");
        assert_eq!(k["at_risk"].as_array().unwrap().is_empty(), good, "{release}");
        assert_eq!(k["image_unchanged"], true, "{release}");
    }
    // verify: nothing drifted yet.
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("verify"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // kernel-install add of a further compatible kernel links it; a breaking one is
    // refused with driver and kernel named, unless policy=warn.
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-install/45-bootkmod.install");
    let kernel_install = |release: &str| {
        run(Command::new(&plugin)
            .args(["add", release, "/boot/efi/x", &format!("/boot/vmlinuz-{release}")])
            .env("BOOTKMOD_ROOT", root.path())
            .env("BOOTKMOD", common::bootkmod_bin()))
    };
    root.add_kernel(&newer, later, &newer_symvers);
    let out = kernel_install(later);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = root.at(format!("/lib/modules/{later}/weak-updates/bkram/bkram.ko"));
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&target));
    root.add_kernel(&newer, later_kbreak, &break_symbol(&newer_symvers, BROKEN_SYMBOL));
    let out = kernel_install(later_kbreak);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bkram") && err.contains(later_kbreak) && err.contains(BROKEN_SYMBOL),
        "{err}"
    );
    std::fs::create_dir_all(root.at("/etc/bootkmod")).unwrap();
    std::fs::write(root.at("/etc/bootkmod/bootkmod.conf"), "policy=warn\n").unwrap();
    let out = kernel_install(later_kbreak);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));

    // verify notices a tampered module.
    let mut bytes = std::fs::read(&placed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(root.at("/tmp-tampered"), &bytes).unwrap();
    std::fs::rename(root.at("/tmp-tampered"), &placed).unwrap();
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("verify"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("bkram.ko") && text.contains("changed"), "{text}");
    // ... and a replaced image (a foreign initramfs rebuild).
    let kabi_image = root.at(format!("/boot/initrd.img-{kabi}"));
    std::fs::write(&kabi_image, common::keep::tiny_image(kabi)).unwrap();
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("verify"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("initramfs of {kabi} was replaced")), "{text}");
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
    let k =
        json(&out)["kernels"].as_array().unwrap().iter().find(|k| k["release"] == kabi).cloned();
    let k = k.unwrap();
    assert_eq!(k["image_unchanged"], false);
    assert_eq!(k["modules"][0]["in_image"], false, "the rebuilt image lost the driver");
    assert!(k["at_risk"][0].as_str().unwrap().contains("not in the initramfs"), "{k:#}");

    // remove: links, file and index entries gone, every image byte for byte as before.
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["remove", "bkram"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!placed.exists());
    for release in [kver.as_str(), older_kver, kabi, later] {
        assert!(!root.at(format!("/lib/modules/{release}/weak-updates/bkram")).exists());
        let dep = std::fs::read_to_string(root.at(format!("/lib/modules/{release}/modules.dep")))
            .unwrap();
        assert!(!dep.contains("bkram"), "{release}: {dep}");
    }
    let mut images_after = digests(&root.at("/boot"));
    images_after.retain(|p, _| images_before.contains_key(p));
    assert_eq!(images_after, images_before);

    assert_eq!(snapshot(Path::new("/lib/modules")), host_modules, "host /lib/modules changed");
    assert_eq!(snapshot(Path::new("/boot")), host_boot, "host /boot changed");
}

/// A module of the same name built locally for a kernel (DKMS puts it in
/// `updates/dkms/`) is used where the prebuilt one is refused, and install says so.
/// The local build is simulated by bkram with the breaking kernel's CRC for the symbol,
/// which is what building against that kernel's headers would record.
#[test]
fn local_build_is_the_fallback_where_the_prebuilt_is_refused() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: _scratch }) = Setup::new() else {
        return;
    };
    let kbreak = synthetic_release(&kver, "kbreak");
    let kbreak = kbreak.as_str();
    let broken = break_symbol(&symvers, BROKEN_SYMBOL);
    root.add_kernel(&newer, &kver, &symvers);
    root.add_kernel(&newer, kbreak, &broken);
    let crc = broken.iter().find(|e| e.symbol == BROKEN_SYMBOL).unwrap().crc;
    let mut local = std::fs::read(&bkram).unwrap();
    common::check::patch_version_crc(&mut local, BROKEN_SYMBOL, crc);
    let dkms = root.at(format!("/lib/modules/{kbreak}/updates/dkms/bkram.ko"));
    std::fs::create_dir_all(dkms.parent().unwrap()).unwrap();
    std::fs::write(&dkms, &local).unwrap();

    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical"])
        .arg(&bkram));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with(kbreak) && l.contains("bkram:")).unwrap();
    assert!(
        line.contains("using the locally built")
            && line.contains("updates/dkms/bkram.ko")
            && line.contains(BROKEN_SYMBOL),
        "{line}"
    );
    assert!(!root.at(format!("/lib/modules/{kbreak}/weak-updates")).exists());
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
    let status = json(&out);
    assert_eq!(out.status.code(), Some(0), "{status:#}");
    let k = status["kernels"].as_array().unwrap().iter().find(|k| k["release"] == kbreak).unwrap();
    assert_eq!(k["modules"][0]["placement"], "local-fallback");
    assert_eq!(k["modules"][0]["in_image"], true);
}
