//! The Envoy admin of a proxy, reachable by the control plane (Kuma's
//! `admin_proxy_generator.go`), for Dataplanes, ZoneIngresses and ZoneEgresses:
//!
//! - cluster `kuma:envoy:admin` → Envoy's own admin (`<admin address>:<admin port>` from the
//!   node metadata) and cluster `kuma:readiness` → kuma-dp's readiness reporter;
//! - listener `kuma:envoy:admin` on `<networking.address>:<admin port>` (only when that
//!   address is not the admin's own and the admin does not bind a wildcard address, which
//!   it would collide with), with the TLS inspector:
//!   plaintext gets `/ready` only; over TLS, with a client certificate from the
//!   `envoy-admin` CA carrying DNS SAN `kuma-cp` (the CP's), every admin path.
//!
//! Pure: the node metadata, the proxy's address and its server certificate in, resources out.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster,
    circuit_breakers::Thresholds,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};
use envoy_types::pb::envoy::config::core::v3::{
    CidrRange, TrafficDirection, TransportSocket, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::InternalAddressConfig,
    http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher,
    TlsCertificate, common_tls_context::ValidationContextType, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use kuma_xds::Resource;

use super::super::envoy::{EndpointAddr, inline_bytes, load_assignment, sanitize, socket_address};
use super::super::lifecycle::AdminNode;
use super::{router_filter, seconds, tls_inspector};
use crate::envoy_admin::pki::{CLIENT_SAN, ServerTls};

/// Name of the admin cluster and listener (Kuma's).
pub const ADMIN: &str = "kuma:envoy:admin";
/// Name of the readiness cluster (Kuma's).
pub const READINESS: &str = "kuma:readiness";

/// Why no admin resources were generated for a proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Kuma's check of `dataplane.admin.address`.
    #[error(
        "envoy admin cluster is not allowed to have addresses other than \"\", \"127.0.0.1\", \"0.0.0.0\", \"::1\", \"::\" (got {0:?})"
    )]
    AdminAddress(String),
    /// Kuma's check of `dataplane.readinessReporter.port`.
    #[error("ReadinessPort has to be in (0, 65535] range")]
    ReadinessPort,
}

/// The admin clusters and, when the proxy's address is not the admin's, the admin listener.
/// Nothing when the node metadata has no admin port (an old agent, or a test).
pub fn resources(
    node: &AdminNode,
    address: &str,
    tls: Option<&ServerTls>,
) -> Result<Vec<Arc<Resource>>, Error> {
    if node.port == 0 {
        return Ok(Vec::new());
    }
    let admin_address = match node.address.as_str() {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        a @ ("127.0.0.1" | "::1") => a,
        other => return Err(Error::AdminAddress(other.to_string())),
    };
    if node.readiness_port == 0 || node.readiness_port > 65535 {
        return Err(Error::ReadinessPort);
    }
    let mut out = vec![
        Arc::new(static_cluster(ADMIN, admin_address, node.port)),
        Arc::new(static_cluster(
            READINESS,
            admin_address,
            node.readiness_port,
        )),
    ];
    // Beyond Kuma: no listener when the admin binds a wildcard address, where it would
    // collide (Envoy would refuse the whole listener update); such an admin is reachable on
    // every address already, unauthenticated, by the operator's choice.
    let wildcard = matches!(node.address.as_str(), "0.0.0.0" | "::");
    if !address.is_empty()
        && address != admin_address
        && !wildcard
        && let Some(tls) = tls
    {
        out.push(Arc::new(listener(address, node.port, tls)));
    }
    Ok(out)
}

fn static_cluster(name: &str, ip: &str, port: u32) -> Resource {
    let cluster = Cluster {
        name: name.to_string(),
        alt_stat_name: sanitize(name),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(5)),
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
        load_assignment: Some(load_assignment(
            name,
            &[EndpointAddr {
                ip: ip.to_string(),
                port,
            }],
            None,
        )),
        ..Default::default()
    };
    Resource::new(name, pack_any(cluster))
}

fn route(prefix: &str, cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            prefix_rewrite: prefix.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn hcm(routes: Vec<Route>) -> Filter {
    let cidr = |prefix: &str, len: u32| CidrRange {
        address_prefix: prefix.into(),
        prefix_len: Some(UInt32Value { value: len }),
    };
    let hcm = HttpConnectionManager {
        stat_prefix: sanitize(ADMIN),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            virtual_hosts: vec![VirtualHost {
                name: ADMIN.into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        })),
        http_filters: vec![router_filter()],
        internal_address_config: Some(InternalAddressConfig {
            cidr_ranges: vec![cidr("127.0.0.1", 32), cidr("::1", 128)],
            ..Default::default()
        }),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
    }
}

fn listener(address: &str, port: u32, tls: &ServerTls) -> Resource {
    let plaintext = FilterChain {
        filters: vec![hcm(vec![route("/ready", READINESS)])],
        ..Default::default()
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(inline_bytes(&tls.cert.cert_pem)),
                private_key: Some(inline_bytes(&tls.cert.key_pem)),
                ..Default::default()
            }],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline_bytes(&tls.ca_pem)),
                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                        san_type: subject_alt_name_matcher::SanType::Dns as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(CLIENT_SAN.into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    let mutual = FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![hcm(vec![route("/ready", READINESS), route("/", ADMIN)])],
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
        }),
        ..Default::default()
    };
    let listener = Listener {
        name: ADMIN.into(),
        address: Some(socket_address(address, port)),
        traffic_direction: TrafficDirection::Inbound as i32,
        enable_reuse_port: Some(BoolValue { value: false }),
        listener_filters: vec![tls_inspector()],
        filter_chains: vec![plaintext, mutual],
        ..Default::default()
    };
    Resource::new(ADMIN, pack_any(listener))
}
