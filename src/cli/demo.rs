//! `bootkmod demo`: the main flow on generated sample modules — no root, no installed
//! kernel. Each stage of the pipeline adds itself here as it lands.

use super::{info, print_json, Context};
use crate::exit::Exit;
use crate::model::module::{Module, ReadOptions};
use crate::samples;
use anyhow::{Context as _, Result};
use std::path::PathBuf;

/// Run the main flow end to end on generated sample modules (no root, no kernel needed).
///
/// Generates a sample storage HBA driver and the library module it depends on, writes
/// them as `.ko.xz` files (CRC32 check, as the kernel needs), and reads them back.
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
    if ctx.json {
        print_json(&modules)?;
    } else {
        let mut out = std::io::stdout().lock();
        for m in &modules {
            info::write_report(&mut out, m)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        if args.keep.is_some() {
            println!("sample modules kept in {}", dir.display());
        }
    }
    Ok(Exit::Ok)
}
