//! [`RootChain`]: the block devices the initramfs must bring up before it can mount the
//! root filesystem (and `/usr`, `/boot`, any `x-initrd.mount` of fstab), read from the
//! live system through a [`Root`] or from a saved snapshot (`doctor --save`/`--from`).
//!
//! Flow of [`RootChain::read`]: `/proc/self/mountinfo` gives each mount's `MAJ:MIN`,
//! filesystem type and source; `/sys/dev/block/MAJ:MIN` links to the device; from there
//! [`RootChain`] walks down: a partition to its disk, dm and md devices to their
//! `slaves/` (dm type from the `dm/uuid` prefix: `LVM-`, `CRYPT-`, `mpath-`; md level
//! from `md/level`), and from each whole disk up its device path to the controller,
//! keeping every node that has a `modalias` or a bound driver ([`DeviceNode`]).
//!
//! Only what the verdict reads is kept, so a snapshot is small, holds no serial numbers
//! or file contents, and can be sent by a customer. Under `--root DIR` the target's
//! `/proc` and `/sys` are read (Anaconda bind-mounts them into `/mnt/sysimage`), and
//! mount points below `DIR` are taken relative to it.

use crate::formats::luks;
use crate::model::root::Root;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the snapshot layout; a reader refuses others.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Target-absolute path of the snapshot `status`, the kernel-install plugin and a
/// plain `doctor` read when the live chain cannot be read (no `/proc` or `/sys` under
/// the root: an image built in a chroot, a container): `doctor --save` it there.
pub const SAVED_SNAPSHOT: &str = "/var/lib/bootkmod/doctor-snapshot.json";

/// Where the initramfs must mount something, and on what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainMount {
    /// Mount point as the target sees it (`/`, `/usr`, `/boot`...).
    pub target: String,
    pub fstype: String,
    /// Name of the block device under `/sys/class/block` (`sda1`, `dm-0`), `None` for a
    /// filesystem without one (nfs, tmpfs, overlay).
    pub device: Option<String>,
    /// Why the initramfs needs it: `root`, `/usr`, `/boot`, `x-initrd.mount`.
    pub why: String,
}

/// The role of one block device in the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceKind {
    /// A whole disk, reached through the controller nodes in `path`.
    Disk,
    /// A partition of `lower[0]`.
    Partition,
    /// A device-mapper device; `target` from the `dm/uuid` prefix (`LVM`, `CRYPT`,
    /// `mpath`, or the prefix itself; empty when the uuid has none).
    Dm {
        target: String,
        /// Cipher spec of a crypt device (`aes-xts-plain64`) when it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cipher: Option<String>,
    },
    /// An md RAID array of `level` (`raid1`, `raid5`...).
    Md { level: String },
}

/// One node up a disk's device path: the disk's own device, its controller, the buses
/// between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceNode {
    /// Path under `/sys/devices`.
    pub sysfs: String,
    pub subsystem: Option<String>,
    /// The bound driver's name (as in `driver/`).
    pub driver: Option<String>,
    /// The module that provides the bound driver; `None` when built in or unbound.
    pub module: Option<String>,
    pub modalias: Option<String>,
}

/// One block device of the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockDevice {
    /// Name under `/sys/class/block`.
    pub name: String,
    #[serde(flatten)]
    pub kind: DeviceKind,
    /// Devices this one is built on (partition: its disk; dm, md: `slaves/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower: Vec<String>,
    /// For a disk: its device path from the disk's own device up to the bus root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<DeviceNode>,
}

/// What must come up for the target's early mounts: the whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootChain {
    pub format: u32,
    /// The kernel the snapshot was taken on (`uname -r`), for the reader's information.
    pub recorded_on: String,
    pub mounts: Vec<ChainMount>,
    /// Every device reached from the mounts, by name.
    pub devices: BTreeMap<String, BlockDevice>,
}

/// One line of `/proc/self/mountinfo`, the fields the chain reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    majmin: String,
    mount_point: String,
    fstype: String,
    /// The mount source (`/dev/sda2`, `server:/export`, `tmpfs`).
    source: String,
}

/// Parse mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SRC
/// SUPEROPTS`. Later mounts over the same point win, as the kernel shows them.
fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out: Vec<MountInfo> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(majmin), Some(point), Some(fstype)) =
            (fields.get(2), fields.get(4), fields.get(dash + 1))
        else {
            continue;
        };
        let mount = MountInfo {
            majmin: majmin.to_string(),
            mount_point: unescape_octal(point),
            fstype: fstype.to_string(),
            source: fields.get(dash + 2).map(|s| unescape_octal(s)).unwrap_or_default(),
        };
        out.retain(|m| m.mount_point != mount.mount_point);
        out.push(mount);
    }
    out
}

/// mountinfo and fstab write space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits =
            bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], digits) {
            let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sysfs entry of a mount's block device: its `MAJ:MIN` under `/sys/dev/block`; for
/// a filesystem that shows an anonymous number (`0:N`: btrfs, whose subvolumes get one
/// each, as well as tmpfs, nfs, overlay) the block device its source names, if any
/// (`/dev/sda2`; `/dev/mapper/root` resolves to `dm-0`), under `/sys/class/block`. The
/// source is a path of the reader's own `/dev` (under `--root`, the host's), as
/// mountinfo shows it. `None`: no block device.
fn device_link(sys: &Path, m: &MountInfo) -> Option<PathBuf> {
    if !m.majmin.starts_with("0:") {
        return Some(sys.join("dev/block").join(&m.majmin));
    }
    if !m.source.starts_with('/') {
        return None;
    }
    let device = std::fs::canonicalize(&m.source).ok()?;
    let link = sys.join("class/block").join(device.file_name()?);
    link.exists().then_some(link)
}

/// Mount points fstab marks `x-initrd.mount` (the initramfs mounts them too).
fn initrd_mounts(fstab: &str) -> Vec<String> {
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let opts = f.get(3)?;
            let point = f.get(1)?;
            opts.split(',').any(|o| o == "x-initrd.mount").then(|| unescape_octal(point))
        })
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

impl RootChain {
    /// Read the chain of the system under `root` (its `/proc` and `/sys`).
    pub fn read(root: &Root) -> Result<RootChain> {
        let mountinfo_path = root.host("/proc/self/mountinfo")?;
        let text = std::fs::read_to_string(&mountinfo_path).with_context(|| {
            format!("{}: cannot read (is /proc mounted there?)", mountinfo_path.display())
        })?;
        let mountinfo = parse_mountinfo(&text);
        let fstab = root
            .read("/etc/fstab")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        // Under --root DIR the target's mounts appear below DIR.
        let prefix = std::fs::canonicalize(root.dir()).unwrap_or_else(|_| root.dir().into());
        let as_target = |point: &str| -> Option<String> {
            let rel = Path::new(point).strip_prefix(&prefix).ok()?;
            Some(Path::new("/").join(rel).to_string_lossy().into_owned())
        };
        let mut wanted: Vec<(String, String)> =
            vec![("/".into(), "root".into()), ("/usr".into(), "/usr".into())];
        wanted.push(("/boot".into(), "/boot".into()));
        for point in initrd_mounts(&fstab) {
            if !wanted.iter().any(|(p, _)| *p == point) {
                wanted.push((point, "x-initrd.mount".into()));
            }
        }
        let mut chain = RootChain {
            format: SNAPSHOT_FORMAT,
            recorded_on: crate::model::root::running_release(),
            mounts: Vec::new(),
            devices: BTreeMap::new(),
        };
        let sys = root.host("/sys")?;
        for (point, why) in wanted {
            let Some(m) =
                mountinfo.iter().find(|m| as_target(&m.mount_point).as_deref() == Some(&point))
            else {
                if why == "root" {
                    bail!("{}: no mount of the root filesystem", mountinfo_path.display());
                }
                continue;
            };
            let device = match device_link(&sys, m) {
                Some(link) => Some(chain.add_device(root, &sys, &link)?),
                None => None,
            };
            chain.mounts.push(ChainMount { target: point, fstype: m.fstype.clone(), device, why });
        }
        Ok(chain)
    }

    /// Add the device at `link` (a `/sys/dev/block` or `slaves/` entry) and everything
    /// below it; returns its name.
    fn add_device(&mut self, root: &Root, sys: &Path, link: &Path) -> Result<String> {
        let dir = std::fs::canonicalize(link)
            .with_context(|| format!("{}: no such block device in sysfs", link.display()))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{}: no device name", dir.display()))?;
        if self.devices.contains_key(&name) {
            return Ok(name);
        }
        let slaves = |dir: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            v.sort();
            v
        };
        let (kind, lower_links) = if dir.join("partition").is_file() {
            let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
            (DeviceKind::Partition, vec![parent])
        } else if dir.join("dm").is_dir() {
            let uuid = read_trimmed(&dir.join("dm/uuid")).unwrap_or_default();
            let target = match uuid.split_once('-') {
                Some((prefix, _)) if prefix.starts_with("CRYPT") => "CRYPT".to_string(),
                Some((prefix, _)) => prefix.to_string(),
                None => String::new(),
            };
            let lower = slaves(&dir);
            let cipher = (target == "CRYPT").then(|| crypt_cipher(root, &dir, &lower)).flatten();
            (DeviceKind::Dm { target, cipher }, lower)
        } else if dir.join("md").is_dir() {
            let level = read_trimmed(&dir.join("md/level")).unwrap_or_default();
            (DeviceKind::Md { level }, slaves(&dir))
        } else {
            (DeviceKind::Disk, Vec::new())
        };
        let path = if kind == DeviceKind::Disk { device_path(sys, &dir) } else { Vec::new() };
        // Insert first: a cycle in a broken sysfs copy must not recurse forever.
        self.devices.insert(
            name.clone(),
            BlockDevice { name: name.clone(), kind, lower: Vec::new(), path },
        );
        let mut lower = Vec::new();
        for l in lower_links {
            lower.push(self.add_device(root, sys, &l)?);
        }
        if let Some(d) = self.devices.get_mut(&name) {
            d.lower = lower;
        }
        Ok(name)
    }

    /// Parse a saved snapshot.
    pub fn from_json(text: &str, source: &str) -> Result<RootChain> {
        let chain: RootChain = serde_json::from_str(text)
            .with_context(|| format!("{source}: not a bootkmod doctor snapshot"))?;
        if chain.format != SNAPSHOT_FORMAT {
            bail!(
                "{source}: snapshot format {} (this bootkmod reads format {SNAPSHOT_FORMAT})",
                chain.format
            );
        }
        for m in &chain.mounts {
            if let Some(d) = &m.device {
                if !chain.devices.contains_key(d) {
                    bail!("{source}: mount {} names device {d}, which is not in it", m.target);
                }
            }
        }
        Ok(chain)
    }

    /// Names of `name` and every device below it, top first.
    pub fn below(&self, name: &str) -> Vec<&BlockDevice> {
        let mut out: Vec<&BlockDevice> = Vec::new();
        let mut stack = vec![name];
        while let Some(n) = stack.pop() {
            let Some(d) = self.devices.get(n) else { continue };
            if out.iter().any(|o| o.name == d.name) {
                continue;
            }
            out.push(d);
            stack.extend(d.lower.iter().rev().map(String::as_str));
        }
        out
    }
}

/// The cipher of the crypt device at `dir`: from the LUKS header on the device below it
/// (what dm-crypt was set up with), else the `cipher=` option of its `/etc/crypttab`
/// line (plain dm-crypt has no header). `None` when neither says.
fn crypt_cipher(root: &Root, dir: &Path, lower: &[PathBuf]) -> Option<String> {
    use std::io::Read;
    let from_header = lower.iter().find_map(|l| {
        let name = l.file_name()?.to_string_lossy().into_owned();
        let dev = root.host(format!("/dev/{name}")).ok()?;
        // The binary header first; then as much as it says the JSON area needs.
        let mut file = std::fs::File::open(dev).ok()?;
        let mut head = Vec::new();
        (&mut file).take(luks::FIRST_READ as u64).read_to_end(&mut head).ok()?;
        let rest = luks::header_len(&head).saturating_sub(head.len());
        file.take(rest as u64).read_to_end(&mut head).ok()?;
        luks::cipher(&head).ok()
    });
    from_header.or_else(|| {
        let name = read_trimmed(&dir.join("dm/name"))?;
        let crypttab = root.read("/etc/crypttab").ok()?;
        crypttab_cipher(&String::from_utf8_lossy(&crypttab), &name)
    })
}

/// The `cipher=` option of crypttab's line for mapping `name`.
fn crypttab_cipher(crypttab: &str, name: &str) -> Option<String> {
    crypttab.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&name))
            .then(|| f.get(3)?.split(',').find_map(|o| o.strip_prefix("cipher=")))
            .flatten()
            .map(str::to_string)
    })
}

/// Where a chain came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainSource {
    /// The live system's `/proc` and `/sys` under the root.
    Live,
    /// The snapshot at [`SAVED_SNAPSHOT`] (host path given).
    Saved(PathBuf),
}

impl RootChain {
    /// The chain of the system under `root`: the live one, else the snapshot saved at
    /// [`SAVED_SNAPSHOT`]. The error names why neither could be had.
    pub fn live_or_saved(root: &Root) -> Result<(RootChain, ChainSource)> {
        let live_error = match RootChain::read(root) {
            Ok(chain) => return Ok((chain, ChainSource::Live)),
            Err(e) => e,
        };
        let saved = root.host(SAVED_SNAPSHOT)?;
        let text = match std::fs::read_to_string(&saved) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "{live_error:#}; and no snapshot saved at {}",
                    root.shown(SAVED_SNAPSHOT).display()
                )
            }
            Err(e) => bail!("{live_error:#}; and {}: cannot read: {e}", saved.display()),
        };
        let chain = RootChain::from_json(&text, &saved.display().to_string())?;
        Ok((chain, ChainSource::Saved(saved)))
    }
}

/// The nodes from a disk's own device up to the bus root that carry a modalias or a
/// bound driver.
fn device_path(sys: &Path, disk: &Path) -> Vec<DeviceNode> {
    let devices =
        std::fs::canonicalize(sys.join("devices")).unwrap_or_else(|_| sys.join("devices"));
    let Ok(mut at) = std::fs::canonicalize(disk.join("device")) else { return Vec::new() };
    let mut out = Vec::new();
    while at.starts_with(&devices) && at != devices {
        let driver = link_name(&at.join("driver"));
        let modalias = read_trimmed(&at.join("modalias"));
        if driver.is_some() || modalias.is_some() {
            out.push(DeviceNode {
                sysfs: at.strip_prefix(&devices).unwrap_or(&at).to_string_lossy().into_owned(),
                subsystem: link_name(&at.join("subsystem")),
                module: driver.as_ref().and_then(|_| link_name(&at.join("driver/module"))),
                driver,
                modalias,
            });
        }
        if !at.pop() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_and_escapes() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:5 / /dev rw - devtmpfs udev rw\n\
                    31 22 8:2 / /my\\040boot rw - xfs /dev/sda2 rw\n\
                    32 22 8:3 / / rw - xfs /dev/sda3 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, "/my boot");
        // The later mount over / wins.
        assert_eq!((m[2].majmin.as_str(), m[2].fstype.as_str()), ("8:3", "xfs"));
        assert_eq!(m[2].source, "/dev/sda3");
    }

    #[test]
    fn crypttab_gives_a_plain_mappings_cipher() {
        let tab = "# root /dev/sda none cipher=x\nswap /dev/sdb /dev/urandom swap,cipher=aes-cbc-essiv:sha256\nroot /dev/sda2 none luks\n";
        assert_eq!(crypttab_cipher(tab, "swap").as_deref(), Some("aes-cbc-essiv:sha256"));
        assert_eq!(crypttab_cipher(tab, "root"), None);
        assert_eq!(crypttab_cipher(tab, "other"), None);
    }

    #[test]
    fn fstab_initrd_mounts() {
        let fstab = "# comment x-initrd.mount\nUUID=a / ext4 defaults 0 1\n\
                     UUID=b /var xfs defaults,x-initrd.mount 0 2\n";
        assert_eq!(initrd_mounts(fstab), ["/var"]);
    }

    #[test]
    fn snapshots_refuse_other_formats_and_dangling_names() {
        let good = r#"{"format":1,"recorded_on":"k","mounts":[{"target":"/","fstype":"ext4","device":"sda","why":"root"}],
            "devices":{"sda":{"name":"sda","kind":"disk"}}}"#;
        assert!(RootChain::from_json(good, "t").is_ok());
        let other = good.replace("\"format\":1", "\"format\":9");
        assert!(RootChain::from_json(&other, "t").unwrap_err().to_string().contains("format 9"));
        let dangling = good.replace("\"device\":\"sda\"", "\"device\":\"sdb\"");
        assert!(RootChain::from_json(&dangling, "t").is_err());
        assert!(RootChain::from_json("{", "t").is_err());
    }
}
