//! Envoy configuration for one sidecar, as a pure function of the mesh view and the proxy's
//! Dataplane (tag model). Names follow Kuma's observable contract:
//! - inbound listener `inbound:<ip>:<port>` → cluster `localhost:<servicePort>` (STATIC, the
//!   workload), `tcp_proxy` or an HTTP connection manager with route config `inbound:<service>`;
//! - outbound listener `outbound:<ip>:<port>` → cluster `<service>` (EDS over ADS), route
//!   config `outbound:<service>` for HTTP protocols;
//! - ClusterLoadAssignment `<service>`: shared `Arc` from the mesh view (one per service).
//!
//! - with mTLS: SDS secrets `identity_cert:secret:<mesh>` (per proxy) and
//!   `mesh_ca:secret:<mesh>` (shared); inbound chains require a mesh client certificate and
//!   carry the MeshTrafficPermission RBAC filter; outbound clusters send SNI
//!   `<service>{mesh=<mesh>}` with ALPN `kuma` and check `spiffe://<mesh>/<service>`.
//!   PERMISSIVE adds a plaintext chain and an application-TLS passthrough chain, selected by
//!   the TLS inspector.
//!
//! Route configurations are inline in the listeners (as Kuma does), so no RDS is needed.
//!
//! One room per proxy type: this module generates sidecars (Dataplanes); [`ingress`] and
//! [`egress`] the zone proxies, sharing the builders here and in [`super::envoy`].

pub mod admin;
pub mod egress;
pub mod ingress;
pub mod metrics;
pub mod transparent;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, Http2ProtocolOptions, TrafficDirection,
    TransportSocket, config_source::ConfigSourceSpecifier, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier as RouteCluster, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration};
use envoy_types::util::pack_any;
use kuma_core::resource::Dataplane;
use kuma_core::resource::dataplane::{Inbound, Networking};
use kuma_xds::{Resource, Snapshot};

use super::envoy::{
    EndpointAddr, ca_secret_name, identity_secret_name, load_assignment, sanitize, socket_address,
};
use super::view::MeshView;

/// Whether a protocol is carried by the HTTP connection manager.
pub fn is_http(protocol: &str) -> bool {
    matches!(protocol, "http" | "http2" | "grpc")
}

/// What the generator needs to know about one proxy.
pub struct Proxy<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub dataplane: &'a Dataplane,
    /// `identity_cert:secret:<mesh>` of this proxy, when the mesh has mTLS on.
    pub identity: Option<Arc<Resource>>,
    /// What its node metadata says (work dir, DNS port, IPv6).
    pub node: &'a super::lifecycle::NodeInfo,
}

/// The snapshot of a proxy of a mesh without mTLS (kept for tests and tools).
pub fn generate(view: &MeshView, dp: &Dataplane) -> Snapshot {
    let labels = BTreeMap::new();
    generate_proxy(
        view,
        &Proxy {
            name: "",
            labels: &labels,
            dataplane: dp,
            identity: None,
            node: &Default::default(),
        },
    )
}

/// The full snapshot for one proxy.
pub fn generate_proxy(view: &MeshView, proxy: &Proxy) -> Snapshot {
    let mtls = view.mtls().is_some_and(|m| m.outbound) && proxy.identity.is_some();
    let outbound = outbound_resources(view, proxy.dataplane, mtls);
    assemble(view, proxy, &outbound)
}

/// The snapshot of a proxy from its outbound half (see [`outbound_resources`], which must
/// have been built with mTLS on exactly when the view's mTLS has outbounds on and the proxy
/// an identity) plus
/// what depends on the proxy itself: inbound listeners and clusters (with permissions) and
/// secrets.
pub fn assemble(view: &MeshView, proxy: &Proxy, outbound: &[Arc<Resource>]) -> Snapshot {
    let mut snap = Snapshot::new();
    let dp = proxy.dataplane;
    let Some(net) = dp.networking() else {
        return snap;
    };
    // mTLS needs both the mesh's CA and this proxy's identity.
    let tls = match (view.mtls(), &proxy.identity) {
        (Some(m), Some(id)) => {
            snap.insert(id.clone());
            snap.insert(m.ca_secret.clone());
            Some(Tls {
                mesh: &view.mesh,
                permissive: m.permissive,
            })
        }
        _ => None,
    };
    let tp = dp.transparent_proxying();
    for inbound in &net.inbound {
        for r in inbound_resources(view, proxy, net, inbound, tls.as_ref(), tp.is_some()) {
            snap.insert(Arc::new(r));
        }
    }
    for r in outbound {
        snap.insert(r.clone());
    }
    if let Some(tp) = tp {
        let strict = tls.as_ref().is_some_and(|t| !t.permissive);
        for r in transparent::capture_resources(view, dp, tp, strict, proxy.node.ipv6) {
            snap.insert(r);
        }
        if let Some(r) = transparent::dns_listener(view, tp, proxy.node) {
            snap.insert(Arc::new(r));
        }
    }
    if let Some(conf) = kuma_core::metrics::effective_from(view.metrics(), dp) {
        let (mesh, name) = (&view.mesh, proxy.name);
        for r in metrics::resources(mesh, name, net, &conf, tls.as_ref(), proxy.node) {
            snap.insert(Arc::new(r));
        }
    }
    snap
}

/// Outbound listeners, clusters and ClusterLoadAssignments of a Dataplane. They depend only
/// on its outbounds, on the protocol and endpoints of the services they lead to, and on
/// whether mTLS is on: the runtime reuses them across rebuilds while those are unchanged
/// (a permission change regenerates inbound listeners only).
pub fn outbound_resources(view: &MeshView, dp: &Dataplane, mtls: bool) -> Vec<Arc<Resource>> {
    let mut out = Vec::new();
    let Some(net) = dp.networking() else {
        return out;
    };
    let mut seen_services = BTreeSet::new();
    for outbound in &net.outbound {
        let Some(service) = outbound.service() else {
            continue;
        };
        out.push(outbound_listener(
            view,
            outbound.address(),
            outbound.port,
            service,
            true,
        ));
        push_service(view, service, mtls, &mut seen_services, &mut out);
    }
    if let Some(tp) = dp.transparent_proxying() {
        transparent::vip_outbounds(view, tp, mtls, &mut seen_services, &mut out);
    }
    out
}

/// The outbound listener `outbound:<ip>:<port>` to `service`; `bind` false for a
/// transparent proxy's VIP listeners (reached through the capture listener). Shared by every
/// proxy of the mesh that has it.
fn outbound_listener(
    view: &MeshView,
    ip: &str,
    port: u32,
    service: &str,
    bind: bool,
) -> Arc<Resource> {
    let protocol = view.protocol(service);
    let name = format!("outbound:{ip}:{port}");
    view.shared(&format!("listener|{name}|{service}|{bind}"), || {
        let route_name = format!("outbound:{service}");
        let mut listener = listener(
            &name,
            ip,
            port,
            TrafficDirection::Outbound,
            vec![FilterChain {
                filters: vec![network_filter(
                    &name,
                    service,
                    protocol,
                    &route_name,
                    service,
                    None,
                )],
                ..Default::default()
            }],
        );
        if !bind {
            listener.bind_to_port = Some(BoolValue { value: false });
        }
        Resource::new(name.clone(), pack_any(listener))
    })
}

/// The cluster and ClusterLoadAssignment of `service`, once per proxy.
fn push_service(
    view: &MeshView,
    service: &str,
    mtls: bool,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Arc<Resource>>,
) {
    if !seen.insert(service.to_string()) {
        return;
    }
    let protocol = view.protocol(service);
    out.push(view.shared(&format!("cluster|{service}"), || {
        let mut cluster = outbound_cluster(service, protocol);
        if mtls {
            cluster.transport_socket = Some(upstream_tls(&view.mesh, service));
        }
        Resource::new(service, pack_any(cluster))
    }));
    out.push(view.endpoints(service));
}

/// mTLS settings of the mesh, as the generator needs them.
struct Tls<'a> {
    mesh: &'a str,
    permissive: bool,
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads_source()),
    }
}

fn san_matcher(pattern: MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn common_tls(mesh: &str, san: MatchPattern, alpn: Vec<String>) -> CommonTlsContext {
    CommonTlsContext {
        alpn_protocols: alpn,
        tls_certificate_sds_secret_configs: vec![sds(identity_secret_name(mesh))],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: vec![san_matcher(san)],
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(ca_secret_name(mesh))),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Client side of mesh mTLS: SNI `<service>{mesh=<mesh>}`, ALPN `kuma`, peer must be the
/// destination service.
fn upstream_tls(mesh: &str, service: &str) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        sni: format!("{service}{{mesh={mesh}}}"),
        common_tls_context: Some(common_tls(
            mesh,
            MatchPattern::Exact(format!("spiffe://{mesh}/{service}")),
            vec!["kuma".into()],
        )),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

/// Server side of mesh mTLS: a client certificate from the mesh CA is required. No ALPN is
/// negotiated, so the HTTP codec infers HTTP/1 or HTTP/2 from the first bytes.
fn downstream_tls(mesh: &str) -> TransportSocket {
    let ctx = DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(common_tls(
            mesh,
            MatchPattern::Prefix(format!("spiffe://{mesh}/")),
            vec![],
        )),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

fn inbound_resources(
    view: &MeshView,
    proxy: &Proxy,
    net: &Networking,
    inbound: &Inbound,
    tls: Option<&Tls>,
    transparent: bool,
) -> Vec<Resource> {
    let ip = inbound.listener_address(net);
    let service = inbound.service().unwrap_or_default();
    let protocol = view.inbound_protocol(service, inbound.protocol());
    let cluster_name = format!("localhost:{}", inbound.workload_port());
    let name = format!("inbound:{ip}:{}", inbound.port);
    let route_name = format!("inbound:{service}");
    let plain = || FilterChain {
        filters: vec![network_filter(
            &name,
            &cluster_name,
            protocol,
            &route_name,
            service,
            None,
        )],
        ..Default::default()
    };
    let mut listener_filters = Vec::new();
    let chains = match tls {
        None => vec![plain()],
        Some(tls) => {
            // Permissions apply to mesh (mTLS) traffic only, as in Kuma. A `rules` policy
            // selecting the inbound puts it on the matcher path; otherwise the `from` form.
            let policies = view.policies();
            let inbound_rules =
                kuma_core::policy::inbound_rules(&policies, proxy.name, proxy.labels, inbound);
            let (http_rbac, tcp_rbac) = if inbound_rules.is_empty() {
                let rules =
                    kuma_core::policy::from_rules(&policies, proxy.name, proxy.labels, inbound);
                (
                    super::rbac::http_filter(tls.mesh, &rules),
                    super::rbac::network_filter(tls.mesh, &name, &rules),
                )
            } else {
                if super::rbac::has_sni_match(&inbound_rules) {
                    listener_filters.push(tls_inspector());
                }
                (
                    super::rbac::http_matcher_filter(tls.mesh, view.zone(), &inbound_rules),
                    super::rbac::network_matcher_filter(
                        tls.mesh,
                        view.zone(),
                        &name,
                        &inbound_rules,
                    ),
                )
            };
            let filters = if is_http(protocol) {
                vec![network_filter(
                    &name,
                    &cluster_name,
                    protocol,
                    &route_name,
                    service,
                    Some(http_rbac),
                )]
            } else {
                vec![
                    tcp_rbac,
                    network_filter(&name, &cluster_name, protocol, &route_name, service, None),
                ]
            };
            let mut mesh_chain = FilterChain {
                filters,
                transport_socket: Some(downstream_tls(tls.mesh)),
                ..Default::default()
            };
            if tls.permissive {
                if listener_filters.is_empty() {
                    listener_filters.push(tls_inspector());
                }
                mesh_chain.filter_chain_match = Some(FilterChainMatch {
                    transport_protocol: "tls".into(),
                    application_protocols: vec!["kuma".into()],
                    ..Default::default()
                });
                let mut plaintext = plain();
                plaintext.filter_chain_match = Some(FilterChainMatch {
                    transport_protocol: "raw_buffer".into(),
                    ..Default::default()
                });
                // Application TLS from outside the mesh passes through untouched.
                let passthrough = FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        transport_protocol: "tls".into(),
                        ..Default::default()
                    }),
                    filters: vec![network_filter(
                        &name,
                        &cluster_name,
                        "tcp",
                        &route_name,
                        service,
                        None,
                    )],
                    ..Default::default()
                };
                vec![plaintext, mesh_chain, passthrough]
            } else {
                vec![mesh_chain]
            }
        }
    };
    let mut listener = listener(&name, ip, inbound.port, TrafficDirection::Inbound, chains);
    listener.listener_filters = listener_filters;
    let workload_ip = inbound.workload_address(net);
    if transparent {
        // Reached through the inbound capture listener (original destination).
        listener.bind_to_port = Some(BoolValue { value: false });
    }
    let mut cluster = Cluster {
        name: cluster_name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(10)),
        typed_extension_protocol_options: protocol_options(protocol, false),
        load_assignment: Some(load_assignment(
            &cluster_name,
            &[EndpointAddr {
                ip: workload_ip.to_string(),
                port: inbound.workload_port(),
            }],
            None,
        )),
        ..Default::default()
    };
    if transparent {
        // From 127.0.0.6 (::6), which the iptables rules never capture.
        cluster.upstream_bind_config = transparent::inbound_source(workload_ip);
    }
    vec![
        Resource::new(cluster_name, pack_any(cluster)),
        Resource::new(name, pack_any(listener)),
    ]
}

/// The TLS inspector listener filter (SNI and ALPN of the ClientHello for filter chain
/// matching and RBAC `sni` matches).
fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
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

fn listener(
    name: &str,
    ip: &str,
    port: u32,
    direction: TrafficDirection,
    filter_chains: Vec<FilterChain>,
) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(ip, port)),
        traffic_direction: direction as i32,
        filter_chains,
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
    http_rbac: Option<HttpFilter>,
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
            // RBAC (when given) runs before the router.
            http_filters: http_rbac
                .into_iter()
                .chain(std::iter::once(router_filter()))
                .collect(),
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

/// The HTTP router, last of every HTTP filter chain.
fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
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

fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

#[cfg(test)]
mod tests;
