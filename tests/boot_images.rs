//! Which images boot each kernel (`model::boot_images`), on fixture roots of the three
//! layouts hosts boot through, judged against systemd's own readers of them:
//!
//! - a RHEL-style Boot Loader Specification layout (`/boot/loader/entries/*.conf`,
//!   an entry with two initrds, an entry for another kernel, a rescue entry),
//!   against `bootctl --root R --esp-path /boot list --json`;
//! - systemd-boot's kernel-install layout on an ESP (`/efi/<entry-token>/K/initrd`,
//!   the token from `/etc/kernel/entry-token`), against `bootctl list` and
//!   `kernel-install inspect` run in a chroot of the fixture;
//! - Unified Kernel Images in `/boot/efi/EFI/Linux` built here from Debian's
//!   systemd-boot stub with `objcopy --add-section`, against `bootctl list` (which
//!   files are type #2 entries) and `objcopy --only-section=.uname` (which kernel each
//!   one boots).
//!
//! `status --json` and `install --dry-run --json` must report exactly those images.
//! bootctl wants its ESP to be a mount point: the tests bind-mount it onto itself in a
//! private mount namespace, so they need root (skipped otherwise, failing under
//! `BOOTKMOD_REQUIRE_ORACLES`).

mod common;

use common::keep::{json_of, tiny_image, Setup, TargetRoot};
use common::machine::synthetic_release;
use common::{bootkmod, missing, need_root, run, tool};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn write(root: &TargetRoot, path: &str, bytes: &[u8]) {
    let p = root.at(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// `bootctl list` of `root` with `esp` (target-absolute) as its ESP: one JSON object
/// per entry.
fn bootctl_list(root: &Path, esp: &str) -> Option<Vec<Value>> {
    let bootctl = tool("bootctl")?;
    let unshare = tool("unshare")?;
    let dir = root.join(esp.trim_start_matches('/'));
    let script = format!(
        "mount --bind '{d}' '{d}' && exec '{b}' --root='{r}' --esp-path='{esp}' --json=short --no-pager list",
        d = dir.display(),
        b = bootctl.display(),
        r = root.display()
    );
    let out = run(Command::new(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        // A fixture's ESP is a directory, not a vfat partition.
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .env("SYSTEMD_RELAX_XBOOTLDR_CHECKS", "1"));
    assert!(out.status.success(), "bootctl list: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map(|v| v.unwrap())
            .collect(),
    )
}

/// The initrds bootctl says an entry for `release` loads, target-absolute (relative to
/// `esp`), in order; entries for other versions left out.
fn bootctl_initrds(entries: &[Value], esp: &str, release: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["version"] == release)
        .flat_map(|e| e["initrd"].as_array().cloned().unwrap_or_default())
        .map(|i| format!("{esp}{}", i.as_str().unwrap()))
        .collect()
}

/// One boot image as reported: (path, kind, receives_drivers).
type Image = (String, String, bool);

/// `bootkmod --root R status --json`: per kernel, its boot images.
fn status_images(root: &Path) -> Vec<(String, Vec<Image>)> {
    let out = run(bootkmod().arg("--root").arg(root).args(["status", "--json"]));
    let report = json_of(&out);
    report["kernels"]
        .as_array()
        .unwrap_or_else(|| panic!("no kernels in {report:#}"))
        .iter()
        .map(|k| (k["release"].as_str().unwrap().to_string(), images_of(&k["boot_images"])))
        .collect()
}

fn images_of(list: &Value) -> Vec<Image> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_string(),
                i["kind"].as_str().unwrap().to_string(),
                i["receives_drivers"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// `install --dry-run --root-critical --json bkram`: the report's boot images and the
/// image each kernel's drivers go into.
fn install_dry(root: &Path, bkram: &Path) -> Value {
    let out = run(bootkmod()
        .arg("--root")
        .arg(root)
        .args(["--json", "install", "--dry-run", "--root-critical"])
        .arg(bkram));
    json_of(&out)
}

/// Two kernels (the installed one, and a copy under another release) without the
/// Debian initramfs names `add_kernel` writes: the layouts below name their own.
fn two_kernels() -> Option<(Setup, String)> {
    let setup = Setup::new()?;
    let other = synthetic_release(&setup.kver, "bls");
    setup.root.add_kernel(&setup.newer, &setup.kver, &setup.symvers);
    setup.root.add_kernel(&setup.newer, &other, &setup.symvers);
    for k in [&setup.kver, &other] {
        std::fs::remove_file(setup.root.at(format!("/boot/initrd.img-{k}"))).unwrap();
    }
    Some((setup, other))
}

#[test]
fn rhel_bls_entries_every_initrd_of_every_entry_for_the_kernel() {
    let Some(()) = need_root("bootctl on a bind-mounted fixture ESP") else { return };
    let Some((setup, other)) = two_kernels() else { return };
    let (root, k) = (&setup.root, setup.kver.as_str());
    write(
        root,
        "/etc/os-release",
        b"NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\n",
    );
    let mid = "4c1f0e5a2b3d4e6f8a9b0c1d2e3f4a5b";
    write(
        root,
        &format!("/boot/loader/entries/{mid}-{k}.conf"),
        format!("title RHEL ({k})\nversion {k}\nlinux /vmlinuz-{k}\ninitrd /initramfs-{k}.img $tuned_initrd\n")
            .as_bytes(),
    );
    write(
        root,
        &format!("/boot/loader/entries/{mid}-{k}-debug.conf"),
        format!("title RHEL ({k}) with microcode\nversion {k}\nlinux /vmlinuz-{k}\ninitrd /early_ucode.img\ninitrd /initramfs-{k}-custom.img\n")
            .as_bytes(),
    );
    write(
        root,
        &format!("/boot/loader/entries/{mid}-{other}.conf"),
        format!("title RHEL ({other})\nversion {other}\nlinux /vmlinuz-{other}\ninitrd /initramfs-{other}.img\n")
            .as_bytes(),
    );
    write(
        root,
        &format!("/boot/loader/entries/{mid}-0-rescue.conf"),
        format!("title RHEL rescue\nversion 0-rescue-{mid}\nlinux /vmlinuz-0-rescue-{mid}\ninitrd /initramfs-0-rescue-{mid}.img\n")
            .as_bytes(),
    );
    for f in [
        format!("/boot/initramfs-{k}.img"),
        format!("/boot/initramfs-{k}-custom.img"),
        format!("/boot/initramfs-{other}.img"),
        format!("/boot/initramfs-0-rescue-{mid}.img"),
    ] {
        write(root, &f, &tiny_image(k));
    }
    write(root, "/boot/early_ucode.img", b"070701 microcode, not bootkmod's business");
    for v in [k, other.as_str()] {
        write(root, &format!("/boot/vmlinuz-{v}"), b"kernel");
    }

    let Some(entries) = bootctl_list(root.path(), "/boot") else { return };
    let status = status_images(root.path());
    assert_eq!(status.len(), 2, "{status:?}");
    for (release, images) in &status {
        // Every image bootkmod found is an initrd bootctl says an entry for the kernel
        // loads, and nothing bootctl names is missed. grub's
        // `$tuned_initrd` is no file: bootkmod leaves it out.
        // bootctl keeps an initrd line whole; grub (and bootkmod) split it into paths.
        // bootctl lists entries in its menu's order, bootkmod in file name order: the
        // same images either way (the order inside an entry is checked below).
        let mut expected: Vec<String> = bootctl_initrds(&entries, "/boot", release)
            .iter()
            .flat_map(|i| i.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|i| !i.contains('$'))
            .collect();
        expected.sort();
        let mut found: Vec<String> = images.iter().map(|i| i.0.clone()).collect();
        found.sort();
        assert_eq!(found, expected, "{release}: bootkmod {images:?}, bootctl {entries:#?}");
        assert!(images.iter().all(|i| i.1 == "initramfs"));
    }
    let mine = &status.iter().find(|(r, _)| r == k).unwrap().1;
    assert_eq!(mine.len(), 3, "{mine:?}");
    // Of the entry with two initrds, only the last receives drivers, and the order is
    // the entry's (bootctl's): microcode first.
    let ucode = bootctl_initrds(&entries, "/boot", k);
    let pos = |p: &str| ucode.iter().position(|i| i == p).unwrap();
    assert!(pos("/boot/early_ucode.img") < pos(&format!("/boot/initramfs-{k}-custom.img")));
    let mut receives: Vec<_> = mine.iter().filter(|i| i.2).map(|i| i.0.clone()).collect();
    receives.sort();
    assert_eq!(
        receives,
        [format!("/boot/initramfs-{k}-custom.img"), format!("/boot/initramfs-{k}.img")]
    );
    let order: Vec<&str> = mine.iter().map(|i| i.0.as_str()).collect();
    assert!(
        order.iter().position(|p| *p == "/boot/early_ucode.img")
            < order.iter().position(|p| *p == format!("/boot/initramfs-{k}-custom.img"))
    );

    let report = install_dry(root.path(), &setup.bkram);
    assert_eq!(report["dry_run"], true, "{report:#}");
    for (release, images) in &status {
        assert_eq!(&images_of(&report["boot_images"][release]), images, "{report:#}");
        let kernel = common::keep::kernel_of(&report, release);
        // The first receiving image found (entries in file name order) holds the
        // drivers; the kernel's other receiving image is filled too (test below).
        let first = images.iter().find(|i| i.2).unwrap();
        assert_eq!(kernel["record"]["image"]["path"], first.0, "{kernel:#}");
    }
}

/// `kernel-install inspect` of the fixture: its `KERNEL_INSTALL_*` lines. kernel-install
/// (a shell script in systemd 252) reads `/etc` and `/efi` of the system it runs on, so
/// it runs in a chroot assembled from the host's `/usr` and the fixture's `/etc`,
/// `/efi`, `/boot`.
fn kernel_install_inspect(root: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let ki = tool("kernel-install")?;
    let unshare = tool("unshare")?;
    let chroot = tool("chroot")?;
    let c = tempfile::tempdir().unwrap();
    for d in ["usr", "etc", "efi", "boot", "dev", "tmp"] {
        std::fs::create_dir_all(c.path().join(d)).unwrap();
    }
    for (link, to) in
        [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")]
    {
        std::os::unix::fs::symlink(to, c.path().join(link)).unwrap();
    }
    let mut script = String::from("set -e\n");
    script += &format!("mount --bind /usr '{}/usr'\n", c.path().display());
    script += &format!("mount --rbind /dev '{}/dev'\n", c.path().display());
    for d in ["etc", "efi", "boot"] {
        script += &format!("mount --bind '{}/{d}' '{}/{d}'\n", root.display(), c.path().display());
    }
    script += &format!(
        "exec '{}' '{}' '{}' inspect\n",
        chroot.display(),
        c.path().display(),
        ki.display()
    );
    let out = run(Command::new(unshare).args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert!(
        out.status.success(),
        "kernel-install inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn systemd_boot_kernel_install_layout_on_the_esp() {
    let Some(()) = need_root("bootctl and kernel-install on a bind-mounted fixture") else {
        return;
    };
    let Some((setup, other)) = two_kernels() else { return };
    let (root, k) = (&setup.root, setup.kver.as_str());
    let token = "bookworm-lab";
    write(root, "/etc/os-release", b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n");
    write(root, "/etc/machine-id", b"0f1e2d3c4b5a69788796a5b4c3d2e1f0\n");
    write(root, "/etc/kernel/entry-token", format!("{token}\n").as_bytes());
    // The entry kernel-install's 90-loaderentry.install writes, for the installed
    // kernel; the other kernel has its directory (layout bls) and no entry yet.
    write(
        root,
        &format!("/efi/loader/entries/{token}-{k}.conf"),
        format!("title Debian GNU/Linux 12 (bookworm)\nversion {k}\nmachine-id 0f1e2d3c4b5a69788796a5b4c3d2e1f0\nlinux /{token}/{k}/linux\ninitrd /{token}/{k}/initrd\n")
            .as_bytes(),
    );
    for v in [k, other.as_str()] {
        write(root, &format!("/efi/{token}/{v}/linux"), b"kernel");
        write(root, &format!("/efi/{token}/{v}/initrd"), &tiny_image(v));
    }
    // Debian's own initramfs of the installed kernel, as update-initramfs keeps it.
    write(root, &format!("/boot/initrd.img-{k}"), &tiny_image(k));

    let Some(entries) = bootctl_list(root.path(), "/efi") else { return };
    let Some(inspect) = kernel_install_inspect(root.path()) else { return };
    let boot_root = &inspect["KERNEL_INSTALL_BOOT_ROOT"];
    assert_eq!(inspect["KERNEL_INSTALL_ENTRY_TOKEN"], token, "{inspect:?}");
    assert_eq!(inspect["KERNEL_INSTALL_LAYOUT"], "bls", "{inspect:?}");

    let status = status_images(root.path());
    for (release, images) in &status {
        let found: Vec<String> = images.iter().map(|i| i.0.clone()).collect();
        // What bootctl says the entries load, then kernel-install's ENTRY_DIR_ABS/initrd
        // (when no entry named it), then Debian's name when it exists.
        let mut expected = bootctl_initrds(&entries, "/efi", release);
        let layout = format!("{boot_root}/{token}/{release}/initrd");
        if !expected.contains(&layout) {
            expected.push(layout);
        }
        if root.at(format!("/boot/initrd.img-{release}")).is_file() {
            expected.push(format!("/boot/initrd.img-{release}"));
        }
        assert_eq!(found, expected, "{release}: {images:?}; bootctl {entries:#?}; {inspect:?}");
        assert!(images.iter().all(|i| i.2), "{images:?}");
    }
    assert_eq!(status.iter().find(|(r, _)| r == k).unwrap().1.len(), 2);

    let report = install_dry(root.path(), &setup.bkram);
    for (release, images) in &status {
        assert_eq!(&images_of(&report["boot_images"][release]), images, "{report:#}");
        assert_eq!(
            common::keep::kernel_of(&report, release)["record"]["image"]["path"],
            format!("{boot_root}/{token}/{release}/initrd")
        );
    }
}

/// A UKI-shaped PE: Debian's systemd-boot stub with `.osrel`, `.cmdline`, `.uname`
/// (when given), `.linux` and `.initrd` added by objcopy, as `ukify` lays them out.
fn uki(dir: &Path, name: &str, uname: Option<&str>, initrd: &[u8]) -> Option<PathBuf> {
    let objcopy = tool("objcopy")?;
    if !Path::new(STUB).is_file() {
        missing(&format!("{STUB} (Debian package systemd-boot-efi)"))?;
    }
    let mut sections = vec![
        (".osrel", 0x20000u64, b"ID=debian\nPRETTY_NAME=\"Debian UKI\"\nVERSION_ID=12\n".to_vec()),
        (".cmdline", 0x30000, b"console=ttyS0 root=/dev/vda".to_vec()),
        (".linux", 0x2000000, b"MZ not really a kernel".to_vec()),
        (".initrd", 0x3000000, initrd.to_vec()),
    ];
    if let Some(u) = uname {
        sections.push((".uname", 0x40000, u.as_bytes().to_vec()));
    }
    let mut cmd = Command::new(objcopy);
    for (section, vma, bytes) in &sections {
        let f = dir.join(format!("{name}{section}"));
        std::fs::write(&f, bytes).unwrap();
        cmd.arg("--add-section").arg(format!("{section}={}", f.display()));
        cmd.arg("--change-section-vma").arg(format!("{section}={vma:#x}"));
    }
    let out_path = dir.join(name);
    let out = run(cmd.arg(STUB).arg(&out_path));
    assert!(out.status.success(), "objcopy: {}", String::from_utf8_lossy(&out.stderr));
    Some(out_path)
}

/// `.uname` of a PE as objcopy reads it (empty when there is none).
fn objcopy_uname(pe: &Path) -> Option<String> {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let out = run(Command::new(tool("objcopy")?)
        .args(["-O", "binary", "--only-section=.uname"])
        .arg(pe)
        .arg(out_file.path()));
    assert!(out.status.success(), "objcopy: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(std::fs::read(out_file.path()).unwrap()).unwrap())
}

#[test]
fn unified_kernel_images_by_their_uname() {
    let Some(()) = need_root("bootctl on a bind-mounted fixture ESP") else { return };
    let Some((setup, other)) = two_kernels() else { return };
    let (root, k) = (&setup.root, setup.kver.as_str());
    write(root, "/etc/os-release", b"ID=debian\n");
    let work = tempfile::tempdir().unwrap();
    let dir = "/boot/efi/EFI/Linux";
    std::fs::create_dir_all(root.at(dir)).unwrap();
    // One UKI per kernel by .uname (named otherwise), one older UKI without .uname
    // named for the installed kernel, and a UKI of a kernel not installed here.
    let made = [
        ("debian-a.efi", Some(k)),
        ("debian-b.efi", Some(other.as_str())),
        (&*format!("debian-{k}.efi"), None),
        ("debian-c.efi", Some("5.10.0-1-amd64")),
    ]
    .map(|(name, uname)| (name.to_string(), uname.map(str::to_string)));
    for (name, uname) in &made {
        let Some(pe) = uki(work.path(), name, uname.as_deref(), &tiny_image(k)) else { return };
        std::fs::copy(pe, root.at(format!("{dir}/{name}"))).unwrap();
    }
    // Debian's own initramfs of the installed kernel beside them.
    write(root, &format!("/boot/initrd.img-{k}"), &tiny_image(k));

    let Some(entries) = bootctl_list(root.path(), "/boot/efi") else { return };
    // bootctl lists each UKI as a type #2 entry; which kernel it boots is its .uname
    // (objcopy's reading), else (no .uname) its name.
    let mut listed: Vec<String> = entries
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|i| i.ends_with(".efi")))
        .map(|e| format!("/boot/efi/{}", e["linux"].as_str().unwrap()))
        .collect();
    listed.sort();
    assert_eq!(listed.len(), made.len(), "{entries:#?}");
    let status = status_images(root.path());
    for (release, images) in &status {
        let mut expected = Vec::new();
        if root.at(format!("/boot/initrd.img-{release}")).is_file() {
            expected.push((format!("/boot/initrd.img-{release}"), "initramfs".to_string(), true));
        }
        for pe in &listed {
            let Some(uname) = objcopy_uname(&root.at(pe)) else { return };
            let named = pe.ends_with(&format!("-{release}.efi"));
            if uname == *release || (uname.is_empty() && named) {
                expected.push((pe.clone(), "uki".to_string(), true));
            }
        }
        assert_eq!(images, &expected, "{release}; bootctl {entries:#?}");
    }
    let mine = &status.iter().find(|(r, _)| r == k).unwrap().1;
    assert_eq!(mine.len(), 3, "{mine:?}");
    let report = install_dry(root.path(), &setup.bkram);
    for (release, images) in &status {
        assert_eq!(&images_of(&report["boot_images"][release]), images, "{report:#}");
    }
}

/// Install places the drivers into every image that boots a kernel: the initrd of each
/// BLS entry for it (of an entry with several, only the last: later files win, and the
/// earlier one, microcode here, is left byte for byte), judged by dracut's `skipcpio` and GNU `cpio -t`;
/// remove puts every one back as it was. No root needed (no bootctl here: the entries'
/// reading is judged above).
#[test]
fn install_fills_every_image_that_boots_the_kernel_and_remove_restores_them() {
    let Some((setup, _other)) = two_kernels() else { return };
    let (root, k) = (&setup.root, setup.kver.as_str());
    write(root, "/etc/os-release", b"ID=\"rhel\"\nID_LIKE=\"fedora\"\n");
    write(
        root,
        &format!("/boot/loader/entries/m-{k}.conf"),
        format!("version {k}\nlinux /vmlinuz-{k}\ninitrd /initramfs-{k}.img\n").as_bytes(),
    );
    write(
        root,
        &format!("/boot/loader/entries/m-{k}-ucode.conf"),
        format!("version {k}\nlinux /vmlinuz-{k}\ninitrd /early_ucode.img\ninitrd /initramfs-{k}-custom.img\n")
            .as_bytes(),
    );
    let receiving = [format!("/boot/initramfs-{k}.img"), format!("/boot/initramfs-{k}-custom.img")];
    for f in &receiving {
        write(root, f, &tiny_image(k));
    }
    write(root, "/boot/early_ucode.img", &tiny_image("microcode"));
    let before: Vec<Vec<u8>> = receiving
        .iter()
        .chain([&"/boot/early_ucode.img".to_string()])
        .map(|f| std::fs::read(root.at(f)).unwrap())
        .collect();

    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["--json", "install", "--root-critical"])
        .arg(&setup.bkram));
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    // The fixture images are one uncompressed archive; inject appends its own after
    // it: dracut's skipcpio passes the first, GNU cpio lists what follows.
    // The fixture image has the kernel's tree under usr/lib (merged /usr).
    let want = format!("usr/lib/modules/{k}/extra/bkram/bkram.ko");
    for f in &receiving {
        let Some(after) = common::initramfs::skipcpio(&root.at(f)) else { return };
        let names = common::initramfs::cpio_names(&after);
        assert!(names.contains(&want), "{f}: cpio -t after skipcpio lacks {want}: {names:?}");
        assert!(names.contains("etc/modules-load.d/bootkmod.conf"), "{f}: {names:?}");
    }
    assert_eq!(
        std::fs::read(root.at("/boot/early_ucode.img")).unwrap(),
        before[2],
        "an earlier initrd of an entry is not written"
    );
    let kernel = common::keep::kernel_of(&report, k);
    // The ledger keeps both: one as the kernel's image, the other in more_images.
    let more = kernel["record"]["more_images"].as_array().unwrap();
    assert_eq!(more.len(), 1, "{kernel:#}");
    let mut recorded: Vec<&str> = [&kernel["record"]["image"], &more[0]]
        .iter()
        .map(|i| {
            assert_eq!(i["updated"], true, "{i:#}");
            i["path"].as_str().unwrap()
        })
        .collect();
    recorded.sort();
    let mut expected: Vec<&str> = receiving.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(recorded, expected, "{kernel:#}");

    // Installing again changes nothing.
    let digests = |fs: &[String]| -> Vec<Vec<u8>> {
        fs.iter().map(|f| std::fs::read(root.at(f)).unwrap()).collect()
    };
    let after_install = digests(&receiving);
    let again = run(bootkmod().arg("--root").arg(root.path()).args(["install", "--refresh"]));
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(digests(&receiving), after_install, "a refresh rewrote an image");

    // status looks into every image the kernel boots with: fine now, at risk once the
    // second entry's image is rebuilt without the driver (by someone else; the same
    // bytes as before install), naming it.
    let status = |want: i32| {
        let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
        assert_eq!(out.status.code(), Some(want), "{}", String::from_utf8_lossy(&out.stdout));
        common::keep::kernel_of(&json_of(&out), k)["at_risk"].clone()
    };
    assert_eq!(status(0), serde_json::json!([]));
    // The image that is not the primary one (`status`' `image`), rebuilt.
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
    let primary = common::keep::kernel_of(&json_of(&out), k)["image"].clone();
    let other = receiving.iter().find(|f| primary != f.as_str()).unwrap();
    write(root, other, &tiny_image(k));
    let risks = status(3);
    let risks = risks.as_array().unwrap();
    assert_eq!(risks.len(), 1, "{risks:?}");
    let risk = risks[0].as_str().unwrap();
    assert!(risk.contains("root-critical driver bkram") && risk.contains(other.as_str()), "{risk}");
    // A refresh puts it back: fine again.
    let again = run(bootkmod().arg("--root").arg(root.path()).args(["install", "--refresh"]));
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(status(0), serde_json::json!([]));

    let out = run(bootkmod().arg("--root").arg(root.path()).args(["remove", "bkram"]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(digests(&receiving), before[..2].to_vec(), "remove restores every image");
}

/// A kernel booted by a UKI as well as by its distribution image: install puts the
/// drivers into the UKI's `.initrd` too (read back by `bootkmod initramfs ls`), and
/// remove puts the UKI back byte for byte. A signed UKI is left as it is (install holds
/// no Secure Boot keys): recorded not updated, with the command that signs it; install
/// warns and exits 3, and status names it at risk.
#[test]
fn install_fills_a_uki_and_leaves_a_signed_one_to_status() {
    let Some((setup, _other)) = two_kernels() else { return };
    let (root, k) = (&setup.root, setup.kver.as_str());
    write(root, "/etc/os-release", b"ID=debian\n");
    let work = tempfile::tempdir().unwrap();
    let Some(unsigned) = uki(work.path(), "debian.efi", Some(k), &tiny_image(k)) else { return };
    let uki_path = "/boot/efi/EFI/Linux/debian.efi";
    write(root, uki_path, &std::fs::read(&unsigned).unwrap());
    write(root, &format!("/boot/initrd.img-{k}"), &tiny_image(k));
    let before = std::fs::read(root.at(uki_path)).unwrap();
    let bk = |args: &[&str]| {
        let out = run(bootkmod().arg("--root").arg(root.path()).args(args).arg(&setup.bkram));
        (out.status.code(), json_of(&out))
    };
    let uki_record = |report: &Value| -> Value {
        let kernel = common::keep::kernel_of(report, k);
        let more = kernel["record"]["more_images"].as_array().unwrap();
        more.iter().find(|i| i["path"] == uki_path).cloned().unwrap_or(Value::Null)
    };
    let status = || {
        let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
        (out.status.code(), common::keep::kernel_of(&json_of(&out), k)["at_risk"].clone())
    };

    let (code, report) = bk(&["--json", "install", "--root-critical"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(uki_record(&report)["updated"], true, "{report:#}");
    let ls = run(bootkmod().args(["initramfs", "ls"]).arg(root.at(uki_path)));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("bkram.ko"), "{ls:?}");
    assert_eq!(status(), (Some(0), serde_json::json!([])));
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["remove", "bkram"]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(root.at(uki_path)).unwrap(), before, "remove restores the UKI");

    // Signed: not a byte changed, the record says why, status names the UKI.
    let Some(key) = common::sign::make_key(work.path(), "db") else { return };
    let Some(()) = common::sign::sbsign(&unsigned, &root.at(uki_path), &key) else { return };
    let signed = std::fs::read(root.at(uki_path)).unwrap();
    let (code, report) = bk(&["--json", "install", "--root-critical"]);
    // Exit 3: done, with the risk told (kernel-install's --refresh refuses under
    // policy=refuse, as for any root-critical driver that would not load).
    assert_eq!(code, Some(3), "{report:#}");
    let risks = common::keep::kernel_of(&report, k)["at_risk"].to_string();
    assert!(risks.contains(uki_path) && risks.contains("bkram"), "{report:#}");
    let record = uki_record(&report);
    assert_eq!(record["updated"], false, "{report:#}");
    assert!(record["note"].as_str().unwrap().contains("--sign-key"), "{report:#}");
    assert_eq!(std::fs::read(root.at(uki_path)).unwrap(), signed, "a signed UKI is not rewritten");
    let (code, risks) = status();
    assert_eq!(code, Some(3), "{risks:#}");
    assert!(
        risks.as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains(uki_path)),
        "{risks:#}"
    );
}
