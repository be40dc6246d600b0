//! The DNS server inside kuma-dp (Kuma's "embedded DNS proxy"): answers the mesh's names from
//! a table the control plane publishes, forwards every other name to the host's resolvers.
//!
//! How records arrive: the control plane gives Envoy the listener `_kuma:dynamicconfig` on the
//! UNIX socket `<workdir>/kuma-mesh-metric-config.sock`; [`fetch::Fetcher`] polls its
//! `GET /dns` every 250 ms (`Etag` / `If-None-Match`) and publishes each new [`table::Table`]
//! whole on a `watch` channel. [`server::Server`] answers UDP and TCP on
//! `127.0.0.1:<port>` (and `[::1]`) from the latest table ([`answer::respond`], pure) and
//! forwards the rest ([`forward::Upstreams`]). The control plane or Envoy going away never
//! changes an answer: the last table stays.
//!
//! [`Dns`] is the component the composition root runs: [`Dns::bind`] (every socket, fail fast),
//! then [`Dns::run`] until shutdown. [`Dns::tables`] feeds the readiness reporter.

pub mod answer;
pub mod fetch;
pub mod forward;
pub mod server;
pub mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use fetch::Tables;
pub use table::Table;

/// Feature advertised to the control plane when kuma-dp answers DNS itself (Kuma's).
pub const FEATURE_EMBEDDED_DNS: &str = "feature-embedded-dns";
/// Default port (`--dns-coredns-port`, Kuma's).
pub const DEFAULT_PORT: u16 = 15053;
/// Default resolv.conf whose nameservers get the names outside the mesh.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How the DNS server is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Port on 127.0.0.1 / ::1 (UDP and TCP).
    pub port: u16,
    /// The flag or variable the port came from (named when it cannot be bound).
    pub port_setting: String,
    /// The resolv.conf to forward to.
    pub resolv_conf: PathBuf,
    /// The server's bounds.
    pub limits: server::Limits,
}

/// The path of Envoy's dynamic-config socket in `work_dir`.
pub fn config_socket(work_dir: &Path) -> PathBuf {
    work_dir.join(fetch::SOCKET_FILE)
}

/// The bound DNS component: listeners plus the table fetcher.
#[derive(Debug)]
pub struct Dns {
    server: server::Server,
    fetcher: fetch::Fetcher,
    tables: Tables,
}

impl Dns {
    /// Binds the listeners of `settings` and prepares polling `socket` (Envoy's dynamic-config
    /// listener, see [`config_socket`]). Reads the resolv.conf once, now.
    pub async fn bind(settings: &Settings, socket: PathBuf) -> Result<Self, server::Error> {
        let (tx, rx) = watch::channel::<Option<Arc<Table>>>(None);
        let upstreams = forward::Upstreams::from_resolv_conf(&settings.resolv_conf);
        tracing::debug!(servers = ?upstreams.servers(), "DNS upstreams");
        let server = server::Server::bind(
            settings.port,
            &settings.port_setting,
            rx.clone(),
            upstreams,
            settings.limits,
        )
        .await?;
        Ok(Dns {
            server,
            fetcher: fetch::Fetcher::new(socket, tx),
            tables: rx,
        })
    }

    /// Polls every `interval` instead of [`fetch::POLL_INTERVAL`] (tests).
    pub fn with_poll_interval(mut self, interval: std::time::Duration) -> Self {
        self.fetcher = self.fetcher.with_interval(interval);
        self
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server.local_addrs()
    }

    /// The latest table (`None` until the first arrived).
    pub fn tables(&self) -> Tables {
        self.tables.clone()
    }

    /// Serves and polls until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(addresses = ?self.server.local_addrs(), socket = %self.fetcher.socket().display(), "DNS server listening");
        tokio::join!(
            self.server.run(shutdown.clone()),
            self.fetcher.run(shutdown)
        );
    }
}
