//! `bootkmod dud inspect` agrees with Anaconda's rules: rpmvercmp (judged by rpm's own
//! implementation) of the whole `uname -r` against versioned `kernel-modules` Provides,
//! the `rpms/<arch>/` directory, and which payload paths are extracted.

mod common;

use bootkmod::formats::rpmvercmp::rpmvercmp;
use common::dud::{dud, ok, rpm_vercmp, sample_driver, write_module, RHEL_RELEASE};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cmp::Ordering;
use std::path::Path;

fn sign(o: Ordering) -> i32 {
    match o {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

#[test]
fn rpmvercmp_agrees_with_rpm_on_random_versions() {
    let strategy =
        proptest::collection::vec(("[0-9a-zA-Z.~^_+-]{1,12}", "[0-9a-zA-Z.~^_+-]{1,12}"), 400);
    let mut runner = TestRunner::new(Config { cases: 3, ..Config::default() });
    runner
        .run(&strategy, |pairs| {
            let Some(want) = rpm_vercmp(&pairs) else { return Ok(()) };
            for ((a, b), want) in pairs.iter().zip(want) {
                prop_assert_eq!(sign(rpmvercmp(a, b)), want, "{:?} vs {:?}", a, b);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn rpmvercmp_agrees_with_rpm_on_kernel_releases() {
    let releases = [
        "5.14.0-362.8.1.el9_3.x86_64",
        "5.14.0-362.8.1.el9_3.x86_64.x86_64",
        "5.14.0-362.8.1.el9_3",
        "5.14.0-362.24.1.el9_3.x86_64",
        "5.14.0-284.11.1.el9_2.x86_64",
        "5.14.0-427.13.1.el9_4.x86_64",
        "5.14.0-362.8.1.el9_3.aarch64",
        "4.18.0-513.5.1.el8_9.x86_64",
        "6.1.0-56-amd64",
        "6.1.0-56-cloud-amd64",
        "6.12.0-55.9.1.el10_0.x86_64",
        "6.12.0-55.9.1.el10_0.x86_64+debug",
    ];
    let pairs: Vec<(String, String)> = releases
        .iter()
        .flat_map(|a| releases.iter().map(move |b| (a.to_string(), b.to_string())))
        .collect();
    let Some(want) = rpm_vercmp(&pairs) else { return };
    for ((a, b), want) in pairs.iter().zip(want) {
        assert_eq!(sign(rpmvercmp(a, b)), want, "{a} vs {b}");
    }
}

fn inspect_json(dud_path: &Path, kver: &str, arch: &str) -> (Option<i32>, serde_json::Value) {
    let out =
        dud(&["inspect", dud_path.to_str().unwrap(), "--kver", kver, "--arch", arch, "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn kernel_table_follows_the_versioned_provides() {
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("acme_hba", RHEL_RELEASE), "acme_hba");
    let iso = t.path().join("dd.iso");
    ok(&dud(&["build", ko.to_str().unwrap(), "-o", iso.to_str().unwrap()]));

    // (running kernel, taken?) for Provides: kernel-modules >= RHEL_RELEASE.
    let table = [
        ("5.14.0-284.11.1.el9_2.x86_64", false), // older minor release
        ("5.14.0-362.8.1.el9_3.x86_64", true),   // the exact kernel
        ("5.14.0-362.24.1.el9_3.x86_64", true),  // newer z-stream
        ("5.14.0-427.13.1.el9_4.x86_64", true),  // newer minor release
        ("5.14.0-362.8.1.el9_3.aarch64", false), // different arch suffix compares lower
        ("4.18.0-513.5.1.el8_9.x86_64", false),  // older major
    ];
    let pairs: Vec<_> =
        table.iter().map(|(k, _)| (k.to_string(), RHEL_RELEASE.to_string())).collect();
    if let Some(rpm_says) = rpm_vercmp(&pairs) {
        for ((k, taken), cmp) in table.iter().zip(rpm_says) {
            assert_eq!(*taken, cmp >= 0, "table row {k} disagrees with rpm's own vercmp");
        }
    }
    for (kver, taken) in table {
        let (code, v) = inspect_json(&iso, kver, "x86_64");
        let pkg = &v["repos"][0]["packages"][0];
        assert_eq!(pkg["taken"], taken, "{kver}: {pkg:#}");
        assert_eq!(code, Some(if taken { 0 } else { 3 }), "{kver}");
        if taken {
            let files = pkg["files"].as_array().unwrap();
            let dest: Vec<&str> = files.iter().filter_map(|f| f["destination"].as_str()).collect();
            assert_eq!(dest, [format!("lib/modules/{kver}/updates/extra/acme_hba/acme_hba.ko")]);
        } else {
            assert!(pkg["reasons"][0].as_str().unwrap().contains("rpmvercmp"), "{pkg:#}");
        }
    }
    let (code, v) = inspect_json(&iso, RHEL_RELEASE, "aarch64");
    assert_eq!(code, Some(3));
    assert!(v["repos"][0]["note"].as_str().unwrap().contains("rpms/aarch64"), "{v:#}");
    assert!(v["repos"][0]["packages"].as_array().unwrap().is_empty());
}

/// A hand-made driver package with arbitrary Provides and payload (what other tools, or
/// mistakes, produce), written as a `--format dir` style tree.
fn handmade(
    dir: &Path,
    name: &str,
    provides: Vec<rpm::Dependency>,
    files: &[(&str, Option<&str>)],
) {
    let mut b = rpm::PackageBuilder::new(name, "1.0", "GPL-2.0-only", "x86_64", "test driver");
    b.using_config(rpm::BuildConfig::v4().source_date(1_700_000_000u32));
    for p in provides {
        b.provides(p);
    }
    for (path, link) in files {
        match link {
            None => {
                b.with_file_contents(b"\x7fELF".to_vec(), rpm::FileOptions::new(*path)).unwrap()
            }
            Some(target) => b.with_symlink(rpm::FileOptions::symlink(*path, *target)).unwrap(),
        };
    }
    let pkg = b.build().unwrap();
    let rpms = dir.join("rpms/x86_64");
    std::fs::create_dir_all(&rpms).unwrap();
    std::fs::write(dir.join("rhdd3"), b"x").unwrap();
    pkg.write_file(rpms.join(format!("{name}.rpm"))).unwrap();
}

#[test]
fn only_versioned_provides_with_the_exact_release_count() {
    let t = tempfile::tempdir().unwrap();
    let k = RHEL_RELEASE;
    let module = format!("/lib/modules/{k}/extra/m/m.ko");
    handmade(
        t.path(),
        "kmod-unversioned",
        vec![rpm::Dependency::any("kernel-modules")],
        &[(&module, None)],
    );
    handmade(
        t.path(),
        "kmod-doubled-arch",
        vec![rpm::Dependency::greater_eq("kernel-modules", format!("{k}.x86_64"))],
        &[(&module, None)],
    );
    handmade(
        t.path(),
        "kmod-good",
        vec![rpm::Dependency::greater_eq("kernel-modules", k)],
        &[
            (&module, None),
            ("/usr/lib/modules/5.14.0/extra/u.ko", None),
            ("/lib/firmware/v/fw.bin", None),
            ("/lib/modules/5.14.0/extra/link.ko", Some("/etc/passwd")),
            ("/usr/share/doc/README", None),
        ],
    );
    let (code, v) = inspect_json(t.path(), k, "x86_64");
    assert_eq!(code, Some(0));
    let pkgs = v["repos"][0]["packages"].as_array().unwrap();
    let by_name =
        |n: &str| pkgs.iter().find(|p| p["name"] == n).unwrap_or_else(|| panic!("{n} in {v:#}"));
    assert_eq!(by_name("kmod-unversioned")["taken"], false);
    assert!(by_name("kmod-unversioned")["reasons"][0].as_str().unwrap().contains("versioned"));
    assert_eq!(by_name("kmod-doubled-arch")["taken"], false);
    let good = by_name("kmod-good");
    assert_eq!(good["taken"], true);
    let file = |p: &str| {
        good["files"].as_array().unwrap().iter().find(|f| f["path"] == p).unwrap().clone()
    };
    assert_eq!(file(&module)["destination"], format!("lib/modules/{k}/updates/extra/m/m.ko"));
    assert_eq!(file("/lib/firmware/v/fw.bin")["destination"], "lib/firmware/updates/v/fw.bin");
    assert!(file("/usr/lib/modules/5.14.0/extra/u.ko")["destination"].is_null());
    assert!(file("/usr/lib/modules/5.14.0/extra/u.ko")["note"]
        .as_str()
        .unwrap()
        .contains("lib/modules/"));
    assert!(file("/lib/modules/5.14.0/extra/link.ko")["destination"].is_null());
    assert!(file("/lib/modules/5.14.0/extra/link.ko")["note"]
        .as_str()
        .unwrap()
        .contains("symlink"));
    assert!(file("/usr/share/doc/README")["class"].is_null());

    // The text report says the same, for people.
    let text = ok(&dud(&["inspect", t.path().to_str().unwrap(), "--kver", k]));
    assert!(text.contains("TAKEN    kmod-good"), "{text}");
    assert!(text.contains("does not hold"), "{text}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let junk = t.path().join("junk.iso");
    let mut bytes = vec![0u8; 0x9000];
    bytes[0x8001..0x8006].copy_from_slice(b"CD001");
    std::fs::write(&junk, &bytes).unwrap();
    let out = dud(&["inspect", junk.to_str().unwrap(), "--kver", RHEL_RELEASE]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.iso"));

    // A repo whose RPM is truncated: reported, not fatal.
    let dir = t.path().join("dd");
    std::fs::create_dir_all(dir.join("rpms/x86_64")).unwrap();
    std::fs::write(dir.join("rhdd3"), b"").unwrap();
    std::fs::write(dir.join("rpms/x86_64/broken.rpm"), [0xed, 0xab, 0xee, 0xdb, 3, 0]).unwrap();
    let (code, v) = inspect_json(&dir, RHEL_RELEASE, "x86_64");
    assert_eq!(code, Some(3));
    assert!(v["repos"][0]["packages"][0]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("not a readable RPM"));
}

#[test]
fn a_bare_rpm_and_a_dir_tree_are_media_too() {
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("bare_hba", RHEL_RELEASE), "bare_hba");
    let rpm = t.path().join("kmod.rpm");
    ok(&dud(&["build", ko.to_str().unwrap(), "--format", "rpm", "-o", rpm.to_str().unwrap()]));
    let (code, v) = inspect_json(&rpm, RHEL_RELEASE, "x86_64");
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["kind"], "rpm");
    assert_eq!(v["repos"][0]["packages"][0]["name"], "kmod-bare_hba");

    let dir = t.path().join("tree");
    ok(&dud(&["build", ko.to_str().unwrap(), "--format", "dir", "-o", dir.to_str().unwrap()]));
    let (code, v) = inspect_json(&dir, RHEL_RELEASE, "x86_64");
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["kind"], "directory");

    // A medium with no repo but an image at the top: Anaconda would open the image.
    let holder = t.path().join("holder");
    std::fs::create_dir(&holder).unwrap();
    ok(&dud(&["build", ko.to_str().unwrap(), "-o", holder.join("dd.iso").to_str().unwrap()]));
    let (code, v) = inspect_json(&holder, RHEL_RELEASE, "x86_64");
    assert_eq!(code, Some(3));
    assert_eq!(v["nested_isos"][0], "dd.iso");
}

#[test]
fn copies_of_one_module_from_other_tools_get_the_same_verdict() {
    let t = tempfile::tempdir().unwrap();
    let k = RHEL_RELEASE;
    let older = "5.14.0-284.11.1.el9_2.x86_64";
    // One package holding the module for two kernels: both copies land on one path.
    handmade(
        t.path(),
        "kmod-two-in-one",
        vec![rpm::Dependency::greater_eq("kernel-modules", older)],
        &[
            (&format!("/lib/modules/{older}/extra/m/m.ko"), None),
            (&format!("/lib/modules/{k}/extra/m/m.ko.xz"), None),
        ],
    );
    // Two packages taken, but one copy of `n` sits where nothing loads it.
    handmade(
        t.path(),
        "kmod-n-lib",
        vec![rpm::Dependency::greater_eq("kernel-modules", older)],
        &[(&format!("/lib/modules/{older}/extra/n/n.ko"), None)],
    );
    handmade(
        t.path(),
        "kmod-n-usr",
        vec![rpm::Dependency::greater_eq("kernel-modules", older)],
        &[(&format!("/usr/lib/modules/{k}/extra/n/n.ko"), None)],
    );
    let (code, v) = inspect_json(t.path(), k, "x86_64");
    assert_eq!(code, Some(0));
    let builds = v["module_builds"].as_array().unwrap();
    let of = |m: &str| builds.iter().find(|b| b["module"] == m).unwrap_or_else(|| panic!("{v:#}"));
    let m = of("m");
    assert_eq!(m["builds"].as_array().unwrap().len(), 2, "{m:#}");
    assert_eq!(m["undecided"], true, "{m:#}");
    assert!(m["why"].as_str().unwrap().contains(&format!("/lib/modules/{k}/updates/extra/m/")));
    let n = of("n");
    assert_eq!(n["undecided"], false, "{n:#}");
    assert_eq!(n["loaded"], "kmod-n-lib-1.0-1.x86_64", "{n:#}");
}
