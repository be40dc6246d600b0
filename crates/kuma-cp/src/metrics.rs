//! The control plane's Prometheus metrics (served on the diagnostics listener's `/metrics`).
//!
//! One [`Metrics`] per process, one registry in it, every metric carrying Kuma's constant label
//! `zone` ([`zone_label`]: the zone's name on a zone CP, `Global` on global). Names, labels
//! and units are Kuma 2.14.3's where Kuma has the metric (`xds_*`, `kds_delta_*`, `store`,
//! `store_conflicts`, `kds_resources_sync`, `kds_zone_active_connections`, `cp_info`,
//! `leader`, `process_*`); the additions say so in their help text.
//!
//! Rooms: [`xds`] (the stats of an xDS server, Envoy-facing or KDS, as a [`kuma_xds::Callbacks`]
//! wrapper; config delivery times; generation times), [`store`] (the [`kuma_core::store::Store`]
//! wrapper timing every call), [`kds`] (sync apply times and connections).
//!
//! Hot-path rule: every series with a finite label set is resolved once, here, at start
//! (a vector indexed by type), so an observation is an atomic add on a handle: no label
//! lookup, no allocation, no lock held across an `.await`.

pub mod kds;
pub mod store;
pub mod xds;

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::config::CpMode;

/// Kuma's value of the `zone` label (`ZoneNameOrMode`): the zone's name on a zone control
/// plane (`Zone` when unnamed), `Global` on global.
pub fn zone_label(mode: CpMode, zone: &str) -> String {
    match mode {
        CpMode::Global => "Global".into(),
        CpMode::Standalone | CpMode::FederatedZone if zone.is_empty() => "Zone".into(),
        CpMode::Standalone | CpMode::FederatedZone => zone.into(),
    }
}

/// What `cp_info` says about this instance (Kuma's build info plus the instance id).
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub instance_id: String,
    pub cluster_id: String,
    pub version: String,
    pub based_on_kuma: String,
}

/// Every metric of the control plane, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// `xds_*`: the DP server's ADS.
    pub xds: Arc<xds::Stats>,
    /// `xds_delivery`: snapshot set → ACK/NACK, per type.
    pub delivery: Arc<xds::Delivery>,
    /// `xds_generation`.
    pub generation: xds::Generation,
    /// `store`, `store_conflicts`.
    pub store: Arc<store::Stats>,
    /// `kds_*`.
    pub kds: Arc<kds::Kds>,
    /// `promhttp_metric_handler_requests_total{code}` (as Kuma's promhttp handler).
    scrapes: IntCounterVec,
}

impl Metrics {
    /// Registers every metric with the constant label `zone` = `zone` (see [`zone_label`]).
    pub fn new(zone: &str, info: &Info) -> Result<Arc<Self>, prometheus::Error> {
        let labels = HashMap::from([("zone".to_string(), zone.to_string())]);
        let registry = Registry::new_custom(None, Some(labels))?;
        let xds = xds::Stats::new(&registry, "xds", xds::ENVOY_TYPES)?;
        let delivery = xds::Delivery::new(&registry)?;
        let generation = xds::Generation::new(&registry)?;
        let store = store::Stats::new(&registry)?;
        let kds = kds::Kds::new(&registry)?;

        let mut cp_info = Opts::new("cp_info", "Static information about the CP instance")
            .const_label("instance_id", &info.instance_id)
            .const_label("cluster_id", &info.cluster_id)
            .const_label("product", "Kuma")
            .const_label("version", &info.version)
            .const_label("git_tag", &info.version)
            .const_label("git_commit", "")
            .const_label("build_date", "");
        if !info.based_on_kuma.is_empty() {
            cp_info = cp_info.const_label("based_on_kuma", &info.based_on_kuma);
        }
        let cp_info = IntGauge::with_opts(cp_info)?;
        cp_info.set(1);
        registry.register(Box::new(cp_info))?;
        // One instance per store, no election: this instance always leads.
        let leader = IntGauge::new("leader", "1 indicates that this instance is leader")?;
        leader.set(1);
        registry.register(Box::new(leader))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let scrapes = IntCounterVec::new(
            Opts::new(
                "promhttp_metric_handler_requests_total",
                "Total number of scrapes by HTTP status code.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(scrapes.clone()))?;
        Ok(Arc::new(Self {
            registry,
            xds,
            delivery,
            generation,
            store,
            kds,
            scrapes,
        }))
    }

    /// Metrics for tests: zone `test`, no instance information.
    #[cfg(test)]
    pub fn for_tests() -> Arc<Self> {
        // Invariant: the names above are valid and registered once.
        Self::new("test", &Info::default()).expect("metrics register")
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families = self.registry.gather();
        match TextEncoder::new().encode_utf8(&families, &mut out) {
            Ok(()) => self.scrapes.with_label_values(&["200"]).inc(),
            Err(e) => {
                // Only a metric family without metrics fails, and `gather` prunes those.
                tracing::warn!(error = %e, "encoding the metrics failed");
                self.scrapes.with_label_values(&["500"]).inc();
            }
        }
        out
    }

    /// The content type of [`Metrics::render`].
    pub fn content_type(&self) -> String {
        TextEncoder::new().format_type().to_string()
    }
}

/// The value of one series in a text exposition: `name{labels}` exactly as rendered
/// (labels in the order the encoder writes them), for tests.
#[cfg(test)]
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_label_is_kumas() {
        assert_eq!(zone_label(CpMode::Global, "default"), "Global");
        assert_eq!(zone_label(CpMode::Standalone, "default"), "default");
        assert_eq!(zone_label(CpMode::FederatedZone, "zone-1"), "zone-1");
        assert_eq!(zone_label(CpMode::Standalone, ""), "Zone");
    }

    #[test]
    fn every_metric_carries_the_zone_label_and_info_is_one() {
        let m = Metrics::new(
            "zone-1",
            &Info {
                instance_id: "cp-1234".into(),
                version: "0.1.0".into(),
                based_on_kuma: "2.14.3".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let text = m.render();
        assert_eq!(sample(&text, "leader{zone=\"zone-1\"}"), Some(1.0));
        assert_eq!(
            sample(&text, "xds_streams_active{zone=\"zone-1\"}"),
            Some(0.0)
        );
        let info = text
            .lines()
            .find(|l| l.starts_with("cp_info{"))
            .expect("cp_info");
        for label in [
            "instance_id=\"cp-1234\"",
            "version=\"0.1.0\"",
            "based_on_kuma=\"2.14.3\"",
            "product=\"Kuma\"",
            "zone=\"zone-1\"",
        ] {
            assert!(info.contains(label), "{label} in {info}");
        }
        assert!(info.ends_with(" 1"), "{info}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("process_resident_memory_bytes{zone=\"zone-1\"} ")),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("zone=\"zone-1\""), "no zone label: {line}");
        }
        // The scrape above is counted on the next one.
        assert_eq!(
            sample(
                &m.render(),
                "promhttp_metric_handler_requests_total{code=\"200\",zone=\"zone-1\"}"
            ),
            Some(1.0)
        );
    }
}
