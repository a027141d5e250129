//! `install --regenerate`: the target's own dracut, run chrooted into `--root`, rebuilds
//! the image, and its 90bootkmod module carries the driver; the ledger records the new
//! image (status: in the image, unchanged) and the backup remove restores. A root
//! without dracut is refused before anything changes.
//!
//! The chroot-able target (`common::chroot`) is built in a private mount namespace,
//! never touching the host's `/boot` or `/lib/modules`; dracut's modules there are a
//! copy of `/usr/lib/dracut` holding the repository's `90bootkmod`.

mod common;

use common::check::build_bkram;
use common::chroot::{Builder, ChrootTarget};
use common::keep::{
    assert_image_carries_bkram, fingerprint, fingerprint_diff, json_of, snapshot, Setup, Source,
    TargetRoot,
};
use common::{bootkmod, installed_kernel, run, tool};
use std::path::Path;
use std::process::Output;

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
    let target = ChrootTarget::new(stage, Builder::Dracut);
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
