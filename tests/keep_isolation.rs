//! One kernel's failure must not cost the others, and nothing may look fine while it
//! isn't (issue 12): three kernels where the second one's image serves another kernel
//! (a copied image); a dangling weak-updates link left by an erased kmod package; a
//! placed driver erased by a package manager; `remove` after a failed refresh; reports
//! that say only what happened. Real Debian kernel trees (a subset of each), bkram
//! built against the installed kernel's headers, kmod's depmod for the starting indexes.

mod common;

use common::keep::{json_of, kernel_of, tiny_image, Setup};
use common::{bootkmod, run};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Kernels made of the installed kernel's files under other releases, all sorting after
/// it: the copies are kABI-identical, so bkram links into each.
fn copies(kver: &str) -> (String, String) {
    (format!("{kver}-kabi1"), format!("{kver}-kabi2"))
}

fn bk(root: &Path) -> Command {
    let mut c = bootkmod();
    c.arg("--root").arg(root);
    c
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ledger(root: &Path) -> serde_json::Value {
    let bytes = std::fs::read(root.join("var/lib/bootkmod/ledger.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Does bootkmod's own lister find bkram for `release` in `image` (placed in `extra/`
/// for the kernel it was built for, in `weak-updates/` for a kABI-compatible one)?
fn image_has_bkram(image: &Path, release: &str) -> bool {
    let ls = run(bootkmod().args(["initramfs", "ls"]).arg(image));
    assert!(ls.status.success(), "{}", text(&ls));
    let listed = String::from_utf8_lossy(&ls.stdout);
    ["extra", "weak-updates"]
        .iter()
        .any(|dir| listed.contains(&format!("lib/modules/{release}/{dir}/bkram/bkram.ko")))
}

fn sha(path: &Path) -> String {
    bootkmod::model::module::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn a_copied_image_costs_only_its_own_kernel() {
    let Some(s) = Setup::new() else { return };
    let (k2, k3) = copies(&s.kver);
    let k1 = s.kver.clone();
    let root = s.root.path().to_path_buf();
    s.root.add_kernel(&s.newer, &k1, &s.symvers);
    s.root.add_kernel(&s.newer, &k2, &s.symvers);
    s.root.add_kernel(&s.newer, &k3, &s.symvers);
    // The second kernel's image was copied from the first kernel's.
    let image = |k: &str| s.root.at(format!("/boot/initrd.img-{k}"));
    std::fs::write(image(&k2), tiny_image(&k1)).unwrap();
    let copied = sha(&image(&k2));

    let out = run(bk(&root).args(["--json", "install", "--root-critical"]).arg(&s.bkram));
    assert_eq!(out.status.code(), Some(3), "a kernel at risk, the others done: {}", text(&out));
    let report = json_of(&out);
    for k in [&k1, &k3] {
        assert!(kernel_of(&report, k)["failure"].is_null(), "{k}: {report:#}");
        assert!(kernel_of(&report, k)["image_changed"].as_bool().unwrap(), "{k}: {report:#}");
        assert!(image_has_bkram(&image(k), k), "{k}'s image lacks bkram");
    }
    let failure = kernel_of(&report, &k2)["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains(&format!("serves kernel {k1}, not {k2}")), "{report:#}");
    assert!(s.root.at(format!("/lib/modules/{k3}/weak-updates/bkram/bkram.ko")).is_symlink());
    assert_eq!(sha(&image(&k2)), copied, "the copied image was left as it was");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("kernel {k2} not completed")), "{stderr}");

    // The ledger records the driver, the failure with its reason, and no pending journal.
    let l = ledger(&root);
    assert!(l["journal"].is_null(), "{l:#}");
    assert_eq!(l["modules"]["bkram"]["root_critical"], true);
    assert!(l["kernels"][&k2]["failure"].as_str().unwrap().contains("serves kernel"), "{l:#}");
    assert!(l["kernels"][&k1]["failure"].is_null() && l["kernels"][&k3]["failure"].is_null());

    // status and verify name kernel 2 and the next command, first, and exit non-zero.
    let st = run(bk(&root).arg("status"));
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
    let shown = String::from_utf8_lossy(&st.stdout);
    let first = shown.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("!!! kernel {k2}: not completed")), "{shown}");
    assert!(shown.contains(&format!("bootkmod install --refresh --kver {k2}")), "{shown}");
    let v = run(bk(&root).arg("verify"));
    assert_eq!(v.status.code(), Some(3), "{}", text(&v));
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(said.contains(&format!("kernel {k2}")) && !said.starts_with("ok"), "{said}");

    // A later install does not trip over kernel 2 again before the fix: it records it.
    let again = run(bk(&root).args(["install", "--refresh"]));
    assert_eq!(again.status.code(), Some(1), "refuse: kernel 2 at risk {}", text(&again));
    assert!(ledger(&root)["journal"].is_null());

    // The admin puts a good image in place: a refresh completes kernel 2.
    std::fs::write(image(&k2), tiny_image(&k2)).unwrap();
    let fixed = run(bk(&root).args(["install", "--refresh"]));
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed));
    assert!(image_has_bkram(&image(&k2), &k2));
    let l = ledger(&root);
    assert!(l["kernels"][&k2]["failure"].is_null(), "{l:#}");
    let st = run(bk(&root).arg("status"));
    assert_eq!(st.status.code(), Some(0), "{}", text(&st));
    let v = run(bk(&root).arg("verify"));
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
}

#[test]
fn a_dangling_weak_updates_link_in_another_kernel_is_a_warning() {
    let Some(s) = Setup::new() else { return };
    let (k2, _) = copies(&s.kver);
    let root = s.root.path().to_path_buf();
    s.root.add_kernel(&s.newer, &s.kver, &s.symvers);
    s.root.add_kernel(&s.newer, &k2, &s.symvers);
    // An erased kmod RPM left its weak-updates link behind.
    let gone = format!("/lib/modules/{}/extra/gone/gone.ko", s.kver);
    let link = s.root.at(format!("/lib/modules/{k2}/weak-updates/gone/gone.ko"));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    let named = "weak-updates/gone/gone.ko".to_string();

    let out = run(bk(&root).arg("check").arg(&s.bkram).arg("--all-kernels"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&named), "{}", text(&out));
    let out = run(bk(&root).args(["install", "--dry-run"]).arg(&s.bkram));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&named), "{}", text(&out));
    let out = run(bk(&root).arg("install").arg(&s.bkram));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&named), "{}", text(&out));
    assert!(s.root.at(format!("/lib/modules/{k2}/weak-updates/bkram/bkram.ko")).is_symlink());
    // depmod (bootkmod's) indexes kernel 2 around the dangling link and says so.
    let out = run(bk(&root).args(["depmod", &k2]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gone"), "{}", text(&out));
    let dep = std::fs::read_to_string(s.root.at(format!("/lib/modules/{k2}/modules.dep"))).unwrap();
    assert!(dep.contains("weak-updates/bkram/bkram.ko:"), "{dep}");
    assert!(!dep.contains("gone.ko"), "{dep}");
    // The foreign link is not bootkmod's: status does not call it an alert.
    let st = run(bk(&root).arg("status"));
    assert_eq!(st.status.code(), Some(0), "{}", text(&st));
    assert!(link.is_symlink(), "another tool's link is left alone");
}

#[test]
fn an_erased_placed_module_is_put_back_from_the_store() {
    let Some(s) = Setup::new() else { return };
    let (k2, _) = copies(&s.kver);
    let root = s.root.path().to_path_buf();
    s.root.add_kernel(&s.newer, &s.kver, &s.symvers);
    s.root.add_kernel(&s.newer, &k2, &s.symvers);
    let out = run(bk(&root).arg("install").arg(&s.bkram));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let placed = s.root.at(format!("/lib/modules/{}/extra/bkram/bkram.ko", s.kver));
    let want = std::fs::read(&s.bkram).unwrap();

    // Erased (rpm -e of a package that shipped the same path), then altered.
    for damage in ["erase", "alter"] {
        match damage {
            "erase" => std::fs::remove_file(&placed).unwrap(),
            _ => std::fs::write(&placed, b"not a module").unwrap(),
        }
        // Neither status (a missing file) nor verify (an altered one) says all is well.
        let st = run(bk(&root).arg(if damage == "erase" { "status" } else { "verify" }));
        assert_eq!(st.status.code(), Some(3), "{damage}: {}", text(&st));
        let dry = run(bk(&root).args(["install", "--refresh", "--dry-run"]));
        assert_eq!(dry.status.code(), Some(0), "{damage}: {}", text(&dry));
        let out = run(bk(&root).args(["install", "--refresh"]));
        assert_eq!(out.status.code(), Some(0), "{damage}: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("from the store"), "{damage}: {said}");
        assert_eq!(std::fs::read(&placed).unwrap(), want, "{damage}");
        let st = run(bk(&root).arg("status"));
        assert_eq!(st.status.code(), Some(0), "{damage}: {}", text(&st));
    }

    // What kernel-install runs for a new kernel works for a non-critical driver too.
    std::fs::remove_file(&placed).unwrap();
    let (_, k3) = copies(&s.kver);
    s.root.add_kernel(&s.newer, &k3, &s.symvers);
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-install/45-bootkmod.install");
    let out = run(Command::new("sh")
        .arg(&plugin)
        .args(["add", &k3])
        .env("BOOTKMOD_ROOT", &root)
        .env("BOOTKMOD", common::bootkmod_bin()));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&placed).unwrap(), want);
    assert!(s.root.at(format!("/lib/modules/{k3}/weak-updates/bkram/bkram.ko")).is_symlink());
}

#[test]
fn remove_works_after_a_failed_refresh() {
    let Some(s) = Setup::new() else { return };
    let (k2, _) = copies(&s.kver);
    let root = s.root.path().to_path_buf();
    s.root.add_kernel(&s.newer, &s.kver, &s.symvers);
    s.root.add_kernel(&s.newer, &k2, &s.symvers);
    let originals: Vec<(PathBuf, String)> = [&s.kver, &k2]
        .iter()
        .map(|k| {
            let p = s.root.at(format!("/boot/initrd.img-{k}"));
            let d = sha(&p);
            (p, d)
        })
        .collect();
    let out = run(bk(&root).args(["install", "--root-critical"]).arg(&s.bkram));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The placed file and its stored copy both gone: the refresh cannot go on at all.
    let placed = s.root.at(format!("/lib/modules/{}/extra/bkram/bkram.ko", s.kver));
    std::fs::remove_file(&placed).unwrap();
    for e in std::fs::read_dir(root.join("var/lib/bootkmod/store")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let out = run(bk(&root).args(["install", "--refresh"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let l = ledger(&root);
    assert!(l["journal"].is_null(), "a failure is recorded, not left pending: {l:#}");
    assert_eq!(l["failed"]["operation"], "refresh", "{l:#}");
    let st = run(bk(&root).arg("status"));
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
    let shown = String::from_utf8_lossy(&st.stdout);
    assert!(shown.starts_with("!!! the refresh failed"), "{shown}");
    assert!(shown.contains("next: bootkmod install --refresh"), "{shown}");

    // Meanwhile another writer replaced a kernel's image (here with garbage): status
    // still reports every kernel.
    let garbage = b"garbage, not an initramfs";
    std::fs::write(&originals[1].0, garbage).unwrap();
    let st = run(bk(&root).arg("status"));
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));

    // The admin backs out: remove works, puts back the image bootkmod wrote and never
    // reverts the other writer's (issue 18).
    let out = run(bk(&root).args(["remove", "bkram"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sha(&originals[0].0), originals[0].1, "restored byte for byte");
    assert_eq!(std::fs::read(&originals[1].0).unwrap(), garbage, "the other writer's image");
    assert!(!s.root.at(format!("/lib/modules/{k2}/weak-updates/bkram")).exists());
    let l = ledger(&root);
    assert!(l["journal"].is_null() && l["failed"].is_null(), "{l:#}");
    let st = run(bk(&root).arg("status"));
    assert_eq!(st.status.code(), Some(0), "{}", text(&st));
}

#[test]
fn reports_say_only_what_happened() {
    let Some(s) = Setup::new() else { return };
    let (k2, _) = copies(&s.kver);
    let root = s.root.path().to_path_buf();
    s.root.add_kernel(&s.newer, &s.kver, &s.symvers);
    s.root.add_kernel(&s.newer, &k2, &s.symvers);
    let kernels = [s.kver.clone(), k2.clone()];
    let digests = || -> Vec<(String, String, String)> {
        kernels
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    sha(&s.root.at(format!("/boot/initrd.img-{k}"))),
                    sha(&s.root.at(format!("/lib/modules/{k}/modules.dep.bin"))),
                )
            })
            .collect()
    };
    // Each "updated" / "rewritten" line must be backed by a changed digest, and each
    // changed digest by a line.
    let check = |before: &[(String, String, String)], out: &Output| {
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = digests();
        let about = |l: &str, k: &str| l.split_whitespace().next() == Some(k);
        for ((k, image, dep), (_, image2, dep2)) in before.iter().zip(&after) {
            let restored = format!("restored /boot/initrd.img-{k}");
            let updated = said.lines().any(|l| {
                about(l, k) && l.contains(" image ") && l.contains("updated by injection")
            }) || said.lines().any(|l| l.trim_end() == restored);
            assert_eq!(updated, image != image2, "{k} image line vs digest:\n{said}");
            let rewritten = said.lines().any(|l| about(l, k) && l.contains("indexes rewritten"));
            assert_eq!(rewritten, dep != dep2, "{k} depmod line vs digest:\n{said}");
        }
    };
    let before = digests();
    let out = run(bk(&root).arg("install").arg(&s.bkram));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check(&before, &out);
    // Nothing new: a refresh touches nothing and says so.
    let before = digests();
    let out = run(bk(&root).args(["install", "--refresh"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check(&before, &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"), "{}", text(&out));
    // Only kernel 2's image was replaced by its original: only it is updated.
    std::fs::write(s.root.at(format!("/boot/initrd.img-{k2}")), tiny_image(&k2)).unwrap();
    let before = digests();
    let out = run(bk(&root).args(["install", "--refresh"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check(&before, &out);
    // remove rewrites both trees' indexes and restores both images.
    let before = digests();
    let out = run(bk(&root).args(["remove", "bkram"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check(&before, &out);
}
