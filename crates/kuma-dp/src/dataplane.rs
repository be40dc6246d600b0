//! The proxy resource kuma-dp runs for: its type, and parsing of the rendered Universal YAML/JSON.
//!
//! [`ProxyType`] is `--proxy-type`; [`Resource::parse`] reads a rendered resource (YAML or
//! JSON, see [`crate::template`]) and checks the meta fields the bootstrap request needs
//! (`type`, `name`, `mesh`). Full validation is the control plane's job: the resource travels to
//! it as JSON text in the bootstrap request and the Envoy node metadata.

use std::fmt;
use std::str::FromStr;

/// What kind of proxy this kuma-dp runs (`--proxy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyType {
    /// A sidecar for a workload (resource type `Dataplane`).
    #[default]
    Dataplane,
    /// A zone ingress (resource type `ZoneIngress`).
    Ingress,
    /// A zone egress (resource type `ZoneEgress`).
    Egress,
}

impl ProxyType {
    /// The wire name used in the bootstrap request (`proxyType`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyType::Dataplane => "dataplane",
            ProxyType::Ingress => "ingress",
            ProxyType::Egress => "egress",
        }
    }

    /// The resource `type` this proxy type must be given.
    pub fn resource_type(self) -> &'static str {
        match self {
            ProxyType::Dataplane => "Dataplane",
            ProxyType::Ingress => "ZoneIngress",
            ProxyType::Egress => "ZoneEgress",
        }
    }

    /// Whether the resource lives in a mesh (zone proxies do not).
    pub fn is_mesh_scoped(self) -> bool {
        self == ProxyType::Dataplane
    }
}

impl fmt::Display for ProxyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProxyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dataplane" | "" => Ok(ProxyType::Dataplane),
            "ingress" => Ok(ProxyType::Ingress),
            "egress" => Ok(ProxyType::Egress),
            other => Err(format!(
                "invalid proxy type {other:?}: expected dataplane, ingress or egress"
            )),
        }
    }
}

/// Why a resource could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is neither valid YAML nor JSON.
    #[error("could not parse the resource as YAML or JSON: {0}")]
    Parse(String),
    /// The document is not a mapping.
    #[error("the resource must be a YAML/JSON object")]
    NotAnObject,
    /// A required meta field is missing or not a non-empty string.
    #[error("the resource has no {0:?} field (a non-empty string is required)")]
    MissingField(&'static str),
    /// The resource `type` does not match `--proxy-type`.
    #[error(
        "resource type {actual:?} does not match --proxy-type {proxy_type} (expected type {expected:?})"
    )]
    TypeMismatch {
        /// `type` as written in the resource.
        actual: String,
        /// The `--proxy-type`.
        proxy_type: ProxyType,
        /// The type that proxy type requires.
        expected: &'static str,
    },
}

/// A rendered and parsed proxy resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `type` (`Dataplane`, `ZoneIngress`, `ZoneEgress`).
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `mesh`; empty for zone proxies.
    pub mesh: String,
    /// The whole resource as JSON.
    pub value: serde_json::Value,
}

impl Resource {
    /// Whether the resource asks for transparent proxying (`networking.transparentProxying`):
    /// only such proxies get DNS records from the control plane.
    pub fn transparent_proxying(&self) -> bool {
        self.value["networking"]["transparentProxying"].is_object()
    }

    /// Parses a rendered resource and checks it against `proxy_type`.
    pub fn parse(text: &str, proxy_type: ProxyType) -> Result<Self, Error> {
        // JSON is YAML, but serde_json gives the better error for text that looks like JSON.
        let value: serde_json::Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| Error::Parse(e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| Error::Parse(e.to_string()))?
        };
        let object = value.as_object().ok_or(Error::NotAnObject)?;
        let field = |key: &'static str| -> Option<String> {
            object
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let kind = field("type").ok_or(Error::MissingField("type"))?;
        if kind != proxy_type.resource_type() {
            return Err(Error::TypeMismatch {
                actual: kind,
                proxy_type,
                expected: proxy_type.resource_type(),
            });
        }
        let name = field("name").ok_or(Error::MissingField("name"))?;
        let mesh = match field("mesh") {
            Some(mesh) => mesh,
            None if proxy_type.is_mesh_scoped() => return Err(Error::MissingField("mesh")),
            None => String::new(),
        };
        Ok(Resource {
            kind,
            name,
            mesh,
            value,
        })
    }

    /// The resource as compact JSON text, as sent in `dataplaneResource`.
    pub fn to_json(&self) -> String {
        self.value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 8080\n    tags:\n      kuma.io/service: web\n";

    #[test]
    fn parses_yaml() {
        let r = Resource::parse(YAML, ProxyType::Dataplane).unwrap();
        assert_eq!(r.kind, "Dataplane");
        assert_eq!(r.name, "dp-1");
        assert_eq!(r.mesh, "default");
        assert_eq!(r.value["networking"]["inbound"][0]["port"], 8080);
        assert_eq!(
            r.to_json(),
            r#"{"type":"Dataplane","mesh":"default","name":"dp-1","networking":{"address":"127.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}"#
        );
    }

    #[test]
    fn parses_json() {
        let r = Resource::parse(
            r#"{"type":"Dataplane","mesh":"m","name":"n"}"#,
            ProxyType::Dataplane,
        )
        .unwrap();
        assert_eq!((r.name.as_str(), r.mesh.as_str()), ("n", "m"));
        assert!(!r.transparent_proxying());
        let tp = Resource::parse(
            r#"{"type":"Dataplane","mesh":"m","name":"n","networking":{"transparentProxying":{"redirectPortInbound":15006}}}"#,
            ProxyType::Dataplane,
        )
        .unwrap();
        assert!(tp.transparent_proxying());
    }

    #[test]
    fn checks_type_and_meta() {
        assert!(matches!(
            Resource::parse(YAML, ProxyType::Ingress),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            Resource::parse("type: Dataplane\nname: x\n", ProxyType::Dataplane),
            Err(Error::MissingField("mesh"))
        ));
        assert!(matches!(
            Resource::parse("mesh: m\nname: x\n", ProxyType::Dataplane),
            Err(Error::MissingField("type"))
        ));
        assert!(matches!(
            Resource::parse("- a\n", ProxyType::Dataplane),
            Err(Error::NotAnObject)
        ));
        let ingress = Resource::parse("type: ZoneIngress\nname: zi\n", ProxyType::Ingress).unwrap();
        assert_eq!(ingress.mesh, "");
    }

    #[test]
    fn proxy_type_round_trips() {
        for t in [ProxyType::Dataplane, ProxyType::Ingress, ProxyType::Egress] {
            assert_eq!(t.as_str().parse::<ProxyType>(), Ok(t));
        }
        assert!("sidecar".parse::<ProxyType>().is_err());
    }
}
