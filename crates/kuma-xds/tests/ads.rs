//! End-to-end ADS over a real tonic server on loopback, driven by the
//! envoy-types generated client: a SotW exchange, a delta exchange, and a
//! stream refused for its empty node id.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::util::pack_any;
use kuma_xds::{
    Callbacks, Resource, Server, Snapshot, SnapshotCache, StreamInfo, async_trait, type_url,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
    acks: AtomicUsize,
}

#[async_trait]
impl Callbacks for Counts {
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), tonic::Status> {
        assert!(!info.node.id.is_empty());
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_ack(&self, _: u64, _: &str, _: &str, _: &str) {
        self.acks.fetch_add(1, Ordering::SeqCst);
    }
    async fn on_stream_closed(&self, _info: &StreamInfo) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

fn cluster(name: &str, timeout_s: i64) -> Arc<Resource> {
    let c = Cluster {
        name: name.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: timeout_s,
            nanos: 0,
        }),
        ..Default::default()
    };
    Arc::new(Resource::new(name, pack_any(c)))
}

fn snapshot(clusters: &[(&str, i64)]) -> Arc<Snapshot> {
    let mut s = Snapshot::new();
    for (name, t) in clusters {
        s.insert(cluster(name, *t));
        let cla = ClusterLoadAssignment {
            cluster_name: (*name).into(),
            ..Default::default()
        };
        s.insert(Arc::new(Resource::new(*name, pack_any(cla))));
    }
    let l = Listener {
        name: "l".into(),
        ..Default::default()
    };
    s.insert(Arc::new(Resource::new("l", pack_any(l))));
    Arc::new(s)
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

async fn start(
    cache: SnapshotCache,
    counts: Arc<Counts>,
) -> AggregatedDiscoveryServiceClient<Channel> {
    // Logs for failing runs: RUST_LOG=kuma_xds=debug cargo test -p kuma-xds -- --nocapture
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = Server::new(cache, counts).into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn next<T>(s: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("response in time")
        .expect("no error")
        .expect("stream open")
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn type_urls_match_envoy_types() {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    assert_eq!(pack_any(Cluster::default()).type_url, type_url::CLUSTER);
    assert_eq!(pack_any(Listener::default()).type_url, type_url::LISTENER);
    assert_eq!(
        pack_any(ClusterLoadAssignment::default()).type_url,
        type_url::ENDPOINT
    );
    assert_eq!(
        pack_any(RouteConfiguration::default()).type_url,
        type_url::ROUTE
    );
    assert_eq!(pack_any(Secret::default()).type_url, type_url::SECRET);
}

#[tokio::test]
async fn sotw_exchange() {
    let cache = SnapshotCache::new();
    cache.set("sotw-node", snapshot(&[("backend", 1)]));
    let counts = Arc::new(Counts::default());
    let mut client = start(cache.clone(), counts.clone()).await;

    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    tx.send(DiscoveryRequest {
        node: node("sotw-node"),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut resp = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();

    let cds: DiscoveryResponse = next(&mut resp).await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    assert_eq!(cds.resources.len(), 1);
    let c = Cluster::decode(cds.resources[0].value.as_slice()).expect("decode");
    assert_eq!(c.name, "backend");
    // ACK, then ask for endpoints by name.
    tx.send(DiscoveryRequest {
        version_info: cds.version_info.clone(),
        type_url: type_url::CLUSTER.into(),
        response_nonce: cds.nonce.clone(),
        ..Default::default()
    })
    .await
    .expect("send");
    tx.send(DiscoveryRequest {
        type_url: type_url::ENDPOINT.into(),
        resource_names: vec!["backend".into()],
        ..Default::default()
    })
    .await
    .expect("send");
    let eds = next(&mut resp).await;
    assert_eq!(eds.type_url, type_url::ENDPOINT);
    assert_eq!(eds.resources.len(), 1);
    assert_eq!(
        ClusterLoadAssignment::decode(eds.resources[0].value.as_slice())
            .expect("decode")
            .cluster_name,
        "backend"
    );
    wait_until("ACK", || counts.acks.load(Ordering::SeqCst) == 1).await;

    // A changed cluster is pushed; endpoints are unchanged, so not resent.
    cache.set("sotw-node", snapshot(&[("backend", 2)]));
    let push = next(&mut resp).await;
    assert_eq!(push.type_url, type_url::CLUSTER);
    assert_ne!(push.version_info, cds.version_info);
    assert_eq!(
        Cluster::decode(push.resources[0].value.as_slice())
            .expect("decode")
            .connect_timeout
            .map(|d| d.seconds),
        Some(2)
    );

    // The client leaves: the stream is closed exactly once.
    drop(tx);
    drop(resp);
    wait_until("stream closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn delta_exchange() {
    let cache = SnapshotCache::new();
    let counts = Arc::new(Counts::default());
    let mut client = start(cache.clone(), counts.clone()).await;

    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(8);
    tx.send(DeltaDiscoveryRequest {
        node: node("delta-node"),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut resp = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();

    // No snapshot yet: the stream waits for one.
    wait_until("stream opened", || {
        counts.opened.load(Ordering::SeqCst) == 1
    })
    .await;
    cache.set("delta-node", snapshot(&[("a", 1), ("b", 1)]));
    let first: DeltaDiscoveryResponse = next(&mut resp).await;
    assert_eq!(first.type_url, type_url::CLUSTER);
    let mut names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["a", "b"]);
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .expect("send");
    // Wait for it: an ACK arriving after the next push would be stale.
    wait_until("ACK", || counts.acks.load(Ordering::SeqCst) == 1).await;

    // One cluster changes, one goes away.
    cache.set("delta-node", snapshot(&[("a", 5)]));
    let push = next(&mut resp).await;
    assert_eq!(push.type_url, type_url::CLUSTER);
    assert_eq!(push.resources.len(), 1);
    assert_eq!(push.resources[0].name, "a");
    assert_eq!(push.removed_resources, vec!["b".to_string()]);
    assert_ne!(push.system_version_info, first.system_version_info);

    drop(tx);
    drop(resp);
    wait_until("stream closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn empty_node_id_is_invalid_argument() {
    let cache = SnapshotCache::new();
    let counts = Arc::new(Counts::default());
    let mut client = start(cache, counts.clone()).await;

    // A first stream that is fine, then a second stream without a node id.
    let (tx1, rx1) = mpsc::channel::<DiscoveryRequest>(1);
    tx1.send(DiscoveryRequest {
        node: node("ok"),
        type_url: type_url::LISTENER.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let _ok = client
        .stream_aggregated_resources(ReceiverStream::new(rx1))
        .await
        .expect("stream");

    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(1);
    tx.send(DiscoveryRequest {
        node: node(""),
        type_url: type_url::LISTENER.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let result = match client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Err(status) => Err(status),
        Ok(resp) => {
            let mut s = resp.into_inner();
            tokio::time::timeout(Duration::from_secs(5), s.message())
                .await
                .expect("answer in time")
        }
    };
    let status = result.expect_err("stream refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Delta too, with no node at all.
    let (dtx, drx) = mpsc::channel::<DeltaDiscoveryRequest>(1);
    dtx.send(DeltaDiscoveryRequest {
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut s = client
        .delta_aggregated_resources(ReceiverStream::new(drx))
        .await
        .expect("stream")
        .into_inner();
    let status = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("answer in time")
        .expect_err("stream refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        counts.opened.load(Ordering::SeqCst),
        1,
        "only the good stream opened"
    );
    assert_eq!(counts.closed.load(Ordering::SeqCst), 0);
}
