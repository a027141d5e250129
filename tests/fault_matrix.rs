//! The fault matrix (issue 12): every writing command — `inject`, `install`,
//! `install --refresh`, `remove`, `remove --sha256` (one build of two, issue 21),
//! `remove --kernel`, `dud apply`, `depmod` — run with
//! ENOSPC, EROFS and EIO injected at each of its I/O steps (every write, fsync, rename,
//! link, unlink, mkdir: `operations::failpoint`, debug builds only) and with SIGKILL just
//! before each. After every fault:
//!
//! 1. the tree is old-or-new byte for byte: each path outside bootkmod's state
//!    directory is as it was before the command or as a clean run leaves it (a killed
//!    run may leave temp files under their recognisable `.NAME.bootkmod-PID` names,
//!    a failing one none);
//! 2. `status` tells the truth: it exits 0 only when the tree as a whole is the old or
//!    the new one;
//! 3. the next run completes: the commands `status` names (each alert's `next`), then
//!    the command itself, leave exactly the clean run's tree, and `status` exits as after
//!    a clean run.
//!
//! The outcome counts are printed (and recorded in docs/testing.md).
//! `BOOTKMOD_FAULT_KINDS=enospc,kill` narrows the kinds for a quicker local run, and
//! `BOOTKMOD_FAULT_CASES=install,remove` the commands.

mod common;

use common::keep::{fingerprint, tiny_image, Setup};
use common::{bootkmod, bootkmod_hooked, run};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type Tree = BTreeMap<PathBuf, String>;

const KINDS: &[&str] = &["enospc", "erofs", "eio", "kill"];

/// One command of the matrix: where it starts and what it runs (`ROOT` stands for the
/// work root).
struct Case {
    name: &'static str,
    template: PathBuf,
    args: Vec<OsString>,
    /// Keeps a ledger: `status` applies.
    ledger: bool,
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let out = run(Command::new("cp").arg("-a").arg(from).arg(to));
    assert!(out.status.success(), "cp -a: {}", String::from_utf8_lossy(&out.stderr));
}

fn bk(root: &Path, args: &[OsString]) -> Command {
    // Every run here is traced or faulted through the hooks: cargo's build, always.
    let mut c = bootkmod_hooked();
    c.arg("--root").arg(root).args(args);
    c
}

/// The tree as the matrix compares it: bootkmod's state directory left out (the ledger
/// is judged through `status`), and, after a kill, the recognisable temp files.
fn tree(root: &Path, allow_temps: bool) -> (Tree, Vec<PathBuf>) {
    let mut temps = Vec::new();
    let all = fingerprint(root);
    let kept = all
        .into_iter()
        // The state directory and its parents (created with it) are bootkmod's own.
        .filter(|(p, _)| {
            !p.starts_with("var/lib/bootkmod") && p != Path::new("var") && p != Path::new("var/lib")
        })
        .filter(|(p, _)| {
            let temp = p.file_name().is_some_and(|n| n.to_string_lossy().contains(".bootkmod-"));
            if temp {
                temps.push(p.clone());
            }
            !(temp && allow_temps)
        })
        .collect();
    (kept, temps)
}

/// Paths whose state is neither the old nor the new one.
fn torn(now: &Tree, old: &Tree, new: &Tree) -> Vec<String> {
    let keys: std::collections::BTreeSet<&PathBuf> =
        now.keys().chain(old.keys()).chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            let n = now.get(*k);
            n != old.get(*k) && n != new.get(*k)
        })
        .map(|k| format!("{}: {:?}", k.display(), now.get(k)))
        .collect()
}

/// `status --json`: exit code and each alert's next command.
fn status(root: &Path) -> (Option<i32>, Vec<String>, String) {
    let out = run(bootkmod().arg("--root").arg(root).args(["--json", "status"]));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let next = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["alerts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["next"].as_str().map(str::to_string))
        .collect();
    (out.status.code(), next, shown)
}

/// The bootkmod command line inside an alert's `next` ("fix the cause, then bootkmod
/// install --refresh --kver K"; "bootkmod install --refresh (any install ...)").
fn command_in(next: &str) -> Option<Vec<OsString>> {
    let at = next.find("bootkmod ")?;
    let cmd = next[at + "bootkmod ".len()..].split(" (").next()?;
    Some(cmd.split_whitespace().map(OsString::from).collect())
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?} signal {:?}\n{}{}",
        out.status.code(),
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_fault_at_every_step_leaves_old_or_new_and_a_truthful_status() {
    let Some(s) = Setup::new() else { return };
    let kabi = format!("{}-kabi1", s.kver);
    let work = tempfile::tempdir().unwrap();
    let t = |name: &str| work.path().join(name);

    // Templates: a fresh root with two kernels; the same after install; after install
    // with the placed file erased and one image replaced by a fresh one; a dud; a tree
    // whose indexes miss a module.
    let base = s.root.path().to_path_buf();
    s.root.add_kernel(&s.newer, &s.kver, &s.symvers);
    s.root.add_kernel(&s.newer, &kabi, &s.symvers);
    let install_args: Vec<OsString> =
        vec!["install".into(), "--root-critical".into(), s.bkram.clone().into()];
    copy_tree(&base, &t("installed"));
    let out = run(&mut bk(&t("installed"), &install_args));
    assert!(out.status.success(), "{}", describe(&out));
    copy_tree(&t("installed"), &t("damaged"));
    std::fs::remove_file(t("damaged").join(format!("lib/modules/{}/extra/bkram/bkram.ko", s.kver)))
        .unwrap();
    std::fs::write(t("damaged").join(format!("boot/initrd.img-{kabi}")), tiny_image(&kabi))
        .unwrap();
    let iso = t("dd.iso");
    let out = run(bootkmod()
        .args(["dud", "build", "--version", "1.0"])
        .arg(&s.bkram)
        .arg("-o")
        .arg(&iso));
    assert!(out.status.success(), "{}", describe(&out));
    // Two builds of bkram (issue 21): the second, built for another release, is the
    // newer by install order and is linked into the kABI copy; removing it by sha256
    // falls the copy back to the first.
    let mut second = std::fs::read(&s.bkram).unwrap();
    let sibling = common::builds::sibling_release(&s.kver, "99");
    common::check::patch_modinfo(
        &mut second,
        &format!("vermagic={} ", s.kver),
        &format!("vermagic={sibling} "),
    );
    let second_ko = t("second/bkram.ko");
    std::fs::create_dir_all(second_ko.parent().unwrap()).unwrap();
    std::fs::write(&second_ko, &second).unwrap();
    let second_sha = bootkmod::model::module::sha256_hex(&second);
    copy_tree(&t("installed"), &t("two-builds"));
    let out =
        run(bk(&t("two-builds"), &["install".into(), second_ko.clone().into()])
            .arg("--root-critical"));
    assert!(out.status.success(), "{}", describe(&out));
    copy_tree(&base, &t("unindexed"));
    let extra = t("unindexed").join(format!("lib/modules/{}/extra", s.kver));
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::copy(&s.bkram, extra.join("bkram.ko")).unwrap();

    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    let cases = vec![
        Case {
            name: "inject",
            template: base.clone(),
            args: [os(&["inject", "--kver", &s.kver]), vec![s.bkram.clone().into()]].concat(),
            ledger: false,
        },
        Case { name: "install", template: base.clone(), args: install_args.clone(), ledger: true },
        Case {
            name: "install --refresh",
            template: t("damaged"),
            args: os(&["install", "--refresh"]),
            ledger: true,
        },
        Case {
            name: "remove",
            template: t("installed"),
            args: os(&["remove", "bkram"]),
            ledger: true,
        },
        Case {
            name: "remove --sha256",
            template: t("two-builds"),
            args: os(&["remove", "bkram", "--sha256", &second_sha]),
            ledger: true,
        },
        Case {
            name: "remove --kernel",
            template: t("installed"),
            args: os(&["remove", "--kernel", &kabi]),
            ledger: true,
        },
        Case {
            name: "dud apply",
            template: base.clone(),
            args: [os(&["dud", "apply"]), vec![iso.clone().into()], os(&["--kver", &s.kver])]
                .concat(),
            ledger: false,
        },
        Case {
            name: "depmod",
            template: t("unindexed"),
            args: os(&["depmod", &s.kver]),
            ledger: false,
        },
    ];
    let kinds: Vec<String> = std::env::var("BOOTKMOD_FAULT_KINDS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| KINDS.iter().map(|k| k.to_string()).collect());

    // BOOTKMOD_FAULT_CASES=install,remove narrows the commands for a local run too.
    let only: Option<Vec<String>> = std::env::var("BOOTKMOD_FAULT_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name)))
        .collect();

    let root = t("run");
    let mut total = 0;
    let mut inconsistent = Vec::new();
    let mut summary = Vec::new();
    for case in &cases {
        // The clean run: the new tree, its status, and how many steps it has.
        copy_tree(&case.template, &root);
        let (old, _) = tree(&root, false);
        let trace = t("trace");
        let _ = std::fs::remove_file(&trace);
        let out = run(bk(&root, &case.args).env("BOOTKMOD_FAULT_TRACE", &trace));
        assert!(out.status.success(), "{}: clean run: {}", case.name, describe(&out));
        let steps = std::fs::read_to_string(&trace).unwrap_or_default().lines().count();
        assert!(steps > 0, "{}: no I/O step traced", case.name);
        let (new, _) = tree(&root, false);
        assert_ne!(old, new, "{}: the clean run changed nothing", case.name);
        let clean_status = if case.ledger { status(&root).0 } else { None };
        let mut runs = 0;
        for kind in &kinds {
            for n in 1..=steps {
                copy_tree(&case.template, &root);
                let fault = format!("{kind}@{n}");
                let out = run(bk(&root, &case.args).env("BOOTKMOD_FAULT", &fault));
                runs += 1;
                let mut problems = Vec::new();
                let killed = kind == "kill";
                if killed && std::os::unix::process::ExitStatusExt::signal(&out.status) != Some(9) {
                    problems.push(format!("not killed: {}", describe(&out)));
                }
                let (now, temps) = tree(&root, killed);
                // A fault may be overcome within the run (a step retried): then the run
                // must have finished the job; otherwise it must say it failed.
                if !killed && out.status.success() && now != new {
                    problems.push(format!("the fault was not reported: {}", describe(&out)));
                }
                if !killed && !temps.is_empty() {
                    problems.push(format!("temp files left: {temps:?}"));
                }
                let bad = torn(&now, &old, &new);
                if !bad.is_empty() {
                    problems.push(format!("neither old nor new: {bad:?}"));
                }
                let mut finish: Vec<Vec<OsString>> = Vec::new();
                if case.ledger {
                    let (code, next, shown) = status(&root);
                    if code == Some(0) && now != old && now != new {
                        problems.push(format!(
                            "status exits 0 on a mixed tree ({:?}): {shown}",
                            common::keep::fingerprint_diff(&old, &now)
                        ));
                    }
                    if code != Some(0) && code != Some(3) {
                        problems.push(format!("status failed: {shown}"));
                    }
                    for next in next {
                        match command_in(&next) {
                            Some(cmd) => finish.push(cmd),
                            None => problems.push(format!("no command in next: {next}")),
                        }
                    }
                }
                // The next run: what status named, then the command itself.
                finish.push(case.args.clone());
                for cmd in &finish {
                    let out = run(&mut bk(&root, cmd));
                    if cmd == &case.args && !out.status.success() {
                        // remove of a driver a faulted remove already took out is an
                        // error only if the tree is not already complete.
                        let (now, _) = tree(&root, true);
                        if now != new {
                            problems.push(format!("the next run failed: {}", describe(&out)));
                        }
                    }
                }
                let (now, _) = tree(&root, true);
                if now != new {
                    problems.push(format!(
                        "not completed by the next run: {:?}",
                        common::keep::fingerprint_diff(&new, &now)
                    ));
                }
                if case.ledger {
                    let (code, _, shown) = status(&root);
                    if code != clean_status {
                        problems.push(format!("status after completion: {shown}"));
                    }
                }
                if !problems.is_empty() {
                    inconsistent.push(format!("{} {fault}: {}", case.name, problems.join("; ")));
                }
            }
        }
        total += runs;
        summary.push(format!("{}: {steps} steps, {runs} faulted runs", case.name));
    }
    eprintln!("fault matrix: {} runs, {} inconsistent", total, inconsistent.len());
    for line in &summary {
        eprintln!("  {line}");
    }
    assert!(
        inconsistent.is_empty(),
        "{} inconsistent outcomes:\n{}",
        inconsistent.len(),
        inconsistent.join("\n")
    );
}
