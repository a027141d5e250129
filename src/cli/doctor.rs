//! `bootkmod doctor`: will root mount on every installed kernel? The chain drawn as a
//! tree (as `lsblk -s` does), one column per kernel and image; `--save`/`--from` for snapshots,
//! `--fix` to inject what is missing. Exit 3 when a kernel is at risk.

use super::{print_json, Context};
use crate::engines::doctor::{self, Examination, ExamineOptions, KernelVerdict, LinkState};
use crate::exit::Exit;
use crate::model::ledger;
use crate::model::root_chain::{ChainSource, RootChain};
use crate::operations::doctor::{self as fixing, FixReport};
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::PathBuf;

/// Check that every kernel's initramfs can mount this host's root filesystem.
///
/// Walks the block chain of /, /usr, /boot and every x-initrd.mount of fstab through
/// sysfs (filesystem, dm/LVM/LUKS/multipath, md RAID, partitions, disks, up to the
/// controller), resolves for each kernel which module it would use for each link
/// (modalias through that kernel's modules.alias), and looks into each image that boots
/// that kernel (every boot entry's initrd, UKIs): is each module there with its
/// dependencies, and does the image's own index map the device to it? A kernel is AT
/// RISK when any link would be missing at boot from any of its images.
///
/// Without --from, the live chain is read; where it cannot be (no /proc or /sys under
/// the root), the snapshot saved at /var/lib/bootkmod/doctor-snapshot.json is judged.
///
/// Exit 0 when every kernel is OK, 3 when one is at risk (after --fix: still at risk).
///
/// Examples:
///   bootkmod doctor
///   bootkmod doctor --save host.json            # send this file to support
///   bootkmod doctor --from host.json --root /srv/customer-sysroot --json
///   bootkmod doctor --fix --dry-run
///   bootkmod doctor --kver 6.1.0-57-amd64 --image /tmp/initrd.img --fix
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DoctorArgs {
    /// Only this kernel (default: every kernel under ROOT/lib/modules).
    #[arg(long, value_name = "KVER", conflicts_with = "all_kernels")]
    pub kver: Option<String>,

    /// Every installed kernel (the default).
    #[arg(long)]
    pub all_kernels: bool,

    /// Judge this image instead of the kernel's own (needs --kver).
    #[arg(long, value_name = "FILE", requires = "kver")]
    pub image: Option<PathBuf>,

    /// Read the chain from a snapshot instead of ROOT's /proc and /sys.
    #[arg(long, value_name = "FILE", conflicts_with = "save")]
    pub from: Option<PathBuf>,

    /// Write the chain as a JSON snapshot (`-`: stdout) and stop; no kernel is judged.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,

    /// Inject what is missing into each at-risk image, then judge again.
    #[arg(long, conflicts_with = "save")]
    pub fix: bool,

    /// With --fix: show what would be injected; write nothing.
    #[arg(long, requires = "fix")]
    pub dry_run: bool,
}

pub fn run(ctx: &Context, args: DoctorArgs) -> Result<Exit> {
    let chain = match &args.from {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            RootChain::from_json(&text, &file.display().to_string())?
        }
        // A snapshot is of the live system; judging falls back to the saved one.
        None if args.save.is_some() => RootChain::read(&ctx.root)?,
        None => match RootChain::live_or_saved(&ctx.root)? {
            (chain, ChainSource::Live) => chain,
            (chain, ChainSource::Saved(path)) => {
                eprintln!(
                    "bootkmod: note: the live chain cannot be read here; judging the snapshot {}",
                    path.display()
                );
                chain
            }
        },
    };
    if let Some(out) = &args.save {
        fixing::save(&chain, out)?;
        return Ok(Exit::Ok);
    }
    let ledger = ledger::load(&ctx.root)?;
    let opts = ExamineOptions { kernels: args.kver.iter().cloned().collect(), image: args.image };
    let before = doctor::examine(&ctx.root, &chain, &ledger, &opts)?;
    if !args.fix || !before.at_risk {
        show(ctx, &before, None)?;
        return Ok(exit_of(&before));
    }
    let fixes = fixing::fix(&ctx.root, &before.kernels, args.dry_run)?;
    let after =
        if args.dry_run { before } else { doctor::examine(&ctx.root, &chain, &ledger, &opts)? };
    show(ctx, &after, Some(&fixes))?;
    Ok(exit_of(&after))
}

fn exit_of(e: &Examination) -> Exit {
    if e.at_risk {
        Exit::Negative
    } else {
        Exit::Ok
    }
}

fn show(ctx: &Context, e: &Examination, fixes: Option<&[FixReport]>) -> Result<()> {
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            #[serde(flatten)]
            examination: &'a Examination,
            #[serde(skip_serializing_if = "Option::is_none")]
            fixes: Option<&'a [FixReport]>,
        }
        return print_json(&Report { examination: e, fixes });
    }
    let mut out = std::io::stdout().lock();
    render(&mut out, e, fixes)?;
    Ok(())
}

/// Width of the chain column and of each kernel's column.
const CHAIN_WIDTH: usize = 44;

fn render(out: &mut impl Write, e: &Examination, fixes: Option<&[FixReport]>) -> Result<()> {
    // A kernel booted by several images has a column per image, headed by its file name.
    let label = |k: &KernelVerdict| {
        let images = e.kernels.iter().filter(|o| o.release == k.release).count();
        match k.image.as_ref().and_then(|p| p.file_name()) {
            Some(name) if images > 1 => format!("{} {}", k.release, name.to_string_lossy()),
            _ => k.release.clone(),
        }
    };
    let col = e.kernels.iter().map(|k| label(k).len()).max().unwrap_or(8).max(20) + 2;
    let cell = |text: String| format!("{text:<col$}");
    write!(out, "{:<CHAIN_WIDTH$}", "CHAIN")?;
    for k in &e.kernels {
        write!(out, "{}", cell(label(k)))?;
    }
    writeln!(out)?;
    let mut rows: Vec<(String, Option<usize>)> = Vec::new();
    for m in &e.chain.mounts {
        let on = m.device.as_deref().map_or(String::new(), |d| format!(" on {d}"));
        rows.push((format!("{} ({}{on}, {})", m.target, m.fstype, m.why), None));
        let mut lines: Vec<(usize, String, Option<usize>)> = Vec::new();
        for (i, n) in e.needs.iter().enumerate().filter(|(_, n)| n.scope == m.target) {
            lines.push((1, n.link.clone(), Some(i)));
        }
        if let Some(top) = &m.device {
            device_rows(e, top, 1, &mut lines);
        }
        rows.extend(tree_rows(&lines));
    }
    for (text, need) in rows {
        let shown: String = text.chars().take(CHAIN_WIDTH - 1).collect();
        write!(out, "{shown:<CHAIN_WIDTH$}")?;
        if let Some(i) = need {
            for k in &e.kernels {
                let Some(l) = k.links.iter().find(|l| l.need == i) else { continue };
                let module = l.module.as_deref().unwrap_or("-");
                let text = match l.state {
                    LinkState::BuiltIn => format!("built-in {module}"),
                    LinkState::Present => format!("ok {module}"),
                    LinkState::Missing => format!("MISSING {module}"),
                    LinkState::NoModule => "NO MODULE".to_string(),
                };
                write!(out, "{}", cell(text))?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out)?;
    for k in &e.kernels {
        let image = k.image.as_ref().map_or("no image".to_string(), |p| p.display().to_string());
        if k.ok {
            writeln!(out, "OK       {} ({image})", k.release)?;
        } else {
            writeln!(out, "AT RISK  {} ({image}):", k.release)?;
            for p in &k.problems {
                writeln!(out, "         - {p}")?;
            }
            if !k.fix.is_empty() && fixes.is_none() {
                writeln!(
                    out,
                    "         `bootkmod doctor --fix` would inject {}",
                    k.fix.join(", ")
                )?;
            }
        }
        for l in k.links.iter().filter_map(|l| l.note.as_ref()) {
            writeln!(out, "         note: {l}")?;
        }
    }
    for f in fixes.unwrap_or_default() {
        let why = f.why.as_deref().map_or(String::new(), |w| format!(": {w}"));
        writeln!(out, "fix {}: {} {}{why}", f.release, f.outcome, f.modules.join(", "))?;
    }
    Ok(())
}

/// Draw `(depth, text, need)` lines (depth from 1) as a tree, as `lsblk -s` does: `├─`
/// before a line with a later sibling, `└─` before the last, `│` continuing an
/// ancestor's siblings.
fn tree_rows(lines: &[(usize, String, Option<usize>)]) -> Vec<(String, Option<usize>)> {
    let has_later_sibling = |j: usize| {
        let depth = lines[j].0;
        lines[j + 1..].iter().take_while(|l| l.0 >= depth).any(|l| l.0 == depth)
    };
    let mut open: Vec<bool> = Vec::new();
    let mut rows = Vec::new();
    for (j, (depth, text, need)) in lines.iter().enumerate() {
        open.truncate(depth - 1);
        open.resize(depth - 1, false);
        let prefix: String = open.iter().map(|o| if *o { "│  " } else { "   " }).collect();
        let later = has_later_sibling(j);
        rows.push((format!("{prefix}{}─ {text}", if later { '├' } else { '└' }), *need));
        open.push(later);
    }
    rows
}

/// The device `name`, its needs, then the devices below it, indented by depth.
fn device_rows(
    e: &Examination,
    name: &str,
    depth: usize,
    lines: &mut Vec<(usize, String, Option<usize>)>,
) {
    let Some(dev) = e.chain.devices.get(name) else { return };
    let kind = match &dev.kind {
        crate::model::root_chain::DeviceKind::Disk => "disk".to_string(),
        crate::model::root_chain::DeviceKind::Partition => "partition".to_string(),
        crate::model::root_chain::DeviceKind::Dm { target, .. } => format!("dm {target}"),
        crate::model::root_chain::DeviceKind::Md { level } => format!("md {level}"),
    };
    lines.push((depth, format!("{name} {kind}"), None));
    for (i, n) in e.needs.iter().enumerate().filter(|(_, n)| n.scope == name) {
        lines.push((depth + 1, n.link.clone(), Some(i)));
    }
    if depth > 16 {
        return;
    }
    for lower in &dev.lower {
        device_rows(e, lower, depth + 1, lines);
    }
}
