//! QEMU boot harness: the kernel's own loader as the final judge.
//!
//! A test builds a busybox initramfs directory ([`InitramfsDir`]), packs it with GNU cpio,
//! makes a root disk ([`ext4_disk`]), and boots a real Debian kernel under software
//! emulation ([`Boot`]). `/init` prints [`ROOT_OK`] or [`ROOT_FAIL`] on the serial console
//! and powers off; the test reads the markers from [`BootLog`].
//!
//! QEMU comes from `.ci/setup.d/qemu` (unpacked into the cache, see DESIGN.md §5). At most
//! [`SLOTS`] guests run at once across all test processes (2 cores).
#![allow(dead_code)]

use super::{machine, missing, tool};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Printed by an `/init` that mounted the root filesystem.
pub const ROOT_OK: &str = "BOOTKMOD-ROOT-MOUNTED";
/// Printed by an `/init` that could not mount it.
pub const ROOT_FAIL: &str = "BOOTKMOD-ROOT-FAILED";
/// Guests that may run at the same time.
pub const SLOTS: usize = 2;

/// The guest's architecture: which QEMU, machine, console and busybox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    #[default]
    X86_64,
    /// `virt` machine, Cortex-A57, PL011 console; QEMU and busybox from
    /// `.ci/setup.d/qemu-arm64`.
    Aarch64,
}

impl Arch {
    /// The QEMU binary for this guest.
    pub fn qemu(self) -> Option<PathBuf> {
        match self {
            Arch::X86_64 => qemu(),
            Arch::Aarch64 => {
                if let Some(p) = std::env::var_os("BOOTKMOD_QEMU_AARCH64") {
                    return Some(PathBuf::from(p));
                }
                if let Some(cached) = machine::input("qemu-arm64/usr/bin/qemu-system-aarch64") {
                    return Some(cached);
                }
                tool("qemu-system-aarch64")
            }
        }
    }

    /// Machine and CPU arguments (software emulation), and the console device.
    fn machine(self) -> (&'static [&'static str], &'static str) {
        match self {
            Arch::X86_64 => (&["-accel", "tcg", "-cpu", "max"][..], "ttyS0"),
            // cortex-a57 rather than max: TCG emulates max's pointer authentication
            // slowly.
            Arch::Aarch64 => {
                (&["-accel", "tcg", "-M", "virt", "-cpu", "cortex-a57"][..], "ttyAMA0")
            }
        }
    }

    /// A static busybox that runs in this guest.
    fn busybox(self) -> Option<PathBuf> {
        match self {
            Arch::X86_64 => {
                let found = ["/bin/busybox", "/usr/bin/busybox"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file());
                if found.is_none() {
                    missing("busybox-static")?;
                }
                found
            }
            Arch::Aarch64 => match machine::input("busybox-arm64/bin/busybox") {
                Some(p) => Some(p),
                None => {
                    missing("busybox-arm64 in the test cache (run .ci/setup.d/qemu-arm64)")?;
                    unreachable!()
                }
            },
        }
    }
}

/// The QEMU binary: `$BOOTKMOD_QEMU`, the cache's unpacked build, or PATH.
pub fn qemu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BOOTKMOD_QEMU") {
        return Some(PathBuf::from(p));
    }
    if let Some(cached) = machine::input("qemu/usr/bin/qemu-system-x86_64") {
        return Some(cached);
    }
    tool("qemu-system-x86_64")
}

/// A storage controller QEMU emulates, with the disk behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    VirtioBlk,
    VirtioScsi,
    /// LSI MegaRAID SAS (driver `megaraid_sas`).
    Megasas,
    /// VMware PVSCSI (driver `vmw_pvscsi`).
    Pvscsi,
    Ahci,
    Nvme,
}

impl Controller {
    /// The guest device node the first disk appears as.
    pub fn device(self) -> &'static str {
        match self {
            Controller::VirtioBlk => "/dev/vda",
            Controller::Nvme => "/dev/nvme0n1",
            _ => "/dev/sda",
        }
    }

    fn args(self, n: usize, disk: &Path) -> Vec<String> {
        let drive = format!("file={},format=raw,if=none,id=d{n}", disk.display());
        let scsi = |ctrl: &str| {
            vec![
                "-device".into(),
                format!("{ctrl},id=c{n}"),
                "-drive".into(),
                drive.clone(),
                "-device".into(),
                format!("scsi-hd,drive=d{n},bus=c{n}.0"),
            ]
        };
        match self {
            Controller::VirtioBlk => {
                vec![
                    "-drive".into(),
                    drive.clone(),
                    "-device".into(),
                    format!("virtio-blk-pci,drive=d{n}"),
                ]
            }
            Controller::VirtioScsi => scsi("virtio-scsi-pci"),
            Controller::Megasas => scsi("megasas"),
            Controller::Pvscsi => scsi("pvscsi"),
            Controller::Ahci => vec![
                "-device".into(),
                format!("ahci,id=c{n}"),
                "-drive".into(),
                drive.clone(),
                "-device".into(),
                format!("ide-hd,drive=d{n},bus=c{n}.0"),
            ],
            Controller::Nvme => vec![
                "-drive".into(),
                drive.clone(),
                "-device".into(),
                format!("nvme,serial=bootkmod{n},drive=d{n}"),
            ],
        }
    }
}

/// One guest run.
#[derive(Debug, Clone)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line (after `console=ttyS0 panic=-1 no_timer_check`:
    /// under software emulation on a busy host the IO-APIC timer check can fail and
    /// panic the guest before /init, "IO-APIC + timer doesn't work").
    pub append: String,
    pub disks: Vec<(PathBuf, Controller)>,
    pub timeout: Duration,
    pub memory_mb: u32,
    pub arch: Arch,
}

/// What the guest printed.
#[derive(Debug, Clone)]
pub struct BootLog {
    pub serial: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl BootLog {
    pub fn root_mounted(&self) -> bool {
        self.serial.contains(ROOT_OK)
    }
    pub fn root_failed(&self) -> bool {
        self.serial.contains(ROOT_FAIL)
    }
    /// Lines of the serial log containing `needle`.
    pub fn lines_with<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.serial.lines().filter(move |l| l.contains(needle))
    }
    /// The log's tail, for assertion messages.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.serial.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Boot {
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Boot {
        Boot {
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: String::new(),
            disks: Vec::new(),
            timeout: Duration::from_secs(120),
            memory_mb: 1024,
            arch: Arch::X86_64,
        }
    }

    pub fn arch(mut self, arch: Arch) -> Boot {
        self.arch = arch;
        self
    }

    pub fn disk(mut self, image: impl Into<PathBuf>, controller: Controller) -> Boot {
        self.disks.push((image.into(), controller));
        self
    }

    pub fn append(mut self, args: &str) -> Boot {
        if !self.append.is_empty() {
            self.append.push(' ');
        }
        self.append.push_str(args);
        self
    }

    /// Boot under software emulation and collect the serial console. `None` (skip) when
    /// QEMU is missing outside CI.
    pub fn run(&self) -> Option<BootLog> {
        let qemu = self.arch.qemu()?;
        let (machine, console) = self.arch.machine();
        let kernel = match self.arch {
            Arch::X86_64 => uncompressed_kernel(&self.kernel),
            Arch::Aarch64 => self.kernel.clone(),
        };
        let _slot = Slot::acquire();
        let mut cmd = Command::new(tool("timeout")?);
        cmd.arg("--signal=KILL")
            .arg(self.timeout.as_secs().to_string())
            .arg(&qemu)
            .args(machine)
            .args(["-m", &self.memory_mb.to_string()])
            .args(["-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(format!("console={console} panic=-1 no_timer_check loglevel=7 {}", self.append));
        for (n, (disk, ctrl)) in self.disks.iter().enumerate() {
            cmd.args(ctrl.args(n, disk));
        }
        let start = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", qemu.display()));
        let serial = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let timed_out = out.status.code() == Some(137) || out.status.code().is_none();
        assert!(
            timed_out || out.status.success(),
            "QEMU failed ({}): {stderr}\n{serial}",
            out.status
        );
        Some(BootLog { serial, timed_out, elapsed: start.elapsed() })
    }
}

/// The ELF `vmlinux` inside a bzImage, cached: QEMU boots it through its PVH entry in
/// about half the time of the bzImage (no real-mode setup, no self-decompression). Falls
/// back to the bzImage itself when its payload cannot be decoded.
pub fn uncompressed_kernel(bzimage: &Path) -> PathBuf {
    let Ok(bytes) = fs::read(bzimage) else { return bzimage.to_path_buf() };
    let key = format!("{:x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        h.finish()
    });
    let out = machine::fixture_cache("vmlinux").join(key);
    if out.is_file() {
        return out;
    }
    // The image's own payload, through the codec bootkmod reads export tables with.
    let Ok(vmlinux) = bootkmod::formats::kernel_image::vmlinux(&bytes) else {
        return bzimage.to_path_buf();
    };
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    if fs::create_dir_all(out.parent().unwrap()).is_ok()
        && fs::write(&tmp, &vmlinux).is_ok()
        && fs::rename(&tmp, &out).is_ok()
    {
        out
    } else {
        bzimage.to_path_buf()
    }
}

/// A cross-process slot: at most [`SLOTS`] guests at once (flock on files in /tmp),
/// shared by every user of the machine: the files are opened read-only (flock needs no
/// write access) and created world-readable, so a slot file another user (root's CI)
/// made is used, not a "Permission denied".
struct Slot(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl Slot {
    fn open(i: usize) -> fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("bootkmod-qemu-slot-{i}"));
        loop {
            match fs::File::open(&path) {
                Ok(f) => return f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("{}: {e}", path.display()),
            }
            match fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
                Ok(f) => return f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }

    fn acquire() -> Slot {
        use nix::fcntl::{Flock, FlockArg};
        loop {
            for i in 0..SLOTS {
                let f = Slot::open(i);
                if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    return Slot(lock);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A busybox-based initramfs tree under construction.
pub struct InitramfsDir {
    pub dir: tempfile::TempDir,
}

impl InitramfsDir {
    /// `bin/busybox` (static) with a link per applet, and the usual mount points.
    pub fn busybox() -> Option<InitramfsDir> {
        Self::busybox_for(Arch::X86_64)
    }

    /// [`InitramfsDir::busybox`] for a guest of `arch`. The applet list comes from the
    /// host's busybox (the same Debian release builds every architecture alike; the
    /// guest's cannot run here).
    pub fn busybox_for(arch: Arch) -> Option<InitramfsDir> {
        let host_busybox = Arch::X86_64.busybox()?;
        let busybox = arch.busybox()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["bin", "sbin", "dev", "proc", "sys", "root", "etc", "tmp", "lib/modules"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::copy(&busybox, d.join("bin/busybox")).unwrap();
        let list = Command::new(&host_busybox).arg("--list").output().expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", d.join("bin").join(applet));
            }
        }
        Some(InitramfsDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file (parents created) with a mode.
    pub fn file(&self, rel: &str, bytes: &[u8], mode: u32) -> &Self {
        let p = self.path().join(rel.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Write `/init`.
    pub fn init(&self, script: &str) -> &Self {
        self.file("init", script.as_bytes(), 0o755)
    }

    /// Copy `names` and their dependency closure from an installed kernel's tree (kmod's
    /// `modprobe --show-depends` as the oracle), keeping paths. Returns the in-image paths
    /// in load order, duplicates removed.
    pub fn modules_from_host(&self, release: &str, names: &[&str]) -> Option<Vec<String>> {
        let modprobe = tool("modprobe")?;
        let mut order: Vec<String> = Vec::new();
        for name in names {
            let out = Command::new(&modprobe)
                .args(["--show-depends", "-S", release, name])
                .output()
                .expect("modprobe");
            assert!(
                out.status.success(),
                "modprobe --show-depends {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(path) = line.strip_prefix("insmod ") else { continue };
                // The module path, without the options of modprobe.d (`start_ro=1`).
                let Some(path) = path.split_whitespace().next().map(str::to_string) else {
                    continue;
                };
                if !order.contains(&path) {
                    let dst = self.path().join(path.trim_start_matches('/'));
                    fs::create_dir_all(dst.parent().unwrap()).unwrap();
                    fs::copy(&path, &dst).unwrap_or_else(|e| panic!("copy {path}: {e}"));
                    order.push(path);
                }
            }
        }
        Some(order)
    }

    /// Pack as an uncompressed newc archive with GNU cpio (root-owned, like the real tools).
    pub fn pack(&self, out: &Path) -> Option<()> {
        let cpio = tool("cpio")?;
        let cmd = format!(
            "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | '{}' -o -H newc -R 0:0 --quiet > '{}'",
            self.path().display(),
            cpio.display(),
            out.display()
        );
        let st = Command::new("sh").arg("-c").arg(&cmd).status().expect("sh");
        assert!(st.success(), "packing initramfs failed: {cmd}");
        Some(())
    }
}

/// An `/init` that loads `insmod_paths` in order (printing each result), waits for
/// `device`, mounts it read-only as ext4, checks for `/bootkmod-root` on it, and reports.
pub fn mount_root_init(insmod_paths: &[String], device: &str) -> String {
    let mut s = String::from(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for p in insmod_paths {
        s.push_str(&format!(
            "insmod {p} && echo \"BOOTKMOD-INSMOD-OK {p}\" || echo \"BOOTKMOD-INSMOD-FAIL {p}\"\n"
        ));
    }
    s.push_str(&format!(
        "i=0; while [ ! -b {device} ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done\n\
         mkdir -p /newroot\n\
         if mount -t ext4 -o ro {device} /newroot && [ -e /newroot/bootkmod-root ]; then echo {ROOT_OK}; else echo {ROOT_FAIL}; fi\n\
         poweroff -f\n"
    ));
    s
}

/// A small ext4 image holding `/bootkmod-root` (and `/etc/os-release`, which systemd's
/// switch-root wants), made without root by `mke2fs -d`.
pub fn ext4_disk(out: &Path) -> Option<()> {
    let mke2fs = tool("mke2fs")?;
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("bootkmod-root"), b"root filesystem of a bootkmod test\n").unwrap();
    fs::create_dir_all(src.path().join("etc")).unwrap();
    fs::write(src.path().join("etc/os-release"), b"ID=bootkmod-test\n").unwrap();
    let st = Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(src.path())
        .arg(out)
        .arg("32M")
        .status()
        .expect("mke2fs");
    assert!(st.success(), "mke2fs failed");
    Some(())
}

/// The installed kernel's image, `/boot/vmlinuz-<release>`.
pub fn host_kernel(release: &str) -> Option<PathBuf> {
    let p = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    if p.is_file() {
        Some(p)
    } else {
        missing(&format!("kernel image {}", p.display()))?;
        unreachable!()
    }
}
