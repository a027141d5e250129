//! `bootkmod demo`: the main flow on generated sample modules — no root, no installed
//! kernel. Each stage of the pipeline adds itself here as it lands: read the modules,
//! then check → inject → verify on a generated kernel tree and initramfs
//! ([`samples::demo_system`]), then inject again to show that nothing changes.

use super::{info, print_json, Context};
use crate::exit::Exit;
use crate::model::module::{Module, ReadOptions};
use crate::operations::inject::{self, InjectOptions, ModuleArg, Outcome};
use crate::samples;
use anyhow::{Context as _, Result};
use std::path::PathBuf;

/// Run the main flow end to end on generated sample modules (no root, no kernel needed).
///
/// Generates a sample storage HBA driver and the library module it depends on, reads
/// them back, then builds a sample kernel tree and an initramfs that lacks the driver,
/// checks the driver against that kernel, injects it (its dependency and firmware come
/// along, the indexes are regenerated) and verifies the written image. A second
/// injection reports that nothing changes.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the generated files in DIR instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,

    /// Kernel release the samples are built for.
    #[arg(long, default_value = "6.1.0-56-amd64", value_name = "KVER")]
    pub release: String,
}

pub fn run(ctx: &Context, args: DemoArgs) -> Result<Exit> {
    let tmp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut modules = Vec::new();
    for sample in samples::demo_set(&args.release) {
        let elf = sample.to_elf()?;
        let name = sample.modinfo.get("name").unwrap_or("sample").to_string();
        let path = dir.join(format!("{name}.ko.xz"));
        let mut xz = liblzma::write::XzEncoder::new_stream(
            Vec::new(),
            liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc32)?,
        );
        std::io::Write::write_all(&mut xz, &elf)?;
        std::fs::write(&path, xz.finish()?)?;
        modules.push(Module::read(&path, ReadOptions { digests: true, ..ReadOptions::default() })?);
    }
    let system = samples::demo_system(&dir, &args.release)?;
    let root = crate::model::root::Root::new(&system.root);
    let opts = InjectOptions { backup: false, ..InjectOptions::default() };
    let driver = [ModuleArg::File(system.driver.clone())];
    let first = inject::inject(&root, &system.image, &driver, &opts)?;
    let second = inject::inject(&root, &system.image, &driver, &opts)?;
    let exit = match (super::inject::exit_of(&first), second.outcome) {
        (Exit::Ok, Outcome::Unchanged) => Exit::Ok,
        (Exit::Ok, _) => Exit::Error,
        (e, _) => e,
    };
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Demo<'a> {
            modules: &'a [Module],
            inject: &'a inject::Report,
            again: &'a inject::Report,
        }
        print_json(&Demo { modules: &modules, inject: &first, again: &second })?;
        return Ok(exit);
    } else {
        let mut out = std::io::stdout().lock();
        for m in &modules {
            info::write_report(&mut out, m)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        println!(
            "== check -> inject -> verify: {} into {}",
            system.driver.display(),
            system.image.display()
        );
        super::inject::write_report(&mut out, &first, ctx.verbose)?;
        println!("\n== the same injection again");
        super::inject::write_report(&mut out, &second, ctx.verbose)?;
        if args.keep.is_some() {
            println!("\nsample modules, kernel tree (root/) and image kept in {}", dir.display());
        }
    }
    Ok(exit)
}
