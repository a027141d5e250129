//! The kernel's own export table, read from `/boot/vmlinuz-KVER`, against the build's
//! `Module.symvers` (modpost's record of the same exports): for every x86_64 build here
//! (the installed kernel, an older ABI and the rt flavour, from .ci/setup.d/kernels),
//! the same symbols with the same CRCs, GPL-only flags and namespaces, symbol for symbol.

mod common;

use bootkmod::formats::symvers;
use bootkmod::model::kernel_image;
use bootkmod::model::root::Root;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Facts = (Option<u32>, bool, Option<String>);

/// The vmlinux lines of a symvers file, by symbol.
fn symvers_vmlinux(path: &Path) -> BTreeMap<String, Facts> {
    let text = std::fs::read(path).unwrap();
    symvers::lines(&text)
        .map(|l| l.unwrap())
        .filter(|l| l.is_vmlinux())
        .map(|l| (l.symbol.to_string(), (Some(l.crc), l.gpl, l.namespace.map(str::to_string))))
        .collect()
}

#[test]
fn image_exports_equal_symvers_on_every_x86_64_build() {
    let Some(installed) = common::installed_kernel() else { return };
    let Some(other) = common::machine::other_kernels() else { return };
    let builds: [(PathBuf, &str); 3] = [
        (PathBuf::from("/"), installed.as_str()),
        (other.older_root.clone(), other.older.as_str()),
        (other.rt_root.clone(), other.rt.as_str()),
    ];
    let mut report = Vec::new();
    for (root, kver) in builds {
        let symvers_path = root.join(format!("usr/src/linux-headers-{kver}/Module.symvers"));
        if !symvers_path.is_file() {
            common::missing(&format!("{} (linux-headers-{kver})", symvers_path.display()));
            return;
        }
        let expected = symvers_vmlinux(&symvers_path);
        let started = std::time::Instant::now();
        let image =
            kernel_image::read(&Root::new(&root), kver).unwrap_or_else(|e| panic!("{kver}: {e:#}"));
        let elapsed = started.elapsed();
        assert_eq!(image.table.arch, "x86_64");
        let mut got: BTreeMap<String, Facts> = BTreeMap::new();
        for e in &image.table.exports {
            let previous = got.insert(e.symbol.clone(), (e.crc, e.gpl, e.namespace.clone()));
            assert!(previous.is_none(), "{kver}: {} exported twice", e.symbol);
        }
        let differ: Vec<_> = expected
            .iter()
            .filter(|(s, f)| got.get(*s) != Some(*f))
            .map(|(s, f)| format!("{s}: symvers {f:?}, image {:?}", got.get(s)))
            .chain(
                got.keys()
                    .filter(|s| !expected.contains_key(*s))
                    .map(|s| format!("{s}: only in the image")),
            )
            .take(10)
            .collect();
        assert!(differ.is_empty(), "{kver}: image and symvers differ:\n{}", differ.join("\n"));
        // A real kernel: thousands of exports, GPL-only and namespaced ones among them,
        // and module_layout (what the loader checks first).
        let gpl = got.values().filter(|f| f.1).count();
        let namespaced = got.values().filter(|f| f.2.is_some()).count();
        assert!(got.len() > 5000 && gpl > 1000 && namespaced > 0, "{kver}: {}", got.len());
        assert!(got.contains_key("module_layout"), "{kver}: no module_layout");
        report.push(format!(
            "{kver}: {} exports ({gpl} GPL-only, {namespaced} namespaced) equal symvers; {:?} layout, read in {elapsed:.1?}",
            got.len(),
            image.table.layout
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// A kernel whose image cannot be read (here: none at all) yields the reason, never an
/// export; an image that is not a kernel says so.
#[test]
fn unreadable_images_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Root::new(tmp.path());
    let err = format!("{:#}", kernel_image::read(&root, "6.1.0-1-amd64").unwrap_err());
    assert!(err.contains("no boot image"), "{err}");
    std::fs::create_dir_all(tmp.path().join("boot")).unwrap();
    std::fs::write(tmp.path().join("boot/vmlinuz-6.1.0-1-amd64"), b"not a kernel at all").unwrap();
    let err = format!("{:#}", kernel_image::read(&root, "6.1.0-1-amd64").unwrap_err());
    assert!(
        err.contains("/boot/vmlinuz-6.1.0-1-amd64") && err.contains("not a kernel image"),
        "{err}"
    );
}
