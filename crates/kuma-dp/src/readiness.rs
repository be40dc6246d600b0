//! The readiness reporter: `GET /ready` on `127.0.0.1:<readiness-port>`.
//!
//! It answers from the proxy's [`State`]: `READY` (200) when Envoy's admin `/ready` says
//! `LIVE`, `NOT_READY` (503) before Envoy runs or while it is not live, and `TERMINATING` (503)
//! once shutdown began. The control plane exposes it to the network through Envoy's admin
//! listener. Only `/ready` is served; everything else is 404.
//!
//! With the DNS server on ([`Reporter::with_dns_gate`]), a live Envoy is reported `READY` only
//! once the first DNS table arrived, or once [`DNS_GATE_TIMEOUT`] passed since the gate was set
//! (then with one warning), as Kuma does: the workload should start with its mesh names
//! resolvable, yet a control plane that sends no table must not keep the proxy unready.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::dns;
use crate::envoy::admin;

/// How long readiness waits for the first DNS table (Kuma's).
pub const DNS_GATE_TIMEOUT: Duration = Duration::from_secs(15);

/// Body for a live Envoy.
pub const READY: &str = "READY";
/// Body while Envoy is not (yet) live.
pub const NOT_READY: &str = "NOT_READY";
/// Body once shutdown began.
pub const TERMINATING: &str = "TERMINATING";

/// The proxy's lifecycle as the reporter sees it.
#[derive(Debug, Clone, Default)]
pub enum State {
    /// Envoy is not running yet (bootstrap in progress).
    #[default]
    Starting,
    /// Envoy runs; readiness is asked of its admin API.
    Running(admin::Client),
    /// Shutdown began.
    Terminating,
}

/// Why the reporter could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port is taken or not permitted.
    #[error("could not bind the readiness reporter on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("readiness reporter failed: {0}")]
    Serve(std::io::Error),
}

/// A bound readiness reporter.
#[derive(Debug)]
pub struct Reporter {
    listener: TcpListener,
    state: watch::Receiver<State>,
    dns_gate: Option<Arc<DnsGate>>,
}

/// Holds `READY` back until the first DNS table, for at most a deadline.
#[derive(Debug)]
struct DnsGate {
    tables: dns::Tables,
    deadline: Instant,
    bypassed: AtomicBool,
}

impl DnsGate {
    /// Whether readiness may be reported.
    fn open(&self) -> bool {
        if self.tables.borrow().is_some() || self.bypassed.load(Ordering::Relaxed) {
            return true;
        }
        if Instant::now() < self.deadline {
            return false;
        }
        if !self.bypassed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                timeout = ?DNS_GATE_TIMEOUT,
                "no DNS table received in time; reporting readiness without it"
            );
        }
        true
    }
}

#[derive(Clone)]
struct Shared {
    state: watch::Receiver<State>,
    dns_gate: Option<Arc<DnsGate>>,
}

impl Reporter {
    /// Binds `127.0.0.1:port` (0 = any free port; useful in tests).
    pub async fn bind(port: u16, state: watch::Receiver<State>) -> Result<Self, Error> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })?;
        Ok(Reporter {
            listener,
            state,
            dns_gate: None,
        })
    }

    /// Reports `READY` only once `tables` holds a table, or after `timeout` from now.
    pub fn with_dns_gate(mut self, tables: dns::Tables, timeout: Duration) -> Self {
        self.dns_gate = Some(Arc::new(DnsGate {
            tables,
            deadline: Instant::now() + timeout,
            bypassed: AtomicBool::new(false),
        }));
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let app = Router::new()
            .route("/ready", get(ready))
            .with_state(Shared {
                state: self.state,
                dns_gate: self.dns_gate,
            });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(Error::Serve)
    }
}

async fn ready(Extract(shared): Extract<Shared>) -> impl IntoResponse {
    // Clone out of the watch so no borrow is held across the admin call.
    let current = shared.state.borrow().clone();
    let (status, body) = match current {
        State::Terminating => (StatusCode::SERVICE_UNAVAILABLE, TERMINATING),
        State::Starting => (StatusCode::SERVICE_UNAVAILABLE, NOT_READY),
        State::Running(admin) => match admin.is_ready().await {
            Ok(true) if shared.dns_gate.as_ref().is_none_or(|gate| gate.open()) => {
                (StatusCode::OK, READY)
            }
            Ok(true) => {
                tracing::debug!("Envoy is live; waiting for the first DNS table");
                (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
            }
            Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, NOT_READY),
            Err(err) => {
                tracing::debug!(error = %err, "could not ask Envoy whether it is ready");
                (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
            }
        },
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_ready(addr: SocketAddr) -> (u16, String) {
        let client = admin::Client::new(
            admin::Address::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            Duration::from_secs(3),
        );
        let (status, body) = client.request(hyper::Method::GET, "/ready").await.unwrap();
        (status.as_u16(), body)
    }

    #[tokio::test]
    async fn reports_lifecycle() {
        // A fake Envoy admin whose liveness the test flips.
        let live = Arc::new(AtomicBool::new(false));
        let flag = live.clone();
        let fake_admin = Router::new().route(
            "/ready",
            get(move || {
                let live = flag.load(Ordering::SeqCst);
                async move {
                    if live {
                        (StatusCode::OK, "LIVE\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n")
                    }
                }
            }),
        );
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_port = admin_listener.local_addr().unwrap().port();
        tokio::spawn(axum::serve(admin_listener, fake_admin).into_future());

        let (tx, rx) = watch::channel(State::Starting);
        let reporter = Reporter::bind(0, rx).await.unwrap();
        let addr = reporter.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(reporter.run(shutdown.clone()));

        assert_eq!(get_ready(addr).await, (503, NOT_READY.to_string()));
        tx.send_replace(State::Running(admin::Client::new(
            admin::Address::Tcp {
                host: "127.0.0.1".into(),
                port: admin_port,
            },
            Duration::from_secs(2),
        )));
        assert_eq!(get_ready(addr).await, (503, NOT_READY.to_string()));
        live.store(true, Ordering::SeqCst);
        assert_eq!(get_ready(addr).await, (200, READY.to_string()));
        tx.send_replace(State::Terminating);
        assert_eq!(get_ready(addr).await, (503, TERMINATING.to_string()));

        let client = admin::Client::new(
            admin::Address::Tcp {
                host: "127.0.0.1".into(),
                port: addr.port(),
            },
            Duration::from_secs(2),
        );
        let (status, _) = client.request(hyper::Method::GET, "/stats").await.unwrap();
        assert_eq!(status.as_u16(), 404);

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    /// A fake Envoy admin that is always live; its address.
    async fn live_admin() -> admin::Client {
        let app = Router::new().route("/ready", get(|| async { (StatusCode::OK, "LIVE\n") }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(axum::serve(listener, app).into_future());
        admin::Client::new(
            admin::Address::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            Duration::from_secs(2),
        )
    }

    #[tokio::test]
    async fn ready_waits_for_the_first_dns_table() {
        let admin = live_admin().await;
        let (_state_tx, rx) = watch::channel(State::Running(admin.clone()));
        let (tables_tx, tables) = watch::channel(None);
        let reporter = Reporter::bind(0, rx)
            .await
            .unwrap()
            .with_dns_gate(tables, Duration::from_secs(60));
        let addr = reporter.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(reporter.run(shutdown.clone()));
        assert_eq!(get_ready(addr).await, (503, NOT_READY.to_string()));
        tables_tx.send_replace(Some(std::sync::Arc::new(dns::Table::default())));
        assert_eq!(get_ready(addr).await, (200, READY.to_string()));
        shutdown.cancel();

        // No table ever: ready once the gate's deadline passed.
        let (_state_tx, rx) = watch::channel(State::Running(admin));
        let (_tables_tx, tables) = watch::channel(None);
        let reporter = Reporter::bind(0, rx)
            .await
            .unwrap()
            .with_dns_gate(tables, Duration::from_millis(300));
        let addr = reporter.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(reporter.run(shutdown.clone()));
        assert_eq!(get_ready(addr).await, (503, NOT_READY.to_string()));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(get_ready(addr).await, (200, READY.to_string()));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn taken_port_is_reported() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let (_tx, rx) = watch::channel(State::Starting);
        let err = Reporter::bind(port, rx).await.unwrap_err();
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
}
