//! Clients of the DP server shared by the test files that talk to it directly: TLS trusting
//! the CP's CA, `POST /bootstrap`, and ADS streams (`mod support;` in a test file).
// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use e2e::ControlPlane;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// A TLS client config trusting the CP's CA, offering `alpn`.
pub fn tls_config(cp: &ControlPlane, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(cp.ca_file()).expect("reading the CP certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.expect("PEM certificate"))
            .expect("usable certificate");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// An HTTPS client of the DP server (HTTP/1.1), trusting the CP's CA.
pub fn bootstrap_client(cp: &ControlPlane) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(cp, &[b"http/1.1"]))
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("HTTPS client")
}

/// `POST /bootstrap` with a raw body: (status, body).
pub async fn post_bootstrap(
    client: &reqwest::Client,
    cp: &ControlPlane,
    body: Vec<u8>,
) -> (u16, String) {
    // An oversized body is answered (413) before it is read whole; the server then closes, and
    // under load the client may see that reset while still writing. Retry such transport
    // errors a few times; an HTTP answer is always returned as it is.
    let mut last = None;
    for _ in 0..3 {
        let sent = client
            .post(format!("https://127.0.0.1:{}/bootstrap", cp.dp_port))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                return (status, resp.text().await.expect("bootstrap body"));
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("POST /bootstrap: {:?}", last)
}

/// A gRPC channel to the DP server (TLS, h2), trusting the CP's CA.
pub async fn ads_channel(cp: &ControlPlane) -> Channel {
    grpc_channel(cp, cp.dp_port).await
}

/// A gRPC channel to `port` of the CP on loopback (TLS, h2), trusting the CP's CA.
pub async fn grpc_channel(cp: &ControlPlane, port: u16) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(cp, &[b"h2"])));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connecting to the control plane")
}

/// The first DiscoveryRequest of a proxy with node id `node_id`, with its Dataplane (JSON or
/// YAML text) in the node metadata when given.
pub fn discovery_request(node_id: &str, dataplane_resource: Option<&str>) -> DiscoveryRequest {
    let metadata = dataplane_resource.map(|r| Struct {
        fields: [(
            "dataplane.resource".to_string(),
            PbValue {
                kind: Some(Kind::StringValue(r.to_string())),
            },
        )]
        .into_iter()
        .collect(),
    });
    DiscoveryRequest {
        node: Some(Node {
            id: node_id.into(),
            metadata,
            ..Default::default()
        }),
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    }
}

/// Opens a SotW ADS stream with `token` in the `authorization` metadata (none when `None`),
/// sends `first` (keeping the request side open) and returns the server's first response, or
/// the status it ended the stream with.
pub async fn ads_first_answer(
    ch: &Channel,
    first: DiscoveryRequest,
    token: Option<&str>,
) -> Result<Option<DiscoveryResponse>, Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.expect("queueing the request");
    let mut client = AggregatedDiscoveryServiceClient::new(ch.clone());
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        req.metadata_mut()
            .insert("authorization", token.parse().expect("ASCII token"));
    }
    let answer = async {
        let mut responses = client.stream_aggregated_resources(req).await?.into_inner();
        responses.message().await
    };
    let r = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an ADS answer within 10s");
    drop(tx);
    r
}
