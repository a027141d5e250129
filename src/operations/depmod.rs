//! `depmod` as an operation: compute the graph of a tree and replace its index files
//! all at once ([`AtomicSet`]), or only report what would be written (dry run).

use crate::engines::depmod::{self, Graph};
use crate::model::root::Root;
use crate::operations::atomic::AtomicSet;
use anyhow::Result;
use std::path::PathBuf;

/// One generated index file.
#[derive(Debug, serde::Serialize)]
pub struct IndexFile {
    pub name: String,
    pub bytes: usize,
}

/// What a depmod run did.
#[derive(Debug, serde::Serialize)]
pub struct DepmodReport {
    pub release: String,
    /// Host path of the tree.
    pub dir: PathBuf,
    pub modules: usize,
    pub symbols: usize,
    /// Every index file of the tree, with its size.
    pub files: Vec<IndexFile>,
    /// Files replaced on disk (unchanged ones are left alone); empty on a dry run.
    pub written: Vec<String>,
    pub dry_run: bool,
    pub warnings: Vec<String>,
}

/// Compute and (unless `dry_run`) write the indexes of `release` under `root`.
pub fn run(root: &Root, release: &str, dry_run: bool) -> Result<DepmodReport> {
    let graph = depmod::compute(root, release)?;
    write(root, release, &graph, dry_run)
}

/// Write the indexes of an already computed graph.
pub fn write(root: &Root, release: &str, graph: &Graph, dry_run: bool) -> Result<DepmodReport> {
    let dir = root.host(depmod::tree_dir(release))?;
    let files = graph.files()?;
    let sizes =
        files.iter().map(|(n, b)| IndexFile { name: n.to_string(), bytes: b.len() }).collect();
    let mut written = Vec::new();
    if !dry_run {
        let mut set = AtomicSet::new(&dir);
        for (name, bytes) in files {
            set = set.file(name, bytes);
        }
        written = set.commit()?;
    }
    Ok(DepmodReport {
        release: release.to_string(),
        dir,
        modules: graph.modules.len(),
        symbols: graph.symbols.len(),
        files: sizes,
        written,
        dry_run,
        warnings: graph.warnings.clone(),
    })
}
