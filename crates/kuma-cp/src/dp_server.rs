//! The DP server: one TLS listener carrying HTTP/1.1 and HTTP/2, serving `POST /bootstrap`,
//! `POST /readiness` and gRPC ADS side by side (Kuma's port 5678).
//!
//! `POST /readiness` (`{"mesh", "name", "ready"}`, the dataplane token as a bearer token) is
//! how kuma-dp says its proxy is live, or is about to stop: the proxy joins or leaves its
//! peers' endpoints. With dataplane authentication on, an unknown name and a bad token get
//! the same 401.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
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
}

impl DpServer {
    /// `listener` is already bound (two-phase start-up).
    pub fn new(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        bootstrap: BootstrapState,
        ads: kuma_xds::Server,
        runtime: Arc<Runtime>,
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
        Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            router: http.merge(grpc),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let conns = tokio_util::task::TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "DP server accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let router = self.router.clone();
            let shutdown = shutdown.clone();
            conns.spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
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
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(Duration::from_secs(15)))
                    .keep_alive_timeout(Duration::from_secs(15))
                    .max_concurrent_streams(1_000);
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(tls),
                    TowerToHyperService::new(router),
                );
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "DP server connection ended");
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
        Ok(())
    }
}
