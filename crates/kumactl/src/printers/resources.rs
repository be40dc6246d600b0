//! Tables of `kumactl get`: one layout per resource type, following Kuma's.
//!
//! - Mesh: `NAME mTLS METRICS LOGGING TRACING LOCALITY ZONEEGRESS AGE`
//! - Dataplane: `MESH NAME TAGS AGE`
//! - Zone and other global types: `NAME AGE`
//! - every other mesh-scoped type: `MESH NAME AGE`

use chrono::{DateTime, Utc};
use kuma_core::resource::{ResourceType, Scope};
use serde::Deserialize;
use serde_json::Value;

use super::age;
use super::table::Table;

/// The table of `items` (wire JSON of resources of type `rtype`) at time `now`.
pub fn table(rtype: ResourceType, items: &[Value], now: DateTime<Utc>) -> Table {
    match rtype {
        ResourceType::Mesh => meshes(items, now),
        ResourceType::Dataplane => dataplanes(items, now),
        _ => generic(rtype, items, now),
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// AGE from `creationTime`; `-` when the server did not send one.
fn age(v: &Value, now: DateTime<Utc>) -> String {
    match v.get("creationTime").and_then(Value::as_str) {
        Some(t) if age::parse(t).is_some() => age::since(Some(t), now),
        _ => "-".into(),
    }
}

/// The parts of a Mesh the table shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MeshView {
    mtls: Backends,
    metrics: Backends,
    logging: Backends,
    tracing: Backends,
    routing: Routing,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Backends {
    enabled_backend: String,
    backends: Vec<Backend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Backend {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Routing {
    locality_aware_load_balancing: bool,
    zone_egress: bool,
}

impl Backend {
    fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl Backends {
    /// `type/name` of the enabled backend, or `off`.
    fn enabled(&self) -> String {
        if self.enabled_backend.is_empty() {
            return "off".into();
        }
        self.backends
            .iter()
            .find(|b| b.name == self.enabled_backend)
            .map(Backend::label)
            .unwrap_or_else(|| self.enabled_backend.clone())
    }

    /// `type/name, type/name` of every backend, or `off`.
    fn all(&self) -> String {
        if self.backends.is_empty() {
            return "off".into();
        }
        self.backends
            .iter()
            .map(Backend::label)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

fn meshes(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new([
        "NAME",
        "mTLS",
        "METRICS",
        "LOGGING",
        "TRACING",
        "LOCALITY",
        "ZONEEGRESS",
        "AGE",
    ]);
    for item in items {
        let m: MeshView = serde_json::from_value(item.clone()).unwrap_or_default();
        t.push(vec![
            str_field(item, "name").into(),
            m.mtls.enabled(),
            m.metrics.enabled(),
            m.logging.all(),
            m.tracing.all(),
            on_off(m.routing.locality_aware_load_balancing),
            on_off(m.routing.zone_egress),
            age(item, now),
        ]);
    }
    t
}

fn dataplanes(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(["MESH", "NAME", "TAGS", "AGE"]);
    for item in items {
        let networking = item.get("networking").cloned().unwrap_or(Value::Null);
        t.push(vec![
            str_field(item, "mesh").into(),
            str_field(item, "name").into(),
            super::tags(&networking),
            age(item, now),
        ]);
    }
    t
}

fn generic(rtype: ResourceType, items: &[Value], now: DateTime<Utc>) -> Table {
    let with_mesh = rtype.scope() == Scope::Mesh;
    let headers: &[&str] = if with_mesh {
        &["MESH", "NAME", "AGE"]
    } else {
        &["NAME", "AGE"]
    };
    let mut t = Table::new(headers.iter().copied());
    for item in items {
        let mut row = Vec::with_capacity(3);
        if with_mesh {
            row.push(str_field(item, "mesh").into());
        }
        row.push(str_field(item, "name").into());
        row.push(age(item, now));
        t.push(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        age::parse("2026-01-05T12:00:00Z").unwrap()
    }

    #[test]
    fn mesh_table() {
        let items = [
            json!({"type": "Mesh", "name": "default", "creationTime": "2026-01-05T11:59:55Z"}),
            json!({"type": "Mesh", "name": "secure", "creationTime": "2026-01-01T12:00:00Z",
                "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
                "metrics": {"enabledBackend": "prom-1", "backends": [{"name": "prom-1", "type": "prometheus"}]},
                "logging": {"backends": [{"name": "file", "type": "file"}, {"name": "tcp", "type": "tcp"}]},
                "tracing": {"backends": [{"name": "zipkin", "type": "zipkin"}]},
                "routing": {"localityAwareLoadBalancing": true, "zoneEgress": true}}),
        ];
        let got = table(ResourceType::Mesh, &items, now()).render();
        super::super::assert_golden("meshes", &got);
    }

    #[test]
    fn dataplane_table() {
        let items = [
            json!({"type": "Dataplane", "mesh": "default", "name": "backend-1", "creationTime": "2026-01-05T09:00:00Z",
                "networking": {"address": "10.0.0.2", "inbound": [{"port": 8000, "tags": {"kuma.io/service": "backend", "kuma.io/zone": "default", "version": "v1"}}]}}),
            json!({"type": "Dataplane", "mesh": "default", "name": "gw", "creationTime": "2026-01-05T11:57:00Z",
                "networking": {"address": "10.0.0.3", "gateway": {"tags": {"kuma.io/service": "edge"}}}}),
        ];
        let got = table(ResourceType::Dataplane, &items, now()).render();
        super::super::assert_golden("dataplanes", &got);
    }

    #[test]
    fn generic_tables() {
        let items =
            [json!({"type": "Zone", "name": "zone-1", "creationTime": "2026-01-05T11:00:00Z"})];
        assert_eq!(
            table(ResourceType::Zone, &items, now()).render(),
            "NAME     AGE\nzone-1   60m\n"
        );
        let items =
            [json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all"})];
        assert_eq!(
            table(ResourceType::MeshTrafficPermission, &items, now()).render(),
            "MESH      NAME        AGE\ndefault   allow-all   -\n"
        );
        assert_eq!(
            table(ResourceType::Secret, &[], now()).render(),
            "MESH   NAME   AGE\n"
        );
    }
}
