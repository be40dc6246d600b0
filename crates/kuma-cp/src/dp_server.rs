//! The DP server: one TLS listener carrying HTTP/1.1 and HTTP/2, serving `POST /bootstrap`
//! and gRPC ADS side by side (Kuma's port 5678).

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

use crate::bootstrap::{self, BootstrapState};

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
    ) -> Self {
        let grpc = tonic::service::Routes::new(ads.into_service()).into_axum_router();
        let http = Router::new()
            .route("/bootstrap", post(bootstrap::handler))
            .layer(DefaultBodyLimit::max(MAX_BOOTSTRAP_BODY))
            .with_state(bootstrap);
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
