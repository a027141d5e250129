//! A target root the system's own image builders can be chrooted into, assembled in a
//! private mount namespace (`unshare --mount --propagation private`), never touching the
//! host's `/boot` or `/lib/modules`: the host's `/usr` read-only (Debian 12 is
//! merged-usr, so `bin`, `lib`, `lib64`, `sbin` are links into it), the few files the
//! builders read from `/etc` read-only, the test kernel's tree over `usr/lib/modules`,
//! its headers over `usr/src`, the bootkmod binary under test at
//! `/opt/bootkmod/bin/bootkmod`. `/boot`, `/etc` and `/var` are the test's own
//! directories, so images written there outlive the namespace.
//!
//! [`Builder::Dracut`]: a copy of `/usr/lib/dracut` holding the repository's
//! `90bootkmod` over `usr/lib/dracut`. [`Builder::InitramfsTools`]: the target's own
//! `/etc/initramfs-tools` (a copy of the host's, `COMPRESS=gzip`), with bootkmod's
//! initramfs-tools hook and kernel postinst.d/postrm.d hooks installed by
//! `scripts/install-integration`, beside Debian's own `initramfs-tools` postinst.d hook.

use super::keep::{dracut_with_bootkmod, TargetRoot};
use super::{run, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the bootkmod under test is inside the target (the builders run it from there).
pub const TARGET_BOOTKMOD: &str = "/opt/bootkmod/bin/bootkmod";
/// Host files the builders read from `/etc`, bound read-only into the target.
const ETC_FILES: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "dracut.conf",
    // initramfs-tools' own hooks (udev, kmod) copy these into the image.
    "udev",
    "modprobe.d",
];

/// Which image builder the target carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    Dracut,
    InitramfsTools,
}

/// A target root a builder can be chrooted into, assembled anew in each namespace.
pub struct ChrootTarget {
    dir: tempfile::TempDir,
    /// The kernel tree, headers and initial image (a [`TargetRoot`]).
    pub stage: TargetRoot,
    /// `/usr/lib/dracut` plus `modules.d/90bootkmod` (dracut targets).
    dracut: Option<PathBuf>,
    _work: tempfile::TempDir,
}

impl ChrootTarget {
    pub fn new(stage: TargetRoot, builder: Builder) -> ChrootTarget {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for (link, to) in
            [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")]
        {
            std::os::unix::fs::symlink(to, t.join(link)).unwrap();
        }
        for d in [
            "usr",
            "etc/dracut.conf.d",
            "boot",
            "var/tmp",
            "var/lib/initramfs-tools",
            "tmp",
            "dev",
            "proc",
            "sys",
            "run",
            "opt/bootkmod/bin",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        for f in ETC_FILES {
            let host = Path::new("/etc").join(f);
            if host.is_dir() {
                std::fs::create_dir(t.join("etc").join(f)).unwrap();
            } else if host.exists() {
                std::fs::write(t.join("etc").join(f), b"").unwrap();
            }
        }
        std::os::unix::fs::symlink("../usr/lib/os-release", t.join("etc/os-release")).unwrap();
        std::fs::write(t.join(TARGET_BOOTKMOD.trim_start_matches('/')), b"").unwrap();
        for e in std::fs::read_dir(stage.at("/boot")).unwrap().flatten() {
            std::fs::copy(e.path(), t.join("boot").join(e.file_name())).unwrap();
        }
        let work = tempfile::tempdir().unwrap();
        let dracut = match builder {
            Builder::Dracut => {
                // The target's dracut configuration: a generic image (this host's devices
                // mean nothing to the target), uncompressed and without microcode to keep
                // it quick.
                std::fs::write(
                    t.join("etc/dracut.conf.d/50-test.conf"),
                    "hostonly=\"no\"\ncompress=\"cat\"\nearly_microcode=\"no\"\n",
                )
                .unwrap();
                let dracut = work.path().join("dracut");
                dracut_with_bootkmod(&dracut);
                Some(dracut)
            }
            Builder::InitramfsTools => {
                let st = run(Command::new("cp")
                    .arg("-a")
                    .arg("/etc/initramfs-tools")
                    .arg(t.join("etc/")));
                assert!(st.status.success(), "cp: {}", String::from_utf8_lossy(&st.stderr));
                let conf = t.join("etc/initramfs-tools/initramfs.conf");
                let text = std::fs::read_to_string(&conf).unwrap();
                let text: String = text
                    .lines()
                    .map(|l| if l.starts_with("COMPRESS=") { "COMPRESS=gzip" } else { l })
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&conf, text).unwrap();
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-integration");
                let st = run(Command::new(script).arg("--etc-hooks").arg(t));
                assert!(
                    st.status.success(),
                    "install-integration: {}",
                    String::from_utf8_lossy(&st.stderr)
                );
                // Debian's own hook, which builds the new kernel's image after bootkmod's.
                std::fs::copy(
                    "/etc/kernel/postinst.d/initramfs-tools",
                    t.join("etc/kernel/postinst.d/initramfs-tools"),
                )
                .unwrap();
                None
            }
        };
        ChrootTarget { dir, stage, dracut, _work: work }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run `argv` in a private mount namespace where the target is assembled.
    pub fn run_inside(&self, argv: &[&std::ffi::OsStr]) -> Output {
        let t = self.path().display().to_string();
        let mut script = String::from("set -e\n");
        let mut bind_ro = |from: &str, to: &str| {
            script +=
                &format!("mount --bind '{from}' '{t}{to}'\nmount -o remount,bind,ro '{t}{to}'\n");
        };
        bind_ro("/usr", "/usr");
        if let Some(dracut) = &self.dracut {
            bind_ro(&dracut.display().to_string(), "/usr/lib/dracut");
        }
        bind_ro(&super::bootkmod_bin().display().to_string(), TARGET_BOOTKMOD);
        for f in ETC_FILES.iter().filter(|f| Path::new("/etc").join(f).exists()) {
            bind_ro(&format!("/etc/{f}"), &format!("/etc/{f}"));
        }
        // The test kernel's tree is written by install (read-write); its headers not.
        script += &format!(
            "mount --bind '{}' '{t}/usr/lib/modules'\n",
            self.stage.at("/lib/modules").display()
        );
        script += &format!(
            "mount --bind '{}' '{t}/usr/src'\nmount -o remount,bind,ro '{t}/usr/src'\n",
            self.stage.at("/usr/src").display()
        );
        script += &format!(
            "mount --rbind /dev '{t}/dev'\nmount -t proc proc '{t}/proc'\nmount --rbind /sys '{t}/sys'\nexec \"$@\"\n"
        );
        run(Command::new(tool("unshare").unwrap())
            .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
            .args(argv)
            // The builders run the target's bootkmod (dracut resets PATH to the system's).
            .env("BOOTKMOD", TARGET_BOOTKMOD))
    }

    /// `bootkmod --root TARGET ARGS...` inside the namespace.
    pub fn bootkmod(&self, args: &[&str]) -> Output {
        let bin = super::bootkmod_bin();
        let mut argv: Vec<&std::ffi::OsStr> =
            vec![bin.as_os_str(), "--root".as_ref(), self.path().as_os_str()];
        argv.extend(args.iter().map(std::ffi::OsStr::new));
        self.run_inside(&argv)
    }

    /// `chroot TARGET sh -c SCRIPT` inside the namespace.
    pub fn chroot_sh(&self, script: &str) -> Output {
        let chroot = tool("chroot").unwrap();
        let argv: Vec<&std::ffi::OsStr> = vec![
            chroot.as_os_str(),
            self.path().as_os_str(),
            "sh".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
        ];
        self.run_inside(&argv)
    }
}
