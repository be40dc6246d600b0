//! Overviews: a resource joined with its insight (same mesh and name) as a pseudo-resource.
//!
//! - `DataplaneOverview` (`dataplane` + `dataplaneInsight`): lists page and filter like
//!   resource lists, plus `status=online|offline` (online = a connected, not disconnected,
//!   xDS subscription).
//! - `ZoneOverview` (`zone` + `zoneInsight`, Kuma's shape with the Zone's metadata, `kri`
//!   included): `GET /zones/_overview`, `/zones+insights` (paged, `name` and label filters)
//!   and `/zones/{name}/_overview`, `/zones+insights/{name}`. A Zone without a ZoneInsight
//!   (never connected) gets `zoneInsight: {}`.
//! - Zone proxies alike: `ZoneIngressOverview{zoneIngress, zoneIngressInsight}` and
//!   `ZoneEgressOverview{zoneEgress, zoneEgressInsight}` ([`ZoneProxy`]).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State as AxState};
use kuma_core::resource::{ResourceKey, format_time};
use kuma_core::{Resource, ResourceType, Spec};
use serde_json::{Map, Value, json};

use super::query::ListRequest;
use super::resources::wire;
use super::{ApiError, Shared};
use crate::manager::ManagerError;

/// Wire fields that are metadata, not spec, on an old-style resource.
const META_FIELDS: [&str; 7] = [
    "type",
    "name",
    "mesh",
    "labels",
    "creationTime",
    "modificationTime",
    "kri",
];

fn spec_fields(res: &Resource) -> Value {
    match res.to_wire() {
        Value::Object(mut m) => {
            for f in META_FIELDS {
                m.remove(f);
            }
            Value::Object(m)
        }
        _ => Value::Object(Map::new()),
    }
}

fn overview(dp: &Resource, insight: Option<&Resource>) -> Value {
    let labels: Map<String, Value> = dp
        .meta
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "type": "DataplaneOverview",
        "mesh": dp.meta.mesh,
        "name": dp.meta.name,
        "creationTime": format_time(&dp.meta.creation_time),
        "modificationTime": format_time(&dp.meta.modification_time),
        "labels": labels,
        "dataplane": spec_fields(dp),
        "dataplaneInsight": insight.map_or_else(|| json!({}), spec_fields),
    })
}

fn is_online(insight: Option<&Resource>) -> bool {
    matches!(insight.map(|i| &i.spec),
        Some(Spec::DataplaneInsight(i) | Spec::ZoneIngressInsight(i) | Spec::ZoneEgressInsight(i))
            if i.is_online())
}

fn status_filter(req: &ListRequest) -> Result<Option<bool>, ApiError> {
    match req.value("status") {
        None | Some("") => Ok(None),
        Some("online") => Ok(Some(true)),
        Some("offline") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_parameter(
            "Invalid status filter",
            "status",
            format!("must be one of: online, offline; got {other:?}"),
        )),
    }
}

/// The zone proxy types with overviews.
#[derive(Clone, Copy)]
pub enum ZoneProxy {
    Ingress,
    Egress,
}

impl ZoneProxy {
    fn types(
        self,
    ) -> (
        ResourceType,
        ResourceType,
        &'static str,
        &'static str,
        &'static str,
    ) {
        match self {
            Self::Ingress => (
                ResourceType::ZoneIngress,
                ResourceType::ZoneIngressInsight,
                "ZoneIngressOverview",
                "zoneIngress",
                "zoneIngressInsight",
            ),
            Self::Egress => (
                ResourceType::ZoneEgress,
                ResourceType::ZoneEgressInsight,
                "ZoneEgressOverview",
                "zoneEgress",
                "zoneEgressInsight",
            ),
        }
    }

    fn overview(self, res: &Resource, insight: Option<&Resource>) -> Value {
        let (_, _, type_name, spec_key, insight_key) = self.types();
        let labels: Map<String, Value> = res
            .meta
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "type": type_name,
            "name": res.meta.name,
            "creationTime": format_time(&res.meta.creation_time),
            "modificationTime": format_time(&res.meta.modification_time),
            "labels": labels,
            spec_key: spec_fields(res),
            insight_key: insight.map_or_else(|| json!({}), spec_fields),
        })
    }

    /// `GET /zoneingresses/_overview` (`/zoneingresses+insights`), `/zoneegresses/_overview`
    /// (`/zoneegressoverviews`, `/zoneegresses+insights`).
    pub async fn list(self, s: Shared, req: ListRequest) -> Result<Json<Value>, ApiError> {
        let (rtype, itype, ..) = self.types();
        let page = req.page()?;
        let filter = req.filter(false)?;
        let online = status_filter(&req)?;
        let items = s.manager.list(rtype, None).await?;
        let insights = s.manager.list(itype, None).await?;
        let by_name: HashMap<&str, &Resource> =
            insights.iter().map(|i| (i.meta.name.as_str(), i)).collect();
        let out: Vec<Value> = items
            .iter()
            .filter(|r| filter.matches(r))
            .filter_map(|r| {
                let insight = by_name.get(r.meta.name.as_str()).copied();
                online
                    .is_none_or(|want| is_online(insight) == want)
                    .then(|| self.overview(r, insight))
            })
            .collect();
        Ok(Json(req.paginate(out, page)))
    }

    /// `GET /zoneingresses/{name}/_overview` (`/zoneingresses+insights/{name}`) and the
    /// egress equivalents.
    pub async fn get_one(self, s: Shared, name: String) -> Result<Json<Value>, ApiError> {
        let (rtype, itype, ..) = self.types();
        let res = s.manager.get(&ResourceKey::new(rtype, "", &name)).await?;
        let insight = match s.manager.get(&ResourceKey::new(itype, "", &name)).await {
            Ok(i) => Some(i),
            Err(crate::manager::ManagerError::Store(kuma_core::store::Error::NotFound(_))) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Json(self.overview(&res, insight.as_ref())))
    }
}

/// `GET /meshes/{mesh}/dataplanes/_overview` and `/meshes/{mesh}/dataplanes+insights`.
pub async fn list(
    AxState(s): AxState<Shared>,
    Path(mesh): Path<String>,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    let page = req.page()?;
    let filter = req.filter(true)?;
    let online = status_filter(&req)?;
    let dps = s.manager.list(ResourceType::Dataplane, Some(&mesh)).await?;
    let insights = s
        .manager
        .list(ResourceType::DataplaneInsight, Some(&mesh))
        .await?;
    let by_name: HashMap<&str, &Resource> =
        insights.iter().map(|i| (i.meta.name.as_str(), i)).collect();
    let items: Vec<Value> = dps
        .iter()
        .filter(|dp| filter.matches(dp))
        .filter_map(|dp| {
            let insight = by_name.get(dp.meta.name.as_str()).copied();
            online
                .is_none_or(|want| is_online(insight) == want)
                .then(|| overview(dp, insight))
        })
        .collect();
    Ok(Json(req.paginate(items, page)))
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_overview` and `/meshes/{mesh}/dataplanes+insights/{name}`.
pub async fn get_one(
    AxState(s): AxState<Shared>,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let dp = s
        .manager
        .get(&ResourceKey::new(ResourceType::Dataplane, &mesh, &name))
        .await?;
    let insight = match s
        .manager
        .get(&ResourceKey::new(
            ResourceType::DataplaneInsight,
            mesh,
            name,
        ))
        .await
    {
        Ok(i) => Some(i),
        Err(ManagerError::Store(kuma_core::store::Error::NotFound(_))) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(overview(&dp, insight.as_ref())))
}

/// A `ZoneOverview`: the Zone's metadata as `GET /zones/{name}` shows it (labels, `kri`), its
/// spec under `zone` and its insight's under `zoneInsight`.
fn zone_overview(zone: &Resource, insight: Option<&Resource>, local_zone: &str) -> Value {
    let Value::Object(fields) = wire(zone, local_zone) else {
        return Value::Null;
    };
    let mut out = Map::new();
    let mut spec = Map::new();
    for (k, v) in fields {
        if META_FIELDS.contains(&k.as_str()) {
            out.insert(k, v);
        } else {
            spec.insert(k, v);
        }
    }
    out.insert("type".into(), json!("ZoneOverview"));
    out.insert("zone".into(), Value::Object(spec));
    out.insert(
        "zoneInsight".into(),
        insight.map_or_else(|| json!({}), spec_fields),
    );
    Value::Object(out)
}

/// `GET /zones/_overview` and `/zones+insights`.
pub async fn list_zones(
    AxState(s): AxState<Shared>,
    req: ListRequest,
) -> Result<Json<Value>, ApiError> {
    let page = req.page()?;
    let filter = req.filter(false)?;
    let zones = s.manager.list(ResourceType::Zone, None).await?;
    let insights = s.manager.list(ResourceType::ZoneInsight, None).await?;
    let by_name: HashMap<&str, &Resource> =
        insights.iter().map(|i| (i.meta.name.as_str(), i)).collect();
    let items: Vec<Value> = zones
        .iter()
        .filter(|z| filter.matches(z))
        .map(|z| zone_overview(z, by_name.get(z.meta.name.as_str()).copied(), &s.zone))
        .collect();
    Ok(Json(req.paginate(items, page)))
}

/// `GET /zones/{name}/_overview` and `/zones+insights/{name}`.
pub async fn get_zone(
    AxState(s): AxState<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let zone = s
        .manager
        .get(&ResourceKey::new(ResourceType::Zone, "", &name))
        .await?;
    let insight = match s
        .manager
        .get(&ResourceKey::new(ResourceType::ZoneInsight, "", name))
        .await
    {
        Ok(i) => Some(i),
        Err(ManagerError::Store(kuma_core::store::Error::NotFound(_))) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Json(zone_overview(&zone, insight.as_ref(), &s.zone)))
}
