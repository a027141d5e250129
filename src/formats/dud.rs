//! The layout rules of a Driver Update Disk, as Anaconda's initramfs enforces them
//! (`dracut/driver_updates.py`, `dracut/dd/dd_list.c`, `dd_extract.c`, `rpmutils.c`).
//! Pure: names, paths and version tests, no filesystem.
//!
//! - A *repo* is a directory holding a file [`REPO_MARKER`] and a directory
//!   `rpms/<uname -m>/` ([`rpms_dir`]); the `*.rpm` files directly in it are candidates.
//! - A package is taken when one of its versioned Provides, `kernel-modules <op> <v>`
//!   (modules and firmware) or `installer-enhancement <op> <v>` (installer binaries and
//!   libraries), holds for the running kernel / installer under [`rpmvercmp`]
//!   ([`provide_matches`]). Unversioned Provides never match.
//! - From a taken package, payload files are extracted by [`extract_class`]; modules
//!   found under `lib/modules/` and firmware under `lib/firmware/` are then copied into
//!   the running system's update directories ([`updates_destination`]).

use super::rpmvercmp::rpmvercmp;
use std::cmp::Ordering;

/// The file whose presence makes a directory a driver-disk repo (content ignored).
pub const REPO_MARKER: &str = "rhdd3";

/// The volume label Anaconda scans for automatically.
pub const AUTO_LABEL: &str = "OEMDRV";

/// The Provides name that makes a package a module package.
pub const KERNEL_MODULES: &str = "kernel-modules";

/// The Provides name that makes a package an installer enhancement.
pub const INSTALLER_ENHANCEMENT: &str = "installer-enhancement";

/// The installer version Anaconda's driver-update step gives `dd_list` for
/// `installer-enhancement` Provides (`ANACONDAVER` in `dracut/driver_updates.py`), kept
/// at 19.0 on purpose so old disks keep working: Provide `installer-enhancement >= 19.0`.
pub const ANACONDA_DD_VERSION: &str = "19.0";

/// rpm's dependency sense bits (`RPMSENSE_LESS`, `_GREATER`, `_EQUAL`).
pub const SENSE_LESS: u32 = 0x02;
pub const SENSE_GREATER: u32 = 0x04;
pub const SENSE_EQUAL: u32 = 0x08;

/// Directory of a repo holding the packages for an architecture (`uname -m`).
pub fn rpms_dir(arch: &str) -> String {
    format!("rpms/{arch}")
}

/// Does `Provides: <name> <sense> <version>` hold for `running` (the whole `uname -r`
/// string, or the installer's version)? rpmvercmp(running, version) must fall in a
/// direction the sense allows; a Provides without a version never holds.
pub fn provide_matches(running: &str, sense: u32, version: &str) -> bool {
    if version.is_empty() {
        return false;
    }
    let bit = match rpmvercmp(running, version) {
        Ordering::Less => SENSE_LESS,
        Ordering::Equal => SENSE_EQUAL,
        Ordering::Greater => SENSE_GREATER,
    };
    sense & bit != 0
}

/// The sense bits as rpm prints them (`>=`, `=`, ...); empty for none.
pub fn sense_operator(sense: u32) -> &'static str {
    match sense & (SENSE_LESS | SENSE_GREATER | SENSE_EQUAL) {
        s if s == SENSE_LESS => "<",
        s if s == SENSE_GREATER => ">",
        s if s == SENSE_EQUAL => "=",
        s if s == SENSE_LESS | SENSE_EQUAL => "<=",
        s if s == SENSE_GREATER | SENSE_EQUAL => ">=",
        _ => "",
    }
}

/// What a payload file is to the extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractClass {
    Module,
    Firmware,
    Binary,
    Library,
}

/// What a taken package may contribute: set from the Provides that matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackageFlags {
    /// `kernel-modules` matched: modules and firmware.
    pub modules: bool,
    /// `installer-enhancement` matched: binaries and libraries.
    pub enhancement: bool,
}

const MODULE_SUFFIXES: [&str; 5] = [".ko", ".ko.gz", ".ko.xz", ".ko.bz2", ".ko.zst"];

/// The module name Anaconda files a payload module under: the file name up to its first
/// `.ko` (`driver_updates.py`, `grab_driver_files`). `None` for a file that is not a
/// module to the extractor.
pub fn module_name(path: &str) -> Option<&str> {
    let file = path.rsplit('/').next()?;
    if !MODULE_SUFFIXES.iter().any(|s| file.ends_with(s)) {
        return None;
    }
    file.split(".ko").next().filter(|n| !n.is_empty())
}

/// Strip what the extractor strips from an archive path: leading `/` and `./`.
pub fn normalise_payload_path(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else {
            return p;
        }
    }
}

/// Would the extractor write this payload file (normalised path), and as what?
pub fn extract_class(path: &str, flags: PackageFlags) -> Option<ExtractClass> {
    let starts = |p: &str| path.starts_with(p);
    if flags.enhancement && ["bin/", "sbin/", "usr/bin/", "usr/sbin/"].into_iter().any(starts) {
        return Some(ExtractClass::Binary);
    }
    if flags.enhancement
        && ((starts("lib/") && !starts("lib/firmware/") && !starts("lib/modules/"))
            || ["lib64/", "usr/lib/", "usr/lib64/"].into_iter().any(starts))
    {
        return Some(ExtractClass::Library);
    }
    if flags.modules && starts("lib/firmware/") {
        return Some(ExtractClass::Firmware);
    }
    if flags.modules && MODULE_SUFFIXES.iter().any(|s| path.ends_with(s)) {
        return Some(ExtractClass::Module);
    }
    None
}

/// Where an extracted module or firmware file lands in the running system, relative to
/// `/`: modules under `lib/modules/<kver>/updates/` (the leading kernel-version directory
/// and a `kernel/` directory after it dropped), firmware under `lib/firmware/updates/`.
/// `None` for files the copy step never looks at (modules outside `lib/modules/`, e.g.
/// under `usr/lib/modules/`, are extracted but never loaded).
pub fn updates_destination(path: &str, class: ExtractClass, kver: &str) -> Option<String> {
    match class {
        ExtractClass::Module => {
            let rest = path.strip_prefix("lib/modules/")?;
            let rest = rest.trim_start_matches('/');
            let rest = match rest.split_once('/') {
                Some((first, tail)) if first.starts_with(|c: char| c.is_ascii_digit()) => {
                    tail.strip_prefix("kernel/").unwrap_or(tail)
                }
                _ => rest,
            };
            safe_relative(rest).then(|| format!("lib/modules/{kver}/updates/{rest}"))
        }
        ExtractClass::Firmware => {
            let rest = path.strip_prefix("lib/firmware/")?;
            safe_relative(rest).then(|| format!("lib/firmware/updates/{rest}"))
        }
        _ => None,
    }
}

/// Where an extracted installer binary or library is found in the running installer:
/// the driver-update step extracts it into `/updates`, which is overlaid on the
/// installer's `/` when the initramfs is left, so `usr/bin/x` runs as `/usr/bin/x` (on
/// PATH). `None` for modules and firmware (see [`updates_destination`]).
pub fn installer_destination(path: &str, class: ExtractClass) -> Option<String> {
    matches!(class, ExtractClass::Binary | ExtractClass::Library)
        .then(|| safe_relative(path).then(|| format!("/{path}")))
        .flatten()
}

/// A relative path with no `..`, no empty or `.` components: it cannot leave the
/// directory it is joined to.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The `uname -m` / RPM architecture of an ELF machine (`e_machine`) and byte order.
pub fn rpm_arch(machine: u16, big_endian: bool) -> Option<&'static str> {
    Some(match (machine, big_endian) {
        (62, _) => "x86_64",
        (3, _) => "i686",
        (183, false) => "aarch64",
        (21, false) => "ppc64le",
        (21, true) => "ppc64",
        (22, true) => "s390x",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provides_follow_rpmvercmp_and_the_sense() {
        let k = "5.14.0-362.8.1.el9_3.x86_64";
        let ge = SENSE_GREATER | SENSE_EQUAL;
        assert!(provide_matches(k, ge, k));
        assert!(provide_matches(k, ge, "5.14.0-284.11.1.el9_2.x86_64"));
        assert!(!provide_matches(k, ge, "5.14.0-427.13.1.el9_4.x86_64"));
        assert!(!provide_matches(k, ge, &format!("{k}.x86_64")));
        assert!(provide_matches(k, SENSE_EQUAL, k));
        assert!(!provide_matches(k, 0, k));
        assert!(!provide_matches(k, ge, ""));
    }

    #[test]
    fn installer_files_land_where_the_overlay_puts_them() {
        let bin = ExtractClass::Binary;
        assert_eq!(
            installer_destination("usr/bin/bootkmod", bin).as_deref(),
            Some("/usr/bin/bootkmod")
        );
        assert_eq!(installer_destination("usr/bin/../x", bin), None);
        assert_eq!(installer_destination("lib/firmware/a.bin", ExtractClass::Firmware), None);
        let ge = SENSE_GREATER | SENSE_EQUAL;
        assert!(provide_matches(ANACONDA_DD_VERSION, ge, "19.0"));
    }

    #[test]
    fn extraction_classes() {
        let m = PackageFlags { modules: true, enhancement: false };
        let e = PackageFlags { modules: false, enhancement: true };
        assert_eq!(extract_class("lib/modules/5.14/extra/a/a.ko", m), Some(ExtractClass::Module));
        assert_eq!(extract_class("usr/lib/modules/5.14/a.ko.xz", m), Some(ExtractClass::Module));
        assert_eq!(extract_class("lib/firmware/x/y.bin", m), Some(ExtractClass::Firmware));
        assert_eq!(extract_class("etc/depmod.d/a.conf", m), None);
        assert_eq!(extract_class("usr/bin/tool", m), None);
        assert_eq!(extract_class("usr/bin/tool", e), Some(ExtractClass::Binary));
        assert_eq!(extract_class("lib/modules/5.14/a.ko", e), None);
        assert_eq!(normalise_payload_path("./lib/a.ko"), "lib/a.ko");
        assert_eq!(normalise_payload_path("//./x"), "x");
        assert_eq!(module_name("lib/modules/5.14/extra/a/a_b.ko.xz"), Some("a_b"));
        assert_eq!(module_name("/lib/modules/5.14/extra/a/a.ko"), Some("a"));
        assert_eq!(module_name("lib/firmware/a.ko.bin"), None);
        assert_eq!(module_name("lib/modules/5.14/.ko"), None);
    }

    proptest::proptest! {
        #[test]
        fn destinations_never_leave_their_directory(path in "[a-z0-9./_-]{0,40}") {
            let k = "6.1.0-56-amd64";
            for class in [ExtractClass::Module, ExtractClass::Firmware] {
                let norm = normalise_payload_path(&path);
                if let Some(d) = updates_destination(norm, class, k) {
                    let base = match class {
                        ExtractClass::Module => format!("lib/modules/{k}/updates/"),
                        _ => "lib/firmware/updates/".to_string(),
                    };
                    let rest = d.strip_prefix(&base).expect("under its base");
                    proptest::prop_assert!(safe_relative(rest), "{} -> {}", path, d);
                }
            }
        }
    }

    #[test]
    fn destinations_drop_the_version_and_kernel_dirs() {
        let k = "6.1.0-56-amd64";
        let d = |p| updates_destination(p, ExtractClass::Module, k);
        assert_eq!(
            d("lib/modules/5.14.0-1.el9.x86_64/extra/foo/foo.ko").as_deref(),
            Some("lib/modules/6.1.0-56-amd64/updates/extra/foo/foo.ko")
        );
        assert_eq!(
            d("lib/modules/5.14.0/kernel/drivers/scsi/x.ko").as_deref(),
            Some("lib/modules/6.1.0-56-amd64/updates/drivers/scsi/x.ko")
        );
        assert_eq!(d("usr/lib/modules/5.14.0/extra/x.ko"), None);
        assert_eq!(d("lib/modules/5.14.0/../../../etc/x.ko"), None);
        assert_eq!(
            updates_destination("lib/firmware/v/fw.bin", ExtractClass::Firmware, k).as_deref(),
            Some("lib/firmware/updates/v/fw.bin")
        );
    }
}
