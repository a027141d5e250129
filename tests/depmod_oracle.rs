//! bootkmod's depmod against kmod's: byte-identical indexes for the installed Debian
//! tree, an initramfs-sized storage subset, and a RHEL-style tree with updates/,
//! extra/, weak-updates/ symlinks and `search updates extra built-in weak-updates`.
//! Then `bootkmod deps` against `modprobe --show-depends` on the written indexes.

mod common;

use bootkmod::engines::depmod;
use bootkmod::model::root::Root;
use common::depmod::{assert_same_indexes, dep_names, storage_subset, TreeRoot};
use std::process::Command;

fn ours(root: &TreeRoot) -> Vec<(&'static str, Vec<u8>)> {
    let graph = depmod::compute(&Root::new(root.root()), &root.release).unwrap();
    graph.files().unwrap()
}

#[test]
fn full_installed_tree_is_byte_identical_and_deps_match_modprobe() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    let Some(modprobe) = common::tool("modprobe") else { return };
    let root = TreeRoot::copy_installed(&kver, |_| true);
    let mine = ours(&root);
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);
    // Byte-identical modules.symbols also proves Module.exports equals what kmod
    // reads as each module's exports (its `__crc_*` symbols).

    // The CLI writes the same files over kmod's, atomically.
    let out =
        common::run(common::bootkmod().arg("--root").arg(root.root()).args(["depmod", &kver]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_indexes(&root, &mine);

    // Every module of the tree: bootkmod deps == modprobe --show-depends. An empty
    // config dir keeps the host's modprobe.d (options, softdeps) out of modprobe.
    let mut names = dep_names(&std::fs::read_to_string(root.tree().join("modules.dep")).unwrap());
    assert!(names.len() > 4000, "{} modules", names.len());
    // Plus symbol aliases and built-in modules, resolved through their own indexes.
    let symbols = std::fs::read_to_string(root.tree().join("modules.symbols")).unwrap();
    names.extend(
        symbols.lines().skip(1).step_by(97).filter_map(|l| l.split(' ').nth(1)).map(str::to_string),
    );
    let builtin = std::fs::read_to_string(root.tree().join("modules.builtin")).unwrap();
    names.extend(builtin.lines().step_by(7).map(|l| dep_names(l).remove(0)));
    compare_show_depends(&root, &modprobe, &names);
}

/// `modprobe --show-depends -a NAMES` and `bootkmod deps NAMES` print the same lines.
fn compare_show_depends(root: &TreeRoot, modprobe: &std::path::Path, names: &[String]) {
    let empty = tempfile::tempdir().unwrap();
    let theirs = common::run(
        Command::new(modprobe)
            .arg("-C")
            .arg(empty.path())
            .arg("--show-depends")
            .arg("-d")
            .arg(root.root())
            .args(["-S", &root.release, "-a"])
            .args(names),
    );
    assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stderr));
    let mine = common::run(
        common::bootkmod()
            .arg("--root")
            .arg(root.root())
            .args(["deps", "--kver", &root.release])
            .args(names),
    );
    assert!(mine.status.success(), "{}", String::from_utf8_lossy(&mine.stderr));
    let (t, m) = (String::from_utf8_lossy(&theirs.stdout), String::from_utf8_lossy(&mine.stdout));
    assert!(t.lines().count() >= names.len());
    if t != m {
        let first = t.lines().zip(m.lines()).position(|(a, b)| a != b);
        panic!(
            "show-depends differs at line {first:?} of {} (modprobe) vs {} (bootkmod)",
            t.lines().count(),
            m.lines().count()
        );
    }
}

#[test]
fn storage_subset_is_byte_identical_and_aliases_resolve_like_modprobe() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    let Some(modprobe) = common::tool("modprobe") else { return };
    let subset = storage_subset(&kver, 200);
    assert!((150..=200).contains(&subset.len()), "{} modules", subset.len());
    let root = TreeRoot::copy_installed(&kver, |rel| subset.contains(rel));
    let mine = ours(&root);
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);

    // Device aliases of the storage drivers, made concrete (wildcards → 0, bracket
    // sets → their first character), resolve to the same load lists.
    let alias = std::fs::read_to_string(root.tree().join("modules.alias")).unwrap();
    let mut devices: Vec<String> = alias
        .lines()
        .filter_map(|l| l.strip_prefix("alias pci:"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|pattern| format!("pci:{}", concrete(pattern)))
        .collect();
    devices.sort();
    devices.dedup();
    assert!(devices.len() > 500, "{} pci aliases", devices.len());
    compare_show_depends(&root, &modprobe, &devices);
}

/// A device string a wildcard alias pattern matches.
fn concrete(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push('0'),
            '?' => out.push('0'),
            '[' => {
                let set: String = chars.by_ref().take_while(|&c| c != ']').collect();
                out.push(set.chars().next().unwrap_or('0'));
            }
            c => out.push(c),
        }
    }
    out
}

#[test]
fn rhel_layout_with_weak_updates_and_search_order_is_byte_identical() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    let subset = storage_subset(&kver, 120);
    let root = TreeRoot::copy_installed(&kver, |rel| subset.contains(rel));
    let find = |file: &str| {
        common::kernel_modules(&kver)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|f| f == file))
            .unwrap_or_else(|| panic!("{file} not in the installed tree"))
    };
    // extra/ beats kernel/ (built-in); updates/ beats extra/.
    root.place("extra/megaraid_sas.ko", &find("megaraid_sas.ko"));
    root.place("extra/ahci.ko", &find("ahci.ko"));
    root.place("updates/ahci.ko", &find("ahci.ko"));
    root.place("updates/nvme-core.ko", &find("nvme-core.ko"));
    // weak-updates/ links to another kernel's extra/ (what RHEL's weak-modules makes):
    // a module only there is used; one also in kernel/ loses, unless overridden.
    let other = root.root().join("lib/modules/0.0.0-other/extra");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["vmw_pvscsi.ko", "sd_mod.ko", "virtio_scsi.ko"] {
        std::fs::copy(find(f), other.join(f)).unwrap();
        root.symlink(&format!("weak-updates/{f}"), &format!("../../0.0.0-other/extra/{f}"));
    }
    // A symlinked directory inside the tree is walked too.
    root.symlink("weak-updates/linked-dir", "../../0.0.0-other/extra");
    // An `exclude`d directory is not walked at all.
    root.place("skipme/mptbase.ko", &find("mptbase.ko"));
    let conf = root.root().join("etc/depmod.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("dist.conf"),
        "# RHEL\nsearch updates extra built-in weak-updates\noverride sd_mod * weak-updates\n\
         exclude skipme\n",
    )
    .unwrap();

    let graph = depmod::compute(&Root::new(root.root()), &kver).unwrap();
    let path_of = |name: &str| graph.modules[graph.find(name).unwrap()].index_path();
    assert_eq!(path_of("megaraid_sas"), "extra/megaraid_sas.ko");
    assert_eq!(path_of("ahci"), "updates/ahci.ko");
    assert_eq!(path_of("nvme_core"), "updates/nvme-core.ko");
    assert_eq!(path_of("sd_mod"), "weak-updates/sd_mod.ko");
    assert!(path_of("vmw_pvscsi").starts_with("weak-updates/"));
    assert!(graph.find("mptbase").is_none(), "excluded directory was scanned");
    let mine = graph.files().unwrap();
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);
}

#[test]
fn dracut_image_module_set_is_byte_identical() {
    let Some(kver) = common::installed_kernel() else { return };
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    let Some(image) = common::initramfs::dracut_image(&kver, "gzip") else { return };
    // The module set dracut put into the image, as tree-relative paths.
    let file = std::io::BufReader::new(std::fs::File::open(&image).unwrap());
    let (view, _) = bootkmod::engines::initramfs::read_view(file, "image").unwrap();
    let prefix = format!("usr/lib/modules/{kver}/");
    let set: std::collections::BTreeSet<String> = view
        .entries()
        .map(|e| e.display_path())
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .filter(|rel| bootkmod::model::tree::is_module_file(rel))
        .collect();
    assert!(set.len() >= 5, "{} modules in {}", set.len(), image.display());
    let root = TreeRoot::copy_installed(&kver, |rel| set.contains(rel));
    let copied = dep_names(&String::from_utf8_lossy(&ours(&root)[0].1)).len();
    assert_eq!(copied, set.len(), "every module of the image is in the installed tree");
    let mine = ours(&root);
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);
}
