//! Kuma's rewrite of Envoy's stats (`MergeClustersForPrometheus`), applied to the parsed
//! families of Envoy's `/stats?format=prometheus` before they are served.
//!
//! - Cluster families (first series labelled [`CLUSTER_LABEL`]): a cluster name
//!   `<prefix>-<16 hex digits>` (the control plane's per-destination split of one service) is
//!   renamed to `<prefix>`, and the series that then carry equal label sets are summed into
//!   one (counters, gauges, untyped; summaries and histograms quantile by quantile and bucket
//!   by bucket, with their sums and counts). Every series of a cluster that is not Envoy's own
//!   plumbing ([`BOOTSTRAP_CLUSTERS`], `kuma_envoy_admin`, `kuma_metrics_hijacker`) gets
//!   [`MESH_TRAFFIC_LABEL`]`="true"`.
//! - HTTP families (first series labelled [`HTTP_PREFIX_LABEL`]): every series whose prefix is
//!   not `admin`, `kuma_envoy_admin` or `kuma_metrics_prometheus` gets the same label.
//!
//! Kuma iterates Go maps here, so its order of families, series, buckets and quantiles is
//! random; this keeps the order of first appearance and sorts buckets and quantiles by bound.
//! Kuma rejects a whole body when a cluster family holds a series without the cluster label;
//! here such a series is kept as it is. A merged series loses its timestamp, as in Kuma.

use std::collections::HashMap;

use super::text::{Family, Metric, Value};

/// The label naming an Envoy cluster.
pub const CLUSTER_LABEL: &str = "envoy_cluster_name";
/// The label naming an HTTP connection manager's stat prefix.
pub const HTTP_PREFIX_LABEL: &str = "envoy_http_conn_manager_prefix";
/// The label marking series of mesh traffic.
pub const MESH_TRAFFIC_LABEL: &str = "kuma_io_mesh_traffic";
/// Clusters of the bootstrap, never mesh traffic (Kuma's `BootstrapClusters`).
pub const BOOTSTRAP_CLUSTERS: [&str; 4] = [
    "ads_cluster",
    "access_log_sink",
    "system_ads",
    "system_access_log_sink",
];
/// Stat names of the proxy's own clusters, never mesh traffic.
const OWN_CLUSTERS: [&str; 2] = ["kuma_envoy_admin", "kuma_metrics_hijacker"];
/// HTTP stat prefixes that are not mesh traffic.
const OWN_HTTP_PREFIXES: [&str; 3] = ["admin", "kuma_envoy_admin", "kuma_metrics_prometheus"];

/// Rewrites Envoy's families in place (see the module docs).
pub fn merge_clusters(families: &mut [Family]) {
    for family in families {
        let Some(first) = family.metrics.first() else {
            continue;
        };
        if first.label(CLUSTER_LABEL).is_some() {
            merge_cluster_family(family);
        } else if first.label(HTTP_PREFIX_LABEL).is_some() {
            for metric in &mut family.metrics {
                if metric
                    .label(HTTP_PREFIX_LABEL)
                    .is_some_and(|p| !OWN_HTTP_PREFIXES.contains(&p))
                {
                    mark(metric);
                }
            }
        }
    }
}

/// `<prefix>` of a cluster name `<prefix>-<16 hex digits>`.
pub fn mergeable_prefix(cluster: &str) -> Option<&str> {
    let (prefix, hash) = cluster.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
}

fn is_mesh_cluster(cluster: &str) -> bool {
    !BOOTSTRAP_CLUSTERS.contains(&cluster) && !OWN_CLUSTERS.contains(&cluster)
}

/// Sets [`MESH_TRAFFIC_LABEL`] to `true` (appended, as Kuma does; replaced if the series
/// somehow had it, where Kuma would write it twice).
fn mark(metric: &mut Metric) {
    match metric
        .labels
        .iter_mut()
        .find(|(n, _)| n == MESH_TRAFFIC_LABEL)
    {
        Some((_, value)) => *value = "true".to_string(),
        None => metric
            .labels
            .push((MESH_TRAFFIC_LABEL.to_string(), "true".to_string())),
    }
}

fn merge_cluster_family(family: &mut Family) {
    let mut merged: Vec<Metric> = Vec::with_capacity(family.metrics.len());
    // Sorted label set -> index in `merged`.
    let mut seen: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    for mut metric in std::mem::take(&mut family.metrics) {
        let Some(cluster) = metric.label(CLUSTER_LABEL).map(str::to_string) else {
            merged.push(metric);
            continue;
        };
        if let Some(prefix) = mergeable_prefix(&cluster) {
            let prefix = prefix.to_string();
            for (name, value) in &mut metric.labels {
                if name == CLUSTER_LABEL {
                    *value = prefix.clone();
                }
            }
        }
        let mut key = metric.labels.clone();
        key.sort();
        match seen.get(&key) {
            Some(at) => {
                let into = &mut merged[*at];
                into.timestamp_ms = None;
                add(&mut into.value, &metric.value);
            }
            None => {
                seen.insert(key, merged.len());
                merged.push(metric);
            }
        }
    }
    for metric in &mut merged {
        if let Value::Summary { quantiles, .. } = &mut metric.value {
            quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        if let Value::Histogram { buckets, .. } = &mut metric.value {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        if metric.label(CLUSTER_LABEL).is_some_and(is_mesh_cluster) {
            mark(metric);
        }
    }
    family.metrics = merged;
}

/// Adds `from` into `into` (same family, so the same kind of value).
fn add(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Single(a), Value::Single(b)) => *a += b,
        (
            Value::Summary {
                quantiles,
                sum,
                count,
            },
            Value::Summary {
                quantiles: q2,
                sum: s2,
                count: c2,
            },
        ) => {
            for (q, v) in q2 {
                match quantiles.iter_mut().find(|(k, _)| k == q) {
                    Some((_, acc)) => *acc += v,
                    None => quantiles.push((*q, *v)),
                }
            }
            *sum += s2;
            *count = count.saturating_add(*c2);
        }
        (
            Value::Histogram {
                buckets,
                sum,
                count,
            },
            Value::Histogram {
                buckets: b2,
                sum: s2,
                count: c2,
            },
        ) => {
            for (le, c) in b2 {
                match buckets.iter_mut().find(|(k, _)| k == le) {
                    Some((_, acc)) => *acc = acc.saturating_add(*c),
                    None => buckets.push((*le, *c)),
                }
            }
            *sum += s2;
            *count = count.saturating_add(*c2);
        }
        // The parser gives one family one kind of value.
        _ => {}
    }
}

#[cfg(test)]
mod tests;
