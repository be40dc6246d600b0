//! The CP's own view of config delivery: its `/metrics` `xds_delivery{type_url}` histogram
//! (milliseconds from a new version set for a proxy to the proxy's ACK or NACK; see kuma-cp
//! `metrics::xds`), scraped with `--cp-metrics` after the connect phase and at the end of a
//! run, and printed per type and per part of the run (the difference of two scrapes) next to
//! the harness's own figures: count, sum, and p50 / p99 estimated from the buckets as
//! Prometheus' `histogram_quantile` does (linear inside the bucket).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One cumulative histogram as scraped: `(le, cumulative count)` in order, `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// What was observed between `earlier` and `self` (two scrapes of one process).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c - before(*le)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The `q` quantile (0..1) estimated from the buckets; `None` without observations. A
    /// quantile in the `+Inf` bucket is the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for (le, c) in &self.buckets {
            if *c >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let in_bucket = c - prev.1;
                if in_bucket <= 0.0 {
                    return Some(*le);
                }
                return Some(prev.0 + (le - prev.0) * (rank - prev.1) / in_bucket);
            }
            prev = (*le, *c);
        }
        Some(prev.0)
    }
}

/// `name{labels}` → the value of `label`, if the line is a series of `name`.
fn label<'a>(line: &'a str, name: &str, label: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix('{')?;
    let labels = &rest[..rest.find('}')?];
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == label).then(|| v.trim_matches('"'))
    })
}

fn value(line: &str) -> Option<f64> {
    line.rsplit(' ').next()?.parse().ok()
}

/// The histogram `name` of a text exposition, per value of `by` (e.g. `type_url`).
pub fn histograms(text: &str, name: &str, by: &str) -> BTreeMap<String, Histogram> {
    let mut out: BTreeMap<String, Histogram> = BTreeMap::new();
    let (bucket, sum, count) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(v) = value(line) else { continue };
        if let Some(key) = label(line, &bucket, by) {
            let le = match label(line, &bucket, "le") {
                Some("+Inf") => f64::INFINITY,
                Some(le) => match le.parse() {
                    Ok(le) => le,
                    Err(_) => continue,
                },
                None => continue,
            };
            out.entry(key.to_string())
                .or_default()
                .buckets
                .push((le, v));
        } else if let Some(key) = label(line, &sum, by) {
            out.entry(key.to_string()).or_default().sum = v;
        } else if let Some(key) = label(line, &count, by) {
            out.entry(key.to_string()).or_default().count = v;
        }
    }
    for h in out.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// One row of the CP delivery table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// Part of the run (`connect`, `after connect`).
    pub part: String,
    /// `cds`, `eds`, `lds`, `rds`, `sds`.
    pub r#type: String,
    pub count: f64,
    pub sum_ms: f64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn short(type_url: &str) -> &str {
    match type_url.rsplit('.').next().unwrap_or(type_url) {
        "Cluster" => "cds",
        "ClusterLoadAssignment" => "eds",
        "Listener" => "lds",
        "RouteConfiguration" => "rds",
        "Secret" => "sds",
        other => other,
    }
}

/// Rows for `part` from the `xds_delivery` histograms of `now` minus those of `before`.
pub fn rows(part: &str, now: &str, before: Option<&str>) -> Vec<Row> {
    let earlier = before
        .map(|b| histograms(b, "xds_delivery", "type_url"))
        .unwrap_or_default();
    histograms(now, "xds_delivery", "type_url")
        .into_iter()
        .map(|(t, h)| {
            let h = earlier.get(&t).map_or(h.clone(), |e| h.since(e));
            Row {
                part: part.to_string(),
                r#type: short(&t).to_string(),
                count: h.count,
                sum_ms: h.sum,
                mean_ms: (h.count > 0.0).then(|| h.sum / h.count),
                p50_ms: h.quantile(0.5),
                p99_ms: h.quantile(0.99),
            }
        })
        .collect()
}

/// The table of `rows`.
pub fn table(rows: &[Row], s: &mut String) {
    let _ = writeln!(
        s,
        "CP xds_delivery (its /metrics: version set for a proxy -> its ACK/NACK; p50/p99 from the buckets)"
    );
    let _ = writeln!(
        s,
        "{:<16} {:>5} {:>9} {:>11} {:>9} {:>9} {:>9}",
        "part", "type", "count", "sum ms", "mean ms", "p50 ms", "p99 ms"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in rows {
        let _ = writeln!(
            s,
            "{:<16} {:>5} {:>9} {:>11.1} {:>9} {:>9} {:>9}",
            r.part,
            r.r#type,
            r.count,
            r.sum_ms,
            f(r.mean_ms),
            f(r.p50_ms),
            f(r.p99_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn exposition(counts: [u64; 4], sum: f64) -> String {
        format!(
            "# HELP xds_delivery x\n# TYPE xds_delivery histogram\n\
             xds_delivery_bucket{{type_url=\"{CDS}\",zone=\"default\",le=\"1\"}} {}\n\
             xds_delivery_bucket{{type_url=\"{CDS}\",zone=\"default\",le=\"10\"}} {}\n\
             xds_delivery_bucket{{type_url=\"{CDS}\",zone=\"default\",le=\"100\"}} {}\n\
             xds_delivery_bucket{{type_url=\"{CDS}\",zone=\"default\",le=\"+Inf\"}} {}\n\
             xds_delivery_sum{{type_url=\"{CDS}\",zone=\"default\"}} {sum}\n\
             xds_delivery_count{{type_url=\"{CDS}\",zone=\"default\"}} {}\n\
             xds_streams_active{{zone=\"default\"}} 3\n",
            counts[0], counts[1], counts[2], counts[3], counts[3]
        )
    }

    #[test]
    fn histograms_are_parsed_and_quantiles_estimated_like_prometheus() {
        let text = exposition([10, 60, 100, 100], 1234.5);
        let h = &histograms(&text, "xds_delivery", "type_url")[CDS];
        assert_eq!(h.count, 100.0);
        assert_eq!(h.sum, 1234.5);
        assert_eq!(h.buckets.len(), 4);
        // Rank 50 falls in (1, 10]: 40 of its 50 samples → 1 + 9 × 40/50.
        assert!((h.quantile(0.5).unwrap() - 8.2).abs() < 1e-9);
        // Rank 99 in (10, 100]: 10 + 90 × 39/40.
        assert!((h.quantile(0.99).unwrap() - 97.75).abs() < 1e-9);
        // Everything above the last finite bound: that bound.
        let inf = histograms(&exposition([0, 0, 0, 5], 1e6), "xds_delivery", "type_url");
        assert_eq!(inf[CDS].quantile(0.5), Some(100.0));
        assert_eq!(
            histograms(&exposition([0; 4], 0.0), "xds_delivery", "type_url")[CDS].quantile(0.5),
            None
        );
    }

    #[test]
    fn a_part_of_the_run_is_the_difference_of_two_scrapes() {
        let before = exposition([10, 60, 100, 100], 1000.0);
        let now = exposition([10, 70, 120, 120], 1300.0);
        let rows = rows("after connect", &now, Some(&before));
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.r#type.as_str(), r.count, r.sum_ms), ("cds", 20.0, 300.0));
        assert_eq!(r.mean_ms, Some(15.0));
        // 10 new in (1, 10], 10 in (10, 100]: the median is the top of the first.
        assert!((r.p50_ms.unwrap() - 10.0).abs() < 1e-9);
        let mut s = String::new();
        table(&rows, &mut s);
        assert!(s.contains("after connect      cds"), "{s}");
    }
}
