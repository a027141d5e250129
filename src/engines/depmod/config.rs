//! `depmod.d` configuration: which copy of a module wins when several directories of
//! the tree hold one with the same name.
//!
//! Files `*.conf` from the directories of [`CONFIG_DIRS`] (inside the root), merged by
//! file name (the first directory holding a name wins, [`effective_files`]) and read
//! in name order. Commands:
//!
//! - `search DIR... | built-in | external`: subdirectories of the tree in priority
//!   order; `built-in` stands for everything no search entry names (normally
//!   `kernel/`), `external` for the `external` directories, in their own order. Without
//!   an `external` word the external directories rank as `built-in`; without any
//!   `search` line kmod behaves as `search updates` (so externals, `kernel/` and
//!   everything else share one rank and the file found first stays).
//! - `override MODULE KVER-REGEX SUBDIR`: this module always from this subdirectory.
//! - `external KVER-REGEX DIR`: an extra directory outside the tree, searched too. A
//!   path is in it when it starts with `DIR/`.
//! - `exclude DIR`: directory names skipped while scanning (besides `build`/`source`).
//!
//! kmod keeps searches, overrides and externals in lists it *prepends* to; the
//! priority comparison in [`Config::existing_wins`] follows that representation
//! exactly, quirks included, because the winner is visible in every index. Facts from
//! kmod v30's `tools/depmod.c` (the `external` slot exists since kmod 26; earlier and
//! later versions to v34 rank the same way).

use crate::model::modprobe::{effective_files, list_config_dirs};
use crate::model::root::Root;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The directories kmod reads configuration from, in precedence order (the first
/// directory holding a file name wins): kmod 29 and later read `/etc`, `/run`,
/// `/usr/local/lib`, `/lib` (kmod 32 adds its DISTCONFDIR, `/usr/lib`, before `/lib`);
/// kmod 28 and earlier (RHEL 8/9) read `/run` before `/etc` and no `/usr/local/lib`.
/// We follow kmod 29+ and read `/usr/lib` too (the same directory as `/lib` on a
/// merged-`/usr` system, where the order of the two cannot show).
pub const CONFIG_DIRS: &[&str] = &[
    "/etc/depmod.d",
    "/run/depmod.d",
    "/usr/local/lib/depmod.d",
    "/usr/lib/depmod.d",
    "/lib/depmod.d",
];

/// kmod's depmod.d file filter: `*.conf`, at least 6 bytes.
pub fn depmod_file_name(name: &str) -> bool {
    name.len() >= 6 && name.ends_with(".conf")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// `built-in`: the rank of every path no other entry claims.
    BuiltIn,
    /// `external`: the slot of the `external` directories.
    External,
    Dir(String),
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// In kmod's list order: the last `search` word read comes first.
    pub searches: Vec<Search>,
    /// `SUBDIR/MODULE`, last read first.
    pub overrides: Vec<String>,
    /// Target-absolute directories, last read first.
    pub externals: Vec<PathBuf>,
    /// Directory names never descended into.
    pub excludes: Vec<String>,
    /// Problems worth a warning (bad lines), each naming its file and line.
    pub warnings: Vec<String>,
}

impl Config {
    /// Read the configuration of `root` for kernel `release`.
    pub fn load(root: &Root, release: &str) -> Result<Config> {
        let per_dir = list_config_dirs(root, CONFIG_DIRS)?;
        let mut config = Config::default();
        for (_, path) in effective_files(per_dir, depmod_file_name) {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            config.parse(&text, &path, release);
        }
        config.finish();
        Ok(config)
    }

    /// Apply the lines of one file.
    pub fn parse(&mut self, text: &str, file: &Path, release: &str) {
        for (lineno, line) in logical_lines(text) {
            let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
            let Some(cmd) = words.next() else { continue };
            if cmd.starts_with('#') {
                continue;
            }
            let rest: Vec<&str> = words.collect();
            let bad = |c: &mut Config| {
                c.warnings.push(format!(
                    "{}:{lineno}: ignoring bad line starting with '{cmd}'",
                    file.display()
                ))
            };
            match (cmd, rest.as_slice()) {
                ("search", dirs) => {
                    for d in dirs {
                        let s = match *d {
                            "built-in" => Search::BuiltIn,
                            "external" => Search::External,
                            d => Search::Dir(d.to_string()),
                        };
                        self.searches.insert(0, s);
                    }
                }
                ("override", [module, kver, subdir, ..]) => {
                    if kernel_matches(kver, release) {
                        self.overrides.insert(0, format!("{subdir}/{module}"));
                    }
                }
                ("external", [kver, dir, ..]) => {
                    if kernel_matches(kver, release) {
                        self.externals.insert(0, PathBuf::from(dir));
                    }
                }
                ("exclude", dirs) if !dirs.is_empty() => {
                    self.excludes.extend(dirs.iter().map(|d| d.trim_end_matches('/').to_string()))
                }
                ("include", _) | ("make_map_files", _) => {}
                _ => bad(self),
            }
        }
    }

    /// kmod's default when no `search` line was read.
    pub fn finish(&mut self) {
        if self.searches.is_empty() {
            self.searches.push(Search::Dir("updates".into()));
        }
    }

    /// With `old` already chosen for a module name, does it stay chosen over `new`?
    /// Both are (tree-relative path, or target-absolute path for externals) and are
    /// compared over `directory/` plus as many file-name bytes as the module name has,
    /// as kmod does.
    pub fn existing_wins(&self, old: &Candidate, new: &Candidate) -> bool {
        fn key(c: &Candidate) -> Option<&str> {
            c.rel.as_deref().and_then(|r| r.get(..c.match_len))
        }
        // kmod compares the full path only up to `directory/` + module-name bytes too.
        fn full(c: &Candidate) -> String {
            let t = c.target.to_string_lossy();
            let dir_len = t.rfind('/').map_or(0, |p| p + 1);
            let len = (dir_len + c.name.len()).min(t.len());
            t.get(..len).unwrap_or(&t).to_string()
        }
        let (old_rel, new_rel) = (key(old), key(new));
        for ov in &self.overrides {
            if new_rel == Some(ov.as_str()) {
                return false;
            }
            if old_rel == Some(ov.as_str()) {
                return true;
            }
        }
        // `path` is under `dir` when it continues with a `/` right after it.
        let under = |path: &str, dir: &str| {
            path.len() > dir.len() && path.as_bytes()[dir.len()] == b'/' && path.starts_with(dir)
        };
        let (old_full, new_full) = (full(old), full(new));
        let (mut builtin, mut old_prio, mut new_prio) = (-1i64, -1i64, -1i64);
        let mut i = 0i64;
        for s in &self.searches {
            match s {
                Search::BuiltIn => builtin = i,
                Search::External => {
                    // Every external directory takes its own rank in this slot, both
                    // paths checked against each one.
                    for ext in &self.externals {
                        let ext = ext.to_string_lossy();
                        if under(&new_full, &ext) {
                            new_prio = i;
                        }
                        if under(&old_full, &ext) {
                            old_prio = i;
                        }
                        i += 1;
                    }
                }
                Search::Dir(d) if new_rel.is_some_and(|r| under(r, d)) => new_prio = i,
                Search::Dir(d) if old_rel.is_some_and(|r| under(r, d)) => old_prio = i,
                Search::Dir(_) => {}
            }
            i += 1;
        }
        if new_prio < 0 {
            new_prio = builtin;
        }
        if old_prio < 0 {
            old_prio = builtin;
        }
        new_prio <= old_prio
    }
}

/// A module file found while scanning, before it is read.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Module name (file name up to the first `.`, `-` as `_`).
    pub name: String,
    /// Target-absolute path as found (symlinks not resolved).
    pub target: PathBuf,
    /// Path relative to the tree, when inside it.
    pub rel: Option<String>,
    /// Length of `directory/` plus the module name's length: the part kmod compares.
    pub match_len: usize,
    /// Host path to read, symlinks resolved inside the root.
    pub host: PathBuf,
}

/// Lines with backslash continuations joined, numbered from 1 (first physical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if pending.is_empty() {
            start = i + 1;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                out.push((start, std::mem::take(&mut pending)));
            }
        }
    }
    if !pending.is_empty() {
        out.push((start, pending));
    }
    out
}

/// kmod matches the kernel field as a POSIX extended regex searched in the release,
/// with `*` alone meaning any kernel.
pub fn kernel_matches(pattern: &str, release: &str) -> bool {
    pattern == "*" || regex_search(pattern.as_bytes(), release.as_bytes())
}

/// A small ERE subset, enough for kernel-version patterns: literals, `.`, `[...]`,
/// `*`, `+`, `?`, `^`, `$`, `\` escapes. Unanchored search, like `regexec`.
fn regex_search(pattern: &[u8], text: &[u8]) -> bool {
    if let Some(p) = pattern.strip_prefix(b"^") {
        return regex_here(p, text);
    }
    (0..=text.len()).any(|i| regex_here(pattern, &text[i..]))
}

/// Does a byte match one pattern atom?
type AtomMatch<'a> = Box<dyn Fn(u8) -> bool + 'a>;

/// One atom of the pattern: (matcher, atom length in pattern bytes).
fn atom(pattern: &[u8]) -> Option<(AtomMatch<'_>, usize)> {
    match *pattern.first()? {
        b'.' => Some((Box::new(|_| true), 1)),
        b'\\' if pattern.len() > 1 => {
            let c = pattern[1];
            Some((Box::new(move |x| x == c), 2))
        }
        b'[' => {
            let close = pattern.iter().skip(2).position(|&b| b == b']')? + 2;
            let body = &pattern[1..close];
            let (negate, body) = match body.strip_prefix(b"^") {
                Some(b) => (true, b),
                None => (false, body),
            };
            Some((
                Box::new(move |x| {
                    let mut hit = false;
                    let mut i = 0;
                    while i < body.len() {
                        if i + 2 < body.len() && body[i + 1] == b'-' {
                            hit |= body[i] <= x && x <= body[i + 2];
                            i += 3;
                        } else {
                            hit |= body[i] == x;
                            i += 1;
                        }
                    }
                    hit != negate
                }),
                close + 1,
            ))
        }
        c => Some((Box::new(move |x| x == c), 1)),
    }
}

fn regex_here(pattern: &[u8], text: &[u8]) -> bool {
    if pattern.is_empty() {
        return true;
    }
    if pattern == b"$" {
        return text.is_empty();
    }
    let Some((matches, len)) = atom(pattern) else { return false };
    let rest = &pattern[len..];
    match rest.first() {
        Some(b'*') | Some(b'+') | Some(b'?') => {
            let (min, max) = match rest[0] {
                b'*' => (0, usize::MAX),
                b'+' => (1, usize::MAX),
                _ => (0, 1),
            };
            let rest = &rest[1..];
            let mut n = 0;
            while n < max && n < text.len() && matches(text[n]) {
                n += 1;
            }
            (min..=n).rev().any(|k| regex_here(rest, &text[k..]))
        }
        _ => !text.is_empty() && matches(text[0]) && regex_here(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rhel_search_and_overrides() {
        let mut c = Config::default();
        c.parse(
            "# comment\nsearch updates extra built-in weak-updates\n\
             override mptsas 6.1.* updates\noverride foo 5.14.* extra\nbogus line\n",
            Path::new("x.conf"),
            "6.1.0-56-amd64",
        );
        assert_eq!(
            c.searches,
            [
                Search::Dir("weak-updates".into()),
                Search::BuiltIn,
                Search::Dir("extra".into()),
                Search::Dir("updates".into())
            ]
        );
        assert_eq!(c.overrides, ["updates/mptsas"]);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("x.conf:5"), "{:?}", c.warnings);
    }

    #[test]
    fn search_priority_first_listed_wins() {
        let mut c = Config::default();
        c.parse("search updates extra built-in weak-updates\n", Path::new("x"), "k");
        let cand = |rel: &str| Candidate {
            name: "m".into(),
            target: PathBuf::from("/lib/modules/k").join(rel),
            rel: Some(rel.into()),
            match_len: rel.rfind('/').map_or(0, |p| p + 1) + 1,
            host: PathBuf::new(),
        };
        let (upd, ext, kern, weak) = (
            cand("updates/m.ko"),
            cand("extra/m.ko"),
            cand("kernel/m.ko"),
            cand("weak-updates/m.ko"),
        );
        assert!(c.existing_wins(&upd, &ext));
        assert!(!c.existing_wins(&ext, &upd));
        assert!(c.existing_wins(&ext, &kern));
        assert!(c.existing_wins(&kern, &weak));
        assert!(!c.existing_wins(&weak, &kern));
    }

    #[test]
    fn kernel_patterns() {
        assert!(kernel_matches("*", "6.1.0"));
        assert!(kernel_matches("6.1.*", "6.1.0-56-amd64"));
        assert!(kernel_matches("^5\\.14\\.0-[0-9]+\\.[0-9.]+el9", "5.14.0-362.8.1.el9_3.x86_64"));
        assert!(!kernel_matches("^5\\.14", "6.1.0"));
        assert!(kernel_matches("amd64$", "6.1.0-56-amd64"));
    }
}
