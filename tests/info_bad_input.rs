//! `bootkmod info` on broken input: truncated, empty, non-ELF, wrong architecture, lying
//! section headers, garbage behind a compression magic. Each must give exit status 1 and
//! exactly one line on stderr naming the file and the problem, never a panic.
//!
//! Inputs are made from a real module of the installed kernel where one is needed (and
//! skipped, or failed under CI, without it) and from generated samples otherwise.

mod common;

use bootkmod::samples::{SampleArch, SampleModule};
use common::{bootkmod, installed_kernel, kernel_modules, run};
use std::path::{Path, PathBuf};

/// Run `bootkmod info ARGS... FILE` and check the one-line error. Returns the line.
fn expect_error(args: &[&str], file: &Path, problem: &str) -> String {
    let out = run(bootkmod().arg("info").args(args).arg(file));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: exit status {}, stderr {stderr}",
        file.display(),
        out.status
    );
    assert!(!stderr.contains("panicked"), "{}: panic: {stderr}", file.display());
    assert_eq!(stderr.lines().count(), 1, "{}: not one line: {stderr}", file.display());
    assert!(stderr.contains(&file.display().to_string()), "error does not name the file: {stderr}");
    assert!(stderr.contains(problem), "expected {problem:?} in: {stderr}");
    assert!(out.stdout.is_empty(), "{}: output despite the error", file.display());
    stderr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    path
}

/// A small signed module of the installed kernel (Debian signs every module).
fn real_module() -> Option<Vec<u8>> {
    let release = installed_kernel()?;
    let files = kernel_modules(&release);
    let small = files
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "vmw_pvscsi.ko"))
        .or_else(|| files.iter().find(|p| p.extension().is_some_and(|e| e == "ko")))?;
    Some(std::fs::read(small).expect("read module"))
}

fn sample_module() -> Vec<u8> {
    let mut s =
        SampleModule::new("bad_input", "6.1.0-56-amd64 SMP preempt mod_unload modversions ");
    s.import("module_layout", 0x1234).export("bad_input_fn", 0x5678, true, None);
    s.to_elf().expect("sample")
}

/// ELF64 little-endian header fields the patches below need.
struct Layout {
    shoff: usize,
    shnum: usize,
    shstrndx: usize,
}

fn layout(elf: &[u8]) -> Layout {
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "tests patch ELF64 little-endian modules");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    Layout {
        shoff: u64::from_le_bytes(elf[40..48].try_into().unwrap()) as usize,
        shnum: u16_at(60),
        shstrndx: u16_at(62),
    }
}

/// File offset of the section header of the section called `name`.
fn section_header(elf: &[u8], name: &str) -> usize {
    let l = layout(elf);
    let header = |i: usize| l.shoff + 64 * i;
    let field = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let names = field(header(l.shstrndx) + 24);
    (0..l.shnum)
        .map(header)
        .find(|&h| {
            let start = names + u32::from_le_bytes(elf[h..h + 4].try_into().unwrap()) as usize;
            elf[start..].split(|&b| b == 0).next() == Some(name.as_bytes())
        })
        .unwrap_or_else(|| panic!("no section {name}"))
}

#[test]
fn empty_and_non_elf_files() {
    let dir = tempfile::tempdir().unwrap();
    expect_error(&[], &write(dir.path(), "empty.ko", b""), "empty file");
    expect_error(
        &[],
        &write(dir.path(), "text.ko", b"hello, I am not a module\n"),
        "not an ELF file",
    );
    expect_error(&[], &write(dir.path(), "magic.ko", b"\x7fELF"), "truncated ELF header");
    expect_error(&[], &dir.path().join("absent.ko"), "cannot read");
}

#[test]
fn garbage_after_a_compression_magic() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("g.ko.xz", b"\xfd7zXZ\0 this is not an xz stream", "corrupt xz data"),
        ("g.ko.zst", b"\x28\xb5\x2f\xfd garbage garbage", "corrupt zstd data"),
        ("g.ko.gz", b"\x1f\x8b garbage garbage", "corrupt gzip data"),
    ];
    for (name, bytes, problem) in cases {
        expect_error(&[], &write(dir.path(), name, bytes), problem);
    }
    // A real stream cut short.
    let xz = {
        use std::io::Write;
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&sample_module()).unwrap();
        enc.finish().unwrap()
    };
    expect_error(&[], &write(dir.path(), "cut.ko.xz", &xz[..xz.len() / 2]), "corrupt xz data");
}

#[test]
fn truncated_at_many_points() {
    let Some(module) = real_module() else { return };
    let dir = tempfile::tempdir().unwrap();
    let l = layout(&module);
    // Kernel modules end with the section header table (then the signature): a cut
    // anywhere before its end loses sections.
    let elf_end = l.shoff + 64 * l.shnum;
    assert!(elf_end < module.len(), "expected a signed module");
    let mut cuts: Vec<usize> =
        vec![1, 3, 5, 16, 17, 40, 63, 64, 65, l.shoff, l.shoff + 1, elf_end - 1];
    cuts.extend((1..40).map(|i| elf_end * i / 40));
    cuts.sort_unstable();
    cuts.dedup();
    for cut in &cuts {
        let path = write(dir.path(), &format!("cut{cut}.ko"), &module[..*cut]);
        let line = expect_error(&[], &path, "");
        assert!(
            [
                "truncated ELF header",
                "section header table",
                "bytes of ELF data",
                "no section header"
            ]
            .iter()
            .any(|p| line.contains(p)),
            "cut at {cut}: unexpected problem: {line}"
        );
    }
    // Cut inside the signature: the marker is gone, so this is an unsigned module with
    // trailing bytes, as modinfo and the kernel see it too. It must still not fail.
    let path = write(dir.path(), "sigcut.ko", &module[..module.len() - 10]);
    let out = run(bootkmod().args(["info", "-F", "sig_id"]).arg(&path));
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    println!("checked {} cut points", cuts.len());
}

#[test]
fn lying_section_headers() {
    let Some(module) = real_module() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (what, field_at) in [("size", 32), ("offset", 24)] {
        let mut bad = module.clone();
        let header = section_header(&bad, ".modinfo");
        let past_eof = (module.len() as u64 + 4096).to_le_bytes();
        bad[header + field_at..header + field_at + 8].copy_from_slice(&past_eof);
        let path = write(dir.path(), &format!("lying-{what}.ko"), &bad);
        expect_error(&[], &path, "(.modinfo) claims bytes");
    }
    let mut bad = module.clone();
    bad[60..62].copy_from_slice(&0xfff0u16.to_le_bytes()); // e_shnum
    expect_error(&[], &write(dir.path(), "shnum.ko", &bad), "section header table");
}

#[test]
fn wrong_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let mut arm = SampleModule::new("arm_only", "6.1.0 SMP mod_unload modversions aarch64");
    arm.arch = SampleArch::Aarch64;
    let path = write(dir.path(), "arm_only.ko", &arm.to_elf().unwrap());
    expect_error(&["--arch", "amd64"], &path, "wrong architecture: built for aarch64, not x86_64");
    let ok = run(bootkmod().args(["info", "--arch", "arm64", "-F", "name"]).arg(&path));
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(ok.stdout, b"arm_only\n");

    // An x86_64 object claiming to be ELF32 is corrupt, whatever --arch says.
    let mut lying = sample_module();
    lying[4] = 1;
    let path = write(dir.path(), "class.ko", &lying);
    expect_error(&[], &path, "ELF32 header for x86_64, which only exists as ELF64");
}

#[test]
fn a_bad_module_does_not_hide_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.ko", &sample_module());
    let bad = write(dir.path(), "bad.ko", b"not a module");
    let out = run(bootkmod().args(["info", "-F", "name"]).arg(&bad).arg(&good));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"bad_input\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.ko: not an ELF file"), "{stderr}");
}
