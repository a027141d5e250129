//! The kernel is the judge: a hand-made five-segment image (raw busybox, gzip, zstd, xz,
//! raw again; zero padding between) is booted in QEMU with an `/init` that prints
//! `find /` over the serial console, and bootkmod's listing must equal what the kernel
//! built (plus the kernel's own built-in `/dev`, `/dev/console` and `/root`).

mod common;

use common::initramfs::*;
use common::qemu;
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;

const BEGIN: &str = "BOOTKMOD-FIND-BEGIN";
const END: &str = "BOOTKMOD-FIND-END";

fn tree(
    base: &Path,
    name: &str,
    files: &[(&str, &str)],
    links: &[(&str, &str)],
    dirs: &[&str],
) -> std::path::PathBuf {
    let d = base.join(name);
    for dir in dirs {
        std::fs::create_dir_all(d.join(dir)).unwrap();
    }
    for (path, content) in files {
        std::fs::create_dir_all(d.join(path).parent().unwrap()).unwrap();
        std::fs::write(d.join(path), content).unwrap();
    }
    for (path, target) in links {
        symlink(target, d.join(path)).unwrap();
    }
    d
}

#[test]
fn the_kernel_builds_what_bootkmod_lists() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(kernel) = qemu::host_kernel(&kver) else { return };
    for t in ["cpio", "gzip", "zstd", "xz"] {
        if common::tool(t).is_none() {
            return;
        }
    }
    let Some(base) = qemu::InitramfsDir::busybox() else { return };
    base.init(&format!(
        "#!/bin/sh\necho {BEGIN}\nfind /\necho {END}\necho \"A/F=$(cat /a/f)\"\npoweroff -f\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let raw0 = work.path().join("base.cpio");
    base.pack(&raw0).unwrap();

    let w = work.path();
    let s1 = tree(
        w,
        "s1",
        &[("a/f", "one")],
        &[("l", "a"), ("lib", "usr/lib"), ("ul", "usr/lib")],
        &["a", "usr/lib"],
    );
    let s2 = tree(
        w,
        "s2",
        &[
            ("l/x", "x"),
            ("ul/modules/m.ko", "ko"),
            ("lib/modules/n.ko", "ko"),
            ("missing/parent/file", "dropped"),
        ],
        &[],
        &["l", "ul/modules", "lib/modules"],
    );
    let s3 = tree(w, "s3", &[("a/f", "two"), ("c", "c")], &[], &["a"]);
    let s4 = tree(w, "s4", &[("d", "d")], &[], &[]);

    let mut image = std::fs::read(&raw0).unwrap();
    image.extend_from_slice(&[0; 8]);
    image.extend(compress_with(
        &["gzip", "-n"],
        &gnu_cpio(&s1, &["a", "a/f", "l", "usr", "usr/lib", "lib", "ul"]),
    ));
    image.extend_from_slice(&[0; 5]);
    image.extend(compress_with(
        &["zstd", "-q"],
        &gnu_cpio(
            &s2,
            &[
                "l",
                "l/x",
                "ul/modules",
                "ul/modules/m.ko",
                "lib/modules/n.ko",
                "missing/parent/file",
            ],
        ),
    ));
    image.extend(compress_with(&["xz", "--check=crc32"], &gnu_cpio(&s3, &["a/f", "c"])));
    append_aligned(&mut image, &gnu_cpio(&s4, &["d"]));
    let img = w.join("five-segments.img");
    std::fs::write(&img, &image).unwrap();

    let out = common::run(common::bootkmod().args(["initramfs", "ls"]).arg(&img));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: BTreeSet<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    // ul -> usr/lib is followed; the symlink `lib` cannot replace busybox's non-empty
    // lib/ directory; a missing parent drops the entry.
    for (path, present) in
        [("usr/lib/modules/m.ko", true), ("lib/modules/n.ko", true), ("missing", false)]
    {
        assert_eq!(ours.contains(path), present, "{path}: {ours:?}");
    }

    let Some(log) = qemu::Boot::new(&kernel, &img).append("quiet loglevel=1").run() else {
        return;
    };
    let serial = log.serial.replace('\r', "");
    let (Some(b), Some(e)) = (serial.find(BEGIN), serial.find(END)) else {
        panic!("no find output from the guest:\n{}", log.tail());
    };
    let found: BTreeSet<String> = serial[b + BEGIN.len()..e]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(normalise)
        .collect();
    assert!(found.contains("bin/busybox") && found.contains("usr/lib/modules/m.ko"), "{found:?}");
    let mut expected = ours.clone();
    // The kernel's built-in initramfs (usr/default_cpio_list) is unpacked first.
    expected.extend([".", "dev", "dev/console", "root"].map(String::from));
    let only_kernel: Vec<_> = found.difference(&expected).collect();
    let only_ours: Vec<_> = expected.difference(&found).collect();
    assert!(
        only_kernel.is_empty() && only_ours.is_empty(),
        "kernel only {only_kernel:?}, bootkmod only {only_ours:?}"
    );
    assert!(serial.contains("A/F=two"), "later segment did not win:\n{}", log.tail());
}
