//! Stats of an xDS server (Kuma's `pkg/util/xds/stats_callbacks.go`), config delivery times
//! and generation times.
//!
//! - [`Stats`]: `<prefix>_streams_active`, `<prefix>_requests_received{type_url,
//!   confirmation, error_type}` (ACK / NACK; Kuma's NACK metric), `<prefix>_responses_sent
//!   {type_url}`; `xds` for the DP server, `kds_delta` for KDS. Counted by [`StatsCallbacks`],
//!   a [`Callbacks`] wrapper around the server's own callbacks.
//! - [`Delivery`]: `xds_delivery{type_url}`, milliseconds from the moment a new version of a
//!   type is set in the snapshot cache for a proxy ([`Delivery::ready`], called by the
//!   reconciler just before `SnapshotCache::set`) to the proxy's ACK or NACK of it (through
//!   the same wrapper). Kuma's is one unlabelled histogram; per type is an addition.
//! - [`Generation`]: `xds_generation{proxy_type, result}`, milliseconds per generation.
//!
//! Type URLs outside the server's known list are counted under `type_url="other"`, so a
//! client cannot grow the label set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kuma_xds::{Callbacks, Snapshot, StreamInfo, type_url};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts, Registry};

/// The Envoy types the DP server serves, in push order.
pub const ENVOY_TYPES: &[&str] = &[
    type_url::SECRET,
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// Label value of a type URL not in the known list.
const OTHER: &str = "other";

/// Buckets of the millisecond histograms (`xds_delivery`, `xds_generation`): 0.1 ms to 30 s.
/// Kuma observes milliseconds into client_golang's default buckets (0.005 … 10), where nearly
/// every sample lands in `+Inf`; these cover what this CP measures (a generation takes
/// 0.1–50 ms, a delivery 1 ms – a few seconds under load).
pub const MS_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0, 30000.0,
];

/// The index of `url` in `types`, or `types.len()` (other).
fn index(types: &[&str], url: &str) -> usize {
    types.iter().position(|t| *t == url).unwrap_or(types.len())
}

/// Counters of one xDS server (see the module docs).
pub struct Stats {
    types: &'static [&'static str],
    streams_active: IntGauge,
    /// Per type (then other): ACKs, NACKs, responses.
    acks: Vec<IntCounter>,
    nacks: Vec<IntCounter>,
    responses: Vec<IntCounter>,
}

impl Stats {
    /// `<prefix>_*` for a server of `types`.
    pub fn new(
        registry: &Registry,
        prefix: &str,
        types: &'static [&'static str],
    ) -> Result<Arc<Self>, prometheus::Error> {
        let streams_active = IntGauge::new(
            format!("{prefix}_streams_active"),
            "Number of active connections between a server and a client",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_requests_received"),
                "Number of confirmations requests from a client",
            ),
            &["type_url", "confirmation", "error_type"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_responses_sent"),
                "Number of responses sent by the server to a client",
            ),
            &["type_url"],
        )?;
        registry.register(Box::new(streams_active.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        let labels = types.iter().copied().chain([OTHER]);
        Ok(Arc::new(Self {
            types,
            streams_active,
            acks: labels
                .clone()
                .map(|t| requests.with_label_values(&[t, "ACK", "no_error"]))
                .collect(),
            nacks: labels
                .clone()
                .map(|t| requests.with_label_values(&[t, "NACK", "other"]))
                .collect(),
            responses: labels.map(|t| responses.with_label_values(&[t])).collect(),
        }))
    }

    fn index(&self, url: &str) -> usize {
        index(self.types, url)
    }

    /// Wraps a server's callbacks so that they count into these stats (and, with
    /// `delivery`, time config delivery).
    pub fn wrap(
        self: &Arc<Self>,
        inner: Arc<dyn Callbacks>,
        delivery: Option<Arc<Delivery>>,
    ) -> Arc<StatsCallbacks> {
        Arc::new(StatsCallbacks {
            inner,
            stats: self.clone(),
            delivery,
            per_node: None,
        })
    }
}

/// [`Callbacks`] that count into [`Stats`] (and [`Delivery`]) around the server's own.
pub struct StatsCallbacks {
    inner: Arc<dyn Callbacks>,
    stats: Arc<Stats>,
    delivery: Option<Arc<Delivery>>,
    /// Streams open per node id (KDS: per zone, `kds_zone_active_connections`).
    per_node: Option<IntGaugeVec>,
}

impl StatsCallbacks {
    /// Also counts open streams per node id into `gauge` (label values: the node ids the inner
    /// callbacks accepted, e.g. authenticated zone names).
    pub fn with_per_node(self: Arc<Self>, gauge: IntGaugeVec) -> Arc<Self> {
        Arc::new(Self {
            inner: self.inner.clone(),
            stats: self.stats.clone(),
            delivery: self.delivery.clone(),
            per_node: Some(gauge),
        })
    }
}

#[async_trait]
impl Callbacks for StatsCallbacks {
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), tonic::Status> {
        // Known before the inner callbacks set the stream's first snapshot.
        if let Some(d) = &self.delivery {
            d.open(info.stream_id, &info.node.id);
        }
        let r = self.inner.on_stream_open(info).await;
        match &r {
            Ok(()) => {
                self.stats.streams_active.inc();
                if let Some(g) = &self.per_node {
                    g.with_label_values(&[info.node.id.as_str()]).inc();
                }
            }
            Err(_) => {
                if let Some(d) = &self.delivery {
                    d.close(info.stream_id);
                }
            }
        }
        r
    }

    fn on_response_sent(&self, stream_id: u64, type_url: &str, version: &str, nonce: &str) {
        self.stats.responses[self.stats.index(type_url)].inc();
        self.inner
            .on_response_sent(stream_id, type_url, version, nonce);
    }

    fn on_ack(&self, stream_id: u64, type_url: &str, version: &str, nonce: &str) {
        self.stats.acks[self.stats.index(type_url)].inc();
        if let Some(d) = &self.delivery {
            d.answered(stream_id, type_url, Some(version));
        }
        self.inner.on_ack(stream_id, type_url, version, nonce);
    }

    fn on_nack(&self, stream_id: u64, type_url: &str, version: &str, nonce: &str, message: &str) {
        self.stats.nacks[self.stats.index(type_url)].inc();
        if let Some(d) = &self.delivery {
            d.answered(stream_id, type_url, None);
        }
        self.inner
            .on_nack(stream_id, type_url, version, nonce, message);
    }

    async fn on_stream_closed(&self, info: &StreamInfo) {
        self.inner.on_stream_closed(info).await;
        self.stats.streams_active.dec();
        if let Some(g) = &self.per_node {
            g.with_label_values(&[info.node.id.as_str()]).dec();
        }
        if let Some(d) = &self.delivery {
            d.close(info.stream_id);
        }
    }
}

/// Per type of [`ENVOY_TYPES`]: the version last set and since when it waits for an answer.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    version: u64,
    since: Option<Instant>,
}

/// What [`Delivery`] remembers of a node with open streams.
#[derive(Debug, Default)]
struct Node {
    streams: u32,
    slots: [Slot; ENVOY_TYPES.len()],
}

#[derive(Debug, Default)]
struct Pending {
    streams: HashMap<u64, Arc<str>>,
    nodes: HashMap<Arc<str>, Node>,
}

/// The versions of a snapshot per [`ENVOY_TYPES`] entry, as [`Delivery::ready`] takes them
/// (0: the snapshot has none of the type).
pub type Versions = [u64; ENVOY_TYPES.len()];

/// `xds_delivery{type_url}` (see the module docs). One lock, held for a map lookup and a few
/// stores; the ACK path allocates nothing.
pub struct Delivery {
    histograms: Vec<Histogram>,
    pending: Mutex<Pending>,
}

impl Delivery {
    pub fn new(registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let vec = HistogramVec::new(
            HistogramOpts::new(
                "xds_delivery",
                "Summary of config delivery including a response (ACK/NACK) from the client, in milliseconds: from the moment a new version of the type is set for the proxy to its ACK or NACK (per type_url: an addition to Kuma's)",
            )
            .buckets(MS_BUCKETS.to_vec()),
            &["type_url"],
        )?;
        registry.register(Box::new(vec.clone()))?;
        Ok(Arc::new(Self {
            histograms: ENVOY_TYPES
                .iter()
                .map(|t| vec.with_label_values(&[t]))
                .collect(),
            pending: Mutex::new(Pending::default()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Every critical section leaves the maps consistent: a poisoned lock is usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The per-type versions of `snapshot` (computed once per snapshot; the streams that send
    /// it reuse them). Call before taking any lock.
    pub fn versions(snapshot: &Snapshot) -> Versions {
        let mut out = [0; ENVOY_TYPES.len()];
        for (v, t) in out.iter_mut().zip(ENVOY_TYPES) {
            *v = parse_version(&snapshot.version(t));
        }
        out
    }

    /// A snapshot with `versions` is about to be set for `node`: each type whose version
    /// changed starts waiting for its answer now (a version still waiting is superseded).
    pub fn ready(&self, node: &str, versions: &Versions) {
        let now = Instant::now();
        let mut p = self.lock();
        let Some(n) = p.nodes.get_mut(node) else {
            return;
        };
        for (slot, v) in n.slots.iter_mut().zip(versions) {
            if *v != 0 && slot.version != *v {
                *slot = Slot {
                    version: *v,
                    since: Some(now),
                };
            }
        }
    }

    fn open(&self, stream_id: u64, node: &str) {
        let mut p = self.lock();
        let key: Arc<str> = match p.nodes.get_key_value(node) {
            Some((k, _)) => k.clone(),
            None => Arc::from(node),
        };
        p.nodes.entry(key.clone()).or_default().streams += 1;
        p.streams.insert(stream_id, key);
    }

    fn close(&self, stream_id: u64) {
        let mut p = self.lock();
        let Some(node) = p.streams.remove(&stream_id) else {
            return;
        };
        if let Some(n) = p.nodes.get_mut(&node) {
            n.streams = n.streams.saturating_sub(1);
            if n.streams == 0 {
                p.nodes.remove(&node);
            }
        }
    }

    /// An ACK (`Some(version)`: it must be the version waiting) or a NACK (`None`: it answers
    /// the stream's latest response of the type) of `type_url` on `stream_id`.
    fn answered(&self, stream_id: u64, type_url: &str, acked: Option<&str>) {
        let i = index(ENVOY_TYPES, type_url);
        if i == ENVOY_TYPES.len() {
            return;
        }
        let acked = acked.map(parse_version);
        let since = {
            let mut p = self.lock();
            let Pending { streams, nodes } = &mut *p;
            let Some(slot) = streams
                .get(&stream_id)
                .and_then(|node| nodes.get_mut(node))
                .map(|n| &mut n.slots[i])
            else {
                return;
            };
            if acked.is_none_or(|v| v == slot.version) {
                slot.since.take()
            } else {
                None
            }
        };
        if let Some(since) = since {
            self.histograms[i].observe(ms(since.elapsed()));
        }
    }
}

/// A version as the engine writes it (16 hex digits); 0 for none or anything else.
fn parse_version(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `xds_generation{proxy_type, result}`.
pub struct Generation {
    /// By proxy type (dataplane, ingress, egress), then result (skip, generated, changed).
    histograms: [[Histogram; 3]; 3],
}

/// What a generation of a proxy's snapshot came to (Kuma's `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its inputs had not changed: nothing generated.
    Skip,
    /// Generated and set, whether or not it differs (zone proxies).
    Generated,
    /// Generated because its inputs changed, and set.
    Changed,
}

/// Kuma's `proxy_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyType {
    Dataplane,
    Ingress,
    Egress,
}

impl Generation {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec = HistogramVec::new(
            HistogramOpts::new(
                "xds_generation",
                "Summary of XDS Snapshot generation, in milliseconds (per generation of a proxy's snapshot: this CP generates on change, not on a timer)",
            )
            .buckets(MS_BUCKETS.to_vec()),
            &["proxy_type", "result"],
        )?;
        registry.register(Box::new(vec.clone()))?;
        let row =
            |p: &str| ["skip", "generated", "changed"].map(|r| vec.with_label_values(&[p, r]));
        Ok(Self {
            histograms: [row("dataplane"), row("ingress"), row("egress")],
        })
    }

    /// Records one generation that started at `started`.
    pub fn observe(&self, proxy: ProxyType, outcome: Outcome, started: Instant) {
        let p = proxy as usize;
        let o = outcome as usize;
        self.histograms[p][o].observe(ms(started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, sample};
    use envoy_types::pb::envoy::config::core::v3::Node as EnvoyNode;
    use envoy_types::pb::google::protobuf::Any;
    use kuma_xds::{NoopCallbacks, Resource};

    fn info(stream_id: u64, node: &str) -> StreamInfo {
        StreamInfo {
            stream_id,
            node: EnvoyNode {
                id: node.into(),
                ..Default::default()
            },
            metadata: Default::default(),
            delta: false,
            remote_addr: None,
            resumed: false,
        }
    }

    fn snapshot(body: &[u8]) -> Snapshot {
        [type_url::CLUSTER, type_url::LISTENER]
            .into_iter()
            .map(|t| {
                Arc::new(Resource::new(
                    "r",
                    Any {
                        type_url: t.into(),
                        value: body.to_vec(),
                    },
                ))
            })
            .collect()
    }

    fn series(m: &Metrics, name: &str, labels: &str) -> f64 {
        sample(&m.render(), &format!("{name}{{{labels}zone=\"test\"}}")).unwrap_or(-1.0)
    }

    const CDS: &str = "type_url=\"type.googleapis.com/envoy.config.cluster.v3.Cluster\",";
    const LDS: &str = "type_url=\"type.googleapis.com/envoy.config.listener.v3.Listener\",";

    #[tokio::test]
    async fn acks_nacks_responses_and_streams_are_counted() {
        let m = Metrics::for_tests();
        let cb = m.xds.wrap(Arc::new(NoopCallbacks), None);
        cb.on_stream_open(&info(1, "default.a")).await.unwrap();
        cb.on_stream_open(&info(2, "default.b")).await.unwrap();
        assert_eq!(series(&m, "xds_streams_active", ""), 2.0);
        cb.on_response_sent(1, type_url::CLUSTER, "1", "1");
        cb.on_ack(1, type_url::CLUSTER, "1", "1");
        cb.on_response_sent(1, type_url::CLUSTER, "2", "2");
        cb.on_nack(1, type_url::CLUSTER, "1", "2", "bad cluster");
        cb.on_ack(1, "type.googleapis.com/made.up.Type", "1", "3");
        cb.on_stream_closed(&info(2, "default.b")).await;
        assert_eq!(series(&m, "xds_streams_active", ""), 1.0);
        assert_eq!(
            series(
                &m,
                "xds_requests_received",
                "confirmation=\"ACK\",error_type=\"no_error\",type_url=\"type.googleapis.com/envoy.config.cluster.v3.Cluster\","
            ),
            1.0
        );
        assert_eq!(
            series(
                &m,
                "xds_requests_received",
                "confirmation=\"NACK\",error_type=\"other\",type_url=\"type.googleapis.com/envoy.config.cluster.v3.Cluster\","
            ),
            1.0
        );
        assert_eq!(
            series(
                &m,
                "xds_requests_received",
                "confirmation=\"ACK\",error_type=\"no_error\",type_url=\"other\","
            ),
            1.0
        );
        assert_eq!(series(&m, "xds_responses_sent", CDS), 2.0);
    }

    #[tokio::test]
    async fn delivery_is_timed_from_set_to_the_answer_of_that_version() {
        let m = Metrics::for_tests();
        let d = m.delivery.clone();
        let cb = m.xds.wrap(Arc::new(NoopCallbacks), Some(d.clone()));
        cb.on_stream_open(&info(7, "default.a")).await.unwrap();
        let snap = snapshot(b"1");
        let v = Delivery::versions(&snap);
        let cds = snap.version(type_url::CLUSTER);
        let lds = snap.version(type_url::LISTENER);
        d.ready("default.a", &v);
        // Not set for this node, no stream for it: ignored.
        d.ready("default.other", &v);
        std::thread::sleep(Duration::from_millis(20));
        // A stale version is not the one waiting.
        cb.on_ack(7, type_url::CLUSTER, "00000000000000ff", "1");
        assert_eq!(series(&m, "xds_delivery_count", CDS), 0.0);
        cb.on_ack(7, type_url::CLUSTER, &cds, "2");
        cb.on_ack(7, type_url::CLUSTER, &cds, "3");
        assert_eq!(series(&m, "xds_delivery_count", CDS), 1.0);
        assert!(series(&m, "xds_delivery_sum", CDS) >= 20.0);
        // The same versions set again: nothing new waits.
        d.ready("default.a", &v);
        cb.on_ack(7, type_url::CLUSTER, &cds, "4");
        assert_eq!(series(&m, "xds_delivery_count", CDS), 1.0);
        // A NACK answers the listener version waiting.
        cb.on_nack(7, type_url::LISTENER, "", "5", "bad listener");
        assert_eq!(series(&m, "xds_delivery_count", LDS), 1.0);
        let _ = lds;
        // A changed cluster waits again; a closed stream forgets its node.
        d.ready("default.a", &Delivery::versions(&snapshot(b"2")));
        cb.on_stream_closed(&info(7, "default.a")).await;
        assert!(d.lock().nodes.is_empty() && d.lock().streams.is_empty());
        // A refused stream leaves nothing behind.
        struct Refuse;
        #[async_trait]
        impl Callbacks for Refuse {
            async fn on_stream_open(&self, _: &StreamInfo) -> Result<(), tonic::Status> {
                Err(tonic::Status::unauthenticated("no"))
            }
        }
        let refusing = m.xds.wrap(Arc::new(Refuse), Some(d.clone()));
        assert!(
            refusing
                .on_stream_open(&info(8, "default.x"))
                .await
                .is_err()
        );
        assert!(d.lock().nodes.is_empty() && d.lock().streams.is_empty());
        assert_eq!(series(&m, "xds_streams_active", ""), 0.0);
    }

    #[test]
    fn generation_is_recorded_by_proxy_type_and_result() {
        let m = Metrics::for_tests();
        let t = Instant::now() - Duration::from_millis(3);
        m.generation
            .observe(ProxyType::Dataplane, Outcome::Changed, t);
        m.generation
            .observe(ProxyType::Ingress, Outcome::Generated, t);
        m.generation.observe(ProxyType::Dataplane, Outcome::Skip, t);
        let text = m.render();
        for (labels, n) in [
            ("proxy_type=\"dataplane\",result=\"changed\",", 1.0),
            ("proxy_type=\"dataplane\",result=\"skip\",", 1.0),
            ("proxy_type=\"ingress\",result=\"generated\",", 1.0),
            ("proxy_type=\"egress\",result=\"changed\",", 0.0),
        ] {
            let s = format!("xds_generation_count{{{labels}zone=\"test\"}}");
            assert_eq!(sample(&text, &s), Some(n), "{s}");
        }
        let sum = sample(
            &text,
            "xds_generation_sum{proxy_type=\"dataplane\",result=\"changed\",zone=\"test\"}",
        )
        .unwrap();
        assert!(sum >= 3.0, "{sum} ms");
    }
}
