//! Pure computation of a mesh's insights (Kuma's `pkg/insights/resyncer.go`): the status of
//! each Dataplane, the mesh's services ([`services`]) and its MeshInsight ([`mesh_insight`]),
//! in Kuma's JSON shapes (protobuf JSON: zero numbers and empty maps are left out).
//!
//! Inputs are the mesh's Dataplanes, each with its DataplaneInsight if any ([`DataplaneEntry`]),
//! and the number of resources of each mesh-scoped type. No IO.

use std::collections::{BTreeMap, BTreeSet};

use kuma_core::resource::dataplane::{GatewayType, SERVICE_TAG, ZONE_TAG};
use kuma_core::resource::{Dataplane, DataplaneInsight};
use serde::Serialize;
use serde_json::Value;

/// A Dataplane's status (Kuma's `DataplaneOverviewResource.Status()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Online,
    Offline,
    PartiallyDegraded,
}

impl Status {
    /// Kuma's words: `Online`, `Offline`, `Partially degraded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::Offline => "Offline",
            Self::PartiallyDegraded => "Partially degraded",
        }
    }
}

/// Kuma's status rule: the proxy is online when some xDS subscription is connected and not
/// disconnected ([`DataplaneInsight::is_online`], the rule of the Dataplane overviews). A
/// gateway is Online iff its proxy is. Otherwise the inbounds not reported unhealthy
/// (`health.ready: false`) nor `state: NotReady`, and the listeners in state `Ready`, are
/// ready: none ready (or the proxy offline) is Offline, some is Partially degraded, all is
/// Online. A Dataplane with neither inbounds nor listeners is therefore Offline.
pub fn status(dp: &Dataplane, insight: Option<&DataplaneInsight>) -> Status {
    status_of(dp, insight.is_some_and(DataplaneInsight::is_online))
}

/// [`status`] of a Dataplane whose proxy is `online` or not.
pub fn status_of(dp: &Dataplane, online: bool) -> Status {
    if dp.gateway().is_some() {
        return if online {
            Status::Online
        } else {
            Status::Offline
        };
    }
    let inbounds = dp.inbounds();
    let listeners = dp.networking().map_or(&[][..], |n| &n.listeners[..]);
    let total = inbounds.len() + listeners.len();
    let ready = inbounds
        .iter()
        .filter(|i| {
            let unhealthy = i.health.as_ref().is_some_and(|h| !h.ready);
            !unhealthy && i.state.as_deref() != Some("NotReady")
        })
        .count()
        + listeners
            .iter()
            .filter(|l| l.state.as_deref().is_none_or(|s| s == "Ready"))
            .count();
    if !online || ready == 0 {
        Status::Offline
    } else if ready < total {
        Status::PartiallyDegraded
    } else {
        Status::Online
    }
}

/// What the computation needs of one Dataplane: its spec and what its insight says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataplaneEntry<'a> {
    pub dataplane: &'a Dataplane,
    pub insight: Option<&'a InsightSummary>,
}

/// The parts of a DataplaneInsight the insights use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsightSummary {
    /// Some subscription connected and not disconnected.
    pub online: bool,
    /// `mTLS` is present.
    pub has_mtls: bool,
    /// `mTLS.issuedBackend` ("" if absent).
    pub issued_backend: String,
    /// `mTLS.supportedBackends`.
    pub supported_backends: Vec<String>,
    /// The last subscription's `version.kumaDp.version` ("" if absent).
    pub kuma_dp_version: String,
    /// The last subscription's `version.envoy.version` ("" if absent).
    pub envoy_version: String,
}

impl InsightSummary {
    /// The summary of a stored DataplaneInsight.
    pub fn of(insight: &DataplaneInsight) -> Self {
        let mtls = insight.mtls.as_ref();
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let version = insight
            .subscriptions
            .last()
            .and_then(|s| s.version.as_ref());
        Self {
            online: insight.is_online(),
            has_mtls: mtls.is_some(),
            issued_backend: text(mtls.and_then(|m| m.get("issuedBackend"))),
            supported_backends: mtls
                .and_then(|m| m.get("supportedBackends"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            kuma_dp_version: text(version.and_then(|v| v.pointer("/kumaDp/version"))),
            envoy_version: text(version.and_then(|v| v.pointer("/envoy/version"))),
        }
    }
}

impl DataplaneEntry<'_> {
    /// This Dataplane's [`status`].
    pub fn status(&self) -> Status {
        status_of(self.dataplane, self.insight.is_some_and(|i| i.online))
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A service's status (`ServiceInsight.Service.Status`); `none` is never computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    Offline,
    PartiallyDegraded,
    Online,
    NotAvailable,
}

impl ServiceStatus {
    /// What `kumactl inspect services` prints.
    pub fn text(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::PartiallyDegraded => "Partially degraded",
            _ => "Offline",
        }
    }
}

/// A service's type (`ServiceInsight.Service.Type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceType {
    #[default]
    Internal,
    External,
    GatewayDelegated,
    GatewayBuiltin,
}

impl ServiceType {
    /// The type named `s` (Kuma's enum names, any case), for `?type=`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "internal" => Some(Self::Internal),
            "external" => Some(Self::External),
            "gateway_delegated" => Some(Self::GatewayDelegated),
            "gateway_builtin" => Some(Self::GatewayBuiltin),
            _ => None,
        }
    }

    fn is_internal(&self) -> bool {
        *self == Self::Internal
    }
}

/// Online and offline Dataplanes of a service (partially degraded ones count as offline, as
/// in Kuma). `total` is filled in by the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServiceDataplanes {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub online: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub offline: u32,
}

/// One service of a mesh (`ServiceInsight.Service`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
    pub dataplanes: ServiceDataplanes,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub issued_backends: BTreeMap<String, u32>,
    #[serde(skip_serializing_if = "ServiceType::is_internal")]
    pub service_type: ServiceType,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address_port: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// The services of a mesh, by name (Kuma's one `ServiceInsight` per mesh).
pub type Services = BTreeMap<String, Service>;

/// The services of a mesh's Dataplanes (Kuma's `createOrUpdateServiceInsight`): a gateway
/// counts for its `kuma.io/service` tag (type `gateway_builtin` / `gateway_delegated`),
/// another Dataplane for the service of each inbound not `Ignored`. Online Dataplanes count
/// as online, offline and partially degraded ones as offline; `issuedBackends` counts the
/// mTLS backend of each Dataplane's certificate; `zones` the `kuma.io/zone` tags seen. Status:
/// no online Dataplane = `offline`, all = `online`, else `partially_degraded`. The mesh has no
/// ExternalServices here (the type does not exist in this control plane).
pub fn services<'a>(dataplanes: impl IntoIterator<Item = DataplaneEntry<'a>>) -> Services {
    let mut out = Services::new();
    let mut zones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut count =
        |name: &str, zone: Option<&String>, stype: ServiceType, st: Status, backend: &str| {
            if name.is_empty() {
                return;
            }
            let svc = out.entry(name.to_string()).or_insert_with(|| Service {
                service_type: stype,
                ..Service::default()
            });
            if !backend.is_empty() {
                *svc.issued_backends.entry(backend.to_string()).or_default() += 1;
            }
            match st {
                Status::Online => svc.dataplanes.online += 1,
                Status::Offline | Status::PartiallyDegraded => svc.dataplanes.offline += 1,
            }
            if let Some(z) = zone.filter(|z| !z.is_empty()) {
                zones.entry(name.to_string()).or_default().insert(z.clone());
            }
        };
    for e in dataplanes {
        let st = e.status();
        let backend = e.insight.map_or("", |i| i.issued_backend.as_str());
        if let Some(gw) = e.dataplane.gateway() {
            let stype = match gw.gateway_type {
                Some(GatewayType::Builtin) => ServiceType::GatewayBuiltin,
                _ => ServiceType::GatewayDelegated,
            };
            let name = gw.tags.get(SERVICE_TAG).map_or("", String::as_str);
            count(name, gw.tags.get(ZONE_TAG), stype, st, backend);
            continue;
        }
        for inbound in e.dataplane.inbounds() {
            if inbound.state.as_deref() == Some("Ignored") {
                continue;
            }
            let name = inbound.service().unwrap_or_default();
            count(
                name,
                inbound.tags.get(ZONE_TAG),
                ServiceType::Internal,
                st,
                backend,
            );
        }
    }
    for (name, svc) in &mut out {
        let online = svc.dataplanes.online;
        let total = online + svc.dataplanes.offline;
        svc.status = Some(if svc.service_type == ServiceType::External {
            ServiceStatus::NotAvailable
        } else if online == 0 {
            ServiceStatus::Offline
        } else if online == total {
            ServiceStatus::Online
        } else {
            ServiceStatus::PartiallyDegraded
        });
        if let Some(z) = zones.remove(name) {
            svc.zones = z.into_iter().collect();
        }
    }
    out
}

/// Dataplanes by status (`MeshInsight.DataplaneStat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneStat {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub online: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub offline: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub partially_degraded: u32,
}

impl DataplaneStat {
    fn count(&mut self, st: Status) {
        match st {
            Status::Online => self.online += 1,
            Status::Offline => self.offline += 1,
            Status::PartiallyDegraded => self.partially_degraded += 1,
        }
    }
}

/// `{"total": n}` of a resource or policy type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u32,
}

/// `MeshInsight.dpVersions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DpVersions {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kuma_dp: BTreeMap<String, DataplaneStat>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envoy: BTreeMap<String, DataplaneStat>,
}

/// `MeshInsight.mTLS` (Kuma's fields; the API adds its own).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mtls {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub issued_backends: BTreeMap<String, DataplaneStat>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub supported_backends: BTreeMap<String, DataplaneStat>,
}

/// `MeshInsight.services`: distinct service names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServiceStat {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub internal: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub external: u32,
}

/// `MeshInsight.dataplanesByType` (`gateway` = builtin + delegated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplanesByType {
    pub standard: DataplaneStat,
    pub gateway: DataplaneStat,
    pub gateway_builtin: DataplaneStat,
    pub gateway_delegated: DataplaneStat,
}

/// A mesh's MeshInsight spec, in Kuma's field order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshInsight {
    pub dataplanes: DataplaneStat,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Total>,
    #[serde(rename = "dpVersions")]
    pub dp_versions: DpVersions,
    #[serde(rename = "mTLS")]
    pub mtls: Mtls,
    pub services: ServiceStat,
    pub dataplanes_by_type: DataplanesByType,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Total>,
}

/// A mesh's MeshInsight (Kuma's `createOrUpdateMeshInsight`). `counts`: the number of
/// resources of each mesh-scoped type that is not an insight (Dataplanes included);
/// `policies` names the policy types among them. Types with no resource are left out.
/// `dpVersions` keys by the last subscription's versions (`unknown` when not reported); their
/// `total` is online + offline (partially degraded not included, as in Kuma).
pub fn mesh_insight<'a>(
    dataplanes: impl IntoIterator<Item = DataplaneEntry<'a>>,
    counts: &BTreeMap<String, u32>,
    policies: &[&str],
) -> MeshInsight {
    let mut mi = MeshInsight::default();
    let mut internal: BTreeSet<&'a str> = BTreeSet::new();
    for e in dataplanes {
        let st = e.status();
        mi.dataplanes.total += 1;
        mi.dataplanes.count(st);
        let by_type = match e.dataplane.gateway() {
            None => &mut mi.dataplanes_by_type.standard,
            Some(g) if g.is_builtin() => &mut mi.dataplanes_by_type.gateway_builtin,
            Some(_) => &mut mi.dataplanes_by_type.gateway_delegated,
        };
        by_type.total += 1;
        by_type.count(st);
        let none = InsightSummary::default();
        let summary = e.insight.unwrap_or(&none);
        for (map, version) in [
            (&mut mi.dp_versions.kuma_dp, &summary.kuma_dp_version),
            (&mut mi.dp_versions.envoy, &summary.envoy_version),
        ] {
            let key = if version.is_empty() {
                "unknown"
            } else {
                version
            };
            let stat = map.entry(key.to_string()).or_default();
            stat.count(st);
            stat.total = stat.online + stat.offline;
        }
        if summary.has_mtls {
            let stat = mi
                .mtls
                .issued_backends
                .entry(summary.issued_backend.clone())
                .or_default();
            stat.count(st);
            stat.total += 1;
            for b in &summary.supported_backends {
                let stat = mi.mtls.supported_backends.entry(b.clone()).or_default();
                stat.count(st);
                stat.total += 1;
            }
        }
        if let Some(gw) = e.dataplane.gateway()
            && let Some(svc) = gw.tags.get(SERVICE_TAG).filter(|s| !s.is_empty())
        {
            internal.insert(svc);
        }
        for inbound in e.dataplane.inbounds() {
            if inbound.state.as_deref() == Some("Ignored") {
                continue;
            }
            if let Some(svc) = inbound.service().filter(|s| !s.is_empty()) {
                internal.insert(svc);
            }
        }
    }
    let by_type = &mut mi.dataplanes_by_type;
    let (b, d) = (by_type.gateway_builtin, by_type.gateway_delegated);
    by_type.gateway = DataplaneStat {
        total: b.total + d.total,
        online: b.online + d.online,
        offline: b.offline + d.offline,
        partially_degraded: b.partially_degraded + d.partially_degraded,
    };
    let n = u32::try_from(internal.len()).unwrap_or(u32::MAX);
    mi.services = ServiceStat {
        total: n,
        internal: n,
        external: 0,
    };
    for (t, &c) in counts {
        if c == 0 {
            continue;
        }
        mi.resources.insert(t.clone(), Total { total: c });
        if policies.contains(&t.as_str()) {
            mi.policies.insert(t.clone(), Total { total: c });
        }
    }
    mi
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dp(v: Value) -> Dataplane {
        serde_json::from_value(v).expect("a Dataplane")
    }

    fn inbound(svc: &str) -> Value {
        json!({"port": 80, "tags": {"kuma.io/service": svc}})
    }

    fn online() -> Option<InsightSummary> {
        Some(InsightSummary {
            online: true,
            ..Default::default()
        })
    }

    fn entry(
        networking: Value,
        insight: Option<InsightSummary>,
    ) -> (Dataplane, Option<InsightSummary>) {
        (dp(json!({"networking": networking})), insight)
    }

    fn refs(owned: &[(Dataplane, Option<InsightSummary>)]) -> Vec<DataplaneEntry<'_>> {
        owned
            .iter()
            .map(|(d, i)| DataplaneEntry {
                dataplane: d,
                insight: i.as_ref(),
            })
            .collect()
    }

    #[test]
    fn dataplane_status_follows_kumas_rules() {
        let connected = DataplaneInsight {
            subscriptions: vec![kuma_core::resource::insight::DiscoverySubscription {
                connect_time: Some("2026-01-01T00:00:00Z".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut gone = connected.clone();
        gone.subscriptions[0].disconnect_time = Some("2026-01-01T00:01:00Z".into());
        let two = dp(
            json!({"networking": {"address": "10.0.0.1", "inbound": [inbound("a"), inbound("b")]}}),
        );
        // No insight, a disconnected one: Offline; a connected one: Online.
        assert_eq!(status(&two, None), Status::Offline);
        assert_eq!(status(&two, Some(&gone)), Status::Offline);
        assert_eq!(status(&two, Some(&connected)), Status::Online);
        // One inbound unhealthy, or NotReady: Partially degraded; both: Offline.
        for bad in [
            json!({"port": 81, "tags": {"kuma.io/service": "b"}, "health": {"ready": false}}),
            json!({"port": 81, "tags": {"kuma.io/service": "b"}, "state": "NotReady"}),
        ] {
            let d = dp(json!({"networking": {"inbound": [inbound("a"), bad.clone()]}}));
            assert_eq!(status(&d, Some(&connected)), Status::PartiallyDegraded);
            let d = dp(json!({"networking": {"inbound": [bad.clone(), bad]}}));
            assert_eq!(status(&d, Some(&connected)), Status::Offline);
        }
        // `health.ready: true` and `state: Ready` are ready; Ignored counts as ready too.
        let d = dp(json!({"networking": {"inbound": [
            {"port": 80, "tags": {"kuma.io/service": "a"}, "health": {"ready": true}, "state": "Ready"},
            {"port": 81, "tags": {"kuma.io/service": "b"}, "state": "Ignored"}]}}));
        assert_eq!(status(&d, Some(&connected)), Status::Online);
        // No inbound: Offline even when connected.
        let d = dp(
            json!({"networking": {"address": "10.0.0.1", "outbound": [{"port": 1, "tags": {"kuma.io/service": "x"}}]}}),
        );
        assert_eq!(status(&d, Some(&connected)), Status::Offline);
        // A gateway: Online iff connected.
        let g = dp(json!({"networking": {"gateway": {"tags": {"kuma.io/service": "gw"}}}}));
        assert_eq!(status(&g, Some(&connected)), Status::Online);
        assert_eq!(status(&g, Some(&gone)), Status::Offline);
        // Listeners: NotReady degrades.
        let l = dp(json!({"networking": {"listeners": [
            {"type": "ZoneIngress", "port": 1}, {"type": "ZoneEgress", "port": 2, "state": "NotReady"}]}}));
        assert_eq!(status(&l, Some(&connected)), Status::PartiallyDegraded);
        assert_eq!(Status::PartiallyDegraded.as_str(), "Partially degraded");
    }

    #[test]
    fn insight_summary_reads_mtls_and_the_last_versions() {
        let i: DataplaneInsight = serde_json::from_value(json!({
            "subscriptions": [
                {"id": "1", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-01T00:00:00Z",
                 "disconnectTime": "2026-01-01T00:01:00Z", "version": {"kumaDp": {"version": "2.13.0"}}},
                {"id": "2", "controlPlaneInstanceId": "cp", "connectTime": "2026-01-01T00:02:00Z",
                 "version": {"kumaDp": {"version": "2.14.3"}, "envoy": {"version": "1.38.2"}}}],
            "mTLS": {"issuedBackend": "ca-1", "supportedBackends": ["ca-1", "ca-2"]}
        }))
        .expect("insight");
        assert_eq!(
            InsightSummary::of(&i),
            InsightSummary {
                online: true,
                has_mtls: true,
                issued_backend: "ca-1".into(),
                supported_backends: vec!["ca-1".into(), "ca-2".into()],
                kuma_dp_version: "2.14.3".into(),
                envoy_version: "1.38.2".into(),
            }
        );
        assert_eq!(
            InsightSummary::of(&DataplaneInsight::default()),
            InsightSummary::default()
        );
    }

    #[test]
    fn services_aggregate_as_kuma_does() {
        let mtls = |b: &str| {
            Some(InsightSummary {
                online: true,
                has_mtls: true,
                issued_backend: b.into(),
                ..Default::default()
            })
        };
        let zoned = |svc: &str, zone: &str| json!({"port": 80, "tags": {"kuma.io/service": svc, "kuma.io/zone": zone}});
        let entries = vec![
            entry(
                json!({"inbound": [zoned("backend", "zone-2")]}),
                mtls("ca-1"),
            ),
            entry(
                json!({"inbound": [zoned("backend", "zone-1")]}),
                mtls("ca-1"),
            ),
            // Partially degraded counts as offline for its services.
            entry(
                json!({"inbound": [inbound("backend"),
                    {"port": 81, "tags": {"kuma.io/service": "web"}, "health": {"ready": false}}]}),
                online(),
            ),
            entry(json!({"inbound": [inbound("orders")]}), None),
            // Ignored inbounds and inbounds without a service count for nothing.
            entry(
                json!({"inbound": [{"port": 80, "tags": {"kuma.io/service": "hidden"}, "state": "Ignored"},
                    {"port": 81, "tags": {}}]}),
                online(),
            ),
            entry(
                json!({"gateway": {"tags": {"kuma.io/service": "edge"}, "type": "BUILTIN"}}),
                online(),
            ),
            entry(
                json!({"gateway": {"tags": {"kuma.io/service": "kong"}}}),
                None,
            ),
        ];
        let got = services(refs(&entries));
        let names: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(names, ["backend", "edge", "kong", "orders", "web"]);
        let as_json = serde_json::to_value(&got).expect("json");
        assert_eq!(
            as_json,
            json!({
                "backend": {"status": "partially_degraded", "dataplanes": {"online": 2, "offline": 1},
                            "issuedBackends": {"ca-1": 2}, "zones": ["zone-1", "zone-2"]},
                "edge": {"status": "online", "dataplanes": {"online": 1}, "serviceType": "gateway_builtin"},
                "kong": {"status": "offline", "dataplanes": {"offline": 1}, "serviceType": "gateway_delegated"},
                "orders": {"status": "offline", "dataplanes": {"offline": 1}},
                "web": {"status": "offline", "dataplanes": {"offline": 1}},
            })
        );
        assert_eq!(
            ServiceType::parse(" Gateway_Builtin"),
            Some(ServiceType::GatewayBuiltin)
        );
        assert_eq!(ServiceType::parse("random-type"), None);
        assert_eq!(ServiceStatus::NotAvailable.text(), "Offline");
    }

    #[test]
    fn mesh_insight_counts_as_kuma_does() {
        let v = |dp: &str, envoy: &str| InsightSummary {
            online: true,
            kuma_dp_version: dp.into(),
            envoy_version: envoy.into(),
            has_mtls: true,
            issued_backend: "ca-1".into(),
            supported_backends: vec!["ca-1".into()],
        };
        let entries = vec![
            entry(
                json!({"inbound": [inbound("backend")]}),
                Some(v("2.14.3", "1.38.2")),
            ),
            entry(
                json!({"inbound": [inbound("backend"), {"port": 81, "tags": {"kuma.io/service": "web"}, "state": "NotReady"}]}),
                Some(v("2.14.3", "")),
            ),
            entry(json!({"inbound": [inbound("orders")]}), None),
            entry(
                json!({"gateway": {"tags": {"kuma.io/service": "edge"}, "type": "BUILTIN"}}),
                online(),
            ),
        ];
        let counts = BTreeMap::from([
            ("Dataplane".to_string(), 4),
            ("MeshTrafficPermission".to_string(), 2),
            ("Secret".to_string(), 0),
        ]);
        let mi = mesh_insight(refs(&entries), &counts, &["MeshTrafficPermission"]);
        assert_eq!(
            serde_json::to_value(&mi).expect("json"),
            json!({
                "dataplanes": {"total": 4, "online": 2, "offline": 1, "partiallyDegraded": 1},
                "policies": {"MeshTrafficPermission": {"total": 2}},
                "dpVersions": {
                    "kumaDp": {"2.14.3": {"total": 1, "online": 1, "partiallyDegraded": 1},
                               "unknown": {"total": 2, "online": 1, "offline": 1}},
                    "envoy": {"1.38.2": {"total": 1, "online": 1},
                              "unknown": {"total": 2, "online": 1, "offline": 1, "partiallyDegraded": 1}}},
                "mTLS": {"issuedBackends": {"ca-1": {"total": 2, "online": 1, "partiallyDegraded": 1}},
                         "supportedBackends": {"ca-1": {"total": 2, "online": 1, "partiallyDegraded": 1}}},
                "services": {"total": 4, "internal": 4},
                "dataplanesByType": {
                    "standard": {"total": 3, "online": 1, "offline": 1, "partiallyDegraded": 1},
                    "gateway": {"total": 1, "online": 1},
                    "gatewayBuiltin": {"total": 1, "online": 1},
                    "gatewayDelegated": {}},
                "resources": {"Dataplane": {"total": 4}, "MeshTrafficPermission": {"total": 2}},
            })
        );
        // An empty mesh: Kuma's empty messages stay, zero numbers and empty maps go.
        let empty = mesh_insight([], &BTreeMap::new(), &[]);
        assert_eq!(
            serde_json::to_value(&empty).expect("json"),
            json!({"dataplanes": {}, "dpVersions": {}, "mTLS": {}, "services": {},
                   "dataplanesByType": {"standard": {}, "gateway": {}, "gatewayBuiltin": {}, "gatewayDelegated": {}}})
        );
    }
}
