//! `bootkmod info MODULE...`: what a module file says about itself.

use super::Context;
use crate::exit::Exit;
use crate::formats::compression::Compression;
use crate::model::module::{Module, ReadOptions, VersionsLayout};
use crate::model::root::running_release;
use crate::model::tree::ModuleTree;
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::PathBuf;

/// Show what a kernel module file says about itself.
///
/// MODULE is a path to a .ko, .ko.xz, .ko.zst or .ko.gz file (compression is detected by
/// magic bytes), or a module name looked up in ROOT/lib/modules/KVER.
///
/// Examples:
///   bootkmod info ./megaraid_sas.ko.xz
///   bootkmod info -F vermagic megaraid_sas
///   bootkmod info --modversions --kver 6.1.0-56-amd64 vmw_pvscsi
///   bootkmod info --json ./driver.ko
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InfoArgs {
    /// Module files or names.
    #[arg(required = true, value_name = "MODULE")]
    pub modules: Vec<String>,

    /// Kernel release whose tree resolves module names (default: the running kernel).
    #[arg(long, value_name = "KVER")]
    pub kver: Option<String>,

    /// Print only the values of one field, one per line, like `modinfo -F`.
    #[arg(short = 'F', long, value_name = "FIELD", conflicts_with = "modversions")]
    pub field: Option<String>,

    /// Print the CRC and name of each symbol version, like `modprobe --dump-modversions`
    /// (which dumps only its first file; bootkmod dumps each in turn).
    #[arg(long)]
    pub modversions: bool,

    /// Also show the sha256 of each file and of its uncompressed ELF (always in --json).
    #[arg(long)]
    pub digests: bool,

    /// Refuse modules not built for ARCH (`x86_64`, `amd64`, `aarch64`, `arm64`, ...).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
}

pub fn run(ctx: &Context, args: InfoArgs) -> Result<Exit> {
    let quick = args.field.is_some() || args.modversions;
    // Hashing is most of the cost of a full read: only when it will be shown.
    let opts = ReadOptions { digests: ctx.json || args.digests, skip_symbols: quick };
    let tree = ModuleTree::new(ctx.root.clone(), args.kver.clone().unwrap_or_else(running_release));
    // Like modinfo, a module that cannot be found or read is reported (one line on
    // stderr) and the others are still shown; the exit status says something failed.
    let mut status = Exit::Ok;
    let mut paths = Vec::new();
    for arg in &args.modules {
        let path = PathBuf::from(arg);
        if path.exists() || arg.contains('/') {
            paths.push(path);
        } else if let Some(found) = tree.find(arg)? {
            paths.push(found);
        } else {
            eprintln!("bootkmod: module {arg} not found in {}", tree.dir().display());
            status = status.worst(Exit::Negative);
        }
    }
    let mut modules = Vec::with_capacity(paths.len());
    for (path, read) in paths.iter().zip(Module::read_many(&paths, opts)) {
        let checked = read.and_then(|m| match &args.arch {
            Some(arch) => {
                m.expect_arch(arch).map(|()| m).with_context(|| path.display().to_string())
            }
            None => Ok(m),
        });
        match checked {
            Ok(m) => modules.push(m),
            Err(e) => {
                eprintln!("bootkmod: {e:#}");
                status = status.worst(Exit::Error);
            }
        }
    }

    // Block-buffered: over a kernel tree, a write per line (stdout's default line
    // buffering) costs more than parsing.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    if let Some(field) = &args.field {
        for m in &modules {
            for v in m.field(field) {
                writeln!(out, "{v}")?;
            }
        }
    } else if args.modversions {
        for m in &modules {
            for v in &m.versions {
                writeln!(out, "0x{:08x}\t{}", v.crc, v.symbol)?;
            }
        }
    } else if ctx.json {
        serde_json::to_writer_pretty(&mut out, &modules)?;
        writeln!(out)?;
    } else {
        for (i, m) in modules.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            write_report(&mut out, m)?;
        }
    }
    out.flush()?;
    Ok(status)
}

/// The human-readable report of one module.
pub fn write_report(out: &mut impl Write, m: &Module) -> std::io::Result<()> {
    let path = m.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    writeln!(out, "{}  {path}", m.name())?;
    let row = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<15} {v}");
    row(
        out,
        "format",
        &format!(
            "{} {} {}, {}",
            m.class.name(),
            m.endian.name(),
            m.arch(),
            match m.compression {
                Compression::None => "uncompressed".to_string(),
                c => format!("{c}-compressed"),
            }
        ),
    )?;
    for key in [
        "vermagic",
        "version",
        "license",
        "srcversion",
        "depends",
        "softdep",
        "import_ns",
        "intree",
        "retpoline",
    ] {
        for v in m.modinfo.values(key) {
            row(out, key, v)?;
        }
    }
    let aliases = m.modinfo.values("alias").count();
    if aliases > 0 {
        row(out, "aliases", &aliases.to_string())?;
    }
    for fw in m.modinfo.values("firmware") {
        row(out, "firmware", fw)?;
    }
    let versions = match m.versions_layout {
        Some(VersionsLayout::Classic) => format!("{} symbol CRCs in __versions", m.versions.len()),
        Some(VersionsLayout::Extended) => {
            format!("{} symbol CRCs in __version_ext_crcs (extended)", m.versions.len())
        }
        None => "none (built without CONFIG_MODVERSIONS)".into(),
    };
    row(out, "modversions", &versions)?;
    let gpl = m.exports.iter().filter(|e| e.gpl).count();
    row(out, "exports", &format!("{} symbols ({gpl} GPL-only)", m.exports.len()))?;
    row(out, "imports", &format!("{} undefined symbols", m.undefined.len()))?;
    match m.this_module_size {
        Some(s) => row(out, "struct module", &format!("{s} bytes"))?,
        None => row(out, "struct module", "missing .gnu.linkonce.this_module")?,
    }
    match &m.signature {
        Some(s) => row(
            out,
            "signature",
            &format!(
                "{} ({}), signer {:?}, key {}",
                s.id_type.name(),
                s.hash.as_deref().unwrap_or("unknown hash"),
                s.signer.as_deref().unwrap_or("?"),
                crate::formats::signature::key_id_hex(&s.key_id)
            ),
        )?,
        None => row(out, "signature", "unsigned")?,
    }
    if let Some(d) = &m.digests {
        row(out, "sha256 file", &d.file)?;
        row(out, "sha256 elf", &d.elf)?;
    }
    Ok(())
}
