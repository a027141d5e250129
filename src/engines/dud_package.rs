//! The kmod package of a Driver Update Disk, computed from modules: what `dud build`
//! will write, before anything is written.
//!
//! Flow: module files read as [`Module`]s → [`check_plausible`] refuses what cannot be
//! a driver for the target, and [`check_compatible`] (when a target kernel tree is
//! given) what its loader would refuse → [`split_builds`] groups them by the kernel
//! release they were built for (one build, one package) → [`plan_builds`] /
//! [`plan_package`] derive each package's identity, dependencies, payload paths and
//! scriptlets. [`crate::operations::dud`] turns the plans into RPM, directory and ISO
//! bytes.
//!
//! The rules (DESIGN.md §3, "Driver Update Disk"):
//! - `Provides: kernel-modules >= <release>` with the vermagic release exactly as
//!   `uname -r` prints it: Anaconda compares the whole string with rpmvercmp, so an
//!   extra `.<arch>` makes the exact kernel compare lower and be refused.
//! - `Provides: kmod(<name>.ko)` per module; kABI `Requires: kernel(<sym>) = <crc>` only
//!   on request (dnf must satisfy them on the target).
//! - Payload under `lib/modules/<kver>/extra/<name>/` as plain `.ko` (RHEL 8's extractor
//!   takes nothing else reliably), no symlinks; firmware under `lib/firmware/`;
//!   a `depmod.d` override so the driver wins over an in-tree module of the same name.
//! - Several builds of a driver (modules built for different kernel releases) make one
//!   package each, named `kmod-<name>-<release>` so that every name is distinct:
//!   Anaconda lists the *names* of the packages it took for dnf to install on the
//!   target (`dracut/driver_updates.py`, `extract_drivers`; read by pyanaconda's
//!   `collect_driver_disk_requirements`), and under one shared name dnf would install
//!   only the highest version, whichever build the installer took.
//! - `--with-bootkmod`: [`plan_installer_package`] adds `bootkmod-installer`, an
//!   installer enhancement (`Provides: installer-enhancement >= 19.0`, Anaconda's fixed
//!   version) carrying `/usr/bin/bootkmod`: Anaconda extracts it into `/updates`, which
//!   is overlaid on the installer's root, so `%pre`/`%post --nochroot` find `bootkmod` on
//!   PATH. Only module and firmware packages are installed on the target afterwards.
//! - Modules of several architectures make one set of packages per architecture, each
//!   under its own `rpms/<arch>/` of the disk.

use crate::engines::compat;
use crate::formats::compression::{self, Compression};
use crate::formats::dud::rpm_arch;
use crate::formats::elf::Endian;
use crate::formats::rpmvercmp::rpmvercmp;
use crate::model::kernel::Kernel;
use crate::model::module::Module;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A module file read for packaging: its facts and its plain ELF bytes.
#[derive(Debug, Clone)]
pub struct PackagedModule {
    pub module: Module,
    /// The uncompressed module (signature kept): what goes into the payload.
    pub elf: Vec<u8>,
}

/// A firmware file to ship with the driver.
#[derive(Debug, Clone)]
pub struct FirmwareFile {
    pub path: PathBuf,
    pub content: Vec<u8>,
}

/// Options of a package build that do not come from the modules.
#[derive(Debug, Clone, Default)]
pub struct PackageOptions {
    /// Package name without the `kmod-` prefix (default: the first module's name).
    pub name: Option<String>,
    /// Package version (default: the first module's `version=`).
    pub version: Option<String>,
    pub release: String,
    /// Target architecture (`uname -m`); modules for another machine are refused.
    pub arch: Option<String>,
    pub kabi_requires: bool,
    /// Appended to the package name (`kmod-<name>-<suffix>`) when the disk holds several
    /// builds of the driver ([`plan_builds`] sets it); `None` for a single build.
    pub name_suffix: Option<String>,
}

/// One dependency as rpm prints it: `name op version`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dep {
    pub name: String,
    /// `>=`, `=`, or empty for an unversioned dependency.
    pub op: String,
    pub version: String,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.op.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} {} {}", self.name, self.op, self.version)
        }
    }
}

/// A payload file of the package (absolute path inside the target system).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayloadFile {
    pub path: String,
    pub mode: u16,
    pub size: usize,
    #[serde(skip)]
    pub content: Vec<u8>,
}

/// Everything the package will be.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackagePlan {
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// The kernel the modules were built for, as `uname -r` prints it.
    pub kernel_release: String,
    pub license: String,
    pub summary: String,
    pub description: String,
    pub provides: Vec<Dep>,
    pub requires: Vec<Dep>,
    pub files: Vec<PayloadFile>,
    pub post_install: String,
    pub post_uninstall: String,
    /// Things that build but may bite later (shown by the CLI).
    pub warnings: Vec<String>,
}

impl PackagePlan {
    /// `name-version-release.arch.rpm`, rpm's own file name for the package.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.{}.rpm", self.name, self.version, self.release, self.arch)
    }
}

/// Read module files for packaging; errors name the file.
pub fn read_modules(paths: &[PathBuf]) -> Result<Vec<PackagedModule>> {
    paths
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let module = Module::from_bytes(&bytes, Default::default())
                .with_context(|| format!("{}: not a readable kernel module", path.display()))?;
            let elf = match module.compression {
                Compression::None => bytes,
                _ => compression::decode_all(&bytes, compression::MAX_DECODED_MODULE)
                    .with_context(|| format!("{}", path.display()))?
                    .into_owned(),
            };
            let module = Module { path: Some(path.clone()), ..module };
            Ok(PackagedModule { module, elf })
        })
        .collect()
}

/// Refuse a module that cannot be a driver for the target: no vermagic, or built for
/// another architecture than `arch`.
pub fn check_plausible(module: &Module, arch: Option<&str>) -> Result<()> {
    let file = module.path.as_deref().unwrap_or(Path::new("<module>")).display().to_string();
    let Some(vermagic) = module.vermagic().filter(|v| !v.trim().is_empty()) else {
        bail!("{file}: no vermagic in .modinfo; not a module built for a kernel");
    };
    let own = rpm_arch(module.machine, module.endian == Endian::Big);
    if let Some(want) = arch {
        if own != Some(want) {
            bail!(
                "{file}: built for {} ({}), not for --arch {want}",
                own.unwrap_or("an unknown architecture"),
                module.machine_name()
            );
        }
    } else if own.is_none() {
        bail!("{file}: unknown architecture {}; pass --arch", module.machine_name());
    }
    let _ = vermagic;
    Ok(())
}

/// The single place where the full compatibility verdict (`engines::compat`, the loader's
/// rules) refuses modules, when a target kernel was given (`dud build --check-root`):
/// every module of the set must load on it.
pub fn check_compatible(modules: &[PackagedModule], target: &Kernel) -> Result<()> {
    let set: Vec<Module> = modules.iter().map(|m| m.module.clone()).collect();
    for verdict in compat::check_set(target, &set) {
        if !verdict.compatible {
            let why = verdict.first_refusal().map(|r| r.message.clone()).unwrap_or_default();
            let file = verdict.path.as_deref().map(|p| p.display().to_string());
            bail!(
                "{}: would not load on kernel {}: {why}",
                file.unwrap_or(verdict.module),
                verdict.kernel
            );
        }
    }
    Ok(())
}

/// The vermagic release (`uname -r` of the kernel the module was built for).
fn kernel_release(module: &Module) -> Option<&str> {
    module.vermagic()?.split_whitespace().next()
}

/// The modules built for one kernel release: one package on the disk.
#[derive(Debug, Clone)]
pub struct Build {
    /// The vermagic release the modules were built for, as `uname -r` prints it.
    pub kernel_release: String,
    /// In the order given.
    pub modules: Vec<PackagedModule>,
}

/// Group modules into builds, one per vermagic release, oldest release first under
/// rpmvercmp (the order Anaconda's `kernel-modules >=` test ranks them in). Implausible
/// modules are refused ([`check_plausible`]), and so is a module name given twice for one
/// release, naming both files: one package cannot carry two files of one name.
pub fn split_builds(modules: Vec<PackagedModule>, arch: Option<&str>) -> Result<Vec<Build>> {
    if modules.is_empty() {
        bail!("no modules given");
    }
    let mut builds: Vec<Build> = Vec::new();
    for m in modules {
        check_plausible(&m.module, arch)?;
        let release = kernel_release(&m.module).unwrap_or_default().to_string();
        let index = match builds.iter().position(|b| b.kernel_release == release) {
            Some(i) => i,
            None => {
                builds.push(Build { kernel_release: release.clone(), modules: Vec::new() });
                builds.len() - 1
            }
        };
        let build = &mut builds[index];
        let name = m.module.name();
        if let Some(other) = build.modules.iter().find(|o| o.module.name() == name) {
            bail!(
                "{}: module {name} built for kernel {release} is given twice (also {}); a disk \
                 carries one build of a module per kernel release",
                display(&m.module),
                display(&other.module)
            );
        }
        build.modules.push(m);
    }
    builds.sort_by(|a, b| rpmvercmp(&a.kernel_release, &b.kernel_release));
    Ok(builds)
}

/// Plan one package per build. A single build is exactly [`plan_package`]. Several
/// builds share the package name's base (`--name`, else the oldest build's first module)
/// and each gets its kernel release as a name suffix (`-` turned into `_`), so names,
/// files and repo entries never collide; each keeps its own `kernel-modules >=` release.
/// `targets[i]`, when given, is the kernel build `i` must load on.
pub fn plan_builds(
    builds: &[Build],
    firmware: &[FirmwareFile],
    opts: &PackageOptions,
    targets: &[Option<Kernel>],
) -> Result<Vec<PackagePlan>> {
    let target = |i: usize| targets.get(i).and_then(Option::as_ref);
    let (first, several) = match builds {
        [] => bail!("no modules given"),
        [only] => return Ok(vec![plan_package(&only.modules, firmware, opts, target(0))?]),
        [first, ..] => (first, builds),
    };
    let base = match &opts.name {
        Some(n) => n.clone(),
        None => first.modules.first().map(|m| m.module.name()).unwrap_or_default(),
    };
    let mut plans = Vec::with_capacity(several.len());
    for (i, build) in several.iter().enumerate() {
        let release = &build.kernel_release;
        if !release.chars().all(|c| c.is_ascii_alphanumeric() || "._+~^-".contains(c)) {
            bail!("kernel release {release:?} cannot be part of an rpm package name");
        }
        let opts = PackageOptions {
            name: Some(base.clone()),
            name_suffix: Some(release.replace('-', "_")),
            ..opts.clone()
        };
        plans.push(plan_package(&build.modules, firmware, &opts, target(i))?);
    }
    if let Some(other) = plans.iter().find(|p| p.arch != plans[0].arch) {
        bail!(
            "builds for {} and {}: one disk per architecture (pass --arch to see which)",
            plans[0].arch,
            other.arch
        );
    }
    let mut file_names = BTreeSet::new();
    for plan in &plans {
        if !file_names.insert(plan.file_name()) {
            bail!("two builds would both be written as {}", plan.file_name());
        }
    }
    // Anaconda takes every package whose `kernel-modules >=` holds: from the second
    // oldest release of a module on, a kernel takes several builds of it.
    let mut releases_of: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for build in several {
        for m in &build.modules {
            releases_of.entry(m.module.name()).or_default().push(&build.kernel_release);
        }
    }
    let mut warnings = Vec::new();
    for (module, releases) in &releases_of {
        if let [_, second, ..] = releases.as_slice() {
            warnings.push(format!(
                "module {module} has builds for {}: a kernel at or above {second} satisfies the \
                 kernel-modules Provides of more than one, Anaconda then takes them all, and \
                 which copy it loads follows directory order, not version (see `bootkmod dud \
                 inspect`)",
                releases.join(", ")
            ));
        }
    }
    if let Some(last) = plans.last_mut() {
        last.warnings.extend(warnings);
    }
    Ok(plans)
}

/// Name of the package that carries bootkmod itself into the installer.
pub const INSTALLER_PACKAGE: &str = "bootkmod-installer";

/// The installer-enhancement package for one bootkmod program (`binary`, an ELF
/// executable: its machine is the package's architecture). Version and release are
/// this bootkmod's (`CARGO_PKG_VERSION`) and the disk's `--release`.
pub fn plan_installer_package(binary: &[u8], version: &str, release: &str) -> Result<PackagePlan> {
    let (machine, endian) = crate::formats::elf::program_machine(binary)?;
    let Some(arch) = rpm_arch(machine, endian == Endian::Big) else {
        bail!("ELF machine {machine} is not an architecture a driver disk knows");
    };
    Ok(PackagePlan {
        name: INSTALLER_PACKAGE.into(),
        version: version.replace('-', "_"),
        release: release.to_string(),
        arch: arch.to_string(),
        kernel_release: String::new(),
        license: "MIT OR Apache-2.0".into(),
        summary: "bootkmod in the installer environment".into(),
        description: "bootkmod for the installer: extracted from the driver disk into the \
                      installer's /usr/bin, for kickstart %pre and %post --nochroot scripts."
            .into(),
        provides: vec![Dep {
            name: crate::formats::dud::INSTALLER_ENHANCEMENT.into(),
            op: ">=".into(),
            version: crate::formats::dud::ANACONDA_DD_VERSION.into(),
        }],
        requires: Vec::new(),
        files: vec![PayloadFile {
            path: "/usr/bin/bootkmod".into(),
            mode: 0o755,
            size: binary.len(),
            content: binary.to_vec(),
        }],
        post_install: String::new(),
        post_uninstall: String::new(),
        warnings: Vec::new(),
    })
}

/// Derive the package from plausible modules.
pub fn plan_package(
    modules: &[PackagedModule],
    firmware: &[FirmwareFile],
    opts: &PackageOptions,
    target: Option<&Kernel>,
) -> Result<PackagePlan> {
    let Some(first) = modules.first() else { bail!("no modules given") };
    for m in modules {
        check_plausible(&m.module, opts.arch.as_deref())?;
    }
    if let Some(target) = target {
        check_compatible(modules, target)?;
    }
    let kernel = kernel_release(&first.module).unwrap_or_default().to_string();
    for m in modules {
        let other = kernel_release(&m.module).unwrap_or_default();
        if other != kernel {
            bail!(
                "{}: built for kernel {other}, but {} is built for {kernel}; one package holds \
                 modules for one kernel",
                display(&m.module),
                display(&first.module)
            );
        }
    }
    let arch = match &opts.arch {
        Some(a) => a.clone(),
        None => rpm_arch(first.module.machine, first.module.endian == Endian::Big)
            .unwrap_or_default()
            .to_string(),
    };
    let base = opts.name.clone().unwrap_or_else(|| first.module.name());
    if base.is_empty() || !base.chars().all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c)) {
        bail!("package name {base:?} is not usable; pass --name with letters, digits, _ - + .");
    }
    let version = match (&opts.version, first.module.modinfo.get("version")) {
        (Some(v), _) => v.clone(),
        // rpm forbids '-' in a version; kmodtool's convention turns it into '_'.
        (None, Some(v)) if !v.is_empty() => v.replace('-', "_"),
        _ => bail!("{} has no version= in .modinfo; pass --version", display(&first.module)),
    };
    for (what, v) in [("version", &version), ("release", &opts.release)] {
        if v.is_empty() || v.contains('-') || v.chars().any(|c| c.is_whitespace()) {
            bail!("package {what} {v:?} cannot contain '-' or spaces (rpm's rule); pass --{what}");
        }
    }

    let package_name = match &opts.name_suffix {
        Some(suffix) => format!("kmod-{base}-{suffix}"),
        None => format!("kmod-{base}"),
    };
    let extra_dir = format!("/lib/modules/{kernel}/extra/{base}");
    let mut files = Vec::new();
    let mut provides = vec![Dep {
        name: crate::formats::dud::KERNEL_MODULES.into(),
        op: ">=".into(),
        version: kernel.clone(),
    }];
    let mut seen = BTreeSet::new();
    for m in modules {
        let name = m.module.name();
        if !seen.insert(name.clone()) {
            bail!("module {name} given twice");
        }
        files.push(PayloadFile {
            path: format!("{extra_dir}/{name}.ko"),
            mode: 0o644,
            size: m.elf.len(),
            content: m.elf.clone(),
        });
        provides.push(Dep {
            name: format!("kmod({name}.ko)"),
            op: String::new(),
            version: "".into(),
        });
    }

    // Firmware keeps the sub-directory a module asks for (`firmware=vendor/fw.bin`).
    let wanted: Vec<String> = modules
        .iter()
        .flat_map(|m| m.module.modinfo.values("firmware").map(str::to_string).collect::<Vec<_>>())
        .collect();
    for fw in firmware {
        let file_name = fw.path.file_name().map(|f| f.to_string_lossy().into_owned());
        let Some(file_name) = file_name else { bail!("{}: not a file", fw.path.display()) };
        let rel = wanted
            .iter()
            .find(|w| w.rsplit('/').next() == Some(file_name.as_str()))
            .cloned()
            .unwrap_or(file_name);
        if !crate::formats::dud::safe_relative(&rel) {
            bail!("firmware name {rel:?} would leave /lib/firmware");
        }
        files.push(PayloadFile {
            path: format!("/lib/firmware/{rel}"),
            mode: 0o644,
            size: fw.content.len(),
            content: fw.content.clone(),
        });
    }

    let mut override_conf =
        String::from("# Installed by bootkmod: this package's modules win over in-tree copies.\n");
    for m in modules {
        let name = m.module.name();
        override_conf.push_str(&format!("override {name} * extra/{base}\n"));
        override_conf.push_str(&format!("override {name} * weak-updates/{base}\n"));
    }
    files.push(PayloadFile {
        // Named after the package: two builds installed side by side on the target must
        // not both own one path with different contents (rpm refuses the transaction).
        path: format!("/etc/depmod.d/{package_name}.conf"),
        mode: 0o644,
        size: override_conf.len(),
        content: override_conf.into_bytes(),
    });

    let mut requires = Vec::new();
    if opts.kabi_requires {
        let internal: BTreeSet<&str> =
            modules.iter().flat_map(|m| m.module.exports.iter().map(|e| e.name.as_str())).collect();
        let mut syms = BTreeSet::new();
        for m in modules {
            for v in &m.module.versions {
                if !internal.contains(v.symbol.as_str()) {
                    syms.insert((v.symbol.clone(), v.crc));
                }
            }
        }
        requires = syms
            .into_iter()
            .map(|(s, crc)| Dep {
                name: format!("kernel({s})"),
                op: "=".into(),
                version: format!("0x{crc:08x}"),
            })
            .collect();
    }

    let module_paths: Vec<String> =
        files.iter().filter(|f| f.path.ends_with(".ko")).map(|f| f.path.clone()).collect();
    let license = first.module.modinfo.get("license").unwrap_or("Proprietary").to_string();
    let description = first
        .module
        .modinfo
        .get("description")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{base} kernel module"));
    let mut warnings = Vec::new();
    if kernel.matches('-').count() > 1 {
        // rpm's EVR grammar allows one '-' (version-release): rpmbuild refuses such a
        // Provides, and dnf splits it at the last '-' when it compares.
        warnings.push(format!(
            "kernel release {kernel} has more than one '-': Anaconda compares it as a whole \
             and takes the package, but it is not a valid rpm version-release for rpmbuild or dnf"
        ));
    }
    Ok(PackagePlan {
        warnings,
        name: package_name,
        version,
        release: opts.release.clone(),
        arch,
        license,
        summary: format!("{base} kernel module(s) for {kernel}"),
        description: format!("{description}\nBuilt for kernel {kernel} by bootkmod."),
        provides,
        requires,
        post_install: post_install(&kernel, &module_paths),
        post_uninstall: post_uninstall(&kernel, &module_paths),
        kernel_release: kernel,
        files,
    })
}

fn display(m: &Module) -> String {
    m.path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| m.name())
}

/// `%post`: link the modules into every compatible kernel's weak-updates and rebuild
/// the initramfs (RHEL's weak-modules does both); without it, refresh the indexes of
/// the target kernel and rebuild its initramfs with dracut.
fn post_install(kernel: &str, modules: &[String]) -> String {
    let fallback = "    # bootkmod's own install step plugs in here once it ships on the target.\n";
    weak_modules_or_reindex("", "--add-modules", fallback, kernel, modules)
}

/// `%postun`: on erase (`$1` = 0), unlink from weak-updates and rebuild, or re-index.
fn post_uninstall(kernel: &str, modules: &[String]) -> String {
    weak_modules_or_reindex("[ \"$1\" = 0 ] || exit 0\n", "--remove-modules", "", kernel, modules)
}

/// The body both scriptlets share: `weak-modules FLAG` where RHEL's weak-modules is
/// installed, else depmod and dracut for `kernel`. `guard` comes first, `note` opens
/// the fallback branch.
fn weak_modules_or_reindex(
    guard: &str,
    flag: &str,
    note: &str,
    kernel: &str,
    modules: &[String],
) -> String {
    format!(
        r#"{guard}modules="{list}"
if [ -x /usr/sbin/weak-modules ]; then
    printf '%s\n' $modules | /usr/sbin/weak-modules {flag}
else
{note}    depmod -a {kernel} || :
    if [ -e /boot/vmlinuz-{kernel} ] && command -v dracut >/dev/null 2>&1; then
        dracut -f --kver {kernel} || :
    fi
fi
exit 0
"#,
        list = modules.join(" ")
    )
}
