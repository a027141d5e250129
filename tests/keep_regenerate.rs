//! `install --regenerate`: the target's own dracut, run chrooted into `--root`, rebuilds
//! the image, and its 90bootkmod module carries the driver; the ledger records the new
//! image (status: in the image, unchanged) and the backup remove restores. A root
//! without dracut is refused before anything changes.
//!
//! The chroot-able target is built in a private mount namespace (`unshare --mount
//! --propagation private`), never touching the host's `/boot` or `/lib/modules`: the
//! host's `/usr` read-only (Debian 12 is merged-usr, so `bin`, `lib`, `lib64`, `sbin`
//! are links into it), the few files dracut reads from `/etc` read-only, the test
//! kernel's tree over `usr/lib/modules`, its headers over `usr/src`, a copy of
//! `/usr/lib/dracut` holding the repository's `90bootkmod` over `usr/lib/dracut`, and
//! the bootkmod binary under test at `/opt/bootkmod/bin/bootkmod`. `/boot` and
//! `/var` are the test's own directories, so the image dracut wrote outlives the
//! namespace.

mod common;

use common::check::build_bkram;
use common::keep::{
    assert_image_carries_bkram, dracut_with_bootkmod, fingerprint, fingerprint_diff, json_of,
    snapshot, Setup, Source, TargetRoot,
};
use common::{bootkmod, installed_kernel, run, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the bootkmod under test is inside the target (dracut runs it from there).
const TARGET_BOOTKMOD: &str = "/opt/bootkmod/bin/bootkmod";
/// Host files dracut reads from `/etc`, bound read-only into the target.
const ETC_FILES: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "dracut.conf",
];

/// A target root dracut can be chrooted into, assembled anew in each namespace.
struct ChrootTarget {
    dir: tempfile::TempDir,
    /// The kernel tree, headers and initial image (a [`TargetRoot`]).
    stage: TargetRoot,
    /// `/usr/lib/dracut` plus `modules.d/90bootkmod`.
    dracut: PathBuf,
    _work: tempfile::TempDir,
}

impl ChrootTarget {
    fn new(stage: TargetRoot) -> ChrootTarget {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for (link, to) in
            [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")]
        {
            std::os::unix::fs::symlink(to, t.join(link)).unwrap();
        }
        for d in [
            "usr",
            "etc/dracut.conf.d",
            "boot",
            "var/tmp",
            "tmp",
            "dev",
            "proc",
            "sys",
            "run",
            "opt/bootkmod/bin",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        for f in ETC_FILES {
            let host = Path::new("/etc").join(f);
            if host.is_dir() {
                std::fs::create_dir(t.join("etc").join(f)).unwrap();
            } else if host.exists() {
                std::fs::write(t.join("etc").join(f), b"").unwrap();
            }
        }
        std::os::unix::fs::symlink("../usr/lib/os-release", t.join("etc/os-release")).unwrap();
        // The target's dracut configuration: a generic image (this host's devices mean
        // nothing to the target), uncompressed and without microcode to keep it quick.
        std::fs::write(
            t.join("etc/dracut.conf.d/50-test.conf"),
            "hostonly=\"no\"\ncompress=\"cat\"\nearly_microcode=\"no\"\n",
        )
        .unwrap();
        std::fs::write(t.join(TARGET_BOOTKMOD.trim_start_matches('/')), b"").unwrap();
        for e in std::fs::read_dir(stage.at("/boot")).unwrap().flatten() {
            std::fs::copy(e.path(), t.join("boot").join(e.file_name())).unwrap();
        }
        let work = tempfile::tempdir().unwrap();
        let dracut = work.path().join("dracut");
        dracut_with_bootkmod(&dracut);
        ChrootTarget { dir, stage, dracut, _work: work }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run `argv` in a private mount namespace where the target is assembled.
    fn run_inside(&self, argv: &[&std::ffi::OsStr]) -> Output {
        let t = self.path().display().to_string();
        let mut script = String::from("set -e\n");
        let mut bind_ro = |from: &str, to: &str| {
            script +=
                &format!("mount --bind '{from}' '{t}{to}'\nmount -o remount,bind,ro '{t}{to}'\n");
        };
        bind_ro("/usr", "/usr");
        bind_ro(&self.dracut.display().to_string(), "/usr/lib/dracut");
        bind_ro(env!("CARGO_BIN_EXE_bootkmod"), TARGET_BOOTKMOD);
        for f in ETC_FILES.iter().filter(|f| Path::new("/etc").join(f).exists()) {
            bind_ro(&format!("/etc/{f}"), &format!("/etc/{f}"));
        }
        // The test kernel's tree is written by install (read-write); its headers not.
        script += &format!(
            "mount --bind '{}' '{t}/usr/lib/modules'\n",
            self.stage.at("/lib/modules").display()
        );
        script += &format!(
            "mount --bind '{}' '{t}/usr/src'\nmount -o remount,bind,ro '{t}/usr/src'\n",
            self.stage.at("/usr/src").display()
        );
        script += &format!(
            "mount --rbind /dev '{t}/dev'\nmount -t proc proc '{t}/proc'\nmount --rbind /sys '{t}/sys'\nexec \"$@\"\n"
        );
        run(Command::new(tool("unshare").unwrap())
            .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
            .args(argv)
            // dracut runs the target's bootkmod (its PATH is reset to the system's).
            .env("BOOTKMOD", TARGET_BOOTKMOD))
    }

    /// `bootkmod --root TARGET ARGS...` inside the namespace.
    fn bootkmod(&self, args: &[&str]) -> Output {
        let mut argv: Vec<&std::ffi::OsStr> = vec![
            env!("CARGO_BIN_EXE_bootkmod").as_ref(),
            "--root".as_ref(),
            self.path().as_os_str(),
        ];
        argv.extend(args.iter().map(std::ffi::OsStr::new));
        self.run_inside(&argv)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn regenerate_runs_the_targets_own_dracut_in_a_chroot() {
    let Some(kver) = installed_kernel() else { return };
    let Some(_dracut) = tool("dracut") else { return };
    let Some(lsinitrd) = tool("lsinitrd") else { return };
    let Some(_unshare) = tool("unshare") else { return };
    // Mounting in a new namespace needs CAP_SYS_ADMIN; CI runs the tests as root.
    let Some(()) = common::need_root("building the target in a mount namespace (unshare)") else {
        return;
    };
    let Some(newer) = Source::of(&kver, &kver) else { return };
    let build = tempfile::tempdir().unwrap();
    let Some(bkram) = build_bkram(&kver, build.path()) else { return };
    let host_boot = snapshot(Path::new("/boot"));
    let host_modules = snapshot(Path::new("/lib/modules"));

    let stage = TargetRoot::new();
    stage.add_kernel(&newer, &kver, &newer.symvers());
    let target = ChrootTarget::new(stage);
    let image_rel = format!("/boot/initrd.img-{kver}");
    let image = target.path().join(image_rel.trim_start_matches('/'));
    let original = std::fs::read(&image).unwrap();

    // A dry run first: it names the regeneration and changes nothing (the target's own
    // files and the kernel tree bound into it).
    let before = (fingerprint(target.path()), fingerprint(target.stage.path()));
    let bkram_arg = bkram.display().to_string();
    let out = target.bootkmod(&[
        "--json",
        "install",
        "--regenerate",
        "--root-critical",
        "--dry-run",
        &bkram_arg,
    ]);
    assert_eq!(out.status.code(), Some(0), "install --regenerate --dry-run:\n{}", stderr(&out));
    let planned = json_of(&out);
    let rec = &planned["kernels"][0]["record"]["image"];
    assert_eq!(rec["method"], "regenerate", "{planned:#}");
    assert!(rec["note"].as_str().unwrap().contains("dracut would rebuild"), "{planned:#}");
    let after = (fingerprint(target.path()), fingerprint(target.stage.path()));
    let diff =
        [fingerprint_diff(&before.0, &after.0), fingerprint_diff(&before.1, &after.1)].concat();
    assert!(diff.is_empty(), "the dry run changed:\n{}", diff.join("\n"));

    let out =
        target.bootkmod(&["--json", "install", "--regenerate", "--root-critical", &bkram_arg]);
    assert_eq!(out.status.code(), Some(0), "install --regenerate failed:\n{}", stderr(&out));
    let report = json_of(&out);
    let k = &report["kernels"][0];
    assert_eq!(k["release"], kver.as_str());
    let rec = &k["record"]["image"];
    assert_eq!(rec["path"], image_rel.as_str(), "{report:#}");
    assert_eq!(rec["method"], "regenerate", "{report:#}");
    assert_eq!(rec["updated"], true);

    // The image dracut wrote holds the driver where the tree has it, loaded early.
    let written = std::fs::read(&image).unwrap();
    assert_ne!(written, original, "the image was not rebuilt");
    assert_eq!(rec["sha256"], bootkmod::model::module::sha256_hex(&written));
    let listing = assert_image_carries_bkram(&image, &kver, &lsinitrd);
    // dracut's own record of the build: this is a dracut image, not an injected one.
    assert!(listing.contains("Version: dracut"), "{listing}");
    let boot: Vec<String> = std::fs::read_dir(target.path().join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(boot.iter().all(|n| !n.starts_with('.')), "temporaries left in /boot: {boot:?}");

    // The first-time backup is the image as it was.
    let backup = rec["backup"].as_str().expect("a backup is recorded");
    assert_eq!(
        std::fs::read(target.path().join(backup.trim_start_matches('/'))).unwrap(),
        original
    );

    // status reads the image itself: the driver is in it, and it is as recorded.
    let out = target.bootkmod(&["--json", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let status = json_of(&out);
    let k = &status["kernels"][0];
    assert_eq!(k["image_unchanged"], true, "{status:#}");
    assert_eq!(k["modules"][0]["in_image"], true, "{status:#}");

    // remove puts the original image back byte for byte.
    let out = target.bootkmod(&["remove", "bkram"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&image).unwrap(), original);

    assert_eq!(snapshot(Path::new("/boot")), host_boot, "host /boot changed");
    assert_eq!(snapshot(Path::new("/lib/modules")), host_modules, "host /lib/modules changed");
}

#[test]
fn regenerate_without_dracut_in_the_root_is_refused_before_any_change() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: _scratch }) = Setup::new() else {
        return;
    };
    root.add_kernel(&newer, &kver, &symvers);
    let before = fingerprint(root.path());
    for dry in [false, true] {
        let mut cmd = bootkmod();
        cmd.arg("--root").arg(root.path()).args(["install", "--regenerate", "--root-critical"]);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = run(cmd.arg(&bkram));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no dracut under") && err.contains("leave out --regenerate"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        let diff = fingerprint_diff(&before, &fingerprint(root.path()));
        assert!(diff.is_empty(), "changed:\n{}", diff.join("\n"));
    }
}
