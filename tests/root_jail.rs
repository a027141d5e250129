//! `--root` is a jail (issue 20): a target tree in which every directory bootkmod
//! touches — `lib`, `lib/modules`, `lib/modules/K`, `boot`, each image, `var/lib/bootkmod`,
//! `etc/depmod.d`, an extraction directory — is reached through an ABSOLUTE symlink, with
//! a decoy tree on the host at the very paths those links name. Every command runs with
//! `--root` (check, install and --refresh, status and its dracut/plugin queries, verify,
//! depmod, deps, inject --image, initramfs extract, dud apply, the kernel-install plugin
//! with BOOTKMOD_ROOT, remove --kernel, remove). The decoy must be byte-for-byte and
//! timestamp-for-timestamp unchanged (atime included: nothing in it may even be read),
//! and the same tree with relative links must give identical results. A root whose only
//! kernels lie behind links to the outside has no kernels. And the rule of
//! docs/architecture.md holds: no code outside `src/model/root.rs` joins a path onto the
//! root directory.

mod common;

use common::jail::{diff, fingerprint, link, relocate, Links};
use common::keep::{Setup, TargetRoot};
use common::{bootkmod, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kABI copy of the installed kernel under another release name (weak-updates target).
const KABI: &str = "6.1.0-0jail-amd64";
/// What a leak would find: a kernel that exists only in the decoy.
const DECOY_KERNEL: &str = "6.1.0-0decoy-amd64";

/// The decoy on the host: a plausible tree at every path the links name.
fn plant_decoy(decoy: &Path, kvers: &[&str]) {
    let write = |p: &str, bytes: &[u8]| {
        let path = decoy.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    for k in kvers.iter().chain([&DECOY_KERNEL]) {
        for base in ["lib/modules", "modules", "trees"] {
            write(&format!("{base}/{k}/modules.dep"), b"kernel/decoy.ko:\n");
            write(&format!("{base}/{k}/kernel/decoy.ko"), b"not a module: the decoy\n");
            std::fs::create_dir_all(decoy.join(format!("{base}/{k}/extra"))).unwrap();
            std::fs::create_dir_all(decoy.join(format!("{base}/{k}/weak-updates"))).unwrap();
        }
        for base in ["boot", "images"] {
            write(&format!("{base}/initrd.img-{k}"), b"decoy image\n");
        }
        write(&format!("boot/config-{k}"), b"CONFIG_MODULE_SIG_FORCE=y\n");
    }
    write("state/ledger.json", b"{\"decoy\": true}\n");
    write("state/lock", b"");
    write("depmod.d/decoy.conf", b"override bkram * decoy\n");
    write("extract/decoy", b"decoy\n");
}

/// Build the target tree for `links`: the installed kernel and a kABI copy, then move
/// every directory bootkmod touches behind a link into `decoy`'s mirror inside the root.
fn jailed_tree(s: &Setup, decoy: &str, links: Links) -> TargetRoot {
    let root = TargetRoot::new();
    root.add_kernel(&s.newer, &s.kver, &s.symvers);
    root.add_kernel(&s.newer, KABI, &s.symvers);
    let r = root.path();
    relocate(r, "/lib", &format!("{decoy}/lib"), links);
    relocate(r, &format!("{decoy}/lib/modules"), &format!("{decoy}/modules"), links);
    relocate(r, "/boot", &format!("{decoy}/boot"), links);
    for k in [s.kver.as_str(), KABI] {
        relocate(r, &format!("{decoy}/modules/{k}"), &format!("{decoy}/trees/{k}"), links);
        relocate(
            r,
            &format!("{decoy}/boot/initrd.img-{k}"),
            &format!("{decoy}/images/initrd.img-{k}"),
            links,
        );
    }
    std::fs::create_dir_all(root.at(format!("{decoy}/state"))).unwrap();
    link(r, "/var/lib/bootkmod", &format!("{decoy}/state"), links);
    std::fs::create_dir_all(root.at(format!("{decoy}/depmod.d"))).unwrap();
    std::fs::write(
        root.at(format!("{decoy}/depmod.d/00-search.conf")),
        "search updates extra built-in weak-updates\n",
    )
    .unwrap();
    link(r, "/etc/depmod.d", &format!("{decoy}/depmod.d"), links);
    // An extraction directory reached through a link, holding a link of its own.
    std::fs::create_dir_all(root.at(format!("{decoy}/extract"))).unwrap();
    link(r, &format!("{decoy}/extract/stray"), &format!("{decoy}/boot"), links);
    link(r, "/extract", &format!("{decoy}/extract"), links);
    root
}

/// One command's result, with the root directory spelled `ROOT`.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    what: String,
    code: Option<i32>,
    stdout: String,
}

fn step(root: &Path, what: &str, cmd: &mut Command) -> Step {
    let out = run(cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stdout = text.replace(&root.display().to_string(), "ROOT");
    // Which depmod wrote the indexes differs by design: behind absolute links kmod's
    // `depmod -b ROOT` would follow them onto the host, so bootkmod's own (byte-identical
    // output, tests/depmod_oracle.rs) runs; relative links allow the native one.
    if let Some(at) = stdout.find("\"indexes\": \"") {
        let start = at + "\"indexes\": \"".len();
        if let Some(len) = stdout[start..].find('"') {
            stdout.replace_range(start..start + len, "(depmod)");
        }
    }
    eprintln!("{what}: exit {:?}\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    Step { what: what.to_string(), code: out.status.code(), stdout }
}

/// Every command, in the order an admin would run them, on the tree at `root`.
fn every_command(s: &Setup, root: &Path, dud: &Path) -> Vec<Step> {
    let bk = |args: &[&str]| {
        let mut c = bootkmod();
        c.arg("--root").arg(root).args(args);
        c
    };
    let bkram = s.bkram.to_str().unwrap();
    let kver = s.kver.as_str();
    let image = |k: &str| root.join(format!("boot/initrd.img-{k}")).display().to_string();
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-install/45-bootkmod.install");
    let kernel_install = |command: &str, k: &str| {
        let mut c = Command::new(&plugin);
        c.args([command, k, "/boot/efi/x"])
            .env("BOOTKMOD_ROOT", root)
            .env("BOOTKMOD", common::bootkmod_bin());
        c
    };
    let extract_to = root.join("extract/out").display().to_string();
    vec![
        step(root, "status --installed (fresh)", &mut bk(&["status", "--installed"])),
        step(root, "check", &mut bk(&["--json", "check", "--all-kernels", bkram])),
        step(root, "install --dry-run", &mut bk(&["--json", "install", "--dry-run", bkram])),
        step(root, "install", &mut bk(&["--json", "install", "--root-critical", bkram])),
        step(root, "install --refresh", &mut bk(&["--json", "install", "--refresh"])),
        step(root, "status", &mut bk(&["--json", "status"])),
        step(root, "status --installed", &mut bk(&["status", "--installed"])),
        step(root, "status --dracut", &mut bk(&["status", "--dracut", "--kver", kver])),
        step(root, "verify", &mut bk(&["--json", "verify"])),
        step(root, "depmod", &mut bk(&["--json", "depmod", kver])),
        step(root, "deps", &mut bk(&["--json", "deps", "--kver", KABI, "bkram", "virtio_blk"])),
        step(
            root,
            "inject --image",
            &mut bk(&["--json", "inject", "--image", &image(KABI), "--kver", KABI, "ext4"]),
        ),
        step(
            root,
            "initramfs extract",
            &mut bk(&["--json", "initramfs", "extract", &image(kver), &extract_to]),
        ),
        step(
            root,
            "dud apply",
            &mut bk(&["--json", "dud", "apply", "--kver", kver, dud.to_str().unwrap()]),
        ),
        step(root, "kernel-install remove", &mut kernel_install("remove", KABI)),
        step(root, "kernel-install add", &mut kernel_install("add", KABI)),
        step(root, "remove --kernel", &mut bk(&["--json", "remove", "--kernel", KABI])),
        step(root, "remove", &mut bk(&["--json", "remove", "bkram"])),
        step(root, "verify after remove", &mut bk(&["--json", "verify"])),
    ]
}

#[test]
fn every_command_stays_inside_a_root_reached_through_absolute_links() {
    let Some(s) = Setup::new() else { return };
    // The driver disk is built outside any root.
    let dud = s.scratch.path().join("dd.iso");
    let out = run(bootkmod()
        .args(["dud", "build", "--version", "1.0", s.bkram.to_str().unwrap(), "-o"])
        .arg(&dud));
    assert!(out.status.success(), "dud build: {}", String::from_utf8_lossy(&out.stderr));

    let decoy_dir = tempfile::Builder::new().prefix("decoy-").tempdir_in("/tmp").unwrap();
    let decoy = decoy_dir.path().to_str().unwrap().to_string();
    plant_decoy(decoy_dir.path(), &[&s.kver, KABI]);
    let host_modules = fingerprint(Path::new("/lib/modules"));
    let decoy_before = fingerprint(decoy_dir.path());

    let mut results = Vec::new();
    for links in [Links::Absolute, Links::Relative] {
        let root = jailed_tree(&s, &decoy, links);
        let steps = every_command(&s, root.path(), &dud);
        let changed = diff(&decoy_before, &fingerprint(decoy_dir.path()));
        assert!(changed.is_empty(), "{links:?} links: the decoy changed:\n{}", changed.join("\n"));
        check_results(&s, &root, &decoy, &steps, links);
        results.push(steps);
    }
    let (absolute, relative) = (&results[0], &results[1]);
    for (a, r) in absolute.iter().zip(relative) {
        assert_eq!(a, r, "absolute and relative links differ at {}", a.what);
    }
    // The test kernels hard-link the host's module files (link_or_copy): reading them
    // inside the root moves their atime, and other tests' links their ctime. What must
    // not change on the host is content, mode, size and mtime.
    let written_only = |f: std::collections::BTreeMap<PathBuf, String>| {
        f.into_iter()
            .map(|(p, v)| {
                let kept: Vec<&str> = v
                    .split(' ')
                    .filter(|w| !(w.starts_with('a') || w.starts_with('c')) || !w.contains('.'))
                    .collect();
                (p, kept.join(" "))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let changed =
        diff(&written_only(host_modules), &written_only(fingerprint(Path::new("/lib/modules"))));
    assert!(changed.is_empty(), "the host's /lib/modules changed:\n{}", changed.join("\n"));
}

/// What the commands must have found and done inside the root.
fn check_results(s: &Setup, root: &TargetRoot, decoy: &str, steps: &[Step], links: Links) {
    let by = |what: &str| steps.iter().find(|st| st.what == what).unwrap();
    let json = |what: &str| -> serde_json::Value {
        serde_json::from_str(&by(what).stdout)
            .unwrap_or_else(|e| panic!("{links:?} {what}: not JSON ({e}): {}", by(what).stdout))
    };
    for st in steps {
        let expected = match st.what.as_str() {
            "status --installed (fresh)" => 3,
            _ => 0,
        };
        assert_eq!(st.code, Some(expected), "{links:?} links: {} exit\n{}", st.what, st.stdout);
    }
    // Both of the root's kernels, never the decoy's.
    let check = json("check").to_string();
    assert!(check.contains(&s.kver) && check.contains(KABI), "{check}");
    assert!(!check.contains(DECOY_KERNEL), "{links:?}: the host's decoy kernel was seen: {check}");
    let status = json("status");
    let mut releases: Vec<&str> = status["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["release"].as_str().unwrap())
        .collect();
    releases.sort();
    let mut want = vec![s.kver.as_str(), KABI];
    want.sort();
    assert_eq!(releases, want, "{links:?}: status kernels");
    // The dracut module is handed the file inside the root.
    let dracut = &by("status --dracut").stdout;
    let source = dracut.split('\t').nth(1).unwrap_or_else(|| panic!("{dracut}"));
    // (By now `remove` has deleted it: the path is what is judged.)
    let source = root.path().join(source.strip_prefix("ROOT/").unwrap());
    let placed = root.at(format!("{decoy}/trees/{}/extra/bkram/bkram.ko", s.kver));
    assert_eq!(source, placed, "{links:?}: status --dracut: {dracut}");
    // The image written in place is the one inside the root, and carries the module
    // with its dependencies from the root's tree (virtio_blk would need virtio.ko,
    // which the test kernels' subset of modules leaves out: refused, rightly).
    let injected = root.at(format!("{decoy}/images/initrd.img-{KABI}"));
    let ls = run(bootkmod().args(["initramfs", "ls"]).arg(&injected));
    let listed = String::from_utf8_lossy(&ls.stdout);
    for m in ["ext4.ko", "jbd2.ko", "mbcache.ko"] {
        assert!(listed.contains(m), "{links:?}: inject left out {m}:\n{listed}");
    }
    // The extraction landed behind the link inside the root; its stray link untouched.
    assert!(root.at(format!("{decoy}/extract/out/init")).is_file(), "{links:?}: extract");
    // dud apply wrote into the kernel's tree inside the root.
    let applied = root.at(format!("{decoy}/trees/{}/updates", s.kver));
    assert!(applied.is_dir(), "{links:?}: dud apply wrote nothing under {}", applied.display());
    // remove took the module out of the tree inside the root.
    let placed = root.at(format!("{decoy}/trees/{}/extra/bkram/bkram.ko", s.kver));
    assert!(!placed.exists(), "{links:?}: remove left {}", placed.display());
}

#[test]
fn a_root_whose_kernels_lie_outside_has_none() {
    let Some(s) = Setup::new() else { return };
    let decoy_dir = tempfile::Builder::new().prefix("decoy-").tempdir_in("/tmp").unwrap();
    plant_decoy(decoy_dir.path(), &[&s.kver]);
    let before = fingerprint(decoy_dir.path());
    let root = TargetRoot::new();
    std::os::unix::fs::symlink(decoy_dir.path().join("lib"), root.at("/lib")).unwrap();
    std::os::unix::fs::symlink(decoy_dir.path().join("boot"), root.at("/boot")).unwrap();
    let bk = |args: &[&str]| {
        let mut c = bootkmod();
        c.arg("--root").arg(root.path()).args(args);
        run(&mut c)
    };
    let check = bk(&["check", "--all-kernels", s.bkram.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(err.contains("no kernels under"), "{err}");
    let status = bk(&["--json", "status"]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["kernels"], serde_json::json!([]), "{report:#}");
    let install = bk(&["--json", "install", "--dry-run", s.bkram.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&install.stderr);
    assert_eq!(install.status.code(), Some(1), "install planned on a root without kernels: {err}");
    assert!(err.contains("no kernels under"), "{err}");
    let changed = diff(&before, &fingerprint(decoy_dir.path()));
    assert!(changed.is_empty(), "the decoy changed:\n{}", changed.join("\n"));
}

/// The rule docs/architecture.md states: target paths become host paths only through
/// `Root` (src/model/root.rs). Elsewhere the root directory itself is only shown
/// (`.display()`) or handed to a tool that resolves inside it (`chroot`, `depmod -b` on
/// a tree checked to resolve alike, `canonicalize` to tell the host's own root).
#[test]
fn no_code_outside_root_joins_a_path_onto_the_root_directory() {
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("model/root.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("root.dir()") {
                let after = &rest[i + "root.dir()".len()..];
                let shown = after.starts_with(".display()");
                let handed =
                    line.contains(".arg(root.dir())") || line.contains("canonicalize(root.dir())");
                if !shown && !handed {
                    offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
                rest = after;
            }
            if line.contains("Root::path") || line.contains("root.path(") {
                offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "target paths must go through Root::host/host_entry/confine/read (src/model/root.rs):\n{}",
        offences.join("\n")
    );
}
