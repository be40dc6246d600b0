//! One scrape: every [`Target`] fetched at once, the answers put together.
//!
//! [`Scraper::scrape`] asks Envoy's admin `GET /stats?<the scrape's query>&format=prometheus
//! &text_readouts=` (query keys sorted, as Kuma's Go `url.Values` encodes them) and every
//! application `GET http://<address>:<port><path>` (the scrape's query dropped), forwarding
//! only `accept`, `user-agent` and `x-prometheus-scrape-timeout-seconds`. Each target has
//! [`TARGET_TIMEOUT`] (or the scraper's own timeout, when lower) for connect, request and whole
//! body, and at most [`MAX_TARGET_BODY`] bytes. A target that fails, answers other than 200 or
//! sends too much contributes nothing (a warning, at most once per [`LOG_EVERY`] per target);
//! the scrape still succeeds. Redirects are followed (at most [`MAX_REDIRECTS`], as Go's
//! client does for Kuma) while they stay on the target's address. Envoy's body is parsed and
//! rewritten ([`super::merge`]); an application's passes as it came.
//!
//! With transparent proxying, TCP connections leave from `127.0.0.6` (or `::6` towards IPv6),
//! the source the iptables rules let through to the application untouched (Kuma's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use kuma_core::rate_log::RateLog;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, UnixStream};

use super::response::{self, Format};
use super::{merge, text};

/// Longest wait for one target, unless the scraper allows less.
pub const TARGET_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body taken from one target (Envoy's stats of a large mesh are a few MiB).
pub const MAX_TARGET_BODY: usize = 32 << 20;
/// Least time between two warnings about the same target.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Request headers passed on to the targets (Prometheus' scrape headers).
pub const FORWARDED_HEADERS: [&str; 3] = [
    "accept",
    "user-agent",
    "x-prometheus-scrape-timeout-seconds",
];
/// Source address of TCP scrapes under transparent proxying (IPv4).
pub const PASSTHROUGH_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Source address of TCP scrapes under transparent proxying (IPv6).
pub const PASSTHROUGH_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
/// Most redirects followed for one target (Go's client's limit, as Kuma's).
pub const MAX_REDIRECTS: usize = 10;
/// Scraper's header giving its own timeout in seconds.
const SCRAPE_TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";

/// Where a target listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host (IP or name) and port.
    Tcp {
        /// IP address or host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// A UNIX socket (Envoy's admin as a pipe).
    Unix(PathBuf),
}

/// What is done with a target's query and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Envoy's admin: the scrape's query kept plus the Prometheus format; body rewritten.
    Envoy,
    /// An application: no query; body passed unchanged.
    Application,
}

/// One place metrics are fetched from.
#[derive(Debug)]
pub struct Target {
    name: String,
    endpoint: Endpoint,
    path: String,
    role: Role,
    failures: Mutex<RateLog>,
}

impl Target {
    /// Envoy's admin API at `endpoint` (`/stats`).
    pub fn envoy(endpoint: Endpoint) -> Self {
        Self::new("envoy", endpoint, "/stats", Role::Envoy)
    }

    /// An application's metrics at `endpoint` and `path`.
    pub fn application(name: &str, endpoint: Endpoint, path: &str) -> Self {
        Self::new(name, endpoint, path, Role::Application)
    }

    fn new(name: &str, endpoint: Endpoint, path: &str, role: Role) -> Self {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Target {
            name: name.to_string(),
            endpoint,
            path,
            role,
            failures: Mutex::new(RateLog::new(LOG_EVERY)),
        }
    }

    /// The target's name (`envoy`, or the aggregate entry's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request target (path and query) for a scrape with `query`.
    pub fn request_target(&self, query: Option<&str>) -> String {
        match self.role {
            Role::Application => self.path.clone(),
            Role::Envoy => format!("{}?{}", self.path, envoy_query(query)),
        }
    }

    fn host_header(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
            Endpoint::Unix(_) => "localhost".to_string(),
        }
    }

    fn log_failure(&self, error: &str) {
        let Ok(mut log) = self.failures.lock() else {
            return;
        };
        if let Some(count) = log.hit() {
            tracing::warn!(
                target_name = %self.name,
                path = %self.path,
                endpoint = ?self.endpoint,
                failures = count,
                error,
                "could not scrape metrics; serving the other targets' (next warning for this target in {}s at the earliest)",
                LOG_EVERY.as_secs()
            );
        }
    }
}

/// The query sent to Envoy: the scrape's, plus `format=prometheus` and `text_readouts=`,
/// encoded with keys sorted (stable: values of one key keep their order), as Go does.
pub fn envoy_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.push(("format".into(), "prometheus".into()));
    pairs.push(("text_readouts".into(), String::new()));
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Fetches all targets of a proxy.
#[derive(Debug)]
pub struct Scraper {
    targets: Vec<Target>,
    passthrough: bool,
}

/// The assembled answer of one scrape.
#[derive(Debug)]
pub struct Scrape {
    /// `Content-Type` of the answer.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Scraper {
    /// Scrapes `targets` in this order; `passthrough`: connect from [`PASSTHROUGH_V4`] /
    /// [`PASSTHROUGH_V6`] (transparent proxying).
    pub fn new(targets: Vec<Target>, passthrough: bool) -> Self {
        Scraper {
            targets,
            passthrough,
        }
    }

    /// The targets.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// One scrape with the incoming request's `query` and `headers` (see the module docs).
    pub async fn scrape(&self, query: Option<&str>, headers: &HeaderMap) -> Scrape {
        let timeout = timeout_for(headers);
        let forwarded: Vec<(HeaderName, header::HeaderValue)> = FORWARDED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?;
                Some((HeaderName::from_static(name), value.clone()))
            })
            .collect();
        let answers = futures::future::join_all(self.targets.iter().map(|target| async {
            match tokio::time::timeout(timeout, self.fetch(target, query, &forwarded)).await {
                Ok(Ok(answer)) => Some(answer),
                Ok(Err(error)) => {
                    target.log_failure(&error);
                    None
                }
                Err(_) => {
                    target.log_failure(&format!("no complete answer within {timeout:?}"));
                    None
                }
            }
        }))
        .await;
        let answered: Vec<(Format, Bytes)> = answers.into_iter().flatten().collect();
        let format = response::select(answered.iter().map(|(f, _)| *f));
        Scrape {
            content_type: format.content_type(),
            body: response::assemble(answered.iter().map(|(_, b)| b.as_ref()), format),
        }
    }

    async fn fetch(
        &self,
        target: &Target,
        query: Option<&str>,
        forwarded: &[(HeaderName, header::HeaderValue)],
    ) -> Result<(Format, Bytes), String> {
        let mut request_target = target.request_target(query);
        let mut redirects = 0;
        let answer = loop {
            let mut request = Request::get(request_target.as_str())
                .header(header::HOST, target.host_header())
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("invalid request {request_target:?}: {e}"))?;
            for (name, value) in forwarded {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            let answer = match &target.endpoint {
                Endpoint::Tcp { host, port } => {
                    let stream = self.connect_tcp(host, *port).await?;
                    send(stream, request).await?
                }
                Endpoint::Unix(path) => {
                    let stream = UnixStream::connect(path)
                        .await
                        .map_err(|e| format!("connect {}: {e}", path.display()))?;
                    send(stream, request).await?
                }
            };
            let Some(location) = answer
                .location
                .as_deref()
                .filter(|_| is_redirect(answer.status))
            else {
                break answer;
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(format!("stopped after {MAX_REDIRECTS} redirects"));
            }
            request_target = same_endpoint_target(target, location).ok_or_else(|| {
                format!(
                    "status {}: redirect to {location:?}, not on the same address, not followed",
                    answer.status
                )
            })?;
        };
        let (status, content_type, body) = (answer.status, answer.content_type, answer.body);
        if status != StatusCode::OK {
            let shown = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            return Err(format!("status {status}: {}", shown.trim()));
        }
        let format = Format::of_response(content_type.as_deref());
        match target.role {
            Role::Application => Ok((format, body)),
            Role::Envoy => {
                let text = std::str::from_utf8(&body)
                    .map_err(|_| "Envoy's stats are not UTF-8".to_string())?;
                let mut families =
                    text::parse(text).map_err(|e| format!("Envoy's stats do not parse: {e}"))?;
                merge::merge_clusters(&mut families);
                let mut out = String::with_capacity(text.len());
                for family in &families {
                    text::write(&mut out, family);
                }
                Ok((format, Bytes::from(out)))
            }
        }
    }

    async fn connect_tcp(&self, host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
        let connect_host = match host {
            "" | "0.0.0.0" => "127.0.0.1",
            "::" => "::1",
            other => other,
        };
        let address = match connect_host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((connect_host, port))
                .await
                .map_err(|e| format!("resolve {connect_host}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolve {connect_host}: no address"))?,
        };
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        let socket = if self.passthrough {
            let source = match address {
                SocketAddr::V4(_) => IpAddr::V4(PASSTHROUGH_V4),
                SocketAddr::V6(_) => IpAddr::V6(PASSTHROUGH_V6),
            };
            match socket.bind(SocketAddr::new(source, 0)) {
                Ok(()) => socket,
                Err(error) => {
                    // `::6` exists only where the transparent-proxy setup added it.
                    tracing::debug!(%source, %error, "cannot scrape from the passthrough address; using the default source");
                    if address.is_ipv4() {
                        TcpSocket::new_v4()
                    } else {
                        TcpSocket::new_v6()
                    }
                    .map_err(|e| format!("socket: {e}"))?
                }
            }
        } else {
            socket
        };
        socket
            .connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))
    }
}

/// The time a target gets: [`TARGET_TIMEOUT`], or the scraper's own timeout when lower.
pub fn timeout_for(headers: &HeaderMap) -> Duration {
    headers
        .get(SCRAPE_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(TARGET_TIMEOUT, |s| {
            Duration::from_secs_f64(s.min(TARGET_TIMEOUT.as_secs_f64()))
        })
}

/// A target's answer to one request.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    location: Option<String>,
    body: Bytes,
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The request target a redirect to `location` leads to, when it stays on `target`'s address
/// (a path, or an `http://` URL naming the same host and port); `None` otherwise.
fn same_endpoint_target(target: &Target, location: &str) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.to_string());
    }
    let rest = location.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let same = match &target.endpoint {
        Endpoint::Tcp { .. } => authority.eq_ignore_ascii_case(&target.host_header()),
        Endpoint::Unix(_) => authority.eq_ignore_ascii_case("localhost"),
    };
    same.then(|| path.to_string())
}

/// Sends `request` on `stream` (HTTP/1.1) and reads the answer (at most [`MAX_TARGET_BODY`]
/// bytes of body).
async fn send<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text_header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = text_header(header::CONTENT_TYPE);
        let location = text_header(header::LOCATION);
        let body = Limited::new(response.into_body(), MAX_TARGET_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("body larger than {MAX_TARGET_BODY} bytes")
                } else {
                    format!("reading the body: {e}")
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            location,
            body,
        })
    };
    // The connection is driven here, not in a task of its own: when the scrape gives up on a
    // target, dropping this future closes its connection.
    let mut exchange = std::pin::pin!(exchange);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        answer = &mut exchange => answer,
        closed = &mut connection => match closed {
            Ok(()) => exchange.await,
            Err(e) => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_query_is_sorted_with_the_prometheus_format() {
        assert_eq!(envoy_query(None), "format=prometheus&text_readouts=");
        assert_eq!(envoy_query(Some("")), "format=prometheus&text_readouts=");
        assert_eq!(
            envoy_query(Some("filter=123.*&usedonly")),
            "filter=123.*&format=prometheus&text_readouts=&usedonly="
        );
        // A scraper's own `format` is kept, before the one added (Go's `Add`).
        assert_eq!(
            envoy_query(Some("usedonly&format=json&a=b+c")),
            "a=b+c&format=json&format=prometheus&text_readouts=&usedonly="
        );
    }

    #[test]
    fn request_targets() {
        let envoy = Target::envoy(Endpoint::Unix("/w/admin.sock".into()));
        assert_eq!(
            envoy.request_target(Some("usedonly")),
            "/stats?format=prometheus&text_readouts=&usedonly="
        );
        assert_eq!(envoy.host_header(), "localhost");
        let app = Target::application(
            "app",
            Endpoint::Tcp {
                host: "::1".into(),
                port: 8080,
            },
            "metrics",
        );
        assert_eq!(app.request_target(Some("usedonly")), "/metrics");
        assert_eq!(app.host_header(), "[::1]:8080");
    }

    #[test]
    fn redirects_stay_on_the_targets_address() {
        let app = Target::application(
            "app",
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 8080,
            },
            "/metrics",
        );
        assert_eq!(
            same_endpoint_target(&app, "/metrics/").as_deref(),
            Some("/metrics/")
        );
        assert_eq!(
            same_endpoint_target(&app, "http://127.0.0.1:8080/m?x=1").as_deref(),
            Some("/m?x=1")
        );
        assert_eq!(
            same_endpoint_target(&app, "http://127.0.0.1:8080").as_deref(),
            Some("/")
        );
        assert_eq!(same_endpoint_target(&app, "http://127.0.0.1:9090/m"), None);
        assert_eq!(same_endpoint_target(&app, "http://example.com/m"), None);
        assert_eq!(same_endpoint_target(&app, "//example.com/m"), None);
        assert_eq!(same_endpoint_target(&app, "https://127.0.0.1:8080/m"), None);
        let envoy = Target::envoy(Endpoint::Unix("/w/a.sock".into()));
        assert_eq!(
            same_endpoint_target(&envoy, "http://localhost/stats").as_deref(),
            Some("/stats")
        );
    }

    #[test]
    fn scrape_timeout_header_lowers_the_timeout() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout_for(&headers), TARGET_TIMEOUT);
        headers.insert(SCRAPE_TIMEOUT_HEADER, "2.5".parse().unwrap());
        assert_eq!(timeout_for(&headers), Duration::from_millis(2500));
        headers.insert(SCRAPE_TIMEOUT_HEADER, "10".parse().unwrap());
        assert_eq!(timeout_for(&headers), TARGET_TIMEOUT);
        headers.insert(SCRAPE_TIMEOUT_HEADER, "-1".parse().unwrap());
        assert_eq!(timeout_for(&headers), TARGET_TIMEOUT);
        headers.insert(SCRAPE_TIMEOUT_HEADER, "soon".parse().unwrap());
        assert_eq!(timeout_for(&headers), TARGET_TIMEOUT);
    }
}
