//! Compatibility verdicts: will a prebuilt module load on a target [`Kernel`]?
//!
//! The rules are the kernel loader's (DESIGN.md §3), applied in the loader's order so the
//! first refusal in a [`Verdict`] is the one the kernel would print:
//!
//! 1. signature (refused first, and only, under enforcement; otherwise a taint)
//! 2. ELF class and machine
//! 3. `sizeof(struct module)` (`.gnu.linkonce.this_module`)
//! 4. `module_layout` CRC (with no export table for the kernel at all, one
//!    `export-table` refusal stands for this rule and every symbol nothing else exports)
//! 5. vermagic (release part ignored when the module carries modversions)
//! 6. per undefined symbol: exported at all (GPL-only exports are invisible to non-GPL
//!    modules), CRC in `__versions`, namespace imported
//! 7. `depends=` modules present (a modprobe-level rule: the kernel never reads it)
//!
//! Every failing rule is listed, not just the first. A set of modules is checked
//! together: members' exports resolve each other's symbols, and a member needing a
//! symbol from a refused member is refused too. Pure computation: no I/O.

use crate::formats::signature::key_id_hex;
use crate::model::kernel::{Kernel, VmlinuxExports};
use crate::model::module::Module;
use std::collections::{HashMap, HashSet};

/// A loader rule, in the order the kernel applies them.
/// Serialised with the same kebab-case name the text output prints ([`Rule::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    Signature,
    ElfClass,
    Machine,
    StructModuleSize,
    /// No export table for the kernel (no symvers, boot image unreadable): the symbols
    /// the kernel's modules do not export cannot be checked, and are not called unknown.
    ExportTable,
    ModuleLayout,
    Vermagic,
    UnknownSymbol,
    GplOnly,
    SymbolCrc,
    Namespace,
    Depends,
    /// Needs a symbol from (or `depends=` on) another member of the set, which is itself
    /// refused.
    SetMember,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Signature => "signature",
            Rule::ElfClass => "elf-class",
            Rule::Machine => "machine",
            Rule::StructModuleSize => "struct-module-size",
            Rule::ExportTable => "export-table",
            Rule::ModuleLayout => "module-layout",
            Rule::Vermagic => "vermagic",
            Rule::UnknownSymbol => "unknown-symbol",
            Rule::GplOnly => "gpl-only",
            Rule::SymbolCrc => "symbol-crc",
            Rule::Namespace => "namespace",
            Rule::Depends => "depends",
            Rule::SetMember => "set-member",
        }
    }
}

/// What the loader does about a failed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The module is not loaded.
    Refused,
    /// The module loads, but the kernel is tainted or warns.
    Taint,
}

/// One reason, typed: which rule, about which symbol, what the kernel expects and what
/// the module has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    pub rule: Rule,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// The one-line rendering.
    pub message: String,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The verdict for one module on one kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub module: String,
    pub path: Option<std::path::PathBuf>,
    pub kernel: String,
    pub compatible: bool,
    /// Refusals first, in the loader's order; then taints.
    pub reasons: Vec<Reason>,
    /// Rules that could not be checked for lack of a kernel fact.
    pub unchecked: Vec<String>,
}

impl Verdict {
    /// The refusal the kernel would print first.
    pub fn first_refusal(&self) -> Option<&Reason> {
        self.reasons.iter().find(|r| r.outcome == Outcome::Refused)
    }
}

/// Licenses the kernel treats as GPL-compatible (`license_is_gpl_compatible`).
const GPL_COMPATIBLE: &[&str] =
    &["GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"];

fn hex(crc: u64) -> String {
    format!("0x{crc:08x}")
}

/// Check a set of modules together against one kernel; one verdict per module, in the
/// order given.
pub fn check_set(kernel: &Kernel, modules: &[Module]) -> Vec<Verdict> {
    let names: Vec<String> = modules.iter().map(Module::name).collect();
    // Which member exports each symbol (the first, when several do).
    let mut set_exports: HashMap<&str, usize> = HashMap::new();
    for (i, m) in modules.iter().enumerate() {
        for e in &m.exports {
            set_exports.entry(e.name.as_str()).or_insert(i);
        }
    }
    let mut verdicts: Vec<Verdict> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let set = SetView { modules, names: &names, exports: &set_exports };
            check_one(kernel, m, i, &set)
        })
        .collect();

    // A member needing a refused member's symbols is refused with it, until stable.
    let providers: Vec<HashSet<usize>> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let by_symbol = m.undefined.iter().filter_map(|s| set_exports.get(s.as_str()).copied());
            // depends= on a member counts too: modprobe loads it first and stops if it fails.
            let by_name = m.modinfo.depends().into_iter().filter_map(|d| {
                let d = d.replace('-', "_");
                names.iter().position(|n| *n == d)
            });
            by_symbol.chain(by_name).filter(|&p| p != i).collect()
        })
        .collect();
    loop {
        let mut changed = false;
        for i in 0..modules.len() {
            for &p in &providers[i] {
                let already = verdicts[i]
                    .reasons
                    .iter()
                    .any(|r| r.rule == Rule::SetMember && r.symbol.as_deref() == Some(&names[p]));
                if !verdicts[p].compatible && !already {
                    let message = format!(
                        "{}: needs symbols from {}, which will not load",
                        names[i], names[p]
                    );
                    verdicts[i].reasons.push(Reason {
                        rule: Rule::SetMember,
                        outcome: Outcome::Refused,
                        symbol: Some(names[p].clone()),
                        expected: None,
                        found: None,
                        message,
                    });
                    verdicts[i].compatible = false;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for v in &mut verdicts {
        sort_reasons(&mut v.reasons);
    }
    verdicts
}

/// Check one module alone.
pub fn check(kernel: &Kernel, module: &Module) -> Verdict {
    check_set(kernel, std::slice::from_ref(module)).remove(0)
}

fn sort_reasons(reasons: &mut [Reason]) {
    // Stable: within a rule, symbols keep the order they were found in.
    reasons.sort_by_key(|r| (r.outcome != Outcome::Refused, r.rule));
}

/// What the loader's `try_to_force_load` does on this kernel.
fn forced(kernel: &Kernel) -> (Outcome, &'static str) {
    if kernel.force_load {
        (Outcome::Taint, "loaded by force (CONFIG_MODULE_FORCE_LOAD), tainting the kernel")
    } else {
        (Outcome::Refused, "refused (the kernel is built without CONFIG_MODULE_FORCE_LOAD)")
    }
}

/// The set a module is checked within: every member, their names, and which member
/// exports each symbol.
struct SetView<'a> {
    modules: &'a [Module],
    names: &'a [String],
    exports: &'a HashMap<&'a str, usize>,
}

fn check_one(kernel: &Kernel, m: &Module, me: usize, set: &SetView) -> Verdict {
    let mut c = Checker {
        kernel,
        m,
        name: &set.names[me],
        versions: m.versions.iter().map(|v| (v.symbol.as_str(), v.crc)).collect(),
        has_versions: m.versions_layout.is_some(),
        reasons: Vec::new(),
        unchecked: Vec::new(),
    };
    c.signature();
    c.elf_identity();
    c.struct_module_size();
    if let Some(layout) = kernel.exports.get("module_layout") {
        c.crc("module_layout", layout.crc, Rule::ModuleLayout);
    } else if let VmlinuxExports::Missing { .. } = kernel.vmlinux_exports {
        c.unchecked.push("module-layout".to_string());
    }
    c.vermagic();
    c.symbols(me, set);
    c.depends(set.names);

    let compatible = !c.reasons.iter().any(|r| r.outcome == Outcome::Refused);
    let mut reasons = c.reasons;
    sort_reasons(&mut reasons);
    Verdict {
        module: c.name.clone(),
        path: m.path.clone(),
        kernel: kernel.release.clone(),
        compatible,
        reasons,
        unchecked: c.unchecked,
    }
}

/// One module against one kernel: each method applies one of the loader's rules and
/// records a [`Reason`] when it fails.
struct Checker<'a> {
    kernel: &'a Kernel,
    m: &'a Module,
    name: &'a String,
    /// The module's CRCs by symbol, from the layout the kernel reads.
    versions: HashMap<&'a str, u64>,
    has_versions: bool,
    reasons: Vec<Reason>,
    unchecked: Vec<String>,
}

impl Checker<'_> {
    fn add(
        &mut self,
        rule: Rule,
        outcome: Outcome,
        symbol: Option<&str>,
        expected: Option<String>,
        found: Option<String>,
        message: String,
    ) {
        self.reasons.push(Reason {
            rule,
            outcome,
            symbol: symbol.map(str::to_string),
            expected,
            found,
            message,
        });
    }

    /// Unsigned or untrusted: refused under enforcement, a taint otherwise.
    fn signature(&mut self) {
        let (kernel, name) = (self.kernel, self.name);
        if !kernel.sig_supported {
            return;
        }
        let enforced = kernel.enforcement.enforced;
        let outcome = if enforced { Outcome::Refused } else { Outcome::Taint };
        match &self.m.signature {
            None => self.add(
                Rule::Signature,
                outcome,
                None,
                Some("a signature by a trusted key".into()),
                Some("unsigned".into()),
                if enforced {
                    format!("{name}: unsigned module is refused ({})", kernel.enforcement.because)
                } else {
                    format!("{name}: unsigned module loads but taints the kernel")
                },
            ),
            Some(sig) if !kernel.trusts(sig.signer.as_deref(), &sig.key_id) => {
                let key = format!(
                    "{} ({})",
                    key_id_hex(&sig.key_id),
                    sig.signer.as_deref().unwrap_or("unknown signer")
                );
                let expected = kernel
                    .trusted_keys
                    .iter()
                    .map(|k| key_id_hex(&k.identity.serial))
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = if enforced {
                    format!(
                        "{name}: signed with key {key} the kernel does not trust: refused ({})",
                        kernel.enforcement.because
                    )
                } else {
                    format!(
                        "{name}: signed with key {key} the kernel does not trust: loads but taints the kernel"
                    )
                };
                self.add(
                    Rule::Signature,
                    outcome,
                    None,
                    Some(if expected.is_empty() { "a trusted key".into() } else { expected }),
                    Some(key),
                    message,
                )
            }
            Some(_) => {}
        }
    }

    /// ELF class and machine must be the kernel's.
    fn elf_identity(&mut self) {
        let (kernel, m, name) = (self.kernel, self.m, self.name);
        match kernel.class {
            Some(class) if class != m.class => self.add(
                Rule::ElfClass,
                Outcome::Refused,
                None,
                Some(format!("{class:?}")),
                Some(format!("{:?}", m.class)),
                format!("{name}: ELF class {:?}, the kernel's modules are {class:?}", m.class),
            ),
            Some(_) => {}
            None => self.unchecked.push("elf-class".to_string()),
        }
        match kernel.machine {
            Some(machine) if machine != m.machine => {
                let (want, got) = (kernel.arch().unwrap_or_default(), m.machine_name());
                self.add(
                    Rule::Machine,
                    Outcome::Refused,
                    None,
                    Some(want.clone()),
                    Some(got.clone()),
                    format!("{name}: built for {got}, the kernel is {want}"),
                );
            }
            Some(_) => {}
            None => self.unchecked.push("machine".to_string()),
        }
    }

    /// Kernels before 6.4 do not compare the size (the booted 6.1 loads such a module);
    /// there a mismatch with a matching module_layout means a damaged file: a warning.
    fn struct_module_size(&mut self) {
        let (kernel, name) = (self.kernel, self.name);
        let checks = kernel.checks_struct_module_size;
        match (kernel.this_module_size, self.m.this_module_size) {
            (Some(want), got) if got != Some(want) => self.add(
                Rule::StructModuleSize,
                if checks { Outcome::Refused } else { Outcome::Taint },
                None,
                Some(want.to_string()),
                Some(got.map_or("no .gnu.linkonce.this_module".into(), |g| g.to_string())),
                format!(
                    "{name}: .gnu.linkonce.this_module is {} bytes, the kernel's struct module is {want}{}",
                    got.map_or("missing, not".into(), |g| g.to_string()),
                    if checks { "" } else { " (this kernel does not check it and loads the module anyway)" }
                ),
            ),
            (None, _) => self.unchecked.push("struct-module-size".to_string()),
            _ => {}
        }
    }

    /// The loader's `check_version`: the module's `__versions` CRC for `symbol` against
    /// the exporter's `want`.
    fn crc(&mut self, symbol: &str, want: Option<u32>, rule: Rule) {
        let (kernel, name) = (self.kernel, self.name);
        let Some(want) = want.filter(|_| kernel.modversions) else { return };
        if !self.has_versions {
            // try_to_force_load: a taint where the kernel allows forced loads.
            let (outcome, what) = forced(kernel);
            self.add(
                rule,
                outcome,
                Some(symbol),
                Some(hex(u64::from(want))),
                Some("no modversions".into()),
                format!("{name}: has no symbol versions for {symbol}; {what}"),
            );
            return;
        }
        match self.versions.get(symbol).copied() {
            Some(got) if got as u32 != want => self.add(
                rule,
                Outcome::Refused,
                Some(symbol),
                Some(hex(u64::from(want))),
                Some(hex(got)),
                format!(
                    "{name}: disagrees about version of symbol {symbol}: kernel {}, module {}",
                    hex(u64::from(want)),
                    hex(got)
                ),
            ),
            Some(_) => {}
            None => self.add(
                rule,
                Outcome::Taint,
                Some(symbol),
                Some(hex(u64::from(want))),
                None,
                format!("{name}: no symbol version for {symbol} (warning only)"),
            ),
        }
    }

    /// The loader's `same_magic`: with modversions only the flags after the release count.
    fn vermagic(&mut self) {
        let (kernel, name) = (self.kernel, self.name);
        match (kernel.vermagic.as_deref(), self.m.vermagic()) {
            (Some(want), Some(got)) => {
                let strip = |s: &str| s.find(' ').map_or("", |i| &s[i..]).to_string();
                let (w, g) = if self.has_versions && kernel.modversions {
                    (strip(want), strip(got))
                } else {
                    (want.to_string(), got.to_string())
                };
                if w != g {
                    self.add(
                        Rule::Vermagic,
                        Outcome::Refused,
                        None,
                        Some(want.to_string()),
                        Some(got.to_string()),
                        format!("{name}: version magic '{got}' should be '{want}'"),
                    );
                }
            }
            (Some(want), None) => {
                let (outcome, what) = forced(kernel);
                self.add(
                    Rule::Vermagic,
                    outcome,
                    None,
                    Some(want.to_string()),
                    None,
                    format!("{name}: has no vermagic; {what}"),
                )
            }
            (None, _) => self.unchecked.push("vermagic".to_string()),
        }
    }

    /// Each undefined symbol: exported at all (GPL-only exports are invisible to non-GPL
    /// modules), its CRC, its namespace imported.
    fn symbols(&mut self, me: usize, set: &SetView) {
        let (kernel, m, name) = (self.kernel, self.m, self.name);
        let license = m.modinfo.get("license").unwrap_or("");
        let gpl_ok = GPL_COMPATIBLE.contains(&license);
        let imports: HashSet<&str> = m.modinfo.values("import_ns").collect();
        let mut unresolved = 0usize;
        for symbol in &m.undefined {
            // Checked in its own place; a real module never references it anyway.
            if symbol == "module_layout" {
                continue;
            }
            // The set replaces in-tree modules of the same name; its exports come first.
            let from_set = set.exports.get(symbol.as_str()).filter(|&&p| p != me).map(|&p| {
                let e = set.modules[p].exports.iter().find(|e| &e.name == symbol);
                (
                    e.and_then(|e| e.crc),
                    e.is_some_and(|e| e.gpl),
                    e.and_then(|e| e.namespace.clone()),
                    set.names[p].clone(),
                )
            });
            let from_kernel = || {
                kernel
                    .exports
                    .get(symbol)
                    .filter(|e| e.owner == "vmlinux" || !set.names.contains(&e.owner))
                    .map(|e| (e.crc, e.gpl, e.namespace.clone(), e.owner.clone()))
            };
            let Some((crc, gpl, namespace, owner)) = from_set.or_else(from_kernel) else {
                if let VmlinuxExports::Missing { .. } = kernel.vmlinux_exports {
                    unresolved += 1;
                    continue;
                }
                self.add(
                    Rule::UnknownSymbol,
                    Outcome::Refused,
                    Some(symbol),
                    Some("an export of the kernel, its modules or the set".into()),
                    Some("none".into()),
                    format!("{name}: unknown symbol {symbol} (nobody exports it)"),
                );
                continue;
            };
            if gpl && !gpl_ok {
                self.add(
                    Rule::GplOnly,
                    Outcome::Refused,
                    Some(symbol),
                    Some("a GPL-compatible license".into()),
                    Some(if license.is_empty() { "no license".into() } else { license.into() }),
                    format!(
                        "{name}: {symbol} is a GPL-only export of {owner} and the module's license is {license:?}"
                    ),
                );
                continue;
            }
            self.crc(symbol, crc, Rule::SymbolCrc);
            if let Some(ns) = namespace.filter(|ns| !imports.contains(ns.as_str())) {
                self.add(
                    Rule::Namespace,
                    if kernel.allow_missing_namespace_imports {
                        Outcome::Taint
                    } else {
                        Outcome::Refused
                    },
                    Some(symbol),
                    Some(format!("import_ns={ns}")),
                    Some(imports.iter().copied().collect::<Vec<_>>().join(",")),
                    format!(
                        "{name}: uses symbol {symbol} from namespace {ns}, but does not import it"
                    ),
                );
            }
        }
        if let (VmlinuxExports::Missing { why }, true) = (&kernel.vmlinux_exports, unresolved > 0) {
            self.add(
                Rule::ExportTable,
                Outcome::Refused,
                None,
                Some("the kernel's export table (Module.symvers or /boot/vmlinuz)".into()),
                Some("none".into()),
                format!(
                    "{name}: no export table for this kernel: {unresolved} symbol(s) that no module \
                     exports cannot be checked ({why})"
                ),
            );
        }
    }

    /// `depends=` modules must be in the tree, built in, or in the set (modprobe's rule).
    fn depends(&mut self, set_names: &[String]) {
        let name = self.name;
        for dep in self.m.modinfo.depends() {
            let dep = dep.replace('-', "_");
            if !self.kernel.modules.contains(&dep) && !set_names.contains(&dep) {
                self.add(
                    Rule::Depends,
                    Outcome::Refused,
                    Some(&dep),
                    Some(format!("module {dep}")),
                    Some("absent".into()),
                    format!("{name}: depends on {dep}, which is neither in the kernel's tree nor in the set"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn json_and_text_name_rules_alike() {
        for rule in [Rule::Signature, Rule::ModuleLayout, Rule::StructModuleSize, Rule::SetMember] {
            assert_eq!(serde_json::to_value(rule).unwrap(), rule.name());
        }
    }
}
