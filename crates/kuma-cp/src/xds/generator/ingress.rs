//! Envoy configuration of a ZoneIngress (pure): the entry of this zone for other zones'
//! mesh traffic. Mesh-agnostic: it serves every mesh with mTLS on.
//!
//! - listener `inbound:<address>:<port>` with the TLS inspector and one filter chain per
//!   service of each mTLS mesh with local endpoints, matching SNI `<service>{mesh=<mesh>}`
//!   over TLS → `tcp_proxy` to cluster `<mesh>:<service>`. TLS is not terminated: the mTLS
//!   session runs end to end between the two sidecars, which check each other (and the
//!   destination enforces its MeshTrafficPermissions);
//! - cluster `<mesh>:<service>` (EDS over ADS) and its ClusterLoadAssignment: the service's
//!   local endpoints (the sidecars' inbound listeners), in locality `{zone: <local zone>}`.
//!
//! No listener at all while there is nothing to serve (Envoy refuses a listener without
//! filter chains).

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster,
};
use envoy_types::util::pack_any;
use kuma_core::resource::ZoneIngress;
use kuma_xds::{Resource, Snapshot};

use super::super::envoy::{load_assignment, sanitize};
use super::super::view::MeshView;
use super::{ads_source, listener, seconds, tls_inspector};

/// SNI a sidecar sends to reach `service` of `mesh` through an ingress or egress.
pub fn sni(mesh: &str, service: &str) -> String {
    format!("{service}{{mesh={mesh}}}")
}

/// Name of the cluster of `service` of `mesh` on a zone proxy.
pub fn cluster_name(mesh: &str, service: &str) -> String {
    format!("{mesh}:{service}")
}

/// An SNI-matched TLS passthrough chain to `cluster`.
pub(super) fn sni_chain(sni: String, cluster: &str) -> FilterChain {
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: vec![sni],
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix: sanitize(cluster),
                cluster_specifier: Some(TcpCluster::Cluster(cluster.to_string())),
                ..Default::default()
            }))),
        }],
        ..Default::default()
    }
}

/// An EDS cluster of a zone proxy; its stats read `cluster.<mesh>_<service>.*`.
pub(super) fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        alt_stat_name: sanitize(name),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(seconds(5)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// The listener of a zone proxy on `address:port` (`0.0.0.0` when no address is given),
/// or nothing without chains.
pub(super) fn zone_listener(
    address: &str,
    port: u32,
    chains: Vec<FilterChain>,
) -> Option<Resource> {
    if chains.is_empty() {
        return None;
    }
    let address = if address.is_empty() {
        "0.0.0.0"
    } else {
        address
    };
    let name = format!("inbound:{address}:{port}");
    let mut l = listener(&name, address, port, TrafficDirection::Inbound, chains);
    l.listener_filters = vec![tls_inspector()];
    Some(Resource::new(name, pack_any(l)))
}

/// The snapshot of a ZoneIngress from the views of every mesh (in any order).
pub fn generate(zi: &ZoneIngress, views: &[Arc<MeshView>]) -> Snapshot {
    let mut snap = Snapshot::new();
    let mut views: Vec<&Arc<MeshView>> = views
        .iter()
        .filter(|v| v.mtls().is_some() && v.broken().is_none())
        .collect();
    views.sort_by(|a, b| a.mesh.cmp(&b.mesh));
    let mut chains = Vec::new();
    for view in views {
        for (service, endpoints) in view.local_services() {
            let cluster = cluster_name(&view.mesh, service);
            chains.push(sni_chain(sni(&view.mesh, service), &cluster));
            snap.insert(view.shared(&format!("ingress-cluster|{cluster}"), || {
                Resource::new(cluster.clone(), pack_any(eds_cluster(&cluster)))
            }));
            snap.insert(view.shared(&format!("ingress-cla|{cluster}"), || {
                Resource::new(
                    cluster.clone(),
                    pack_any(load_assignment(&cluster, endpoints, Some(view.zone()))),
                )
            }));
        }
    }
    let net = zi.net();
    if let Some(l) = zone_listener(&net.address, net.port, chains) {
        snap.insert(Arc::new(l));
    }
    snap
}
