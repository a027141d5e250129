//! Driver updates side by side (issue 21), on real Debian kernels under an unmounted
//! root: several builds of one driver are kept; per kernel its own build when it loads,
//! else the newest that loads (rpm order) is linked, else none; an install or removal
//! that leaves a kernel worse off, or an update no kernel can use, is refused with
//! exit 3 and nothing changed; `remove --version` takes one build out and the kernels
//! fall back, links, indexes and images following; `remove --unused` prunes.
//! The judges: the tree (files, links), kmod's `modprobe --show-depends` through
//! bootkmod's indexes, and the image's own `modules.dep` and bytes.

mod common;

use common::builds::{build_versioned_bkram, other_build_of, sibling_release};
use common::keep::{fingerprint, fingerprint_diff, json_of, kernel_of, Source, TargetRoot};
use common::{bootkmod, bootkmod_hooked, installed_kernel, run, tool};
use std::path::Path;
use std::process::{Command, Output};

fn bk(root: &TargetRoot, args: &[&str], files: &[&Path]) -> Output {
    run(bootkmod().arg("--root").arg(root.path()).args(args).args(files))
}

fn sha_of(path: &Path) -> String {
    bootkmod::model::module::sha256_hex(&std::fs::read(path).unwrap())
}

/// What the image of `release` would load for `name`: the path its own `modules.dep`
/// lists, and that file's sha256 (read by `bootkmod initramfs cat`, links followed).
fn in_image(image: &Path, release: &str, name: &str) -> Option<(String, String)> {
    for prefix in ["usr/lib/modules", "lib/modules"] {
        let tree = format!("{prefix}/{release}");
        let dep = run(bootkmod()
            .args(["initramfs", "cat"])
            .arg(image)
            .arg(format!("{tree}/modules.dep")));
        if !dep.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&dep.stdout).into_owned();
        let rel = text.lines().find_map(|l| {
            let path = l.split(':').next()?;
            (bootkmod::model::module::name_from_path(Path::new(path)) == name)
                .then(|| path.to_string())
        })?;
        let file =
            run(bootkmod().args(["initramfs", "cat"]).arg(image).arg(format!("{tree}/{rel}")));
        assert!(file.status.success(), "{rel} listed but not in {}", image.display());
        return Some((rel, bootkmod::model::module::sha256_hex(&file.stdout)));
    }
    None
}

/// kmod's modprobe, through the indexes bootkmod wrote: the file it would load.
fn modprobe_path(modprobe: &Path, root: &TargetRoot, release: &str, name: &str) -> Option<String> {
    let out = run(Command::new(modprobe).arg("-d").arg(root.path()).args([
        "-S",
        release,
        "--show-depends",
        name,
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|p| p.trim().to_string())
        .find(|p| bootkmod::model::module::name_from_path(Path::new(p)) == name)
}

/// The scenario: a working build for the installed kernel, then an "update"
/// built for another kernel whose ABI it does not share (module_layout). The update is
/// refused, exit 3, nothing changed; the first build still serves the kernel, in its
/// tree and image. Forced, it is kept beside, serves nothing, and is pruned; removing
/// the build the kernel lives on is refused.
#[test]
fn an_update_no_kernel_can_use_is_refused_and_nothing_changes() {
    let Some(kver) = installed_kernel() else { return };
    let Some(src) = Source::of(&kver, &kver) else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let Some(first) = build_versioned_bkram(&kver, scratch.path(), "1.0.0") else { return };
    let elsewhere = sibling_release(&kver, "47");
    let update = other_build_of(
        &first,
        &scratch.path().join("update/bkram.ko"),
        ("1.0.0", "2.0.0"),
        &kver,
        Some(&elsewhere),
        true,
    );
    let root = TargetRoot::new();
    root.add_kernel(&src, &kver, &src.symvers());
    let image = root.at(format!("/boot/initrd.img-{kver}"));

    let out = bk(&root, &["--json", "install", "--root-critical"], &[&first]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let own = format!("/lib/modules/{kver}/extra/bkram/bkram.ko");
    assert_eq!(in_image(&image, &kver, "bkram").unwrap().1, sha_of(&first));

    let before = fingerprint(root.path());
    for dry in [true, false] {
        let args: &[&str] = if dry {
            &["--json", "install", "--root-critical", "--dry-run"]
        } else {
            &["--json", "install", "--root-critical"]
        };
        let out = bk(&root, args, &[&update]);
        let report = json_of(&out);
        assert_eq!(out.status.code(), Some(3), "refused with exit 3: {report:#}");
        let refused = report["refused"][0].as_str().unwrap_or_default();
        for needle in [kver.as_str(), "module_layout", "2.0.0", &elsewhere] {
            assert!(refused.contains(needle), "refusal lacks {needle}: {refused}");
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused") && stderr.contains("nothing was changed"), "{stderr}");
        // What it would have been: the first build still serves, the update passed over.
        let m = &kernel_of(&report, &kver)["record"]["modules"]["bkram"];
        assert_eq!(m["placement"], "own", "{report:#}");
        assert_eq!(m["build"], sha_of(&first).as_str());
        assert_eq!(m["passed_over"][0]["sha256"], sha_of(&update).as_str());
        let diff = fingerprint_diff(&before, &fingerprint(root.path()));
        assert!(diff.is_empty(), "refused install (dry {dry}) changed:\n{}", diff.join("\n"));
    }
    assert_eq!(std::fs::read(root.at(&own)).unwrap(), std::fs::read(&first).unwrap());
    assert_eq!(in_image(&image, &kver, "bkram").unwrap().1, sha_of(&first));
    assert_eq!(
        modprobe_path(&modprobe, &root, &kver, "bkram").as_deref(),
        Some(format!("{}{own}", root.path().display()).as_str())
    );
    let status = bk(&root, &["--json", "status"], &[]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));

    // Forced: kept beside the first build (RHEL's layout: its own kernel's extra/),
    // serving no kernel; the installed kernel keeps the first build.
    let out = bk(&root, &["--json", "install", "--root-critical", "--force"], &[&update]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let kept = root.at(format!("/lib/modules/{elsewhere}/extra/bkram/bkram.ko"));
    assert_eq!(sha_of(&kept), sha_of(&update));
    assert_eq!(sha_of(&root.at(&own)), sha_of(&first));
    let status = json_of(&bk(&root, &["--json", "status"], &[]));
    let builds = status["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 2, "{status:#}");
    let unused: Vec<&serde_json::Value> =
        builds.iter().filter(|b| b["serves"].as_array().unwrap().is_empty()).collect();
    assert_eq!(unused.len(), 1);
    assert_eq!(unused[0]["sha256"], sha_of(&update).as_str());
    let text = String::from_utf8_lossy(&bk(&root, &["status"], &[]).stdout).into_owned();
    assert!(text.contains("not taken: 2.0.0") && text.contains("module_layout"), "{text}");
    assert!(text.contains("serves no kernel"), "{text}");

    // Removing the build the kernel lives on would leave it without: refused.
    let before = fingerprint(root.path());
    let out = bk(&root, &["--json", "remove", "bkram", "--version", "1.0.0"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    let report = json_of(&out);
    let refused = report["refused"][0].as_str().unwrap();
    assert!(refused.contains(&kver) && refused.contains("module_layout"), "{refused}");
    assert!(fingerprint_diff(&before, &fingerprint(root.path())).is_empty());

    // Prune: the dry run names the unused build, the real run deletes its file only.
    let out = bk(&root, &["--json", "remove", "--unused", "--dry-run"], &[]);
    let report = json_of(&out);
    assert_eq!(report["removed"][0]["sha256"], sha_of(&update).as_str(), "{report:#}");
    assert!(kept.is_file());
    let out = bk(&root, &["--json", "remove", "--unused"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!kept.exists());
    assert_eq!(sha_of(&root.at(&own)), sha_of(&first));
    assert_eq!(in_image(&image, &kver, "bkram").unwrap().1, sha_of(&first));
    let status = json_of(&bk(&root, &["--json", "status"], &[]));
    assert_eq!(status["builds"].as_array().unwrap().len(), 1);
    assert_eq!(status["at_risk"], false);
}

/// Two builds that both fit: the installed kernel (own build 1.0.0), a kABI copy the
/// newer build 2.0.0 was built for, and a second copy with no build of its own. The
/// second copy links the newest; each built-for kernel keeps its own (extra/ comes
/// before weak-updates/). `remove --version 2.0.0` falls both copies back to 1.0.0:
/// links re-pointed, indexes and images following.
#[test]
fn the_newest_build_that_fits_wins_and_removing_it_falls_back() {
    let Some(kver) = installed_kernel() else { return };
    let Some(src) = Source::of(&kver, &kver) else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let Some(old) = build_versioned_bkram(&kver, scratch.path(), "1.0.0") else { return };
    let copy = sibling_release(&kver, "99");
    let new = other_build_of(
        &old,
        &scratch.path().join("new/bkram.ko"),
        ("1.0.0", "2.0.0"),
        &kver,
        Some(&copy),
        false,
    );
    let bare = format!("{kver}kabi");
    let root = TargetRoot::new();
    let symvers = src.symvers();
    for release in [kver.as_str(), &copy, &bare] {
        root.add_kernel(&src, release, &symvers);
    }
    let out = bk(&root, &["--json", "install", "--root-critical"], &[&old]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The dry run shows the per-kernel choice; the real run does it.
    let planned =
        json_of(&bk(&root, &["--json", "install", "--root-critical", "--dry-run"], &[&new]));
    let out = bk(&root, &["--json", "install", "--root-critical"], &[&new]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let old_path = format!("/lib/modules/{kver}/extra/bkram/bkram.ko");
    let new_path = format!("/lib/modules/{copy}/extra/bkram/bkram.ko");
    for (release, placement, build) in [
        (kver.as_str(), "own", &old),
        (copy.as_str(), "own", &new),
        (bare.as_str(), "weak-updates", &new),
    ] {
        for r in [&planned, &report] {
            let m = &kernel_of(r, release)["record"]["modules"]["bkram"];
            assert_eq!(m["placement"], placement, "{release}: {m:#}");
            assert_eq!(m["build"], sha_of(build).as_str(), "{release}: {m:#}");
        }
    }
    let passed = &kernel_of(&report, &kver)["record"]["modules"]["bkram"]["passed_over"][0];
    assert!(passed["why"].as_str().unwrap().contains("own build 1.0.0"), "{passed:#}");
    let link = root.at(format!("/lib/modules/{bare}/weak-updates/bkram/bkram.ko"));
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&new_path));
    let expect = |release: &str, path: &str| {
        let got = modprobe_path(&modprobe, &root, release, "bkram");
        assert_eq!(got.as_deref(), Some(format!("{}{path}", root.path().display()).as_str()));
    };
    expect(&kver, &old_path);
    expect(&copy, &new_path);
    expect(&bare, &format!("/lib/modules/{bare}/weak-updates/bkram/bkram.ko"));
    let image = |r: &str| root.at(format!("/boot/initrd.img-{r}"));
    assert_eq!(in_image(&image(&bare), &bare, "bkram").unwrap().1, sha_of(&new));
    assert_eq!(in_image(&image(&copy), &copy, "bkram").unwrap().1, sha_of(&new));
    assert_eq!(in_image(&image(&kver), &kver, "bkram").unwrap().1, sha_of(&old));
    let status = json_of(&bk(&root, &["--json", "status"], &[]));
    for k in status["kernels"].as_array().unwrap() {
        assert_eq!(k["modules"][0]["in_image"], true, "{k:#}");
        assert_eq!(k["modules"][0]["placed"], true, "{k:#}");
    }

    // Remove the newer build: both copies fall back to 1.0.0 through weak-updates.
    let out = bk(&root, &["--json", "remove", "bkram", "--version", "2.0.0"], &[]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(!root.at(&new_path).exists());
    for release in [copy.as_str(), &bare] {
        let m = &kernel_of(&report, release)["record"]["modules"]["bkram"];
        assert_eq!(m["placement"], "weak-updates", "{release}: {m:#}");
        assert_eq!(m["build"], sha_of(&old).as_str());
        let link = root.at(format!("/lib/modules/{release}/weak-updates/bkram/bkram.ko"));
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&old_path), "{release}");
        expect(release, &format!("/lib/modules/{release}/weak-updates/bkram/bkram.ko"));
        assert_eq!(in_image(&image(release), release, "bkram").unwrap().1, sha_of(&old));
    }
    expect(&kver, &old_path);
    let status = bk(&root, &["--json", "status"], &[]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));
    let verify = bk(&root, &["verify"], &[]);
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// A removal of one build killed after its file and links went (the journal still in
/// the ledger): status alerts and exits 3; the next run completes it — the copy the
/// build served links the older build, indexes and image follow, status is clean.
#[test]
fn a_killed_removal_of_a_build_is_completed_by_the_next_run() {
    let Some(kver) = installed_kernel() else { return };
    let Some(src) = Source::of(&kver, &kver) else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let Some(old) = build_versioned_bkram(&kver, scratch.path(), "1.0.0") else { return };
    let copy = sibling_release(&kver, "99");
    let new = other_build_of(
        &old,
        &scratch.path().join("new/bkram.ko"),
        ("1.0.0", "2.0.0"),
        &kver,
        Some(&copy),
        false,
    );
    let root = TargetRoot::new();
    let symvers = src.symvers();
    for release in [kver.as_str(), &copy] {
        root.add_kernel(&src, release, &symvers);
    }
    let out = bk(&root, &["--json", "install", "--root-critical"], &[&old, &new]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let old_path = format!("/lib/modules/{kver}/extra/bkram/bkram.ko");
    let new_path = format!("/lib/modules/{copy}/extra/bkram/bkram.ko");

    let killed = run(bootkmod_hooked()
        .arg("--root")
        .arg(root.path())
        .args(["remove", "bkram", "--version", "2.0.0"])
        .env("BOOTKMOD_FAILPOINT", "remove:unlinked"));
    assert!(!killed.status.success(), "the failpoint did not stop the run");
    assert!(!root.at(&new_path).exists(), "killed after the build's file went");
    let status = bk(&root, &["--json", "status"], &[]);
    assert_eq!(status.status.code(), Some(3), "a pending removal must not read ok");
    let alerts = json_of(&status)["alerts"].to_string();
    assert!(alerts.contains("interrupted remove of build"), "{alerts}");

    let out = bk(&root, &["--json", "install", "--refresh"], &[]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(report["recovered"].as_str().unwrap_or_default().contains("remove of build"));
    let m = &kernel_of(&report, &copy)["record"]["modules"]["bkram"];
    assert_eq!(m["placement"], "weak-updates", "{m:#}");
    assert_eq!(m["build"], sha_of(&old).as_str());
    let link = root.at(format!("/lib/modules/{copy}/weak-updates/bkram/bkram.ko"));
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&old_path));
    let got = modprobe_path(&modprobe, &root, &copy, "bkram");
    let want = format!("{}/lib/modules/{copy}/weak-updates/bkram/bkram.ko", root.path().display());
    assert_eq!(got.as_deref(), Some(want.as_str()));
    let image = root.at(format!("/boot/initrd.img-{copy}"));
    assert_eq!(in_image(&image, &copy, "bkram").unwrap().1, sha_of(&old));
    let status = json_of(&bk(&root, &["--json", "status"], &[]));
    assert_eq!(status["builds"].as_array().unwrap().len(), 1, "{status:#}");
    assert_eq!(status["alerts"].as_array().unwrap().len(), 0, "{status:#}");
    assert_eq!(status["at_risk"], false);
}
