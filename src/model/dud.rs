//! [`Medium`]: a Driver Update Disk as found on disk — a directory, an ISO9660 image
//! or a bare `.rpm` — reduced to what Anaconda looks at: its repos (directories with
//! `rhdd3` and `rpms/`), the architecture directories each has, and the bytes of the
//! `*.rpm` files directly in `rpms/<arch>/` for the architecture asked about.
//!
//! ISO images are read in process with `hadris-iso` (Rock Ridge names when present);
//! nothing is mounted or extracted. Reading never writes.

use crate::formats::dud::REPO_MARKER;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What kind of medium a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediumKind {
    Directory,
    Iso,
    Rpm,
}

/// An RPM file on the medium.
#[derive(Debug, Clone)]
pub struct RpmOnMedium {
    /// Path inside the medium (`rpms/x86_64/kmod-foo-1.0-1.x86_64.rpm`).
    pub path: String,
    pub bytes: Vec<u8>,
}

/// A driver-disk repo.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Directory inside the medium (`""` for the top).
    pub dir: String,
    /// Every directory under `rpms/`.
    pub arches: Vec<String>,
    /// The packages in `rpms/<arch>/` for the architecture asked about (or, for a bare
    /// `.rpm` medium, that package).
    pub packages: Vec<RpmOnMedium>,
}

#[derive(Debug, Clone)]
pub struct Medium {
    pub source: PathBuf,
    pub kind: MediumKind,
    pub repos: Vec<Repo>,
    /// `.iso` files at the top of the medium (Anaconda opens those when no repo exists).
    pub nested_isos: Vec<String>,
}

/// Largest ISO image read into memory (driver disks are a few MiB).
const MAX_ISO: u64 = 1 << 30;
/// Deepest directory walked on a directory medium.
const MAX_DEPTH: usize = 32;
/// Most entries listed on one medium. A driver disk holds a handful of files; a directory
/// medium whose links point back at a parent would, within the depth limit alone, list
/// more entries than there are atoms. (An ISO's loops are refused at the first repeated
/// directory, in `read_iso`: such an image hung `dud check` for minutes, the fuzzer's
/// find; this cap stays as the backstop for both kinds.)
const MAX_ENTRIES: usize = 10_000;

/// A file tree: path → is-directory; file contents read on demand.
type Listing = BTreeMap<String, bool>;

impl Medium {
    /// Read the medium at `path`, loading the packages for `arch`.
    pub fn read(path: &Path, arch: &str) -> Result<Medium> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        if meta.is_dir() {
            let mut listing = Listing::new();
            walk_dir(path, "", 0, &mut listing)
                .with_context(|| format!("{}: cannot list", path.display()))?;
            let read = |p: &str| {
                std::fs::read(path.join(p))
                    .with_context(|| format!("{}/{p}: cannot read", path.display()))
            };
            return Self::from_listing(path, MediumKind::Directory, &listing, arch, read);
        }
        let bytes = read_head(path, 0x8006)?;
        if bytes.starts_with(&[0xed, 0xab, 0xee, 0xdb]) {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return Ok(Medium {
                source: path.to_path_buf(),
                kind: MediumKind::Rpm,
                repos: vec![Repo {
                    dir: String::new(),
                    arches: Vec::new(),
                    packages: vec![RpmOnMedium { path: name, bytes }],
                }],
                nested_isos: Vec::new(),
            });
        }
        if bytes.get(0x8001..0x8006) == Some(b"CD001") {
            if meta.len() > MAX_ISO {
                bail!(
                    "{}: {} bytes is too large for a driver disk image",
                    path.display(),
                    meta.len()
                );
            }
            let image =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            return Self::from_iso_bytes(path, image, arch);
        }
        bail!(
            "{}: not a driver disk (neither a directory, an ISO9660 image nor an RPM)",
            path.display()
        )
    }

    fn from_listing(
        source: &Path,
        kind: MediumKind,
        listing: &Listing,
        arch: &str,
        read: impl Fn(&str) -> Result<Vec<u8>>,
    ) -> Result<Medium> {
        let join = |dir: &str, name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        let mut repos = Vec::new();
        let top = String::new();
        let dirs: Vec<&String> = std::iter::once(&top)
            .chain(listing.iter().filter(|(_, is_dir)| **is_dir).map(|(p, _)| p))
            .collect();
        for dir in dirs {
            let marker = join(dir, REPO_MARKER);
            let rpms = join(dir, "rpms");
            if listing.get(&marker) != Some(&false) || listing.get(&rpms) != Some(&true) {
                continue;
            }
            let prefix = format!("{rpms}/");
            let arches: Vec<String> = listing
                .iter()
                .filter(|(p, is_dir)| {
                    **is_dir && p.starts_with(&prefix) && !p[prefix.len()..].contains('/')
                })
                .map(|(p, _)| p[prefix.len()..].to_string())
                .collect();
            let arch_prefix = format!("{prefix}{arch}/");
            let mut packages = Vec::new();
            for (p, is_dir) in listing {
                let Some(name) = p.strip_prefix(&arch_prefix) else { continue };
                if !*is_dir && !name.contains('/') && name.ends_with(".rpm") {
                    packages.push(RpmOnMedium { path: p.clone(), bytes: read(p)? });
                }
            }
            repos.push(Repo { dir: dir.clone(), arches, packages });
        }
        let nested_isos = listing
            .iter()
            .filter(|(p, is_dir)| {
                !**is_dir && !p.contains('/') && p.to_ascii_lowercase().ends_with(".iso")
            })
            .map(|(p, _)| p.clone())
            .collect();
        Ok(Medium { source: source.to_path_buf(), kind, repos, nested_isos })
    }
}

fn read_head(path: &Path, len: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut buf = Vec::with_capacity(len);
    f.by_ref()
        .take(len as u64)
        .read_to_end(&mut buf)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(buf)
}

/// List a directory medium. Symlinked directories are followed, as Anaconda's walk
/// does, up to [`MAX_DEPTH`] levels and [`MAX_ENTRIES`] entries (a link loop ends there
/// instead of spinning).
fn walk_dir(top: &Path, rel: &str, depth: usize, out: &mut Listing) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let dir = if rel.is_empty() { top.to_path_buf() } else { top.join(rel) };
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if out.len() >= MAX_ENTRIES {
            // Two links back to `.` would otherwise list 2^MAX_DEPTH entries.
            return Err(std::io::Error::other(format!(
                "more than {MAX_ENTRIES} entries (links that loop?); not a driver disk"
            )));
        }
        let is_dir = std::fs::metadata(entry.path()).map(|m| m.is_dir()).unwrap_or(false);
        out.insert(path.clone(), is_dir);
        if is_dir {
            walk_dir(top, &path, depth + 1, out)?;
        }
    }
    Ok(())
}

impl Medium {
    /// An ISO9660 image already in memory (`source` names it in errors): mounted with
    /// hadris-iso, walked, and its repos' packages loaded for `arch`.
    pub fn from_iso_bytes(source: &Path, image: Vec<u8>, arch: &str) -> Result<Medium> {
        read_iso(source, image, arch)
    }
}

fn read_iso(source: &Path, image: Vec<u8>, arch: &str) -> Result<Medium> {
    use hadris_fs::sync::Volume;
    use hadris_fs::MountOptions;
    use hadris_iso::sync::IsoFs;
    let err = |what: &str, e: &dyn std::fmt::Debug| {
        anyhow::anyhow!("{}: {what}: {e:?}", source.display())
    };
    let len = image.len() - image.len() % 2048;
    let mut image = image;
    image.truncate(len);
    let block = hadris_storage::BlockSize::new(2048).context("block size")?;
    let dev = hadris_storage::MemDevice::new(image, block);
    let fs = IsoFs::mount(dev, MountOptions::new())
        .map_err(|e| err("not a readable ISO9660 image", &e))?;
    let vol = Volume::new(fs);
    let mut listing = Listing::new();
    // A directory's node is its extent: a second record pointing at a directory already
    // listed is a loop (or an alias of it), and a driver disk has neither.
    let mut directories = std::collections::HashSet::new();
    let mut pending = vec![(String::new(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            continue;
        }
        let path = format!("/{dir}");
        for entry in vol.read_dir(&path).map_err(|e| err("cannot list a directory", &e))? {
            let entry = entry.map_err(|e| err("cannot list a directory", &e))?;
            let name = String::from_utf8_lossy(entry.name().as_bytes()).into_owned();
            if name == "." || name == ".." || name.is_empty() {
                continue;
            }
            let rel = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            if listing.len() >= MAX_ENTRIES {
                bail!(
                    "{}: more than {MAX_ENTRIES} entries (directories that loop?); not a driver disk",
                    source.display()
                );
            }
            let is_dir = entry.file_type().is_dir();
            if is_dir && !directories.insert(entry.node()) {
                bail!(
                    "{}: directory /{rel} is a directory listed before (directories that loop); not a driver disk",
                    source.display()
                );
            }
            listing.insert(rel.clone(), is_dir);
            if is_dir {
                pending.push((rel, depth + 1));
            }
        }
    }
    let read =
        |p: &str| vol.read(format!("/{p}")).map_err(|e| err(&format!("cannot read {p}"), &e));
    Medium::from_listing(source, MediumKind::Iso, &listing, arch, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_medium_whose_links_loop_is_refused_not_walked_forever() {
        // Two links back to the top: within the depth limit alone, 2^32 entries.
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(".", t.path().join("a")).unwrap();
        std::os::unix::fs::symlink(".", t.path().join("b")).unwrap();
        let err = format!("{:#}", Medium::read(t.path(), "x86_64").unwrap_err());
        assert!(err.contains("entries (links that loop?)"), "{err}");
    }

    #[test]
    fn an_iso_whose_directory_records_loop_is_refused_at_the_first_repeat() {
        // The fuzzer's find: directory records pointing back at directories listed before.
        let image = include_bytes!(
            "../../fuzz/corpus/dud_iso/timeout-e06db386a36b2cf5539d9d420340d64144d2a154"
        );
        let err = format!(
            "{:#}",
            Medium::from_iso_bytes(Path::new("loop.iso"), image.to_vec(), "x86_64").unwrap_err()
        );
        assert!(err.contains("a directory listed before (directories that loop)"), "{err}");
    }
}
