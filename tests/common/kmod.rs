//! Oracle support for `bootkmod info`: kmod's `modinfo` and `modprobe --dump-modversions`
//! run over many module files, compressed copies of a kernel's modules made with the real
//! compressors, and a comparison that names the first module whose output differs.

use super::{bootkmod, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `modinfo -F` fields the oracle tests compare, signature pseudo-fields included.
pub const FIELDS: &[&str] = &[
    "vermagic",
    "name",
    "depends",
    "alias",
    "firmware",
    "license",
    "srcversion",
    "intree",
    "retpoline",
    "softdep",
    "import_ns",
    "sig_id",
    "signer",
    "sig_key",
    "sig_hashalgo",
];

/// How a module file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Plain,
    Xz,
    Zstd,
    Gzip,
}

impl Form {
    pub fn extension(self) -> &'static str {
        match self {
            Form::Plain => "",
            Form::Xz => ".xz",
            Form::Zstd => ".zst",
            Form::Gzip => ".gz",
        }
    }

    /// The compressor command with fast settings; it replaces each named file by its
    /// compressed form. xz must use the CRC32 check: the kernel's decompressor knows no
    /// other, and kmod's own tooling writes it.
    fn compressor(self) -> Option<Command> {
        let (name, args): (&str, &[&str]) = match self {
            Form::Plain => return None,
            Form::Xz => ("xz", &["-0", "-C", "crc32", "-T2", "-q", "--"]),
            Form::Zstd => ("zstd", &["-1", "-q", "--rm", "--"]),
            Form::Gzip => ("gzip", &["-1", "--"]),
        };
        let mut cmd = Command::new(tool(name)?);
        cmd.args(args);
        Some(cmd)
    }
}

/// Copies of `files` in `dir`, compressed as `form` by the real compressor. Returns the
/// new paths in the same order. Copies get an index prefix so equal base names (there are
/// a few in a kernel tree) cannot collide.
pub fn compressed_copies(files: &[PathBuf], form: Form, dir: &Path) -> Option<Vec<PathBuf>> {
    let mut plain = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().expect("module file name").to_string_lossy();
        let copy = dir.join(format!("{i:05}_{name}"));
        std::fs::copy(f, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
        plain.push(copy);
    }
    let Some(mut cmd) = form.compressor() else { return Some(plain) };
    // One invocation per batch of files keeps process start-up out of the measurement.
    for batch in plain.chunks(1000) {
        let out = run(cmd.args(batch));
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        cmd = form.compressor()?;
    }
    Some(
        plain
            .into_iter()
            .map(|p| PathBuf::from(format!("{}{}", p.display(), form.extension())))
            .collect(),
    )
}

/// stdout of a command that must succeed.
pub fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{:?} exited {}: {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `modinfo -F field files...` (values printed in argument order).
pub fn modinfo_field(field: &str, files: &[PathBuf]) -> Option<Vec<u8>> {
    Some(stdout_of(Command::new(tool("modinfo")?).arg("-F").arg(field).args(files)))
}

/// `bootkmod info -F field files...`.
pub fn bootkmod_field(field: &str, files: &[PathBuf]) -> Vec<u8> {
    stdout_of(bootkmod().args(["info", "-F", field, "--"]).args(files))
}

/// `modprobe --dump-modversions` for each file, concatenated in order. modprobe dumps
/// only its first argument (the others are taken as module parameters, see
/// `oracle_modprobe_dumps_only_its_first_file`), so it runs once per file; two workers
/// share the files.
pub fn modprobe_modversions(files: &[PathBuf]) -> Option<Vec<u8>> {
    let modprobe = tool("modprobe")?;
    let workers = 2.min(files.len().max(1));
    let chunk = files.len().div_ceil(workers).max(1);
    let parts: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let modprobe = &modprobe;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for f in part {
                        out.extend(stdout_of(
                            Command::new(modprobe).arg("--dump-modversions").arg(f),
                        ));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("modprobe worker")).collect()
    });
    Some(parts.concat())
}

/// `bootkmod info --modversions files...`.
pub fn bootkmod_modversions(files: &[PathBuf]) -> Vec<u8> {
    stdout_of(bootkmod().args(["info", "--modversions", "--"]).args(files))
}

/// Compare bootkmod's output on `ours` with the oracle's on `theirs` (same modules, same
/// order, possibly different files: e.g. the gzip form against the uncompressed one). On
/// a difference, bisect down to the first module whose outputs differ and panic naming it.
pub fn assert_same_output(
    what: &str,
    ours: &[PathBuf],
    theirs: &[PathBuf],
    bootkmod_run: &dyn Fn(&[PathBuf]) -> Vec<u8>,
    oracle_run: &dyn Fn(&[PathBuf]) -> Vec<u8>,
) {
    assert_eq!(ours.len(), theirs.len());
    if bootkmod_run(ours) == oracle_run(theirs) {
        return;
    }
    // Each tool's output is the concatenation of per-file outputs, so halves can be
    // compared on their own: keep the first half that still differs.
    let (mut lo, mut hi) = (0, ours.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if bootkmod_run(&ours[lo..mid]) != oracle_run(&theirs[lo..mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let a = String::from_utf8_lossy(&bootkmod_run(&ours[lo..hi])).into_owned();
    let b = String::from_utf8_lossy(&oracle_run(&theirs[lo..hi])).into_owned();
    panic!(
        "{what}: first differing module is {} (oracle read {})\n--- bootkmod:\n{a}--- oracle:\n{b}",
        ours[lo].display(),
        theirs[lo].display()
    );
}
