//! depmod edge cases on generated modules (`bootkmod::samples`): kmod's depmod as the
//! oracle where it has an opinion, clear errors for cycles and corrupt indexes, and
//! absolute weak-updates links resolved inside the root.

mod common;

use bootkmod::engines::depmod;
use bootkmod::formats::modversions::VersionEntry;
use bootkmod::model::root::Root;
use bootkmod::samples::SampleModule;
use common::depmod::{assert_same_indexes, TreeRoot};

const KVER: &str = "6.1.0-99-sample";

fn sample(name: &str) -> SampleModule {
    common::depmod::sample(KVER, name)
}

fn empty_root() -> TreeRoot {
    TreeRoot::empty(KVER)
}

fn write(root: &TreeRoot, rel: &str, m: &SampleModule) {
    let path = root.tree().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, m.to_elf().unwrap()).unwrap();
}

#[test]
fn synthetic_edges_match_kmod() {
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    let root = empty_root();
    let mut core = sample("edge_core");
    core.export("edge_core_fn", 1, false, None).export("shared_fn", 2, false, None);
    core.modinfo.push("alias", "pci:v0000ABCDd*sv*sd*bc01sc[0-7]i*");
    core.modinfo.push("alias", "bad-alias]");
    core.modinfo.push("alias", "devname:edgectl");
    core.modinfo.push("alias", "char-major-10-242");
    core.modinfo.push("softdep", "pre: edge_helper post: edge-late");
    let mut later = sample("edge-later");
    // Also exports shared_fn: whichever comes later in depmod's order owns it.
    later.export("shared_fn", 3, false, None).import("edge_core_fn", 1);
    let mut hba = sample("edge_hba");
    hba.import("edge_core_fn", 1).import("shared_fn", 2);
    // A __versions entry with no undefined symbol still makes a dependency.
    let mut quiet = sample("edge_quiet");
    quiet.versions.push(VersionEntry { crc: 5, symbol: "edge_core_fn".into() });
    let mut blk = sample("edge_blk");
    blk.modinfo.push("alias", "block-major-240-*");
    blk.modinfo.push("alias", "devname:edgeblk");
    blk.modinfo.push("alias", "block-major-240-0");
    write(&root, "kernel/drivers/edge/edge_core.ko", &core);
    write(&root, "kernel/drivers/edge/edge-later.ko", &later);
    write(&root, "kernel/drivers/edge/edge_hba.ko", &hba);
    write(&root, "extra/edge_quiet.ko", &quiet);
    write(&root, "kernel/block/edge_blk.ko", &blk);
    // modules.order lists some of them (reversed), edge_quiet and edge_blk not at all.
    std::fs::write(
        root.tree().join("modules.order"),
        "kernel/drivers/edge/edge_hba.ko\nkernel/drivers/edge/edge-later.ko\nkernel/drivers/edge/edge_core.ko\n",
    )
    .unwrap();
    std::fs::write(
        root.tree().join("modules.builtin"),
        "kernel/fs/edge_fs.ko\nkernel/lib/edge-lib.ko\n",
    )
    .unwrap();
    std::fs::write(
        root.tree().join("modules.builtin.modinfo"),
        b"edge_fs.alias=fs-edgefs\0edge_fs.license=GPL\0edge_lib.alias=edge-lib-[ab]\0",
    )
    .unwrap();
    let graph = depmod::compute(&Root::new(root.root()), KVER).unwrap();
    // modules.order puts edge-later before edge_core, so edge_core owns shared_fn.
    let core_i = graph.find("edge_core").unwrap();
    assert!(graph.find("edge_later").unwrap() < core_i);
    assert!(graph.symbols.iter().any(|(s, o)| s == "shared_fn" && *o == core_i));
    let quiet_i = graph.find("edge_quiet").unwrap();
    assert_eq!(graph.deps[quiet_i], [graph.find("edge_core").unwrap()]);
    let mine = graph.files().unwrap();
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);

    // A corrupt modules.order (last line without newline): kmod keeps hash order.
    std::fs::write(root.tree().join("modules.order"), "kernel/drivers/edge/edge_hba.ko").unwrap();
    let mine = depmod::compute(&Root::new(root.root()), KVER).unwrap().files().unwrap();
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);
}

#[test]
fn tree_without_kernel_package_inputs_matches_kmod() {
    let Some(kmod_depmod) = common::tool("depmod") else { return };
    let root = empty_root();
    // No modules.order, modules.builtin or modules.builtin.modinfo; no devnames.
    let mut m = sample("bare_mod");
    m.modinfo.push("alias", "bare-alias");
    write(&root, "kernel/bare_mod.ko", &m);
    let mine = depmod::compute(&Root::new(root.root()), KVER).unwrap().files().unwrap();
    root.run_depmod(&kmod_depmod);
    assert_same_indexes(&root, &mine);
}

#[test]
fn weakdeps_get_their_own_file() {
    let root = empty_root();
    let mut m = sample("edge_weak");
    m.modinfo.push("weakdep", "edge_opt");
    write(&root, "kernel/edge_weak.ko", &m);
    let files = depmod::compute(&Root::new(root.root()), KVER).unwrap().files().unwrap();
    let weak = files.iter().find(|(n, _)| *n == "modules.weakdep").expect("modules.weakdep");
    assert_eq!(
        String::from_utf8_lossy(&weak.1),
        "# Weak dependencies extracted from modules themselves.\nweakdep edge_weak edge_opt\n"
    );
}

#[test]
fn dependency_cycles_are_a_clear_error_and_write_nothing() {
    let root = empty_root();
    let mut a = sample("cyc_a");
    a.export("a_fn", 1, false, None).import("b_fn", 2);
    let mut b = sample("cyc_b");
    b.export("b_fn", 2, false, None).import("a_fn", 1);
    let mut user = sample("cyc_user");
    user.import("a_fn", 1);
    write(&root, "kernel/cyc_a.ko", &a);
    write(&root, "kernel/cyc_b.ko", &b);
    write(&root, "kernel/cyc_user.ko", &user);
    let out = common::run(common::bootkmod().arg("--root").arg(root.root()).args(["depmod", KVER]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // cyc_user only uses the cycle: it is not counted (kmod's count).
    assert!(
        err.contains("2 modules in dependency cycles: cyc_a -> cyc_b -> cyc_a")
            || err.contains("2 modules in dependency cycles: cyc_b -> cyc_a -> cyc_b"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!root.tree().join("modules.dep").exists());
}

#[test]
fn corrupt_indexes_are_clear_errors() {
    let root = empty_root();
    let mut core = sample("idx_core");
    core.export("idx_fn", 1, false, None);
    let mut hba = sample("idx_hba");
    hba.import("idx_fn", 1);
    write(&root, "kernel/idx_core.ko", &core);
    write(&root, "kernel/idx_hba.ko", &hba);
    let deps = || {
        common::run(
            common::bootkmod()
                .arg("--root")
                .arg(root.root())
                .args(["deps", "--kver", KVER, "idx_hba"]),
        )
    };
    let out = common::run(common::bootkmod().arg("--root").arg(root.root()).args(["depmod", KVER]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = deps();
    assert!(good.status.success());
    let lines: Vec<String> =
        String::from_utf8_lossy(&good.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with("kernel/idx_core.ko "), "{lines:?}");

    let bin = root.tree().join("modules.dep.bin");
    let bytes = std::fs::read(&bin).unwrap();
    for (what, bad) in [
        ("truncated", bytes[..bytes.len() - 7].to_vec()),
        ("garbage", b"not an index at all".to_vec()),
        ("header only", bytes[..12].to_vec()),
    ] {
        std::fs::write(&bin, &bad).unwrap();
        let out = deps();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("modules.dep.bin") && err.lines().count() == 1, "{what}: {err}");
    }
    // Missing index: not found (exit 3), like libkmod.
    std::fs::remove_file(&bin).unwrap();
    assert_eq!(deps().status.code(), Some(3));
}

#[test]
fn absolute_weak_updates_links_resolve_inside_the_root() {
    let root = empty_root();
    let mut core = sample("abs_core");
    core.export("abs_fn", 1, false, None);
    let mut drv = sample("abs_drv");
    drv.import("abs_fn", 1);
    write(&root, "kernel/abs_core.ko", &core);
    let other = root.root().join("lib/modules/0.0.0-other/extra");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("abs_drv.ko"), drv.to_elf().unwrap()).unwrap();
    // Absolute, as weak-modules writes it: meaningful only inside the root.
    root.symlink("weak-updates/abs_drv.ko", "/lib/modules/0.0.0-other/extra/abs_drv.ko");
    let graph = depmod::compute(&Root::new(root.root()), KVER).unwrap();
    let i = graph.find("abs_drv").expect("abs_drv found through the absolute link");
    assert_eq!(graph.modules[i].index_path(), "weak-updates/abs_drv.ko");
    assert_eq!(graph.deps[i], [graph.find("abs_core").unwrap()]);
}
