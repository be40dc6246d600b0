//! What one simulated proxy holds and when it got it: the configuration received on its
//! current stream (clusters, listeners, endpoints, secrets, per type the version and arrival
//! time) and a history of arrivals. Resources are decoded just enough to behave like Envoy
//! (which EDS clusters and SDS secrets to ask for) and to answer scenario questions ("has
//! endpoint X", "has a certificate signed by CA Y", "its inbound listener names principal Z").
//!
//! A [`Goal`] is a predicate on [`Config`] installed by a scenario; the stream task checks it
//! after every applied response and records the instant it first holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, address, data_source, socket_address::PortSpecifier,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
    common_tls_context::ValidationContextType, secret,
};
use prost::Message;
use tokio::sync::Notify;

use crate::topology::Expected;

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Short name of a type URL (`cds`, `lds`, `eds`, `sds`, else the URL).
pub fn short(type_url: &str) -> &'static str {
    match type_url {
        CDS => "cds",
        LDS => "lds",
        EDS => "eds",
        SDS => "sds",
        _ => "other",
    }
}

/// A received cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    /// EDS over ADS: the ClusterLoadAssignment name to subscribe to.
    pub eds: Option<String>,
    /// SDS secrets its transport socket references.
    pub secrets: Vec<String>,
    pub hash: u64,
}

/// A received listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerInfo {
    pub hash: u64,
    /// SDS secrets its filter chains reference.
    pub secrets: Vec<String>,
    /// Every `spiffe://...` string in it (RBAC principals, SAN matchers).
    pub spiffe: BTreeSet<String>,
}

/// A received SDS secret.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretInfo {
    /// Hash of its content.
    pub hash: u64,
    /// Certificate chain (identity) or trusted CA (validation context), PEM.
    pub pem: String,
    /// An identity (certificate + key) rather than a validation context.
    pub identity: bool,
}

/// The last response of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeInfo {
    pub version: String,
    pub at: Instant,
    pub responses: u64,
}

/// The configuration a proxy holds on its current stream.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub clusters: BTreeMap<String, ClusterInfo>,
    pub listeners: BTreeMap<String, ListenerInfo>,
    /// ClusterLoadAssignment name → endpoints (`ip:port`).
    pub endpoints: HashMap<String, BTreeSet<String>>,
    pub secrets: HashMap<String, SecretInfo>,
    pub types: HashMap<&'static str, TypeInfo>,
    /// NACKs this proxy sent (resources it could not decode).
    pub nacks: u64,
}

/// One arrival of configuration, for the history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Arrival {
    /// Milliseconds since the fleet started.
    pub at_ms: f64,
    pub r#type: &'static str,
    pub version: String,
    /// Resources in the response (SotW) or changed/removed (delta).
    pub resources: usize,
    pub removed: usize,
}

pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Every `spiffe://` string in an encoded message: protobuf carries strings as raw bytes, so
/// they can be found without decoding every nested `Any`.
fn spiffe_strings(bytes: &[u8]) -> BTreeSet<String> {
    const NEEDLE: &[u8] = b"spiffe://";
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + NEEDLE.len() <= bytes.len() {
        if &bytes[i..i + NEEDLE.len()] == NEEDLE {
            let end = bytes[i..]
                .iter()
                .position(|b| !b.is_ascii_graphic())
                .map_or(bytes.len(), |p| i + p);
            out.insert(String::from_utf8_lossy(&bytes[i..end]).into_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn tls_secrets(ts: Option<&TransportSocket>, downstream: bool) -> Vec<String> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) =
        ts.and_then(|t| t.config_type.as_ref())
    else {
        return Vec::new();
    };
    let common: Option<CommonTlsContext> = if downstream {
        DownstreamTlsContext::decode(any.value.as_slice())
            .ok()
            .and_then(|c| c.common_tls_context)
    } else {
        UpstreamTlsContext::decode(any.value.as_slice())
            .ok()
            .and_then(|c| c.common_tls_context)
    };
    let Some(common) = common else {
        return Vec::new();
    };
    let mut names: Vec<String> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.clone())
        .collect();
    match common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => names.push(s.name),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            names.extend(c.validation_context_sds_secret_config.map(|s| s.name));
        }
        _ => {}
    }
    names
}

fn pem_of(ds: Option<&DataSource>) -> String {
    match ds.and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(data_source::Specifier::InlineString(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Resource decoding failures (answered with a NACK, as Envoy does).
#[derive(Debug, thiserror::Error)]
#[error("{type_url}: {source}")]
pub struct DecodeError {
    type_url: String,
    #[source]
    source: prost::DecodeError,
}

/// A decoded resource of one of the four types.
#[derive(Clone)]
pub enum Decoded {
    Cluster(String, ClusterInfo),
    Listener(String, ListenerInfo),
    Endpoints(String, BTreeSet<String>),
    Secret(String, SecretInfo),
    /// A type this proxy does not track.
    Other,
}

/// Decodes one resource of `type_url`.
pub fn decode(type_url: &str, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let err = |source| DecodeError {
        type_url: type_url.into(),
        source,
    };
    Ok(match type_url {
        CDS => {
            let c = Cluster::decode(bytes).map_err(err)?;
            let eds = c.eds_cluster_config.as_ref().map(|e| {
                if e.service_name.is_empty() {
                    c.name.clone()
                } else {
                    e.service_name.clone()
                }
            });
            let info = ClusterInfo {
                eds,
                secrets: tls_secrets(c.transport_socket.as_ref(), false),
                hash: hash_bytes(bytes),
            };
            Decoded::Cluster(c.name, info)
        }
        LDS => {
            let l = Listener::decode(bytes).map_err(err)?;
            let mut secrets = Vec::new();
            for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                secrets.extend(tls_secrets(chain.transport_socket.as_ref(), true));
            }
            secrets.sort();
            secrets.dedup();
            let info = ListenerInfo {
                hash: hash_bytes(bytes),
                secrets,
                spiffe: spiffe_strings(bytes),
            };
            Decoded::Listener(l.name, info)
        }
        EDS => {
            let cla = ClusterLoadAssignment::decode(bytes).map_err(err)?;
            let eps = cla
                .endpoints
                .iter()
                .flat_map(|l| &l.lb_endpoints)
                .filter_map(|e| match &e.host_identifier {
                    Some(HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
                    _ => None,
                })
                .filter_map(|a| match &a.address {
                    Some(address::Address::SocketAddress(sa)) => {
                        let port = match sa.port_specifier {
                            Some(PortSpecifier::PortValue(p)) => p,
                            _ => 0,
                        };
                        Some(format!("{}:{port}", sa.address))
                    }
                    _ => None,
                })
                .collect();
            Decoded::Endpoints(cla.cluster_name, eps)
        }
        SDS => {
            let s = Secret::decode(bytes).map_err(err)?;
            let (pem, identity) = match &s.r#type {
                Some(secret::Type::TlsCertificate(t)) => {
                    (pem_of(t.certificate_chain.as_ref()), true)
                }
                Some(secret::Type::ValidationContext(v)) => (pem_of(v.trusted_ca.as_ref()), false),
                _ => (String::new(), false),
            };
            Decoded::Secret(
                s.name,
                SecretInfo {
                    hash: hash_bytes(bytes),
                    pem,
                    identity,
                },
            )
        }
        _ => Decoded::Other,
    })
}

impl Config {
    /// Stores one decoded resource.
    pub fn upsert(&mut self, d: Decoded) {
        match d {
            Decoded::Cluster(n, c) => {
                self.clusters.insert(n, c);
            }
            Decoded::Listener(n, l) => {
                self.listeners.insert(n, l);
            }
            Decoded::Endpoints(n, e) => {
                self.endpoints.insert(n, e);
            }
            Decoded::Secret(n, s) => {
                self.secrets.insert(n, s);
            }
            Decoded::Other => {}
        }
    }

    /// Removes a resource of `type_url` by name.
    pub fn remove(&mut self, type_url: &str, name: &str) {
        match type_url {
            CDS => {
                self.clusters.remove(name);
            }
            LDS => {
                self.listeners.remove(name);
            }
            EDS => {
                self.endpoints.remove(name);
            }
            SDS => {
                self.secrets.remove(name);
            }
            _ => {}
        }
    }

    /// Keeps only the resources of `type_url` named in `keep` (a SotW response of a wildcard
    /// type replaces everything of that type).
    pub fn retain(&mut self, type_url: &str, keep: &BTreeSet<String>) {
        match type_url {
            CDS => self.clusters.retain(|n, _| keep.contains(n)),
            LDS => self.listeners.retain(|n, _| keep.contains(n)),
            _ => {}
        }
    }

    /// ClusterLoadAssignments to subscribe to: one per EDS cluster.
    pub fn wanted_endpoints(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|c| c.eds.clone())
            .collect()
    }

    /// Secrets to subscribe to: every one a cluster or listener references.
    pub fn wanted_secrets(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .flat_map(|c| c.secrets.iter().cloned())
            .chain(
                self.listeners
                    .values()
                    .flat_map(|l| l.secrets.iter().cloned()),
            )
            .collect()
    }

    /// Drops endpoints and secrets nothing references any more (Envoy forgets them too).
    pub fn forget_unreferenced(&mut self) {
        let eds = self.wanted_endpoints();
        self.endpoints.retain(|n, _| eds.contains(n));
        let sds = self.wanted_secrets();
        self.secrets.retain(|n, _| sds.contains(n));
    }

    /// Whether this is a complete configuration: exactly the expected EDS clusters, each with
    /// exactly its expected endpoints, the expected number of listeners, and every referenced
    /// secret present (and, with `mtls`, at least an identity and a CA).
    pub fn complete(&self, want: &Expected, mtls: bool) -> bool {
        if self.listeners.len() != want.listeners {
            return false;
        }
        let eds = self.wanted_endpoints();
        if eds.len() != want.clusters.len() {
            return false;
        }
        for (name, eps) in &want.clusters {
            if !eds.contains(name) || self.endpoints.get(name) != Some(eps) {
                return false;
            }
        }
        let sds = self.wanted_secrets();
        if mtls && sds.is_empty() {
            return false;
        }
        sds.iter().all(|s| self.secrets.contains_key(s))
    }

    /// What is missing from a complete configuration, for error messages.
    pub fn describe_gap(&self, want: &Expected) -> String {
        let eds = self.wanted_endpoints();
        let mut gaps = Vec::new();
        if self.listeners.len() != want.listeners {
            gaps.push(format!(
                "{} listeners of {}",
                self.listeners.len(),
                want.listeners
            ));
        }
        for (name, eps) in &want.clusters {
            if !eds.contains(name) {
                gaps.push(format!("no cluster {name}"));
            } else if self.endpoints.get(name) != Some(eps) {
                gaps.push(format!(
                    "{name} has {:?}, wants {:?}",
                    self.endpoints.get(name),
                    eps
                ));
            }
        }
        for s in self.wanted_secrets() {
            if !self.secrets.contains_key(&s) {
                gaps.push(format!("no secret {s}"));
            }
        }
        if gaps.is_empty() {
            "complete".into()
        } else {
            gaps.join("; ")
        }
    }

    /// The identity certificate (first identity secret), PEM.
    pub fn identity_pem(&self) -> Option<&str> {
        self.secrets
            .values()
            .find(|s| s.identity)
            .map(|s| s.pem.as_str())
    }

    /// The trusted mesh CA (first validation-context secret), PEM.
    pub fn ca_pem(&self) -> Option<&str> {
        self.secrets
            .values()
            .find(|s| !s.identity)
            .map(|s| s.pem.as_str())
    }

    /// Union of the `spiffe://` strings of the listeners whose names start with `prefix`.
    pub fn listener_spiffe(&self, prefix: &str) -> BTreeSet<&str> {
        self.listeners
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .flat_map(|(_, l)| l.spiffe.iter().map(String::as_str))
            .collect()
    }
}

/// Whether the leaf certificate of `cert_pem` is signed by the certificate `ca_pem`.
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    let parse = |pem: &str| {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .ok()
            .map(|(_, p)| p)
    };
    let (Some(cert), Some(ca)) = (parse(cert_pem), parse(ca_pem)) else {
        return false;
    };
    let (Ok(cert), Ok(ca)) = (cert.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// A predicate on a proxy's configuration.
pub type Check = Arc<dyn Fn(&Config) -> bool + Send + Sync>;

/// Counts the proxies of a goal still to meet it, and wakes the waiter.
#[derive(Debug, Default)]
pub struct GoalSet {
    remaining: AtomicUsize,
    notify: Notify,
}

impl GoalSet {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(n),
            notify: Notify::new(),
        })
    }

    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }

    fn met_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until every proxy met the goal (`true`) or `deadline` passed (`false`).
    pub async fn wait(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.notify.notified();
            if self.remaining() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.remaining() == 0;
            }
        }
    }
}

/// A goal installed on one proxy.
pub struct Goal {
    pub check: Check,
    pub met: Option<Instant>,
    pub set: Arc<GoalSet>,
}

impl Goal {
    /// Checks the goal against `config`; records `now` the first time it holds.
    pub fn evaluate(&mut self, config: &Config, now: Instant) {
        if self.met.is_none() && (self.check)(config) {
            self.met = Some(now);
            self.set.met_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_spiffe_strings_in_bytes() {
        let mut b = b"\x0a\x12spiffe://default/a\x12\x05other".to_vec();
        b.extend_from_slice(b"\x22spiffe://default/b");
        let got = spiffe_strings(&b);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec!["spiffe://default/a", "spiffe://default/b"]
        );
    }

    #[test]
    fn goals_count_down() {
        let set = GoalSet::new(2);
        let mut g = Goal {
            check: Arc::new(|c: &Config| c.nacks == 0),
            met: None,
            set: set.clone(),
        };
        let now = Instant::now();
        g.evaluate(&Config::default(), now);
        g.evaluate(&Config::default(), now);
        assert_eq!(set.remaining(), 1, "met once only");
    }
}
