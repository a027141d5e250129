//! Helpers for the doctor tests: real storage topologies for QEMU guests of the
//! installed kernel, the guest that records a snapshot with `bootkmod doctor --save`
//! (`tests/doctor_record.rs`), the images the kernel judges (`tests/doctor_boot.rs`),
//! and the committed snapshots under `tests/fixtures/doctor/`.
//!
//! Disks: a plain disk or partitions are made on the host without root (`mke2fs -d`);
//! LVM, md RAID and LUKS are made by a *builder guest*: a busybox initramfs with the
//! real `lvm`, `mdadm` or `cryptsetup` and `mkfs`, which creates the stack on blank
//! disks, fills the filesystem from a tree it carries, and either tears the stack down
//! (a disk for the boot tests) or `switch_root`s into it (a recording).
//!
//! A recording guest's root holds busybox, the bootkmod binary under test (stripped)
//! with its shared libraries, and `/init2`, which mounts the other filesystems of its
//! fstab and prints the snapshot between [`BEGIN`] and [`END`] on the serial console.
//! So the snapshot is bootkmod reading a live system whose root really sits on that
//! chain.
#![allow(dead_code)]

use super::inject::{add_binary, compress, modprobe_tree};
use super::qemu::{self, Boot, Controller, InitramfsDir, ROOT_FAIL, ROOT_OK};
use super::{run, tool};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BEGIN: &str = "BOOTKMOD-SNAPSHOT-BEGIN";
pub const END: &str = "BOOTKMOD-SNAPSHOT-END";
/// Printed by a builder guest that made its disks.
const BUILT: &str = "BOOTKMOD-DISKS-BUILT";
/// The LUKS passphrase, as a key file in the images.
const KEY: &[u8] = b"bootkmod test key\n";
/// Disk size for the stacks (mkfs.xfs wants 300 MiB at least).
const STACK_DISK_MIB: u64 = 320;

/// A topology the tests record and judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// (a) megasas → sda (whole disk) → ext4.
    MegasasExt4,
    /// (b) virtio-blk → LVM (VG `bk`, LV `root`) → xfs.
    VirtioLvmXfs,
    /// (c) two NVMe disks → md RAID1 → ext4.
    NvmeRaid1Ext4,
    /// (d) AHCI → LUKS2 (aes-xts-plain64) → ext4.
    AhciLuksExt4,
    /// (e) pvscsi → sda2 → ext4 root, `/boot` on sda1 (ext4).
    PvscsiPartitionsBoot,
}

impl Topology {
    pub const ALL: [Topology; 5] = [
        Topology::MegasasExt4,
        Topology::VirtioLvmXfs,
        Topology::NvmeRaid1Ext4,
        Topology::AhciLuksExt4,
        Topology::PvscsiPartitionsBoot,
    ];

    /// The fixture's file stem.
    pub fn name(self) -> &'static str {
        match self {
            Topology::MegasasExt4 => "a-megasas-sda-ext4",
            Topology::VirtioLvmXfs => "b-virtio-lvm-xfs",
            Topology::NvmeRaid1Ext4 => "c-nvme-raid1-ext4",
            Topology::AhciLuksExt4 => "d-ahci-luks-ext4",
            Topology::PvscsiPartitionsBoot => "e-pvscsi-part-ext4-boot",
        }
    }

    /// The controller of each disk, in QEMU's order.
    pub fn controllers(self) -> Vec<Controller> {
        match self {
            Topology::MegasasExt4 => vec![Controller::Megasas],
            Topology::VirtioLvmXfs => vec![Controller::VirtioBlk],
            Topology::NvmeRaid1Ext4 => vec![Controller::Nvme, Controller::Nvme],
            Topology::AhciLuksExt4 => vec![Controller::Ahci],
            Topology::PvscsiPartitionsBoot => vec![Controller::Pvscsi],
        }
    }

    /// The guest's whole disks, in the same order.
    fn disk_devices(self) -> Vec<&'static str> {
        match self {
            Topology::VirtioLvmXfs => vec!["/dev/vda"],
            Topology::NvmeRaid1Ext4 => vec!["/dev/nvme0n1", "/dev/nvme1n1"],
            _ => vec!["/dev/sda"],
        }
    }

    /// The controller's driver.
    pub fn driver(self) -> &'static str {
        match self {
            Topology::MegasasExt4 => "megaraid_sas",
            Topology::VirtioLvmXfs => "virtio_blk",
            Topology::NvmeRaid1Ext4 => "nvme",
            Topology::AhciLuksExt4 => "ahci",
            Topology::PvscsiPartitionsBoot => "vmw_pvscsi",
        }
    }

    /// The root filesystem's type.
    pub fn fstype(self) -> &'static str {
        match self {
            Topology::VirtioLvmXfs => "xfs",
            _ => "ext4",
        }
    }

    /// Modules an initramfs needs for this root, known from the hardware and the stack
    /// (the tests' expectation, independent of what doctor says).
    pub fn modules(self) -> Vec<&'static str> {
        let mut m = vec![self.driver()];
        m.extend(self.links());
        m
    }

    /// The links after the controller driver, each of which an image may lack: the
    /// disk-class driver, the stack's modules, the filesystem.
    pub fn links(self) -> Vec<&'static str> {
        match self {
            Topology::MegasasExt4 | Topology::PvscsiPartitionsBoot => vec!["sd_mod", "ext4"],
            Topology::VirtioLvmXfs => vec!["virtio_pci", "dm_mod", "xfs"],
            // md_mod and dm_mod come with raid1 and dm_crypt, which need them.
            Topology::NvmeRaid1Ext4 => vec!["raid1", "ext4"],
            Topology::AhciLuksExt4 => vec!["sd_mod", "dm_crypt", "xts", "ext4"],
        }
    }

    /// The root device in the guest.
    pub fn root_device(self) -> &'static str {
        match self {
            Topology::MegasasExt4 => "/dev/sda",
            Topology::VirtioLvmXfs => "/dev/mapper/bk-root",
            Topology::NvmeRaid1Ext4 => "/dev/md0",
            Topology::AhciLuksExt4 => "/dev/mapper/root",
            Topology::PvscsiPartitionsBoot => "/dev/sda2",
        }
    }

    /// The userspace tool that brings the stack up, and where an image has it.
    fn stack_tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            Topology::VirtioLvmXfs => Some(("lvm", "/sbin/lvm")),
            Topology::NvmeRaid1Ext4 => Some(("mdadm", "/sbin/mdadm")),
            Topology::AhciLuksExt4 => Some(("cryptsetup", "/sbin/cryptsetup")),
            _ => None,
        }
    }

    /// Shell lines that bring up an existing stack (as dracut's lvm, mdraid and crypt
    /// modules do: load the core module, then the tool; the kernel asks modprobe for
    /// the md personality, the dm target and the ciphers itself).
    fn activate(self) -> &'static str {
        match self {
            Topology::VirtioLvmXfs => "modprobe dm_mod\nlvm vgchange -ay bk\n",
            Topology::NvmeRaid1Ext4 => {
                "modprobe md_mod\nmdadm --assemble --run /dev/md0 /dev/nvme0n1 /dev/nvme1n1\n"
            }
            Topology::AhciLuksExt4 => {
                "modprobe dm_mod\ncryptsetup open --key-file /etc/bootkmod.key /dev/sda root\n"
            }
            _ => "",
        }
    }

    /// Shell lines of a builder guest: create the stack and the filesystem.
    fn create(self) -> &'static str {
        match self {
            Topology::VirtioLvmXfs => {
                "lvm pvcreate -ff -y /dev/vda && lvm vgcreate bk /dev/vda && \
                 lvm lvcreate -y -Zn -l 100%FREE -n root bk && mkfs.xfs -q /dev/mapper/bk-root"
            }
            Topology::NvmeRaid1Ext4 => {
                "mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 \
                 --assume-clean /dev/nvme0n1 /dev/nvme1n1 && /sbin/mke2fs -q -t ext4 /dev/md0"
            }
            Topology::AhciLuksExt4 => {
                "cryptsetup luksFormat -q --type luks2 --cipher aes-xts-plain64 --pbkdf pbkdf2 \
                 --pbkdf-force-iterations 1000 --key-file /etc/bootkmod.key /dev/sda && \
                 cryptsetup open --key-file /etc/bootkmod.key /dev/sda root && \
                 /sbin/mke2fs -q -t ext4 /dev/mapper/root"
            }
            _ => "false",
        }
    }

    /// Shell lines of a builder guest: tear the stack down so the disks are clean.
    fn deactivate(self) -> &'static str {
        match self {
            Topology::VirtioLvmXfs => "lvm vgchange -an bk",
            Topology::NvmeRaid1Ext4 => "mdadm --stop /dev/md0",
            Topology::AhciLuksExt4 => "cryptsetup close root",
            _ => "true",
        }
    }

    /// The snapshot committed for it.
    pub fn fixture(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/doctor")
            .join(format!("{}.json", self.name()))
    }

    /// Files every root of the topology holds: the marker, os-release, fstab (and
    /// crypttab for LUKS).
    fn fill_root(self, root_tree: &Path) {
        fs::write(root_tree.join("bootkmod-root"), b"root filesystem of a bootkmod test\n")
            .unwrap();
        fs::create_dir_all(root_tree.join("etc")).unwrap();
        fs::create_dir_all(root_tree.join("boot")).unwrap();
        fs::write(root_tree.join("etc/os-release"), b"ID=bootkmod-test\n").unwrap();
        let mut fstab = format!("{} / {} defaults 0 1\n", self.root_device(), self.fstype());
        if self == Topology::PvscsiPartitionsBoot {
            fstab.push_str("/dev/sda1 /boot ext4 defaults 0 2\n");
        }
        fs::write(root_tree.join("etc/fstab"), fstab).unwrap();
        if self == Topology::AhciLuksExt4 {
            fs::write(root_tree.join("etc/crypttab"), b"root /dev/sda /etc/bootkmod.key luks\n")
                .unwrap();
        }
    }

    /// The topology another image was built for: its controller driver is what an image
    /// "built before the HBA was replaced" holds instead of this one's.
    pub fn other(self) -> Topology {
        match self {
            Topology::MegasasExt4 => Topology::PvscsiPartitionsBoot,
            Topology::VirtioLvmXfs => Topology::NvmeRaid1Ext4,
            Topology::NvmeRaid1Ext4 => Topology::VirtioLvmXfs,
            Topology::AhciLuksExt4 => Topology::MegasasExt4,
            Topology::PvscsiPartitionsBoot => Topology::MegasasExt4,
        }
    }

    /// Whether a builder guest makes the disks (a stack needs root in a guest).
    pub fn is_stack(self) -> bool {
        self.stack_tool().is_some()
    }

    /// The disks in `dir`: made on the host with the root filesystem from `root_tree`
    /// (plus the files of every root) for a plain disk or partitions; blank for a stack,
    /// which a builder guest then makes.
    pub fn host_disks(self, root_tree: &Path, dir: &Path) -> Option<Vec<PathBuf>> {
        self.fill_root(root_tree);
        let disks: Vec<PathBuf> = (0..self.controllers().len())
            .map(|n| dir.join(format!("{}-disk{n}.img", self.name())))
            .collect();
        match self {
            Topology::MegasasExt4 => mke2fs(root_tree, &disks[0], 0, 64)?,
            Topology::PvscsiPartitionsBoot => {
                let boot = tempfile::tempdir().unwrap();
                fs::write(boot.path().join("bootkmod-boot"), b"separate /boot\n").unwrap();
                // MiB: [1, 33) /boot, [33, 97) root.
                let parts = [(1u64, 32u64), (33, 64)];
                let f = fs::File::create(&disks[0]).unwrap();
                f.set_len((parts[1].0 + parts[1].1 + 1) << 20).unwrap();
                drop(f);
                write_mbr(&disks[0], &parts);
                mke2fs(boot.path(), &disks[0], parts[0].0 << 20, parts[0].1)?;
                mke2fs(root_tree, &disks[0], parts[1].0 << 20, parts[1].1)?;
            }
            _ => {
                for d in &disks {
                    fs::File::create(d).unwrap().set_len(STACK_DISK_MIB << 20).unwrap();
                }
            }
        }
        Some(disks)
    }

    /// The disks in `dir` with the root filesystem from `root_tree`, a stack made by a
    /// builder guest of `release`.
    pub fn disks(self, release: &str, root_tree: &Path, dir: &Path) -> Option<Vec<PathBuf>> {
        let disks = self.host_disks(root_tree, dir)?;
        if self.is_stack() {
            let initrd = dir.join(format!("{}-builder.cpio", self.name()));
            guest_initramfs(release, self, Some(root_tree), false, &initrd)?;
            let log = self.boot(release, &initrd, &disks, "loglevel=1")?;
            assert!(
                log.serial.contains(BUILT),
                "{}: the builder guest did not make its disks:\n{}",
                self.name(),
                log.tail()
            );
        }
        Some(disks)
    }

    /// Boot `initrd` of `release` behind this topology's controllers and `disks`.
    pub fn boot(
        self,
        release: &str,
        initrd: &Path,
        disks: &[PathBuf],
        append: &str,
    ) -> Option<qemu::BootLog> {
        let kernel = qemu::host_kernel(release)?;
        let mut boot = Boot::new(kernel, initrd).append(append);
        for (d, c) in disks.iter().zip(self.controllers()) {
            boot = boot.disk(d, c);
        }
        boot.timeout = std::time::Duration::from_secs(300);
        boot.run()
    }

    /// An image of `release` as a distribution's initramfs would load this root: kmod's
    /// `modprobe` for every device's modalias (udev's job), the stack's tool, the
    /// filesystem by name, holding `modules` (with their closure, kmod's own indexes)
    /// and nothing else. Packed and compressed with `kind`.
    pub fn image(
        self,
        release: &str,
        modules: &[&str],
        kind: &str,
    ) -> Option<(tempfile::TempDir, PathBuf)> {
        let dir = modprobe_tree(release, modules)?;
        self.add_stack_tool(dir.path())?;
        let wait = self.disk_devices().iter().map(|d| format!("[ -b {d} ]")).collect::<Vec<_>>();
        let init = format!(
            r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /run/lock/lvm /run/mdadm /run/cryptsetup
n=0
while [ $n -lt 8 ] && ! {{ {wait}; }}; do
  for a in /sys/bus/*/devices/*/modalias; do
    [ -r "$a" ] && modprobe -q "$(cat "$a")" 2>/dev/null
  done
  sleep 0.5
  n=$((n+1))
done
{activate}i=0; while [ ! -b {root} ] && [ $i -lt 10 ]; do sleep 0.2; i=$((i+1)); done
modprobe {fs}
mkdir -p /newroot
if mount -t {fs} -o ro {root} /newroot && [ -e /newroot/bootkmod-root ]; then echo {ROOT_OK}; else echo {ROOT_FAIL}; fi
poweroff -f
"#,
            wait = wait.join(" && "),
            activate = self.activate(),
            root = self.root_device(),
            fs = self.fstype(),
        );
        dir.init(&init);
        let tmp = tempfile::tempdir().unwrap();
        let raw = tmp.path().join("image.cpio");
        dir.pack(&raw)?;
        let image = tmp.path().join(format!("initrd-{kind}.img"));
        compress(&raw, kind, &image)?;
        Some((tmp, image))
    }

    /// The stack's tool, its configuration and the LUKS key file.
    fn add_stack_tool(self, dir: &Path) -> Option<()> {
        let Some((name, at)) = self.stack_tool() else { return Some(()) };
        add_binary(dir, &tool(name)?, at)?;
        fs::create_dir_all(dir.join("etc/lvm")).unwrap();
        // No udev in these images: libdevmapper makes the nodes itself.
        fs::write(
            dir.join("etc/lvm/lvm.conf"),
            "activation {\n udev_sync = 0\n udev_rules = 0\n monitoring = 0\n}\n\
             devices {\n obtain_device_list_from_udev = 0\n}\n\
             backup {\n backup = 0\n archive = 0\n}\n",
        )
        .unwrap();
        fs::write(dir.join("etc/bootkmod.key"), KEY).unwrap();
        Some(())
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

/// The root tree of a recording guest: busybox, bootkmod (stripped: the debug build is
/// 200 MB), `/init2`.
pub fn recording_root(topology: Topology) -> Option<InitramfsDir> {
    let dir = InitramfsDir::busybox()?;
    let stripped = dir.path().join("bootkmod.stripped");
    let o = run(Command::new(tool("strip")?).arg("-o").arg(&stripped).arg(super::bootkmod_bin()));
    assert!(o.status.success(), "strip: {}", String::from_utf8_lossy(&o.stderr));
    add_binary(dir.path(), &stripped, "/usr/bin/bootkmod")?;
    fs::remove_file(&stripped).unwrap();
    let mounts = match topology {
        Topology::PvscsiPartitionsBoot => "mount -t ext4 -o ro /dev/sda1 /boot\n",
        _ => "",
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

/// The initramfs of a builder or recording guest of `release`: the topology's modules
/// from the installed kernel loaded by `insmod`, the stack's tool and mkfs. With
/// `populate`, it makes the stack and copies that tree onto the new filesystem (a
/// builder); otherwise the disks exist. With `record`, it then `switch_root`s into it
/// and `/init2` records; otherwise it tears the stack down and prints [`BUILT`].
pub fn guest_initramfs(
    release: &str,
    topology: Topology,
    populate: Option<&Path>,
    record: bool,
    out: &Path,
) -> Option<()> {
    let dir = InitramfsDir::busybox()?;
    // kmod's --show-depends lists soft dependencies too (xfs's crc32c).
    let paths = dir.modules_from_host(release, &topology.modules())?;
    topology.add_stack_tool(dir.path())?;
    let fs = topology.fstype();
    let root = topology.root_device();
    let mut init = String::from(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         mkdir -p /run/lock/lvm /run/mdadm /run/cryptsetup\n",
    );
    for p in &paths {
        init.push_str(&format!("insmod {p}\n"));
    }
    for d in topology.disk_devices() {
        init.push_str(&format!(
            "i=0; while [ ! -b {d} ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done\n"
        ));
    }
    init.push_str("mkdir -p /newroot\n");
    if let Some(tree) = populate {
        let mkfs = if fs == "xfs" { "mkfs.xfs" } else { "mke2fs" };
        add_binary(dir.path(), &tool(mkfs)?, &format!("/sbin/{mkfs}"))?;
        copy_tree(tree, &dir.path().join("rootsrc"));
        init.push_str(&format!(
            "{{ {create}; }} || {{ echo BOOTKMOD-CREATE-FAILED; poweroff -f; }}\n\
             mount -t {fs} {root} /newroot || {{ echo BOOTKMOD-ROOT-FAILED; poweroff -f; }}\n\
             cp -a /rootsrc/. /newroot/\n",
            create = topology.create(),
        ));
    } else {
        init.push_str(&format!(
            "{activate}i=0; while [ ! -b {root} ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done\n\
             mount -t {fs} {root} /newroot || {{ echo BOOTKMOD-ROOT-FAILED; poweroff -f; }}\n",
            activate = topology.activate(),
        ));
    }
    if record {
        init.push_str(
            "for d in proc sys dev; do mkdir -p /newroot/$d; mount --move /$d /newroot/$d; done\n\
             exec switch_root /newroot /init2\n",
        );
    } else {
        init.push_str(&format!(
            "umount /newroot && {deactivate} && sync && echo {BUILT}\npoweroff -f\n",
            deactivate = topology.deactivate(),
        ));
    }
    dir.init(&init);
    dir.pack(out)
}

/// `cp -a` of a tree (symlinks kept).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let o = run(Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to));
    assert!(o.status.success(), "cp -a: {}", String::from_utf8_lossy(&o.stderr));
}

/// The snapshot printed between the markers of a serial log.
pub fn snapshot_from_serial(serial: &str) -> Option<String> {
    let start = serial.find(BEGIN)? + BEGIN.len();
    let end = serial[start..].find(END)? + start;
    let text: String = serial[start..end].replace('\r', "");
    Some(text.trim().to_string() + "\n")
}
