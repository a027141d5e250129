//! What Anaconda would take from a Driver Update Disk for one kernel, and why not the
//! rest: the engine behind `dud inspect` and the plan `dud apply` carries out.
//!
//! Flow, as Anaconda's initramfs does it: repos on the [`Medium`] (a bare `.rpm` is its
//! own repo) → the packages in `rpms/<arch>/` → each package's versioned Provides
//! (`kernel-modules` against the kernel release, `installer-enhancement` against the
//! installer version) decide whether it is taken and what it may contribute → each
//! payload file is classed by the extractor's filter, and modules under `lib/modules/`
//! and firmware under `lib/firmware/` get their destination in the running system →
//! modules of one name carried by several packages (builds for several kernels) get a
//! verdict of their own ([`ModuleBuilds`]): Anaconda takes *every* package whose
//! Provides holds and never compares their versions (`dracut/driver_updates.py`:
//! `extract_drivers` extracts each into one directory, `grab_driver_files` copies each
//! module file to its `updates/` destination in directory-walk order, so a later copy
//! replaces an earlier one). Only a single taken build is a decided outcome.
//! Pure: RPMs are parsed from the bytes the model read.

use crate::formats::dud::{
    extract_class, installer_destination, module_name, normalise_payload_path, provide_matches,
    sense_operator, updates_destination, ExtractClass, PackageFlags, INSTALLER_ENHANCEMENT,
    KERNEL_MODULES,
};
use crate::model::dud::{Medium, MediumKind};

/// One payload file of a package and what happens to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileVerdict {
    pub path: String,
    /// How the extractor classes it; `None`: not extracted.
    pub class: Option<ExtractClass>,
    /// Where it lands in the running system (relative to `/`), for modules and firmware.
    pub destination: Option<String>,
    /// Why it is not used, when it is not.
    pub note: Option<String>,
    #[serde(skip)]
    pub content: Vec<u8>,
}

/// One package on the medium.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackageVerdict {
    pub path: String,
    pub name: String,
    pub nevra: String,
    pub taken: bool,
    pub flags: PackageFlags,
    /// The versioned Provides that decided, as rpm prints them, each with whether it held.
    pub provides: Vec<ProvideVerdict>,
    /// Why the package is not taken, or problems with what it carries.
    pub reasons: Vec<String>,
    /// Payload paths of the module files it carries, taken or not.
    pub module_files: Vec<String>,
    pub files: Vec<FileVerdict>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProvideVerdict {
    pub provide: String,
    pub holds: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RepoVerdict {
    pub dir: String,
    pub arches: Vec<String>,
    /// Why the repo offers nothing for the architecture, when it does not.
    pub note: Option<String>,
    pub packages: Vec<PackageVerdict>,
}

/// The whole answer for one medium, kernel and architecture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub source: String,
    pub kind: MediumKind,
    pub kernel: String,
    pub arch: String,
    pub repos: Vec<RepoVerdict>,
    /// Top-level `.iso` files, which Anaconda opens only when the medium has no repo.
    pub nested_isos: Vec<String>,
    /// Each module name that more than one package on the medium carries (several
    /// builds of a driver), and which build Anaconda ends up with for this kernel.
    pub module_builds: Vec<ModuleBuilds>,
}

/// One copy of the module a [`ModuleBuilds`] is about: a module file of a package.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOfModule {
    pub nevra: String,
    /// Path of the package on the medium.
    pub path: String,
    /// The module file's path in the package's payload.
    pub file: String,
    pub taken: bool,
    /// Its `kernel-modules` Provides as rpm prints them (`kernel-modules >= 5.14.0-...`).
    pub kernel_modules: Vec<String>,
    /// Where its copy of the module lands in the running system, when taken.
    pub destination: Option<String>,
}

/// Several builds of one module on the medium, and Anaconda's outcome for the kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleBuilds {
    pub module: String,
    /// Every copy on the medium (usually one per package), in the medium's order.
    pub builds: Vec<BuildOfModule>,
    /// The build whose copy Anaconda loads, when the rules decide it: the only one taken.
    pub loaded: Option<String>,
    /// More than one build is taken: which copy is loaded follows directory order, not
    /// version, so no build can be named.
    pub undecided: bool,
    pub why: String,
}

impl Inspection {
    /// Extracted files of taken packages that land somewhere (modules and firmware).
    pub fn taken_files(&self) -> impl Iterator<Item = &FileVerdict> {
        self.repos
            .iter()
            .flat_map(|r| &r.packages)
            .filter(|p| p.taken)
            .flat_map(|p| &p.files)
            .filter(|f| f.destination.is_some())
    }

    /// Does Anaconda take anything at all?
    pub fn takes_anything(&self) -> bool {
        self.repos.iter().flat_map(|r| &r.packages).any(|p| p.taken)
    }
}

/// Inspect `medium` for kernel release `kernel` (whole `uname -r`) on `arch`, with the
/// installer version `installer` for `installer-enhancement` packages.
pub fn inspect(medium: &Medium, kernel: &str, arch: &str, installer: Option<&str>) -> Inspection {
    let repos: Vec<RepoVerdict> = medium
        .repos
        .iter()
        .map(|repo| {
            let note = match medium.kind {
                MediumKind::Rpm => None,
                _ if !repo.arches.iter().any(|a| a == arch) => {
                    Some(format!(
                    "no rpms/{arch}/ directory (has: {}); Anaconda looks only at rpms/<uname -m>",
                    if repo.arches.is_empty() { "none".to_string() } else { repo.arches.join(", ") }
                ))
                }
                _ if repo.packages.is_empty() => Some(format!("rpms/{arch}/ holds no *.rpm file")),
                _ => None,
            };
            RepoVerdict {
                dir: repo.dir.clone(),
                arches: repo.arches.clone(),
                note,
                packages: repo
                    .packages
                    .iter()
                    .map(|p| judge_package(&p.path, &p.bytes, kernel, installer))
                    .collect(),
            }
        })
        .collect();
    let module_builds = module_builds(&repos, kernel);
    Inspection {
        source: medium.source.display().to_string(),
        kind: medium.kind,
        kernel: kernel.to_string(),
        arch: arch.to_string(),
        repos,
        nested_isos: medium.nested_isos.clone(),
        module_builds,
    }
}

/// The module names several packages carry, with Anaconda's outcome for `kernel`.
///
/// The rule, from `dracut/driver_updates.py`: `extract_drivers` extracts every package
/// `dd_list` lists (each whose Provides holds) into one directory, in the order the
/// repo's directory lists them, and names each for installation on the target;
/// `grab_driver_files` then copies every extracted module file to its destination under
/// `/lib/modules/<kernel>/updates/` (the built-for release directory dropped), in the
/// order a walk of that directory yields them. No step compares package or kernel
/// versions: with one taken build that build is loaded; with several, copies of one
/// destination replace each other and the last one written stays.
fn module_builds(repos: &[RepoVerdict], kernel: &str) -> Vec<ModuleBuilds> {
    let mut by_name: Vec<(String, Vec<BuildOfModule>)> = Vec::new();
    for p in repos.iter().flat_map(|r| &r.packages) {
        for file in &p.module_files {
            let Some(module) = module_name(file) else { continue };
            let build = BuildOfModule {
                nevra: p.nevra.clone(),
                path: p.path.clone(),
                file: file.clone(),
                taken: p.taken,
                kernel_modules: p
                    .provides
                    .iter()
                    .filter(|pv| pv.provide.starts_with(KERNEL_MODULES))
                    .map(|pv| pv.provide.clone())
                    .collect(),
                destination: p
                    .files
                    .iter()
                    .find(|f| &f.path == file)
                    .and_then(|f| f.destination.clone()),
            };
            match by_name.iter_mut().find(|(name, _)| name == module) {
                Some((_, builds)) => builds.push(build),
                None => by_name.push((module.to_string(), vec![build])),
            }
        }
    }
    by_name
        .into_iter()
        .filter(|(_, builds)| builds.len() > 1)
        .map(|(module, builds)| {
            let (loaded, undecided, why) = outcome(&module, &builds, kernel);
            ModuleBuilds { module, builds, loaded, undecided, why }
        })
        .collect()
}

/// Anaconda's outcome for one module's copies: (the build loaded, undecided, why).
fn outcome(module: &str, builds: &[BuildOfModule], kernel: &str) -> (Option<String>, bool, String) {
    let taken: Vec<&BuildOfModule> = builds.iter().filter(|b| b.taken).collect();
    let loaded: Vec<&BuildOfModule> =
        taken.iter().copied().filter(|b| b.destination.is_some()).collect();
    match (taken.as_slice(), loaded.as_slice()) {
        ([], _) => {
            (None, false, format!("Anaconda takes no build of {module} for kernel {kernel}"))
        }
        (_, []) => (
            None,
            false,
            format!(
                "no taken copy of {module} is ever loaded on kernel {kernel} (see the packages)"
            ),
        ),
        ([_], [only]) => (
            Some(only.nevra.clone()),
            false,
            format!(
                "the only build Anaconda takes for kernel {kernel}; the others are skipped (see \
                 their packages)"
            ),
        ),
        (_, [only]) => (
            Some(only.nevra.clone()),
            false,
            format!("the only taken copy of {module} that lands under updates/ on kernel {kernel}"),
        ),
        (_, several) => {
            let mut names: Vec<&str> = several.iter().map(|b| b.nevra.as_str()).collect();
            names.dedup();
            let mut places: Vec<String> = several
                .iter()
                .filter_map(|b| b.destination.as_ref())
                .map(|d| format!("/{d}"))
                .collect();
            places.sort();
            places.dedup();
            let landing = match places.as_slice() {
                [one] => {
                    format!("every copy of {module} is written to {one} and the last one stays")
                }
                _ => format!(
                    "copies of {module} land at {} and depmod keeps one of them",
                    places.join(", ")
                ),
            };
            (
                None,
                true,
                format!(
                    "kernel {kernel} takes {} copies of {module} ({}): Anaconda never compares \
                     versions; {landing}, in the order directories list them",
                    several.len(),
                    names.join(", ")
                ),
            )
        }
    }
}

fn judge_package(
    path: &str,
    bytes: &[u8],
    kernel: &str,
    installer: Option<&str>,
) -> PackageVerdict {
    let mut verdict = PackageVerdict {
        path: path.to_string(),
        name: String::new(),
        nevra: String::new(),
        taken: false,
        flags: PackageFlags::default(),
        provides: Vec::new(),
        reasons: Vec::new(),
        module_files: Vec::new(),
        files: Vec::new(),
    };
    // The rpm crate panics on some hostile headers: its frame is checked first.
    if let Err(e) = crate::formats::rpm_header::check(bytes) {
        verdict.reasons.push(format!("not a readable RPM: {e}"));
        return verdict;
    }
    let package = match rpm::Package::parse(&mut std::io::Cursor::new(bytes)) {
        Ok(p) => p,
        Err(e) => {
            verdict.reasons.push(format!("not a readable RPM: {e}"));
            return verdict;
        }
    };
    let meta = &package.metadata;
    verdict.name = meta.get_name().unwrap_or_default().to_string();
    verdict.nevra = meta.get_nevra().map(|n| n.to_string()).unwrap_or_default();
    verdict.module_files = meta
        .get_file_paths()
        .unwrap_or_default()
        .iter()
        .map(|p| p.display().to_string())
        .filter(|p| module_name(p).is_some())
        .collect();
    let provides = meta.get_provides().unwrap_or_default();
    for dep in &provides {
        let sense = dep.flags.bits();
        let op = sense_operator(sense);
        let shown = if op.is_empty() {
            dep.name.clone()
        } else {
            format!("{} {op} {}", dep.name, dep.version)
        };
        if dep.name == KERNEL_MODULES {
            let holds = provide_matches(kernel, sense, &dep.version);
            verdict.flags.modules |= holds;
            verdict.provides.push(ProvideVerdict { provide: shown, holds });
        } else if dep.name == INSTALLER_ENHANCEMENT {
            let holds = installer.is_some_and(|v| provide_matches(v, sense, &dep.version));
            verdict.flags.enhancement |= holds;
            verdict.provides.push(ProvideVerdict { provide: shown, holds });
        }
    }
    verdict.taken = verdict.flags.modules || verdict.flags.enhancement;
    if !verdict.taken {
        let versioned = provides.iter().any(|d| {
            (d.name == KERNEL_MODULES || d.name == INSTALLER_ENHANCEMENT) && !d.version.is_empty()
        });
        verdict.reasons.push(if !versioned {
            format!("no versioned Provides: {KERNEL_MODULES} (or {INSTALLER_ENHANCEMENT})")
        } else {
            format!("no {KERNEL_MODULES} Provides holds for kernel {kernel} under rpmvercmp")
        });
        return verdict;
    }
    match package.payload_compression() {
        Ok(rpm::CompressionType::Gzip | rpm::CompressionType::Xz | rpm::CompressionType::None) => {}
        Ok(other) => verdict.reasons.push(format!(
            "payload compressed with {other}: RHEL 8's extractor reads only gzip and xz"
        )),
        Err(e) => verdict.reasons.push(format!("payload compression unreadable: {e}")),
    }
    let files = match package.files() {
        Ok(files) => files,
        Err(e) => {
            verdict.reasons.push(format!("payload unreadable: {e}"));
            return verdict;
        }
    };
    for file in files {
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                verdict.reasons.push(format!("payload unreadable: {e}"));
                break;
            }
        };
        let full = file.metadata.path().display().to_string();
        let path = normalise_payload_path(&full).to_string();
        let file_type = file.metadata.file_type();
        let class = extract_class(&path, verdict.flags);
        let mut fv = FileVerdict {
            path: full.clone(),
            class,
            destination: None,
            note: None,
            content: Vec::new(),
        };
        match (class, file_type) {
            (None, _) => {}
            (Some(_), rpm::FileType::SymbolicLink) => {
                fv.note =
                    Some("symlink: refused (a driver disk's payload must hold plain files)".into());
                verdict.reasons.push(format!("{full}: symlink in the payload"));
            }
            (Some(_), rpm::FileType::Regular) => {
                fv.destination = class.and_then(|c| updates_destination(&path, c, kernel));
                if let Some(at) = class.and_then(|c| installer_destination(&path, c)) {
                    fv.note = Some(format!(
                        "in the installer as {at} (extracted to /updates, overlaid on its /)"
                    ));
                } else if fv.destination.is_none() && class == Some(ExtractClass::Module) {
                    fv.note = Some(
                        "extracted but never loaded: modules must be under lib/modules/".into(),
                    );
                    verdict.reasons.push(format!("{full}: module outside lib/modules/"));
                } else if fv.destination.is_some() {
                    fv.content = file.into_content().unwrap_or_default();
                }
            }
            (Some(_), _) => fv.note = Some("not a regular file: ignored".into()),
        }
        verdict.files.push(fv);
    }
    if !verdict.files.iter().any(|f| f.destination.is_some()) && verdict.flags.modules {
        verdict.reasons.push("taken, but carries no module or firmware Anaconda would load".into());
    }
    verdict
}
