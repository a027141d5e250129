//! Which build of a driver serves a kernel (issue 21): pure computation, no disk.
//!
//! A driver may be installed in several builds (one per kABI stream or kernel build,
//! and updates over time), each in `extra/` of the kernel it was built for. Per kernel,
//! [`choose`] takes the loader's verdict on every build and picks:
//!
//! 1. the kernel's own build (built for this very release) when it loads: its file is
//!    in this kernel's `extra/`, which depmod's search order (`updates extra built-in
//!    weak-updates`, as RHEL and SUSE configure it) puts before any `weak-updates/`
//!    link, so a link to another build would be shadowed — weak-modules leaves such a
//!    kernel alone too;
//! 2. else the newest build that loads (versions in rpm's order, `formats::rpmvercmp`;
//!    a build without a version is older than any with one; equal versions: the one
//!    installed last), offered through `weak-updates/`;
//! 3. else none: the caller then looks for a local fallback (akmods/DKMS).
//!
//! Every build newer than the one chosen is listed with why it was not taken.

use crate::formats::rpmvercmp::rpmvercmp;
use crate::model::ledger::{Build, PassedOver};
use std::cmp::Ordering;

/// One build and the loader's refusals of it on the kernel at hand.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub build: &'a Build,
    /// The refusals, the kernel's first one first; empty when the build loads.
    pub refusals: &'a [String],
}

/// The per-kernel decision for one driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Index (into the candidates) of the build serving the kernel.
    pub serving: Option<usize>,
    /// The build the kernel's entry reports on: the serving one, else the newest.
    pub reported: Option<usize>,
    /// Builds newer than the serving one (all others when none serves), and why not.
    pub passed_over: Vec<PassedOver>,
}

/// Is build `a` newer than `b`? Versions in rpm's order; equal: the later installed
/// (higher index) is newer.
fn newer(a: (usize, &Build), b: (usize, &Build)) -> Ordering {
    let by_version = match (&a.1.version, &b.1.version) {
        (Some(x), Some(y)) => rpmvercmp(x, y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    };
    by_version.then(a.0.cmp(&b.0))
}

/// Indices of `builds`, newest first.
pub fn newest_first(builds: &[&Build]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..builds.len()).collect();
    order.sort_by(|&x, &y| newer((y, builds[y]), (x, builds[x])));
    order
}

/// Choose the build serving kernel `release`. See the module overview.
pub fn choose(release: &str, candidates: &[Candidate]) -> Choice {
    let builds: Vec<&Build> = candidates.iter().map(|c| c.build).collect();
    let order = newest_first(&builds);
    let loads = |i: usize| candidates[i].refusals.is_empty();
    let own = order.iter().copied().find(|&i| loads(i) && builds[i].built_for == release);
    let serving = own.or_else(|| order.iter().copied().find(|&i| loads(i)));
    let reported = serving.or_else(|| order.first().copied());
    let passed: Vec<usize> = match serving {
        Some(s) => order.iter().copied().take_while(|&i| i != s).collect(),
        None => order.iter().copied().filter(|&i| Some(i) != reported).collect(),
    };
    let passed_over = passed
        .into_iter()
        .map(|i| {
            let why = match (candidates[i].refusals.first(), own) {
                (Some(refusal), _) => refusal.clone(),
                (None, Some(o)) => format!(
                    "kernel {release} has its own build {} in extra/, which depmod's search \
                     order puts before weak-updates/",
                    builds[o].version.as_deref().unwrap_or("without version")
                ),
                (None, None) => "not chosen".to_string(),
            };
            PassedOver {
                sha256: builds[i].sha256.clone(),
                version: builds[i].version.clone(),
                built_for: builds[i].built_for.clone(),
                why,
            }
        })
        .collect();
    Choice { serving, reported, passed_over }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn build(sha: &str, version: Option<&str>, built_for: &str) -> Build {
        Build {
            sha256: sha.into(),
            version: version.map(str::to_string),
            origin: format!("/tmp/{sha}.ko"),
            built_for: built_for.into(),
            path: PathBuf::from(format!("/lib/modules/{built_for}/extra/d/d.ko")),
        }
    }

    const NONE: &[String] = &[];

    #[test]
    fn newest_usable_build_wins_in_rpm_order() {
        let old = build("a", Some("07.719.03.00"), "k1");
        let new = build("b", Some("07.725.01.00"), "k2");
        // rpm's order is not string order: 10 > 9.
        let newest = build("c", Some("07.1000.0"), "k3");
        let refused = vec!["disagrees about version of symbol module_layout".to_string()];
        let c = [
            Candidate { build: &old, refusals: NONE },
            Candidate { build: &newest, refusals: &refused },
            Candidate { build: &new, refusals: NONE },
        ];
        let choice = choose("other", &c);
        assert_eq!(choice.serving, Some(2));
        assert_eq!(choice.reported, Some(2));
        assert_eq!(choice.passed_over.len(), 1);
        assert_eq!(choice.passed_over[0].sha256, "c");
        assert!(choice.passed_over[0].why.contains("module_layout"));
        // Without the newer build, the older one serves.
        let choice = choose("other", &c[..2]);
        assert_eq!(choice.serving, Some(0));
    }

    #[test]
    fn the_kernels_own_build_outranks_a_newer_link() {
        let own = build("a", Some("1.0"), "k1");
        let newer = build("b", Some("2.0"), "k2");
        let c = [
            Candidate { build: &own, refusals: NONE },
            Candidate { build: &newer, refusals: NONE },
        ];
        let choice = choose("k1", &c);
        assert_eq!(choice.serving, Some(0));
        assert!(choice.passed_over[0].why.contains("own build 1.0 in extra/"));
        // On the other kernel the newer build is its own and the newest.
        assert_eq!(choose("k2", &c).serving, Some(1));
        assert!(choose("k2", &c).passed_over.is_empty());
    }

    #[test]
    fn nothing_loads_reports_the_newest_and_lists_the_rest() {
        let a = build("a", None, "k1");
        let b = build("b", Some("0.1"), "k2");
        let r = vec!["module_layout".to_string()];
        let c = [Candidate { build: &a, refusals: &r }, Candidate { build: &b, refusals: &r }];
        let choice = choose("k3", &c);
        assert_eq!(choice.serving, None);
        assert_eq!(choice.reported, Some(1), "a version beats none");
        assert_eq!(choice.passed_over.len(), 1);
        assert_eq!(choice.passed_over[0].sha256, "a");
        assert_eq!(
            choose("k3", &[]),
            Choice { serving: None, reported: None, passed_over: vec![] }
        );
    }

    #[test]
    fn equal_versions_the_later_install_wins() {
        let a = build("a", Some("1.0"), "k1");
        let b = build("b", Some("1.0"), "k2");
        let c = [Candidate { build: &a, refusals: NONE }, Candidate { build: &b, refusals: NONE }];
        assert_eq!(choose("k3", &c).serving, Some(1));
    }
}
