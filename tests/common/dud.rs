//! Helpers for the Driver Update Disk tests: sample driver modules on disk, `dud build`
//! runs, the pinned ksvalidator, and rpm's own version comparison as an oracle.

use super::{bootkmod, missing, run, tool};
use bootkmod::samples::SampleModule;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A RHEL 9.3 kernel release, as `uname -r` prints it there (ends in the arch).
pub const RHEL_RELEASE: &str = "5.14.0-362.8.1.el9_3.x86_64";

/// A storage driver sample built for `release`, with modversions and firmware.
pub fn sample_driver(name: &str, release: &str) -> SampleModule {
    let mut m = SampleModule::new(name, &format!("{release} SMP mod_unload modversions "));
    m.import("module_layout", 0x5b1a2c3d)
        .import("scsi_host_alloc", 0x1a2b3c4d)
        .import("_printk", 0x92997ed8)
        .set("version", "2.1.0");
    m.modinfo.push("alias", "pci:v00001000d0000005Dsv*sd*bc*sc*i*");
    m.modinfo.push("firmware", "vendor/hba-fw.bin");
    m
}

/// Write a sample module as `<dir>/<name>.ko`.
pub fn write_module(dir: &Path, module: &SampleModule, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.ko"));
    std::fs::write(&path, module.to_elf().expect("sample ELF")).unwrap();
    path
}

/// Run `bootkmod dud ARGS` with a fixed SOURCE_DATE_EPOCH.
pub fn dud(args: &[&str]) -> Output {
    run(bootkmod().arg("dud").args(args).env("SOURCE_DATE_EPOCH", "1700000000"))
}

/// Assert success and return stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pinned ksvalidator that `.ci/setup.d/pykickstart` installs.
/// One this user cannot run (a venv made by another user's python) is a skip naming it.
pub fn ksvalidator() -> Option<PathBuf> {
    if let Some(path) = super::machine::input("pykickstart-3.78/bin/ksvalidator") {
        let why = match std::process::Command::new(&path).arg("-l").output() {
            Ok(out) if out.status.success() => return Some(path),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        missing(&format!("a ksvalidator this user can run ({}: {why})", path.display()))?;
    }
    missing("pykickstart's ksvalidator (.ci/setup.d/pykickstart)")?;
    unreachable!()
}

/// rpm's own rpmvercmp for each pair (-1, 0, 1), through rpm's embedded Lua, in one run.
///
/// `rpm.vercmp` parses its arguments as `[epoch:]version[-release]` first; every `-` is
/// sent as `_` (both are plain separators to rpmvercmp, only `-` is special to the EVR
/// parser), so the result is rpmvercmp of the whole strings. Strings must not be empty
/// or contain `:`.
pub fn rpm_vercmp(pairs: &[(String, String)]) -> Option<Vec<i32>> {
    let rpm = tool("rpm")?;
    let quote = |s: &str| {
        assert!(!s.is_empty() && !s.contains(['\'', '\\', '%', '}', '\n', ':']), "unusable {s:?}");
        format!("'{}'", s.replace('-', "_"))
    };
    let body: String = pairs
        .iter()
        .map(|(a, b)| format!("print(rpm.vercmp({}, {})) print(' ') ", quote(a), quote(b)))
        .collect();
    let out = run(Command::new(rpm).arg("--eval").arg(format!("%{{lua: {body}}}")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<i32> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert_eq!(values.len(), pairs.len(), "rpm printed {text}");
    Some(values)
}
