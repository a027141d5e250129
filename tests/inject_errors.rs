//! Bad input: each case gives one clear error line, its exit code, and leaves the image
//! byte for byte as it was, with no temp file or backup left behind.

mod common;

use bootkmod::samples::{self, SampleModule};
use common::inject::base_image;
use common::{bootkmod, run};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inject(extra: &[&str], image: &Path, modules: &[&Path]) -> Output {
    run(bootkmod().args(["inject", "--image"]).arg(image).args(extra).args(modules))
}

/// Files in the image's directory other than the image itself.
fn leftovers(image: &Path) -> Vec<String> {
    fs::read_dir(image.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bootkmod"))
        .collect()
}

fn assert_untouched(image: &Path, before: &[u8], out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}\nstdout: {stdout}");
    assert!(
        stderr.contains(needle) || stdout.contains(needle),
        "expected {needle:?} in the message; stderr: {stderr}\nstdout: {stdout}"
    );
    if code == 1 {
        assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    }
    assert_eq!(fs::read(image).unwrap(), before, "the image changed");
    assert_eq!(leftovers(image), Vec::<String>::new(), "files left beside the image");
}

fn image() -> Option<(String, tempfile::TempDir, PathBuf)> {
    let release = common::installed_kernel()?;
    let (tmp, image) = base_image(&release, &["ext4"], "/dev/sda", "gzip")?;
    // Keep the image alone in its own directory for the leftover check.
    let dir = tmp.path().join("boot");
    fs::create_dir(&dir).unwrap();
    let moved = dir.join("initrd.img");
    fs::rename(&image, &moved).unwrap();
    Some((release, tmp, moved))
}

#[test]
fn a_module_the_kernel_refuses_changes_nothing_and_exits_3() {
    let Some((release, tmp, image)) = image() else { return };
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let mut bad = SampleModule::new("badhba", &vermagic);
    bad.import("module_layout", 0x0bad_0bad).import("_printk", 0x1234_5678);
    let ko = tmp.path().join("badhba.ko");
    fs::write(&ko, bad.to_elf().unwrap()).unwrap();
    let before = fs::read(&image).unwrap();
    let out = inject(&[], &image, &[&ko]);
    assert_untouched(&image, &before, &out, 3, "REFUSED");
}

#[test]
fn a_corrupt_image_is_one_error_line() {
    let Some((_release, _tmp, image)) = image() else { return };
    let mut bytes = fs::read(&image).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(&image, &bytes).unwrap();
    let out = inject(&[], &image, &[Path::new("megaraid_sas")]);
    assert_untouched(&image, &bytes, &out, 1, "initrd.img");
}

#[test]
fn missing_firmware_is_an_error_unless_allowed() {
    let Some((release, tmp, image)) = image() else { return };
    // The demo HBA names firmware demo/hba-fw.bin; its library module comes along.
    let mut files = Vec::new();
    for s in samples::demo_set(&release) {
        let name = s.modinfo.get("name").unwrap().to_string();
        let p = tmp.path().join(format!("{name}.ko"));
        fs::write(&p, s.to_elf().unwrap()).unwrap();
        files.push(p);
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("lib/firmware/demo")).unwrap();
    let before = fs::read(&image).unwrap();
    // --force: the samples' CRCs are not the installed kernel's.
    let mut args = vec!["--force", "--root"];
    let root_s = root.to_string_lossy().into_owned();
    args.push(&root_s);
    let out = inject(&args, &image, &refs);
    assert_untouched(&image, &before, &out, 1, "firmware demo/hba-fw.bin");

    // Present under ROOT/lib/firmware (xz-compressed, as the kernel may read it): added.
    fs::write(root.join("lib/firmware/demo/hba-fw.bin.xz"), b"\xfd7zXZ\0firmware").unwrap();
    let out = inject(&args, &image, &refs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("lib/firmware/demo/hba-fw.bin.xz"), "{stdout}");
    let cat = run(bootkmod()
        .args(["initramfs", "cat"])
        .arg(&image)
        .arg("lib/firmware/demo/hba-fw.bin.xz"));
    assert_eq!(cat.stdout, b"\xfd7zXZ\0firmware");
}

/// A tmpfs of `size` bytes mounted at a new directory (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(parent: &Path, size: u64) -> Option<Tmpfs> {
        common::need_root("mounting a tmpfs")?;
        let dir = parent.join("mnt");
        fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        if !st.success() {
            common::skip("cannot mount a tmpfs here")?;
        }
        Some(Tmpfs(dir))
    }
    fn remount_ro(&self) {
        let st = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).status().unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_target_is_an_error_and_untouched() {
    let Some((_release, tmp, image)) = image() else { return };
    let Some(mnt) = Tmpfs::mount(tmp.path(), 64 << 20) else { return };
    let target = mnt.0.join("initrd.img");
    fs::copy(&image, &target).unwrap();
    mnt.remount_ro();
    let before = fs::read(&target).unwrap();
    let out = inject(&[], &target, &[Path::new("megaraid_sas")]);
    assert_untouched(&target, &before, &out, 1, "Read-only file system");
}

#[test]
fn no_space_left_is_an_error_and_untouched() {
    let Some((_release, tmp, image)) = image() else { return };
    let len = fs::metadata(&image).unwrap().len();
    // Room for the image and a little more, not for a second copy.
    let Some(mnt) = Tmpfs::mount(tmp.path(), len + len / 4) else { return };
    let target = mnt.0.join("initrd.img");
    fs::copy(&image, &target).unwrap();
    let before = fs::read(&target).unwrap();
    let out = inject(&[], &target, &[Path::new("megaraid_sas")]);
    assert_untouched(&target, &before, &out, 1, "No space left on device");
}
