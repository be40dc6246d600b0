//! Global's side of KDS: the server zones dial (`multizone.global.kds.grpcPort`).
//!
//! A zone is who its token says, nothing else: both RPCs authenticate the zone token (scope
//! `cp`) in the `authorization` metadata before anything is read or sent, and on
//! `GlobalToZoneSync` the node id must be that zone. Global then creates the Zone on first
//! connect, serves the zone's snapshot ([`Publisher`]) through the `kuma_xds` delta state
//! machine, and on `ZoneToGlobalSync` asks for every zone-provided type and stores what the
//! zone sends through a [`Sink`] that refuses anything claiming another origin.
//!
//! ZoneInsight: one subscription per `GlobalToZoneSync` stream with per-type counters
//! (responses sent, ACKed, NACKed), written at connect and disconnect at once (so a zone is
//! offline as soon as its stream closes; HTTP/2 keep-alive pings find a silent peer within
//! 10 s) and every `zoneInsightFlushInterval` while it changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::post;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use futures::StreamExt;
use kuma_core::Resource;
use kuma_core::resource::{ResourceKey, ResourceType, Spec, Zone, format_time};
use kuma_core::store;
use kuma_xds::{Admission, Callbacks, SnapshotCache, StreamInfo};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::publish::{Publisher, Side};
use super::sink::{Peer, Sink};
use super::{ZoneAuthenticator, grpc, types};
use crate::manager::{ManagerError, ResourceManager};

/// Wait before asking again for resources this side refused (Kuma's `nackBackoff` is 5 s).
const NACK_BACKOFF: Duration = Duration::from_secs(2);

/// Subscriptions kept per ZoneInsight (Kuma's `metrics.zone.subscriptionLimit`).
const SUBSCRIPTION_LIMIT: usize = 10;

/// Global's KDS state, shared by both RPC handlers.
pub struct Global {
    manager: Arc<ResourceManager>,
    auth: Arc<dyn ZoneAuthenticator>,
    publisher: Arc<Publisher>,
    xds: kuma_xds::Server,
    tracker: Arc<Tracker>,
    instance_id: String,
    limit: usize,
    metrics: Arc<crate::metrics::kds::Kds>,
}

impl Global {
    pub fn new(
        manager: Arc<ResourceManager>,
        auth: Arc<dyn ZoneAuthenticator>,
        instance_id: String,
        limit: usize,
        metrics: Arc<crate::metrics::kds::Kds>,
    ) -> Arc<Self> {
        let cache = SnapshotCache::new();
        let publisher = Publisher::new(
            manager.clone(),
            cache.clone(),
            Side::Global,
            types::global_to_zone(),
        );
        let tracker = Arc::new(Tracker {
            manager: manager.clone(),
            instance_id: instance_id.clone(),
            state: Mutex::default(),
        });
        let callbacks = Arc::new(GlobalCallbacks {
            manager: manager.clone(),
            auth: auth.clone(),
            publisher: publisher.clone(),
            cache: cache.clone(),
            tracker: tracker.clone(),
        });
        let callbacks = metrics
            .delta
            .wrap(callbacks, None)
            .with_per_node(metrics.zone_connections.clone());
        let xds = kuma_xds::Server::new(cache, callbacks).with_max_decoding_message_size(limit);
        Arc::new(Self {
            manager,
            auth,
            publisher,
            xds,
            tracker,
            instance_id,
            limit,
            metrics,
        })
    }

    /// The two RPCs as routes, for the TLS server of the KDS port.
    pub fn router(self: &Arc<Self>) -> Router {
        let (g2z, z2g) = (self.clone(), self.clone());
        Router::new()
            .route(
                grpc::GLOBAL_TO_ZONE,
                post(move |req: axum::extract::Request| {
                    let g = g2z.clone();
                    async move {
                        let limit = g.limit;
                        grpc::serve(req, limit, move |r| {
                            let g = g.clone();
                            async move { Ok(g.global_to_zone(r)) }
                        })
                        .await
                    }
                }),
            )
            .route(
                grpc::ZONE_TO_GLOBAL,
                post(move |req: axum::extract::Request| {
                    let g = z2g.clone();
                    async move {
                        let limit = g.limit;
                        grpc::serve(req, limit, move |r| {
                            let g = g.clone();
                            async move { g.zone_to_global(r).await }
                        })
                        .await
                    }
                }),
            )
    }

    /// The publisher and the insight flusher, until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        flush: Duration,
    ) -> anyhow::Result<()> {
        let tracker = self.tracker.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(flush);
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tick.tick() => tracker.flush_dirty().await,
                }
            }
        });
        self.publisher.clone().run(shutdown).await
    }

    fn global_to_zone(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Response<ReceiverStream<Result<DeltaDiscoveryResponse, Status>>> {
        let remote = req.remote_addr();
        let (metadata, extensions, requests) = req.into_parts();
        Response::new(self.xds.serve_delta(
            remote,
            metadata,
            extensions.get::<Admission>().cloned(),
            requests,
        ))
    }

    async fn zone_to_global(
        &self,
        req: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<ReceiverStream<Result<DeltaDiscoveryRequest, Status>>>, Status> {
        let (metadata, extensions, mut responses) = req.into_parts();
        let zone = authenticate(self.auth.as_ref(), &metadata).await?;
        if let Some(a) = extensions.get::<Admission>() {
            a.admit();
        }
        let (tx, rx) = mpsc::channel(64);
        let mut sink = Sink::new(
            self.manager.clone(),
            Peer::Zone(zone.clone()),
            types::zone_to_global(),
        );
        let node = Node {
            id: self.instance_id.clone(),
            ..Default::default()
        };
        for r in sink.subscriptions(&node) {
            let _ = tx.try_send(Ok(r));
        }
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            tracing::info!(%zone, "KDS: zone-to-global stream opened");
            while let Some(msg) = responses.next().await {
                let Ok(resp) = msg else { break };
                let started = std::time::Instant::now();
                let answer = sink.apply(resp).await;
                metrics.synced(started);
                if tx.send(Ok(answer.reply)).await.is_err() {
                    break;
                }
                if let Some(retry) = answer.retry {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(NACK_BACKOFF).await;
                        let _ = tx.send(Ok(retry)).await;
                    });
                }
            }
            tracing::info!(%zone, "KDS: zone-to-global stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The zone a stream's token names (scope `cp`); one answer for every refusal.
pub(super) async fn authenticate(
    auth: &dyn ZoneAuthenticator,
    md: &MetadataMap,
) -> Result<String, Status> {
    let token = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
        .unwrap_or_default();
    if token.is_empty() {
        return Err(Status::unauthenticated("zone token required"));
    }
    auth.authenticate_cp(&token).await.map_err(|reason| {
        tracing::warn!(%reason, "KDS: zone token refused");
        Status::unauthenticated("invalid zone token")
    })
}

struct GlobalCallbacks {
    manager: Arc<ResourceManager>,
    auth: Arc<dyn ZoneAuthenticator>,
    publisher: Arc<Publisher>,
    cache: SnapshotCache,
    tracker: Arc<Tracker>,
}

#[async_trait]
impl Callbacks for GlobalCallbacks {
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), Status> {
        let zone = authenticate(self.auth.as_ref(), &info.metadata).await?;
        if info.node.id != zone {
            tracing::warn!(token_zone = %zone, node = %info.node.id, "KDS: node id is not the zone of the token");
            return Err(Status::unauthenticated("invalid zone token"));
        }
        ensure_zone(&self.manager, &zone)
            .await
            .map_err(|e| Status::unavailable(format!("storing Zone {zone}: {e}")))?;
        let md = info
            .node
            .metadata
            .as_ref()
            .map(crate::xds::struct_to_json)
            .unwrap_or(Value::Null);
        self.tracker.open(info.stream_id, &zone, &md).await;
        self.publisher.publish_to(&zone);
        tracing::info!(%zone, stream_id = info.stream_id, "KDS: zone connected");
        Ok(())
    }

    fn on_response_sent(&self, stream_id: u64, type_url: &str, _v: &str, _n: &str) {
        self.tracker.count(stream_id, type_url, Counter::Sent);
    }

    fn on_ack(&self, stream_id: u64, type_url: &str, _v: &str, _n: &str) {
        self.tracker.count(stream_id, type_url, Counter::Acked);
    }

    fn on_nack(&self, stream_id: u64, type_url: &str, _v: &str, _n: &str, message: &str) {
        tracing::warn!(stream_id, r#type = type_url, %message, "KDS: zone rejected a response");
        self.tracker.count(stream_id, type_url, Counter::Rejected);
    }

    async fn on_stream_closed(&self, info: &StreamInfo) {
        if let Some((zone, last)) = self.tracker.close(info.stream_id).await {
            tracing::info!(%zone, stream_id = info.stream_id, "KDS: zone disconnected");
            if last {
                self.cache.remove(&zone);
            }
        }
    }
}

/// Creates the Zone `name` (enabled) unless it exists.
async fn ensure_zone(manager: &ResourceManager, name: &str) -> Result<(), ManagerError> {
    let key = ResourceKey::new(ResourceType::Zone, "", name);
    match manager.get(&key).await {
        Ok(_) => Ok(()),
        Err(ManagerError::Store(store::Error::NotFound(_))) => {
            let zone = Resource::new(
                name,
                "",
                Spec::Zone(Zone {
                    enabled: Some(true),
                }),
            );
            match manager.create_internal(zone).await {
                Ok(_) | Err(ManagerError::Store(store::Error::AlreadyExists(_))) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[derive(Clone, Copy)]
enum Counter {
    Sent,
    Acked,
    Rejected,
}

#[derive(Default, Clone)]
struct Stats {
    sent: u64,
    acked: u64,
    rejected: u64,
}

impl Stats {
    fn bump(&mut self, c: Counter) {
        match c {
            Counter::Sent => self.sent += 1,
            Counter::Acked => self.acked += 1,
            Counter::Rejected => self.rejected += 1,
        }
    }

    fn json(&self) -> Value {
        json!({
            "responsesSent": self.sent.to_string(),
            "responsesAcknowledged": self.acked.to_string(),
            "responsesRejected": self.rejected.to_string(),
        })
    }
}

/// One `GlobalToZoneSync` stream of a zone.
#[derive(Clone)]
struct Subscription {
    id: String,
    stream_id: Option<u64>,
    zone_instance_id: String,
    version: Value,
    config: String,
    connect_time: String,
    disconnect_time: Option<String>,
    last_update_time: Option<String>,
    total: Stats,
    per_type: BTreeMap<String, Stats>,
}

#[derive(Default)]
struct ZoneEntry {
    subscriptions: Vec<Subscription>,
    dirty: bool,
}

#[derive(Default)]
struct TrackerState {
    zones: HashMap<String, ZoneEntry>,
    streams: HashMap<u64, String>,
}

/// ZoneInsight counters in memory, and their writes.
struct Tracker {
    manager: Arc<ResourceManager>,
    instance_id: String,
    state: Mutex<TrackerState>,
}

fn now() -> String {
    format_time(&chrono::Utc::now())
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn open(&self, stream_id: u64, zone: &str, md: &Value) {
        let stored = self.load(zone).await;
        {
            let mut st = self.lock();
            st.streams.insert(stream_id, zone.to_string());
            let entry = st.zones.entry(zone.to_string()).or_default();
            if entry.subscriptions.is_empty() {
                entry.subscriptions = stored;
            }
            // A subscription left open by a global that died is closed now.
            for s in &mut entry.subscriptions {
                if s.stream_id.is_none() && s.disconnect_time.is_none() {
                    s.disconnect_time = Some(now());
                }
            }
            entry.subscriptions.push(Subscription {
                id: uuid::Uuid::new_v4().to_string(),
                stream_id: Some(stream_id),
                zone_instance_id: md
                    .get("control-plane-id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                version: md.get("version").cloned().unwrap_or(Value::Null),
                config: md
                    .get("config")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                connect_time: now(),
                disconnect_time: None,
                last_update_time: None,
                total: Stats::default(),
                per_type: BTreeMap::new(),
            });
            let n = entry.subscriptions.len();
            if n > SUBSCRIPTION_LIMIT {
                entry.subscriptions.drain(..n - SUBSCRIPTION_LIMIT);
            }
            entry.dirty = true;
        }
        self.flush(zone).await;
    }

    /// Closes a stream's subscription; the zone and whether it was its last open stream.
    async fn close(&self, stream_id: u64) -> Option<(String, bool)> {
        let (zone, last) = {
            let mut st = self.lock();
            let zone = st.streams.remove(&stream_id)?;
            let last = !st.streams.values().any(|z| *z == zone);
            let entry = st.zones.entry(zone.clone()).or_default();
            for s in &mut entry.subscriptions {
                if s.stream_id == Some(stream_id) {
                    s.disconnect_time = Some(now());
                    s.stream_id = None;
                }
            }
            entry.dirty = true;
            (zone, last)
        };
        self.flush(&zone).await;
        Some((zone, last))
    }

    fn count(&self, stream_id: u64, type_url: &str, c: Counter) {
        let mut st = self.lock();
        let Some(zone) = st.streams.get(&stream_id).cloned() else {
            return;
        };
        let entry = st.zones.entry(zone).or_default();
        if let Some(s) = entry
            .subscriptions
            .iter_mut()
            .find(|s| s.stream_id == Some(stream_id))
        {
            s.total.bump(c);
            s.per_type.entry(type_url.to_string()).or_default().bump(c);
            s.last_update_time = Some(now());
            entry.dirty = true;
        }
    }

    /// The subscriptions of the stored ZoneInsight (a restarted global continues them).
    async fn load(&self, zone: &str) -> Vec<Subscription> {
        let key = ResourceKey::new(ResourceType::ZoneInsight, "", zone);
        let Ok(res) = self.manager.get(&key).await else {
            return Vec::new();
        };
        let wire = res.to_wire();
        wire["subscriptions"]
            .as_array()
            .map(|subs| subs.iter().map(subscription_from_json).collect())
            .unwrap_or_default()
    }

    async fn flush_dirty(&self) {
        let zones: Vec<String> = {
            let st = self.lock();
            st.zones
                .iter()
                .filter(|(_, e)| e.dirty)
                .map(|(z, _)| z.clone())
                .collect()
        };
        for z in zones {
            self.flush(&z).await;
        }
    }

    /// Writes the ZoneInsight of `zone`.
    async fn flush(&self, zone: &str) {
        let subs: Vec<Value> = {
            let mut st = self.lock();
            let Some(entry) = st.zones.get_mut(zone) else {
                return;
            };
            entry.dirty = false;
            entry
                .subscriptions
                .iter()
                .map(|s| self.subscription_json(s))
                .collect()
        };
        let doc = json!({"type": "ZoneInsight", "name": zone, "subscriptions": subs});
        match Resource::from_wire(doc, Some(ResourceType::ZoneInsight)) {
            Ok(res) => {
                if let Err(e) = self.manager.upsert_internal(res).await {
                    tracing::warn!(%zone, error = %e, "KDS: writing ZoneInsight failed");
                }
            }
            Err(e) => tracing::warn!(%zone, error = %e, "KDS: ZoneInsight does not decode"),
        }
    }

    fn subscription_json(&self, s: &Subscription) -> Value {
        let mut status = json!({
            "total": s.total.json(),
            "stat": s.per_type.iter().map(|(t, st)| (t.clone(), st.json())).collect::<serde_json::Map<_, _>>(),
        });
        if let Some(t) = &s.last_update_time {
            status["lastUpdateTime"] = json!(t);
        }
        let mut v = json!({
            "id": s.id,
            "globalInstanceId": self.instance_id,
            "zoneInstanceId": s.zone_instance_id,
            "connectTime": s.connect_time,
            "status": status,
            "config": s.config,
            "authTokenProvided": true,
        });
        if let Some(t) = &s.disconnect_time {
            v["disconnectTime"] = json!(t);
        }
        if !s.version.is_null() {
            v["version"] = s.version.clone();
        }
        v
    }
}

fn subscription_from_json(v: &Value) -> Subscription {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Subscription {
        id: s("id"),
        stream_id: None,
        zone_instance_id: s("zoneInstanceId"),
        version: v["version"].clone(),
        config: s("config"),
        connect_time: s("connectTime"),
        disconnect_time: v["disconnectTime"].as_str().map(str::to_string),
        last_update_time: v["status"]["lastUpdateTime"].as_str().map(str::to_string),
        total: Stats::default(),
        per_type: BTreeMap::new(),
    }
}
