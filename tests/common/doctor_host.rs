//! Helpers for the doctor tests on target roots (`tests/doctor_outoftree.rs`,
//! `tests/doctor_status.rs`): a snapshot of a host whose root sits behind QEMU's megasas
//! controller, kernels' trees given more modules of a real Debian kernel, and images
//! holding a kernel's own modules.

use super::keep::{Source, TargetRoot};
use super::{bootkmod, run, tool};
use std::path::Path;
use std::process::{Command, Output};

pub const DRIVER: &str = "megaraid_sas";

pub fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn bk(root: &TargetRoot, args: &[&str]) -> Output {
    run(bootkmod().arg("--root").arg(root.path()).args(args))
}

/// A snapshot of a host whose root is ext4 on the whole disk sda behind a megasas
/// controller: topology (a), recorded by bootkmod in a QEMU guest
/// (`tests/doctor_record.rs`).
pub fn megasas_snapshot() -> String {
    std::fs::read_to_string(super::doctor::Topology::MegasasExt4.fixture()).unwrap()
}

/// `names` and everything modprobe loads with them (kmod's `--show-depends` on the
/// installed kernel `installed` names the files) copied from `src`'s tree into the
/// target's tree of `release`, listed in its modules.order, indexes by kmod's depmod.
pub fn add_modules(
    root: &TargetRoot,
    src: &Source,
    installed: &str,
    release: &str,
    names: &[&str],
) {
    let modprobe = tool("modprobe").unwrap();
    let from = src.root.join("lib/modules").join(&src.kver);
    let src_order = std::fs::read_to_string(from.join("modules.order")).unwrap();
    let tree = root.at(format!("/lib/modules/{release}"));
    let mut order = std::fs::read_to_string(tree.join("modules.order")).unwrap();
    for name in names {
        let out = run(Command::new(&modprobe).args(["-S", installed, "--show-depends", name]));
        assert!(out.status.success(), "modprobe --show-depends {name}: {}", text(&out));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else { continue };
            let file = Path::new(path.trim()).file_name().unwrap().to_string_lossy().into_owned();
            let rel = src_order
                .lines()
                .find(|l| l.rsplit('/').next() == Some(file.as_str()))
                .unwrap_or_else(|| panic!("{file} not in {}/modules.order", from.display()));
            let dest = tree.join(rel);
            if dest.exists() {
                continue;
            }
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            super::machine::link_or_copy(&from.join(rel), &dest);
            order.push_str(&format!("{rel}\n"));
        }
    }
    std::fs::write(tree.join("modules.order"), order).unwrap();
    let out = run(Command::new(tool("depmod").unwrap()).arg("-b").arg(root.path()).arg(release));
    assert!(out.status.success(), "depmod: {}", text(&out));
}

/// A target root holding the installed kernel (`release`, from `src`, its own tree) with
/// `sd_mod`, the controller's driver and `extra` in its tree; no image yet. `None` when
/// the kernel or kmod is missing (a skip, or a failure under CI).
pub struct MegasasHost {
    pub release: String,
    pub src: Source,
    pub root: TargetRoot,
}

pub fn megasas_host(extra: &[&str]) -> Option<MegasasHost> {
    let release = super::installed_kernel()?;
    let src = Source::of(&release, &release)?;
    tool("modprobe")?;
    tool("depmod")?;
    let root = TargetRoot::new();
    root.add_kernel(&src, &release, &src.symvers());
    add_modules(&root, &src, &release, &release, &[&["sd_mod", DRIVER][..], extra].concat());
    Some(MegasasHost { release, src, root })
}

/// Put the kernel's own `modules` into its image (`bootkmod inject`, judged by its own
/// tests): the image a distribution tool would have built.
pub fn image_with(root: &TargetRoot, release: &str, modules: &[&str]) {
    let out = bk(root, &[&["inject", "--no-backup", "--kver", release][..], modules].concat());
    assert!(out.status.success(), "inject {modules:?} into {release}: {}", text(&out));
}

/// The problems doctor's JSON gives for `release`, and whether it is OK.
pub fn verdict<'a>(report: &'a serde_json::Value, release: &str) -> &'a serde_json::Value {
    report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["release"] == release)
        .unwrap_or_else(|| panic!("no verdict for {release}: {report:#}"))
}

/// The images doctor judged for `release` (one verdict each): (file name, ok), sorted.
pub fn image_verdicts(report: &serde_json::Value, release: &str) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["release"] == release)
        .map(|k| {
            let image = Path::new(k["image"].as_str().unwrap());
            (image.file_name().unwrap().to_string_lossy().into_owned(), k["ok"] == true)
        })
        .collect();
    v.sort();
    v
}

/// The link verdict of the controller (the need bound to megaraid_sas) on `release`.
pub fn controller_link<'a>(report: &'a serde_json::Value, release: &str) -> &'a serde_json::Value {
    let needs = report["needs"].as_array().unwrap();
    let i = needs.iter().position(|n| n["bound"] == DRIVER).expect("a need bound to the driver");
    let links = verdict(report, release)["links"].as_array().unwrap();
    links.iter().find(|l| l["need"] == i).unwrap()
}
