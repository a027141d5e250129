//! Crash safety: `bootkmod inject` is SIGKILLed at many points while it replaces an image
//! in place; afterwards the image is always either the old one or the complete new one,
//! byte for byte, and decodes. The kill points are spread evenly over the measured
//! duration of a full run (deterministic, no hooks in the binary), in append and in
//! rebuild mode, with and without the backup step.

mod common;

use common::inject::base_image;
use common::{bootkmod, run};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::Path;
use std::time::Instant;

fn args(image: &Path, rebuild: bool, backup: bool) -> Vec<&std::ffi::OsStr> {
    let mut v: Vec<&std::ffi::OsStr> =
        vec!["inject".as_ref(), "--image".as_ref(), image.as_os_str()];
    if rebuild {
        v.push("--rebuild".as_ref());
    }
    if !backup {
        v.push("--no-backup".as_ref());
    }
    v.push("megaraid_sas".as_ref());
    v
}

fn kill_at_many_points(rebuild: bool, backup: bool, runs: u32) {
    let Some(release) = common::installed_kernel() else { return };
    let Some((tmp, base)) = base_image(&release, &["ext4"], "/dev/sda", "gzip") else {
        return;
    };
    let old = fs::read(&base).unwrap();
    let image = tmp.path().join("victim.img");

    // The complete new image, and how long a whole run takes.
    fs::write(&image, &old).unwrap();
    let start = Instant::now();
    let out = run(bootkmod().args(args(&image, rebuild, backup)));
    let full = start.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = fs::read(&image).unwrap();
    assert_ne!(new, old);

    let (mut saw_old, mut saw_new) = (0, 0);
    for i in 0..runs {
        for e in fs::read_dir(tmp.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().contains("bootkmod") {
                let _ = fs::remove_file(e.path());
            }
        }
        fs::write(&image, &old).unwrap();
        // From "just started" to a little past the end of a full run.
        let delay = full.mul_f64(1.1 * f64::from(i) / f64::from(runs));
        let mut child = bootkmod().args(args(&image, rebuild, backup)).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        let now = fs::read(&image).unwrap();
        if now == old {
            saw_old += 1;
        } else if now == new {
            saw_new += 1;
        } else {
            panic!("kill after {delay:?}: the image is neither the old nor the new one");
        }
        let ls = run(bootkmod().args(["initramfs", "ls"]).arg(&image));
        assert!(ls.status.success(), "after a kill at {delay:?} the image does not decode");
        let backup_path = tmp.path().join("victim.img.bootkmod.bak");
        if backup && backup_path.exists() {
            assert_eq!(fs::read(&backup_path).unwrap(), old, "the backup is not the old image");
        }
    }
    eprintln!(
        "rebuild={rebuild} backup={backup}: full run {full:?}; {saw_old} kills left the old image, {saw_new} the new one"
    );
    // The spread must have hit both sides, or the test proved nothing.
    assert!(saw_old > 0 && saw_new > 0, "old {saw_old}, new {saw_new}: kill points missed a side");
}

#[test]
fn killed_while_appending_leaves_old_or_new() {
    kill_at_many_points(false, true, 24);
}

#[test]
fn killed_while_rebuilding_leaves_old_or_new() {
    kill_at_many_points(true, false, 12);
}
