//! Concurrency and crash safety of install/remove: runs serialize on the ledger's flock,
//! and a run killed with SIGKILL at any journaled step is completed by the next run.

mod common;

use common::check::build_bkram;
use common::keep::{snapshot, Source, TargetRoot};
use common::machine::synthetic_release;
use common::{bootkmod, bootkmod_hooked, hooked, installed_kernel, run};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Setup {
    root: TargetRoot,
    bkram: PathBuf,
    kver: String,
    /// A kABI copy of the installed kernel (`common::machine::synthetic_release`).
    kabi: String,
    _build: tempfile::TempDir,
}

fn setup() -> Option<Setup> {
    let kver = installed_kernel()?;
    let build = tempfile::tempdir().unwrap();
    let bkram = build_bkram(&kver, build.path())?;
    let newer = Source::of(&kver, &kver)?;
    let root = TargetRoot::new();
    let symvers = newer.symvers();
    root.add_kernel(&newer, &kver, &symvers);
    let kabi = synthetic_release(&kver, "kabi");
    root.add_kernel(&newer, &kabi, &symvers);
    Some(Setup { root, bkram, kver, kabi, _build: build })
}

impl Setup {
    fn link(&self) -> PathBuf {
        self.root.at(format!("/lib/modules/{}/weak-updates/bkram/bkram.ko", self.kabi))
    }
    fn placed(&self) -> PathBuf {
        self.root.at(format!("/lib/modules/{}/extra/bkram/bkram.ko", self.kver))
    }
    fn ledger(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.root.at("/var/lib/bootkmod/ledger.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
    fn install(&self, module: &Path) -> std::process::Command {
        let mut c = bootkmod();
        c.arg("--root").arg(self.root.path()).arg("install").arg(module);
        c.stdout(std::process::Stdio::null());
        c
    }
}

#[test]
fn concurrent_installs_serialize() {
    let Some(s) = setup() else { return };
    // Hold the lock: an install must wait for it, having changed nothing.
    let dir = s.root.at("/var/lib/bootkmod");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join("lock")).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut waiting = s.install(&s.bkram).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(waiting.try_wait().unwrap().is_none(), "install did not wait for the lock");
    assert!(!s.placed().exists() && !dir.join("ledger.json").exists());
    drop(held);
    assert!(waiting.wait().unwrap().success());
    assert!(s.link().is_symlink());

    // Two at once (a second install of the same file and a refresh): both succeed,
    // the ledger is whole and no temporary file is left behind.
    let mut a = s.install(&s.bkram).spawn().unwrap();
    let mut b =
        bootkmod().arg("--root").arg(s.root.path()).args(["install", "--refresh"]).spawn().unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let ledger = s.ledger();
    assert!(ledger["journal"].is_null());
    assert_eq!(ledger["modules"]["bkram"]["builds"][0]["built_for"], s.kver.as_str());
    // A re-run with nothing new changes nothing: same files, links, indexes, images.
    let trees = snapshot(&s.root.at("/lib/modules"));
    let boot = snapshot(&s.root.at("/boot"));
    assert!(run(&mut s.install(&s.bkram)).status.success());
    assert_eq!(snapshot(&s.root.at("/lib/modules")), trees, "idempotent re-run rewrote a tree");
    assert_eq!(snapshot(&s.root.at("/boot")), boot, "idempotent re-run rewrote an image");
    for d in [dir.clone(), s.placed().parent().unwrap().to_path_buf()] {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.contains(".bootkmod-"), "leftover {n} in {}", d.display());
        }
    }
}

#[test]
fn sigkill_mid_install_is_completed_by_the_next_run() {
    let Some(s) = setup() else { return };
    // Killed after journaling, before placing anything; the source file then vanishes:
    // the next run completes from the store.
    let staged = s.root.path().join("bkram.ko");
    std::fs::copy(&s.bkram, &staged).unwrap();
    let out = run(hooked(&s.install(&staged)).env("BOOTKMOD_FAILPOINT", "install:journaled"));
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert_eq!(s.ledger()["journal"]["op"], "install");
    assert!(!s.placed().exists());
    std::fs::remove_file(&staged).unwrap();
    let out = run(bootkmod().arg("--root").arg(s.root.path()).args(["install", "--refresh"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed the interrupted install"));
    assert_eq!(std::fs::read(s.placed()).unwrap(), std::fs::read(&s.bkram).unwrap());
    assert!(s.link().is_symlink());
    assert!(s.ledger()["journal"].is_null());

    // Killed after placing the file, before linking and depmod: status (read-only)
    // still works, the next run links it.
    run(bootkmod().arg("--root").arg(s.root.path()).args(["remove", "bkram"]));
    assert!(!s.placed().exists() && !s.link().exists());
    let out = run(hooked(&s.install(&s.bkram)).env("BOOTKMOD_FAILPOINT", "install:placed"));
    assert_eq!(out.status.signal(), Some(9));
    assert!(s.placed().exists() && !s.link().exists());
    let out = run(bootkmod().arg("--root").arg(s.root.path()).arg("status"));
    assert!(out.status.code().is_some(), "status must run beside a journal");
    let out = run(bootkmod().arg("--root").arg(s.root.path()).arg("verify"));
    assert!(out.status.code().is_some());
    let out = run(&mut s.install(&s.bkram));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(s.link().is_symlink());
    let dep =
        std::fs::read_to_string(s.root.at(format!("/lib/modules/{}/modules.dep", s.kabi))).unwrap();
    assert!(dep.contains("weak-updates/bkram/bkram.ko"), "{dep}");

    // Killed mid-remove, after unlinking: the next run finishes the removal.
    let out = run(bootkmod_hooked()
        .arg("--root")
        .arg(s.root.path())
        .args(["remove", "bkram"])
        .env("BOOTKMOD_FAILPOINT", "remove:unlinked"));
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(s.ledger()["journal"]["op"], "remove");
    let out = run(bootkmod().arg("--root").arg(s.root.path()).args(["install", "--refresh"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger = s.ledger();
    assert!(ledger["journal"].is_null() && ledger["modules"].as_object().unwrap().is_empty());
    assert!(!s.placed().exists() && !s.link().exists());
    let dep =
        std::fs::read_to_string(s.root.at(format!("/lib/modules/{}/modules.dep", s.kabi))).unwrap();
    assert!(!dep.contains("bkram"), "{dep}");
}
