//! The monitoring assignment server (`monitoringAssignmentServer.port`, 5676): how
//! Prometheus finds every proxy to scrape.
//!
//! - `POST /v3/discovery:monitoringassignments` — Kuma's MADS over HTTP (Prometheus'
//!   `kuma_sd`): a `DiscoveryRequest` in protobuf JSON (snake_case or camelCase), answered with
//!   every assignment (one per Dataplane, `/meshes/<mesh>/dataplanes/<name>`) in snake_case
//!   JSON once their version differs from the request's `version_info`; the request waits for
//!   that up to `?fetch-timeout=` (Go duration; default `defaultFetchTimeout`, at most
//!   [`MAX_FETCH_TIMEOUT`]); 304 with no body when nothing changed.
//! - `GET /http_sd[?mesh=<mesh>]` — an addition for a stock Prometheus (`http_sd_configs`):
//!   one target group per Dataplane, `targets: ["<address>:<port>"]` and the
//!   `__meta_kuma_*` labels of [`kuma_core::metrics::Target::http_sd_labels`], ordered by
//!   mesh and name.
//!
//! What is listed: every Dataplane (gateways included, zone proxies not) of the meshes whose
//! `metrics.enabledBackend` names a `prometheus` backend, at its effective configuration
//! ([`kuma_core::metrics::effective_from`]). The list follows store events ([`Watcher`]: one
//! store read per changed key, changes coalesced until a 10 ms quiet gap, at most
//! `assignmentRefreshInterval`), published through a `watch` channel with a version that
//! changes only when the content does. No timer regenerates anything.
//!
//! Bounds: the listener is served by [`crate::serve`] (deadlines, connection cap); request
//! bodies above [`MAX_BODY`] are refused before parsing; at most `maxLongPolls` requests wait
//! at once, the others are answered at once.
//!
//! Main items: [`Server`], [`Settings`], [`Assignments`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kuma_core::metrics::{PrometheusConf, Target};
use kuma_core::resource::{Dataplane, Resource, ResourceKey, ResourceType, Spec};
use kuma_core::store;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::manager::{ManagerError, ResourceManager};
use crate::serve::{self, Limits};

/// Kuma's MADS path.
pub const MADS_PATH: &str = "/v3/discovery:monitoringassignments";
/// The type URL every response carries, whatever the request said.
pub const TYPE_URL: &str = "type.googleapis.com/kuma.observability.v1.MonitoringAssignment";
/// Longest a MADS request waits for a change, whatever its `fetch-timeout` (Prometheus'
/// default is 2m).
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest request body (a `DiscoveryRequest` is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;
/// Store changes closer than this are served together.
const QUIET: Duration = Duration::from_millis(10);
/// Wait before reading the store again after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// What the server needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This control plane's zone: `__meta_kuma_zone` of Dataplanes that name none.
    pub zone: String,
    pub default_fetch_timeout: Duration,
    /// Longest a change waits before it is published.
    pub refresh_interval: Duration,
    pub max_long_polls: usize,
}

/// The assignments of every listed Dataplane, ordered by mesh and name, with their version
/// (a digest of the content: equal content, equal version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignments {
    pub version: String,
    pub targets: Vec<Target>,
}

impl Assignments {
    /// The assignments of `dataplanes` (`(mesh, name)` → resource labels and spec) given the
    /// enabled Prometheus backend of each mesh (`None`: metrics off).
    pub fn build<'a>(
        meshes: &BTreeMap<String, Option<PrometheusConf>>,
        dataplanes: impl IntoIterator<
            Item = (
                &'a (String, String),
                &'a (BTreeMap<String, String>, Dataplane),
            ),
        >,
        zone: &str,
    ) -> Self {
        let mut targets = Vec::new();
        for ((mesh, name), (labels, dp)) in dataplanes {
            let Some(Some(base)) = meshes.get(mesh) else {
                continue;
            };
            let Some(conf) = kuma_core::metrics::effective_from(Some(base), dp) else {
                tracing::debug!(
                    mesh,
                    name,
                    "metrics conf of the Dataplane does not decode: not listed"
                );
                continue;
            };
            targets.push(Target::new(mesh, name, labels, dp, &conf, zone));
        }
        targets.sort_by(|a, b| (&a.mesh, &a.name).cmp(&(&b.mesh, &b.name)));
        let mut h = Sha256::new();
        for t in &targets {
            h.update(format!("{t:?}\n").as_bytes());
        }
        Self {
            version: hex::encode(&h.finalize()[..16]),
            targets,
        }
    }

    /// The MADS `DiscoveryResponse` (snake_case, as Kuma's jsonpb `OrigName`), with only the
    /// assignments named in `names` when it is not empty.
    pub fn discovery_response(&self, names: &[String]) -> Value {
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let resources: Vec<Value> = self
            .targets
            .iter()
            .filter(|t| wanted.is_empty() || wanted.contains(t.assignment_name().as_str()))
            .map(|t| {
                let mut target = json!({
                    "name": t.name,
                    "scheme": t.scheme,
                    "address": t.address,
                    "metrics_path": t.metrics_path,
                });
                if !t.labels.is_empty() {
                    target["labels"] = json!(t.labels);
                }
                json!({
                    "@type": TYPE_URL,
                    "mesh": t.mesh,
                    "service": t.service,
                    "targets": [target],
                })
            })
            .collect();
        json!({"version_info": self.version, "resources": resources, "type_url": TYPE_URL})
    }

    /// The Prometheus HTTP SD body: one target group per Dataplane (of `mesh` when given).
    pub fn http_sd(&self, mesh: Option<&str>) -> Value {
        Value::Array(
            self.targets
                .iter()
                .filter(|t| mesh.is_none_or(|m| m == t.mesh))
                .map(|t| json!({"targets": [t.address], "labels": t.http_sd_labels()}))
                .collect(),
        )
    }
}

/// The bound MADS listener, ready to [`Server::run`].
pub struct Server {
    server: serve::Server,
    manager: Arc<ResourceManager>,
    settings: Settings,
}

impl Server {
    /// `listener` is already bound (two-phase start-up); `tls` for `tlsEnabled`.
    pub fn new(
        listener: TcpListener,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
        manager: Arc<ResourceManager>,
        settings: Settings,
    ) -> Self {
        let mut server = serve::Server::new(
            "monitoring assignment server",
            "monitoringAssignmentServer.maxConnections",
            listener,
            limits,
        );
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        Self {
            server,
            manager,
            settings,
        }
    }

    /// Follows the store and serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(None);
        let watcher = Watcher {
            manager: self.manager,
            zone: self.settings.zone.clone(),
            refresh: self.settings.refresh_interval,
        };
        let task = tokio::spawn(watcher.run(tx, shutdown.clone()));
        self.server.run(router(rx, &self.settings), shutdown).await;
        task.abort();
        Ok(())
    }
}

/// The latest assignments (`None` until the first read of the store).
pub type Latest = watch::Receiver<Option<Arc<Assignments>>>;

#[derive(Clone)]
struct Shared {
    latest: Latest,
    default_fetch_timeout: Duration,
    long_polls: Arc<Semaphore>,
}

/// The routes, serving what `latest` holds.
pub fn router(latest: Latest, settings: &Settings) -> Router {
    Router::new()
        .route(MADS_PATH, post(fetch))
        .route("/http_sd", get(http_sd))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Shared {
            latest,
            default_fetch_timeout: settings.default_fetch_timeout,
            long_polls: Arc::new(Semaphore::new(settings.max_long_polls)),
        })
}

/// Kuma's REST error shape.
fn error(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"title": title, "detail": detail, "details": detail}).to_string(),
    )
        .into_response()
}

fn json_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DiscoveryRequest {
    #[serde(alias = "versionInfo")]
    version_info: String,
    #[serde(alias = "responseNonce")]
    #[allow(dead_code)] // decoded for its type only (Kuma's responses carry no nonce)
    response_nonce: String,
    #[serde(alias = "typeUrl")]
    #[allow(dead_code)] // overwritten with TYPE_URL, as Kuma does
    type_url: String,
    #[serde(alias = "resourceNames")]
    resource_names: Vec<String>,
    node: Node,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Node {
    id: String,
}

/// Parses a request body as jsonpb would: `null` fields read as absent, unknown ones ignored.
fn parse_request(body: &[u8]) -> Result<DiscoveryRequest, String> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("a DiscoveryRequest must be a JSON object".into());
    }
    kuma_core::resource::wire::normalize_nulls(&mut v);
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// go-restful's `Consumes(application/json)`: a missing Content-Type counts as
/// `application/octet-stream`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// go-restful's `Produces(application/json)`: no Accept, or one allowing JSON.
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.trim().is_empty()
        || accept.split(',').any(|r| {
            let r = r.split(';').next().unwrap_or_default().trim();
            ["application/json", "application/*", "*/*"]
                .iter()
                .any(|ok| r.eq_ignore_ascii_case(ok))
        })
}

/// Waits until `latest` holds assignments whose version differs from `version`, or until
/// `timeout`.
pub async fn wait_for_change(latest: &mut Latest, version: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if latest
            .borrow_and_update()
            .as_ref()
            .is_some_and(|a| a.version != version)
        {
            return;
        }
        match tokio::time::timeout_at(deadline, latest.changed()).await {
            Ok(Ok(())) => {}
            // Timed out, or the watcher is gone (shutting down).
            _ => return,
        }
    }
}

#[derive(Deserialize)]
struct FetchQuery {
    #[serde(rename = "fetch-timeout")]
    fetch_timeout: Option<String>,
}

async fn fetch(
    State(s): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<FetchQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !is_json(&headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415: Unsupported Media Type",
        )
            .into_response();
    }
    if !accepts_json(&headers) {
        return (StatusCode::NOT_ACCEPTABLE, "406: Not Acceptable").into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            return error(
                rejection.status(),
                "Could not parse request body",
                &rejection.body_text(),
            );
        }
    };
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Could not parse request body", &e),
    };
    let timeout = match query.as_ref().map(|q| q.fetch_timeout.as_deref()) {
        Ok(None) => s.default_fetch_timeout,
        // Go's durations may be negative: like 0, no wait.
        Ok(Some(t)) => match kuma_core::duration::parse(t.trim().strip_prefix('-').unwrap_or(t)) {
            Ok(_) if t.trim().starts_with('-') => Duration::ZERO,
            Ok(d) => d,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Could not parse fetch-timeout",
                    &e.to_string(),
                );
            }
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Could not parse fetch-timeout",
                &e.body_text(),
            );
        }
    };
    let timeout = timeout.min(MAX_FETCH_TIMEOUT);
    let mut latest = s.latest.clone();
    if !timeout.is_zero() {
        // Over the cap, answer at once: the client polls instead of waiting.
        if let Ok(_permit) = s.long_polls.clone().try_acquire_owned() {
            wait_for_change(&mut latest, &req.version_info, timeout).await;
        }
    }
    let current = latest.borrow().clone();
    let Some(current) = current else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not fetch MonitoringAssignments",
            &format!("missing snapshot for {}", req.node.id),
        );
    };
    if current.version == req.version_info {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    json_response(&current.discovery_response(&req.resource_names))
}

#[derive(Deserialize)]
struct SdQuery {
    mesh: Option<String>,
}

async fn http_sd(
    State(s): State<Shared>,
    query: Result<Query<SdQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mesh = match &query {
        Ok(q) => q.mesh.as_deref().filter(|m| !m.is_empty()),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Could not parse the query",
                &e.body_text(),
            );
        }
    };
    let current = s.latest.borrow().clone();
    match current {
        Some(a) => json_response(&a.http_sd(mesh)),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready",
            "the Dataplanes have not been read yet",
        ),
    }
}

/// Keeps the published [`Assignments`] current from the store's events.
pub struct Watcher {
    pub manager: Arc<ResourceManager>,
    pub zone: String,
    pub refresh: Duration,
}

/// What the assignments are computed from.
#[derive(Default)]
struct Mirror {
    /// Mesh → its enabled Prometheus backend (`None`: metrics off).
    meshes: BTreeMap<String, Option<PrometheusConf>>,
    /// `(mesh, name)` → resource labels and spec.
    dataplanes: BTreeMap<(String, String), (BTreeMap<String, String>, Dataplane)>,
}

impl Mirror {
    fn set(&mut self, key: &ResourceKey, res: Option<Resource>) {
        match (key.rtype, res) {
            (ResourceType::Mesh, Some(r)) => {
                if let Spec::Mesh(m) = &r.spec {
                    let conf = kuma_core::metrics::mesh_backend(m).and_then(Result::ok);
                    self.meshes.insert(r.meta.name, conf);
                }
            }
            (ResourceType::Mesh, None) => {
                self.meshes.remove(&key.name);
            }
            (ResourceType::Dataplane, Some(r)) => {
                if let Spec::Dataplane(mut d) = r.spec {
                    // A target needs the addresses, tags and metrics, not the outbounds
                    // (most of a Dataplane's size): not kept, one copy less per proxy.
                    if let Some(n) = d.networking.as_mut() {
                        n.outbound = Vec::new();
                    }
                    self.dataplanes
                        .insert((r.meta.mesh, r.meta.name), (r.meta.labels, d));
                }
            }
            (ResourceType::Dataplane, None) => {
                self.dataplanes
                    .remove(&(key.mesh.clone(), key.name.clone()));
            }
            _ => {}
        }
    }
}

fn matters(key: &ResourceKey) -> bool {
    matches!(key.rtype, ResourceType::Mesh | ResourceType::Dataplane)
}

impl Watcher {
    /// Publishes into `tx` until `shutdown`.
    pub async fn run(
        self,
        tx: watch::Sender<Option<Arc<Assignments>>>,
        shutdown: CancellationToken,
    ) {
        // Subscribed before the first read: nothing written after it is missed.
        let mut events = self.manager.store().watch();
        let mut mirror = Mirror::default();
        let mut reload = true;
        let mut keys: BTreeSet<ResourceKey> = BTreeSet::new();
        loop {
            if reload {
                match self.load_all().await {
                    Ok(m) => {
                        mirror = m;
                        reload = false;
                        keys.clear();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "MADS: reading Meshes and Dataplanes failed; retrying");
                    }
                }
            } else {
                for k in std::mem::take(&mut keys) {
                    match self.manager.get(&k).await {
                        Ok(r) => mirror.set(&k, Some(r)),
                        Err(ManagerError::Store(store::Error::NotFound(_))) => mirror.set(&k, None),
                        Err(e) => {
                            tracing::warn!(error = %e, "MADS: reading a changed resource failed; reading everything again");
                            reload = true;
                            break;
                        }
                    }
                }
            }
            if !reload {
                let next = Assignments::build(&mirror.meshes, &mirror.dataplanes, &self.zone);
                tx.send_if_modified(|cur| {
                    if cur.as_ref().is_some_and(|c| c.version == next.version) {
                        false
                    } else {
                        *cur = Some(Arc::new(next));
                        true
                    }
                });
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.recv() => e,
                _ = tokio::time::sleep(RETRY), if reload => continue,
            };
            let mut batch = crate::store::Batch::default();
            let open = batch
                .gather(&mut events, first, matters, QUIET, self.refresh)
                .await;
            keys.extend(batch.keys);
            reload |= batch.lagged;
            if !open {
                return;
            }
        }
    }

    async fn load_all(&self) -> Result<Mirror, ManagerError> {
        let mut m = Mirror::default();
        for r in self.manager.list(ResourceType::Mesh, None).await? {
            let key = r.key();
            m.set(&key, Some(r));
        }
        for r in self.manager.list(ResourceType::Dataplane, None).await? {
            let key = r.key();
            m.set(&key, Some(r));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests;
