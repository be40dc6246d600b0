//! The DNS table: the mesh's names and their virtual IPs, as the control plane publishes them
//! on Envoy's dynamic-config listener (`GET /dns`).
//!
//! The wire shape is Kuma's `pkg/dns/dpapi` `DNSProxyConfig` plus our `domain`:
//! `{"records":[{"name":"backend.mesh","ips":["240.0.0.1","::ffff:240.0.0.1"]}],"ttl":30,
//! "domain":"mesh"}`. [`Table::from_json`] normalises names (lower case, no trailing dot) so a
//! lookup is one hash probe; a [`Table`] never changes once built: a new one replaces it whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// The domain the mesh's names live under when the control plane does not say.
pub const DEFAULT_DOMAIN: &str = "mesh";
/// The answer TTL when the control plane does not say (Kuma's).
pub const DEFAULT_TTL: u32 = 30;

/// Why a `/dns` body is not a table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not the expected JSON.
    #[error("invalid DNS table: {0}")]
    Json(#[from] serde_json::Error),
}

/// The addresses of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Answers to `A` queries.
    pub v4: Vec<Ipv4Addr>,
    /// Answers to `AAAA` queries (the control plane sends `::ffff:<VIP>` when the proxy has
    /// IPv6).
    pub v6: Vec<Ipv6Addr>,
}

/// An immutable DNS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    records: HashMap<String, Entry>,
    ttl: u32,
    domain: String,
}

impl Default for Table {
    /// An empty table for the default domain.
    fn default() -> Self {
        Table {
            records: HashMap::new(),
            ttl: DEFAULT_TTL,
            domain: DEFAULT_DOMAIN.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    records: Vec<WireRecord>,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    domain: Option<String>,
    // Kuma's `extraLabels` (metric labels) and anything else are ignored.
}

#[derive(Deserialize)]
struct WireRecord {
    name: String,
    #[serde(default)]
    ips: Vec<String>,
}

impl Table {
    /// Parses a `/dns` body. An IP that does not parse is skipped with a warning (as Kuma
    /// does); a name listed twice gets the addresses of both entries.
    pub fn from_json(body: &[u8]) -> Result<Self, Error> {
        let wire: Wire = serde_json::from_slice(body)?;
        let mut records: HashMap<String, Entry> = HashMap::with_capacity(wire.records.len());
        for record in wire.records {
            let name = normalize(&record.name);
            if name.is_empty() {
                tracing::warn!("DNS table: a record without a name, skipped");
                continue;
            }
            let entry = records.entry(name).or_default();
            for ip in &record.ips {
                match ip.parse::<IpAddr>() {
                    Ok(IpAddr::V4(v4)) if !entry.v4.contains(&v4) => entry.v4.push(v4),
                    Ok(IpAddr::V6(v6)) if !entry.v6.contains(&v6) => entry.v6.push(v6),
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(name = %record.name, ip = %ip, "DNS table: invalid IP, skipped")
                    }
                }
            }
        }
        let domain = wire
            .domain
            .map(|d| normalize(&d))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
        Ok(Table {
            records,
            ttl: wire.ttl.unwrap_or(DEFAULT_TTL),
            domain,
        })
    }

    /// The entry of `name` (any case, with or without the trailing dot).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.records.get(&normalize(name))
    }

    /// Whether `name` is the mesh domain or a name under it (`x.mesh`), any case.
    pub fn is_in_domain(&self, name: &str) -> bool {
        in_domain(&normalize(name), &self.domain)
    }

    /// TTL of every answer, in seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The mesh domain (normalised, e.g. `mesh`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table has no names.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Lower case, without the trailing dot: the one form names are compared in.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the normalised `name` is `domain` or under it.
pub fn in_domain(name: &str, domain: &str) -> bool {
    name == domain
        || (name.len() > domain.len()
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"records":[
        {"name":"backend.mesh","ips":["240.0.0.1","::ffff:240.0.0.1"]},
        {"name":"Web_Front.mesh.","ips":["240.0.0.2"]},
        {"name":"web_front.mesh","ips":["240.0.0.2","240.0.0.9","nonsense"]},
        {"name":"v6only.mesh","ips":["fd00::1"]}
    ],"ttl":30,"domain":"mesh","extraLabels":{"a":"b"}}"#;

    #[test]
    fn parses_and_normalises() {
        let t = Table::from_json(BODY.as_bytes()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.ttl(), 30);
        assert_eq!(t.domain(), "mesh");
        let b = t.get("BACKEND.mesh.").unwrap();
        assert_eq!(b.v4, vec![Ipv4Addr::new(240, 0, 0, 1)]);
        assert_eq!(b.v6, vec!["::ffff:240.0.0.1".parse::<Ipv6Addr>().unwrap()]);
        // Listed twice (case and trailing dot differ): merged, duplicates and bad IPs dropped.
        let w = t.get("web_front.mesh").unwrap();
        assert_eq!(
            w.v4,
            vec![Ipv4Addr::new(240, 0, 0, 2), Ipv4Addr::new(240, 0, 0, 9)]
        );
        assert!(w.v6.is_empty());
        assert!(t.get("v6only.mesh").unwrap().v4.is_empty());
        assert!(t.get("nothere.mesh").is_none());
    }

    #[test]
    fn defaults_and_domain() {
        let t = Table::from_json(br#"{"records":[]}"#).unwrap();
        assert_eq!((t.ttl(), t.domain()), (30, "mesh"));
        assert!(t.is_in_domain("x.mesh"));
        assert!(t.is_in_domain("a.b.MESH."));
        assert!(t.is_in_domain("mesh"));
        assert!(!t.is_in_domain("xmesh"));
        assert!(!t.is_in_domain("mesh.example.com"));
        let t = Table::from_json(br#"{"records":[],"ttl":5,"domain":"Corp.Local."}"#).unwrap();
        assert_eq!((t.ttl(), t.domain()), (5, "corp.local"));
        assert!(t.is_in_domain("svc.corp.local"));
        assert!(!t.is_in_domain("svc.mesh"));
        assert!(Table::from_json(b"not json").is_err());
        assert!(Table::from_json(br#"{"records":[{"ips":[]}]}"#).is_err());
    }
}
