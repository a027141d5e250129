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
pub const FORMAT_VERSION: u32 = 1;

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

/// One installed module.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModuleRecord {
    pub name: String,
    /// sha256 of the file as installed (and as kept in the store).
    pub sha256: String,
    /// Where the admin's file came from (host path as given on the command line).
    pub origin: String,
    /// The release the module was built for (from its vermagic).
    pub built_for: String,
    /// Target-absolute path of the installed file (`/lib/modules/K/extra/NAME/FILE`).
    pub path: PathBuf,
    /// Needed to mount the root filesystem: a kernel without it is at risk.
    pub root_critical: bool,
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
                modules.iter().map(|m| m.origin.as_str()).collect::<Vec<_>>().join(" ")
            ),
            Journal::Remove { names } => format!("bootkmod remove {}", names.join(" ")),
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
            // A remove refreshes what remains on every kernel.
            (Journal::Remove { .. }, Journal::Refresh { .. }) => true,
            (Journal::ForgetKernel { release: d }, Journal::ForgetKernel { release: f }) => d == f,
            _ => false,
        }
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
    let ledger: Ledger = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a bootkmod ledger", path.display()))?;
    if ledger.version != FORMAT_VERSION {
        bail!(
            "{}: ledger format {} is not the supported {FORMAT_VERSION}",
            path.display(),
            ledger.version
        );
    }
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

/// Target-absolute path of the kernel's initramfs, in Debian's then RHEL's naming.
pub fn find_image(root: &Root, release: &str) -> Option<PathBuf> {
    [format!("/boot/initrd.img-{release}"), format!("/boot/initramfs-{release}.img")]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| root.host(p).is_ok_and(|h| h.is_file()))
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
