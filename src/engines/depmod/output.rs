//! Rendering the graph as kmod's index files. Text formats and insertion orders follow
//! kmod's depmod exactly; every `.bin` is built with [`IndexBuilder`], a module's
//! position in the graph being its priority.

use super::Graph;
use crate::formats::kmod_index::IndexBuilder;
use crate::formats::modinfo::ModInfo;
use anyhow::{Context, Result};
use std::fmt::Write as _;

pub fn render(g: &Graph) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut files = vec![
        ("modules.dep", deps_text(g).into_bytes()),
        ("modules.dep.bin", deps_bin(g)?),
        ("modules.alias", aliases_text(g).into_bytes()),
        ("modules.alias.bin", aliases_bin(g)?),
        ("modules.softdep", softdeps_text(g).into_bytes()),
        ("modules.symbols", symbols_text(g).into_bytes()),
        ("modules.symbols.bin", symbols_bin(g)?),
        ("modules.builtin.bin", builtin_bin(g)?),
        ("modules.builtin.alias.bin", builtin_alias_bin(g)?),
        ("modules.devname", devname_text(g).into_bytes()),
    ];
    if g.modules.iter().any(|m| m.module.modinfo.get("weakdep").is_some()) {
        files.push(("modules.weakdep", weakdeps_text(g).into_bytes()));
    }
    Ok(files)
}

/// `path: dep dep...` — the line of one module, without newline.
fn dep_line(g: &Graph, i: usize) -> String {
    let mut line = g.modules[i].index_path();
    line.push(':');
    for &d in &g.deps[i] {
        line.push(' ');
        line.push_str(&g.modules[d].index_path());
    }
    line
}

fn deps_text(g: &Graph) -> String {
    let mut out = String::new();
    for i in 0..g.modules.len() {
        out.push_str(&dep_line(g, i));
        out.push('\n');
    }
    out
}

fn deps_bin(g: &Graph) -> Result<Vec<u8>> {
    let mut idx = IndexBuilder::new();
    for (i, m) in g.modules.iter().enumerate() {
        idx.insert(&m.name, &dep_line(g, i), i as u32)
            .with_context(|| format!("modules.dep.bin: {}", m.index_path()))?;
    }
    Ok(idx.to_bytes())
}

fn aliases_text(g: &Graph) -> String {
    let mut out = String::from("# Aliases extracted from modules themselves.\n");
    for m in &g.modules {
        for alias in m.module.modinfo.values("alias") {
            let _ = writeln!(out, "alias {alias} {}", m.name);
        }
    }
    out
}

fn aliases_bin(g: &Graph) -> Result<Vec<u8>> {
    let mut idx = IndexBuilder::new();
    for (i, m) in g.modules.iter().enumerate() {
        for alias in m.module.modinfo.values("alias") {
            if let Some(key) = normalize_alias(alias) {
                idx.insert(&key, &m.name, i as u32)
                    .with_context(|| format!("modules.alias.bin: {}", m.index_path()))?;
            }
        }
    }
    Ok(idx.to_bytes())
}

pub use crate::formats::kmod_index::normalize_alias;

fn softdeps_text(g: &Graph) -> String {
    // kmod ≥ 29 dropped the "copy to modprobe.d" line: libkmod reads this file itself.
    let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
    for m in &g.modules {
        for dep in m.module.modinfo.values("softdep") {
            let _ = writeln!(out, "softdep {} {dep}", m.name);
        }
    }
    out
}

/// kmod ≥ 33's file; written only when some module declares `weakdep=`.
fn weakdeps_text(g: &Graph) -> String {
    let mut out = String::from("# Weak dependencies extracted from modules themselves.\n");
    for m in &g.modules {
        for dep in m.module.modinfo.values("weakdep") {
            let _ = writeln!(out, "weakdep {} {dep}", m.name);
        }
    }
    out
}

fn symbols_text(g: &Graph) -> String {
    let mut out = String::from("# Aliases for symbols, used by symbol_request().\n");
    for (sym, owner) in &g.symbols {
        let _ = writeln!(out, "alias symbol:{sym} {}", g.modules[*owner].name);
    }
    out
}

fn symbols_bin(g: &Graph) -> Result<Vec<u8>> {
    let mut idx = IndexBuilder::new();
    for (sym, owner) in &g.symbols {
        idx.insert(&format!("symbol:{sym}"), &g.modules[*owner].name, *owner as u32)
            .with_context(|| format!("modules.symbols.bin: symbol {sym}"))?;
    }
    Ok(idx.to_bytes())
}

/// From `modules.builtin` (one path per line): key = module name, empty value.
/// Without `modules.builtin` kmod leaves the file empty (not even a header).
fn builtin_bin(g: &Graph) -> Result<Vec<u8>> {
    let mut idx = IndexBuilder::new();
    let Some(text) = &g.builtin else { return Ok(Vec::new()) };
    {
        for line in text.split_inclusive(|&b| b == b'\n') {
            if !line.first().is_some_and(|b| b.is_ascii_alphabetic()) {
                continue;
            }
            let line = String::from_utf8_lossy(line);
            let base = line.rsplit('/').next().unwrap_or(&line);
            let name: String = base
                .chars()
                .take_while(|&c| c != '.' && c != '\0')
                .map(|c| if c == '-' { '_' } else { c })
                .collect();
            idx.insert(&name, "", 0).context("modules.builtin.bin")?;
        }
    }
    Ok(idx.to_bytes())
}

/// From `modules.builtin.modinfo` (`name.alias=value` strings): alias → name.
/// Without `modules.builtin.modinfo` kmod leaves the file empty.
fn builtin_alias_bin(g: &Graph) -> Result<Vec<u8>> {
    let mut idx = IndexBuilder::new();
    let Some(bytes) = &g.builtin_modinfo else { return Ok(Vec::new()) };
    {
        for (key, value) in ModInfo::parse(bytes).entries() {
            let Some((module, "alias")) = key.split_once('.') else { continue };
            if module.is_empty() || value.is_empty() {
                continue;
            }
            if let Some(alias) = normalize_alias(value) {
                idx.insert(&alias, module, 0).context("modules.builtin.alias.bin")?;
            }
        }
    }
    Ok(idx.to_bytes())
}

/// `name devname type major:minor` for modules declaring both a `devname:` alias and
/// a `char-major-`/`block-major-` alias (the first complete pair wins).
/// kmod writes the header only before the first line: no devnames, empty file.
fn devname_text(g: &Graph) -> String {
    let mut out = String::new();
    for m in &g.modules {
        let mut devname = None;
        let mut device = None;
        for alias in m.module.modinfo.values("alias") {
            if let Some(d) = alias.strip_prefix("devname:") {
                devname = Some(d);
            } else if let Some(n) = alias.strip_prefix("char-major-").and_then(major_minor) {
                device = Some(('c', n));
            } else if let Some(n) = alias.strip_prefix("block-major-").and_then(major_minor) {
                device = Some(('b', n));
            }
            if let (Some(name), Some((kind, (major, minor)))) = (devname, device) {
                if out.is_empty() {
                    out.push_str("# Device nodes to trigger on-demand module loading.\n");
                }
                let _ = writeln!(out, "{} {name} {kind}{major}:{minor}", m.name);
                break;
            }
        }
    }
    out
}

/// `MAJOR-MINOR...` as `sscanf("%u-%u")` reads it (trailing text ignored).
fn major_minor(s: &str) -> Option<(u32, u32)> {
    fn number(s: &str) -> Option<(u32, &str)> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        Some((s[..end].parse().ok()?, &s[end..]))
    }
    let (major, rest) = number(s)?;
    let (minor, _) = number(rest.strip_prefix('-')?)?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_normalisation_keeps_brackets() {
        assert_eq!(normalize_alias("pci:v-x[a-b]-y").as_deref(), Some("pci:v_x[a-b]_y"));
        assert_eq!(normalize_alias("bad]"), None);
        assert_eq!(normalize_alias("bad[a-"), None);
    }

    #[test]
    fn major_minor_like_sscanf() {
        assert_eq!(major_minor("10-229"), Some((10, 229)));
        assert_eq!(major_minor("10-229x"), Some((10, 229)));
        assert_eq!(major_minor("10-"), None);
        assert_eq!(major_minor("x-1"), None);
    }
}
