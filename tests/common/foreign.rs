//! Kernel builds of other architectures (arm64, s390x, i386), unpacked by
//! `.ci/setup.d/foreign-kernels` into the test cache and recorded in `foreign/picked`
//! as `ARCH=KVER` lines.

use super::machine::input;
use super::missing;
use std::path::PathBuf;

/// One unpacked foreign build: `root` holds `boot/`, `lib/modules/KVER` and
/// `usr/src/linux-headers-KVER/Module.symvers`.
#[derive(Debug, Clone)]
pub struct ForeignKernel {
    /// Debian's architecture name (`arm64`, `s390x`, `i386`).
    pub arch: String,
    pub release: String,
    pub root: PathBuf,
}

impl ForeignKernel {
    pub fn symvers(&self) -> PathBuf {
        self.root.join(format!("usr/src/linux-headers-{}/Module.symvers", self.release))
    }

    pub fn modules(&self) -> Vec<PathBuf> {
        super::kernel_modules_in(&self.root, &self.release)
    }
}

/// The architectures the oracles cover: 64-bit little-endian, 64-bit big-endian, 32-bit.
pub const ARCHES: &[&str] = &["arm64", "s390x", "i386"];

/// Every build of [`ARCHES`]; skips (fails under CI) when the script has not run.
pub fn foreign_kernels() -> Option<Vec<ForeignKernel>> {
    let Some(picked) = input("foreign/picked") else {
        missing("foreign/picked in the test cache (run .ci/setup.d/foreign-kernels)")?;
        unreachable!()
    };
    let text = std::fs::read_to_string(&picked).unwrap_or_default();
    let mut out = Vec::new();
    for arch in ARCHES {
        let release = text.lines().find_map(|l| l.strip_prefix(arch)?.strip_prefix('='));
        let root = release.map(|r| picked.with_file_name(r));
        match (release, root) {
            (Some(release), Some(root)) if root.join(".complete").is_file() => {
                out.push(ForeignKernel { arch: arch.to_string(), release: release.into(), root })
            }
            _ => {
                missing(&format!(
                    "the {arch} build in {} (rerun .ci/setup.d/foreign-kernels)",
                    picked.display()
                ))?;
            }
        }
    }
    Some(out)
}
