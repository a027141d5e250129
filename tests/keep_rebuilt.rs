//! Never revert another writer: after `bootkmod install`, another tool rebuilds the
//! image (extracted by GNU cpio, a new "microcode" file added, repacked by GNU cpio and
//! compressed by gzip, as update-initramfs would build a newer image). `status` says the
//! image was rebuilt by another tool since; `remove` must not restore the pre-install
//! backup over it: it takes bkram out and leaves every other file of that image
//! byte-identical (the trees compared, the index and early-load files aside), or, when
//! the rebuilt image lacks bkram, leaves the image byte for byte as it is. `verify`
//! names a module file whose content does not match its suffix.

mod common;

use bootkmod::formats::cpio::{EntryMeta, Format, Writer};
use common::keep::{fingerprint, fingerprint_diff, json_of, Setup};
use common::{bootkmod, run, tool};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Rebuild `image` as another tool would: its files (extracted by GNU cpio) plus
/// `microcode.bin`, without bkram when `keep_bkram` is false, packed by GNU cpio and
/// gzip. Returns the tree the new image was packed from.
fn rebuild_by_another_tool(
    image: &Path,
    keep_bkram: bool,
    work: &Path,
) -> Option<std::path::PathBuf> {
    let cpio = tool("cpio")?;
    let gzip = tool("gzip")?;
    let tree = work.join(if keep_bkram { "rebuilt-with" } else { "rebuilt-without" });
    fs::create_dir_all(&tree).unwrap();
    // bootkmod's own extract reads the appended segments as the kernel would.
    ok(run(bootkmod().args(["initramfs", "extract"]).arg(image).arg(&tree)), "extract");
    fs::write(tree.join("microcode.bin"), b"newer microcode from another tool\n").unwrap();
    if !keep_bkram {
        let out = run(Command::new("sh")
            .arg("-c")
            .arg(format!("find '{}' -name 'bkram.ko*' -delete", tree.display())));
        assert!(out.status.success());
    }
    let cmd = format!(
        "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | '{}' -o -H newc -R 0:0 --quiet | '{}' -9 -n > '{}.new' && mv '{}.new' '{}'",
        tree.display(),
        cpio.display(),
        gzip.display(),
        image.display(),
        image.display(),
        image.display()
    );
    ok(run(Command::new("sh").arg("-c").arg(&cmd)), "repack");
    Some(tree)
}

fn extract(image: &Path, into: &Path) {
    ok(run(bootkmod().args(["initramfs", "extract"]).arg(image).arg(into)), "extract");
}

#[test]
fn remove_after_another_tool_rebuilt_the_image_never_restores_the_old_backup() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch }) = Setup::new() else {
        return;
    };
    root.add_kernel(&newer, &kver, &symvers);
    let image = root.at(format!("/boot/initrd.img-{kver}"));
    let original = fs::read(&image).unwrap();
    let bk = |args: &[&str]| run(bootkmod().arg("--root").arg(root.path()).args(args));
    ok(bk(&["install", "--root-critical", bkram.to_str().unwrap()]), "install");

    let Some(rebuilt_tree) = rebuild_by_another_tool(&image, true, scratch.path()) else {
        return;
    };
    let rebuilt = fs::read(&image).unwrap();
    // status: the driver is in the image, and the image is not bootkmod's any more.
    let out = bk(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let status = json_of(&out);
    let k = &status["kernels"][0];
    assert_eq!(k["image_unchanged"], false, "{status:#}");
    assert_eq!(k["image_note"], "rebuilt by another tool since bootkmod wrote it", "{status:#}");
    assert_eq!(k["modules"][0]["in_image"], true, "{status:#}");
    let text = String::from_utf8_lossy(&bk(&["status"]).stdout).into_owned();
    assert!(text.contains("rebuilt by another tool since"), "{text}");

    // A dry run says what the real one does, and changes nothing.
    let out = ok(bk(&["--json", "remove", "--dry-run", "bkram"]), "remove --dry-run");
    let planned = json_of(&out);
    assert_eq!(planned["taken_out"][0], format!("/boot/initrd.img-{kver}"), "{planned:#}");
    assert_eq!(planned["restored"].as_array().unwrap().len(), 0, "{planned:#}");
    assert!(fs::read(&image).unwrap() == rebuilt, "the dry run changed the image");

    let out = ok(bk(&["--json", "remove", "bkram"]), "remove");
    let report = json_of(&out);
    assert_eq!(report["taken_out"][0], format!("/boot/initrd.img-{kver}"), "{report:#}");
    let after = fs::read(&image).unwrap();
    assert!(after != original, "remove restored the pre-install backup over a newer image");
    assert!(after != rebuilt, "bkram was left in the image");

    // Every file the other tool put there is byte-identical; bkram is gone; only the
    // module indexes and bootkmod's early-load entry changed.
    let now = scratch.path().join("after-remove");
    extract(&image, &now);
    let diff = fingerprint_diff(&fingerprint(&rebuilt_tree), &fingerprint(&now));
    for d in &diff {
        let path = d.split(':').next().unwrap();
        let file = path.rsplit('/').next().unwrap();
        let allowed = file.starts_with("modules.")
            || path.contains("extra/bkram")
            || path == "etc/modules-load.d/bootkmod.conf"
            || path == "conf/modules";
        assert!(allowed, "remove changed {d}\n(all changes: {diff:#?})");
    }
    assert!(diff.iter().any(|d| d.contains("extra/bkram/bkram.ko")), "{diff:#?}");
    // The early-load entry install made went with the driver.
    let early: Vec<_> = ["conf/modules", "etc/modules-load.d/bootkmod.conf"]
        .iter()
        .filter_map(|f| fs::read_to_string(rebuilt_tree.join(f)).ok().map(|t| (f, t)))
        .collect();
    assert!(early.iter().any(|(_, t)| t.lines().any(|l| l == "bkram")), "{early:?}");
    for (f, _) in &early {
        let text = fs::read_to_string(now.join(f)).unwrap_or_default();
        assert!(!text.lines().any(|l| l == "bkram"), "{f} still loads bkram:\n{text}");
    }
    assert_eq!(
        fs::read(now.join("microcode.bin")).unwrap(),
        b"newer microcode from another tool\n"
    );
    // kmod's modprobe no longer finds bkram through the image's indexes.
    if let Some(modprobe) = tool("modprobe") {
        let out = run(Command::new(modprobe).arg("-d").arg(&now).args([
            "-S",
            &kver,
            "--show-depends",
            "bkram",
        ]));
        assert!(!out.status.success(), "bkram still resolves in the image's indexes");
    }
}

#[test]
fn remove_leaves_an_image_rebuilt_without_the_driver_as_it_is() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch }) = Setup::new() else {
        return;
    };
    root.add_kernel(&newer, &kver, &symvers);
    let image = root.at(format!("/boot/initrd.img-{kver}"));
    let bk = |args: &[&str]| run(bootkmod().arg("--root").arg(root.path()).args(args));
    ok(bk(&["install", "--root-critical", bkram.to_str().unwrap()]), "install");
    let Some(_) = rebuild_by_another_tool(&image, false, scratch.path()) else { return };
    let rebuilt = fs::read(&image).unwrap();
    // Without the root-critical driver the kernel is at risk, and status says why.
    let out = bk(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));

    let out = ok(bk(&["remove", "bkram"]), "remove");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("left") && text.contains("as it is"), "{text}");
    assert!(fs::read(&image).unwrap() == rebuilt, "the other tool's image was changed");
}

#[test]
fn verify_names_a_module_whose_content_does_not_match_its_suffix() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: _s }) = Setup::new() else {
        return;
    };
    root.add_kernel(&newer, &kver, &symvers);
    let image = root.at(format!("/boot/initrd.img-{kver}"));
    let bk = |args: &[&str]| run(bootkmod().arg("--root").arg(root.path()).args(args));
    ok(bk(&["install", "--root-critical", bkram.to_str().unwrap()]), "install");
    ok(bk(&["verify"]), "verify after install");

    // Plant an uncompressed ELF named .ko.xz in an appended segment, as the old inject
    // wrote over existing names.
    let mut bytes = fs::read(&image).unwrap();
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    let mut w = Writer::new(Vec::new(), Format::Newc);
    let planted = format!("usr/lib/modules/{kver}/kernel/planted.ko.xz");
    w.write_entry(
        &EntryMeta::new(format!("usr/lib/modules/{kver}/kernel").as_bytes(), 0o040755),
        b"",
    )
    .unwrap();
    w.write_entry(&EntryMeta::new(planted.as_bytes(), 0o100644), &fs::read(&bkram).unwrap())
        .unwrap();
    // And the other way round: xz data (by the real xz) named .ko.
    let Some(xz) = tool("xz") else { return };
    let packed = run(Command::new(xz).args(["-c", "--check=crc32"]).arg(&bkram));
    assert!(packed.status.success());
    let planted_ko = format!("usr/lib/modules/{kver}/kernel/planted2.ko");
    w.write_entry(&EntryMeta::new(planted_ko.as_bytes(), 0o100644), &packed.stdout).unwrap();
    bytes.extend(w.finish().unwrap());
    fs::write(&image, &bytes).unwrap();

    let out = bk(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&planted)
                && l.contains("named as .ko.xz but holds uncompressed data")),
        "verify did not name the planted file:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains(&planted_ko) && l.contains("named as .ko but holds xz")),
        "verify did not name the planted .ko:\n{text}"
    );
}

/// The same rule for `install --refresh`: once another tool rebuilt the image, the
/// pre-install backup is no longer what `remove` may put back. A refresh that re-injects
/// into the rebuilt image backs that image up instead, so `remove` gives back the other
/// tool's image byte for byte; a refresh that finds the driver already there (the other
/// tool carried it, as bootkmod's initramfs-tools hook does) changes nothing, keeps no
/// copy of it, and `remove` takes the driver out of it.
#[test]
fn refresh_after_another_tool_rebuilt_the_image_never_brings_back_the_old_backup() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch }) = Setup::new() else {
        return;
    };
    root.add_kernel(&newer, &kver, &symvers);
    let image = root.at(format!("/boot/initrd.img-{kver}"));
    let original = fs::read(&image).unwrap();
    let bk = |args: &[&str]| run(bootkmod().arg("--root").arg(root.path()).args(args));
    let backups = || -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = fs::read_dir(root.at("/var/lib/bootkmod/backup"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    };

    // Rebuilt without the driver; the refresh injects it again.
    ok(bk(&["install", "--root-critical", bkram.to_str().unwrap()]), "install");
    let Some(_) = rebuild_by_another_tool(&image, false, scratch.path()) else { return };
    let rebuilt = fs::read(&image).unwrap();
    ok(bk(&["install", "--refresh"]), "refresh");
    assert!(fs::read(&image).unwrap() != rebuilt, "the refresh did not inject bkram");
    let sha = |b: &[u8]| bootkmod::model::module::sha256_hex(b)[..16].to_string();
    let named = |bytes: &[u8]| backups().iter().any(|p| p.to_string_lossy().ends_with(&sha(bytes)));
    assert!(!named(&original), "the pre-install backup outlived the rebuild: {:?}", backups());
    assert!(named(&rebuilt), "no backup of the rebuilt image: {:?}", backups());
    let out = ok(bk(&["--json", "remove", "bkram"]), "remove");
    let report = json_of(&out);
    assert_eq!(report["restored"][0], format!("/boot/initrd.img-{kver}"), "{report:#}");
    let after = fs::read(&image).unwrap();
    assert!(after != original, "remove brought back the image from before the other tool");
    assert!(after == rebuilt, "remove must give back the other tool's image");

    // Rebuilt with the driver (the other tool carried it): the refresh finds it there.
    let scratch2 = scratch.path().join("second");
    ok(bk(&["install", "--root-critical", bkram.to_str().unwrap()]), "install again");
    let Some(rebuilt_tree) = rebuild_by_another_tool(&image, true, &scratch2) else { return };
    let rebuilt = fs::read(&image).unwrap();
    ok(bk(&["install", "--refresh"]), "refresh");
    assert!(fs::read(&image).unwrap() == rebuilt, "the refresh rewrote an image holding bkram");
    // The backup from before this rebuild is dropped, and no copy of an image bootkmod
    // did not change is taken.
    let none = Vec::<std::path::PathBuf>::new();
    assert_eq!(backups(), none, "a stale or needless backup was kept");
    let out = ok(bk(&["--json", "remove", "bkram"]), "remove");
    let report = json_of(&out);
    assert_eq!(report["taken_out"][0], format!("/boot/initrd.img-{kver}"), "{report:#}");
    // Nothing bootkmod changed is left to restore, so no copy of any image is kept.
    assert_eq!(backups(), none, "backups left behind");
    let now = scratch.path().join("after-second-remove");
    extract(&image, &now);
    let diff = fingerprint_diff(&fingerprint(&rebuilt_tree), &fingerprint(&now));
    assert!(diff.iter().any(|d| d.contains("extra/bkram/bkram.ko")), "bkram stayed: {diff:#?}");
    assert_eq!(
        fs::read(now.join("microcode.bin")).unwrap(),
        b"newer microcode from another tool\n"
    );
}
