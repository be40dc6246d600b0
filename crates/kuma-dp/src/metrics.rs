//! The metrics hijacker (Kuma's): an HTTP/1.1 server on the UNIX socket
//! `<workdir>/kuma-mh-<name>-<mesh>.sock` ([`socket_path`]) that answers every request with the
//! proxy's metrics in the Prometheus text format: Envoy's stats, rewritten as Kuma does
//! ([`merge`]), followed by the metrics of the applications the control plane lists in the
//! bootstrap response's `kumaSidecarConfiguration.metrics.aggregate` ([`aggregates`]).
//!
//! The control plane points Envoy's `kuma:metrics:prometheus` listener (the mesh's or the
//! Dataplane's Prometheus backend) at this socket through the cluster `kuma:metrics:hijacker`;
//! Prometheus scrapes the listener. The hijacker runs for every Dataplane, metrics backend or
//! not, and never for zone proxies, as Kuma's.
//!
//! [`Hijacker::bind`] claims the socket: a file left at the path by a kuma-dp that is gone is
//! renamed to `.bak` and removed (Kuma's), one that still accepts connections belongs to a
//! live kuma-dp and fails the start. The socket is owner-only (0600: Envoy is kuma-dp's child
//! and runs as its user). [`Hijacker::run`] serves until shutdown, with a request-header
//! deadline of [`HEADER_READ_TIMEOUT`] and at most [`MAX_CONNECTIONS`] connections, then
//! removes the socket. What one request does is [`scrape`]'s; how the answers are put together
//! is [`response`]'s; [`text`] reads and writes the format.

pub mod merge;
pub mod response;
pub mod scrape;
pub mod text;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use scrape::{Endpoint, Scraper, Target};

/// Deadline for a request's headers (Kuma's `ReadHeaderTimeout`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Most connections served at once; more are closed at once (Envoy needs a handful).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection to a socket found at the path may take before it counts as live.
const STALE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long open connections may finish their request after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the hijacker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another kuma-dp serves on the path.
    #[error("file {} exists and probably opened by another kuma-dp instance", .0.display())]
    InUse(PathBuf),
    /// A stale file could not be moved away.
    #[error("could not move the stale socket {} away: {source}", path.display())]
    Stale {
        /// The socket path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Binding or securing the socket failed.
    #[error("could not listen on the metrics hijacker socket {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// The hijacker's socket for Dataplane `name` in `mesh`: `<work_dir>/kuma-mh-<name>-<mesh>`,
/// cut to 98 bytes, then `.sock` (Kuma's `MetricsHijackerSocketName`; the one rule the CP
/// also uses for Envoy's `kuma:metrics:hijacker` cluster).
pub fn socket_path(work_dir: &Path, name: &str, mesh: &str) -> PathBuf {
    PathBuf::from(kuma_core::metrics::hijacker_socket_path(
        &work_dir.to_string_lossy(),
        name,
        mesh,
    ))
}

/// One entry of `kumaSidecarConfiguration.metrics.aggregate`: an application whose metrics
/// are served with Envoy's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Aggregate {
    /// The entry's name (logs only).
    #[serde(default)]
    pub name: String,
    /// Address of the application (the Dataplane's address unless the entry gave one).
    #[serde(default)]
    pub address: String,
    /// Port.
    pub port: u16,
    /// Path of its metrics.
    #[serde(default)]
    pub path: String,
}

impl Aggregate {
    /// The scrape target of this entry.
    pub fn target(&self) -> Target {
        Target::application(
            &self.name,
            Endpoint::Tcp {
                host: self.address.clone(),
                port: self.port,
            },
            &self.path,
        )
    }
}

/// The applications listed in a bootstrap response's `kumaSidecarConfiguration` (absent or
/// empty: none). An entry that is not `{name, address, port, path}` with a port in 1..=65535
/// is skipped with a warning naming it.
pub fn aggregates(sidecar_configuration: &serde_json::Value) -> Vec<Aggregate> {
    let Some(list) = sidecar_configuration
        .pointer("/metrics/aggregate")
        .and_then(|v| v.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            match Aggregate::deserialize(entry) {
                Ok(a) if a.port != 0 => Ok(a),
                Ok(_) => Err("port 0".to_string()),
                Err(e) => Err(e.to_string()),
            }
            .map_err(|error| {
                tracing::warn!(index = i, entry = %entry, %error, "ignoring an unusable metrics.aggregate entry of the bootstrap response");
            })
            .ok()
        })
        .collect()
}

/// The bound hijacker.
#[derive(Debug)]
pub struct Hijacker {
    listener: UnixListener,
    socket: Socket,
    scraper: Arc<Scraper>,
}

/// Removes the socket file when dropped.
#[derive(Debug)]
struct Socket(PathBuf);

impl Drop for Socket {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), %error, "could not remove the metrics hijacker socket");
        }
    }
}

impl Hijacker {
    /// Claims `path` (see the module docs) and listens on it.
    pub async fn bind(path: PathBuf, scraper: Scraper) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::symlink_metadata(&path).is_ok() {
            // Accepted, or not answered at once (a live server with a full backlog): in use.
            let probe =
                tokio::time::timeout(STALE_PROBE_TIMEOUT, tokio::net::UnixStream::connect(&path))
                    .await;
            if !matches!(probe, Ok(Err(_))) {
                return Err(Error::InUse(path));
            }
            let mut backup = path.clone().into_os_string();
            backup.push(".bak");
            std::fs::rename(&path, &backup)
                .and_then(|()| std::fs::remove_file(&backup))
                .map_err(|source| Error::Stale {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(path = %path.display(), "removed a stale metrics hijacker socket");
        }
        let listener = UnixListener::bind(&path).map_err(|source| Error::Bind {
            path: path.clone(),
            source,
        })?;
        let socket = Socket(path);
        std::fs::set_permissions(&socket.0, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| Error::Bind {
                path: socket.0.clone(),
                source,
            },
        )?;
        Ok(Hijacker {
            listener,
            socket,
            scraper: Arc::new(scraper),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket.0
    }

    /// Serves until `shutdown`, then removes the socket.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(socket = %self.socket.0.display(), targets = ?self.scraper.targets().iter().map(Target::name).collect::<Vec<_>>(), "metrics hijacker listening");
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let connections = TaskTracker::new();
        let mut over_cap = kuma_core::rate_log::RateLog::new(scrape::LOG_EVERY);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "metrics hijacker: accept failed");
                    // Descriptors may have run out: give them time to come back.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(stream);
                if let Some(closed) = over_cap.hit() {
                    tracing::warn!(
                        max = MAX_CONNECTIONS,
                        closed,
                        "metrics hijacker: too many connections; closing new ones"
                    );
                }
                continue;
            };
            let scraper = self.scraper.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                serve_connection(stream, scraper, shutdown).await;
                drop(permit);
            });
        }
        connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
            .await
            .is_err()
        {
            tracing::debug!("metrics hijacker: connections still open at shutdown were dropped");
        }
        drop(self.listener);
        drop(self.socket);
    }
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    scraper: Arc<Scraper>,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let scraper = scraper.clone();
        async move { Ok::<_, Infallible>(answer(&scraper, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "metrics hijacker connection ended with an error");
    }
}

/// Any method, any path: the proxy's metrics (Kuma's hijacker serves them alike).
async fn answer(scraper: &Scraper, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let scrape = scraper
        .scrape(request.uri().query(), request.headers())
        .await;
    let mut response = Response::new(Full::new(Bytes::from(scrape.body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(scrape.content_type),
    );
    response
}

#[cfg(test)]
mod tests;
