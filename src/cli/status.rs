//! `bootkmod status [--json]`: one line per installed kernel from the ledger checked
//! against the disk, and a banner for each kernel that would boot without a
//! root-critical driver. Exit 3 when any kernel is at risk.

use super::{print_json, Context};
use crate::engines::status::{self, Alert, BuildUse, DoctorStatus, KernelStatus};
use crate::exit::Exit;
use crate::model::ledger::{self, Placement};
use crate::model::root_chain::ChainSource;
use crate::operations::install::{Policy, CONFIG_FILE};
use anyhow::Result;
use std::io::Write;

/// Show, per installed kernel, whether each installed driver is compatible, placed
/// (extra/ or weak-updates/), inside the initramfs, and whether the image is unchanged
/// since bootkmod recorded it.
///
/// It also asks `bootkmod doctor` whether each kernel's initramfs brings up the chain
/// under root (live, else the snapshot saved at /var/lib/bootkmod/doctor-snapshot.json);
/// without a chain it says so and judges nothing.
///
/// Exit 3 when a kernel would boot without a root-critical driver, or when something
/// needs action first (a banner names the kernel and the command to run): a kernel
/// whose initramfs would not mount root (doctor), an interrupted
/// or failed operation, a kernel a run could not complete, a driver placed but not in an
/// image, a weak-updates link the ledger does not record.
///
/// Examples:
///   bootkmod status
///   bootkmod status --root /mnt/sysimage --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// Only this kernel.
    #[arg(long, value_name = "KVER")]
    pub kver: Option<String>,

    /// For the dracut module: print `NAME SOURCE DEST` for each driver usable on --kver
    /// (SOURCE a host path, DEST the path inside the image); fail naming driver and
    /// kernel when a root-critical driver is unusable, unless policy=warn.
    #[arg(long, requires = "kver")]
    pub dracut: bool,

    /// Print nothing; exit 0 when bootkmod has installed anything under the root (its
    /// ledger exists), 3 when not. For the kernel-install plugin and the dracut module,
    /// which must not look at ROOT/var/lib/bootkmod themselves: the shell would follow
    /// the target's links on the host.
    #[arg(long, conflicts_with_all = ["kver", "dracut"])]
    pub installed: bool,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<Exit> {
    if args.installed {
        return Ok(if ledger::exists(&ctx.root)? { Exit::Ok } else { Exit::Negative });
    }
    let ledger = ledger::load(&ctx.root)?;
    if args.dracut {
        let kver = args.kver.as_deref().unwrap_or_default();
        return dracut_list(ctx, &ledger, kver);
    }
    let (mut kernels, mut doctor) = status::status_with_doctor(&ctx.root, &ledger)?;
    if let Some(k) = &args.kver {
        kernels.retain(|s| &s.release == k);
        doctor.retain_kernel(k);
        if kernels.is_empty() {
            anyhow::bail!("no kernel {k} under {}", ctx.root.shown("/lib/modules").display());
        }
    }
    let mut alerts = status::alerts(&ctx.root, &ledger, &kernels);
    alerts.extend(status::doctor_alerts(&ctx.root, &doctor));
    if let Some(k) = &args.kver {
        alerts.retain(|a| a.kernel.as_ref().is_none_or(|a| a == k));
    }
    let at_risk = kernels.iter().any(|k| !k.at_risk.is_empty());
    let builds = status::builds(&ledger);
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            at_risk: bool,
            alerts: &'a [Alert],
            kernels: &'a [KernelStatus],
            /// Every build kept, with the kernels it serves.
            builds: &'a [BuildUse],
            /// Will each kernel's image mount root (`bootkmod doctor`)?
            doctor: &'a DoctorStatus,
        }
        print_json(&Report {
            at_risk,
            alerts: &alerts,
            kernels: &kernels,
            builds: &builds,
            doctor: &doctor,
        })?;
    } else {
        let mut out = std::io::stdout().lock();
        render_alerts(&mut out, &alerts)?;
        render_doctor(&mut out, &doctor)?;
        render(&mut out, &kernels)?;
        render_builds(&mut out, &builds)?;
    }
    Ok(if at_risk || !alerts.is_empty() { Exit::Negative } else { Exit::Ok })
}

/// What dracut's `installkernel` needs: the drivers usable on `kver`, where to take each
/// from and where to put it; or the refusal.
fn dracut_list(ctx: &Context, ledger: &ledger::Ledger, kver: &str) -> Result<Exit> {
    let policy = Policy::read(&ctx.root)?;
    let Some(kernel) = ledger.kernels.get(kver) else {
        if ledger.modules.values().any(|m| m.root_critical) && policy == Policy::Refuse {
            anyhow::bail!(
                "kernel {kver} was never checked for the root-critical driver(s) {}: run `bootkmod install --refresh --kver {kver}` first",
                ledger.modules.values().filter(|m| m.root_critical).map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        return Ok(Exit::Ok);
    };
    let mut out = std::io::stdout().lock();
    let mut refusals = Vec::new();
    for (name, on) in &kernel.modules {
        let Some(m) = ledger.modules.get(name) else { continue };
        if !on.usable_on_boot() {
            let why = on.reasons.first().map_or("incompatible", String::as_str);
            if m.root_critical {
                refusals.push(format!(
                    "root-critical driver {name} is not usable on kernel {kver}: {why}"
                ));
            } else {
                eprintln!("bootkmod: warning: driver {name} left out of kernel {kver}: {why}");
            }
            continue;
        }
        let build = m.build_on(on).map(|b| b.path.clone());
        let (source, dest) = match (on.placement, &on.link, &on.fallback, build) {
            (Placement::WeakUpdates, Some(link), _, Some(path)) => (path, link.clone()),
            (Placement::LocalFallback, _, Some(local), _) => (local.clone(), local.clone()),
            (_, _, _, Some(path)) => (path.clone(), path),
            _ => anyhow::bail!("ledger: driver {name} on kernel {kver} names no build it has"),
        };
        // dracut opens SOURCE on the host: the file the target sees, resolved inside it.
        writeln!(out, "{name}\t{}\t{}", ctx.root.host(&source)?.display(), dest.display())?;
    }
    if !refusals.is_empty() {
        let text = refusals.join("; ");
        if policy == Policy::Refuse {
            anyhow::bail!("{text} (policy=refuse; set policy=warn in {CONFIG_FILE} to allow)");
        }
        eprintln!("bootkmod: warning: {text}");
    }
    Ok(Exit::Ok)
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// The banners that come before everything else: what is wrong and what to run.
pub(crate) fn render_alerts(out: &mut impl Write, alerts: &[Alert]) -> std::io::Result<()> {
    for a in alerts {
        match &a.kernel {
            Some(k) => writeln!(out, "!!! kernel {k}: {}", a.problem)?,
            None => writeln!(out, "!!! {}", a.problem)?,
        }
        writeln!(out, "    next: {}", a.next)?;
    }
    Ok(())
}

fn render(out: &mut impl Write, kernels: &[KernelStatus]) -> std::io::Result<()> {
    for k in kernels.iter().filter(|k| !k.at_risk.is_empty()) {
        for risk in &k.at_risk {
            writeln!(out, "!!! AT RISK: {risk}")?;
        }
    }
    for k in kernels.iter().filter(|k| k.image_unchanged == Some(false)) {
        if let (Some(image), Some(note)) = (&k.image, &k.image_note) {
            writeln!(out, "note: {} of {}: {note}", image.display(), k.release)?;
        }
    }
    writeln!(
        out,
        "{:<28} {:<12} {:<11} {:<13} {:<9} {:<16}",
        "KERNEL", "DRIVER", "COMPATIBLE", "PLACED", "IN-IMAGE", "IMAGE-UNCHANGED"
    )?;
    for k in kernels {
        if k.modules.is_empty() {
            writeln!(out, "{:<28} (no drivers installed by bootkmod)", k.release)?;
        }
        for m in &k.modules {
            let placed = match (m.placement, m.placed) {
                (None, _) => "-".to_string(),
                (Some(p), true) => serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                (Some(_), false) => "no".to_string(),
            };
            let first = m.reasons.first().map_or(String::new(), |r| format!("  {r}"));
            writeln!(
                out,
                "{:<28} {:<12} {:<11} {:<13} {:<9} {:<16}{first}",
                k.release,
                m.name,
                yes_no(m.compatible),
                placed,
                yes_no(m.in_image),
                yes_no(k.image_unchanged)
            )?;
            if let Some(b) = &m.build {
                let role = if m.compatible == Some(true) { "served by" } else { "newest" };
                writeln!(out, "{:<28}   {role} build {}", "", b.label())?;
            }
            for p in &m.passed_over {
                writeln!(out, "{:<28}   not taken: {}", "", p.label())?;
            }
        }
    }
    render_boot_images(out, kernels)
}

/// Which images boot each kernel, and why bootkmod thinks so (`model::boot_images`).
pub(crate) fn render_boot_images(
    out: &mut impl Write,
    kernels: &[KernelStatus],
) -> std::io::Result<()> {
    for k in kernels {
        if k.boot_images.is_empty() {
            writeln!(out, "images of {}: none found", k.release)?;
            continue;
        }
        writeln!(out, "images of {}:", k.release)?;
        for i in &k.boot_images {
            let role = match (i.exists, i.kind, i.receives_drivers) {
                (false, _, _) => "missing",
                (true, crate::model::boot_images::ImageKind::Uki, _) => "uki",
                (true, _, true) if k.image.as_ref() == Some(&i.path) => "drivers",
                (true, _, true) => "boots",
                (true, _, false) => "earlier",
            };
            writeln!(out, "  {role:<8} {}  ({})", i.path.display(), i.why)?;
        }
    }
    Ok(())
}

/// doctor's word, one line: whether every kernel's image mounts root, or why it was
/// not judged (never "ok" then). Its problems are among the alerts.
fn render_doctor(out: &mut impl Write, d: &DoctorStatus) -> std::io::Result<()> {
    let from = match &d.chain {
        Some(ChainSource::Live) => "the live system's chain".to_string(),
        Some(ChainSource::Saved(p)) => format!("the chain saved in {}", p.display()),
        None => String::new(),
    };
    let mut at_risk: Vec<&str> =
        d.kernels.iter().filter(|k| !k.ok).map(|k| k.release.as_str()).collect();
    at_risk.dedup();
    if !d.kernels.is_empty() {
        if at_risk.is_empty() {
            writeln!(out, "doctor: every kernel's initramfs mounts root ({from})")?;
        } else {
            writeln!(out, "doctor: AT RISK {} ({from}; see above)", at_risk.join(", "))?;
        }
    }
    for (release, why) in &d.not_judged {
        writeln!(out, "doctor: not judged: {release}: {why}")?;
    }
    for n in &d.notes {
        writeln!(out, "doctor: not judged: {n}")?;
    }
    Ok(())
}

/// The builds kept, when a driver has more than one or one serves no kernel.
fn render_builds(out: &mut impl Write, builds: &[BuildUse]) -> std::io::Result<()> {
    let worth = builds.iter().any(|b| b.serves.is_empty())
        || builds.iter().any(|b| builds.iter().filter(|o| o.name == b.name).count() > 1);
    if !worth {
        return Ok(());
    }
    writeln!(out, "\nBUILDS")?;
    for b in builds {
        let serves = if b.serves.is_empty() {
            "serves no kernel (bootkmod remove --unused prunes it)".to_string()
        } else {
            format!("serves {}", b.serves.join(", "))
        };
        writeln!(out, "{:<12} {}: {serves}", b.name, b.build.label())?;
    }
    Ok(())
}
