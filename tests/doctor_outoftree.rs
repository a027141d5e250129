//! doctor and an out-of-tree controller driver (issue 13): root sits behind a megasas
//! controller whose driver, `megaraid_sas`, the installed kernel's tree does not carry;
//! `bootkmod install --root-critical` put it in (a copy of the installed kernel's, as
//! if out of tree, then an update of it: the ledger holds two builds). On real Debian
//! kernels under an unmounted root:
//!
//! - the installed kernel, whose image got the driver by install: OK;
//! - the rt flavour, where every build is refused (`module_layout`) and the kernel has
//!   no megaraid_sas of its own: AT RISK, the problem naming the kernel and the check's
//!   reason, the same text `bootkmod status --json` and `bootkmod check` give;
//! - a copy of the rt kernel that has its own in-tree megaraid_sas in its image: OK
//!   although bootkmod's builds are refused there (noted, not a risk);
//! - the older ABI build: OK when a build serves it (weak-updates/), else AT RISK with
//!   the refusal: doctor agrees with check whatever check finds there;
//! - the installed kernel's image rebuilt without the driver: AT RISK, and `--fix`
//!   injects the build install placed.
//!
//! The snapshot is written here in `doctor --save`'s format with what sysfs shows for
//! QEMU's megasas (`-device megasas`): the disk's SCSI device bound to `sd`, the PCI
//! function bound to `megaraid_sas` with its modalias.

mod common;

use common::keep::{json_of, Source, TargetRoot};
use common::machine::{other_kernels, synthetic_release};
use common::{bootkmod, installed_kernel, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::doctor_host::{
    add_modules, bk, controller_link, image_with, megasas_snapshot, text, verdict, DRIVER,
};

/// Every string in a JSON value.
fn strings(v: &serde_json::Value) -> Vec<&str> {
    match v {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().flat_map(strings).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// A second build of `ko` as a vendor update would be: unsigned, `version=` bumped
/// (same length), built for another release of the installed kernel's ABI (so it is
/// kept beside the first, in that release's `extra/`).
fn update_of(ko: &Path, scratch: &Path, version: &str, kver: &str) -> PathBuf {
    let unsigned = scratch.join("unsigned/megaraid_sas.ko");
    std::fs::create_dir_all(unsigned.parent().unwrap()).unwrap();
    std::fs::write(&unsigned, common::check::strip_signature(&std::fs::read(ko).unwrap())).unwrap();
    // The last digit before the suffix (`07.719.03.00-rc1` -> `07.719.03.01-rc1`).
    let at = version.rfind(|c: char| c.is_ascii_digit() && c != '1').expect("a digit");
    let bumped = format!("{}1{}", &version[..at], &version[at + 1..]);
    let elsewhere = common::builds::sibling_release(kver, "47");
    common::builds::other_build_of(
        &unsigned,
        &scratch.join("update/megaraid_sas.ko"),
        (version, &bumped),
        kver,
        Some(&elsewhere),
        false,
    )
}

#[test]
fn an_out_of_tree_controller_driver_refused_on_a_kernel_puts_that_kernel_at_risk() {
    let Some(kver) = installed_kernel() else { return };
    let Some(others) = other_kernels() else { return };
    let rt_kver = others.rt.as_str();
    // A copy of the rt kernel that carries megaraid_sas in its own tree.
    let rt_tree = synthetic_release(rt_kver, "tree");
    let Some(newer) = Source::of(&kver, &kver) else { return };
    let Some(rt) = Source::of(rt_kver, &kver) else { return };
    let older_kver = others.older.as_str();
    let Some(older) = Source::of(older_kver, &kver) else { return };
    if tool("modprobe").is_none() || tool("depmod").is_none() || tool("modinfo").is_none() {
        return;
    }
    let host_ko = common::kernel_modules(&kver)
        .into_iter()
        .find(|p| bootkmod::model::module::name_from_path(p) == DRIVER)
        .expect("the installed kernel has megaraid_sas");
    let scratch = tempfile::tempdir().unwrap();
    let vendor = scratch.path().join("megaraid_sas.ko");
    std::fs::copy(&host_ko, &vendor).unwrap();
    let out = run(Command::new(tool("modinfo").unwrap()).args(["-F", "version"]).arg(&vendor));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let update = update_of(&vendor, scratch.path(), &version, &kver);

    let root = TargetRoot::new();
    root.add_kernel(&newer, &kver, &newer.symvers());
    root.add_kernel(&rt, rt_kver, &rt.symvers());
    root.add_kernel(&rt, &rt_tree, &rt.symvers());
    root.add_kernel(&older, older_kver, &older.symvers());
    for (src, release) in
        [(&newer, kver.as_str()), (&rt, rt_kver), (&rt, rt_tree.as_str()), (&older, older_kver)]
    {
        add_modules(&root, src, &kver, release, &["sd_mod"]);
    }
    add_modules(&root, &rt, &kver, &rt_tree, &[DRIVER]);
    assert!(
        !root.at(format!("/lib/modules/{kver}/modules.dep")).is_file()
            || !std::fs::read_to_string(root.at(format!("/lib/modules/{kver}/modules.dep")))
                .unwrap()
                .contains("megaraid_sas"),
        "the installed kernel's tree must not carry the driver: it is out of tree here"
    );
    image_with(&root, &kver, &["ext4", "sd_mod"]);
    image_with(&root, rt_kver, &["ext4", "sd_mod"]);
    image_with(&root, older_kver, &["ext4", "sd_mod"]);
    image_with(&root, &rt_tree, &["ext4", "sd_mod", DRIVER]);

    // The driver (exit 3: it is unusable on the rt kernels), then its update, kept
    // beside (forced: the installed kernel keeps its own build): two builds.
    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical"])
        .arg(&vendor));
    assert_eq!(out.status.code(), Some(3), "install: {}", text(&out));
    let out = run(bootkmod()
        .arg("--root")
        .arg(root.path())
        .args(["install", "--root-critical", "--force"])
        .arg(&update));
    assert!(matches!(out.status.code(), Some(0 | 3)), "install of the update: {}", text(&out));
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.at("/var/lib/bootkmod/ledger.json")).unwrap())
            .unwrap();
    assert_eq!(ledger["version"], 2, "today's ledger format");
    assert_eq!(ledger["modules"][DRIVER]["builds"].as_array().unwrap().len(), 2);

    // What status and check say of the rt kernel: the reason doctor must name.
    let status = json_of(&bk(&root, &["--json", "status"]));
    let status_reason = |release: &str| -> String {
        let k = status["kernels"].as_array().unwrap().iter().find(|k| k["release"] == release);
        let m = &k.unwrap_or_else(|| panic!("status lacks {release}"))["modules"][0];
        assert_eq!(m["name"], DRIVER);
        assert_eq!(m["compatible"], false, "{release}: {m:#}");
        m["reasons"][0].as_str().unwrap().to_string()
    };
    let reason = status_reason(rt_kver);
    assert!(reason.contains("module_layout"), "rt refuses by module_layout first: {reason}");
    let out = bk(&root, &["--json", "check", "--kver", rt_kver, update.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        strings(&json_of(&out)).contains(&reason.as_str()),
        "check on {rt_kver} does not give status's reason {reason:?}: {}",
        text(&out)
    );

    let snap = scratch.path().join("host.json");
    std::fs::write(&snap, megasas_snapshot()).unwrap();
    let snap = snap.to_str().unwrap();
    let out = bk(&root, &["--json", "doctor", "--from", snap, "--all-kernels"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "one kernel at risk: exit 3\n{report:#}");
    assert_eq!(report["at_risk"], true);

    // The installed kernel: the image got the driver by install; it is OK.
    let k = verdict(&report, &kver);
    assert_eq!(k["ok"], true, "{kver}: {k:#}");
    let link = controller_link(&report, &kver);
    assert_eq!((&link["state"], &link["module"]), (&"present".into(), &DRIVER.into()), "{link:#}");

    // The rt kernel: AT RISK, naming the kernel and the check's reason.
    let k = verdict(&report, rt_kver);
    assert_eq!(k["ok"], false, "{rt_kver}: {k:#}");
    let link = controller_link(&report, rt_kver);
    assert_eq!(link["state"], "no_module", "{link:#}");
    let problems: Vec<&str> =
        k["problems"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert!(
        problems.iter().any(|p| p.contains(rt_kver) && p.contains(&reason) && p.contains(DRIVER)),
        "no problem names {rt_kver} and {reason:?}: {problems:#?}"
    );
    assert_eq!(problems.len(), 1, "one missing link, told once: {problems:#?}");
    assert!(k["fix"].as_array().unwrap().is_empty(), "nothing to inject can fix it: {k:#}");

    // The rt copy with its own megaraid_sas: bootkmod's builds are refused there, yet
    // the kernel's own driver is in the image: OK, with a note.
    let k = verdict(&report, &rt_tree);
    assert_eq!(k["ok"], true, "{rt_tree}: {k:#}");
    let link = controller_link(&report, &rt_tree);
    assert_eq!(link["state"], "present", "{link:#}");
    assert!(link["note"].as_str().unwrap_or_default().contains("not usable"), "{link:#}");
    assert!(status_reason(&rt_tree).contains("module_layout"));

    // The older ABI build of the kernel: whatever check found there, doctor agrees.
    // Served by a build (weak-updates/, injected by install): OK; refused: AT RISK
    // with that refusal.
    let k = verdict(&report, older_kver);
    let m = status["kernels"].as_array().unwrap().iter().find(|k| k["release"] == older_kver);
    let m = &m.unwrap()["modules"][0];
    if m["compatible"] == true {
        assert_eq!(m["placement"], "weak-updates", "{m:#}");
        assert_eq!(k["ok"], true, "{older_kver} is served by a build: {k:#}");
        assert_eq!(controller_link(&report, older_kver)["state"], "present", "{k:#}");
    } else {
        let why = m["reasons"][0].as_str().unwrap();
        assert_eq!(k["ok"], false, "{older_kver} refuses every build: {k:#}");
        assert!(k["problems"][0].as_str().unwrap().contains(why), "{k:#}");
    }

    // The text names the kernel at risk and the reason too.
    let out = bk(&root, &["doctor", "--from", snap, "--all-kernels"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("AT RISK") && l.contains(rt_kver)), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("OK") && l.contains(&kver)), "{shown}");
    assert!(shown.contains(&reason), "{shown}");

    // --kver of the good kernel alone: exit 0.
    let out = bk(&root, &["doctor", "--from", snap, "--kver", &kver]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The installed kernel's image rebuilt by another tool without the driver: AT RISK
    // naming it; --fix injects bootkmod's build from the kernel's tree, then OK.
    let image = root.at(format!("/boot/initrd.img-{kver}"));
    std::fs::write(&image, common::keep::tiny_image(&kver)).unwrap();
    image_with(&root, &kver, &["ext4", "sd_mod"]);
    let out = bk(&root, &["--json", "doctor", "--from", snap, "--kver", &kver]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    let k = verdict(&report, &kver);
    assert_eq!(k["fix"], serde_json::json!([DRIVER]), "{k:#}");
    let link = controller_link(&report, &kver);
    assert_eq!(link["state"], "missing", "{link:#}");
    assert!(link["reason"].as_str().unwrap().contains("not in the image"), "{link:#}");
    let out = bk(&root, &["--json", "doctor", "--from", snap, "--kver", &kver, "--fix"]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(controller_link(&report, &kver)["state"], "present", "{report:#}");
    // The image now holds the very file install placed (sha256 of the image's copy).
    let placed = root.at(format!("/lib/modules/{kver}/extra/megaraid_sas/megaraid_sas.ko"));
    let listing = run(bootkmod().args(["initramfs", "ls"]).arg(&image));
    let inside = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|p| p.contains(&format!("/{kver}/")) && p.ends_with("/megaraid_sas.ko"))
        .map(str::to_string);
    let inside = inside.unwrap_or_else(|| panic!("no megaraid_sas.ko in {}", text(&listing)));
    let copy = run(bootkmod().args(["initramfs", "cat"]).arg(&image).arg(&inside));
    assert!(copy.status.success(), "{}", text(&copy));
    assert!(copy.stdout == std::fs::read(&placed).unwrap(), "{inside} is not bootkmod's build");
}
