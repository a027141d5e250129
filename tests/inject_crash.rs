//! Crash safety: `bootkmod inject` is SIGKILLed at many points while it replaces an image
//! in place; afterwards the image is always either the old one or the complete new one,
//! byte for byte, and decodes. In append and in rebuild mode, with and without the
//! backup step.
//!
//! The kill points come from what a run does, not from a clock: a first, untouched run
//! is watched (the directory polled as fast as it can be) and what it leaves on disk, in
//! order, defines the points — the staged temp file appearing and growing to a quarter,
//! half, three quarters and all of its final size, the backup link appearing, the image
//! being renamed over. Each later run is killed the moment the directory shows its
//! point, so the same points are hit on a fast machine and a slow one, as root and as
//! any user. Only the stretch before the first visible step (reading and planning) is
//! cut by time, in fractions of how long the watched run took to get there. The last
//! point (image renamed over) leaves the new image; the points before the rename leave
//! the old one: both outcomes are exercised, or the test fails saying which was missed.

mod common;

use common::inject::base_image;
use common::{bootkmod, run};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

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

/// What the directory shows of a run at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Size of the staged temp file (`.NAME.bootkmod-PID.new`), when it exists.
    temp: Option<u64>,
    backup: bool,
    /// The image is no longer the file the run started from (renamed over).
    replaced: bool,
}

fn look(dir: &Path, image: &Path, original_ino: u64) -> Seen {
    let mut seen = Seen { temp: None, backup: false, replaced: false };
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".bootkmod-") && name.ends_with(".new") {
            seen.temp = Some(e.metadata().map_or(0, |m| m.len()));
        } else if name.ends_with(".bootkmod.bak") {
            seen.backup = true;
        }
    }
    seen.replaced = fs::metadata(image).is_ok_and(|m| m.ino() != original_ino);
    seen
}

/// Where a run is killed.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Before anything shows on disk: after this long.
    After(Duration),
    /// The temp file exists with at least this many bytes.
    TempAtLeast(u64),
    Backup,
    Replaced,
}

impl Point {
    fn reached(self, seen: Seen, since: Duration) -> bool {
        match self {
            Point::After(d) => since >= d,
            Point::TempAtLeast(n) => seen.temp.is_some_and(|s| s >= n) || seen.replaced,
            Point::Backup => seen.backup || seen.replaced,
            Point::Replaced => seen.replaced,
        }
    }
}

/// Poll `dir` until `child` exits or `stop` says so; returns the distinct states seen,
/// each with when it was first seen, and whether `stop` fired while the child ran.
fn watch(
    child: &mut Child,
    dir: &Path,
    image: &Path,
    original_ino: u64,
    mut stop: impl FnMut(Seen, Duration) -> bool,
) -> (Vec<(Duration, Seen)>, bool) {
    let start = Instant::now();
    let mut states: Vec<(Duration, Seen)> = Vec::new();
    loop {
        let seen = look(dir, image, original_ino);
        let since = start.elapsed();
        if states.last().is_none_or(|(_, last)| *last != seen) {
            states.push((since, seen));
        }
        if stop(seen, since) {
            return (states, true);
        }
        if child.try_wait().unwrap().is_some() {
            return (states, false);
        }
        std::thread::yield_now();
    }
}

fn clean(dir: &Path) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().contains("bootkmod") {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn kill_at_the_points_a_run_shows(rebuild: bool, backup: bool, time_cuts: u32) {
    let Some(release) = common::installed_kernel() else { return };
    let Some((tmp, base)) = base_image(&release, &["ext4"], "/dev/sda", "gzip") else {
        return;
    };
    let old = fs::read(&base).unwrap();
    let dir = tmp.path().join("boot");
    fs::create_dir_all(&dir).unwrap();
    let image: PathBuf = dir.join("victim.img");

    // The watched run: the complete new image, and the steps it shows on disk.
    fs::write(&image, &old).unwrap();
    let ino = fs::metadata(&image).unwrap().ino();
    let mut child = bootkmod().args(args(&image, rebuild, backup)).spawn().unwrap();
    let (trace, _) = watch(&mut child, &dir, &image, ino, |_, _| false);
    let status = child.wait().unwrap();
    assert!(status.success(), "the watched run failed: {status}");
    let new = fs::read(&image).unwrap();
    assert_ne!(new, old);
    let first_visible = trace.iter().find(|(_, s)| s.temp.is_some() || s.backup || s.replaced);
    let temp_size = trace.iter().filter_map(|(_, s)| s.temp).max();
    let (Some(&(first_visible, _)), Some(temp_size)) = (first_visible, temp_size) else {
        panic!("the watched run showed no staged temp file on disk: {trace:?}");
    };

    let mut points: Vec<Point> = (0..time_cuts)
        .map(|i| Point::After(first_visible.mul_f64(f64::from(i) / f64::from(time_cuts))))
        .collect();
    points.extend([0, 1, 2, 3, 4].map(|q| Point::TempAtLeast(temp_size * q / 4)));
    if backup {
        points.push(Point::Backup);
    }
    points.push(Point::Replaced);

    let (mut saw_old, mut saw_new, mut finished_first) = (0, 0, 0);
    for point in points {
        // A point after the rename is hit only while the run is still alive (fsync of
        // the directory, the report): try it a few times before calling it missed.
        let tries = if matches!(point, Point::Replaced) { 5 } else { 1 };
        for _ in 0..tries {
            clean(&dir);
            fs::write(&image, &old).unwrap();
            let ino = fs::metadata(&image).unwrap().ino();
            let mut child = bootkmod().args(args(&image, rebuild, backup)).spawn().unwrap();
            let (_, hit) = watch(&mut child, &dir, &image, ino, |s, t| point.reached(s, t));
            if hit {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            }
            let status = child.wait().unwrap();
            let killed = status.code().is_none();
            let now = fs::read(&image).unwrap();
            let outcome = if now == old {
                "old"
            } else if now == new {
                "new"
            } else {
                panic!("kill at {point:?}: the image is neither the old nor the new one");
            };
            let ls = run(bootkmod().args(["initramfs", "ls"]).arg(&image));
            assert!(ls.status.success(), "after a kill at {point:?} the image does not decode");
            let backup_path = dir.join("victim.img.bootkmod.bak");
            if backup && backup_path.exists() {
                assert_eq!(fs::read(&backup_path).unwrap(), old, "the backup is not the old image");
            }
            match (killed, outcome) {
                (false, _) => finished_first += 1,
                (true, "old") => saw_old += 1,
                (true, _) => saw_new += 1,
            }
            if killed {
                break;
            }
        }
    }
    eprintln!(
        "rebuild={rebuild} backup={backup}: {} steps seen on disk, temp file {temp_size} bytes, \
         first after {first_visible:?}; {saw_old} kills left the old image, {saw_new} the new \
         one, {finished_first} runs finished before their point",
        trace.len()
    );
    assert!(saw_old > 0, "no kill before the rename hit a live run: the old side is untested");
    assert!(
        saw_new > 0,
        "no kill after the rename hit a live run in 5 tries: the new side is untested"
    );
}

#[test]
fn killed_while_appending_leaves_old_or_new() {
    kill_at_the_points_a_run_shows(false, true, 8);
}

#[test]
fn killed_while_rebuilding_leaves_old_or_new() {
    kill_at_the_points_a_run_shows(true, false, 4);
}
