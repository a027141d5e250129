//! The ledger: what bootkmod installed under a root, and what it found for each kernel.
//!
//! Lives in `var/lib/bootkmod/` under the root:
//!
//! - `ledger.json`: the [`Ledger`], replaced atomically ([`AtomicSet`]) on every change;
//! - `lock`: an exclusive `flock` taken for the whole of an install/remove/refresh
//!   ([`Lock`]), so concurrent runs serialize instead of interleaving;
//! - `store/<sha256>.ko`: the bytes of each installed module as given, so a journaled
//!   operation can be completed after a crash even when the source file is gone, and
//!   `verify` has the original to compare with;
//! - `backup/`: initramfs images as they were before bootkmod first changed them, so
//!   `remove` can restore them byte for byte.
//!
//! Crash safety: before an operation changes anything outside `var/lib/bootkmod`, it
//! records itself as the ledger's [`Journal`]; it clears the journal as its last write.
//! Every step of an operation is idempotent, so the next run that finds a journal (under
//! the lock) simply runs the journaled operation again to completion (roll forward).

pub use crate::model::ledger::*;
use crate::model::root::Root;
use crate::operations::atomic::AtomicSet;
pub use crate::operations::atomic::Lock;
/// The test hooks' one owner is `operations::failpoint`; install and remove reach it here.
pub use crate::operations::failpoint::failpoint;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Host paths of bootkmod's state under a root (resolved inside it, as every path).
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: Root,
}

impl StateDir {
    pub fn new(root: &Root) -> StateDir {
        StateDir { root: root.clone() }
    }

    pub fn dir(&self) -> Result<PathBuf> {
        self.root.host(STATE_DIR)
    }

    /// Keep `bytes` in the store under their digest (idempotent).
    pub fn store(&self, sha256: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = store_path(sha256);
        let host = self.root.host(&path)?;
        if !host.is_file() {
            let dir = self.root.host(Path::new(STATE_DIR).join("store"))?;
            create_dirs(&dir)?;
            AtomicSet::new(&dir).file(format!("{sha256}.ko"), bytes.to_vec()).commit()?;
        }
        Ok(path)
    }

    /// Read a stored module back, checking its digest.
    pub fn stored(&self, sha256: &str) -> Result<Vec<u8>> {
        let host = self.root.host(store_path(sha256))?;
        let bytes =
            std::fs::read(&host).with_context(|| format!("{}: cannot read", host.display()))?;
        if crate::model::module::sha256_hex(&bytes) != sha256 {
            bail!("{}: stored module does not match its sha256 (tampered?)", host.display());
        }
        Ok(bytes)
    }

    pub fn load(&self) -> Result<Ledger> {
        load(&self.root)
    }

    /// Replace the ledger atomically. Only under a [`Lock`].
    pub fn save(&self, ledger: &Ledger, _lock: &Lock) -> Result<()> {
        let dir = self.dir()?;
        create_dirs(&dir)?;
        let mut bytes = serde_json::to_vec_pretty(ledger)?;
        bytes.push(b'\n');
        AtomicSet::new(&dir).file(LEDGER_FILE, bytes).commit().map(drop)
    }

    /// Take the exclusive lock, waiting for any other run to finish.
    pub fn lock(&self) -> Result<Lock> {
        create_dirs(&self.dir()?)?;
        Lock::exclusive(&self.root.host(Path::new(STATE_DIR).join("lock"))?)
    }

    /// The lock, when its file exists (else `None`): a dry run waits for a running
    /// operation like any run, but must not create the state directory or the file.
    pub fn lock_if_present(&self) -> Result<Option<Lock>> {
        let path = self.root.host(Path::new(STATE_DIR).join("lock"))?;
        if !path.exists() {
            return Ok(None);
        }
        Lock::exclusive(&path).map(Some)
    }
}

/// `mkdir -p` with an error naming the directory.
pub fn create_dirs(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        crate::operations::failpoint::step("mkdir", dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trips_and_rejects_garbage() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(&Root::new(t.path()));
        let mut ledger = state.load().unwrap();
        assert!(ledger.modules.is_empty());
        ledger.journal =
            Some(Journal::Refresh { kernels: vec!["k".into()], images: ImageMethod::Regenerate });
        let lock = state.lock().unwrap();
        state.save(&ledger, &lock).unwrap();
        assert_eq!(state.load().unwrap(), ledger);
        std::fs::write(state.dir().unwrap().join(LEDGER_FILE), b"{not json").unwrap();
        let err = format!("{:#}", state.load().unwrap_err());
        assert!(err.contains("ledger.json: not a bootkmod ledger"), "{err}");
    }

    #[test]
    fn store_checks_digests() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(&Root::new(t.path()));
        let sha = crate::model::module::sha256_hex(b"abc");
        state.store(&sha, b"abc").unwrap();
        assert_eq!(state.stored(&sha).unwrap(), b"abc");
        std::fs::write(state.root.host_entry(store_path(&sha)).unwrap(), b"abd").unwrap();
        assert!(state.stored(&sha).is_err());
    }
}
