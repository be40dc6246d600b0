//! The DP server: one TLS listener carrying HTTP/1.1 and HTTP/2, serving `POST /bootstrap`,
//! `POST /readiness` and gRPC ADS side by side (Kuma's port 5678).
//!
//! `POST /readiness` (`{"mesh", "name", "ready"}`, the dataplane token as a bearer token) is
//! how kuma-dp says its proxy is live, or is about to stop: the proxy joins or leaves its
//! peers' endpoints. With dataplane authentication on, an unknown name and a bad token get
//! the same 401.
//!
//! Nothing is given away before authentication ([`bounds`]): connections are capped in
//! total and per source IP (over a cap: closed at once); a connection none of whose ADS
//! streams authenticated and none of whose requests succeeded is closed after
//! `dpServer.authnTimeout`; an ADS stream may send `dpServer.maxUnauthenticatedBytes` and
//! must authenticate within that timeout (4 MiB messages only after); HTTP/1 headers must
//! arrive within `dpServer.readHeaderTimeout` and a body within the timeout; HTTP/2 streams
//! per connection are capped (`dpServer.maxConcurrentStreams`), and so are those waiting
//! for authentication until one authenticated (`dpServer.maxUnauthenticatedStreams`). An accept error (such as
//! EMFILE) backs off up to a second and is retried, never ends the server.

pub mod bounds;

use std::sync::Arc;
use std::time::Duration;

pub use bounds::Limits;
use bounds::{Caps, Conn, Guarded, Throttle};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kuma_core::resource::{ResourceKey, ResourceType};
use serde::Deserialize;

use crate::bootstrap::{self, BootstrapState};
use crate::xds::Runtime;

/// Largest accepted `/readiness` body.
const MAX_READINESS_BODY: usize = 4 * 1024;

#[derive(Clone)]
struct ReadinessState {
    bootstrap: BootstrapState,
    runtime: Arc<Runtime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadinessReport {
    mesh: String,
    name: String,
    ready: bool,
}

async fn readiness(
    State(st): State<ReadinessState>,
    headers: HeaderMap,
    body: Result<Json<ReadinessReport>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let report = match body {
        Ok(Json(r)) => r,
        Err(e) => return (e.status(), e.body_text()).into_response(),
    };
    let refused = || (StatusCode::UNAUTHORIZED, "invalid dataplane token").into_response();
    if st.bootstrap.validator.dataplane_auth_enabled() {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if token.is_empty() {
            return refused();
        }
        let key = ResourceKey::new(ResourceType::Dataplane, &report.mesh, &report.name);
        let Ok(dataplane) = st.bootstrap.manager.get(&key).await else {
            return refused();
        };
        if let Err(e) = st
            .bootstrap
            .validator
            .validate_dataplane(token, &dataplane)
            .await
        {
            if e.is_transient() {
                return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response();
            }
            return refused();
        }
    }
    if st
        .runtime
        .report_readiness(&report.mesh, &report.name, report.ready)
    {
        StatusCode::OK.into_response()
    } else {
        (
            StatusCode::CONFLICT,
            "the proxy has no open ADS stream on this control plane",
        )
            .into_response()
    }
}

/// Largest accepted `/bootstrap` body.
pub const MAX_BOOTSTRAP_BODY: usize = 1024 * 1024;

pub struct DpServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
}

impl DpServer {
    /// `listener` is already bound (two-phase start-up).
    pub fn new(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        bootstrap: BootstrapState,
        ads: kuma_xds::Server,
        runtime: Arc<Runtime>,
        limits: Limits,
    ) -> Self {
        let grpc = tonic::service::Routes::new(ads.into_service()).into_axum_router();
        let ready = Router::new()
            .route("/readiness", post(readiness))
            .layer(DefaultBodyLimit::max(MAX_READINESS_BODY))
            .with_state(ReadinessState {
                bootstrap: bootstrap.clone(),
                runtime,
            });
        let http = Router::new()
            .route("/bootstrap", post(bootstrap::handler))
            .layer(DefaultBodyLimit::max(MAX_BOOTSTRAP_BODY))
            .with_state(bootstrap)
            .merge(ready);
        Self::from_router(listener, tls, http.merge(grpc), limits)
    }

    /// The same TLS server and bounds around another router (global's KDS port: its gRPC
    /// streams admit themselves once their zone token checked out).
    pub fn from_router(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
        limits: Limits,
    ) -> Self {
        Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            limits,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let limits = Arc::new(self.limits);
        let caps = Caps::new(limits.max_connections, limits.max_connections_per_ip);
        let conns = tokio_util::task::TaskTracker::new();
        let mut refused = Throttle::new(Duration::from_secs(10));
        let mut accept_failed = Throttle::new(Duration::from_secs(10));
        let mut backoff = Duration::ZERO;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => {
                        backoff = Duration::ZERO;
                        c
                    }
                    Err(e) => {
                        // Out of file descriptors (EMFILE) and the like: wait for connections
                        // to close rather than spin; the server carries on.
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        if let Some(n) = accept_failed.hit() {
                            tracing::warn!(error = %e, failures = n, backoff = ?backoff, "DP server accept failed; retrying");
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => continue,
                        }
                    }
                },
            };
            let permit = match caps.acquire(peer.ip()) {
                Ok(p) => p,
                Err(cap) => {
                    if let Some(n) = refused.hit() {
                        tracing::warn!(%peer, cap = cap.key(), refused = n, "DP server connection over a cap: closed");
                    }
                    drop(tcp);
                    continue;
                }
            };
            let accepted = tokio::time::Instant::now();
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let router = self.router.clone();
            let shutdown = shutdown.clone();
            let limits = limits.clone();
            conns.spawn(async move {
                let _permit = permit;
                let deadline = accepted + limits.authn_timeout;
                let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn = Conn::new();
                let service = {
                    let conn = conn.clone();
                    let limits = limits.clone();
                    hyper::service::service_fn(move |req| {
                        guarded(router.clone(), conn.clone(), limits.clone(), req)
                    })
                };
                let window = u32::try_from(limits.max_unauthenticated_bytes)
                    .unwrap_or(u32::MAX)
                    .max(65_535);
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.read_header_timeout);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(Duration::from_secs(15)))
                    .keep_alive_timeout(Duration::from_secs(15))
                    .max_concurrent_streams(limits.max_concurrent_streams)
                    // What a client may send that the server has not read yet, per stream and
                    // per connection: no more than it may send before authenticating (ADS
                    // requests are small; a 4 MiB one still passes, window by window).
                    .initial_stream_window_size(window)
                    .initial_connection_window_size(window);
                let served = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                tokio::select! {
                    r = served => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "DP server connection ended");
                    },
                    _ = shutdown.cancelled() => {}
                    () = conn.cut_off() => {
                        tracing::debug!(%peer, "DP server connection closed: a bound was broken before authentication");
                    }
                    () = conn.expire(deadline, limits.authn_timeout) => {
                        tracing::debug!(%peer, "DP server connection closed: not authenticated in time");
                    }
                }
            });
        }
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
        Ok(())
    }
}

/// One request of a connection, its body under the bounds of [`bounds`]: an ADS stream
/// (gRPC) carries the [`kuma_xds::Admission`] that lifts them; any other request admits the
/// connection when it succeeds.
async fn guarded(
    router: Router,
    conn: Arc<Conn>,
    limits: Arc<Limits>,
    req: axum::http::Request<hyper::body::Incoming>,
) -> Result<Response, std::convert::Infallible> {
    use tower::ServiceExt;
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let deadline = tokio::time::Instant::now() + limits.authn_timeout;
    let (mut parts, body) = req.into_parts();
    if grpc {
        let slot = match conn.stream_slot(limits.max_unauthenticated_streams) {
            Ok(slot) => slot,
            Err(v) => {
                tracing::debug!(reason = %v, "ADS stream refused");
                return Ok(v.status().into_http());
            }
        };
        let (body, admission) =
            Guarded::stream(body, conn, slot, limits.max_unauthenticated_bytes, deadline);
        parts.extensions.insert(admission);
        let req = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
        return router.oneshot(req).await;
    }
    let _busy = conn.busy();
    let body = Guarded::body(body, conn.clone(), deadline);
    let req = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
    let resp = router.oneshot(req).await?;
    if resp.status().is_success() {
        conn.admit();
    }
    Ok(resp)
}
