//! KDS metrics: the `kds_delta_*` stats of the side that serves (global on
//! `GlobalToZoneSync`, a zone on `ZoneToGlobalSync`; [`super::xds::Stats`] with prefix
//! `kds_delta`), `kds_resources_sync` (seconds to apply a received batch to the store, on
//! the receiving side, as Kuma), `kds_zone_active_connections{zone_name}` (global: open
//! `GlobalToZoneSync` streams per zone; zone names come from verified zone tokens) and, on a
//! zone, `kds_connected_to_global` (1 while a session with global is up: an addition).

use std::sync::Arc;
use std::time::Instant;

use kuma_core::resource::ResourceType;
use prometheus::{Histogram, HistogramOpts, IntGauge, IntGaugeVec, Opts, Registry};

use super::xds::Stats;

/// The KDS type URLs: Kuma's resource type names.
fn kds_types() -> &'static [&'static str] {
    static TYPES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| ResourceType::ALL.iter().map(|t| t.name()).collect())
}

pub struct Kds {
    /// `kds_delta_*`.
    pub delta: Arc<Stats>,
    resources_sync: Histogram,
    /// `kds_zone_active_connections{zone_name}` (global).
    pub zone_connections: IntGaugeVec,
    connected: IntGauge,
}

impl Kds {
    pub fn new(registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let delta = Stats::new(registry, "kds_delta", kds_types())?;
        let resources_sync = Histogram::with_opts(HistogramOpts::new(
            "kds_resources_sync",
            "Time it took to sync resources from the upstream over KDS, in seconds",
        ))?;
        let zone_connections = IntGaugeVec::new(
            Opts::new(
                "kds_zone_active_connections",
                "Number of active KDS streams per zone.",
            ),
            &["zone_name"],
        )?;
        let connected = IntGauge::new(
            "kds_connected_to_global",
            "1 while this zone control plane has a KDS session with global (an addition to Kuma's metrics)",
        )?;
        registry.register(Box::new(resources_sync.clone()))?;
        registry.register(Box::new(zone_connections.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        Ok(Arc::new(Self {
            delta,
            resources_sync,
            zone_connections,
            connected,
        }))
    }

    /// A received batch that started being applied at `started` is stored.
    pub fn synced(&self, started: Instant) {
        self.resources_sync.observe(started.elapsed().as_secs_f64());
    }

    /// The zone's session with global came up (`true`) or ended.
    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, sample};
    use envoy_types::pb::envoy::config::core::v3::Node;
    use kuma_xds::{Callbacks, NoopCallbacks, StreamInfo};

    #[tokio::test]
    async fn kds_counts_by_resource_type_and_zone() {
        let m = Metrics::for_tests();
        let cb = m
            .kds
            .delta
            .wrap(Arc::new(NoopCallbacks), None)
            .with_per_node(m.kds.zone_connections.clone());
        let info = StreamInfo {
            stream_id: 1,
            node: Node {
                id: "zone-1".into(),
                ..Default::default()
            },
            metadata: Default::default(),
            delta: true,
            remote_addr: None,
            resumed: false,
        };
        cb.on_stream_open(&info).await.unwrap();
        cb.on_response_sent(1, "Mesh", "v", "1");
        cb.on_nack(1, "Mesh", "v", "1", "refused");
        m.kds.synced(Instant::now());
        m.kds.set_connected(true);
        let text = m.render();
        let s = |series: &str| sample(&text, series);
        assert_eq!(
            s("kds_zone_active_connections{zone_name=\"zone-1\",zone=\"test\"}"),
            Some(1.0)
        );
        assert_eq!(s("kds_delta_streams_active{zone=\"test\"}"), Some(1.0));
        assert_eq!(
            s("kds_delta_responses_sent{type_url=\"Mesh\",zone=\"test\"}"),
            Some(1.0)
        );
        assert_eq!(
            s(
                "kds_delta_requests_received{confirmation=\"NACK\",error_type=\"other\",type_url=\"Mesh\",zone=\"test\"}"
            ),
            Some(1.0)
        );
        assert_eq!(s("kds_resources_sync_count{zone=\"test\"}"), Some(1.0));
        assert_eq!(s("kds_connected_to_global{zone=\"test\"}"), Some(1.0));
        cb.on_stream_closed(&info).await;
        assert_eq!(
            sample(
                &m.render(),
                "kds_zone_active_connections{zone_name=\"zone-1\",zone=\"test\"}"
            ),
            Some(0.0)
        );
    }
}
