//! `bootkmod dud build` judged by the real tools: rpm (-qp, -K, -i --root), xorriso and
//! isoinfo (the ISO tree, Rock Ridge, Joliet), blkid (the label), and byte comparison
//! of two builds.

mod common;

use common::dud::{dud, ok, sample_driver, write_module, RHEL_RELEASE};
use common::{run, tool};
use std::path::Path;
use std::process::Command;

fn rpm_query(rpm: &Path, what: &str) -> Option<String> {
    let out = run(Command::new(tool("rpm")?).args(["-qp", what]).arg(rpm));
    Some(ok(&out))
}

#[test]
fn rpm_shows_the_dependencies_and_installs_the_payload() {
    let Some(rpm) = tool("rpm") else { return };
    let t = tempfile::tempdir().unwrap();
    let driver = sample_driver("acme_hba", RHEL_RELEASE);
    let ko = write_module(t.path(), &driver, "acme_hba");
    let fw = t.path().join("hba-fw.bin");
    std::fs::write(&fw, b"firmware bytes").unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    ok(&dud(&[
        "build",
        ko.to_str().unwrap(),
        "--firmware",
        fw.to_str().unwrap(),
        "--kabi-requires",
        "--format",
        "rpm",
        "-o",
        out.to_str().unwrap(),
    ]));
    let pkg = out.join("kmod-acme_hba-2.1.0-1.x86_64.rpm");
    assert!(pkg.is_file(), "rpm file name follows name-version-release.arch");

    let provides = rpm_query(&pkg, "--provides").unwrap();
    let lines: Vec<&str> = provides.lines().collect();
    assert!(lines.contains(&format!("kernel-modules >= {RHEL_RELEASE}").as_str()), "{provides}");
    assert!(lines.contains(&"kmod(acme_hba.ko)"), "{provides}");
    assert!(!provides.contains(&format!("{RHEL_RELEASE}.x86_64")), "no doubled arch: {provides}");

    let requires = rpm_query(&pkg, "--requires").unwrap();
    for want in [
        "kernel(module_layout) = 0x5b1a2c3d",
        "kernel(scsi_host_alloc) = 0x1a2b3c4d",
        "kernel(_printk) = 0x92997ed8",
    ] {
        assert!(requires.lines().any(|l| l == want), "missing {want} in\n{requires}");
    }
    let scripts = rpm_query(&pkg, "--scripts").unwrap();
    assert!(scripts.contains("weak-modules --add-modules"), "{scripts}");
    assert!(scripts.contains("weak-modules --remove-modules"), "{scripts}");
    assert!(scripts.contains(&format!("depmod -a {RHEL_RELEASE}")), "{scripts}");

    let info = rpm_query(&pkg, "--qf=%{PAYLOADCOMPRESSOR} %{NAME}").unwrap();
    assert_eq!(info, "xz kmod-acme_hba");

    let k = run(Command::new(&rpm).arg("-K").arg(&pkg));
    assert!(ok(&k).contains("digests OK"));

    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    ok(&run(Command::new(&rpm)
        .args(["-i", "--nodeps", "--noscripts", "--root"])
        .arg(&root)
        .arg(&pkg)));
    let installed = root.join(format!("lib/modules/{RHEL_RELEASE}/extra/acme_hba/acme_hba.ko"));
    assert_eq!(std::fs::read(&installed).unwrap(), driver.to_elf().unwrap());
    assert!(!installed.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read(root.join("lib/firmware/vendor/hba-fw.bin")).unwrap(),
        b"firmware bytes",
        "firmware keeps the module's firmware= sub-directory"
    );
    let conf = std::fs::read_to_string(root.join("etc/depmod.d/kmod-acme_hba.conf")).unwrap();
    assert!(conf.contains("override acme_hba * extra/acme_hba"), "{conf}");
}

#[test]
fn without_kabi_requires_only_rpmlib_and_the_shell_are_required() {
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("plain", RHEL_RELEASE), "plain");
    let pkg = t.path().join("p.rpm");
    ok(&dud(&[
        "build",
        ko.to_str().unwrap(),
        "--format",
        "rpm",
        "--payload",
        "gzip",
        "-o",
        pkg.to_str().unwrap(),
    ]));
    let Some(requires) = rpm_query(&pkg, "--requires") else { return };
    for line in requires.lines() {
        assert!(line.starts_with("rpmlib(") || line == "/bin/sh", "unexpected Requires {line}");
    }
    assert_eq!(rpm_query(&pkg, "--qf=%{PAYLOADCOMPRESSOR}").unwrap(), "gzip");
}

#[test]
fn signed_rpm_verifies_with_the_public_key() {
    let (Some(gpg), Some(rpm)) = (tool("gpg"), tool("rpm")) else { return };
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    let gpg_cmd = || {
        let mut c = Command::new(&gpg);
        c.arg("--homedir").arg(&home).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    };
    ok(&run(gpg_cmd().args([
        "--quick-gen-key",
        "bootkmod test <test@example.invalid>",
        "rsa2048",
        "sign",
        "never",
    ])));
    let secret = run(gpg_cmd().args(["--armor", "--export-secret-keys"]));
    let key = t.path().join("key.asc");
    std::fs::write(&key, ok(&secret)).unwrap();
    let public = t.path().join("pub.asc");
    std::fs::write(&public, ok(&run(gpg_cmd().args(["--armor", "--export"])))).unwrap();

    let ko = write_module(t.path(), &sample_driver("signed_hba", RHEL_RELEASE), "signed_hba");
    let pkg = t.path().join("s.rpm");
    ok(&dud(&[
        "build",
        ko.to_str().unwrap(),
        "--format",
        "rpm",
        "--sign-key",
        key.to_str().unwrap(),
        "-o",
        pkg.to_str().unwrap(),
    ]));
    let db = t.path().join("rpmdb");
    std::fs::create_dir(&db).unwrap();
    let dbpath = format!("--dbpath={}", db.display());
    // Without the key imported, rpm cannot vouch for the signature.
    let unknown = run(Command::new(&rpm).args(["-K", &dbpath]).arg(&pkg));
    assert!(!unknown.status.success(), "{}", String::from_utf8_lossy(&unknown.stdout));
    ok(&run(Command::new(&rpm).args(["--import", &dbpath]).arg(&public)));
    let verified = ok(&run(Command::new(&rpm).args(["-Kv", &dbpath]).arg(&pkg)));
    assert!(verified.contains("Header V4 RSA/SHA256 Signature"), "{verified}");
    assert!(!verified.contains("NOKEY") && !verified.contains("BAD"), "{verified}");
}

#[test]
fn iso_has_the_driver_disk_tree_label_and_stable_bytes() {
    let (Some(xorriso), Some(isoinfo), Some(blkid)) =
        (tool("xorriso"), tool("isoinfo"), tool("blkid"))
    else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("iso_hba", RHEL_RELEASE), "iso_hba");
    let a = t.path().join("a.iso");
    let b = t.path().join("b.iso");
    ok(&dud(&["build", ko.to_str().unwrap(), "-o", a.to_str().unwrap()]));
    ok(&dud(&["build", ko.to_str().unwrap(), "-o", b.to_str().unwrap()]));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same inputs, same bytes");
    let later = t.path().join("later.iso");
    ok(&common::run(
        common::bootkmod()
            .args(["dud", "build", ko.to_str().unwrap(), "-o", later.to_str().unwrap()])
            .env("SOURCE_DATE_EPOCH", "1800000000"),
    ));
    assert_ne!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&later).unwrap(),
        "the date comes from SOURCE_DATE_EPOCH"
    );

    let find = ok(&run(Command::new(&xorriso)
        .args(["-indev"])
        .arg(&a)
        .args(["-find", "/", "-type", "f"])));
    let rpm_path = "'/rpms/x86_64/kmod-iso_hba-2.1.0-1.x86_64.rpm'";
    assert!(find.lines().any(|l| l == "'/rhdd3'"), "{find}");
    assert!(find.lines().any(|l| l == rpm_path), "{find}");

    let pvd = ok(&run(Command::new(&isoinfo).arg("-d").arg("-i").arg(&a)));
    assert!(pvd.contains("Volume id: OEMDRV"), "{pvd}");
    assert!(pvd.contains("Joliet"), "{pvd}");
    assert!(pvd.contains("Rock Ridge signatures"), "{pvd}");
    let joliet = ok(&run(Command::new(&isoinfo).args(["-J", "-f", "-i"]).arg(&a)));
    assert!(
        joliet.lines().any(|l| l == "/rpms/x86_64/kmod-iso_hba-2.1.0-1.x86_64.rpm"),
        "{joliet}"
    );

    let label = ok(&run(Command::new(&blkid).arg(&a)));
    assert!(label.contains("LABEL=\"OEMDRV\"") && label.contains("TYPE=\"iso9660\""), "{label}");

    // The RPM inside is the one `--format rpm` writes.
    let extracted = t.path().join("x.rpm");
    ok(&run(Command::new(&xorriso)
        .args(["-osirrox", "on", "-indev"])
        .arg(&a)
        .args(["-extract", "/rpms/x86_64/kmod-iso_hba-2.1.0-1.x86_64.rpm"])
        .arg(&extracted)));
    let bare = t.path().join("bare.rpm");
    ok(&dud(&["build", ko.to_str().unwrap(), "--format", "rpm", "-o", bare.to_str().unwrap()]));
    assert_eq!(std::fs::read(&extracted).unwrap(), std::fs::read(&bare).unwrap());
}

#[test]
fn dir_format_and_dry_run() {
    let t = tempfile::tempdir().unwrap();
    let ko = write_module(t.path(), &sample_driver("dir_hba", RHEL_RELEASE), "dir_hba");
    let dry = t.path().join("dry");
    let json = ok(&dud(&[
        "build",
        ko.to_str().unwrap(),
        "--format",
        "dir",
        "--dry-run",
        "--json",
        "-o",
        dry.to_str().unwrap(),
    ]));
    assert!(!dry.exists(), "a dry run writes nothing");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["package"]["kernel_release"], RHEL_RELEASE);
    assert_eq!(v["package"]["name"], "kmod-dir_hba");

    let dir = t.path().join("dd");
    ok(&dud(&["build", ko.to_str().unwrap(), "--format", "dir", "-o", dir.to_str().unwrap()]));
    assert!(dir.join("rhdd3").is_file());
    assert!(dir.join("rpms/x86_64/kmod-dir_hba-2.1.0-1.x86_64.rpm").is_file());
}

#[test]
fn implausible_modules_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut no_vermagic = sample_driver("nomagic", RHEL_RELEASE);
    no_vermagic.set("vermagic", "");
    let ko = write_module(t.path(), &no_vermagic, "nomagic");
    let out = dud(&["build", ko.to_str().unwrap(), "-o", t.path().join("x.iso").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vermagic"));

    let ko = write_module(t.path(), &sample_driver("x86", RHEL_RELEASE), "x86");
    let out = dud(&[
        "build",
        ko.to_str().unwrap(),
        "--arch",
        "aarch64",
        "-o",
        t.path().join("y.iso").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built for x86_64") && err.contains("--arch aarch64"), "{err}");

    let junk = t.path().join("junk.ko");
    std::fs::write(&junk, b"\x7fELF but not really").unwrap();
    let out =
        dud(&["build", junk.to_str().unwrap(), "-o", t.path().join("z.iso").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.ko") && err.lines().count() == 1, "one line naming the file: {err}");
    assert!(!t.path().join("x.iso").exists() && !t.path().join("y.iso").exists());
}

#[test]
fn real_debian_module_builds_with_its_own_release() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(ko) = common::kernel_modules(&kver).into_iter().find(|p| p.ends_with("vmw_pvscsi.ko"))
    else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let pkg = t.path().join("p.rpm");
    let out = dud(&["build", ko.to_str().unwrap(), "--format", "rpm", "-o", pkg.to_str().unwrap()]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.contains("more than one '-'"), kver.matches('-').count() > 1, "{stderr}");
    let Some(provides) = rpm_query(&pkg, "--provides") else { return };
    assert!(provides.lines().any(|l| l == format!("kernel-modules >= {kver}")), "{provides}");
}

#[test]
fn compressed_modules_ship_as_plain_ko() {
    let (Some(xz), Some(rpm)) = (tool("xz"), tool("rpm")) else { return };
    let t = tempfile::tempdir().unwrap();
    let driver = sample_driver("packed", RHEL_RELEASE);
    let ko = write_module(t.path(), &driver, "packed");
    ok(&run(Command::new(xz).args(["--check=crc32", "-k"]).arg(&ko)));
    let packed = t.path().join("packed.ko.xz");
    let pkg = t.path().join("p.rpm");
    ok(&dud(&["build", packed.to_str().unwrap(), "--format", "rpm", "-o", pkg.to_str().unwrap()]));
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    ok(&run(Command::new(&rpm)
        .args(["-i", "--nodeps", "--noscripts", "--root"])
        .arg(&root)
        .arg(&pkg)));
    let installed = root.join(format!("lib/modules/{RHEL_RELEASE}/extra/packed/packed.ko"));
    assert_eq!(std::fs::read(installed).unwrap(), driver.to_elf().unwrap(), "decompressed ELF");
}

#[test]
fn check_root_refuses_what_the_target_loader_would_refuse() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(ko) = common::kernel_modules(&kver).into_iter().find(|p| p.ends_with("vmw_pvscsi.ko"))
    else {
        return;
    };
    let Some(other) = common::machine::other_kernels() else { return };
    let rt = &other.rt_root;
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("good.iso");
    ok(&dud(&["build", ko.to_str().unwrap(), "--check-root", "/", "-o", good.to_str().unwrap()]));
    assert!(good.is_file());

    let bad = t.path().join("bad.iso");
    let out = dud(&[
        "build",
        ko.to_str().unwrap(),
        "--check-root",
        rt.to_str().unwrap(),
        "--check-kver",
        &other.rt,
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("would not load on kernel {}", other.rt)), "{err}");
    assert!(err.contains("module_layout"), "the loader's first refusal: {err}");
    assert!(!bad.exists());
}
