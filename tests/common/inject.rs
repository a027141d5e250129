//! Helpers for the `inject` tests: a bootable busybox image whose `/init` loads drivers
//! through kmod's real `modprobe` by the modalias of every device (so only correct
//! `.bin` indexes work), packed and compressed by the real tools; and a tiny cached
//! `dracut --no-hostonly` image.

use super::qemu::{InitramfsDir, ROOT_FAIL, ROOT_OK};
use super::{missing, run, tool};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Printed by `/init` when kmod's `modprobe` cannot run at all (missing libraries).
pub const MODPROBE_BROKEN: &str = "BOOTKMOD-MODPROBE-BROKEN";

/// `/init`: mount the API filesystems, `modprobe ext4`, then a few rounds of `modprobe`
/// for the modalias of every device on every bus (a controller's disks appear on the
/// SCSI bus only after its driver loaded), wait for `device`, mount it, report.
pub fn modalias_init(device: &str) -> String {
    format!(
        r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
/sbin/modprobe --version >/dev/null 2>&1 || echo {MODPROBE_BROKEN}
/sbin/modprobe ext4 || echo "BOOTKMOD-MODPROBE-FAIL ext4"
n=0
while [ $n -lt 8 ] && [ ! -b {device} ]; do
  for a in /sys/bus/*/devices/*/modalias; do
    [ -r "$a" ] && /sbin/modprobe -q "$(cat "$a")" 2>/dev/null
  done
  sleep 0.5
  n=$((n+1))
done
mkdir -p /newroot
if mount -t ext4 -o ro {device} /newroot && [ -e /newroot/bootkmod-root ]; then echo {ROOT_OK}; else echo {ROOT_FAIL}; fi
poweroff -f
"#
    )
}

/// Copy kmod (as `/sbin/modprobe`), its shared libraries and the dynamic loader into
/// the image tree, at the paths `ldd` names.
pub fn add_kmod(dir: &Path) -> Option<()> {
    add_binary(dir, &tool("kmod")?, "/sbin/kmod")?;
    std::os::unix::fs::symlink("kmod", dir.join("sbin/modprobe")).unwrap();
    Some(())
}

/// Copy `binary` to `at` in the tree `dir`, with the shared libraries and the dynamic
/// loader `ldd` names, at their own paths (the real bytes under each name).
pub fn add_binary(dir: &Path, binary: &Path, at: &str) -> Option<()> {
    let ldd = tool("ldd")?;
    let dst = dir.join(at.trim_start_matches('/'));
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    fs::copy(binary, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    let out = run(Command::new(ldd).arg(binary));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
        let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) else { continue };
        let dst = dir.join(path.trim_start_matches('/'));
        if dst.exists() {
            continue;
        }
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(path, &dst).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
    Some(())
}

/// A busybox + kmod initramfs for `release` holding `modules` (and their dependency
/// closure, from the installed kernel) with indexes written by kmod's real `depmod`,
/// and `/init` from [`modalias_init`]. Returns the packed, uncompressed cpio.
pub fn base_cpio(release: &str, modules: &[&str], device: &str, out: &Path) -> Option<()> {
    let dir = modprobe_tree(release, modules)?;
    dir.init(&modalias_init(device));
    dir.pack(out)
}

/// The tree of [`base_cpio`] without its `/init`: busybox, kmod as `/sbin/modprobe`,
/// `modules` with their dependency closure and kmod's own indexes.
pub fn modprobe_tree(release: &str, modules: &[&str]) -> Option<InitramfsDir> {
    let dir = InitramfsDir::busybox()?;
    let paths = dir.modules_from_host(release, modules)?;
    assert!(!paths.is_empty());
    let src = Path::new("/lib/modules").join(release);
    let dst = dir.path().join("lib/modules").join(release);
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let depmod = tool("depmod")?;
    let st = run(Command::new(depmod).arg("-b").arg(dir.path()).arg(release));
    assert!(st.status.success(), "depmod: {}", String::from_utf8_lossy(&st.stderr));
    add_kmod(dir.path())?;
    Some(dir)
}

/// Compress a file with the real tool, as distributions make images: gzip, xz with the
/// CRC32 check (the kernel's decoder knows no other), zstd.
pub fn compress(input: &Path, kind: &str, out: &Path) -> Option<()> {
    let (name, args): (&str, &[&str]) = match kind {
        "gzip" => ("gzip", &["-c", "-6"]),
        "xz" => ("xz", &["-c", "--check=crc32", "-3"]),
        "zstd" => ("zstd", &["-c", "-q", "-3"]),
        "none" => {
            fs::copy(input, out).unwrap();
            return Some(());
        }
        other => panic!("unknown compression {other}"),
    };
    let t = tool(name)?;
    let f = fs::File::create(out).unwrap();
    let st = Command::new(t).args(args).arg(input).stdout(f).status().unwrap();
    assert!(st.success(), "{name} failed");
    Some(())
}

/// A compressed base image in a fresh temp dir: (dir, image path).
pub fn base_image(
    release: &str,
    modules: &[&str],
    device: &str,
    kind: &str,
) -> Option<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("base.cpio");
    base_cpio(release, modules, device, &raw)?;
    let image = tmp.path().join(format!("initrd-{kind}.img"));
    compress(&raw, kind, &image)?;
    Some((tmp, image))
}

/// A `dracut --no-hostonly` image of `release` without `omit` drivers, built once per
/// (release, dracut version) and cached: a real build takes about a minute.
pub fn dracut_image(release: &str, omit: &[&str]) -> Option<PathBuf> {
    let dracut = tool("dracut")?;
    let version = run(Command::new(&dracut).arg("--version"));
    let version = String::from_utf8_lossy(&version.stdout).trim().replace([' ', '/'], "_");
    let dir = super::machine::fixture_cache("inject");
    let image = dir.join(format!("dracut-{release}-{version}-no-{}.img", omit.join("-")));
    if image.is_file() {
        return Some(image);
    }
    let tmp = image.with_extension(format!("tmp{}", std::process::id()));
    let out = run(Command::new(&dracut)
        .args(["--no-hostonly", "--force", "--quiet", "--no-early-microcode"])
        .arg("--omit-drivers")
        .arg(omit.join(" "))
        .arg(&tmp)
        .arg(release));
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        missing(&format!("a working dracut ({})", String::from_utf8_lossy(&out.stderr)))?;
    }
    fs::rename(&tmp, &image).unwrap();
    Some(image)
}
