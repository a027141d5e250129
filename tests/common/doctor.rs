//! Helpers for the doctor tests: real storage topologies for QEMU guests of the
//! installed kernel, the guest that records a snapshot with `bootkmod doctor --save`
//! (`tests/doctor_record.rs`), and the committed snapshots under
//! `tests/fixtures/doctor/`.
//!
//! A recording guest boots a busybox initramfs that loads the topology's drivers with
//! `insmod`, mounts the root disk and `switch_root`s into it; the root disk carries
//! busybox, the bootkmod binary under test with its shared libraries, and `/init2`,
//! which mounts the other filesystems of its fstab and prints the snapshot between
//! [`BEGIN`] and [`END`] on the serial console. So the snapshot is bootkmod reading a
//! live system whose root really sits on that chain.
#![allow(dead_code)]

use super::qemu::{Controller, InitramfsDir};
use super::{run, tool};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BEGIN: &str = "BOOTKMOD-SNAPSHOT-BEGIN";
pub const END: &str = "BOOTKMOD-SNAPSHOT-END";

/// A topology the tests record and judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// (a) megasas → sda (whole disk) → ext4.
    MegasasExt4,
    /// (e) pvscsi → sda2 → ext4 root, `/boot` on sda1 (ext4).
    PvscsiPartitionsBoot,
}

impl Topology {
    pub const ALL: [Topology; 2] = [Topology::MegasasExt4, Topology::PvscsiPartitionsBoot];

    /// The fixture's file stem.
    pub fn name(self) -> &'static str {
        match self {
            Topology::MegasasExt4 => "a-megasas-sda-ext4",
            Topology::PvscsiPartitionsBoot => "e-pvscsi-part-ext4-boot",
        }
    }

    pub fn controller(self) -> Controller {
        match self {
            Topology::MegasasExt4 => Controller::Megasas,
            Topology::PvscsiPartitionsBoot => Controller::Pvscsi,
        }
    }

    /// The controller's driver (the link an image "for another topology" lacks).
    pub fn driver(self) -> &'static str {
        match self {
            Topology::MegasasExt4 => "megaraid_sas",
            Topology::PvscsiPartitionsBoot => "vmw_pvscsi",
        }
    }

    /// Modules an initramfs needs for this root, known from the hardware (the tests'
    /// expectation, independent of what doctor says).
    pub fn modules(self) -> Vec<&'static str> {
        vec![self.driver(), "sd_mod", "ext4"]
    }

    /// The root device in the guest.
    pub fn root_device(self) -> &'static str {
        match self {
            Topology::MegasasExt4 => "/dev/sda",
            Topology::PvscsiPartitionsBoot => "/dev/sda2",
        }
    }

    /// The snapshot committed for it.
    pub fn fixture(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/doctor")
            .join(format!("{}.json", self.name()))
    }

    /// Build the disk: root filesystem from `root_tree` (plus `/bootkmod-root` and
    /// `/etc/os-release`), and for (e) a separate `/boot`.
    pub fn disk(self, root_tree: &Path, out: &Path) -> Option<()> {
        fs::write(root_tree.join("bootkmod-root"), b"root filesystem of a bootkmod test\n")
            .unwrap();
        fs::create_dir_all(root_tree.join("etc")).unwrap();
        fs::write(root_tree.join("etc/os-release"), b"ID=bootkmod-test\n").unwrap();
        fs::create_dir_all(root_tree.join("boot")).unwrap();
        match self {
            Topology::MegasasExt4 => {
                fs::write(root_tree.join("etc/fstab"), b"/dev/sda / ext4 defaults 0 1\n").unwrap();
                mke2fs(root_tree, out, 0, 256)
            }
            Topology::PvscsiPartitionsBoot => {
                fs::write(
                    root_tree.join("etc/fstab"),
                    b"/dev/sda2 / ext4 defaults 0 1\n/dev/sda1 /boot ext4 defaults 0 2\n",
                )
                .unwrap();
                let boot = tempfile::tempdir().unwrap();
                fs::write(boot.path().join("bootkmod-boot"), b"separate /boot\n").unwrap();
                // MiB: [1, 33) /boot, [33, 289) root.
                let parts = [(1u64, 32u64), (33, 256)];
                let f = fs::File::create(out).unwrap();
                f.set_len((parts[1].0 + parts[1].1 + 1) << 20).unwrap();
                drop(f);
                write_mbr(out, &parts);
                mke2fs(boot.path(), out, parts[0].0 << 20, parts[0].1)?;
                mke2fs(root_tree, out, parts[1].0 << 20, parts[1].1)
            }
        }
    }
}

/// An MBR partition table of Linux partitions at (start MiB, size MiB).
pub fn write_mbr(disk: &Path, parts: &[(u64, u64)]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&0x626b_6d64u32.to_le_bytes()); // disk signature
    for (i, (start, size)) in parts.iter().enumerate() {
        let e = &mut mbr[446 + 16 * i..446 + 16 * (i + 1)];
        e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS unused: LBA only
        e[4] = 0x83;
        e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        let lba = |mib: u64| (mib * 2048) as u32;
        e[8..12].copy_from_slice(&lba(*start).to_le_bytes());
        e[12..16].copy_from_slice(&lba(*size).to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut f = fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&mbr).unwrap();
}

/// ext4 from `dir` into `out` at byte `offset`, `mib` MiB long.
fn mke2fs(dir: &Path, out: &Path, offset: u64, mib: u64) -> Option<()> {
    let mke2fs = tool("mke2fs")?;
    let o = run(Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-E"])
        .arg(format!("offset={offset}"))
        .arg("-d")
        .arg(dir)
        .arg(out)
        .arg(format!("{mib}M")));
    assert!(o.status.success(), "mke2fs: {}", String::from_utf8_lossy(&o.stderr));
    Some(())
}

/// Copy `binary` and the shared libraries `ldd` names into `dir`, at the same paths.
pub fn add_binary(dir: &Path, binary: &Path, at: &str) -> Option<()> {
    let ldd = tool("ldd")?;
    let dst = dir.join(at.trim_start_matches('/'));
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    fs::copy(binary, &dst).unwrap();
    let out = run(Command::new(ldd).arg(binary));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) else { continue };
        let dst = dir.join(path.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(path, &dst).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
    Some(())
}

/// The root tree of a recording guest: busybox, bootkmod, `/init2`.
pub fn recording_root(topology: Topology) -> Option<InitramfsDir> {
    let dir = InitramfsDir::busybox()?;
    add_binary(dir.path(), Path::new(env!("CARGO_BIN_EXE_bootkmod")), "/usr/bin/bootkmod")?;
    let mounts = match topology {
        Topology::MegasasExt4 => "",
        Topology::PvscsiPartitionsBoot => "mount -t ext4 -o ro /dev/sda1 /boot\n",
    };
    dir.file(
        "init2",
        format!(
            "#!/bin/sh\necho 1 > /proc/sys/kernel/printk\n{mounts}echo {BEGIN}\n/usr/bin/bootkmod doctor --save -\necho {END}\npoweroff -f\n"
        )
        .as_bytes(),
        0o755,
    );
    Some(dir)
}

/// The initramfs of a recording guest: the topology's modules from the installed
/// kernel, loaded by `insmod`; mounts root and switches into it.
pub fn recording_initramfs(release: &str, topology: Topology, out: &Path) -> Option<()> {
    let dir = InitramfsDir::busybox()?;
    let paths = dir.modules_from_host(release, &topology.modules())?;
    let device = topology.root_device();
    let mut init = String::from(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for p in &paths {
        init.push_str(&format!("insmod {p}\n"));
    }
    init.push_str(&format!(
        "i=0; while [ ! -b {device} ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done\n\
         mkdir -p /newroot\n\
         mount -t ext4 {device} /newroot || {{ echo BOOTKMOD-ROOT-FAILED; poweroff -f; }}\n\
         for d in proc sys dev; do mkdir -p /newroot/$d; mount --move /$d /newroot/$d; done\n\
         exec switch_root /newroot /init2\n"
    ));
    dir.init(&init);
    dir.pack(out)
}

/// The snapshot printed between the markers of a serial log.
pub fn snapshot_from_serial(serial: &str) -> Option<String> {
    let start = serial.find(BEGIN)? + BEGIN.len();
    let end = serial[start..].find(END)? + start;
    let text: String = serial[start..end].replace('\r', "");
    Some(text.trim().to_string() + "\n")
}
