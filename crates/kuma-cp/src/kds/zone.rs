//! A federated zone's side of KDS: dials global, keeps retrying with back-off, and runs
//! both RPCs on one connection: on `GlobalToZoneSync` it subscribes to every global-provided
//! type and stores what global sends ([`Sink`]); on `ZoneToGlobalSync` it serves what it
//! originates ([`Publisher`]) through the `kuma_xds` delta state machine, the gRPC roles
//! reversed (global's requests arrive as this call's responses). Either stream ending ends
//! the session; the next one resyncs both ways from full sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use futures::StreamExt;
use kuma_xds::{Callbacks, SnapshotCache, StreamInfo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

use super::publish::{Publisher, Side};
use super::sink::{Peer, Sink};
use super::{grpc, types};
use crate::manager::ResourceManager;
use kuma_core::Resource;
use kuma_core::resource::zone::KdsSubscription;
use kuma_core::resource::{ResourceKey, ResourceType, Spec, ZoneInsight, format_time};

/// Wait before asking again for resources this side refused.
const NACK_BACKOFF: Duration = Duration::from_secs(2);

/// A session that lasted this long resets the back-off.
const STABLE: Duration = Duration::from_secs(30);

/// How a zone reaches global.
pub struct Settings {
    pub zone: String,
    pub instance_id: String,
    pub global_address: String,
    /// `None` for `grpc://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub token: String,
    pub limit: usize,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// This zone CP's configuration as JSON (sent in the node metadata, Kuma's `config`).
    pub config_json: String,
}

/// The zone's KDS client.
pub struct ZoneClient {
    settings: Settings,
    manager: Arc<ResourceManager>,
    publisher: Arc<Publisher>,
    xds: kuma_xds::Server,
    /// Set once both streams were opened and the first full set of every type arrived.
    synced_once: Arc<AtomicBool>,
    /// The same, as a `/ready` condition.
    synced: crate::diagnostics::Condition,
    metrics: Arc<crate::metrics::kds::Kds>,
    /// Answers global's inspect requests ([`super::envoy_admin::serve_zone`]).
    envoy_admin: std::sync::OnceLock<Arc<dyn crate::envoy_admin::Admin>>,
}

impl ZoneClient {
    pub fn new(
        settings: Settings,
        manager: Arc<ResourceManager>,
        metrics: Arc<crate::metrics::kds::Kds>,
    ) -> Arc<Self> {
        let cache = SnapshotCache::new();
        let publisher = Publisher::new(
            manager.clone(),
            cache.clone(),
            Side::Zone(settings.zone.clone()),
            types::zone_to_global(),
        );
        let synced = crate::diagnostics::Condition::new(
            "kds",
            format!("no full sync from global ({}) yet", settings.global_address),
        );
        let xds = kuma_xds::Server::new(
            cache.clone(),
            metrics.delta.wrap(
                Arc::new(ZoneCallbacks {
                    publisher: publisher.clone(),
                    cache,
                    insight: LocalInsight {
                        manager: manager.clone(),
                        zone: settings.zone.clone(),
                        instance_id: settings.instance_id.clone(),
                        config: settings.config_json.clone(),
                        token_provided: !settings.token.is_empty(),
                        current: std::sync::Mutex::new(None),
                    },
                }),
                None,
            ),
        )
        .with_max_decoding_message_size(settings.limit);
        Arc::new(Self {
            settings,
            manager,
            publisher,
            xds,
            synced_once: Arc::new(AtomicBool::new(false)),
            synced,
            metrics,
            envoy_admin: std::sync::OnceLock::new(),
        })
    }

    /// Met once this zone has received a full set of every type from global (for `/ready`).
    pub fn synced(&self) -> crate::diagnostics::Condition {
        self.synced.clone()
    }

    /// Lets global inspect this zone's proxies through `admin` (set before [`Self::run`]).
    pub fn set_envoy_admin(&self, admin: Arc<dyn crate::envoy_admin::Admin>) {
        let _ = self.envoy_admin.set(admin);
    }

    /// Whether this zone has received a full set of every type from global at least once.
    pub fn synced_once(&self) -> Arc<AtomicBool> {
        self.synced_once.clone()
    }

    /// Connects, and reconnects with back-off, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        tokio::spawn(self.publisher.clone().run(shutdown.clone()));
        let s = &self.settings;
        let mut backoff = s.base_backoff;
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.session() => r,
            };
            self.metrics.set_connected(false);
            if let Err(e) = outcome {
                tracing::warn!(global = %s.global_address, error = %e, retry_in = ?backoff, "KDS: connection to global ended");
            }
            if started.elapsed() >= STABLE {
                backoff = s.base_backoff;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(s.max_backoff);
        }
    }

    fn metadata(&self) -> MetadataMap {
        let mut md = MetadataMap::new();
        let s = &self.settings;
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {}", s.token)) {
            md.insert("authorization", v);
        }
        if let Ok(v) = MetadataValue::try_from(s.zone.as_str()) {
            md.insert("client-id", v);
        }
        md.insert("kds-version", MetadataValue::from_static("v3"));
        md.append("features", MetadataValue::from_static("zone-token"));
        md.append("features", MetadataValue::from_static("hash-suffix"));
        md
    }

    /// One connection: both streams until either ends.
    async fn session(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let channel = grpc::channel(&s.global_address, s.tls.clone())?;
        let node = Node {
            id: s.zone.clone(),
            metadata: Some(crate::xds::json_to_struct(&serde_json::json!({
                "control-plane-id": s.instance_id,
                "config": s.config_json,
                "version": {"kumaCp": {"version": env!("CARGO_PKG_VERSION"), "kumaCpGlobalCompatible": true}},
                "features": ["zone-token", "hash-suffix"],
            }))),
            ..Default::default()
        };

        // Global → zone: this side subscribes and stores.
        let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
        let mut sink = Sink::new(
            self.manager.clone(),
            Peer::Global {
                local_zone: s.zone.clone(),
            },
            types::global_to_zone(),
        );
        for r in sink.subscriptions(&node) {
            tx.send(r).await?;
        }
        let mut req = Request::new(ReceiverStream::new(rx));
        *req.metadata_mut() = self.metadata();
        let mut from_global = grpc::call::<_, DeltaDiscoveryResponse, _>(
            channel.clone(),
            grpc::GLOBAL_TO_ZONE,
            req,
            s.limit,
        )
        .await
        .map_err(|e| anyhow::anyhow!("GlobalToZoneSync: {}", e.message()))?;
        tracing::info!(global = %s.global_address, zone = %s.zone, "KDS: connected to global");
        self.metrics.set_connected(true);
        let synced_once = self.synced_once.clone();
        let (synced, metrics) = (self.synced.clone(), self.metrics.clone());
        let g2z = async move {
            while let Some(msg) = from_global.next().await {
                let resp = msg.map_err(|e| anyhow::anyhow!("GlobalToZoneSync: {}", e.message()))?;
                let started = std::time::Instant::now();
                let answer = sink.apply(resp).await;
                metrics.synced(started);
                if sink.is_synced() && !synced_once.swap(true, Ordering::Relaxed) {
                    synced.met();
                    tracing::info!("KDS: first full sync from global applied");
                }
                tx.send(answer.reply).await?;
                if let Some(retry) = answer.retry {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(NACK_BACKOFF).await;
                        let _ = tx.send(retry).await;
                    });
                }
            }
            anyhow::Ok(())
        };

        // Zone → global: this side serves, on a call it opens.
        let (ztx, zrx) = mpsc::channel::<DeltaDiscoveryResponse>(16);
        let mut req = Request::new(ReceiverStream::new(zrx));
        *req.metadata_mut() = self.metadata();
        let requests = grpc::call::<_, DeltaDiscoveryRequest, _>(
            channel.clone(),
            grpc::ZONE_TO_GLOBAL,
            req,
            s.limit,
        )
        .await
        .map_err(|e| anyhow::anyhow!("ZoneToGlobalSync: {}", e.message()))?;
        let channel_admin = channel;
        let mut responses = self
            .xds
            .serve_delta(None, MetadataMap::new(), None, requests);
        // Global's inspect requests, on streams of the same connection; their end (global
        // gone) ends the session only through the sync streams.
        let admin_streams = match self.envoy_admin.get() {
            Some(admin) => {
                let task = tokio::spawn(super::envoy_admin::serve_zone(
                    channel_admin,
                    self.metadata(),
                    s.limit,
                    self.manager.clone(),
                    admin.clone(),
                ));
                Some(AbortOnDrop(task))
            }
            None => None,
        };
        let z2g = async move {
            while let Some(r) = responses.next().await {
                let r = r.map_err(|e| anyhow::anyhow!("ZoneToGlobalSync: {}", e.message()))?;
                ztx.send(r).await?;
            }
            anyhow::Ok(())
        };
        let outcome = tokio::select! {
            r = g2z => r.and(Err(anyhow::anyhow!("global closed GlobalToZoneSync"))),
            r = z2g => r.and(Err(anyhow::anyhow!("global closed ZoneToGlobalSync"))),
        };
        drop(admin_streams);
        outcome
    }
}

/// Aborts a session's task when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The zone's side of `ZoneToGlobalSync`: global's stream gets the zone's snapshot, and the
/// zone keeps its own ZoneInsight of the connection (as Kuma's zone does).
struct ZoneCallbacks {
    publisher: Arc<Publisher>,
    cache: SnapshotCache,
    insight: LocalInsight,
}

/// The zone's ZoneInsight: one subscription per session with global (its instance id is the
/// node id of global's requests), connected when global's first request arrives, closed with
/// the stream.
struct LocalInsight {
    manager: Arc<ResourceManager>,
    zone: String,
    instance_id: String,
    config: String,
    token_provided: bool,
    /// The open subscription's id.
    current: std::sync::Mutex<Option<String>>,
}

impl LocalInsight {
    async fn update(&self, f: impl FnOnce(&mut ZoneInsight, &chrono::DateTime<chrono::Utc>)) {
        let key = ResourceKey::new(ResourceType::ZoneInsight, "", &self.zone);
        let mut insight = match self.manager.get(&key).await {
            Ok(Resource {
                spec: Spec::ZoneInsight(i),
                ..
            }) => i,
            _ => ZoneInsight::default(),
        };
        f(&mut insight, &chrono::Utc::now());
        let res = Resource::new(&self.zone, "", Spec::ZoneInsight(insight));
        if let Err(e) = self.manager.upsert_internal(res).await {
            tracing::warn!(error = %e, "KDS: writing this zone's ZoneInsight failed");
        }
    }

    async fn connected(&self, global_instance_id: &str) {
        let id = uuid::Uuid::new_v4().to_string();
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        let sub = KdsSubscription {
            id,
            global_instance_id: global_instance_id.to_string(),
            zone_instance_id: self.instance_id.clone(),
            connect_time: Some(format_time(&chrono::Utc::now())),
            config: self.config.clone(),
            auth_token_provided: self.token_provided,
            ..Default::default()
        };
        self.update(|i, now| i.update_subscription(sub, now, 10))
            .await;
    }

    async fn disconnected(&self) {
        let id = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(id) = id {
            self.update(|i, now| {
                i.disconnect(&id, now);
            })
            .await;
        }
    }
}

#[async_trait]
impl Callbacks for ZoneCallbacks {
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), Status> {
        self.publisher.publish_to(&info.node.id);
        self.insight.connected(&info.node.id).await;
        Ok(())
    }

    fn on_nack(&self, _s: u64, type_url: &str, _v: &str, _n: &str, message: &str) {
        tracing::warn!(r#type = type_url, %message, "KDS: global rejected what this zone sent");
    }

    async fn on_stream_closed(&self, info: &StreamInfo) {
        self.cache.remove(&info.node.id);
        self.insight.disconnected().await;
    }
}
