//! The plan: the requests checked as a set, closed over `depends=`, `softdep=` and the
//! disk-class driver, placed, their firmware found, the image's indexes regenerated.

use super::early_load::{early_load, EarlyLoad};
use super::place::{Placer, TreeState};
use super::read::ImageContents;
use crate::engines::compat::{self, Verdict};
use crate::engines::depmod::{DepModule, Graph, Inputs};
use crate::formats::compression::{self, Compression};
use crate::formats::cpio::S_IFREG;
use crate::model::kernel::Kernel;
use crate::model::module::{content_sha256, Module};
use crate::model::tree::module_codec;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

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
    pub(super) fn file_name(&self) -> String {
        let path = match &self.origin {
            Origin::File { path } | Origin::Tree { path, .. } => path,
        };
        path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    }

    pub(super) fn default_rel(&self) -> String {
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
    /// Replaces the image's copy at the same path (whose content had another sha256),
    /// encoded as that path's name says.
    Replace,
    /// Already in the image with the same content (sha256 once decompressed).
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
    /// Of the content once decompressed: the same module as `.ko` or `.ko.xz`.
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
        // Identity is the content the kernel receives, whatever codec stores it.
        let sha256 = content_sha256(&req.bytes)
            .with_context(|| format!("{}: cannot decompress", req.file_name()))?;
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
            let body = stored_as(&rel, &req.bytes)
                .with_context(|| format!("{}: cannot re-encode for {path}", req.file_name()))?;
            file_entries.push(NewEntry { path: resolved, mode: S_IFREG | 0o644, body });
            chosen.insert(name.clone(), rel.clone());
            written.push((rel.clone(), Arc::new(req.module.clone())));
        }
        // What this module pulls in.
        let mut wanted: Vec<(String, Why)> = Vec::new();
        for d in req.module.modinfo.depends() {
            wanted.push((d.replace('-', "_"), Why::Dependency { of: name.clone() }));
        }
        for s in softdep_names(image, &name, &req.module) {
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
    let mut index_entries = regenerated_indexes(
        image,
        &state,
        &chosen,
        &written,
        &mut placer,
        &mut plan.indexes,
        &mut plan.warnings,
    )?;
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

/// The image's index files for the module set `chosen` (name → tree-relative path;
/// `written` are the modules the plan adds, the rest are the image's), as entries for
/// the files whose bytes change; their names go to `indexes`.
pub(super) fn regenerated_indexes(
    image: &ImageContents,
    state: &TreeState,
    chosen: &BTreeMap<String, String>,
    written: &[(String, Arc<Module>)],
    placer: &mut Placer,
    indexes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<NewEntry>> {
    let (tree, release) = (&state.tree, &state.release);
    let mut modules: Vec<DepModule> = Vec::new();
    for (name, rel) in chosen {
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
    warnings.extend(graph.warnings.iter().cloned());
    let mut entries = Vec::new();
    for (name, bytes) in graph.files()? {
        let path = format!("{tree}/{name}");
        if image.file(&path) != Some(bytes.as_slice()) {
            indexes.push(name.to_string());
            let resolved = placer.place(&path)?;
            entries.push(NewEntry { path: resolved, mode: S_IFREG | 0o644, body: bytes });
        }
    }
    Ok(entries)
}

/// A module's bytes as a file at `rel` must hold them: encoded with the codec its name
/// promises (`.ko.xz` xz with CRC32, `.ko.zst` zstd, `.ko.gz` gzip, `.ko` none). A
/// module placed over an existing name keeps that name, so an uncompressed input over
/// `x.ko.xz` is compressed, and xz data over `x.ko` decompressed: kmod sniffs content,
/// but `xz -t`, rpm and people go by the name.
fn stored_as(rel: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let want = module_codec(rel).unwrap_or(Compression::None);
    if Compression::detect(bytes) == want {
        return Ok(bytes.to_vec());
    }
    let content = compression::decode_all(bytes, compression::MAX_DECODED_MODULE)?;
    compression::encode_all(want, &content)
}

/// The soft dependencies modprobe in the image will load around module `name`:
/// libkmod takes the first `softdep` line matching the name, reading the image's
/// modprobe.d files and `modules.softdep` (which will hold the module's own
/// `softdep=` lines) in file-name order. Names only (`pre:`/`post:` dropped).
fn softdep_names(image: &ImageContents, name: &str, m: &Module) -> Vec<String> {
    let own: String =
        m.modinfo.values("softdep").map(|v| format!("softdep {name} {v}\n")).collect();
    let config = image.modprobe_config(Some(own.as_bytes()));
    config
        .softdeps_of(name)
        .map(|(pre, post)| pre.iter().chain(post).map(|w| w.replace('-', "_")).collect())
        .unwrap_or_default()
}
