//! The Prometheus endpoint of a proxy (Kuma's `PrometheusEndpointGenerator`): with metrics
//! in effect for its Dataplane ([`kuma_core::metrics::effective_from`]), the listener
//! `kuma:metrics:prometheus` on `<networking.address>:<port>` routes `<path>` to the cluster
//! `kuma:metrics:hijacker`, kuma-dp's metrics hijacker on the UNIX socket
//! `<workdir>/kuma-mh-<name>-<mesh>.sock`, rewriting the path to Envoy's stats query
//! (`/?filter=...&usedonly`).
//!
//! - Mesh mTLS on (and `tls.mode: activeMTLSBackend`, or no `tls` and no `skipMTLS: true`):
//!   two chains, plaintext for connections from the proxy's own address (a Prometheus next to
//!   it), and mTLS requiring a mesh identity for the rest.
//! - `tls.mode: providedTLS` with kuma-dp's `metricsCertPath` and `metricsKeyPath`: Kuma's
//!   two chains (a `tls` transport match without a TLS inspector, so in practice every
//!   connection gets the TLS chain with those files); without the paths, plaintext (logged).
//! - Otherwise one plaintext chain.
//!
//! Nothing is generated when the admin port in the node metadata is 0 or when the port is
//! one of the Dataplane's inbound (proxy or workload) or outbound ports on an overlapping
//! address: Kuma would rather expose no metrics than shadow traffic.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, CidrRange, DataSource, Pipe, TrafficDirection, TransportSocket, address, data_source,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::InternalAddressConfig,
    http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, TlsCertificate,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use kuma_core::metrics::{PrometheusConf, TlsMode, hijacker_socket_path};
use kuma_core::resource::dataplane::Networking;
use kuma_xds::Resource;

use super::super::lifecycle::NodeInfo;
use super::{Tls, downstream_tls, listener, router_filter, seconds};

/// Kuma's name of the listener Prometheus scrapes.
pub const LISTENER: &str = "kuma:metrics:prometheus";
/// Kuma's name of the cluster of kuma-dp's metrics hijacker.
pub const CLUSTER: &str = "kuma:metrics:hijacker";

/// The hijacker cluster and the Prometheus listener of proxy `name` of `mesh`, or nothing
/// (see the module doc for when).
pub(super) fn resources(
    mesh: &str,
    name: &str,
    net: &Networking,
    conf: &PrometheusConf,
    tls: Option<&Tls>,
    node: &NodeInfo,
) -> Vec<Resource> {
    if node.admin.port == 0 || uses_interface(net, &net.address, conf.port) {
        return Vec::new();
    }
    let socket = hijacker_socket_path(&node.workdir, name, mesh);
    if socket.contains('\0') {
        return Vec::new();
    }
    let hcm = || {
        let hcm = HttpConnectionManager {
            stat_prefix: "kuma_metrics_prometheus".into(),
            http_filters: vec![router_filter()],
            internal_address_config: Some(InternalAddressConfig {
                cidr_ranges: vec![cidr("127.0.0.1", 32), cidr("::1", 128)],
                ..Default::default()
            }),
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
                validate_clusters: Some(BoolValue { value: false }),
                virtual_hosts: vec![VirtualHost {
                    name: LISTENER.into(),
                    domains: vec!["*".into()],
                    routes: vec![Route {
                        r#match: Some(RouteMatch {
                            path_specifier: Some(PathSpecifier::Prefix(conf.path.clone())),
                            ..Default::default()
                        }),
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(ClusterSpecifier::Cluster(CLUSTER.into())),
                            prefix_rewrite: conf.stats_path(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        vec![Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
        }]
    };
    let plain = |filter_chain_match: Option<FilterChainMatch>| FilterChain {
        filter_chain_match,
        filters: hcm(),
        ..Default::default()
    };
    let provided = (conf.tls_mode() == TlsMode::ProvidedTLS)
        .then_some(())
        .and_then(|()| {
            let paths = (&node.metrics_cert_path, &node.metrics_key_path);
            if paths.0.is_empty() || paths.1.is_empty() {
                tracing::info!(
                    mesh,
                    name,
                    "tls.mode providedTLS without the certificate and key paths from kuma-dp: the Prometheus endpoint is served in plaintext"
                );
                None
            } else {
                Some(paths)
            }
        });
    let chains = match (tls, provided) {
        (Some(t), _) if conf.mesh_mtls(true) => {
            // The proxy scraping itself (Prometheus next to it) needs no identity.
            let own = FilterChainMatch {
                source_prefix_ranges: vec![host_range(&net.address)],
                ..Default::default()
            };
            vec![
                plain(Some(own)),
                FilterChain {
                    filters: hcm(),
                    transport_socket: Some(downstream_tls(t.mesh)),
                    ..Default::default()
                },
            ]
        }
        (_, Some((cert, key))) => {
            let tls_match = FilterChainMatch {
                transport_protocol: "tls".into(),
                ..Default::default()
            };
            vec![
                plain(Some(tls_match)),
                FilterChain {
                    filters: hcm(),
                    transport_socket: Some(provided_tls(cert, key)),
                    ..Default::default()
                },
            ]
        }
        _ => vec![plain(None)],
    };
    let mut l = listener(
        LISTENER,
        &net.address,
        conf.port,
        TrafficDirection::Inbound,
        chains,
    );
    l.enable_reuse_port = Some(BoolValue { value: false });
    let cluster = Cluster {
        name: CLUSTER.into(),
        alt_stat_name: "kuma_metrics_hijacker".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(5)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: CLUSTER.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::Pipe(Pipe {
                                path: socket,
                                mode: 0,
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        Resource::new(CLUSTER, pack_any(cluster)),
        Resource::new(LISTENER, pack_any(l)),
    ]
}

/// Kuma's `UsesInterface`: `port` is an inbound's proxy or workload port, or an outbound's
/// port, on an address overlapping `ip` (the unspecified addresses overlap everything).
fn uses_interface(net: &Networking, ip: &str, port: u32) -> bool {
    let inbound = net.inbound.iter().any(|i| {
        (i.port == port && overlap(ip, i.listener_address(net)))
            || (i.workload_port() == port && overlap(ip, i.workload_address(net)))
    });
    let outbound = net
        .outbound
        .iter()
        .any(|o| o.port == port && overlap(ip, o.address()));
    inbound || outbound
}

fn overlap(a: &str, b: &str) -> bool {
    let a = a.parse::<std::net::IpAddr>().ok();
    let b = b.parse::<std::net::IpAddr>().ok();
    a.is_some_and(|a| a.is_unspecified()) || b.is_some_and(|b| b.is_unspecified()) || {
        matches!((a, b), (Some(a), Some(b)) if a == b)
    }
}

fn cidr(prefix: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: prefix.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

/// `<address>/32` (or `/128` for IPv6).
fn host_range(address: &str) -> CidrRange {
    cidr(address, if address.contains(':') { 128 } else { 32 })
}

/// Server TLS with the certificate and key files kuma-dp was given.
fn provided_tls(cert: &str, key: &str) -> TransportSocket {
    let file = |f: &str| DataSource {
        specifier: Some(data_source::Specifier::Filename(f.into())),
        ..Default::default()
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

#[cfg(test)]
mod tests;
