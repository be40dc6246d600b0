//! Insight endpoints (Kuma's `service_insight_endpoints.go`, the MeshInsight resource
//! endpoints and `global_insight_service.go`), served from the in-memory
//! [`crate::insights::Insights`]; read-only (other methods: 405):
//!
//! - `GET /meshes/{mesh}/service-insights`, `GET /service-insights`: one item per service,
//!   sorted by mesh then name; `name` (substring), `type` (comma list of service types;
//!   another → 400), `size` / `offset` paging; a mesh not computed yet lists nothing;
//! - `GET /meshes/{mesh}/service-insights/{service}`: 404 only when the mesh has no insights;
//!   an unknown service of a mesh that has them is `{"dataplanes": {}}` and its address;
//! - `GET /mesh-insights` (paged, `name`), `GET /mesh-insights/{mesh}`: Kuma's MeshInsight,
//!   plus our `mTLS.enabledBackend` and `mTLS.error` (the CA of the mesh cannot be loaded;
//!   its proxies keep their last configuration). A Mesh whose insight is not computed yet
//!   (the first second after start) shows only those;
//! - `GET /global-insight`: computed on request from the meshes' insights and the zone
//!   insights, every number present;
//! - `GET /global-insights` (Kuma's older endpoint): the number of resources of each
//!   global-scoped type but Config and the insights, zeros included.
//!
//! An internal service's `addressPort` is `<service>.<dnsServer.domain>:<dnsServer.serviceVipPort>`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use chrono::Utc;
use kuma_core::resource::{ResourceKey, format_time};
use kuma_core::{ResourceType, Spec};
use serde_json::{Map, Value, json};

use super::query::ListRequest;
use super::{ApiError, Shared};
use crate::insights::compute::{Service, ServiceStatus, ServiceType};
use crate::insights::{Insights, MeshInsights};

/// What the insight endpoints read: the insights and the DNS settings of service addresses.
#[derive(Debug, Clone)]
pub struct View {
    pub insights: Insights,
    /// `dnsServer.domain`.
    pub dns_domain: String,
    /// `dnsServer.serviceVipPort`.
    pub vip_port: u32,
}

impl Default for View {
    fn default() -> Self {
        Self {
            insights: Insights::default(),
            dns_domain: "mesh".into(),
            vip_port: 80,
        }
    }
}

impl View {
    /// One service as a `ServiceInsight` item: `dataplanes.total` = online + offline, and an
    /// internal service's address.
    fn service_item(&self, mesh: &str, name: &str, e: &MeshInsights, svc: &Service) -> Value {
        let mut svc = svc.clone();
        svc.dataplanes.total = svc.dataplanes.online + svc.dataplanes.offline;
        if svc.service_type == ServiceType::Internal {
            svc.address_port = format!("{name}.{}:{}", self.dns_domain, self.vip_port);
        }
        let mut out = Map::new();
        out.insert("type".into(), json!("ServiceInsight"));
        out.insert("mesh".into(), json!(mesh));
        out.insert("name".into(), json!(name));
        out.insert(
            "creationTime".into(),
            json!(format_time(&e.services_created)),
        );
        out.insert(
            "modificationTime".into(),
            json!(format_time(&e.services_modified)),
        );
        if let Ok(Value::Object(fields)) = serde_json::to_value(&svc) {
            out.extend(fields);
        }
        Value::Object(out)
    }
}

/// `?type=`: the service types asked for (empty: all).
fn type_filter(req: &ListRequest) -> Result<Vec<ServiceType>, ApiError> {
    let Some(v) = req.value("type").filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(|t| {
            ServiceType::parse(t).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Invalid response type",
                    "unsupported service type",
                )
                .with_field(
                    "type",
                    format!(
                        "unsupported service type {:?}: one of internal, external, gateway_delegated, gateway_builtin",
                        t.trim()
                    ),
                )
            })
        })
        .collect()
}

fn list_services(
    s: &Shared,
    mesh: Option<&str>,
    req: &ListRequest,
) -> Result<Json<Value>, ApiError> {
    let page = req.page()?;
    let types = type_filter(req)?;
    let name = req.value("name").unwrap_or_default();
    let snapshot = s.insights.insights.snapshot();
    let items: Vec<Value> = snapshot
        .meshes
        .iter()
        .filter(|(m, _)| mesh.is_none_or(|want| want == m.as_str()))
        .flat_map(|(m, e)| {
            e.services
                .iter()
                .filter(|(n, svc)| {
                    n.contains(name) && (types.is_empty() || types.contains(&svc.service_type))
                })
                .map(|(n, svc)| s.insights.service_item(m, n, e, svc))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Json(req.paginate(items, page)))
}

/// `GET /meshes/{mesh}/service-insights`.
pub async fn list_in_mesh(
    AxState(s): AxState<Shared>,
    Path(mesh): Path<String>,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    list_services(&s, Some(&mesh), &req)
}

/// `GET /service-insights`.
pub async fn list_all(
    AxState(s): AxState<Shared>,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    list_services(&s, None, &req)
}

/// `GET /meshes/{mesh}/service-insights/{service}`.
pub async fn get_service(
    AxState(s): AxState<Shared>,
    Path((mesh, service)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let Some(e) = s.insights.insights.mesh(&mesh) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("ServiceInsight of mesh {mesh} not found"),
        ));
    };
    let none = Service::default();
    let svc = e.services.get(&service).unwrap_or(&none);
    Ok(Json(s.insights.service_item(&mesh, &service, &e, svc)))
}

/// A MeshInsight item: Kuma's fields, `mTLS` with our `enabledBackend` / `error`.
fn mesh_item(s: &Shared, mesh: &str, spec: &Spec, e: Option<&MeshInsights>) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!("MeshInsight"));
    out.insert("name".into(), json!(mesh));
    if let Some(e) = e {
        out.insert("creationTime".into(), json!(format_time(&e.mesh_created)));
        out.insert(
            "modificationTime".into(),
            json!(format_time(&e.mesh_modified)),
        );
        if let Ok(Value::Object(fields)) = serde_json::to_value(&e.mesh) {
            out.extend(fields);
        }
    }
    // Kuma's mTLS fields first, then ours; the key keeps its place.
    let mut mtls = match out.get_mut("mTLS") {
        Some(Value::Object(m)) => std::mem::take(m),
        _ => Map::new(),
    };
    if let Spec::Mesh(m) = spec
        && let Some(b) = m.enabled_backend()
    {
        mtls.insert("enabledBackend".into(), json!(b.name));
    }
    if let Some(err) = s.mesh_status.mtls_error(mesh) {
        mtls.insert("error".into(), json!(err));
    }
    out.insert("mTLS".into(), Value::Object(mtls));
    Value::Object(out)
}

/// `GET /mesh-insights/{mesh}`.
pub async fn get_mesh(
    AxState(s): AxState<Shared>,
    Path(mesh): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let res = s
        .manager
        .get(&ResourceKey::new(ResourceType::Mesh, "", &mesh))
        .await?;
    let e = s.insights.insights.mesh(&mesh);
    Ok(Json(mesh_item(&s, &mesh, &res.spec, e.as_deref())))
}

/// `GET /mesh-insights`: the computed MeshInsights of existing Meshes.
pub async fn list_meshes(
    AxState(s): AxState<Shared>,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    let page = req.page()?;
    let name = req.value("name").unwrap_or_default();
    let snapshot = s.insights.insights.snapshot();
    let items: Vec<Value> = s
        .manager
        .list(ResourceType::Mesh, None)
        .await?
        .iter()
        .filter(|m| m.meta.name.contains(name))
        .filter_map(|m| {
            let e = snapshot.meshes.get(&m.meta.name)?;
            Some(mesh_item(&s, &m.meta.name, &m.spec, Some(e)))
        })
        .collect();
    Ok(Json(req.paginate(items, page)))
}

/// Kuma's `FullStatus`, every number present.
#[derive(Default)]
struct Full {
    total: u32,
    online: u32,
    offline: u32,
    partially_degraded: u32,
}

impl Full {
    fn json(&self) -> Value {
        json!({"offline": self.offline, "online": self.online,
               "partiallyDegraded": self.partially_degraded, "total": self.total})
    }

    fn add(&mut self, s: &crate::insights::compute::DataplaneStat) {
        self.total += s.total;
        self.online += s.online;
        self.offline += s.offline;
        self.partially_degraded += s.partially_degraded;
    }

    fn count(&mut self, st: Option<ServiceStatus>) {
        self.total += 1;
        match st {
            Some(ServiceStatus::Online) => self.online += 1,
            Some(ServiceStatus::Offline) => self.offline += 1,
            Some(ServiceStatus::PartiallyDegraded) => self.partially_degraded += 1,
            _ => {}
        }
    }
}

/// `GET /global-insight`.
pub async fn global(AxState(s): AxState<Shared>) -> Result<Json<Value>, ApiError> {
    let snapshot = s.insights.insights.snapshot();
    let (mut standard, mut builtin, mut delegated) =
        (Full::default(), Full::default(), Full::default());
    let mut policies = 0u32;
    let mut resources: BTreeMap<String, u32> = BTreeMap::new();
    let (mut s_internal, mut s_builtin, mut s_delegated) =
        (Full::default(), Full::default(), Full::default());
    let mut s_external = 0u32;
    for e in snapshot.meshes.values() {
        let by_type = &e.mesh.dataplanes_by_type;
        standard.add(&by_type.standard);
        builtin.add(&by_type.gateway_builtin);
        delegated.add(&by_type.gateway_delegated);
        policies += e.mesh.policies.values().map(|p| p.total).sum::<u32>();
        for (t, n) in &e.mesh.resources {
            *resources.entry(t.clone()).or_default() += n.total;
        }
        for svc in e.services.values() {
            match svc.service_type {
                ServiceType::Internal => s_internal.count(svc.status),
                ServiceType::External => s_external += 1,
                ServiceType::GatewayBuiltin => s_builtin.count(svc.status),
                ServiceType::GatewayDelegated => s_delegated.count(svc.status),
            }
        }
    }
    let online_of = |rtype: ResourceType| {
        let s = s.clone();
        async move {
            let items = s.manager.list(rtype, None).await?;
            let online = items
                .iter()
                .filter(|r| match &r.spec {
                    Spec::ZoneInsight(z) => z.is_online(),
                    Spec::ZoneIngressInsight(i) | Spec::ZoneEgressInsight(i) => i.is_online(),
                    _ => false,
                })
                .count();
            Ok::<_, ApiError>(json!({"online": online, "total": items.len()}))
        }
    };
    let resources: Map<String, Value> = resources
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| (t, json!({"total": n})))
        .collect();
    Ok(Json(json!({
        "createdAt": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "dataplanes": {"gatewayBuiltin": builtin.json(), "gatewayDelegated": delegated.json(),
                       "standard": standard.json()},
        "meshes": {"total": snapshot.meshes.len()},
        "policies": {"total": policies},
        "resources": resources,
        "services": {"external": {"total": s_external}, "gatewayBuiltin": s_builtin.json(),
                     "gatewayDelegated": s_delegated.json(), "internal": s_internal.json()},
        "zones": {
            "controlPlanes": online_of(ResourceType::ZoneInsight).await?,
            "zoneEgresses": online_of(ResourceType::ZoneEgressInsight).await?,
            "zoneIngresses": online_of(ResourceType::ZoneIngressInsight).await?,
        },
    })))
}

/// `GET /global-insights`.
pub async fn global_counts(AxState(s): AxState<Shared>) -> Result<Json<Value>, ApiError> {
    let mut resources = Map::new();
    for t in ResourceType::ALL {
        let counted = t.scope() == kuma_core::resource::Scope::Global
            && t != ResourceType::Config
            && !t.name().ends_with("Insight");
        if counted {
            let n = s.manager.list(t, None).await?.len();
            resources.insert(t.name().to_string(), json!({"total": n}));
        }
    }
    Ok(Json(json!({
        "type": "GlobalInsights",
        "creationTime": format_time(&Utc::now()),
        "resources": resources,
    })))
}
