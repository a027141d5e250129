//! Test support for the initramfs engine: images built by the real tools (cached),
//! the `cpio -t` oracle, GNU cpio archives, directory snapshots.

use super::{missing, run, tool};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where built images are kept between runs: building one costs 10-25 s. Keyed by tool
/// version and kernel release, so a new dracut or kernel rebuilds them.
pub fn cache_dir() -> PathBuf {
    super::machine::fixture_cache("initramfs-fixtures")
}

fn package_version(package: &str) -> String {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", package]));
    String::from_utf8_lossy(&out.stdout).trim().replace([':', '~', '+'], "_")
}

/// Fake microcode files for dracut's early cpio (the test machine has none): dracut
/// copies them, without looking inside, into `kernel/x86/microcode/*.bin`.
fn fake_firmware_dir() -> PathBuf {
    let dir = cache_dir().join("fake-firmware");
    let intel = dir.join("intel-ucode");
    std::fs::create_dir_all(&intel).unwrap();
    std::fs::write(intel.join("06-55-04"), vec![0x5au8; 2048]).unwrap();
    dir
}

/// Compressions dracut offers that bootkmod reads (`cat` = none). lzo is tested apart:
/// the kernel can decode it, bootkmod refuses it with a clear error.
pub const DRACUT_COMPRESSIONS: &[&str] = &["gzip", "xz", "zstd", "lz4", "bzip2", "lzma", "cat"];
/// Compressions mkinitramfs offers that bootkmod reads (lzop apart, as above).
pub const MKINITRAMFS_COMPRESSIONS: &[&str] = &["gzip", "xz", "zstd", "lz4", "bzip2", "lzma"];

/// A small dracut image (base module, two storage drivers, an early microcode cpio),
/// built once per dracut version, kernel and compression.
pub fn dracut_image(kver: &str, compress: &str) -> Option<PathBuf> {
    let dracut = tool("dracut")?;
    let path = cache_dir()
        .join(format!("dracut-{}-{kver}-{compress}.img", package_version("dracut-core")));
    if path.exists() {
        return Some(path);
    }
    let tmp = path.with_extension("tmp");
    let fw = fake_firmware_dir();
    let out = run(Command::new(dracut)
        .args([
            "-f",
            "-q",
            "--no-hostonly",
            "--no-hostonly-cmdline",
            "--early-microcode",
            "-m",
            "base",
        ])
        .args(["--drivers", "virtio_blk ahci", "--reproducible"])
        .arg("--fwdir")
        .arg(&fw)
        // Debian's `lzma` package (old LZMA Utils) shadows xz's lzma and lacks the `-T0`
        // dracut passes: name the xz-utils command instead.
        .args(["--compress", if compress == "lzma" { "xz --format=lzma -9" } else { compress }])
        .arg(&tmp)
        .arg(kver));
    assert!(out.status.success(), "dracut failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&tmp, &path).unwrap();
    Some(path)
}

/// A small initramfs-tools image (MODULES=list with one driver), built once per version,
/// kernel and compression.
pub fn mkinitramfs_image(kver: &str, compress: &str) -> Option<PathBuf> {
    let mkinitramfs = tool("mkinitramfs")?;
    let path = cache_dir().join(format!(
        "mkinitramfs-{}-{kver}-{compress}.img",
        package_version("initramfs-tools-core")
    ));
    if path.exists() {
        return Some(path);
    }
    let conf = tempfile::tempdir().unwrap();
    for sub in ["conf.d", "scripts", "hooks"] {
        std::fs::create_dir_all(conf.path().join(sub)).unwrap();
    }
    std::fs::write(
        conf.path().join("initramfs.conf"),
        "MODULES=list\nBUSYBOX=auto\nCOMPRESS=gzip\n",
    )
    .unwrap();
    std::fs::write(conf.path().join("modules"), "virtio_blk\n").unwrap();
    let tmp = path.with_extension("tmp");
    let out = run(Command::new(mkinitramfs)
        .arg("-d")
        .arg(conf.path())
        .args(["-c", compress, "-o"])
        .arg(&tmp)
        .arg(kver));
    assert!(out.status.success(), "mkinitramfs failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&tmp, &path).unwrap();
    Some(path)
}

/// The decompressor command for a compression name, as the tools spell it.
pub fn decompressor(compress: &str) -> Option<Vec<String>> {
    let argv: &[&str] = match compress {
        "gzip" => &["gzip", "-dc"],
        "xz" => &["xz", "-dc"],
        "zstd" => &["zstd", "-dcq"],
        "lz4" => &["lz4", "-dc"],
        "bzip2" => &["bzip2", "-dc"],
        "lzma" => &["xz", "--format=lzma", "-dc"],
        "lzop" | "lzo" => &["lzop", "-dc"],
        "cat" | "none" => &["cat"],
        _ => return None,
    };
    tool(argv[0])?;
    Some(argv.iter().map(|s| s.to_string()).collect())
}

/// Run `argv` with `input` on stdin; returns stdout and stderr. Panics on failure.
pub fn pipe(argv: &[String], input: &[u8]) -> (Vec<u8>, String) {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{argv:?} failed: {stderr}");
    (out.stdout, stderr)
}

/// GNU `cpio -t` names of the first archive in `data`, normalised like the kernel
/// resolves them (`./a` and `/a` are `a`; `.` is the root).
pub fn cpio_names(data: &[u8]) -> BTreeSet<String> {
    let cpio = tool("cpio").expect("cpio");
    let (out, _) =
        pipe(&[cpio.to_string_lossy().into_owned(), "-t".into(), "--quiet".into()], data);
    String::from_utf8_lossy(&out).lines().map(normalise).collect()
}

pub fn normalise(name: &str) -> String {
    let trimmed = name.trim_start_matches("./").trim_start_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        ".".into()
    } else {
        trimmed.to_string()
    }
}

/// dracut's `skipcpio`: the image after its first (early) cpio archive.
pub fn skipcpio(image: &Path) -> Option<Vec<u8>> {
    let skip = Path::new("/usr/lib/dracut/skipcpio");
    if !skip.exists() {
        missing("dracut's skipcpio (dracut-core)")?;
    }
    let out = run(Command::new(skip).arg(image));
    assert!(out.status.success());
    Some(out.stdout)
}

/// What a directory tree holds, for comparing extractions: path -> description (type,
/// permission bits, content or link target). Owners and times are left out (an
/// unprivileged extraction cannot keep owners).
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            let desc = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                format!("dir {mode:o}")
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                use sha2::Digest;
                format!("file {mode:o} {} {:x}", data.len(), sha2::Sha256::digest(&data))
            } else {
                format!("node {:o} {:x}", meta.mode(), meta.rdev())
            };
            out.insert(rel, desc);
            if ft.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A newc archive of `names` (relative to `dir`, in order) made by GNU cpio.
pub fn gnu_cpio(dir: &Path, names: &[&str]) -> Vec<u8> {
    let cpio = tool("cpio").expect("cpio");
    let list = names.join("\n") + "\n";
    let mut child = Command::new(cpio)
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Compress with the real tool.
pub fn compress_with(tool_argv: &[&str], data: &[u8]) -> Vec<u8> {
    let argv: Vec<String> = tool_argv.iter().map(|s| s.to_string()).collect();
    pipe(&argv, data).0
}

/// Append `segment` to `image` after zero padding to a 4-byte boundary.
pub fn append_aligned(image: &mut Vec<u8>, segment: &[u8]) {
    while !image.len().is_multiple_of(4) {
        image.push(0);
    }
    image.extend_from_slice(segment);
}
