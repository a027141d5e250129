//! `bootkmod sign MODULE... --key KEY --cert CERT [--hash sha256|sha512]`: append the
//! kernel's module signature, as `scripts/sign-file` does (`engines::sign`), in place.

use super::{print_json, Context};
use crate::engines::sign::Signer;
use crate::exit::Exit;
use crate::formats::signature::SignHash;
use crate::operations::sign::{sign_file, SignReport};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// Sign kernel modules with your own key, as the kernel's scripts/sign-file does.
///
/// Appends a PKCS#7 signature (signer named by the certificate's issuer and serial, no
/// signed attributes) and the "~Module signature appended~" trailer: byte for byte what
/// `sign-file HASH KEY CERT MODULE` writes. A compressed module (.ko.xz, .ko.zst,
/// .ko.gz) is signed inside and compressed again with the same codec, as the kernel's
/// build does (xz: --check=crc32 --lzma2=dict=1MiB). A signature already there is
/// replaced. RSA keys, unencrypted, PEM or DER; the key and the certificate may be one
/// file (the kernel's signing_key.pem).
///
/// The kernel loads the module under Secure Boot only when it trusts the certificate:
/// enrol it with `mokutil --import CERT.der` and reboot, then `bootkmod check
/// --trusted-key CERT` tells whether it will load.
///
/// MODULE paths are files as you name them, not resolved under --root.
///
/// Examples:
///   bootkmod sign ./mydrv.ko --key MOK.priv --cert MOK.der
///   bootkmod sign ./mydrv.ko.xz --key signing_key.pem --cert signing_key.pem --hash sha512
///   bootkmod sign ./mydrv.ko --key k.pem --cert c.pem --output ./signed/mydrv.ko
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct SignArgs {
    /// Module files (.ko, .ko.xz, .ko.zst, .ko.gz), signed in place.
    #[arg(required = true, value_name = "MODULE")]
    pub modules: Vec<PathBuf>,

    /// The RSA private key (PKCS#8 or PKCS#1, PEM or DER, not encrypted).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,

    /// The X.509 certificate of that key (PEM or DER), as the kernel will know it.
    #[arg(long, value_name = "CERT")]
    pub cert: PathBuf,

    /// The digest signed (the kernel's CONFIG_MODULE_SIG_HASH is usually sha256).
    #[arg(long, value_enum, default_value_t = HashArg::Sha256)]
    pub hash: HashArg,

    /// Write the signed module here instead of in place (one MODULE only).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Say what would be signed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--hash` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashArg {
    Sha256,
    Sha512,
}

impl From<HashArg> for SignHash {
    fn from(h: HashArg) -> SignHash {
        match h {
            HashArg::Sha256 => SignHash::Sha256,
            HashArg::Sha512 => SignHash::Sha512,
        }
    }
}

/// Read a key and certificate into a [`Signer`] (shared with `install --sign-key`).
pub fn load_signer(key: &Path, cert: &Path, hash: SignHash) -> Result<Signer> {
    let key_bytes =
        std::fs::read(key).with_context(|| format!("{}: cannot read the key", key.display()))?;
    let cert_bytes = std::fs::read(cert)
        .with_context(|| format!("{}: cannot read the certificate", cert.display()))?;
    Signer::new(&key_bytes, &cert_bytes, hash)
        .with_context(|| format!("{} with {}", key.display(), cert.display()))
}

pub fn run(ctx: &Context, args: SignArgs) -> Result<Exit> {
    if args.output.is_some() && args.modules.len() > 1 {
        bail!("--output takes one MODULE; {} given", args.modules.len());
    }
    let signer = load_signer(&args.key, &args.cert, args.hash.into())?;
    let mut reports: Vec<SignReport> = Vec::new();
    let mut exit = Exit::Ok;
    for module in &args.modules {
        match sign_file(module, args.output.as_deref(), &signer, args.dry_run) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("bootkmod: {e:#}");
                exit = Exit::worst(exit, Exit::Error);
            }
        }
    }
    if ctx.json {
        print_json(&reports)?;
    } else {
        for r in &reports {
            let verb = match (r.changed, r.dry_run) {
                (false, _) => "already signed",
                (true, true) => "would sign",
                (true, false) => "signed",
            };
            let codec = if r.compression == "none" {
                String::new()
            } else {
                format!(", inside {}", r.compression)
            };
            let replaced = match &r.replaced {
                Some(s) if r.changed => format!(
                    "; replaced the signature by {}",
                    s.signer.as_deref().unwrap_or("an unnamed key")
                ),
                _ => String::new(),
            };
            println!("{verb} {}: {} by {}{codec}{replaced}", r.path.display(), r.hash, r.signer);
        }
    }
    Ok(exit)
}
