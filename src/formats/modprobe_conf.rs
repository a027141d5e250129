//! modprobe.d configuration text (and the module options of a kernel command line),
//! parsed as libkmod parses them (kmod v30 `libkmod/libkmod-config.c`,
//! `shared/util.c`; facts only). Pure: bytes in, directives out; never panics.
//!
//! - Lines: a backslash before a newline joins lines; a backslash before any other
//!   character is dropped (the character kept). A line starting with `#` is a comment.
//!   Words are separated by spaces and tabs.
//! - `alias PATTERN MODULE`, `blacklist MODULE`, `options MODULE REST`,
//!   `install MODULE REST`, `remove MODULE REST`, `softdep MODULE REST` (REST: the rest
//!   of the line after the single separator that ended MODULE, kept verbatim; options
//!   get tabs turned into spaces). Module names and alias patterns get `-` → `_`
//!   outside brackets; an unbalanced bracket makes the line bad.
//! - `include`, `config`: deprecated, ignored. Anything else: a bad line (a warning).
//! - Kernel command line: `MODULE.PARAM[=VALUE]` words become options of MODULE,
//!   `modprobe.blacklist=A,B` blacklists; quoting as libkmod handles it.

use super::kmod_index::normalize_alias;

/// One configuration command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `alias PATTERN MODULE`: lookups of names matching PATTERN (fnmatch) give MODULE
    /// (which may name nothing at all: an alias to nothing).
    Alias { pattern: String, module: String },
    /// `blacklist MODULE`: modprobe skips MODULE when it was reached through an alias.
    Blacklist(String),
    /// `options MODULE OPTIONS`: parameters for MODULE (or for an alias of that name).
    Options { module: String, options: String },
    /// `install MODULE COMMAND`: run COMMAND instead of loading MODULE (a pattern).
    Install { module: String, command: String },
    /// `remove MODULE COMMAND`.
    Remove { module: String, command: String },
    /// `softdep MODULE pre: A B post: C` (MODULE a pattern).
    Softdep { module: String, pre: Vec<String>, post: Vec<String> },
}

/// The directives of one file, with its bad lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Directives in file order.
    pub directives: Vec<Directive>,
    /// `line N: ignoring bad line starting with 'X'` (N is the last physical line of
    /// the logical line, as libkmod counts).
    pub warnings: Vec<String>,
}

/// Logical lines as libkmod's `freadline_wrapped` reads them, with the number of the
/// last physical line each ends on.
fn logical_lines(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut lineno = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\n' => {
                lineno += 1;
                out.push((lineno, std::mem::take(&mut cur)));
            }
            b'\\' => match text.get(i + 1) {
                Some(b'\n') => {
                    lineno += 1;
                    i += 1;
                }
                Some(&c) => {
                    cur.push(c);
                    i += 1;
                }
                None => {}
            },
            c => cur.push(c),
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push((lineno + 1, cur));
    }
    out
}

/// `strtok_r(..., " \t")`: the next word and the rest after its one terminating
/// separator (`strtok_r(NULL, "\0")` then returns that rest, or nothing when empty).
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        return None;
    }
    match s.find([' ', '\t']) {
        Some(end) => Some((&s[..end], &s[end + 1..])),
        None => Some((s, "")),
    }
}

/// Parse one modprobe.d file (or `modules.softdep`, which libkmod reads the same way).
pub fn parse(text: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    for (lineno, raw) in logical_lines(text) {
        let line = String::from_utf8_lossy(&raw);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((cmd, rest)) = next_word(&line) else { continue };
        match directive(cmd, rest) {
            Some(Some(d)) => parsed.directives.push(d),
            Some(None) => {}
            None => parsed
                .warnings
                .push(format!("line {lineno}: ignoring bad line starting with '{cmd}'")),
        }
    }
    parsed
}

/// One command: `Some(Some(d))` a directive, `Some(None)` ignored, `None` bad.
fn directive(cmd: &str, rest: &str) -> Option<Option<Directive>> {
    // The rest of the line after the module word (`strtok_r(NULL, "\0")`): none when
    // nothing follows the module word's separator.
    let tail = |rest: &str| -> Option<(String, String)> {
        let (module, tail) = next_word(rest)?;
        let module = normalize_alias(module)?;
        (!tail.is_empty()).then(|| (module, tail.to_string()))
    };
    Some(Some(match cmd {
        "alias" => {
            let (pattern, rest) = next_word(rest)?;
            let (module, _) = next_word(rest)?;
            Directive::Alias {
                pattern: normalize_alias(pattern)?,
                module: normalize_alias(module)?,
            }
        }
        "blacklist" => Directive::Blacklist(normalize_alias(next_word(rest)?.0)?),
        "options" => {
            let (module, options) = tail(rest)?;
            Directive::Options { module, options: options.replace('\t', " ") }
        }
        "install" => {
            let (module, command) = tail(rest)?;
            Directive::Install { module, command }
        }
        "remove" => {
            let (module, command) = tail(rest)?;
            Directive::Remove { module, command }
        }
        "softdep" => {
            let (module, deps) = tail(rest)?;
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut mode = None;
            for w in deps.split(|c: char| c.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
                match (w, mode) {
                    ("pre:", _) => mode = Some(false),
                    ("post:", _) => mode = Some(true),
                    (w, Some(false)) => pre.push(w.to_string()),
                    (w, Some(true)) => post.push(w.to_string()),
                    (_, None) => {}
                }
            }
            Directive::Softdep { module, pre, post }
        }
        "include" | "config" => return Some(None),
        _ => return None,
    }))
}

/// The module directives of a kernel command line (`/proc/cmdline`), as libkmod
/// reads them: `MOD.PARAM[=VALUE]` → options `PARAM[=VALUE]` of MOD;
/// `modprobe.blacklist=A,B` → blacklists. A value may be quoted (spaces allowed
/// inside); a quote anywhere else spoils the word; a word whose module part contains
/// `=` or whose parameter part contains a second `.` is ignored. A quote opening the
/// word (`"mod.p=a b"`, as boot loaders pass it) is moved to the value.
pub fn parse_kernel_cmdline(cmdline: &[u8]) -> Vec<Directive> {
    // libkmod reads at most 4095 bytes (its buffer) and stops at a NUL.
    let cmdline = &cmdline[..cmdline.len().min(4095)];
    let cmdline = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    #[derive(PartialEq, Clone, Copy)]
    enum St {
        Ignore,
        Mod,
        Param,
        Value,
    }
    let mut out = Vec::new();
    let (mut state, mut quoted) = (St::Mod, false);
    let (mut word_start, mut dot, mut eq) = (0usize, None::<usize>, None::<usize>);
    let mut quote_start: Option<usize> = None;
    let mut i = 0;
    loop {
        let c = cmdline.get(i).copied();
        let mut complete = false;
        match c {
            Some(b'"') => {
                quoted = !quoted;
                if quoted && state == St::Mod && i == word_start {
                    quote_start = Some(i);
                    word_start = i + 1;
                } else if state != St::Value {
                    state = St::Ignore;
                }
            }
            None | Some(b' ' | b'\n' | b'\t' | 0x0b | 0x0c | b'\r') => {
                if quoted && state == St::Value {
                } else if quoted {
                    state = St::Ignore;
                } else if matches!(state, St::Value | St::Param) {
                    complete = true;
                } else {
                    word_start = i + 1;
                    state = St::Mod;
                    quote_start = None;
                }
            }
            Some(b'.') => {
                if state == St::Mod {
                    dot = Some(i);
                    state = St::Param;
                } else if state == St::Param {
                    state = St::Ignore;
                }
            }
            Some(b'=') => {
                if state == St::Param {
                    eq = Some(i);
                    state = St::Value;
                } else if state == St::Mod {
                    state = St::Ignore;
                }
            }
            Some(_) => {}
        }
        if complete {
            if let Some(dot) = dot.filter(|&d| d >= word_start) {
                let module = String::from_utf8_lossy(&cmdline[word_start..dot]).into_owned();
                let mut param = String::from_utf8_lossy(&cmdline[dot + 1..i]).into_owned();
                if quote_start.is_some_and(|q| q < word_start) {
                    // Re-quote: `"mod.p=a b"` becomes options `p="a b"`.
                    if let Some(eq) = eq.filter(|&e| e > dot && e < i) {
                        let name = String::from_utf8_lossy(&cmdline[dot + 1..eq]);
                        let value = String::from_utf8_lossy(&cmdline[eq + 1..i]);
                        param = format!("{name}=\"{value}");
                    }
                }
                if module == "modprobe" && param.starts_with("blacklist=") {
                    let value = eq.filter(|&e| e > dot && e < i).map_or("", |e| {
                        std::str::from_utf8(&cmdline[e + 1..i]).unwrap_or_default()
                    });
                    for m in value.split(',') {
                        out.push(Directive::Blacklist(m.to_string()));
                    }
                } else if let Some(module) = normalize_alias(&module) {
                    out.push(Directive::Options { module, options: param });
                }
            }
            word_start = i + 1;
            state = St::Mod;
            quote_start = None;
        }
        if c.is_none() {
            break;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let p = parse(
            b"# comment\nalias pci:v*d* mod-a\nblacklist evil-mod\n\
              options mod-a  x=1\ty=2\ninstall mod-b /sbin/modprobe --ignore-install mod-b && true\n\
              remove mod-b echo bye\nsoftdep mod-c pre: p1  p2 post: q1\ninclude /x\nbogus\n",
        );
        assert_eq!(
            p.directives,
            [
                Directive::Alias { pattern: "pci:v*d*".into(), module: "mod_a".into() },
                Directive::Blacklist("evil_mod".into()),
                Directive::Options { module: "mod_a".into(), options: " x=1 y=2".into() },
                Directive::Install {
                    module: "mod_b".into(),
                    command: "/sbin/modprobe --ignore-install mod-b && true".into()
                },
                Directive::Remove { module: "mod_b".into(), command: "echo bye".into() },
                Directive::Softdep {
                    module: "mod_c".into(),
                    pre: vec!["p1".into(), "p2".into()],
                    post: vec!["q1".into()]
                },
            ]
        );
        assert_eq!(p.warnings, ["line 9: ignoring bad line starting with 'bogus'"]);
    }

    #[test]
    fn continuation_and_backslashes() {
        let p = parse(b"softdep a pre: b \\\n c\noptions m p=\\x\n");
        assert_eq!(
            p.directives[0],
            Directive::Softdep {
                module: "a".into(),
                pre: vec!["b".into(), "c".into()],
                post: vec![]
            }
        );
        assert_eq!(
            p.directives[1],
            Directive::Options { module: "m".into(), options: "p=x".into() }
        );
    }

    #[test]
    fn bad_lines_are_warnings_never_panics() {
        let p = parse(
            b"alias onlyone\noptions m\ninstall m \nblacklist\nalias a] b\nsoftdep x[ pre: y\n",
        );
        assert!(p.directives.is_empty(), "{:?}", p.directives);
        assert_eq!(p.warnings.len(), 6, "{:?}", p.warnings);
        // Hostile bytes: truncation anywhere, NULs, invalid UTF-8, a lone backslash.
        let text = b"alias a b\nsoftdep \xff\x00 pre: \\";
        for end in 0..=text.len() {
            let _ = parse(&text[..end]);
            let _ = parse_kernel_cmdline(&text[..end]);
        }
        let big = vec![b'\\'; 100_000];
        let _ = parse(&big);
    }

    #[test]
    fn kernel_command_line() {
        let d = parse_kernel_cmdline(
            b"initrd=\\x.img mod_simple.foo mod-simple.bar=1 root=/dev/sda2 a.b.c=1 \
              modprobe.blacklist=x,y-z \"q.p=a b\" quiet",
        );
        assert_eq!(
            d,
            [
                Directive::Options { module: "mod_simple".into(), options: "foo".into() },
                Directive::Options { module: "mod_simple".into(), options: "bar=1".into() },
                Directive::Blacklist("x".into()),
                Directive::Blacklist("y-z".into()),
                Directive::Options { module: "q".into(), options: "p=\"a b\"".into() },
            ]
        );
    }
}
