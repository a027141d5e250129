//! What `bootkmod inject` writes, judged by the real tools: kmod's `depmod` run over the
//! extracted result must produce byte-identical indexes, kmod's `modprobe` must resolve
//! the driver to files that are there, a second run changes nothing, a dry run writes
//! nothing, a usr-merged dracut-style image keeps `lib -> usr/lib` and gets
//! `rd.driver.pre`, and owner, mode and the SELinux label survive the in-place
//! replacement.

mod common;

use common::inject::base_image;
use common::{bootkmod, run, tool};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn inject(args: &[&str], image: &Path) -> std::process::Output {
    run(bootkmod().args(["inject", "--image"]).arg(image).args(args))
}

/// An extended attribute's value, `None` when the file has none of that name.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: getxattr writes at most buf.len() bytes into a buffer we own.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: setxattr reads value.len() bytes from a slice we own.
    let rc =
        unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

/// The module names a `--json` report plans.
fn planned_names(report: &serde_json::Value) -> Vec<&str> {
    let modules = report["plan"]["modules"].as_array().expect("plan.modules in the report");
    modules.iter().filter_map(|m| m["name"].as_str()).collect()
}

fn extract(image: &Path, dir: &Path) {
    let out = run(bootkmod().args(["initramfs", "extract"]).arg(image).arg(dir));
    assert!(out.status.success(), "extract: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn indexes_equal_kmods_depmod_and_a_second_run_changes_nothing() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(depmod) = tool("depmod") else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let Some((tmp, image)) = base_image(&release, &["ext4"], "/dev/sda", "gzip") else {
        return;
    };
    let before = fs::read(&image).unwrap();
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600)).unwrap();
    let _ = std::os::unix::fs::chown(&image, Some(4321), Some(8765));
    let meta_before = fs::metadata(&image).unwrap();
    // Without an SELinux policy loaded, root may still set the label as an xattr on
    // ext4/tmpfs; an unprivileged run labels with a user.* attribute only.
    let label: &[u8] = b"system_u:object_r:boot_t:s0\0";
    let labels: Vec<&str> = if meta_before.uid() == 4321 {
        vec!["security.selinux", "user.bootkmod-test"]
    } else {
        vec!["user.bootkmod-test"]
    };
    for name in &labels {
        set_xattr(&image, name, label);
    }

    let out = inject(&["megaraid_sas"], &image);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let after = fs::read(&image).unwrap();
    assert!(after.starts_with(&before), "append mode must keep the original bytes");
    assert_eq!(fs::read(image.with_extension("img.bootkmod.bak")).unwrap(), before, "backup");
    let meta = fs::metadata(&image).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode kept");
    assert_eq!((meta.uid(), meta.gid()), (meta_before.uid(), meta_before.gid()), "owner kept");
    for name in &labels {
        assert_eq!(xattr(&image, name).as_deref(), Some(label), "{name} kept");
    }

    // kmod's depmod over the extracted tree writes exactly what bootkmod wrote.
    let ours = tmp.path().join("ours");
    extract(&image, &ours);
    let theirs = tmp.path().join("theirs");
    let st = Command::new("cp").arg("-a").arg(&ours).arg(&theirs).status().unwrap();
    assert!(st.success());
    let st = run(Command::new(&depmod).arg("-b").arg(&theirs).arg(&release));
    assert!(st.status.success(), "depmod: {}", String::from_utf8_lossy(&st.stderr));
    let tree = Path::new("lib/modules").join(&release);
    let mut compared = 0;
    for entry in fs::read_dir(theirs.join(&tree)).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("modules.") {
            continue;
        }
        let mine = fs::read(ours.join(&tree).join(&name)).unwrap_or_default();
        assert!(mine == fs::read(entry.path()).unwrap(), "{name} differs from kmod's depmod");
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} index files compared");

    // kmod's modprobe resolves the driver, through sd_mod's alias too, to present files.
    for name in ["megaraid_sas", "scsi:t-0x00"] {
        let out = run(Command::new(&modprobe).arg("-d").arg(&ours).args([
            "-S",
            &release,
            "--show-depends",
            name,
        ]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("insmod"), "{name}: {text}");
        for line in text.lines().filter_map(|l| l.strip_prefix("insmod ")) {
            assert!(Path::new(line.trim()).is_file(), "{name}: {line} missing");
        }
    }

    // Idempotent: same bytes, says so.
    let out = inject(&["megaraid_sas"], &image);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    assert_eq!(fs::read(&image).unwrap(), after, "a second run must not write");
}

#[test]
fn dry_run_writes_nothing_and_prints_the_plan_as_json() {
    let Some(release) = common::installed_kernel() else { return };
    let Some((_tmp, image)) = base_image(&release, &["ext4"], "/dev/sda", "zstd") else {
        return;
    };
    let before = fs::read(&image).unwrap();
    let out = run(bootkmod()
        .args(["--json", "inject", "--dry-run", "--image"])
        .arg(&image)
        .arg("vmw_pvscsi"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(&image).unwrap(), before);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "planned");
    let names = planned_names(&json);
    for wanted in ["vmw_pvscsi", "scsi_mod", "sd_mod"] {
        assert!(names.contains(&wanted), "{wanted} not planned: {names:?}");
    }
    assert!(!image.with_extension("img.bootkmod.bak").exists());
}

#[test]
fn progress_is_drawn_only_when_asked_or_on_a_terminal_and_then_erased() {
    let Some(release) = common::installed_kernel() else { return };
    let Some((_tmp, image)) = base_image(&release, &["ext4"], "/dev/sda", "gzip") else {
        return;
    };
    let inject = |progress: Option<&str>| {
        let mut cmd = bootkmod();
        match progress {
            Some(v) => cmd.env("BOOTKMOD_PROGRESS", v),
            None => cmd.env_remove("BOOTKMOD_PROGRESS"),
        };
        let out = run(cmd.args(["inject", "--dry-run", "--image"]).arg(&image).arg("vmw_pvscsi"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let drawn = inject(Some("1"));
    let line = format!("reading {}: ", image.display());
    assert!(drawn.contains(&line) && drawn.contains('%'), "no progress line: {drawn:?}");
    assert!(drawn.ends_with("\r\x1b[2K"), "the line is not erased: {drawn:?}");
    // stderr is a pipe here, as in kickstart logs: nothing drawn unless asked.
    for quiet in [inject(None), inject(Some("0"))] {
        assert!(!quiet.contains('\x1b') && !quiet.contains(&line), "{quiet:?}");
    }
}

#[test]
fn soft_dependencies_on_aliases_come_along_as_modprobe_loads_them() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let Some((_tmp, image)) = base_image(&release, &["ext4"], "/dev/sda", "gzip") else {
        return;
    };
    // crc_t10dif has `softdep pre: crct10dif`, an alias of two modules on x86.
    let out = run(bootkmod()
        .args(["--json", "inject", "--dry-run", "--image"])
        .arg(&image)
        .arg("crc_t10dif"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = planned_names(&json);
    let shown = run(Command::new(&modprobe).args(["-S", &release, "--show-depends", "crc_t10dif"]));
    let expected: Vec<String> = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|p| {
            let file = Path::new(p.trim()).file_name().unwrap().to_string_lossy().into_owned();
            file.split('.').next().unwrap().replace('-', "_")
        })
        .collect();
    assert!(expected.len() >= 3, "modprobe shows {expected:?}");
    for m in &expected {
        assert!(names.contains(&m.as_str()), "{m} (modprobe loads it) not planned: {names:?}");
    }
    let warnings = json["plan"]["warnings"].to_string();
    assert!(!warnings.contains("soft dependency"), "{warnings}");
}

#[test]
fn usr_merged_dracut_layout_keeps_its_symlink_and_loads_early() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(cpio) = tool("cpio") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("tree");
    let tree = d.join("usr/lib/modules").join(&release);
    fs::create_dir_all(&tree).unwrap();
    fs::create_dir_all(d.join("usr/lib/dracut")).unwrap();
    fs::create_dir_all(d.join("etc/cmdline.d")).unwrap();
    std::os::unix::fs::symlink("usr/lib", d.join("lib")).unwrap();
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        fs::copy(Path::new("/lib/modules").join(&release).join(f), tree.join(f)).unwrap();
    }
    let image = tmp.path().join("initramfs.img");
    let cmd = format!(
        "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | '{}' -o -H newc -R 0:0 --quiet > '{}'",
        d.display(),
        cpio.display(),
        image.display()
    );
    assert!(Command::new("sh").arg("-c").arg(&cmd).status().unwrap().success());

    let out = inject(&["--load-early", "megaraid_sas"], &image);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("(dracut)"), "{stdout}");

    let x = tmp.path().join("x");
    extract(&image, &x);
    assert!(fs::symlink_metadata(x.join("lib")).unwrap().file_type().is_symlink(), "lib replaced");
    assert!(x.join("usr/lib/modules").join(&release).join("modules.dep.bin").is_file());
    assert!(x
        .join("usr/lib/modules")
        .join(&release)
        .join("kernel/drivers/scsi/megaraid/megaraid_sas.ko")
        .is_file());
    let conf = fs::read_to_string(x.join("etc/cmdline.d/90-bootkmod.conf")).unwrap();
    assert_eq!(conf.trim(), "rd.driver.pre=megaraid_sas");
    // The appended raw segment starts 4-byte aligned, as the kernel requires.
    let out = run(bootkmod().args(["--json", "initramfs", "ls", "--segments"]).arg(&image));
    let segs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let segs = segs.as_array().or_else(|| segs["segments"].as_array()).unwrap().clone();
    assert!(segs.len() >= 2, "{segs:?}");
    assert_eq!(segs.last().unwrap()["offset"].as_u64().unwrap() % 4, 0);
}

#[test]
fn the_demo_runs_check_inject_verify_on_generated_data() {
    let out = run(bootkmod().args(["--json", "demo"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["inject"]["outcome"], "written");
    assert_eq!(json["inject"]["verification"]["ok"], true);
    assert_eq!(json["inject"]["plan"]["verdicts"][0]["compatible"], true);
    assert_eq!(json["again"]["outcome"], "unchanged");
    let chain = &json["inject"]["verification"]["chains"][0]["load"];
    assert_eq!(chain[0], "kernel/drivers/scsi/demo_scsi_core.ko", "{chain}");
}
