//! `--dry-run` on install, remove and remove --kernel: the whole root stays byte for
//! byte as it was (every file's content and mode, every link target, the ledger, no
//! state directory created on a fresh root), and the report, in the same shape as a
//! real run's and marked `dry_run`, names what the real run then does.

mod common;

use common::keep::{break_symbol, fingerprint, fingerprint_diff, json_of, Setup, TargetRoot};
use common::machine::synthetic_release;
use common::{bootkmod, run};
use serde_json::Value;
use std::path::Path;

fn bootkmod_json(root: &Path, args: &[&str], module: Option<&Path>) -> (Option<i32>, Value) {
    let mut cmd = bootkmod();
    cmd.arg("--root").arg(root).arg("--json").args(args);
    if let Some(m) = module {
        cmd.arg(m);
    }
    let out = run(&mut cmd);
    (out.status.code(), json_of(&out))
}

fn assert_unchanged(
    root: &TargetRoot,
    before: &std::collections::BTreeMap<std::path::PathBuf, String>,
    what: &str,
) {
    let diff = fingerprint_diff(before, &fingerprint(root.path()));
    assert!(diff.is_empty(), "{what} changed the root:\n{}", diff.join("\n"));
}

/// Per kernel: placement, link, depmod, whether the image gets the drivers and how.
fn per_kernel(report: &Value) -> Vec<(String, Value, Value, Value, Value, Value)> {
    report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let m = &k["record"]["modules"]["bkram"];
            (
                k["release"].as_str().unwrap().to_string(),
                m["placement"].clone(),
                m["link"].clone(),
                k["depmod"].clone(),
                k["record"]["image"]["updated"].clone(),
                k["record"]["image"]["method"].clone(),
            )
        })
        .collect()
}

#[test]
fn dry_runs_change_nothing_and_name_what_the_real_run_does() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: _scratch }) = Setup::new() else {
        return;
    };
    // kABI copies of the installed kernel: names derived from it (they sort after it).
    let [kabi, kbreak, kabi2] =
        ["kabi", "kbreak", "kabi2"].map(|tag| synthetic_release(&kver, tag));
    let [kabi, kbreak, kabi2] = [&kabi, &kbreak, &kabi2].map(String::as_str);
    root.add_kernel(&newer, &kver, &symvers);
    root.add_kernel(&newer, kabi, &symvers);
    root.add_kernel(&newer, kbreak, &break_symbol(&symvers, "put_disk"));
    let install = ["install", "--root-critical"];

    // install --dry-run on a root bootkmod never touched, as text and as JSON.
    let before = fingerprint(root.path());
    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical", "--dry-run"])
        .arg(&bkram));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_unchanged(&root, &before, "install --dry-run (text)");
    assert!(text.starts_with("dry run: nothing was changed"), "{text}");
    let line = text.lines().find(|l| l.starts_with(kabi) && l.contains("bkram:")).unwrap();
    assert!(
        line.contains(&format!("linked /lib/modules/{kabi}/weak-updates/bkram/bkram.ko")),
        "{line}"
    );
    let line = text.lines().find(|l| l.starts_with(kabi) && l.contains(" image ")).unwrap();
    assert!(line.contains("dry run: bkram would be injected"), "{line}");
    let (code, planned) =
        bootkmod_json(root.path(), &[&install[..], &["--dry-run"]].concat(), Some(&bkram));
    assert_unchanged(&root, &before, "install --dry-run");
    assert!(!root.at("/var/lib/bootkmod").exists());
    assert_eq!(code, Some(3), "a kernel at risk, as the real run says: {planned:#}");
    assert_eq!(planned["dry_run"], true);
    let (code, done) = bootkmod_json(root.path(), &install, Some(&bkram));
    assert_eq!(code, Some(3));
    assert_eq!(done["dry_run"], false);
    assert_eq!(planned["installed"], done["installed"]);
    assert_eq!(per_kernel(&planned), per_kernel(&done), "dry run {planned:#}\nreal {done:#}");
    for k in done["kernels"].as_array().unwrap() {
        let release = k["release"].as_str().unwrap();
        let p = planned["kernels"].as_array().unwrap().iter().find(|p| p["release"] == release);
        assert_eq!(p.unwrap()["at_risk"], k["at_risk"], "{release}");
    }
    // What it named is what is there now.
    let link = root.at(format!("/lib/modules/{kabi}/weak-updates/bkram/bkram.ko"));
    let named = per_kernel(&planned).into_iter().find(|k| k.0 == kabi).unwrap().2;
    let target = format!("/lib/modules/{kver}/extra/bkram/bkram.ko");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&target));
    assert_eq!(named, format!("/lib/modules/{kabi}/weak-updates/bkram/bkram.ko"));
    assert!(root.at(named.as_str().unwrap()).is_symlink());

    // A dry run of the same install again: nothing left to do, nothing changed.
    let before = fingerprint(root.path());
    let (_, again) =
        bootkmod_json(root.path(), &[&install[..], &["--dry-run"]].concat(), Some(&bkram));
    assert_unchanged(&root, &before, "a repeated install --dry-run");
    for k in again["kernels"].as_array().unwrap() {
        assert_eq!(k["depmod"], false, "{k:#}");
        let image = &k["record"]["image"];
        if image["updated"] == true {
            assert!(image["note"].is_null(), "the image already carries it: {k:#}");
        }
    }

    // kernel-install add's refresh of a new kernel, dry run then real.
    root.add_kernel(&newer, kabi2, &symvers);
    let before = fingerprint(root.path());
    let refresh = ["install", "--refresh", "--kver", kabi2];
    let (code, planned) =
        bootkmod_json(root.path(), &[&refresh[..], &["--dry-run"]].concat(), None);
    assert_eq!(code, Some(0), "{planned:#}");
    assert_unchanged(&root, &before, "install --refresh --dry-run");
    let (code, done) = bootkmod_json(root.path(), &refresh, None);
    assert_eq!(code, Some(0));
    assert_eq!(per_kernel(&planned), per_kernel(&done), "dry run {planned:#}\nreal {done:#}");
    assert_eq!(per_kernel(&done)[0].2, format!("/lib/modules/{kabi2}/weak-updates/bkram/bkram.ko"));
    let before = fingerprint(root.path());

    // remove --kernel --dry-run, then the real one.
    let (code, planned) =
        bootkmod_json(root.path(), &["remove", "--kernel", kabi, "--dry-run"], None);
    assert_eq!(code, Some(0));
    assert_unchanged(&root, &before, "remove --kernel --dry-run");
    assert_eq!(
        planned["unlinked"],
        serde_json::json!([format!("/lib/modules/{kabi}/weak-updates/bkram/bkram.ko")])
    );
    assert!(planned["backup"].is_string(), "{planned:#}");
    let (code, done) = bootkmod_json(root.path(), &["remove", "--kernel", kabi], None);
    assert_eq!(code, Some(0));
    for field in ["kernel", "known", "unlinked", "backup", "kept"] {
        assert_eq!(planned[field], done[field], "{field}");
    }
    assert!(!link.exists());
    assert!(!root.at(done["backup"].as_str().unwrap()).exists());

    // remove --dry-run, then the real one.
    let before = fingerprint(root.path());
    let (code, planned) = bootkmod_json(root.path(), &["remove", "--dry-run", "bkram"], None);
    assert_eq!(code, Some(0));
    assert_unchanged(&root, &before, "remove --dry-run");
    assert_eq!(planned["dry_run"], true);
    let (code, done) = bootkmod_json(root.path(), &["remove", "bkram"], None);
    assert_eq!(code, Some(0));
    for field in ["removed", "depmod", "restored"] {
        assert_eq!(planned[field], done[field], "{field}: dry run {planned:#}\nreal {done:#}");
    }
    assert!(done["depmod"].as_array().unwrap().iter().any(|k| k == kver.as_str()));
    assert!(!root.at(format!("/lib/modules/{kver}/extra/bkram/bkram.ko")).exists());
}
