//! Store backends of the control plane. The trait, its contract and the in-memory backend live
//! in `kuma_core::store`; this module adds the persistent ones.
//!
//! - [`sqlite::SqliteStore`]: one SQLite file (WAL), the default for a single-instance zone CP.
//! - [`MemoryStore`]: re-exported from the core, for `store.type: memory` and tests.
//! - [`Probe`]: whether a backend can be used right now (what `/ready` asks).

pub mod sqlite;

use async_trait::async_trait;
use kuma_core::store::Error;

pub use kuma_core::store::memory::MemoryStore;
pub use sqlite::SqliteStore;

/// A cheap check that the backend works right now, as a new request would find it (not
/// only through connections opened earlier): [`Error::Unavailable`] with the reason if not.
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    async fn probe(&self) -> Result<(), Error>;
}

#[async_trait]
impl Probe for MemoryStore {
    async fn probe(&self) -> Result<(), Error> {
        Ok(())
    }
}
