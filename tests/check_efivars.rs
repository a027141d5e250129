//! `check --secure-boot auto` reads the target's trusted keys from efivarfs under
//! `--root` (`model::efi_keys`): a fixture tree with `SecureBoot`, shim's `MokListRT`
//! and `MokSBStateRT`, and the firmware's `db`, each a 4-byte attribute word then
//! `EFI_SIGNATURE_LIST`s the test writes itself, byte for byte as efitools'
//! `cert-to-efi-sig-list` writes them (judged against it). Real certificates made by
//! openssl; modules signed by the kernel's own `sign-file`.
//!
//! A module signed by a MOK key or a db key is trusted; one signed by a key in neither
//! is refused, the verdict naming the missing key and the `mokutil --import` that
//! enrolls it (the target's DKMS certificate when it is that key); with shim's
//! validation disabled the same module only taints.

mod common;

use common::keep::{json_of, Setup};
use common::sign::{make_key_bits, sign, Key};
use common::{bootkmod, run, tool};
use std::path::Path;
use std::process::Command;

const SHIM_LOCK: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
const DB_VENDOR: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The owner a vendor enrolls its db key with (any GUID; this one is made up).
const VENDOR_OWNER: &str = "77fa9abd-0359-4d32-bd60-28f4e78f784b";
/// efivarfs attributes: NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const NV_BS_RT: u32 = 0x7;

fn guid_bytes(text: &str) -> Vec<u8> {
    let hex: String = text.split('-').collect();
    let mut b: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// One `EFI_SIGNATURE_LIST` holding the DER certificate `der`, owned by `owner`.
fn x509_siglist(der: &[u8], owner: &str) -> Vec<u8> {
    let mut out = guid_bytes("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
    let sig_size = 16 + der.len() as u32;
    out.extend_from_slice(&(28 + sig_size).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&sig_size.to_le_bytes());
    out.extend_from_slice(&guid_bytes(owner));
    out.extend_from_slice(der);
    out
}

fn der_of(key: &Key, dir: &Path) -> Option<Vec<u8>> {
    let out_path = dir.join(format!("{}.der", key.cert_pem.file_stem()?.to_string_lossy()));
    let out = run(Command::new(tool("openssl")?)
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&key.cert_pem)
        .arg("-out")
        .arg(&out_path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(std::fs::read(out_path).unwrap())
}

/// efitools' own encoding of the same certificate and owner.
fn efitools_siglist(key: &Key, owner: &str, dir: &Path) -> Option<Vec<u8>> {
    let out_path = dir.join("efitools.esl");
    let out = run(Command::new(tool("cert-to-efi-sig-list")?)
        .args(["-g", owner])
        .arg(&key.cert_pem)
        .arg(&out_path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(std::fs::read(out_path).unwrap())
}

fn put_var(root: &Path, name: &str, guid: &str, value: &[u8]) {
    let dir = root.join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = NV_BS_RT.to_le_bytes().to_vec();
    bytes.extend_from_slice(value);
    std::fs::write(dir.join(format!("{name}-{guid}")), bytes).unwrap();
}

/// `check --root R --kver K --secure-boot auto --json MODULE`: exit code, the verdict
/// and the kernel's report.
fn check_auto(root: &Path, kver: &str, module: &Path) -> (Option<i32>, serde_json::Value) {
    let out = run(bootkmod()
        .arg("--root")
        .arg(root)
        .args(["--json", "check", "--kver", kver, "--secure-boot", "auto"])
        .arg(module));
    (out.status.code(), json_of(&out))
}

fn signature_messages(report: &serde_json::Value) -> Vec<String> {
    report[0]["verdicts"][0]["reasons"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter(|x| x["rule"] == "signature")
                .map(|x| x["message"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn secure_boot_auto_trusts_mok_and_db_keys_and_names_the_missing_one() {
    let Some(Setup { kver, newer, symvers, bkram, root, scratch }) = Setup::new() else {
        return;
    };
    root.add_kernel(&newer, &kver, &symvers);
    let dir = scratch.path();
    let keys: Vec<Key> = ["mok", "vendor", "dkms", "stranger"]
        .iter()
        .map_while(|n| make_key_bits(dir, n, 2048))
        .collect();
    let [mok, vendor, dkms, stranger] = &keys[..] else { return };

    // The lists as the test writes them, and as efitools writes them.
    let mok_list = x509_siglist(&der_of(mok, dir).unwrap(), SHIM_LOCK);
    let db_list = x509_siglist(&der_of(vendor, dir).unwrap(), VENDOR_OWNER);
    let Some(theirs) = efitools_siglist(mok, SHIM_LOCK, dir) else { return };
    assert_eq!(mok_list, theirs, "MokListRT bytes differ from cert-to-efi-sig-list's");
    let Some(theirs) = efitools_siglist(vendor, VENDOR_OWNER, dir) else { return };
    assert_eq!(db_list, theirs, "db bytes differ from cert-to-efi-sig-list's");

    let r = root.path();
    put_var(r, "SecureBoot", GLOBAL, &[1]);
    put_var(r, "MokListRT", SHIM_LOCK, &mok_list);
    // db with a SHA-256 list before the certificate: hashes are no keys, skipped.
    let mut db = guid_bytes("c1c41626-504c-4092-aca9-41f936934328");
    db.extend_from_slice(&(28u32 + 48).to_le_bytes());
    db.extend_from_slice(&0u32.to_le_bytes());
    db.extend_from_slice(&48u32.to_le_bytes());
    db.extend_from_slice(&guid_bytes(VENDOR_OWNER));
    db.extend_from_slice(&[0xab; 32]);
    db.extend_from_slice(&db_list);
    put_var(r, "db", DB_VENDOR, &db);
    // DKMS keeps its certificate where the target's mokutil would import it from.
    std::fs::create_dir_all(root.at("/var/lib/dkms")).unwrap();
    std::fs::write(root.at("/var/lib/dkms/mok.pub"), der_of(dkms, dir).unwrap()).unwrap();

    let unsigned = std::fs::read(&bkram).unwrap();
    let signed = |key: &Key, name: &str| {
        let bytes = sign(&unsigned, key, dir, &format!("{name}.ko"))?;
        let p = dir.join(format!("{name}-signed.ko"));
        std::fs::write(&p, bytes).unwrap();
        Some(p)
    };
    let Some(by_mok) = signed(mok, "mok") else { return };
    let Some(by_vendor) = signed(vendor, "vendor") else { return };
    let Some(by_dkms) = signed(dkms, "dkms") else { return };
    let Some(by_stranger) = signed(stranger, "stranger") else { return };

    for (module, source) in [(&by_mok, "MokListRT"), (&by_vendor, "db")] {
        let (code, report) = check_auto(r, &kver, module);
        assert_eq!(code, Some(0), "{}: {report:#}", module.display());
        let kernel = &report[0]["kernel"];
        assert_eq!(kernel["enforcement"]["because"], "EFI Secure Boot is enabled", "{kernel:#}");
        let sources: Vec<&str> = kernel["trusted_keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["source"].as_str())
            .collect();
        assert!(sources.iter().any(|s| s.starts_with(source)), "{sources:?}");
        assert!(signature_messages(&report).is_empty(), "{report:#}");
    }
    // Exactly two keys from efivars: the hash entry of db is no key.
    let (_, report) = check_auto(r, &kver, &by_mok);
    assert_eq!(report[0]["kernel"]["efi"]["keys"].as_array().unwrap().len(), 2, "{report:#}");

    let (code, report) = check_auto(r, &kver, &by_dkms);
    assert_eq!(code, Some(3), "{report:#}");
    let messages = signature_messages(&report);
    let text = messages.join("\n");
    assert_eq!(messages.len(), 1, "{report:#}");
    assert!(text.contains("dkms signing key"), "{text}");
    assert!(text.contains("not in MokListRT or db"), "{text}");
    assert!(text.contains("mokutil --import /var/lib/dkms/mok.pub"), "{text}");
    let serial =
        run(Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(&dkms.cert_pem));
    let serial =
        String::from_utf8_lossy(&serial.stdout).trim().trim_start_matches("serial=").to_string();
    let named = text.replace(':', "");
    assert!(
        named.contains(serial.trim_start_matches('0')),
        "the refusal names the key's serial {serial}: {text}"
    );

    let (code, report) = check_auto(r, &kver, &by_stranger);
    assert_eq!(code, Some(3), "{report:#}");
    let text = signature_messages(&report).join("\n");
    assert!(text.contains("stranger signing key"), "{text}");
    assert!(text.contains("mokutil --import CERT"), "{text}");

    // The text report says the same.
    let out = run(bootkmod()
        .arg("--root")
        .arg(r)
        .args(["check", "--kver", &kver, "--secure-boot", "auto"])
        .arg(&by_dkms));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mokutil --import /var/lib/dkms/mok.pub"), "{text}");

    // `mokutil --disable-validation`: shim and the kernel do not enforce; the module
    // loads (tainting).
    put_var(r, "MokSBStateRT", SHIM_LOCK, &[1]);
    let (code, report) = check_auto(r, &kver, &by_dkms);
    assert_eq!(code, Some(0), "{report:#}");
    let because = report[0]["kernel"]["enforcement"]["because"].as_str().unwrap();
    assert!(because.contains("MokSBStateRT"), "{because}");

    // A corrupt MokListRT is a warning; db still counts.
    std::fs::remove_file(root.at(format!("/sys/firmware/efi/efivars/MokSBStateRT-{SHIM_LOCK}")))
        .unwrap();
    put_var(r, "MokListRT", SHIM_LOCK, &mok_list[..40]);
    let out = run(bootkmod()
        .arg("--root")
        .arg(r)
        .args(["--json", "check", "--kver", &kver, "--secure-boot", "auto"])
        .arg(&by_vendor));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("efivars") && stderr.contains("MokListRT"), "{stderr}");
    let (code, _) = check_auto(r, &kver, &by_mok);
    assert_eq!(code, Some(3), "a key only in the corrupt MokListRT is not trusted");
}
