//! Store metrics (Kuma's `pkg/metrics/store`): `store{operation, resource_type}`, the
//! duration of every store call in seconds, and `store_conflicts{resource_type}` (a create
//! of an existing key, an update with a stale version), by [`Metered`], a [`Store`] that
//! wraps the real one.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kuma_core::resource::{Resource, ResourceKey, ResourceType};
use kuma_core::store::{Error, Event, Store};
use prometheus::Registry;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use tokio::sync::broadcast;

/// Kuma's operations, in the order of [`Stats::ops`]' rows.
const OPERATIONS: [&str; 5] = ["create", "update", "delete", "get", "list"];

#[derive(Clone, Copy)]
enum Op {
    Create,
    Update,
    Delete,
    Get,
    List,
}

/// The store's histograms and counters, resolved per resource type.
pub struct Stats {
    /// By [`ResourceType::ALL`] index, then operation.
    ops: Vec<[Histogram; 5]>,
    conflicts: Vec<IntCounter>,
}

fn type_index(rtype: ResourceType) -> usize {
    // Invariant: `ALL` lists every variant.
    ResourceType::ALL
        .iter()
        .position(|t| *t == rtype)
        .unwrap_or(0)
}

impl Stats {
    pub fn new(registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let ops = HistogramVec::new(
            HistogramOpts::new("store", "Summary of Store operations, in seconds"),
            &["operation", "resource_type"],
        )?;
        let conflicts = IntCounterVec::new(
            Opts::new("store_conflicts", "Counter of store conflicts while update"),
            &["resource_type"],
        )?;
        registry.register(Box::new(ops.clone()))?;
        registry.register(Box::new(conflicts.clone()))?;
        Ok(Arc::new(Self {
            ops: ResourceType::ALL
                .iter()
                .map(|t| OPERATIONS.map(|op| ops.with_label_values(&[op, t.name()])))
                .collect(),
            conflicts: ResourceType::ALL
                .iter()
                .map(|t| conflicts.with_label_values(&[t.name()]))
                .collect(),
        }))
    }

    fn observe(&self, op: Op, rtype: ResourceType, started: Instant) {
        self.ops[type_index(rtype)][op as usize].observe(started.elapsed().as_secs_f64());
    }

    fn conflict(&self, rtype: ResourceType) {
        self.conflicts[type_index(rtype)].inc();
    }

    /// `store` timed by these stats.
    pub fn wrap(self: &Arc<Self>, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(Metered {
            inner: store,
            stats: self.clone(),
        })
    }
}

/// A [`Store`] that times every call of the one it wraps.
pub struct Metered {
    inner: Arc<dyn Store>,
    stats: Arc<Stats>,
}

#[async_trait]
impl Store for Metered {
    async fn create(&self, res: Resource) -> Result<Resource, Error> {
        let (rtype, t) = (res.rtype(), Instant::now());
        let r = self.inner.create(res).await;
        self.stats.observe(Op::Create, rtype, t);
        if matches!(r, Err(Error::AlreadyExists(_))) {
            self.stats.conflict(rtype);
        }
        r
    }

    async fn update(&self, res: Resource) -> Result<Resource, Error> {
        let (rtype, t) = (res.rtype(), Instant::now());
        let r = self.inner.update(res).await;
        self.stats.observe(Op::Update, rtype, t);
        if matches!(r, Err(Error::Conflict(_))) {
            self.stats.conflict(rtype);
        }
        r
    }

    async fn delete(&self, key: &ResourceKey) -> Result<(), Error> {
        let t = Instant::now();
        let r = self.inner.delete(key).await;
        self.stats.observe(Op::Delete, key.rtype, t);
        r
    }

    async fn get(&self, key: &ResourceKey) -> Result<Resource, Error> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.stats.observe(Op::Get, key.rtype, t);
        r
    }

    async fn list(&self, rtype: ResourceType, mesh: Option<&str>) -> Result<Vec<Resource>, Error> {
        let t = Instant::now();
        let r = self.inner.list(rtype, mesh).await;
        self.stats.observe(Op::List, rtype, t);
        r
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.inner.watch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, sample};
    use crate::store::MemoryStore;
    use kuma_core::resource::{Mesh, Spec};

    #[tokio::test]
    async fn every_call_is_timed_and_conflicts_counted() {
        let m = Metrics::for_tests();
        let store = m.store.wrap(Arc::new(MemoryStore::new()));
        let mesh = Resource::new("m1", "", Spec::Mesh(Mesh::default()));
        let created = store.create(mesh.clone()).await.unwrap();
        assert!(matches!(
            store.create(mesh).await,
            Err(Error::AlreadyExists(_))
        ));
        store.update(created.clone()).await.unwrap();
        // `created` holds version 1, the store 2 now.
        assert!(matches!(
            store.update(created.clone()).await,
            Err(Error::Conflict(_))
        ));
        store.get(&created.key()).await.unwrap();
        store.list(ResourceType::Mesh, None).await.unwrap();
        store
            .list(ResourceType::Dataplane, Some("m1"))
            .await
            .unwrap();
        store.delete(&created.key()).await.unwrap();
        let text = m.render();
        for (op, rtype, n) in [
            ("create", "Mesh", 2.0),
            ("update", "Mesh", 2.0),
            ("get", "Mesh", 1.0),
            ("list", "Mesh", 1.0),
            ("list", "Dataplane", 1.0),
            ("delete", "Mesh", 1.0),
            ("get", "Secret", 0.0),
        ] {
            let s = format!(
                "store_count{{operation=\"{op}\",resource_type=\"{rtype}\",zone=\"test\"}}"
            );
            assert_eq!(sample(&text, &s), Some(n), "{s}");
        }
        assert_eq!(
            sample(
                &text,
                "store_conflicts{resource_type=\"Mesh\",zone=\"test\"}"
            ),
            Some(2.0)
        );
        // Seconds, with client_golang's default buckets (as Kuma).
        assert!(text.contains("store_bucket{operation=\"get\",resource_type=\"Mesh\",zone=\"test\",le=\"0.005\"} 1"), "{text}");
    }
}
