//! Helpers for the side-by-side builds tests (issue 21): bkram with a `version=`, other
//! builds of it made by patching version, vermagic release and `module_layout`, and
//! release names of the same length as the installed one (so a vermagic can name them).

use super::check::{patch_modinfo, patch_version_crc};
use super::{run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// bkram built against the installed headers with `MODULE_VERSION(version)` added.
pub fn build_versioned_bkram(kver: &str, into: &Path, version: &str) -> Option<PathBuf> {
    let build = Path::new("/lib/modules").join(kver).join("build");
    if !build.join("Makefile").is_file() {
        super::missing(&format!("{} (linux-headers)", build.display()))?;
    }
    tool("gcc")?;
    let make = tool("make")?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bkram");
    for f in ["bkram.c", "bkns.c", "Kbuild"] {
        std::fs::copy(src.join(f), into.join(f)).unwrap();
    }
    let mut c = std::fs::read_to_string(into.join("bkram.c")).unwrap();
    c.push_str(&format!("\nMODULE_VERSION(\"{version}\");\n"));
    std::fs::write(into.join("bkram.c"), c).unwrap();
    let out = run(Command::new(make)
        .arg("-C")
        .arg(&build)
        .arg(format!("M={}", into.display()))
        .arg("modules"));
    assert!(out.status.success(), "building bkram: {}", String::from_utf8_lossy(&out.stderr));
    Some(into.join("bkram.ko"))
}

/// `kver` with its ABI number (`6.1.0-NN-amd64`) replaced by `abi` of the same length:
/// a release a patched vermagic can name.
pub fn sibling_release(kver: &str, abi: &str) -> String {
    let parts: Vec<&str> = kver.splitn(3, '-').collect();
    assert!(parts.len() == 3 && parts[1].len() == abi.len(), "{kver}: not 6.1.0-NN-flavour");
    let abi = if parts[1] == abi { abi.chars().rev().collect() } else { abi.to_string() };
    format!("{}-{abi}-{}", parts[0], parts[2])
}

/// Another build of `module` (an unsigned .ko built for `kver`): `version=` changed
/// (same length), optionally built for `release` (same length as `kver`) and with
/// `module_layout`'s CRC changed (then it loads on no kernel that has `kver`'s ABI).
pub fn other_build_of(
    module: &Path,
    out: &Path,
    versions: (&str, &str),
    kver: &str,
    release: Option<&str>,
    break_layout: bool,
) -> PathBuf {
    let mut bytes = std::fs::read(module).unwrap();
    patch_modinfo(
        &mut bytes,
        &format!("version={}", versions.0),
        &format!("version={}", versions.1),
    );
    if let Some(release) = release {
        patch_modinfo(&mut bytes, &format!("vermagic={kver} "), &format!("vermagic={release} "));
    }
    if break_layout {
        // No Debian build has this CRC for module_layout: every kernel refuses it first.
        patch_version_crc(&mut bytes, "module_layout", 0x0bad_0bad);
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(out, bytes).unwrap();
    out.to_path_buf()
}
