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

/// The store events that followed one another closely, as the tasks that follow the store
/// (VIP allocator, insights, MADS) take them: the keys they care about, and whether the watch
/// lost events (`lagged`: read everything again).
#[derive(Debug, Default)]
pub struct Batch {
    pub keys: std::collections::BTreeSet<kuma_core::resource::ResourceKey>,
    pub lagged: bool,
}

impl Batch {
    /// Adds `first` and every event after it until `quiet` passes without one, or `max` after
    /// `first`; keys `matters` refuses are dropped. `false` when the watch closed.
    pub async fn gather(
        &mut self,
        events: &mut tokio::sync::broadcast::Receiver<kuma_core::store::Event>,
        first: Result<kuma_core::store::Event, tokio::sync::broadcast::error::RecvError>,
        matters: fn(&kuma_core::resource::ResourceKey) -> bool,
        quiet: std::time::Duration,
        max: std::time::Duration,
    ) -> bool {
        use tokio::sync::broadcast::error::RecvError;
        let mut take = |e: Result<kuma_core::store::Event, RecvError>| match e {
            Ok(ev) => {
                if matters(&ev.key) {
                    self.keys.insert(ev.key);
                }
                true
            }
            Err(RecvError::Lagged(_)) => {
                self.lagged = true;
                true
            }
            Err(RecvError::Closed) => false,
        };
        if !take(first) {
            return false;
        }
        let until = tokio::time::Instant::now() + max;
        loop {
            let next = (tokio::time::Instant::now() + quiet).min(until);
            match tokio::time::timeout_at(next, events.recv()).await {
                Ok(e) => {
                    if !take(e) {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
    }
}
