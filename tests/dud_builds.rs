//! Several builds of one driver on one Driver Update Disk (issue 21): `dud build` makes
//! one package per built-for release, judged by the real rpm (`-qp`, `-i --root` of all
//! of them side by side) and xorriso (the ISO tree); `dud inspect` names the build
//! Anaconda loads where only one package's `kernel-modules >=` holds (checked against
//! rpm's own vercmp) and says it is undecided where several hold.

mod common;

use common::dud::{dud, ok, rpm_vercmp, sample_driver, write_module, RHEL_RELEASE};
use common::{run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The RHEL 9.2 GA kernel: older than [`RHEL_RELEASE`] under rpmvercmp.
const EL9_2: &str = "5.14.0-284.11.1.el9_2.x86_64";

/// Both sample builds of `acme_hba`, each in a directory of its own (same file name).
fn two_sample_builds(dir: &Path) -> (PathBuf, PathBuf) {
    let mut paths = Vec::new();
    for (sub, release) in [("el9_3", RHEL_RELEASE), ("el9_2", EL9_2)] {
        let d = dir.join(sub);
        std::fs::create_dir(&d).unwrap();
        paths.push(write_module(&d, &sample_driver("acme_hba", release), "acme_hba"));
    }
    (paths.remove(0), paths.remove(0))
}

fn name_of(release: &str) -> String {
    format!("kmod-acme_hba-{}", release.replace('-', "_"))
}

fn rpm_file(release: &str) -> String {
    format!("{}-2.1.0-1.x86_64.rpm", name_of(release))
}

fn inspect_json(dud_path: &Path, kver: &str) -> (Option<i32>, serde_json::Value) {
    let out = dud(&["inspect", dud_path.to_str().unwrap(), "--kver", kver, "--json"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

#[test]
fn each_build_is_its_own_rpm_with_its_own_kernel_modules_release() {
    let (Some(rpm), Some(xorriso)) = (tool("rpm"), tool("xorriso")) else { return };
    let t = tempfile::tempdir().unwrap();
    let (el9_3, el9_2) = two_sample_builds(t.path());
    let fw = t.path().join("hba-fw.bin");
    std::fs::write(&fw, b"firmware bytes").unwrap();
    let iso = t.path().join("dd.iso");
    let out = dud(&[
        "build",
        el9_3.to_str().unwrap(),
        el9_2.to_str().unwrap(),
        "--firmware",
        fw.to_str().unwrap(),
        "-o",
        iso.to_str().unwrap(),
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("at or above {RHEL_RELEASE}")), "overlap warned: {stderr}");

    let find = ok(&run(Command::new(&xorriso)
        .args(["-indev"])
        .arg(&iso)
        .args(["-find", "/rpms", "-type", "f"])));
    let mut listed: Vec<&str> = find.lines().collect();
    listed.sort();
    let mut want: Vec<String> =
        [EL9_2, RHEL_RELEASE].iter().map(|r| format!("'/rpms/x86_64/{}'", rpm_file(r))).collect();
    want.sort();
    assert_eq!(listed, want, "one RPM per build, nothing else");

    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut packages = Vec::new();
    for (release, ko) in [(EL9_2, &el9_2), (RHEL_RELEASE, &el9_3)] {
        let pkg = t.path().join(rpm_file(release));
        ok(&run(Command::new(&xorriso)
            .args(["-osirrox", "on", "-indev"])
            .arg(&iso)
            .args(["-extract", &format!("/rpms/x86_64/{}", rpm_file(release))])
            .arg(&pkg)));
        let provides = ok(&run(Command::new(&rpm).args(["-qp", "--provides"]).arg(&pkg)));
        let kernel_modules: Vec<&str> =
            provides.lines().filter(|l| l.starts_with("kernel-modules")).collect();
        assert_eq!(kernel_modules, [format!("kernel-modules >= {release}")], "{provides}");
        let name = ok(&run(Command::new(&rpm).args(["-qp", "--qf=%{NAME}"]).arg(&pkg)));
        assert_eq!(name, name_of(release));
        packages.push((pkg, release, std::fs::read(ko).unwrap()));
    }
    // Anaconda has dnf install every package it took: both side by side, no conflict.
    ok(&run(Command::new(&rpm)
        .args(["-i", "--nodeps", "--noscripts", "--root"])
        .arg(&root)
        .args(packages.iter().map(|(p, _, _)| p))));
    for (_, release, bytes) in &packages {
        let ko = root.join(format!("lib/modules/{release}/extra/acme_hba/acme_hba.ko"));
        assert_eq!(&std::fs::read(&ko).unwrap(), bytes, "{release}: its own build's bytes");
        let conf = root.join(format!("etc/depmod.d/{}.conf", name_of(release)));
        assert!(conf.is_file(), "{}", conf.display());
    }
    assert_eq!(
        std::fs::read(root.join("lib/firmware/vendor/hba-fw.bin")).unwrap(),
        b"firmware bytes"
    );
}

#[test]
fn inspect_names_the_build_anaconda_loads_and_says_when_none_can_be_named() {
    let t = tempfile::tempdir().unwrap();
    let (el9_3, el9_2) = two_sample_builds(t.path());
    let dir = t.path().join("dd");
    ok(&dud(&[
        "build",
        el9_2.to_str().unwrap(),
        el9_3.to_str().unwrap(),
        "--format",
        "dir",
        "-o",
        dir.to_str().unwrap(),
    ]));
    let between = "5.14.0-284.30.1.el9_2.x86_64";
    let newer = "5.14.0-362.24.1.el9_3.x86_64";
    let older = "5.14.0-70.13.1.el9_0.x86_64";
    // Which builds' `kernel-modules >= R` hold, by rpm's own vercmp.
    let kernels = [between, newer, older];
    let pairs: Vec<(String, String)> = kernels
        .iter()
        .flat_map(|k| [EL9_2, RHEL_RELEASE].map(|r| (k.to_string(), r.to_string())))
        .collect();
    if let Some(cmp) = rpm_vercmp(&pairs) {
        assert_eq!(
            cmp.iter().map(|c| *c >= 0).collect::<Vec<_>>(),
            [
                true, false, // between: only the el9_2 build
                true, true, // newer: both
                false, false // older: none
            ]
        );
    }

    let (code, v) = inspect_json(&dir, between);
    assert_eq!(code, Some(0));
    let builds = v["module_builds"].as_array().unwrap();
    assert_eq!(builds.len(), 1, "{v:#}");
    let b = &builds[0];
    assert_eq!(b["module"], "acme_hba");
    assert_eq!(b["loaded"], format!("{}-2.1.0-1.x86_64", name_of(EL9_2)), "{b:#}");
    assert_eq!(b["undecided"], false);
    let taken: Vec<&serde_json::Value> =
        b["builds"].as_array().unwrap().iter().filter(|x| x["taken"] == true).collect();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0]["destination"],
        format!("lib/modules/{between}/updates/extra/acme_hba/acme_hba.ko")
    );
    let text = ok(&dud(&["inspect", dir.to_str().unwrap(), "--kver", between]));
    assert!(text.contains(&format!("Anaconda loads {}-2.1.0-1.x86_64", name_of(EL9_2))), "{text}");

    let (code, v) = inspect_json(&dir, newer);
    assert_eq!(code, Some(0));
    let b = &v["module_builds"][0];
    assert_eq!(b["loaded"], serde_json::Value::Null, "{b:#}");
    assert_eq!(b["undecided"], true);
    assert!(b["builds"].as_array().unwrap().iter().all(|x| x["taken"] == true), "{b:#}");
    let why = b["why"].as_str().unwrap();
    for release in [EL9_2, RHEL_RELEASE] {
        assert!(why.contains(&name_of(release)), "{why}");
    }
    assert!(why.contains("never compares versions"), "{why}");
    let text = ok(&dud(&["inspect", dir.to_str().unwrap(), "--kver", newer]));
    assert!(text.contains("UNDECIDED"), "{text}");

    let (code, v) = inspect_json(&dir, older);
    assert_eq!(code, Some(3));
    assert_eq!(v["module_builds"][0]["loaded"], serde_json::Value::Null);
    assert_eq!(v["module_builds"][0]["undecided"], false);
}

#[test]
fn two_builds_for_one_release_are_refused_naming_both_files() {
    let t = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for sub in ["a", "b"] {
        let d = t.path().join(sub);
        std::fs::create_dir(&d).unwrap();
        paths.push(write_module(&d, &sample_driver("acme_hba", RHEL_RELEASE), "acme_hba"));
    }
    let iso = t.path().join("dd.iso");
    let out = dud(&[
        "build",
        paths[0].to_str().unwrap(),
        paths[1].to_str().unwrap(),
        "-o",
        iso.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for p in &paths {
        assert!(err.contains(p.to_str().unwrap()), "names {}: {err}", p.display());
    }
    assert!(err.contains(RHEL_RELEASE), "{err}");
    assert!(!iso.exists(), "nothing written");
}

#[test]
fn real_debian_builds_of_one_driver() {
    let Some(other) = common::machine::other_kernels() else { return };
    let Some(rpm) = tool("rpm") else { return };
    let find = |root: &Path, kver: &str| -> Option<PathBuf> {
        let dir = root.join(format!("lib/modules/{kver}/kernel/drivers/scsi"));
        let found =
            std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).find(|p| {
                p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmw_pvscsi.ko"))
            });
        if found.is_none() {
            common::missing(&format!("vmw_pvscsi under {}", dir.display()))?;
        }
        found
    };
    let Some(installed) = find(Path::new("/"), &other.installed) else { return };
    let Some(older) = find(&other.older_root, &other.older) else { return };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("dd");
    ok(&dud(&[
        "build",
        installed.to_str().unwrap(),
        older.to_str().unwrap(),
        "--format",
        "dir",
        "-o",
        dir.to_str().unwrap(),
    ]));
    let rpms: Vec<PathBuf> =
        std::fs::read_dir(dir.join("rpms/x86_64")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(rpms.len(), 2, "{rpms:?}");
    let mut releases: Vec<String> = rpms
        .iter()
        .map(|p| {
            let provides = ok(&run(Command::new(&rpm).args(["-qp", "--provides"]).arg(p)));
            let release = provides.lines().find_map(|l| l.strip_prefix("kernel-modules >= "));
            release.unwrap_or_else(|| panic!("{}: {provides}", p.display())).to_string()
        })
        .collect();
    releases.sort();
    let mut want = vec![other.installed.clone(), other.older.clone()];
    want.sort();
    assert_eq!(releases, want, "each package carries its own build's release");

    // The older kernel takes the older build only; the installed one takes both.
    let (_, v) = inspect_json(&dir, &other.older);
    let b = &v["module_builds"][0];
    assert_eq!(b["module"], "vmw_pvscsi");
    let loaded = b["loaded"].as_str().unwrap_or_else(|| panic!("{b:#}"));
    assert!(
        loaded.starts_with(&format!("kmod-vmw_pvscsi-{}-", other.older.replace('-', "_"))),
        "{loaded}"
    );
    let (_, v) = inspect_json(&dir, &other.installed);
    assert_eq!(v["module_builds"][0]["undecided"], true, "{v:#}");

    // --check-root: each build against its own kernel. The host root has only the
    // installed kernel, so the older build has nothing to be checked against.
    let (a, b) = (installed.to_str().unwrap(), older.to_str().unwrap());
    let iso = t.path().join("checked.iso");
    let out = dud(&["build", a, b, "--check-root", "/", "-o", iso.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("kernel {}", other.older)), "{err}");
    assert!(!iso.exists());
    // A root holding both kernels (boot files, module trees, the headers' symvers).
    let both = t.path().join("both");
    common::machine::clone_tree(&other.older_root, &both);
    let kver = &other.installed;
    common::machine::clone_tree(
        Path::new(&format!("/lib/modules/{kver}")),
        &both.join(format!("lib/modules/{kver}")),
    );
    let headers = format!("usr/src/linux-headers-{kver}");
    common::machine::clone_tree(&Path::new("/").join(&headers), &both.join(&headers));
    for f in ["System.map", "config", "vmlinuz"] {
        let name = format!("boot/{f}-{kver}");
        common::machine::link_or_copy(&Path::new("/").join(&name), &both.join(&name));
    }
    ok(&dud(&["build", a, b, "--check-root", both.to_str().unwrap(), "-o", iso.to_str().unwrap()]));
    assert!(iso.is_file());
}

#[test]
fn apply_takes_the_one_build_and_refuses_to_pick_among_several() {
    let t = tempfile::tempdir().unwrap();
    let (el9_3, el9_2) = two_sample_builds(t.path());
    let dir = t.path().join("dd");
    ok(&dud(&[
        "build",
        el9_3.to_str().unwrap(),
        el9_2.to_str().unwrap(),
        "--format",
        "dir",
        "-o",
        dir.to_str().unwrap(),
    ]));
    let root = t.path().join("root");
    let between = "5.14.0-284.30.1.el9_2.x86_64";
    let newer = "5.14.0-362.24.1.el9_3.x86_64";
    for k in [between, newer] {
        std::fs::create_dir_all(root.join(format!("lib/modules/{k}/kernel"))).unwrap();
    }
    let apply = |kver: &str| {
        run(common::bootkmod().arg("--root").arg(&root).args([
            "dud",
            "apply",
            dir.to_str().unwrap(),
            "--kver",
            kver,
        ]))
    };
    let out = apply(newer);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("several builds of acme_hba") && err.lines().count() == 1, "{err}");
    assert!(!root.join(format!("lib/modules/{newer}/updates")).exists(), "nothing written");

    ok(&apply(between));
    let ko = root.join(format!("lib/modules/{between}/updates/extra/acme_hba/acme_hba.ko"));
    assert_eq!(std::fs::read(ko).unwrap(), std::fs::read(&el9_2).unwrap(), "the el9_2 build");
}

#[test]
fn several_builds_as_bare_rpms_in_json_and_with_check_kver() {
    let t = tempfile::tempdir().unwrap();
    let (el9_3, el9_2) = two_sample_builds(t.path());
    let (a, b) = (el9_3.to_str().unwrap(), el9_2.to_str().unwrap());
    let out = t.path().join("rpms");
    let json = ok(&dud(&[
        "build",
        a,
        b,
        "--format",
        "rpm",
        "--dry-run",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]));
    assert!(!out.exists(), "a dry run writes nothing");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let builds = v["builds"].as_array().unwrap();
    let files: Vec<&str> = builds.iter().map(|b| b["rpm_file"].as_str().unwrap()).collect();
    assert_eq!(files, [rpm_file(EL9_2), rpm_file(RHEL_RELEASE)], "oldest release first");
    assert_eq!(v["package"]["kernel_release"], EL9_2, "package: the first build, as before");

    ok(&dud(&["build", a, b, "--format", "rpm", "-o", out.to_str().unwrap()]));
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, [rpm_file(EL9_2), rpm_file(RHEL_RELEASE)]);

    let iso = t.path().join("dd.iso");
    let refused = dud(&[
        "build",
        a,
        b,
        "--check-root",
        "/",
        "--check-kver",
        RHEL_RELEASE,
        "-o",
        iso.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--check-kver names one kernel"));
    assert!(!iso.exists());
}
