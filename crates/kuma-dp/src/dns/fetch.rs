//! Polling the DNS table from Envoy's dynamic-config listener.
//!
//! The control plane gives Envoy a listener `_kuma:dynamicconfig` on the UNIX socket
//! `<workdir>/kuma-mesh-metric-config.sock` whose `GET /dns` returns the table with an `Etag`
//! and answers `304` to a request carrying `If-None-Match: <that etag>`. [`Fetcher::run`] asks
//! every [`POLL_INTERVAL`] (one HTTP/1.1 request per poll; a UNIX connect is cheap) and, on a
//! `200`, publishes the whole new [`Table`] at once on a `watch` channel. Anything else — `304`,
//! `404`, a refused or missing socket (Envoy has not received the listener yet, or is gone), a
//! body that does not parse — keeps the last table: answers never depend on the control plane
//! or Envoy being up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::table::Table;

/// The dynamic-config socket's file name in the work dir (Kuma's).
pub const SOCKET_FILE: &str = "kuma-mesh-metric-config.sock";
/// The table's path on the dynamic-config listener (Kuma's `dpapi.PATH`).
pub const PATH: &str = "/dns";
/// How often the table is asked for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Deadline of one poll (connect, request, whole body).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest body accepted (a table of ~100,000 names).
pub const MAX_BODY: usize = 16 << 20;

/// The latest table: `None` until the first one arrived.
pub type Tables = watch::Receiver<Option<Arc<Table>>>;

/// Why one poll failed (the table is kept; the next poll tries again).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket does not exist yet or nobody listens on it.
    #[error("dynamic-config socket {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("GET {PATH}: {0}")]
    Http(String),
    /// An answer other than 200, 304 or 404.
    #[error("GET {PATH}: unexpected status {0}")]
    Status(StatusCode),
    /// The body is not a table.
    #[error("GET {PATH}: {0}")]
    Table(#[from] super::table::Error),
    /// The poll took longer than [`POLL_TIMEOUT`].
    #[error("GET {PATH}: no answer within {POLL_TIMEOUT:?}")]
    Timeout,
}

/// What one successful poll found.
#[derive(Debug)]
enum Poll {
    /// A new table (and its etag, if any).
    Table(Table, Option<String>),
    /// `304`: the table we have is current.
    Unchanged,
    /// `404`: the listener has no table (yet).
    NotFound,
}

/// Polls `GET /dns` and publishes each new table.
#[derive(Debug)]
pub struct Fetcher {
    socket: PathBuf,
    interval: Duration,
    tables: watch::Sender<Option<Arc<Table>>>,
}

impl Fetcher {
    /// A fetcher of `socket` publishing on `tables`, polling every [`POLL_INTERVAL`].
    pub fn new(socket: PathBuf, tables: watch::Sender<Option<Arc<Table>>>) -> Self {
        Fetcher {
            socket,
            interval: POLL_INTERVAL,
            tables,
        }
    }

    /// Polls every `interval` instead (tests).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The socket polled.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Polls until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let started = Instant::now();
        let mut etag: Option<String> = None;
        // Whether the last poll failed after a table was received (logged once per outage).
        let mut failing = false;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(POLL_TIMEOUT, poll(&self.socket, etag.as_deref())) => {
                    r.unwrap_or(Err(Error::Timeout))
                }
            };
            let have_table = self.tables.borrow().is_some();
            match result {
                Ok(Poll::Table(table, tag)) => {
                    if failing {
                        tracing::info!("Envoy's dynamic config is reachable again");
                        failing = false;
                    }
                    let names = table.len();
                    let table = Arc::new(table);
                    let changed = self.tables.send_if_modified(|current| {
                        if current.as_deref() == Some(&*table) {
                            false
                        } else {
                            *current = Some(table);
                            true
                        }
                    });
                    if !have_table {
                        tracing::info!(names, after = ?started.elapsed(), "received the first DNS table");
                    } else if changed {
                        tracing::info!(names, "DNS table updated");
                    }
                    etag = tag;
                }
                Ok(Poll::Unchanged) => {
                    if failing {
                        tracing::info!("Envoy's dynamic config is reachable again");
                        failing = false;
                    }
                }
                Ok(Poll::NotFound) => {
                    tracing::debug!("no DNS table on Envoy's dynamic config listener (404)");
                }
                Err(err) if !have_table => {
                    // Normal while Envoy starts: the socket appears with the listener.
                    tracing::debug!(error = %err, "no DNS table yet");
                }
                Err(err) => {
                    if !failing {
                        tracing::info!(error = %err, "could not poll the DNS table; answering from the last one");
                        failing = true;
                    } else {
                        tracing::debug!(error = %err, "could not poll the DNS table");
                    }
                    // A body that did not parse is asked for in full again.
                    if matches!(err, Error::Table(_)) {
                        etag = None;
                    }
                }
            }
        }
    }
}

/// One `GET /dns` over the UNIX socket.
async fn poll(socket: &Path, etag: Option<&str>) -> Result<Poll, Error> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| Error::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    // Ends when the response has been read and `sender` dropped.
    let connection = tokio::spawn(connection);
    let mut request = Request::get(PATH).header(header::HOST, "localhost");
    if let Some(tag) = etag {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let status = response.status();
    let tag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let outcome = match status {
        StatusCode::OK => {
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Error::Http(e.to_string()))?
                .to_bytes();
            Ok(Poll::Table(Table::from_json(&body)?, tag))
        }
        StatusCode::NOT_MODIFIED => Ok(Poll::Unchanged),
        StatusCode::NOT_FOUND => Ok(Poll::NotFound),
        other => Err(Error::Status(other)),
    };
    drop(sender);
    connection.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    const A: &str = r#"{"records":[{"name":"a.mesh","ips":["240.0.0.1"]}]}"#;
    const B: &str = r#"{"records":[{"name":"b.mesh","ips":["240.0.0.2"]}]}"#;

    fn ok(body: &str, etag: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// Answers each connection with the next scripted response; records each request's
    /// `If-None-Match` (or `-`).
    fn scripted(socket: &Path, script: Vec<String>) -> Arc<Mutex<Vec<String>>> {
        let listener = UnixListener::bind(socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut script: VecDeque<String> = script.into();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let tag = head
                    .lines()
                    .find_map(|l| l.strip_prefix("if-none-match:"))
                    .map_or("-".to_string(), |v| v.trim().to_string());
                log.lock().unwrap().push(tag);
                let Some(response) = script.pop_front() else {
                    return;
                };
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        seen
    }

    #[tokio::test]
    async fn keeps_the_last_table_through_errors_and_uses_the_etag() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(SOCKET_FILE);
        let (tx, mut rx) = watch::channel(None);
        let fetcher = Fetcher::new(socket.clone(), tx).with_interval(Duration::from_millis(30));
        let shutdown = CancellationToken::new();
        // No socket yet: quietly nothing.
        let task = tokio::spawn(fetcher.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.borrow().is_none());

        let seen = scripted(
            &socket,
            vec![
                ok(A, "ea"),
                "HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n".into(),
                ok("not json", "ez"),
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
                ok(B, "eb"),
                "HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n".into(),
            ],
        );
        rx.changed().await.unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        assert!(first.get("a.mesh").is_some());
        // Through 304, a bad body, a 500 and a 404 the table stays; then B replaces it whole.
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let second = rx.borrow_and_update().clone().unwrap();
        assert!(second.get("b.mesh").is_some());
        assert!(second.get("a.mesh").is_none());
        tokio::time::timeout(Duration::from_secs(5), async {
            while seen.lock().unwrap().len() < 7 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        // Kept from the 200 and after the 304; dropped after the bad body; eb after B.
        assert_eq!(
            seen.lock().unwrap()[..7],
            ["-", "ea", "ea", "-", "-", "-", "eb"]
        );
        // Nothing answers any more (script done, listener gone): B stays.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(rx.borrow().as_ref().unwrap().get("b.mesh").is_some());
        shutdown.cancel();
        task.await.unwrap();
    }
}
