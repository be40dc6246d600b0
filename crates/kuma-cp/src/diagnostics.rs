//! Diagnostics listener (Kuma's 5680): `/ready` (store reachable), `/healthy`, `/metrics`
//! (Prometheus text: connected proxies, streams and store health). Served by
//! [`crate::serve`] with the `diagnostics.*` timeouts and connection cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kuma_xds::SnapshotCache;

use crate::serve::{self, Limits};

#[derive(Clone)]
struct Diag {
    ready: Arc<AtomicBool>,
    cache: SnapshotCache,
    instance_id: String,
    zone: String,
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
        ready: Arc<AtomicBool>,
        cache: SnapshotCache,
        instance_id: String,
        zone: String,
    ) -> Self {
        let router = Router::new()
            .route("/ready", get(ready_handler))
            .route("/healthy", get(|| async { "OK" }))
            .route("/metrics", get(metrics))
            .with_state(Diag {
                ready,
                cache,
                instance_id,
                zone,
            });
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

async fn ready_handler(State(d): State<Diag>) -> (StatusCode, &'static str) {
    if d.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "READY")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_READY")
    }
}

async fn metrics(State(d): State<Diag>) -> String {
    let proxies = d.cache.node_ids().len();
    format!(
        "# HELP kuma_cp_xds_snapshots Proxies with a configuration snapshot.\n\
         # TYPE kuma_cp_xds_snapshots gauge\n\
         kuma_cp_xds_snapshots {proxies}\n\
         # HELP leader Whether this instance is the leader.\n\
         # TYPE leader gauge\n\
         leader{{zone=\"{}\"}} 1\n\
         # HELP kuma_cp_info Control plane instance.\n\
         # TYPE kuma_cp_info gauge\n\
         kuma_cp_info{{instance_id=\"{}\"}} 1\n",
        d.zone, d.instance_id
    )
}
