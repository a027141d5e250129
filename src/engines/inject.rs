//! The injection plan: what must go into an initramfs so that a storage driver loads from
//! it, computed without writing anything.
//!
//! Flow:
//!
//! 1. [`ImageContents::read`] walks the image once (the kernel's unpacking rules, via
//!    `engines::initramfs`), keeping the merged [`View`], every module under a
//!    `lib/modules/<kver>` tree (parsed; with its sha256 when [`Digests`] asks) and the
//!    few small files the plan reads whole: index and order files, `depmod.d`,
//!    early-load configuration. [`ImageContents::resume`] reads on into bytes appended
//!    later, so a verification need not decode the original segments again.
//! 2. [`plan`] checks the requested modules against the target kernel
//!    (`engines::compat`), closes over `depends=`, `softdep=` and the disk-class driver a
//!    controller needs to produce a block device ([`DISK_CLASS`]), skips what is built in
//!    or already present with the same sha256, places each new file where depmod's search
//!    order makes it win over an in-image copy, adds missing firmware, regenerates the
//!    image's indexes with native depmod (`engines::depmod::Graph`) over the resulting
//!    module set, and (with `load_early`) the image's own early-load mechanism.
//! 3. The result is a [`Plan`]: a report (serialisable, what `--dry-run` prints) plus the
//!    cpio entries to add ([`NewEntry`]). Entries use resolved paths, so a `lib ->
//!    usr/lib` symlink in the image is followed, never replaced.
//!
//! Reading files of the target system is the caller's job ([`Sources`]): this module
//! never touches disk.

use crate::engines::compat::{self, Verdict};
use crate::engines::depmod::config::{Candidate, Config};
use crate::engines::depmod::{DepModule, Graph, Inputs};
use crate::engines::initramfs::view::View;
use crate::engines::initramfs::walk::{self, Entry, Resume, Segment, Visitor};
use crate::engines::initramfs::{kernel_versions, KernelTree};
use crate::formats::cpio::{S_IFDIR, S_IFREG};
use crate::model::kernel::Kernel;
use crate::model::module::{name_from_path, sha256_hex, Module, ReadOptions};
use crate::model::tree::is_module_file;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A module file found in the image.
#[derive(Debug, Clone)]
pub struct ImageModule {
    pub module: Arc<Module>,
    /// sha256 of the file as stored in the image, when [`Digests`] asked for it.
    pub sha256: Option<String>,
}

/// What an image holds, as far as injection cares.
#[derive(Debug)]
pub struct ImageContents {
    pub view: View,
    pub segments: Vec<Segment>,
    /// Module files under any `lib/modules/<kver>/`, by resolved path.
    pub modules: BTreeMap<String, ImageModule>,
    /// Small files kept whole (index/order files, depmod.d, early-load files), by
    /// resolved path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Module files that could not be parsed (path: error).
    pub warnings: Vec<String>,
    /// Where the walk ended: the start of anything appended later.
    pub end: Resume,
    /// The writes of kept files and modules, for dropping those a later entry replaced.
    seqs: HashMap<String, u64>,
}

/// Which image modules get a sha256 while reading. Hashing every module costs about as
/// much as decoding a zstd image, and a plan compares only the modules it was asked
/// for (dependencies already in the image are kept as they are).
#[derive(Debug, Clone, Copy)]
pub enum Digests<'a> {
    All,
    /// Modules with these names (as `name_from_path` gives them).
    Named(&'a HashSet<String>),
}

impl Digests<'_> {
    fn wants(&self, path: &str) -> bool {
        match self {
            Digests::All => true,
            Digests::Named(names) => names.contains(&name_from_path(Path::new(path))),
        }
    }
}

/// Whether a raw entry name may be something [`ImageContents`] keeps: only these bodies
/// are read into memory.
fn worth_reading(name: &[u8]) -> bool {
    let s = String::from_utf8_lossy(name);
    s.contains("modules")
        || s.contains("depmod.d")
        || s.contains("cmdline.d")
        || s.contains("conf/")
}

/// Is this resolved path a small file the plan reads?
fn kept_file(path: &str) -> bool {
    let tree_file =
        tree_of(path).is_some_and(|(_, rest)| !rest.contains('/') && rest.starts_with("modules."));
    tree_file
        || ["etc/depmod.d/", "lib/depmod.d/", "usr/lib/depmod.d/", "run/depmod.d/"]
            .iter()
            .any(|d| path.starts_with(d))
        || path.starts_with("etc/cmdline.d/")
        || path == "conf/modules"
        || path.starts_with("etc/modules-load.d/")
        || path.starts_with("usr/lib/modules-load.d/")
}

/// `usr/lib/modules/K/kernel/x.ko` → (`usr/lib/modules/K`, `kernel/x.ko`).
fn tree_of(path: &str) -> Option<(&str, &str)> {
    for base in ["lib/modules/", "usr/lib/modules/"] {
        if let Some(rest) = path.strip_prefix(base) {
            let (release, rel) = rest.split_once('/')?;
            if release.is_empty() || rel.is_empty() {
                return None;
            }
            return Some((&path[..base.len() + release.len()], rel));
        }
    }
    None
}

struct Collector<'a> {
    contents: ImageContents,
    digests: Digests<'a>,
    /// One buffer for every body: modules are parsed from it, not kept.
    bytes: Vec<u8>,
}

impl Visitor for Collector<'_> {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        let c = &mut self.contents;
        if entry.header.file_type() != S_IFREG || !worth_reading(&entry.name) {
            return c.view.entry(entry, body);
        }
        let bytes = &mut self.bytes;
        bytes.clear();
        body.read_to_end(bytes)?;
        c.view.entry(entry, &mut bytes.as_slice())?;
        let Some(found) = c.view.lookup(&entry.name, false) else { return Ok(()) };
        let path = String::from_utf8_lossy(found.path).into_owned();
        if is_module_file(&path) && tree_of(&path).is_some() {
            match Module::from_bytes(bytes, ReadOptions::default()) {
                Ok(mut module) => {
                    module.path = Some(PathBuf::from(&path));
                    let sha256 = self.digests.wants(&path).then(|| sha256_hex(bytes));
                    c.seqs.insert(path.clone(), entry.seq);
                    c.files.remove(&path);
                    c.modules.insert(path, ImageModule { module: module.into(), sha256 });
                }
                Err(e) => c.warnings.push(format!("{path} in the image: {e:#}")),
            }
        } else if kept_file(&path) {
            c.seqs.insert(path.clone(), entry.seq);
            c.modules.remove(&path);
            c.files.insert(path, bytes.clone());
        }
        Ok(())
    }
}

impl ImageContents {
    /// Walk an image once. `source` names it in errors.
    pub fn read<R: BufRead + Send>(
        image: R,
        source: &str,
        digests: Digests,
    ) -> Result<ImageContents> {
        let empty = ImageContents {
            view: View::new(),
            segments: Vec::new(),
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
            warnings: Vec::new(),
            end: Resume::default(),
            seqs: HashMap::new(),
        };
        empty.resume(image, source, digests)
    }

    /// Read on from where the walk that made `self` ended: `image` yields the bytes
    /// appended after [`ImageContents::end`]'s offset. The result is what
    /// [`ImageContents::read`] of the whole image would give.
    pub fn resume<R: BufRead + Send>(
        self,
        image: R,
        source: &str,
        digests: Digests,
    ) -> Result<ImageContents> {
        let start = self.end;
        let mut c = Collector { contents: self, digests, bytes: Vec::new() };
        let (segments, end) = walk::walk_from(image, source, start, &mut c)?;
        let mut contents = c.contents;
        contents.segments.extend(segments);
        contents.end = end;
        // Keep only what is still there: a later entry may have replaced a file by a
        // link, a directory or a file outside any tree.
        let ImageContents { view, seqs, modules, files, .. } = &mut contents;
        let current = |path: &String| {
            let last = view
                .lookup(path.as_bytes(), false)
                .filter(|e| e.inode.file_type() == S_IFREG)
                .and_then(|e| e.inode.writes.last().map(|w| w.seq));
            last.is_some() && last == seqs.get(path).copied()
        };
        modules.retain(|p, _| current(p));
        files.retain(|p, _| current(p));
        Ok(contents)
    }

    /// The kernel trees the image holds.
    pub fn trees(&self) -> Vec<KernelTree> {
        kernel_versions(&self.view)
    }

    fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Does a regular file (symlinks followed) exist at `path`?
    pub fn has_file(&self, path: &str) -> bool {
        self.view.lookup(path.as_bytes(), true).is_some_and(|e| e.inode.file_type() == S_IFREG)
    }
}

/// A module to put into the image, read by the caller.
#[derive(Debug, Clone)]
pub struct Request {
    pub module: Module,
    pub bytes: Vec<u8>,
    pub origin: Origin,
}

/// Where a module to inject comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// A file given on the command line (host path): placed under `updates/`.
    File { path: PathBuf },
    /// The target kernel's own tree, at this tree-relative path (kept in the image).
    Tree { path: PathBuf, rel: String },
}

impl Request {
    fn file_name(&self) -> String {
        let path = match &self.origin {
            Origin::File { path } | Origin::Tree { path, .. } => path,
        };
        path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn default_rel(&self) -> String {
        match &self.origin {
            Origin::File { .. } => format!("updates/{}", self.file_name()),
            Origin::Tree { rel, .. } => rel.clone(),
        }
    }
}

/// What the plan may read from the target system.
pub trait Sources {
    /// A module of the target kernel's tree, by name (`-` and `_` alike).
    fn tree_module(&mut self, name: &str) -> Result<Option<Request>>;
    /// A file of the target kernel's tree (`modules.order`, `modules.builtin`...), used
    /// when the image has none.
    fn tree_file(&mut self, name: &str) -> Result<Option<Vec<u8>>>;
    /// A firmware file under `lib/firmware`: the first of `NAME`, `NAME.xz`, `NAME.zst`
    /// that exists, as (file name found, bytes).
    fn firmware(&mut self, name: &str) -> Result<Option<(String, Vec<u8>)>>;
    /// What a name that is no module of the tree resolves to there as modprobe looks it
    /// up (an alias such as `crypto-crc32c`): module names, each with whether it is
    /// built in.
    fn resolve(&mut self, name: &str) -> Result<Vec<(String, bool)>>;
}

/// Choices that change the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Plan even when the check refuses a module.
    pub force: bool,
    /// Make the image load the requested modules early, by its own mechanism.
    pub load_early: bool,
    /// Missing firmware is a warning instead of an error.
    pub allow_missing_firmware: bool,
}

/// Why a module is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    Requested,
    /// Named by `depends=` of `of`.
    Dependency {
        of: String,
    },
    /// Named by `softdep=` of `of`.
    Softdep {
        of: String,
    },
    /// The disk-class driver `of` needs for its disks to become block devices.
    DiskClass {
        of: String,
    },
}

/// What happens to a planned module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A new file.
    Add,
    /// Replaces the image's copy at the same path (which had another sha256).
    Replace,
    /// Already in the image with the same sha256.
    Present,
    /// Built into the kernel.
    Builtin,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedModule {
    pub name: String,
    pub why: Why,
    pub action: Action,
    /// Path in the image (resolved), empty for built-in modules.
    pub path: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The in-image copy this one wins over (stays in the image, unused), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadows: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedFirmware {
    pub name: String,
    pub needed_by: String,
    /// `add`, `present` or `missing`.
    pub action: &'static str,
    pub path: String,
}

/// The image's early-load mechanism and what it gets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EarlyLoad {
    /// `dracut`, `initramfs-tools` or `modules-load.d`.
    pub mechanism: &'static str,
    pub path: String,
    pub modules: Vec<String>,
    pub changed: bool,
}

/// One cpio entry to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Resolved path in the image.
    pub path: Vec<u8>,
    pub mode: u32,
    pub body: Vec<u8>,
}

/// The whole plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub release: String,
    /// The kernel tree in the image (resolved path).
    pub tree: String,
    pub verdicts: Vec<Verdict>,
    /// The check refused a requested module (and `force` was not given): nothing else
    /// was planned.
    pub refused: bool,
    pub modules: Vec<PlannedModule>,
    pub firmware: Vec<PlannedFirmware>,
    /// Index files whose content changes.
    pub indexes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_load: Option<EarlyLoad>,
    pub warnings: Vec<String>,
    /// Entries to add, directories first.
    #[serde(skip)]
    pub entries: Vec<NewEntry>,
}

impl Plan {
    /// Whether carrying out the plan changes the image.
    pub fn changes(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Modules the plan writes (added or replaced).
    pub fn written_modules(&self) -> impl Iterator<Item = &PlannedModule> {
        self.modules.iter().filter(|m| matches!(m.action, Action::Add | Action::Replace))
    }
}

/// Driver families whose disks need a separate disk-class driver before a block device
/// appears: a needed symbol (prefix) of the controller driver → the disk driver. A SCSI
/// host driver without `sd_mod` finds the disk but no `/dev/sdX` appears.
pub const DISK_CLASS: &[(&str, &str)] = &[
    ("scsi_host_alloc", "sd_mod"),
    ("scsi_add_host_with_dma", "sd_mod"),
    ("ata_host_activate", "sd_mod"),
    ("ata_host_register", "sd_mod"),
    ("usb_stor_", "sd_mod"),
    ("mmc_add_host", "mmc_block"),
];

/// Pick the tree of `release` (or the only one) in the image.
pub fn choose_tree(image: &ImageContents, release: Option<&str>) -> Result<(String, String)> {
    let trees = image.trees();
    match release {
        Some(r) => match trees.iter().find(|t| t.release == r) {
            Some(t) => Ok((t.release.clone(), t.path.clone())),
            None if trees.is_empty() => Ok((r.to_string(), format!("lib/modules/{r}"))),
            None => bail!(
                "the image serves kernel {}, not {r}",
                trees.iter().map(|t| t.release.as_str()).collect::<Vec<_>>().join(", ")
            ),
        },
        None => match trees.as_slice() {
            [t] => Ok((t.release.clone(), t.path.clone())),
            [] => bail!("the image holds no lib/modules/<kver> tree: name the kernel with --kver"),
            _ => bail!(
                "the image holds several kernel trees ({}): name one with --kver",
                trees.iter().map(|t| t.release.as_str()).collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// Compute the plan. `kernel` is the target kernel to check against (`None`: unchecked,
/// only with `force`).
pub fn plan(
    image: &ImageContents,
    release: &str,
    tree: &str,
    kernel: Option<&Kernel>,
    requests: Vec<Request>,
    sources: &mut dyn Sources,
    opts: &PlanOptions,
) -> Result<Plan> {
    let mut plan = Plan {
        release: release.to_string(),
        tree: tree.to_string(),
        verdicts: Vec::new(),
        refused: false,
        modules: Vec::new(),
        firmware: Vec::new(),
        indexes: Vec::new(),
        early_load: None,
        warnings: image.warnings.clone(),
        entries: Vec::new(),
    };
    if let Some(kernel) = kernel {
        let modules: Vec<Module> = requests.iter().map(|r| r.module.clone()).collect();
        plan.verdicts = compat::check_set(kernel, &modules);
        if plan.verdicts.iter().any(|v| !v.compatible) {
            if !opts.force {
                plan.refused = true;
                return Ok(plan);
            }
            plan.warnings.push("injecting modules the check refused (--force)".into());
        }
    } else {
        plan.warnings.push(format!("modules not checked: no kernel {release} to check against"));
    }

    let state = TreeState::new(image, tree, sources)?;
    let mut placer = Placer { view: &image.view, created: Vec::new(), entries: Vec::new() };
    let mut chosen = state.chosen.clone();
    let mut queue: Vec<(Request, Why)> =
        requests.into_iter().map(|r| (r, Why::Requested)).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut written: Vec<(String, Arc<Module>)> = Vec::new();
    let mut file_entries: Vec<NewEntry> = Vec::new();
    let mut i = 0;
    while i < queue.len() {
        let (req, why) = (queue[i].0.clone(), queue[i].1.clone());
        i += 1;
        let name = req.module.name();
        if !seen.insert(name.clone()) {
            continue;
        }
        let sha256 = sha256_hex(&req.bytes);
        if state.builtin.contains(&name) {
            plan.modules.push(PlannedModule {
                name,
                why,
                action: Action::Builtin,
                path: String::new(),
                sha256,
                origin: Some(req.origin.clone()),
                shadows: None,
            });
            continue;
        }
        let (rel, action, shadows) = state.placement(&name, &req, &sha256);
        let path = format!("{tree}/{rel}");
        if action != Action::Present {
            let resolved = placer.place(&path)?;
            file_entries.push(NewEntry {
                path: resolved,
                mode: S_IFREG | 0o644,
                body: req.bytes.clone(),
            });
            chosen.insert(name.clone(), rel.clone());
            written.push((rel.clone(), Arc::new(req.module.clone())));
        }
        // What this module pulls in.
        let mut wanted: Vec<(String, Why)> = Vec::new();
        for d in req.module.modinfo.depends() {
            wanted.push((d.replace('-', "_"), Why::Dependency { of: name.clone() }));
        }
        for s in softdep_names(&req.module) {
            wanted.push((s, Why::Softdep { of: name.clone() }));
        }
        for (prefix, disk) in DISK_CLASS {
            if req.module.undefined.iter().any(|u| u.starts_with(prefix))
                && !wanted.iter().any(|(w, _)| w == disk)
            {
                wanted.push((disk.to_string(), Why::DiskClass { of: name.clone() }));
            }
        }
        wanted.reverse();
        while let Some((dep, dep_why)) = wanted.pop() {
            if seen.contains(&dep)
                || state.builtin.contains(&dep)
                || state.chosen.contains_key(&dep)
                || queue.iter().any(|(r, _)| r.module.name() == dep)
            {
                continue;
            }
            if let Some(r) = sources.tree_module(&dep)? {
                queue.push((r, dep_why));
                continue;
            }
            match dep_why {
                Why::Dependency { of } => bail!(
                    "{of} depends on {dep}, which is neither in the image nor in the kernel's module tree"
                ),
                // modprobe loads every module an alias in a softdep matches.
                Why::Softdep { of } => {
                    let found = sources.resolve(&dep)?;
                    if found.is_empty() {
                        plan.warnings.push(format!(
                            "soft dependency {dep} of {of} matches no module of the tree; not added, modprobe skips it too"
                        ));
                    }
                    for (name, builtin) in found {
                        if !builtin && name != dep {
                            wanted.push((name, Why::Softdep { of: of.clone() }));
                        }
                    }
                }
                Why::DiskClass { of } => plan.warnings.push(format!(
                    "disk driver {dep} for {of} is neither in the image nor in the tree: its disks may get no block device"
                )),
                Why::Requested => {}
            }
        }
        if action != Action::Present {
            for fw in req.module.modinfo.values("firmware") {
                plan.firmware.push(placer.firmware(
                    image,
                    sources,
                    fw,
                    &name,
                    opts,
                    &mut file_entries,
                    &mut plan.warnings,
                )?);
            }
        }
        plan.modules.push(PlannedModule {
            name,
            why,
            action,
            path,
            sha256,
            origin: Some(req.origin),
            shadows,
        });
    }

    // The indexes of the resulting module set.
    let mut modules: Vec<DepModule> = Vec::new();
    for (name, rel) in &chosen {
        let module = match written.iter().find(|(r, _)| r == rel) {
            Some((_, m)) => m.clone(),
            None => match image.modules.get(&format!("{tree}/{rel}")) {
                Some(m) => m.module.clone(),
                None => continue,
            },
        };
        modules.push(DepModule {
            name: name.clone(),
            target: PathBuf::from(format!("/lib/modules/{release}/{rel}")),
            rel: Some(rel.clone()),
            module,
        });
    }
    modules.sort_by(|a, b| a.rel.cmp(&b.rel));
    let graph = Graph::build(Inputs {
        modules,
        order: state.order.clone(),
        builtin: state.builtin_file.clone(),
        builtin_modinfo: state.builtin_modinfo.clone(),
    })?;
    plan.warnings.extend(graph.warnings.iter().cloned());
    let mut index_entries = Vec::new();
    for (name, bytes) in graph.files()? {
        let path = format!("{tree}/{name}");
        if image.file(&path) != Some(bytes.as_slice()) {
            plan.indexes.push(name.to_string());
            let resolved = placer.place(&path)?;
            index_entries.push(NewEntry { path: resolved, mode: S_IFREG | 0o644, body: bytes });
        }
    }
    // Files the kernel package provides that modprobe reads: copy when the image has none.
    if plan.changes_modules() {
        for name in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
            let path = format!("{tree}/{name}");
            if image.file(&path).is_none() {
                if let Some(bytes) = match name {
                    "modules.order" => state.order.clone(),
                    "modules.builtin" => state.builtin_file.clone(),
                    _ => state.builtin_modinfo.clone(),
                } {
                    let resolved = placer.place(&path)?;
                    index_entries.push(NewEntry {
                        path: resolved,
                        mode: S_IFREG | 0o644,
                        body: bytes,
                    });
                }
            }
        }
    }

    let mut early_entries = Vec::new();
    if opts.load_early {
        let names: Vec<String> = plan
            .modules
            .iter()
            .filter(|m| m.why == Why::Requested && m.action != Action::Builtin)
            .map(|m| m.name.clone())
            .collect();
        let (early, body) = early_load(image, names);
        if let Some(body) = body {
            let resolved = placer.place(&early.path)?;
            early_entries.push(NewEntry { path: resolved, mode: S_IFREG | 0o644, body });
        }
        plan.early_load = Some(early);
    }

    if !file_entries.is_empty() || !index_entries.is_empty() || !early_entries.is_empty() {
        plan.entries = placer.entries;
        plan.entries.extend(file_entries);
        plan.entries.extend(index_entries);
        plan.entries.extend(early_entries);
    }
    Ok(plan)
}

impl Plan {
    fn changes_modules(&self) -> bool {
        self.written_modules().next().is_some()
    }
}

/// `softdep=pre: a b post: c` → names (the `pre:`/`post:` words dropped).
fn softdep_names(m: &Module) -> Vec<String> {
    m.modinfo
        .values("softdep")
        .flat_map(|v| v.split_whitespace())
        .filter(|w| !w.ends_with(':'))
        .map(|w| w.replace('-', "_"))
        .collect()
}

/// The image's tree as depmod would see it.
struct TreeState {
    /// Module name → tree-relative path of the copy depmod chooses.
    chosen: BTreeMap<String, String>,
    config: Config,
    builtin: HashSet<String>,
    order: Option<Vec<u8>>,
    builtin_file: Option<Vec<u8>>,
    builtin_modinfo: Option<Vec<u8>>,
    tree: String,
    release: String,
    /// Tree-relative path → sha256, for the in-image modules the image was read with
    /// digests of ([`Digests`]). Placement treats a missing digest as a different file
    /// (rewritten: correct, only not idempotent), so callers hash the requested names.
    shas: BTreeMap<String, String>,
}

impl TreeState {
    fn new(image: &ImageContents, tree: &str, sources: &mut dyn Sources) -> Result<TreeState> {
        let release = tree.rsplit('/').next().unwrap_or(tree).to_string();
        // depmod.d of the image, in file-name order, first directory winning per name.
        let mut config = Config::default();
        let mut names: BTreeMap<String, &str> = BTreeMap::new();
        for dir in ["run/depmod.d/", "etc/depmod.d/", "lib/depmod.d/", "usr/lib/depmod.d/"] {
            for path in image.files.keys().filter(|p| p.starts_with(dir) && p.ends_with(".conf")) {
                let file = &path[dir.len()..];
                if !file.contains('/') {
                    names.entry(file.to_string()).or_insert(path);
                }
            }
        }
        for path in names.values() {
            let text = String::from_utf8_lossy(image.file(path).unwrap_or_default());
            config.parse(&text, Path::new(path), &release);
        }
        config.finish();

        let mut chosen: BTreeMap<String, String> = BTreeMap::new();
        let mut shas = BTreeMap::new();
        let prefix = format!("{tree}/");
        for (path, m) in image.modules.range(prefix.clone()..) {
            let Some(rel) = path.strip_prefix(&prefix) else { break };
            let name = name_from_path(Path::new(rel));
            let keep_old = chosen.get(&name).is_some_and(|old| {
                config.existing_wins(
                    &candidate(&release, &name, old),
                    &candidate(&release, &name, rel),
                )
            });
            if !keep_old {
                chosen.insert(name, rel.to_string());
            }
            if let Some(sha) = &m.sha256 {
                shas.insert(rel.to_string(), sha.clone());
            }
        }
        let mut file = |name: &str| -> Result<Option<Vec<u8>>> {
            match image.file(&format!("{tree}/{name}")) {
                Some(b) => Ok(Some(b.to_vec())),
                None => sources.tree_file(name),
            }
        };
        let order = file("modules.order")?;
        let builtin_file = file("modules.builtin")?;
        let builtin_modinfo = file("modules.builtin.modinfo")?;
        let builtin = builtin_file
            .as_deref()
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| name_from_path(Path::new(l)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(TreeState {
            chosen,
            config,
            builtin,
            order,
            builtin_file,
            builtin_modinfo,
            tree: tree.to_string(),
            release,
            shas,
        })
    }

    /// Where a module goes (tree-relative), whether that adds, replaces or finds it
    /// present, and the in-image copy it shadows.
    fn placement(
        &self,
        name: &str,
        req: &Request,
        sha256: &str,
    ) -> (String, Action, Option<String>) {
        let new_rel = req.default_rel();
        let Some(old_rel) = self.chosen.get(name) else { return (new_rel, Action::Add, None) };
        let old_sha = self.shas.get(old_rel).map(String::as_str);
        let same_dir = parent(old_rel) == parent(&new_rel);
        let old_wins = self.config.existing_wins(
            &candidate(&self.release, name, old_rel),
            &candidate(&self.release, name, &new_rel),
        );
        if *old_rel == new_rel || same_dir || old_wins {
            // Overwrite the copy depmod would choose, at its own path.
            let action = if old_sha == Some(sha256) { Action::Present } else { Action::Replace };
            return (old_rel.clone(), action, None);
        }
        match self.shas.get(&new_rel) {
            Some(s) if s == sha256 => {
                (new_rel, Action::Present, Some(format!("{}/{old_rel}", self.tree)))
            }
            Some(_) => (new_rel, Action::Replace, Some(format!("{}/{old_rel}", self.tree))),
            None => (new_rel, Action::Add, Some(format!("{}/{old_rel}", self.tree))),
        }
    }
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

fn candidate(release: &str, name: &str, rel: &str) -> Candidate {
    Candidate {
        name: name.to_string(),
        target: PathBuf::from(format!("/lib/modules/{release}/{rel}")),
        rel: Some(rel.to_string()),
        match_len: (parent(rel).len() + usize::from(rel.contains('/')) + name.len()).min(rel.len()),
        // Only compared by path, never read.
        host: PathBuf::new(),
    }
}

/// Turns image paths into entries: resolved through the image's symlinks, with the
/// missing parent directories created first (the kernel creates no parents).
struct Placer<'a> {
    view: &'a View,
    created: Vec<Vec<u8>>,
    /// Directory entries, in creation order.
    entries: Vec<NewEntry>,
}

impl Placer<'_> {
    fn place(&mut self, path: &str) -> Result<Vec<u8>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let Some((last, dirs)) = parts.split_last() else { bail!("empty path in the image") };
        let mut base: Vec<u8> = Vec::new();
        for part in dirs {
            let mut candidate = base.clone();
            if !candidate.is_empty() {
                candidate.push(b'/');
            }
            candidate.extend_from_slice(part.as_bytes());
            if self.created.contains(&candidate) {
                base = candidate;
                continue;
            }
            match self.view.lookup(&candidate, true) {
                Some(e) if e.inode.is_dir() => base = e.path.to_vec(),
                Some(e) => bail!(
                    "{} in the image is not a directory (needed for {path})",
                    e.display_path()
                ),
                None => {
                    self.entries.push(NewEntry {
                        path: candidate.clone(),
                        mode: S_IFDIR | 0o755,
                        body: Vec::new(),
                    });
                    self.created.push(candidate.clone());
                    base = candidate;
                }
            }
        }
        if !base.is_empty() {
            base.push(b'/');
        }
        base.extend_from_slice(last.as_bytes());
        Ok(base)
    }

    #[allow(clippy::too_many_arguments)]
    fn firmware(
        &mut self,
        image: &ImageContents,
        sources: &mut dyn Sources,
        fw: &str,
        needed_by: &str,
        opts: &PlanOptions,
        entries: &mut Vec<NewEntry>,
        warnings: &mut Vec<String>,
    ) -> Result<PlannedFirmware> {
        let base = format!("lib/firmware/{fw}");
        for suffix in ["", ".xz", ".zst"] {
            let path = format!("{base}{suffix}");
            if image.has_file(&path) {
                return Ok(PlannedFirmware {
                    name: fw.into(),
                    needed_by: needed_by.into(),
                    action: "present",
                    path,
                });
            }
        }
        match sources.firmware(fw)? {
            Some((found, bytes)) => {
                let path = format!("lib/firmware/{found}");
                let resolved = self.place(&path)?;
                if !entries.iter().any(|e| e.path == resolved) {
                    entries.push(NewEntry { path: resolved, mode: S_IFREG | 0o644, body: bytes });
                }
                Ok(PlannedFirmware { name: fw.into(), needed_by: needed_by.into(), action: "add", path })
            }
            None if opts.allow_missing_firmware => {
                warnings.push(format!("firmware {fw} for {needed_by} not found under lib/firmware"));
                Ok(PlannedFirmware { name: fw.into(), needed_by: needed_by.into(), action: "missing", path: base })
            }
            None => bail!(
                "{needed_by} needs firmware {fw}, found neither in the image nor under ROOT/lib/firmware (--allow-missing-firmware to inject anyway)"
            ),
        }
    }
}

/// The image's own early-load mechanism, and the new content of its file (`None` when
/// it already lists every module).
fn early_load(image: &ImageContents, names: Vec<String>) -> (EarlyLoad, Option<Vec<u8>>) {
    let is_dracut = image.view.lookup(b"usr/lib/dracut", true).is_some()
        || image.view.lookup(b"etc/cmdline.d", true).is_some()
        || image.has_file("usr/lib/dracut-lib.sh")
        || image.has_file("lib/dracut-lib.sh");
    let is_initramfs_tools =
        image.has_file("conf/initramfs.conf") || image.has_file("scripts/functions");
    let (mechanism, path) = if is_dracut {
        ("dracut", "etc/cmdline.d/90-bootkmod.conf".to_string())
    } else if is_initramfs_tools {
        ("initramfs-tools", "conf/modules".to_string())
    } else {
        ("modules-load.d", "etc/modules-load.d/bootkmod.conf".to_string())
    };
    let resolved = image
        .view
        .lookup(path.as_bytes(), false)
        .map(|e| String::from_utf8_lossy(e.path).into_owned())
        .unwrap_or_else(|| path.clone());
    let old = image.file(&resolved).map(|b| String::from_utf8_lossy(b).into_owned());
    let new = match mechanism {
        "dracut" => format!(" rd.driver.pre={}\n", names.join(",")),
        _ => {
            let mut text = old.clone().unwrap_or_default();
            let listed: HashSet<&str> = text.lines().map(str::trim).collect();
            let missing: Vec<&String> =
                names.iter().filter(|n| !listed.contains(n.as_str())).collect();
            let mut add = String::new();
            for n in missing {
                add.push_str(n);
                add.push('\n');
            }
            if !add.is_empty() && !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text + &add
        }
    };
    let changed = old.as_deref() != Some(new.as_str());
    (EarlyLoad { mechanism, path, modules: names, changed }, changed.then(|| new.into_bytes()))
}

/// The index-driven check of a written image: each module's `modprobe` chain, resolved
/// through the image's own `modules.dep.bin`, and whether every file of it is there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chain {
    pub module: String,
    /// Tree-relative paths, in load order.
    pub load: Vec<String>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// Resolve `names` through the image's indexes under `tree`.
pub fn chains(image: &ImageContents, tree: &str, names: &[String]) -> Result<Vec<Chain>> {
    use crate::engines::depmod::probe::{Step, TreeIndexes};
    let indexes = TreeIndexes::from_files(PathBuf::from(tree), |name| {
        Ok(image.file(&format!("{tree}/{name}")).map(<[u8]>::to_vec).unwrap_or_default())
    })
    .context("reading the image's indexes")?;
    let mut out = Vec::new();
    for name in names {
        let steps = indexes.show_depends(name)?;
        let mut load = Vec::new();
        let mut missing = Vec::new();
        let mut found_self = false;
        for step in steps {
            if let Step::Insmod { name: n, path } = step {
                let p = path.to_string_lossy().into_owned();
                if !image.has_file(&p) {
                    missing.push(p.clone());
                }
                found_self |= n == *name;
                load.push(p.strip_prefix(&format!("{tree}/")).unwrap_or(&p).to_string());
            }
        }
        out.push(Chain {
            module: name.clone(),
            complete: found_self && missing.is_empty(),
            load,
            missing,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cpio::{self, EntryMeta, Format, S_IFLNK};

    /// One raw newc segment of these (name, mode, body) entries, with its trailer.
    fn segment(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut w = cpio::Writer::new(Vec::new(), Format::Newc);
        for (name, mode, body) in entries {
            w.write_entry(&EntryMeta::new(name.as_bytes(), *mode), body).unwrap();
        }
        w.finish().unwrap()
    }

    fn image(entries: &[(&str, u32, &[u8])]) -> ImageContents {
        ImageContents::read(&segment(entries)[..], "test image", Digests::All).unwrap()
    }

    #[test]
    fn resuming_after_a_prefix_reads_what_a_whole_read_does() {
        use crate::formats::cpio::S_IFDIR;
        let module = |name: &str| {
            crate::samples::SampleModule::new(name, "6.1.0-k SMP mod_unload modversions ")
                .to_elf()
                .unwrap()
        };
        let (a, b) = (module("a"), module("b"));
        let dir = S_IFDIR | 0o755;
        let file = S_IFREG | 0o644;
        let mut whole = segment(&[
            ("lib", dir, b""),
            ("lib/modules", dir, b""),
            ("lib/modules/k", dir, b""),
            ("lib/modules/k/kernel", dir, b""),
            ("lib/modules/k/kernel/a.ko", file, &a),
            ("lib/modules/k/kernel/gone.ko", file, &a),
            ("lib/modules/k/modules.dep", file, b"old\n"),
        ]);
        let prefix_len = whole.len();
        whole.extend(segment(&[
            ("lib/modules/k/modules.dep", file, b"new\n"),
            ("lib/modules/k/updates", dir, b""),
            ("lib/modules/k/updates/b.ko", file, &b),
            // A later entry of another type: the module is gone from the tree.
            ("lib/modules/k/kernel/gone.ko", S_IFLNK | 0o777, b"a.ko"),
        ]));
        let names: HashSet<String> = ["b".to_string()].into();
        let at_once = ImageContents::read(&whole[..], "whole", Digests::Named(&names)).unwrap();
        let first = ImageContents::read(&whole[..prefix_len], "first", Digests::All).unwrap();
        assert_eq!(first.end.offset, prefix_len as u64);
        assert!(first.modules.contains_key("lib/modules/k/kernel/gone.ko"));
        let resumed = first.resume(&whole[prefix_len..], "rest", Digests::Named(&names)).unwrap();

        assert_eq!(resumed.segments, at_once.segments);
        assert_eq!(resumed.end, at_once.end);
        assert_eq!(resumed.files, at_once.files);
        assert_eq!(resumed.files["lib/modules/k/modules.dep"], b"new\n");
        let listing = |c: &ImageContents| -> Vec<(String, Option<String>)> {
            c.modules.iter().map(|(p, m)| (p.clone(), m.sha256.clone())).collect()
        };
        let keys: Vec<&str> = resumed.modules.keys().map(String::as_str).collect();
        assert_eq!(keys, ["lib/modules/k/kernel/a.ko", "lib/modules/k/updates/b.ko"]);
        // Digests only where asked: `a` was hashed by the first read (All), `b` by both.
        assert_eq!(resumed.modules["lib/modules/k/updates/b.ko"].sha256, Some(sha256_hex(&b)));
        assert_eq!(at_once.modules["lib/modules/k/kernel/a.ko"].sha256, None);
        assert_eq!(listing(&at_once)[1], listing(&resumed)[1]);
        assert!(resumed.has_file("lib/modules/k/updates/b.ko"));
        let gone = resumed.view.lookup(b"lib/modules/k/kernel/gone.ko", false).unwrap();
        assert_eq!(gone.inode.file_type(), S_IFLNK);
    }

    #[test]
    fn tree_paths_split_at_the_release() {
        assert_eq!(
            tree_of("usr/lib/modules/6.1/kernel/a.ko"),
            Some(("usr/lib/modules/6.1", "kernel/a.ko"))
        );
        assert_eq!(
            tree_of("lib/modules/6.1/modules.dep"),
            Some(("lib/modules/6.1", "modules.dep"))
        );
        assert_eq!(tree_of("lib/modules/6.1"), None);
        assert_eq!(tree_of("etc/modules"), None);
    }

    #[test]
    fn placing_follows_the_lib_symlink_and_creates_missing_parents() {
        let img = image(&[
            ("usr", S_IFDIR | 0o755, b""),
            ("usr/lib", S_IFDIR | 0o755, b""),
            ("usr/lib/modules", S_IFDIR | 0o755, b""),
            ("lib", S_IFLNK | 0o777, b"usr/lib"),
        ]);
        let mut placer = Placer { view: &img.view, created: Vec::new(), entries: Vec::new() };
        let path = placer.place("lib/modules/6.1/updates/x.ko").unwrap();
        assert_eq!(path, b"usr/lib/modules/6.1/updates/x.ko");
        let dirs: Vec<&[u8]> = placer.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(dirs, [&b"usr/lib/modules/6.1"[..], b"usr/lib/modules/6.1/updates"]);
        // A second file in the same place creates nothing more.
        placer.place("lib/modules/6.1/updates/y.ko").unwrap();
        assert_eq!(placer.entries.len(), 2);
        // A file in the way of a directory is an error, not a replacement.
        let img = image(&[("etc", S_IFREG | 0o644, b"x")]);
        let mut placer = Placer { view: &img.view, created: Vec::new(), entries: Vec::new() };
        assert!(placer.place("etc/cmdline.d/a.conf").is_err());
    }

    #[test]
    fn early_load_uses_the_images_own_mechanism() {
        let tools = image(&[
            ("conf", S_IFDIR | 0o755, b""),
            ("conf/initramfs.conf", S_IFREG | 0o644, b"MODULES=most\n"),
            ("conf/modules", S_IFREG | 0o644, b"ahci"),
        ]);
        let (e, body) = early_load(&tools, vec!["hba".into(), "ahci".into()]);
        assert_eq!((e.mechanism, e.path.as_str()), ("initramfs-tools", "conf/modules"));
        assert_eq!(body.unwrap(), b"ahci\nhba\n");
        let (_, body) = early_load(
            &image(&[
                ("conf", S_IFDIR | 0o755, b""),
                ("conf/initramfs.conf", S_IFREG | 0o644, b""),
                ("conf/modules", S_IFREG | 0o644, b"hba\n"),
            ]),
            vec!["hba".into()],
        );
        assert_eq!(body, None, "already listed: nothing to write");
        let plain = image(&[("etc", S_IFDIR | 0o755, b"")]);
        let (e, body) = early_load(&plain, vec!["hba".into()]);
        assert_eq!(e.mechanism, "modules-load.d");
        assert_eq!(body.unwrap(), b"hba\n");
    }
}
