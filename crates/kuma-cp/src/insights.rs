//! Insights (Kuma's `pkg/insights`): per mesh, its services with their Dataplanes online /
//! offline and status (Kuma's ServiceInsight) and its MeshInsight (Dataplanes by status and
//! type, versions, mTLS backends, services, resource and policy counts), computed from store
//! events by the [`Resyncer`] and read by the REST API through an [`Insights`] handle.
//!
//! Kept in memory, not stored (Kuma stores `ServiceInsight` `all-services-<mesh>` and
//! `MeshInsight` resources): nothing is written, so the xDS reconciler, the VIP allocator and
//! KDS never see them, and the API serves them read-only by construction. Their
//! `creationTime` is when this process first computed the mesh's insight, `modificationTime`
//! when it last changed. A restarted CP recomputes them at start from the store.
//!
//! - [`compute`]: the pure rules (Dataplane status, services, MeshInsight);
//! - [`Resyncer`]: the task (store watch → in-memory mirror → per-mesh recomputation);
//! - [`Insights`]: the latest [`Snapshot`] (a `tokio::sync::watch` channel).

pub mod compute;
mod resyncer;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

pub use resyncer::{MAX_DELAY, QUIET, Resyncer};

/// The computed insights of one mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshInsights {
    /// Its services (Kuma's `all-services-<mesh>` ServiceInsight).
    pub services: compute::Services,
    pub services_created: DateTime<Utc>,
    pub services_modified: DateTime<Utc>,
    /// Its MeshInsight.
    pub mesh: compute::MeshInsight,
    pub mesh_created: DateTime<Utc>,
    pub mesh_modified: DateTime<Utc>,
}

/// The insights of every mesh, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub meshes: BTreeMap<String, Arc<MeshInsights>>,
}

/// Read side of the insights: the latest [`Snapshot`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Insights {
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl Default for Insights {
    /// Insights that stay empty (no [`Resyncer`] behind them).
    fn default() -> Self {
        Self {
            rx: watch::channel(Arc::default()).1,
        }
    }
}

impl From<watch::Receiver<Arc<Snapshot>>> for Insights {
    fn from(rx: watch::Receiver<Arc<Snapshot>>) -> Self {
        Self { rx }
    }
}

impl Insights {
    /// A handle and the sender that feeds it (the [`Resyncer`] holds the sender; tests may
    /// publish snapshots themselves).
    pub fn channel() -> (watch::Sender<Arc<Snapshot>>, Self) {
        let (tx, rx) = watch::channel(Arc::default());
        (tx, Self { rx })
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// The latest insights of `mesh`, once computed.
    pub fn mesh(&self, mesh: &str) -> Option<Arc<MeshInsights>> {
        self.rx.borrow().meshes.get(mesh).cloned()
    }

    /// Waits until the snapshot changes (tests and tools).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}
