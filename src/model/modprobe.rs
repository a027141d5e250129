//! A target's modprobe configuration, as libkmod (kmod v30) assembles it: the files of
//! [`MODPROBE_DIRS`] (`*.conf` and `*.alias`; the first directory holding a file name
//! wins), the tree's `modules.softdep` read as one more file named `modules.softdep`,
//! all read in file-name order, then the module options of the kernel command line
//! (`/proc/cmdline` of the root). Parsing is [`crate::formats::modprobe_conf`]'s; this
//! type answers the questions libkmod asks of it. Every lookup follows libkmod's rule:
//! aliases, `install`, `softdep` match module names as fnmatch patterns (the first
//! matching `install`/`softdep` counts), `options` by exact name or alias, `blacklist`
//! by exact name.

use super::root::Root;
use crate::formats::kmod_index::fnmatch;
use crate::formats::modprobe_conf::{parse, parse_kernel_cmdline, Directive};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where libkmod reads modprobe configuration, in precedence order: kmod 29 to 31 read
/// `/etc`, `/run`, `/usr/local/lib`, `/lib`; kmod 32 adds `/usr/lib` (its DISTCONFDIR)
/// before `/lib`, as we do (on a merged-`/usr` system the two are one directory).
pub const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

/// kmod's rule for a configuration directory list (depmod.d and modprobe.d alike):
/// `per_dir` holds each directory's `(file name, T)` in precedence order; the result
/// keeps the first directory's file for each name that `accept` takes, sorted by name
/// (the reading order). Names starting with `.` are never taken.
pub fn effective_files<T>(
    per_dir: Vec<Vec<(String, T)>>,
    accept: impl Fn(&str) -> bool,
) -> Vec<(String, T)> {
    let mut out: BTreeMap<String, T> = BTreeMap::new();
    for dir in per_dir {
        for (name, t) in dir {
            if !name.starts_with('.') && accept(&name) {
                out.entry(name).or_insert(t);
            }
        }
    }
    out.into_iter().collect()
}

/// The files of each of `dirs` inside `root`, as `(file name, host path)`; symlinks
/// among them resolved inside the root, directories left out, missing directories
/// empty.
pub fn list_config_dirs(root: &Root, dirs: &[&str]) -> Result<Vec<Vec<(String, PathBuf)>>> {
    let mut per_dir = Vec::new();
    for dir in dirs {
        let host = root.host(dir)?;
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&host) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = root.confine(&entry.path())?;
                if !path.is_dir() {
                    found.push((name, path));
                }
            }
        }
        per_dir.push(found);
    }
    Ok(per_dir)
}

/// libkmod's modprobe.d file filter: `*.conf` or `*.alias`, at least 6 bytes.
pub fn modprobe_file_name(name: &str) -> bool {
    name.len() >= 6 && (name.ends_with(".conf") || name.ends_with(".alias"))
}

/// A soft dependency line: module pattern, pre names, post names.
pub type Softdep = (String, Vec<String>, Vec<String>);

/// Everything modprobe reads besides the indexes.
#[derive(Debug, Clone, Default)]
pub struct ModprobeConfig {
    /// `(pattern, module)` in reading order.
    pub aliases: Vec<(String, String)>,
    pub blacklist: Vec<String>,
    /// `(module or alias, options)` in reading order, command line last.
    pub options: Vec<(String, String)>,
    /// `(module pattern, command)`.
    pub install: Vec<(String, String)>,
    pub remove: Vec<(String, String)>,
    pub softdeps: Vec<Softdep>,
    /// Bad lines, each naming its file.
    pub warnings: Vec<String>,
}

impl ModprobeConfig {
    /// Assemble from files already chosen and ordered by name (`(shown path, text)`)
    /// and a kernel command line.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (String, &'a [u8])>,
        cmdline: Option<&[u8]>,
    ) -> ModprobeConfig {
        let mut c = ModprobeConfig::default();
        for (shown, text) in files {
            let parsed = parse(text);
            c.warnings.extend(parsed.warnings.iter().map(|w| format!("{shown}: {w}")));
            for d in parsed.directives {
                c.add(d);
            }
        }
        for d in parse_kernel_cmdline(cmdline.unwrap_or_default()) {
            c.add(d);
        }
        c
    }

    fn add(&mut self, d: Directive) {
        match d {
            Directive::Alias { pattern, module } => self.aliases.push((pattern, module)),
            Directive::Blacklist(m) => self.blacklist.push(m),
            Directive::Options { module, options } => self.options.push((module, options)),
            Directive::Install { module, command } => self.install.push((module, command)),
            Directive::Remove { module, command } => self.remove.push((module, command)),
            Directive::Softdep { module, pre, post } => self.softdeps.push((module, pre, post)),
        }
    }

    /// Files named by `(name, T)` from each directory of [`MODPROBE_DIRS`] plus
    /// `modules.softdep`, in libkmod's reading order.
    pub fn reading_order<T>(
        per_dir: Vec<Vec<(String, T)>>,
        modules_softdep: Option<T>,
    ) -> Vec<(String, T)> {
        let mut dirs: Vec<Vec<(String, T)>> = Vec::new();
        // libkmod lists `modules.softdep` first, so no directory file can shadow it
        // (none could anyway: the names differ).
        dirs.push(
            modules_softdep.into_iter().map(|t| ("modules.softdep".to_string(), t)).collect(),
        );
        dirs.extend(per_dir);
        effective_files(dirs, |n| n == "modules.softdep" || modprobe_file_name(n))
    }

    /// The configuration of `root` for the tree of `release`: its modprobe.d
    /// directories, the tree's `modules.softdep`, and `ROOT/proc/cmdline` (the running
    /// system's when the root is `/`, as modprobe reads it).
    pub fn load(root: &Root, release: &str) -> Result<ModprobeConfig> {
        let softdep = root.host(Path::new("/lib/modules").join(release).join("modules.softdep"))?;
        let softdep = softdep.exists().then_some(softdep);
        let files = Self::reading_order(list_config_dirs(root, MODPROBE_DIRS)?, softdep);
        let mut texts = Vec::new();
        for (_, path) in &files {
            let text =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            texts.push((root.target_of(path).unwrap_or(path.clone()), text));
        }
        let cmdline = std::fs::read(root.host("/proc/cmdline")?).ok();
        Ok(Self::from_files(
            texts.iter().map(|(p, t)| (p.display().to_string(), t.as_slice())),
            cmdline.as_deref(),
        ))
    }

    /// Modules the configured aliases give for normalized `name`, with the pattern
    /// that matched (every matching alias counts, in reading order).
    pub fn aliases_of(&self, name: &str) -> Vec<(&str, &str)> {
        self.aliases
            .iter()
            .filter(|(p, _)| fnmatch(p.as_bytes(), name.as_bytes()))
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .collect()
    }

    /// The install command a module runs instead of being loaded (first match).
    pub fn install_command(&self, module: &str) -> Option<&str> {
        self.install
            .iter()
            .find(|(p, _)| fnmatch(p.as_bytes(), module.as_bytes()))
            .map(|(_, c)| c.as_str())
    }

    /// Does an `install` or `remove` line name exactly `name`? (libkmod then treats the
    /// name as a module even with no file: its install command, if any, is the answer.)
    pub fn command_names(&self, name: &str) -> Option<Option<&str>> {
        if let Some((_, c)) = self.install.iter().find(|(m, _)| m == name) {
            return Some(Some(c.as_str()));
        }
        self.remove.iter().any(|(m, _)| m == name).then_some(None)
    }

    /// The soft dependencies of `module` (the first matching line only).
    pub fn softdeps_of(&self, module: &str) -> Option<(&[String], &[String])> {
        self.softdeps
            .iter()
            .find(|(p, _, _)| fnmatch(p.as_bytes(), module.as_bytes()))
            .map(|(_, pre, post)| (pre.as_slice(), post.as_slice()))
    }

    /// Options of `module` (reached as `alias`, if by one), joined by spaces, or
    /// `None` when there are none.
    pub fn options_of(&self, module: &str, alias: Option<&str>) -> Option<String> {
        let opts: Vec<&str> = self
            .options
            .iter()
            .filter(|(m, o)| (m == module || Some(m.as_str()) == alias) && !o.is_empty())
            .map(|(_, o)| o.as_str())
            .collect();
        (!opts.is_empty()).then(|| opts.join(" "))
    }

    pub fn is_blacklisted(&self, module: &str) -> bool {
        self.blacklist.iter().any(|b| b == module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_directory_wins_and_names_order_reading() {
        let per_dir = vec![
            vec![("b.conf".to_string(), "etc/b"), ("z.alias".to_string(), "etc/z")],
            vec![("b.conf".to_string(), "run/b"), ("a.conf".to_string(), "run/a")],
            vec![("x.txt".to_string(), "lib/x"), (".h.conf".to_string(), "lib/h")],
        ];
        let files = ModprobeConfig::reading_order(per_dir, Some("tree/softdep"));
        let paths: Vec<&str> = files.iter().map(|(_, p)| *p).collect();
        assert_eq!(paths, ["run/a", "etc/b", "tree/softdep", "etc/z"]);
    }

    #[test]
    fn lookups_follow_libkmod() {
        let c = ModprobeConfig::from_files(
            [
                ("a.conf".to_string(), &b"alias pci:v1* drv-a\nalias pci:* drv_b\noptions drv_a x=1\noptions pci:v1* y=2\ninstall drv_* echo hi\nsoftdep drv_a pre: p\nsoftdep drv_a post: q\nblacklist drv_b\n"[..]),
            ],
            Some(b"drv_a.z=3 quiet"),
        );
        assert_eq!(c.aliases_of("pci:v1234"), [("pci:v1*", "drv_a"), ("pci:*", "drv_b")]);
        assert_eq!(c.options_of("drv_a", None).as_deref(), Some("x=1 z=3"));
        assert_eq!(c.options_of("drv_a", Some("pci:v1*")).as_deref(), Some("x=1 y=2 z=3"));
        assert_eq!(c.install_command("drv_q"), Some("echo hi"));
        assert_eq!(c.command_names("drv_q"), None);
        let (pre, post) = c.softdeps_of("drv_a").unwrap();
        assert_eq!((pre, post), (&["p".to_string()][..], &[][..]));
        assert!(c.is_blacklisted("drv_b") && !c.is_blacklisted("drv_a"));
    }
}
