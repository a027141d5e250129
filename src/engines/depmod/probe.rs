//! "What would `modprobe` load for X?", answered from a tree's `.bin` indexes alone,
//! the way libkmod resolves it (no kmod needed, works on any root or unpacked image).
//!
//! Resolution of a name, first hit wins: `modules.dep.bin` (a module name, `-` read
//! as `_`), `modules.symbols.bin` (`symbol:NAME`), `modules.alias.bin` (keys are
//! wildcard patterns), `modules.builtin.alias.bin`, `modules.builtin.bin`. Each module
//! found then expands to its load list: soft pre-dependencies (from the tree's
//! `modules.softdep`), its dependencies in load order (the reverse of their
//! `modules.dep` order), itself, soft post-dependencies — each module at most once.
//!
//! Not read: `modprobe.d` configuration (aliases, options, install commands,
//! blacklists), which is host configuration rather than part of the tree.

use super::output::normalize_alias;
use crate::formats::kmod_index::Index;
use crate::model::root::Root;
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Step {
    /// Load this file (as shown: `ROOT/lib/modules/K/...`).
    Insmod { name: String, path: PathBuf },
    /// Built into the kernel: nothing to load.
    Builtin { name: String },
}

/// The index files of one tree, read once.
#[derive(Debug, Default)]
pub struct TreeIndexes {
    /// The tree as shown (`ROOT/lib/modules/K`, as `modprobe -d ROOT` shows it), joined
    /// to relative module paths for display.
    pub dir: PathBuf,
    pub dep: Vec<u8>,
    pub alias: Vec<u8>,
    pub symbols: Vec<u8>,
    pub builtin: Vec<u8>,
    pub builtin_alias: Vec<u8>,
    /// module → (pre, post) soft dependencies from `modules.softdep`.
    pub softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
}

/// Bound on resolution depth: softdeps can name each other in circles.
const MAX_DEPTH: usize = 64;

impl TreeIndexes {
    /// Read the indexes of `release` under `root`. Missing files count as empty, as
    /// libkmod treats them ("not found").
    pub fn load(root: &Root, release: &str) -> Result<TreeIndexes> {
        let dir = super::tree_dir(release);
        let read = |name: &str| -> Result<Vec<u8>> {
            let path = root.host(dir.join(name))?;
            match std::fs::read(&path) {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
            }
        };
        TreeIndexes::from_files(root.shown(&dir), read)
    }

    /// Build from index files read by `read` (missing ones as empty bytes): the same
    /// resolution over a tree that is not a directory, e.g. one inside an initramfs.
    pub fn from_files(
        dir: PathBuf,
        mut read: impl FnMut(&str) -> Result<Vec<u8>>,
    ) -> Result<TreeIndexes> {
        let softdep_text = String::from_utf8_lossy(&read("modules.softdep")?).into_owned();
        Ok(TreeIndexes {
            dep: read("modules.dep.bin")?,
            alias: read("modules.alias.bin")?,
            symbols: read("modules.symbols.bin")?,
            builtin: read("modules.builtin.bin")?,
            builtin_alias: read("modules.builtin.alias.bin")?,
            softdeps: parse_softdeps(&softdep_text),
            dir,
        })
    }

    fn index<'a>(&self, bytes: &'a [u8], name: &str) -> Result<Option<Index<'a>>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        Index::parse(bytes).map(Some).with_context(|| format!("{}", self.dir.join(name).display()))
    }

    /// Module names `name` resolves to, and whether they are built-in.
    pub fn resolve(&self, name: &str) -> Result<Vec<(String, bool)>> {
        let Some(key) = normalize_alias(name) else { return Ok(Vec::new()) };
        if let Some(dep) = self.index(&self.dep, "modules.dep.bin")? {
            if !dep.lookup(&key).with_context(|| self.ctx("modules.dep.bin"))?.is_empty() {
                return Ok(vec![(key, false)]);
            }
        }
        if key.starts_with("symbol:") {
            if let Some(idx) = self.index(&self.symbols, "modules.symbols.bin")? {
                let v = idx.lookup(&key).with_context(|| self.ctx("modules.symbols.bin"))?;
                if !v.is_empty() {
                    return Ok(v.into_iter().map(|v| (v.value, false)).collect());
                }
            }
        }
        if let Some(idx) = self.index(&self.alias, "modules.alias.bin")? {
            let v = idx.search_wild(&key).with_context(|| self.ctx("modules.alias.bin"))?;
            if !v.is_empty() {
                // A module matched by several patterns is listed once per pattern, as
                // libkmod does.
                return Ok(v.into_iter().map(|v| (v.value, false)).collect());
            }
        }
        Ok(self.builtin_providers(name)?.into_iter().map(|m| (m, true)).collect())
    }

    /// Built-in modules that provide `name` (by alias or as their own name), whatever
    /// loadable module modprobe would pick first: the kernel asks modprobe only for what
    /// it does not have, so a built-in provider settles a request by name
    /// (`crypto-aes` while `aes_generic` is built in, though `aesni_intel` matches first).
    pub fn builtin_providers(&self, name: &str) -> Result<Vec<String>> {
        let Some(key) = normalize_alias(name) else { return Ok(Vec::new()) };
        if let Some(idx) = self.index(&self.builtin_alias, "modules.builtin.alias.bin")? {
            let v = idx.lookup(&key).with_context(|| self.ctx("modules.builtin.alias.bin"))?;
            if !v.is_empty() {
                return Ok(v.into_iter().map(|v| v.value).collect());
            }
        }
        if let Some(idx) = self.index(&self.builtin, "modules.builtin.bin")? {
            if !idx.lookup(&key).with_context(|| self.ctx("modules.builtin.bin"))?.is_empty() {
                return Ok(vec![key]);
            }
        }
        Ok(Vec::new())
    }

    fn ctx(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `modules.dep` line of a module: its path and dependencies as listed.
    fn dep_line(&self, module: &str) -> Result<Option<(String, Vec<String>)>> {
        let Some(idx) = self.index(&self.dep, "modules.dep.bin")? else { return Ok(None) };
        let values = idx.lookup(module).with_context(|| self.ctx("modules.dep.bin"))?;
        let Some(line) = values.into_iter().next() else { return Ok(None) };
        let (path, deps) = line.value.split_once(':').with_context(|| {
            format!("{}: entry for {module} has no ':'", self.ctx("modules.dep.bin"))
        })?;
        Ok(Some((path.to_string(), deps.split_whitespace().map(str::to_string).collect())))
    }

    fn host_path(&self, index_path: &str) -> PathBuf {
        if index_path.starts_with('/') {
            PathBuf::from(index_path)
        } else {
            self.dir.join(index_path)
        }
    }

    /// What `modprobe --show-depends NAME` prints, as steps. Empty: not found.
    pub fn show_depends(&self, name: &str) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        for (module, builtin) in self.resolve(name)? {
            if builtin {
                steps.push(Step::Builtin { name: module });
                continue;
            }
            let mut visited = HashSet::new();
            self.probe_list(&module, &mut visited, &mut steps, 0)?;
        }
        Ok(steps)
    }

    /// libkmod's probe list of one module: each dependency (load order) with its soft
    /// dependencies around it, then the module with its own.
    fn probe_list(
        &self,
        module: &str,
        visited: &mut HashSet<String>,
        out: &mut Vec<Step>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            anyhow::bail!("soft dependencies nest deeper than {MAX_DEPTH} levels at {module}");
        }
        if !visited.insert(module.to_string()) {
            return Ok(());
        }
        let Some((path, deps)) = self.dep_line(module)? else {
            if self.resolve(module)?.iter().any(|(_, b)| *b) {
                out.push(Step::Builtin { name: module.to_string() });
            }
            return Ok(());
        };
        for dep in deps.iter().rev() {
            let name = crate::model::module::name_from_path(std::path::Path::new(dep));
            self.with_softdeps(&name, Some(dep), visited, out, depth)?;
        }
        self.with_softdeps(module, Some(&path), visited, out, depth)
    }

    fn with_softdeps(
        &self,
        module: &str,
        path: Option<&str>,
        visited: &mut HashSet<String>,
        out: &mut Vec<Step>,
        depth: usize,
    ) -> Result<()> {
        let (pre, post) = self.softdeps.get(module).cloned().unwrap_or_default();
        for soft in &pre {
            self.soft(soft, visited, out, depth)?;
        }
        if let Some(p) = path {
            // No de-duplication: a dependency reached again through a soft dependency
            // is listed again, as modprobe lists it.
            out.push(Step::Insmod { name: module.to_string(), path: self.host_path(p) });
        }
        for soft in &post {
            self.soft(soft, visited, out, depth)?;
        }
        Ok(())
    }

    fn soft(
        &self,
        name: &str,
        visited: &mut HashSet<String>,
        out: &mut Vec<Step>,
        depth: usize,
    ) -> Result<()> {
        for (m, builtin) in self.resolve(name)? {
            if builtin {
                if visited.insert(m.clone()) {
                    out.push(Step::Builtin { name: m });
                }
            } else {
                self.probe_list(&m, visited, out, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// `softdep MODULE pre: A B post: C` lines (modprobe.d syntax).
fn parse_softdeps(text: &str) -> HashMap<String, (Vec<String>, Vec<String>)> {
    let mut out: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        // libkmod uses the first softdep line of a module only.
        let key = module.replace('-', "_");
        if out.contains_key(&key) {
            continue;
        }
        let entry = out.entry(key).or_default();
        let mut post = None;
        for w in words {
            match w {
                "pre:" => post = Some(false),
                "post:" => post = Some(true),
                name => match post {
                    Some(false) => entry.0.push(name.to_string()),
                    Some(true) => entry.1.push(name.to_string()),
                    None => {}
                },
            }
        }
    }
    out
}
