//! Forwarding the names that are not the mesh's to the host's resolvers (Kuma's CoreDNS
//! `alternate` rule to `/etc/resolv.conf`).
//!
//! [`Upstreams::from_resolv_conf`] reads the `nameserver` lines. [`Upstreams::forward`] tries
//! them in order with the query's own bytes (so the id and flags reach the upstream as the
//! client sent them): over UDP with [`Upstreams::attempt_timeout`] per server, again over TCP
//! when the UDP answer is truncated; over TCP from the start for a query that came over TCP.
//! The first answer with the query's id is returned as is; no answer from any server is an
//! error the caller turns into SERVFAIL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The DNS port of `nameserver` lines.
const DNS_PORT: u16 = 53;
/// Largest UDP answer read from an upstream.
const MAX_UDP_ANSWER: usize = 65535;

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// resolv.conf lists no usable nameserver (or could not be read).
    #[error("no upstream nameserver configured")]
    NoUpstream,
    /// Every upstream failed; the last failure.
    #[error("no upstream nameserver answered: {0}")]
    Exhausted(String),
}

/// The upstream resolvers, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
    attempt_timeout: Duration,
}

/// How the query came in, hence how it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP first, TCP when the answer is truncated.
    Udp,
    /// TCP only.
    Tcp,
}

impl Upstreams {
    /// These servers, `attempt_timeout` each.
    pub fn new(servers: Vec<SocketAddr>, attempt_timeout: Duration) -> Self {
        Upstreams {
            servers,
            attempt_timeout,
        }
    }

    /// The `nameserver` lines of a resolv.conf (an unreadable file gives no servers, logged:
    /// forwarded queries then get SERVFAIL while mesh names still resolve).
    pub fn from_resolv_conf(path: &Path) -> Self {
        let servers = match std::fs::read_to_string(path) {
            Ok(text) => parse_resolv_conf(&text),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "could not read the resolv.conf: names outside the mesh will not resolve");
                Vec::new()
            }
        };
        if servers.is_empty() {
            tracing::warn!(path = %path.display(), "no nameserver in the resolv.conf: names outside the mesh will not resolve");
        }
        Upstreams::new(servers, ATTEMPT_TIMEOUT)
    }

    /// The servers, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Timeout of one attempt.
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// Sends `query` (a whole DNS message) to the upstreams in order; the first answer.
    pub async fn forward(&self, query: &[u8], transport: Transport) -> Result<Vec<u8>, Error> {
        if self.servers.is_empty() {
            return Err(Error::NoUpstream);
        }
        let mut last = String::new();
        for server in &self.servers {
            let attempt = async {
                match transport {
                    Transport::Tcp => tcp_exchange(*server, query).await,
                    Transport::Udp => {
                        let answer = udp_exchange(*server, query).await?;
                        if answer.len() > 2 && answer[2] & 0x02 != 0 {
                            // TC: the whole answer over TCP.
                            tcp_exchange(*server, query).await
                        } else {
                            Ok(answer)
                        }
                    }
                }
            };
            match tokio::time::timeout(self.attempt_timeout, attempt).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(err)) => last = format!("{server}: {err}"),
                Err(_) => {
                    last = format!(
                        "{server}: no answer within {}",
                        crate::duration::format(self.attempt_timeout)
                    )
                }
            }
            tracing::debug!(error = %last, "upstream nameserver failed, trying the next");
        }
        Err(Error::Exhausted(last))
    }
}

/// The `nameserver` addresses of a resolv.conf text, in order (comments, other options and
/// unparseable addresses skipped; an IPv6 zone suffix `%eth0` is not supported).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(address) = words.next() else {
            continue;
        };
        match address.parse::<IpAddr>() {
            Ok(ip) => {
                let server = SocketAddr::new(ip, DNS_PORT);
                if !servers.contains(&server) {
                    servers.push(server);
                }
            }
            Err(_) => tracing::warn!(address, "resolv.conf: unusable nameserver, skipped"),
        }
    }
    servers
}

/// One UDP exchange from a fresh socket (a random source port per query); datagrams that are
/// not the answer (other id, not a response) are ignored.
async fn udp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP_ANSWER];
    loop {
        let n = socket.recv(&mut buf).await?;
        if is_answer_to(&buf[..n], query) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange (RFC 1035 two-byte length prefix).
async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "query over 65535 bytes")
    })?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let answer = read_frame(&mut stream).await?;
        if is_answer_to(&answer, query) {
            return Ok(answer);
        }
    }
}

/// Reads one length-prefixed DNS message from a TCP stream.
pub async fn read_frame<S: AsyncReadExt + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Whether `answer` (bytes from an upstream) is a response carrying `query`'s id: the only
/// datagrams and frames taken as the answer.
pub fn is_answer_to(answer: &[u8], query: &[u8]) -> bool {
    answer.len() >= 12 && query.len() >= 2 && answer[..2] == query[..2] && answer[2] & 0x80 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\n\
                    nameserver   10.0.0.2 # second\n;nameserver 10.9.9.9\n\
                    nameserver ::1\nnameserver fe80::1%eth0\nnameserver 127.0.0.53\n\
                    options timeout:1\nnameserver\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
            ]
        );
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn an_answer_has_the_query_id_and_qr() {
        let query = [0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut answer = query;
        assert!(!is_answer_to(&answer, &query), "a query is not an answer");
        answer[2] |= 0x80;
        assert!(is_answer_to(&answer, &query));
        answer[1] = 0;
        assert!(!is_answer_to(&answer, &query));
    }

    #[tokio::test]
    async fn no_server_answering_is_an_error() {
        // A UDP port that nobody listens on, then the TCP path to it.
        let unused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = unused.local_addr().unwrap();
        drop(unused);
        let upstreams = Upstreams::new(vec![addr], Duration::from_millis(300));
        let query = [1, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let err = upstreams.forward(&query, Transport::Udp).await.unwrap_err();
        assert!(matches!(err, Error::Exhausted(_)), "{err}");
        let err = upstreams.forward(&query, Transport::Tcp).await.unwrap_err();
        assert!(matches!(err, Error::Exhausted(_)), "{err}");
        let none = Upstreams::new(vec![], Duration::from_millis(300));
        assert!(matches!(
            none.forward(&query, Transport::Udp).await,
            Err(Error::NoUpstream)
        ));
    }
}
