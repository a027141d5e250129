//! "What would `modprobe` load for X?", answered from a tree's `.bin` indexes and the
//! target's modprobe configuration ([`ModprobeConfig`]: modprobe.d, `modules.softdep`,
//! the kernel command line's module options), the way libkmod (kmod v30) resolves it
//! (no kmod needed, works on any root or unpacked image).
//!
//! Lookup of a name, first source with a hit wins: configured aliases (every matching
//! pattern), `modules.dep.bin` (a module name, `-` read as `_`), `modules.symbols.bin`
//! (`symbol:NAME`), `install`/`remove` lines naming it exactly, `modules.alias.bin`
//! (keys are wildcard patterns), `modules.builtin.bin`, `modules.builtin.alias.bin`.
//! Each module found, unless blacklisted and reached through an alias, then expands to
//! its probe list: its dependencies in load order (the reverse of their `modules.dep`
//! order), each wrapped in its own soft dependencies, then the module wrapped in its
//! own; soft dependencies are looked up like names and expanded the same way, each
//! module at most once (dependencies excepted, as libkmod lists them). Each entry then
//! prints as modprobe's `--show-depends` does: `install COMMAND OPTIONS` when an
//! install command applies (not for a module with soft dependencies, nor the module
//! asked for under `--ignore-install`), else `insmod PATH OPTIONS`, else `builtin NAME`
//! for a built-in module, else nothing (an alias to nothing).

use super::output::normalize_alias;
use crate::formats::kmod_index::Index;
use crate::model::modprobe::ModprobeConfig;
use crate::model::root::Root;
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Step {
    /// Load this file (as shown: `ROOT/lib/modules/K/...`) with these options
    /// (configured ones, each followed by a space, as modprobe prints them).
    Insmod {
        name: String,
        path: PathBuf,
        #[serde(skip_serializing_if = "String::is_empty")]
        options: String,
    },
    /// Run this configured command instead of loading the module.
    Install {
        name: String,
        command: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        options: String,
    },
    /// Built into the kernel: nothing to load.
    Builtin { name: String },
}

impl Step {
    /// The line `modprobe --show-depends` prints for this step.
    pub fn line(&self) -> String {
        match self {
            Step::Insmod { path, options, .. } => format!("insmod {} {options}", path.display()),
            Step::Install { command, options, .. } => format!("install {command} {options}"),
            Step::Builtin { name } => format!("builtin {name}"),
        }
    }
}

/// A module as a lookup found it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    name: String,
    /// The alias (or configured alias pattern) it was reached by.
    alias: Option<String>,
    /// Found by an `install`/`remove` line naming it: that line's install command.
    command: Option<Option<String>>,
    /// Found in a built-in index.
    builtin: bool,
}

impl Found {
    fn named(name: impl Into<String>) -> Found {
        Found { name: name.into(), alias: None, command: None, builtin: false }
    }
}

/// How `show_depends` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShowOptions {
    /// `--ignore-install`: the module asked for is loaded as a file, its install
    /// command and soft dependencies ignored.
    pub ignore_install: bool,
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
    /// modprobe.d, `modules.softdep` and the command line's options.
    pub config: ModprobeConfig,
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
        let mut indexes = TreeIndexes::from_files(root.shown(&dir), read)?;
        indexes.config = ModprobeConfig::load(root, release)?;
        Ok(indexes)
    }

    /// Build from index files read by `read` (missing ones as empty bytes): the same
    /// resolution over a tree that is not a directory, e.g. one inside an initramfs.
    /// The configuration is the tree's `modules.softdep` alone; callers with
    /// modprobe.d files (an image's) set [`TreeIndexes::config`] themselves.
    pub fn from_files(
        dir: PathBuf,
        mut read: impl FnMut(&str) -> Result<Vec<u8>>,
    ) -> Result<TreeIndexes> {
        let softdep = read("modules.softdep")?;
        let config = ModprobeConfig::from_files(
            ModprobeConfig::reading_order(Vec::new(), Some(softdep.as_slice())),
            None,
        );
        Ok(TreeIndexes {
            dep: read("modules.dep.bin")?,
            alias: read("modules.alias.bin")?,
            symbols: read("modules.symbols.bin")?,
            builtin: read("modules.builtin.bin")?,
            builtin_alias: read("modules.builtin.alias.bin")?,
            config,
            dir,
        })
    }

    fn index<'a>(&self, bytes: &'a [u8], name: &str) -> Result<Option<Index<'a>>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        Index::parse(bytes).map(Some).with_context(|| format!("{}", self.dir.join(name).display()))
    }

    /// libkmod's lookup of a name: the modules it gives, from the first source that
    /// has any (see the module documentation). Empty: not found.
    fn lookup(&self, name: &str) -> Result<Vec<Found>> {
        let Some(key) = normalize_alias(name) else { return Ok(Vec::new()) };
        let by_alias = |values: Vec<crate::formats::kmod_index::Value>, builtin: bool| {
            values
                .into_iter()
                .map(|v| Found { name: v.value, alias: Some(key.clone()), command: None, builtin })
                .collect::<Vec<_>>()
        };
        let configured: Vec<Found> = self
            .config
            .aliases_of(&key)
            .into_iter()
            .map(|(pattern, module)| Found {
                name: module.to_string(),
                alias: Some(pattern.to_string()),
                command: None,
                builtin: false,
            })
            .collect();
        if !configured.is_empty() {
            return Ok(configured);
        }
        if self.has_dep_line(&key)? {
            return Ok(vec![Found::named(&key)]);
        }
        if key.starts_with("symbol:") {
            if let Some(idx) = self.index(&self.symbols, "modules.symbols.bin")? {
                let v = idx.search_wild(&key).with_context(|| self.ctx("modules.symbols.bin"))?;
                if !v.is_empty() {
                    return Ok(by_alias(v, false));
                }
            }
        }
        if let Some(command) = self.config.command_names(&key) {
            let command = Some(command.map(str::to_string));
            return Ok(vec![Found { command, ..Found::named(&key) }]);
        }
        if let Some(idx) = self.index(&self.alias, "modules.alias.bin")? {
            let v = idx.search_wild(&key).with_context(|| self.ctx("modules.alias.bin"))?;
            if !v.is_empty() {
                // A module matched by several patterns is listed once per pattern, as
                // libkmod does.
                return Ok(by_alias(v, false));
            }
        }
        if self.in_builtin(&key)? {
            return Ok(vec![Found { builtin: true, ..Found::named(&key) }]);
        }
        if let Some(idx) = self.index(&self.builtin_alias, "modules.builtin.alias.bin")? {
            let v = idx.search_wild(&key).with_context(|| self.ctx("modules.builtin.alias.bin"))?;
            return Ok(by_alias(v, true));
        }
        Ok(Vec::new())
    }

    fn has_dep_line(&self, module: &str) -> Result<bool> {
        let Some(dep) = self.index(&self.dep, "modules.dep.bin")? else { return Ok(false) };
        Ok(!dep.lookup(module).with_context(|| self.ctx("modules.dep.bin"))?.is_empty())
    }

    fn in_builtin(&self, module: &str) -> Result<bool> {
        let Some(idx) = self.index(&self.builtin, "modules.builtin.bin")? else {
            return Ok(false);
        };
        Ok(!idx.lookup(module).with_context(|| self.ctx("modules.builtin.bin"))?.is_empty())
    }

    /// Module names `name` resolves to, and whether they are built-in.
    pub fn resolve(&self, name: &str) -> Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for f in self.lookup(name)? {
            let builtin = f.builtin || self.in_builtin(&f.name)?;
            out.push((f.name, builtin));
        }
        Ok(out)
    }

    /// Built-in modules that provide `name` (by alias or as their own name), whatever
    /// loadable module modprobe would pick first: the kernel asks modprobe only for what
    /// it does not have, so a built-in provider settles a request by name
    /// (`crypto-aes` while `aes_generic` is built in, though `aesni_intel` matches first).
    pub fn builtin_providers(&self, name: &str) -> Result<Vec<String>> {
        let Some(key) = normalize_alias(name) else { return Ok(Vec::new()) };
        if self.in_builtin(&key)? {
            return Ok(vec![key]);
        }
        if let Some(idx) = self.index(&self.builtin_alias, "modules.builtin.alias.bin")? {
            let v = idx.search_wild(&key).with_context(|| self.ctx("modules.builtin.alias.bin"))?;
            return Ok(v.into_iter().map(|v| v.value).collect());
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

    /// What `modprobe --show-depends NAME` prints, as steps; `None`: not found (an
    /// alias to nothing is found and prints nothing).
    pub fn show_depends_with(&self, name: &str, opts: ShowOptions) -> Result<Option<Vec<Step>>> {
        let found = self.lookup(name)?;
        if found.is_empty() {
            return Ok(None);
        }
        let mut steps = Vec::new();
        for top in found {
            // modprobe applies the blacklist to names reached through an alias only.
            if top.alias.is_some() && self.config.is_blacklisted(&top.name) {
                continue;
            }
            let mut probe = Probe::default();
            self.probe_list(&top, opts.ignore_install, &mut probe, 0)?;
            for f in &probe.list {
                if let Some(step) = self.step(f, &probe)? {
                    steps.push(step);
                }
            }
        }
        Ok(Some(steps))
    }

    /// [`TreeIndexes::show_depends_with`] with modprobe's defaults; empty: not found or
    /// nothing to load.
    pub fn show_depends(&self, name: &str) -> Result<Vec<Step>> {
        Ok(self.show_depends_with(name, ShowOptions::default())?.unwrap_or_default())
    }

    fn step(&self, f: &Found, probe: &Probe) -> Result<Option<Step>> {
        let options =
            self.config.options_of(&f.name, f.alias.as_deref()).map_or(String::new(), |o| o + " ");
        let command = match &f.command {
            Some(c) => c.clone(),
            None => self.config.install_command(&f.name).map(str::to_string),
        };
        if let Some(command) = command {
            if !probe.ignore_command.get(&f.name).copied().unwrap_or(false) {
                return Ok(Some(Step::Install { name: f.name.clone(), command, options }));
            }
        }
        if let Some((path, _)) = self.dep_line(&f.name)? {
            return Ok(Some(Step::Insmod {
                name: f.name.clone(),
                path: self.host_path(&path),
                options,
            }));
        }
        if f.builtin || self.in_builtin(&f.name)? {
            return Ok(Some(Step::Builtin { name: f.name.clone() }));
        }
        Ok(None)
    }

    /// libkmod's probe list of one module: each dependency (load order) with its soft
    /// dependencies around it, then the module with its own (or alone, under
    /// `ignore_command`).
    fn probe_list(
        &self,
        module: &Found,
        ignore_command: bool,
        probe: &mut Probe,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            anyhow::bail!(
                "soft dependencies nest deeper than {MAX_DEPTH} levels at {}",
                module.name
            );
        }
        if !probe.visited.insert(module.name.clone()) {
            return Ok(());
        }
        if let Some((_, deps)) = self.dep_line(&module.name)? {
            for dep in deps.iter().rev() {
                let name = crate::model::module::name_from_path(std::path::Path::new(dep));
                self.with_softdeps(&Found::named(name), probe, depth)?;
            }
        }
        if ignore_command {
            probe.list.push(module.clone());
            probe.ignore_command.insert(module.name.clone(), true);
            return Ok(());
        }
        self.with_softdeps(module, probe, depth)
    }

    fn with_softdeps(&self, module: &Found, probe: &mut Probe, depth: usize) -> Result<()> {
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        if let Some((p, q)) = self.config.softdeps_of(&module.name) {
            for name in p {
                pre.extend(self.lookup(name)?);
            }
            for name in q {
                post.extend(self.lookup(name)?);
            }
        }
        for soft in &pre {
            self.probe_list(soft, false, probe, depth + 1)?;
        }
        // No de-duplication: a dependency reached again through a soft dependency is
        // listed again, as modprobe lists it.
        probe.list.push(module.clone());
        probe.ignore_command.insert(module.name.clone(), !pre.is_empty() || !post.is_empty());
        for soft in &post {
            self.probe_list(soft, false, probe, depth + 1)?;
        }
        Ok(())
    }
}

/// The state of one probe list.
#[derive(Debug, Default)]
struct Probe {
    list: Vec<Found>,
    visited: HashSet<String>,
    /// Per module name: its install command is not used (it has soft dependencies, or
    /// is the module asked for under `--ignore-install`); the last setting counts, as
    /// libkmod keeps one flag per module.
    ignore_command: HashMap<String, bool>,
}
