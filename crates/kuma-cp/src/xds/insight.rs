//! DataplaneInsight tracking ("diagnostic information"): one subscription per ADS stream,
//! counted in memory on every send / ACK / NACK, written to the store at once on connect and
//! disconnect and otherwise by one flusher for the streams that changed (no per-stream timer).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kuma_core::resource::insight::{
    DataplaneInsight, DiscoveryServiceStats, DiscoverySubscription, LastNack,
};
use kuma_core::resource::{Resource, ResourceKey, ResourceType, Spec, format_time};
use serde_json::Value;

use crate::manager::ResourceManager;

/// The insight types this tracker writes: of Dataplanes, ZoneIngresses and ZoneEgresses.
pub const INSIGHT_TYPES: [ResourceType; 3] = [
    ResourceType::DataplaneInsight,
    ResourceType::ZoneIngressInsight,
    ResourceType::ZoneEgressInsight,
];

/// The subscriptions of any insight type (they share one shape).
fn insight_of(spec: &Spec) -> Option<&DataplaneInsight> {
    match spec {
        Spec::DataplaneInsight(i) | Spec::ZoneIngressInsight(i) | Spec::ZoneEgressInsight(i) => {
            Some(i)
        }
        _ => None,
    }
}

fn insight_of_mut(spec: &mut Spec) -> Option<&mut DataplaneInsight> {
    match spec {
        Spec::DataplaneInsight(i) | Spec::ZoneIngressInsight(i) | Spec::ZoneEgressInsight(i) => {
            Some(i)
        }
        _ => None,
    }
}

/// `insight` as the spec of insight type `rtype`.
fn insight_spec(rtype: ResourceType, insight: DataplaneInsight) -> Spec {
    match rtype {
        ResourceType::ZoneIngressInsight => Spec::ZoneIngressInsight(insight),
        ResourceType::ZoneEgressInsight => Spec::ZoneEgressInsight(insight),
        _ => Spec::DataplaneInsight(insight),
    }
}

/// Subscriptions kept per insight (Kuma's `metrics.dataplane.subscriptionLimit`).
pub const SUBSCRIPTION_LIMIT: usize = 2;

struct Tracked {
    key: ResourceKey,
    sub: DiscoverySubscription,
    metadata: Option<Value>,
    mtls: Option<Value>,
}

/// In-memory subscriptions of the streams this instance serves.
pub struct Tracker {
    instance_id: String,
    streams: Mutex<HashMap<u64, Tracked>>,
    dirty: Mutex<HashSet<u64>>,
    /// Connects and disconnects, written by the flusher as soon as it wakes (off the
    /// stream's path, so a reconnect storm doesn't wait on the store).
    urgent: Mutex<Vec<u64>>,
    /// Streams that ended: forgotten once their last state is written.
    closing: Mutex<HashSet<u64>>,
    wake: tokio::sync::Notify,
    /// The insight as this instance last wrote it, per proxy.
    last: Mutex<HashMap<ResourceKey, Resource>>,
    manager: Arc<ResourceManager>,
}

impl Tracker {
    pub fn new(manager: Arc<ResourceManager>, instance_id: String) -> Self {
        Self {
            instance_id,
            streams: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            urgent: Mutex::new(Vec::new()),
            closing: Mutex::new(HashSet::new()),
            wake: tokio::sync::Notify::new(),
            last: Mutex::new(HashMap::new()),
            manager,
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        // Every critical section is a plain field update; a poisoned lock is still consistent.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, stream_id: u64) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream_id);
    }

    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, Resource>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn urgent(&self, stream_id: u64) {
        self.urgent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stream_id);
        self.wake.notify_one();
    }

    /// Resolves when connects or disconnects wait to be written.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A stream of proxy `mesh/name` opened; queued to be written at once. `insight` is
    /// the insight type of the proxy (DataplaneInsight, ZoneIngressInsight or
    /// ZoneEgressInsight).
    pub fn open(
        &self,
        stream_id: u64,
        insight: ResourceType,
        mesh: &str,
        name: &str,
        version: Option<Value>,
        metadata: Option<Value>,
    ) {
        let now = format_time(&Utc::now());
        let sub = DiscoverySubscription {
            id: uuid::Uuid::new_v4().to_string(),
            control_plane_instance_id: self.instance_id.clone(),
            connect_time: Some(now.clone()),
            disconnect_time: None,
            status: kuma_core::resource::insight::SubscriptionStatus {
                last_update_time: Some(now),
                ..Default::default()
            },
            version,
            generation: 0,
        };
        let key = ResourceKey::new(insight, mesh, name);
        self.streams().insert(
            stream_id,
            Tracked {
                key,
                sub,
                metadata,
                mtls: None,
            },
        );
        self.urgent(stream_id);
    }

    /// The stream ended; its disconnect is queued to be written at once, then it is forgotten.
    pub fn close(&self, stream_id: u64) {
        if let Some(t) = self.streams().get_mut(&stream_id) {
            t.sub.disconnect_time = Some(format_time(&Utc::now()));
        }
        self.closing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream_id);
        self.urgent(stream_id);
    }

    /// Writes queued connects and disconnects, then forgets ended streams.
    pub async fn flush_urgent(&self) {
        loop {
            let ids = std::mem::take(&mut *self.urgent.lock().unwrap_or_else(|e| e.into_inner()));
            if ids.is_empty() {
                return;
            }
            for id in ids {
                self.flush_one(id).await;
                if self
                    .closing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
                {
                    if let Some(t) = self.streams().remove(&id) {
                        self.last().remove(&t.key);
                    }
                    self.dirty
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                }
            }
        }
    }

    fn update(&self, stream_id: u64, type_url: &str, f: impl Fn(&mut DiscoveryServiceStats)) {
        let mut streams = self.streams();
        let Some(t) = streams.get_mut(&stream_id) else {
            return;
        };
        let status = &mut t.sub.status;
        f(&mut status.total);
        match kuma_xds::type_url::short(type_url) {
            "cds" => f(&mut status.cds),
            "eds" => f(&mut status.eds),
            "lds" => f(&mut status.lds),
            "rds" => f(&mut status.rds),
            _ => {}
        }
        status.last_update_time = Some(format_time(&Utc::now()));
        drop(streams);
        self.mark(stream_id);
    }

    pub fn sent(&self, stream_id: u64, type_url: &str) {
        self.update(stream_id, type_url, |s| s.responses_sent += 1);
    }

    pub fn acked(&self, stream_id: u64, type_url: &str) {
        self.update(stream_id, type_url, |s| s.responses_acknowledged += 1);
    }

    pub fn nacked(&self, stream_id: u64, type_url: &str, reason: &str) {
        self.update(stream_id, type_url, |s| s.responses_rejected += 1);
        if let Some(t) = self.streams().get_mut(&stream_id) {
            t.sub.status.last_nack = Some(LastNack {
                type_url: type_url.to_string(),
                reason: reason.to_string(),
                time: format_time(&Utc::now()),
            });
        }
    }

    /// Records the certificate info of a proxy on its streams.
    pub fn set_mtls(&self, stream_ids: &[u64], mtls: Value) {
        {
            let mut streams = self.streams();
            for id in stream_ids {
                if let Some(t) = streams.get_mut(id) {
                    t.mtls = Some(mtls.clone());
                }
            }
        }
        for id in stream_ids {
            self.mark(*id);
        }
    }

    /// Writes every stream that changed since the last flush.
    pub async fn flush_dirty(&self) {
        let ids: Vec<u64> =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        for id in ids {
            self.flush_one(id).await;
        }
    }

    async fn flush_one(&self, stream_id: u64) {
        let Some((key, sub, metadata, mtls)) = self.streams().get(&stream_id).map(|t| {
            (
                t.key.clone(),
                t.sub.clone(),
                t.metadata.clone(),
                t.mtls.clone(),
            )
        }) else {
            return;
        };
        // Read-modify-write with the store's optimistic concurrency. The last version this
        // instance wrote is kept, so the usual flush is one write and no read; a conflict (or
        // a first write) reads the stored insight and retries.
        for attempt in 0..5 {
            let cached = if attempt == 0 {
                self.last().get(&key).cloned()
            } else {
                None
            };
            let existing = match cached {
                Some(r) => Some(r),
                None => self.manager.get(&key).await.ok(),
            };
            let (mut res, mut insight) = match existing {
                Some(r) => match insight_of(&r.spec) {
                    Some(i) => {
                        let i = i.clone();
                        (r, i)
                    }
                    None => return,
                },
                None => (
                    Resource::new(
                        &key.name,
                        &key.mesh,
                        insight_spec(key.rtype, DataplaneInsight::default()),
                    ),
                    DataplaneInsight::default(),
                ),
            };
            match insight.subscriptions.iter_mut().find(|s| s.id == sub.id) {
                Some(s) => *s = sub.clone(),
                None => insight.subscriptions.push(sub.clone()),
            }
            let excess = insight
                .subscriptions
                .len()
                .saturating_sub(SUBSCRIPTION_LIMIT);
            insight.subscriptions.drain(..excess);
            if metadata.is_some() {
                insight.metadata = metadata.clone();
            }
            if mtls.is_some() {
                insight.mtls = mtls.clone();
            }
            res.spec = insight_spec(key.rtype, insight);
            // Straight to the store: insights are the CP's own data (no user labels, and the
            // mesh was checked when the proxy registered).
            let store = self.manager.store();
            let written = if res.meta.version == 0 {
                store.create(res).await
            } else {
                store.update(res).await
            };
            match written {
                Ok(r) => {
                    self.last().insert(key, r);
                    return;
                }
                Err(e) => {
                    self.last().remove(&key);
                    tracing::debug!(%key, error = %e, "writing insight, retrying");
                }
            }
        }
        tracing::warn!(%key, "could not write the insight");
    }

    /// After a restart of a single-instance CP, subscriptions left "connected" by the previous
    /// process are closed: those streams died with it.
    pub async fn close_stale(&self) {
        let mut list = Vec::new();
        for t in INSIGHT_TYPES {
            match self.manager.list(t, None).await {
                Ok(l) => list.extend(l),
                Err(_) => return,
            }
        }
        let now = format_time(&Utc::now());
        for mut res in list {
            let Some(insight) = insight_of_mut(&mut res.spec) else {
                continue;
            };
            let mut changed = false;
            for s in &mut insight.subscriptions {
                if s.disconnect_time.is_none() && s.control_plane_instance_id != self.instance_id {
                    s.disconnect_time = Some(now.clone());
                    changed = true;
                }
            }
            if changed && let Err(e) = self.manager.upsert_internal(res).await {
                tracing::warn!(error = %e, "closing a stale subscription");
            }
        }
    }
}
