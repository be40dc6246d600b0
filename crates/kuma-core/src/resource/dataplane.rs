//! `Dataplane`: one proxy next to one workload, with its inbounds (what it serves, tagged with
//! `kuma.io/service`) and outbounds (what it consumes, on local ports).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::name;
use crate::validate::{ValidationError, Violations};

/// Tag naming the service of an inbound or the destination of an outbound.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// Tag naming the protocol of an inbound.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
/// Tag the zone control plane adds to every inbound.
pub const ZONE_TAG: &str = "kuma.io/zone";
/// Protocols an inbound may declare.
pub const PROTOCOLS: [&str; 5] = ["tcp", "http", "http2", "grpc", "kafka"];

/// Dataplane spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dataplane {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxying: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default)]
    pub port: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inbound {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outbound {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

impl Inbound {
    pub fn service(&self) -> Option<&str> {
        self.tags.get(SERVICE_TAG).map(String::as_str)
    }

    /// `kuma.io/protocol`, `tcp` when absent.
    pub fn protocol(&self) -> &str {
        self.tags.get(PROTOCOL_TAG).map_or("tcp", String::as_str)
    }

    /// IP Envoy binds for this inbound.
    pub fn listener_address<'a>(&'a self, net: &'a Networking) -> &'a str {
        self.address.as_deref().unwrap_or(&net.address)
    }

    /// IP other proxies dial to reach this inbound.
    pub fn advertised_address<'a>(&'a self, net: &'a Networking) -> &'a str {
        net.advertised_address
            .as_deref()
            .unwrap_or_else(|| self.listener_address(net))
    }

    /// Where Envoy forwards inbound traffic: the workload.
    pub fn workload_address<'a>(&'a self, net: &'a Networking) -> &'a str {
        self.service_address
            .as_deref()
            .unwrap_or_else(|| self.listener_address(net))
    }

    pub fn workload_port(&self) -> u32 {
        self.service_port.unwrap_or(self.port)
    }
}

impl Outbound {
    pub fn service(&self) -> Option<&str> {
        self.tags.as_ref()?.get(SERVICE_TAG).map(String::as_str)
    }

    /// Local address Envoy binds (127.0.0.1 by default).
    pub fn address(&self) -> &str {
        self.address.as_deref().unwrap_or("127.0.0.1")
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

    /// First `kuma.io/service` value in sorted order (Envoy `node.cluster`), `unknown` if none.
    pub fn identifying_service(&self) -> String {
        let mut services: Vec<&str> = self
            .inbounds()
            .iter()
            .filter_map(Inbound::service)
            .collect();
        services.sort_unstable();
        services
            .first()
            .map_or_else(|| "unknown".into(), |s| s.to_string())
    }

    /// Adds `kuma.io/zone: <zone>` to every inbound (what a zone CP does on every write).
    pub fn set_zone_tag(&mut self, zone: &str) {
        if let Some(net) = self.networking.as_mut() {
            for inb in &mut net.inbound {
                inb.tags.insert(ZONE_TAG.into(), zone.into());
            }
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        let Some(net) = &self.networking else {
            errs.add("networking", "must be defined");
            return errs.into_result();
        };
        if net.address.is_empty() {
            errs.add("networking.address", "cannot be empty");
        } else {
            address_problem(&net.address, "networking.address", &mut errs);
        }
        if let Some(a) = &net.advertised_address {
            address_problem(a, "networking.advertisedAddress", &mut errs);
        }
        if net.inbound.is_empty() && net.gateway.is_none() {
            errs.add(
                "networking.inbound",
                "has to contain at least one inbound interface or gateway",
            );
        }
        let admin_port = net.admin.as_ref().map(|a| a.port).filter(|p| *p != 0);
        if let Some(p) = admin_port
            && p > 65535
        {
            errs.add("networking.admin.port", "must be in the range [1, 65535]");
        }
        let mut seen: HashMap<(String, u32), usize> = HashMap::new();
        for (i, inb) in net.inbound.iter().enumerate() {
            let p = format!("networking.inbound[{i}]");
            port_problem(inb.port, &format!("{p}.port"), &mut errs);
            if let Some(sp) = inb.service_port {
                port_problem(sp, &format!("{p}.servicePort"), &mut errs);
            }
            if let Some(a) = &inb.address {
                address_problem(a, &format!("{p}.address"), &mut errs);
            }
            if let Some(a) = &inb.service_address {
                address_problem(a, &format!("{p}.serviceAddress"), &mut errs);
            }
            let key = (inb.listener_address(net).to_string(), inb.port);
            if let Some(first) = seen.insert(key, i) {
                errs.add(
                    format!("{p}.port"),
                    format!(
                        "duplicate inbound port {}: already used by networking.inbound[{first}]",
                        inb.port
                    ),
                );
            }
            if inb.workload_address(net) == inb.listener_address(net)
                && inb.workload_port() == inb.port
            {
                errs.add(
                    format!("{p}.servicePort"),
                    "serviceAddress:servicePort must differ from address:port (Envoy would forward to itself)",
                );
            }
            if admin_port == Some(inb.port) {
                errs.add(
                    format!("{p}.port"),
                    "must differ from networking.admin.port",
                );
            }
            tags_problems(&inb.tags, &format!("{p}.tags"), &mut errs);
            match inb.service() {
                None => errs.add(format!("{p}.tags"), "tag \"kuma.io/service\" has to exist"),
                Some("") => errs.add(format!("{p}.tags[\"kuma.io/service\"]"), "cannot be empty"),
                Some(_) => {}
            }
            if let Some(proto) = inb.tags.get(PROTOCOL_TAG)
                && !PROTOCOLS.contains(&proto.as_str())
            {
                errs.add(
                    format!("{p}.tags[\"kuma.io/protocol\"]"),
                    format!("must be one of: {}", PROTOCOLS.join(", ")),
                );
            }
            if let Some(s) = &inb.state
                && !matches!(s.as_str(), "Ready" | "NotReady" | "Ignored")
            {
                errs.add(
                    format!("{p}.state"),
                    "must be one of: Ready, NotReady, Ignored",
                );
            }
        }
        let mut seen_out: HashMap<(String, u32), usize> = HashMap::new();
        for (i, out) in net.outbound.iter().enumerate() {
            let p = format!("networking.outbound[{i}]");
            port_problem(out.port, &format!("{p}.port"), &mut errs);
            if let Some(a) = &out.address {
                address_problem(a, &format!("{p}.address"), &mut errs);
            }
            if let Some(first) = seen_out.insert((out.address().to_string(), out.port), i) {
                errs.add(
                    format!("{p}.port"),
                    format!(
                        "duplicate outbound port {}: already used by networking.outbound[{first}]",
                        out.port
                    ),
                );
            }
            if admin_port == Some(out.port) {
                errs.add(
                    format!("{p}.port"),
                    "must differ from networking.admin.port",
                );
            }
            match (&out.tags, &out.backend_ref) {
                (Some(_), Some(_)) => {
                    errs.add(p.clone(), "either tags or backendRef must be set, not both")
                }
                (None, None) => {
                    errs.add(format!("{p}.tags"), "either tags or backendRef must be set")
                }
                (Some(tags), None) => {
                    tags_problems(tags, &format!("{p}.tags"), &mut errs);
                    if out.service().is_none_or(str::is_empty) {
                        errs.add(format!("{p}.tags"), "tag \"kuma.io/service\" has to exist");
                    }
                }
                (None, Some(_)) => {}
            }
        }
        errs.into_result()
    }
}

fn port_problem(port: u32, field: &str, errs: &mut Violations) {
    if port == 0 || port > 65535 {
        errs.add(field, "must be in the range [1, 65535]");
    }
}

fn address_problem(addr: &str, field: &str, errs: &mut Violations) {
    match addr.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => errs.add(field, "must not be 0.0.0.0 or ::"),
        Ok(_) => {}
        Err(_) if name::is_dns_subdomain(addr) => {}
        Err(_) => errs.add(field, "must be a valid IP address or hostname"),
    }
}

fn tags_problems(tags: &BTreeMap<String, String>, field: &str, errs: &mut Violations) {
    for (k, v) in tags {
        if !name::is_tag_token(k) {
            errs.add(
                format!("{field}[\"{k}\"]"),
                "tag name must be non-empty and without whitespace",
            );
        }
        if !name::is_tag_token(v) {
            errs.add(
                format!("{field}[\"{k}\"]"),
                "tag value must be non-empty and without whitespace",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dp(v: Value) -> Dataplane {
        serde_json::from_value(v).unwrap()
    }

    fn fields(d: &Dataplane) -> Vec<String> {
        d.validate()
            .unwrap_err()
            .violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn valid_dataplane() {
        let d = dp(
            json!({"networking": {"address": "127.0.0.2", "inbound": [{"port": 8000, "servicePort": 80, "tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}}],
            "outbound": [{"port": 10000, "tags": {"kuma.io/service": "redis"}}]}}),
        );
        d.validate().unwrap();
        assert_eq!(d.identifying_service(), "backend");
    }

    #[test]
    fn missing_service_tag_and_duplicate_port() {
        let d = dp(json!({"networking": {"address": "127.0.0.2", "inbound": [
            {"port": 8000, "servicePort": 80, "tags": {"kuma.io/service": "a"}},
            {"port": 8000, "servicePort": 81, "tags": {"app": "x"}}]}}));
        let f = fields(&d);
        assert!(
            f.contains(&"networking.inbound[1].port".to_string()),
            "{f:?}"
        );
        assert!(
            f.contains(&"networking.inbound[1].tags".to_string()),
            "{f:?}"
        );
    }

    #[test]
    fn bad_addresses_and_protocol() {
        let d = dp(json!({"networking": {"address": "0.0.0.0", "inbound": [
            {"port": 0, "tags": {"kuma.io/service": "a", "kuma.io/protocol": "smtp"}}]}}));
        let f = fields(&d);
        assert!(f.contains(&"networking.address".to_string()));
        assert!(f.contains(&"networking.inbound[0].port".to_string()));
        assert!(f.contains(&"networking.inbound[0].tags[\"kuma.io/protocol\"]".to_string()));
    }

    #[test]
    fn zone_tag_added() {
        let mut d = dp(
            json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "a"}}]}}),
        );
        d.set_zone_tag("default");
        assert_eq!(d.inbounds()[0].tags[ZONE_TAG], "default");
    }
}
