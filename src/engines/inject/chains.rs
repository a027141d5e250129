//! The index-driven check of a written image.

use super::read::ImageContents;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The index-driven check of a written image: each module's `modprobe` chain, resolved
/// through the image's own `modules.dep.bin`, and whether every file of it is there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chain {
    pub module: String,
    /// Tree-relative paths, in load order.
    pub load: Vec<String>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// Resolve `names` through the image's indexes under `tree`.
pub fn chains(image: &ImageContents, tree: &str, names: &[String]) -> Result<Vec<Chain>> {
    use crate::engines::depmod::probe::{Step, TreeIndexes};
    let mut indexes = TreeIndexes::from_files(PathBuf::from(tree), |name| {
        Ok(image.file(&format!("{tree}/{name}")).map(<[u8]>::to_vec).unwrap_or_default())
    })
    .context("reading the image's indexes")?;
    // What the image's modprobe reads besides the indexes: its modprobe.d too.
    indexes.config = image.modprobe_config(image.file(&format!("{tree}/modules.softdep")));
    let mut out = Vec::new();
    for name in names {
        let steps = indexes.show_depends(name)?;
        let mut load = Vec::new();
        let mut missing = Vec::new();
        let mut found_self = false;
        for step in steps {
            if let Step::Insmod { name: n, path, .. } = step {
                let p = path.to_string_lossy().into_owned();
                if !image.has_file(&p) {
                    missing.push(p.clone());
                }
                found_self |= n == *name;
                load.push(p.strip_prefix(&format!("{tree}/")).unwrap_or(&p).to_string());
            }
        }
        out.push(Chain {
            module: name.clone(),
            complete: found_self && missing.is_empty(),
            load,
            missing,
        });
    }
    Ok(out)
}
