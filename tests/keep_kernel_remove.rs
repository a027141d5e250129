//! `kernel-install remove` through the 45-bootkmod plugin, run the way kernel-install
//! runs it (`remove KVER`, `BOOTKMOD_ROOT`): bootkmod's weak-updates links for the kernel
//! and the directories they leave empty go, its image backup and ledger entry go, status
//! stops listing it; both when the plugin runs before the package deletes the tree
//! (RPM's order) and when the tree is already gone; a kernel bootkmod never saw, and a
//! second removal, change nothing.

mod common;

use common::keep::{fingerprint, fingerprint_diff, json_of, Setup, TargetRoot};
use common::machine::synthetic_release;
use common::{bootkmod, bootkmod_hooked, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// kABI copies of the installed kernel `kver`, named after it (they sort after it):
/// `first` is removed while its tree is still there (the plugin runs first), `gone` after
/// its package deleted the tree, `stays` stays installed.
fn copies(kver: &str) -> [String; 3] {
    ["kabi", "kabi2", "kabi3"].map(|tag| synthetic_release(kver, tag))
}

fn plugin(root: &Path, command: &str, release: &str) -> std::process::Output {
    run(Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-install/45-bootkmod.install"),
    )
    .args([command, release, "/boot/efi/x"])
    .env("BOOTKMOD_ROOT", root)
    .env("BOOTKMOD", common::bootkmod_bin()))
}

fn ledger(root: &TargetRoot) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.at("/var/lib/bootkmod/ledger.json")).unwrap())
        .unwrap()
}

fn backup_of(root: &TargetRoot, release: &str) -> PathBuf {
    let b = ledger(root)["kernels"][release]["image"]["backup"].as_str().map(PathBuf::from);
    root.at(b.unwrap_or_else(|| panic!("no image backup recorded for {release}")))
}

fn listed_by_status(root: &TargetRoot) -> Vec<String> {
    let out = run(bootkmod().arg("--root").arg(root.path()).args(["--json", "status"]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    json_of(&out)["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["release"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kernel_install_remove_drops_bootkmods_traces_for_the_kernel() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: _scratch }) = Setup::new() else {
        return;
    };
    let [first, gone, stays] = copies(&kver);
    let [first, gone, stays] = [&first, &gone, &stays].map(String::as_str);
    for release in [kver.as_str(), first, gone, stays] {
        root.add_kernel(&newer, release, &symvers);
    }
    // A kernel removed before bootkmod ever ran: the plugin does nothing (no ledger).
    let untouched = fingerprint(root.path());
    let out = plugin(root.path(), "remove", stays);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(fingerprint_diff(&untouched, &fingerprint(root.path())).is_empty());

    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical"])
        .arg(&bkram));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let link =
        |release: &str| root.at(format!("/lib/modules/{release}/weak-updates/bkram/bkram.ko"));
    for release in [first, gone, stays] {
        assert!(link(release).is_symlink(), "{release}");
    }
    let first_backup = backup_of(&root, first);
    let gone_backup = backup_of(&root, gone);
    assert!(first_backup.is_file() && gone_backup.is_file());

    // RPM's order: kernel-install remove runs while the tree is still installed.
    let out = plugin(root.path(), "remove", first);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !link(first).exists()
            && !root.at(format!("/lib/modules/{first}/weak-updates/bkram")).exists()
    );
    // The package still owns the rest of the tree; its indexes no longer list bkram.
    assert!(root.at(format!("/lib/modules/{first}/kernel")).is_dir());
    let dep =
        std::fs::read_to_string(root.at(format!("/lib/modules/{first}/modules.dep"))).unwrap();
    assert!(!dep.contains("bkram"), "{dep}");
    assert!(!first_backup.exists(), "{} kept", first_backup.display());
    assert!(ledger(&root)["kernels"].get(first).is_none());
    assert!(text.contains("unlinked") && text.contains("forgotten"), "{text}");
    assert!(!listed_by_status(&root).contains(&first.to_string()), "status still lists {first}");
    // ... then the package deletes its files.
    std::fs::remove_dir_all(root.at(format!("/lib/modules/{first}"))).unwrap();
    assert!(!listed_by_status(&root).contains(&first.to_string()));

    // Debian's order: the package deleted what it owns; bootkmod's link is what is left.
    let tree = root.at(format!("/lib/modules/{gone}"));
    for e in std::fs::read_dir(&tree).unwrap().flatten() {
        if e.file_name() != "weak-updates" {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    assert!(link(gone).is_symlink());
    let out = plugin(root.path(), "remove", gone);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!tree.exists(), "the emptied tree of {gone} is left behind");
    assert!(!gone_backup.exists());
    assert!(ledger(&root)["kernels"].get(gone).is_none());

    // The kernels that stay are untouched and safe; running remove again changes nothing.
    // status lists kernels in byte order of their releases (model::kernel::releases).
    let listed = listed_by_status(&root);
    let mut expected = [kver.clone(), stays.to_string()];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(link(stays).is_symlink());
    let before = fingerprint(root.path());
    for release in [first, gone, "6.1.0-99-never-seen"] {
        let out = plugin(root.path(), "remove", release);
        assert!(out.status.success(), "{release}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let diff = fingerprint_diff(&before, &fingerprint(root.path()));
    assert!(diff.is_empty(), "a repeated removal changed:\n{}", diff.join("\n"));
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("verify"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // kernel-install add of the same release again takes it back.
    root.add_kernel(&newer, first, &symvers);
    let out = plugin(root.path(), "add", first);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(link(first).is_symlink());
    assert!(listed_by_status(&root).contains(&first.to_string()));
}

/// A `remove --kernel` killed after unlinking, before depmod: the journal makes the next
/// run finish it (indexes rewritten, backup and ledger entry gone).
#[test]
fn a_killed_kernel_removal_is_completed_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: _scratch }) = Setup::new() else {
        return;
    };
    let [first, ..] = copies(&kver);
    let first = first.as_str();
    root.add_kernel(&newer, &kver, &symvers);
    root.add_kernel(&newer, first, &symvers);
    let out = run(bootkmod().arg("--root").arg(root.path()).arg("install").arg(&bkram));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let backup = backup_of(&root, first);
    let dep = root.at(format!("/lib/modules/{first}/modules.dep"));
    assert!(std::fs::read_to_string(&dep).unwrap().contains("weak-updates/bkram"));

    let out = run(bootkmod_hooked()
        .arg("--root")
        .arg(root.path())
        .args(["remove", "--kernel", first])
        .env("BOOTKMOD_FAILPOINT", "remove-kernel:unlinked"));
    assert_eq!(out.status.signal(), Some(9), "the failpoint must kill it");
    assert!(!root.at(format!("/lib/modules/{first}/weak-updates/bkram")).exists());
    assert!(
        std::fs::read_to_string(&dep).unwrap().contains("weak-updates/bkram"),
        "killed before depmod"
    );
    assert!(ledger(&root)["journal"]["op"] == "forget-kernel", "{}", ledger(&root));

    let out = run(bootkmod().arg("--root").arg(root.path()).args(["install", "--refresh"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("completed the interrupted removal of kernel {first}")),
        "{text}"
    );
    assert!(!std::fs::read_to_string(&dep).unwrap().contains("bkram"));
    assert!(!backup.exists());
    let l = ledger(&root);
    assert!(l["journal"].is_null() && l["kernels"].get(first).is_none(), "{l:#}");
    assert!(!listed_by_status(&root).contains(&first.to_string()));
}
