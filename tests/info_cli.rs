//! The `info` and `demo` command lines: the README's first command, name lookup through
//! `--root`, exit codes, JSON.

mod common;

use bootkmod::samples::SampleModule;
use common::{bootkmod, run};

#[test]
fn readme_demo_runs_without_root_or_kernel() {
    let out = run(bootkmod().arg("demo"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("demo_scsi_core") && text.contains("demo_hba"), "{text}");
    assert!(text.contains("ELF64 little-endian x86_64, xz-compressed"), "{text}");

    let out = run(bootkmod().args(["--json", "demo"]));
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("demo --json");
    let modules = &json["modules"];
    assert_eq!(modules.as_array().map(Vec::len), Some(2));
    assert_eq!(modules[1]["compression"], "xz");
    assert_eq!(modules[1]["versions"].as_array().map(Vec::len), Some(4));
}

#[test]
fn names_resolve_inside_root_and_missing_names_exit_3() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lib/modules/6.1.0-test/extra");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sample = SampleModule::new("vendor_hba", "6.1.0-test SMP mod_unload modversions ");
    sample.set("version", "2.3.4");
    std::fs::write(dir.join("vendor-hba.ko"), sample.to_elf().unwrap()).unwrap();

    let info = |name: &str| {
        run(bootkmod().arg("--root").arg(root.path()).args([
            "info",
            "--kver",
            "6.1.0-test",
            "-F",
            "version",
            name,
        ]))
    };
    let out = info("vendor-hba");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"2.3.4\n");
    let out = info("no_such_module");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("module no_such_module not found"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(bootkmod().arg("info")).status.code(), Some(2));
    assert_eq!(run(bootkmod().args(["info", "--no-such-option", "x.ko"])).status.code(), Some(2));
    assert_eq!(run(bootkmod().args(["info", "--help"])).status.code(), Some(0));
}
