//! Hand-made images: several segments, the kernel's "later wins" rules, and hostile
//! input. Archives come from GNU cpio and the real compressors where they can express
//! the case, from bootkmod's writer where only exact header control can (hard-link
//! numbering); the expected trees follow init/initramfs.c.

mod common;

use bootkmod::engines::initramfs::read_view;
use bootkmod::engines::initramfs::write::ArchiveWriter;
use bootkmod::formats::compression::{Compression, EncoderSettings};
use bootkmod::formats::cpio::{EntryMeta, Format, S_IFDIR, S_IFLNK, S_IFREG};
use common::initramfs::*;
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;

fn view_names(image: &[u8]) -> anyhow::Result<BTreeSet<String>> {
    let (view, _) = read_view(image, "test image")?;
    Ok(view.entries().map(|e| e.display_path()).collect())
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn write_image(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn bootkmod_cat(image: &Path, path: &str) -> std::process::Output {
    common::run(common::bootkmod().args(["initramfs", "cat"]).arg(image).arg(path))
}

/// Four segments (raw, gzip, zstd, xz) and a raw fifth, zero padding between, built by
/// GNU cpio and the real compressors.
fn multi_segment_image(work: &Path) -> Option<Vec<u8>> {
    for t in ["cpio", "gzip", "zstd", "xz"] {
        common::tool(t)?;
    }
    let s0 = work.join("s0");
    std::fs::create_dir_all(s0.join("a")).unwrap();
    std::fs::write(s0.join("a/f"), "one\n").unwrap();
    std::fs::write(s0.join("a/keep"), "kept\n").unwrap();
    symlink("a", s0.join("l")).unwrap();
    let s1 = work.join("s1");
    std::fs::create_dir_all(s1.join("a")).unwrap();
    std::fs::write(s1.join("a/f"), "two\n").unwrap();
    std::fs::write(s1.join("b"), "bee\n").unwrap();
    let s2 = work.join("s2");
    std::fs::create_dir_all(s2.join("l")).unwrap();
    std::fs::write(s2.join("l/x"), "under the new dir\n").unwrap();
    let s3 = work.join("s3");
    std::fs::create_dir_all(&s3).unwrap();
    std::fs::write(s3.join("c"), "sea\n").unwrap();
    let s4 = work.join("s4");
    std::fs::create_dir_all(&s4).unwrap();
    std::fs::write(s4.join("b"), "bee, raw again\n").unwrap();

    let mut image = gnu_cpio(&s0, &[".", "a", "a/f", "a/keep", "l"]);
    image.extend_from_slice(&[0; 12]);
    image.extend(compress_with(&["gzip", "-9n"], &gnu_cpio(&s1, &["a", "a/f", "b"])));
    image.extend_from_slice(&[0; 3]); // padding need not be aligned before compressed data
    image.extend(compress_with(&["zstd", "-q", "-T2"], &gnu_cpio(&s2, &["l", "l/x"])));
    image.extend(compress_with(&["xz", "--check=crc32"], &gnu_cpio(&s3, &["c"])));
    append_aligned(&mut image, &gnu_cpio(&s4, &["b"]));
    Some(image)
}

#[test]
fn multi_segment_image_follows_the_kernel() {
    let work = tempfile::tempdir().unwrap();
    let Some(image) = multi_segment_image(work.path()) else { return };
    let (view, segments) = read_view(&image[..], "test image").unwrap();
    let kinds: Vec<_> = segments.iter().map(|s| s.compression).collect();
    use Compression::*;
    assert_eq!(kinds, [None, Gzip, Zstd, Xz, None]);
    assert!(segments.windows(2).all(|w| w[0].end() <= w[1].offset));
    let names: BTreeSet<_> = view.entries().map(|e| e.display_path()).collect();
    assert_eq!(names, set(&[".", "a", "a/f", "a/keep", "b", "c", "l", "l/x"]));
    // A later directory replaces the symlink; later files win; origins are tracked.
    let l = view.lookup(b"l", false).unwrap();
    assert_eq!(l.inode.mode & 0o170000, S_IFDIR);
    let origin = |p: &str| view.lookup(p.as_bytes(), false).unwrap().origin.unwrap().segment;
    assert_eq!(
        (origin("a/f"), origin("a/keep"), origin("l"), origin("c"), origin("b")),
        (1, 0, 2, 3, 4)
    );

    let path = work.path().join("multi.img");
    write_image(&path, &image);
    let out = bootkmod_cat(&path, "a/f");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\n");
    assert_eq!(bootkmod_cat(&path, "b").stdout, b"bee, raw again\n");
    let out = common::run(
        common::bootkmod().args(["initramfs", "ls", "--segments", "--json"]).arg(&path),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 5);
    assert_eq!(json[2]["compression"], "zstd");
}

#[test]
fn a_symlinked_parent_is_followed_inside_the_image() {
    // lib -> usr/lib, then lib/modules/x: the kernel's VFS lands it in usr/lib/modules.
    let mut w =
        ArchiveWriter::new(Vec::new(), EncoderSettings::new(Compression::None), Format::Newc)
            .unwrap();
    w.add(&EntryMeta::new("usr", S_IFDIR | 0o755), b"").unwrap();
    w.add(&EntryMeta::new("usr/lib", S_IFDIR | 0o755), b"").unwrap();
    w.add(&EntryMeta::new("lib", S_IFLNK | 0o777), b"usr/lib").unwrap();
    w.add(&EntryMeta::new("lib/modules", S_IFDIR | 0o755), b"").unwrap();
    w.add(&EntryMeta::new("lib/modules/m.ko", S_IFREG | 0o644), b"ko").unwrap();
    w.add(&EntryMeta::new("nodir/file", S_IFREG | 0o644), b"dropped: no parent").unwrap();
    let image = w.finish().unwrap();
    let (view, _) = read_view(&image[..], "t").unwrap();
    let names: BTreeSet<_> = view.entries().map(|e| e.display_path()).collect();
    assert_eq!(names, set(&["lib", "usr", "usr/lib", "usr/lib/modules", "usr/lib/modules/m.ko"]));
    assert_eq!(view.dropped().len(), 1);
}

#[test]
fn hard_links_are_reset_at_each_trailer() {
    let settings = EncoderSettings::new(Compression::None);
    let linked =
        |name: &str| EntryMeta { link_id: 7, nlink: 2, ..EntryMeta::new(name, S_IFREG | 0o644) };
    let mut w = ArchiveWriter::new(Vec::new(), settings, Format::Newc).unwrap();
    w.add(&linked("x"), b"").unwrap();
    w.add(&linked("y"), b"shared").unwrap();
    let mut image = w.finish().unwrap();
    // Same inode number in the next archive: after the trailer it is a new file.
    let mut w = ArchiveWriter::new(Vec::new(), settings, Format::Newc).unwrap();
    w.add(&linked("z"), b"fresh").unwrap();
    image.extend(w.finish().unwrap());
    let (view, segments) = read_view(&image[..], "t").unwrap();
    assert_eq!(segments.len(), 2);
    let inode = |p: &str| view.lookup(p.as_bytes(), false).unwrap().inode_id;
    assert_eq!(inode("x"), inode("y"));
    assert_ne!(inode("x"), inode("z"));
    assert_eq!(view.inode(inode("x")).size(), 6);
    assert_eq!(view.inode(inode("z")).size(), 5);

    // And extracting gives one inode with the shared content.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("links.img");
    write_image(&img, &image);
    let out = dir.path().join("out");
    let st = common::run(common::bootkmod().args(["initramfs", "extract"]).arg(&img).arg(&out));
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(out.join("x")).unwrap().ino(),
        std::fs::metadata(out.join("y")).unwrap().ino()
    );
    assert_eq!(std::fs::read(out.join("x")).unwrap(), b"shared");
    assert_eq!(std::fs::read(out.join("z")).unwrap(), b"fresh");
}

#[test]
fn trailer_inside_file_data_is_just_data() {
    let work = tempfile::tempdir().unwrap();
    if common::tool("cpio").is_none() {
        return;
    }
    // A file whose content is itself a whole cpio archive ending in TRAILER!!!.
    let inner = work.path().join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(inner.join("decoy"), "not an entry").unwrap();
    let decoy = gnu_cpio(&inner, &["decoy"]);
    std::fs::write(work.path().join("archive.cpio"), &decoy).unwrap();
    std::fs::write(work.path().join("after"), "after").unwrap();
    let mut image = gnu_cpio(work.path(), &["archive.cpio", "after"]);
    let tail = work.path().join("tail");
    std::fs::create_dir_all(&tail).unwrap();
    std::fs::write(tail.join("next"), "next segment").unwrap();
    append_aligned(&mut image, &compress_with(&["gzip", "-n"], &gnu_cpio(&tail, &["next"])));
    assert_eq!(view_names(&image).unwrap(), set(&["after", "archive.cpio", "next"]));
    let path = work.path().join("t.img");
    write_image(&path, &image);
    assert_eq!(bootkmod_cat(&path, "archive.cpio").stdout, decoy);
}

#[test]
fn crc_archives_are_verified() {
    let work = tempfile::tempdir().unwrap();
    let Some(cpio) = common::tool("cpio") else { return };
    std::fs::write(work.path().join("f"), "checksummed").unwrap();
    let out = common::run(
        std::process::Command::new(cpio)
            .args(["-o", "-H", "crc", "--quiet"])
            .current_dir(work.path())
            .stdin(std::process::Stdio::from(
                std::fs::File::open({
                    let list = work.path().join("list");
                    std::fs::write(&list, "f\n").unwrap();
                    list
                })
                .unwrap(),
            )),
    );
    let good = out.stdout;
    assert_eq!(&good[..6], b"070702");
    assert_eq!(view_names(&good).unwrap(), set(&["f"]));
    let mut bad = good.clone();
    let at = bad.windows(11).position(|w| w == b"checksummed").unwrap();
    bad[at] ^= 1;
    let err = format!("{:#}", view_names(&bad).unwrap_err());
    assert!(err.contains("bad data checksum") && err.contains("\"f\""), "{err}");
}

#[test]
fn hostile_headers_and_truncation_are_clear_errors() {
    let mut w =
        ArchiveWriter::new(Vec::new(), EncoderSettings::new(Compression::None), Format::Newc)
            .unwrap();
    w.add(&EntryMeta::new("file", S_IFREG | 0o644), &[b'x'; 1000]).unwrap();
    let raw = w.finish().unwrap();

    // Giant name length.
    let mut giant = raw.clone();
    giant[94..102].copy_from_slice(b"FFFFFFFF");
    let err = format!("{:#}", view_names(&giant).unwrap_err());
    assert!(err.contains("name length 4294967295") && err.contains("offset 0"), "{err}");

    // Truncated raw entry and truncated compressed segment.
    let err = format!("{:#}", view_names(&raw[..600]).unwrap_err());
    assert!(err.contains("truncated"), "{err}");
    let mut enc = bootkmod::formats::compression::Encoder::new(
        EncoderSettings::new(Compression::Gzip),
        Vec::new(),
    )
    .unwrap();
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    let gz = enc.finish().unwrap();
    let mut image = raw.clone();
    image.extend_from_slice(&gz[..gz.len() / 2]);
    let err = format!("{:#}", view_names(&image).unwrap_err());
    assert!(err.contains(&format!("gzip segment at offset {}", raw.len())), "{err}");

    // lzo and unknown magic name the offset.
    let mut lzo = raw.clone();
    lzo.extend_from_slice(b"\x89LZO\0\r\n\x1a\n");
    let err = format!("{:#}", view_names(&lzo).unwrap_err());
    assert!(err.contains(&format!("unsupported compression lzo at offset {}", raw.len())), "{err}");
    let mut junk = raw.clone();
    junk.extend_from_slice(b"\x00\x00\x00\x00PK\x03\x04");
    let err = format!("{:#}", view_names(&junk).unwrap_err());
    assert!(
        err.contains(&format!(
            "invalid magic at start of compressed archive at offset {}",
            raw.len() + 4
        )),
        "{err}"
    );

    // A raw archive after compressed data must be aligned.
    let mut unaligned = gz.clone();
    while unaligned.len() % 4 != 1 {
        unaligned.push(0);
    }
    unaligned.extend_from_slice(&raw);
    let err = format!("{:#}", view_names(&unaligned).unwrap_err());
    assert!(err.contains("4-byte aligned"), "{err}");

    // Junk at the end of a compressed stream's cpio data.
    let mut enc = bootkmod::formats::compression::Encoder::new(
        EncoderSettings::new(Compression::Zstd),
        Vec::new(),
    )
    .unwrap();
    std::io::Write::write_all(&mut enc, &[&raw[..], b"garbage!"].concat()).unwrap();
    let err = format!("{:#}", view_names(&enc.finish().unwrap()).unwrap_err());
    assert!(err.contains("junk within compressed archive"), "{err}");

    // Arbitrary bytes never panic.
    for seed in 0..200u32 {
        let mut bytes = raw.clone();
        let i = (seed as usize * 7919) % bytes.len();
        bytes[i] = (seed * 31) as u8;
        bytes.truncate(bytes.len() - (seed as usize % 50));
        let _ = view_names(&bytes);
    }
}

/// Extract into `parent/out`; returns what appeared in `parent` outside `out`.
fn extract_outside(image: &[u8]) -> (std::process::Output, Vec<String>, tempfile::TempDir) {
    let parent = tempfile::tempdir().unwrap();
    let img = parent.path().join("image");
    write_image(&img, image);
    let out = common::run(
        common::bootkmod().args(["initramfs", "extract"]).arg(&img).arg(parent.path().join("out")),
    );
    let mut outside: Vec<String> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "out" && n != "image")
        .collect();
    outside.sort();
    (out, outside, parent)
}

#[test]
fn extraction_never_writes_outside_the_directory() {
    let mut w =
        ArchiveWriter::new(Vec::new(), EncoderSettings::new(Compression::None), Format::Newc)
            .unwrap();
    w.add(&EntryMeta::new("../../escape", S_IFREG | 0o644), b"dotdot").unwrap();
    w.add(&EntryMeta::new("/abs", S_IFREG | 0o644), b"absolute").unwrap();
    w.add(&EntryMeta::new("up", S_IFLNK | 0o777), b"../../..").unwrap();
    w.add(&EntryMeta::new("up/through-link", S_IFREG | 0o644), b"via a symlink").unwrap();
    w.add(&EntryMeta::new("root", S_IFLNK | 0o777), b"/").unwrap();
    w.add(&EntryMeta::new("root/etc", S_IFDIR | 0o755), b"").unwrap();
    w.add(&EntryMeta::new("root/etc/passwd", S_IFREG | 0o644), b"owned").unwrap();
    let image = w.finish().unwrap();
    let (out, outside, parent) = extract_outside(&image);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(outside.is_empty(), "wrote outside: {outside:?}");
    // The kernel resolves them all inside its root; so does the extraction.
    let root = parent.path().join("out");
    assert_eq!(std::fs::read(root.join("escape")).unwrap(), b"dotdot");
    assert_eq!(std::fs::read(root.join("abs")).unwrap(), b"absolute");
    assert_eq!(std::fs::read(root.join("through-link")).unwrap(), b"via a symlink");
    assert_eq!(std::fs::read(root.join("etc/passwd")).unwrap(), b"owned");
    assert_eq!(std::fs::read_link(root.join("up")).unwrap(), Path::new("../../.."));
}

#[test]
fn a_symlink_already_in_the_directory_is_not_followed() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let elsewhere = parent.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, out.join("sub")).unwrap();
    let mut w =
        ArchiveWriter::new(Vec::new(), EncoderSettings::new(Compression::None), Format::Newc)
            .unwrap();
    w.add(&EntryMeta::new("sub", S_IFDIR | 0o755), b"").unwrap();
    w.add(&EntryMeta::new("sub/x", S_IFREG | 0o644), b"must not land elsewhere").unwrap();
    let img = parent.path().join("image");
    write_image(&img, &w.finish().unwrap());
    let st = common::run(common::bootkmod().args(["initramfs", "extract"]).arg(&img).arg(&out));
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("refusing to follow") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever files the writer is given, in whatever compression, the walker reads
        /// back the same names and contents, and the segment ends where the stream ends.
        #[test]
        fn writer_and_reader_agree(
            files in proptest::collection::btree_map("[a-z]{1,8}(/[a-z]{1,8})?", proptest::collection::vec(any::<u8>(), 0..300), 1..12),
            kind in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Zstd), Just(Compression::Xz), Just(Compression::Lz4Legacy)],
        ) {
            let mut w = ArchiveWriter::new(Vec::new(), EncoderSettings::new(kind), Format::Crc).unwrap();
            let mut expected = BTreeSet::new();
            for (name, body) in &files {
                if let Some((dir, _)) = name.split_once('/') {
                    if files.contains_key(dir) {
                        continue; // a file where the directory would be: not this property
                    }
                    if expected.insert(dir.to_string()) {
                        w.add(&EntryMeta::new(dir, S_IFDIR | 0o755), b"").unwrap();
                    }
                }
                w.add(&EntryMeta::new(name.as_str(), S_IFREG | 0o644), body).unwrap();
                expected.insert(name.clone());
            }
            let image = w.finish().unwrap();
            let (view, segments) = read_view(&image[..], "prop").unwrap();
            prop_assert_eq!(segments.len(), 1);
            prop_assert_eq!(segments[0].length, image.len() as u64);
            let names: BTreeSet<_> = view.entries().map(|e| e.display_path()).collect();
            prop_assert_eq!(names, expected);
            for (name, body) in &files {
                if let Some(found) = view.lookup(name.as_bytes(), false) {
                    if found.inode.file_type() == S_IFREG {
                        prop_assert_eq!(found.inode.size(), body.len() as u64);
                    }
                }
            }
        }
    }
}
