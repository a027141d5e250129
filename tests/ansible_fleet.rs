//! The Ansible collection (contrib/ansible/, issue 16) driving bootkmod over a fleet of
//! host trees on this machine: ansible-core from `.ci/setup.d/ansible`'s venv runs the
//! example playbooks against an inventory of hosts with `ansible_connection=local`, each
//! its own target root (`bootkmod_root`) with real Debian kernels as in the keep tests.

mod common;

use common::check::build_bkram;
use common::keep::{fingerprint, fingerprint_diff, Source, TargetRoot};
use common::machine::{other_kernels, synthetic_release};
use common::{installed_kernel, missing, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned ansible-core of `.ci/setup.d/ansible`.
const ANSIBLE_CORE: &str = "2.19.14";

/// Where `ANSIBLE_COLLECTIONS_PATH` points: it holds `ansible_collections/bootkmod/storage`.
fn collections_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible")
}

fn collection_dir() -> PathBuf {
    collections_path().join("ansible_collections/bootkmod/storage")
}

/// The venv `.ci/setup.d/ansible` made, or a skip (a failure under CI).
fn ansible_venv() -> Option<PathBuf> {
    let rel = format!("ansible-core-{ANSIBLE_CORE}/bin/ansible-playbook");
    if let Some(playbook) = common::machine::input(&rel) {
        return Some(playbook.parent()?.parent()?.to_path_buf());
    }
    missing(&format!("ansible-core {ANSIBLE_CORE}'s ansible-playbook (.ci/setup.d/ansible)"))?;
    unreachable!()
}

/// A kernel a host tree gets: where its files come from, its release, its symvers.
type KernelOf<'a> = (&'a Source, &'a str, Vec<bootkmod::formats::symvers::SymversEntry>);

/// One inventory host: its name, its tree and the kernel releases in it.
struct Host {
    name: String,
    tree: TargetRoot,
    releases: Vec<String>,
}

/// A fleet of host trees, each a target root holding a set of kernels.
struct Fleet {
    /// bkram, built for the installed kernel (kept alive with its build dir).
    driver: PathBuf,
    _build: tempfile::TempDir,
    /// Inventory name, tree and kernel releases, in inventory order.
    hosts: Vec<Host>,
    installed: String,
    rt: String,
}

impl Fleet {
    /// Five hosts, in this inventory order: the installed kernel alone, with its older
    /// ABI, `refusing` (the rt flavour beside the installed kernel: bkram is refused
    /// there, `module_layout`), with a kABI copy, with the older ABI and a kABI copy.
    fn new(base: &Path) -> Option<Fleet> {
        let kver = installed_kernel()?;
        let others = other_kernels()?;
        let newer = Source::of(&kver, &kver)?;
        let older = Source::of(&others.older, &kver)?;
        let rt = Source::of(&others.rt, &kver)?;
        let build = tempfile::tempdir().unwrap();
        let driver = build_bkram(&kver, build.path())?;
        let newer_symvers = newer.symvers();
        let kabi = synthetic_release(&kver, "kabi");
        let layouts: Vec<(&str, Vec<KernelOf>)> = vec![
            ("plain", vec![(&newer, kver.as_str(), newer_symvers.clone())]),
            (
                "older",
                vec![
                    (&newer, kver.as_str(), newer_symvers.clone()),
                    (&older, others.older.as_str(), older.symvers()),
                ],
            ),
            (
                "refusing",
                vec![
                    (&newer, kver.as_str(), newer_symvers.clone()),
                    (&rt, others.rt.as_str(), rt.symvers()),
                ],
            ),
            (
                "kabi",
                vec![
                    (&newer, kver.as_str(), newer_symvers.clone()),
                    (&newer, kabi.as_str(), newer_symvers.clone()),
                ],
            ),
            (
                "mixed",
                vec![
                    (&newer, kver.as_str(), newer_symvers.clone()),
                    (&older, others.older.as_str(), older.symvers()),
                    (&newer, kabi.as_str(), newer_symvers.clone()),
                ],
            ),
        ];
        let mut hosts = Vec::new();
        for (name, kernels) in layouts {
            let tree =
                TargetRoot { dir: tempfile::Builder::new().prefix(name).tempdir_in(base).unwrap() };
            let mut releases = Vec::new();
            for (src, release, symvers) in kernels {
                tree.add_kernel(src, release, &symvers);
                releases.push(release.to_string());
            }
            hosts.push(Host { name: name.to_string(), tree, releases });
        }
        Some(Fleet { driver, _build: build, hosts, installed: kver, rt: others.rt })
    }
}

/// Not a test of its own: keeps a fleet's trees under `$BOOTKMOD_FLEET_DIR` for
/// `scripts/bench-ansible-audit` (which copies them to make 50 hosts).
#[test]
#[ignore]
fn make_fleet_trees() {
    let dir = PathBuf::from(std::env::var_os("BOOTKMOD_FLEET_DIR").expect("BOOTKMOD_FLEET_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(fleet) = Fleet::new(&dir) else { return };
    std::fs::copy(&fleet.driver, dir.join("bkram.ko")).unwrap();
    for host in fleet.hosts {
        let kept = host.tree.dir.keep();
        std::fs::rename(&kept, dir.join(&host.name)).unwrap();
    }
}

/// ansible-playbook runs with an inventory of `fleet`'s hosts, each `ansible_connection=local`
/// with its own `bootkmod_root`, and the bootkmod under test first on PATH.
struct Ansible {
    venv: PathBuf,
    dir: tempfile::TempDir,
    inventory: PathBuf,
}

/// What one ansible-playbook run printed, and its PLAY RECAP per host.
struct PlayRun {
    code: Option<i32>,
    stdout: String,
    /// host -> (changed, failed)
    recap: std::collections::BTreeMap<String, (u32, u32)>,
}

impl PlayRun {
    fn changed(&self, host: &str) -> u32 {
        self.recap.get(host).unwrap_or_else(|| panic!("{host} not in the recap\n{}", self.stdout)).0
    }
    fn failed(&self, host: &str) -> u32 {
        self.recap.get(host).unwrap_or_else(|| panic!("{host} not in the recap\n{}", self.stdout)).1
    }
}

impl Ansible {
    fn new(venv: PathBuf, fleet: &Fleet, extra_vars: &dyn Fn(&Host) -> String) -> Ansible {
        let dir = tempfile::tempdir().unwrap();
        // The driver comes from the controller (bootkmod_driver's remote_src=false).
        let mut inventory = String::from("[storage]\n");
        for host in &fleet.hosts {
            inventory.push_str(&format!(
                "{} bootkmod_root={} {}\n",
                host.name,
                host.tree.path().display(),
                extra_vars(host)
            ));
        }
        inventory.push_str(&format!(
            "[storage:vars]\nansible_connection=local\nansible_python_interpreter={}\nbootkmod_controller_src={}\n",
            venv.join("bin/python3").display(),
            fleet.driver.display()
        ));
        let path = dir.path().join("inventory.ini");
        std::fs::write(&path, inventory).unwrap();
        Ansible { venv, dir, inventory: path }
    }

    /// An inventory of the controller alone (for modules run there: `bootkmod_dud`).
    fn controller(venv: PathBuf) -> Ansible {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.ini");
        let line = format!(
            "localhost ansible_connection=local ansible_python_interpreter={}\n",
            venv.join("bin/python3").display()
        );
        std::fs::write(&path, line).unwrap();
        Ansible { venv, dir, inventory: path }
    }

    /// `ansible HOST -m bootkmod.storage.MODULE -a ARGS [EXTRA]`: exit status and output.
    fn ad_hoc(&self, host: &str, module: &str, args: &str, extra: &[&str]) -> (bool, String) {
        let out = run(self
            .command("ansible")
            .arg("-i")
            .arg(&self.inventory)
            .arg(host)
            .arg("-m")
            .arg(format!("bootkmod.storage.{module}"))
            .args(["-a", args])
            .args(extra));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn command(&self, tool: &str) -> Command {
        let bin_dir = common::bootkmod_path_dir();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = [bin_dir, self.venv.join("bin")].into_iter().chain(std::env::split_paths(&path));
        let mut cmd = Command::new(self.venv.join("bin").join(tool));
        cmd.current_dir(self.dir.path())
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .env("ANSIBLE_COLLECTIONS_PATH", collections_path())
            // Nothing of ansible's own state in the user's home.
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
            .env("ANSIBLE_REMOTE_TEMP", self.dir.path().join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env_remove("ANSIBLE_CONFIG");
        cmd
    }

    fn playbook(&self, playbook: &str, args: &[&str]) -> PlayRun {
        let out = run(self
            .command("ansible-playbook")
            .arg("-i")
            .arg(&self.inventory)
            .arg(format!("bootkmod.storage.{playbook}"))
            .args(args));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let mut recap = std::collections::BTreeMap::new();
        let recap_text = stdout.rsplit("PLAY RECAP").next().unwrap_or_default();
        for line in recap_text.lines() {
            let Some((host, counts)) = line.split_once(" : ") else { continue };
            let count = |key: &str| -> u32 {
                counts
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
            };
            recap.insert(host.trim().to_string(), (count("changed"), count("failed")));
        }
        PlayRun { code: out.status.code(), stdout, recap }
    }
}

fn fingerprints(fleet: &Fleet) -> Vec<std::collections::BTreeMap<PathBuf, String>> {
    fleet.hosts.iter().map(|h| fingerprint(h.tree.path())).collect()
}

/// Assert host `i`'s tree is as `before` says.
fn assert_unchanged(
    fleet: &Fleet,
    before: &[std::collections::BTreeMap<PathBuf, String>],
    i: usize,
    when: &str,
) {
    let diff = fingerprint_diff(&before[i], &fingerprint(fleet.hosts[i].tree.path()));
    assert!(diff.is_empty(), "{when}: {} changed:\n{}", fleet.hosts[i].name, diff.join("\n"));
}

#[test]
fn fleet_check_diff_batches_refusal_idempotence_audit_reboot_gate() {
    let Some(venv) = ansible_venv() else { return };
    let base = tempfile::tempdir().unwrap();
    let Some(fleet) = Fleet::new(base.path()) else { return };
    let refusing = fleet.hosts.iter().position(|h| h.name == "refusing").unwrap();
    let host_modules = fingerprint(Path::new("/lib/modules"));
    let installed = fleet.installed.clone();
    let rt = fleet.rt.clone();
    let ansible = Ansible::new(venv, &fleet, &|h: &Host| {
        // The kernel each host would reboot into next: for `refusing`, the rt flavour.
        let next = if h.name == "refusing" { &rt } else { &installed };
        format!("bootkmod_new_kernel={next}")
    });
    let pristine = fingerprints(&fleet);

    // Check mode with --diff, every host in one batch: no byte of any tree changes; each
    // host that would change shows, per kernel, what its placement and image become.
    let check =
        ansible.playbook("install_driver", &["--check", "--diff", "-e", "bootkmod_batch=100%"]);
    for i in 0..fleet.hosts.len() {
        assert_unchanged(&fleet, &pristine, i, "check mode");
    }
    println!("--- ansible-playbook --check --diff:\n{}", check.stdout);
    for host in fleet.hosts.iter().filter(|h| h.name != "refusing") {
        assert_eq!(check.changed(&host.name), 1, "{}: would change\n{}", host.name, check.stdout);
        assert_eq!(check.failed(&host.name), 0, "{}\n{}", host.name, check.stdout);
        for release in &host.releases {
            assert!(
                check.stdout.contains(&format!("+++ after: {release} (after)")),
                "{}: no diff for kernel {release}\n{}",
                host.name,
                check.stdout
            );
        }
    }
    let older = &fleet.hosts[1].releases[1];
    assert!(check.stdout.contains(&format!(
        "+bkram: weak-updates -> /lib/modules/{older}/weak-updates/bkram/bkram.ko"
    )));
    assert!(check.stdout.contains("+bkram: own (build"), "{}", check.stdout);
    assert!(check.stdout.contains("-bkram: not installed"), "{}", check.stdout);
    let refusal = format!("kernel {rt} would boot without root-critical driver bkram");
    assert_eq!(check.failed("refusing"), 1, "{}", check.stdout);
    assert!(check.stdout.contains(&refusal), "{}", check.stdout);

    // The default rollout, 10% of the hosts per batch (here one): the first two hosts
    // complete, `refusing` fails naming its rt kernel with its tree untouched, and the
    // rollout stops there - the hosts after it are not touched.
    let rollout = ansible.playbook("install_driver", &[]);
    assert_ne!(rollout.code, Some(0), "{}", rollout.stdout);
    for name in ["plain", "older"] {
        assert_eq!(
            (rollout.changed(name), rollout.failed(name)),
            (1, 0),
            "{name}\n{}",
            rollout.stdout
        );
    }
    assert_eq!(rollout.failed("refusing"), 1, "{}", rollout.stdout);
    assert!(rollout.stdout.contains(&refusal), "{}", rollout.stdout);
    assert!(rollout.stdout.contains("module_layout"), "bootkmod's reason\n{}", rollout.stdout);
    for i in refusing..fleet.hosts.len() {
        assert_unchanged(&fleet, &pristine, i, "a rollout stopped at the refusing host");
        assert!(
            !rollout.recap.contains_key(&fleet.hosts[i].name) || i == refusing,
            "{}",
            rollout.stdout
        );
    }

    // All hosts in one batch: the others complete, `refusing` fails again, unchanged.
    let all = ansible.playbook("install_driver", &["-e", "bootkmod_batch=100%"]);
    for name in ["kabi", "mixed"] {
        assert_eq!((all.changed(name), all.failed(name)), (1, 0), "{name}\n{}", all.stdout);
    }
    for name in ["plain", "older"] {
        assert_eq!((all.changed(name), all.failed(name)), (0, 0), "{name}\n{}", all.stdout);
    }
    assert_eq!(all.failed("refusing"), 1, "{}", all.stdout);
    assert!(all.stdout.contains(&refusal), "{}", all.stdout);
    assert_unchanged(&fleet, &pristine, refusing, "refused");
    // What each host holds now, by bootkmod's own account.
    for host in fleet.hosts.iter().filter(|h| h.name != "refusing") {
        let out =
            run(common::bootkmod().arg("--root").arg(host.tree.path()).args(["--json", "status"]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let status = common::keep::json_of(&out);
        for release in &host.releases {
            let k = common::keep::kernel_of(&status, release);
            let m = &k["modules"][0];
            assert_eq!(
                (m["name"].as_str(), m["in_image"].as_bool()),
                (Some("bkram"), Some(true)),
                "{}: {k:#}",
                host.name
            );
        }
    }

    // Idempotence: a second run changes nothing, on every host, to the byte.
    let installed_trees = fingerprints(&fleet);
    let again = ansible.playbook("install_driver", &["-e", "bootkmod_batch=100%"]);
    for host in &fleet.hosts {
        assert_eq!(again.changed(&host.name), 0, "{}\n{}", host.name, again.stdout);
    }
    for i in 0..fleet.hosts.len() {
        assert_unchanged(&fleet, &installed_trees, i, "second run");
    }

    // Audit: nobody at risk yet; then `refusing` gets the driver anyway, and the audit
    // names it and its rt kernel, and no other host.
    let audit = ansible.playbook("audit", &[]);
    assert_eq!(audit.code, Some(0), "{}", audit.stdout);
    assert!(!audit.stdout.contains("AT RISK"), "{}", audit.stdout);
    // (The driver file on the host this time: remote_src's default.)
    let args = format!(
        "src={} root={} root_critical=true allow_at_risk=true",
        fleet.driver.display(),
        fleet.hosts[refusing].tree.path().display()
    );
    let (ok, forced) = ansible.ad_hoc("refusing", "bootkmod_driver", &args, &[]);
    assert!(ok && forced.contains("\"changed\": true"), "{forced}");
    assert!(forced.contains(&refusal), "the at-risk warning: {forced}");
    let audit = ansible.playbook("audit", &[]);
    assert_eq!(audit.code, Some(0), "{}", audit.stdout);
    println!("--- audit:\n{}", audit.stdout);
    let lines: Vec<&str> = audit.stdout.lines().filter(|l| l.contains("\"AT RISK")).collect();
    assert_eq!(lines.len(), 1, "{}", audit.stdout);
    assert!(lines[0].contains(&format!("AT RISK refusing: {rt}")), "{lines:?}");

    // Before a reboot: `refusing` would come up on the rt kernel without its root
    // driver, so it is refused; the others pass (and nobody reboots: opt-in only).
    let gate = ansible.playbook("before_reboot", &[]);
    assert_eq!(gate.failed("refusing"), 1, "{}", gate.stdout);
    assert!(
        gate.stdout.contains(&format!("not rebooting refusing: kernel {rt} would boot without")),
        "{}",
        gate.stdout
    );
    for host in fleet.hosts.iter().filter(|h| h.name != "refusing") {
        assert_eq!(gate.failed(&host.name), 0, "{}\n{}", host.name, gate.stdout);
    }

    // Removal: state=absent through an ad-hoc call, then nothing left to remove.
    let plain = fleet.hosts[0].tree.path().display().to_string();
    let args = format!("name=bkram state=absent root={plain}");
    // Check mode first: a change announced per kernel (the image restored), nothing written.
    let before_remove = fingerprint(fleet.hosts[0].tree.path());
    let (ok, text) = ansible.ad_hoc("plain", "bootkmod_driver", &args, &["--check", "--diff"]);
    assert!(ok && text.contains("\"changed\": true"), "check-mode remove: {text}");
    assert!(text.contains(&format!("+++ after: {installed} (after)")), "{text}");
    assert!(text.contains(&format!("+image /boot/initrd.img-{installed}: restored")), "{text}");
    assert_unchanged(&fleet, &[before_remove], 0, "check-mode remove");
    for (want_changed, when) in [(true, "first"), (false, "second")] {
        let (ok, text) = ansible.ad_hoc("plain", "bootkmod_driver", &args, &[]);
        assert!(ok, "{when} remove: {text}");
        assert!(text.contains(&format!("\"changed\": {want_changed}")), "{when} remove: {text}");
    }
    let status = common::keep::json_of(&run(common::bootkmod()
        .arg("--root")
        .arg(&plain)
        .args(["--json", "status"])));
    assert!(status["builds"].as_array().unwrap().is_empty(), "{status:#}");

    let diff = fingerprint_diff(&host_modules, &fingerprint(Path::new("/lib/modules")));
    assert!(diff.is_empty(), "the host's /lib/modules changed:\n{}", diff.join("\n"));
}

/// Every module of the collection (the files under plugins/modules/).
fn modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(collection_dir().join("plugins/modules"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".py").map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn ansible_doc_renders_every_module() {
    let Some(venv) = ansible_venv() else { return };
    let names = modules();
    assert!(names.len() >= 2, "{names:?}");
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let out = run(Command::new(venv.join("bin/ansible-doc"))
            .current_dir(dir.path())
            .env("ANSIBLE_COLLECTIONS_PATH", collections_path())
            .env("ANSIBLE_LOCAL_TEMP", dir.path())
            .env("ANSIBLE_NOCOLOR", "1")
            .args(["-t", "module"])
            .arg(format!("bootkmod.storage.{name}")));
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ansible-doc {name}: {err}");
        // The rendered page, not a warning that the module was not found.
        assert!(text.contains(&format!("bootkmod.storage.{name}")), "{name}: {text}");
        for section in ["OPTIONS", "EXAMPLES", "RETURN VALUES"] {
            assert!(text.contains(section), "{name}: no {section}\n{text}");
        }
        assert!(!err.contains("WARNING"), "ansible-doc {name}: {err}");
    }
}

/// `ansible-test sanity` over a copy of the collection (it wants the path
/// `ansible_collections/NS/NAME/`, outside any other git work tree), with the venvs
/// `.ci/setup.d/ansible` made for its tests (its HOME is the venv's ansible-test-home).
#[test]
fn ansible_test_sanity_passes() {
    let Some(venv) = ansible_venv() else { return };
    let home = venv.join("ansible-test-home");
    if !home.join(".ansible/test/venv").is_dir() {
        missing(&format!("ansible-test's venvs in {} (run .ci/setup.d/ansible)", home.display()));
        return;
    }
    // ansible-test touches its venvs' markers on every run.
    if tempfile::tempfile_in(home.join(".ansible/test/venv")).is_err() {
        common::skip(&format!(
            "ansible-test's venvs in {} are not writable by this user",
            home.display()
        ));
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("ansible_collections/bootkmod/storage");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let out = run(Command::new("cp").arg("-r").arg(collection_dir()).arg(&copy));
    assert!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(venv.join("bin")).chain(std::env::split_paths(&path));
    let out = run(Command::new(venv.join("bin/ansible-test"))
        .current_dir(&copy)
        .env("HOME", &home)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .args(["sanity", "--python", "3.11", "--color", "no"]));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "ansible-test sanity failed:\n{text}");
    // It ran the tests that judge modules, not nothing.
    for test in ["validate-modules", "pylint", "pep8", "yamllint", "ansible-doc"] {
        assert!(
            text.contains(&format!("Running sanity test \"{test}\"")),
            "{test} did not run:\n{text}"
        );
    }
}

/// `bootkmod_dud` on the controller: the disk is `bootkmod dud build`'s own, byte for
/// byte (same SOURCE_DATE_EPOCH), labelled OEMDRV as xorriso reads it; a rebuild from
/// the same inputs is `changed=false`; check mode with another version reports a change
/// and leaves the disk as it was.
#[test]
fn dud_module_builds_a_disk_once() {
    let Some(venv) = ansible_venv() else { return };
    let Some(xorriso) = common::tool("xorriso") else { return };
    let work = tempfile::tempdir().unwrap();
    let driver = common::dud::sample_driver("vhba", common::dud::RHEL_RELEASE);
    let module = common::dud::write_module(work.path(), &driver, "vhba");
    let dest = work.path().join("out/dd.iso");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let ansible = Ansible::controller(venv);
    let args =
        format!("src={} dest={} source_date_epoch=1700000000", module.display(), dest.display());
    for (want_changed, when) in [(true, "first"), (false, "second")] {
        let (ok, text) = ansible.ad_hoc("localhost", "bootkmod_dud", &args, &[]);
        assert!(ok, "{when} build: {text}");
        assert!(text.contains(&format!("\"changed\": {want_changed}")), "{when} build: {text}");
    }
    let built = std::fs::read(&dest).unwrap();
    let direct = work.path().join("direct.iso");
    common::dud::ok(&common::dud::dud(&[
        "build",
        module.to_str().unwrap(),
        "-o",
        direct.to_str().unwrap(),
    ]));
    assert!(
        built == std::fs::read(&direct).unwrap(),
        "the module's disk differs from bootkmod's own"
    );
    let out = run(Command::new(xorriso).arg("-indev").arg(&dest).arg("-pvd_info"));
    let info =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(info.lines().any(|l| l.starts_with("Volume Id") && l.contains("OEMDRV")), "{info}");

    let (ok, text) =
        ansible.ad_hoc("localhost", "bootkmod_dud", &format!("{args} version=9.9"), &["--check"]);
    assert!(ok && text.contains("\"changed\": true"), "check mode: {text}");
    assert!(std::fs::read(&dest).unwrap() == built, "check mode wrote the disk");
}

/// `bootkmod_facts` asks `doctor --json` only of a bootkmod that has `doctor`: with the
/// one under test (no doctor yet) the fact is null and nothing fails; with a bootkmod
/// whose `doctor --help` succeeds (a wrapper standing in for the coming command) its
/// report is the fact, and its exit 3 (at risk) is a finding, not a failure.
#[test]
fn facts_read_doctor_only_where_it_exists() {
    let Some(venv) = ansible_venv() else { return };
    let ansible = Ansible::controller(venv);
    let root = tempfile::tempdir().unwrap();
    let bootkmod = common::bootkmod_bin().display().to_string();
    let has_doctor = run(Command::new(&bootkmod).args(["doctor", "--help"])).status.success();
    let wrapper = ansible.dir.path().join("bootkmod-with-doctor");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  'doctor --help') exit 0 ;;\n  *' doctor') echo '{{\"at_risk\": true, \"checked\": \"wrapper\"}}'; exit 3 ;;\nesac\nexec {bootkmod} \"$@\"\n"
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    let cases = [(bootkmod.clone(), None), (wrapper.display().to_string(), Some("wrapper"))];
    for (executable, doctor) in cases {
        let args = format!("root={} executable={executable}", root.path().display());
        let (ok, text) = ansible.ad_hoc("localhost", "bootkmod_facts", &args, &[]);
        assert!(ok, "{executable}: {text}");
        match doctor {
            // The bootkmod under test has doctor: on an empty root it cannot judge, and
            // says so in the fact without failing the task.
            None if !has_doctor => assert!(text.contains("\"doctor\": null"), "{text}"),
            None => assert!(!text.contains("\"doctor\": null"), "{text}"),
            Some(mark) => assert!(text.contains(&format!("\"checked\": \"{mark}\"")), "{text}"),
        }
        assert!(text.contains("\"at_risk\": false"), "status's verdict: {text}");
    }
}
