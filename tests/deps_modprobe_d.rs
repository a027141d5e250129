//! modprobe.d as `bootkmod deps` and `bootkmod inject` read it, judged by kmod's
//! `modprobe --show-depends` reading the same configuration (`-C ROOT/etc/modprobe.d`,
//! `-d ROOT`): soft dependencies (overriding a module's own or not, by file-name
//! order), configured aliases (also to nothing), blacklist (honoured for aliases only),
//! install commands (not for modules with soft dependencies; `--ignore-install`),
//! options. And inject: a soft dependency the image's modprobe.d names comes along.

mod common;

use bootkmod::samples::SampleModule;
use common::depmod::TreeRoot;
use std::path::Path;
use std::process::Command;

const KVER: &str = "6.1.0-99-modprobe";

fn sample(name: &str) -> SampleModule {
    common::depmod::sample(KVER, name)
}

/// A tree: `md_core` exports a symbol `md_drv` uses; `md_drv` has a PCI alias and its
/// own `softdep=pre: md_pre`; `md_pre`, `md_post`, `md_other` stand alone. Indexes by
/// bootkmod's depmod (byte-identical to kmod's, proved elsewhere).
fn tree() -> TreeRoot {
    let root = TreeRoot { dir: tempfile::tempdir().unwrap(), release: KVER.into() };
    let mut core = sample("md_core");
    core.export("md_core_fn", 1, false, None);
    let mut drv = sample("md_drv");
    drv.import("md_core_fn", 1);
    drv.modinfo.push("alias", "pci:v0000ABCDd00001234sv*sd*bc*sc*i*");
    drv.modinfo.push("softdep", "pre: md_pre");
    let mut files = vec![("kernel/md_core.ko", core), ("kernel/md_drv.ko", drv)];
    for n in ["md_pre", "md_post", "md_other"] {
        files.push((Box::leak(format!("kernel/{n}.ko").into_boxed_str()), sample(n)));
    }
    for (rel, m) in files {
        let p = root.tree().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, m.to_elf().unwrap()).unwrap();
    }
    let out = common::run(common::bootkmod().arg("--root").arg(root.root()).args(["depmod", KVER]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::create_dir_all(root.root().join("etc/modprobe.d")).unwrap();
    root
}

fn conf(root: &TreeRoot, name: &str, text: &str) {
    std::fs::write(root.root().join("etc/modprobe.d").join(name), text).unwrap();
}

/// `bootkmod deps` output and exit code.
fn ours(root: &TreeRoot, args: &[&str]) -> (String, Option<i32>) {
    let out = common::run(
        common::bootkmod().arg("--root").arg(root.root()).args(["deps", "--kver", KVER]).args(args),
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code())
}

/// kmod's answer with the same configuration.
fn kmods(modprobe: &Path, root: &TreeRoot, args: &[&str]) -> (String, Option<i32>) {
    let out = common::run(
        Command::new(modprobe)
            .arg("-d")
            .arg(root.root())
            .args(["-S", KVER, "-C"])
            .arg(root.root().join("etc/modprobe.d"))
            .arg("--show-depends")
            .args(args),
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code())
}

/// Compare with modprobe; also check the lines bootkmod prints contain `expect` (so a
/// test fails on code that ignores modprobe.d even when modprobe is missing).
fn same(root: &TreeRoot, args: &[&str], expect: &[&str]) {
    let (text, code) = ours(root, args);
    for e in expect {
        assert!(text.contains(e), "{args:?}: expected {e:?} in:\n{text}");
    }
    let Some(modprobe) = common::tool("modprobe") else { return };
    let (want, want_code) = kmods(&modprobe, root, args);
    assert_eq!(text, want, "{args:?}: bootkmod vs modprobe");
    assert_eq!(code, want_code.map(|c| if c == 0 { 0 } else { 3 }), "{args:?}: exit code");
}

#[test]
fn softdep_lines_override_by_file_name_order() {
    let root = tree();
    // a.conf sorts before modules.softdep: its line is the one libkmod uses.
    conf(&root, "a.conf", "softdep md_drv pre: md_other post: md-post\n");
    same(&root, &["md_drv"], &["md_other.ko", "md_post.ko"]);
    let (text, _) = ours(&root, &["md_drv"]);
    assert!(!text.contains("md_pre.ko"), "{text}");
    // z.conf sorts after: the module's own softdep stays in force.
    std::fs::rename(
        root.root().join("etc/modprobe.d/a.conf"),
        root.root().join("etc/modprobe.d/z.conf"),
    )
    .unwrap();
    same(&root, &["md_drv"], &["md_pre.ko"]);
    // A softdep for a module without one, by pattern.
    conf(&root, "b.conf", "softdep md_c* post: md_other\n");
    same(&root, &["md_core"], &["md_other.ko"]);
}

#[test]
fn aliases_blacklist_options_install() {
    let root = tree();
    conf(
        &root,
        "x.conf",
        "alias my-alias md_other\nalias md_post nothing-at-all\nblacklist md_drv\n\
         options md_core level=3\toff\noptions my_alias via=alias\n\
         install md_other /bin/echo installing md_other\ninstall md_core /bin/echo core\n",
    );
    // A configured alias, its options and the install command that replaces the load.
    same(&root, &["my-alias"], &["install /bin/echo installing md_other via=alias "]);
    // An alias to nothing: found, nothing to load, exit 0.
    same(&root, &["md_post"], &[]);
    assert_eq!(ours(&root, &["md_post"]), (String::new(), Some(0)));
    // Blacklisted: skipped when reached by its PCI alias, loaded by name; md_core's
    // install command is not used where md_core is a dependency with no softdep...
    same(&root, &["pci:v0000ABCDd00001234sv00000001sd00000002bc01sc00i00"], &[]);
    same(&root, &["md_drv"], &["install /bin/echo core level=3 off ", "md_drv.ko"]);
    // ... and --ignore-install loads the module itself, without its soft dependencies.
    same(&root, &["--ignore-install", "md_other"], &["md_other.ko \n"]);
    same(&root, &["--ignore-install", "md_drv"], &["md_drv.ko"]);
    let (text, _) = ours(&root, &["--ignore-install", "md_drv"]);
    assert!(!text.contains("md_pre"), "{text}");
}

#[test]
fn a_module_with_soft_dependencies_ignores_its_install_command() {
    let root = tree();
    conf(&root, "x.conf", "install md_drv /bin/false\n");
    same(&root, &["md_drv"], &["md_drv.ko", "md_pre.ko"]);
    conf(&root, "y.conf", "install md_pre /bin/true\n");
    same(&root, &["md_pre"], &["install /bin/true "]);
}

#[test]
fn hostile_configuration_is_warned_about_never_fatal() {
    let root = tree();
    conf(&root, "bad.conf", "alias\nsoftdep\n]]] [[[\noptions md_drv\nalias a[ b\n\\");
    let out = common::run(
        common::bootkmod().arg("--root").arg(root.root()).args(["deps", "--kver", KVER, "md_core"]),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.conf: line 1: ignoring bad line starting with 'alias'"), "{err}");
}

#[test]
fn inject_adds_what_the_images_modprobe_d_soft_dependencies_need() {
    let Some(release) = common::installed_kernel() else { return };
    let tree = Path::new("/lib/modules").join(&release);
    if !common::kernel_modules(&release)
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("crc8.ko")))
    {
        common::skip(&format!("{release} has no crc8 module"));
        return;
    }
    let Some(dir) = common::inject::modprobe_tree(&release, &["ext4"]) else { return };
    // Nothing of nvme's own needs crc8; the image's modprobe.d says load it first.
    let conf = dir.path().join("etc/modprobe.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("storage.conf"), "softdep nvme pre: crc8\n").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("initrd.img");
    dir.pack(&image).unwrap();
    let nvme = tree.join("kernel/drivers/nvme/host");
    assert!(nvme.exists());
    let out = common::run(
        common::bootkmod().args(["--json", "inject", "--image"]).arg(&image).arg("nvme"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned: Vec<&str> = json["plan"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(planned.contains(&"crc8"), "crc8 not planned: {planned:?}");
    // modprobe in the written image, with the image's modprobe.d, finds every file.
    let Some(modprobe) = common::tool("modprobe") else { return };
    let x = tempfile::tempdir().unwrap();
    let out =
        common::run(common::bootkmod().args(["initramfs", "extract"]).arg(&image).arg(x.path()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = common::run(
        Command::new(modprobe)
            .arg("-d")
            .arg(x.path())
            .args(["-S", &release, "-C"])
            .arg(x.path().join("etc/modprobe.d"))
            .args(["--show-depends", "nvme"]),
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("/crc8.ko"), "{text}");
    for line in text.lines().filter_map(|l| l.strip_prefix("insmod ")) {
        let path = line.split(' ').next().unwrap();
        assert!(Path::new(path).exists(), "{path} missing from the image");
    }
}
