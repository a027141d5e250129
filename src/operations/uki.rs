//! Unified Kernel Images as files: reading the initramfs inside one, and `inject` into
//! one (`formats::uki` owns the PE layout).
//!
//! Reading one is `model::uki`'s. [`inject`] into a UKI: the `.initrd` is copied out to a private temp directory,
//! `operations::inject` injects into that copy (plan, check, write, verify, exactly as
//! for any image), and the UKI is rewritten around the result
//! (`formats::uki::replace_initrd`), read back (every other section byte for byte the
//! same, the new `.initrd` exactly the verified image) and put in place atomically
//! (`operations::atomic`, with `UKI.bootkmod.bak`). A signed UKI is never modified
//! silently: without `--sign-key/--sign-cert` nothing is written and the report names
//! the signature ([`UkiOutcome::RefusedSigned`], exit 3); with them, the old signature is
//! stripped, the image rewritten and handed to `sbsign` (sbsigntool) to be signed again,
//! and the signed file must read back as a UKI holding a signature. Without `sbsign`
//! on `PATH`, an error before anything is written.

use crate::formats::uki::{self, Rewrite, Uki};
use crate::model::root::Root;
use crate::operations::atomic::{dir_of, FileIdentity, Lock, ReplaceOptions, Staged};
use crate::operations::inject::{self, InjectOptions, ModuleArg, Outcome, Report};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Keys to sign a rewritten UKI with.
#[derive(Debug, Clone)]
pub struct SignWith {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// How an injection into a UKI ended, beyond the initramfs's own outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UkiOutcome {
    /// Signed and no keys given: nothing done.
    RefusedSigned,
    /// The initramfs was not written (refused, unchanged, dry run, not verified).
    InitrdNotWritten,
    /// Rewritten (and re-signed when it was signed).
    Written,
}

/// What an injection into a UKI did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UkiReport {
    pub uki: PathBuf,
    pub output: PathBuf,
    pub outcome: UkiOutcome,
    /// The certificate table of the image as read (offset, length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<(usize, usize)>,
    /// Re-signed with this certificate by sbsign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_with: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// The injection into the `.initrd` (absent when refused for the signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Report>,
}

/// `sbsign` on `PATH`.
pub fn sbsign() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("sbsign")).find(|p| p.is_file())
}

/// Inject `modules` into the UKI at `image`. See the module overview.
pub fn inject(
    root: &Root,
    image: &Path,
    modules: &[ModuleArg],
    opts: &InjectOptions,
    sign: Option<&SignWith>,
) -> Result<UkiReport> {
    let image = root.confine(image)?;
    let output = match &opts.output {
        Some(o) => root.confine(o)?,
        None => image.clone(),
    };
    let _lock = if opts.dry_run { None } else { Some(Lock::exclusive(&dir_of(&output))?) };
    let file = File::open(&image).with_context(|| format!("cannot open {}", image.display()))?;
    let identity = FileIdentity::from(&file.metadata()?);
    let mut original = Vec::new();
    (&file).read_to_end(&mut original)?;
    let facts = Uki::parse(&original).with_context(|| image.display().to_string())?;
    let mut report = UkiReport {
        uki: image.clone(),
        output: output.clone(),
        outcome: UkiOutcome::RefusedSigned,
        signature: facts.signature,
        signed_with: None,
        rewrite: None,
        backup: None,
        initrd: None,
    };
    if facts.signature.is_some() && sign.is_none() {
        return Ok(report);
    }
    let sbsign = match sign {
        Some(_) => Some(sbsign().context(
            "re-signing a Unified Kernel Image needs sbsign (sbsigntool) on PATH; nothing changed",
        )?),
        None => None,
    };
    if let Some(s) = sign {
        for p in [&s.key, &s.cert] {
            File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
        }
    }
    let Some((offset, len)) = facts.initrd else {
        bail!("{}: a Unified Kernel Image without an .initrd section", image.display());
    };
    // The initramfs, injected into as a file of its own in a private directory.
    let work = tempfile::Builder::new().prefix("bootkmod-uki").tempdir()?;
    let name = format!("initrd.img-{}", facts.uname.as_deref().unwrap_or("uki"));
    let initrd_path = work.path().join(name);
    std::fs::write(&initrd_path, &original[offset..offset + len])?;
    let mut initrd_opts = opts.clone();
    initrd_opts.output = None;
    initrd_opts.backup = false;
    if initrd_opts.release.is_none() {
        initrd_opts.release = facts.uname.clone();
    }
    // The temp file lies outside the root (`Root::confine` leaves it as it is); modules
    // named by name still come from the root's tree.
    let mut initrd = inject::inject(root, &initrd_path, modules, &initrd_opts)?;
    initrd.image = image.clone();
    initrd.output = output.clone();
    let written = initrd.outcome == Outcome::Written;
    report.initrd = Some(initrd);
    if !written {
        report.outcome = UkiOutcome::InitrdNotWritten;
        return Ok(report);
    }
    let new_initrd = std::fs::read(&initrd_path)?;
    let unsigned = uki::strip_signature(&original)?;
    let (rewritten, rewrite) = uki::replace_initrd(&unsigned, &new_initrd)
        .with_context(|| format!("{}: cannot rewrite", image.display()))?;
    let bytes = match (sign, &sbsign) {
        (Some(s), Some(tool)) => {
            let input = work.path().join("unsigned.efi");
            let signed = work.path().join("signed.efi");
            std::fs::write(&input, &rewritten)?;
            let out = std::process::Command::new(tool)
                .arg("--key")
                .arg(&s.key)
                .arg("--cert")
                .arg(&s.cert)
                .arg("--output")
                .arg(&signed)
                .arg(&input)
                .output()
                .with_context(|| format!("cannot run {}", tool.display()))?;
            if !out.status.success() {
                bail!(
                    "sbsign failed ({}): {}; {} left unchanged",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    output.display()
                );
            }
            report.signed_with = Some(s.cert.clone());
            std::fs::read(&signed)?
        }
        _ => rewritten,
    };
    let in_place = output == image;
    let backup = (in_place && opts.backup).then(|| inject::backup_path(&image));
    let replace = ReplaceOptions {
        backup: backup.clone(),
        like: (!in_place && !output.exists()).then(|| image.clone()),
        expect: in_place.then_some(identity),
    };
    let mut staged = Staged::beside(&output)?;
    staged.file().write_all(&bytes)?;
    staged.commit(&replace, |temp| {
        if FileIdentity::of(&image)? != identity {
            bail!(
                "{}: the image changed while bootkmod was injecting (another writer?)",
                image.display()
            );
        }
        check_written(temp, &original, &new_initrd, sign.is_some())
    })?;
    report.rewrite = Some(rewrite);
    report.backup = backup;
    report.outcome = UkiOutcome::Written;
    Ok(report)
}

/// Inject `modules` into a kernel's image, whichever kind it is: an initramfs through
/// `operations::inject`, a UKI through its `.initrd` ([`inject`], no keys: the report
/// then speaks of the UKI, its backup included). `None`: a signed UKI, refused with
/// nothing written, since re-signing needs keys only `bootkmod inject` is given.
pub fn inject_either(
    root: &Root,
    image: &Path,
    modules: &[ModuleArg],
    opts: &InjectOptions,
) -> Result<Option<Report>> {
    if !crate::model::uki::is_pe(image)? {
        return inject::inject(root, image, modules, opts).map(Some);
    }
    let uki = inject(root, image, modules, opts, None)?;
    if uki.outcome == UkiOutcome::RefusedSigned {
        return Ok(None);
    }
    let mut report = uki.initrd.context("a UKI injection without an initramfs report")?;
    report.backup = uki.backup;
    Ok(Some(report))
}

/// The words for [`inject_either`]'s refusal of the signed UKI `image`: the command that
/// injects `modules` and signs it again.
pub fn signed_refusal(image: &Path, modules: &[String]) -> String {
    format!(
        "a signed Unified Kernel Image, not rewritten without keys: bootkmod inject --image {} \
         --sign-key KEY --sign-cert CERT {}",
        image.display(),
        modules.join(" ")
    )
}

/// The written UKI, read back from disk: a UKI whose `.initrd` is exactly the verified
/// image, every other section the same bytes as before, signed when asked.
fn check_written(path: &Path, original: &[u8], initrd: &[u8], signed: bool) -> Result<()> {
    let bytes = std::fs::read(path)?;
    let facts = Uki::parse(&bytes).context("reading the rewritten image back")?;
    let (before, after) = (uki::Pe::read(original)?, uki::Pe::read(&bytes)?);
    let payload = |b: &[u8], pe: &uki::Pe, name: &str| -> Option<Vec<u8>> {
        let s = pe.section(name)?;
        let len = if s.virtual_size > 0 { s.raw_size.min(s.virtual_size) } else { s.raw_size };
        b.get(s.raw_offset as usize..(s.raw_offset + len) as usize).map(<[u8]>::to_vec)
    };
    if payload(&bytes, &after, ".initrd").as_deref() != Some(initrd) {
        bail!("the rewritten image's .initrd is not the verified initramfs");
    }
    if before.sections.len() != after.sections.len() {
        bail!(
            "the rewritten image has {} sections, not {}",
            after.sections.len(),
            before.sections.len()
        );
    }
    for s in before.sections.iter().filter(|s| s.name != ".initrd") {
        if payload(original, &before, &s.name) != payload(&bytes, &after, &s.name) {
            bail!("section {} changed in the rewrite", s.name);
        }
    }
    if signed && facts.signature.is_none() {
        bail!("sbsign wrote no signature");
    }
    Ok(())
}
