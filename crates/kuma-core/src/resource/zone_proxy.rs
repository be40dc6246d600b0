//! Zone proxies: `ZoneIngress` (the entry of a zone for other zones' traffic) and
//! `ZoneEgress` (the exit of a zone), both global-scoped, and their insights.
//!
//! A ZoneIngress's `zone` is empty in the zone that runs it and set by global when it is
//! synced to other zones; `availableServices` is written by the zone control plane (the
//! distinct inbound tag sets of the zone's Dataplanes, per mesh, with instance counts).
//!
//! [`ZoneIngress::validate`] and [`ZoneEgress::validate`] follow Kuma 2.14's validators rule
//! for rule: same order, same field paths (including Kuma's `availableService[i]` and the
//! doubled `.address` of an address) and messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::dataplane::{
    Admin, SERVICE_TAG, overlap, validate_address, validate_port, validate_tag_keys_values,
};
use super::wire;
use crate::validate::{ValidationError, Violations};

/// Insight of a zone proxy: the subscriptions and node metadata (Kuma's
/// `ZoneIngressInsight` / `ZoneEgressInsight` share DataplaneInsight's subscription shape).
pub type ZoneProxyInsight = super::insight::DataplaneInsight;

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// ZoneIngress spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneIngress {
    /// The zone that runs it: empty where it runs, set by global when synced elsewhere.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<ZoneIngressNetworking>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_services: Vec<AvailableService>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneIngressNetworking {
    /// Where the ingress listens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Where other zones dial it (required for cross-zone use).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub advertised_address: String,
    #[serde(
        default,
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub port: u32,
    #[serde(
        default,
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub advertised_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
}

/// One distinct inbound tag set of a mesh behind an ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableService {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub instances: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_service: bool,
}

impl AvailableService {
    /// The `kuma.io/service` tag.
    pub fn service(&self) -> Option<&str> {
        self.tags.get(SERVICE_TAG).map(String::as_str)
    }
}

/// Whether a zone proxy listening on `address:port` (and, for an ingress, advertised on
/// `adv_address:adv_port`) uses `ip:port` (Kuma's `UsesInboundInterface`).
fn uses(ip: IpAddr, port: u32, listens: &[(&str, u32)]) -> bool {
    listens.iter().any(|(a, p)| *p == port && overlap(ip, a))
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl ZoneIngress {
    /// The networking section (default when absent).
    pub fn net(&self) -> ZoneIngressNetworking {
        self.networking.clone().unwrap_or_default()
    }

    /// Where other zones dial it, when both advertised address and port are set.
    pub fn public_address(&self) -> Option<(&str, u32)> {
        let n = self.networking.as_ref()?;
        (!n.advertised_address.is_empty() && n.advertised_port != 0)
            .then_some((n.advertised_address.as_str(), n.advertised_port))
    }

    /// An ingress of another zone than `local_zone` (synced here by global).
    pub fn is_remote(&self, local_zone: &str) -> bool {
        !self.zone.is_empty() && self.zone != local_zone
    }

    /// Kuma's `ZoneIngressResource.Validate`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        let n = self.net();
        if let Some(admin) = &n.admin
            && uses(
                LOOPBACK,
                admin.port,
                &[
                    (&n.address, n.port),
                    (&n.advertised_address, n.advertised_port),
                ],
            )
        {
            errs.add("networking.admin.port", "must differ from port");
        }
        if n.advertised_address.is_empty() && n.advertised_port != 0 {
            errs.add(
                "networking.advertisedAddress",
                "has to be defined with advertisedPort",
            );
        }
        if n.advertised_port == 0 && !n.advertised_address.is_empty() {
            errs.add(
                "networking.advertisedPort",
                "has to be defined with advertisedAddress",
            );
        }
        if !n.address.is_empty() {
            validate_address(&n.address, "networking.address.address", &mut errs);
        }
        if !n.advertised_address.is_empty() {
            validate_address(
                &n.advertised_address,
                "networking.advertisedAddress.address",
                &mut errs,
            );
        }
        validate_port(n.port, "networking.port", &mut errs);
        if n.advertised_port != 0 {
            validate_port(n.advertised_port, "networking.advertisedPort", &mut errs);
        }
        for (i, s) in self.available_services.iter().enumerate() {
            let path = format!("availableService[{i}].tags");
            validate_tag_keys_values(&s.tags, &path, &mut errs);
            if !s.tags.contains_key(SERVICE_TAG) {
                errs.add(path, format!("mandatory tag {SERVICE_TAG:?} is missing"));
            }
        }
        errs.into_result()
    }
}

/// The `availableServices` of a zone's ingresses (pure; Kuma's `GetAvailableServices`):
/// the distinct tag sets of the inbounds of `dataplanes` (`(mesh, Dataplane)` pairs) that
/// name a service, per mesh, each with the number of inbounds carrying it, sorted by mesh
/// then tags.
pub fn available_services<'a>(
    dataplanes: impl IntoIterator<Item = (&'a str, &'a super::Dataplane)>,
) -> Vec<AvailableService> {
    let mut counts: BTreeMap<(&str, &BTreeMap<String, String>), u32> = BTreeMap::new();
    for (mesh, dp) in dataplanes {
        for inbound in dp.inbounds() {
            if inbound.service().is_some() {
                *counts.entry((mesh, &inbound.tags)).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|((mesh, tags), instances)| AvailableService {
            tags: tags.clone(),
            instances,
            mesh: mesh.to_string(),
            external_service: false,
        })
        .collect()
}

/// ZoneEgress spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneEgress {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<ZoneEgressNetworking>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneEgressNetworking {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        default,
        deserialize_with = "wire::uint32",
        skip_serializing_if = "is_zero"
    )]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
}

impl ZoneEgress {
    /// The networking section (default when absent).
    pub fn net(&self) -> ZoneEgressNetworking {
        self.networking.clone().unwrap_or_default()
    }

    /// Kuma's `ZoneEgressResource.Validate`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        let n = self.net();
        if let Some(admin) = &n.admin
            && uses(LOOPBACK, admin.port, &[(&n.address, n.port)])
        {
            errs.add("networking.admin.port", "must differ from port");
        }
        if !n.address.is_empty() {
            validate_address(&n.address, "networking.address.address", &mut errs);
        }
        validate_port(n.port, "networking.port", &mut errs);
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::{Resource, ResourceType, Spec};
    use serde_json::{Value, json};

    fn violations(v: Value) -> Vec<(String, String)> {
        match Resource::decode(v, None) {
            Ok(_) => vec![],
            Err(e) => e
                .violations()
                .violations
                .iter()
                .map(|v| (v.field.clone(), v.message.clone()))
                .collect(),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Kuma's `zone_ingress_validator_test.go` table, row by row.
    #[test]
    fn zone_ingress_rows_as_kuma() {
        let svc = json!([{"tags": {"kuma.io/service": "backend", "version": "1", "region": "us"}},
            {"tags": {"kuma.io/service": "web", "version": "v2", "region": "eu"}}]);
        // Valid.
        assert_eq!(
            violations(json!({"type": "ZoneIngress", "name": "zi-1",
                "networking": {"address": "192.168.0.1", "advertisedAddress": "10.0.0.1",
                    "port": 10001, "advertisedPort": 1234}, "availableServices": svc})),
            vec![]
        );
        assert_eq!(
            violations(json!({"type": "ZoneIngress", "name": "zi-1",
                "networking": {"address": "192.168.0.1", "advertisedAddress": "10.0.0.1",
                    "advertisedPort": 1234}, "availableServices": svc})),
            pairs(&[("networking.port", "port must be in the range [1, 65535]")])
        );
        assert_eq!(
            violations(json!({"type": "ZoneIngress", "name": "zi-1",
                "networking": {"address": "192.168.0.1", "advertisedAddress": "!@#",
                    "port": 10001, "advertisedPort": 100000},
                "availableServices": [
                    {"tags": {"kuma.io/service": "backend", "version": "1", "region": "us"}},
                    {"tags": {"kuma.io/service": "web", "version": "v2", "region": "eu"}},
                    {"tags": {"version": "v2", "region": "eu"}},
                    {"tags": {"kuma.io/service": ""}},
                    {"tags": {"version": ""}}]})),
            pairs(&[
                (
                    "networking.advertisedAddress.address",
                    "address has to be valid IP address or domain name"
                ),
                (
                    "networking.advertisedPort",
                    "port must be in the range [1, 65535]"
                ),
                (
                    "availableService[2].tags",
                    "mandatory tag \"kuma.io/service\" is missing"
                ),
                (
                    "availableService[3].tags[\"kuma.io/service\"]",
                    "tag value must be non-empty"
                ),
                (
                    "availableService[4].tags[\"version\"]",
                    "tag value must be non-empty"
                ),
                (
                    "availableService[4].tags",
                    "mandatory tag \"kuma.io/service\" is missing"
                ),
            ])
        );
        assert_eq!(
            violations(json!({"type": "ZoneIngress", "name": "zi-1",
                "networking": {"admin": {"port": 10001}, "address": "127.0.0.1",
                    "advertisedAddress": "10.0.0.1", "port": 10001, "advertisedPort": 1234},
                "availableServices": svc})),
            pairs(&[("networking.admin.port", "must differ from port")])
        );
        assert_eq!(
            violations(json!({"type": "ZoneIngress", "name": "zi-1",
                "networking": {"address": "10.0.0.1", "advertisedAddress": "10.0.0.2", "port": 1}})),
            pairs(&[(
                "networking.advertisedPort",
                "has to be defined with advertisedAddress"
            )])
        );
    }

    #[test]
    fn zone_egress_rows_as_kuma() {
        assert_eq!(
            violations(json!({"type": "ZoneEgress", "name": "ze-1",
                "networking": {"address": "192.168.0.1", "port": 10002}})),
            vec![]
        );
        assert_eq!(
            violations(json!({"type": "ZoneEgress", "name": "ze-1",
                "networking": {"address": "192.168.0.1"}})),
            pairs(&[("networking.port", "port must be in the range [1, 65535]")])
        );
        assert_eq!(
            violations(json!({"type": "ZoneEgress", "name": "ze-1",
                "networking": {"admin": {"port": 10002}, "address": "0.0.0.0", "port": 10002}})),
            pairs(&[
                ("networking.admin.port", "must differ from port"),
                ("networking.address.address", "must not be 0.0.0.0 or ::"),
            ])
        );
    }

    #[test]
    fn available_services_count_distinct_tag_sets_per_mesh() {
        use crate::resource::Dataplane;
        let dp = |svc: &str, version: &str| -> Dataplane {
            serde_json::from_value(json!({"networking": {"address": "10.0.0.1", "inbound": [
                {"port": 80, "tags": {"kuma.io/service": svc, "version": version}},
                {"port": 81, "tags": {}}]}}))
            .unwrap()
        };
        let (a1, a2, b) = (dp("a", "1"), dp("a", "1"), dp("b", "2"));
        let out = super::available_services([("m2", &b), ("m1", &a1), ("m1", &a2), ("m2", &a1)]);
        let got: Vec<(String, String, u32)> = out
            .iter()
            .map(|s| {
                (
                    s.mesh.clone(),
                    s.service().unwrap().to_string(),
                    s.instances,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("m1".into(), "a".into(), 2),
                ("m2".into(), "a".into(), 1),
                ("m2".into(), "b".into(), 1)
            ]
        );
        assert_eq!(out[0].tags["version"], "1");
    }

    #[test]
    fn round_trip_and_scope() {
        let d = Resource::decode(
            json!({"type": "ZoneIngress", "name": "zi", "mesh": "x", "zone": "zone-2",
                "networking": {"address": "127.0.0.1", "port": "10001",
                    "advertisedAddress": "10.0.0.1", "advertisedPort": 10001},
                "availableServices": [{"tags": {"kuma.io/service": "b"}, "instances": 2,
                    "mesh": "default"}]}),
            None,
        )
        .unwrap();
        assert_eq!(d.resource.rtype(), ResourceType::ZoneIngress);
        assert_eq!(d.resource.meta.mesh, "");
        assert_eq!(
            d.warnings,
            ["field \"mesh\" ignored: ZoneIngress is not mesh-scoped"]
        );
        let Spec::ZoneIngress(zi) = &d.resource.spec else {
            panic!("a ZoneIngress")
        };
        assert_eq!(zi.public_address(), Some(("10.0.0.1", 10001)));
        assert!(zi.is_remote("zone-1") && !zi.is_remote("zone-2"));
        let out = d.resource.to_wire();
        assert_eq!(out["networking"]["port"], 10001);
        assert_eq!(out["availableServices"][0]["instances"], 2);
        assert!(out["availableServices"][0].get("externalService").is_none());
        assert_eq!(
            ResourceType::from_ws_path("zone-ingresses"),
            Some(ResourceType::ZoneIngress)
        );
        assert_eq!(
            ResourceType::from_cli_name("zone-egresses"),
            Some(ResourceType::ZoneEgress)
        );
        assert!(ResourceType::ZoneIngressInsight.is_read_only());
    }
}
