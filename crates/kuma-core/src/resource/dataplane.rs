//! `Dataplane`: one proxy next to one workload, with its inbounds (what it serves, tagged with
//! `kuma.io/service` when tagged at all) and outbounds (what it consumes, on local ports), or a
//! gateway (delegated or builtin).
//!
//! Decoding follows Kuma's protobuf JSON (see [`super::wire`]); [`Dataplane::validate`]
//! follows Kuma 2.14's `Dataplane.Validate()` rule for rule: same checks, same order, same
//! field paths (including Kuma's `networking.transparentProxing…` spelling) and messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{self, Empty};
use crate::validate::{ValidationError, Violations};

/// Tag naming the service of an inbound or the destination of an outbound.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// Tag naming the protocol of an inbound.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
/// Tag the zone control plane adds to every tagged inbound.
pub const ZONE_TAG: &str = "kuma.io/zone";
/// Protocols Kuma lists as allowed for `kuma.io/protocol` (its messages name these).
pub const PROTOCOLS: [&str; 5] = ["grpc", "http", "http2", "kafka", "tcp"];
/// Every protocol Kuma parses (case-insensitively): [`PROTOCOLS`] plus `tls` and `mysql`.
const PARSED_PROTOCOLS: [&str; 7] = ["grpc", "http", "http2", "kafka", "tcp", "tls", "mysql"];
/// Kinds an outbound `backendRef` or a reachable backend may name, sorted as Kuma lists them.
const BACKEND_KINDS: [&str; 3] = ["MeshExternalService", "MeshMultiZoneService", "MeshService"];

/// Dataplane spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dataplane {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    /// Per-proxy metrics backend (overrides the Mesh's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsBackend>,
    /// Deprecated virtual probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Inbound>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    #[serde(
        default,
        alias = "transparent_proxying",
        skip_serializing_if = "Option::is_none"
    )]
    pub transparent_proxying: Option<TransparentProxying>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Zone proxy listeners (Kuma 2.14).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

/// Envoy's admin listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Admin {
    #[serde(default, deserialize_with = "wire::uint32")]
    pub port: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    #[serde(default, deserialize_with = "wire::uint32")]
    pub port: u32,
    /// `None` or `Some(0)`: the workload listens on `port`.
    #[serde(
        default,
        deserialize_with = "wire::opt_uint32",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Empty is valid (Kuma 2.14: inbounds without tags).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The 2.14 protocol field (next to the `kuma.io/protocol` tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_probe: Option<ServiceProbe>,
    /// `Ready` (default), `NotReady` or `Ignored`.
    #[serde(
        default,
        deserialize_with = "inbound_state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<String>,
}

/// Reported health of an inbound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub ready: bool,
}

/// Active health checking of the workload behind an inbound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProbe {
    #[serde(
        default,
        deserialize_with = "wire::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<String>,
    #[serde(
        default,
        deserialize_with = "wire::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<String>,
    #[serde(
        default,
        alias = "unhealthy_threshold",
        deserialize_with = "wire::opt_uint32",
        skip_serializing_if = "Option::is_none"
    )]
    pub unhealthy_threshold: Option<u32>,
    #[serde(
        default,
        alias = "healthy_threshold",
        deserialize_with = "wire::opt_uint32",
        skip_serializing_if = "Option::is_none"
    )]
    pub healthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Empty>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    #[serde(default, deserialize_with = "wire::uint32")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendRef>,
}

/// A new-style destination of an outbound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub port: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A gateway Dataplane: `DELEGATED` (an external gateway, the default) or `BUILTIN`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub gateway_type: Option<GatewayType>,
}

/// Decoded from its name or its protobuf number (`0`, `1`), as jsonpb does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum GatewayType {
    #[default]
    #[serde(rename = "DELEGATED")]
    Delegated,
    #[serde(rename = "BUILTIN")]
    Builtin,
}

impl<'de> Deserialize<'de> for GatewayType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let name = proto_enum(
            d,
            "kuma.mesh.v1alpha1.Dataplane.Networking.Gateway.GatewayType",
            &["DELEGATED", "BUILTIN"],
        )?;
        match name.as_deref() {
            Some("BUILTIN") => Ok(Self::Builtin),
            Some(_) => Ok(Self::Delegated),
            None => Err(D::Error::custom(
                "invalid type: null, expected a gateway type",
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransparentProxying {
    #[serde(
        default,
        alias = "redirect_port_inbound",
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub redirect_port_inbound: u32,
    #[serde(
        default,
        alias = "redirect_port_outbound",
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub redirect_port_outbound: u32,
    #[serde(
        default,
        alias = "direct_access_services",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub direct_access_services: Vec<String>,
    #[serde(
        default,
        alias = "reachable_services",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reachable_services: Vec<String>,
    /// `UnSpecified`, `DualStack`, `IPv4` or `IPv6`.
    #[serde(
        default,
        alias = "ip_family_mode",
        deserialize_with = "ip_family_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_family_mode: Option<String>,
    #[serde(
        default,
        alias = "reachable_backends",
        skip_serializing_if = "Option::is_none"
    )]
    pub reachable_backends: Option<ReachableBackends>,
}

impl TransparentProxying {
    /// Whether the proxy also captures IPv6: `ipFamilyMode` `DualStack` or `IPv6`, or
    /// unspecified on a host with IPv6 (`host_ipv6`, as kuma-dp reports it); `IPv4` never.
    pub fn ipv6(&self, host_ipv6: bool) -> bool {
        match self.ip_family_mode.as_deref() {
            Some("DualStack" | "IPv6") => true,
            Some("IPv4") => false,
            _ => host_ipv6,
        }
    }

    /// Whether a service gets an outbound (`reachableServices` empty = every service).
    pub fn reaches(&self, service: &str) -> bool {
        self.reachable_services.is_empty() || self.reachable_services.iter().any(|s| s == service)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReachableBackends {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<ReachableBackendRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReachableBackendRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(
        default,
        deserialize_with = "wire::opt_uint32",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A zone proxy listener inside a Dataplane (Kuma 2.14).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// `ZoneIngress` or `ZoneEgress`; `None` = unspecified.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "listener_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub listener_type: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        default,
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `Ready` (default) or `NotReady`.
    #[serde(
        default,
        deserialize_with = "listener_state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<String>,
}

/// `metrics`: a Prometheus backend for this proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsBackend {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub backend_type: String,
    /// Free-form (a protobuf `Struct`), checked as Kuma's `PrometheusMetricsBackendConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Value>,
}

/// Deprecated virtual probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probes {
    #[serde(default, deserialize_with = "wire::uint32")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ProbeEndpoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeEndpoint {
    #[serde(default, alias = "inbound_port", deserialize_with = "wire::uint32")]
    pub inbound_port: u32,
    #[serde(default, alias = "inbound_path")]
    pub inbound_path: String,
    #[serde(default)]
    pub path: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A protobuf enum: one of `names`, or its number (index into `names`).
fn proto_enum<'de, D: serde::Deserializer<'de>>(
    d: D,
    enum_name: &str,
    names: &[&str],
) -> Result<Option<String>, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if names.contains(&s.as_str()) => Ok(Some(s)),
        Value::Number(n) => n
            .as_u64()
            .and_then(|i| names.get(usize::try_from(i).ok()?))
            .map(|s| Some((*s).to_string()))
            .ok_or_else(|| D::Error::custom(format!("unknown value {n} for enum {enum_name}"))),
        other => Err(D::Error::custom(format!(
            "unknown value {other} for enum {enum_name}: use one of {}",
            names.join(", ")
        ))),
    }
}

fn inbound_state<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    proto_enum(
        d,
        "kuma.mesh.v1alpha1.Dataplane.Networking.Inbound.State",
        &["Ready", "NotReady", "Ignored"],
    )
}

fn ip_family_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    proto_enum(
        d,
        "kuma.mesh.v1alpha1.Dataplane.Networking.TransparentProxying.IpFamilyMode",
        &["UnSpecified", "DualStack", "IPv4", "IPv6"],
    )
}

fn listener_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = proto_enum(
        d,
        "kuma.mesh.v1alpha1.Dataplane.Networking.Listener.Type",
        &["Unspecified", "ZoneIngress", "ZoneEgress"],
    )?;
    Ok(v.filter(|t| t != "Unspecified"))
}

fn listener_state<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    proto_enum(
        d,
        "kuma.mesh.v1alpha1.Dataplane.Networking.Listener.State",
        &["Ready", "NotReady"],
    )
}

impl Inbound {
    pub fn service(&self) -> Option<&str> {
        self.tags.get(SERVICE_TAG).map(String::as_str)
    }

    /// The `protocol` field, else the `kuma.io/protocol` tag (Kuma's fallback order), `tcp`
    /// when neither is set.
    pub fn protocol(&self) -> &str {
        non_empty(&self.protocol)
            .or(self.tags.get(PROTOCOL_TAG).map(String::as_str))
            .unwrap_or("tcp")
    }

    /// IP Envoy binds for this inbound.
    pub fn listener_address<'a>(&'a self, net: &'a Networking) -> &'a str {
        non_empty(&self.address).unwrap_or(&net.address)
    }

    /// IP other proxies dial to reach this inbound.
    pub fn advertised_address<'a>(&'a self, net: &'a Networking) -> &'a str {
        non_empty(&net.advertised_address).unwrap_or_else(|| self.listener_address(net))
    }

    /// Where Envoy forwards inbound traffic: the workload.
    pub fn workload_address<'a>(&'a self, net: &'a Networking) -> &'a str {
        non_empty(&self.service_address).unwrap_or_else(|| self.listener_address(net))
    }

    pub fn workload_port(&self) -> u32 {
        self.service_port.filter(|p| *p != 0).unwrap_or(self.port)
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl Outbound {
    pub fn service(&self) -> Option<&str> {
        self.tags.as_ref()?.get(SERVICE_TAG).map(String::as_str)
    }

    /// Local address Envoy binds (127.0.0.1 by default).
    pub fn address(&self) -> &str {
        non_empty(&self.address).unwrap_or("127.0.0.1")
    }
}

impl Gateway {
    pub fn is_builtin(&self) -> bool {
        self.gateway_type == Some(GatewayType::Builtin)
    }
}

impl Dataplane {
    pub fn networking(&self) -> Option<&Networking> {
        self.networking.as_ref()
    }

    pub fn inbounds(&self) -> &[Inbound] {
        self.networking.as_ref().map_or(&[], |n| &n.inbound)
    }

    pub fn outbounds(&self) -> &[Outbound] {
        self.networking.as_ref().map_or(&[], |n| &n.outbound)
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        self.networking.as_ref()?.gateway.as_ref()
    }

    /// `networking.transparentProxying` when it redirects anything (an inbound or outbound
    /// redirect port is set): the proxy runs behind iptables rules, so the CP gives it the
    /// capture listeners, an outbound per service VIP and DNS records.
    pub fn transparent_proxying(&self) -> Option<&TransparentProxying> {
        self.networking
            .as_ref()?
            .transparent_proxying
            .as_ref()
            .filter(|tp| tp.redirect_port_inbound != 0 || tp.redirect_port_outbound != 0)
    }

    /// First `kuma.io/service` value in sorted order (Envoy `node.cluster`), `unknown` if none.
    pub fn identifying_service(&self) -> String {
        let mut services: Vec<&str> = self
            .inbounds()
            .iter()
            .filter_map(Inbound::service)
            .chain(
                self.gateway()
                    .and_then(|g| g.tags.get(SERVICE_TAG))
                    .map(String::as_str),
            )
            .collect();
        services.sort_unstable();
        services
            .first()
            .map_or_else(|| "unknown".into(), |s| s.to_string())
    }

    /// Adds `kuma.io/zone: <zone>` to every tagged inbound and to tagged gateway tags (what a
    /// zone CP does on every write). Tag-less inbounds stay tag-less: with only
    /// `kuma.io/zone` they would lack `kuma.io/service`, which tagged inbounds need.
    pub fn set_zone_tag(&mut self, zone: &str) {
        if let Some(net) = self.networking.as_mut() {
            for inb in &mut net.inbound {
                if !inb.tags.is_empty() {
                    inb.tags.insert(ZONE_TAG.into(), zone.into());
                }
            }
            if let Some(gw) = net.gateway.as_mut()
                && !gw.tags.is_empty()
            {
                gw.tags.insert(ZONE_TAG.into(), zone.into());
            }
        }
    }

    /// Kuma's mesh membership check against the Mesh's `constraints` (its wire JSON): every
    /// tag set of the proxy (the gateway's tags, or each inbound's) must match one of
    /// `dataplaneProxy.requirements` when there are any, and none of `restrictions` (a
    /// constraint matches when each of its tags has the proxy's value, `*` = any non-empty
    /// value). The first problem, as `(field, message)` with Kuma's message.
    pub fn membership_problem(
        &self,
        mesh: &str,
        constraints: Option<&Value>,
    ) -> Option<(String, String)> {
        let proxy = constraints?.get("dataplaneProxy")?;
        let rules = |key: &str| -> Vec<BTreeMap<String, String>> {
            proxy
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| {
                    r.get("tags")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .collect()
        };
        let (requirements, restrictions) = (rules("requirements"), rules("restrictions"));
        let matches = |rule: &BTreeMap<String, String>, tags: &BTreeMap<String, String>| {
            rule.iter().all(|(k, want)| {
                let have = tags.get(k).map_or("", String::as_str);
                (want == "*" && !have.is_empty()) || want == have
            })
        };
        let show = |tags: &BTreeMap<String, String>| {
            tags.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let tag_sets: Vec<(String, &BTreeMap<String, String>)> = match self.gateway() {
            Some(gw) => vec![("networking.gateway.tags".into(), &gw.tags)],
            None => self
                .inbounds()
                .iter()
                .enumerate()
                .map(|(i, inb)| (format!("networking.inbound[{i}].tags"), &inb.tags))
                .collect(),
        };
        for (field, tags) in tag_sets {
            if !requirements.is_empty() && !requirements.iter().any(|r| matches(r, tags)) {
                return Some((
                    field,
                    format!(
                        "dataplane cannot be a member of mesh {mesh:?} because its tags {:?} does not fulfill any requirements defined on the Mesh",
                        show(tags)
                    ),
                ));
            }
            if let Some(r) = restrictions.iter().find(|r| matches(r, tags)) {
                return Some((
                    field,
                    format!(
                        "dataplane cannot be a member of mesh {mesh:?} because its tags {:?} matches restricted tags {:?} defined on the Mesh",
                        show(tags),
                        show(r)
                    ),
                ));
            }
        }
        None
    }

    /// Kuma's `Dataplane.Validate()`: every violation, in Kuma's order.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        let Some(net) = &self.networking else {
            errs.add("networking", "must be defined");
            return errs.into_result();
        };
        if let Some(admin) = &net.admin {
            if uses_inbound_interface(net, Ipv4Addr::LOCALHOST.into(), admin.port) {
                errs.add("networking.admin.port", "must differ from inbound");
            }
            if uses_outbound_interface(net, Ipv4Addr::LOCALHOST.into(), admin.port) {
                errs.add("networking.admin.port", "must differ from outbound");
            }
        }
        match &net.gateway {
            Some(gw) if gw.is_builtin() => {
                if !net.inbound.is_empty() {
                    errs.add(
                        "networking.inbound",
                        "inbound cannot be defined for builtin gateways",
                    );
                }
                if !net.outbound.is_empty() {
                    errs.add(
                        "networking.outbound",
                        "outbound cannot be defined for builtin gateways",
                    );
                }
                if !net.listeners.is_empty() {
                    errs.add(
                        "networking.listeners",
                        "listeners cannot be defined for builtin gateways",
                    );
                }
                if self.probes.is_some() {
                    errs.add(
                        "networking.probes",
                        "probes cannot be defined for builtin gateways",
                    );
                }
                validate_gateway(gw, &mut errs);
                validate_networking(net, &mut errs);
            }
            Some(gw) => {
                if !net.inbound.is_empty() {
                    errs.add(
                        "networking.inbound",
                        "inbound cannot be defined for delegated gateways",
                    );
                }
                if !net.listeners.is_empty() {
                    errs.add(
                        "networking.listeners",
                        "listeners cannot be defined for delegated gateways",
                    );
                }
                validate_gateway(gw, &mut errs);
                validate_networking(net, &mut errs);
                validate_probes(self.probes.as_ref(), &mut errs);
            }
            None => {
                validate_networking(net, &mut errs);
                validate_probes(self.probes.as_ref(), &mut errs);
                if let Some(m) = &self.metrics {
                    validate_metrics(m, &mut errs);
                }
                validate_listeners(net, &mut errs);
            }
        }
        errs.into_result()
    }
}

/// Kuma's `overlap`: either side is a wildcard, or both are the same IP. A hostname (or an
/// empty address) overlaps nothing.
pub(crate) fn overlap(a: IpAddr, b: &str) -> bool {
    let Ok(b) = b.parse::<IpAddr>() else {
        return false;
    };
    a.is_unspecified() || b.is_unspecified() || same_ip(a, b)
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Whether an inbound listens (Envoy side) or its workload listens on `ip:port`.
fn uses_inbound_interface(net: &Networking, ip: IpAddr, port: u32) -> bool {
    net.inbound.iter().any(|inb| {
        let dp_ip = inb.listener_address(net);
        (port == inb.port && overlap(ip, dp_ip))
            || (port == inb.workload_port() && overlap(ip, inb.workload_address(net)))
    })
}

/// Whether an outbound listens on `ip:port`.
fn uses_outbound_interface(net: &Networking, ip: IpAddr, port: u32) -> bool {
    net.outbound
        .iter()
        .any(|out| port == out.port && overlap(ip, out.address()))
}

pub(crate) fn validate_port(port: u32, field: &str, errs: &mut Violations) {
    if port == 0 || port > 65535 {
        errs.add(field, "port must be in the range [1, 65535]");
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// govalidator's `IsDNSName`: labels of `[A-Za-z0-9_][A-Za-z0-9_-]{0,62}`, an optional
/// trailing `.`, at most 255 characters without the dots.
fn is_dns_name(s: &str) -> bool {
    if s.is_empty() || s.chars().filter(|c| *c != '.').count() > 255 {
        return false;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    s.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
    })
}

/// `networking.address` and listener addresses: an IP or a domain name, not a wildcard.
pub(crate) fn validate_address(address: &str, field: &str, errs: &mut Violations) {
    if address.is_empty() {
        errs.add(field, "address can't be empty");
        return;
    }
    if address == "0.0.0.0" || address == "::" {
        errs.add(field, "must not be 0.0.0.0 or ::");
    }
    if !is_ip(address) && !is_dns_name(address) {
        errs.add(field, "address has to be valid IP address or domain name");
    }
}

fn validate_networking(net: &Networking, errs: &mut Violations) {
    validate_address(&net.address, "networking.address", errs);
    for (i, inb) in net.inbound.iter().enumerate() {
        let p = format!("networking.inbound[{i}]");
        validate_inbound(inb, &net.address, &p, errs);
        // Kuma 2.14: tag-less inbounds are valid; tagged ones need `kuma.io/service`.
        if !inb.tags.is_empty() && !inb.tags.contains_key(SERVICE_TAG) {
            errs.add(format!("{p}.tags[{SERVICE_TAG:?}]"), "tag has to exist");
        }
    }
    for (i, out) in net.outbound.iter().enumerate() {
        validate_outbound(out, &format!("networking.outbound[{i}]"), errs);
    }
    if let Some(tp) = &net.transparent_proxying {
        validate_transparent_proxying(tp, errs);
    }
}

fn validate_inbound(inb: &Inbound, dp_address: &str, p: &str, errs: &mut Violations) {
    validate_port(inb.port, &format!("{p}.port"), errs);
    let service_port = inb.service_port.unwrap_or(0);
    if service_port != 0 {
        validate_port(service_port, &format!("{p}.servicePort"), errs);
    }
    // Envoy would forward to itself: only an explicit serviceAddress can cause it.
    let same_port = service_port == 0 || service_port == inb.port;
    let service_address = inb.service_address.as_deref().unwrap_or_default();
    if !service_address.is_empty() {
        if !is_ip(service_address) {
            errs.add(
                format!("{p}.serviceAddress"),
                "serviceAddress has to be valid IP address",
            );
        }
        if service_address == dp_address && same_port {
            errs.add(
                format!("{p}.serviceAddress"),
                "serviceAddress and servicePort has to differ from address and port",
            );
        }
    }
    let address = inb.address.as_deref().unwrap_or_default();
    if !address.is_empty() {
        if !is_ip(address) {
            errs.add(format!("{p}.address"), "address has to be valid IP address");
        }
        if address == service_address && same_port {
            errs.add(
                format!("{p}.serviceAddress"),
                "serviceAddress and servicePort has to differ from address and port",
            );
        }
    }
    let tags = format!("{p}.tags");
    if let Some(v) = inb.tags.get(PROTOCOL_TAG)
        && !is_protocol(v)
    {
        errs.add(
            format!("{tags}[{PROTOCOL_TAG:?}]"),
            format!(
                "tag {PROTOCOL_TAG:?} has an invalid value {v:?}. Allowed values: {}",
                PROTOCOLS.join(", ")
            ),
        );
    }
    validate_tag_keys_values(&inb.tags, &tags, errs);
    if let Some(proto) = inb.protocol.as_deref()
        && !proto.is_empty()
        && !is_protocol(proto)
    {
        errs.add(
            format!("{p}.protocol"),
            format!(
                "has an invalid value {proto:?}. Allowed values: {}",
                PROTOCOLS.join(", ")
            ),
        );
    }
    if let Some(sp) = &inb.service_probe {
        let sp_path = format!("{p}.serviceProbe");
        for (name, d) in [("interval", &sp.interval), ("timeout", &sp.timeout)] {
            if let Some(d) = d
                && is_zero_duration(d)
            {
                errs.add(format!("{sp_path}.{name}"), "must have a positive value");
            }
        }
        for (name, t) in [
            ("unhealthyThreshold", sp.unhealthy_threshold),
            ("healthyThreshold", sp.healthy_threshold),
        ] {
            if t == Some(0) {
                errs.add(format!("{sp_path}.{name}"), "must have a positive value");
            }
        }
    }
}

fn is_protocol(v: &str) -> bool {
    PARSED_PROTOCOLS.contains(&v.to_ascii_lowercase().as_str())
}

/// A duration that decoded (Go syntax) and is zero.
fn is_zero_duration(d: &str) -> bool {
    let unsigned = d.strip_prefix('-').unwrap_or(d);
    crate::duration::parse(unsigned).is_ok_and(|d| d.is_zero())
}

/// Kuma's tag key/value rules, keys in sorted order (`BTreeMap`).
pub(crate) fn validate_tag_keys_values(
    tags: &BTreeMap<String, String>,
    field: &str,
    errs: &mut Violations,
) {
    for (k, v) in tags {
        if k.is_empty() {
            errs.add(field, "tag name must be non-empty");
        }
        if !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/'))
        {
            errs.add(
                format!("{field}[{k:?}]"),
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            );
        }
        if v.is_empty() {
            errs.add(format!("{field}[{k:?}]"), "tag value must be non-empty");
        }
        if !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            errs.add(
                format!("{field}[{k:?}]"),
                "tag value must consist of alphanumeric characters, dots, dashes and underscores",
            );
        }
    }
}

fn validate_outbound(out: &Outbound, p: &str, errs: &mut Violations) {
    validate_port(out.port, &format!("{p}.port"), errs);
    if let Some(a) = out.address.as_deref()
        && !a.is_empty()
        && !is_ip(a)
    {
        errs.add(format!("{p}.address"), "address has to be valid IP address");
    }
    let tags = out.tags.as_ref().filter(|t| !t.is_empty());
    match (&out.backend_ref, tags) {
        (Some(r), _) => {
            if !BACKEND_KINDS.contains(&r.kind.as_str()) {
                errs.add(
                    format!("{p}.backendRef.kind"),
                    format!(
                        "invalid value. Available values are: {}",
                        BACKEND_KINDS.join(",")
                    ),
                );
            }
            if r.name.is_empty() && r.labels.is_empty() {
                errs.add(
                    format!("{p}.backendRef"),
                    "either 'name' or 'labels' should be specified",
                );
            }
            // The port of a MeshExternalService comes from its endpoints.
            if r.kind != "MeshExternalService" {
                validate_port(r.port, &format!("{p}.backendRef.port"), errs);
            }
        }
        (None, None) => errs.add(
            format!("{p}.tags"),
            format!("mandatory tag {SERVICE_TAG:?} is missing"),
        ),
        (None, Some(t)) => {
            validate_tag_keys_values(t, &format!("{p}.tags"), errs);
            if !t.contains_key(SERVICE_TAG) {
                errs.add(
                    format!("{p}.tags"),
                    format!("mandatory tag {SERVICE_TAG:?} is missing"),
                );
            }
        }
    }
    if out.backend_ref.is_some() && tags.is_some() {
        errs.add(
            format!("{p}.backendRef"),
            "both backendRef and tags/service cannot be defined",
        );
    }
}

fn validate_transparent_proxying(tp: &TransparentProxying, errs: &mut Violations) {
    let Some(rb) = &tp.reachable_backends else {
        return;
    };
    // Kuma's path really says `transparentProxing`.
    for (i, r) in rb.refs.iter().enumerate() {
        let p = format!("networking.transparentProxing.reachableBackends.refs[{i}]");
        if !BACKEND_KINDS.contains(&r.kind.as_str()) {
            errs.add(
                format!("{p}.kind"),
                format!(
                    "invalid value. Available values are: {}",
                    BACKEND_KINDS.join(",")
                ),
            );
        }
        if let Some(problem) = crate::name::meta_name_problem(&r.name)
            && !r.name.is_empty()
        {
            errs.add(format!("{p}.name"), problem);
        }
        if r.name.is_empty() && r.namespace.is_empty() && r.labels.is_empty() {
            errs.add(format!("{p}.name"), "name or labels are required");
        }
        if r.name.is_empty() && !r.namespace.is_empty() {
            errs.add(
                format!("{p}.name"),
                "name is required, when namespace is defined",
            );
        }
        if (!r.name.is_empty() || !r.namespace.is_empty()) && !r.labels.is_empty() {
            errs.add(
                format!("{p}.labels"),
                "labels cannot be defined when name is specified",
            );
        }
    }
}

fn validate_gateway(gw: &Gateway, errs: &mut Violations) {
    let field = "networking.gateway.tags";
    if let Some(proto) = gw.tags.get(PROTOCOL_TAG)
        && !proto.eq_ignore_ascii_case("tcp")
    {
        errs.add(
            format!("{field}[{PROTOCOL_TAG:?}]"),
            format!("other values than tcp are not allowed, provided value {proto:?}"),
        );
    }
    validate_tag_keys_values(&gw.tags, field, errs);
    // Kuma 2.14.3: `kuma.io/service` only when the gateway has tags at all.
    if !gw.tags.is_empty() && !gw.tags.contains_key(SERVICE_TAG) {
        errs.add(field, format!("mandatory tag {SERVICE_TAG:?} is missing"));
    }
}

fn validate_probes(probes: Option<&Probes>, errs: &mut Violations) {
    let Some(probes) = probes else {
        return;
    };
    validate_port(probes.port, "probes.port", errs);
    for (j, e) in probes.endpoints.iter().enumerate() {
        let p = format!("probes.endpoints[{j}]");
        validate_port(e.inbound_port, &format!("{p}.inboundPort"), errs);
        if !is_request_uri(&e.inbound_path) {
            errs.add(format!("{p}.inboundPath"), "should be a valid URL Path");
        }
        if !is_request_uri(&e.path) {
            errs.add(format!("{p}.path"), "should be a valid URL Path");
        }
    }
}

/// Go's `url.ParseRequestURI`: an absolute path or an absolute URL, no control characters.
fn is_request_uri(s: &str) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_ascii_control()) {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    // `scheme:...`
    match s.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn validate_metrics(m: &MetricsBackend, errs: &mut Violations) {
    if m.backend_type != "prometheus" {
        errs.add(
            "metrics.type",
            "unknown backend type. Available backends: \"prometheus\"",
        );
        return;
    }
    if let Some(conf) = &m.conf {
        prometheus_conf_problems(conf, "metrics.conf", errs);
    }
}

/// Kuma's checks of a `PrometheusMetricsBackendConfig` (a Dataplane's `metrics.conf`, a Mesh
/// metrics backend's `conf`), reported under `field`.
pub fn prometheus_conf_problems(conf: &Value, field: &str, errs: &mut Violations) {
    let parse_error = |what: &str| format!("could not parse config: {what}");
    let Value::Object(c) = conf else {
        errs.add(field, parse_error("conf must be an object"));
        return;
    };
    let skip_mtls = match c.get("skipMTLS") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errs.add(field, parse_error("skipMTLS must be a boolean"));
            return;
        }
    };
    let tls_mode = match c.get("tls") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => match t.get("mode") {
            None | Some(Value::Null) => Some("activeMTLSBackend".to_string()),
            Some(Value::String(m))
                if matches!(m.as_str(), "activeMTLSBackend" | "providedTLS" | "disabled") =>
            {
                Some(m.clone())
            }
            Some(other) => {
                errs.add(
                    field,
                    parse_error(&format!(
                        "unknown value {other} for enum kuma.mesh.v1alpha1.PrometheusTlsConfig.Mode"
                    )),
                );
                return;
            }
        },
        Some(_) => {
            errs.add(field, parse_error("tls must be an object"));
            return;
        }
    };
    if let (Some(skip), Some(mode)) = (skip_mtls, tls_mode.as_deref()) {
        let equivalent = (!skip && mode == "activeMTLSBackend") || (skip && mode == "disabled");
        if !equivalent {
            errs.add(
                field,
                "skipMTLS and tls configuration cannot be defined together",
            );
            return;
        }
    }
    if let Some(Value::String(re)) = c.get("envoy").and_then(|e| e.get("filterRegex"))
        && let Err(e) = regex_syntax::Parser::new().parse(re)
    {
        // regex-syntax draws a multi-line diagram; its `error: ...` line says what is wrong.
        let text = e.to_string();
        let reason = text
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(text.lines().next().unwrap_or_default());
        errs.add(
            format!("{field}.envoy.filterRegex"),
            format!("provided regexp isn't correct: {reason}"),
        );
        return;
    }
    let mut used = HashSet::new();
    if let Some(Value::Array(aggregate)) = c.get("aggregate") {
        for (k, a) in aggregate.iter().enumerate() {
            let name = a.get("name").and_then(Value::as_str).unwrap_or_default();
            if !used.insert(name.to_string()) {
                errs.add(
                    format!("{field}.aggregate[{k}].name"),
                    format!("duplicate entry: {name}, values have to be unique"),
                );
            }
        }
    }
}

fn validate_listeners(net: &Networking, errs: &mut Violations) {
    let mut names: HashSet<String> = net
        .inbound
        .iter()
        .map(|i| match i.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => i.port.to_string(),
        })
        .collect();
    let mut used: HashMap<String, Option<&str>> = HashMap::new();
    for (i, l) in net.listeners.iter().enumerate() {
        let p = format!("networking.listeners[{i}]");
        if l.listener_type.is_none() {
            errs.add(
                format!("{p}.type"),
                "type must be ZoneIngress or ZoneEgress",
            );
        }
        validate_address(&l.address, &format!("{p}.address"), errs);
        validate_port(l.port, &format!("{p}.port"), errs);
        if !l.name.is_empty() {
            if names.contains(&l.name) {
                errs.add(
                    format!("{p}.name"),
                    format!(
                        "name {:?} must be unique across inbounds and listeners",
                        l.name
                    ),
                );
            }
            names.insert(l.name.clone());
        }
        let key = format!("{}:{}", l.address, l.port);
        match used.get(&key) {
            Some(t) if *t == l.listener_type.as_deref() => errs.add(
                p.clone(),
                format!("address:port {key} is already used by another listener"),
            ),
            Some(_) => errs.add(
                p.clone(),
                format!("address:port {key} is used by listeners of different types"),
            ),
            None => {
                used.insert(key.clone(), l.listener_type.as_deref());
            }
        }
        if net
            .inbound
            .iter()
            .any(|inb| format!("{}:{}", inb.listener_address(net), inb.port) == key)
        {
            errs.add(
                p,
                format!("address:port {key} collides with an inbound listener"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
