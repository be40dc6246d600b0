//! Fetching the Envoy bootstrap from the control plane (`POST <cp-address>/bootstrap`).
//!
//! [`Request`] is the wire body (Kuma's `BootstrapRequest`, field names exactly as Kuma's JSON).
//! [`Client::fetch`] sends it with Kuma's retry policy: connection errors, 5xx and `404` with an
//! empty body ("Dataplane not found yet") are retried every backoff until the max duration; any
//! other 4xx is fatal and reported as `Invalid request: <body>`.

pub mod tls;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::ControlPlane;

/// kuma-dp build information sent in `version.kumaDp`.
pub const KUMA_DP_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git tag of this build (`KUMA_GIT_TAG` at build time, else `unknown`).
pub const GIT_TAG: &str = match option_env!("KUMA_GIT_TAG") {
    Some(tag) => tag,
    None => "unknown",
};
/// Git commit of this build (`KUMA_GIT_COMMIT` at build time, else `unknown`).
pub const GIT_COMMIT: &str = match option_env!("KUMA_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};
/// Build date (`KUMA_BUILD_DATE` at build time, else `unknown`).
pub const BUILD_DATE: &str = match option_env!("KUMA_BUILD_DATE") {
    Some(date) => date,
    None => "unknown",
};

/// Per-request timeout, as Kuma's bootstrap client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the bootstrap could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS setup is unusable (including: https without a CA or `--skip-verify`).
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    /// The control plane rejected the request (a 4xx other than 404-with-empty-body).
    #[error("Invalid request: {body}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The control plane's answer to a successful request is unusable.
    #[error("invalid bootstrap response: {0}")]
    InvalidResponse(String),
    /// Retries were exhausted.
    #[error("could not fetch the bootstrap configuration from {url} within {waited}: {last}")]
    GaveUp {
        /// The URL.
        url: String,
        /// How long it tried (e.g. `5m`).
        waited: String,
        /// The last error.
        last: String,
    },
    /// Shutdown was requested while retrying.
    #[error("cancelled while fetching the bootstrap configuration")]
    Cancelled,
}

/// `version.kumaDp`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KumaDpVersion {
    /// Semantic version.
    pub version: String,
    /// Git tag.
    pub git_tag: String,
    /// Git commit.
    pub git_commit: String,
    /// Build date.
    pub build_date: String,
}

impl Default for KumaDpVersion {
    fn default() -> Self {
        KumaDpVersion {
            version: KUMA_DP_VERSION.to_string(),
            git_tag: GIT_TAG.to_string(),
            git_commit: GIT_COMMIT.to_string(),
            build_date: BUILD_DATE.to_string(),
        }
    }
}

/// `version.envoy`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyVersion {
    /// Envoy version, e.g. `1.38.2`.
    pub version: String,
    /// Whole build string.
    pub build: String,
    /// Whether kuma-dp considers this Envoy compatible.
    pub kuma_dp_compatible: bool,
}

/// `version`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// kuma-dp build.
    pub kuma_dp: KumaDpVersion,
    /// Envoy build.
    pub envoy: EnvoyVersion,
}

/// The body of `POST /bootstrap` (Kuma's `BootstrapRequest`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Mesh (empty for zone proxies).
    pub mesh: String,
    /// Proxy name.
    pub name: String,
    /// `dataplane`, `ingress` or `egress`.
    pub proxy_type: String,
    /// The token, or empty.
    pub dataplane_token: String,
    /// The token file, or empty.
    pub dataplane_token_path: String,
    /// The rendered resource as JSON text, or empty in indirect mode.
    pub dataplane_resource: String,
    /// kuma-dp and Envoy versions.
    pub version: Version,
    /// PEM of the CA used to verify the CP, or empty.
    pub ca_cert: String,
    /// Extra node metadata.
    pub dynamic_metadata: BTreeMap<String, String>,
    /// Envoy DNS filter port; 0 = no DNS.
    pub dns_port: u32,
    /// Readiness reporter port; 0 = none.
    pub readiness_port: u32,
    /// Always `linux` here.
    pub operating_system: String,
    /// Advertised features.
    pub features: Vec<String>,
    /// The work directory (bootstrap file and sockets).
    pub workdir: String,
    /// The host has IPv6: DNS records carry IPv6 addresses too.
    pub ipv6_enabled: bool,
    /// Certificate and key Envoy serves a `providedTLS` Prometheus endpoint with.
    pub metrics_resources: MetricsResources,
}

/// `metricsResources` (Kuma's): file paths, empty when not given.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsResources {
    pub cert_path: String,
    pub key_path: String,
}

/// What the control plane returned.
#[derive(Debug, Clone)]
pub struct Response {
    /// The Envoy bootstrap YAML, decoded.
    pub bootstrap: String,
    /// `kumaSidecarConfiguration` (networking, metrics), as sent.
    pub sidecar_configuration: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    bootstrap: String,
    #[serde(default)]
    kuma_sidecar_configuration: serde_json::Value,
}

/// One attempt's outcome, before the retry policy is applied.
#[derive(Debug)]
enum Attempt {
    Retry(String),
    Fatal(Error),
}

/// Bound on one readiness report.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// A bootstrap client for one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    backoff: Duration,
    max_duration: Duration,
}

impl Client {
    /// Builds the HTTP client with the trust `cp` asks for. Logs a warning when verification
    /// is disabled.
    pub fn new(cp: &ControlPlane) -> Result<Self, Error> {
        let builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .user_agent(concat!("kuma-dp/", env!("CARGO_PKG_VERSION")));
        // reqwest needs a TLS configuration even for http:// (it has no process-wide crypto
        // provider here); for http, one that trusts nothing beyond the given CA.
        let tls = if cp.url.scheme() != "https" {
            match &cp.ca_cert_pem {
                Some(ca) => tls::with_ca(ca).map_err(tls::Error::from)?,
                None => tls::trust_nothing().map_err(tls::Error::from)?,
            }
        } else if cp.skip_verify {
            tracing::warn!(
                cp_address = %cp.url,
                "--skip-verify is set: the control plane certificate is NOT verified"
            );
            tls::insecure().map_err(tls::Error::from)?
        } else if let Some(ca) = &cp.ca_cert_pem {
            tls::with_ca(ca).map_err(tls::Error::from)?
        } else {
            return Err(tls::Error::NoTrust(cp.url.to_string()).into());
        };
        let http = builder
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let mut url = cp.url.clone();
        let path = format!("{}/bootstrap", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(Client {
            http,
            url,
            backoff: cp.retry_backoff,
            max_duration: cp.retry_max_duration,
        })
    }

    /// Tells the control plane whether the proxy serves (`POST /readiness` on the DP server,
    /// authenticated with the dataplane token): `true` once Envoy is live, `false` when it
    /// starts draining, so its peers stop sending it requests before it stops accepting.
    pub async fn report_readiness(&self, request: &Request, ready: bool) -> Result<(), String> {
        let mut url = self.url.clone();
        let path = self.url.path().trim_end_matches("/bootstrap").to_string() + "/readiness";
        url.set_path(&path);
        let mut post =
            self.http.post(url).timeout(READINESS_TIMEOUT).json(
                &serde_json::json!({"mesh": request.mesh, "name": request.name, "ready": ready}),
            );
        if !request.dataplane_token.is_empty() {
            post = post.bearer_auth(&request.dataplane_token);
        }
        let response = post.send().await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(format!("{status}: {}", body.trim()))
    }

    /// The bootstrap URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Fetches the bootstrap, retrying as described in the module docs. Returns
    /// [`Error::Cancelled`] as soon as `cancel` fires.
    pub async fn fetch(
        &self,
        request: &Request,
        cancel: &CancellationToken,
    ) -> Result<Response, Error> {
        let started = Instant::now();
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                attempt = self.attempt(request) => attempt,
            };
            let reason = match attempt {
                Ok(response) => return Ok(response),
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(reason)) => reason,
            };
            if started.elapsed() + self.backoff > self.max_duration {
                return Err(Error::GaveUp {
                    url: self.url.to_string(),
                    waited: crate::duration::format(self.max_duration),
                    last: reason,
                });
            }
            tracing::info!(
                url = %self.url,
                reason = %reason,
                backoff = %crate::duration::format(self.backoff),
                "could not fetch bootstrap configuration, retrying"
            );
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                _ = tokio::time::sleep(self.backoff) => {}
            }
        }
    }

    async fn attempt(&self, request: &Request) -> Result<Response, Attempt> {
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .json(request)
            .send()
            .await
            .map_err(|e| Attempt::Retry(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Attempt::Retry(format!("reading the response: {}", error_chain(&e))))?;
        if status.is_client_error() {
            if status == reqwest::StatusCode::NOT_FOUND && body.trim().is_empty() {
                return Err(Attempt::Retry(
                    "the Dataplane was not found (404); it may not be created yet".into(),
                ));
            }
            return Err(Attempt::Fatal(Error::InvalidRequest {
                status: status.as_u16(),
                body: body.trim().to_string(),
            }));
        }
        if !status.is_success() {
            return Err(Attempt::Retry(format!(
                "unexpected status {status}: {}",
                body.trim()
            )));
        }
        parse_response(&body).map_err(Attempt::Fatal)
    }
}

/// Decodes a successful `/bootstrap` body.
pub fn parse_response(body: &str) -> Result<Response, Error> {
    let wire: WireResponse = serde_json::from_str(body)
        .map_err(|e| Error::InvalidResponse(format!("not the expected JSON: {e}")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(wire.bootstrap.trim())
        .map_err(|e| Error::InvalidResponse(format!("bootstrap is not base64: {e}")))?;
    let bootstrap = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidResponse("bootstrap is not UTF-8".into()))?;
    if bootstrap.trim().is_empty() {
        return Err(Error::InvalidResponse("bootstrap is empty".into()));
    }
    Ok(Response {
        bootstrap,
        sidecar_configuration: wire.kuma_sidecar_configuration,
    })
}

/// An error with its sources (reqwest hides the interesting part in `source()`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            mesh: "default".into(),
            name: "dp-1".into(),
            proxy_type: "dataplane".into(),
            dataplane_token: "tok".into(),
            dataplane_token_path: "/t".into(),
            dataplane_resource: r#"{"type":"Dataplane","mesh":"default","name":"dp-1"}"#.into(),
            version: Version {
                kuma_dp: KumaDpVersion::default(),
                envoy: EnvoyVersion {
                    version: "1.38.2".into(),
                    build: "abc/1.38.2/Clean/RELEASE/BoringSSL".into(),
                    kuma_dp_compatible: true,
                },
            },
            ca_cert: String::new(),
            dynamic_metadata: BTreeMap::new(),
            dns_port: 0,
            readiness_port: 9902,
            operating_system: "linux".into(),
            features: vec!["feature-tcp-accesslog-via-named-pipe".into()],
            workdir: "/tmp/kuma-dp-x".into(),
            ipv6_enabled: false,
            metrics_resources: Default::default(),
        }
    }

    #[test]
    fn request_json_shape() {
        let json = serde_json::to_value(request()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "mesh",
                "name",
                "proxyType",
                "dataplaneToken",
                "dataplaneTokenPath",
                "dataplaneResource",
                "version",
                "caCert",
                "dynamicMetadata",
                "dnsPort",
                "readinessPort",
                "operatingSystem",
                "features",
                "workdir",
                "ipv6Enabled",
                "metricsResources"
            ]
        );
        assert_eq!(
            json["version"],
            serde_json::json!({
                "kumaDp": {
                    "version": env!("CARGO_PKG_VERSION"),
                    "gitTag": GIT_TAG,
                    "gitCommit": GIT_COMMIT,
                    "buildDate": BUILD_DATE,
                },
                "envoy": {
                    "version": "1.38.2",
                    "build": "abc/1.38.2/Clean/RELEASE/BoringSSL",
                    "kumaDpCompatible": true,
                }
            })
        );
        assert!(json["dataplaneResource"].is_string());
        assert_eq!(json["dynamicMetadata"], serde_json::json!({}));
        assert_eq!(json["dnsPort"], 0);
        assert_eq!(json["readinessPort"], 9902);
        assert_eq!(json["operatingSystem"], "linux");
        assert_eq!(
            json["metricsResources"],
            serde_json::json!({"certPath": "", "keyPath": ""})
        );
    }

    #[test]
    fn parses_response() {
        let body = serde_json::json!({
            "bootstrap": base64::engine::general_purpose::STANDARD.encode("node:\n  id: default.dp-1\n"),
            "kumaSidecarConfiguration": {"networking": {"address": "127.0.0.1"}},
        })
        .to_string();
        let response = parse_response(&body).unwrap();
        assert_eq!(response.bootstrap, "node:\n  id: default.dp-1\n");
        assert_eq!(
            response.sidecar_configuration["networking"]["address"],
            "127.0.0.1"
        );
        assert!(parse_response("{}").is_err());
        assert!(parse_response(r#"{"bootstrap":"!!"}"#).is_err());
    }

    #[test]
    fn https_needs_explicit_trust() {
        let cp = ControlPlane {
            url: "https://localhost:5678".parse().unwrap(),
            ca_cert_pem: None,
            skip_verify: false,
            retry_backoff: Duration::from_secs(3),
            retry_max_duration: Duration::from_secs(300),
        };
        let err = Client::new(&cp).unwrap_err().to_string();
        assert!(
            err.contains("--ca-cert-file") && err.contains("--skip-verify"),
            "{err}"
        );
        Client::new(&ControlPlane {
            skip_verify: true,
            ..cp.clone()
        })
        .unwrap();
        Client::new(&ControlPlane {
            url: "http://localhost:5678".parse().unwrap(),
            ..cp
        })
        .unwrap();
    }
}
