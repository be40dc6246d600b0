//! The DNS listeners: UDP and TCP on `127.0.0.1:<port>` (and `[::1]:<port>` when the host has
//! an IPv6 loopback).
//!
//! [`Server::bind`] binds every socket first (a taken port fails start-up, naming the address
//! and the setting it came from); [`Server::run`] serves until shutdown. Each query is decided
//! by [`super::answer::respond`] against the latest table of the `watch` channel (read, never
//! held across an `.await`); a local answer is sent at once, a forward runs in its own task.
//!
//! Bounds ([`Limits`]): a forward may take [`Limits::query_timeout`] in all; at most
//! [`Limits::max_forwards`] forwards run at once (more get SERVFAIL at once); at most
//! [`Limits::max_tcp_connections`] TCP connections are open (more are closed at once); a TCP
//! connection idle for [`Limits::tcp_idle_timeout`] is closed and answers its queries one at a
//! time. Overflows are logged at most every 10 s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::answer::{self, Reply};
use super::fetch::Tables;
use super::forward::{self, Transport, Upstreams};
use super::table::Table;

/// Largest UDP query read.
const MAX_UDP_QUERY: usize = 4096;
/// How long shutdown waits for forwards and TCP connections under way.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Interval between two warnings about the same overflow.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one forwarded query, every upstream attempt included.
    pub query_timeout: Duration,
    /// Forwards in flight at once, UDP and TCP together.
    pub max_forwards: usize,
    /// TCP connections open at once.
    pub max_tcp_connections: usize,
    /// A TCP connection with no new query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            query_timeout: Duration::from_secs(5),
            max_forwards: 256,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound.
    #[error(
        "could not bind the DNS server on {protocol} {address} (port from {setting}): {source}"
    )]
    Bind {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address.
        address: SocketAddr,
        /// The flag or variable the port came from.
        setting: String,
        /// The IO error.
        source: std::io::Error,
    },
}

/// A bound DNS server.
#[derive(Debug)]
pub struct Server {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tables: Tables,
    upstreams: Upstreams,
    limits: Limits,
    forwards: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    forward_overflow: Throttle,
    connection_overflow: Throttle,
}

impl Server {
    /// Binds UDP and TCP on `127.0.0.1:port`, then on `[::1]` at the same port if the host
    /// allows (skipped with a log line otherwise). Port 0 picks one free port for all of them.
    /// `setting` names where the port came from, for the error.
    pub async fn bind(
        port: u16,
        setting: &str,
        tables: Tables,
        upstreams: Upstreams,
        limits: Limits,
    ) -> Result<Self, Error> {
        let bind_err = |protocol, address, source| Error::Bind {
            protocol,
            address,
            setting: setting.to_string(),
            source,
        };
        // With port 0 the UDP port the kernel picked may be taken on TCP: try a few.
        let mut attempts = if port == 0 { 5 } else { 1 };
        let (udp4, tcp4) = loop {
            let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let udp = UdpSocket::bind(address)
                .await
                .map_err(|e| bind_err("udp", address, e))?;
            let address = udp.local_addr().map_err(|e| bind_err("udp", address, e))?;
            match TcpListener::bind(address).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) => {
                    attempts -= 1;
                    if attempts == 0 {
                        return Err(bind_err("tcp", address, e));
                    }
                }
            }
        };
        let port = tcp4.local_addr().map(|a| a.port()).unwrap_or(port);
        let mut udp = vec![udp4];
        let mut tcp = vec![tcp4];
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
        match (UdpSocket::bind(v6).await, TcpListener::bind(v6).await) {
            (Ok(u), Ok(t)) => {
                udp.push(u);
                tcp.push(t);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::info!(address = %v6, error = %e, "DNS server not listening on the IPv6 loopback");
            }
        }
        Ok(Server {
            udp,
            tcp,
            shared: Arc::new(Shared {
                tables,
                upstreams,
                forwards: Arc::new(Semaphore::new(limits.max_forwards)),
                connections: Arc::new(Semaphore::new(limits.max_tcp_connections)),
                limits,
                forward_overflow: Throttle::default(),
                connection_overflow: Throttle::default(),
            }),
        })
    }

    /// The port every socket listens on.
    pub fn port(&self) -> u16 {
        self.local_addrs().first().map_or(0, SocketAddr::port)
    }

    /// The bound UDP addresses (TCP listens on the same ones).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown`, then waits up to a second for queries under way.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        for socket in self.udp {
            tracker.spawn(serve_udp(
                Arc::new(socket),
                self.shared.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        for listener in self.tcp {
            tracker.spawn(serve_tcp(
                listener,
                self.shared.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        shutdown.cancelled().await;
        tracker.close();
        if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::debug!("DNS queries still under way at shutdown were dropped");
        }
    }
}

/// What to do with the bytes of one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send these bytes back.
    Send(Vec<u8>),
    /// Forward the query's bytes; the parsed query is kept for the SERVFAIL and the size limit.
    Forward(Message),
    /// Send nothing.
    Drop,
}

/// Decides, without waiting, what to do with the bytes of one query that came over
/// `transport`, `table` being the latest table (`None`: none received yet). Pure: the server
/// calls it on every datagram and TCP frame; a reply sent over UDP fits the client's limit.
pub fn decide(table: Option<&Table>, raw: &[u8], transport: Transport) -> Step {
    let query = match Message::from_vec(raw) {
        Ok(query) => query,
        Err(err) => {
            tracing::debug!(error = %err, "malformed DNS query");
            return answer::formerr_raw(raw).map_or(Step::Drop, Step::Send);
        }
    };
    match answer::respond(table, &query) {
        Reply::Local(reply) => encode(&reply, &query, transport).map_or(Step::Drop, Step::Send),
        Reply::Forward => Step::Forward(query),
        Reply::Ignore => Step::Drop,
    }
}

/// What the client gets for an upstream's `answer` to its `query` (an answer
/// [`forward::is_answer_to`] matched to the query's bytes): the answer as is over TCP; over
/// UDP the answer fitted to the client's limit ([`answer::fit`]), or SERVFAIL when it cannot
/// be. Pure.
pub fn relay(answer: Vec<u8>, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    match transport {
        Transport::Tcp => Some(answer),
        Transport::Udp => {
            answer::fit(answer, answer::udp_limit(query)).or_else(|| servfail(query, transport))
        }
    }
}

impl Shared {
    /// Decides without waiting ([`decide`] on the latest table).
    fn decide(&self, raw: &[u8], transport: Transport) -> Step {
        // Cloned out of the watch: no borrow lives on.
        let table = self.tables.borrow().clone();
        decide(table.as_deref(), raw, transport)
    }

    /// Forwards `raw`; the upstream's answer, or SERVFAIL.
    async fn forward(&self, raw: &[u8], query: &Message, transport: Transport) -> Option<Vec<u8>> {
        let outcome = tokio::time::timeout(
            self.limits.query_timeout,
            self.upstreams.forward(raw, transport),
        )
        .await;
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "forwarding failed: SERVFAIL");
                return servfail(query, transport);
            }
            Err(_) => {
                tracing::debug!("forwarding timed out: SERVFAIL");
                return servfail(query, transport);
            }
        };
        relay(answer, query, transport)
    }

    /// A permit for one forward, or `None` (logged) when too many are under way.
    fn forward_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.forwards.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.forward_overflow.hit(|count| {
                tracing::warn!(
                    count,
                    limit = self.limits.max_forwards,
                    "too many DNS forwards under way: answered SERVFAIL"
                )
            });
        }
        permit
    }
}

fn encode(reply: &Message, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    let wire = match reply.to_vec() {
        Ok(wire) => wire,
        Err(err) => {
            tracing::warn!(error = %err, "could not encode a DNS answer");
            return None;
        }
    };
    match transport {
        Transport::Tcp => Some(wire),
        Transport::Udp => answer::fit(wire, answer::udp_limit(query)),
    }
}

fn servfail(query: &Message, transport: Transport) -> Option<Vec<u8>> {
    encode(
        &answer::error(query, ResponseCode::ServFail),
        query,
        transport,
    )
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                Err(err) => {
                    // ICMP errors of earlier replies surface here; the socket stays usable.
                    // A short pause keeps a persistent error from spinning.
                    tracing::debug!(error = %err, "DNS UDP receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let raw = &buf[..n];
        match shared.decide(raw, Transport::Udp) {
            Step::Send(reply) => send_udp(&socket, &reply, peer).await,
            Step::Drop => {}
            Step::Forward(query) => {
                let Some(permit) = shared.forward_permit() else {
                    if let Some(reply) = servfail(&query, Transport::Udp) {
                        send_udp(&socket, &reply, peer).await;
                    }
                    continue;
                };
                let raw = raw.to_vec();
                let socket = socket.clone();
                let shared = shared.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    if let Some(reply) = shared.forward(&raw, &query, Transport::Udp).await {
                        send_udp(&socket, &reply, peer).await;
                    }
                });
            }
        }
    }
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(err) = socket.send_to(reply, peer).await {
        tracing::debug!(error = %err, %peer, "could not send a DNS answer");
    }
}

async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(got) => {
                    backoff = Duration::from_millis(10);
                    got
                }
                Err(err) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::debug!(error = %err, "DNS TCP accept error");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            shared.connection_overflow.hit(|count| {
                tracing::warn!(
                    count,
                    limit = shared.limits.max_tcp_connections,
                    "too many DNS TCP connections: closed at once"
                )
            });
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = serve_connection(stream, &shared) => {
                    if let Err(err) = r {
                        tracing::debug!(error = %err, %peer, "DNS TCP connection closed");
                    }
                }
            }
        });
    }
}

/// Answers the queries of one TCP connection in order until it closes or idles.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let raw = match tokio::time::timeout(
            shared.limits.tcp_idle_timeout,
            forward::read_frame(&mut stream),
        )
        .await
        {
            Err(_) => return Ok(()),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let reply = match shared.decide(&raw, Transport::Tcp) {
            Step::Send(reply) => Some(reply),
            Step::Drop => None,
            Step::Forward(query) => match shared.forward_permit() {
                Some(_permit) => shared.forward(&raw, &query, Transport::Tcp).await,
                None => servfail(&query, Transport::Tcp),
            },
        };
        let Some(reply) = reply else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

/// Counts events and lets one log line through every [`WARN_EVERY`].
#[derive(Debug, Default)]
struct Throttle {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    fn hit(&self, log: impl FnOnce(u64)) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        // Never held across an await: a plain critical section.
        let mut last = match self.last.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            drop(last);
            log(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::io::AsyncReadExt;
    use tokio::sync::watch;

    use super::*;

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    async fn ask_udp(server: SocketAddr, raw: &[u8]) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(raw, server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    /// A server whose only upstream never answers, with `limits`.
    async fn server(limits: Limits) -> (SocketAddr, CancellationToken, std::net::UdpSocket) {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstreams = Upstreams::new(vec![silent.local_addr().unwrap()], Duration::from_secs(30));
        let table =
            Table::from_json(br#"{"records":[{"name":"a.mesh","ips":["240.0.0.1"]}]}"#).unwrap();
        let (_tx, rx) = watch::channel(Some(Arc::new(table)));
        let server = Server::bind(0, "test", rx, upstreams, limits)
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        (addr, shutdown, silent)
    }

    #[tokio::test]
    async fn forwards_are_bounded_in_time_and_number() {
        let limits = Limits {
            query_timeout: Duration::from_millis(600),
            max_forwards: 1,
            ..Limits::default()
        };
        let (addr, shutdown, _silent) = server(limits).await;
        // The first forward waits on the silent upstream...
        let first = tokio::spawn(async move { ask_udp(addr, &query(1, "example.com.")).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ... so a second one is refused at once, while local names still answer.
        let started = Instant::now();
        let second = ask_udp(addr, &query(2, "example.org.")).await;
        assert_eq!(second.metadata.id, 2);
        assert_eq!(second.metadata.response_code, ResponseCode::ServFail);
        assert!(started.elapsed() < Duration::from_millis(300));
        let local = ask_udp(addr, &query(3, "a.mesh.")).await;
        assert_eq!(local.answers.len(), 1);
        // The first one gets SERVFAIL at the query deadline.
        let first = first.await.unwrap();
        assert_eq!(first.metadata.id, 1);
        assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
        // The slot is free again.
        let started = Instant::now();
        let again = ask_udp(addr, &query(4, "example.net.")).await;
        assert_eq!(again.metadata.response_code, ResponseCode::ServFail);
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited for the upstream"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn tcp_connections_are_capped_and_idle_ones_closed() {
        let limits = Limits {
            max_tcp_connections: 2,
            tcp_idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let (addr, shutdown, _silent) = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Over the cap: closed at once.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // A held connection answers, then is closed once idle, which frees its slot.
        let raw = query(9, "a.mesh.");
        let mut framed = (raw.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&raw);
        held[0].write_all(&framed).await.unwrap();
        let answer = forward::read_frame(&mut held[0]).await.unwrap();
        let answer = Message::from_vec(&answer).unwrap();
        assert_eq!(answer.metadata.id, 9);
        assert_eq!(answer.answers.len(), 1);
        let n = tokio::time::timeout(Duration::from_secs(2), held[1].read(&mut byte))
            .await
            .expect("idle connection closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        fresh.write_all(&framed).await.unwrap();
        let answer = forward::read_frame(&mut fresh).await.unwrap();
        assert_eq!(Message::from_vec(&answer).unwrap().metadata.id, 9);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_taken_port_names_address_and_setting() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let (_tx, rx) = watch::channel(None);
        let err = Server::bind(
            port,
            "--dns-coredns-port / KUMA_DNS_CORE_DNS_PORT",
            rx,
            Upstreams::new(vec![], Duration::from_secs(1)),
            Limits::default(),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("udp 127.0.0.1:{port}")), "{text}");
        assert!(
            text.contains("--dns-coredns-port / KUMA_DNS_CORE_DNS_PORT"),
            "{text}"
        );
    }
}
