//! Envoy configuration for one sidecar, as a pure function of the mesh view and the proxy's
//! Dataplane (tag model, no mTLS yet). Names follow Kuma's observable contract:
//! - inbound listener `inbound:<ip>:<port>` → cluster `localhost:<servicePort>` (STATIC, the
//!   workload), `tcp_proxy` or an HTTP connection manager with route config `inbound:<service>`;
//! - outbound listener `outbound:<ip>:<port>` → cluster `<service>` (EDS over ADS), route
//!   config `outbound:<service>` for HTTP protocols;
//! - ClusterLoadAssignment `<service>`: shared `Arc` from the mesh view (one per service).
//!
//! Route configurations are inline in the listeners (as Kuma does), so no RDS is needed.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Http2ProtocolOptions, SocketAddress,
    TrafficDirection, address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier as RouteCluster, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use envoy_types::util::pack_any;
use kuma_core::resource::Dataplane;
use kuma_core::resource::dataplane::{Inbound, Networking};
use kuma_xds::{Resource, Snapshot};

use super::view::MeshView;

/// One endpoint of a service: where other proxies dial it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointAddr {
    pub ip: String,
    pub port: u32,
}

/// Whether a protocol is carried by the HTTP connection manager.
pub fn is_http(protocol: &str) -> bool {
    matches!(protocol, "http" | "http2" | "grpc")
}

/// The full snapshot for one proxy.
pub fn generate(view: &MeshView, dp: &Dataplane) -> Snapshot {
    let mut snap = Snapshot::new();
    let Some(net) = dp.networking() else {
        return snap;
    };
    for inbound in &net.inbound {
        for r in inbound_resources(net, inbound) {
            snap.insert(Arc::new(r));
        }
    }
    let mut seen_services = BTreeSet::new();
    for outbound in &net.outbound {
        let Some(service) = outbound.service() else {
            continue;
        };
        let protocol = view.protocol(service);
        let name = format!("outbound:{}:{}", outbound.address(), outbound.port);
        let route_name = format!("outbound:{service}");
        let listener = listener(
            &name,
            outbound.address(),
            outbound.port,
            TrafficDirection::Outbound,
            network_filter(&name, service, protocol, &route_name, service),
        );
        snap.insert(Arc::new(Resource::new(name, pack_any(listener))));
        if seen_services.insert(service.to_string()) {
            snap.insert(Arc::new(Resource::new(
                service,
                pack_any(outbound_cluster(service, protocol)),
            )));
            snap.insert(view.endpoints(service));
        }
    }
    snap
}

fn inbound_resources(net: &Networking, inbound: &Inbound) -> Vec<Resource> {
    let ip = inbound.listener_address(net);
    let service = inbound.service().unwrap_or_default();
    let protocol = inbound.protocol();
    let cluster_name = format!("localhost:{}", inbound.workload_port());
    let name = format!("inbound:{ip}:{}", inbound.port);
    let route_name = format!("inbound:{service}");
    let listener = listener(
        &name,
        ip,
        inbound.port,
        TrafficDirection::Inbound,
        network_filter(&name, &cluster_name, protocol, &route_name, service),
    );
    let cluster = Cluster {
        name: cluster_name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(10)),
        typed_extension_protocol_options: protocol_options(protocol, false),
        load_assignment: Some(load_assignment(
            &cluster_name,
            &[EndpointAddr {
                ip: inbound.workload_address(net).to_string(),
                port: inbound.workload_port(),
            }],
            None,
        )),
        ..Default::default()
    };
    vec![
        Resource::new(cluster_name, pack_any(cluster)),
        Resource::new(name, pack_any(listener)),
    ]
}

fn outbound_cluster(service: &str, protocol: &str) -> Cluster {
    Cluster {
        name: service.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(seconds(5)),
        lb_policy: LbPolicy::RoundRobin as i32,
        // Proxy-to-proxy HTTP is carried as HTTP/2 (the inbound side accepts both).
        typed_extension_protocol_options: protocol_options(protocol, true),
        ..Default::default()
    }
}

/// The ClusterLoadAssignment of a service, shared by every proxy of the mesh.
pub fn cluster_load_assignment(service: &str, endpoints: &[EndpointAddr], zone: &str) -> Resource {
    Resource::new(
        service,
        pack_any(load_assignment(service, endpoints, Some(zone))),
    )
}

fn load_assignment(
    name: &str,
    endpoints: &[EndpointAddr],
    zone: Option<&str>,
) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&e.ip, e.port)),
                ..Default::default()
            })),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let endpoints = if lb_endpoints.is_empty() {
        Vec::new()
    } else {
        vec![LocalityLbEndpoints {
            locality: zone.map(|z| envoy_types::pb::envoy::config::core::v3::Locality {
                zone: z.to_string(),
                ..Default::default()
            }),
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }]
    };
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints,
        ..Default::default()
    }
}

fn listener(
    name: &str,
    ip: &str,
    port: u32,
    direction: TrafficDirection,
    filter: Filter,
) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(ip, port)),
        traffic_direction: direction as i32,
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `tcp_proxy` for TCP, an HTTP connection manager with one inline route for HTTP protocols.
fn network_filter(
    listener_name: &str,
    cluster: &str,
    protocol: &str,
    route_name: &str,
    virtual_host: &str,
) -> Filter {
    let stat_prefix = sanitize(listener_name);
    let typed = if is_http(protocol) {
        pack_any(HttpConnectionManager {
            stat_prefix,
            codec_type: CodecType::Auto as i32,
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
                name: route_name.to_string(),
                virtual_hosts: vec![VirtualHost {
                    name: virtual_host.to_string(),
                    domains: vec!["*".into()],
                    routes: vec![Route {
                        r#match: Some(RouteMatch {
                            path_specifier: Some(PathSpecifier::Prefix("/".into())),
                            ..Default::default()
                        }),
                        action: Some(Action::Route(RouteAction {
                            cluster_specifier: Some(RouteCluster::Cluster(cluster.to_string())),
                            timeout: Some(seconds(15)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
                ..Default::default()
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    Router::default(),
                ))),
                ..Default::default()
            }],
            ..Default::default()
        })
    } else {
        pack_any(TcpProxy {
            stat_prefix,
            cluster_specifier: Some(TcpCluster::Cluster(cluster.to_string())),
            ..Default::default()
        })
    };
    let name = if is_http(protocol) {
        "envoy.filters.network.http_connection_manager"
    } else {
        "envoy.filters.network.tcp_proxy"
    };
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(typed)),
    }
}

fn protocol_options(
    protocol: &str,
    proxy_to_proxy: bool,
) -> std::collections::HashMap<String, Any> {
    let http2 = matches!(protocol, "http2" | "grpc") || (proxy_to_proxy && protocol == "http");
    let mut m = std::collections::HashMap::new();
    if http2 {
        m.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(HttpProtocolOptions {
                upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        )),
                    },
                )),
                ..Default::default()
            }),
        );
    }
    m
}

fn ads_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

/// `inbound:10.0.0.1:80` → `inbound_10_0_0_1_80` (stat prefixes).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
