//! Records the committed snapshots `tests/fixtures/doctor/*.json`: each topology of
//! `common::doctor` booted under QEMU with the installed kernel, where bootkmod itself
//! runs `doctor --save -` on the live guest and prints the chain on the serial console.
//!
//! Ignored by default (it rewrites fixtures); run it with `scripts/record-doctor-snapshots`.
//! The check that always runs is in `doctor_snapshots.rs`: the committed snapshots
//! parse and hold the chain each topology is built with.

mod common;

use common::doctor::{recording_initramfs, recording_root, snapshot_from_serial, Topology};
use common::qemu::{self, Boot};

fn record(topology: Topology) {
    let Some(release) = common::installed_kernel() else { return };
    let Some(kernel) = qemu::host_kernel(&release) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.cpio");
    let disk = tmp.path().join("disk.img");
    let Some(root) = recording_root(topology) else { return };
    if topology.disk(root.path(), &disk).is_none()
        || recording_initramfs(&release, topology, &initrd).is_none()
    {
        return;
    }
    let mut boot =
        Boot::new(kernel, &initrd).disk(&disk, topology.controller()).append("loglevel=1");
    boot.timeout = std::time::Duration::from_secs(300);
    let Some(log) = boot.run() else { return };
    let snapshot = snapshot_from_serial(&log.serial).unwrap_or_else(|| {
        panic!("{}: no snapshot on the serial console:\n{}", topology.name(), log.tail())
    });
    bootkmod::model::root_chain::RootChain::from_json(&snapshot, topology.name())
        .unwrap_or_else(|e| panic!("{e:#}\n{snapshot}"));
    std::fs::write(topology.fixture(), snapshot).unwrap();
    eprintln!("recorded {} in {:.1}s", topology.fixture().display(), log.elapsed.as_secs_f64());
}

#[test]
#[ignore = "rewrites tests/fixtures/doctor; run scripts/record-doctor-snapshots"]
fn record_a_megasas_sda_ext4() {
    record(Topology::MegasasExt4);
}

#[test]
#[ignore = "rewrites tests/fixtures/doctor; run scripts/record-doctor-snapshots"]
fn record_e_pvscsi_partition_ext4_separate_boot() {
    record(Topology::PvscsiPartitionsBoot);
}
