//! Unified Kernel Images: bootkmod reads and rewrites a UKI built here from Debian's
//! systemd-stub (`systemd-boot-efi`) with `objcopy --add-section`, at the addresses
//! systemd-stub(7) documents, around the installed Debian kernel and a busybox + kmod
//! initramfs without the root disk's driver.
//!
//! - The boot proof (2 boots, one after the other): under OVMF the UKI boots and its
//!   root (behind a MegaRAID SAS controller) does not mount; after `bootkmod inject
//!   megaraid_sas` into the UKI it mounts. Between them binutils judge the rewritten PE
//!   (`objdump -h`, `objcopy --dump-section`) and `sbverify --list` finds it unsigned.
//! - The signed UKI (`sbsign` with a test key): `inject` refuses it without keys (exit 3,
//!   not a byte changed), fails with nothing changed without `sbsign`, and with
//!   `--sign-key/--sign-cert` rewrites and re-signs it: `sbverify --cert` passes.
//! - doctor judges a UKI as one more image of its kernel (AT RISK while its `.initrd`
//!   lacks the controller's driver, the distribution image beside it OK) and
//!   `doctor --fix` injects into the `.initrd`; a signed UKI is refused, not a byte
//!   changed, the fix naming the command that signs.
//! - The ukify layout (`.initrd` below `.linux`): `.linux` moves, binutils read it back
//!   byte for byte; objcopy's own PE checksum equals bootkmod's.

mod common;

use common::doctor_host::{
    bk, image_verdicts, image_with, megasas_host, megasas_snapshot, MegasasHost, DRIVER,
};
use common::inject::base_image;
use common::keep::json_of;
use common::qemu::{self, Boot, Controller};
use common::sign::{make_key, sbsign};
use common::{missing, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn file(path: &str, package: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        return Some(p);
    }
    missing(&format!("{path} (Debian package {package})"))?;
    unreachable!()
}

/// `objcopy --add-section` around the stub: .osrel, .cmdline, .uname low, .linux at
/// 32 MiB, .initrd at 48 MiB (systemd-stub(7)'s example addresses); with `ukify_order`
/// .initrd goes below .linux instead, as ukify lays them out.
fn build_uki(
    release: &str,
    initrd: &Path,
    cmdline: &str,
    out: &Path,
    ukify_order: bool,
) -> Option<()> {
    let stub = file(STUB, "systemd-boot-efi")?;
    let objcopy = tool("objcopy")?;
    let kernel = qemu::host_kernel(release)?;
    let dir = out.parent().unwrap();
    let (cmdline_file, uname_file) = (dir.join("cmdline.txt"), dir.join("uname.txt"));
    std::fs::write(&cmdline_file, cmdline).unwrap();
    std::fs::write(&uname_file, release).unwrap();
    let osrel = dir.join("os-release");
    std::fs::write(&osrel, "PRETTY_NAME=\"bootkmod UKI test\"\nID=debian\n").unwrap();
    let (linux_at, initrd_at) =
        if ukify_order { ("0x3000000", "0x2000000") } else { ("0x2000000", "0x3000000") };
    let mut cmd = Command::new(objcopy);
    for (name, path, at) in [
        (".osrel", &osrel, "0x20000"),
        (".cmdline", &cmdline_file, "0x30000"),
        (".uname", &uname_file, "0x40000"),
        (".linux", &kernel, linux_at),
        (".initrd", &initrd.to_path_buf(), initrd_at),
    ] {
        cmd.arg("--add-section").arg(format!("{name}={}", path.display()));
        cmd.arg("--change-section-vma").arg(format!("{name}={at}"));
    }
    let o = run(cmd.arg(&stub).arg(out));
    assert!(o.status.success(), "objcopy: {}", String::from_utf8_lossy(&o.stderr));
    Some(())
}

/// `objdump -h`: (name, size) of each section, as binutils read the file.
fn objdump_sections(uki: &Path) -> Vec<(String, u64)> {
    let o = run(Command::new(tool("objdump").unwrap()).arg("-h").arg(uki));
    assert!(
        o.status.success(),
        "objdump -h {}: {}",
        uki.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 7 && f[0].parse::<u32>().is_ok())
                .then(|| (f[1].to_string(), u64::from_str_radix(f[2], 16).unwrap()))
        })
        .collect()
}

/// `objcopy --dump-section NAME=FILE`: a section's bytes as binutils read them.
fn dump_section(uki: &Path, name: &str) -> Vec<u8> {
    let out = uki.with_extension(format!("dump{}", name));
    let o = run(Command::new(tool("objcopy").unwrap())
        .arg("--dump-section")
        .arg(format!("{name}={}", out.display()))
        .arg(uki)
        .arg(uki.with_extension("scratch")));
    assert!(
        o.status.success(),
        "objcopy --dump-section {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).unwrap()
}

fn inject(uki: &Path, extra: &[&str], env_path: Option<&str>) -> std::process::Output {
    let mut cmd = common::bootkmod();
    cmd.args(["inject", "--no-backup", "--image"]).arg(uki).arg("megaraid_sas").args(extra);
    if let Some(p) = env_path {
        cmd.env("PATH", p);
    }
    run(&mut cmd)
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The initramfs of the boot tests: busybox, kmod, ext4, no SCSI driver at all.
fn uki_without_driver(
    dir: &Path,
    ukify_order: bool,
) -> Option<(String, PathBuf, tempfile::TempDir)> {
    let release = common::installed_kernel()?;
    let (tmp, image) = base_image(&release, &["ext4"], Controller::Megasas.device(), "gzip")?;
    let uki = dir.join("linux.efi");
    // What `Boot` puts on the command line of a -kernel boot, carried by the UKI itself.
    build_uki(
        &release,
        &image,
        "console=ttyS0 panic=-1 no_timer_check loglevel=7",
        &uki,
        ukify_order,
    )?;
    Some((release, uki, tmp))
}

fn boot(uki: &Path) -> Option<qemu::BootLog> {
    let firmware = file(OVMF, "ovmf")?;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("root.img");
    qemu::ext4_disk(&disk)?;
    let mut b =
        Boot::uefi(&firmware, uki, &dir.path().join("esp")).disk(&disk, Controller::Megasas);
    b.timeout = std::time::Duration::from_secs(400);
    b.run()
}

#[test]
fn uki_boots_without_root_before_inject_and_mounts_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, uki, _tmp)) = uki_without_driver(dir.path(), false) else { return };
    let Some(before) = boot(&uki) else { return };
    assert!(
        before.root_failed() && !before.root_mounted(),
        "expected the failure marker before injection; serial tail:\n{}",
        before.tail()
    );
    eprintln!("UKI before inject: root not mounted, {:.1}s", before.elapsed.as_secs_f64());

    let sections_before = objdump_sections(&uki);
    let o = inject(&uki, &[], None);
    assert!(o.status.success(), "inject into the UKI failed:\n{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("verified:") && out.contains("uki:") && out.contains("rewritten"),
        "{out}"
    );

    // binutils read the rewritten PE: the same sections, .initrd bigger, the rest equal.
    let sections_after = objdump_sections(&uki);
    let names = |s: &[(String, u64)]| s.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&sections_before), names(&sections_after));
    for (b, a) in sections_before.iter().zip(&sections_after) {
        if b.0 == ".initrd" {
            assert!(a.1 > b.1, ".initrd did not grow: {} -> {}", b.1, a.1);
        } else {
            assert_eq!(b, a, "section {} changed", b.0);
        }
    }
    // The .initrd binutils dump holds the driver, as bootkmod reads it back.
    let dumped = uki.with_extension("initrd.img");
    std::fs::write(&dumped, dump_section(&uki, ".initrd")).unwrap();
    let ls = run(common::bootkmod().args(["initramfs", "ls"]).arg(&dumped));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("megaraid_sas.ko"), "{}", text(&ls));
    if let Some(sbverify) = tool("sbverify") {
        let o = run(Command::new(sbverify).arg("--list").arg(&uki));
        assert!(text(&o).contains("No signature table present"), "sbverify --list: {}", text(&o));
    } else {
        missing("sbverify (sbsigntool)");
    }

    let Some(after) = boot(&uki) else { return };
    assert!(
        after.root_mounted(),
        "no root mount after injection into the UKI; serial tail:\n{}",
        after.tail()
    );
    eprintln!("UKI after inject: root mounted, {:.1}s", after.elapsed.as_secs_f64());
}

fn sha256(path: &Path) -> String {
    bootkmod::operations::inject::file_sha256(path).unwrap()
}

#[test]
fn signed_uki_is_refused_without_keys_and_signed_again_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, unsigned, _tmp)) = uki_without_driver(dir.path(), false) else { return };
    let Some(sbverify) = tool("sbverify") else { return };
    let Some(signing) = make_key(dir.path(), "db") else { return };
    let uki = dir.path().join("signed.efi");
    let Some(()) = sbsign(&unsigned, &uki, &signing) else { return };
    let (key, cert) = (&signing.key, &signing.cert_pem);
    let verify = |p: &Path| run(Command::new(&sbverify).arg("--cert").arg(cert).arg(p));
    assert!(verify(&uki).status.success(), "the test's own signature does not verify");
    let sum = sha256(&uki);

    // No keys: refused, naming the signature; not a byte changed, no temp file left.
    let o = inject(&uki, &[], None);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("signed Unified Kernel Image"), "{}", text(&o));
    assert_eq!(sha256(&uki), sum);
    // Keys but no sbsign: an error, nothing changed.
    let keys = ["--sign-key", key.to_str().unwrap(), "--sign-cert", cert.to_str().unwrap()];
    let o = inject(&uki, &keys, Some("/nonexistent"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("sbsign"), "{}", text(&o));
    assert_eq!(sha256(&uki), sum);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("bootkmod"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // With keys: stripped, rewritten, signed again; sbverify passes with the cert.
    let o = inject(&uki, &keys, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("signed again by sbsign"), "{}", text(&o));
    assert_ne!(sha256(&uki), sum);
    let v = verify(&uki);
    assert!(v.status.success(), "sbverify --cert after re-signing: {}", text(&v));
    let list = run(Command::new(&sbverify).arg("--list").arg(&uki));
    assert_eq!(
        text(&list).matches("signature 1").count(),
        1,
        "one signature, not two:\n{}",
        text(&list)
    );
    let ls = run(common::bootkmod().args(["initramfs", "ls"]).arg(&uki));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("megaraid_sas.ko"), "{}", text(&ls));
}

#[test]
fn ukify_layout_moves_linux_and_binutils_read_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some((release, uki, _tmp)) = uki_without_driver(dir.path(), true) else { return };
    let bytes = std::fs::read(&uki).unwrap();
    // objcopy writes a PE checksum: bootkmod's computation agrees with it.
    let pe = bootkmod::formats::uki::Pe::read(&bytes).unwrap();
    assert_ne!(pe.checksum, 0);
    assert_eq!(pe.checksum, pe.computed_checksum(&bytes));
    let linux_before = dump_section(&uki, ".linux");
    let o = inject(&uki, &[], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("moved .linux"), "{}", text(&o));
    let after = std::fs::read(&uki).unwrap();
    let pe = bootkmod::formats::uki::Pe::read(&after).unwrap();
    assert_eq!(pe.checksum, pe.computed_checksum(&after));
    let linux = pe.section(".linux").unwrap();
    assert_eq!(linux.virtual_address % 0x20_0000, 0, "the kernel's 2 MiB alignment kept");
    assert_eq!(dump_section(&uki, ".linux"), linux_before);
    let kernel = std::fs::read(qemu::host_kernel(&release).unwrap()).unwrap();
    assert!(linux_before.starts_with(&kernel));
    let facts = run(common::bootkmod().args(["--json", "initramfs", "ls", "--segments"]).arg(&uki));
    let v: serde_json::Value = serde_json::from_slice(&facts.stdout).unwrap();
    assert_eq!(v["uki"]["uname"], release.as_str());
    assert_eq!(v["uki"]["linux_size"], kernel.len());
}

#[test]
fn doctor_judges_a_uki_and_fixes_its_initrd_unless_signed() {
    let Some(MegasasHost { release: kver, root, .. }) = megasas_host(&[]) else { return };
    // The UKI was built around the image before the controller's driver went into it.
    image_with(&root, &kver, &["ext4", "sd_mod"]);
    std::fs::create_dir_all(root.at("/boot/efi/EFI/Linux")).unwrap();
    let uki = root.at(format!("/boot/efi/EFI/Linux/debian-{kver}.efi"));
    let initrd = root.at(format!("/boot/initrd.img-{kver}"));
    let Some(()) = build_uki(&kver, &initrd, "root=/dev/sda", &uki, false) else { return };
    image_with(&root, &kver, &[DRIVER]);
    std::fs::create_dir_all(root.at("/var/lib/bootkmod")).unwrap();
    std::fs::write(root.at("/var/lib/bootkmod/doctor-snapshot.json"), megasas_snapshot()).unwrap();
    let uki_name = uki.file_name().unwrap().to_string_lossy().into_owned();
    let initrd_name = initrd.file_name().unwrap().to_string_lossy().into_owned();

    let out = bk(&root, &["--json", "doctor"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    assert_eq!(
        image_verdicts(&report, &kver),
        [(uki_name.clone(), false), (initrd_name.clone(), true)],
        "{report:#}"
    );

    // Signed: refused (doctor holds no keys), the UKI not changed, still at risk.
    let keys = tempfile::tempdir().unwrap();
    let Some(key) = make_key(keys.path(), "db") else { return };
    let unsigned = keys.path().join("unsigned.efi");
    std::fs::copy(&uki, &unsigned).unwrap();
    let Some(()) = sbsign(&unsigned, &uki, &key) else { return };
    let sum = sha256(&uki);
    let out = bk(&root, &["--json", "doctor", "--fix", "--kver", &kver]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    let fixes = report["fixes"].as_array().unwrap();
    assert_eq!(fixes.len(), 1, "only the UKI was at risk: {report:#}");
    assert_eq!(fixes[0]["outcome"], "refused", "{report:#}");
    assert!(fixes[0]["why"].as_str().unwrap().contains("--sign-key"), "{report:#}");
    assert_eq!(sha256(&uki), sum, "a refused fix changes nothing");

    // Unsigned: the fix goes into the UKI's .initrd; every image of the kernel is OK.
    std::fs::copy(&unsigned, &uki).unwrap();
    let out = bk(&root, &["--json", "doctor", "--fix", "--kver", &kver]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["fixes"][0]["outcome"], "written", "{report:#}");
    assert_eq!(
        image_verdicts(&report, &kver),
        [(uki_name, true), (initrd_name, true)],
        "{report:#}"
    );
    let ls = run(common::bootkmod().args(["initramfs", "ls"]).arg(&uki));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("megaraid_sas.ko"), "{}", text(&ls));
}
