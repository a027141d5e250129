//! Exact placement on a RHEL-shaped image (every module `.ko.xz`): a module injected over
//! a name the image already holds is encoded as that name says, judged by the real
//! `xz -t` on every `.xz` file and by the ELF magic of every `.ko`; identity is the
//! decompressed content (the same module as `.ko` and as `.ko.xz` is `present`); `-o OUT`
//! on an unchanged run still writes OUT; and `bootkmod verify` names a module file whose
//! content does not match its suffix.

mod common;

use common::check::strip_signature;
use common::qemu::InitramfsDir;
use common::{bootkmod, run, tool};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ELF_MAGIC: &[u8] = b"\x7fELF";

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn xz(bytes: &[u8]) -> Option<Vec<u8>> {
    let xz = tool("xz")?;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m");
    fs::write(&p, bytes).unwrap();
    let out = run(Command::new(xz).args(["-c", "--check=crc32", "-1"]).arg(&p));
    assert!(out.status.success());
    Some(out.stdout)
}

fn unxz(bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.xz");
    fs::write(&p, bytes).unwrap();
    let out = run(Command::new(tool("xz").unwrap()).args(["-d", "-c"]).arg(&p));
    assert!(out.status.success(), "xz -d: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The host's copy of a module of `release`, as a path.
fn host_module(release: &str, name: &str) -> PathBuf {
    let out = run(Command::new(tool("modinfo").unwrap()).args(["-k", release, "-n", name]));
    assert!(out.status.success(), "modinfo -n {name}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A RHEL-shaped image of `release`: the closure of `names` from the installed kernel,
/// every module recompressed by the real `xz` as `.ko.xz`, plus `extra` files (tree
/// path, bytes), indexes by kmod's `depmod`. Uncompressed cpio (what the codec of the
/// image is does not matter here).
fn xz_tree_image(
    release: &str,
    names: &[&str],
    extra: &[(&str, Vec<u8>)],
    out: &Path,
) -> Option<()> {
    let depmod = tool("depmod")?;
    let dir = InitramfsDir::busybox()?;
    let paths = dir.modules_from_host(release, names)?;
    for p in &paths {
        let at = dir.path().join(p.trim_start_matches('/'));
        let bytes = fs::read(&at).unwrap();
        fs::write(format!("{}.xz", at.display()), xz(&bytes)?).unwrap();
        fs::remove_file(&at).unwrap();
    }
    let tree = dir.path().join("lib/modules").join(release);
    for (rel, bytes) in extra {
        let at = tree.join(rel);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        fs::write(at, bytes).unwrap();
    }
    let src = Path::new("/lib/modules").join(release);
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        fs::copy(src.join(f), tree.join(f)).unwrap();
    }
    let st = run(Command::new(depmod).arg("-b").arg(dir.path()).arg(release));
    assert!(st.status.success(), "depmod: {}", String::from_utf8_lossy(&st.stderr));
    dir.pack(out)
}

/// Every module file of the extracted image holds what its name says: `xz -t` passes
/// on each `.ko.xz`, each `.ko` starts with the ELF magic. Returns how many were checked.
fn assert_contents_match_suffixes(image: &Path) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bootkmod().args(["initramfs", "extract"]).arg(image).arg(dir.path()));
    assert!(out.status.success(), "extract: {}", String::from_utf8_lossy(&out.stderr));
    let mut files = Vec::new();
    let mut stack = vec![dir.path().join("lib/modules")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    let xz = tool("xz").unwrap();
    let mut checked = 0;
    for f in files {
        let name = f.to_string_lossy().into_owned();
        if name.ends_with(".ko.xz") {
            let out = run(Command::new(&xz).arg("-t").arg(&f));
            assert!(out.status.success(), "xz -t {name}: {}", String::from_utf8_lossy(&out.stderr));
            checked += 1;
        } else if name.ends_with(".ko") {
            assert!(fs::read(&f).unwrap().starts_with(ELF_MAGIC), "{name} is no ELF");
            checked += 1;
        }
    }
    checked
}

fn inject(image: &Path, args: &[&str]) -> Output {
    let out = run(bootkmod().args(["--json", "inject", "--image"]).arg(image).args(args));
    assert!(
        out.status.success(),
        "inject {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The report's entry for module `name`: (action, path).
fn planned(report: &serde_json::Value, name: &str) -> (String, String) {
    let m = report["plan"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not planned: {report:#}"));
    (m["action"]["kind"].as_str().unwrap().to_string(), m["path"].as_str().unwrap().to_string())
}

fn cat(image: &Path, path: &str) -> Vec<u8> {
    let out = run(bootkmod().args(["initramfs", "cat"]).arg(image).arg(path));
    assert!(out.status.success(), "cat {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn modules_placed_over_existing_names_take_the_names_codec() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(_xz) = tool("xz") else { return };
    let Some(_) = tool("modinfo") else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Host modules (Debian ships them uncompressed and signed); unsigned copies differ
    // in content, so one replaces the other.
    let megaraid = fs::read(host_module(&release, "megaraid_sas")).unwrap();
    let pvscsi = fs::read(host_module(&release, "vmw_pvscsi")).unwrap();
    assert!(megaraid.starts_with(ELF_MAGIC) && pvscsi.starts_with(ELF_MAGIC));
    let Some(old_megaraid) = xz(&strip_signature(&megaraid)) else { return };
    let old_pvscsi = strip_signature(&pvscsi);
    let image = tmp.path().join("initramfs.img");
    let Some(()) = xz_tree_image(
        &release,
        &["megaraid_sas", "vmw_pvscsi", "sd_mod"],
        &[
            ("updates/megaraid_sas.ko.xz", old_megaraid),
            // An uncompressed name in the same image.
            ("updates/vmw_pvscsi.ko", old_pvscsi),
        ],
        &image,
    ) else {
        return;
    };
    assert!(assert_contents_match_suffixes(&image) > 3);

    // An uncompressed .ko over an existing .ko.xz name: compressed to match.
    let ko = tmp.path().join("megaraid_sas.ko");
    fs::write(&ko, &megaraid).unwrap();
    let report = json_of(&inject(&image, &[ko.to_str().unwrap()]));
    let (action, path) = planned(&report, "megaraid_sas");
    assert_eq!(action, "replace", "{report:#}");
    assert!(path.ends_with("/updates/megaraid_sas.ko.xz"), "{path}");
    let stored = cat(&image, &path);
    assert!(stored.starts_with(b"\xfd7zXZ\0"), "not xz data under {path}");
    assert!(unxz(&stored) == megaraid, "decompressed, it is not the module given");

    // xz data over an existing .ko name: decompressed to match.
    let Some(pvscsi_xz) = xz(&pvscsi) else { return };
    let ko_xz = tmp.path().join("vmw_pvscsi.ko.xz");
    fs::write(&ko_xz, &pvscsi_xz).unwrap();
    let report = json_of(&inject(&image, &[ko_xz.to_str().unwrap()]));
    let (action, path) = planned(&report, "vmw_pvscsi");
    assert_eq!(action, "replace", "{report:#}");
    assert!(path.ends_with("/updates/vmw_pvscsi.ko"), "{path}");
    assert!(cat(&image, &path) == pvscsi, "the .ko holds the decompressed module");
    assert!(assert_contents_match_suffixes(&image) > 3);

    // Identity is the content: the same modules in the other encoding are present.
    let before = fs::read(&image).unwrap();
    let Some(megaraid_xz) = xz(&megaraid) else { return };
    let other_xz = tmp.path().join("other").join("megaraid_sas.ko.xz");
    fs::create_dir_all(other_xz.parent().unwrap()).unwrap();
    fs::write(&other_xz, &megaraid_xz).unwrap();
    let pvscsi_ko = tmp.path().join("other").join("vmw_pvscsi.ko");
    fs::write(&pvscsi_ko, &pvscsi).unwrap();
    for input in [&ko, &other_xz, &pvscsi_ko] {
        let report = json_of(&inject(&image, &[input.to_str().unwrap()]));
        let module = input.file_name().unwrap().to_string_lossy();
        let name = module.split('.').next().unwrap();
        assert_eq!(planned(&report, name).0, "present", "{module}: {report:#}");
        assert_eq!(report["outcome"], "unchanged", "{report:#}");
    }
    assert!(fs::read(&image).unwrap() == before, "an unchanged run rewrote the image");

    // -o OUT on an unchanged run: OUT is the result (the image), also over a stale OUT.
    let out_path = tmp.path().join("out.img");
    fs::write(&out_path, b"stale").unwrap();
    let out = inject(&image, &[ko.to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
    assert_eq!(json_of(&out)["outcome"], "unchanged");
    assert!(fs::read(&out_path).unwrap() == before, "-o OUT must equal the result");
    let fresh = tmp.path().join("fresh.img");
    let out =
        run(bootkmod().args(["inject", "--image"]).arg(&image).arg(&ko).arg("-o").arg(&fresh));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is a copy of it"));
    assert!(fs::read(&fresh).unwrap() == before, "a fresh -o OUT must equal the result");
    assert!(fs::read(&image).unwrap() == before, "-o never changes the image itself");
}
