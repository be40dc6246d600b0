//! `POST /bootstrap`: kuma-dp sends its Dataplane (or only mesh and name) and versions; the
//! CP answers with the Envoy bootstrap (base64 YAML): node id `<mesh>.<name>`, the Dataplane
//! in node metadata (registered on the first ADS request, not here), the Envoy admin on
//! loopback, and ADS over TLS to the DP server, trusting the CP's CA.
//!
//! With dataplane authentication on (`dpServer.authn.dpProxy.type: dpToken`) the request must
//! carry a dataplane token (422 with Kuma's message otherwise; `dataplaneTokenPath` names a
//! file on the proxy's host and is never trusted alone) that authenticates the Dataplane (401
//! for an unacceptable token, 403 for a valid token of another proxy). The token is checked
//! against the mesh and name of the request before anything is looked up, so an unknown name
//! or mesh and a bad token get the same answer. When
//! a Dataplane of that name is already stored, the stored one too (no takeover). This is an
//! early, readable refusal: the ADS stream is authenticated again, with the token the CP puts
//! in the Envoy bootstrap (`authorization` initial metadata).
//!
//! Zone proxies (`proxyType: ingress|egress`) send a ZoneIngress / ZoneEgress; their node id
//! is `.<name>` (no mesh) and their token is a zone token
//! ([`tokens::authenticate_zone_proxy`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kuma_core::resource::{Resource, ResourceKey, ResourceType, Spec};
use kuma_core::store;
use kuma_core::validate::ValidationError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::manager::{ManagerError, ResourceManager};
use crate::tokens::{self, TokenError, Validator};
use crate::xds::lifecycle::ProxyKind;

/// The bootstrap request, as kuma-dp sends it (unknown keys are ignored, as Kuma does, so
/// newer agents keep working).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Request {
    pub mesh: String,
    pub name: String,
    pub proxy_type: String,
    pub dataplane_token: String,
    pub dataplane_token_path: String,
    pub dataplane_resource: String,
    pub version: Value,
    pub ca_cert: String,
    pub features: Vec<String>,
    pub workdir: String,
    pub readiness_port: u32,
    pub dynamic_metadata: Value,
    /// Port of kuma-dp's DNS server (0 = none): records are generated only with it.
    pub dns_port: u32,
    pub ipv6_enabled: bool,
    /// kuma-dp's certificate and key for a `providedTLS` Prometheus endpoint.
    pub metrics_resources: MetricsResources,
}

/// `metricsResources` of the request (Kuma's), passed to the generator in node metadata.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricsResources {
    pub cert_path: String,
    pub key_path: String,
}

/// What the bootstrap generator needs besides the request.
#[derive(Clone)]
pub struct Params {
    pub admin_address: String,
    pub admin_port: u16,
    /// Configured xDS host; empty = the host kuma-dp used.
    pub xds_host: String,
    pub xds_port: u16,
    pub xds_connect_timeout: String,
    /// The CA of the DP server certificate, used when kuma-dp sends none.
    pub ca_pem: String,
}

#[derive(Clone)]
pub struct BootstrapState {
    pub manager: Arc<ResourceManager>,
    pub params: Arc<Params>,
    /// Checks dataplane tokens (and knows whether they are required).
    pub validator: Arc<Validator>,
    /// This control plane's zone (`multizone.zone.name`): zone tokens are bound to it.
    pub zone: String,
}

/// Kuma's error body.
fn error(status: StatusCode, title: &str, detail: &str, fields: Vec<(String, String)>) -> Response {
    let params: Vec<Value> = fields
        .iter()
        .map(|(f, r)| json!({"field": f, "reason": r}))
        .collect();
    let causes: Vec<Value> = fields
        .iter()
        .map(|(f, r)| json!({"field": f, "message": r}))
        .collect();
    (
        status,
        Json(
            json!({"type": "/std-errors", "status": status.as_u16(), "title": title,
            "detail": detail, "details": detail, "invalid_parameters": params, "causes": causes}),
        ),
    )
        .into_response()
}

pub async fn handler(
    State(st): State<BootstrapState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            return error(
                rejection.status(),
                "Invalid bootstrap request",
                &rejection.body_text(),
                vec![],
            );
        }
    };
    let req = match decode(&body) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let token = req.dataplane_token.trim();
    let auth = st.validator.dataplane_auth_enabled();
    // `dataplaneTokenPath` names a file on the proxy's host: kuma-dp reads it and sends the
    // token itself; the path alone proves nothing.
    if auth && token.is_empty() {
        // Kuma answers this one in plain text.
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "text/plain")],
            tokens::DP_TOKEN_REQUIRED,
        )
            .into_response();
    }
    let parsed = match dataplane_from_request(&req) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let kind = req.kind();
    if kind != ProxyKind::Dataplane {
        return zone_proxy(&st, &req, kind, parsed, token, &headers).await;
    }
    let from_request = parsed.is_some();
    let dataplane = if let Some(res) = parsed {
        if auth
            && let Err(e) = st
                .validator
                .authenticate_dataplane(token, &res.meta.mesh, &res.meta.name)
                .await
        {
            return token_refused(&e, &res.meta.mesh, None);
        }
        let mesh_key = ResourceKey::new(ResourceType::Mesh, "", &res.meta.mesh);
        match st.manager.get(&mesh_key).await {
            Ok(_) => {}
            Err(ManagerError::Store(store::Error::NotFound(_))) => {
                let msg = format!("mesh {:?} does not exist", res.meta.mesh);
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid dataplane resource",
                    &msg,
                    vec![("dataplaneResource.mesh".into(), msg.clone())],
                );
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Store unavailable",
                    &e.to_string(),
                    vec![],
                );
            }
        }
        res
    } else {
        if req.mesh.is_empty() || req.name.is_empty() {
            let mut fields = Vec::new();
            for (f, v) in [("mesh", &req.mesh), ("name", &req.name)] {
                if v.is_empty() {
                    fields.push((
                        f.to_string(),
                        "is required when dataplaneResource is not given".to_string(),
                    ));
                }
            }
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid bootstrap request",
                "either dataplaneResource or mesh and name must be given",
                fields,
            );
        }
        // Authenticate before the lookup: an unknown name and a bad token get the same
        // answer.
        if auth
            && let Err(e) = st
                .validator
                .authenticate_dataplane(token, &req.mesh, &req.name)
                .await
        {
            return token_refused(&e, &req.mesh, None);
        }
        let key = ResourceKey::new(ResourceType::Dataplane, &req.mesh, &req.name);
        match st.manager.get(&key).await {
            Ok(r) => r,
            // Kuma answers 404 with an empty body: kuma-dp keeps retrying until the
            // Dataplane is created through the API ("indirect" lifecycle).
            Err(ManagerError::Store(store::Error::NotFound(_))) => {
                return StatusCode::NOT_FOUND.into_response();
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Store unavailable",
                    &e.to_string(),
                    vec![],
                );
            }
        }
    };
    // The rest of the token's claims (tags, workload, proxy type), and the takeover guard.
    if auth {
        let mesh = &dataplane.meta.mesh;
        if let Err(e) = st.validator.validate_dataplane(token, &dataplane).await {
            return token_refused(&e, mesh, None);
        }
        if from_request {
            match st.manager.get(&dataplane.key()).await {
                Ok(existing) => {
                    if let Err(e) = st.validator.validate_dataplane(token, &existing).await {
                        return token_refused(&e, mesh, Some(&existing));
                    }
                }
                Err(ManagerError::Store(store::Error::NotFound(_))) => {}
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Store unavailable",
                        &e.to_string(),
                        vec![],
                    );
                }
            }
        }
    }
    let aggregate = match metrics_aggregate(&st, &dataplane).await {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                &e.to_string(),
                vec![],
            );
        }
    };
    respond(&st, &req, &dataplane, &headers, aggregate)
}

/// `kumaSidecarConfiguration.metrics.aggregate` (Kuma's `getMetricsConfig`): the
/// application endpoints kuma-dp's hijacker merges, from the Dataplane's effective metrics
/// configuration (`enabled: false` left out, address defaulted to `networking.address`);
/// empty without metrics. Read once at start by kuma-dp.
async fn metrics_aggregate(
    st: &BootstrapState,
    dataplane: &Resource,
) -> Result<Vec<Value>, ManagerError> {
    let Spec::Dataplane(dp) = &dataplane.spec else {
        return Ok(Vec::new());
    };
    let key = ResourceKey::new(ResourceType::Mesh, "", &dataplane.meta.mesh);
    let mesh = match st.manager.get(&key).await {
        Ok(m) => m,
        Err(ManagerError::Store(store::Error::NotFound(_))) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Spec::Mesh(mesh) = &mesh.spec else {
        return Ok(Vec::new());
    };
    Ok(aggregate_json(mesh, dp))
}

/// The `aggregate` entries of `dp` in `mesh`, in Kuma's JSON shape.
pub fn aggregate_json(
    mesh: &kuma_core::resource::Mesh,
    dp: &kuma_core::resource::Dataplane,
) -> Vec<Value> {
    let address = dp.networking().map_or("", |n| n.address.as_str());
    kuma_core::metrics::effective(mesh, dp)
        .map(|c| c.enabled_aggregates(address))
        .unwrap_or_default()
        .into_iter()
        .map(|a| json!({"name": a.name, "address": a.address, "port": a.port, "path": a.path}))
        .collect()
}

/// The bootstrap of a zone proxy: its zone token checked, its ZoneIngress / ZoneEgress from
/// the request (or, by name, the stored one).
async fn zone_proxy(
    st: &BootstrapState,
    req: &Request,
    kind: ProxyKind,
    parsed: Option<Resource>,
    token: &str,
    headers: &HeaderMap,
) -> Response {
    if let Err(reason) =
        tokens::authenticate_zone_proxy(&st.validator, token, kind.name(), &st.zone).await
    {
        tracing::info!(reason, name = %req.name, "bootstrap of a zone proxy refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid zone token",
            &reason,
            vec![("dataplaneToken".into(), reason.clone())],
        );
    }
    let resource = match parsed {
        Some(r) => r,
        None => {
            if req.name.is_empty() {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid bootstrap request",
                    "either dataplaneResource or name must be given",
                    vec![(
                        "name".into(),
                        "is required when dataplaneResource is not given".into(),
                    )],
                );
            }
            let key = ResourceKey::new(kind.resource_type(), "", &req.name);
            match st.manager.get(&key).await {
                Ok(r) => r,
                Err(ManagerError::Store(store::Error::NotFound(_))) => {
                    return StatusCode::NOT_FOUND.into_response();
                }
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Store unavailable",
                        &e.to_string(),
                        vec![],
                    );
                }
            }
        }
    };
    respond(st, req, &resource, headers, Vec::new())
}

/// The answer carrying the Envoy bootstrap of `dataplane` (a Dataplane or zone proxy).
fn respond(
    st: &BootstrapState,
    req: &Request,
    dataplane: &Resource,
    headers: &HeaderMap,
    aggregate: Vec<Value>,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .unwrap_or_else(|| "localhost".into());
    let yaml = match envoy_bootstrap(&st.params, req, dataplane, &host) {
        Ok(y) => y,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not generate the bootstrap",
                &e.to_string(),
                vec![],
            );
        }
    };
    let address = match &dataplane.spec {
        Spec::Dataplane(d) => d
            .networking()
            .map(|n| n.address.clone())
            .unwrap_or_default(),
        Spec::ZoneIngress(zi) => zi.net().address,
        Spec::ZoneEgress(ze) => ze.net().address,
        _ => String::new(),
    };
    Json(json!({
        "bootstrap": base64::engine::general_purpose::STANDARD.encode(yaml),
        "kumaSidecarConfiguration": {
            "networking": {"address": address, "corefileTemplate": null},
            "metrics": {"aggregate": aggregate}
        }
    }))
    .into_response()
}

impl Request {
    /// The proxy type asked for (valid once [`decode`] accepted the request).
    pub fn kind(&self) -> ProxyKind {
        ProxyKind::parse(&self.proxy_type).unwrap_or(ProxyKind::Dataplane)
    }
}

/// Decodes a bootstrap request body (pure): 400 for a body that is not the request's JSON,
/// 422 for a proxy type other than `dataplane`, `ingress` or `egress`.
pub fn decode(body: &[u8]) -> Result<Request, Box<Response>> {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "Invalid bootstrap request",
                &format!("the body is not a valid bootstrap request: {e}"),
                vec![],
            )));
        }
    };
    if ProxyKind::parse(&req.proxy_type).is_none() {
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid bootstrap request",
            "proxyType must be one of dataplane, ingress, egress",
            vec![(
                "proxyType".into(),
                "must be one of dataplane, ingress, egress".into(),
            )],
        )));
    }
    Ok(req)
}

/// The Dataplane (or, for a zone proxy, the ZoneIngress / ZoneEgress) the request carries in
/// `dataplaneResource` (pure: parsed and validated, not yet checked against the store),
/// `None` when it names one by mesh and name instead; 422 for a resource that is not exactly
/// one valid resource of the request's proxy type.
pub fn dataplane_from_request(req: &Request) -> Result<Option<Resource>, Box<Response>> {
    if req.dataplane_resource.is_empty() {
        return Ok(None);
    }
    let value = match Resource::parse_documents(&req.dataplane_resource) {
        Ok(mut docs) if docs.len() == 1 => docs.remove(0),
        Ok(_) => {
            return Err(Box::new(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid dataplane resource",
                "dataplaneResource must hold exactly one resource",
                vec![(
                    "dataplaneResource".into(),
                    "must hold exactly one resource".into(),
                )],
            )));
        }
        Err(e) => {
            return Err(Box::new(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid dataplane resource",
                &e.summary(),
                vec![("dataplaneResource".into(), e.summary())],
            )));
        }
    };
    let res = match Resource::decode(value, Some(req.kind().resource_type())) {
        Ok(d) => {
            // Unknown fields are ignored, as Kuma does (and as a PUT does), and named.
            for w in &d.warnings {
                tracing::warn!(mesh = %d.resource.meta.mesh, name = %d.resource.meta.name,
                    "dataplaneResource: {w}");
            }
            d.resource
        }
        Err(e) => {
            let e = ValidationError::from(e);
            let fields = e
                .violations
                .iter()
                .map(|v| (format!("dataplaneResource.{}", v.field), v.message.clone()))
                .collect();
            return Err(Box::new(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid dataplane resource",
                &e.summary(),
                fields,
            )));
        }
    };
    Ok(Some(res))
}

/// The answer to a refused token of a proxy of `mesh`: 401 when the token is not acceptable,
/// 403 when it is valid but for another proxy (or cannot take over `existing`), 503 when the
/// store failed. The full reason is logged; the answer does not tell whether the mesh exists.
fn token_refused(e: &TokenError, mesh: &str, existing: Option<&Resource>) -> Response {
    tracing::info!(reason = %e, mesh, "bootstrap refused: dataplane token");
    let detail = match existing {
        Some(existing) => tokens::takeover_refusal(existing, e),
        None => e.public_reason(mesh),
    };
    let (status, title) = if e.is_transient() {
        (StatusCode::SERVICE_UNAVAILABLE, "Store unavailable")
    } else if e.is_mismatch() || existing.is_some() {
        (StatusCode::FORBIDDEN, "Access Denied")
    } else {
        (StatusCode::UNAUTHORIZED, "Invalid dataplane token")
    };
    error(
        status,
        title,
        &detail,
        vec![("dataplaneToken".into(), detail.clone())],
    )
}

/// `host:port`, `[v6]:port`, `host` → host.
pub fn host_without_port(h: &str) -> String {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
        _ => h.to_string(),
    }
}

/// The Envoy bootstrap as YAML (pure; golden-tested).
pub fn envoy_bootstrap(
    params: &Params,
    req: &Request,
    dataplane: &Resource,
    request_host: &str,
) -> anyhow::Result<String> {
    let (kind, cluster, admin) = match &dataplane.spec {
        Spec::Dataplane(dp) => (
            ProxyKind::Dataplane,
            dp.identifying_service(),
            dp.networking().and_then(|n| n.admin.clone()),
        ),
        Spec::ZoneIngress(zi) => (ProxyKind::Ingress, "ingress".into(), zi.net().admin),
        Spec::ZoneEgress(ze) => (ProxyKind::Egress, "egress".into(), ze.net().admin),
        _ => anyhow::bail!("not a Dataplane, ZoneIngress or ZoneEgress"),
    };
    let admin_port = admin
        .map(|a| a.port)
        .filter(|p| *p != 0)
        .unwrap_or(u32::from(params.admin_port));
    let xds_host = if params.xds_host.is_empty() {
        request_host
    } else {
        &params.xds_host
    };
    let is_ip = xds_host.parse::<std::net::IpAddr>().is_ok();
    let ca = if req.ca_cert.trim().is_empty() {
        &params.ca_pem
    } else {
        &req.ca_cert
    };
    let delta = req.features.iter().any(|f| f == "feature-delta-grpc");
    let node_id = format!("{}.{}", dataplane.meta.mesh, dataplane.meta.name);
    let resource_json = serde_json::to_string(&dataplane.to_wire())?;
    let mut metadata = json!({
        "dataplane.resource": resource_json,
        "dataplane.proxyType": kind.name(),
        "dataplane.admin.port": admin_port.to_string(),
        "dataplane.admin.address": params.admin_address,
        "dataplane.readinessReporter.port": req.readiness_port.to_string(),
        "features": req.features,
        "workdir": req.workdir,
    });
    if !req.version.is_null() {
        metadata["version"] = req.version.clone();
    }
    if req.dns_port != 0 {
        metadata["dataplane.dns.port"] = json!(req.dns_port.to_string());
    }
    if req.ipv6_enabled {
        metadata["ipv6Enabled"] = json!(true);
    }
    // Kuma always sends both keys; only non-empty ones here (the bootstrap stays unchanged
    // for proxies without them).
    let m = &req.metrics_resources;
    if !m.cert_path.is_empty() {
        metadata["metricsCertPath"] = json!(m.cert_path);
    }
    if !m.key_path.is_empty() {
        metadata["metricsKeyPath"] = json!(m.key_path);
    }
    if req
        .dynamic_metadata
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        metadata["dynamicMetadata"] = req.dynamic_metadata.clone();
    }
    let mut grpc_service = json!({"envoy_grpc": {"cluster_name": "ads_cluster"}});
    if !req.dataplane_token.is_empty() {
        grpc_service["initial_metadata"] =
            json!([{"key": "authorization", "value": req.dataplane_token.trim()}]);
    }
    let san_type = if is_ip { "IP_ADDRESS" } else { "DNS" };
    let bootstrap = json!({
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata},
        "admin": {
            "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": "/dev/null"}}],
            "address": {"socket_address": {"address": params.admin_address, "port_value": admin_port}}
        },
        "dynamic_resources": {
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "ads_config": {
                "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service]
            }
        },
        "static_resources": {
            "clusters": [{
                "name": "ads_cluster",
                "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
                // `localhost` resolves to ::1 first; the DP server often listens on IPv4 only.
                "dns_lookup_family": "V4_PREFERRED",
                "connect_timeout": params.xds_connect_timeout,
                "upstream_connection_options": {"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 10, "keepalive_interval": 10}},
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": if is_ip { "" } else { xds_host },
                        "common_tls_context": {
                            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                            "alpn_protocols": ["h2"],
                            "validation_context_sds_secret_config": {"name": "cp_validation_ctx"}
                        }
                    }
                },
                "load_assignment": {
                    "cluster_name": "ads_cluster",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": xds_host, "port_value": params.xds_port}}}}]}]
                }
            }],
            "secrets": [{
                "name": "cp_validation_ctx",
                "validation_context": {
                    "trusted_ca": {"inline_string": ca},
                    "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": xds_host}}]
                }
            }]
        }
    });
    Ok(serde_saphyr::to_string(&bootstrap)?)
}

#[cfg(test)]
mod tests;
