//! The bootstrap client over TLS: trusting exactly `--ca-cert-file`, refusing other CAs, and
//! `--skip-verify`. The fake DP server is a minimal TLS listener on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kuma_dp::bootstrap::{self, Client, EnvoyVersion, KumaDpVersion, Request, Version};
use kuma_dp::config::ControlPlane;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Pki {
    ca_pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for `localhost`/127.0.0.1 signed by it.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf_cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(server_config),
    }
}

/// Serves one fixed `/bootstrap` answer per connection over TLS.
async fn tls_cp(config: Arc<rustls::ServerConfig>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Read until the end of the headers plus the JSON body.
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = 0;
                loop {
                    let Ok(n) = tls.read(&mut buf[read..]).await else {
                        return;
                    };
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]);
                    if n == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
                        break;
                    }
                }
                let body = serde_json::json!({
                    "bootstrap": base64::engine::general_purpose::STANDARD.encode("node: {id: default.dp-1}\n"),
                    "kumaSidecarConfiguration": {},
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://localhost:{}", addr.port())
}

fn control_plane(url: &str, ca_pem: Option<String>, skip_verify: bool) -> ControlPlane {
    ControlPlane {
        url: url.parse().unwrap(),
        ca_cert_pem: ca_pem,
        skip_verify,
        retry_backoff: Duration::from_millis(50),
        retry_max_duration: Duration::from_millis(400),
    }
}

fn request() -> Request {
    Request {
        mesh: "default".into(),
        name: "dp-1".into(),
        proxy_type: "dataplane".into(),
        dataplane_token: String::new(),
        dataplane_token_path: String::new(),
        dataplane_resource: String::new(),
        version: Version {
            kuma_dp: KumaDpVersion::default(),
            envoy: EnvoyVersion {
                version: "1.38.2".into(),
                build: "abc/1.38.2/Clean/RELEASE/BoringSSL".into(),
                kuma_dp_compatible: true,
            },
        },
        ca_cert: String::new(),
        dynamic_metadata: Default::default(),
        dns_port: 0,
        readiness_port: 0,
        operating_system: "linux".into(),
        features: vec![],
        workdir: "/tmp".into(),
        ipv6_enabled: false,
        metrics_resources: Default::default(),
    }
}

#[tokio::test]
async fn verifies_with_the_given_ca() {
    let pki = pki();
    let url = tls_cp(pki.server_config.clone()).await;
    let client = Client::new(&control_plane(&url, Some(pki.ca_pem), false)).unwrap();
    let response = client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(response.bootstrap, "node: {id: default.dp-1}\n");
}

#[tokio::test]
async fn rejects_a_server_signed_by_another_ca() {
    let server = pki();
    let other = pki();
    let url = tls_cp(server.server_config.clone()).await;
    let client = Client::new(&control_plane(&url, Some(other.ca_pem), false)).unwrap();
    let err = client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, bootstrap::Error::GaveUp { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn skip_verify_accepts_any_certificate() {
    let pki = pki();
    let url = tls_cp(pki.server_config.clone()).await;
    let client = Client::new(&control_plane(&url, None, true)).unwrap();
    client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap();
}
