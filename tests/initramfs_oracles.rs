//! Listing parity with the real tools: images made by Debian's dracut (with an early
//! microcode cpio) and initramfs-tools' mkinitramfs, in every compression they offer
//! here, listed by bootkmod and by GNU `cpio -t` segment by segment (after dracut's
//! `skipcpio` and the matching decompressor).

mod common;

use bootkmod::engines::initramfs::{kernel_versions, read_view};
use common::initramfs::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn bootkmod_names(image: &Path) -> BTreeSet<String> {
    let out = common::run(common::bootkmod().args(["initramfs", "ls"]).arg(image));
    assert!(
        out.status.success(),
        "bootkmod ls {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The oracle: `cpio -t` of the early archive (if any) and of the decompressed main one.
fn oracle_names(image: &Path, compress: &str, early: bool) -> BTreeSet<String> {
    let bytes = std::fs::read(image).unwrap();
    let mut names = BTreeSet::new();
    let main = if early {
        names.extend(cpio_names(&bytes));
        skipcpio(image).unwrap()
    } else {
        bytes
    };
    let argv = decompressor(compress).unwrap();
    let (cpio, stderr) = pipe(&argv, &main);
    assert!(stderr.is_empty(), "{argv:?} warned: {stderr}");
    names.extend(cpio_names(&cpio));
    names
}

fn check(image: &Path, compress: &str, early: bool, kver: &str) {
    let ours = bootkmod_names(image);
    let theirs = oracle_names(image, compress, early);
    let only_ours: Vec<_> = ours.difference(&theirs).take(5).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).take(5).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{}: bootkmod only {only_ours:?}, cpio only {only_theirs:?}",
        image.display()
    );
    // kernel-versions counts what cpio lists under the module tree.
    let file = std::io::BufReader::new(std::fs::File::open(image).unwrap());
    let (view, segments) = read_view(file, "image").unwrap();
    let trees = kernel_versions(&view);
    let expected = theirs
        .iter()
        .filter(|n| n.starts_with(&format!("usr/lib/modules/{kver}/")) && n.ends_with(".ko"))
        .count();
    assert!(expected > 0, "{}: no modules in the image", image.display());
    assert_eq!(trees.len(), 1, "{}: {trees:?}", image.display());
    assert_eq!((trees[0].release.as_str(), trees[0].modules), (kver, expected));
    assert_eq!(segments.len(), 1 + usize::from(early), "{}: {segments:?}", image.display());
}

/// Build the images of one tool (cached between runs), then compare each.
fn images_of(
    build: fn(&str, &str) -> Option<PathBuf>,
    kver: &str,
    compressions: &[&str],
) -> Vec<(String, PathBuf)> {
    compressions.iter().filter_map(|c| Some((c.to_string(), build(kver, c)?))).collect()
}

#[test]
fn listing_matches_cpio_for_dracut_and_mkinitramfs_images() {
    let Some(kver) = common::installed_kernel() else { return };
    // The two tools build in parallel: most of their time is spent waiting on helpers.
    let (dracut, mkinitramfs) = std::thread::scope(|s| {
        let k = kver.clone();
        let d = s.spawn(move || images_of(dracut_image, &k, DRACUT_COMPRESSIONS));
        let m = images_of(mkinitramfs_image, &kver, MKINITRAMFS_COMPRESSIONS);
        (d.join().unwrap(), m)
    });
    for (compress, image) in &dracut {
        check(image, compress, true, &kver);
    }
    for (compress, image) in &mkinitramfs {
        check(image, compress, false, &kver);
    }
    if common::oracles_required() {
        assert_eq!(dracut.len(), DRACUT_COMPRESSIONS.len());
        assert_eq!(mkinitramfs.len(), MKINITRAMFS_COMPRESSIONS.len());
    }
}

#[test]
fn lzo_images_of_both_tools_are_refused_with_the_offset() {
    let Some(kver) = common::installed_kernel() else { return };
    if common::tool("lzop").is_none() {
        return;
    }
    let (dracut, mkinitramfs) = std::thread::scope(|s| {
        let k = kver.clone();
        let d = s.spawn(move || dracut_image(&k, "lzop"));
        (d.join().unwrap(), mkinitramfs_image(&kver, "lzop"))
    });
    for (image, early) in [(dracut, true), (mkinitramfs, false)] {
        let Some(image) = image else { continue };
        // A valid image (the oracle lists it) ...
        assert!(oracle_names(&image, "lzop", early).len() > 10);
        // ... that bootkmod names precisely instead of misreading.
        let offset = if early {
            std::fs::metadata(&image).unwrap().len() as usize - skipcpio(&image).unwrap().len()
        } else {
            0
        };
        let out = common::run(common::bootkmod().args(["initramfs", "ls"]).arg(&image));
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("unsupported compression lzo at offset {offset}")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
