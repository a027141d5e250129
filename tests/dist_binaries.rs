//! The release artefacts `scripts/dist` writes to `dist/`, judged by the real tools:
//!
//! - binutils' `objdump -T`: neither portable binary needs a glibc symbol newer than
//!   2.28 (RHEL 8's), and each is the architecture its name says;
//! - `sha256sum -c` on `SHA256SUMS`;
//! - the aarch64 binary under `qemu-aarch64-static` (user emulation) on a real Debian
//!   arm64 kernel (the arm64 build `.ci/setup.d/foreign-kernels` unpacks, shared with
//!   tests/foreign_arch.rs and tests/arm64_boot.rs): `info -F` against kmod's `modinfo` on its
//!   storage drivers, and `check` of one of them against that kernel's Module.symvers,
//!   as built (compatible) and with one `__versions` CRC altered (the symbol that
//!   `modprobe --dump-modversions` lists is named); both also compared whole with what
//!   cargo's build of this tree prints for the same command.
//!
//! The artefacts are looked for in `$BOOTKMOD_DIST` or `dist/` of this tree: build them
//! first with `scripts/dist` (missing, they skip; under CI they fail).

mod common;

use common::check::patch_version_crc;
use common::foreign::foreign_kernels;
use common::{dist_artefact, dist_dir, missing, run, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every glibc symbol version an ELF binary's dynamic symbols need, as (major, minor).
fn glibc_versions(objdump_t: &str) -> Vec<(u32, u32)> {
    let mut versions: Vec<(u32, u32)> = objdump_t
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>());
            Some((parts.next()?.ok()?, parts.next().unwrap_or(Ok(0)).ok()?))
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[test]
fn glibc_versions_are_read_from_objdump_lines() {
    let text = "0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.2.5) memcpy\n\
                0000000000000000      DF *UND*\t0000000000000000  GLIBC_2.34  __libc_start_main\n\
                0000000000000000  w   D  *UND*\t0000000000000000  Base        __gmon_start__\n";
    assert_eq!(glibc_versions(text), vec![(2, 2), (2, 34)]);
}

#[test]
fn portable_binaries_need_no_glibc_newer_than_2_28() {
    for (arch, objdump, format) in [
        ("x86_64", "objdump", "elf64-x86-64"),
        ("aarch64", "aarch64-linux-gnu-objdump", "elf64-littleaarch64"),
    ] {
        let Some(bin) = dist_artefact(&format!("bootkmod-{VERSION}-{arch}")) else { return };
        let Some(objdump) = tool(objdump) else { return };
        let header = run(Command::new(&objdump).arg("-f").arg(&bin));
        assert!(header.status.success(), "{}", String::from_utf8_lossy(&header.stderr));
        let header = String::from_utf8_lossy(&header.stdout);
        assert!(header.contains(&format!("file format {format}")), "{arch}: {header}");

        let dynamic = run(Command::new(&objdump).arg("-T").arg(&bin));
        let text = String::from_utf8_lossy(&dynamic.stdout);
        let err = String::from_utf8_lossy(&dynamic.stderr);
        if !dynamic.status.success() && err.contains("not a dynamic object") {
            eprintln!("{arch}: static, no dynamic symbols");
            continue;
        }
        assert!(dynamic.status.success(), "{arch}: objdump -T: {err}");
        let versions = glibc_versions(&text);
        let newest = *versions.last().expect("a dynamic binary needs some glibc symbols");
        assert!(
            newest <= (2, 28),
            "{arch} needs GLIBC_{}.{}: {}",
            newest.0,
            newest.1,
            text.lines()
                .filter(|l| l.contains(&format!("GLIBC_{}.{}", newest.0, newest.1)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        eprintln!("{arch}: newest glibc symbol version GLIBC_{}.{}", newest.0, newest.1);
    }
}

#[test]
fn sha256sums_cover_and_match_the_artefacts() {
    let Some(sums) = dist_artefact("SHA256SUMS") else { return };
    let text = std::fs::read_to_string(&sums).unwrap();
    for arch in ["x86_64", "aarch64"] {
        assert!(text.contains(&format!("  bootkmod-{VERSION}-{arch}\n")), "{text}");
    }
    assert!(text.contains(".x86_64.rpm\n") && text.contains("_amd64.deb\n"), "{text}");
    let out = run(Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(dist_dir()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Debian's arm64 kernel build `.ci/setup.d/foreign-kernels` unpacked: (release, root).
fn arm64_kernel() -> Option<(String, PathBuf)> {
    let k = foreign_kernels()?.into_iter().find(|k| k.arch == "arm64")?;
    Some((k.release, k.root))
}

/// The aarch64 binary under user emulation. Its dynamic loader and libc are Debian's
/// `libc6:arm64` (multiarch, at the paths the binary names).
struct Emulated {
    qemu: PathBuf,
    bin: PathBuf,
}

impl Emulated {
    fn new() -> Option<Emulated> {
        let bin = dist_artefact(&format!("bootkmod-{VERSION}-aarch64"))?;
        let qemu = tool("qemu-aarch64-static")?;
        if !Path::new("/lib/ld-linux-aarch64.so.1").exists() {
            missing("/lib/ld-linux-aarch64.so.1 (libc6:arm64)")?;
        }
        Some(Emulated { qemu, bin })
    }

    fn bootkmod(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        c.arg(&self.bin);
        c
    }
}

/// The storage drivers of a kernel tree (SCSI, NVMe, ATA, MD/DM), sorted.
fn storage_modules(tree: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> =
        ["scsi", "nvme", "ata", "md"].iter().map(|d| tree.join("kernel/drivers").join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().contains(".ko") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

fn stdout(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn aarch64_binary_reads_real_arm64_modules_like_modinfo() {
    let Some(emu) = Emulated::new() else { return };
    let Some((kver, root)) = arm64_kernel() else { return };
    let Some(modinfo) = tool("modinfo") else { return };
    let modules = storage_modules(&root.join("lib/modules").join(&kver));
    assert!(modules.len() > 50, "only {} storage modules in {}", modules.len(), root.display());
    for field in ["name", "vermagic", "depends", "srcversion", "license", "alias", "firmware"] {
        let theirs =
            stdout(&run(Command::new(&modinfo).args(["-F", field]).args(&modules)), "modinfo");
        let ours = stdout(&run(emu.bootkmod().args(["info", "-F", field]).args(&modules)), field);
        assert_eq!(ours, theirs, "bootkmod-aarch64 info -F {field} differs from modinfo");
    }
    // The whole report, as cargo's build of this tree renders it on this machine.
    let sample: Vec<&PathBuf> = modules.iter().step_by(10).collect();
    let ours = stdout(&run(emu.bootkmod().args(["info", "--json"]).args(&sample)), "info --json");
    let host = stdout(&run(common::bootkmod().args(["info", "--json"]).args(&sample)), "host info");
    assert_eq!(ours, host, "aarch64 and host builds disagree on info --json");
    eprintln!("compared {} arm64 modules of {kver} on 7 modinfo fields under qemu", modules.len());
}

#[test]
fn aarch64_binary_checks_a_real_arm64_module_against_its_kernel() {
    let Some(emu) = Emulated::new() else { return };
    let Some((kver, root)) = arm64_kernel() else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let symvers = root.join(format!("usr/src/linux-headers-{kver}/Module.symvers"));
    assert!(symvers.is_file(), "{} (linux-headers-{kver})", symvers.display());
    // A storage driver with modversions, built for this kernel (its vermagic says so).
    let module = storage_modules(&root.join("lib/modules").join(&kver))
        .into_iter()
        .find(|m| m.file_name().is_some_and(|n| n == "megaraid_sas.ko" || n == "nvme-core.ko"))
        .expect("megaraid_sas.ko or nvme-core.ko in the arm64 kernel");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join(module.file_name().unwrap());
    std::fs::copy(&module, &good).unwrap();

    let check = |m: &Path, bin: Command| -> Output {
        let mut c = bin;
        c.arg("--root").arg(&root).args([
            "--json",
            "check",
            "--secure-boot",
            "off",
            "--kver",
            &kver,
        ]);
        c.arg("--symvers").arg(&symvers).arg(m);
        run(&mut c)
    };
    let ours = check(&good, emu.bootkmod());
    assert_eq!(
        ours.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&ours.stderr)
    );
    let host = check(&good, common::bootkmod());
    assert_eq!(ours.stdout, host.stdout, "aarch64 and host builds disagree");

    // One CRC altered: a symbol the module's __versions really lists (kmod's word).
    let dump =
        stdout(&run(Command::new(&modprobe).arg("--dump-modversions").arg(&good)), "modprobe");
    let symbol = dump
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|s| *s != "module_layout")
        .expect("a versioned symbol")
        .to_string();
    let bad = dir.path().join(format!("bad-{}", module.file_name().unwrap().to_string_lossy()));
    let mut bytes = std::fs::read(&good).unwrap();
    patch_version_crc(&mut bytes, &symbol, 0x1234_5678);
    std::fs::write(&bad, bytes).unwrap();
    let ours = check(&bad, emu.bootkmod());
    assert_eq!(ours.status.code(), Some(3), "{}", String::from_utf8_lossy(&ours.stderr));
    let text = String::from_utf8_lossy(&ours.stdout);
    assert!(text.contains(&format!("disagrees about version of symbol {symbol}")), "{text}");
    let host = check(&bad, common::bootkmod());
    assert_eq!(ours.stdout, host.stdout, "aarch64 and host builds disagree");
    eprintln!(
        "checked {} against {kver} under qemu: compatible; with {symbol}'s CRC altered: refused",
        module.display()
    );
}
