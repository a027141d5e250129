//! Round trip: a tree written by `bootkmod initramfs create` in each compression is read
//! back without warnings by the real decompressor and GNU cpio (which must extract the
//! same tree), and `extract -> create -> extract` is identical and reproducible.

mod common;

use common::initramfs::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// Every kind of entry: modes, empty and >8 MiB files (two lz4 chunks), symlinks
/// (relative, absolute, dangling), hard links, a fifo, a device node when root.
fn sample_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("usr/lib/modules/6.1.0-test/kernel")).unwrap();
    std::fs::create_dir_all(dir.join("private")).unwrap();
    std::fs::create_dir_all(dir.join("ro")).unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    std::fs::write(dir.join("usr/lib/modules/6.1.0-test/kernel/a.ko"), b"\x7fELF fake module")
        .unwrap();
    let big: Vec<u8> =
        (0..9_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::write(dir.join("ro/file"), "in a read-only dir").unwrap();
    std::fs::write(dir.join("private/secret"), "0600").unwrap();
    std::fs::set_permissions(dir.join("private/secret"), std::fs::Permissions::from_mode(0o600))
        .unwrap();
    std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(dir.join("tool"), dir.join("tool-link")).unwrap();
    std::fs::hard_link(dir.join("tool"), dir.join("usr/tool-link2")).unwrap();
    symlink("usr/lib", dir.join("lib")).unwrap();
    symlink("/usr/lib/modules", dir.join("abs-link")).unwrap();
    symlink("nowhere", dir.join("dangling")).unwrap();
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644))
        .unwrap();
    if nix::unistd::geteuid().is_root() {
        let dev = nix::sys::stat::makedev(1, 3);
        nix::sys::stat::mknod(
            &dir.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            dev,
        )
        .unwrap();
    }
    std::fs::set_permissions(dir.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
}

fn bootkmod_ok(args: &[&std::ffi::OsStr]) {
    let out = common::run(common::bootkmod().args(args));
    assert!(out.status.success(), "bootkmod {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn create(dir: &Path, image: &Path, compress: &str) {
    bootkmod_ok(&[
        "initramfs".as_ref(),
        "create".as_ref(),
        "--mtime".as_ref(),
        "1700000000".as_ref(),
        "--compress".as_ref(),
        compress.as_ref(),
        dir.as_os_str(),
        image.as_os_str(),
    ]);
}

fn extract(image: &Path, dir: &Path) {
    bootkmod_ok(&[
        "initramfs".as_ref(),
        "extract".as_ref(),
        "--devices".as_ref(),
        image.as_os_str(),
        dir.as_os_str(),
    ]);
}

/// The real tool's integrity test for a compression, printing nothing when fine.
fn integrity_check(compress: &str) -> Option<Vec<String>> {
    let argv: &[&str] = match compress {
        "gzip" => &["gzip", "-t"],
        "xz" => &["xz", "-t"],
        "zstd" => &["zstd", "-tq"],
        "bzip2" => &["bzip2", "-t"],
        "lzma" => &["xz", "--format=lzma", "-t"],
        "lz4" => &["lz4", "-tq"],
        _ => return Some(Vec::new()),
    };
    common::tool(argv[0])?;
    Some(argv.iter().map(|s| s.to_string()).collect())
}

#[test]
fn written_images_read_back_by_real_tools_and_round_trip() {
    for t in ["cpio", "gzip", "xz", "zstd", "bzip2", "lz4"] {
        if common::tool(t).is_none() {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    sample_tree(&source);
    let expected = snapshot(&source);
    for compress in ["none", "gzip", "xz", "zstd", "bzip2", "lzma", "lz4"] {
        let image = work.path().join(format!("{compress}.img"));
        create(&source, &image, compress);
        let bytes = std::fs::read(&image).unwrap();
        // The decompressor: integrity check quiet, output a cpio GNU cpio reads cleanly.
        let check = integrity_check(compress).unwrap();
        if !check.is_empty() {
            let (_, stderr) = pipe(&check, &bytes);
            assert!(stderr.is_empty(), "{check:?} warned on {compress}: {stderr}");
        }
        let (cpio, stderr) =
            pipe(&decompressor(if compress == "none" { "cat" } else { compress }).unwrap(), &bytes);
        assert!(stderr.is_empty(), "decompressing {compress}: {stderr}");
        let gnu_dir = work.path().join(format!("gnu-{compress}"));
        std::fs::create_dir_all(&gnu_dir).unwrap();
        let out = common::run(
            Command::new("cpio")
                .args(["-idm", "--quiet", "--no-absolute-filenames"])
                .current_dir(&gnu_dir)
                .stdin(std::process::Stdio::from(
                    std::fs::File::open({
                        let p = work.path().join("cpio.tmp");
                        std::fs::write(&p, &cpio).unwrap();
                        p
                    })
                    .unwrap(),
                )),
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "GNU cpio on {compress}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            snapshot(&gnu_dir),
            expected,
            "GNU cpio extracted something else from the {compress} image"
        );

        // extract -> create -> extract: identical tree, identical bytes.
        let first = work.path().join(format!("x1-{compress}"));
        extract(&image, &first);
        assert_eq!(snapshot(&first), expected, "bootkmod extract of {compress}");
        let again = work.path().join(format!("again-{compress}.img"));
        create(&first, &again, compress);
        assert_eq!(
            std::fs::read(&again).unwrap(),
            bytes,
            "{compress} image not reproducible through a round trip"
        );
        let second = work.path().join(format!("x2-{compress}"));
        extract(&again, &second);
        assert_eq!(snapshot(&second), expected);
    }
    // Leave the temp dir removable.
    let _ = Command::new("chmod").args(["-R", "u+rwx"]).arg(work.path()).status();
}

#[test]
fn a_real_image_round_trips() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(image) = dracut_image(&kver, "zstd") else { return };
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("x1");
    bootkmod_ok(&[
        "initramfs".as_ref(),
        "extract".as_ref(),
        image.as_os_str(),
        first.as_os_str(),
        "usr/lib/modules".as_ref(),
        "etc".as_ref(),
        "lib".as_ref(),
    ]);
    let tree = snapshot(&first);
    assert!(tree.keys().any(|k| k.ends_with(".ko")), "no modules extracted");
    assert!(
        tree.contains_key("lib") && tree.contains_key("etc/passwd"),
        "{:?}",
        tree.keys().take(10).collect::<Vec<_>>()
    );
    assert!(!tree.keys().any(|k| k.starts_with("usr/bin")), "extracted more than asked");
    let again = work.path().join("again.img");
    create(&first, &again, "zstd");
    let second = work.path().join("x2");
    extract(&again, &second);
    assert_eq!(snapshot(&second), tree);
    // And the file contents equal what `cat` prints from the original image.
    let cat = |path: &str| {
        common::run(common::bootkmod().args(["initramfs", "cat"]).arg(&image).arg(path)).stdout
    };
    assert_eq!(cat("etc/passwd"), std::fs::read(first.join("etc/passwd")).unwrap());
    // etc/os-release -> initrd-release -> ../usr/lib/initrd-release, followed inside the image.
    assert!(String::from_utf8_lossy(&cat("etc/os-release")).contains("dracut"));
}
