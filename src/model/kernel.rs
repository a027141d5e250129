//! [`Kernel`]: the facts of a target kernel that decide whether a module will load on
//! it, read from a [`Root`] and a release.
//!
//! Flow: locate and parse the symvers file (`--symvers`, `/boot/symvers-KVER.gz`,
//! `lib/modules/KVER/symvers.gz`, or `Module.symvers` in the `build` headers tree) →
//! take the exports of vmlinux from it, and those of in-tree modules whose file is still
//! under `kernel/` (a stat per module, no directory walk) → read every module outside
//! `kernel/` (extra/, updates/) for its exports, as depmod does → read one in-tree module
//! (first of `modules.order`) as the *reference module*: its vermagic, ELF class/machine,
//! `sizeof(struct module)` and signing key are the kernel's → read `/boot/config-KVER`
//! → decide signature enforcement. With `scan_modules`, or when symvers lists no module
//! exports, every `.ko` of the tree is read instead, exactly like depmod.
//!
//! Reading never writes. Missing optional facts are `None` and the verdict says which
//! rules could not be checked.

use super::kernel_image::{self, ImageExports};
use super::module::{name_from_path, Module, ReadOptions};
use super::root::Root;
use super::tree::{walk, ModuleTree};
use crate::formats::compression::{self, Compression};
use crate::formats::der::{self, CertIdentity};
use crate::formats::elf::Class;
use crate::formats::kconfig::KernelConfig;
use crate::formats::symvers;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// One symbol the kernel (vmlinux or an in-tree module) exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelExport {
    /// `None` when the export carries no CRC (kernel built without modversions).
    pub crc: Option<u32>,
    pub gpl: bool,
    pub namespace: Option<String>,
    /// `vmlinux` or the exporting module's name.
    pub owner: String,
}

/// Whether the host will refuse modules without a trusted signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecureBootMode {
    /// Read the kernel command line, lockdown state and EFI Secure Boot under the root.
    #[default]
    Auto,
    /// Assume enforcement (Secure Boot with lockdown, or `module.sig_enforce=1`).
    On,
    /// Assume no enforcement (unless the kernel is built with `MODULE_SIG_FORCE`).
    Off,
}

/// Signature enforcement as decided, with the fact that decided it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enforcement {
    pub enforced: bool,
    pub because: String,
}

/// A key the target kernel trusts for module signatures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrustedKey {
    #[serde(flatten)]
    pub identity: CertIdentity,
    /// Where bootkmod learnt of it: the in-tree module it signed, or a certificate file.
    pub source: String,
}

/// How to read a target kernel.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// Use this symvers file (host path) instead of searching the root.
    pub symvers: Option<PathBuf>,
    /// Read no symvers file at all, as on a host without the kernel's headers: vmlinux's
    /// exports then come from the boot image.
    pub ignore_symvers: bool,
    /// Certificates (DER or PEM, host paths) of extra trusted keys, e.g. enrolled in MOK.
    pub trusted_keys: Vec<PathBuf>,
    pub secure_boot: SecureBootMode,
    /// Read the exports of every in-tree `.ko` (as depmod does) even when symvers lists
    /// them; slower, but exact when in-tree modules were replaced after the build.
    pub scan_modules: bool,
    /// Keep only the facts these modules can ask about; `None` keeps everything.
    pub interest: Option<Interest>,
    /// When to read vmlinux's exports from the kernel's boot image.
    pub image_exports: ImageExportsUse,
}

/// When [`Kernel::read`] reads the export table out of `/boot/vmlinuz-KVER` (decoding the
/// image costs about a second, a symvers file milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageExportsUse {
    /// Only when no symvers file is found: the image is then the source.
    #[default]
    WithoutSymvers,
    /// Also when a symvers file is found: compared with it (a disagreement is a
    /// warning), and the image wins, being what the loader checks against.
    Compare,
    /// Never (symvers, or nothing).
    Never,
}

/// Where the exports of vmlinux itself came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum VmlinuxExports {
    /// The symvers file ([`Kernel::symvers`]).
    Symvers,
    /// The export table of the kernel's boot image at `path`.
    Image { path: PathBuf },
    /// Neither could be read: `why` says what was tried.
    Missing { why: String },
}

/// The symbols and module names a set of modules can ask a kernel about: reading only
/// these out of symvers is what keeps one check in the milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Interest {
    pub symbols: HashSet<String, FastHash>,
    pub modules: HashSet<String>,
}

/// FNV-1a: symvers lookups hash ~25k short symbol names per check, where SipHash's
/// DoS resistance buys nothing (the names come from local files) and costs a third of
/// the run.
#[derive(Default, Clone, Copy)]
pub struct Fnv1a(u64);

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf29ce484222325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastHash = std::hash::BuildHasherDefault<Fnv1a>;

impl Interest {
    pub fn of(modules: &[Module]) -> Interest {
        let mut symbols: HashSet<String, FastHash> =
            modules.iter().flat_map(|m| m.undefined.iter().cloned()).collect();
        symbols.insert("module_layout".to_string());
        let modules =
            modules.iter().flat_map(|m| m.modinfo.depends()).map(|d| d.replace('-', "_")).collect();
        Interest { symbols, modules }
    }
}

/// The facts of a target kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kernel {
    pub release: String,
    /// Host path of the symvers file read, if any.
    pub symvers: Option<PathBuf>,
    /// Where vmlinux's exports came from; with [`VmlinuxExports::Missing`] no symbol can
    /// be said to be unexported.
    pub vmlinux_exports: VmlinuxExports,
    /// Host path of the in-tree module whose facts stand for the kernel's own.
    pub reference_module: Option<PathBuf>,
    /// The kernel's vermagic (from the reference module).
    pub vermagic: Option<String>,
    pub class: Option<Class>,
    pub machine: Option<u16>,
    /// `sizeof(struct module)` (from the reference module).
    pub this_module_size: Option<u64>,
    /// Exports by symbol name (those of [`KernelOptions::interest`] when given).
    #[serde(skip)]
    pub exports: HashMap<String, KernelExport>,
    /// Names of the modules present in the tree or built in (`modules.builtin`), as the
    /// kernel names them (`_` not `-`); with an interest, the loadable ones are only those
    /// exporting its symbols or named by it.
    #[serde(skip)]
    pub modules: HashSet<String>,
    pub modversions: bool,
    /// Whether the loader compares `.gnu.linkonce.this_module`'s size with its own
    /// `sizeof(struct module)`: kernels since 6.4 do; 6.1 (booted here) does not.
    pub checks_struct_module_size: bool,
    /// `CONFIG_MODULE_FORCE_LOAD`: modules without vermagic or symbol versions load with
    /// a taint instead of being refused. Unknown (no config) counts as not set.
    pub force_load: bool,
    pub sig_supported: bool,
    pub allow_missing_namespace_imports: bool,
    pub enforcement: Enforcement,
    pub trusted_keys: Vec<TrustedKey>,
    /// Files of the tree that could not be read (a dangling weak-updates link, an
    /// unreadable module): left out, each named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Kernel {
    /// Read kernel `release` under `root`. Errors name the file at fault.
    pub fn read(root: &Root, release: &str, opts: &KernelOptions) -> Result<Kernel> {
        if release.is_empty() || release.contains('/') {
            bail!("invalid kernel release {release:?}");
        }
        let tree = ModuleTree::new(root.clone(), release);
        let tree_dir = tree.host_dir()?;
        let symvers_path = match &opts.symvers {
            _ if opts.ignore_symvers => None,
            Some(p) => Some(root.confine(p)?),
            None => find_symvers(root, release),
        };
        if symvers_path.is_none() && !tree_dir.is_dir() {
            bail!(
                "kernel {release}: no symvers file and no module tree {} (give --symvers FILE)",
                tree_dir.display()
            );
        }
        let read_image = match opts.image_exports {
            ImageExportsUse::WithoutSymvers => symvers_path.is_none(),
            ImageExportsUse::Compare => true,
            ImageExportsUse::Never => false,
        };
        let image = read_image.then(|| kernel_image::read(root, release));
        let (exports, modules, mut warnings) =
            read_exports(&tree, symvers_path.as_deref(), image.as_ref(), opts)?;
        let vmlinux_exports = match (&image, &symvers_path) {
            (Some(Ok(image)), _) => VmlinuxExports::Image { path: image.path.clone() },
            (_, Some(_)) => VmlinuxExports::Symvers,
            (Some(Err(e)), None) => VmlinuxExports::Missing {
                why: format!("no Module.symvers or symvers.gz, and {e:#}"),
            },
            (None, None) => VmlinuxExports::Missing {
                why: "no Module.symvers or symvers.gz (the boot image was not read)".into(),
            },
        };
        if let (Some(Err(e)), Some(_)) = (&image, &symvers_path) {
            if opts.image_exports == ImageExportsUse::Compare {
                warnings
                    .push(format!("symvers not compared with the kernel's export table: {e:#}"));
            }
        }

        let reference = reference_module(&tree)?;
        let config = read_optional(&root.host(format!("/boot/config-{release}"))?)?
            .map(|b| KernelConfig::parse_only(&b, CONFIG_OPTIONS));
        let enabled = |name: &str| config.as_ref().map(|c| c.enabled(name));
        let modversions = enabled("CONFIG_MODVERSIONS")
            .unwrap_or_else(|| exports.values().any(|e| e.crc.is_some_and(|c| c != 0)));
        let sig_supported = enabled("CONFIG_MODULE_SIG")
            .unwrap_or_else(|| reference.as_ref().is_some_and(|m| m.signature.is_some()));
        let sig_force = enabled("CONFIG_MODULE_SIG_FORCE").unwrap_or(false);
        let allow_missing_namespace_imports =
            enabled("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS").unwrap_or(false);

        let trusted_keys = trusted_keys(reference.as_ref(), &opts.trusted_keys)?;
        let enforcement = if sig_force {
            Enforcement { enforced: true, because: "CONFIG_MODULE_SIG_FORCE=y".into() }
        } else {
            match opts.secure_boot {
                SecureBootMode::On => {
                    Enforcement { enforced: true, because: "--secure-boot on".into() }
                }
                SecureBootMode::Off => {
                    Enforcement { enforced: false, because: "--secure-boot off".into() }
                }
                SecureBootMode::Auto => detect_enforcement(root)?,
            }
        };

        Ok(Kernel {
            release: release.to_string(),
            symvers: symvers_path,
            vmlinux_exports,
            reference_module: reference.as_ref().and_then(|m| m.path.clone()),
            vermagic: reference.as_ref().and_then(|m| m.vermagic().map(str::to_string)),
            class: reference.as_ref().map(|m| m.class),
            machine: reference.as_ref().map(|m| m.machine),
            this_module_size: reference.as_ref().and_then(|m| m.this_module_size),
            exports,
            modules,
            modversions,
            checks_struct_module_size: release_version(release).is_none_or(|v| v >= (6, 4)),
            force_load: enabled("CONFIG_MODULE_FORCE_LOAD").unwrap_or(false),
            sig_supported,
            allow_missing_namespace_imports,
            enforcement,
            trusted_keys,
            warnings,
        })
    }

    /// The architecture name of the kernel's modules (`x86_64`), when known.
    pub fn arch(&self) -> Option<String> {
        self.machine.map(crate::formats::elf::machine_name)
    }

    /// Does the kernel trust the key a module was signed with?
    pub fn trusts(&self, signer: Option<&str>, key_id: &[u8]) -> bool {
        self.trusted_keys.iter().any(|k| {
            k.identity.serial == key_id
                && match (signer, k.identity.issuer.as_deref()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }
}

/// The config options the verdict depends on.
const CONFIG_OPTIONS: &[&str] = &[
    "CONFIG_MODVERSIONS",
    "CONFIG_MODULE_FORCE_LOAD",
    "CONFIG_MODULE_SIG",
    "CONFIG_MODULE_SIG_FORCE",
    "CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS",
];

/// Is `base` (a symvers module path's last part, `-` allowed) the module `name`?
fn same_module_name(name: &str, base: &str) -> bool {
    name.len() == base.len()
        && name.bytes().zip(base.bytes()).all(|(n, b)| n == b || (n == b'_' && b == b'-'))
}

/// What [`read_exports`] finds: exports by symbol, present module names, warnings.
type Exports = (HashMap<String, KernelExport>, HashSet<String>, Vec<String>);

/// The exports the kernel offers (vmlinux's and its present modules') and the names of
/// its present modules, from symvers and, where needed, the module files themselves.
fn read_exports(
    tree: &ModuleTree,
    symvers_path: Option<&Path>,
    image: Option<&Result<ImageExports>>,
    opts: &KernelOptions,
) -> Result<Exports> {
    let image = image.and_then(|i| i.as_ref().ok());
    let tree_dir = tree.host_dir()?;
    let mut warnings = Vec::new();
    let symvers_text = match symvers_path {
        Some(path) => read_symvers_text(path)?,
        None => Vec::new(),
    };
    let interest = opts.interest.as_ref();
    let wanted_symbol = |s: &str| interest.is_none_or(|i| i.symbols.contains(s));
    let named = |module_path: &str| {
        let base = module_path.rsplit('/').next().unwrap_or(module_path);
        interest.is_some_and(|i| i.modules.iter().any(|m| same_module_name(m, base)))
    };
    // One pass over symvers: keep the lines of wanted symbols, note every exporting
    // module only when module names matter, and whether modules appear at all.
    let mut entries = Vec::new();
    let mut all_owners: HashSet<&str> = HashSet::new();
    let mut symvers_covers_modules = false;
    for line in symvers::lines(&symvers_text) {
        let line =
            line.with_context(|| format!("{}", symvers_path.unwrap_or(Path::new("")).display()))?;
        if !line.is_vmlinux() {
            symvers_covers_modules = true;
            if interest.is_none() || named(line.module) {
                all_owners.insert(line.module);
            }
        }
        if wanted_symbol(line.symbol) {
            entries.push(line);
        }
    }
    let scan_all = opts.scan_modules || !symvers_covers_modules;
    if let (Some(image), Some(path)) = (image, symvers_path) {
        let lines = symvers::lines(&symvers_text).filter_map(Result::ok);
        let differences = kernel_image::disagreement(lines, &image.table);
        if !differences.is_empty() {
            warnings.push(format!(
                "{} disagrees with the kernel it describes ({}): {}; the kernel's own table is used",
                path.display(),
                image.path.display(),
                differences.join("; ")
            ));
        }
    }

    // Which module files to read for their exports, and which modules are present.
    // Fast path: `kernel/` is the build's own tree, which symvers describes; only the
    // presence of the files that matter is checked. Everything else (extra/,
    // updates/) is read, as depmod would.
    let mut modules: HashSet<String> = HashSet::new();
    let mut present_paths: HashSet<&str> = HashSet::new();
    let mut to_read = Vec::new();
    if scan_all {
        if tree_dir.is_dir() {
            walk(&tree.root, &tree_dir, &mut to_read, &mut warnings)
                .with_context(|| format!("reading module tree {}", tree_dir.display()))?;
            to_read.sort();
        }
    } else {
        let mut owners: HashSet<&str> =
            entries.iter().filter(|e| !e.is_vmlinux()).map(|e| e.module).collect();
        owners.extend(all_owners);
        for path in owners {
            let base = tree.root.host(tree.dir().join("kernel").join(path))?;
            let exists = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|ext| {
                let mut p = base.clone().into_os_string();
                p.push(ext);
                Path::new(&p).is_file()
            });
            if exists {
                present_paths.insert(path);
                modules.insert(name_from_path(Path::new(path)));
            }
        }
        for entry in std::fs::read_dir(&tree_dir).into_iter().flatten().flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && entry.file_name() != "kernel" {
                walk(&tree.root, &entry.path(), &mut to_read, &mut warnings)
                    .with_context(|| format!("reading {}", entry.path().display()))?;
            }
        }
    }
    // weak-updates/ links (absolute paths of the target system) were collected as the
    // files they name inside the root.
    modules.extend(to_read.iter().map(|p| name_from_path(p)));
    // Built into the image: present as far as depends= and modprobe are concerned.
    let builtin = read_optional(&tree_dir.join("modules.builtin"))?.unwrap_or_default();
    modules.extend(
        String::from_utf8_lossy(&builtin).lines().map(|l| name_from_path(Path::new(l.trim()))),
    );

    let mut exports = HashMap::new();
    if let Some(image) = image {
        for e in image.table.exports.iter().filter(|e| wanted_symbol(&e.symbol)) {
            let export = KernelExport {
                crc: e.crc,
                gpl: e.gpl,
                namespace: e.namespace.clone(),
                owner: "vmlinux".to_string(),
            };
            exports.insert(e.symbol.clone(), export);
        }
    }
    for e in &entries {
        if !wanted_symbol(e.symbol) || (image.is_some() && e.is_vmlinux()) {
            continue;
        }
        let owner = if e.is_vmlinux() {
            "vmlinux".to_string()
        } else if scan_all || !present_paths.contains(e.module) {
            // Read from the .ko files below, or absent from the tree: not exported.
            continue;
        } else {
            name_from_path(Path::new(e.module))
        };
        let export = KernelExport {
            crc: Some(e.crc),
            gpl: e.gpl,
            namespace: e.namespace.map(str::to_string),
            owner,
        };
        exports.insert(e.symbol.to_string(), export);
    }
    for (path, m) in to_read.iter().zip(read_all(&to_read)?) {
        // A dangling weak-updates link (left by an erased kmod package) or an unreadable
        // file is a warning naming it, as kmod's depmod reports it and carries on.
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                warnings.push(format!("{}: skipped: {e:#}", path.display()));
                continue;
            }
        };
        let owner = m.name();
        for e in m.exports {
            exports.insert(
                e.name,
                KernelExport {
                    crc: e.crc,
                    gpl: e.gpl,
                    namespace: e.namespace,
                    owner: owner.clone(),
                },
            );
        }
    }
    Ok((exports, modules, warnings))
}

/// The build's own key (from the reference module's signature) and each certificate given.
fn trusted_keys(reference: Option<&Module>, certs: &[PathBuf]) -> Result<Vec<TrustedKey>> {
    let mut trusted_keys = Vec::new();
    if let Some(sig) = reference.and_then(|m| m.signature.as_ref()) {
        if !sig.key_id.is_empty() {
            trusted_keys.push(TrustedKey {
                identity: CertIdentity { issuer: sig.signer.clone(), serial: sig.key_id.clone() },
                source: reference
                    .and_then(|m| m.path.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            });
        }
    }
    for cert in certs {
        let bytes = std::fs::read(cert)
            .with_context(|| format!("{}: cannot read certificate", cert.display()))?;
        let identity = der::cert_identity(&bytes)
            .with_context(|| format!("{}: not an X.509 certificate", cert.display()))?;
        trusted_keys.push(TrustedKey { identity, source: cert.display().to_string() });
    }
    Ok(trusted_keys)
}

/// `(major, minor)` of a kernel release string (`6.1.0-56-amd64` → `(6, 1)`).
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// [`releases`], refusing a root that has none: a command that acts on "every kernel"
/// must not quietly act on no kernel (or on the host's, through an outside link).
pub fn releases_present(root: &Root) -> Result<Vec<String>> {
    let found = releases(root)?;
    if found.is_empty() {
        anyhow::bail!("no kernels under {}", root.shown("/lib/modules").display());
    }
    Ok(found)
}

/// Every kernel release under `root` that has a module tree.
pub fn releases(root: &Root) -> Result<Vec<String>> {
    let dir = root.host("/lib/modules")?;
    // A tree reached only through links that point outside the root is no kernel of
    // this root: each candidate is resolved inside it, never on the host.
    let is_tree = |name: &str| {
        let tree = Path::new("/lib/modules").join(name);
        root.host(tree.join("kernel")).is_ok_and(|p| p.is_dir())
            || root.host(tree.join("modules.dep")).is_ok_and(|p| p.is_file())
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // No /lib/modules (or only a link to nowhere inside the root): no kernels.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("/lib/modules: cannot list kernels in {}", root.dir().display())
            })
        }
    };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| is_tree(name))
        .collect();
    out.sort();
    Ok(out)
}

/// The first symvers file that exists, in RHEL's then Debian's places.
fn find_symvers(root: &Root, release: &str) -> Option<PathBuf> {
    let candidates = [
        format!("/boot/symvers-{release}.gz"),
        format!("/lib/modules/{release}/symvers.gz"),
        format!("/lib/modules/{release}/build/Module.symvers"),
        format!("/usr/src/linux-headers-{release}/Module.symvers"),
        format!("/usr/src/kernels/{release}/Module.symvers"),
    ];
    candidates.iter().find_map(|c| {
        let host = root.host(c).ok()?;
        host.is_file().then_some(host)
    })
}

/// Parse a symvers file, decompressing by magic (`symvers.gz`).
pub fn read_symvers(path: &Path) -> Result<Vec<symvers::SymversEntry>> {
    symvers::parse(&read_symvers_text(path)?).with_context(|| format!("{}", path.display()))
}

/// The text of a symvers file, decompressed by magic.
fn read_symvers_text(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if Compression::detect(&bytes) == Compression::None {
        return Ok(bytes);
    }
    Ok(compression::decode_all(&bytes, compression::MAX_DECODED_MODULE)
        .with_context(|| format!("{}", path.display()))?
        .into_owned())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// The in-tree module whose vermagic, machine, struct size and signer stand for the
/// kernel's: the first of `modules.order` present (in-tree by definition), else the first
/// module file found.
fn reference_module(tree: &ModuleTree) -> Result<Option<Module>> {
    let tree_dir = tree.host_dir()?;
    let order = read_optional(&tree_dir.join("modules.order"))?.unwrap_or_default();
    let from_order = String::from_utf8_lossy(&order)
        .lines()
        .filter_map(|l| tree.root.host(tree.dir().join(l.trim())).ok())
        .find(|p| p.is_file());
    let path = match from_order {
        Some(p) => p,
        None if tree_dir.is_dir() => match tree.module_files()?.into_iter().next() {
            Some(p) => p,
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    Module::read(&path, ReadOptions::default()).map(Some)
}

/// Read every module, in parallel over the machine's cores; one result per file.
fn read_all(files: &[PathBuf]) -> Result<Vec<Result<Module>>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter().map(|p| Module::read(p, ReadOptions::default())).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for h in handles {
            out.extend(h.join().map_err(|_| anyhow::anyhow!("module reader thread panicked"))?);
        }
        Ok(out)
    })
}

/// `--secure-boot auto`: enforcement is on when the command line asks for it
/// (`module.sig_enforce=1`, `lockdown=`), when lockdown is active, or when EFI Secure
/// Boot is on (distribution kernels lock down under Secure Boot).
fn detect_enforcement(root: &Root) -> Result<Enforcement> {
    let cmdline = read_optional(&root.host("/proc/cmdline")?)?.unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    for word in cmdline.split_whitespace() {
        if word == "--" {
            break;
        }
        match word.split_once('=') {
            Some(("module.sig_enforce", "1" | "y" | "Y")) => {
                return Ok(Enforcement {
                    enforced: true,
                    because: format!("kernel command line {word}"),
                })
            }
            Some(("lockdown", "integrity" | "confidentiality")) => {
                return Ok(Enforcement {
                    enforced: true,
                    because: format!("kernel command line {word}"),
                })
            }
            _ => {}
        }
    }
    let lockdown = read_optional(&root.host("/sys/kernel/security/lockdown")?)?.unwrap_or_default();
    let lockdown = String::from_utf8_lossy(&lockdown);
    if lockdown.contains("[integrity]") || lockdown.contains("[confidentiality]") {
        return Ok(Enforcement {
            enforced: true,
            because: format!("lockdown {}", lockdown.trim()),
        });
    }
    let secure_boot =
        root.host("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")?;
    // efivarfs files are 4 attribute bytes then the value.
    if read_optional(&secure_boot)?.is_some_and(|v| v.get(4) == Some(&1)) {
        return Ok(Enforcement { enforced: true, because: "EFI Secure Boot is enabled".into() });
    }
    Ok(Enforcement {
        enforced: false,
        because: "no module.sig_enforce, lockdown or Secure Boot found".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::release_version;

    #[test]
    fn release_versions() {
        assert_eq!(release_version("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(release_version("5.14.0-362.8.1.el9_3.x86_64"), Some((5, 14)));
        assert_eq!(release_version("4.18.0"), Some((4, 18)));
        assert_eq!(release_version("x"), None);
    }
}
