//! Diagnostics listener (Kuma's 5680), served by [`crate::serve`] with the `diagnostics.*`
//! timeouts and connection cap:
//!
//! - `/healthy`: 200 while the process serves.
//! - `/ready`: 200 with an empty body (Kuma's) when every [`ready::Condition`] holds: the
//!   store answers a probe, every listener serves, the first full reconcile is done (and the
//!   VIP allocator's first pass where it runs), and a federated zone has had a full sync from
//!   global. Otherwise 503 with one line per condition not met (`name: why`; Kuma's body is
//!   empty and checks listeners only). `?exclude=<name>` (repeatable or comma-separated)
//!   leaves conditions out (as kube-apiserver's `/readyz?exclude=`): `exclude=kds` asks
//!   whether a federated zone serves on its own.
//! - `/metrics`: the Prometheus text exposition of [`crate::metrics::Metrics`].

pub mod ready;

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::serve::{self, Limits};

pub use ready::{Condition, Readiness};

#[derive(Clone)]
struct Diag {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

pub struct Diagnostics {
    server: serve::Server,
    router: Router,
}

impl Diagnostics {
    /// `listener` is already bound (two-phase start-up).
    pub fn new(
        listener: TcpListener,
        limits: Limits,
        readiness: Readiness,
        metrics: Arc<Metrics>,
    ) -> Self {
        let router = router(readiness, metrics);
        let server = serve::Server::new(
            "diagnostics",
            "diagnostics.maxConnections",
            listener,
            limits,
        );
        Self { server, router }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.server.run(self.router, shutdown).await;
        Ok(())
    }
}

fn router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/ready", get(ready_handler))
        .route("/healthy", get(|| async { "OK" }))
        .route("/metrics", get(metrics_handler))
        .with_state(Diag { readiness, metrics })
}

/// The names in `exclude=` parameters of a query string (`a,b` or repeated).
fn excluded(query: Option<&str>) -> Vec<&str> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("exclude="))
        .flat_map(|v| v.split(','))
        .filter(|n| !n.is_empty())
        .collect()
}

async fn ready_handler(State(d): State<Diag>, RawQuery(query): RawQuery) -> Response {
    match d.readiness.check(&excluded(query.as_deref())) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(missing) => {
            let mut body = String::from("not ready:\n");
            for m in missing {
                body.push_str(&m);
                body.push('\n');
            }
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

async fn metrics_handler(State(d): State<Diag>) -> Response {
    // Gathering and encoding is CPU work over a few hundred series: not worth a blocking
    // thread.
    let body = d.metrics.render();
    ([(header::CONTENT_TYPE, d.metrics.content_type())], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(router: &Router, uri: &str) -> (StatusCode, String, String) {
        let resp = router
            .clone()
            .oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), ctype)
    }

    #[tokio::test]
    async fn ready_names_what_is_missing_and_metrics_are_prometheus_text() {
        let readiness = Readiness::default();
        let store = readiness.condition("store", "not probed yet");
        let kds = readiness.condition("kds", "no full sync from global yet");
        let r = router(readiness, Metrics::for_tests());
        let (code, body, _) = get(&r, "/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready:\nstore: not probed yet\nkds: no full sync from global yet\n"
        );
        store.met();
        let (code, body, _) = get(&r, "/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready:\nkds: no full sync from global yet\n");
        assert_eq!(get(&r, "/ready?exclude=kds").await.0, StatusCode::OK);
        assert_eq!(get(&r, "/ready?exclude=x,kds").await.0, StatusCode::OK);
        assert_eq!(
            get(&r, "/ready?exclude=x&exclude=kds").await.0,
            StatusCode::OK
        );
        kds.met();
        assert_eq!(
            get(&r, "/ready").await,
            (StatusCode::OK, String::new(), String::new())
        );
        assert_eq!(get(&r, "/healthy").await.0, StatusCode::OK);
        let (code, body, ctype) = get(&r, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, "text/plain; version=0.0.4");
        assert!(body.contains("# TYPE xds_delivery histogram\n"), "{body}");
    }
}
