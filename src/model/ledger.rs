//! The ledger's data: what bootkmod installed under a root and what it found for each
//! kernel (`var/lib/bootkmod/ledger.json`), and the target-system paths it vouches for
//! (module files, weak-updates links, initramfs images). Read here; written only by
//! `operations::ledger`, under its lock.

use super::root::Root;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Target-absolute directory of bootkmod's state.
pub const STATE_DIR: &str = "/var/lib/bootkmod";
pub const LEDGER_FILE: &str = "ledger.json";
pub const FORMAT_VERSION: u32 = 2;
/// Format 1 held one build per driver; it is read and migrated ([`ModuleRecordOnDisk`]).
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Everything bootkmod manages under one root.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    pub version: u32,
    /// Installed modules by name.
    pub modules: BTreeMap<String, ModuleRecord>,
    /// Per installed kernel release, what was found and done.
    pub kernels: BTreeMap<String, KernelRecord>,
    /// Kernels `kernel-install remove` announced whose tree may still be on disk for a
    /// moment (RPM runs the plugin before it deletes the files): status and a refresh
    /// of every kernel skip them; `install --refresh --kver K` (kernel-install add)
    /// takes K back. Dropped once the tree is gone.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed_kernels: BTreeSet<String>,
    /// The operation in progress; present only between its start and its end (or a
    /// crash: the next run completes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Journal>,
    /// The last journaled operation that ended in an error rather than a crash: recorded
    /// and released, so that later runs are not blocked by retrying it. Cleared by the
    /// next operation that completes without failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedOperation>,
}

/// A journaled operation that stopped on an error (see [`Ledger::failed`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailedOperation {
    /// What it was, in words ("install of bkram").
    pub operation: String,
    /// The operation itself, so that the one that completes it can clear this record.
    pub journal: Journal,
    /// The error it stopped on.
    pub error: String,
    /// The command that completes it once the cause is fixed.
    pub next: String,
}

/// One installed driver: every build of it bootkmod keeps (issue 21).
///
/// Old ledgers (format 1) held one file per name; they load as a driver with one
/// build ([`ModuleRecordOnDisk`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "ModuleRecordOnDisk")]
pub struct ModuleRecord {
    pub name: String,
    /// Needed to mount the root filesystem: a kernel without it is at risk.
    pub root_critical: bool,
    /// The builds, in the order they were installed.
    pub builds: Vec<Build>,
}

/// One build of a driver: one file, built for one kernel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Build {
    /// sha256 of the file as installed (and as kept in the store).
    pub sha256: String,
    /// The module's `version=` (compared in rpm's order); `None` when it has none or
    /// the build came from a format-1 ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the admin's file came from (host path as given on the command line).
    pub origin: String,
    /// The release the module was built for (from its vermagic).
    pub built_for: String,
    /// Target-absolute path of the installed file (`/lib/modules/K/extra/NAME/FILE`).
    pub path: PathBuf,
}

/// What a ledger holds for a driver: today's shape, or format 1's single file.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub enum ModuleRecordOnDisk {
    Builds {
        name: String,
        root_critical: bool,
        builds: Vec<Build>,
    },
    Single {
        name: String,
        sha256: String,
        origin: String,
        built_for: String,
        path: PathBuf,
        root_critical: bool,
    },
}

impl From<ModuleRecordOnDisk> for ModuleRecord {
    fn from(on_disk: ModuleRecordOnDisk) -> ModuleRecord {
        match on_disk {
            ModuleRecordOnDisk::Builds { name, root_critical, builds } => {
                ModuleRecord { name, root_critical, builds }
            }
            ModuleRecordOnDisk::Single { name, sha256, origin, built_for, path, root_critical } => {
                let build = Build { sha256, version: None, origin, built_for, path };
                ModuleRecord { name, root_critical, builds: vec![build] }
            }
        }
    }
}

impl Ledger {
    /// Add the builds of `new` to its driver (creating it). A build at the path of one
    /// already kept replaces it (the file is overwritten), as does the same file again;
    /// either way the added build counts as installed last. Root-critical stays set
    /// once any install said so.
    pub fn add_builds(&mut self, new: &ModuleRecord) {
        let record = self.modules.entry(new.name.clone()).or_insert_with(|| ModuleRecord {
            name: new.name.clone(),
            root_critical: false,
            builds: Vec::new(),
        });
        record.root_critical |= new.root_critical;
        for b in &new.builds {
            record.builds.retain(|old| old.path != b.path && old.sha256 != b.sha256);
            record.builds.push(b.clone());
        }
    }
}

impl ModuleRecord {
    /// The build with this sha256.
    pub fn build(&self, sha256: &str) -> Option<&Build> {
        self.builds.iter().find(|b| b.sha256 == sha256)
    }

    /// The build a kernel's entry is about (format-1 entries name none: the one build).
    pub fn build_on(&self, on: &ModuleOnKernel) -> Option<&Build> {
        match &on.build {
            Some(sha) => self.build(sha),
            None if self.builds.len() == 1 => self.builds.first(),
            None => None,
        }
    }
}

impl Build {
    /// How the build is named to a person: version and kernel it was built for.
    pub fn label(&self) -> String {
        format!(
            "{} (built for {}, sha256 {})",
            self.version.as_deref().unwrap_or("without version"),
            self.built_for,
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

/// Where a module stands on one kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Installed in this kernel's own `extra/` (it was built for it).
    Own,
    /// Linked into `weak-updates/` (compatible with this kernel).
    WeakUpdates,
    /// Not placed: the prebuilt module is incompatible, but a locally built module of
    /// the same name (akmods/DKMS, `extra/` or `updates/`) is compatible and is used.
    LocalFallback,
    /// Not placed: incompatible and no usable fallback.
    Refused,
}

/// One module on one kernel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModuleOnKernel {
    pub compatible: bool,
    /// The verdict's refusals, first one first (what the kernel would print).
    pub reasons: Vec<String>,
    pub placement: Placement,
    /// The weak-updates link (target-absolute) when [`Placement::WeakUpdates`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBuf>,
    /// The local module used instead (target-absolute) when [`Placement::LocalFallback`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<PathBuf>,
    /// sha256 of the build this entry is about: the one serving the kernel, or, when
    /// none is usable, the newest (whose reasons are given). `None` in format-1
    /// ledgers, which had one build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Builds newer than the one serving the kernel that were not taken, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<PassedOver>,
}

/// A newer build a kernel does not use.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PassedOver {
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub built_for: String,
    /// The check's first refusal, or why a usable one was not taken.
    pub why: String,
}

impl PassedOver {
    /// How a passed-over build is named to a person, with the reason.
    pub fn label(&self) -> String {
        let version = self.version.as_deref().unwrap_or("without version");
        format!("{version} (built for {}): {}", self.built_for, self.why)
    }
}

/// How an initramfs image gets the drivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageMethod {
    /// bootkmod adds them to the existing image (`operations::inject`), the default.
    #[default]
    Inject,
    /// The target's own dracut rebuilds the image; its `90bootkmod` module carries them.
    Regenerate,
}

/// The initramfs image of one kernel, as bootkmod last left it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// Target-absolute path of the image.
    pub path: PathBuf,
    /// sha256 of the image as bootkmod last saw or wrote it.
    pub sha256: String,
    /// Did bootkmod put the modules into it?
    pub updated: bool,
    /// How, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ImageMethod>,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Host-independent (target-absolute) path of the pre-bootkmod copy, if one was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
}

/// One kernel.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelRecord {
    pub modules: BTreeMap<String, ModuleOnKernel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRecord>,
    /// The last run could not finish this kernel (the other kernels went on): the step
    /// and the reason. `modules` and `image` are then what was known before that run.
    /// Cleared by the run that completes the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// An operation that was started and has not yet finished.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Journal {
    /// Install these modules (their bytes are in the store), then refresh every kernel.
    Install {
        modules: Vec<ModuleRecord>,
        #[serde(default)]
        images: ImageMethod,
    },
    /// Take these modules out of every kernel and image, then forget them.
    Remove { names: Vec<String> },
    /// Take these builds out (their files and links), forget them, and choose again
    /// per kernel among the builds left.
    RemoveBuilds { builds: Vec<BuildRef> },
    /// Re-evaluate the ledger's modules for these kernels (all when empty).
    Refresh {
        kernels: Vec<String>,
        #[serde(default)]
        images: ImageMethod,
    },
    /// Drop bootkmod's traces for a kernel being removed (kernel-install remove).
    ForgetKernel { release: String },
}

impl Journal {
    /// What the operation is, in words ("install of bkram").
    pub fn describe(&self) -> String {
        match self {
            Journal::Install { modules, .. } => format!(
                "install of {}",
                modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Journal::Remove { names } => format!("remove of {}", names.join(", ")),
            Journal::RemoveBuilds { builds } => {
                format!("remove of build(s) {}", BuildRef::describe(builds))
            }
            Journal::Refresh { kernels, .. } if kernels.is_empty() => "refresh".to_string(),
            Journal::Refresh { kernels, .. } => format!("refresh of {}", kernels.join(", ")),
            Journal::ForgetKernel { release } => format!("removal of kernel {release}"),
        }
    }

    /// The command that runs this operation again (to complete it once the cause of a
    /// failure is fixed).
    pub fn next_command(&self) -> String {
        match self {
            Journal::Install { modules, images } => format!(
                "bootkmod install{}{} {}",
                if modules.iter().any(|m| m.root_critical) { " --root-critical" } else { "" },
                if *images == ImageMethod::Regenerate { " --regenerate" } else { "" },
                modules
                    .iter()
                    .flat_map(|m| m.builds.iter().map(|b| b.origin.as_str()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Journal::Remove { names } => format!("bootkmod remove {}", names.join(" ")),
            Journal::RemoveBuilds { builds } => builds
                .iter()
                .map(|b| format!("bootkmod remove {} --sha256 {}", b.name, b.sha256))
                .collect::<Vec<_>>()
                .join("; "),
            Journal::Refresh { kernels, .. } => {
                let kvers: String = kernels.iter().map(|k| format!(" --kver {k}")).collect();
                format!("bootkmod install --refresh{kvers}")
            }
            Journal::ForgetKernel { release } => format!("bootkmod remove --kernel {release}"),
        }
    }

    /// Does completing `self` also complete `failed` (so its failure record can go)?
    pub fn covers(&self, failed: &Journal) -> bool {
        let subset = |a: &[String], b: &[String]| a.iter().all(|x| b.contains(x));
        let names = |m: &[ModuleRecord]| m.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        match (self, failed) {
            (Journal::Install { modules: d, .. }, Journal::Install { modules: f, .. }) => {
                subset(&names(f), &names(d))
            }
            // An install refreshes every kernel.
            (Journal::Install { .. }, Journal::Refresh { .. }) => true,
            (Journal::Refresh { kernels: d, .. }, Journal::Refresh { kernels: f, .. }) => {
                d.is_empty() || (!f.is_empty() && subset(f, d))
            }
            // Backing out what failed to install, or to be removed, ends it.
            (Journal::Remove { names: d }, Journal::Install { modules: f, .. }) => {
                subset(&names(f), d)
            }
            (Journal::Remove { names: d }, Journal::Remove { names: f }) => subset(f, d),
            (Journal::RemoveBuilds { builds: d }, Journal::RemoveBuilds { builds: f }) => {
                f.iter().all(|b| d.contains(b))
            }
            // Removing a whole driver ends the removal of some of its builds.
            (Journal::Remove { names: d }, Journal::RemoveBuilds { builds: f }) => {
                f.iter().all(|b| d.contains(&b.name))
            }
            // A remove refreshes what remains on every kernel.
            (Journal::Remove { .. } | Journal::RemoveBuilds { .. }, Journal::Refresh { .. }) => {
                true
            }
            (Journal::ForgetKernel { release: d }, Journal::ForgetKernel { release: f }) => d == f,
            _ => false,
        }
    }
}

/// One build of one driver, by sha256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildRef {
    pub name: String,
    pub sha256: String,
}

impl BuildRef {
    fn describe(refs: &[BuildRef]) -> String {
        refs.iter()
            .map(|b| format!("{} {}", b.name, &b.sha256[..12.min(b.sha256.len())]))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Has bootkmod installed anything under `root` (does its ledger exist, resolved inside
/// the root)?
pub fn exists(root: &Root) -> Result<bool> {
    Ok(root.host(Path::new(STATE_DIR).join(LEDGER_FILE))?.is_file())
}

/// Read the ledger under `root` (an empty one when bootkmod never ran there).
pub fn load(root: &Root) -> Result<Ledger> {
    let path = root.host(Path::new(STATE_DIR).join(LEDGER_FILE))?;
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Ledger { version: FORMAT_VERSION, ..Ledger::default() })
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let mut ledger: Ledger = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a bootkmod ledger", path.display()))?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&ledger.version) {
        bail!(
            "{}: ledger format {} is not one this bootkmod reads ({OLDEST_READABLE_VERSION} to {FORMAT_VERSION})",
            path.display(),
            ledger.version
        );
    }
    // Migrated on read (ModuleRecordOnDisk); the next save writes the current format.
    ledger.version = FORMAT_VERSION;
    Ok(ledger)
}

/// Target-absolute path of a module's stored copy.
pub fn store_path(sha256: &str) -> PathBuf {
    Path::new(STATE_DIR).join("store").join(format!("{sha256}.ko"))
}

/// The weak-updates link (target-absolute) that offers `module` (target-absolute, in
/// some kernel's `extra/`) to kernel `release`, as RHEL's weak-modules lays it out:
/// `/lib/modules/J/weak-updates/SUB -> /lib/modules/K/extra/SUB`.
pub fn weak_link_path(module: &Path, release: &str) -> Result<PathBuf> {
    let mut parts = module.strip_prefix("/lib/modules").ok().map(|p| p.components());
    let below_extra = parts.as_mut().and_then(|parts| {
        parts.next()?;
        (parts.next()?.as_os_str() == "extra").then(|| parts.as_path().to_path_buf())
    });
    match below_extra {
        Some(sub) if !sub.as_os_str().is_empty() => {
            Ok(Path::new("/lib/modules").join(release).join("weak-updates").join(sub))
        }
        _ => bail!("{}: not a module under /lib/modules/KVER/extra/", module.display()),
    }
}

/// Does `link` exist under `root` and point at `module`?
pub fn is_linked(root: &Root, link: &Path, module: &Path) -> bool {
    root.read_link(link).is_ok_and(|t| t == module)
}

/// Target-absolute path of the initramfs a driver for `release` goes into: the one
/// owner is `model::boot_images` (boot entries, kernel-install's layout, the
/// distribution's names).
pub fn find_image(root: &Root, release: &str) -> Option<PathBuf> {
    crate::model::boot_images::primary(root, release)
}

/// Where the distribution under `root` puts the initramfs of `release` when there is
/// none yet: Debian and its derivatives (`ID`/`ID_LIKE` in os-release name debian)
/// `/boot/initrd.img-KVER`, everyone else (Fedora, RHEL, SUSE) `/boot/initramfs-KVER.img`.
pub fn default_image(root: &Root, release: &str) -> PathBuf {
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.host(p).ok()?).ok())
        .unwrap_or_default();
    let debian_like = os_release.lines().any(|l| {
        let (key, value) = l.split_once('=').unwrap_or_default();
        matches!(key, "ID" | "ID_LIKE")
            && value.trim_matches('"').split_whitespace().any(|id| id == "debian")
    });
    if debian_like {
        PathBuf::from(format!("/boot/initrd.img-{release}"))
    } else {
        PathBuf::from(format!("/boot/initramfs-{release}.img"))
    }
}

impl ModuleOnKernel {
    /// Will the kernel's tree give a working module of this name at boot?
    pub fn usable_on_boot(&self) -> bool {
        match self.placement {
            Placement::Own | Placement::WeakUpdates => self.compatible,
            Placement::LocalFallback => true,
            Placement::Refused => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_1_ledger_loads_as_one_build_per_driver() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(t.path().join("var/lib/bootkmod")).unwrap();
        let old = r#"{"version":1,
          "modules":{"bkram":{"name":"bkram","sha256":"ab12","origin":"/tmp/bkram.ko",
            "built_for":"6.1.0-57-amd64","path":"/lib/modules/6.1.0-57-amd64/extra/bkram/bkram.ko",
            "root_critical":true}},
          "kernels":{"6.1.0-57-amd64":{"modules":{"bkram":{"compatible":true,"reasons":[],
            "placement":"own"}}}},
          "journal":{"op":"install","modules":[{"name":"bkram","sha256":"ab12",
            "origin":"/tmp/bkram.ko","built_for":"6.1.0-57-amd64",
            "path":"/lib/modules/6.1.0-57-amd64/extra/bkram/bkram.ko","root_critical":true}]}}"#;
        std::fs::write(t.path().join("var/lib/bootkmod").join(LEDGER_FILE), old).unwrap();
        let ledger = load(&root).unwrap();
        assert_eq!(ledger.version, FORMAT_VERSION);
        let m = &ledger.modules["bkram"];
        assert!(m.root_critical);
        assert_eq!(m.builds.len(), 1);
        assert_eq!(m.builds[0].built_for, "6.1.0-57-amd64");
        assert_eq!(m.builds[0].version, None);
        // A format-1 kernel entry names no build: it is the driver's one build.
        let on = &ledger.kernels["6.1.0-57-amd64"].modules["bkram"];
        assert_eq!(m.build_on(on).unwrap().sha256, "ab12");
        let Some(Journal::Install { modules, .. }) = &ledger.journal else { panic!() };
        assert_eq!(modules[0].builds[0].sha256, "ab12");
        // Written back in the current shape, it reads the same.
        let again: Ledger = serde_json::from_slice(&serde_json::to_vec(&ledger).unwrap()).unwrap();
        assert_eq!(again, ledger);
        // A format this bootkmod does not know is refused.
        std::fs::write(
            t.path().join("var/lib/bootkmod").join(LEDGER_FILE),
            r#"{"version":9,"modules":{},"kernels":{}}"#,
        )
        .unwrap();
        assert!(format!("{:#}", load(&root).unwrap_err()).contains("ledger format 9"));
    }

    #[test]
    fn adding_a_build_keeps_the_others_and_replaces_one_at_the_same_path() {
        let build = |sha: &str, k: &str| Build {
            sha256: sha.into(),
            version: None,
            origin: String::new(),
            built_for: k.into(),
            path: PathBuf::from(format!("/lib/modules/{k}/extra/d/d.ko")),
        };
        let record = |b: Build, critical| ModuleRecord {
            name: "d".into(),
            root_critical: critical,
            builds: vec![b],
        };
        let mut ledger = Ledger::default();
        ledger.add_builds(&record(build("a", "k1"), true));
        ledger.add_builds(&record(build("b", "k2"), false));
        assert_eq!(ledger.modules["d"].builds.len(), 2);
        assert!(ledger.modules["d"].root_critical, "an install without the flag keeps it");
        ledger.add_builds(&record(build("c", "k1"), false));
        let shas: Vec<&str> =
            ledger.modules["d"].builds.iter().map(|b| b.sha256.as_str()).collect();
        assert_eq!(shas, ["b", "c"], "same path: the new file replaces the old build");
    }

    #[test]
    fn a_new_image_is_named_as_the_distribution_names_it() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let k = "6.1.0-57-amd64";
        // No os-release at all: dracut's own default name.
        assert_eq!(default_image(&root, k), Path::new("/boot/initramfs-6.1.0-57-amd64.img"));
        std::fs::create_dir_all(root.host_entry("/usr/lib").unwrap()).unwrap();
        std::fs::create_dir_all(root.host_entry("/etc").unwrap()).unwrap();
        // Debian links /etc/os-release into /usr/lib; the link resolves inside the root.
        std::fs::write(
            root.host_entry("/usr/lib/os-release").unwrap(),
            "ID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../usr/lib/os-release",
            root.host_entry("/etc/os-release").unwrap(),
        )
        .unwrap();
        assert_eq!(default_image(&root, k), Path::new("/boot/initrd.img-6.1.0-57-amd64"));
        std::fs::write(
            root.host_entry("/usr/lib/os-release").unwrap(),
            "ID=ubuntu\nID_LIKE=debian\n",
        )
        .unwrap();
        assert_eq!(default_image(&root, k), Path::new("/boot/initrd.img-6.1.0-57-amd64"));
        std::fs::write(
            root.host_entry("/usr/lib/os-release").unwrap(),
            "ID=\"rhel\"\nID_LIKE=\"fedora\"\n",
        )
        .unwrap();
        assert_eq!(default_image(&root, k), Path::new("/boot/initramfs-6.1.0-57-amd64.img"));
        // An existing image wins over the default name.
        std::fs::create_dir_all(root.host_entry("/boot").unwrap()).unwrap();
        std::fs::write(root.host_entry("/boot/initrd.img-6.1.0-57-amd64").unwrap(), b"x").unwrap();
        assert_eq!(find_image(&root, k).unwrap(), Path::new("/boot/initrd.img-6.1.0-57-amd64"));
    }
}
