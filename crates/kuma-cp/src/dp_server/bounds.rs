//! What a DP server client gets before it has authenticated, and how many connections it
//! may hold.
//!
//! - [`Caps`]: connections in total and per source IP; a [`Permit`] is held for the life of
//!   a connection.
//! - [`Conn`]: one connection's state. It is *admitted* once one of its ADS streams was
//!   accepted by the xDS callbacks (a valid dataplane token, or with authentication off a
//!   valid first request) or one of its HTTP requests succeeded. [`Conn::expire`] resolves
//!   when a connection not admitted by its deadline must be closed; a stream or request
//!   breaking a bound before the connection is admitted closes it at once ([`Conn::cut`]).
//! - [`Guarded`]: a request body under those bounds. An ADS stream (gRPC) may send
//!   [`Limits::max_unauthenticated_bytes`] and must be accepted within
//!   [`Limits::authn_timeout`]; its [`kuma_xds::Admission`] lifts both. The byte limit is
//!   also a budget of the connection: all its streams together may send that much until one
//!   of them is accepted, so many streams on one connection do not multiply it. Any other
//!   body must be complete within the timeout.
//! - Until a connection is admitted, at most [`Limits::max_unauthenticated_streams`] of its
//!   ADS streams may wait for authentication at once ([`Conn::stream_slot`]); the server
//!   refuses more at once.
//!
//! Invariants: no lock is held across an `.await`; a permit, a busy mark and a deadline are
//! released by `Drop`, so a connection or stream that ends in any way gives them back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Error type of a [`Guarded`] body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The DP server's bounds (`dpServer.*` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// HTTP/1 request headers must arrive within this (`readHeaderTimeout`).
    pub read_header_timeout: Duration,
    /// Deadline to authenticate a connection or a stream, and to send a body (`authnTimeout`).
    pub authn_timeout: Duration,
    /// Bytes an ADS stream may send before it is accepted (`maxUnauthenticatedBytes`).
    pub max_unauthenticated_bytes: usize,
    /// Open connections in total; 0: no cap (`maxConnections`).
    pub max_connections: usize,
    /// Open connections per source IP; 0: no cap (`maxConnectionsPerIp`).
    pub max_connections_per_ip: usize,
    /// ADS streams of a connection waiting for authentication at once, until one of them
    /// authenticated (`maxUnauthenticatedStreams`).
    pub max_unauthenticated_streams: usize,
    /// HTTP/2 streams per connection (`maxConcurrentStreams`).
    pub max_concurrent_streams: u32,
}

/// Descriptors kept for everything but connections (the store, listeners, files).
const FD_RESERVE: u64 = 64;

/// The connection cap to use instead of `max_connections` (0: no cap) when it does not fit
/// what is left of the open-file limit `soft` once the other listeners' caps (`others`)
/// and a reserve are taken; `None` when it fits. Over its cap a connection is closed at
/// once, which is better than the accept errors of a process out of descriptors.
pub fn fit_to_descriptors(max_connections: usize, soft: u64, others: usize) -> Option<usize> {
    let budget = soft
        .saturating_sub(u64::try_from(others).unwrap_or(u64::MAX))
        .saturating_sub(FD_RESERVE);
    let budget = usize::try_from(budget).unwrap_or(usize::MAX).max(1);
    (max_connections == 0 || max_connections > budget).then_some(budget)
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `maxConnections`.
    Total,
    /// `maxConnectionsPerIp`.
    PerIp,
}

impl Refused {
    pub fn key(self) -> &'static str {
        match self {
            Refused::Total => "dpServer.maxConnections",
            Refused::PerIp => "dpServer.maxConnectionsPerIp",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Connection caps, total and per source IP.
pub struct Caps {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

impl Caps {
    /// Caps of `max_total` and `max_per_ip` connections (0: none).
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Only counters are touched under the lock; a poisoned one is still consistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for one more connection from `ip`, or the cap it would exceed.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let mut c = self.counts();
        if self.max_total > 0 && c.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = c.per_ip.entry(ip).or_default();
        if self.max_per_ip > 0 && *n >= self.max_per_ip {
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
            return Err(Refused::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Permit {
            caps: self.clone(),
            ip,
        })
    }

    /// Open connections (in total, from `ip`).
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts();
        (c.total, c.per_ip.get(&ip).copied().unwrap_or(0))
    }
}

/// One open connection counted by [`Caps`]; given back on drop.
pub struct Permit {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.caps.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// At most one message per `period`, with the number of events since the last one.
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// Records an event; `Some(events since the last report, this one included)` when it is
    /// to be reported now.
    pub fn hit(&mut self) -> Option<u64> {
        self.suppressed += 1;
        let now = Instant::now();
        if self.last.is_some_and(|l| now < l + self.period) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// One connection's authentication state (see the module docs).
#[derive(Default)]
pub struct Conn {
    admitted: AtomicBool,
    /// Requests being handled and ADS streams whose first request is being authenticated.
    busy: AtomicUsize,
    /// Bytes its ADS streams sent while the connection was not admitted.
    unauthenticated: AtomicUsize,
    /// ADS streams waiting for authentication.
    waiting: AtomicUsize,
    changed: Notify,
    cut: CancellationToken,
}

impl Conn {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A stream authenticated or a request succeeded: the connection stays open.
    pub fn admit(&self) {
        if !self.admitted.swap(true, Ordering::SeqCst) {
            self.changed.notify_waiters();
        }
    }

    pub fn is_admitted(&self) -> bool {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Marks work under way (a request, or an authentication) until the mark is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// A place for one more ADS stream waiting for authentication: `Ok(None)` when the
    /// connection is admitted (no bound), an error when `max` streams wait already.
    pub fn stream_slot(self: &Arc<Self>, max: usize) -> Result<Option<StreamSlot>, Violation> {
        if self.is_admitted() {
            return Ok(None);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= max {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Violation::TooManyStreams(max));
        }
        Ok(Some(StreamSlot(self.clone())))
    }

    /// A bound was broken: closes the connection unless it is admitted.
    pub fn cut(&self) {
        if !self.is_admitted() {
            self.cut.cancel();
        }
    }

    /// Resolves when the connection was cut.
    pub async fn cut_off(&self) {
        self.cut.cancelled().await
    }

    /// Resolves when the connection must be closed for not being admitted by `deadline`:
    /// at `deadline`, or, while an authentication or request is under way then, when it
    /// ends without admitting the connection (at the latest `grace` after `deadline`).
    /// Never resolves once the connection is admitted.
    pub async fn expire(&self, deadline: Instant, grace: Duration) {
        tokio::time::sleep_until(deadline).await;
        let hard = deadline + grace;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the checks, so no change between them is missed.
            changed.as_mut().enable();
            if self.is_admitted() {
                return std::future::pending().await;
            }
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(hard) => return,
            }
        }
    }
}

/// Work under way on a connection ([`Conn::busy`]).
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// One ADS stream waiting for authentication ([`Conn::stream_slot`]); given back on drop.
pub struct StreamSlot(Arc<Conn>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a [`Guarded`] body failed.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// An ADS stream sent more than the limit before it was authenticated.
    #[error("more than {0} bytes sent before authentication")]
    TooLarge(usize),
    /// The stream was not authenticated, or the body not complete, by the deadline.
    #[error("not authenticated in time")]
    Timeout,
    /// The connection has this many ADS streams waiting for authentication already.
    #[error("{0} streams of this connection wait for authentication already")]
    TooManyStreams(usize),
}

impl Violation {
    /// The gRPC status a stream ends with (the one place a violation maps to a status).
    pub fn status(&self) -> tonic::Status {
        match self {
            Violation::TooLarge(_) => tonic::Status::resource_exhausted(self.to_string()),
            Violation::Timeout => tonic::Status::deadline_exceeded(self.to_string()),
            Violation::TooManyStreams(_) => tonic::Status::unavailable(self.to_string()),
        }
    }
}

enum Mode {
    /// An ADS stream not accepted yet.
    Stream {
        admitted: Arc<AtomicBool>,
        limit: usize,
        read: usize,
        /// The first gRPC message's 5-byte prefix, as far as received.
        prefix: Vec<u8>,
        /// Held from the end of the first message until the stream ends (or is accepted):
        /// the connection is not closed while its authentication is under way.
        authenticating: Option<Busy>,
        /// Its place among the connection's streams waiting for authentication.
        _slot: Option<StreamSlot>,
    },
    /// A plain request body, bounded in time only.
    Body,
    /// No more bounds.
    Open,
    /// A bound was broken: the body is over.
    Failed,
}

/// A request body under the bounds of the module docs.
pub struct Guarded<B> {
    inner: B,
    conn: Arc<Conn>,
    deadline: Option<Pin<Box<Sleep>>>,
    mode: Mode,
}

impl<B> Guarded<B> {
    /// The body of an ADS stream: `limit` bytes and until `deadline` to be accepted; the
    /// returned admission (for the request extensions) lifts the bounds. `slot` is held
    /// until then.
    pub fn stream(
        inner: B,
        conn: Arc<Conn>,
        slot: Option<StreamSlot>,
        limit: usize,
        deadline: Instant,
    ) -> (Self, kuma_xds::Admission) {
        let admitted = Arc::new(AtomicBool::new(false));
        let admission = {
            let (admitted, conn) = (admitted.clone(), conn.clone());
            kuma_xds::Admission::new(move || {
                admitted.store(true, Ordering::SeqCst);
                conn.admit();
            })
        };
        let body = Self {
            inner,
            conn,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            mode: Mode::Stream {
                admitted,
                limit,
                read: 0,
                prefix: Vec::with_capacity(5),
                authenticating: None,
                _slot: slot,
            },
        };
        (body, admission)
    }

    /// A request body that must be complete by `deadline`.
    pub fn body(inner: B, conn: Arc<Conn>, deadline: Instant) -> Self {
        Self {
            inner,
            conn,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            mode: Mode::Body,
        }
    }

    fn fail(&mut self, v: Violation) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::debug!(reason = %v, "DP server request cut before authentication");
        self.mode = Mode::Failed;
        self.deadline = None;
        self.conn.cut();
        Poll::Ready(Some(Err(Box::new(v.status()))))
    }

    /// Counts `data` of a stream not accepted yet; a violation if over the limit.
    fn account(&mut self, data: &[u8]) -> Result<(), Violation> {
        let Mode::Stream {
            limit,
            read,
            prefix,
            authenticating,
            ..
        } = &mut self.mode
        else {
            return Ok(());
        };
        let before = *read;
        *read += data.len();
        if *read > *limit {
            return Err(Violation::TooLarge(*limit));
        }
        if !self.conn.is_admitted()
            && self
                .conn
                .unauthenticated
                .fetch_add(data.len(), Ordering::SeqCst)
                + data.len()
                > *limit
        {
            return Err(Violation::TooLarge(*limit));
        }
        if prefix.len() < 5 {
            let take = (5 - prefix.len()).min(data.len());
            prefix.extend_from_slice(&data[..take]);
        }
        if prefix.len() == 5 && authenticating.is_none() {
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if 5 + len > *limit {
                // Announced larger than allowed: no need to wait for the bytes.
                return Err(Violation::TooLarge(*limit));
            }
            if *read >= 5 + len && before < 5 + len {
                tracing::debug!(bytes = len, "first ADS request received; authenticating");
                *authenticating = Some(self.conn.busy());
            }
        }
        Ok(())
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &this.mode {
            Mode::Failed => return Poll::Ready(None),
            Mode::Stream { admitted, .. } if admitted.load(Ordering::SeqCst) => {
                this.mode = Mode::Open;
                this.deadline = None;
            }
            _ => {}
        }
        if this.deadline.as_ref().is_some_and(|d| d.is_elapsed()) {
            return this.fail(Violation::Timeout);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(v) = this.account(data)
                {
                    return this.fail(v);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                if matches!(this.mode, Mode::Body) {
                    this.mode = Mode::Open;
                    this.deadline = None;
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut()
                    && d.as_mut().poll(cx).is_ready()
                {
                    return this.fail(Violation::Timeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.mode, Mode::Failed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::sync::mpsc;

    use super::*;

    /// A body fed from a channel.
    struct Chan(mpsc::Receiver<Bytes>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn chan() -> (mpsc::Sender<Bytes>, Chan) {
        let (tx, rx) = mpsc::channel(16);
        (tx, Chan(rx))
    }

    async fn next<B: Body<Data = Bytes, Error = BoxError> + Unpin>(
        b: &mut B,
    ) -> Option<Result<Bytes, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx))
            .await
            .map(|r| r.map(|f| f.into_data().unwrap_or_default()))
    }

    fn grpc_prefix(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    fn status(e: BoxError) -> tonic::Status {
        *e.downcast::<tonic::Status>().expect("a status")
    }

    #[test]
    fn caps_hold_per_ip_and_in_total_and_are_given_back() {
        let caps = Caps::new(3, 2);
        let (a, b) = (
            IpAddr::from(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::from(Ipv4Addr::new(10, 0, 0, 2)),
        );
        let a1 = caps.acquire(a).unwrap();
        let _a2 = caps.acquire(a).unwrap();
        assert_eq!(caps.acquire(a).err(), Some(Refused::PerIp));
        let _b1 = caps.acquire(b).unwrap();
        assert_eq!(caps.acquire(b).err(), Some(Refused::Total));
        assert_eq!(caps.open(a), (3, 2));
        drop(a1);
        assert_eq!(caps.open(a), (2, 1));
        let _b2 = caps.acquire(b).unwrap();
        assert_eq!(caps.open(b), (3, 2));
        let none = Caps::new(0, 0);
        let all: Vec<_> = (0..1000).map(|_| none.acquire(a).unwrap()).collect();
        assert_eq!(none.open(a), (1000, 1000));
        drop(all);
        assert_eq!(none.open(a), (0, 0));
    }

    #[test]
    fn the_connection_cap_fits_the_descriptors() {
        // Plenty of descriptors: the configured cap stands.
        assert_eq!(fit_to_descriptors(10_000, 20_000, 2_176), None);
        // 1024, half of it taken by the API and diagnostics: the rest less the reserve.
        assert_eq!(fit_to_descriptors(10_000, 1024, 512), Some(448));
        assert_eq!(
            fit_to_descriptors(0, 1024, 512),
            Some(448),
            "no cap is capped too"
        );
        assert_eq!(fit_to_descriptors(100, 1024, 512), None);
        assert_eq!(fit_to_descriptors(10, 16, 8), Some(1), "never 0");
    }

    #[tokio::test]
    async fn throttle_reports_once_per_period_with_the_count() {
        let mut t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(t.hit(), Some(3));
    }

    #[tokio::test]
    async fn a_stream_over_the_limit_before_authentication_fails_and_cuts_the_connection() {
        let conn = Conn::new();
        let (tx, rx) = chan();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut body, _admission) = Guarded::stream(rx, conn.clone(), None, 1024, deadline);
        // Announces 512 bytes, sends them in two parts (within the limit).
        let mut first = grpc_prefix(512);
        first.extend_from_slice(&[0; 100]);
        tx.send(first.into()).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        tx.send(vec![0; 412].into()).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        assert_eq!(conn.busy.load(Ordering::SeqCst), 1, "authenticating");
        // Not accepted, and more keeps coming: over the limit.
        tx.send(vec![0; 600].into()).await.unwrap();
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(status(err).code(), tonic::Code::ResourceExhausted);
        assert!(next(&mut body).await.is_none(), "over after a violation");
        assert!(conn.cut.is_cancelled());
        drop(body);
        assert_eq!(conn.busy.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn streams_of_a_connection_share_its_pre_authentication_budget() {
        let conn = Conn::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut streams = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = chan();
            let (body, _admission) = Guarded::stream(rx, conn.clone(), None, 1024, deadline);
            streams.push((tx, body));
        }
        // 300 bytes each: within each stream's limit, over the connection's at the fourth.
        for (i, (tx, body)) in streams.iter_mut().enumerate() {
            let mut first = grpc_prefix(1000);
            first.extend_from_slice(&[0; 295]);
            tx.send(first.into()).await.unwrap();
            let r = next(body).await.unwrap();
            assert_eq!(r.is_err(), i == 3, "stream {i}");
        }
        assert!(conn.cut.is_cancelled());

        // Once the connection is admitted, only each stream's own limit counts.
        let conn = Conn::new();
        conn.admit();
        for _ in 0..4 {
            let (tx, rx) = chan();
            let (mut body, _admission) = Guarded::stream(rx, conn.clone(), None, 1024, deadline);
            let mut first = grpc_prefix(1000);
            first.extend_from_slice(&[0; 295]);
            tx.send(first.into()).await.unwrap();
            assert!(next(&mut body).await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn streams_waiting_for_authentication_are_capped_per_connection() {
        let conn = Conn::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let a = conn.stream_slot(2).unwrap();
        let b = conn.stream_slot(2).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(conn.stream_slot(2).is_err(), "a third waits while two do");
        // A stream that ends gives its place back.
        let (_tx, rx) = chan();
        let (body, _admission) = Guarded::stream(rx, conn.clone(), a, 1024, deadline);
        drop(body);
        let c = conn.stream_slot(2).unwrap();
        assert!(c.is_some());
        // An accepted stream admits the connection: no cap any more.
        let (tx, rx) = chan();
        let (mut body, admission) = Guarded::stream(rx, conn.clone(), b, 1024, deadline);
        admission.admit();
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        assert_eq!(
            conn.waiting.load(Ordering::SeqCst),
            1,
            "its place is given back"
        );
        for _ in 0..10 {
            assert!(conn.stream_slot(2).unwrap().is_none());
        }
        drop(c);
        assert_eq!(conn.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_prefix_announcing_more_than_the_limit_fails_at_once() {
        let conn = Conn::new();
        let (tx, rx) = chan();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut body, _admission) = Guarded::stream(rx, conn.clone(), None, 64 * 1024, deadline);
        tx.send(grpc_prefix(4 * 1024 * 1024).into()).await.unwrap();
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(status(err).code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn an_accepted_stream_is_unbounded_and_keeps_its_connection() {
        let conn = Conn::new();
        let (tx, rx) = chan();
        let deadline = Instant::now() + Duration::from_millis(100);
        let (mut body, admission) = Guarded::stream(rx, conn.clone(), None, 1024, deadline);
        let mut first = grpc_prefix(10);
        first.extend_from_slice(&[0; 10]);
        tx.send(first.into()).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        // The callbacks may take longer than the deadline (a slow store): the body is not
        // polled meanwhile, and kuma-xds admits the stream before polling it again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        admission.admit();
        // Accepted: 4 MiB now passes (tonic's own limit applies from here on).
        tx.send(vec![0; 4 * 1024 * 1024].into()).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        assert!(conn.is_admitted());
        conn.cut();
        assert!(
            !conn.cut.is_cancelled(),
            "an admitted connection is not cut"
        );
    }

    #[tokio::test]
    async fn a_stream_not_accepted_by_the_deadline_fails() {
        let conn = Conn::new();
        let (_tx, rx) = chan();
        let deadline = Instant::now() + Duration::from_millis(200);
        let (mut body, _admission) = Guarded::stream(rx, conn.clone(), None, 1024, deadline);
        let started = Instant::now();
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(status(err).code(), tonic::Code::DeadlineExceeded);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(conn.cut.is_cancelled());
    }

    #[tokio::test]
    async fn a_body_must_be_complete_by_the_deadline() {
        let conn = Conn::new();
        let (tx, rx) = chan();
        let mut body = Guarded::body(
            rx,
            conn.clone(),
            Instant::now() + Duration::from_millis(200),
        );
        tx.send(Bytes::from_static(b"{\"mesh\":")).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(status(err).code(), tonic::Code::DeadlineExceeded);

        let (tx, rx) = chan();
        let mut body = Guarded::body(rx, Conn::new(), Instant::now() + Duration::from_millis(200));
        tx.send(Bytes::from_static(b"{}")).await.unwrap();
        drop(tx);
        assert!(next(&mut body).await.unwrap().is_ok());
        assert!(next(&mut body).await.is_none());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            next(&mut body).await.is_none(),
            "a complete body stays complete"
        );
    }

    #[tokio::test]
    async fn a_connection_expires_unless_admitted_and_waits_for_an_authentication() {
        let ms = Duration::from_millis;
        let (timeout, grace) = (ms(200), ms(400));
        let within = |t0: Instant, at: Duration| {
            let e = t0.elapsed();
            assert!(e >= at && e < at + ms(150), "{e:?} instead of {at:?}");
        };
        // Nothing happened: closed at the deadline.
        let t0 = Instant::now();
        let conn = Conn::new();
        conn.expire(t0 + timeout, grace).await;
        within(t0, timeout);

        // Admitted before: never.
        let conn = Conn::new();
        conn.admit();
        let r = tokio::time::timeout(ms(1000), conn.expire(Instant::now() + timeout, grace));
        assert!(r.await.is_err());

        // An authentication under way at the deadline that fails: closed when it ends.
        let t0 = Instant::now();
        let conn = Conn::new();
        let busy = conn.busy();
        tokio::spawn(async move {
            tokio::time::sleep(ms(300)).await;
            drop(busy);
        });
        conn.expire(t0 + timeout, grace).await;
        within(t0, ms(300));

        // ... that succeeds: kept.
        let t0 = Instant::now();
        let conn = Conn::new();
        let busy = conn.busy();
        let c = conn.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(300)).await;
            c.admit();
            drop(busy);
        });
        let r = tokio::time::timeout(ms(1000), conn.expire(t0 + timeout, grace));
        assert!(r.await.is_err());

        // ... that never ends: closed after the grace period.
        let t0 = Instant::now();
        let conn = Conn::new();
        let _busy = conn.busy();
        conn.expire(t0 + timeout, grace).await;
        within(t0, timeout + grace);
    }
}
