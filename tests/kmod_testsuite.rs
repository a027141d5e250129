//! kmod's own test suite as the judge (never copied into the repository): the source
//! package of the installed kmod (`.ci/setup.d/kmod-testsuite`, `apt-get source kmod`
//! into the cache), its playground modules built against the installed kernel's headers
//! (cached per kernel and kmod version), its `rootfs-pristine` trees populated by its own
//! `populate-modules.sh`. Then every depmod case (each directory of `test-depmod/`) and
//! every modprobe `--show-depends` case runs against bootkmod and is compared with
//! kmod's expected `correct-*` files, and with kmod itself run inside a copy of the
//! tree (a private mount namespace binding the host's `/usr` read-only into the tree,
//! then `chroot`: the paths, `depmod.d`, `modprobe.d` and `/proc/cmdline` kmod reads are
//! the tree's, as under the suite's own path trap).

mod common;

use common::machine::{fixture_cache, input, is_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KVER: &str = "4.4.4";

/// The unpacked test suite and the playground modules built for this machine.
struct Suite {
    testsuite: PathBuf,
    playground: PathBuf,
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = common::run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn suite() -> Option<Suite> {
    let Some(source) = input("kmod-source") else {
        common::missing("kmod's source in the test cache (.ci/setup.d/kmod-testsuite)")?;
        unreachable!()
    };
    let testsuite = std::fs::read_dir(&source)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("testsuite"))
        .find(|p| p.join("populate-modules.sh").is_file())
        .expect("the kmod source holds testsuite/populate-modules.sh");
    let kernel = common::installed_kernel()?;
    let headers = Path::new("/lib/modules").join(&kernel).join("build");
    if !headers.join("Makefile").is_file() {
        common::missing(&format!("linux-headers-{kernel} (kbuild for the playground modules)"))?;
    }
    common::tool("make")?;
    common::tool("gcc")?;
    let version = std::fs::read_to_string(source.join("VERSION")).unwrap_or_default();
    let playground =
        fixture_cache(&format!("kmod-playground/{kernel}-{}", version.trim().replace(':', "_")));
    // The tests of this file run in parallel threads: one builds, the others wait.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !playground.join(".built").exists() {
        let src = testsuite.join("module-playground");
        run_ok(Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&playground));
        // kbuild's own part of the playground Makefile: every obj-m of the suite.
        run_ok(
            Command::new("nice")
                .args(["-n", "10", "make", "-s", "-C"])
                .arg(&headers)
                .arg(format!("M={}", playground.display()))
                .arg("modules"),
        );
        std::fs::write(playground.join(".built"), "").unwrap();
    }
    Some(Suite { testsuite, playground })
}

impl Suite {
    /// A fresh copy of `rootfs-pristine`, populated by kmod's script.
    fn rootfs(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        run_ok(
            Command::new("cp").arg("-a").arg(self.testsuite.join("rootfs-pristine")).arg(&rootfs),
        );
        // The script asks config.h which compressions this kmod was built with: the
        // installed kmod's own answer.
        let version = run_ok(Command::new("kmod").arg("--version"));
        let features = String::from_utf8_lossy(&version.stdout).lines().nth(1).unwrap().to_string();
        let config_h = dir.path().join("config.h");
        std::fs::write(&config_h, format!("#define KMOD_FEATURES \"{features}\"\n")).unwrap();
        run_ok(
            Command::new("bash")
                .arg(self.testsuite.join("populate-modules.sh"))
                .arg(&self.playground)
                .arg(&rootfs)
                .arg(&config_h),
        );
        dir
    }
}

/// Copy of case `rel` of a populated rootfs into a new directory.
fn copy_case(rootfs: &Path, rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", rootfs.join(rel).display()))
            .arg(dir.path()),
    );
    dir
}

/// Run a kmod tool (`/usr/sbin/depmod`, `/usr/sbin/modprobe`) chrooted into `tree`
/// with the host's `/usr` bound into it. Root, or an unprivileged user namespace.
fn kmod_in_tree(tree: &Path, argv: &[&str]) -> Option<Output> {
    common::tool("unshare")?;
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    for (link, to) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib64", "usr/lib64"),
        ("lib/x86_64-linux-gnu", "../usr/lib/x86_64-linux-gnu"),
    ] {
        if std::fs::symlink_metadata(tree.join(link)).is_err() {
            std::os::unix::fs::symlink(to, tree.join(link)).unwrap();
        }
    }
    let mut cmd = Command::new("unshare");
    if !is_root() {
        cmd.arg("--map-root-user");
    }
    let script = if is_root() {
        r#"mount --bind /usr "$1/usr" && mount -o remount,bind,ro "$1/usr" && shift && exec chroot "$@""#
    } else {
        r#"mount --bind /usr "$1/usr" && shift && exec chroot "$@""#
    };
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"])
        .arg(tree)
        .arg(tree)
        .args(argv);
    let out = common::run(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("unshare failed") || err.contains("Operation not permitted") {
        common::skip(&format!("cannot chroot kmod into a tree here: {err}"))?;
    }
    Some(out)
}

/// The index files in `dir` (`modules.*` but the kernel package's inputs), with bytes.
fn indexes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with("modules.")
                        && !matches!(
                            n.as_str(),
                            "modules.order" | "modules.builtin" | "modules.builtin.modinfo"
                        )
                })
                .map(|n| {
                    let bytes = std::fs::read(dir.join(&n)).unwrap();
                    (n, bytes)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `Cycle detected: ...` lines of kmod's output, and its count line.
fn kmod_cycles(text: &str) -> (Vec<String>, Option<String>) {
    let cycles = text
        .lines()
        .filter_map(|l| l.split_once("Cycle detected: ").map(|x| x.1.to_string()))
        .collect();
    let count = text.lines().find_map(|l| {
        let rest = l.split_once("Found ")?.1;
        Some(rest.split_once(" modules in dependency cycles")?.0.to_string())
    });
    (cycles, count)
}

#[test]
fn every_depmod_case_of_kmods_suite() {
    let Some(suite) = suite() else { return };
    let started = std::time::Instant::now();
    let root = suite.rootfs();
    let rootfs = root.path().join("rootfs");
    let mut cases: Vec<String> = std::fs::read_dir(rootfs.join("test-depmod"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "kmod's suite has at least 7 depmod cases: {cases:?}");
    let mut report = Vec::new();
    for case in &cases {
        let ours = copy_case(&rootfs, &format!("test-depmod/{case}"));
        let tree = ours.path().join("lib/modules").join(KVER);
        let out =
            common::run(common::bootkmod().arg("--root").arg(ours.path()).args(["depmod", KVER]));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let theirs = copy_case(&rootfs, &format!("test-depmod/{case}"));
        let kmod = kmod_in_tree(theirs.path(), &["/usr/sbin/depmod", KVER]);
        let kmod_tree = theirs.path().join("lib/modules").join(KVER);
        let expected_err = ours.path().join("correct.txt");
        if expected_err.exists() {
            // A failing case: same cycles in the same order, the same count, nothing
            // written, by bootkmod, by kmod's expectation and by kmod.
            assert_eq!(out.status.code(), Some(1), "{case}: {err}");
            let (want, want_count) = kmod_cycles(&std::fs::read_to_string(&expected_err).unwrap());
            let ours_line = err.lines().next().unwrap_or_default();
            let (count, cycles) = ours_line
                .split_once(" modules in dependency cycles: ")
                .map(|(c, l)| {
                    (
                        c.rsplit(' ').next().unwrap().to_string(),
                        l.split("; ").map(str::to_string).collect::<Vec<_>>(),
                    )
                })
                .unwrap_or_else(|| panic!("{case}: no cycle report: {err}"));
            // The same cycles as member sets; the module kmod prints each from is not
            // reproduced yet (docs/depmod.md), so exact lines are reported, not asserted.
            let sets = |v: &[String]| {
                let mut out: Vec<String> = v
                    .iter()
                    .map(|c| {
                        let mut m: Vec<&str> = c.split(" -> ").skip(1).collect();
                        m.sort();
                        m.join(",")
                    })
                    .collect();
                out.sort();
                out
            };
            assert_eq!(sets(&cycles), sets(&want), "{case}: cycles");
            let same_lines = cycles == want;
            assert_eq!(Some(count), want_count, "{case}: count");
            assert!(!tree.join("modules.dep").exists(), "{case}: bootkmod wrote indexes");
            if let Some(kmod) = kmod {
                assert!(!kmod.status.success(), "{case}: kmod succeeded");
                let (k, kc) = kmod_cycles(&String::from_utf8_lossy(&kmod.stderr));
                assert_eq!((sets(&k), kc), (sets(&want), want_count.clone()), "{case}: kmod");
                assert!(!kmod_tree.join("modules.dep").exists());
            }
            report.push(format!(
                "{case}: exit 1, nothing written, {} cycles and {} modules as kmod; lines {}",
                want.len(),
                want_count.unwrap(),
                if same_lines {
                    "identical"
                } else {
                    "differ in the module a cycle is printed from"
                }
            ));
            continue;
        }
        assert!(out.status.success(), "{case}: {err}");
        // kmod's expected files: correct-X against X.
        let mut checked = Vec::new();
        for e in std::fs::read_dir(&tree).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(file) = name.strip_prefix("correct-") {
                let want = std::fs::read(e.path()).unwrap();
                let got = std::fs::read(tree.join(file)).unwrap_or_default();
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{case}: {file} differs from kmod's {name}"
                );
                checked.push(file.to_string());
            }
        }
        assert!(!checked.is_empty(), "{case}: no correct-* file");
        // kmod run in the tree: every index byte for byte.
        if let Some(kmod) = kmod {
            assert!(
                kmod.status.success(),
                "{case}: kmod: {}",
                String::from_utf8_lossy(&kmod.stderr)
            );
            let (mine, kmods) = (indexes(&tree), indexes(&kmod_tree));
            let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
            assert_eq!(names(&mine), names(&kmods), "{case}: index files");
            for ((n, a), (_, b)) in mine.iter().zip(&kmods) {
                assert!(a == b, "{case}: {n} differs from kmod's");
            }
            report.push(format!(
                "{case}: {} identical to kmod's correct-*, {} indexes identical to kmod's",
                checked.join(", "),
                mine.len()
            ));
        }
    }
    eprintln!("kmod depmod cases ({:?}):\n  {}", started.elapsed(), report.join("\n  "));
}

/// `modprobe --show-depends` cases: kmod's own (with expected output), and the suite's
/// other modprobe trees judged by kmod run in them.
const SHOW_DEPENDS: &[(&str, &[&str], Option<&str>)] = &[
    ("show-depends", &["mod-loop-a"], Some("correct.txt")),
    ("show-depends", &["mod-simple"], Some("correct-mod-simple.txt")),
    ("alias-to-none", &["--ignore-install", "mod-simple"], Some("correct.txt")),
    ("module-param-kcmdline", &["mod-simple"], Some("correct.txt")),
    ("softdep-loop", &["mod-loop-b"], None),
    ("softdep-loop", &["mod-loop-a"], None),
    ("install-cmd-loop", &["mod-loop-a"], None),
    ("install-cmd-loop", &["mod-loop-b"], None),
    ("install-cmd-loop", &["--ignore-install", "mod-loop-b"], None),
    ("external", &["mod-simple"], None),
    ("builtin", &["unix"], None),
    ("force", &["mod-simple"], None),
];

#[test]
fn every_show_depends_case_of_kmods_suite() {
    let Some(suite) = suite() else { return };
    let started = std::time::Instant::now();
    let root = suite.rootfs();
    let rootfs = root.path().join("rootfs");
    let mut report = Vec::new();
    for (case, args, expected) in SHOW_DEPENDS {
        let ours = copy_case(&rootfs, &format!("test-modprobe/{case}"));
        let out = common::run(
            common::bootkmod()
                .arg("--root")
                .arg(ours.path())
                .args(["deps", "--kver", KVER])
                .args(*args),
        );
        // bootkmod shows paths under the root as `modprobe -d ROOT` does; in the tree
        // (kmod's view) they start at `/`.
        let shown = String::from_utf8_lossy(&out.stdout)
            .replace(&format!("{}/", ours.path().display()), "/");
        assert!(out.status.success(), "{case} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let what = format!("{case} {}", args.join(" "));
        if let Some(file) = expected {
            let want = std::fs::read_to_string(ours.path().join(file)).unwrap();
            assert_eq!(shown, want, "{what}: differs from kmod's {file}");
        }
        let theirs = copy_case(&rootfs, &format!("test-modprobe/{case}"));
        let mut argv = vec!["/usr/sbin/modprobe", "-S", KVER, "--show-depends"];
        argv.extend(args.iter().copied());
        if let Some(kmod) = kmod_in_tree(theirs.path(), &argv) {
            assert!(
                kmod.status.success(),
                "{what}: kmod: {}",
                String::from_utf8_lossy(&kmod.stderr)
            );
            assert_eq!(shown, String::from_utf8_lossy(&kmod.stdout), "{what}: differs from kmod");
        }
        report.push(format!(
            "{what}: {} lines identical{}",
            shown.lines().count(),
            if expected.is_some() { " to kmod's correct file and kmod" } else { " to kmod" }
        ));
    }
    eprintln!("kmod show-depends cases ({:?}):\n  {}", started.elapsed(), report.join("\n  "));
}

#[test]
fn kernel_command_line_options_as_kmods_suite_expects() {
    // module-param-kcmdline2..8: kmod's expected `modprobe -c` output lists the options
    // it took from each tree's /proc/cmdline.
    let Some(suite) = suite() else { return };
    let dir = suite.testsuite.join("rootfs-pristine/test-modprobe");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("proc/cmdline").exists() && p.join("correct.txt").exists())
        .collect();
    cases.sort();
    let mut n = 0;
    for case in &cases {
        let want: Vec<String> = std::fs::read_to_string(case.join("correct.txt"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("options "))
            .map(str::to_string)
            .collect();
        if want.is_empty() {
            continue;
        }
        let cmdline = std::fs::read(case.join("proc/cmdline")).unwrap();
        let config = bootkmod::model::modprobe::ModprobeConfig::from_files([], Some(&cmdline));
        let got: Vec<String> =
            config.options.iter().map(|(m, o)| format!("options {m} {o}")).collect();
        assert_eq!(got, want, "{}", case.display());
        n += 1;
    }
    assert!(n >= 7, "kmod's suite has 7 command-line option cases, found {n}");
}
