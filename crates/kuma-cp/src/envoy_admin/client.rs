//! The CP's client of proxies' Envoy admin (Kuma's `pkg/envoy/admin/client.go`): HTTPS to
//! the proxy's `kuma:envoy:admin` listener with the `envoy-admin` CA as the only root and the
//! CP's client certificate (DNS SAN `kuma-cp`), TLS 1.2 or later; or plain HTTP when the
//! target host is exactly `127.0.0.1` (a proxy on the CP's own loopback: Envoy's admin itself
//! listens there and the proxy has no admin listener; Kuma's exception, kept).
//!
//! Bounds: 3 s to connect and finish the handshake, 5 s for the whole exchange, responses
//! over [`MAX_RESPONSE_BYTES`] refused. No HTTP proxy from the environment is used.

use std::time::Duration;

use async_trait::async_trait;
use kuma_core::resource::Resource;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::pki::Pki;
use super::{Admin, Error, Op, target};

/// Largest admin response read (a config dump of a large mesh is tens of MiB).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Talks to the Envoy admin of proxies this CP serves.
pub struct Client {
    tls: reqwest::Client,
    plain: reqwest::Client,
    default_port: u16,
}

impl Client {
    /// A client presenting `pki`'s client certificate; `default_port` is
    /// `bootstrapServer.params.adminPort` (for proxies without `networking.admin.port`).
    pub fn new(pki: &Pki, default_port: u16) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        let chain = CertificateDer::pem_slice_iter(pki.client().cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(pki.client().key_pem.as_bytes())?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let tls = reqwest::Client::builder()
            .use_preconfigured_tls(config.clone())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .build()?;
        // reqwest needs a TLS configuration even for plain HTTP (no process-wide rustls
        // provider is installed): the same one, never used here.
        let plain = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .build()?;
        Ok(Self {
            tls,
            plain,
            default_port,
        })
    }

    async fn get(&self, url: &str, path: &str) -> Result<Vec<u8>, Error> {
        let client = if url.starts_with("https://") {
            &self.tls
        } else {
            &self.plain
        };
        let mut resp = client.get(url).send().await.map_err(|e| {
            tracing::debug!(url, error = %e, "envoy admin request failed");
            // Kuma's wording: always config_dump.
            Error::Unreachable(format!("unable to send GET to config_dump: {e}"))
        })?;
        let status = resp.status();
        if let Some(len) = resp.content_length()
            && len > MAX_RESPONSE_BYTES as u64
        {
            return Err(Error::TooLarge);
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(Error::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(Error::Unreachable(format!("reading {path}: {e}"))),
            }
        }
        if status != reqwest::StatusCode::OK {
            return Err(Error::EnvoyStatus {
                status: status.to_string(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }
}

#[async_trait]
impl Admin for Client {
    async fn call(&self, proxy: &Resource, op: &Op) -> Result<Vec<u8>, Error> {
        let t = target(proxy, self.default_port).ok_or(Error::NoAddress)?;
        let scheme = if t.host == "127.0.0.1" {
            "http"
        } else {
            "https"
        };
        let host = if t.host.contains(':') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        };
        let path = op.path_and_query();
        let url = format!("{scheme}://{host}:{}/{path}", t.port);
        let body = self.get(&url, &path).await?;
        Ok(match op {
            Op::ConfigDump { .. } => super::sanitize::config_dump(&body),
            _ => body,
        })
    }
}
