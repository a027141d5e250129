//! The doctor's verdict: will each kernel's initramfs bring up every link of the
//! [`RootChain`] and mount root? Computes; never writes.
//!
//! Flow:
//!
//! 1. [`needs`] turns the chain into what the initramfs must load, independent of any
//!    kernel ([`Need`]): per filesystem `fs-TYPE`; per bound node of a disk's device path
//!    (controller, disk-class device, bus) its modalias, as udev would look it up, with
//!    the module bound on the recorded system; per dm device `dm_mod` and its target
//!    (`dm_crypt`, `dm_multipath`); per md array `md-LEVEL`. Unbound nodes were not
//!    needed to mount root and are left out.
//! 2. Per kernel ([`judge`]): each need is resolved through *that kernel's* indexes
//!    (`engines::depmod::probe`; a newer kernel may map a modalias to another module, an
//!    out-of-tree module is found wherever depmod put it: `extra/`, `updates/`,
//!    `weak-updates/`), then looked up in the kernel's image ([`ImageIndex`], read once):
//!    the module and its whole dependency chain must be there, and for a modalias the
//!    image's own `modules.alias.bin` must map it to that module.
//! 3. The result per kernel and image is a [`KernelVerdict`]: each [`LinkVerdict`], the
//!    problems in words (naming the link and why; for a driver `bootkmod install` put in
//!    place, the check's reason from the ledger), and the modules an injection would add
//!    ([`KernelVerdict::fix`]), which `operations::doctor` carries out.
//!
//! Every image that boots a kernel and takes drivers is judged on its own
//! (`model::boot_images::receiving`): another boot entry's initrd or a UKI is what the boot loader
//! may pick, so a good primary image must not stand for them.

use crate::engines::depmod::probe::{Step, TreeIndexes};
use crate::engines::initramfs::kernel_versions;
use crate::engines::initramfs::view::View;
use crate::engines::initramfs::walk::{self, Entry, Visitor};
use crate::formats::cpio::S_IFREG;
use crate::formats::luks;
use crate::model::ledger::Ledger;
use crate::model::module::name_from_path;
use crate::model::root_chain::{DeviceKind, RootChain};
use crate::model::tree::is_module_file;
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// Filesystems every kernel has built in without listing them anywhere.
const ALWAYS_BUILT_IN: &[&str] = &["rootfs", "tmpfs", "ramfs", "proc", "sysfs", "devtmpfs"];

/// Something the initramfs must load for one link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Need {
    /// The mount point or block device it belongs to.
    pub scope: String,
    /// The link in words: `filesystem ext4`, `pci 0000:00:03.0`, `dm target CRYPT`.
    pub link: String,
    /// Names tried in order through modprobe's resolution (module name, alias or
    /// modalias).
    pub keys: Vec<String>,
    /// A device's modalias: the image's own alias index must map it (udev loads by it).
    pub modalias: bool,
    /// The module bound on the recorded system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
}

/// What the chain needs, in chain order (mounts, then each device top-down).
pub fn needs(chain: &RootChain) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    let mut push = |need: Need| {
        if !out.iter().any(|n| n.scope == need.scope && n.keys == need.keys) {
            out.push(need);
        }
    };
    let named = |scope: &str, link: String, keys: &[&str]| Need {
        scope: scope.to_string(),
        link,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        modalias: false,
        bound: None,
    };
    for mount in &chain.mounts {
        let fs = mount.fstype.as_str();
        if !ALWAYS_BUILT_IN.contains(&fs) {
            push(named(&mount.target, format!("filesystem {fs}"), &[&format!("fs-{fs}"), fs]));
        }
        let Some(top) = &mount.device else { continue };
        for dev in chain.below(top) {
            match &dev.kind {
                DeviceKind::Partition => {}
                DeviceKind::Dm { target, cipher } => {
                    push(named(&dev.name, "device mapper".into(), &["dm_mod"]));
                    let module = match target.as_str() {
                        "CRYPT" => Some("dm_crypt"),
                        "mpath" => Some("dm_multipath"),
                        _ => None,
                    };
                    if let Some(m) = module {
                        push(named(&dev.name, format!("dm target {target}"), &[m]));
                    }
                    // dm-crypt asks the kernel for each algorithm of its spec, and the
                    // kernel asks modprobe for `crypto-NAME`.
                    for key in cipher.as_deref().map(luks::crypto_modules).unwrap_or_default() {
                        let link = format!("cipher {} ({key})", cipher.as_deref().unwrap_or(""));
                        push(named(&dev.name, link, &[&key]));
                    }
                }
                DeviceKind::Md { level } => {
                    push(named(&dev.name, "md".into(), &["md_mod"]));
                    if !level.is_empty() && level != "container" {
                        push(named(&dev.name, format!("md {level}"), &[&format!("md-{level}")]));
                    }
                }
                DeviceKind::Disk => {
                    for node in dev.path.iter().filter(|n| n.driver.is_some()) {
                        let short = node.sysfs.rsplit('/').next().unwrap_or(&node.sysfs);
                        let link = format!(
                            "{} {short} [{}]",
                            node.subsystem.as_deref().unwrap_or("device"),
                            node.driver.as_deref().unwrap_or_default()
                        );
                        let (keys, modalias) = match (&node.modalias, &node.module) {
                            (Some(a), _) => (vec![a.clone()], true),
                            (None, Some(m)) => (vec![m.clone()], false),
                            // Bound to a built-in driver and no modalias: nothing to load.
                            (None, None) => continue,
                        };
                        push(Need {
                            scope: dev.name.clone(),
                            link,
                            keys,
                            modalias,
                            bound: node.module.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The state of one need on one kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Built into the kernel.
    BuiltIn,
    /// In the image with its whole chain (and mapped by its modalias).
    Present,
    /// The image would not load it.
    Missing,
    /// The kernel itself has no module for it.
    NoModule,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkVerdict {
    /// Index into the needs.
    pub need: usize,
    pub state: LinkState,
    /// The module this kernel uses for the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Worth knowing although not a risk (another module than on the recorded system).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One kernel's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelVerdict {
    pub release: String,
    /// Host path of the image judged; `None` when the kernel has none.
    pub image: Option<PathBuf>,
    /// The image's kernel tree (resolved path inside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    pub ok: bool,
    pub links: Vec<LinkVerdict>,
    /// Why root would not come up, one line each; empty when ok.
    pub problems: Vec<String>,
    /// Modules of the kernel's tree an injection would add to fix the image.
    pub fix: Vec<String>,
}

/// The parts of an image the verdict reads: the merged view, the index files of each
/// kernel tree, and the module names under each tree. Module bodies are skipped, so
/// reading costs little more than decompressing.
#[derive(Debug)]
pub struct ImageIndex {
    view: View,
    files: BTreeMap<String, Vec<u8>>,
}

impl Visitor for ImageIndex {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        let small_index = entry.header.file_type() == S_IFREG
            && entry.name.rsplit(|b| *b == b'/').next().is_some_and(|n| n.starts_with(b"modules."));
        if !small_index {
            return self.view.entry(entry, body);
        }
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)?;
        self.view.entry(entry, &mut bytes.as_slice())?;
        if let Some(found) = self.view.lookup(&entry.name, false) {
            self.files.insert(String::from_utf8_lossy(found.path).into_owned(), bytes);
        }
        Ok(())
    }
}

impl ImageIndex {
    /// Walk an image once (the kernel's unpacking rules). `source` names it in errors.
    pub fn read<R: BufRead + Send>(image: R, source: &str) -> Result<ImageIndex> {
        let mut index = ImageIndex { view: View::new(), files: BTreeMap::new() };
        walk::walk(image, source, &mut index)?;
        Ok(index)
    }

    /// Read the image file at `path` (a UKI through its `.initrd`).
    pub fn open(path: &Path) -> Result<ImageIndex> {
        let (initramfs, _) = crate::model::uki::open_initramfs(path)?;
        ImageIndex::read(std::io::BufReader::new(initramfs), &path.display().to_string())
    }

    /// The tree of `release` in the image: its path, indexes and module names.
    fn tree(&self, release: &str) -> Result<std::result::Result<ImageTree, String>> {
        let trees = kernel_versions(&self.view);
        let Some(t) = trees.iter().find(|t| t.release == release) else {
            let held: Vec<&str> = trees.iter().map(|t| t.release.as_str()).collect();
            return Ok(Err(if held.is_empty() {
                "the image holds no kernel modules at all".to_string()
            } else {
                format!("the image holds modules of {}, not of {release}", held.join(", "))
            }));
        };
        let prefix = format!("{}/", t.path);
        let indexes = TreeIndexes::from_files(PathBuf::from(&t.path), |name| {
            Ok(self.files.get(&format!("{prefix}{name}")).cloned().unwrap_or_default())
        })?;
        let modules = self
            .view
            .entries()
            .filter(|e| e.inode.file_type() == S_IFREG && e.path.starts_with(prefix.as_bytes()))
            .map(|e| String::from_utf8_lossy(e.path).into_owned())
            .filter(|p| is_module_file(p))
            .map(|p| name_from_path(Path::new(&p)))
            .collect();
        Ok(Ok(ImageTree { path: t.path.clone(), indexes, modules }))
    }

    /// The image's merged tree, as the kernel unpacks it.
    pub fn view(&self) -> &View {
        &self.view
    }

    fn has_file(&self, path: &Path) -> bool {
        self.view
            .lookup(path.to_string_lossy().as_bytes(), true)
            .is_some_and(|e| e.inode.file_type() == S_IFREG)
    }
}

struct ImageTree {
    path: String,
    indexes: TreeIndexes,
    modules: HashSet<String>,
}

/// What one kernel offers: its tree's indexes, its image (if any), and bootkmod's
/// ledger entries for it.
pub struct KernelInput<'a> {
    pub release: &'a str,
    pub host: &'a TreeIndexes,
    /// Host path and contents of the image; `Err` holds why it could not be read.
    pub image: Option<(PathBuf, std::result::Result<&'a ImageIndex, String>)>,
    pub ledger: &'a Ledger,
}

/// Module names (non-built-in) a name resolves to, and whether it is built in.
fn resolve(indexes: &TreeIndexes, keys: &[String]) -> Result<(String, Vec<(String, bool)>)> {
    for key in keys {
        let found = indexes.resolve(key)?;
        if !found.is_empty() {
            return Ok((key.clone(), found));
        }
    }
    Ok((keys.first().cloned().unwrap_or_default(), Vec::new()))
}

/// Module names `module` loads (itself last), as modprobe would from these indexes.
fn closure(indexes: &TreeIndexes, module: &str) -> Result<Vec<(String, Option<PathBuf>)>> {
    Ok(indexes
        .show_depends(module)?
        .into_iter()
        .map(|s| match s {
            Step::Insmod { name, path, .. } => (name, Some(path)),
            Step::Install { name, .. } | Step::Builtin { name } => (name, None),
        })
        .collect())
}

/// Judge every need on one kernel.
pub fn judge(chain_needs: &[Need], input: &KernelInput) -> Result<KernelVerdict> {
    let release = input.release;
    let ledger_kernel = input.ledger.kernels.get(release);
    let refusal = |module: &str| -> Option<String> {
        let on = ledger_kernel?.modules.get(module)?;
        (!on.usable_on_boot()).then(|| {
            on.reasons.first().cloned().unwrap_or_else(|| "refused by bootkmod check".into())
        })
    };
    let (image_path, image_tree) = match &input.image {
        None => (None, Err("the kernel has no initramfs".to_string())),
        Some((p, Err(e))) => (Some(p.clone()), Err(e.clone())),
        Some((p, Ok(index))) => (Some(p.clone()), index.tree(release)?.map(|t| (*index, t))),
    };
    let mut links = Vec::new();
    let mut problems = Vec::new();
    let mut fix: Vec<String> = Vec::new();
    for (i, need) in chain_needs.iter().enumerate() {
        let mut verdict = LinkVerdict {
            need: i,
            state: LinkState::Present,
            module: None,
            reason: None,
            note: None,
        };
        let (key, mut found) = resolve(input.host, &need.keys)?;
        if !need.modalias {
            // Asked for by name, by the kernel or the image's scripts: a built-in
            // provider settles it, as the kernel never asks for what it has.
            for k in &need.keys {
                found.extend(input.host.builtin_providers(k)?.into_iter().map(|m| (m, true)));
            }
        }
        if found.iter().any(|(_, builtin)| *builtin) {
            verdict.state = LinkState::BuiltIn;
            verdict.module = found.iter().find(|(_, b)| *b).map(|(m, _)| m.clone());
            links.push(verdict);
            continue;
        }
        // What this kernel would use: the recorded module when it still matches,
        // otherwise whatever the kernel's own indexes name.
        let mut wanted: Vec<String> =
            found.iter().filter(|(_, b)| !b).map(|(m, _)| m.clone()).collect();
        wanted.dedup();
        if let Some(bound) = &need.bound {
            if wanted.contains(bound)
                || (wanted.is_empty() && !input.host.resolve(bound)?.is_empty())
            {
                wanted = vec![bound.clone()];
            } else if !wanted.is_empty() {
                verdict.note = Some(format!(
                    "kernel {release} maps {key} to {}, not to {bound} as on the recorded system",
                    wanted.join(", ")
                ));
            }
        }
        if let Some(w) = wanted.first() {
            if let Some(why) = refusal(w) {
                let n = format!("bootkmod's {w} is not usable on {release} ({why}); the kernel's own {w} is used");
                verdict.note = Some(n);
            }
        }
        if wanted.is_empty() {
            verdict.state = LinkState::NoModule;
            let why = match need.bound.as_deref().map(|b| (b, refusal(b))) {
                Some((b, Some(why))) => {
                    format!("kernel {release} has no usable {b}: bootkmod check: {why}")
                }
                Some((b, None)) => format!(
                    "kernel {release} has no module for it ({key}; {b} on the recorded system)"
                ),
                None => format!("kernel {release} has no module {key}"),
            };
            problems.push(format!("{} {}: {why}", need.scope, need.link));
            verdict.reason = Some(why);
            links.push(verdict);
            continue;
        }
        let (image, tree) = match &image_tree {
            Ok((image, t)) => (*image, t),
            Err(why) => {
                verdict.state = LinkState::Missing;
                verdict.module = wanted.first().cloned();
                verdict.reason = Some(why.clone());
                links.push(verdict);
                continue;
            }
        };
        // The first wanted module the image would really load, else why the best fails.
        // Looked up by alias (a modalias, `fs-xfs`, `crypto-xts`): the kernel's or
        // udev's modprobe goes through the image's own alias index.
        let by_alias = need.modalias
            || !found.iter().any(|(m, _)| m.replace('-', "_") == key.replace('-', "_"));
        let image_found: Vec<String> = if by_alias {
            tree.indexes.resolve(&key)?.into_iter().map(|(m, _)| m).collect()
        } else {
            Vec::new()
        };
        let mut failure: Option<String> = None;
        let mut chosen = None;
        for w in &wanted {
            match image_loads(input.host, image, tree, w, by_alias.then_some((&key, &image_found)))?
            {
                Ok(()) => {
                    chosen = Some(w.clone());
                    break;
                }
                Err(why) => {
                    failure.get_or_insert(why);
                }
            }
        }
        match chosen {
            Some(m) => verdict.module = Some(m),
            None => {
                let w = wanted[0].clone();
                let why = failure.unwrap_or_default();
                verdict.state = LinkState::Missing;
                problems.push(format!("{} {}: {why}", need.scope, need.link));
                verdict.reason = Some(why);
                if !fix.contains(&w) {
                    fix.push(w.clone());
                }
                verdict.module = Some(w);
            }
        }
        links.push(verdict);
    }
    if let Err(why) = &image_tree {
        if links.iter().any(|l| l.state == LinkState::Missing) {
            problems.insert(0, why.clone());
            fix.clear();
        }
    }
    // What status knows: a root-critical driver bootkmod installed but cannot use here.
    for (name, m) in input.ledger.modules.iter().filter(|(_, m)| m.root_critical) {
        if let Some(why) = refusal(name) {
            let used = links.iter().any(|l| {
                l.module.as_deref() == Some(name.as_str()) && l.state != LinkState::NoModule
            });
            // A link left without a module already gave this reason.
            let told = links.iter().any(|l| {
                l.state == LinkState::NoModule
                    && chain_needs[l.need].bound.as_deref() == Some(name.as_str())
            });
            if !used && !told {
                problems.push(format!(
                    "root-critical driver {} installed by bootkmod is not usable on {release}: {why}",
                    m.name
                ));
            }
        }
    }
    let (tree, image) = (image_tree.as_ref().ok().map(|(_, t)| t.path.clone()), image_path);
    Ok(KernelVerdict {
        release: release.to_string(),
        image,
        tree,
        ok: problems.is_empty(),
        links,
        problems,
        fix,
    })
}

/// The modules `module` needs by `modules.dep` (its whole line: depmod lists the
/// transitive closure), not its soft dependencies.
fn hard_deps(indexes: &TreeIndexes, module: &str) -> Result<Vec<String>> {
    if indexes.dep.is_empty() {
        return Ok(Vec::new());
    }
    let index = crate::formats::kmod_index::Index::parse(&indexes.dep)?;
    let Some(line) = index.lookup(module)?.into_iter().next() else { return Ok(Vec::new()) };
    let deps = line.value.split_once(':').map_or("", |(_, d)| d);
    Ok(deps.split_whitespace().map(|d| name_from_path(Path::new(d))).collect())
}

/// Would the image load `module` (and everything it needs)? `alias` is the modalias
/// and what the image's own alias index maps it to.
fn image_loads(
    host: &TreeIndexes,
    image: &ImageIndex,
    tree: &ImageTree,
    module: &str,
    alias: Option<(&String, &Vec<String>)>,
) -> Result<std::result::Result<(), String>> {
    if !tree.modules.contains(module) {
        return Ok(Err(format!("{module} is not in the image")));
    }
    // Everything the kernel's own tree says it needs (modules.dep; soft dependencies
    // are optional) must be in the image...
    for dep in hard_deps(host, module)? {
        if !tree.modules.contains(&dep) {
            return Ok(Err(format!("{module} needs {dep}, which is not in the image")));
        }
    }
    // ...and the image's own indexes must lead to the files.
    let in_image = closure(&tree.indexes, module)?;
    if !in_image.iter().any(|(n, _)| n == module) {
        return Ok(Err(format!("the image's modules.dep.bin does not list {module}")));
    }
    if let Some(p) = in_image.iter().filter_map(|(_, p)| p.as_ref()).find(|p| !image.has_file(p)) {
        return Ok(Err(format!(
            "the image's modules.dep.bin names {}, which is not in the image",
            p.display()
        )));
    }
    if let Some((key, mapped)) = alias {
        if !mapped.iter().any(|m| m == module) {
            return Ok(Err(format!(
                "the image's modules.alias.bin does not map {key} to {module}"
            )));
        }
    }
    Ok(Ok(()))
}

/// Which kernels to judge, and against which image.
#[derive(Debug, Clone, Default)]
pub struct ExamineOptions {
    /// Only these kernels (default: every kernel with a tree under the root).
    pub kernels: Vec<String>,
    /// Judge this image (host path) instead of the kernel's own; one kernel only.
    pub image: Option<PathBuf>,
}

/// The whole answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Examination {
    pub at_risk: bool,
    pub chain: RootChain,
    pub needs: Vec<Need>,
    pub kernels: Vec<KernelVerdict>,
}

/// Judge `chain_needs` on kernel `release` of `root` (its tree's indexes) and `image`
/// (host path and contents, or why they could not be read; `None`: no image).
/// `status` calls it with the image it has read already.
pub fn examine_kernel(
    root: &crate::model::root::Root,
    chain_needs: &[Need],
    ledger: &Ledger,
    release: &str,
    image: Option<(PathBuf, std::result::Result<&ImageIndex, String>)>,
) -> Result<KernelVerdict> {
    let host = TreeIndexes::load(root, release)?;
    if host.dep.is_empty() {
        anyhow::bail!(
            "{}: no modules.dep.bin (run depmod {release})",
            root.shown(crate::engines::depmod::tree_dir(release)).display()
        );
    }
    judge(chain_needs, &KernelInput { release, host: &host, image, ledger })
}

/// Judge `chain` on the kernels of `root`, each image of each kernel
/// (`model::boot_images::receiving`) on a thread of its own (decompressing an image is most of the
/// cost).
pub fn examine(
    root: &crate::model::root::Root,
    chain: &RootChain,
    ledger: &Ledger,
    opts: &ExamineOptions,
) -> Result<Examination> {
    let releases = if opts.kernels.is_empty() {
        crate::model::kernel::releases(root)?
            .into_iter()
            .filter(|r| !ledger.removed_kernels.contains(r))
            .collect()
    } else {
        opts.kernels.clone()
    };
    if releases.is_empty() {
        anyhow::bail!("no kernel under {}", root.shown("/lib/modules").display());
    }
    if opts.image.is_some() && releases.len() != 1 {
        anyhow::bail!("--image judges one kernel's image: name the kernel with --kver");
    }
    let chain_needs = needs(chain);
    // One verdict per kernel and image (host paths; `None`: the kernel has no image).
    let mut jobs: Vec<(&str, Option<PathBuf>)> = Vec::new();
    for release in &releases {
        match &opts.image {
            Some(p) => jobs.push((release, Some(p.clone()))),
            None => {
                let images = crate::model::boot_images::receiving(root, release);
                if images.is_empty() {
                    jobs.push((release, None));
                }
                for p in images {
                    jobs.push((release, Some(root.host(p)?)));
                }
            }
        }
    }
    let one = |release: &str, image_path: Option<PathBuf>| -> Result<KernelVerdict> {
        let index = image_path.as_ref().map(|p| ImageIndex::open(p).map_err(|e| format!("{e:#}")));
        let image = match (image_path, &index) {
            (Some(p), Some(r)) => Some((p, r.as_ref().map_err(Clone::clone))),
            _ => None,
        };
        examine_kernel(root, &chain_needs, ledger, release, image)
    };
    let one = &one;
    let kernels: Vec<KernelVerdict> = std::thread::scope(|s| {
        let handles: Vec<_> =
            jobs.into_iter().map(|(r, image)| s.spawn(move || one(r, image))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a kernel's check panicked"))))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Examination {
        at_risk: kernels.iter().any(|k| !k.ok),
        chain: chain.clone(),
        needs: chain_needs,
        kernels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::root_chain::{BlockDevice, ChainMount, DeviceNode};

    fn chain() -> RootChain {
        let node = |sysfs: &str,
                    sub: &str,
                    driver: Option<&str>,
                    module: Option<&str>,
                    alias: Option<&str>| DeviceNode {
            sysfs: sysfs.into(),
            subsystem: Some(sub.into()),
            driver: driver.map(Into::into),
            module: module.map(Into::into),
            modalias: alias.map(Into::into),
        };
        let mut devices = BTreeMap::new();
        devices.insert(
            "dm-0".to_string(),
            BlockDevice {
                name: "dm-0".into(),
                kind: DeviceKind::Dm { target: "CRYPT".into(), cipher: None },
                lower: vec!["md0".into()],
                path: vec![],
            },
        );
        devices.insert(
            "md0".to_string(),
            BlockDevice {
                name: "md0".into(),
                kind: DeviceKind::Md { level: "raid1".into() },
                lower: vec!["sda".into()],
                path: vec![],
            },
        );
        devices.insert(
            "sda".to_string(),
            BlockDevice {
                name: "sda".into(),
                kind: DeviceKind::Disk,
                lower: vec![],
                path: vec![
                    node(
                        "pci0000:00/0000:00:03.0/host0/0:0:0:0",
                        "scsi",
                        Some("sd"),
                        Some("sd_mod"),
                        Some("scsi:t-0x00"),
                    ),
                    node("pci0000:00/0000:00:03.0/host0", "scsi", None, None, None),
                    node(
                        "pci0000:00/0000:00:03.0",
                        "pci",
                        Some("megaraid_sas"),
                        Some("megaraid_sas"),
                        Some("pci:v00001000d00000060sv00001000sd00001013bc01sc04i00"),
                    ),
                    node("pci0000:00/0000:00:01.0", "pci", Some("pcieport"), None, None),
                ],
            },
        );
        RootChain {
            format: 1,
            recorded_on: "k".into(),
            mounts: vec![ChainMount {
                target: "/".into(),
                fstype: "ext4".into(),
                device: Some("dm-0".into()),
                why: "root".into(),
            }],
            devices,
        }
    }

    #[test]
    fn needs_follow_the_chain_top_down_and_skip_unbound_nodes() {
        let n = needs(&chain());
        let links: Vec<&str> = n.iter().map(|n| n.link.as_str()).collect();
        assert_eq!(
            links,
            [
                "filesystem ext4",
                "device mapper",
                "dm target CRYPT",
                "md",
                "md raid1",
                "scsi 0:0:0:0 [sd]",
                "pci 0000:00:03.0 [megaraid_sas]"
            ]
        );
        assert_eq!(n[0].keys, ["fs-ext4", "ext4"]);
        assert_eq!(n[4].keys, ["md-raid1"]);
        assert!(n[6].modalias);
        assert_eq!(n[6].bound.as_deref(), Some("megaraid_sas"));
    }
}
