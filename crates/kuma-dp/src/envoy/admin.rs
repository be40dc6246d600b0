//! A minimal client for Envoy's admin API, over TCP or a UNIX socket.
//!
//! [`Address::from_bootstrap`] finds the admin endpoint in the bootstrap the control plane
//! returned: `admin.address.socket_address.{address,port_value}` (or the camelCase
//! `socketAddress.{address,portValue}` that protobuf-JSON-derived YAML uses), or
//! `admin.address.pipe.path` for a UNIX socket. [`Client`] speaks plain HTTP/1.1 to it; kuma-dp
//! needs only `GET /ready` and `POST /healthcheck/fail`.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Why the admin endpoint could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bootstrap is not YAML.
    #[error("could not parse the Envoy bootstrap: {0}")]
    Bootstrap(String),
    /// The bootstrap has no usable admin address.
    #[error(
        "the Envoy bootstrap has no admin address (admin.address.socket_address or \
         admin.address.pipe.path)"
    )]
    NoAddress,
    /// Connecting, sending or reading failed.
    #[error("Envoy admin {address} {method} {path}: {message}")]
    Request {
        /// The admin address.
        address: String,
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Where Envoy's admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP address.
    Tcp {
        /// Host or IP as written in the bootstrap.
        host: String,
        /// Port.
        port: u16,
    },
    /// A UNIX socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Address {
    /// Finds the admin address in an Envoy bootstrap (YAML or JSON).
    pub fn from_bootstrap(bootstrap: &str) -> Result<Self, Error> {
        let value: serde_json::Value =
            serde_saphyr::from_str(bootstrap).map_err(|e| Error::Bootstrap(e.to_string()))?;
        let address = &value["admin"]["address"];
        let pick = |a: &str, b: &str| {
            let v = &address.get(a).unwrap_or(&address[b]);
            (!v.is_null()).then_some(*v)
        };
        if let Some(socket) = pick("socket_address", "socketAddress") {
            let host = socket["address"].as_str().ok_or(Error::NoAddress)?;
            let port_value = socket.get("port_value").unwrap_or(&socket["portValue"]);
            let port = port_value
                .as_u64()
                .or_else(|| port_value.as_str().and_then(|s| s.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or(Error::NoAddress)?;
            return Ok(Address::Tcp {
                host: host.to_string(),
                port,
            });
        }
        if let Some(pipe) = address.get("pipe") {
            let path = pipe["path"].as_str().ok_or(Error::NoAddress)?;
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        Err(Error::NoAddress)
    }
}

/// An HTTP client for Envoy's admin API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    address: Address,
    timeout: Duration,
}

impl Client {
    /// A client for `address`; each request is bounded by `timeout`.
    pub fn new(address: Address, timeout: Duration) -> Self {
        Client { address, timeout }
    }

    /// The admin address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether Envoy reports itself `LIVE` on `GET /ready`.
    pub async fn is_ready(&self) -> Result<bool, Error> {
        let (status, body) = self.request(Method::GET, "/ready").await?;
        Ok(status == StatusCode::OK && body.trim() == "LIVE")
    }

    /// `POST /healthcheck/fail`: Envoy starts failing health checks so peers stop sending to it.
    pub async fn fail_healthcheck(&self) -> Result<(), Error> {
        let (status, body) = self.request(Method::POST, "/healthcheck/fail").await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.error(
                Method::POST,
                "/healthcheck/fail",
                format!("{status}: {body}"),
            ))
        }
    }

    /// Sends `method path` and returns the status and body.
    pub async fn request(&self, method: Method, path: &str) -> Result<(StatusCode, String), Error> {
        let fut = async {
            match &self.address {
                Address::Tcp { host, port } => {
                    let connect_host = match host.as_str() {
                        "0.0.0.0" | "" => "127.0.0.1",
                        "::" => "::1",
                        other => other,
                    };
                    let stream = TcpStream::connect((connect_host, *port))
                        .await
                        .map_err(|e| e.to_string())?;
                    send(stream, method.clone(), path, &self.address.to_string()).await
                }
                Address::Unix(socket) => {
                    let stream = UnixStream::connect(socket)
                        .await
                        .map_err(|e| e.to_string())?;
                    send(stream, method.clone(), path, "localhost").await
                }
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(message)) => Err(self.error(method, path, message)),
            Err(_) => Err(self.error(method, path, format!("timed out after {:?}", self.timeout))),
        }
    }

    fn error(&self, method: Method, path: &str, message: String) -> Error {
        Error::Request {
            address: self.address.to_string(),
            method,
            path: path.to_string(),
            message,
        }
    }
}

async fn send<S>(
    stream: S,
    method: Method,
    path: &str,
    host: &str,
) -> Result<(StatusCode, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection task ends when the response is read and `sender` is dropped.
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "Envoy admin connection closed with an error");
        }
    });
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tcp_admin_snake_case() {
        let yaml = "admin:\n  access_log_path: /dev/null\n  address:\n    socket_address:\n      address: 127.0.0.1\n      port_value: 9901\nnode:\n  id: default.dp\n";
        assert_eq!(
            Address::from_bootstrap(yaml).unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 9901
            }
        );
    }

    #[test]
    fn finds_tcp_admin_camel_case() {
        let yaml = "admin:\n  address:\n    socketAddress:\n      address: 127.0.0.1\n      portValue: 9911\n";
        assert_eq!(
            Address::from_bootstrap(yaml).unwrap().to_string(),
            "127.0.0.1:9911"
        );
    }

    #[test]
    fn finds_pipe_admin() {
        let yaml = "admin:\n  address:\n    pipe:\n      path: /tmp/kuma-dp-1/kuma-envoy-admin.sock\n      mode: 384\n";
        assert_eq!(
            Address::from_bootstrap(yaml).unwrap(),
            Address::Unix("/tmp/kuma-dp-1/kuma-envoy-admin.sock".into())
        );
    }

    #[test]
    fn missing_admin_is_an_error() {
        assert!(matches!(
            Address::from_bootstrap("node:\n  id: x\n"),
            Err(Error::NoAddress)
        ));
        assert!(matches!(
            Address::from_bootstrap(
                "admin:\n  address:\n    socket_address:\n      address: 127.0.0.1\n"
            ),
            Err(Error::NoAddress)
        ));
    }

    #[tokio::test]
    async fn talks_http_over_tcp_and_unix() {
        use axum::{Router, routing::get, routing::post};
        let app = Router::new()
            .route("/ready", get(|| async { "LIVE\n" }))
            .route("/healthcheck/fail", post(|| async { "OK\n" }));

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        tokio::spawn(axum::serve(tcp, app.clone()).into_future());
        let client = Client::new(
            Address::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            Duration::from_secs(2),
        );
        assert!(client.is_ready().await.unwrap());
        client.fail_healthcheck().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("admin.sock");
        let unix = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(axum::serve(unix, app).into_future());
        let client = Client::new(Address::Unix(sock), Duration::from_secs(2));
        assert!(client.is_ready().await.unwrap());

        let closed = Client::new(
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            Duration::from_secs(2),
        );
        assert!(closed.is_ready().await.is_err());
    }
}
