//! `bootkmod initramfs ls|extract|cat|kernel-versions|create`: images as the kernel
//! sees them.

use super::{print_json, Context};
use crate::engines::initramfs::view::ViewEntry;
use crate::engines::initramfs::walk::{self, Segment};
use crate::engines::initramfs::{kernel_versions, read_view};
use crate::exit::Exit;
use crate::formats::compression::{Compression, EncoderSettings};
use crate::formats::cpio::Format;
use crate::formats::uki::Uki;
use crate::operations::extract::{self, ExtractOptions};
use crate::operations::pack::{self, PackOptions};
use anyhow::Result;
use std::io::{BufReader, Write};
use std::path::PathBuf;

/// Read, list, extract and write initramfs images exactly as the kernel unpacks them.
///
/// An image is any sequence of cpio archives (newc or crc), raw or compressed (gzip, xz,
/// zstd, lz4 legacy, bzip2, lzma), with zero padding between; later entries win. A
/// Unified Kernel Image (EFI/Linux/*.efi) is read through its .initrd section; `ls
/// --segments` also prints its .uname, .osrel, .cmdline, .linux size and signature.
///
/// Examples:
///   bootkmod initramfs ls -l /boot/initrd.img-6.1.0-56-amd64
///   bootkmod initramfs ls --segments --json initrd.img
///   bootkmod initramfs extract initrd.img /tmp/x usr/lib/modules
///   bootkmod initramfs cat initrd.img etc/cmdline.d/01-default.conf
///   bootkmod initramfs kernel-versions initrd.img
///   bootkmod initramfs ls --segments /boot/efi/EFI/Linux/debian-6.1.0-57-amd64.efi
///   bootkmod initramfs create --compress zstd ./tree overlay.img
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InitramfsArgs {
    #[command(subcommand)]
    pub command: InitramfsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum InitramfsCommand {
    /// List the tree the kernel would build (or the segments).
    Ls {
        image: PathBuf,
        /// Long form, like `cpio -tv`, with each entry's segment of origin.
        #[arg(short = 'l', long)]
        long: bool,
        /// List the segments: offsets, compression, sizes.
        #[arg(long)]
        segments: bool,
    },
    /// Extract the tree (or PATHS in it) into DIR, never writing outside DIR.
    Extract {
        image: PathBuf,
        dir: PathBuf,
        paths: Vec<String>,
        /// Create block and character device nodes (needs root).
        #[arg(long)]
        devices: bool,
    },
    /// Print one file's content (symlinks followed inside the image).
    Cat { image: PathBuf, path: String },
    /// Which lib/modules/<kver> trees the image holds, and how many modules each.
    KernelVersions { image: PathBuf },
    /// Pack DIR into a one-segment image.
    Create {
        dir: PathBuf,
        image: PathBuf,
        /// none, gzip, xz, zstd, bzip2, lzma or lz4 (legacy framing).
        #[arg(long, default_value = "gzip")]
        compress: String,
        /// Compression level (codec default when omitted).
        #[arg(long)]
        level: Option<u32>,
        /// Write the crc (070702) variant instead of newc (070701).
        #[arg(long)]
        crc: bool,
        /// Set every entry's mtime to this (seconds since the epoch), for reproducible images.
        #[arg(long, value_name = "SECONDS")]
        mtime: Option<u32>,
    },
}

pub fn run(ctx: &Context, args: InitramfsArgs) -> Result<Exit> {
    // A path under --root names the target's file: resolved inside the root (an
    // extraction into ROOT/tmp/x never follows the target's links onto the host).
    let at = |p: PathBuf| ctx.root.confine(&p);
    match args.command {
        InitramfsCommand::Ls { image, long, segments } => ls(ctx, &at(image)?, long, segments),
        InitramfsCommand::Extract { image, dir, paths, devices } => {
            let (image, dir) = (at(image)?, at(dir)?);
            let report = extract::extract(&image, &dir, &ExtractOptions { paths, devices })?;
            if ctx.json {
                print_json(&report)?;
            } else if report.skipped_nodes > 0 {
                eprintln!(
                    "bootkmod: skipped {} device nodes (use --devices as root)",
                    report.skipped_nodes
                );
            }
            Ok(Exit::Ok)
        }
        InitramfsCommand::Cat { image, path } => {
            let image = at(image)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            extract::cat(&image, &path, &mut out)?;
            Ok(Exit::Ok)
        }
        InitramfsCommand::KernelVersions { image } => {
            let image = at(image)?;
            let (view, _) = read_view(open(&image)?, &image.display().to_string())?;
            let trees = kernel_versions(&view);
            if ctx.json {
                print_json(&trees)?;
            } else {
                for t in &trees {
                    println!("{}\t{}\t{} modules", t.release, t.path, t.modules);
                }
            }
            Ok(if trees.is_empty() { Exit::Negative } else { Exit::Ok })
        }
        InitramfsCommand::Create { dir, image, compress, level, crc, mtime } => {
            let (dir, image) = (at(dir)?, at(image)?);
            let kind = parse_compression(&compress)?;
            let options = PackOptions {
                compression: EncoderSettings { level, ..EncoderSettings::new(kind) },
                format: if crc { Format::Crc } else { Format::Newc },
                mtime,
            };
            let size = pack::pack_directory(&dir, &image, &options)?;
            if ctx.json {
                print_json(
                    &serde_json::json!({ "image": image, "size": size, "compression": kind }),
                )?;
            }
            Ok(Exit::Ok)
        }
    }
}

fn parse_compression(name: &str) -> Result<Compression> {
    Ok(match name {
        "none" | "cat" => Compression::None,
        "gzip" | "gz" => Compression::Gzip,
        "xz" => Compression::Xz,
        "zstd" | "zst" => Compression::Zstd,
        "bzip2" | "bz2" => Compression::Bzip2,
        "lzma" => Compression::Lzma,
        "lz4" => Compression::Lz4Legacy,
        other => anyhow::bail!(
            "unknown compression {other:?}: use none, gzip, xz, zstd, bzip2, lzma or lz4"
        ),
    })
}

/// The image's initramfs bytes: the file, or a Unified Kernel Image's `.initrd`.
fn open(image: &std::path::Path) -> Result<BufReader<std::io::Take<std::fs::File>>> {
    Ok(BufReader::with_capacity(1 << 20, crate::model::uki::open_initramfs(image)?.0))
}

/// A UKI's facts as `ls --segments` prints them.
fn print_uki(out: &mut dyn Write, uki: &Uki) -> Result<()> {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    writeln!(out, "Unified Kernel Image:")?;
    writeln!(out, "  .uname    {}", or_none(&uki.uname))?;
    writeln!(out, "  .osrel    {}", uki.os_name().unwrap_or_else(|| "(none)".into()))?;
    writeln!(out, "  .cmdline  {}", or_none(&uki.cmdline))?;
    writeln!(out, "  .linux    {} bytes", uki.linux.map_or(0, |l| l.1))?;
    writeln!(
        out,
        "  .initrd   {} bytes at {:#x}",
        uki.initrd.map_or(0, |l| l.1),
        uki.initrd.map_or(0, |l| l.0)
    )?;
    match uki.signature {
        Some((offset, len)) => {
            writeln!(out, "  signed    Authenticode, {len} bytes at {offset:#x}")?
        }
        None => writeln!(out, "  signed    no")?,
    }
    Ok(())
}

/// A UKI's facts in `--json`.
fn json_uki(uki: &Uki) -> serde_json::Value {
    serde_json::json!({
        "uname": uki.uname,
        "pretty_name": uki.os_name(),
        "cmdline": uki.cmdline,
        "linux_size": uki.linux.map(|l| l.1),
        "initrd_offset": uki.initrd.map(|l| l.0),
        "initrd_size": uki.initrd.map(|l| l.1),
        "signature": uki.signature.map(|(offset, size)| serde_json::json!({"offset": offset, "size": size})),
    })
}

fn ls(ctx: &Context, image: &std::path::Path, long: bool, segments_only: bool) -> Result<Exit> {
    let source = image.display().to_string();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (reader, uki) = crate::model::uki::open_initramfs(image)?;
    let reader = BufReader::with_capacity(1 << 20, reader);
    if segments_only {
        let segments = walk::walk(reader, &source, &mut walk::Ignore)?;
        if ctx.json {
            drop(out);
            match &uki {
                Some(u) => {
                    print_json(&serde_json::json!({ "uki": json_uki(u), "segments": segments }))?
                }
                None => print_json(&segments)?,
            }
        } else {
            if let Some(u) = &uki {
                print_uki(&mut out, u)?;
            }
            print_segments(&mut out, &segments)?;
        }
        return Ok(Exit::Ok);
    }
    let (view, segments) = read_view(reader, &source)?;
    if ctx.json {
        drop(out);
        let entries: Vec<_> = view.entries().map(|e| json_entry(&e)).collect();
        let mut doc = serde_json::json!({ "segments": segments, "entries": entries });
        if let Some(u) = &uki {
            doc["uki"] = json_uki(u);
        }
        print_json(&doc)?;
        return Ok(Exit::Ok);
    }
    let mut links: std::collections::HashMap<usize, u32> = Default::default();
    if long {
        for e in view.entries() {
            *links.entry(e.inode_id).or_default() += 1;
        }
    }
    for e in view.entries() {
        if !long {
            out.write_all(e.display_path().as_bytes())?;
            out.write_all(b"\n")?;
            continue;
        }
        let i = e.inode;
        let size = match i.type_char() {
            'c' | 'b' => format!("{:>3}, {:>3}", i.rdev_major, i.rdev_minor),
            _ => i.size().to_string(),
        };
        let target = if i.type_char() == 'l' {
            format!(" -> {}", String::from_utf8_lossy(&i.target))
        } else {
            String::new()
        };
        let segment = e.origin.map_or(String::from("-"), |o| o.segment.to_string());
        writeln!(
            out,
            "{}{} {:>3} {:<8} {:<8} {:>8} {} [{segment}] {}{target}",
            i.type_char(),
            permissions(i.mode),
            links.get(&e.inode_id).copied().unwrap_or(1),
            i.uid,
            i.gid,
            size,
            format_time(i.mtime),
            e.display_path(),
        )?;
    }
    Ok(Exit::Ok)
}

fn print_segments(out: &mut dyn Write, segments: &[Segment]) -> Result<()> {
    writeln!(
        out,
        "{:>3} {:>10} {:>10} {:<6} {:<5} {:>10} {:>7} trailer",
        "#", "offset", "length", "comp", "cpio", "cpio-size", "entries"
    )?;
    for s in segments {
        let format = s.format.map_or("-", |f| if f == Format::Crc { "crc" } else { "newc" });
        writeln!(
            out,
            "{:>3} {:>10} {:>10} {:<6} {:<5} {:>10} {:>7} {}",
            s.index,
            s.offset,
            s.length,
            s.compression.name(),
            format,
            s.cpio_size,
            s.entries,
            if s.trailer { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

fn json_entry(e: &ViewEntry<'_>) -> serde_json::Value {
    let i = e.inode;
    serde_json::json!({
        "path": e.display_path(),
        "type": i.type_char().to_string(),
        "mode": format!("{:o}", i.mode & 0o7777),
        "uid": i.uid,
        "gid": i.gid,
        "size": i.size(),
        "mtime": i.mtime,
        "target": (i.type_char() == 'l').then(|| String::from_utf8_lossy(&i.target).into_owned()),
        "rdev": matches!(i.type_char(), 'c' | 'b').then(|| [i.rdev_major, i.rdev_minor]),
        "segment": e.origin.map(|o| o.segment),
    })
}

fn permissions(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, ch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => ch,
            (false, true) => ch.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `YYYY-MM-DD HH:MM` in UTC (days-from-civil inverse, Howard Hinnant's algorithm).
fn format_time(secs: u32) -> String {
    let days = i64::from(secs / 86400);
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}
