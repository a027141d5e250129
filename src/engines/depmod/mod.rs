//! Native depmod: the module dependency graph of a kernel tree and the `modules.*`
//! indexes kmod's depmod would write for it, byte for byte.
//!
//! Flow:
//!
//! 1. [`config::Config::load`] reads `depmod.d` (search order, overrides, externals).
//! 2. [`scan::scan`] walks the tree and picks one file per module name.
//! 3. [`read_tree`] reads the chosen modules in parallel (no digests) plus the kernel
//!    package's inputs: `modules.order`, `modules.builtin`, `modules.builtin.modinfo`.
//! 4. [`Graph::build`] orders the modules as depmod does (kmod's hash order, then
//!    `modules.order`), resolves every needed symbol to the module exporting it, sorts
//!    the graph topologically (refusing cycles) and computes each module's full
//!    dependency list.
//! 5. [`Graph::files`] renders every index file (see `output`); writing them is the
//!    job of `operations::depmod`.
//!
//! Order matters everywhere: a module's position is its priority in the `.bin`
//! indexes, dependency lists are sorted by the topological order, and
//! `modules.symbols` follows kmod's hash-table iteration order ([`kmod_hash`]).

pub mod config;
pub mod kmod_hash;
pub mod output;
pub mod probe;
pub mod scan;

use crate::model::module::{Module, ReadOptions, VersionsLayout};
use crate::model::root::Root;
use anyhow::{bail, Context, Result};
use config::{Candidate, Config};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// FNV-1a for the symbol map: tens of thousands of short trusted keys, where SipHash
/// showed up in profiles.
#[derive(Default, Clone, Copy)]
struct FastHash;

struct Fnv(u64);

impl std::hash::BuildHasher for FastHash {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Bucket counts of kmod's depmod hash tables (module names, symbols).
const MODULE_BUCKETS: u32 = 512;
const SYMBOL_BUCKETS: u32 = 2048;

/// One module of the graph.
#[derive(Debug, Clone)]
pub struct DepModule {
    /// Module name as kmod derives it from the file name.
    pub name: String,
    /// Target-absolute path as found (a `weak-updates/` symlink stays a symlink path).
    pub target: PathBuf,
    /// Path relative to the tree (`kernel/fs/ext4/ext4.ko`), when inside it.
    pub rel: Option<String>,
    /// Shared: an injection plan indexes the modules it already holds for the image.
    pub module: Arc<Module>,
}

impl DepModule {
    /// How indexes name the file: relative to the tree, else absolute.
    pub fn index_path(&self) -> String {
        match &self.rel {
            Some(r) => r.clone(),
            None => self.target.to_string_lossy().into_owned(),
        }
    }
}

/// What the graph is computed from.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Modules in discovery order (one per name).
    pub modules: Vec<DepModule>,
    /// `modules.order` from the kernel package.
    pub order: Option<Vec<u8>>,
    /// `modules.builtin`.
    pub builtin: Option<Vec<u8>>,
    /// `modules.builtin.modinfo`.
    pub builtin_modinfo: Option<Vec<u8>>,
}

/// The computed dependency graph, in depmod's module order.
#[derive(Debug)]
pub struct Graph {
    pub modules: Vec<DepModule>,
    /// Every module's full dependency list (indexes into `modules`), in the order
    /// `modules.dep` lists them (users before providers).
    pub deps: Vec<Vec<usize>>,
    /// Exported symbol → owning module, in kmod's hash iteration order.
    pub symbols: Vec<(String, usize)>,
    pub builtin: Option<Vec<u8>>,
    pub builtin_modinfo: Option<Vec<u8>>,
    /// Non-fatal findings (bad config lines, unreadable entries, corrupt order file).
    pub warnings: Vec<String>,
}

/// Read everything depmod needs from `root` for kernel `release`.
pub fn read_tree(root: &Root, release: &str) -> Result<(Inputs, Vec<String>)> {
    let config = Config::load(root, release)?;
    let mut warnings = config.warnings.clone();
    let tree = PathBuf::from("/lib/modules").join(release);
    let candidates = scan::scan(root, &tree, &config, &mut warnings)?;
    let modules = read_modules(candidates, &mut warnings);
    let read_opt = |name: &str| -> Result<Option<Vec<u8>>> {
        let path = root.host(tree.join(name))?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    };
    let inputs = Inputs {
        modules,
        order: read_opt("modules.order")?,
        builtin: read_opt("modules.builtin")?,
        builtin_modinfo: read_opt("modules.builtin.modinfo")?,
    };
    Ok((inputs, warnings))
}

/// Read the chosen files on every core ([`Module::read_many`]): parsing thousands of
/// modules dominates depmod. A file that cannot be read or parsed is left out with a
/// warning naming it, as kmod's depmod reports it and carries on.
fn read_modules(candidates: Vec<Candidate>, warnings: &mut Vec<String>) -> Vec<DepModule> {
    let hosts: Vec<PathBuf> = candidates.iter().map(|c| c.host.clone()).collect();
    let modules = Module::read_many(&hosts, ReadOptions::default());
    let mut out = Vec::with_capacity(candidates.len());
    for (c, m) in candidates.into_iter().zip(modules) {
        match m {
            Ok(m) => out.push(DepModule {
                name: c.name,
                target: c.target,
                rel: c.rel,
                module: Arc::new(m),
            }),
            Err(e) => warnings.push(format!("{}: skipped: {e:#}", c.target.display())),
        }
    }
    out
}

impl Graph {
    /// Order, resolve and sort. Fails on dependency cycles, naming them.
    pub fn build(inputs: Inputs) -> Result<Graph> {
        let mut warnings = Vec::new();
        let mut modules = inputs.modules;
        let mut seen = HashSet::new();
        for m in &modules {
            if !seen.insert(m.name.as_str()) {
                bail!("module {} given twice ({})", m.name, m.target.display());
            }
        }
        if modules.len() >= u16::MAX as usize {
            bail!("{} modules: kmod's index format supports fewer than 65535", modules.len());
        }
        kmod_hash::sort_in_hash_order(&mut modules, MODULE_BUCKETS, |m| &m.name);
        if let Some(order) = &inputs.order {
            sort_by_order(&mut modules, order, &mut warnings);
        }

        // Exported symbols: a later module in the order replaces an earlier owner.
        let mut owner: HashMap<&str, usize, FastHash> = HashMap::default();
        for (i, m) in modules.iter().enumerate() {
            for e in &m.module.exports {
                owner.insert(e.name.as_str(), i);
            }
        }
        let mut symbols: Vec<(String, usize)> =
            owner.iter().map(|(name, &i)| (name.to_string(), i)).collect();
        kmod_hash::sort_in_hash_order(&mut symbols, SYMBOL_BUCKETS, |s| &s.0);

        // Direct dependencies, in the order each provider is first needed.
        let mut direct: Vec<Vec<usize>> = vec![Vec::new(); modules.len()];
        let mut users = vec![0usize; modules.len()];
        for (i, m) in modules.iter().enumerate() {
            for sym in needed_symbols(&m.module) {
                let sym = sym.strip_prefix('.').unwrap_or(sym);
                if let Some(&provider) = owner.get(sym) {
                    if !direct[i].contains(&provider) {
                        direct[i].push(provider);
                        users[provider] += 1;
                    }
                }
            }
        }
        let rank = topological_rank(&modules, &direct, users)?;
        let deps = (0..modules.len()).map(|i| all_dependencies(i, &direct, &rank)).collect();
        drop(owner);
        Ok(Graph {
            modules,
            deps,
            symbols,
            builtin: inputs.builtin,
            builtin_modinfo: inputs.builtin_modinfo,
            warnings,
        })
    }

    /// Every index file kmod's depmod writes, name and content, plus
    /// `modules.weakdep` when a module declares weak dependencies.
    pub fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        output::render(self)
    }

    /// The module at `index` by name.
    pub fn find(&self, name: &str) -> Option<usize> {
        let name = name.replace('-', "_");
        self.modules.iter().position(|m| m.name == name)
    }
}

/// Compute the graph of a tree in one call.
pub fn compute(root: &Root, release: &str) -> Result<Graph> {
    let (inputs, warnings) = read_tree(root, release)?;
    let mut graph = Graph::build(inputs)?;
    graph.warnings.splice(0..0, warnings);
    Ok(graph)
}

/// The symbols libkmod reports a module as needing: its undefined symbols in table
/// order, then `__versions` entries no undefined symbol claimed (`module_layout`).
fn needed_symbols(m: &Module) -> Vec<&str> {
    let mut out: Vec<&str> = m.undefined.iter().map(String::as_str).collect();
    if m.versions_layout == Some(VersionsLayout::Classic) {
        let undefined: HashSet<&str> = out.iter().copied().collect();
        let mut claimed = HashSet::new();
        for v in &m.versions {
            let first = claimed.insert(v.symbol.as_str());
            if !(first && undefined.contains(v.symbol.as_str())) {
                out.push(v.symbol.as_str());
            }
        }
    }
    out
}

/// Stable sort by position in `modules.order` (listed modules first, in file order).
/// A file whose last line lacks its newline is corrupt: kmod then keeps hash order.
fn sort_by_order(modules: &mut Vec<DepModule>, order: &[u8], warnings: &mut Vec<String>) {
    if !order.is_empty() && !order.ends_with(b"\n") {
        warnings.push("modules.order: last line misses '\\n', file ignored".into());
        return;
    }
    let lines: Vec<&[u8]> = order.split(|&b| b == b'\n').collect();
    let lines = &lines[..lines.len().saturating_sub(1)];
    let total = lines.len() as i64 + 1;
    let mut by_uncompressed: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, m) in modules.iter().enumerate() {
        if let Some(rel) = &m.rel {
            by_uncompressed.insert(uncompressed_rel(rel, &m.name), i);
        }
    }
    let mut sort_idx = vec![1i64; modules.len()];
    for (n, line) in lines.iter().enumerate() {
        if let Some(&i) = by_uncompressed.get(*line) {
            sort_idx[i] = n as i64 + 1 - total;
        }
    }
    let mut keyed: Vec<(i64, DepModule)> = sort_idx.into_iter().zip(modules.drain(..)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    modules.extend(keyed.into_iter().map(|(_, m)| m));
}

/// kmod matches `modules.order` lines against the path with the compression suffix
/// cut: directory, then as many file-name bytes as the module name, then `.ko`.
fn uncompressed_rel(rel: &str, name: &str) -> Vec<u8> {
    let dir_len = rel.rfind('/').map_or(0, |p| p + 1);
    let len = (dir_len + name.len() + 3).min(rel.len());
    rel.as_bytes()[..len].to_vec()
}

/// kmod's topological sort: modules nobody uses first, a LIFO of ready modules, each
/// module's providers released in the order it first needed them. Returns each
/// module's rank; cycles are an error naming each of them, as kmod's depmod reports
/// them ([`find_cycles`]).
fn topological_rank(
    modules: &[DepModule],
    direct: &[Vec<usize>],
    mut users: Vec<usize>,
) -> Result<Vec<usize>> {
    let mut rank = vec![usize::MAX; modules.len()];
    let mut ready: Vec<usize> = (0..modules.len()).filter(|&i| users[i] == 0).collect();
    let mut sorted = 0;
    while let Some(i) = ready.pop() {
        rank[i] = sorted;
        sorted += 1;
        for &d in &direct[i] {
            users[d] -= 1;
            if users[d] == 0 {
                ready.push(d);
            }
        }
    }
    if sorted < modules.len() {
        let (cycles, in_cycles) = find_cycles(direct, &users);
        let named: Vec<String> = cycles
            .iter()
            .map(|c| c.iter().map(|&i| modules[i].name.as_str()).collect::<Vec<_>>().join(" -> "))
            .collect();
        bail!("{in_cycles} modules in dependency cycles: {}", named.join("; "));
    }
    Ok(rank)
}

/// Bound on the paths [`find_cycles`] walks: the walk enumerates paths, not vertices,
/// and a dense knot of cycles has very many.
const CYCLE_WALK_BUDGET: usize = 1 << 20;

/// The cycles among the modules the sort could not place, named as kmod's depmod
/// names them, and the number of distinct modules in them (kmod's "Found N modules in
/// dependency cycles", which leaves out modules merely used by a cycle).
///
/// kmod's walk: the stuck modules (users left) in module order are candidate starts;
/// from each start still listed, a depth-first walk (LIFO, providers pushed in the
/// order first needed) follows dependencies; each time it comes back to the start, the
/// path is one cycle (`start -> ... -> start`) and its members stop being starts. A
/// module with no dependencies stops being a start when reached. Where kmod would
/// report a start reached again by an earlier walk as a one-module "cycle" (a stuck
/// module behind a cycle that itself has dependencies), nothing is reported; where
/// kmod would walk a cycle not through the start forever, the walk does not descend
/// into a module already on its path.
fn find_cycles(direct: &[Vec<usize>], users: &[usize]) -> (Vec<Vec<usize>>, usize) {
    let mut starts: Vec<usize> = (0..users.len()).filter(|&i| users[i] > 0).collect();
    let mut visited = vec![false; users.len()];
    let mut in_cycles: HashSet<usize> = HashSet::new();
    let mut cycles = Vec::new();
    let mut budget = CYCLE_WALK_BUDGET;
    while !starts.is_empty() {
        let start = starts.remove(0);
        // Vertices: (module, parent vertex); a path is a chain of parents.
        let mut vertices: Vec<(usize, Option<usize>)> = vec![(start, None)];
        let mut stack = vec![0usize];
        while let Some(v) = stack.pop() {
            let (m, parent) = vertices[v];
            if visited[m] && m == start {
                let Some(mut at) = parent else { continue };
                let mut path = vec![start];
                loop {
                    let (pm, pp) = vertices[at];
                    path.push(pm);
                    in_cycles.insert(pm);
                    starts.retain(|&s| s != pm);
                    match pp {
                        Some(p) => at = p,
                        None => break,
                    }
                }
                path.reverse();
                cycles.push(path);
                continue;
            }
            visited[m] = true;
            if direct[m].is_empty() {
                starts.retain(|&s| s != m);
                continue;
            }
            for &d in &direct[m] {
                let mut on_path = false;
                let mut at = Some(v);
                while let Some(a) = at {
                    if vertices[a].0 == d && d != start {
                        on_path = true;
                        break;
                    }
                    at = vertices[a].1;
                }
                if on_path || budget == 0 {
                    continue;
                }
                budget -= 1;
                vertices.push((d, Some(v)));
                stack.push(vertices.len() - 1);
            }
        }
    }
    (cycles, in_cycles.len())
}

/// Every module `i` needs, directly or not, sorted by topological rank.
fn all_dependencies(i: usize, direct: &[Vec<usize>], rank: &[usize]) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = direct[i].clone();
    while let Some(d) = stack.pop() {
        if seen.insert(d) {
            stack.extend(&direct[d]);
        }
    }
    let mut out: Vec<usize> = seen.into_iter().collect();
    out.sort_by_key(|&d| rank[d]);
    out
}

/// Path of the tree of `release` inside a root, target-absolute.
pub fn tree_dir(release: &str) -> PathBuf {
    Path::new("/lib/modules").join(release)
}
