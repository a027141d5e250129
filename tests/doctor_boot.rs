//! The kernel as judge of `bootkmod doctor`: for each recorded topology
//! (`tests/fixtures/doctor`, recorded by bootkmod inside QEMU guests of the installed
//! kernel), images of that kernel are judged from the snapshot and then booted behind
//! the same hardware. The images load drivers like udev, through kmod's real `modprobe`
//! by each device's modalias (`common::inject::base_image`), so what decides the boot
//! is the image's content and its own indexes.
//!
//! Cases per topology (the doctor's verdict, then the boot):
//! - an image with the topology's modules: OK, and root mounts;
//! - the image built for the other topology (its controller driver instead of this
//!   one's): AT RISK naming this one's driver, and root does not mount; after
//!   `doctor --fix` the same image is OK and root mounts;
//! - no boot: the driver omitted, `sd_mod` omitted: AT RISK naming it;
//!   `--fix --dry-run` leaves the image byte for byte.

mod common;

use common::doctor::Topology;
use common::inject::base_image;
use common::qemu::{self, Boot};
use serde_json::Value;
use std::path::Path;

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

fn boot(topology: Topology, release: &str, image: &Path) -> Option<qemu::BootLog> {
    let kernel = qemu::host_kernel(release)?;
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    let tree = tempfile::tempdir().unwrap();
    topology.disk(tree.path(), &disk)?;
    let mut b = Boot::new(kernel, image).disk(&disk, topology.controller());
    b.timeout = std::time::Duration::from_secs(300);
    b.run()
}

fn other(topology: Topology) -> Topology {
    match topology {
        Topology::MegasasExt4 => Topology::PvscsiPartitionsBoot,
        Topology::PvscsiPartitionsBoot => Topology::MegasasExt4,
    }
}

fn judged_by_the_kernel(topology: Topology) {
    let Some(release) = common::installed_kernel() else { return };
    let device = topology.root_device();

    // An image with the topology's drivers: OK, and it mounts root.
    let Some((_d1, good)) = base_image(&release, &topology.modules(), device, "gzip") else {
        return;
    };
    let (code, json) = doctor(topology, &release, &good, &[]);
    assert_eq!((code, json["at_risk"].as_bool()), (0, Some(false)), "{json:#}");
    let Some(log) = boot(topology, &release, &good) else { return };
    assert!(
        log.root_mounted(),
        "{}: the OK image did not mount root:\n{}",
        topology.name(),
        log.tail()
    );

    // The image built for the other topology: AT RISK naming this one's driver.
    let Some((_d2, foreign)) = base_image(&release, &other(topology).modules(), device, "gzip")
    else {
        return;
    };
    let (code, json) = doctor(topology, &release, &foreign, &[]);
    assert_eq!(code, 3, "{json:#}");
    assert!(problems(&json).contains(topology.driver()), "{}", problems(&json));
    let Some(log) = boot(topology, &release, &foreign) else { return };
    assert!(
        log.root_failed() && !log.root_mounted(),
        "{}: the AT RISK image mounted root:\n{}",
        topology.name(),
        log.tail()
    );

    // --fix injects it; the same image is then OK and mounts root.
    let (code, json) = doctor(topology, &release, &foreign, &["--fix"]);
    assert_eq!((code, json["at_risk"].as_bool()), (0, Some(false)), "{json:#}");
    assert_eq!(json["fixes"][0]["outcome"], "written", "{json:#}");
    let Some(log) = boot(topology, &release, &foreign) else { return };
    assert!(
        log.root_mounted(),
        "{}: no root mount after doctor --fix:\n{}",
        topology.name(),
        log.tail()
    );
}

#[test]
fn a_megasas_sda_ext4_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::MegasasExt4);
}

#[test]
fn e_pvscsi_partition_ext4_boot_judged_by_the_kernel() {
    judged_by_the_kernel(Topology::PvscsiPartitionsBoot);
}

/// Each needed link left out on its own is named; a dry run of the fix changes nothing.
#[test]
fn each_missing_link_is_named_and_a_dry_run_writes_nothing() {
    let Some(release) = common::installed_kernel() else { return };
    for topology in Topology::ALL {
        for left_out in [topology.driver(), "sd_mod"] {
            let modules: Vec<&str> =
                topology.modules().into_iter().filter(|m| *m != left_out).collect();
            let Some((_d, image)) = base_image(&release, &modules, topology.root_device(), "zstd")
            else {
                return;
            };
            let before = std::fs::read(&image).unwrap();
            let (code, json) = doctor(topology, &release, &image, &["--fix", "--dry-run"]);
            assert_eq!(code, 3, "{}: {json:#}", topology.name());
            assert!(
                problems(&json).contains(&format!("{left_out} is not in the image")),
                "{} without {left_out}: {}",
                topology.name(),
                problems(&json)
            );
            assert_eq!(json["fixes"][0]["outcome"], "planned", "{json:#}");
            assert_eq!(std::fs::read(&image).unwrap(), before, "a dry run changed the image");
        }
    }
}
