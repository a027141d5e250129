//! `dud build --with-bootkmod` and multi-architecture disks, judged by rpm (-qp: name,
//! arch, Provides, file list and modes), xorriso (the ISO tree) and rpm's own
//! rpmvercmp for the installer-enhancement version; `dud inspect` must show the program
//! where Anaconda's overlay of /updates puts it.
//!
//! The binaries: cargo's build of this tree (x86_64) and, when scripts/dist has built
//! it, `dist/bootkmod-VERSION-aarch64` (an aarch64 program to file under rpms/aarch64/).

mod common;

use bootkmod::samples::SampleArch;
use common::dud::{dud, ok, rpm_vercmp, sample_driver, write_module, RHEL_RELEASE};
use common::{bootkmod_bin, run, tool};
use std::path::Path;
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ARM_RELEASE: &str = "5.14.0-362.8.1.el9_3.aarch64";

fn query(rpm: &Path, args: &[&str]) -> Option<String> {
    Some(ok(&run(Command::new(tool("rpm")?).arg("-qp").args(args).arg(rpm))))
}

#[test]
fn the_installer_package_carries_bootkmod_where_anaconda_runs_it() {
    let Some(_) = tool("rpm") else { return };
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("wb_hba", RHEL_RELEASE), "wb_hba");
    let bin = bootkmod_bin();
    let dir = t.path().join("dd");
    let out = ok(&dud(&[
        "build",
        ko.to_str().unwrap(),
        "--format",
        "dir",
        "-o",
        dir.to_str().unwrap(),
        "--with-bootkmod",
        bin.to_str().unwrap(),
        // gzip: the debug build is 200+ MB, and xz over it costs minutes.
        "--payload",
        "gzip",
    ]));
    assert!(
        out.contains(&format!("bootkmod-installer {VERSION}-1.x86_64 for the installer")),
        "{out}"
    );
    let rpm = dir.join(format!("rpms/x86_64/bootkmod-installer-{VERSION}-1.x86_64.rpm"));
    assert!(rpm.is_file(), "{out}");
    assert!(dir.join("rpms/x86_64/kmod-wb_hba-2.1.0-1.x86_64.rpm").is_file());

    let Some(provides) = query(&rpm, &["--provides"]) else { return };
    assert!(provides.lines().any(|l| l == "installer-enhancement >= 19.0"), "{provides}");
    assert!(!provides.contains("kernel-modules"), "not installed on the target: {provides}");
    let Some(files) = query(&rpm, &["--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]"]) else { return };
    assert_eq!(files.trim(), "-rwxr-xr-x /usr/bin/bootkmod");
    let Some(scripts) = query(&rpm, &["--scripts"]) else { return };
    assert!(scripts.trim().is_empty(), "no scriptlets: {scripts}");
    // The payload is the binary, byte for byte (rpm2cpio + cpio, the real extractors).
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let Some(rpm2cpio) = tool("rpm2cpio") else { return };
    let Some(cpio) = tool("cpio") else { return };
    let sh =
        format!("'{}' '{}' | '{}' -idm --quiet", rpm2cpio.display(), rpm.display(), cpio.display());
    ok(&run(Command::new("sh").arg("-c").arg(&sh).current_dir(&x)));
    assert_eq!(std::fs::read(x.join("usr/bin/bootkmod")).unwrap(), std::fs::read(&bin).unwrap());

    // Anaconda's dd_list compares installer-enhancement with its fixed 19.0: rpm agrees.
    let Some(cmp) = rpm_vercmp(&[("19.0".into(), "19.0".into())]) else { return };
    assert_eq!(cmp, vec![0], "19.0 >= 19.0 under rpmvercmp");

    // `dud inspect` (Anaconda's rules, installer version 19.0 by default) shows it.
    let shown = ok(&run(common::bootkmod().args(["dud", "inspect"]).arg(&dir).args([
        "--kver",
        RHEL_RELEASE,
        "--arch",
        "x86_64",
    ])));
    assert!(shown.contains(&format!("TAKEN    bootkmod-installer-{VERSION}-1.x86_64")), "{shown}");
    assert!(shown.contains("/usr/bin/bootkmod: in the installer as /usr/bin/bootkmod"), "{shown}");
    let json = ok(&run(common::bootkmod().args(["--json", "dud", "inspect"]).arg(&dir).args([
        "--kver",
        RHEL_RELEASE,
        "--arch",
        "x86_64",
    ])));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pkg = v["repos"][0]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bootkmod-installer")
        .cloned()
        .expect("the installer package is listed");
    assert_eq!(pkg["flags"]["enhancement"], true);
    assert_eq!(pkg["files"][0]["class"], "binary");
    // An older installer version than the Provides: not taken (the test can say no).
    let older = ok(&run(common::bootkmod().args(["dud", "inspect"]).arg(&dir).args([
        "--kver",
        RHEL_RELEASE,
        "--arch",
        "x86_64",
        "--installer-version",
        "18.1",
    ])));
    assert!(older.contains(&format!("skipped  bootkmod-installer-{VERSION}-1.x86_64")), "{older}");
}

#[test]
fn with_bootkmod_refuses_what_is_not_a_program() {
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("np_hba", RHEL_RELEASE), "np_hba");
    let out = t.path().join("dd.iso");
    // A module is ELF but not a program; a script is not ELF.
    let script = t.path().join("bootkmod.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    for bad in [ko.to_str().unwrap(), script.to_str().unwrap()] {
        let r = dud(&[
            "build",
            ko.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--with-bootkmod",
            bad,
        ]);
        assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("--with-bootkmod") && err.contains(bad), "{err}");
        assert!(!out.exists());
    }
    // Two programs of one architecture: which one would the installer run?
    let bin = bootkmod_bin();
    let b = bin.to_str().unwrap();
    let r = dud(&[
        "build",
        ko.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--with-bootkmod",
        b,
        "--with-bootkmod",
        b,
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("a second x86_64 program"));
}

#[test]
fn one_iso_for_x86_64_and_aarch64_modules_and_several_kernels() {
    let Some(xorriso) = tool("xorriso") else { return };
    let t = tempfile::tempdir().unwrap();
    let x86 = write_module(t.path(), &sample_driver("ma_hba", RHEL_RELEASE), "ma_hba");
    let older = "5.14.0-284.11.1.el9_2.x86_64";
    let x86_old_dir = t.path().join("old");
    std::fs::create_dir(&x86_old_dir).unwrap();
    let x86_old = write_module(&x86_old_dir, &sample_driver("ma_hba", older), "ma_hba");
    let mut arm = sample_driver("ma_hba", ARM_RELEASE);
    arm.arch = SampleArch::Aarch64;
    let arm_dir = t.path().join("arm");
    std::fs::create_dir(&arm_dir).unwrap();
    let arm = write_module(&arm_dir, &arm, "ma_hba");
    let iso = t.path().join("dd.iso");
    let mut args: Vec<String> = ["build", x86.to_str().unwrap(), x86_old.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([arm.to_str().unwrap().to_string(), "-o".into(), iso.to_str().unwrap().into()]);
    args.extend(["--with-bootkmod".into(), bootkmod_bin().to_str().unwrap().into()]);
    args.extend(["--payload".into(), "gzip".into()]);
    let dist_arm =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("dist/bootkmod-{VERSION}-aarch64"));
    let with_arm = dist_arm.is_file();
    if with_arm {
        args.extend(["--with-bootkmod".into(), dist_arm.to_str().unwrap().into()]);
    } else {
        eprintln!(
            "(no {}: the aarch64 program is left out; scripts/dist builds it)",
            dist_arm.display()
        );
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&dud(&refs));
    let find =
        ok(&run(Command::new(&xorriso).arg("-indev").arg(&iso).args(["-find", "/", "-type", "f"])));
    let mut want = vec![
        "'/rhdd3'".to_string(),
        format!("'/rpms/x86_64/kmod-ma_hba-{}-2.1.0-1.x86_64.rpm'", older.replace('-', "_")),
        format!("'/rpms/x86_64/kmod-ma_hba-{}-2.1.0-1.x86_64.rpm'", RHEL_RELEASE.replace('-', "_")),
        format!("'/rpms/x86_64/bootkmod-installer-{VERSION}-1.x86_64.rpm'"),
        "'/rpms/aarch64/kmod-ma_hba-2.1.0-1.aarch64.rpm'".to_string(),
    ];
    if with_arm {
        want.push(format!("'/rpms/aarch64/bootkmod-installer-{VERSION}-1.aarch64.rpm'"));
    }
    let mut got: Vec<String> = find.lines().map(str::to_string).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Each architecture's installer reads only its own directory (Anaconda: uname -m).
    for (arch, kver, n) in [("x86_64", RHEL_RELEASE, 2), ("aarch64", ARM_RELEASE, 1)] {
        let json = ok(&run(common::bootkmod()
            .args(["--json", "dud", "inspect"])
            .arg(&iso)
            .args(["--kver", kver, "--arch", arch])));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let taken: Vec<String> = v["repos"][0]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["taken"] == true && p["flags"]["modules"] == true)
            .map(|p| p["nevra"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(taken.len(), n, "{arch}: {taken:?}");
        assert!(taken.iter().all(|p| p.ends_with(arch)), "{arch}: {taken:?}");
    }
}
