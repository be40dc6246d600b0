//! Store backends of the control plane. The trait, its contract and the in-memory backend live
//! in `kuma_core::store`; this module adds the persistent ones.
//!
//! - [`sqlite::SqliteStore`]: one SQLite file (WAL), the default for a single-instance zone CP.
//! - [`MemoryStore`]: re-exported from the core, for `store.type: memory` and tests.

pub mod sqlite;

pub use kuma_core::store::memory::MemoryStore;
pub use sqlite::SqliteStore;
