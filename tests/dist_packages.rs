//! The packages `scripts/dist` writes (`dist/bootkmod-VERSION-RELEASE.ARCH.rpm`,
//! `dist/bootkmod_VERSION-RELEASE_ARCH.deb`), judged by the package managers themselves:
//!
//! - rpm: `rpm -qlp` lists every file where it belongs, `--scripts` shows the scriptlets
//!   keeping the ledger, the config is `%config(noreplace)`, `rpm -K` accepts the digests,
//!   `rpmlint` finds no error; installed with `rpm -i --root` into a scratch root, the
//!   kernel-install plugin is among the plugins systemd's own `kernel-install` runs and
//!   the dracut module among those dracut lists (both pointed at that root's files);
//!   `rpm -e --root` removes it and leaves a ledger in place;
//! - dpkg: `dpkg-deb -c` lists the same files plus Debian's kernel hooks, `lintian`
//!   finds no error, `dpkg --root` installs and removes (and purges) it cleanly.
//!
//! The artefacts are looked for in `$BOOTKMOD_DIST` or `dist/` (see tests/dist_binaries.rs).

mod common;

use common::{dist_artefact, missing, need_root, run, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The release the spec says (packaging/bootkmod.spec `Release: N%{?dist}`).
fn release() -> String {
    let spec = include_str!("../packaging/bootkmod.spec");
    let line = spec.lines().find_map(|l| l.strip_prefix("Release:")).expect("Release: in the spec");
    line.trim().trim_end_matches("%{?dist}").to_string()
}

fn rpm_of(arch: &str) -> Option<PathBuf> {
    dist_artefact(&format!("bootkmod-{VERSION}-{}.{arch}.rpm", release()))
}

fn deb_of(arch: &str) -> Option<PathBuf> {
    dist_artefact(&format!("bootkmod_{VERSION}-{}_{arch}.deb", release()))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What both packages install, where the tools that use each file look for it.
const FILES: &[&str] = &[
    "/usr/bin/bootkmod",
    "/usr/lib/kernel/install.d/45-bootkmod.install",
    "/usr/lib/kernel/install.d/60-bootkmod-doctor.install",
    "/usr/lib/dracut/modules.d/90bootkmod/module-setup.sh",
    "/usr/share/man/man1/bootkmod.1.gz",
    "/usr/share/bash-completion/completions/bootkmod",
    "/usr/share/fish/vendor_completions.d/bootkmod.fish",
    "/etc/bootkmod/bootkmod.conf",
    "/var/lib/bootkmod",
];

#[test]
fn rpm_lists_its_files_scripts_and_config() {
    let Some(rpm) = tool("rpm") else { return };
    for arch in ["x86_64", "aarch64"] {
        let Some(pkg) = rpm_of(arch) else { return };
        let list = ok(run(Command::new(&rpm).arg("-qlp").arg(&pkg)), "rpm -qlp");
        for f in FILES.iter().chain(&["/usr/share/zsh/site-functions/_bootkmod"]) {
            assert!(list.lines().any(|l| l == *f), "{arch}: {f} not in\n{list}");
        }
        // Debian's kernel hooks stay out of the RPM: RHEL kernels run kernel-install.
        assert!(!list.contains("/etc/kernel/") && !list.contains("initramfs-tools"), "{list}");
        let arch_tag =
            ok(run(Command::new(&rpm).args(["-qp", "--qf", "%{ARCH}"]).arg(&pkg)), "arch");
        assert_eq!(arch_tag, arch);
        let flags = ok(
            run(Command::new(&rpm)
                .args(["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]"])
                .arg(&pkg)),
            "fflags",
        );
        let conf = flags.lines().find(|l| l.ends_with(" /etc/bootkmod/bootkmod.conf")).unwrap();
        assert!(conf.starts_with("cn "), "not %config(noreplace): {conf}");
        let scripts = ok(run(Command::new(&rpm).args(["-qp", "--scripts"]).arg(&pkg)), "--scripts");
        assert!(scripts.contains("preuninstall scriptlet"), "{scripts}");
        assert!(scripts.contains("postuninstall scriptlet"), "{scripts}");
        assert!(!scripts.contains("rm "), "a scriptlet removes something:\n{scripts}");
        let k = ok(run(Command::new(&rpm).arg("-K").arg(&pkg)), "rpm -K");
        assert!(k.contains("digests") && k.trim_end().ends_with("OK"), "{k}");
        // The binary is the portable one scripts/dist built for this architecture.
        let Some(binary) = dist_artefact(&format!("bootkmod-{VERSION}-{arch}")) else { return };
        let md5 = ok(
            run(Command::new(&rpm)
                .args(["-qp", "--qf", "[%{FILEDIGESTS} %{FILENAMES}\n]"])
                .arg(&pkg)),
            "digests",
        );
        let digest = md5.lines().find(|l| l.ends_with(" /usr/bin/bootkmod")).unwrap();
        let sha = ok(run(Command::new("sha256sum").arg(&binary)), "sha256sum");
        assert_eq!(digest.split(' ').next(), sha.split(' ').next(), "{arch}: /usr/bin/bootkmod");
    }
}

#[test]
fn rpmlint_finds_no_error() {
    let Some(rpmlint) = tool("rpmlint") else { return };
    for arch in ["x86_64", "aarch64"] {
        let Some(pkg) = rpm_of(arch) else { return };
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/rpmlint.toml");
        let out = run(Command::new(&rpmlint).arg("-c").arg(&config).arg(&pkg));
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("rpmlint {arch}:\n{text}");
        assert!(text.contains(" 0 errors"), "rpmlint {arch}:\n{text}");
        assert!(!text.lines().any(|l| l.contains(": E: ")), "{text}");
    }
}

/// A scratch root for `rpm --root` / `dpkg --root` with a static shell for scriptlets.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.path().join("bin/sh")).unwrap();
    root
}

#[test]
fn rpm_installs_where_kernel_install_and_dracut_look_and_erases_cleanly() {
    let Some(rpm) = tool("rpm") else { return };
    let Some(pkg) = rpm_of("x86_64") else { return };
    if !Path::new("/bin/busybox").is_file() {
        missing("/bin/busybox (busybox-static)");
        return;
    }
    let root = scratch_root();
    let r = root.path();
    ok(
        run(Command::new(&rpm).arg("--root").arg(r).args(["-i", "--nodeps"]).arg(&pkg)),
        "rpm -i --root",
    );
    for f in FILES {
        assert!(r.join(&f[1..]).exists(), "{f} not installed");
    }
    let q = ok(run(Command::new(&rpm).arg("--root").arg(r).args(["-q", "bootkmod"])), "rpm -q");
    assert_eq!(q.trim(), format!("bootkmod-{VERSION}-{}.x86_64", release()));

    // dracut lists the module from the installed tree (its own modules beside it).
    if let Some(dracut) = tool("dracut") {
        let base = tempfile::tempdir().unwrap();
        let dracut_dir = base.path().join("dracut");
        ok(run(Command::new("cp").arg("-a").arg("/usr/lib/dracut").arg(&dracut_dir)), "cp dracut");
        ok(
            run(Command::new("cp")
                .arg("-a")
                .arg(r.join("usr/lib/dracut/modules.d/90bootkmod"))
                .arg(dracut_dir.join("modules.d/"))),
            "cp 90bootkmod",
        );
        let list = ok(
            run(Command::new(dracut)
                .env("dracutbasedir", &dracut_dir)
                .args(["--list-modules", "--no-kernel"])),
            "dracut --list-modules",
        );
        assert!(
            list.lines().any(|l| l.trim() == "bootkmod"),
            "dracut does not list bootkmod:\n{list}"
        );
    }
    // kernel-install runs the plugin from the directory the package filled (root only:
    // the directory is bind-mounted over the host's in a private mount namespace).
    if need_root("bind-mounting the RPM's install.d over kernel-install's").is_some() {
        let Some(ki) = tool("kernel-install") else { return };
        let script = format!(
            "mount --bind '{}' /usr/lib/kernel/install.d && '{}' -v inspect",
            r.join("usr/lib/kernel/install.d").display(),
            ki.display()
        );
        let out = run(Command::new("unshare").args(["--mount", "sh", "-c", &script]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l == "/usr/lib/kernel/install.d/45-bootkmod.install"),
            "kernel-install does not list the plugin:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A ledger written meanwhile survives the erase; everything else of the package goes.
    std::fs::write(r.join("var/lib/bootkmod/ledger.json"), b"{}\n").unwrap();
    ok(run(Command::new(&rpm).arg("--root").arg(r).args(["-e", "bootkmod"])), "rpm -e --root");
    assert!(!r.join("usr/bin/bootkmod").exists());
    assert!(!r.join("usr/lib/kernel/install.d/45-bootkmod.install").exists());
    assert_eq!(std::fs::read(r.join("var/lib/bootkmod/ledger.json")).unwrap(), b"{}\n");
}

#[test]
fn deb_carries_the_same_files_and_lintian_finds_no_error() {
    let Some(dpkg_deb) = tool("dpkg-deb") else { return };
    let Some(lintian) = tool("lintian") else { return };
    for arch in ["amd64", "arm64"] {
        let Some(pkg) = deb_of(arch) else { return };
        let list = ok(run(Command::new(&dpkg_deb).arg("-c").arg(&pkg)), "dpkg-deb -c");
        let names: Vec<String> = list
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .map(|n| n.trim_start_matches('.').trim_end_matches('/').to_string())
            .collect();
        for f in FILES.iter().chain(&[
            "/usr/share/zsh/vendor-completions/_bootkmod",
            "/usr/share/initramfs-tools/hooks/bootkmod",
            "/etc/kernel/postinst.d/bootkmod",
            "/etc/kernel/postrm.d/bootkmod",
        ]) {
            assert!(names.iter().any(|n| n == f), "{arch}: {f} not in\n{list}");
        }
        let field =
            ok(run(Command::new(&dpkg_deb).args(["-f"]).arg(&pkg).arg("Architecture")), "-f");
        assert_eq!(field.trim(), arch);
        let out = run(Command::new(&lintian).args(["--no-tag-display-limit"]).arg(&pkg));
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("lintian {arch}:\n{text}");
        assert!(!text.lines().any(|l| l.starts_with("E: ")), "lintian {arch}:\n{text}");
    }
}

#[test]
fn deb_installs_and_removes_cleanly_with_dpkg_root() {
    let Some(dpkg) = tool("dpkg") else { return };
    let Some(pkg) = deb_of("amd64") else { return };
    if !Path::new("/bin/busybox").is_file() {
        missing("/bin/busybox (busybox-static)");
        return;
    }
    // dpkg --root chroots into the root for maintainer scripts: that needs root.
    if need_root("dpkg --root (maintainer scripts run chrooted)").is_none() {
        return;
    }
    let root = scratch_root();
    let r = root.path();
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), b"").unwrap();
    let dpkg_at = |args: &[&str]| {
        let mut c = Command::new(&dpkg);
        c.arg(format!("--root={}", r.display())).arg("--force-depends");
        c.args(args);
        c
    };
    ok(run(dpkg_at(&["-i"]).arg(&pkg)), "dpkg -i");
    for f in FILES {
        assert!(r.join(&f[1..]).exists(), "{f} not installed");
    }
    let status = ok(run(&mut dpkg_at(&["-s", "bootkmod"])), "dpkg -s");
    assert!(status.contains("Status: install ok installed"), "{status}");
    std::fs::write(r.join("var/lib/bootkmod/ledger.json"), b"{}\n").unwrap();
    ok(run(&mut dpkg_at(&["-r", "bootkmod"])), "dpkg -r");
    assert!(!r.join("usr/bin/bootkmod").exists());
    // Removal keeps conffiles (purge drops them) and the ledger (nobody drops it).
    assert!(r.join("etc/bootkmod/bootkmod.conf").exists());
    ok(run(&mut dpkg_at(&["-P", "bootkmod"])), "dpkg -P");
    assert!(!r.join("etc/bootkmod/bootkmod.conf").exists());
    assert_eq!(std::fs::read(r.join("var/lib/bootkmod/ledger.json")).unwrap(), b"{}\n");
    let status = run(&mut dpkg_at(&["-s", "bootkmod"]));
    assert!(!status.status.success(), "still known after purge");
}
