//! Each loader rule with a fixture that fails it and one that passes it, on a synthetic
//! kernel (sample modules, a written Module.symvers, a config) — cases no real kernel
//! ships. Signatures use real keys: openssl makes them, the kernel's `sign-file` signs.

mod common;

use bootkmod::engines::compat::{self, Outcome, Rule, Verdict};
use bootkmod::model::kernel::{Kernel, KernelOptions, SecureBootMode};
use bootkmod::model::module::{Module, ReadOptions};
use bootkmod::model::root::Root;
use bootkmod::samples::{SampleArch, SampleModule};
use common::check::{self as ck, SYNTH_CONFIG, SYNTH_LAYOUT, SYNTH_VERMAGIC};
use common::sign::{make_key, sign};
use std::path::PathBuf;
use std::process::Command;

const PRINTK: u32 = 0x92997ed8;
const GPL_FN: u32 = 0x11112222;
const NS_FN: u32 = 0x33334444;

fn exports() -> Vec<bootkmod::formats::symvers::SymversEntry> {
    vec![
        ck::vmlinux_export("module_layout", SYNTH_LAYOUT, false, None),
        ck::vmlinux_export("_printk", PRINTK, false, None),
        ck::vmlinux_export("gpl_fn", GPL_FN, true, None),
        ck::vmlinux_export("ns_fn", NS_FN, false, Some("NS_A")),
    ]
}

fn synth(config: &str) -> ck::SyntheticKernel {
    ck::SyntheticKernel::new(&ck::synth_reference().to_elf().unwrap(), &exports(), config)
}

fn read_kernel(k: &ck::SyntheticKernel, mode: SecureBootMode, keys: Vec<PathBuf>) -> Kernel {
    let opts = KernelOptions { secure_boot: mode, trusted_keys: keys, ..Default::default() };
    Kernel::read(&Root::new(k.root()), &k.kver, &opts).unwrap()
}

/// A module that passes every rule on the synthetic kernel (unsigned: a taint only).
fn good(name: &str) -> SampleModule {
    let mut m = SampleModule::new(name, SYNTH_VERMAGIC);
    m.import("module_layout", SYNTH_LAYOUT).import("_printk", PRINTK);
    m
}

fn verdict(kernel: &Kernel, m: &SampleModule) -> Verdict {
    let module = Module::from_bytes(&m.to_elf().unwrap(), ReadOptions::default()).unwrap();
    compat::check(kernel, &module)
}

fn refusals(v: &Verdict) -> Vec<Rule> {
    v.reasons.iter().filter(|r| r.outcome == Outcome::Refused).map(|r| r.rule).collect()
}

#[track_caller]
fn assert_refused_only_by(v: &Verdict, rule: Rule) {
    assert!(!v.compatible, "expected a refusal on {rule:?}: {:?}", v.reasons);
    let rules = refusals(v);
    assert!(rules.iter().all(|&r| r == rule), "expected only {rule:?}, got {rules:?}");
}

#[track_caller]
fn assert_passes(v: &Verdict) {
    assert!(v.compatible, "expected compatible: {:?}", v.reasons);
}

#[test]
fn the_baseline_module_passes_with_only_the_unsigned_taint() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    assert_eq!(kernel.this_module_size, Some(896));
    assert_eq!(kernel.arch().as_deref(), Some("x86_64"));
    let v = verdict(&kernel, &good("m"));
    assert_passes(&v);
    assert_eq!(
        v.reasons.iter().map(|r| (r.rule, r.outcome)).collect::<Vec<_>>(),
        [(Rule::Signature, Outcome::Taint)]
    );
}

#[test]
fn vermagic_flags_fail_release_alone_passes_with_modversions() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut rt = good("rt");
    rt.set("vermagic", "6.8.0-99-amd64 SMP preempt_rt mod_unload modversions ");
    let v = verdict(&kernel, &rt);
    assert_refused_only_by(&v, Rule::Vermagic);
    let r = v.first_refusal().unwrap();
    assert_eq!(r.expected.as_deref(), Some(SYNTH_VERMAGIC));
    assert!(r.message.contains("preempt_rt"), "{}", r.message);

    let mut other_release = good("rel");
    other_release.set("vermagic", "6.1.0-12-amd64 SMP preempt mod_unload modversions ");
    assert_passes(&verdict(&kernel, &other_release));

    // Without modversions the whole string must match.
    let mut no_versions =
        SampleModule::new("nv", "6.1.0-12-amd64 SMP preempt mod_unload modversions ");
    no_versions.undefined.push("_printk".into());
    assert!(refusals(&verdict(&kernel, &no_versions)).contains(&Rule::Vermagic));
}

#[test]
fn module_layout_crc() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut bad = SampleModule::new("ml", SYNTH_VERMAGIC);
    bad.import("module_layout", SYNTH_LAYOUT ^ 0xff).import("_printk", PRINTK);
    let v = verdict(&kernel, &bad);
    assert_refused_only_by(&v, Rule::ModuleLayout);
    assert_eq!(v.first_refusal().unwrap().symbol.as_deref(), Some("module_layout"));
    assert_passes(&verdict(&kernel, &good("ml")));
}

#[test]
fn struct_module_size() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut bad = good("sz");
    bad.this_module_size = Some(1024);
    let v = verdict(&kernel, &bad);
    assert_refused_only_by(&v, Rule::StructModuleSize);
    assert_eq!(v.first_refusal().unwrap().found.as_deref(), Some("1024"));
    assert_passes(&verdict(&kernel, &good("sz")));

    // Before 6.4 the loader does not compare the size: a warning, not a refusal.
    let old = "6.1.0-97-amd64";
    ck::add_kernel(
        k.root(),
        old,
        &ck::synth_reference().to_elf().unwrap(),
        &exports(),
        SYNTH_CONFIG,
    );
    let old = Kernel::read(&Root::new(k.root()), old, &KernelOptions::default()).unwrap();
    assert!(!old.checks_struct_module_size);
    let v = verdict(&old, &bad);
    assert_passes(&v);
    assert!(v
        .reasons
        .iter()
        .any(|r| r.rule == Rule::StructModuleSize && r.outcome == Outcome::Taint));
}

#[test]
fn gpl_only_exports_need_a_gpl_compatible_license() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut proprietary = good("prop");
    proprietary.set("license", "Proprietary").import("gpl_fn", GPL_FN);
    let v = verdict(&kernel, &proprietary);
    assert_refused_only_by(&v, Rule::GplOnly);
    assert_eq!(v.first_refusal().unwrap().symbol.as_deref(), Some("gpl_fn"));

    let mut dual = good("dual");
    dual.set("license", "Dual MIT/GPL").import("gpl_fn", GPL_FN);
    assert_passes(&verdict(&kernel, &dual));
    let mut prop_plain = good("prop2");
    prop_plain.set("license", "Proprietary");
    assert_passes(&verdict(&kernel, &prop_plain));
}

#[test]
fn namespaced_symbols_need_import_ns() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut missing = good("ns");
    missing.import("ns_fn", NS_FN);
    let v = verdict(&kernel, &missing);
    assert_refused_only_by(&v, Rule::Namespace);
    assert_eq!(v.first_refusal().unwrap().expected.as_deref(), Some("import_ns=NS_A"));
    let mut imported = missing.clone();
    imported.modinfo.push("import_ns", "NS_A");
    assert_passes(&verdict(&kernel, &imported));

    let lax = synth(&format!("{SYNTH_CONFIG}CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS=y\n"));
    let lax = read_kernel(&lax, SecureBootMode::Off, vec![]);
    let v = verdict(&lax, &missing);
    assert_passes(&v);
    assert!(v.reasons.iter().any(|r| r.rule == Rule::Namespace && r.outcome == Outcome::Taint));
}

#[test]
fn wrong_arch_and_class() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut arm = good("arm");
    arm.arch = SampleArch::Aarch64;
    let v = verdict(&kernel, &arm);
    assert_refused_only_by(&v, Rule::Machine);
    assert_eq!(v.first_refusal().unwrap().found.as_deref(), Some("aarch64"));
    let mut i386 = good("i386");
    i386.arch = SampleArch::I386;
    assert_eq!(refusals(&verdict(&kernel, &i386)), [Rule::ElfClass, Rule::Machine]);
    assert_passes(&verdict(&kernel, &good("x86")));
}

#[test]
fn unknown_symbols_and_symbol_crcs() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut unknown = good("u");
    unknown.import("nobody_exports_this", 1);
    assert_refused_only_by(&verdict(&kernel, &unknown), Rule::UnknownSymbol);
    let mut crc = SampleModule::new("c", SYNTH_VERMAGIC);
    crc.import("module_layout", SYNTH_LAYOUT).import("_printk", PRINTK ^ 1);
    let v = verdict(&kernel, &crc);
    assert_refused_only_by(&v, Rule::SymbolCrc);
    let r = v.first_refusal().unwrap();
    assert_eq!(
        (r.symbol.as_deref(), r.expected.clone(), r.found.clone()),
        (Some("_printk"), Some(format!("0x{PRINTK:08x}")), Some(format!("0x{:08x}", PRINTK ^ 1)))
    );
}

#[test]
fn unsigned_modules_are_refused_only_under_enforcement() {
    let k = synth(SYNTH_CONFIG);
    let off = read_kernel(&k, SecureBootMode::Off, vec![]);
    let on = read_kernel(&k, SecureBootMode::On, vec![]);
    assert_passes(&verdict(&off, &good("s")));
    assert_refused_only_by(&verdict(&on, &good("s")), Rule::Signature);

    let forced = synth(
        &SYNTH_CONFIG.replace("# CONFIG_MODULE_SIG_FORCE is not set", "CONFIG_MODULE_SIG_FORCE=y"),
    );
    let forced = read_kernel(&forced, SecureBootMode::Off, vec![]);
    assert!(forced.enforcement.enforced);
    assert_refused_only_by(&verdict(&forced, &good("s")), Rule::Signature);
}

#[test]
fn secure_boot_auto_reads_cmdline_and_lockdown_under_the_root() {
    let k = synth(SYNTH_CONFIG);
    assert!(!read_kernel(&k, SecureBootMode::Auto, vec![]).enforcement.enforced);
    std::fs::create_dir_all(k.root().join("proc")).unwrap();
    std::fs::write(k.root().join("proc/cmdline"), "ro quiet module.sig_enforce=1\n").unwrap();
    assert!(read_kernel(&k, SecureBootMode::Auto, vec![]).enforcement.enforced);
    std::fs::write(k.root().join("proc/cmdline"), "ro quiet\n").unwrap();
    std::fs::create_dir_all(k.root().join("sys/kernel/security")).unwrap();
    std::fs::write(
        k.root().join("sys/kernel/security/lockdown"),
        "none [integrity] confidentiality\n",
    )
    .unwrap();
    let kernel = read_kernel(&k, SecureBootMode::Auto, vec![]);
    assert!(kernel.enforcement.enforced, "{:?}", kernel.enforcement);
    assert!(!read_kernel(&k, SecureBootMode::Off, vec![]).enforcement.enforced);
}

#[test]
fn a_set_passes_or_fails_together() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut lib = good("setlib");
    lib.export("setlib_fn", 0x5555, false, None);
    let mut user = good("setuser");
    user.import("setlib_fn", 0x5555).set("depends", "setlib");
    let read = |m: &SampleModule| {
        Module::from_bytes(&m.to_elf().unwrap(), ReadOptions::default()).unwrap()
    };

    let alone = compat::check(&kernel, &read(&user));
    assert!(refusals(&alone).contains(&Rule::UnknownSymbol));
    assert!(refusals(&alone).contains(&Rule::Depends));

    let both = compat::check_set(&kernel, &[read(&lib), read(&user)]);
    assert!(both.iter().all(|v| v.compatible), "{both:?}");

    let mut broken_lib = lib.clone();
    broken_lib.this_module_size = Some(1);
    let both = compat::check_set(&kernel, &[read(&broken_lib), read(&user)]);
    assert_refused_only_by(&both[0], Rule::StructModuleSize);
    assert_refused_only_by(&both[1], Rule::SetMember);
    assert_eq!(both[1].first_refusal().unwrap().symbol.as_deref(), Some("setlib"));

    // A dependency by name alone (no symbol drawn from it) fails the group as well.
    let mut by_name = good("byname");
    by_name.set("depends", "setlib");
    let both = compat::check_set(&kernel, &[read(&broken_lib), read(&by_name)]);
    assert_refused_only_by(&both[1], Rule::SetMember);
    let both = compat::check_set(&kernel, &[read(&lib), read(&by_name)]);
    assert!(both.iter().all(|v| v.compatible), "{both:?}");
}

#[test]
fn every_failing_rule_is_listed_in_the_loaders_order() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::On, vec![]);
    let mut m = SampleModule::new("all", "6.8.0-99-amd64 SMP preempt_rt mod_unload modversions ");
    m.import("module_layout", 1).import("_printk", 2).import("nobody", 3);
    m.this_module_size = Some(8);
    let v = verdict(&kernel, &m);
    assert_eq!(
        refusals(&v),
        [
            Rule::Signature,
            Rule::StructModuleSize,
            Rule::ModuleLayout,
            Rule::Vermagic,
            Rule::UnknownSymbol,
            Rule::SymbolCrc
        ]
    );
}

#[test]
fn symvers_gz_in_boot_and_four_field_lines_are_read() {
    let k = synth(SYNTH_CONFIG);
    // Replace the headers' symvers with a four-field, gzip-compressed one in /boot.
    std::fs::remove_file(k.root().join(format!("lib/modules/{}/build/Module.symvers", k.kver)))
        .unwrap();
    let text: String = exports()
        .iter()
        .filter(|e| e.namespace.is_none())
        .map(|e| {
            let kind = if e.gpl { "EXPORT_SYMBOL_GPL" } else { "EXPORT_SYMBOL" };
            format!("0x{:08x}\t{}\tvmlinux\t{kind}\n", e.crc, e.symbol)
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let path = k.root().join(format!("boot/symvers-{}.gz", k.kver));
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    assert_eq!(kernel.symvers.as_deref(), Some(path.as_path()));
    assert_eq!(kernel.exports["_printk"].crc, Some(PRINTK));
    assert!(kernel.exports["gpl_fn"].gpl);
    assert_passes(&verdict(&kernel, &good("gz")));
}

// ---- signatures with real keys ---------------------------------------------------------

#[test]
fn signatures_by_the_build_key_or_a_trusted_cert_pass_others_fail_under_enforcement() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(build) = make_key(tmp.path(), "build") else { return };
    let Some(vendor) = make_key(tmp.path(), "vendor") else { return };
    let Some(reference) =
        sign(&ck::synth_reference().to_elf().unwrap(), &build, tmp.path(), "r.ko")
    else {
        return;
    };
    let k = ck::SyntheticKernel::new(&reference, &exports(), SYNTH_CONFIG);
    let module = good("signed").to_elf().unwrap();
    let by_build = sign(&module, &build, tmp.path(), "b.ko").unwrap();
    let by_vendor = sign(&module, &vendor, tmp.path(), "v.ko").unwrap();
    let check = |kernel: &Kernel, bytes: &[u8]| {
        compat::check(kernel, &Module::from_bytes(bytes, ReadOptions::default()).unwrap())
    };

    // The cert parser agrees with openssl on the serial the kernel matches keys by.
    let serial = common::run(
        Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(&vendor.cert_pem),
    );
    let serial =
        String::from_utf8_lossy(&serial.stdout).trim().trim_start_matches("serial=").to_string();
    let id =
        bootkmod::formats::der::cert_identity(&std::fs::read(&vendor.cert_pem).unwrap()).unwrap();
    let ours: String = id.serial.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(ours.trim_start_matches('0'), serial.trim_start_matches('0'));
    assert_eq!(id.issuer.as_deref(), Some("vendor signing key"));

    let enforced = read_kernel(&k, SecureBootMode::On, vec![]);
    assert_eq!(enforced.trusted_keys.len(), 1);
    let v = check(&enforced, &by_build);
    assert!(v.compatible && v.reasons.is_empty(), "{:?}", v.reasons);
    let v = check(&enforced, &by_vendor);
    assert_refused_only_by(&v, Rule::Signature);
    assert!(v.first_refusal().unwrap().message.contains("vendor signing key"));

    let relaxed = read_kernel(&k, SecureBootMode::Off, vec![]);
    let v = check(&relaxed, &by_vendor);
    assert!(v.compatible && v.reasons[0].outcome == Outcome::Taint);

    let with_mok = read_kernel(&k, SecureBootMode::On, vec![vendor.cert_pem.clone()]);
    let v = check(&with_mok, &by_vendor);
    assert!(v.compatible && v.reasons.is_empty(), "{:?}", v.reasons);
}

#[test]
fn depends_on_a_builtin_module_is_satisfied() {
    let k = synth(SYNTH_CONFIG);
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    let mut m = good("needs_builtin");
    m.set("depends", "scsi_common");
    assert_refused_only_by(&verdict(&kernel, &m), Rule::Depends);
    let builtin = k.root().join(format!("lib/modules/{}/modules.builtin", k.kver));
    std::fs::write(builtin, "kernel/drivers/scsi/scsi_common.ko\n").unwrap();
    let kernel = read_kernel(&k, SecureBootMode::Off, vec![]);
    assert_passes(&verdict(&kernel, &m));
}

/// `--all-kernels` over a root with two kernels: one line each, exit 3 when one refuses;
/// `--json` carries one report per kernel with typed reasons.
#[test]
fn all_kernels_one_line_per_kernel_and_json() {
    let k = synth(SYNTH_CONFIG);
    let other = "6.8.0-98-amd64";
    let mut reference = SampleModule::new("ref", &SYNTH_VERMAGIC.replace("-99-", "-98-"));
    reference.import("module_layout", 0x0a0b0c0d);
    let mut exports = exports();
    exports[0].crc = 0x0a0b0c0d;
    ck::add_kernel(k.root(), other, &reference.to_elf().unwrap(), &exports, SYNTH_CONFIG);
    let module = k.root().join("m.ko");
    std::fs::write(&module, good("m").to_elf().unwrap()).unwrap();

    let run = |extra: &[&str]| {
        common::run(
            common::bootkmod()
                .arg("check")
                .arg(&module)
                .args(["--all-kernels", "--secure-boot", "off", "--root"])
                .arg(k.root())
                .args(extra),
        )
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(other) && lines[0].contains("INCOMPATIBLE"), "{text}");
    assert!(lines[0].contains("module_layout"), "{text}");
    assert!(lines[1].starts_with(SYNTH_KVER_STR) && lines[1].contains(" compatible"), "{text}");

    let out = run(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["kernel"]["release"], other);
    assert_eq!(json[0]["compatible"], false);
    let reason = &json[0]["verdicts"][0]["reasons"][0];
    assert_eq!(reason["rule"], "module-layout");
    assert_eq!(reason["expected"], "0x0a0b0c0d");
    assert_eq!(reason["found"], format!("0x{SYNTH_LAYOUT:08x}"));
    assert_eq!(json[1]["compatible"], true);
}

const SYNTH_KVER_STR: &str = ck::SYNTH_KVER;

/// Without `__versions` or vermagic the loader tries a forced load: a taint where the
/// kernel allows it (`CONFIG_MODULE_FORCE_LOAD=y`, Debian), a refusal otherwise (RHEL).
#[test]
fn missing_versions_load_by_force_only_where_the_kernel_allows_it() {
    let mut bare = SampleModule::new("bare", SYNTH_VERMAGIC);
    bare.undefined.push("_printk".into());
    let strict = synth(SYNTH_CONFIG);
    let strict = read_kernel(&strict, SecureBootMode::Off, vec![]);
    assert!(!strict.force_load);
    let v = verdict(&strict, &bare);
    // module_layout goes through the same forced-load path, and comes first.
    assert_eq!(refusals(&v), [Rule::ModuleLayout, Rule::SymbolCrc]);
    assert_eq!(v.first_refusal().unwrap().found.as_deref(), Some("no modversions"));

    let lax = synth(&format!("{SYNTH_CONFIG}CONFIG_MODULE_FORCE_LOAD=y\n"));
    let lax = read_kernel(&lax, SecureBootMode::Off, vec![]);
    let v = verdict(&lax, &bare);
    assert_passes(&v);
    assert!(v.reasons.iter().any(|r| r.rule == Rule::SymbolCrc && r.outcome == Outcome::Taint));
}
