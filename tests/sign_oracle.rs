//! `bootkmod sign` against the kernel's own `scripts/sign-file`: the same bytes for the
//! same key, certificate, hash and module, for real modules of the installed kernel, as
//! `.ko` and as `.ko.xz` (the build signs, then runs `xz --check=crc32
//! --lzma2=dict=1MiB`); kmod's `modinfo` names the signer; `check` trusts the module only
//! with `--trusted-key`; and the kernel itself, booted with `module.sig_enforce=1`,
//! refuses it (a distribution kernel cannot be given the test key, so the accepting side
//! is judged by `check` alone). Keys are made at test time by openssl.

mod common;

use common::qemu::{self, Boot, InitramfsDir};
use common::sign::{make_key_bits, sign_with, Key};
use common::{bootkmod, run, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Real modules of the installed kernel, their Debian signature taken off: small and
/// large, with and without dependencies.
const MODULES: &[&str] = &["loop.ko", "virtio_blk.ko", "megaraid_sas.ko", "xfs.ko"];

fn unsigned_modules(dir: &Path) -> Option<Vec<(String, PathBuf)>> {
    let kver = common::installed_kernel()?;
    let mut out = Vec::new();
    for name in MODULES {
        let src = common::check::module_in(Path::new("/"), &kver, name);
        let bytes = common::check::strip_signature(&std::fs::read(&src).unwrap());
        let path = dir.join(format!("unsigned-{name}"));
        std::fs::write(&path, bytes).unwrap();
        out.push((name.to_string(), path));
    }
    Some(out)
}

/// Three keys as admins have them: a PKCS#8 key with a PEM certificate (what `openssl
/// req` and DKMS make), a PKCS#1 ("traditional") key with a DER certificate (what
/// `mokutil --import` takes), and one file holding both (the kernel's signing_key.pem).
fn keys(dir: &Path) -> Option<Vec<(String, PathBuf, PathBuf)>> {
    let openssl = tool("openssl")?;
    let mut out = Vec::new();
    let Key { key, cert_pem } = make_key_bits(dir, "pkcs8", 2048)?;
    out.push(("PKCS#8 PEM + PEM cert, 2048".to_string(), key, cert_pem));

    let Key { key, cert_pem } = make_key_bits(dir, "pkcs1", 3072)?;
    let rsa_key = dir.join("pkcs1.rsa");
    let st = run(Command::new(&openssl)
        .args(["pkey", "-traditional", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&rsa_key));
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(std::fs::read_to_string(&rsa_key).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    let der = dir.join("pkcs1.der");
    let st = run(Command::new(&openssl)
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert_pem)
        .arg("-out")
        .arg(&der));
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    out.push(("PKCS#1 PEM + DER cert, 3072".to_string(), rsa_key, der));

    let Key { key, cert_pem } = make_key_bits(dir, "combined", 4096)?;
    let both = dir.join("signing_key.pem");
    let text =
        std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert_pem).unwrap();
    std::fs::write(&both, text).unwrap();
    out.push(("key and cert in one file, 4096".to_string(), both.clone(), both));
    Some(out)
}

fn bootkmod_sign(file: &Path, key: &Path, cert: &Path, hash: &str) {
    let out = run(bootkmod()
        .arg("sign")
        .arg(file)
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .args(["--hash", hash]));
    assert!(
        out.status.success(),
        "bootkmod sign {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the kernel's build does after signing (`scripts/Makefile.modinst`).
fn xz_as_the_build(file: &Path) -> Option<PathBuf> {
    let st = run(Command::new(tool("xz")?)
        .args(["--check=crc32", "--lzma2=dict=1MiB", "-f", "-k"])
        .arg(file));
    assert!(st.status.success(), "xz: {}", String::from_utf8_lossy(&st.stderr));
    Some(PathBuf::from(format!("{}.xz", file.display())))
}

#[test]
fn sign_writes_the_bytes_sign_file_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(modules) = unsigned_modules(tmp.path()) else { return };
    let Some(keys) = keys(tmp.path()) else { return };
    let mut compared = 0;
    for (label, key, cert) in &keys {
        for hash in ["sha256", "sha512"] {
            for (name, unsigned) in &modules {
                let bytes = std::fs::read(unsigned).unwrap();
                let tag = format!("{hash}-{}-{name}", compared);
                let Some(theirs) =
                    sign_with(&bytes, hash, key, cert, tmp.path(), &format!("sf-{tag}"))
                else {
                    return;
                };
                let ours = tmp.path().join(format!("bk-{tag}"));
                std::fs::write(&ours, &bytes).unwrap();
                bootkmod_sign(&ours, key, cert, hash);
                let ours = std::fs::read(&ours).unwrap();
                assert!(
                    ours == theirs,
                    "{name}, {hash}, {label}: bootkmod sign differs from sign-file"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, MODULES.len() * 2 * keys.len());
    println!("{compared} signed modules equal to sign-file's, byte for byte");
}

#[test]
fn xz_modules_are_signed_inside_and_compressed_as_the_build_does() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(modules) = unsigned_modules(tmp.path()) else { return };
    let Some(keys) = keys(tmp.path()) else { return };
    let (_, key, cert) = &keys[0];
    let mut compared = 0;
    for hash in ["sha256", "sha512"] {
        for (name, unsigned) in &modules {
            // The build: sign-file, then xz.
            let bytes = std::fs::read(unsigned).unwrap();
            let Some(_) =
                sign_with(&bytes, hash, key, cert, tmp.path(), &format!("b-{hash}-{name}"))
            else {
                return;
            };
            let Some(expected) = xz_as_the_build(&tmp.path().join(format!("b-{hash}-{name}")))
            else {
                return;
            };
            // bootkmod: the unsigned module compressed the same way, then signed inside.
            let ours = tmp.path().join(format!("o-{hash}-{name}"));
            std::fs::copy(unsigned, &ours).unwrap();
            let Some(ours) = xz_as_the_build(&ours) else { return };
            bootkmod_sign(&ours, key, cert, hash);
            let (ours, expected) =
                (std::fs::read(&ours).unwrap(), std::fs::read(&expected).unwrap());
            assert!(ours == expected, "{name}.xz, {hash}: differs from sign-file + xz");
            compared += 1;
        }
    }
    println!("{compared} signed .ko.xz equal to sign-file + xz --check=crc32 --lzma2=dict=1MiB");
}

#[test]
fn modinfo_names_the_signer_and_check_trusts_only_the_given_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(kver) = common::installed_kernel() else { return };
    let Some(modules) = unsigned_modules(tmp.path()) else { return };
    let Some(modinfo) = tool("modinfo") else { return };
    let Some(mine) = make_key_bits(tmp.path(), "mok", 2048) else { return };
    let Some(other) = make_key_bits(tmp.path(), "other", 2048) else { return };
    let serial =
        run(Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(&mine.cert_pem));
    let serial =
        String::from_utf8_lossy(&serial.stdout).trim().trim_start_matches("serial=").to_string();
    let (_, unsigned) = &modules[0];
    let ko = tmp.path().join("loop.ko");
    std::fs::copy(unsigned, &ko).unwrap();
    let Some(xz) = xz_as_the_build(&ko) else { return };
    for (file, hash) in [(&ko, "sha256"), (&xz, "sha512")] {
        bootkmod_sign(file, &mine.key, &mine.cert_pem, hash);
        let field = |f: &str| {
            let out = run(Command::new(&modinfo).args(["-F", f]).arg(file));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(field("signer"), "mok signing key", "{}", file.display());
        assert_eq!(field("sig_hashalgo"), hash);
        assert_eq!(field("sig_id"), "PKCS#7");
        let sig_key: String = field("sig_key").replace(':', "");
        assert_eq!(sig_key.trim_start_matches('0'), serial.trim_start_matches('0'));

        let check = |extra: &[&Path]| {
            let mut cmd = bootkmod();
            cmd.arg("check").arg(file).args(["--kver", &kver, "--secure-boot", "on"]);
            for cert in extra {
                cmd.arg("--trusted-key").arg(cert);
            }
            run(&mut cmd)
        };
        let trusted = check(&[&mine.cert_pem]);
        assert_eq!(trusted.status.code(), Some(0), "{}", String::from_utf8_lossy(&trusted.stdout));
        for certs in [&[][..], &[other.cert_pem.as_path()][..]] {
            let refused = check(certs);
            let text = String::from_utf8_lossy(&refused.stdout);
            assert_eq!(refused.status.code(), Some(3), "{text}");
            assert!(text.contains("mok signing key"), "the refusal names the key: {text}");
        }
    }
}

#[test]
fn resigning_is_idempotent_and_replaces_another_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(kver) = common::installed_kernel() else { return };
    let Some(key) = make_key_bits(tmp.path(), "mok", 2048) else { return };
    // A Debian-signed module: its signature is replaced, not stacked.
    let debian = common::check::module_in(Path::new("/"), &kver, "loop.ko");
    let file = tmp.path().join("loop.ko");
    std::fs::copy(&debian, &file).unwrap();
    let out = run(bootkmod()
        .args(["sign", "--json", "--key"])
        .arg(&key.key)
        .arg("--cert")
        .arg(&key.cert_pem)
        .arg(&file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["changed"], true);
    let Some(modinfo) = tool("modinfo") else { return };
    let theirs = run(Command::new(modinfo).args(["-F", "signer"]).arg(&debian));
    let theirs = String::from_utf8_lossy(&theirs.stdout).trim().to_string();
    assert!(!theirs.is_empty());
    assert_eq!(report[0]["replaced"]["signer"], theirs.as_str(), "{report}");
    let stripped = common::check::strip_signature(&std::fs::read(&debian).unwrap());
    let Some(expected) =
        sign_with(&stripped, "sha256", &key.key, &key.cert_pem, tmp.path(), "sf.ko")
    else {
        return;
    };
    assert!(
        std::fs::read(&file).unwrap() == expected,
        "re-signed differs from sign-file on the unsigned module"
    );

    // Again: nothing to do, the file is not rewritten.
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&file).unwrap().ino();
    let out = run(bootkmod()
        .args(["sign", "--key"])
        .arg(&key.key)
        .arg("--cert")
        .arg(&key.cert_pem)
        .arg(&file));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("already signed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::metadata(&file).unwrap().ino(), before);
}

#[test]
fn sign_refuses_wrong_inputs_and_dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(modules) = unsigned_modules(tmp.path()) else { return };
    let Some(a) = make_key_bits(tmp.path(), "a", 2048) else { return };
    let Some(b) = make_key_bits(tmp.path(), "b", 2048) else { return };
    let (_, unsigned) = &modules[0];
    let original = std::fs::read(unsigned).unwrap();
    let sign = |key: &Path, cert: &Path, extra: &[&str]| {
        run(bootkmod()
            .arg("sign")
            .arg(unsigned)
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .args(extra))
    };
    // Dry run.
    let out = sign(&a.key, &a.cert_pem, &["--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("would sign"));
    assert!(std::fs::read(unsigned).unwrap() == original);
    // A certificate that is not the key's.
    let out = sign(&a.key, &b.cert_pem, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not hold this private key"), "{err}");
    // An encrypted key.
    let enc = tmp.path().join("enc.key");
    let st = run(Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:x", "-in"])
        .arg(&a.key)
        .arg("-out")
        .arg(&enc));
    assert!(st.status.success());
    let out = sign(&enc, &a.cert_pem, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("encrypted"));
    // Not a module; a bad --hash.
    let junk = tmp.path().join("junk.ko");
    std::fs::write(&junk, b"not a module").unwrap();
    let out = run(bootkmod()
        .arg("sign")
        .arg(&junk)
        .arg("--key")
        .arg(&a.key)
        .arg("--cert")
        .arg(&a.cert_pem));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&junk).unwrap(), b"not a module");
    assert_eq!(sign(&a.key, &a.cert_pem, &["--hash", "md5"]).status.code(), Some(2));
    assert!(std::fs::read(unsigned).unwrap() == original, "no failed run wrote the module");
}

/// What the booted kernel says about `insmod` of each file, with `append` on its
/// command line: (exit status 0, dmesg lines).
fn boot_insmod(release: &str, files: &[&Path], append: &str) -> Option<Vec<(bool, String)>> {
    let kernel = qemu::host_kernel(release)?;
    let initramfs = InitramfsDir::busybox()?;
    let mut init = String::from(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for (i, f) in files.iter().enumerate() {
        initramfs.file(&format!("m/{i}.ko"), &std::fs::read(f).unwrap(), 0o644);
        init.push_str(&format!(
            "dmesg -c >/dev/null\ninsmod /m/{i}.ko; echo BKS-RC {i} $?\n\
             dmesg -c | sed 's/^/BKS-MSG {i} /'\nrmmod loop 2>/dev/null\n"
        ));
    }
    init.push_str("echo BKS-DONE\npoweroff -f\n");
    initramfs.init(&init);
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("initrd.cpio");
    initramfs.pack(&image)?;
    let log = Boot::new(kernel, &image).append(&format!("loglevel=1 {append}")).run()?;
    assert!(log.serial.contains("BKS-DONE"), "guest did not finish:\n{}", log.tail());
    let mut out = Vec::new();
    for i in 0..files.len() {
        let rc = format!("BKS-RC {i} ");
        let loaded = log.lines_with(&rc).next().is_some_and(|l| l.trim_end().ends_with(" 0"));
        let prefix = format!("BKS-MSG {i} ");
        let msgs: Vec<&str> = log.lines_with(&prefix).collect();
        out.push((loaded, msgs.join("\n")));
    }
    Some(out)
}

#[test]
fn the_kernel_with_sig_enforce_refuses_a_module_signed_by_an_unknown_key() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(kver) = common::installed_kernel() else { return };
    let Some(key) = make_key_bits(tmp.path(), "mok", 2048) else { return };
    let debian = common::check::module_in(Path::new("/"), &kver, "loop.ko");
    let ours = tmp.path().join("loop.ko");
    std::fs::copy(&debian, &ours).unwrap();
    bootkmod_sign(&ours, &key.key, &key.cert_pem, "sha256");

    // Without enforcement the kernel parses our signature, finds no key and loads with a
    // taint: a malformed signature (EBADMSG) would be refused even here.
    let Some(relaxed) = boot_insmod(&kver, &[&ours], "") else { return };
    let (loaded, msgs) = &relaxed[0];
    assert!(*loaded, "not loaded without enforcement:\n{msgs}");
    assert!(msgs.contains("signature and/or required key missing"), "{msgs}");

    // With enforcement: Debian's own signature loads, ours is refused for its key.
    let Some(enforced) = boot_insmod(&kver, &[&debian, &ours], "module.sig_enforce=1") else {
        return;
    };
    assert!(enforced[0].0, "Debian-signed loop.ko refused:\n{}", enforced[0].1);
    let (loaded, msgs) = &enforced[1];
    assert!(!*loaded, "loaded under module.sig_enforce=1:\n{msgs}");
    assert!(msgs.contains("Loading of module with unavailable key is rejected"), "{msgs}");
}
