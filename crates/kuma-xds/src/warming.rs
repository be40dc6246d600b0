//! Envoy's warming rules, as dependencies between resources.
//!
//! Envoy does not switch to a new or changed cluster whose endpoints come by EDS until an EDS
//! response for it arrives *after* the cluster ("cluster warming"); a new or changed listener
//! or cluster that references SDS secrets waits the same way for those secrets, and a
//! listener for its RDS route configurations. A control plane that sends only what changed
//! leaves such a resource warming until Envoy's `initial_fetch_timeout` (15 s by default):
//! the old cluster keeps serving, or nothing does. The xDS protocol docs ("Eventual
//! consistency considerations") ask the server to follow a CDS/LDS update with the EDS/RDS
//! (and SDS) it depends on.
//!
//! [`deps`] lists what one Cluster or Listener depends on; the state machines use it to
//! resend those dependencies after every response that adds or changes the resource, even
//! when the dependencies themselves did not change. Every other type has no dependencies.
//! Only dependencies delivered over the same stream matter, so a stream re-sends a name only
//! when it is subscribed to it.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfig;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::type_url;

const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// One resource another one needs before it can finish warming.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dep {
    /// Type URL of the dependency ([`type_url::ENDPOINT`], [`type_url::SECRET`] or
    /// [`type_url::ROUTE`]).
    pub type_url: &'static str,
    /// Its resource name.
    pub name: String,
}

/// What a packed resource needs to finish warming, sorted and without duplicates: for a
/// Cluster its ClusterLoadAssignment (type EDS) and SDS secrets, for a Listener the SDS
/// secrets of its filter chains and the RDS route configurations of its HTTP connection
/// managers. Nothing for other types or bodies that do not decode.
pub fn deps(body: &Any) -> Vec<Dep> {
    let mut out = Vec::new();
    match body.type_url.as_str() {
        type_url::CLUSTER => {
            if let Ok(c) = Cluster::decode(body.value.as_slice()) {
                cluster_deps(&c, &mut out);
            }
        }
        type_url::LISTENER => {
            if let Ok(l) = Listener::decode(body.value.as_slice()) {
                for chain in l
                    .filter_chains
                    .iter()
                    .chain(l.default_filter_chain.as_ref())
                {
                    chain_deps(chain, &mut out);
                }
            }
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}

fn cluster_deps(c: &Cluster, out: &mut Vec<Dep>) {
    if c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
        let service = c
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str())
            .filter(|s| !s.is_empty());
        out.push(Dep {
            type_url: type_url::ENDPOINT,
            name: service.unwrap_or(&c.name).to_string(),
        });
    }
    let matches = c.transport_socket_matches.iter();
    for socket in c
        .transport_socket
        .iter()
        .chain(matches.filter_map(|m| m.transport_socket.as_ref()))
    {
        socket_deps(socket, out);
    }
}

fn chain_deps(chain: &FilterChain, out: &mut Vec<Dep>) {
    if let Some(socket) = &chain.transport_socket {
        socket_deps(socket, out);
    }
    for filter in &chain.filters {
        let Some(FilterConfig::TypedConfig(any)) = &filter.config_type else {
            continue;
        };
        if any.type_url != HCM {
            continue;
        }
        let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
            continue;
        };
        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
            out.push(Dep {
                type_url: type_url::ROUTE,
                name: rds.route_config_name,
            });
        }
    }
}

fn socket_deps(socket: &TransportSocket, out: &mut Vec<Dep>) {
    let Some(SocketConfig::TypedConfig(any)) = &socket.config_type else {
        return;
    };
    let common = match any.type_url.as_str() {
        UPSTREAM_TLS => UpstreamTlsContext::decode(any.value.as_slice())
            .ok()
            .and_then(|t| t.common_tls_context),
        DOWNSTREAM_TLS => DownstreamTlsContext::decode(any.value.as_slice())
            .ok()
            .and_then(|t| t.common_tls_context),
        _ => None,
    };
    if let Some(common) = common {
        tls_deps(&common, out);
    }
}

fn tls_deps(common: &CommonTlsContext, out: &mut Vec<Dep>) {
    let secret = |name: &str| Dep {
        type_url: type_url::SECRET,
        name: name.to_string(),
    };
    for sds in &common.tls_certificate_sds_secret_configs {
        out.push(secret(&sds.name));
    }
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            out.push(secret(&sds.name));
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if let Some(sds) = &combined.validation_context_sds_secret_config {
                out.push(secret(&sds.name));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::listener::v3::Filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::CombinedCertificateValidationContext;

    use super::*;

    fn pack(type_url: &str, m: &impl Message) -> Any {
        Any {
            type_url: type_url.to_string(),
            value: m.encode_to_vec(),
        }
    }

    fn tls_socket(type_url: &str, cert: &str, ca: &str) -> TransportSocket {
        let common = CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: cert.into(),
                ..Default::default()
            }],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    validation_context_sds_secret_config: Some(SdsSecretConfig {
                        name: ca.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let config = if type_url == UPSTREAM_TLS {
            pack(
                type_url,
                &UpstreamTlsContext {
                    common_tls_context: Some(common),
                    ..Default::default()
                },
            )
        } else {
            pack(
                type_url,
                &DownstreamTlsContext {
                    common_tls_context: Some(common),
                    ..Default::default()
                },
            )
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(SocketConfig::TypedConfig(config)),
        }
    }

    /// A packed EDS cluster (endpoints under `service`, or its own name when empty),
    /// with mTLS secrets `cert`/`ca` when given.
    pub(crate) fn eds_cluster(
        name: &str,
        service: &str,
        tag: &str,
        tls: Option<(&str, &str)>,
    ) -> Any {
        pack(
            type_url::CLUSTER,
            &Cluster {
                name: name.into(),
                alt_stat_name: tag.into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
                eds_cluster_config: Some(EdsClusterConfig {
                    service_name: service.into(),
                    ..Default::default()
                }),
                transport_socket: tls.map(|(c, a)| tls_socket(UPSTREAM_TLS, c, a)),
                ..Default::default()
            },
        )
    }

    /// A packed listener whose one filter chain uses the secrets `cert`/`ca` (when given),
    /// and an HCM with RDS `route` (when given).
    pub(crate) fn listener(name: &str, tls: Option<(&str, &str)>, route: Option<&str>) -> Any {
        let filters = route
            .map(|r| Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(FilterConfig::TypedConfig(pack(
                    HCM,
                    &HttpConnectionManager {
                        route_specifier: Some(RouteSpecifier::Rds(Rds {
                            route_config_name: r.into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                ))),
            })
            .into_iter()
            .collect();
        pack(
            type_url::LISTENER,
            &Listener {
                name: name.into(),
                filter_chains: vec![FilterChain {
                    filters,
                    transport_socket: tls.map(|(c, a)| tls_socket(DOWNSTREAM_TLS, c, a)),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    fn dep(type_url: &'static str, name: &str) -> Dep {
        Dep {
            type_url,
            name: name.into(),
        }
    }

    #[test]
    fn eds_cluster_depends_on_its_endpoints_and_secrets() {
        assert_eq!(
            deps(&eds_cluster("a", "", "", None)),
            vec![dep(type_url::ENDPOINT, "a")]
        );
        assert_eq!(
            deps(&eds_cluster("a", "svc-a", "", Some(("id", "ca")))),
            vec![
                dep(type_url::ENDPOINT, "svc-a"),
                dep(type_url::SECRET, "ca"),
                dep(type_url::SECRET, "id"),
            ]
        );
        let static_cluster = pack(
            type_url::CLUSTER,
            &Cluster {
                name: "s".into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32,
                )),
                ..Default::default()
            },
        );
        assert!(deps(&static_cluster).is_empty());
    }

    #[test]
    fn listener_depends_on_its_secrets_and_routes() {
        assert_eq!(
            deps(&listener("l", Some(("id", "ca")), Some("r"))),
            vec![
                dep(type_url::ROUTE, "r"),
                dep(type_url::SECRET, "ca"),
                dep(type_url::SECRET, "id"),
            ]
        );
        assert!(deps(&listener("l", None, None)).is_empty());
    }

    #[test]
    fn other_types_and_garbage_have_none() {
        let garbage = Any {
            type_url: type_url::CLUSTER.into(),
            value: b"\xff\xff".to_vec(),
        };
        assert!(deps(&garbage).is_empty());
        let eds = Any {
            type_url: type_url::ENDPOINT.into(),
            value: vec![],
        };
        assert!(deps(&eds).is_empty());
    }
}
