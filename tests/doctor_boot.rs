//! The kernel as judge of `bootkmod doctor`: for each recorded topology
//! (`tests/fixtures/doctor`, recorded by bootkmod inside QEMU guests of the installed
//! kernel: `tests/doctor_record.rs`), images of that kernel are judged from the snapshot
//! and then booted behind the same hardware and the same stack. The images load
//! drivers as udev and the kernel would, through kmod's real `modprobe` by each
//! device's modalias and by the names the kernel asks for (md personality, dm target,
//! ciphers), so what decides the boot is the image's content and its own indexes.
//!
//! Cases per topology, each judged by doctor and then booted:
//! - the image with every module the topology needs: OK, and root mounts;
//! - the image built before the controller was replaced (another controller's driver
//!   instead of this one's), and one image per further link left out (disk-class
//!   driver, md personality, dm target, cipher, filesystem): AT RISK naming the module,
//!   and root does not mount; after `doctor --fix` the same image is OK and root mounts.
//!
//! A dry run of the fix leaves the image byte for byte.

mod common;

use common::doctor::Topology;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `bootkmod doctor --from FIXTURE --kver K --image IMAGE [extra] --json`: (exit, JSON).
fn doctor(topology: Topology, release: &str, image: &Path, extra: &[&str]) -> (i32, Value) {
    let out = common::run(
        common::bootkmod()
            .args(["doctor", "--json", "--from"])
            .arg(topology.fixture())
            .args(["--kver", release, "--image"])
            .arg(image)
            .args(extra),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("doctor printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), json)
}

/// The one kernel's problems, joined.
fn problems(json: &Value) -> String {
    json["kernels"][0]["problems"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

/// The images an admin may find for this topology that lack one link: (what is
/// missing, the modules the image holds).
fn lacking(topology: Topology) -> Vec<(&'static str, Vec<&'static str>)> {
    let all = topology.modules();
    let without = |gone: &str, instead: Option<&'static str>| -> Vec<&'static str> {
        all.iter().copied().filter(|m| *m != gone).chain(instead).collect()
    };
    let mut cases =
        vec![(topology.driver(), without(topology.driver(), Some(topology.other().driver())))];
    for link in topology.links() {
        cases.push((link, without(link, None)));
    }
    cases
}

fn boot_mounts(topology: Topology, release: &str, image: &Path, disks: &[PathBuf]) -> Option<bool> {
    let log = topology.boot(release, image, disks, "")?;
    assert!(
        log.root_mounted() || log.root_failed(),
        "{}: the guest reported neither outcome:\n{}",
        topology.name(),
        log.tail()
    );
    Some(log.root_mounted())
}

fn judged_by_the_kernel(topology: Topology) {
    let Some(release) = common::installed_kernel() else { return };
    let name = topology.name();
    // The committed snapshot still holds this topology's chain.
    let snapshot = std::fs::read_to_string(topology.fixture()).unwrap();
    let chain = bootkmod::model::root_chain::RootChain::from_json(&snapshot, name).unwrap();
    let bound: Vec<&str> = chain
        .devices
        .values()
        .flat_map(|d| d.path.iter().filter_map(|n| n.module.as_deref()))
        .collect();
    assert!(bound.contains(&topology.driver()), "{name}: {bound:?}");

    let tmp = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let Some(disks) = topology.disks(&release, tree.path(), tmp.path()) else { return };

    // The image with every module: OK, and it mounts root.
    let Some((_d, good)) = topology.image(&release, &topology.modules(), "gzip") else { return };
    let (code, json) = doctor(topology, &release, &good, &[]);
    assert_eq!((code, json["at_risk"].as_bool()), (0, Some(false)), "{name}: {json:#}");
    let Some(mounted) = boot_mounts(topology, &release, &good, &disks) else { return };
    assert!(mounted, "{name}: the image doctor calls OK did not mount root");

    for (missing, modules) in lacking(topology) {
        let Some((_d, image)) = topology.image(&release, &modules, "zstd") else { return };
        let (code, json) = doctor(topology, &release, &image, &[]);
        assert_eq!(code, 3, "{name} without {missing}: {json:#}");
        assert!(
            problems(&json).contains(&format!("{missing} ")),
            "{name} without {missing}: {}",
            problems(&json)
        );
        let Some(mounted) = boot_mounts(topology, &release, &image, &disks) else { return };
        assert!(!mounted, "{name}: the image without {missing} (AT RISK) mounted root");

        let before = std::fs::read(&image).unwrap();
        let (code, json) = doctor(topology, &release, &image, &["--fix", "--dry-run"]);
        assert_eq!((code, json["fixes"][0]["outcome"].as_str()), (3, Some("planned")), "{json:#}");
        assert_eq!(std::fs::read(&image).unwrap(), before, "a dry run changed the image");

        let (code, json) = doctor(topology, &release, &image, &["--fix"]);
        assert_eq!((code, json["at_risk"].as_bool()), (0, Some(false)), "{name}: {json:#}");
        assert_eq!(json["fixes"][0]["outcome"], "written", "{json:#}");
        let Some(mounted) = boot_mounts(topology, &release, &image, &disks) else { return };
        assert!(mounted, "{name} without {missing}: no root mount after doctor --fix");
        eprintln!("{name}: without {missing}: AT RISK, did not mount; fixed, mounted");
    }
}

#[test]
fn a_megasas_sda_ext4_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::MegasasExt4);
}

#[test]
fn b_virtio_lvm_xfs_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::VirtioLvmXfs);
}

#[test]
fn c_nvme_raid1_ext4_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::NvmeRaid1Ext4);
}

#[test]
fn d_ahci_luks_ext4_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::AhciLuksExt4);
}

#[test]
fn e_pvscsi_partition_ext4_boot_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::PvscsiPartitionsBoot);
}
