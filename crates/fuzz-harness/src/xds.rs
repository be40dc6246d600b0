//! What the two xDS targets share: the operations a fuzz input decodes into (requests drawn
//! from a small vocabulary of type URLs, names, versions and nonces, raw protobuf requests,
//! and snapshot switches) and the snapshots, made of real Envoy resources so that warming
//! dependencies (EDS of a cluster, SDS secrets, RDS routes) are exercised.

use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfig;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use kuma_xds::{Resource, Snapshot, type_url};
use prost::Message;

/// A type URL the engine knows nothing about (zone sync serves such types).
pub const CUSTOM: &str = "type.googleapis.com/kuma.mesh.v1alpha1.KumaResource";

/// Type URLs requests are drawn from.
pub const TYPES: [&str; 8] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
    type_url::SECRET,
    CUSTOM,
    "",
    "type.googleapis.com/unknown.Type",
];

/// Resource names requests are drawn from: those of the snapshots, `*`, and unknown ones.
pub const NAMES: [&str; 10] = ["a", "b", "l", "r", "id", "ca", "x", "*", "zz", ""];

/// Most operations one input runs.
const MAX_OPS: usize = 64;

/// How a request's `response_nonce` is chosen.
#[derive(Debug, Arbitrary)]
pub enum Nonce {
    Empty,
    /// The last nonce sent for the request's type (an ACK or a NACK).
    Last,
    /// One of the nonces sent on the stream so far.
    Sent(u8),
    /// A counter value that may or may not have been sent.
    Number(u8),
}

/// A request from the vocabulary: SotW uses `names` as `resource_names`, delta as
/// `resource_names_subscribe` (with `unsubscribe` and `initial`).
#[derive(Debug, Arbitrary)]
pub struct Req {
    pub type_ix: u8,
    pub names: Vec<u8>,
    pub unsubscribe: Vec<u8>,
    /// `initial_resource_versions` (delta) as (name, version) choices.
    pub initial: Vec<(u8, u8)>,
    /// `version_info` (SotW): 0 none, 1 the snapshot's version of the type, else garbage.
    pub version: u8,
    pub nonce: Nonce,
    /// Carries `error_detail` (a NACK when the nonce is the last one).
    pub nack: bool,
}

/// One step of a stream.
#[derive(Debug, Arbitrary)]
pub enum Op {
    Request(Req),
    /// A request decoded from protobuf bytes (skipped when they do not decode).
    Raw(Vec<u8>),
    /// Installs snapshot `n % SNAPSHOTS` (installing the current one again is a no-op).
    Snapshot(u8),
}

/// The operations of an input, at most [`MAX_OPS`].
pub fn ops(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => out.push(op),
            Err(_) => break,
        }
    }
    out
}

pub fn type_at(i: u8) -> &'static str {
    TYPES[usize::from(i) % TYPES.len()]
}

pub fn name_at(i: u8) -> &'static str {
    NAMES[usize::from(i) % NAMES.len()]
}

/// The nonce a request carries: `last` is the last nonce sent for its type, `sent` every
/// nonce sent on the stream.
pub fn nonce(choice: &Nonce, last: Option<&String>, sent: &[String]) -> String {
    match choice {
        Nonce::Empty => String::new(),
        Nonce::Last => last.cloned().unwrap_or_default(),
        Nonce::Sent(i) if !sent.is_empty() => sent[usize::from(*i) % sent.len()].clone(),
        Nonce::Sent(i) | Nonce::Number(i) => i.to_string(),
    }
}

fn pack(type_url: &str, m: &impl Message) -> Any {
    Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        ..Default::default()
    }
}

fn tls_context() -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds("id")],
        validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
            sds("ca"),
        )),
        ..Default::default()
    }
}

fn cluster(name: &str, tls: bool, timeout: i64) -> Any {
    let socket = tls.then(|| TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(SocketConfig::TypedConfig(pack(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &UpstreamTlsContext {
                common_tls_context: Some(tls_context()),
                ..Default::default()
            },
        ))),
    });
    pack(
        type_url::CLUSTER,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            connect_timeout: Some(Duration {
                seconds: timeout,
                nanos: 0,
            }),
            transport_socket: socket,
            ..Default::default()
        },
    )
}

fn endpoints(name: &str, tag: &str) -> Any {
    pack(
        type_url::ENDPOINT,
        &ClusterLoadAssignment {
            cluster_name: format!("{name}{tag}"),
            ..Default::default()
        },
    )
}

fn listener(name: &str, tls: bool, rds: bool) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: rds.then(|| {
            RouteSpecifier::Rds(Rds {
                route_config_name: "r".into(),
                ..Default::default()
            })
        }),
        ..Default::default()
    };
    let socket = tls.then(|| TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(SocketConfig::TypedConfig(pack(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &DownstreamTlsContext {
                common_tls_context: Some(tls_context()),
                ..Default::default()
            },
        ))),
    });
    pack(
        type_url::LISTENER,
        &Listener {
            name: name.into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(FilterConfig::TypedConfig(pack(
                        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        &hcm,
                    ))),
                }],
                transport_socket: socket,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn route(name: &str, tag: &str) -> Any {
    pack(
        type_url::ROUTE,
        &RouteConfiguration {
            name: format!("{name}{tag}"),
            ..Default::default()
        },
    )
}

fn secret(name: &str, tag: &str) -> Any {
    pack(
        type_url::SECRET,
        &Secret {
            name: format!("{name}{tag}"),
            ..Default::default()
        },
    )
}

fn custom(tag: &str) -> Any {
    Any {
        type_url: CUSTOM.into(),
        value: format!("x{tag}").into_bytes(),
    }
}

fn snapshot(items: Vec<(&str, Any)>) -> Arc<Snapshot> {
    Arc::new(
        items
            .into_iter()
            .map(|(n, b)| Arc::new(Resource::new(n, b)))
            .collect(),
    )
}

/// The snapshots a stream switches between: a mesh-like one, the same with a changed
/// cluster, secret and endpoints, one with things removed, an empty one, and one where the
/// listener lost its TLS and routes and only the custom type is left besides it.
pub fn snapshots() -> &'static [Arc<Snapshot>] {
    static SNAPSHOTS: OnceLock<Vec<Arc<Snapshot>>> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        vec![
            snapshot(vec![
                ("a", cluster("a", true, 1)),
                ("b", cluster("b", false, 1)),
                ("a", endpoints("a", "")),
                ("b", endpoints("b", "")),
                ("l", listener("l", true, true)),
                ("r", route("r", "")),
                ("id", secret("id", "")),
                ("ca", secret("ca", "")),
                ("x", custom("")),
            ]),
            snapshot(vec![
                ("a", cluster("a", true, 2)),
                ("b", cluster("b", false, 1)),
                ("a", endpoints("a", "")),
                ("b", endpoints("b", "-2")),
                ("l", listener("l", true, true)),
                ("r", route("r", "")),
                ("id", secret("id", "")),
                ("ca", secret("ca", "-2")),
                ("x", custom("")),
            ]),
            snapshot(vec![
                ("a", cluster("a", true, 1)),
                ("a", endpoints("a", "")),
                ("l", listener("l", true, false)),
                ("id", secret("id", "")),
                ("ca", secret("ca", "")),
            ]),
            Arc::new(Snapshot::new()),
            snapshot(vec![
                ("l", listener("l", false, false)),
                ("x", custom("-2")),
            ]),
        ]
    })
}

/// The snapshot an operation installs.
pub fn snapshot_at(i: u8) -> Arc<Snapshot> {
    let all = snapshots();
    Arc::clone(&all[usize::from(i) % all.len()])
}

/// The names of `type_url` in `snap`.
pub fn names_of(snap: &Snapshot, type_url: &str) -> Vec<String> {
    snap.resources(type_url)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The version a request claims for a type (`version_info`, or an initial resource
/// version): none, the real one, or garbage.
pub fn version(choice: u8, real: String) -> String {
    match choice % 3 {
        0 => String::new(),
        1 => real,
        _ => format!("v{choice}"),
    }
}
