//! The serving loop of the REST API (HTTP and HTTPS) and diagnostics: one accept loop per
//! listener, HTTP/1.1 (hyper) on every connection, behind TLS when configured. (The DP
//! server has its own loop: it carries gRPC over HTTP/2.)
//!
//! Invariants:
//! - Every connection always has a deadline, set by the phase it is in ([`Limits`]):
//!   the request headers (on TLS, the handshake first, with the same timeout) within
//!   `read_header_timeout` of the connection opening or of the first byte of a kept-alive
//!   request; the whole request, body included, within `read_timeout` of its first byte;
//!   the response within `write_timeout` of the request's end; the next request's first byte
//!   within `idle_timeout`. A connection past its deadline is closed, whatever it is doing,
//!   so a client that sends half a request, or reads nothing, cannot hold it.
//! - At most `max_connections` connections are open per listener; one more is accepted and
//!   closed at once (a warning at most every 10 s counts them).
//! - Accept errors (`EMFILE` when descriptors run out...) never end the loop: it backs off
//!   (10 ms, doubling up to 1 s) and tries again, so it recovers once descriptors are free.
//! - Handlers see the peer address as `ConnectInfo<SocketAddr>` (the API's
//!   `localhostIsAdmin` check), on HTTP and HTTPS alike. Each runs in its own task, so a
//!   connection cut at a deadline never cancels a handler half-way through a write.
//! - Shutdown: the token stops accepting and asks every connection to end after its current
//!   request; after [`SHUTDOWN_GRACE`] the remaining ones are dropped.
//!
//! Also here: [`raise_fd_limit`] (soft `RLIMIT_NOFILE` to the hard limit) and [`fit_caps`],
//! which keeps the connection caps below the descriptor budget.
//!
//! Main items: [`Limits`], [`Server`], [`FdLimit`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use kuma_core::rate_log::RateLog;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long connections may finish their current request after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Least time between two warnings of the same kind (connections over the cap, accept errors).
const LOG_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Deadlines and the connection cap of one listener (see the module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub read_header_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// A bound listener and how to serve it.
pub struct Server {
    name: &'static str,
    cap_key: &'static str,
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// `name` appears in logs (`REST API`...), `cap_key` is the config key of the cap.
    pub fn new(
        name: &'static str,
        cap_key: &'static str,
        listener: TcpListener,
        limits: Limits,
    ) -> Self {
        Self {
            name,
            cap_key,
            listener,
            limits,
            tls: None,
        }
    }

    /// Serves TLS with `config` (its ALPN should offer `http/1.1` only).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    /// Serves `router` until `shutdown`; never fails (accept errors are retried).
    pub async fn run(self, router: Router, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let conns = TaskTracker::new();
        let force = CancellationToken::new();
        let mut over_cap = RateLog::new(LOG_EVERY);
        let mut accept_failed = RateLog::new(LOG_EVERY);
        let mut backoff = BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => {
                    backoff = BACKOFF_MIN;
                    c
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    if let Some(n) = accept_failed.hit() {
                        tracing::warn!(listener = self.name, error = %e, failures = n, retry_in = ?backoff, "accepting a connection failed; retrying");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(tcp);
                if let Some(n) = over_cap.hit() {
                    tracing::warn!(
                        listener = self.name,
                        closed = n,
                        "{} connection(s) closed at once: {} connections are open, the most {} allows",
                        n,
                        self.limits.max_connections,
                        self.cap_key
                    );
                }
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let conn = Conn {
                name: self.name,
                peer,
                router: router.clone(),
                limits: self.limits,
                shutdown: shutdown.clone(),
                force: force.clone(),
                _permit: permit,
            };
            let tls = self.tls.clone();
            conns.spawn(async move {
                match tls {
                    None => conn.serve(tcp).await,
                    Some(acceptor) => conn.handshake_then_serve(acceptor, tcp).await,
                }
            });
        }
        conns.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, conns.wait())
            .await
            .is_err()
        {
            force.cancel();
            conns.wait().await;
        }
    }
}

/// Errors of one connection that the next accept does not share.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// One accepted connection and what serving it needs; holds its slot under the cap.
struct Conn {
    name: &'static str,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    force: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    async fn handshake_then_serve(self, acceptor: TlsAcceptor, tcp: tokio::net::TcpStream) {
        let handshake = tokio::time::timeout(self.limits.read_header_timeout, acceptor.accept(tcp));
        let r = tokio::select! {
            r = handshake => r,
            _ = self.shutdown.cancelled() => return,
        };
        match r {
            Ok(Ok(tls)) => self.serve(tls).await,
            Ok(Err(e)) => {
                tracing::debug!(listener = self.name, peer = %self.peer, error = %e, "TLS handshake failed")
            }
            Err(_) => {
                tracing::debug!(listener = self.name, peer = %self.peer, "TLS handshake timed out")
            }
        }
    }

    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let watch = Arc::new(Watch::new(self.limits));
        let io = TokioIo::new(Watched {
            inner: stream,
            watch: watch.clone(),
        });
        let (peer, name) = (self.peer, self.name);
        let router = self.router.clone();
        let svc_watch = watch.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let watch = svc_watch.clone();
            let router = router.clone();
            async move {
                let has_body = !req.body().is_end_stream();
                watch.request_started(has_body);
                let body_watch = watch.clone();
                let mut req = req.map(|inner| {
                    Body::new(RequestBody {
                        inner,
                        watch: body_watch,
                        ended: !has_body,
                    })
                });
                req.extensions_mut().insert(ConnectInfo(peer));
                // The handler runs in its own task: a connection cut at a deadline does not
                // cancel a write half-way (as in Go, the handler finishes; its answer is lost).
                let handler = tokio::spawn(router.oneshot(req));
                let resp = match handler.await {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(e) => {
                        tracing::error!(listener = name, error = %e, "a handler panicked");
                        let mut r = axum::response::Response::new(Body::empty());
                        *r.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        r
                    }
                };
                Ok::<_, Infallible>(resp.map(|inner| ResponseBody {
                    inner,
                    watch,
                    ended: false,
                }))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            let deadline = watch.deadline();
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(listener = self.name, peer = %peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(phase) = watch.expired() {
                        tracing::debug!(listener = self.name, peer = %peer, "closing the connection: {phase}");
                        return;
                    }
                }
                _ = watch.changed.notified() => {}
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = self.force.cancelled() => return,
            }
        }
    }
}

/// What a connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The request headers (the first request, or a kept-alive one that has begun).
    Headers,
    /// The rest of the request body.
    Body,
    /// The handler and the writing of its response.
    Response,
    /// The first byte of the next request.
    Idle,
}

struct State {
    phase: Phase,
    /// When the current request began (the connection, or its first byte).
    request_start: Instant,
    deadline: Instant,
}

/// The phase and deadline of one connection, moved on by its reads, its request and
/// response bodies; the connection task sleeps until the deadline and is woken on changes.
struct Watch {
    limits: Limits,
    state: Mutex<State>,
    changed: Notify,
}

impl Watch {
    fn new(limits: Limits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            state: Mutex::new(State {
                phase: Phase::Headers,
                request_start: now,
                deadline: now + limits.read_header_timeout,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent State (plain assignments).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self) -> Instant {
        self.lock().deadline
    }

    /// The phase whose deadline has passed, if it has.
    fn expired(&self) -> Option<String> {
        let s = self.lock();
        (Instant::now() >= s.deadline).then(|| {
            let l = &self.limits;
            match s.phase {
                Phase::Headers => format!(
                    "request headers not received within {:?}",
                    l.read_header_timeout
                ),
                Phase::Body => format!("request not received within {:?}", l.read_timeout),
                Phase::Response => {
                    format!("response not written within {:?}", l.write_timeout)
                }
                Phase::Idle => format!("idle for {:?}", l.idle_timeout),
            }
        })
    }

    fn move_to(&self, f: impl FnOnce(&mut State, Instant) -> bool) {
        let moved = f(&mut self.lock(), Instant::now());
        if moved {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts its next request.
    fn bytes_read(&self) {
        let l = self.limits;
        self.move_to(|s, now| {
            if s.phase != Phase::Idle {
                return false;
            }
            s.phase = Phase::Headers;
            s.request_start = now;
            s.deadline = now + l.read_header_timeout;
            true
        });
    }

    /// The headers of a request were parsed.
    fn request_started(&self, has_body: bool) {
        let l = self.limits;
        self.move_to(|s, now| {
            if s.phase == Phase::Idle {
                // A pipelined request that was already buffered.
                s.request_start = now;
            }
            if has_body {
                s.phase = Phase::Body;
                s.deadline = s.request_start + l.read_timeout;
            } else {
                s.phase = Phase::Response;
                s.deadline = now + l.write_timeout;
            }
            true
        });
    }

    /// The request body was read to its end.
    fn body_ended(&self) {
        let l = self.limits;
        self.move_to(|s, now| {
            if s.phase != Phase::Body {
                return false;
            }
            s.phase = Phase::Response;
            s.deadline = now + l.write_timeout;
            true
        });
    }

    /// The response body was produced to its end (or dropped).
    fn response_ended(&self) {
        let l = self.limits;
        self.move_to(|s, now| {
            s.phase = Phase::Idle;
            s.deadline = now + l.idle_timeout;
            true
        });
    }
}

/// The connection's stream, reporting reads to its [`Watch`].
struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.bytes_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that tells its [`Watch`] when it has been read to the end.
struct RequestBody {
    inner: Incoming,
    watch: Arc<Watch>,
    ended: bool,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        let end = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if end && !this.ended {
            this.ended = true;
            this.watch.body_ended();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells its [`Watch`] when it has been produced (or dropped).
struct ResponseBody {
    inner: Body,
    watch: Arc<Watch>,
    ended: bool,
}

impl ResponseBody {
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.watch.response_ended();
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            this.end();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.end();
    }
}

/// The process's open-file limit (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit found at start.
    pub before: u64,
    /// Soft limit now.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one (an unprivileged process may), so that
/// connections do not run out of descriptors long before the system would.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    if before < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(FdLimit { before, soft, hard })
}

/// Scales `caps` down in proportion (each at least 1) when together they exceed `budget`;
/// returns whether it did.
pub fn fit_caps(caps: &mut [usize], budget: usize) -> bool {
    let total: u128 = caps.iter().map(|&c| c as u128).sum();
    if total <= budget as u128 {
        return false;
    }
    for c in caps.iter_mut() {
        let scaled = (*c as u128 * budget as u128) / total;
        *c = usize::try_from(scaled).unwrap_or(usize::MAX).max(1);
    }
    true
}

#[cfg(test)]
mod tests;
