//! Which images boot kernel K: the one owner of that question (status, install,
//! inject --kver and doctor ask here, and report what it found and why).
//!
//! Looked at, under the root, in this order:
//!
//! 1. **Boot Loader Specification entries**: `$BOOT/loader/entries/*.conf` for `$BOOT`
//!    in `/boot`, `/efi`, `/boot/efi` (RHEL 8+, Fedora, systemd-boot). Every `initrd`
//!    of every entry for K (`formats::bls`), each resolved relative to the partition
//!    holding the entries (`$BOOT`), else to the root filesystem (grub's entries when
//!    `/boot` is no partition of its own name `/boot/...`). An entry's initrds are loaded
//!    in order and later files win, so a driver goes into the **last** one: only that
//!    one [`BootImage::receives_drivers`].
//! 2. **kernel-install's systemd-boot layout**: `$BOOT/<entry-token>/K/initrd`, on the
//!    ESP or XBOOTLDR, when no entry named it already.
//! 3. **The distribution's names**: `/boot/initrd.img-K` (Debian), `/boot/initramfs-K.img`
//!    (Fedora, RHEL, SUSE), in the order the target's os-release prefers
//!    (`ledger::default_image`).
//! 4. **Unified Kernel Images**: `$BOOT/EFI/Linux/*.efi` whose `.uname` is K
//!    (`formats::uki`), else whose file name ends in `-K.efi`. A UKI carries its own
//!    initrd inside a (possibly signed) PE file: it is reported, never taken as the
//!    image to inject into by name.
//!
//! [`primary`] is the initramfs a driver goes into when one image is asked for.

use crate::formats::bls::Entry;
use crate::formats::uki::Uki;
use crate::model::root::Root;
use std::path::{Path, PathBuf};

/// Where `$BOOT` may be: XBOOTLDR or `/boot` on the root filesystem, and the ESP.
pub const BOOT_DIRS: &[&str] = &["/boot", "/efi", "/boot/efi"];

/// What kind of file boots the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    Initramfs,
    Uki,
}

/// One image that boots a kernel, and why bootkmod thinks so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BootImage {
    /// Target-absolute path.
    pub path: PathBuf,
    pub kind: ImageKind,
    /// The file exists (an entry may name one that does not: that entry boots without).
    pub exists: bool,
    /// A driver for this kernel goes here (the last initrd of an entry; a distribution
    /// image; a UKI's own `.initrd`). Earlier initrds of an entry (microcode, an early
    /// cpio) are loaded too but later files win.
    pub receives_drivers: bool,
    /// Why: the entry, layout or naming rule that found it.
    pub why: String,
}

impl BootImage {
    /// It is on disk and a driver for the kernel goes into it.
    pub fn takes_drivers(&self) -> bool {
        self.exists && self.receives_drivers
    }

    /// An image found on disk by a layout or naming rule (not named by an entry): it
    /// exists and it is where a driver goes.
    fn found(path: PathBuf, kind: ImageKind, why: String) -> BootImage {
        BootImage { path, kind, exists: true, receives_drivers: true, why }
    }
}

/// Every image that boots `release` under `root`. See the module overview.
pub fn find(root: &Root, release: &str) -> Vec<BootImage> {
    let mut out: Vec<BootImage> = Vec::new();
    let push = |out: &mut Vec<BootImage>, image: BootImage| {
        match out.iter_mut().find(|o| o.path == image.path) {
            // Named twice (two entries, or an entry and a naming rule): one image, its
            // first reason kept, a driver going in if either says so.
            Some(o) => o.receives_drivers |= image.receives_drivers,
            None => out.push(image),
        }
    };
    let exists = |p: &Path| root.host(p).is_ok_and(|h| h.is_file());
    for boot in BOOT_DIRS {
        let dir = Path::new(boot).join("loader/entries");
        for name in list(root, &dir) {
            if !name.ends_with(".conf") {
                continue;
            }
            let path = dir.join(&name);
            let Ok(text) = root.read(&path) else { continue };
            let entry = Entry::parse(&String::from_utf8_lossy(&text));
            if !entry.boots(release) {
                continue;
            }
            let n = entry.initrd.len();
            for (i, initrd) in entry.initrd.iter().enumerate() {
                let rel = initrd.trim_start_matches('/');
                let on_boot = Path::new(boot).join(rel);
                let on_root = Path::new("/").join(rel);
                let (resolved, partition) = if exists(&on_boot) || !exists(&on_root) {
                    (on_boot, *boot)
                } else {
                    (on_root, "/")
                };
                let last = i + 1 == n;
                let order = if n > 1 {
                    format!(
                        ", initrd {} of {n}{}",
                        i + 1,
                        if last { " (the last: later files win)" } else { "" }
                    )
                } else {
                    String::new()
                };
                push(
                    &mut out,
                    BootImage {
                        exists: exists(&resolved),
                        path: resolved,
                        kind: ImageKind::Initramfs,
                        receives_drivers: last,
                        why: format!(
                            "boot entry {}{order}, relative to {partition}",
                            path.display()
                        ),
                    },
                );
            }
            if let Some(efi) = &entry.efi {
                let p = Path::new(boot).join(efi.trim_start_matches('/'));
                push(
                    &mut out,
                    BootImage {
                        exists: exists(&p),
                        path: p,
                        kind: ImageKind::Uki,
                        receives_drivers: true,
                        why: format!("boot entry {} (efi)", path.display()),
                    },
                );
            }
        }
    }
    for boot in BOOT_DIRS {
        for token in list(root, Path::new(boot)) {
            let p = Path::new(boot).join(&token).join(release).join("initrd");
            if matches!(token.as_str(), "loader" | "EFI" | "efi") || !exists(&p) {
                continue;
            }
            let why = format!("kernel-install's layout, entry token {token} in {boot}");
            push(&mut out, BootImage::found(p, ImageKind::Initramfs, why));
        }
    }
    let preferred = crate::model::ledger::default_image(root, release);
    let mut names =
        [format!("/boot/initrd.img-{release}"), format!("/boot/initramfs-{release}.img")]
            .map(PathBuf::from)
            .to_vec();
    names.sort_by_key(|p| *p != preferred);
    for p in names {
        if exists(&p) {
            let why = "the distribution's name for the kernel's initramfs".into();
            push(&mut out, BootImage::found(p, ImageKind::Initramfs, why));
        }
    }
    for boot in BOOT_DIRS {
        let dir = Path::new(boot).join("EFI/Linux");
        for name in list(root, &dir) {
            if !name.to_ascii_lowercase().ends_with(".efi") {
                continue;
            }
            let p = dir.join(&name);
            let uname = root.read(&p).ok().and_then(|b| Uki::parse(&b).ok()).and_then(|u| u.uname);
            let why = match &uname {
                Some(u) if u == release => {
                    format!("Unified Kernel Image in {}, .uname {u}", dir.display())
                }
                Some(_) => continue,
                None if name.ends_with(&format!("-{release}.efi")) => {
                    format!("Unified Kernel Image in {}, named for the kernel", dir.display())
                }
                None => continue,
            };
            push(&mut out, BootImage::found(p, ImageKind::Uki, why));
        }
    }
    out
}

/// The initramfs a driver for `release` goes into when one image is asked for: the
/// first [`find`] reports that exists and receives drivers.
pub fn primary(root: &Root, release: &str) -> Option<PathBuf> {
    primary_of(&find(root, release))
}

/// Every image of `release` a driver goes into ([`BootImage::takes_drivers`]), UKIs
/// included, the [`primary`] one first: what install fills and doctor judges.
pub fn receiving(root: &Root, release: &str) -> Vec<PathBuf> {
    let found = find(root, release);
    let primary = primary_of(&found);
    let mut images: Vec<PathBuf> =
        found.into_iter().filter(BootImage::takes_drivers).map(|i| i.path).collect();
    images.sort_by_key(|p| Some(p) != primary.as_ref());
    images
}

/// [`primary`] of images already found.
pub fn primary_of(images: &[BootImage]) -> Option<PathBuf> {
    images
        .iter()
        .find(|i| i.takes_drivers() && i.kind == ImageKind::Initramfs)
        .map(|i| i.path.clone())
}

/// File names in a target directory, sorted; none when it is missing or unreadable.
fn list(root: &Root, dir: &Path) -> Vec<String> {
    let Ok(host) = root.host(dir) else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(host) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const K: &str = "5.14.0-362.el9.x86_64";

    #[test]
    fn rhel_bls_separate_boot_partition_and_a_second_initrd() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        write(d, "/etc/os-release", "ID=rhel\nID_LIKE=\"fedora\"\n");
        write(d, &format!("/boot/loader/entries/abc-{K}.conf"), &format!(
            "title RHEL\nversion {K}\nlinux /vmlinuz-{K}\ninitrd /initramfs-{K}.img $tuned_initrd\n"));
        write(d, "/boot/loader/entries/abc-0-rescue.conf", "version 0-rescue-abc\nlinux /vmlinuz-0-rescue-abc\ninitrd /initramfs-0-rescue-abc.img\n");
        write(d, &format!("/boot/loader/entries/custom-{K}.conf"), &format!(
            "version {K}\nlinux /vmlinuz-{K}\ninitrd /microcode.img\ninitrd /initramfs-{K}-custom.img\n"));
        for f in [
            format!("/boot/initramfs-{K}.img"),
            "/boot/microcode.img".into(),
            format!("/boot/initramfs-{K}-custom.img"),
        ] {
            write(d, &f, "x");
        }
        let found = find(&Root::new(d), K);
        let paths: Vec<_> =
            found.iter().map(|i| (i.path.display().to_string(), i.receives_drivers)).collect();
        assert_eq!(
            paths,
            [
                (format!("/boot/initramfs-{K}.img"), true),
                ("/boot/microcode.img".to_string(), false),
                (format!("/boot/initramfs-{K}-custom.img"), true),
            ]
        );
        assert!(found[0].why.contains("abc-"), "{}", found[0].why);
        assert_eq!(
            primary(&Root::new(d), K),
            Some(PathBuf::from(format!("/boot/initramfs-{K}.img")))
        );
    }

    #[test]
    fn bls_paths_on_the_root_filesystem_and_missing_files() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        write(
            d,
            "/boot/loader/entries/a.conf",
            &format!("version {K}\ninitrd /boot/initramfs-{K}.img\ninitrd /gone.img\n"),
        );
        write(d, &format!("/boot/initramfs-{K}.img"), "x");
        let found = find(&Root::new(d), K);
        assert_eq!(found[0].path, PathBuf::from(format!("/boot/initramfs-{K}.img")));
        assert!(found[0].why.ends_with("relative to /"), "{}", found[0].why);
        assert!(!found[1].exists && found[1].receives_drivers);
        // The entry's last initrd is missing; the file that exists is also the
        // distribution's name for the kernel's initramfs, so a driver can go there.
        assert_eq!(found.len(), 2);
        assert!(found[0].receives_drivers);
        assert_eq!(primary(&Root::new(d), K), Some(found[0].path.clone()));
    }

    #[test]
    fn systemd_boot_layout_and_debian_names() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let k = "6.1.0-57-amd64";
        write(d, "/etc/os-release", "ID=debian\n");
        write(
            d,
            &format!("/efi/loader/entries/0123abcd-{k}.conf"),
            &format!(
            "title Debian\nversion {k}\nlinux /0123abcd/{k}/linux\ninitrd /0123abcd/{k}/initrd\n"),
        );
        write(d, &format!("/efi/0123abcd/{k}/initrd"), "x");
        write(d, &format!("/efi/0123abcd/{k}/linux"), "x");
        write(d, &format!("/efi/other/{k}/initrd"), "x");
        write(d, &format!("/boot/initrd.img-{k}"), "x");
        write(d, "/boot/initrd.img-6.1.0-56-amd64", "x");
        let found = find(&Root::new(d), k);
        let paths: Vec<_> = found.iter().map(|i| i.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                format!("/efi/0123abcd/{k}/initrd"),
                format!("/efi/other/{k}/initrd"),
                format!("/boot/initrd.img-{k}")
            ]
        );
        assert!(found[1].why.contains("entry token other"));
    }

    #[test]
    fn nothing_found_is_empty() {
        let t = tempfile::tempdir().unwrap();
        assert!(find(&Root::new(t.path()), K).is_empty());
        assert_eq!(primary(&Root::new(t.path()), K), None);
    }
}
