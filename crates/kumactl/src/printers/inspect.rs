//! The tables of `kumactl inspect zones` (from `ZoneOverview` items, [`zones`]) and
//! `kumactl inspect dataplanes`, from `DataplaneOverview` items:
//! `{"mesh","name","dataplane":{"networking"},"dataplaneInsight":{"subscriptions":[...],"mTLS":{...}}}`.
//!
//! The last subscription is the current (or latest) xDS stream. Protobuf JSON omits zero
//! counters, so a subscription without `responsesSent` has sent `0`; without any subscription
//! the counters are `-`. Counters may arrive as strings (`uint64`) or numbers.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::age;
use super::table::Table;

/// Column headers, in Kuma's order.
pub const HEADERS: [&str; 15] = [
    "MESH",
    "NAME",
    "TAGS",
    "STATUS",
    "LAST CONNECTED AGO",
    "LAST UPDATED AGO",
    "TOTAL UPDATES",
    "TOTAL ERRORS",
    "CERT REGENERATED AGO",
    "CERT EXPIRATION",
    "CERT REGENERATIONS",
    "CERT BACKEND",
    "SUPPORTED CERT BACKENDS",
    "KUMA-DP VERSION",
    "ENVOY VERSION",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Overview {
    mesh: String,
    name: String,
    dataplane: DataplaneView,
    dataplane_insight: Option<InsightView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DataplaneView {
    networking: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InsightView {
    subscriptions: Vec<Subscription>,
    #[serde(rename = "mTLS")]
    mtls: Option<MtlsView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Subscription {
    connect_time: Option<String>,
    disconnect_time: Option<String>,
    status: StatusView,
    version: VersionView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StatusView {
    last_update_time: Option<String>,
    total: Counters,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Counters {
    responses_sent: Value,
    responses_rejected: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct VersionView {
    kuma_dp: Versioned,
    envoy: Versioned,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Versioned {
    version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MtlsView {
    certificate_expiration_time: Option<String>,
    last_certificate_regeneration: Option<String>,
    certificate_regenerations: Value,
    issued_backend: String,
    supported_backends: Vec<String>,
}

/// A counter that may be a JSON string or number; absent is `0`.
fn counter(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".into(),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// The inspect table of `items` at time `now`.
pub fn dataplanes(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(HEADERS);
    for item in items {
        let o: Overview = serde_json::from_value(item.clone()).unwrap_or_default();
        let insight = o.dataplane_insight.unwrap_or_default();
        let online = insight
            .subscriptions
            .iter()
            .any(|s| s.connect_time.is_some() && s.disconnect_time.is_none());
        let last = insight.subscriptions.last();
        let mtls = insight.mtls.as_ref();
        t.push(vec![
            o.mesh,
            o.name,
            super::tags(&o.dataplane.networking),
            if online { "Online" } else { "Offline" }.into(),
            age::since(last.and_then(|s| s.connect_time.as_deref()), now),
            age::since(last.and_then(|s| s.status.last_update_time.as_deref()), now),
            last.map_or("-".into(), |s| counter(&s.status.total.responses_sent)),
            last.map_or("-".into(), |s| counter(&s.status.total.responses_rejected)),
            age::since(
                mtls.and_then(|m| m.last_certificate_regeneration.as_deref()),
                now,
            ),
            age::date(mtls.and_then(|m| m.certificate_expiration_time.as_deref())),
            mtls.map_or("-".into(), |m| counter(&m.certificate_regenerations)),
            or_dash(mtls.map_or("", |m| m.issued_backend.as_str())),
            or_dash(
                &mtls
                    .map(|m| m.supported_backends.join(","))
                    .unwrap_or_default(),
            ),
            or_dash(last.map_or("", |s| s.version.kuma_dp.version.as_str())),
            or_dash(last.map_or("", |s| s.version.envoy.version.as_str())),
        ]);
    }
    t
}

/// Column headers of `kumactl inspect zone-ingresses` and `zone-egresses`, in Kuma's order.
pub const ZONE_PROXY_HEADERS: [&str; 8] = [
    "NAME",
    "STATUS",
    "LAST CONNECTED AGO",
    "LAST UPDATED AGO",
    "TOTAL UPDATES",
    "TOTAL ERRORS",
    "KUMA-DP VERSION",
    "ENVOY VERSION",
];

/// The inspect table of zone proxy overviews (`insight_key`: `zoneIngressInsight` or
/// `zoneEgressInsight`). Updates and errors are summed over the subscriptions, as Kuma does.
pub fn zone_proxies(items: &[Value], insight_key: &str, now: DateTime<Utc>) -> Table {
    let mut t = Table::new(ZONE_PROXY_HEADERS);
    for item in items {
        let name = item["name"].as_str().unwrap_or_default().to_string();
        let insight: InsightView =
            serde_json::from_value(item[insight_key].clone()).unwrap_or_default();
        let online = insight
            .subscriptions
            .iter()
            .any(|s| s.connect_time.is_some() && s.disconnect_time.is_none());
        let last = insight.subscriptions.last();
        let sum = |f: fn(&Subscription) -> &Value| -> u64 {
            insight
                .subscriptions
                .iter()
                .map(|s| counter(f(s)).parse::<u64>().unwrap_or(0))
                .sum()
        };
        t.push(vec![
            name,
            if online { "Online" } else { "Offline" }.into(),
            age::since(last.and_then(|s| s.connect_time.as_deref()), now),
            age::since(last.and_then(|s| s.status.last_update_time.as_deref()), now),
            sum(|s| &s.status.total.responses_sent).to_string(),
            sum(|s| &s.status.total.responses_rejected).to_string(),
            or_dash(last.map_or("", |s| s.version.kuma_dp.version.as_str())),
            or_dash(last.map_or("", |s| s.version.envoy.version.as_str())),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zone_proxy_table() {
        let now = age::parse("2026-01-05T12:00:00Z").unwrap();
        let items = [
            json!({"type": "ZoneIngressOverview", "name": "zi-1",
                "zoneIngress": {"networking": {"address": "127.0.0.1", "port": 10001}},
                "zoneIngressInsight": {"subscriptions": [
                    {"id": "1", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-05T10:00:00Z",
                     "disconnectTime": "2026-01-05T10:30:00Z",
                     "status": {"lastUpdateTime": "2026-01-05T10:29:00Z", "total": {"responsesSent": "9", "responsesRejected": "1"}}},
                    {"id": "2", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-05T11:00:00Z",
                     "status": {"lastUpdateTime": "2026-01-05T11:59:30Z", "total": {"responsesSent": "3"}},
                     "version": {"kumaDp": {"version": "2.14.3"}, "envoy": {"version": "1.38.2"}}}]}}),
            json!({"type": "ZoneIngressOverview", "name": "zi-2", "zoneIngress": {}, "zoneIngressInsight": {}}),
        ];
        let got = zone_proxies(&items, "zoneIngressInsight", now).render();
        let lines: Vec<&str> = got.lines().collect();
        assert!(
            lines[0].starts_with("NAME   STATUS    LAST CONNECTED AGO"),
            "{got}"
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "zi-1", "Online", "60m", "30s", "12", "1", "2.14.3", "1.38.2"
            ],
            "{got}"
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            ["zi-2", "Offline", "never", "never", "0", "0", "-", "-"],
            "{got}"
        );
    }

    #[test]
    fn inspect_table() {
        let now = age::parse("2026-01-05T12:00:00Z").unwrap();
        let items = [
            json!({"type": "DataplaneOverview", "mesh": "default", "name": "backend-1",
            "creationTime": "2026-01-05T10:00:00Z",
            "dataplane": {"networking": {"address": "10.0.0.2", "inbound": [{"port": 8000, "tags": {"kuma.io/service": "backend"}}]}},
            "dataplaneInsight": {
                "subscriptions": [
                    {"id": "1", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-05T10:00:00Z", "disconnectTime": "2026-01-05T10:30:00Z",
                     "status": {"lastUpdateTime": "2026-01-05T10:29:00Z", "total": {"responsesSent": "9"}}},
                    {"id": "2", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-05T11:00:00Z",
                     "status": {"lastUpdateTime": "2026-01-05T11:59:30Z", "total": {"responsesSent": "3", "responsesAcknowledged": "3", "responsesRejected": "1"}},
                     "version": {"kumaDp": {"version": "2.14.3"}, "envoy": {"version": "1.38.2"}}}
                ],
                "mTLS": {"certificateExpirationTime": "2026-01-06T11:00:00Z", "lastCertificateRegeneration": "2026-01-05T11:00:00Z",
                         "certificateRegenerations": 2, "issuedBackend": "ca-1", "supportedBackends": ["ca-1", "ca-2"]}
            }}),
            json!({"type": "DataplaneOverview", "mesh": "default", "name": "never-seen",
                "dataplane": {"networking": {"address": "10.0.0.3", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}},
                "dataplaneInsight": {}}),
        ];
        let got = dataplanes(&items, now).render();
        super::super::assert_golden("inspect-dataplanes", &got);
    }
}

/// Column headers of `kumactl inspect services` (Kuma's).
pub const SERVICE_HEADERS: [&str; 3] = ["SERVICE", "STATUS", "DATAPLANES"];

/// The table of `kumactl inspect services`, from `ServiceInsight` items: Kuma's status words
/// (`online` → `Online`, `partially_degraded` → `Partially degraded`, anything else →
/// `Offline`) and `<online>/<total>` Dataplanes (absent numbers are `0`).
pub fn services(items: &[Value]) -> Table {
    let mut t = Table::new(SERVICE_HEADERS);
    for item in items {
        let status = match item.get("status").and_then(Value::as_str) {
            Some("online") => "Online",
            Some("partially_degraded") => "Partially degraded",
            _ => "Offline",
        };
        let n = |k: &str| {
            counter(
                item.pointer(&format!("/dataplanes/{k}"))
                    .unwrap_or(&Value::Null),
            )
        };
        t.push(vec![
            item.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            status.into(),
            format!("{}/{}", n("online"), n("total")),
        ]);
    }
    t
}

/// A `ServiceInsight` item as `kumactl inspect services -o json|yaml` prints it (Kuma's
/// `ServiceOverview` type).
pub fn service_overview(mut item: Value) -> Value {
    if let Some(t) = item.get_mut("type") {
        *t = Value::String("ServiceOverview".into());
    }
    item
}

#[cfg(test)]
mod service_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inspect_services_table() {
        let items = vec![
            json!({"type": "ServiceInsight", "mesh": "default", "name": "backend", "status": "partially_degraded",
                   "dataplanes": {"total": 10, "online": 5, "offline": 5}, "addressPort": "backend.mesh:80"}),
            json!({"type": "ServiceInsight", "mesh": "default", "name": "web", "status": "online",
                   "dataplanes": {"total": 20, "online": 20}}),
            json!({"type": "ServiceInsight", "mesh": "default", "name": "orders", "status": "offline",
                   "dataplanes": {"total": 5, "offline": 5}}),
            json!({"type": "ServiceInsight", "mesh": "default", "name": "httpbin", "status": "not_available",
                   "dataplanes": {}, "serviceType": "external"}),
        ];
        super::super::assert_golden("inspect-services", &services(&items).render());
        assert_eq!(
            service_overview(items[0].clone())["type"],
            "ServiceOverview"
        );
    }
}

/// One mesh with what `inspect meshes` shows about it.
pub struct MeshRow {
    /// The Mesh resource as the API returns it.
    pub mesh: Value,
    /// Its `DataplaneOverview`s.
    pub overviews: Vec<Value>,
    /// Number of MeshTrafficPermissions in it.
    pub permissions: usize,
    /// Why its mTLS CA cannot be loaded (the control plane's MeshInsight), if it cannot.
    pub mtls_error: Option<String>,
}

impl MeshRow {
    fn backend(&self) -> Option<&Value> {
        let mtls = self.mesh.get("mtls")?;
        let enabled = mtls
            .get("enabledBackend")?
            .as_str()
            .filter(|s| !s.is_empty())?;
        mtls.get("backends")?
            .as_array()?
            .iter()
            .find(|b| b.get("name").and_then(Value::as_str) == Some(enabled))
    }

    /// `builtin/ca-1 (STRICT)`, or `off`; with `CA ERROR: <reason>` when the CA cannot be
    /// loaded.
    fn mtls(&self) -> String {
        let state = self.mtls_state();
        match &self.mtls_error {
            Some(e) => format!("{state} CA ERROR: {e}"),
            None => state,
        }
    }

    fn mtls_state(&self) -> String {
        match self.backend() {
            Some(b) => format!(
                "{}/{} ({})",
                b.get("type").and_then(Value::as_str).unwrap_or("?"),
                b.get("name").and_then(Value::as_str).unwrap_or("?"),
                b.get("mode").and_then(Value::as_str).unwrap_or("STRICT")
            ),
            None => "off".into(),
        }
    }

    fn online(&self) -> usize {
        self.overviews
            .iter()
            .filter(|o| {
                o.pointer("/dataplaneInsight/subscriptions")
                    .and_then(Value::as_array)
                    .is_some_and(|subs| {
                        subs.iter().any(|s| {
                            s.get("connectTime").is_some() && s.get("disconnectTime").is_none()
                        })
                    })
            })
            .count()
    }

    /// Proxies whose current certificate comes from the enabled backend.
    fn with_certificate(&self) -> usize {
        let Some(name) = self
            .backend()
            .and_then(|b| b.get("name"))
            .and_then(Value::as_str)
        else {
            return 0;
        };
        self.overviews
            .iter()
            .filter(|o| {
                o.pointer("/dataplaneInsight/mTLS/issuedBackend")
                    .and_then(Value::as_str)
                    == Some(name)
            })
            .count()
    }

    /// The row as JSON (for `-o json|yaml`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.mesh.get("name").cloned().unwrap_or(Value::Null),
            "mtls": self.mtls(),
            "dataplanes": {"total": self.overviews.len(), "online": self.online(), "withCertificate": self.with_certificate()},
            "meshTrafficPermissions": self.permissions,
            "mtlsError": self.mtls_error,
        })
    }
}

/// The table of `kumactl inspect meshes`.
pub fn meshes(rows: &[MeshRow]) -> Table {
    let mut t = Table::new([
        "NAME",
        "mTLS",
        "DPs ONLINE/TOTAL",
        "DPs WITH CERT",
        "TRAFFIC PERMISSIONS",
    ]);
    for r in rows {
        t.push(vec![
            r.mesh
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            r.mtls(),
            format!("{}/{}", r.online(), r.overviews.len()),
            if r.backend().is_some() {
                format!("{}/{}", r.with_certificate(), r.overviews.len())
            } else {
                "-".into()
            },
            r.permissions.to_string(),
        ]);
    }
    t
}

#[cfg(test)]
mod mesh_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inspect_meshes_table() {
        let rows = vec![
            MeshRow {
                mesh: json!({"name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin", "mode": "PERMISSIVE"}]}}),
                overviews: vec![
                    json!({"dataplaneInsight": {"subscriptions": [{"connectTime": "t"}], "mTLS": {"issuedBackend": "ca-1"}}}),
                    json!({"dataplaneInsight": {"subscriptions": [{"connectTime": "t", "disconnectTime": "u"}]}}),
                ],
                permissions: 2,
                mtls_error: None,
            },
            MeshRow {
                mesh: json!({"name": "other"}),
                overviews: vec![],
                permissions: 0,
                mtls_error: None,
            },
        ];
        assert_eq!(
            meshes(&rows).render(),
            "NAME      mTLS                        DPs ONLINE/TOTAL   DPs WITH CERT   TRAFFIC PERMISSIONS\n\
             default   builtin/ca-1 (PERMISSIVE)   1/2                1/2             2\n\
             other     off                         0/0                -               0\n"
        );
    }

    #[test]
    fn inspect_meshes_shows_a_ca_error() {
        let row = MeshRow {
            mesh: json!({"name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "provided"}]}}),
            overviews: vec![],
            permissions: 0,
            mtls_error: Some("backend ca-1: cannot read conf.cert".into()),
        };
        let table = meshes(std::slice::from_ref(&row)).render();
        assert!(
            table.contains("provided/ca-1 (STRICT) CA ERROR: backend ca-1: cannot read conf.cert"),
            "{table}"
        );
        assert_eq!(
            row.to_json()["mtlsError"],
            "backend ca-1: cannot read conf.cert"
        );
    }
}

/// Column headers of `kumactl inspect zones`, in Kuma's order.
pub const ZONE_HEADERS: [&str; 8] = [
    "NAME",
    "STATUS",
    "LAST CONNECTED AGO",
    "LAST UPDATED AGO",
    "TOTAL UPDATES",
    "TOTAL ERRORS",
    "ZONE-CP VERSION",
    "BACKEND",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ZoneOverview {
    name: String,
    zone: kuma_core::resource::Zone,
    zone_insight: kuma_core::resource::ZoneInsight,
}

/// The store type in a zone CP's configuration JSON (`store.type`), if it says.
fn store_type(config: &str) -> String {
    serde_json::from_str::<Value>(config)
        .ok()
        .and_then(|c| {
            c.pointer("/store/type")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The table of `kumactl inspect zones` at time `now`, as Kuma's: Online when the insight
/// is online and the Zone enabled; ages and version of the last subscription; updates and
/// errors summed over every subscription; the zone CP's store type (`BACKEND`).
pub fn zones(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(ZONE_HEADERS);
    for item in items {
        let o: ZoneOverview = serde_json::from_value(item.clone()).unwrap_or_default();
        let insight = &o.zone_insight;
        let last = insight.last_subscription();
        let online = insight.is_online() && o.zone.is_enabled();
        t.push(vec![
            o.name.clone(),
            if online { "Online" } else { "Offline" }.into(),
            age::since(last.and_then(|s| s.connect_time.as_deref()), now),
            age::since(
                last.and_then(|s| s.status.as_ref())
                    .and_then(|s| s.last_update_time.as_deref()),
                now,
            ),
            insight.sum(|s| s.total().responses_sent).to_string(),
            insight.sum(|s| s.total().responses_rejected).to_string(),
            last.and_then(|s| s.version.as_ref())
                .map(|v| v.kuma_cp.version.clone())
                .unwrap_or_default(),
            last.map(|s| store_type(&s.config)).unwrap_or_default(),
        ]);
    }
    t
}

#[cfg(test)]
mod zone_tests {
    use serde_json::json;

    use super::*;

    /// Kuma's `inspect zones` test data (`app/kumactl/cmd/inspect`), as the API serves it.
    #[test]
    fn inspect_zones_table() {
        let now = age::parse("2019-07-17T18:08:41Z").unwrap();
        let version = json!({"kumaCp": {"version": "1.0.0", "gitTag": "v1.0.0"}});
        let items = [
            json!({"type": "ZoneOverview", "name": "zone-1", "zone": {"enabled": true}, "zoneInsight": {"subscriptions": [
                {"id": "1", "globalInstanceId": "node-001", "connectTime": "2018-07-17T16:05:36.995Z",
                 "status": {"total": {"responsesSent": "22", "responsesRejected": "11"}, "stat": {"Mesh": {"responsesSent": "2"}}},
                 "version": version},
                {"id": "2", "globalInstanceId": "node-002", "connectTime": "2019-07-17T16:05:36.995Z",
                 "status": {"total": {"responsesSent": "20", "responsesRejected": "2"}},
                 "version": version, "config": "{\"store\":{\"type\":\"memory\"},\"mode\":\"zone\"}"}]}}),
            json!({"type": "ZoneOverview", "name": "zone-2", "zone": {"enabled": true}, "zoneInsight": {"subscriptions": [
                {"id": "1", "globalInstanceId": "node-001"}, {"id": "2", "globalInstanceId": "node-002"}, {"id": "3", "globalInstanceId": "node-003"}]}}),
            // Connected but disabled: Offline.
            json!({"type": "ZoneOverview", "name": "zone-3", "zone": {"enabled": false}, "zoneInsight": {"subscriptions": [
                {"id": "1", "globalInstanceId": "node-001", "connectTime": "2019-07-17T16:05:36.995Z", "version": version}]}}),
            // Never connected: no insight at all.
            json!({"type": "ZoneOverview", "name": "zone-4", "zone": {}, "zoneInsight": {}}),
            // Disconnected.
            json!({"type": "ZoneOverview", "name": "zone-5", "zone": {}, "zoneInsight": {"subscriptions": [
                {"id": "1", "globalInstanceId": "g", "connectTime": "2019-07-17T18:00:00Z", "disconnectTime": "2019-07-17T18:08:00Z",
                 "status": {"lastUpdateTime": "2019-07-17T18:07:41Z", "total": {"responsesSent": "3"}}}]}}),
        ];
        super::super::assert_golden("inspect-zones", &zones(&items, now).render());
    }
}
