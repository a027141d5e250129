//! [`Module`]: everything bootkmod needs to know about one `.ko` file.
//!
//! Flow: file bytes → whole-file decompression by magic → appended signature split off
//! the decoded ELF → ELF container → `.modinfo`, modversions, exports, undefined
//! symbols, `struct module` size. Reading never writes, and every failure is an error
//! naming the file, never a panic.

use crate::formats::compression::{self, Compression};
use crate::formats::elf::{self, Class, ElfModule, Endian, Symbol, SymbolPlace};
use crate::formats::modinfo::ModInfo;
use crate::formats::modversions::{self, VersionEntry};
use crate::formats::signature::{self, Signature};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Which modversions layout a module carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionsLayout {
    /// `__versions` records.
    Classic,
    /// `__version_ext_crcs` + `__version_ext_names` (the kernel then ignores `__versions`).
    Extended,
}

/// A symbol the module exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Export {
    pub name: String,
    /// CRC from `__crc_<name>`, when the module was built with modversions.
    pub crc: Option<u32>,
    /// Exported with `EXPORT_SYMBOL_GPL`.
    pub gpl: bool,
    /// Symbol namespace (`EXPORT_SYMBOL_NS`), when not the default one.
    pub namespace: Option<String>,
}

/// sha256 digests, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Digests {
    /// Of the file as stored (compressed, signed).
    pub file: String,
    /// Of the uncompressed ELF, signature included (what the kernel receives).
    pub elf: String,
}

/// The facts of one kernel module file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Module {
    pub path: Option<PathBuf>,
    pub compression: Compression,
    pub class: Class,
    pub endian: Endian,
    pub machine: u16,
    pub modinfo: ModInfo,
    pub versions_layout: Option<VersionsLayout>,
    /// The CRCs the module expects, from the layout the kernel would read.
    pub versions: Vec<VersionEntry>,
    /// Empty when read with [`ReadOptions::skip_symbols`].
    pub exports: Vec<Export>,
    /// Global symbols the module needs from the kernel or other modules, in symbol-table
    /// order (first occurrence), without duplicates.
    pub undefined: Vec<String>,
    /// `sh_size` of `.gnu.linkonce.this_module`: the module's `sizeof(struct module)`.
    pub this_module_size: Option<u64>,
    pub signature: Option<Signature>,
    /// Only computed when asked for ([`ReadOptions::digests`]): hashing is the most
    /// expensive part of reading a whole kernel tree.
    pub digests: Option<Digests>,
}

/// What to compute beyond the parsed facts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    pub digests: bool,
    /// Leave `exports` and `undefined` empty: the symbol table is the largest part of a
    /// module, and `info -F` / `--modversions` over a whole tree never look at it.
    pub skip_symbols: bool,
}

/// sha256 of a module file's content once decompressed (what the kernel receives, and
/// [`Digests::elf`]): the identity of a module whatever codec stores it.
pub fn content_sha256(file: &[u8]) -> Result<String> {
    Ok(sha256_hex(&compression::decode_all(file, compression::MAX_DECODED_MODULE)?))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Module {
    /// Read and parse a module file. Errors name the file.
    pub fn read(path: &Path, opts: ReadOptions) -> Result<Module> {
        let bytes =
            FileBytes::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let mut module =
            Module::from_bytes(&bytes, opts).with_context(|| format!("{}", path.display()))?;
        module.path = Some(path.to_path_buf());
        Ok(module)
    }

    /// Read many module files, in parallel on the available cores; results in the
    /// order of `paths`. Parsing, decompression and hashing dominate reading a kernel
    /// tree, and each file is independent. Workers take the next file from a shared
    /// counter, so a few large modules do not leave the other cores idle.
    pub fn read_many(paths: &[PathBuf], opts: ReadOptions) -> Vec<Result<Module>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        if workers < 2 || paths.len() < 2 {
            return paths.iter().map(|p| Module::read(p, opts)).collect();
        }
        let next = AtomicUsize::new(0);
        let mut slots: Vec<Option<Result<Module>>> = (0..paths.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers.min(paths.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(path) = paths.get(i) else { break };
                            out.push((i, Module::read(path, opts)));
                        }
                        out
                    })
                })
                .collect();
            for handle in handles {
                match handle.join() {
                    Ok(results) => {
                        for (i, r) in results {
                            slots[i] = Some(r);
                        }
                    }
                    // Reading never panics (tests/info_proptest.rs); if it ever does,
                    // keep the panic rather than hide it.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        slots
            .into_iter()
            .zip(paths)
            .map(|(slot, path)| {
                slot.unwrap_or_else(|| Err(anyhow::anyhow!("{}: not read", path.display())))
            })
            .collect()
    }

    /// Parse module bytes as stored on disk (possibly compressed).
    pub fn from_bytes(file: &[u8], opts: ReadOptions) -> Result<Module> {
        if file.is_empty() {
            anyhow::bail!("empty file");
        }
        let compression = Compression::detect(file);
        let decoded = compression::decode_all(file, compression::MAX_DECODED_MODULE)?;
        let (content, signature) = match signature::split(&decoded)? {
            Some((content, sig)) => (content, Some(sig)),
            None => (&decoded[..], None),
        };
        let elf = ElfModule::parse(content)?;
        let modinfo = ModInfo::parse(elf.section_bytes(content, ".modinfo").unwrap_or_default());

        let (versions_layout, versions) = match (
            elf.section_bytes(content, "__version_ext_crcs"),
            elf.section_bytes(content, "__version_ext_names"),
            elf.section_bytes(content, "__versions"),
        ) {
            (Some(crcs), Some(names), _) => (
                Some(VersionsLayout::Extended),
                modversions::parse_extended(crcs, names, elf.endian)?,
            ),
            (_, _, Some(v)) => (
                Some(VersionsLayout::Classic),
                modversions::parse_classic(v, elf.class, elf.endian)?,
            ),
            _ => (None, Vec::new()),
        };

        let symbols = if opts.skip_symbols { Vec::new() } else { elf.symbols(content)? };
        let exports = exports(&elf, &symbols, content);
        // Symbol-table order, first occurrence kept: depmod's dependency order depends on
        // the order in which a module first needs each provider.
        let mut seen = std::collections::HashSet::new();
        let undefined: Vec<String> = symbols
            .iter()
            .filter(|s| s.place == SymbolPlace::Undefined && s.global && !s.name.is_empty())
            .filter(|s| seen.insert(s.name.as_ref()))
            .map(|s| s.name.to_string())
            .collect();

        let digests = opts.digests.then(|| {
            let file_digest = sha256_hex(file);
            // Uncompressed: the ELF is the file; hashing is most of a full read's time.
            let elf = match compression {
                Compression::None => file_digest.clone(),
                _ => sha256_hex(&decoded),
            };
            Digests { file: file_digest, elf }
        });
        Ok(Module {
            path: None,
            compression,
            class: elf.class,
            endian: elf.endian,
            machine: elf.machine,
            modinfo,
            versions_layout,
            versions,
            exports,
            undefined,
            this_module_size: elf.section(".gnu.linkonce.this_module").map(|s| s.size),
            signature,
            digests,
        })
    }

    /// The module's name: `name=` from `.modinfo`, else the file name without `.ko*`,
    /// with `-` normalised to `_` as the kernel does.
    pub fn name(&self) -> String {
        match (self.modinfo.get("name"), &self.path) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(p)) => name_from_path(p),
            _ => String::new(),
        }
    }

    pub fn vermagic(&self) -> Option<&str> {
        self.modinfo.get("vermagic")
    }

    /// The name of the module's `e_machine` alone (see [`elf::machine_name`]).
    pub fn machine_name(&self) -> String {
        elf::machine_name(self.machine)
    }

    /// The architecture the module is built for, as `uname -m` names it (`x86_64`).
    pub fn arch(&self) -> String {
        elf::arch_name(self.machine, self.class, self.endian)
    }

    /// Refuse a module not built for `arch` (any common name: `amd64`, `x86_64`, ...).
    pub fn expect_arch(&self, arch: &str) -> Result<()> {
        let (ours, wanted) = (self.arch(), elf::canonical_arch(arch));
        if ours != wanted {
            anyhow::bail!("wrong architecture: built for {ours}, not {wanted}");
        }
        Ok(())
    }

    /// Values of a `modinfo -F` field, including the signature pseudo-fields kmod adds.
    pub fn field(&self, field: &str) -> Vec<String> {
        let sig = self.signature.as_ref();
        match field {
            "sig_id" => sig.map(|s| s.id_type.name().to_string()).into_iter().collect(),
            "signer" => sig.and_then(|s| s.signer.clone()).into_iter().collect(),
            "sig_key" => sig
                .filter(|s| !s.key_id.is_empty())
                .map(|s| signature::key_id_hex(&s.key_id))
                .into_iter()
                .collect(),
            "sig_hashalgo" => sig.and_then(|s| s.hash.clone()).into_iter().collect(),
            "filename" => self.path.iter().map(|p| p.display().to_string()).collect(),
            _ => self.modinfo.values(field).map(str::to_string).collect(),
        }
    }
}

/// The bytes of a module file: mapped when it is a non-empty regular file, read
/// otherwise (pipes, `/dev/stdin`, filesystems without mmap). Readers touch only the ELF
/// headers, a few sections and the signature trailer: mapping saves copying a whole
/// kernel tree (hundreds of MiB) through the kernel. The one owner of file mapping.
pub enum FileBytes {
    Mapped { ptr: std::ptr::NonNull<std::ffi::c_void>, len: usize },
    Read(Vec<u8>),
}

impl FileBytes {
    pub fn open(path: &Path) -> std::io::Result<FileBytes> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        let len = usize::try_from(meta.len()).ok().and_then(std::num::NonZeroUsize::new);
        if let (true, Some(len)) = (meta.is_file(), len) {
            // SAFETY: a private read-only mapping of a regular file, only read while
            // `self` lives. Module files are replaced by rename (package managers,
            // bootkmod's operations), not rewritten in place; a concurrent writer
            // truncating the file would fault the process (SIGBUS) rather than corrupt a
            // result: the accepted trade-off of mmap, as in kmod itself.
            let mapped = unsafe {
                nix::sys::mman::mmap(
                    None,
                    len,
                    nix::sys::mman::ProtFlags::PROT_READ,
                    nix::sys::mman::MapFlags::MAP_PRIVATE,
                    &file,
                    0,
                )
            };
            if let Ok(ptr) = mapped {
                return Ok(FileBytes::Mapped { ptr, len: len.get() });
            }
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)?;
        Ok(FileBytes::Read(bytes))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: the mapping is `len` readable bytes until `drop`.
            FileBytes::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr() as *const u8, *len)
            },
            FileBytes::Read(v) => v,
        }
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        if let FileBytes::Mapped { ptr, len } = *self {
            // SAFETY: unmapping exactly what `open` mapped, once.
            let _ = unsafe { nix::sys::mman::munmap(ptr, len) };
        }
    }
}

/// `megaraid_sas.ko.xz` → `megaraid_sas`; `foo-bar.ko` → `foo_bar`. Like kmod and the
/// kernel, the name ends at the first `.` of the file name.
pub fn name_from_path(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
    let stem = file.split('.').next().unwrap_or(&file);
    stem.replace('-', "_")
}

/// Exported symbols: `__ksymtab_<sym>` symbols; GPL-ness from the section they live in,
/// CRC from `__crc_<sym>` (an absolute symbol on old kernels, a u32 in `__kcrctab*` on
/// new ones), namespace from `__kstrtabns_<sym>` (a string in `__ksymtab_strings`).
fn exports(elf: &ElfModule, symbols: &[Symbol<'_>], content: &[u8]) -> Vec<Export> {
    use std::collections::HashMap;
    let mut crcs: HashMap<&str, u32> = HashMap::new();
    let mut namespaces: HashMap<&str, String> = HashMap::new();
    for s in symbols {
        if let Some(sym) = s.name.strip_prefix("__crc_") {
            let crc = match s.place {
                SymbolPlace::Absolute => Some(s.value as u32),
                SymbolPlace::Section(i) => elf.read_u32(content, i, s.value),
                _ => None,
            };
            if let Some(crc) = crc {
                crcs.insert(sym, crc);
            }
        } else if let Some(sym) = s.name.strip_prefix("__kstrtabns_") {
            if let SymbolPlace::Section(i) = s.place {
                let section = &elf.sections[i];
                let start = section.range.start.saturating_add(s.value as usize);
                if start < section.range.end {
                    let tail = &content[start..section.range.end];
                    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                    if end > 0 {
                        namespaces.insert(sym, String::from_utf8_lossy(&tail[..end]).into_owned());
                    }
                }
            }
        }
    }
    let mut out: Vec<Export> = symbols
        .iter()
        .filter_map(|s| {
            let name = s.name.strip_prefix("__ksymtab_")?;
            // `__ksymtab_strings` is a section name that can appear as a symbol too.
            if name == "strings" && s.place == SymbolPlace::Absolute {
                return None;
            }
            let SymbolPlace::Section(i) = s.place else { return None };
            let section = elf.sections[i].name.as_str();
            if !section.starts_with("__ksymtab") || section == "__ksymtab_strings" {
                return None;
            }
            Some(Export {
                name: name.to_string(),
                crc: crcs.get(name).copied(),
                gpl: section.starts_with("__ksymtab_gpl"),
                namespace: namespaces.get(name).cloned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}
