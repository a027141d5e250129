//! `inject` as an operation: put modules into an existing initramfs image, then prove
//! from the bytes on disk that it worked.
//!
//! Flow of [`inject`]:
//!
//! 1. read the image once ([`ImageContents::read`]), hashing only the in-image modules
//!    named like the requested ones, and pick its kernel tree; beside it, on a second
//!    thread, read the target system's side (modules asked for by name from
//!    `ROOT/lib/modules/KVER`, the kernel to check against: [`Kernel`]) when the release
//!    can be told in advance ([`expected_release`]);
//! 2. compute the [`Plan`] (`engines::inject`); for an append, the copy of the original
//!    bytes is staged beside the output meanwhile ([`Staged`]);
//! 3. stop there when the check refuses (exit 3 for the CLI), when nothing would change
//!    (idempotent re-runs), or for a dry run (a staged copy is dropped);
//! 4. write: by default the original bytes plus one overlay segment compressed like the
//!    image's last one ([`Mode::Append`]); with `rebuild` (or when the last segment is
//!    lz4 legacy, which the kernel requires to be last) the leading uncompressed early
//!    cpio kept as is and everything else merged into one fresh segment
//!    ([`Mode::Rebuild`]). [`Staged::commit`] then fsyncs the temp file beside the
//!    target, verifies it (step 5), links the backup, renames, fsyncs the directory;
//!    owner, mode and xattrs are kept;
//! 5. verify ([`Verification`]) the temp file before the rename: every segment decodes,
//!    every written module has its planned sha256, and every requested module resolves
//!    through the image's own `modules.dep.bin` to a chain whose files are all there. An
//!    appended image is checked to start with exactly the bytes the plan decoded (an
//!    XXH3-128 [`Fingerprint`] taken while reading them), and only the new segment is
//!    decoded again: decoding the original twice would double the cost of an injection.
//!    A failed verification replaces nothing ([`Outcome::NotVerified`]).
//!
//! Issue 7 (`install`/`status`/`remove`) builds on [`inject`] and [`Report`].

use crate::engines::depmod::config::Config;
use crate::engines::depmod::probe::TreeIndexes;
use crate::engines::depmod::scan;
use crate::engines::initramfs::view::View;
use crate::engines::initramfs::walk::{self, Entry, Visitor};
use crate::engines::initramfs::write::{padding_before_raw, ArchiveWriter};
use crate::engines::inject::{
    self, Chain, Digests, ImageContents, NewEntry, Origin, Plan, PlanOptions, Removal, Request,
    Sources,
};
use crate::formats::compression::{Compression, EncoderSettings};
use crate::formats::cpio::{EntryMeta, Format, HEADER_LEN, S_IFREG};
use crate::model::kernel::{Interest, Kernel, KernelOptions};
use crate::model::module::{sha256_hex, FileBytes, Module, ReadOptions};
use crate::model::root::Root;
use crate::operations::atomic::{dir_of, FileIdentity, Lock, ReplaceOptions, Staged};
use crate::progress::{Progress, Reading};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A module as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleArg {
    /// A module file on the host.
    File(PathBuf),
    /// A module of the target kernel's tree under the root.
    Name(String),
}

impl ModuleArg {
    /// A path (has a `/`, or is an existing `.ko*` file) is a file; anything else a name.
    pub fn parse(arg: &str) -> ModuleArg {
        let p = Path::new(arg);
        if arg.contains('/') || (crate::model::tree::is_module_file(arg) && p.is_file()) {
            ModuleArg::File(p.to_path_buf())
        } else {
            ModuleArg::Name(arg.to_string())
        }
    }
}

/// Everything [`inject`] can be told.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// The kernel release; default: the image's only tree.
    pub release: Option<String>,
    /// Write here instead of replacing the image.
    pub output: Option<PathBuf>,
    pub dry_run: bool,
    pub rebuild: bool,
    /// Keep `IMAGE.bootkmod.bak` when replacing in place.
    pub backup: bool,
    pub plan: PlanOptions,
    pub kernel: KernelOptions,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            release: None,
            output: None,
            dry_run: false,
            rebuild: false,
            backup: true,
            plan: PlanOptions::default(),
            kernel: KernelOptions::default(),
        }
    }
}

/// How the new image is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Original bytes, then one overlay segment.
    Append,
    /// Early cpio kept, the rest merged into one fresh segment.
    Rebuild,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The check refused a module; nothing written.
    Refused,
    /// Everything was already in place; nothing written.
    Unchanged,
    /// Dry run: the plan only.
    Planned,
    /// Written and verified.
    Written,
    /// Written to a temp file that failed verification; the image was left unchanged.
    NotVerified,
}

/// What the re-read of the written image found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub segments: usize,
    /// Written files whose sha256 in the image differs from the plan (or are missing).
    pub mismatched: Vec<String>,
    /// Module files of the tree whose content is not what their name promises (`.ko.xz`
    /// holding no xz data, `.ko` holding compressed data), with what they hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub misencoded: Vec<String>,
    pub chains: Vec<Chain>,
    pub ok: bool,
}

/// What an injection did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub image: PathBuf,
    /// Where the result was (or would be) written.
    pub output: PathBuf,
    pub outcome: Outcome,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    pub plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// The host path of the initramfs a driver for `release` goes into
/// (`model::boot_images::primary`), or an error naming every image looked at.
pub fn find_image(root: &Root, release: &str) -> Result<PathBuf> {
    let images = crate::model::boot_images::find(root, release);
    if let Some(p) = crate::model::boot_images::primary_of(&images) {
        return root.host(p);
    }
    let seen: Vec<String> = images
        .iter()
        .map(|i| {
            let state = if !i.exists {
                "missing"
            } else if i.kind == crate::model::boot_images::ImageKind::Uki {
                "a Unified Kernel Image"
            } else {
                "earlier initrd of its entry"
            };
            format!("{} ({state}; {})", i.path.display(), i.why)
        })
        .collect();
    bail!(
        "no initramfs for kernel {release} under {}: looked at boot entries \
         (/boot, /efi, /boot/efi loader/entries), kernel-install's layout, \
         /boot/initrd.img-{release} and /boot/initramfs-{release}.img{} (name the image with --image)",
        root.dir().display(),
        if seen.is_empty() { String::new() } else { format!("; found {}", seen.join(", ")) }
    )
}

/// The name of the backup kept beside an image replaced in place.
pub fn backup_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(".bootkmod.bak");
    PathBuf::from(name)
}

/// Inject `modules` into `image`. See the module overview.
pub fn inject(
    root: &Root,
    image: &Path,
    modules: &[ModuleArg],
    opts: &InjectOptions,
) -> Result<Report> {
    if modules.is_empty() {
        bail!("no module to inject");
    }
    // An image (or output) under the root is the target's file, resolved inside it.
    let confined = root.confine(image)?;
    let image = confined.as_path();
    // Files first: their names, like the named ones, are the image modules worth a digest.
    let mut files = HashMap::new();
    let mut names = HashSet::new();
    for arg in modules {
        match arg {
            ModuleArg::File(path) => {
                let bytes = std::fs::read(root.confine(path)?)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                let mut module = Module::from_bytes(&bytes, ReadOptions::default())
                    .with_context(|| path.display().to_string())?;
                module.path = Some(path.clone());
                names.insert(module.name());
                let origin = Origin::File { path: path.clone() };
                files.insert(path.clone(), Request { module, bytes, origin });
            }
            ModuleArg::Name(name) => {
                names.insert(name.replace('-', "_"));
            }
        }
    }
    let output = match &opts.output {
        Some(o) => root.confine(o)?,
        None => image.to_path_buf(),
    };
    // Two bootkmod runs on one image would each append to the original and the second
    // rename would drop the first's modules: writers serialize on the output's
    // directory, and a run that waited reads the image the other one left.
    let _lock = if opts.dry_run { None } else { Some(Lock::exclusive(&dir_of(&output))?) };
    let started = std::time::Instant::now();
    // The target system's side does not depend on the image once the release is known:
    // when it can be told in advance, read it on a thread beside the image.
    let expected = expected_release(root, image, opts);
    let (original, early) = std::thread::scope(|scope| {
        let early = expected.as_deref().map(|release| {
            scope.spawn(|| Target::read(root, release, modules, &files, &opts.kernel))
        });
        let original = Original::read(image, Digests::Named(&names));
        let early = early.map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("reader panicked"))));
        (original, early)
    });
    let original = original?;
    tracing::debug!("read {} in {:.3} s", image.display(), started.elapsed().as_secs_f64());
    let contents = &original.contents;
    let (release, tree) = inject::choose_tree(contents, opts.release.as_deref())
        .with_context(|| image.display().to_string())?;
    let target = match early {
        Some(target) if expected.as_deref() == Some(release.as_str()) => target?,
        _ => Target::read(root, &release, modules, &files, &opts.kernel)?,
    };
    let Target { mut sources, requests, kernel } = target;
    let mut unreadable_kernel = None;
    let kernel = match kernel {
        Ok(k) => Some(k),
        Err(e) if opts.plan.force => {
            unreadable_kernel = Some(format!("{e:#}"));
            None
        }
        Err(e) => {
            return Err(e).context(format!(
                "cannot check the modules against kernel {release} (give --root the system the image boots, or --force)"
            ))
        }
    };
    let last = contents.segments.last().map_or(Compression::None, |s| s.compression);
    let mode =
        if opts.rebuild || last == Compression::Lz4Legacy { Mode::Rebuild } else { Mode::Append };
    let overlay = Overlay::of(&original);
    // An appended image starts with a copy of the original, which needs no plan: it is
    // staged beside the output while the plan is computed. When nothing is to be
    // written, the staged file is dropped, and with it the temp file.
    let (plan, staged) = std::thread::scope(|scope| {
        let staged = (mode == Mode::Append && !opts.dry_run)
            .then(|| scope.spawn(|| stage_original(image, &output, overlay)));
        let plan = inject::plan(
            contents,
            &release,
            &tree,
            kernel.as_ref(),
            requests,
            &mut sources,
            &opts.plan,
        );
        let staged = staged.map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("copy panicked"))));
        (plan, staged)
    });
    let mut plan = plan?;
    plan.warnings.extend(unreadable_kernel);
    tracing::debug!("planned at {:.3} s", started.elapsed().as_secs_f64());

    let mut report = Report {
        image: image.to_path_buf(),
        output: output.clone(),
        outcome: Outcome::Planned,
        mode,
        backup: None,
        plan,
        verification: None,
    };
    if report.plan.refused {
        report.outcome = Outcome::Refused;
        return Ok(report);
    }
    let in_place = output == image;
    if !report.plan.changes() {
        report.outcome = Outcome::Unchanged;
        // `-o OUT` promises OUT is the result: with nothing to add, the image itself.
        if !in_place && !opts.dry_run {
            let staged = match staged {
                Some(staged) => staged?,
                None => stage_original(image, &output, overlay)?,
            };
            let replace = ReplaceOptions {
                backup: None,
                like: (!output.exists()).then(|| image.to_path_buf()),
                expect: None,
            };
            staged.commit(&replace, |temp| {
                let copy = FileBytes::open(temp)
                    .with_context(|| format!("{}: cannot read", temp.display()))?;
                if FileIdentity::of(image)? != original.identity
                    || copy.len() as u64 != original.bytes.0
                    || !original.is_prefix_of(&copy)
                {
                    bail!(
                        "{}: the image changed while bootkmod was copying it (another writer?)",
                        image.display()
                    );
                }
                Ok(())
            })?;
        }
        return Ok(report);
    }
    if opts.dry_run {
        return Ok(report);
    }

    let backup = (in_place && opts.backup).then(|| backup_path(image));
    let replace = ReplaceOptions {
        backup: backup.clone(),
        like: (!in_place && !output.exists()).then(|| image.to_path_buf()),
        // In place, the image is replaced only if it is still the file read: dracut
        // takes no lock and may rename a new image in at any moment.
        expect: in_place.then_some(original.identity),
    };
    let plan = &report.plan;
    let mut staged = match staged {
        Some(staged) => staged?,
        None => Staged::beside(&output)?,
    };
    let written = match mode {
        Mode::Append => write_overlay(overlay, &plan.entries, staged.file()),
        Mode::Rebuild => write_rebuild(image, contents, &plan.entries, &[], staged.file()),
    };
    written.with_context(|| format!("{}: cannot write", output.display()))?;
    tracing::debug!("written at {:.3} s", started.elapsed().as_secs_f64());
    // An appended image is verified against the original's contents, read on.
    let read = original.identity;
    let appended_to = (mode == Mode::Append).then_some(original);
    let mut verification = None;
    let committed = staged.commit(&replace, |temp| {
        // Not bootkmod's lock: dracut may have replaced the image since it was read.
        if FileIdentity::of(image)? != read {
            bail!(
                "{}: the image changed while bootkmod was injecting (another writer?)",
                image.display()
            );
        }
        let v = verify(temp, &output, plan, appended_to)?;
        tracing::debug!("verified at {:.3} s", started.elapsed().as_secs_f64());
        let ok = v.ok;
        verification = Some(v);
        if !ok {
            bail!("the written image failed verification; {} left unchanged", output.display());
        }
        Ok(())
    });
    report.verification = verification;
    match committed {
        Ok(()) => {
            report.backup = backup;
            report.outcome = Outcome::Written;
        }
        Err(_) if report.verification.as_ref().is_some_and(|v| !v.ok) => {
            report.outcome = Outcome::NotVerified;
        }
        Err(e) => return Err(e),
    }
    Ok(report)
}

/// What taking modules out of an image did (or, in a dry run, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TakeOutReport {
    pub image: PathBuf,
    #[serde(flatten)]
    pub removal: Removal,
    /// The image was rewritten (and checked to hold none of the modules).
    pub written: bool,
}

/// Take the module files at `rels` (relative to the image's tree of `release`) out of
/// `image` without touching anything else another tool put there: the image is rebuilt
/// (its leading uncompressed segments byte for byte, the rest in one segment compressed
/// as before) without them, with regenerated indexes and early-load files. Atomic; the
/// written image is read back and must hold none of them. An image that holds none is
/// left as it is.
pub fn take_out(
    root: &Root,
    image: &Path,
    release: &str,
    rels: &[String],
    dry_run: bool,
) -> Result<TakeOutReport> {
    let _lock = if dry_run { None } else { Some(Lock::exclusive(&dir_of(image))?) };
    let none = HashSet::new();
    let original = Original::read(image, Digests::Named(&none))?;
    let contents = &original.contents;
    let (_, tree) = inject::choose_tree(contents, Some(release))
        .with_context(|| image.display().to_string())?;
    let mut sources = TreeSources::new(root, release);
    let removal = inject::take_out(contents, &tree, rels, &mut sources)?;
    let mut report = TakeOutReport { image: image.to_path_buf(), removal, written: false };
    if !report.removal.changes() || dry_run {
        return Ok(report);
    }
    let removal = &report.removal;
    let mut staged = Staged::beside(image)?;
    let dropped: Vec<&[u8]> = removal.dropped.iter().map(|p| p.as_bytes()).collect();
    write_rebuild(image, contents, &removal.entries, &dropped, staged.file())
        .with_context(|| format!("{}: cannot write", image.display()))?;
    // Replaced only if it is still the image read: dracut or update-initramfs take no
    // lock and may rename a new image in at any moment.
    let replace = ReplaceOptions { expect: Some(original.identity), ..Default::default() };
    staged.commit(&replace, |temp| {
        if FileIdentity::of(image)? != original.identity {
            bail!(
                "{}: the image changed while bootkmod was taking modules out (another writer?)",
                image.display()
            );
        }
        let source = image.display().to_string();
        let after = ImageContents::read(open(temp)?, &source, Digests::Named(&none))
            .context("verifying the written image")?;
        let left: Vec<&String> =
            removal.dropped.iter().filter(|p| after.has_file(p.as_str())).collect();
        if !left.is_empty() {
            bail!("{source}: the rewritten image still holds {left:?}; left unchanged");
        }
        Ok(())
    })?;
    report.written = true;
    Ok(report)
}

/// The release an image most likely serves, before reading it: `--kver`, else the
/// release in a distribution's image name (`initramfs-K.img`, `initrd.img-K`) when
/// `ROOT/lib/modules/K` exists, else the root's only kernel. Only a head start: the
/// image's own tree decides.
fn expected_release(root: &Root, image: &Path, opts: &InjectOptions) -> Option<String> {
    if let Some(release) = &opts.release {
        return Some(release.clone());
    }
    let name = image.file_name()?.to_str()?;
    let named = ["initramfs-", "initrd.img-", "initrd-"].iter().find_map(|prefix| {
        let rest = name.strip_prefix(prefix)?;
        Some(rest.strip_suffix(".img").unwrap_or(rest).to_string())
    });
    let releases = crate::model::kernel::releases(root).ok()?;
    match named {
        Some(release) if releases.contains(&release) => Some(release),
        _ if releases.len() == 1 => releases.into_iter().next(),
        _ => None,
    }
}

/// The target system's side of an injection for one release: its module tree, the
/// requested modules, and the kernel to check them against (its error is fatal only
/// without `--force`).
struct Target<'a> {
    sources: TreeSources<'a>,
    requests: Vec<Request>,
    kernel: Result<Kernel>,
}

impl<'a> Target<'a> {
    fn read(
        root: &'a Root,
        release: &str,
        modules: &[ModuleArg],
        files: &HashMap<PathBuf, Request>,
        kernel_opts: &KernelOptions,
    ) -> Result<Target<'a>> {
        let mut sources = TreeSources::new(root, release);
        let mut requests = Vec::new();
        for arg in modules {
            requests.push(match arg {
                ModuleArg::File(path) => files[path].clone(),
                ModuleArg::Name(name) => sources.tree_module(name)?.with_context(|| {
                    format!(
                        "no module {name} in {}",
                        root.shown(format!("/lib/modules/{release}")).display()
                    )
                })?,
            });
        }
        let mut kernel_opts = kernel_opts.clone();
        let checked: Vec<Module> = requests.iter().map(|r| r.module.clone()).collect();
        kernel_opts.interest = Some(Interest::of(&checked));
        let kernel = Kernel::read(root, release, &kernel_opts);
        Ok(Target { sources, requests, kernel })
    }
}

fn open(image: &Path) -> Result<BufReader<File>> {
    let f = File::open(image).with_context(|| format!("{}: cannot open", image.display()))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

/// XXH3-128 of a byte stream: proves that bytes read twice are the same bytes, at a
/// small fraction of the cost of decoding them again (sha256 would cost a third of a
/// zstd decode; nothing here defends against a deliberate collision, only against the
/// file changing under us).
#[derive(Default)]
struct Fingerprint {
    hasher: twox_hash::XxHash3_128,
    len: u64,
}

impl Fingerprint {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.write(bytes);
        self.len += bytes.len() as u64;
    }

    fn value(&self) -> (u64, u128) {
        (self.len, self.hasher.finish_128())
    }
}

/// A reader that fingerprints what passes through it.
struct Fingerprinted<R> {
    inner: R,
    fingerprint: Fingerprint,
}

impl<R: Read> Read for Fingerprinted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.fingerprint.update(&buf[..n]);
        Ok(n)
    }
}

/// The image as the plan read it: its contents, the length and fingerprint of the
/// bytes they were decoded from, and the file they came from.
struct Original {
    contents: ImageContents,
    bytes: (u64, u128),
    identity: FileIdentity,
}

impl Original {
    fn read(image: &Path, digests: Digests) -> Result<Original> {
        let file =
            File::open(image).with_context(|| format!("{}: cannot open", image.display()))?;
        let identity = FileIdentity::from(&file.metadata()?);
        let progress = Progress::new(format!("reading {}", image.display()), identity.size);
        let mut reader = BufReader::with_capacity(
            1 << 20,
            Fingerprinted {
                inner: Reading { inner: file, progress },
                fingerprint: Fingerprint::default(),
            },
        );
        let contents = ImageContents::read(&mut reader, &image.display().to_string(), digests)?;
        let bytes = reader.get_ref().fingerprint.value();
        Ok(Original { contents, bytes, identity })
    }

    /// Whether `bytes` start with exactly the bytes read.
    fn is_prefix_of(&self, bytes: &[u8]) -> bool {
        let mut fingerprint = Fingerprint::default();
        fingerprint.update(&bytes[..bytes.len().min(self.bytes.0 as usize)]);
        fingerprint.value() == self.bytes
    }
}

fn meta(entry: &NewEntry) -> EntryMeta {
    // mtime 0: the overlay depends only on its content, so re-runs are reproducible.
    EntryMeta::new(entry.path.clone(), entry.mode)
}

/// What appending needs to know of the original image.
#[derive(Clone, Copy)]
struct Overlay {
    /// Length of the original image: the overlay starts there (after padding).
    after: u64,
    /// The original's last segment's compression, which the overlay takes.
    compression: Compression,
}

impl Overlay {
    fn of(original: &Original) -> Overlay {
        let segments = &original.contents.segments;
        Overlay {
            after: original.bytes.0,
            compression: segments.last().map_or(Compression::None, |s| s.compression),
        }
    }
}

/// Stage the first part of an appended image: the original bytes. That they are the
/// bytes the plan read is proven by [`verify`], from the disk.
fn stage_original(image: &Path, output: &Path, overlay: Overlay) -> Result<Staged> {
    let mut staged = Staged::beside(output)?;
    let mut src = File::open(image).with_context(|| format!("{}: cannot open", image.display()))?;
    let len = overlay.after;
    // File to file: the kernel copies (copy_file_range), no pass through user space.
    let copied = std::io::copy(&mut (&mut src).take(len), staged.file())
        .with_context(|| format!("{}: cannot copy", image.display()))?;
    if copied != len || src.read(&mut [0u8; 1])? != 0 {
        bail!(
            "{}: the image changed while bootkmod was injecting (another writer?)",
            image.display()
        );
    }
    start_writeback(staged.file());
    Ok(staged)
}

/// Ask the kernel to start writing a file's dirty pages now, without waiting: the
/// fsync before the rename then finds most of the copy already on its way to disk.
/// Only a head start, so failure (a filesystem without it) is ignored.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor we own; no memory is shared.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// The rest of an appended image, after the staged original: alignment padding when the
/// overlay is raw, one overlay segment.
fn write_overlay(overlay: Overlay, entries: &[NewEntry], out: &mut File) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let out: &mut dyn Write = &mut out;
    let kind = overlay.compression;
    if kind == Compression::None {
        out.write_all(&vec![0u8; padding_before_raw(overlay.after)])?;
    }
    let mut archive = ArchiveWriter::new(out, EncoderSettings::new(kind), Format::Newc)?;
    for e in entries {
        archive.add(&meta(e), &e.body)?;
    }
    archive.finish()?.flush()?;
    Ok(())
}

/// Leading uncompressed segments (the early cpio) byte for byte, then one segment with
/// every later entry in image order (minus the files the plan replaces and the `dropped`
/// ones) and the plan's entries, compressed like the image's last compressed segment.
fn write_rebuild(
    image: &Path,
    contents: &ImageContents,
    entries: &[NewEntry],
    dropped: &[&[u8]],
    out: &mut File,
) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let out: &mut dyn Write = &mut out;
    let segs = &contents.segments;
    let first = segs.iter().position(|s| s.compression != Compression::None);
    let (keep_bytes, from_segment) = match first {
        Some(i) => (segs[i].offset, i),
        None => (0, 0),
    };
    let kind = segs
        .iter()
        .rev()
        .map(|s| s.compression)
        .find(|&c| c != Compression::None)
        .unwrap_or(Compression::None);
    let mut src = open(image)?;
    let copied = std::io::copy(&mut (&mut src).take(keep_bytes), out)?;
    if copied != keep_bytes {
        bail!("{}: shorter than its segments", image.display());
    }
    if kind == Compression::None {
        out.write_all(&vec![0u8; padding_before_raw(copied)])?;
    }
    let archive = ArchiveWriter::new(out, EncoderSettings::new(kind), Format::Newc)?;
    let mut replaced: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    replaced.extend(dropped.iter().copied());
    // Counted in cpio bytes: the first walk knows how many, and recompressing them is
    // the slow part (xz: tens of seconds).
    let cpio_bytes = segs[from_segment..].iter().map(|s| s.cpio_size).sum();
    let mut copier = Copier {
        progress: Progress::new(format!("rebuilding {}", image.display()), cpio_bytes),
        archive,
        from_segment,
        replaced,
        view: &contents.view,
        links: HashMap::new(),
        body: Vec::new(),
    };
    walk::walk(open(image)?, &image.display().to_string(), &mut copier)?;
    let mut archive = copier.archive;
    for e in entries {
        archive.add(&meta(e), &e.body)?;
    }
    archive.finish()?.flush()?;
    Ok(())
}

/// Copies the entries of a walk into one archive (see [`write_rebuild`]).
struct Copier<'a, W: Write> {
    progress: Progress,
    archive: ArchiveWriter<W>,
    from_segment: usize,
    replaced: HashSet<&'a [u8]>,
    view: &'a View,
    /// (segment, ino, devmajor, devminor) → link group, for hard links.
    links: HashMap<(usize, u32, u32, u32), u64>,
    body: Vec<u8>,
}

impl<W: Write> Visitor for Copier<'_, W> {
    fn entry(&mut self, entry: &Entry, body: &mut dyn Read) -> Result<()> {
        if entry.segment < self.from_segment || entry.is_trailer() {
            return Ok(());
        }
        let h = &entry.header;
        self.progress.advance(HEADER_LEN as u64 + entry.name.len() as u64 + h.filesize as u64);
        if h.file_type() == S_IFREG {
            if let Some(found) = self.view.lookup(&entry.name, false) {
                if self.replaced.contains(found.path) {
                    return Ok(());
                }
            }
        }
        self.body.clear();
        body.read_to_end(&mut self.body)?;
        let mut meta = EntryMeta::new(entry.name.clone(), h.mode);
        meta.uid = h.uid;
        meta.gid = h.gid;
        meta.mtime = h.mtime;
        meta.rdev_major = h.rdevmajor;
        meta.rdev_minor = h.rdevminor;
        meta.nlink = h.nlink;
        if h.nlink >= 2 && h.file_type() != crate::formats::cpio::S_IFDIR {
            let next = self.links.len() as u64 + 1;
            meta.link_id =
                *self.links.entry((entry.segment, h.ino, h.devmajor, h.devminor)).or_insert(next);
        }
        self.archive.add(&meta, &self.body)?;
        Ok(())
    }
}

/// Re-read the written image (`file`, to become `image`) and check it against the plan.
/// `appended_to`: the image was written as these original bytes plus new segments; they
/// are compared, not decoded again.
fn verify(
    file: &Path,
    image: &Path,
    plan: &Plan,
    appended_to: Option<Original>,
) -> Result<Verification> {
    let source = image.display().to_string();
    let written: HashSet<String> = plan.written_modules().map(|m| m.name.clone()).collect();
    let digests = Digests::Named(&written);
    let contents = match appended_to {
        Some(original) => {
            // Mapped: the page cache is hashed in place, not copied out.
            let written = FileBytes::open(file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            if !original.is_prefix_of(&written) {
                bail!("{source}: the image changed while bootkmod was injecting (another writer?)");
            }
            // The walk read the whole original: the new bytes start where it ended.
            if original.contents.end.offset != original.bytes.0 {
                bail!("{source}: the walk ended before the end of the original image");
            }
            let appended = written.get(original.bytes.0 as usize..).unwrap_or_default();
            let contents = original.contents.resume(appended, &source, digests);
            drop(written);
            contents
        }
        None => ImageContents::read(open(file)?, &source, digests),
    }
    .context("verifying the written image")?;
    let mut mismatched = Vec::new();
    for m in plan.written_modules() {
        let sha = contents
            .view
            .lookup(m.path.as_bytes(), true)
            .map(|e| String::from_utf8_lossy(e.path).into_owned())
            .and_then(|p| contents.modules.get(&p).and_then(|im| im.sha256.clone()));
        if sha.as_deref() != Some(m.sha256.as_str()) {
            mismatched.push(m.path.clone());
        }
    }
    // What bootkmod wrote must be named for what it holds (other files are the image's).
    let written_paths: HashSet<String> = plan
        .written_modules()
        .filter_map(|m| contents.view.lookup(m.path.as_bytes(), true))
        .map(|e| String::from_utf8_lossy(e.path).into_owned())
        .collect();
    let misencoded = contents.misencoded(|p| written_paths.contains(p));
    let names: Vec<String> = plan
        .modules
        .iter()
        .filter(|m| m.why == inject::Why::Requested && m.action != inject::Action::Builtin)
        .map(|m| m.name.clone())
        .collect();
    let chains = inject::chains(&contents, &plan.tree, &names)?;
    let ok = mismatched.is_empty() && misencoded.is_empty() && chains.iter().all(|c| c.complete);
    let segments = contents.segments.len();
    // Freeing hundreds of parsed modules takes milliseconds, and this runs before the
    // rename: the memory goes back on another thread.
    std::thread::spawn(move || drop(contents));
    Ok(Verification { segments, mismatched, misencoded, chains, ok })
}

/// The target system's files the plan may need: modules of `ROOT/lib/modules/KVER`
/// (chosen as depmod would choose among copies) and `ROOT/lib/firmware`.
struct TreeSources<'a> {
    root: &'a Root,
    release: String,
    by_name: Option<HashMap<String, (PathBuf, String)>>,
    /// The tree's own indexes, read when an alias needs resolving.
    indexes: Option<TreeIndexes>,
}

impl<'a> TreeSources<'a> {
    fn new(root: &'a Root, release: &str) -> TreeSources<'a> {
        TreeSources { root, release: release.to_string(), by_name: None, indexes: None }
    }

    fn index(&mut self) -> Result<&HashMap<String, (PathBuf, String)>> {
        if self.by_name.is_none() {
            let tree = crate::engines::depmod::tree_dir(&self.release);
            let mut map = HashMap::new();
            if self.root.host(&tree)?.is_dir() {
                let config = Config::load(self.root, &self.release)?;
                let mut warnings = Vec::new();
                for c in scan::scan(self.root, &tree, &config, &mut warnings)? {
                    if let Some(rel) = c.rel {
                        map.insert(c.name, (c.target, rel));
                    }
                }
            }
            self.by_name = Some(map);
        }
        Ok(self.by_name.get_or_insert_with(HashMap::new))
    }
}

impl Sources for TreeSources<'_> {
    fn tree_module(&mut self, name: &str) -> Result<Option<Request>> {
        let wanted = name.replace('-', "_");
        let Some((target, rel)) = self.index()?.get(&wanted).cloned() else { return Ok(None) };
        let host = self.root.host(&target)?;
        let bytes =
            std::fs::read(&host).with_context(|| format!("{}: cannot read", host.display()))?;
        let mut module = Module::from_bytes(&bytes, ReadOptions::default())
            .with_context(|| host.display().to_string())?;
        module.path = Some(host.clone());
        Ok(Some(Request { module, bytes, origin: Origin::Tree { path: host, rel } }))
    }

    fn tree_file(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = crate::engines::depmod::tree_dir(&self.release).join(name);
        let host = self.root.host(&path)?;
        match std::fs::read(&host) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", host.display())),
        }
    }

    fn firmware(&mut self, name: &str) -> Result<Option<(String, Vec<u8>)>> {
        if name.split('/').any(|p| p == "..") {
            bail!("firmware name {name:?} leaves lib/firmware");
        }
        for suffix in ["", ".xz", ".zst"] {
            let found = format!("{name}{suffix}");
            let host = self.root.host(format!("/lib/firmware/{found}"))?;
            if host.is_file() {
                let bytes = std::fs::read(&host)
                    .with_context(|| format!("{}: cannot read", host.display()))?;
                return Ok(Some((found, bytes)));
            }
        }
        Ok(None)
    }

    fn resolve(&mut self, name: &str) -> Result<Vec<(String, bool)>> {
        if self.indexes.is_none() {
            self.indexes = Some(TreeIndexes::load(self.root, &self.release)?);
        }
        self.indexes.as_ref().map_or(Ok(Vec::new()), |i| i.resolve(name))
    }
}

/// sha256 of a file, for reports and tests.
pub fn file_sha256(path: &Path) -> Result<String> {
    Ok(sha256_hex(
        &std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cpio::{self, EntryMeta, Format};

    #[test]
    fn only_the_bytes_read_pass_as_the_original_prefix() {
        let mut w = cpio::Writer::new(Vec::new(), Format::Newc);
        w.write_entry(&EntryMeta::new(b"etc/hostname".to_vec(), S_IFREG | 0o644), b"h\n").unwrap();
        let bytes = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("initrd.img");
        std::fs::write(&image, &bytes).unwrap();
        let original = Original::read(&image, Digests::All).unwrap();
        assert_eq!(original.bytes.0, bytes.len() as u64);

        let appended = [bytes.as_slice(), b"anything after"].concat();
        assert!(original.is_prefix_of(&appended));
        let mut flipped = bytes.clone();
        flipped[7] ^= 1;
        assert!(!original.is_prefix_of(&flipped));
        assert!(!original.is_prefix_of(&bytes[..bytes.len() - 1]));
    }
}
