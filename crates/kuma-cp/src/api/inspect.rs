//! Kuma's inspect endpoints (`inspect_envoy_admin_endpoints.go`): a proxy's Envoy config
//! dump, stats and clusters, read through [`crate::envoy_admin`]:
//! `GET /meshes/{mesh}/dataplanes/{name}/{xds|stats|clusters}`,
//! `GET /zoneingresses/{name}/{type}`, `GET /zoneegresses/{name}/{type}`.
//!
//! Query: `include_eds` (xds), `format=json` (stats, clusters), `usedonly` (stats, default
//! true; `usedonly=false` for every stat). Bodies are Envoy's bytes (the config dump
//! sanitised), `application/json` or `text/plain`. Errors in Kuma's shapes: an unknown type
//! or proxy 404, a zone proxy of another zone (on a zone CP) or a failed forward to a zone
//! 400, an unreachable Envoy 500. Who may call: whoever may read the proxy (the API's
//! authentication applies; config dumps carry no secret once sanitised, and Envoy prints
//! private keys as `[redacted]`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kuma_core::resource::{ResourceKey, ResourceType, Spec};
use kuma_core::store;

use super::{ApiError, Shared};
use crate::config::CpMode;
use crate::envoy_admin::{Error as AdminError, Format, Op};
use crate::manager::ManagerError;

const TITLE: &str = "Could not execute admin operation";

/// `GET /meshes/{mesh}/dataplanes/{name}/{type}`.
pub async fn dataplane(
    AxState(s): AxState<Shared>,
    Path((mesh, name, kind)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = ResourceKey::new(ResourceType::Dataplane, &mesh, &name);
    inspect(s, key, &kind, &q, "Could not get dataplane resource").await
}

/// `GET /zoneingresses/{name}/{type}`.
pub async fn zone_ingress(
    AxState(s): AxState<Shared>,
    Path((name, kind)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = ResourceKey::new(ResourceType::ZoneIngress, "", &name);
    inspect(s, key, &kind, &q, "Could not get zone ingress resource").await
}

/// `GET /zoneegresses/{name}/{type}`.
pub async fn zone_egress(
    AxState(s): AxState<Shared>,
    Path((name, kind)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let key = ResourceKey::new(ResourceType::ZoneEgress, "", &name);
    // Kuma's title, ingress included.
    inspect(s, key, &kind, &q, "Could not get zone ingress resource").await
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The operation a `{type}` and query ask for (`None`: not a type).
pub fn op(kind: &str, q: &HashMap<String, String>) -> Option<Op> {
    let format = || match q.get("format").map(String::as_str) {
        Some("json") => Format::Json,
        _ => Format::Text,
    };
    match kind {
        "xds" => Some(Op::ConfigDump {
            include_eds: q
                .get("include_eds")
                .and_then(|v| parse_bool(v))
                .unwrap_or(false),
        }),
        "stats" => Some(Op::Stats {
            format: format(),
            used_only: q
                .get("usedonly")
                .filter(|v| !v.is_empty())
                .and_then(|v| parse_bool(v))
                .unwrap_or(true),
        }),
        "clusters" => Some(Op::Clusters { format: format() }),
        _ => None,
    }
}

async fn inspect(
    s: Shared,
    key: ResourceKey,
    kind: &str,
    q: &HashMap<String, String>,
    get_title: &str,
) -> Response {
    let Some(op) = op(kind, q) else {
        return ApiError::new(StatusCode::NOT_FOUND, TITLE, "Not found")
            .with_field(
                "type",
                format!("invalid admin type: {kind} (one of xds, stats, clusters)"),
            )
            .into_response();
    };
    let res = match s.manager.get(&key).await {
        Ok(r) => r,
        Err(ManagerError::Store(store::Error::NotFound(_))) => {
            return ApiError::new(StatusCode::NOT_FOUND, get_title, "Not found").into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if s.manager.mode() != CpMode::Global {
        let remote = match &res.spec {
            Spec::ZoneIngress(zi) => zi.is_remote(&s.zone),
            Spec::ZoneEgress(ze) => !ze.zone.is_empty() && ze.zone != s.zone,
            _ => false,
        };
        if remote {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "Could not connect to zone ingress that resides in another zone",
                "Resource is not valid",
            )
            .into_response();
        }
    }
    let Some(admin) = &s.envoy_admin else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            TITLE,
            "Internal Server Error",
        )
        .into_response();
    };
    match admin.call(&res, &op).await {
        Ok(body) => {
            let json = match op {
                Op::ConfigDump { .. } => true,
                Op::Stats { format, .. } | Op::Clusters { format } => format == Format::Json,
            };
            let content_type = if json {
                "application/json"
            } else {
                "text/plain"
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(e @ AdminError::Kds { .. }) => {
            ApiError::new(StatusCode::BAD_REQUEST, TITLE, e.to_string()).into_response()
        }
        Err(e) => {
            tracing::warn!(proxy = %key, error = %e, "{TITLE}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                TITLE,
                "Internal Server Error",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn types_and_query_parameters_as_kuma_reads_them() {
        assert_eq!(
            op("xds", &q(&[])),
            Some(Op::ConfigDump { include_eds: false })
        );
        assert_eq!(
            op("xds", &q(&[("include_eds", "1")])),
            Some(Op::ConfigDump { include_eds: true })
        );
        assert_eq!(
            op("stats", &q(&[])),
            Some(Op::Stats {
                format: Format::Text,
                used_only: true
            })
        );
        assert_eq!(
            op("stats", &q(&[("usedonly", "false"), ("format", "json")])),
            Some(Op::Stats {
                format: Format::Json,
                used_only: false
            })
        );
        // Unparsable: the default stays.
        assert_eq!(
            op("stats", &q(&[("usedonly", "nope")])),
            Some(Op::Stats {
                format: Format::Text,
                used_only: true
            })
        );
        assert_eq!(
            op("clusters", &q(&[("format", "yaml")])),
            Some(Op::Clusters {
                format: Format::Text
            })
        );
        assert_eq!(op("config_dump", &q(&[])), None);
    }
}
