//! A typed client of the control plane's REST API (port 5681/5682).
//!
//! Resources travel as their wire JSON ([`serde_json::Value`]); the client knows the URL
//! layout (`/meshes/{mesh}/{ws}/{name}` for mesh-scoped types, `/{ws}/{name}` for global ones),
//! follows `next` links so lists are complete, and turns non-2xx answers into [`ApiError`]
//! with the server's title, detail and per-field reasons.
//!
//! Main types: [`Client`], [`Error`], [`ApiError`], [`Index`].

use std::time::Duration;

use kuma_core::resource::{ResourceType, Scope};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::config::ApiServer;

/// Errors of talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured URL is not an absolute http(s) URL.
    #[error("invalid API server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// TLS material could not be read or used, or the HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// No HTTP answer: connection refused, timeout, TLS failure...
    #[error("could not reach the control plane at {url}: {message}")]
    Transport { url: String, message: String },
    /// The server answered with a non-2xx status.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// The answer is not what the API promises.
    #[error("unexpected response from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl Error {
    /// Whether the server said 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(e) if e.status == 404)
    }
}

/// A non-2xx answer, decoded from Kuma's error shape
/// `{"title","detail","details","invalid_parameters":[{"field","reason"}],"causes":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    /// HTTP status code.
    #[serde(skip)]
    pub status: u16,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// Deprecated copy of `detail` that older servers send alone.
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub invalid_parameters: Option<Vec<InvalidParameter>>,
    /// Deprecated form of `invalid_parameters`.
    #[serde(default)]
    pub causes: Option<Vec<Cause>>,
    /// The response body as received (`inspect` prints it as Kuma does).
    #[serde(skip)]
    pub body: String,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct InvalidParameter {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub reason: String,
}

/// One invalid field of a request (deprecated shape).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Cause {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub message: String,
}

impl ApiError {
    /// Decodes a response body; anything that is not Kuma's error JSON becomes the detail.
    pub fn from_body(status: u16, body: &str) -> Self {
        let mut err = match serde_json::from_str::<ApiError>(body) {
            Ok(e) if e.title.is_some() || e.detail.is_some() || e.details.is_some() => e,
            _ => ApiError {
                detail: Some(body.trim().chars().take(500).collect()),
                ..ApiError::default()
            },
        };
        err.status = status;
        err.body = body.to_string();
        err
    }

    /// `(field, reason)` of every invalid field, from either shape.
    pub fn field_errors(&self) -> Vec<(&str, &str)> {
        match (&self.invalid_parameters, &self.causes) {
            (Some(p), _) if !p.is_empty() => p
                .iter()
                .map(|p| (p.field.as_str(), p.reason.as_str()))
                .collect(),
            (_, Some(c)) => c
                .iter()
                .map(|c| (c.field.as_str(), c.message.as_str()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Display for ApiError {
    /// `Title (detail)` then one `* field: reason` line per invalid field.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = match self.title.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => t.to_string(),
            None => {
                let reason = StatusCode::from_u16(self.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                format!("HTTP {} {reason}", self.status)
                    .trim_end()
                    .to_string()
            }
        };
        let detail = self
            .detail
            .as_deref()
            .or(self.details.as_deref())
            .filter(|d| !d.is_empty() && *d != title);
        match detail {
            Some(d) => write!(f, "{title} ({d})")?,
            None => f.write_str(&title)?,
        }
        for (field, reason) in self.field_errors() {
            write!(f, "\n* {field}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The answer of `GET /`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Index {
    pub product: String,
    pub version: String,
    pub hostname: String,
    pub instance_id: String,
    pub cluster_id: String,
    pub based_on_kuma: String,
}

/// One page of a list.
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    items: Vec<Value>,
    #[serde(default)]
    next: Option<String>,
}

/// The answer of a PUT.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutOutcome {
    /// 201 rather than 200.
    pub created: bool,
    /// Deprecation notes the server attached.
    pub warnings: Vec<String>,
}

/// A client of one control plane's REST API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

/// Safety net for a server whose `next` links never end.
const MAX_PAGES: usize = 100_000;

impl Client {
    /// A client of the API server described by `api`; every request times out after
    /// `timeout`.
    pub fn new(api: &ApiServer, timeout: Duration) -> Result<Self, Error> {
        let base = Url::parse(&api.url).map_err(|e| Error::InvalidUrl {
            url: api.url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidUrl {
                url: api.url.clone(),
                reason: "must be an http:// or https:// URL".into(),
            });
        }
        // reqwest's rustls backend needs a process-wide crypto provider; a second install
        // (another client in the same process) fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        for h in &api.headers {
            let name = reqwest::header::HeaderName::from_bytes(h.key.as_bytes())
                .map_err(|e| Error::Setup(format!("header {:?}: {e}", h.key)))?;
            let value = reqwest::header::HeaderValue::from_str(&h.value)
                .map_err(|e| Error::Setup(format!("header {:?}: {e}", h.key)))?;
            headers.insert(name, value);
        }
        if api.auth_type == "tokens"
            && let Some(token) = api.auth_conf.get("token")
        {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| Error::Setup(format!("token: {e}")))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .user_agent(concat!("kumactl/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .danger_accept_invalid_certs(api.skip_verify);
        if !api.ca_cert_file.is_empty() {
            let pem = std::fs::read(&api.ca_cert_file)
                .map_err(|e| Error::Setup(format!("CA cert file {}: {e}", api.ca_cert_file)))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Setup(format!("CA cert file {}: {e}", api.ca_cert_file)))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if !api.client_cert_file.is_empty() || !api.client_key_file.is_empty() {
            let read = |p: &str| {
                std::fs::read(p).map_err(|e| Error::Setup(format!("client cert/key {p}: {e}")))
            };
            let mut pem = read(&api.client_cert_file)?;
            pem.push(b'\n');
            pem.extend(read(&api.client_key_file)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::Setup(format!("client cert/key: {e}")))?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(|e| Error::Setup(error_chain(&e)))?;
        Ok(Self { http, base })
    }

    /// The base URL requests are made against.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /`: product and version. Anything that is not a JSON object with `product` or
    /// `version` is a [`Error::Decode`].
    pub async fn index(&self) -> Result<Index, Error> {
        let url = self.url(&[], &[]);
        let v = self.json(Method::GET, url.clone(), None).await?;
        let is_index = v
            .as_object()
            .is_some_and(|o| o.contains_key("product") || o.contains_key("version"));
        if !is_index {
            return Err(Error::Decode {
                url: url.to_string(),
                reason: "not the index of a Kuma control plane API".into(),
            });
        }
        serde_json::from_value(v).map_err(|e| Error::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET` one resource.
    pub async fn get(&self, rtype: ResourceType, mesh: &str, name: &str) -> Result<Value, Error> {
        let url = self.url(&resource_path(rtype, mesh, Some(name)), &[]);
        self.json(Method::GET, url, None).await
    }

    /// Every resource of a type (in `mesh` for mesh-scoped types; an empty `mesh` lists
    /// across all meshes), following `next` links.
    pub async fn list(&self, rtype: ResourceType, mesh: &str) -> Result<Vec<Value>, Error> {
        let url = self.url(&resource_path(rtype, mesh, None), &[]);
        self.list_all(url).await
    }

    /// `PUT` a resource (create or update); `body` is its wire JSON.
    pub async fn put(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
        body: &Value,
    ) -> Result<PutOutcome, Error> {
        let url = self.url(&resource_path(rtype, mesh, Some(name)), &[]);
        let (status, v) = self.request(Method::PUT, url, Some(body)).await?;
        let warnings = v
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PutOutcome {
            created: status == StatusCode::CREATED,
            warnings,
        })
    }

    /// `DELETE` a resource.
    pub async fn delete(&self, rtype: ResourceType, mesh: &str, name: &str) -> Result<(), Error> {
        let url = self.url(&resource_path(rtype, mesh, Some(name)), &[]);
        self.request(Method::DELETE, url, None).await.map(|_| ())
    }

    /// Every `DataplaneOverview` of a mesh (`/meshes/{mesh}/dataplanes/_overview`).
    pub async fn dataplane_overviews(&self, mesh: &str) -> Result<Vec<Value>, Error> {
        let url = self.url(&["meshes", mesh, "dataplanes", "_overview"], &[]);
        self.list_all(url).await
    }

    /// Every `ServiceInsight` item of a mesh (`/meshes/{mesh}/service-insights`, all pages).
    pub async fn service_insights(&self, mesh: &str) -> Result<Vec<Value>, Error> {
        let url = self.url(&["meshes", mesh, "service-insights"], &[]);
        self.list_all(url).await
    }

    /// Every overview of a zone proxy type (`zoneingresses`, `zoneegresses`), all pages.
    pub async fn zone_proxy_overviews(&self, ws: &str) -> Result<Vec<Value>, Error> {
        let url = self.url(&[ws, "_overview"], &[]);
        self.list_all(url).await
    }

    /// Every `ZoneOverview` (`GET /zones/_overview`, all pages).
    pub async fn zone_overviews(&self) -> Result<Vec<Value>, Error> {
        self.zone_proxy_overviews("zones").await
    }

    /// `GET` an arbitrary path (segments are escaped) and returns the body as text; used for
    /// the proxy inspection endpoints, which may answer with text or JSON.
    pub async fn get_text(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<String, Error> {
        let url = self.url(segments, query);
        let resp = self.send(Method::GET, url.clone(), None).await?;
        read_text(&url, resp).await
    }

    /// `POST` a JSON body to an arbitrary path and returns the body as text (the token
    /// endpoints answer `text/plain`).
    pub async fn post_text(&self, segments: &[&str], body: &Value) -> Result<String, Error> {
        let url = self.url(segments, &[]);
        let resp = self.send(Method::POST, url.clone(), Some(body)).await?;
        read_text(&url, resp).await
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn list_all(&self, first: Url) -> Result<Vec<Value>, Error> {
        let mut items = Vec::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let v = self.json(Method::GET, url.clone(), None).await?;
            let page: Page = serde_json::from_value(v).map_err(|e| Error::Decode {
                url: url.to_string(),
                reason: format!("not a list: {e}"),
            })?;
            items.extend(page.items);
            let Some(next) = page.next.filter(|n| !n.is_empty()) else {
                break;
            };
            // The server builds `next` from the host it saw; keep our own scheme, host and
            // path and take only its query (the offset).
            let next = Url::parse(&next)
                .or_else(|_| url.join(&next))
                .map_err(|e| Error::Decode {
                    url: url.to_string(),
                    reason: format!("bad next link {next:?}: {e}"),
                })?;
            let mut following = url.clone();
            following.set_query(next.query());
            if following == url {
                break;
            }
            url = following;
        }
        Ok(items)
    }

    async fn json(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value, Error> {
        self.request(method, url, body).await.map(|(_, v)| v)
    }

    /// Sends a request and decodes a JSON body (an empty body is `null`).
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Error> {
        let resp = self.send(method, url.clone(), body).await?;
        let status = resp.status();
        let text = read_text(&url, resp).await?;
        if text.trim().is_empty() {
            return Ok((status, Value::Null));
        }
        let v = serde_json::from_str(&text).map_err(|e| Error::Decode {
            url: url.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        Ok((status, v))
    }

    /// Sends a request; non-2xx answers become [`Error::Api`].
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Error> {
        let mut req = self.http.request(method, url.clone());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| transport_error(&url, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(Error::Api(Box::new(ApiError::from_body(
            status.as_u16(),
            &text,
        ))))
    }
}

async fn read_text(url: &Url, resp: reqwest::Response) -> Result<String, Error> {
    resp.text().await.map_err(|e| transport_error(url, &e))
}

/// A transport error; a certificate the client does not trust gets a hint to pass its CA.
fn transport_error(url: &Url, e: &reqwest::Error) -> Error {
    let mut message = error_chain(e);
    if url.scheme() == "https" && message.to_ascii_lowercase().contains("certificate") {
        message.push_str(
            " (the control plane's certificate is not trusted: add the control plane with --ca-cert-file <CA PEM>, for kuma-cp's generated certificate its work dir's ca.crt, or --skip-verify for development)",
        );
    }
    Error::Transport {
        url: url.to_string(),
        message,
    }
}

/// The warning to print before `api`'s user token is sent in clear: over plain `http://` to
/// a host that is not loopback (`localhost`, 127.0.0.0/8, ::1). `None` when there is no
/// token, the URL is `https://`, or the host is loopback.
pub fn cleartext_token_warning(api: &ApiServer) -> Option<String> {
    let has_token = (api.auth_type == "tokens" && api.auth_conf.contains_key("token"))
        || api
            .headers
            .iter()
            .any(|h| h.key.eq_ignore_ascii_case("authorization"));
    let url = Url::parse(&api.url).ok()?;
    if !has_token || url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return None;
    }
    Some(format!(
        "WARNING: sending the user token over plain HTTP to {host}: anyone on the network path can read and reuse it. Use the control plane's HTTPS API instead (https://{host}:5682, with --ca-cert-file)"
    ))
}

/// Path segments of a resource (or of its list when `name` is `None`).
pub fn resource_path<'a>(
    rtype: ResourceType,
    mesh: &'a str,
    name: Option<&'a str>,
) -> Vec<&'a str> {
    let mut segs = match rtype.scope() {
        Scope::Mesh if !mesh.is_empty() => vec!["meshes", mesh, rtype.ws_path()],
        _ => vec![rtype.ws_path()],
    };
    segs.extend(name);
    segs
}

/// An error and its sources, `a: b: c` (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let msg = cause.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_display() {
        let body = r#"{"type":"/std-errors","status":400,"title":"Could not process a resource","detail":"Resource is not valid","invalid_parameters":[{"field":"networking.address","reason":"cannot be empty"},{"field":"name","reason":"bad"}]}"#;
        let e = ApiError::from_body(400, body);
        assert_eq!(
            e.to_string(),
            "Could not process a resource (Resource is not valid)\n* networking.address: cannot be empty\n* name: bad"
        );
        let old = r#"{"title":"Bad","details":"Resource is not valid","causes":[{"field":"x","message":"y"}]}"#;
        assert_eq!(
            ApiError::from_body(400, old).to_string(),
            "Bad (Resource is not valid)\n* x: y"
        );
        assert_eq!(
            ApiError::from_body(502, "upstream down").to_string(),
            "HTTP 502 Bad Gateway (upstream down)"
        );
        assert!(Error::Api(Box::new(ApiError::from_body(404, "{}"))).is_not_found());
    }

    #[test]
    fn cleartext_token_warning_only_for_tokens_over_http_to_remote_hosts() {
        let api = |url: &str, token: bool| {
            let mut a = ApiServer::at(url);
            if token {
                a.auth_type = "tokens".into();
                a.auth_conf.insert("token".into(), "t".into());
            }
            a
        };
        for (url, token, warns) in [
            ("http://10.0.0.5:5681", true, true),
            ("http://cp.example.com:5681", true, true),
            ("http://[fd00::2]:5681", true, true),
            ("http://10.0.0.5:5681", false, false),
            ("https://10.0.0.5:5682", true, false),
            ("http://localhost:5681", true, false),
            ("http://127.0.0.2:5681", true, false),
            ("http://[::1]:5681", true, false),
        ] {
            let w = cleartext_token_warning(&api(url, token));
            assert_eq!(w.is_some(), warns, "{url} token={token}: {w:?}");
        }
        let mut by_header = ApiServer::at("http://10.0.0.5:5681");
        by_header.headers.push(crate::config::Header {
            key: "Authorization".into(),
            value: "Bearer t".into(),
        });
        assert!(cleartext_token_warning(&by_header).is_some());
    }

    #[test]
    fn paths() {
        assert_eq!(
            resource_path(ResourceType::Dataplane, "default", Some("dp-1")),
            ["meshes", "default", "dataplanes", "dp-1"]
        );
        assert_eq!(
            resource_path(ResourceType::Mesh, "ignored", Some("m")),
            ["meshes", "m"]
        );
        assert_eq!(resource_path(ResourceType::Zone, "", None), ["zones"]);
        let c = Client::new(
            &ApiServer::at("http://127.0.0.1:5681/api/"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.url(&["meshes", "a b"], &[("x", "1")]).as_str(),
            "http://127.0.0.1:5681/api/meshes/a%20b?x=1"
        );
        assert!(Client::new(&ApiServer::at("localhost:5681"), Duration::from_secs(1)).is_err());
    }
}
