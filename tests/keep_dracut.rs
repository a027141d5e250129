//! Debian's real dracut with `dracut-module/90bootkmod` builds an image that carries the
//! installed driver (seen by bootkmod's own `initramfs ls` and by dracut's `lsinitrd`),
//! and refuses, naming driver, kernel and reason, to build one for a kernel whose
//! symvers breaks a symbol the root-critical driver uses.

mod common;

use common::keep::{assert_image_carries_bkram, break_symbol, dracut_with_bootkmod, Setup};
use common::machine::synthetic_release;
use common::{bootkmod, run, tool};
use std::path::Path;
use std::process::Command;

#[test]
fn dracut_module_carries_the_driver_or_refuses() {
    let Some(dracut) = tool("dracut") else { return };
    let Some(lsinitrd) = tool("lsinitrd") else { return };
    let Some(Setup { kver, newer, symvers, bkram, root, scratch: build }) = Setup::new() else {
        return;
    };
    let kbreak = synthetic_release(&kver, "kbreak");
    let kbreak = kbreak.as_str();
    root.add_kernel(&newer, &kver, &symvers);
    root.add_kernel(&newer, kbreak, &break_symbol(&symvers, "put_disk"));
    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical"])
        .arg(&bkram));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));

    // dracut's own modules plus ours, without touching the host's /usr/lib/dracut.
    let base = build.path().join("dracut");
    dracut_with_bootkmod(&base);
    let bin = common::bootkmod_bin();
    let dracut_for = |release: &str, image: &Path| {
        run(Command::new(&dracut)
            .args(["--no-hostonly", "--force", "--no-compress", "--no-early-microcode"])
            .args(["--modules", "bootkmod"])
            .arg("--kmoddir")
            .arg(root.at(format!("/lib/modules/{release}")))
            .arg(image)
            .arg(release)
            .env("dracutbasedir", &base)
            .env("BOOTKMOD_ROOT", root.path())
            // dracut resets PATH to the system's: name the binary under test.
            .env("BOOTKMOD", &bin))
    };

    let image = build.path().join("good.img");
    let out = dracut_for(&kver, &image);
    assert!(out.status.success(), "dracut failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_image_carries_bkram(&image, &kver, &lsinitrd);

    let image = build.path().join("break.img");
    let out = dracut_for(kbreak, &image);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dracut must refuse {kbreak}");
    assert!(err.contains("bkram") && err.contains(kbreak) && err.contains("put_disk"), "{err}");
}
