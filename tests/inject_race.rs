//! A writer that takes no lock (dracut, `update-initramfs`) renames its new image over
//! the one bootkmod is injecting into, at the worst moment: after bootkmod's last check
//! of the image and before its own rename. bootkmod is stopped right there by its test
//! hook (`BOOTKMOD_FAILPOINT=staged:exchange=stop`, debug builds only), the other writer's
//! rename is done the way dracut finishes (`mv -f` of a temp file in the same directory,
//! with an image made by the real cpio and compressor), then bootkmod goes on. Neither
//! write may be lost: the other writer's image stays, byte for byte; bootkmod says it
//! changed nothing (exit 1) and, run again, lands its driver on that image, which kmod's
//! `modprobe` then resolves together with the other writer's driver.

mod common;

use common::inject::base_image;
use common::{bootkmod, bootkmod_hooked, run, tool};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STOP_AT_EXCHANGE: &str = "staged:exchange=stop";

/// Start `bootkmod inject --image IMAGE megaraid_sas` and wait until its hook stopped it.
fn inject_stopped_before_exchange(image: &Path) -> Child {
    let mut child = bootkmod_hooked()
        .args(["inject", "--image"])
        .arg(image)
        .arg("megaraid_sas")
        .env("BOOTKMOD_FAILPOINT", STOP_AT_EXCHANGE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "bootkmod ended ({status}) before its hook stopped it: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if process_state(child.id()) == Some('T') {
            return child;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "bootkmod never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of a process (`T` when stopped), from `/proc/PID/stat`.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn resume(child: Child) -> Output {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT).unwrap();
    child.wait_with_output().unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bootkmod-"))
        .collect()
}

/// kmod's `modprobe` resolves `driver` in the image's extracted tree.
fn resolves(modprobe: &Path, image: &Path, release: &str, driver: &str) -> bool {
    let root = tempfile::tempdir().unwrap();
    let out = run(bootkmod().args(["initramfs", "extract"]).arg(image).arg(root.path()));
    assert!(out.status.success(), "extract: {}", String::from_utf8_lossy(&out.stderr));
    let out = run(Command::new(modprobe).arg("-d").arg(root.path()).args([
        "-S",
        release,
        "--show-depends",
        driver,
    ]));
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("/{driver}.ko"))
}

#[test]
fn a_rename_by_another_writer_at_the_worst_moment_loses_no_write() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let Some(mv) = tool("mv") else { return };
    let Some((tmp, image)) = base_image(&release, &["ext4"], "/dev/sda", "gzip") else {
        return;
    };
    // dracut's image: the same kernel, another driver set.
    let Some((_theirs_dir, theirs)) = base_image(&release, &["ext4", "xfs"], "/dev/sda", "gzip")
    else {
        return;
    };
    let ours_before = fs::read(&image).unwrap();
    let theirs_bytes = fs::read(&theirs).unwrap();
    assert_ne!(ours_before, theirs_bytes);
    let backup =
        tmp.path().join(format!("{}.bootkmod.bak", image.file_name().unwrap().to_string_lossy()));

    // Control: stopped at the same point with nobody else writing, the run completes and
    // keeps the image it read as the backup, so the stop itself changes nothing.
    let control = tempfile::tempdir().unwrap();
    let control_image = control.path().join(image.file_name().unwrap());
    fs::copy(&image, &control_image).unwrap();
    let out = resume(inject_stopped_before_exchange(&control_image));
    assert!(out.status.success(), "control: {}", String::from_utf8_lossy(&out.stderr));
    let control_backup = control.path().join(backup.file_name().unwrap());
    assert_eq!(fs::read(&control_backup).unwrap(), ours_before, "control: backup");
    assert!(resolves(&modprobe, &control_image, &release, "megaraid_sas"));
    assert!(leftovers(control.path()).is_empty(), "{:?}", leftovers(control.path()));

    // The race: dracut renames its image in while bootkmod stands between its last check
    // and its rename.
    let child = inject_stopped_before_exchange(&image);
    let dracut_temp = tmp.path().join(format!(
        "{}.{}",
        image.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    fs::copy(&theirs, &dracut_temp).unwrap();
    let moved = run(Command::new(&mv).arg("-f").arg(&dracut_temp).arg(&image));
    assert!(moved.status.success(), "mv: {}", String::from_utf8_lossy(&moved.stderr));
    let out = resume(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "bootkmod must report the race: {stderr}");
    assert!(stderr.contains("another writer"), "{stderr}");
    assert_eq!(fs::read(&image).unwrap(), theirs_bytes, "dracut's image was overwritten");
    assert!(!backup.exists(), "bootkmod replaced nothing, so it keeps no backup");
    assert!(leftovers(tmp.path()).is_empty(), "{:?}", leftovers(tmp.path()));

    // bootkmod's write is not lost either: run again, it lands on dracut's image.
    let out = run(bootkmod().args(["inject", "--image"]).arg(&image).arg("megaraid_sas"));
    assert!(out.status.success(), "again: {}", String::from_utf8_lossy(&out.stderr));
    assert!(fs::read(&image).unwrap().starts_with(&theirs_bytes), "appended to dracut's image");
    assert_eq!(fs::read(&backup).unwrap(), theirs_bytes, "the backup is dracut's image");
    for driver in ["megaraid_sas", "xfs"] {
        assert!(resolves(&modprobe, &image, &release, driver), "{driver} is not in the image");
    }
}
