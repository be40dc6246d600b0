//! Envoy resource builders shared by the mesh view, the generator and the RBAC builder:
//! endpoints and ClusterLoadAssignments, the SDS secrets of a mesh (CA bundle, proxy
//! identity) and their names, socket addresses and stat-prefix names. Pure functions of their
//! arguments; nothing here knows about views, proxies or policies, so `view`, `generator` and
//! `rbac` depend on this module and not on each other in a cycle.

use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, SocketAddress, address, data_source, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use kuma_xds::Resource;

/// One endpoint of a service: where other proxies dial it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointAddr {
    pub ip: String,
    pub port: u32,
}

/// An endpoint of a service in another zone (a remote ingress, or the local egress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteEndpoint {
    /// The zone the service runs in (the endpoint's locality).
    pub zone: String,
    pub addr: EndpointAddr,
    /// Envoy's endpoint weight (the instances behind it).
    pub weight: u32,
}

/// Name of the SDS secret holding a proxy's identity.
pub fn identity_secret_name(mesh: &str) -> String {
    format!("identity_cert:secret:{mesh}")
}

/// Name of the SDS secret holding the mesh CA.
pub fn ca_secret_name(mesh: &str) -> String {
    format!("mesh_ca:secret:{mesh}")
}

/// The SDS identity secret of a proxy.
pub fn identity_secret(mesh: &str, cert_pem: &str, key_pem: &str) -> Resource {
    let secret = Secret {
        name: identity_secret_name(mesh),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline_bytes(cert_pem)),
            private_key: Some(inline_bytes(key_pem)),
            ..Default::default()
        })),
    };
    Resource::new(secret.name.clone(), pack_any(secret))
}

/// The SDS CA secret of a mesh (shared by every proxy of the mesh).
pub fn ca_secret(mesh: &str, ca_pem: &str) -> Resource {
    let secret = Secret {
        name: ca_secret_name(mesh),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline_bytes(ca_pem)),
                ..Default::default()
            },
        )),
    };
    Resource::new(secret.name.clone(), pack_any(secret))
}

/// A `DataSource` holding `pem` inline.
pub fn inline_bytes(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
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

/// A ClusterLoadAssignment of `endpoints`, in one locality (`zone`) when given.
pub fn load_assignment(
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

/// A ClusterLoadAssignment spanning zones: the local endpoints (each of weight
/// `local_weight`) in locality `{zone: local_zone}` at priority 0, and one locality per
/// remote zone, at priority 1 when `locality_aware` and some local endpoint exists (Envoy
/// then fails over to them), else 0.
pub fn zoned_load_assignment(
    name: &str,
    local: &[EndpointAddr],
    local_zone: &str,
    local_weight: u32,
    remote: &[RemoteEndpoint],
    locality_aware: bool,
) -> ClusterLoadAssignment {
    let locality = |zone: &str| envoy_types::pb::envoy::config::core::v3::Locality {
        zone: zone.to_string(),
        ..Default::default()
    };
    let lb = |e: &EndpointAddr, weight: u32| LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&e.ip, e.port)),
            ..Default::default()
        })),
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    };
    let mut endpoints = Vec::new();
    if !local.is_empty() {
        endpoints.push(LocalityLbEndpoints {
            locality: Some(locality(local_zone)),
            lb_endpoints: local.iter().map(|e| lb(e, local_weight)).collect(),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        });
    }
    let priority = u32::from(locality_aware && !local.is_empty());
    let mut zones: std::collections::BTreeMap<&str, Vec<LbEndpoint>> = Default::default();
    for r in remote {
        zones
            .entry(r.zone.as_str())
            .or_default()
            .push(lb(&r.addr, r.weight));
    }
    for (zone, lb_endpoints) in zones {
        endpoints.push(LocalityLbEndpoints {
            locality: Some(locality(zone)),
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            priority,
            ..Default::default()
        });
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints,
        ..Default::default()
    }
}

/// A TCP socket address.
pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// `inbound:10.0.0.1:80` → `inbound_10_0_0_1_80` (stat prefixes).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
