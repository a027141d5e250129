//! Status and drift: what the ledger says bootkmod did, checked against what is on disk
//! now. Reads only; never writes.
//!
//! [`status`] gives one [`KernelStatus`] per installed kernel: for each ledger module,
//! compatible? placed (own file or weak-updates link pointing at it, or a local
//! fallback)? present in the kernel's initramfs (read through the initramfs engine, as
//! the kernel would unpack it)? image unchanged since bootkmod last saw it? A kernel is
//! *at risk* when a root-critical module would be missing at boot. Kernels
//! `kernel-install remove` announced are not listed.
//!
//! [`alerts`] lists what must be seen before the table, each with the kernel, the
//! problem and the next command to run: a pending journal (a killed run), a failed
//! operation, a kernel a run could not complete, a driver placed for a kernel but not in
//! its image, a weak-updates link to a driver the ledger does not record there. Any
//! alert makes `status` and `verify` exit non-zero: no state a crash or an error leaves
//! reads "ok".
//!
//! [`verify`] re-hashes every installed module, stored copy, link target and image and
//! lists each [`Drift`].

use crate::engines::doctor::{self, ImageIndex};
use crate::engines::inject::{Digests, ImageContents};
use crate::model::kernel;
use crate::model::ledger::{
    is_linked, store_path, weak_link_path, Build, Journal, Ledger, PassedOver, Placement,
    LEDGER_FILE, STATE_DIR,
};
use crate::model::module::{name_from_path, sha256_hex};
use crate::model::root::Root;
use crate::model::root_chain::{ChainSource, RootChain};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One module on one kernel, as it is now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleStatus {
    pub name: String,
    pub root_critical: bool,
    /// `None` when this kernel was never evaluated (installed after the last refresh).
    pub compatible: Option<bool>,
    pub placement: Option<Placement>,
    /// The file or link the placement promises is there and right.
    pub placed: bool,
    /// The module is in the kernel's initramfs (`None`: no image).
    pub in_image: Option<bool>,
    pub reasons: Vec<String>,
    /// The build serving the kernel (or, when none can, the newest one, whose reasons
    /// are given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// Newer builds the kernel does not take, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<PassedOver>,
}

/// One build of a driver and the kernels it serves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildUse {
    pub name: String,
    #[serde(flatten)]
    pub build: Build,
    /// Kernels whose tree offers this build (own `extra/` or a weak-updates link).
    pub serves: Vec<String>,
}

/// Every build of every driver with the kernels it serves, per the ledger: builds that
/// serve none are what `remove --unused` prunes.
pub fn builds(ledger: &Ledger) -> Vec<BuildUse> {
    let mut out = Vec::new();
    for (name, record) in &ledger.modules {
        for build in &record.builds {
            let serves = ledger
                .kernels
                .iter()
                .filter(|(k, _)| !ledger.removed_kernels.contains(*k))
                .filter(|(_, k)| {
                    k.modules.get(name).is_some_and(|on| {
                        on.usable_on_boot()
                            && on.placement != Placement::LocalFallback
                            && record.build_on(on).is_some_and(|b| b.sha256 == build.sha256)
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            out.push(BuildUse { name: name.clone(), build: build.clone(), serves });
        }
    }
    out
}

/// One installed kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelStatus {
    pub release: String,
    /// The initramfs bootkmod's drivers go into (`model::boot_images::primary`).
    pub image: Option<PathBuf>,
    /// Every image that boots the kernel, and why bootkmod thinks so
    /// (`model::boot_images::find`).
    pub boot_images: Vec<crate::model::boot_images::BootImage>,
    /// The image's digest equals the ledger's (`None`: not recorded or no image).
    pub image_unchanged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_note: Option<String>,
    pub modules: Vec<ModuleStatus>,
    /// Why this kernel would boot without a root-critical module; empty when safe.
    pub at_risk: Vec<String>,
}

/// What status says of an image whose digest is no longer the one bootkmod recorded:
/// update-initramfs, dracut or kernel-install wrote it since (bootkmod's drivers may or
/// may not be in it: `in_image` says).
pub const REBUILT_SINCE: &str = "rebuilt by another tool since bootkmod wrote it";

/// Status of every installed kernel under `root`.
pub fn status(root: &Root, ledger: &Ledger) -> Result<Vec<KernelStatus>> {
    Ok(status_judged(root, ledger, None)?.0)
}

/// doctor's verdict on one kernel, or why it could not be had.
type Verdict = (String, Result<doctor::KernelVerdict>);

/// [`status`], and with `needs` (doctor's, from root's chain) doctor's verdict on each
/// kernel, from the same single read of its image (reading is most of the cost).
fn status_judged(
    root: &Root,
    ledger: &Ledger,
    needs: Option<&[doctor::Need]>,
) -> Result<(Vec<KernelStatus>, Vec<Verdict>)> {
    let mut out = Vec::new();
    let mut verdicts = Vec::new();
    // A kernel kernel-install removed is gone even while its files linger a moment.
    let releases = kernel::releases(root)?;
    for release in releases.into_iter().filter(|r| !ledger.removed_kernels.contains(r)) {
        let recorded = ledger.kernels.get(&release);
        let boot_images = crate::model::boot_images::find(root, &release);
        let image = crate::model::boot_images::primary_of(&boot_images);
        // An image that cannot be read (not an initramfs, truncated) is this kernel's
        // problem, reported on its line, not a stop for the others.
        let mut image_error = None;
        let index = image.as_ref().map(|p| read_image(root, p));
        let image_files = match &index {
            Some(Ok((_, index))) => Some(image_module_names(index, &release)),
            Some(Err(e)) => {
                image_error = Some(format!("{e:#}"));
                Some(Vec::new())
            }
            None => None,
        };
        if let Some(needs) = needs {
            let judged = match (&image, &index) {
                (Some(_), Some(Ok((host, index)))) => Some((host.clone(), Ok(index))),
                (Some(p), Some(Err(e))) => {
                    Some((root.host(p).unwrap_or_else(|_| p.clone()), Err(format!("{e:#}"))))
                }
                _ => None,
            };
            let verdict = doctor::examine_kernel(root, needs, ledger, &release, judged);
            verdicts.push((release.clone(), verdict));
        }
        let image_record = recorded.and_then(|k| k.image.as_ref());
        let image_unchanged = match (&image, image_record) {
            (Some(p), Some(rec)) if &rec.path == p => {
                root.read(p).ok().map(|bytes| sha256_hex(&bytes) == rec.sha256)
            }
            _ => None,
        };
        // Every other image the kernel boots with and a driver must be in: another boot
        // entry's last initrd, a UKI. Each is read once, for both questions: are the
        // root-critical drivers there, and (with a chain) would it mount root? So one
        // stale image is not hidden behind the primary one.
        let root_critical = ledger.modules.values().any(|m| m.root_critical);
        let mut others: Vec<(&crate::model::boot_images::BootImage, Result<Vec<String>, String>)> =
            Vec::new();
        if root_critical || needs.is_some() {
            let receiving =
                boot_images.iter().filter(|i| i.takes_drivers() && Some(&i.path) != image.as_ref());
            for i in receiving {
                let read = read_image(root, &i.path).map_err(|e| format!("{e:#}"));
                if let Some(needs) = needs {
                    let judged = match &read {
                        Ok((host, index)) => (host.clone(), Ok(index)),
                        Err(e) => {
                            (root.host(&i.path).unwrap_or_else(|_| i.path.clone()), Err(e.clone()))
                        }
                    };
                    let verdict =
                        doctor::examine_kernel(root, needs, ledger, &release, Some(judged));
                    verdicts.push((release.clone(), verdict));
                }
                if root_critical {
                    others.push((i, read.map(|(_, index)| image_module_names(&index, &release))));
                }
            }
        }
        let mut modules = Vec::new();
        let mut at_risk = Vec::new();
        for (name, m) in &ledger.modules {
            let on = recorded.and_then(|k| k.modules.get(name));
            let build = on.and_then(|o| m.build_on(o));
            let placed = match on.map(|o| o.placement) {
                Some(Placement::Own) => {
                    build.is_some_and(|b| root.host(&b.path).is_ok_and(|h| h.is_file()))
                }
                Some(Placement::WeakUpdates) => on
                    .and_then(|o| o.link.as_ref())
                    .zip(build)
                    .is_some_and(|(l, b)| is_linked(root, l, &b.path)),
                Some(Placement::LocalFallback) => on
                    .and_then(|o| o.fallback.as_ref())
                    .is_some_and(|f| root.host(f).is_ok_and(|h| h.is_file())),
                Some(Placement::Refused) | None => false,
            };
            let in_image = image_files.as_ref().map(|files| files.iter().any(|f| f == name));
            let reasons = on.map(|o| o.reasons.clone()).unwrap_or_default();
            if m.root_critical {
                let why = match (on, placed, in_image) {
                    (None, _, _) => Some(
                        "not evaluated for this kernel (run bootkmod install --refresh)"
                            .to_string(),
                    ),
                    (Some(o), _, _) if !o.usable_on_boot() => {
                        Some(reasons.first().cloned().unwrap_or_else(|| "incompatible".into()))
                    }
                    (_, false, _) => Some("its file or link is missing".to_string()),
                    (_, _, Some(false)) => Some(format!(
                        "not in the initramfs{}",
                        image_error
                            .as_ref()
                            .or(image_record.and_then(|i| i.note.as_ref()))
                            .map_or(String::new(), |n| format!(" ({n})"))
                    )),
                    _ => None,
                };
                if let Some(why) = why {
                    at_risk.push(format!(
                        "kernel {release} would boot without root-critical driver {name}: {why}"
                    ));
                }
                let usable = on.is_some_and(|o| o.usable_on_boot());
                for (other, names) in others.iter().filter(|_| usable) {
                    let why = match names {
                        Ok(names) if names.iter().any(|n| n == name) => continue,
                        Ok(_) => "not in that initramfs".to_string(),
                        Err(e) => format!("it cannot be read: {e}"),
                    };
                    at_risk.push(format!(
                        "kernel {release} would boot without root-critical driver {name} \
                         through {} ({}): {why}",
                        other.path.display(),
                        other.why
                    ));
                }
            }
            modules.push(ModuleStatus {
                name: name.clone(),
                root_critical: m.root_critical,
                compatible: on.map(|o| o.compatible),
                placement: on.map(|o| o.placement),
                placed,
                in_image,
                reasons,
                build: build.cloned(),
                passed_over: on.map(|o| o.passed_over.clone()).unwrap_or_default(),
            });
        }
        out.push(KernelStatus {
            release,
            image,
            boot_images,
            image_unchanged,
            image_note: image_error.or_else(|| match image_unchanged {
                Some(false) => Some(REBUILT_SINCE.to_string()),
                _ => image_record.and_then(|i| i.note.clone()),
            }),
            modules,
            at_risk,
        });
    }
    Ok((out, verdicts))
}

/// Something to act on before reading the table (see the module overview).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// The kernel concerned, when it is one kernel's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Target-absolute path of the thing at fault (the ledger for an operation).
    pub path: PathBuf,
    pub problem: String,
    /// The command that completes or repairs it.
    pub next: String,
}

/// What must be reported first. `kernels` is [`status`]'s answer for the same ledger.
pub fn alerts(root: &Root, ledger: &Ledger, kernels: &[KernelStatus]) -> Vec<Alert> {
    let ledger_path = Path::new(STATE_DIR).join(LEDGER_FILE);
    let mut out = Vec::new();
    if let Some(journal) = &ledger.journal {
        out.push(Alert {
            kernel: None,
            path: ledger_path.clone(),
            problem: format!(
                "an interrupted {} is pending (a run was killed before it ended)",
                journal.describe()
            ),
            next: "bootkmod install --refresh (any install or remove completes it first)"
                .to_string(),
        });
    }
    if let Some(failed) = &ledger.failed {
        out.push(Alert {
            kernel: None,
            path: ledger_path.clone(),
            problem: format!("the {} failed: {}", failed.operation, failed.error),
            next: failed.next.clone(),
        });
    }
    for k in kernels {
        let release = &k.release;
        let tree = Path::new("/lib/modules").join(release);
        let refresh = format!("bootkmod install --refresh --kver {release}");
        if let Some(failure) = ledger.kernels.get(release).and_then(|r| r.failure.as_ref()) {
            out.push(Alert {
                kernel: Some(release.clone()),
                path: tree.clone(),
                problem: format!("not completed by the last run: {failure}"),
                next: format!("fix the cause, then {refresh}"),
            });
        }
        for m in &k.modules {
            let usable = m.placement == Some(Placement::LocalFallback)
                || (m.compatible == Some(true) && m.placement != Some(Placement::Refused));
            if usable && !m.placed {
                out.push(Alert {
                    kernel: Some(release.clone()),
                    path: tree.clone(),
                    problem: format!("driver {}'s file or weak-updates link is missing", m.name),
                    next: refresh.clone(),
                });
            }
            if usable && m.placed && m.in_image == Some(false) {
                out.push(Alert {
                    kernel: Some(release.clone()),
                    path: k.image.clone().unwrap_or_else(|| tree.clone()),
                    problem: format!("driver {} is placed but not in the initramfs", m.name),
                    next: refresh.clone(),
                });
            }
        }
        // weak-updates links to a bootkmod driver that the ledger does not record for
        // this kernel (a run that stopped between linking and recording).
        let recorded = ledger.kernels.get(release);
        let mut ours: Vec<(&str, &Path)> = ledger
            .modules
            .values()
            .flat_map(|m| m.builds.iter().map(|b| (m.name.as_str(), b.path.as_path())))
            .collect();
        let pending: Vec<_> = [ledger.journal.as_ref(), ledger.failed.as_ref().map(|f| &f.journal)]
            .into_iter()
            .flatten()
            .filter_map(|j| match j {
                Journal::Install { modules, .. } => Some(modules),
                _ => None,
            })
            .flatten()
            .collect();
        ours.extend(
            pending
                .iter()
                .flat_map(|m| m.builds.iter().map(|b| (m.name.as_str(), b.path.as_path()))),
        );
        let kept = |name: &str, path: &Path| {
            ledger.modules.get(name).is_some_and(|m| m.builds.iter().any(|b| b.path == path))
        };
        for (name, path) in ours {
            let Ok(link) = weak_link_path(path, release) else { continue };
            if !is_linked(root, &link, path) {
                continue;
            }
            let known = recorded.and_then(|r| r.modules.get(name)).is_some_and(|on| {
                on.placement == Placement::WeakUpdates
                    && on.link.as_deref() == Some(&link)
                    && ledger
                        .modules
                        .get(name)
                        .and_then(|m| m.build_on(on))
                        .is_some_and(|b| b.path == path)
            });
            if !known {
                out.push(Alert {
                    kernel: Some(release.clone()),
                    path: link.clone(),
                    problem: format!(
                        "weak-updates link to {} that the ledger does not record for this kernel",
                        path.display()
                    ),
                    next: if kept(name, path) {
                        refresh.clone()
                    } else {
                        format!("bootkmod install {} (or rm {})", path.display(), link.display())
                    },
                });
            }
        }
    }
    out
}

/// What doctor says of each kernel's image (issue 13), for `status`: judged when a
/// chain is at hand (the live one, else the snapshot saved at `SAVED_SNAPSHOT`), else
/// why not. Never an error: what keeps doctor from judging is a note, neither a
/// failure of status nor a verdict.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DoctorStatus {
    /// Where the chain came from; `None` when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainSource>,
    /// The kernels judged.
    pub kernels: Vec<DoctorKernel>,
    /// Kernels doctor could not judge (no indexes, say), and why.
    pub not_judged: BTreeMap<String, String>,
    /// Why doctor judged nothing.
    pub notes: Vec<String>,
}

impl DoctorStatus {
    /// Keep only what concerns kernel `release` (`status --kver`).
    pub fn retain_kernel(&mut self, release: &str) {
        self.kernels.retain(|k| k.release == release);
        self.not_judged.retain(|k, _| k == release);
    }
}

/// doctor's verdict on one image of a kernel (one per image that boots it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DoctorKernel {
    pub release: String,
    /// Host path of the image judged.
    pub image: Option<PathBuf>,
    pub ok: bool,
    /// Why root would not mount from the image, one line each.
    pub problems: Vec<String>,
    /// Modules `doctor --fix` would inject.
    pub fix: Vec<String>,
}

/// [`status`], and doctor's word on every kernel (see [`DoctorStatus`]), each image read
/// once for both. A kernel doctor cannot judge is a note; the others are still judged.
pub fn status_with_doctor(
    root: &Root,
    ledger: &Ledger,
) -> Result<(Vec<KernelStatus>, DoctorStatus)> {
    let mut doctor = DoctorStatus::default();
    let needs = match RootChain::live_or_saved(root) {
        Ok((chain, source)) => {
            doctor.chain = Some(source);
            Some(doctor::needs(&chain))
        }
        Err(e) => {
            doctor.notes.push(format!("no chain of root to judge: {e:#}"));
            None
        }
    };
    let (kernels, verdicts) = status_judged(root, ledger, needs.as_deref())?;
    for (release, verdict) in verdicts {
        match verdict {
            Ok(k) => doctor.kernels.push(DoctorKernel {
                release: k.release,
                image: k.image,
                ok: k.ok,
                problems: k.problems,
                fix: k.fix,
            }),
            Err(e) => {
                doctor.not_judged.insert(release, format!("{e:#}"));
            }
        }
    }
    Ok((kernels, doctor))
}

/// An alert per problem of each kernel doctor finds at risk.
pub fn doctor_alerts(root: &Root, doctor: &DoctorStatus) -> Vec<Alert> {
    let mut out = Vec::new();
    for k in doctor.kernels.iter().filter(|k| !k.ok) {
        let release = &k.release;
        let path = match &k.image {
            Some(host) => root.target_of(host).unwrap_or_else(|| host.clone()),
            None => Path::new("/lib/modules").join(release),
        };
        let next = if k.fix.is_empty() {
            format!("bootkmod doctor --kver {release} (injecting cannot fix it)")
        } else {
            format!("bootkmod doctor --fix --kver {release} (injects {})", k.fix.join(", "))
        };
        for problem in &k.problems {
            out.push(Alert {
                kernel: Some(release.clone()),
                path: path.clone(),
                problem: format!("its initramfs would not mount root: {problem}"),
                next: next.clone(),
            });
        }
    }
    out
}

/// Read the image at target path `image` once (the kernel's unpacking rules): its host
/// path and what status and doctor need of it.
fn read_image(root: &Root, image: &Path) -> Result<(PathBuf, ImageIndex)> {
    let host = root.host(image)?;
    let index = ImageIndex::open(&host)?;
    Ok((host, index))
}

/// Names of the modules of `release` inside an image.
fn image_module_names(image: &ImageIndex, release: &str) -> Vec<String> {
    let marker = format!("modules/{release}/");
    image
        .view()
        .entries()
        .filter(|e| e.inode.file_type() == crate::formats::cpio::S_IFREG)
        .map(|e| String::from_utf8_lossy(e.path).into_owned())
        .filter(|p| p.contains(&marker))
        .filter(|p| crate::model::tree::is_module_file(p))
        .map(|p| name_from_path(Path::new(&p)))
        .collect()
}

/// Something that is no longer as bootkmod left it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drift {
    /// Target-absolute path of the file at fault.
    pub path: PathBuf,
    pub problem: String,
}

/// Re-hash everything the ledger vouches for.
pub fn verify(root: &Root, ledger: &Ledger) -> Result<Vec<Drift>> {
    let mut drift = Vec::new();
    let mut push = |path: &Path, problem: String| {
        drift.push(Drift { path: path.to_path_buf(), problem });
    };
    for (m, b) in ledger.modules.values().flat_map(|m| m.builds.iter().map(move |b| (m, b))) {
        match root.read(&b.path) {
            Ok(bytes) if sha256_hex(&bytes) == b.sha256 => {}
            Ok(bytes) => push(
                &b.path,
                format!(
                    "module {} changed: sha256 {} (installed {})",
                    m.name,
                    sha256_hex(&bytes),
                    b.sha256
                ),
            ),
            Err(e) => push(&b.path, format!("module {} unreadable: {}", m.name, e.root_cause())),
        }
        let stored = store_path(&b.sha256);
        match root.read(&stored) {
            Ok(bytes) if sha256_hex(&bytes) == b.sha256 => {}
            Ok(_) => push(&stored, format!("stored copy of {} does not match its sha256", m.name)),
            Err(e) => {
                push(&stored, format!("stored copy of {} unreadable: {}", m.name, e.root_cause()))
            }
        }
    }
    for (release, k) in &ledger.kernels {
        for (name, on) in &k.modules {
            let Some(b) = ledger.modules.get(name).and_then(|m| m.build_on(on)) else { continue };
            if let (Placement::WeakUpdates, Some(link)) = (on.placement, &on.link) {
                if !is_linked(root, link, &b.path) {
                    let now = root
                        .read_link(link)
                        .map_or("missing".to_string(), |t| format!("points to {}", t.display()));
                    push(link, format!("weak-updates link of {name} for {release} {now}"));
                }
            }
        }
        if let Some(image) = &k.image {
            match root.read(&image.path) {
                Ok(bytes) if sha256_hex(&bytes) == image.sha256 => {}
                Ok(_) => push(
                    &image.path,
                    format!(
                        "initramfs of {release} was replaced or changed since bootkmod recorded it"
                    ),
                ),
                Err(e) => push(
                    &image.path,
                    format!("initramfs of {release} unreadable: {}", e.root_cause()),
                ),
            }
            // kmod sniffs content, but `xz -t`, rpm and people go by the name.
            for problem in misencoded_modules(root, &image.path, release) {
                push(&image.path, format!("initramfs of {release}: {problem}"));
            }
        }
    }
    Ok(drift)
}

/// Module files of `release` in an image whose content is not what their name promises
/// (or why the image could not be read).
fn misencoded_modules(root: &Root, image: &Path, release: &str) -> Vec<String> {
    let Ok(host) = root.host(image) else { return Vec::new() };
    let Ok(file) = std::fs::File::open(&host) else { return Vec::new() };
    let none = std::collections::HashSet::new();
    match ImageContents::read(
        std::io::BufReader::new(file),
        &host.display().to_string(),
        Digests::Named(&none),
    ) {
        Ok(contents) => {
            let marker = format!("modules/{release}/");
            contents.misencoded(|p| p.contains(&marker))
        }
        Err(e) => vec![format!("cannot be read: {e:#}")],
    }
}
