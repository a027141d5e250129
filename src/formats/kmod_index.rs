//! kmod's binary index (`modules.*.bin`): a compressed trie mapping ASCII keys to
//! prioritised string values. libkmod reads only these files to resolve module names,
//! aliases, symbols and built-ins, so they must be byte-identical to what kmod's depmod
//! writes. Reader and writer live side by side.
//!
//! Layout (all integers big-endian u32):
//!
//! ```text
//! magic 0xB007F457 | version 0x00020001 | root node offset (with flags)
//! node: [prefix NUL-terminated]              if offset & 0x8000_0000
//!       [first u8, last u8, child offsets[last-first+1]]   if offset & 0x2000_0000
//!       [count, {priority, value NUL-terminated} * count]  if offset & 0x4000_0000
//! ```
//!
//! The low 28 bits of an offset are the node's file position; a child offset of 0 means
//! "no child for this character". depmod writes nodes post-order (children before their
//! parent, in character order), so every child lies before its parent in the file: the
//! reader relies on that to refuse cycles in hostile files instead of looping.
//!
//! Values of one key are kept sorted by priority; a value inserted with a priority equal
//! to existing ones goes *before* them (kmod's insertion rule, visible in the bytes).

use anyhow::{bail, Result};

pub const MAGIC: u32 = 0xB007_F457;
pub const VERSION: u32 = 0x0002_0001;
const FLAG_PREFIX: u32 = 0x8000_0000;
const FLAG_VALUES: u32 = 0x4000_0000;
const FLAG_CHILDREN: u32 = 0x2000_0000;
const OFFSET_MASK: u32 = 0x0FFF_FFFF;

/// One value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub priority: u32,
    pub value: String,
}

#[derive(Debug, Default)]
struct Node {
    prefix: Vec<u8>,
    values: Vec<Value>,
    /// (character, node index), sorted by character.
    children: Vec<(u8, usize)>,
}

/// An index being built in memory; [`IndexBuilder::to_bytes`] encodes it as depmod does.
#[derive(Debug)]
pub struct IndexBuilder {
    nodes: Vec<Node>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder::new()
    }
}

fn check_ascii(what: &str, s: &str) -> Result<()> {
    if let Some(b) = s.bytes().find(|&b| b >= 128) {
        bail!("index {what} {s:?} has byte 0x{b:02x}: kmod indexes hold only 7-bit ASCII");
    }
    if s.as_bytes().contains(&0) {
        bail!("index {what} {s:?} contains a NUL byte");
    }
    Ok(())
}

impl IndexBuilder {
    pub fn new() -> IndexBuilder {
        IndexBuilder { nodes: vec![Node::default()] }
    }

    /// Add `value` under `key`. Returns whether the same value was already there.
    pub fn insert(&mut self, key: &str, value: &str, priority: u32) -> Result<bool> {
        check_ascii("key", key)?;
        check_ascii("value", value)?;
        let key = key.as_bytes();
        let mut node = 0;
        let mut i = 0;
        loop {
            // Make the node's prefix a prefix of the rest of the key, splitting if needed.
            let prefix_len = self.nodes[node].prefix.len();
            let common =
                self.nodes[node].prefix.iter().zip(&key[i..]).take_while(|(a, b)| a == b).count();
            if common < prefix_len {
                let old = std::mem::take(&mut self.nodes[node]);
                let split_char = old.prefix[common];
                let child = Node {
                    prefix: old.prefix[common + 1..].to_vec(),
                    values: old.values,
                    children: old.children,
                };
                let child_index = self.nodes.len();
                self.nodes.push(child);
                let parent = &mut self.nodes[node];
                parent.prefix = old.prefix[..common].to_vec();
                parent.children = vec![(split_char, child_index)];
            }
            i += common;
            let Some(&ch) = key.get(i) else {
                return Ok(add_value(&mut self.nodes[node].values, value, priority));
            };
            match self.nodes[node].children.binary_search_by_key(&ch, |&(c, _)| c) {
                Ok(pos) => {
                    node = self.nodes[node].children[pos].1;
                    i += 1;
                }
                Err(pos) => {
                    let child_index = self.nodes.len();
                    let mut values = Vec::new();
                    add_value(&mut values, value, priority);
                    self.nodes.push(Node {
                        prefix: key[i + 1..].to_vec(),
                        values,
                        children: Vec::new(),
                    });
                    self.nodes[node].children.insert(pos, (ch, child_index));
                    return Ok(false);
                }
            }
        }
    }

    /// Encode as kmod's depmod does: header, then nodes post-order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.nodes.len() * 16);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let root = self.write_node(0, &mut out);
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    fn write_node(&self, index: usize, out: &mut Vec<u8>) -> u32 {
        let node = &self.nodes[index];
        let mut child_offsets = Vec::new();
        if let (Some(&(first, _)), Some(&(last, _))) = (node.children.first(), node.children.last())
        {
            child_offsets = vec![0u32; (last - first) as usize + 1];
            for &(ch, child) in &node.children {
                child_offsets[(ch - first) as usize] = self.write_node(child, out);
            }
        }
        let mut offset = out.len() as u32;
        if !node.prefix.is_empty() {
            out.extend_from_slice(&node.prefix);
            out.push(0);
            offset |= FLAG_PREFIX;
        }
        if let (Some(&(first, _)), Some(&(last, _))) = (node.children.first(), node.children.last())
        {
            out.push(first);
            out.push(last);
            for o in child_offsets {
                out.extend_from_slice(&o.to_be_bytes());
            }
            offset |= FLAG_CHILDREN;
        }
        if !node.values.is_empty() {
            out.extend_from_slice(&(node.values.len() as u32).to_be_bytes());
            for v in &node.values {
                out.extend_from_slice(&v.priority.to_be_bytes());
                out.extend_from_slice(v.value.as_bytes());
                out.push(0);
            }
            offset |= FLAG_VALUES;
        }
        offset
    }
}

/// kmod's rule: keep values sorted by priority, a new value going before existing ones
/// of equal priority. Returns whether the value was already present.
fn add_value(values: &mut Vec<Value>, value: &str, priority: u32) -> bool {
    let duplicate = values.iter().any(|v| v.value == value);
    let pos = values.iter().position(|v| v.priority >= priority).unwrap_or(values.len());
    values.insert(pos, Value { priority, value: value.to_string() });
    duplicate
}

/// A parsed index file (borrowing its bytes). Every read is bounds-checked.
#[derive(Debug, Clone, Copy)]
pub struct Index<'a> {
    bytes: &'a [u8],
    root: u32,
}

/// Called during a walk with each key that has values and the position of those values.
type Visit<'v> = dyn FnMut(&[u8], usize) -> Result<()> + 'v;

/// A decoded node.
struct NodeView<'a> {
    prefix: &'a [u8],
    first: u8,
    children: Vec<u32>,
    /// Where the value count is, when the node has values (decoded on demand).
    values_at: Option<usize>,
}

impl<'a> Index<'a> {
    /// Check the header. Node errors surface on lookup.
    pub fn parse(bytes: &'a [u8]) -> Result<Index<'a>> {
        if bytes.len() < 12 {
            bail!("truncated index: {} bytes, the header alone is 12", bytes.len());
        }
        let magic = be32(bytes, 0)?;
        if magic != MAGIC {
            bail!("not a kmod index: magic 0x{magic:08x}, expected 0x{MAGIC:08x}");
        }
        let version = be32(bytes, 4)?;
        if version >> 16 != VERSION >> 16 {
            bail!("unsupported kmod index version 0x{version:08x}, expected 0x{VERSION:08x}");
        }
        Ok(Index { bytes, root: be32(bytes, 8)? })
    }

    fn node(&self, offset: u32, parent_pos: Option<usize>) -> Result<NodeView<'a>> {
        let mut pos = (offset & OFFSET_MASK) as usize;
        if pos < 12 || pos > self.bytes.len() {
            bail!("corrupt index: node offset {pos} outside the file's {} bytes", self.bytes.len());
        }
        if parent_pos.is_some_and(|p| pos >= p) {
            bail!("corrupt index: child node at {pos} is not before its parent (cycle?)");
        }
        let mut prefix: &[u8] = &[];
        if offset & FLAG_PREFIX != 0 {
            let (s, next) = cstr(self.bytes, pos)?;
            prefix = s;
            pos = next;
        }
        let (mut first, mut children) = (0u8, Vec::new());
        if offset & FLAG_CHILDREN != 0 {
            let (f, l) = match self.bytes.get(pos..pos + 2) {
                Some(&[f, l]) => (f, l),
                _ => bail!("corrupt index: truncated child range at {pos}"),
            };
            if l < f || l >= 128 {
                bail!("corrupt index: child range {f}..={l} at {pos}");
            }
            pos += 2;
            first = f;
            for _ in f..=l {
                children.push(be32(self.bytes, pos)?);
                pos += 4;
            }
        }
        let values_at = (offset & FLAG_VALUES != 0).then_some(pos);
        Ok(NodeView { prefix, first, children, values_at })
    }

    /// Decode the values whose count is at `pos`.
    fn values(&self, pos: usize) -> Result<Vec<Value>> {
        let count = be32(self.bytes, pos)? as usize;
        let mut pos = pos + 4;
        // Each value takes at least 5 bytes: a count beyond that is a lie.
        if count > (self.bytes.len() - pos.min(self.bytes.len())) / 5 {
            bail!("corrupt index: {count} values at {pos} cannot fit in the file");
        }
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let priority = be32(self.bytes, pos)?;
            let (s, next) = cstr(self.bytes, pos + 4)?;
            pos = next;
            values.push(Value { priority, value: String::from_utf8_lossy(s).into_owned() });
        }
        Ok(values)
    }

    /// The values stored under exactly `key` (empty when absent).
    pub fn lookup(&self, key: &str) -> Result<Vec<Value>> {
        let key = key.as_bytes();
        let mut offset = self.root;
        let mut parent = None;
        let mut i = 0;
        loop {
            let node = self.node(offset, parent)?;
            if !key[i..].starts_with(node.prefix) {
                return Ok(Vec::new());
            }
            i += node.prefix.len();
            let Some(&ch) = key.get(i) else {
                return match node.values_at {
                    Some(at) => self.values(at),
                    None => Ok(Vec::new()),
                };
            };
            let child = ch
                .checked_sub(node.first)
                .and_then(|d| node.children.get(d as usize))
                .copied()
                .unwrap_or(0);
            if child == 0 {
                return Ok(Vec::new());
            }
            parent = Some((offset & OFFSET_MASK) as usize);
            offset = child;
            i += 1;
        }
    }

    /// Every key with its values, in key order.
    pub fn entries(&self) -> Result<Vec<(String, Vec<Value>)>> {
        let mut out = Vec::new();
        self.walk(self.root, None, &mut Vec::new(), &|_| true, &mut |key, at| {
            out.push((String::from_utf8_lossy(key).into_owned(), self.values(at)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Depth-first walk in key order, entering only nodes whose key passes `enter`.
    fn walk(
        &self,
        offset: u32,
        parent: Option<usize>,
        key: &mut Vec<u8>,
        enter: &dyn Fn(&[u8]) -> bool,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        let node = self.node(offset, parent)?;
        let len = key.len();
        key.extend_from_slice(node.prefix);
        if enter(key) {
            if let Some(at) = node.values_at {
                visit(key, at)?;
            }
            for (d, &child) in node.children.iter().enumerate() {
                if child != 0 {
                    key.push(node.first + d as u8);
                    if enter(key) {
                        self.walk(child, Some((offset & OFFSET_MASK) as usize), key, enter, visit)?;
                    }
                    key.pop();
                }
            }
        }
        key.truncate(len);
        Ok(())
    }

    /// Values of every stored key that, read as a shell wildcard pattern (`*`, `?`,
    /// `[...]`), matches `name` — how libkmod resolves `modules.alias.bin`. Sorted by
    /// priority (stable). Subtrees whose literal start differs from `name` are skipped.
    pub fn search_wild(&self, name: &str) -> Result<Vec<Value>> {
        let name = name.as_bytes();
        let enter = |key: &[u8]| {
            let literal = key.iter().position(|b| b"*?[\\".contains(b)).unwrap_or(key.len());
            name.starts_with(&key[..literal])
        };
        let mut out = Vec::new();
        self.walk(self.root, None, &mut Vec::new(), &enter, &mut |key, at| {
            if fnmatch(key, name) {
                out.extend(self.values(at)?);
            }
            Ok(())
        })?;
        out.sort_by_key(|v| v.priority);
        Ok(out)
    }
}

fn be32(bytes: &[u8], pos: usize) -> Result<u32> {
    match bytes.get(pos..pos.saturating_add(4)) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => bail!("corrupt index: truncated at byte {pos} of {}", bytes.len()),
    }
}

/// A NUL-terminated string at `pos`; returns it and the position after the NUL.
fn cstr(bytes: &[u8], pos: usize) -> Result<(&[u8], usize)> {
    let tail = bytes.get(pos..).unwrap_or_default();
    match tail.iter().position(|&b| b == 0) {
        Some(end) => Ok((&tail[..end], pos + end + 1)),
        None => bail!("corrupt index: unterminated string at byte {pos}"),
    }
}

/// kmod's alias key (libkmod's `underscores`): `-` becomes `_` outside bracket expressions; an unmatched bracket
/// makes the alias unusable (skipped, as kmod does).
pub fn normalize_alias(alias: &str) -> Option<String> {
    let mut out = String::with_capacity(alias.len());
    let mut chars = alias.chars();
    while let Some(c) = chars.next() {
        match c {
            '-' => out.push('_'),
            ']' => return None,
            '[' => {
                out.push('[');
                loop {
                    match chars.next() {
                        Some(']') => {
                            out.push(']');
                            break;
                        }
                        Some(c) => out.push(c),
                        None => return None,
                    }
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// fnmatch(3) without flags: `*`, `?`, bracket expressions with ranges and `!`/`^`
/// negation, backslash escapes. Iterative with single backtracking point, so hostile
/// patterns cannot blow up.
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match bracket(pattern, p, name[n]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // An unterminated bracket is a literal '['.
                None => (name[n] == b'[').then_some(p + 1),
            },
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == name[n]).then_some(p + 2),
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Match `c` against the bracket expression at `pattern[start] == '['`. Returns whether
/// it matched and the index after `]`, or `None` if the bracket never closes.
fn bracket(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut b = IndexBuilder::new();
        for (k, v, p) in entries {
            b.insert(k, v, *p).unwrap();
        }
        b.to_bytes()
    }

    #[test]
    fn round_trips_keys_values_and_priorities() {
        let bytes = build(&[
            ("ask", "1", 3),
            ("ate", "2", 1),
            ("on", "3", 0),
            ("once", "4", 0),
            ("one", "5", 0),
            ("on", "6", 0),
            ("on", "7", 5),
        ]);
        let idx = Index::parse(&bytes).unwrap();
        let on: Vec<_> = idx.lookup("on").unwrap().into_iter().map(|v| v.value).collect();
        // Equal priority: the later insert goes first.
        assert_eq!(on, ["6", "3", "7"]);
        assert_eq!(idx.lookup("once").unwrap()[0].value, "4");
        assert!(idx.lookup("o").unwrap().is_empty());
        assert!(idx.lookup("onces").unwrap().is_empty());
        let keys: Vec<_> = idx.entries().unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(keys, ["ask", "ate", "on", "once", "one"]);
    }

    #[test]
    fn empty_index_is_header_plus_empty_root() {
        let bytes = IndexBuilder::new().to_bytes();
        assert_eq!(bytes, [0xb0, 0x07, 0xf4, 0x57, 0, 2, 0, 1, 0, 0, 0, 12]);
        assert!(Index::parse(&bytes).unwrap().entries().unwrap().is_empty());
    }

    #[test]
    fn rejects_non_ascii() {
        assert!(IndexBuilder::new().insert("caf\u{e9}", "x", 0).is_err());
    }

    #[test]
    fn wildcard_search_matches_patterns() {
        let bytes = build(&[
            ("pci:v00001000d0000005Dsv*sd*bc*sc*i*", "megaraid_sas", 2),
            ("pci:v*d*sv*sd*bc01sc06i01*", "ahci", 1),
            ("usb:v[0-9]*", "usbthing", 3),
        ]);
        let idx = Index::parse(&bytes).unwrap();
        let hits =
            idx.search_wild("pci:v00001000d0000005Dsv00001028sd00001F49bc01sc04i00").unwrap();
        assert_eq!(hits.iter().map(|v| v.value.as_str()).collect::<Vec<_>>(), ["megaraid_sas"]);
        let hits = idx.search_wild("pci:v00008086d00002922sv0sd0bc01sc06i01").unwrap();
        assert_eq!(hits[0].value, "ahci");
        assert_eq!(idx.search_wild("usb:v5").unwrap().len(), 1);
        assert!(idx.search_wild("usb:vx").unwrap().is_empty());
    }

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch(b"a*b?c", b"axxxbyc"));
        assert!(!fnmatch(b"a*b?c", b"axxxbc"));
        assert!(fnmatch(b"[!a]x", b"bx"));
        assert!(!fnmatch(b"[!a]x", b"ax"));
        assert!(fnmatch(b"*", b""));
        assert!(fnmatch(b"[", b"["));
        assert!(fnmatch(b"a\\*", b"a*"));
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let good = build(&[("alpha", "1", 0), ("beta", "2", 1), ("alps", "3", 2)]);
        // Every truncation and every single-byte corruption: errors or answers, never
        // a panic or a hang.
        for len in 0..good.len() {
            if let Ok(idx) = Index::parse(&good[..len]) {
                let _ = idx.entries();
                let _ = idx.lookup("alpha");
            }
        }
        for pos in 0..good.len() {
            for byte in [0x00, 0xff, 0x7f, 0x20, 0x40, 0x80] {
                let mut bad = good.clone();
                bad[pos] = byte;
                if let Ok(idx) = Index::parse(&bad) {
                    let _ = idx.entries();
                    let _ = idx.search_wild("alpha");
                }
            }
        }
        let mut cyclic = good.clone();
        // Root pointing at itself through a child: refused.
        let root = be32(&good, 8).unwrap();
        let pos = (root & OFFSET_MASK) as usize;
        assert_eq!(&good[pos..pos + 1], b"a"); // root has no prefix; first child char
        cyclic[pos + 2..pos + 6].copy_from_slice(&root.to_be_bytes());
        let err = Index::parse(&cyclic).unwrap().entries().unwrap_err();
        assert!(err.to_string().contains("not before its parent"), "{err}");
        assert!(Index::parse(b"\xb0\x07\xf4\x57\0\x03\0\x01\0\0\0\x0c").is_err());
        assert!(Index::parse(b"garbage!garbage!").is_err());
    }
}
