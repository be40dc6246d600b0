//! Transparent proxying (`networking.transparentProxying`): what a proxy behind Kuma's
//! iptables rules needs besides its inbounds and explicit outbounds.
//!
//! - Outbound: one listener `outbound:<VIP>:<port>` per service VIP of the mesh, on
//!   `dnsServer.serviceVipPort` and on each inbound port of the service's local replicas, not
//!   bound (`bindToPort: false`); the capture listener `outbound:passthrough:ipv4` on
//!   `0.0.0.0:<redirectPortOutbound>` (and `:ipv6` on `::`) hands each connection to the
//!   listener of its original destination, or else to the ORIGINAL_DST cluster of the same
//!   name (omitted when the Mesh's `networking.outbound.passthrough` is false, so traffic
//!   outside the mesh is dropped). IPv6 with `ipFamilyMode` `DualStack`/`IPv6`, or
//!   unspecified when kuma-dp reported IPv6 (`ipv6Enabled`).
//! - Inbound: the capture listener `inbound:passthrough:ipv4` on
//!   `0.0.0.0:<redirectPortInbound>`; the inbound listeners are not bound; the application
//!   is dialled from 127.0.0.6 (`::6`), which the rules never capture. With strict mTLS only
//!   the declared inbound ports pass through (Kuma's strict inbound ports).
//! - DNS: with a DNS port in the node metadata, the dynamic-config listener
//!   `_kuma:dynamicconfig` on the pipe `<workdir>/kuma-mesh-metric-config.sock` answers
//!   `GET /dns` with the records (`<service>.<domain>` and, for names with `_`, the dotted
//!   variant → VIP and `::ffff:<VIP>` when the proxy has IPv6), an `Etag`, and 304 to
//!   `If-None-Match` with the same tag; kuma-dp polls it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, BindConfig, DataSource, HeaderValue, HeaderValueOption, Pipe, TrafficDirection,
    address, data_source,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, RouteConfiguration, RouteMatch, VirtualHost,
    header_matcher::HeaderMatchSpecifier, route::Action, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager,
    http_connection_manager::{CodecType, RouteSpecifier},
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use kuma_core::resource::Dataplane;
use kuma_core::resource::dataplane::TransparentProxying;
use kuma_xds::Resource;
use sha2::{Digest, Sha256};

use super::super::envoy::{sanitize, socket_address};
use super::super::lifecycle::NodeInfo;
use super::super::view::MeshView;
use super::{listener, outbound_listener, push_service, router_filter, seconds};

/// Kuma's name of the dynamic-config listener.
pub const DYNCONF_LISTENER: &str = "_kuma:dynamicconfig";
/// Kuma's name of its socket in kuma-dp's work dir.
pub const DYNCONF_SOCKET: &str = "kuma-mesh-metric-config.sock";
/// TTL of the DNS answers (Kuma's, in code).
pub const DNS_TTL: u32 = 30;

/// The outbounds of every service VIP the proxy may reach.
pub(super) fn vip_outbounds(
    view: &MeshView,
    tp: &TransparentProxying,
    mtls: bool,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Arc<Resource>>,
) {
    if tp.redirect_port_outbound == 0 {
        return;
    }
    let vips = view.vips();
    for (service, vip) in &vips.services {
        if !tp.reaches(service) {
            continue;
        }
        let ip = vip.to_string();
        let mut ports = view.service_ports(service);
        ports.insert(vips.port);
        for port in ports {
            out.push(outbound_listener(view, &ip, port, service, false));
        }
        push_service(view, service, mtls, seen, out);
    }
}

/// Services a transparent proxy consumes (its VIP outbounds).
pub fn consumed_services<'a>(
    view: &'a MeshView,
    dp: &'a Dataplane,
) -> impl Iterator<Item = &'a str> + 'a {
    let tp = dp
        .transparent_proxying()
        .filter(|tp| tp.redirect_port_outbound != 0);
    view.vips()
        .services
        .keys()
        .filter(move |s| tp.is_some_and(|tp| tp.reaches(s)))
        .map(String::as_str)
}

/// The capture listeners and passthrough clusters (shared by every proxy of the mesh with
/// the same redirect ports, families and strictness).
pub(super) fn capture_resources(
    view: &MeshView,
    dp: &Dataplane,
    tp: &TransparentProxying,
    strict: bool,
    host_ipv6: bool,
) -> Vec<Arc<Resource>> {
    let mut families = vec![("ipv4", "0.0.0.0", "127.0.0.6")];
    if tp.ipv6(host_ipv6) {
        families.push(("ipv6", "::", "::6"));
    }
    let strict_ports: Vec<u32> = if strict {
        dp.inbounds()
            .iter()
            .map(|i| i.port)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for (family, any, source) in families {
        if tp.redirect_port_outbound != 0 {
            let name = format!("outbound:passthrough:{family}");
            let port = tp.redirect_port_outbound;
            out.push(view.shared(&format!("listener|{name}|{port}"), || {
                let l = capture_listener(
                    &name,
                    any,
                    port,
                    TrafficDirection::Outbound,
                    vec![tcp_chain(&name, None)],
                );
                Resource::new(name.clone(), pack_any(l))
            }));
            if view.vips().passthrough {
                out.push(view.shared(&format!("cluster|{name}"), || {
                    Resource::new(name.clone(), pack_any(original_dst_cluster(&name, None)))
                }));
            }
        }
        if tp.redirect_port_inbound != 0 {
            let name = format!("inbound:passthrough:{family}");
            let port = tp.redirect_port_inbound;
            out.push(
                view.shared(&format!("listener|{name}|{port}|{strict_ports:?}"), || {
                    let chains = if strict_ports.is_empty() {
                        vec![tcp_chain(&name, None)]
                    } else {
                        strict_ports
                            .iter()
                            .map(|p| tcp_chain(&name, Some(*p)))
                            .collect()
                    };
                    let l = capture_listener(&name, any, port, TrafficDirection::Inbound, chains);
                    Resource::new(name.clone(), pack_any(l))
                }),
            );
            out.push(view.shared(&format!("cluster|{name}"), || {
                Resource::new(
                    name.clone(),
                    pack_any(original_dst_cluster(&name, Some(source))),
                )
            }));
        }
    }
    out
}

/// `upstreamBindConfig` of the cluster of an inbound's application: 127.0.0.6 (`::6` for an
/// IPv6 workload), unless the workload is on loopback already.
pub(super) fn inbound_source(workload_ip: &str) -> Option<BindConfig> {
    let ip: std::net::IpAddr = workload_ip.parse().ok()?;
    if ip.is_loopback() {
        return None;
    }
    let source = if ip.is_ipv6() { "::6" } else { "127.0.0.6" };
    Some(BindConfig {
        source_address: Some(bind_address(source)),
        ..Default::default()
    })
}

fn bind_address(ip: &str) -> envoy_types::pb::envoy::config::core::v3::SocketAddress {
    match socket_address(ip, 0).address {
        Some(address::Address::SocketAddress(sa)) => sa,
        _ => Default::default(),
    }
}

fn capture_listener(
    name: &str,
    any: &str,
    port: u32,
    direction: TrafficDirection,
    chains: Vec<FilterChain>,
) -> Listener {
    let mut l = listener(name, any, port, direction, chains);
    l.use_original_dst = Some(BoolValue { value: true });
    l
}

/// A `tcp_proxy` chain to the passthrough cluster of the same name, optionally only for
/// one destination port.
fn tcp_chain(name: &str, port: Option<u32>) -> FilterChain {
    FilterChain {
        filter_chain_match: port.map(|p| FilterChainMatch {
            destination_port: Some(UInt32Value { value: p }),
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix: sanitize(name),
                cluster_specifier: Some(TcpCluster::Cluster(name.to_string())),
                ..Default::default()
            }))),
        }],
        ..Default::default()
    }
}

fn original_dst_cluster(name: &str, source: Option<&str>) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(seconds(5)),
        upstream_bind_config: source.map(|s| BindConfig {
            source_address: Some(bind_address(s)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The DNS records body kuma-dp fetches: Kuma's `{"records":[{"name","ips"}],"ttl"}` plus
/// our `domain` (names under it that are not listed are NXDOMAIN).
pub fn dns_body(view: &MeshView, tp: &TransparentProxying, ipv6: bool) -> String {
    let vips = view.vips();
    let mut records: Vec<(String, Ipv4Addr)> = Vec::new();
    for (service, vip) in &vips.services {
        if !tp.reaches(service) {
            continue;
        }
        records.push((format!("{service}.{}", vips.domain), *vip));
        if service.contains('_') {
            records.push((
                format!("{}.{}", service.replace('_', "."), vips.domain),
                *vip,
            ));
        }
    }
    records.sort();
    records.dedup_by(|a, b| a.0 == b.0);
    let records: Vec<serde_json::Value> = records
        .into_iter()
        .map(|(name, vip)| {
            let mut ips = vec![vip.to_string()];
            if ipv6 {
                ips.push(vip.to_ipv6_mapped().to_string());
            }
            serde_json::json!({"name": name, "ips": ips})
        })
        .collect();
    serde_json::json!({"records": records, "ttl": DNS_TTL, "domain": vips.domain}).to_string()
}

/// The dynamic-config listener serving the DNS records, when the proxy runs kuma-dp's DNS
/// (a DNS port in its metadata) behind an outbound redirect, and its work dir is a usable
/// socket directory.
pub(super) fn dns_listener(
    view: &MeshView,
    tp: &TransparentProxying,
    node: &NodeInfo,
) -> Option<Resource> {
    if node.dns_port == 0 || tp.redirect_port_outbound == 0 || view.vips().domain.is_empty() {
        return None;
    }
    let path = format!("{}/{DYNCONF_SOCKET}", node.workdir.trim_end_matches('/'));
    // UNIX socket paths are at most 107 bytes; the work dir comes from the proxy itself.
    if !node.workdir.starts_with('/') || path.len() > 107 || path.contains('\0') {
        tracing::warn!(
            workdir = node.workdir,
            "no DNS records for a proxy whose work dir is not an absolute path short enough for a socket"
        );
        return None;
    }
    let make = || {
        let body = dns_body(view, tp, node.ipv6);
        let etag = hex::encode(Sha256::digest(body.as_bytes()));
        (body, etag)
    };
    // Every proxy reaching every service gets the same records: built once per view.
    let records = if tp.reachable_services.is_empty() {
        view.dns_records(node.ipv6, make)
    } else {
        Arc::new(make())
    };
    let (body, etag) = (&records.0, records.1.clone());
    let path_match = |headers: Vec<HeaderMatcher>| RouteMatch {
        path_specifier: Some(PathSpecifier::Path("/dns".into())),
        headers,
        ..Default::default()
    };
    let not_modified = Route {
        r#match: Some(path_match(vec![HeaderMatcher {
            name: "if-none-match".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(etag.clone())),
                ..Default::default()
            })),
            ..Default::default()
        }])),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 304,
            ..Default::default()
        })),
        ..Default::default()
    };
    let records = Route {
        name: format!("{DYNCONF_LISTENER}:dns"),
        r#match: Some(path_match(Vec::new())),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "etag".into(),
                value: etag,
                ..Default::default()
            }),
            ..Default::default()
        }],
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 200,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "kuma_dynamicconfig".into(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: DYNCONF_LISTENER.into(),
            virtual_hosts: vec![VirtualHost {
                name: DYNCONF_LISTENER.into(),
                domains: vec!["*".into()],
                routes: vec![not_modified, records],
                ..Default::default()
            }],
            max_direct_response_body_size_bytes: Some(UInt32Value {
                value: u32::try_from(body.len()).unwrap_or(u32::MAX).max(4096),
            }),
            ..Default::default()
        })),
        http_filters: vec![router_filter()],
        ..Default::default()
    };
    let listener = Listener {
        name: DYNCONF_LISTENER.into(),
        address: Some(Address {
            address: Some(address::Address::Pipe(Pipe { path, mode: 0o600 })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Some(Resource::new(DYNCONF_LISTENER, pack_any(listener)))
}
