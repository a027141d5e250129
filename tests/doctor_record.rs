//! Records the committed snapshots `tests/fixtures/doctor/*.json`: each topology of
//! `common::doctor` booted under QEMU with the installed kernel, where bootkmod itself
//! runs `doctor --save -` on the live guest and prints the chain on the serial console.
//!
//! Ignored by default (it rewrites fixtures); run it with `scripts/record-doctor-snapshots`.
//! What always runs is `doctor_boot.rs`, which judges images with these snapshots and
//! checks each still holds the chain its topology is built with.

mod common;

use common::doctor::{guest_initramfs, recording_root, snapshot_from_serial, Topology};

fn record(topology: Topology) {
    let Some(release) = common::installed_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.cpio");
    let Some(root) = recording_root(topology) else { return };
    let Some(disks) = topology.host_disks(root.path(), tmp.path()) else { return };
    let populate = topology.is_stack().then(|| root.path());
    if guest_initramfs(&release, topology, populate, true, &initrd).is_none() {
        return;
    }
    let Some(log) = topology.boot(&release, &initrd, &disks, "loglevel=1") else { return };
    if std::env::var_os("BOOTKMOD_SHOW_SERIAL").is_some() {
        eprintln!("{}", log.serial);
    }
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
fn record_b_virtio_lvm_xfs() {
    record(Topology::VirtioLvmXfs);
}

#[test]
#[ignore = "rewrites tests/fixtures/doctor; run scripts/record-doctor-snapshots"]
fn record_c_nvme_raid1_ext4() {
    record(Topology::NvmeRaid1Ext4);
}

#[test]
#[ignore = "rewrites tests/fixtures/doctor; run scripts/record-doctor-snapshots"]
fn record_d_ahci_luks_ext4() {
    record(Topology::AhciLuksExt4);
}

#[test]
#[ignore = "rewrites tests/fixtures/doctor; run scripts/record-doctor-snapshots"]
fn record_e_pvscsi_partition_ext4_separate_boot() {
    record(Topology::PvscsiPartitionsBoot);
}
