//! The image's own early-load mechanism: dracut's `rd.driver.pre=`, initramfs-tools'
//! `conf/modules`, or `modules-load.d`.

use super::read::ImageContents;
use std::collections::HashSet;

/// The image's early-load mechanism and what it gets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EarlyLoad {
    /// `dracut`, `initramfs-tools` or `modules-load.d`.
    pub mechanism: &'static str,
    pub path: String,
    pub modules: Vec<String>,
    pub changed: bool,
}

/// The image's own early-load mechanism, and the new content of its file (`None` when
/// it already lists every module).
pub(super) fn early_load(
    image: &ImageContents,
    names: Vec<String>,
) -> (EarlyLoad, Option<Vec<u8>>) {
    let is_dracut = image.view.lookup(b"usr/lib/dracut", true).is_some()
        || image.view.lookup(b"etc/cmdline.d", true).is_some()
        || image.has_file("usr/lib/dracut-lib.sh")
        || image.has_file("lib/dracut-lib.sh");
    let is_initramfs_tools =
        image.has_file("conf/initramfs.conf") || image.has_file("scripts/functions");
    let (mechanism, path) = if is_dracut {
        ("dracut", "etc/cmdline.d/90-bootkmod.conf".to_string())
    } else if is_initramfs_tools {
        ("initramfs-tools", "conf/modules".to_string())
    } else {
        ("modules-load.d", "etc/modules-load.d/bootkmod.conf".to_string())
    };
    let resolved = image
        .view
        .lookup(path.as_bytes(), false)
        .map(|e| String::from_utf8_lossy(e.path).into_owned())
        .unwrap_or_else(|| path.clone());
    let old = image.file(&resolved).map(|b| String::from_utf8_lossy(b).into_owned());
    let new = match mechanism {
        "dracut" => format!(" rd.driver.pre={}\n", names.join(",")),
        _ => {
            let mut text = old.clone().unwrap_or_default();
            let listed: HashSet<&str> = text.lines().map(str::trim).collect();
            let missing: Vec<&String> =
                names.iter().filter(|n| !listed.contains(n.as_str())).collect();
            let mut add = String::new();
            for n in missing {
                add.push_str(n);
                add.push('\n');
            }
            if !add.is_empty() && !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text + &add
        }
    };
    let changed = old.as_deref() != Some(new.as_str());
    (EarlyLoad { mechanism, path, modules: names, changed }, changed.then(|| new.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::inject::testing::image;
    use crate::formats::cpio::{S_IFDIR, S_IFREG};

    #[test]
    fn early_load_uses_the_images_own_mechanism() {
        let tools = image(&[
            ("conf", S_IFDIR | 0o755, b""),
            ("conf/initramfs.conf", S_IFREG | 0o644, b"MODULES=most\n"),
            ("conf/modules", S_IFREG | 0o644, b"ahci"),
        ]);
        let (e, body) = early_load(&tools, vec!["hba".into(), "ahci".into()]);
        assert_eq!((e.mechanism, e.path.as_str()), ("initramfs-tools", "conf/modules"));
        assert_eq!(body.unwrap(), b"ahci\nhba\n");
        let (_, body) = early_load(
            &image(&[
                ("conf", S_IFDIR | 0o755, b""),
                ("conf/initramfs.conf", S_IFREG | 0o644, b""),
                ("conf/modules", S_IFREG | 0o644, b"hba\n"),
            ]),
            vec!["hba".into()],
        );
        assert_eq!(body, None, "already listed: nothing to write");
        let plain = image(&[("etc", S_IFDIR | 0o755, b"")]);
        let (e, body) = early_load(&plain, vec!["hba".into()]);
        assert_eq!(e.mechanism, "modules-load.d");
        assert_eq!(body.unwrap(), b"hba\n");
    }
}
