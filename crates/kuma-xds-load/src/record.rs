//! What one simulated proxy holds and when it got it: the configuration received on its
//! current stream (clusters, listeners, endpoints, secrets, per type the version and arrival
//! time) and a history of arrivals. Resources are decoded just enough to behave like Envoy
//! (which EDS clusters and SDS secrets to ask for) and to answer scenario questions ("has
//! endpoint X", "has a certificate signed by CA Y", "its inbound listener names principal Z").
//!
//! Like Envoy, a proxy distinguishes what it received from what it serves ("Eventual
//! consistency considerations" in Envoy's xDS protocol docs): a cluster or listener that is
//! added or changed is *warming* until every resource it depends on has arrived *after* it
//! (the ClusterLoadAssignment of an EDS cluster; the SDS secrets of its TLS contexts; the RDS
//! route configurations of a listener), and only then replaces the active one. A warming
//! resource whose dependencies do not arrive within [`INIT_FETCH_TIMEOUT`] becomes active
//! anyway and is counted (Envoy's `init_fetch_timeout`). A dependency that arrived before the
//! change does not count (Envoy shares secret providers between users of a name; the harness
//! is deliberately stricter).
//!
//! A [`Goal`] is a predicate on [`Config`] installed by a scenario; the stream task checks it
//! after every applied response (and when a warming times out) and records the instant it
//! first holds. Goals look at the active configuration only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, address, data_source, socket_address::PortSpecifier,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
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
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Envoy's default `initial_fetch_timeout`: how long a warming cluster or listener waits for
/// its dependencies before it is used without them.
pub const INIT_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Short name of a type URL (`cds`, `lds`, `eds`, `sds`, else the URL).
pub fn short(type_url: &str) -> &'static str {
    match type_url {
        CDS => "cds",
        LDS => "lds",
        EDS => "eds",
        SDS => "sds",
        RDS => "rds",
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
    /// RDS route configurations its HTTP connection managers reference.
    pub routes: Vec<String>,
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

/// What a warming cluster or listener still waits for: resources that must arrive after
/// `since` (the response that added or changed it).
#[derive(Debug, Clone, PartialEq)]
pub struct Warming {
    pub since: Instant,
    /// ClusterLoadAssignment names (EDS).
    pub eds: BTreeSet<String>,
    /// SDS secret names.
    pub secrets: BTreeSet<String>,
    /// RDS route configuration names.
    pub routes: BTreeSet<String>,
}

impl Warming {
    fn new(since: Instant, eds: Option<&String>, secrets: &[String], routes: &[String]) -> Self {
        Self {
            since,
            eds: eds.into_iter().cloned().collect(),
            secrets: secrets.iter().cloned().collect(),
            routes: routes.iter().cloned().collect(),
        }
    }

    /// Every dependency arrived.
    pub fn ready(&self) -> bool {
        self.eds.is_empty() && self.secrets.is_empty() && self.routes.is_empty()
    }

    /// When Envoy gives up waiting (`init_fetch_timeout`) and uses it anyway.
    pub fn deadline(&self) -> Instant {
        self.since + INIT_FETCH_TIMEOUT
    }

    fn arrived(&mut self, r#type: &str, name: &str) {
        match r#type {
            EDS => self.eds.remove(name),
            SDS => self.secrets.remove(name),
            RDS => self.routes.remove(name),
            _ => false,
        };
    }
}

/// A cluster or listener received but not active yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<T> {
    pub info: T,
    pub warming: Warming,
}

/// The configuration a proxy holds on its current stream.
///
/// `clusters` and `listeners` are the *active* ones (what Envoy serves); added or changed
/// ones wait in `warming_clusters` / `warming_listeners` until their dependencies arrived
/// after them, or [`INIT_FETCH_TIMEOUT`] passed. Endpoints, secrets and route configurations
/// apply at once to whoever uses them (as Envoy's EDS and SDS updates of active resources do).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub clusters: BTreeMap<String, ClusterInfo>,
    pub listeners: BTreeMap<String, ListenerInfo>,
    pub warming_clusters: BTreeMap<String, Pending<ClusterInfo>>,
    pub warming_listeners: BTreeMap<String, Pending<ListenerInfo>>,
    /// ClusterLoadAssignment name → endpoints ([`endpoint_key`]: `ip:port`, plus the weight
    /// when it is not 1).
    pub endpoints: HashMap<String, BTreeSet<String>>,
    pub secrets: HashMap<String, SecretInfo>,
    /// Route configuration name → hash of its content.
    pub routes: HashMap<String, u64>,
    pub types: HashMap<&'static str, TypeInfo>,
    /// NACKs this proxy sent (resources it could not decode).
    pub nacks: u64,
    /// Warming clusters and listeners that became active because [`INIT_FETCH_TIMEOUT`]
    /// passed (Envoy's `init_fetch_timeout`), kept across streams ([`Config::reset`]).
    pub init_fetch_timeouts: u64,
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
    /// Encoded size of the response.
    pub bytes: u64,
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
    /// A route configuration: name and hash.
    Route(String, u64),
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
            let mut routes = Vec::new();
            for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                secrets.extend(tls_secrets(chain.transport_socket.as_ref(), true));
                routes.extend(chain.filters.iter().filter_map(rds_name));
            }
            secrets.sort();
            secrets.dedup();
            routes.sort();
            routes.dedup();
            let info = ListenerInfo {
                hash: hash_bytes(bytes),
                secrets,
                routes,
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
                .filter_map(|e| {
                    let a = match &e.host_identifier {
                        Some(HostIdentifier::Endpoint(ep)) => ep.address.as_ref()?,
                        _ => return None,
                    };
                    let weight = e.load_balancing_weight.as_ref().map_or(1, |w| w.value);
                    match &a.address {
                        Some(address::Address::SocketAddress(sa)) => {
                            let port = match sa.port_specifier {
                                Some(PortSpecifier::PortValue(p)) => p,
                                _ => 0,
                            };
                            Some(endpoint_key(&sa.address, port, weight))
                        }
                        _ => None,
                    }
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
        RDS => {
            let r = RouteName::decode(bytes).map_err(err)?;
            Decoded::Route(r.name, hash_bytes(bytes))
        }
        _ => Decoded::Other,
    })
}

/// How an endpoint is recorded: `ip:port`, with ` w=<weight>` appended when its load
/// balancing weight is not 1 (cross-zone endpoints: a remote ingress weighs its service's
/// instances there, local endpoints the number of remote ingresses).
pub fn endpoint_key(ip: &str, port: u32, weight: u32) -> String {
    if weight == 1 {
        format!("{ip}:{port}")
    } else {
        format!("{ip}:{port} w={weight}")
    }
}

/// Only the name of a RouteConfiguration (prost skips the rest without decoding it).
#[derive(Clone, PartialEq, prost::Message)]
struct RouteName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Only the RDS branch (field 3) of an HttpConnectionManager: inline route configurations
/// are skipped, not decoded.
#[derive(Clone, PartialEq, prost::Message)]
struct HcmRds {
    #[prost(message, optional, tag = "3")]
    rds: Option<Rds>,
}

/// The RDS route configuration an HTTP connection manager filter loads, if any.
fn rds_name(f: &envoy_types::pb::envoy::config::listener::v3::Filter) -> Option<String> {
    let Some(filter::ConfigType::TypedConfig(any)) = f.config_type.as_ref() else {
        return None;
    };
    if any.type_url != HCM {
        return None;
    }
    HcmRds::decode(any.value.as_slice())
        .ok()?
        .rds
        .map(|r| r.route_config_name)
        .filter(|n| !n.is_empty())
}

impl Config {
    /// A new stream's configuration: empty, keeping the counters that span streams.
    pub fn reset(&mut self) {
        *self = Config {
            init_fetch_timeouts: self.init_fetch_timeouts,
            ..Config::default()
        };
    }

    /// Stores one decoded resource that arrived at `now`. A cluster or listener whose content
    /// differs from the latest one received starts warming (replacing a warming one); an
    /// endpoint set, secret or route configuration satisfies the warming resources waiting
    /// for it. Call [`Config::promote_ready`] once the whole response is stored.
    pub fn upsert(&mut self, d: Decoded, now: Instant) {
        match d {
            Decoded::Cluster(n, c) => {
                let latest = self
                    .warming_clusters
                    .get(&n)
                    .map(|p| p.info.hash)
                    .or_else(|| self.clusters.get(&n).map(|a| a.hash));
                if latest != Some(c.hash) {
                    let warming = Warming::new(now, c.eds.as_ref(), &c.secrets, &[]);
                    self.warming_clusters
                        .insert(n, Pending { info: c, warming });
                }
            }
            Decoded::Listener(n, l) => {
                let latest = self
                    .warming_listeners
                    .get(&n)
                    .map(|p| p.info.hash)
                    .or_else(|| self.listeners.get(&n).map(|a| a.hash));
                if latest != Some(l.hash) {
                    let warming = Warming::new(now, None, &l.secrets, &l.routes);
                    self.warming_listeners
                        .insert(n, Pending { info: l, warming });
                }
            }
            Decoded::Endpoints(n, e) => {
                self.arrived(EDS, &n);
                self.endpoints.insert(n, e);
            }
            Decoded::Secret(n, s) => {
                self.arrived(SDS, &n);
                self.secrets.insert(n, s);
            }
            Decoded::Route(n, h) => {
                self.arrived(RDS, &n);
                self.routes.insert(n, h);
            }
            Decoded::Other => {}
        }
    }

    fn arrived(&mut self, r#type: &str, name: &str) {
        for p in self.warming_clusters.values_mut() {
            p.warming.arrived(r#type, name);
        }
        for p in self.warming_listeners.values_mut() {
            p.warming.arrived(r#type, name);
        }
    }

    /// Warming clusters and listeners whose dependencies all arrived replace the active ones.
    pub fn promote_ready(&mut self) {
        let ready: Vec<String> = self
            .warming_clusters
            .iter()
            .filter(|(_, p)| p.warming.ready())
            .map(|(n, _)| n.clone())
            .collect();
        for n in ready {
            if let Some(p) = self.warming_clusters.remove(&n) {
                self.clusters.insert(n, p.info);
            }
        }
        let ready: Vec<String> = self
            .warming_listeners
            .iter()
            .filter(|(_, p)| p.warming.ready())
            .map(|(n, _)| n.clone())
            .collect();
        for n in ready {
            if let Some(p) = self.warming_listeners.remove(&n) {
                self.listeners.insert(n, p.info);
            }
        }
    }

    /// The earliest instant a warming resource times out, if any is warming.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.warming_clusters
            .values()
            .map(|p| p.warming.deadline())
            .chain(
                self.warming_listeners
                    .values()
                    .map(|p| p.warming.deadline()),
            )
            .min()
    }

    /// If the earliest deadline is at or before `now`: every warming resource with that
    /// deadline becomes active without its missing dependencies and is counted as an
    /// `init_fetch_timeout`; returns the deadline (the instant the configuration changed).
    /// Call until `None` to catch up with `now`.
    pub fn expire_next(&mut self, now: Instant) -> Option<Instant> {
        let deadline = self.next_deadline().filter(|d| *d <= now)?;
        let due: Vec<String> = self
            .warming_clusters
            .iter()
            .filter(|(_, p)| p.warming.deadline() == deadline)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            if let Some(p) = self.warming_clusters.remove(&n) {
                self.clusters.insert(n, p.info);
                self.init_fetch_timeouts += 1;
            }
        }
        let due: Vec<String> = self
            .warming_listeners
            .iter()
            .filter(|(_, p)| p.warming.deadline() == deadline)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            if let Some(p) = self.warming_listeners.remove(&n) {
                self.listeners.insert(n, p.info);
                self.init_fetch_timeouts += 1;
            }
        }
        Some(deadline)
    }

    /// Removes a resource of `type_url` by name (a cluster or listener, active and warming).
    pub fn remove(&mut self, type_url: &str, name: &str) {
        match type_url {
            CDS => {
                self.clusters.remove(name);
                self.warming_clusters.remove(name);
            }
            LDS => {
                self.listeners.remove(name);
                self.warming_listeners.remove(name);
            }
            EDS => {
                self.endpoints.remove(name);
            }
            SDS => {
                self.secrets.remove(name);
            }
            RDS => {
                self.routes.remove(name);
            }
            _ => {}
        }
    }

    /// Keeps only the resources of `type_url` named in `keep` (a SotW response of a wildcard
    /// type replaces everything of that type; Envoy removes the missing ones at once, active
    /// or warming).
    pub fn retain(&mut self, type_url: &str, keep: &BTreeSet<String>) {
        match type_url {
            CDS => {
                self.clusters.retain(|n, _| keep.contains(n));
                self.warming_clusters.retain(|n, _| keep.contains(n));
            }
            LDS => {
                self.listeners.retain(|n, _| keep.contains(n));
                self.warming_listeners.retain(|n, _| keep.contains(n));
            }
            _ => {}
        }
    }

    fn all_clusters(&self) -> impl Iterator<Item = &ClusterInfo> {
        self.clusters
            .values()
            .chain(self.warming_clusters.values().map(|p| &p.info))
    }

    fn all_listeners(&self) -> impl Iterator<Item = &ListenerInfo> {
        self.listeners
            .values()
            .chain(self.warming_listeners.values().map(|p| &p.info))
    }

    /// ClusterLoadAssignments to subscribe to: one per EDS cluster, active or warming.
    pub fn wanted_endpoints(&self) -> BTreeSet<String> {
        self.all_clusters().filter_map(|c| c.eds.clone()).collect()
    }

    /// Secrets to subscribe to: every one a cluster or listener references, active or warming.
    pub fn wanted_secrets(&self) -> BTreeSet<String> {
        self.all_clusters()
            .flat_map(|c| c.secrets.iter().cloned())
            .chain(self.all_listeners().flat_map(|l| l.secrets.iter().cloned()))
            .collect()
    }

    /// Route configurations to subscribe to: every one a listener references.
    pub fn wanted_routes(&self) -> BTreeSet<String> {
        self.all_listeners()
            .flat_map(|l| l.routes.iter().cloned())
            .collect()
    }

    /// ClusterLoadAssignments the active clusters use.
    pub fn active_endpoints(&self) -> BTreeSet<&str> {
        self.clusters
            .values()
            .filter_map(|c| c.eds.as_deref())
            .collect()
    }

    /// Secrets the active clusters and listeners use.
    pub fn active_secrets(&self) -> BTreeSet<&str> {
        self.clusters
            .values()
            .flat_map(|c| c.secrets.iter())
            .chain(self.listeners.values().flat_map(|l| l.secrets.iter()))
            .map(String::as_str)
            .collect()
    }

    /// The endpoints an active cluster serves for ClusterLoadAssignment `name`.
    pub fn active_endpoints_of(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.clusters
            .values()
            .any(|c| c.eds.as_deref() == Some(name))
            .then(|| self.endpoints.get(name))
            .flatten()
    }

    /// Drops endpoints, secrets and route configurations nothing references any more (Envoy
    /// forgets them too).
    pub fn forget_unreferenced(&mut self) {
        let eds = self.wanted_endpoints();
        self.endpoints.retain(|n, _| eds.contains(n));
        let sds = self.wanted_secrets();
        self.secrets.retain(|n, _| sds.contains(n));
        let rds = self.wanted_routes();
        self.routes.retain(|n, _| rds.contains(n));
    }

    /// Whether the active configuration is complete: exactly the expected EDS clusters, each
    /// with exactly its expected endpoints, the expected number of listeners, and every
    /// referenced secret present (and, with `mtls`, at least an identity and a CA).
    pub fn complete(&self, want: &Expected, mtls: bool) -> bool {
        if self.listeners.len() != want.listeners {
            return false;
        }
        let eds = self.active_endpoints();
        if eds.len() != want.clusters.len() {
            return false;
        }
        for (name, eps) in &want.clusters {
            if !eds.contains(name.as_str()) || self.endpoints.get(name) != Some(eps) {
                return false;
            }
        }
        let sds = self.active_secrets();
        if mtls && sds.is_empty() {
            return false;
        }
        sds.iter().all(|s| self.secrets.contains_key(*s))
    }

    /// What is missing from a complete active configuration, for error messages.
    pub fn describe_gap(&self, want: &Expected) -> String {
        let eds = self.active_endpoints();
        let mut gaps = Vec::new();
        if self.listeners.len() != want.listeners {
            gaps.push(format!(
                "{} listeners of {}",
                self.listeners.len(),
                want.listeners
            ));
        }
        for (name, eps) in &want.clusters {
            if !eds.contains(name.as_str()) {
                gaps.push(format!("no active cluster {name}"));
            } else if self.endpoints.get(name) != Some(eps) {
                gaps.push(format!(
                    "{name} has {:?}, wants {:?}",
                    self.endpoints.get(name),
                    eps
                ));
            }
        }
        for s in self.active_secrets() {
            if !self.secrets.contains_key(s) {
                gaps.push(format!("no secret {s}"));
            }
        }
        gaps.extend(self.describe_warming());
        if gaps.is_empty() {
            "complete".into()
        } else {
            gaps.join("; ")
        }
    }

    /// The warming clusters and listeners and what each waits for.
    pub fn describe_warming(&self) -> Vec<String> {
        let clusters = self
            .warming_clusters
            .iter()
            .map(|(n, p)| ("cluster", n, &p.warming));
        let listeners = self
            .warming_listeners
            .iter()
            .map(|(n, p)| ("listener", n, &p.warming));
        clusters
            .chain(listeners)
            .map(|(kind, n, w)| {
                format!(
                    "{kind} {n} warming for {:?} (eds {:?}, sds {:?}, rds {:?})",
                    w.since.elapsed(),
                    w.eds,
                    w.secrets,
                    w.routes
                )
            })
            .collect()
    }

    /// The identity certificate (first identity secret the active configuration uses), PEM.
    pub fn identity_pem(&self) -> Option<&str> {
        self.active_secret(true)
    }

    /// The trusted mesh CA (first validation-context secret the active configuration uses),
    /// PEM.
    pub fn ca_pem(&self) -> Option<&str> {
        self.active_secret(false)
    }

    fn active_secret(&self, identity: bool) -> Option<&str> {
        self.active_secrets()
            .into_iter()
            .filter_map(|n| self.secrets.get(n))
            .find(|s| s.identity == identity)
            .map(|s| s.pem.as_str())
    }

    /// Union of the `spiffe://` strings of the active listeners whose names start with
    /// `prefix`.
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

    /// Endpoints are recorded with their load balancing weight unless it is 1 (or unset):
    /// a cross-zone ingress weighs its service's instances in that zone.
    #[test]
    fn endpoint_weights_other_than_one_are_recorded() {
        use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
        use envoy_types::pb::envoy::config::endpoint::v3::{
            Endpoint, LbEndpoint, LocalityLbEndpoints,
        };
        use envoy_types::pb::google::protobuf::UInt32Value;
        let lb = |ip: &str, port: u32, weight: Option<u32>| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip.into(),
                        port_specifier: Some(PortSpecifier::PortValue(port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            ..Default::default()
        };
        let cla = ClusterLoadAssignment {
            cluster_name: "svc-1".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![
                    lb("127.10.0.1", 10000, Some(1)),
                    lb("127.10.0.2", 10001, None),
                    lb("127.0.0.1", 30001, Some(11)),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let Ok(Decoded::Endpoints(name, eps)) = decode(EDS, &cla.encode_to_vec()) else {
            panic!("not decoded as endpoints");
        };
        assert_eq!(name, "svc-1");
        assert_eq!(
            eps.into_iter().collect::<Vec<_>>(),
            [
                "127.0.0.1:30001 w=11",
                "127.10.0.1:10000",
                "127.10.0.2:10001"
            ]
        );
    }

    mod warming {
        use super::super::*;
        use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
        use envoy_types::pb::envoy::config::core::v3::{
            Address, SocketAddress, TransportSocket, address, socket_address::PortSpecifier,
            transport_socket,
        };
        use envoy_types::pb::envoy::config::endpoint::v3::{
            ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
            lb_endpoint::HostIdentifier,
        };
        use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
        use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
        };
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
            Secret, TlsCertificate, UpstreamTlsContext,
            common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
            secret,
        };
        use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
        use prost::Message;

        const IDENTITY: &str = "identity_cert:secret:default";
        const CA: &str = "mesh_ca:secret:default";

        fn any<M: Message>(type_url: &str, m: &M) -> Any {
            Any {
                type_url: type_url.into(),
                value: m.encode_to_vec(),
            }
        }

        fn common(secrets: &[&str]) -> CommonTlsContext {
            CommonTlsContext {
                tls_certificate_sds_secret_configs: secrets
                    .iter()
                    .filter(|s| s.starts_with("identity"))
                    .map(|s| SdsSecretConfig {
                        name: s.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                validation_context_type: secrets.iter().find(|s| s.starts_with("mesh_ca")).map(
                    |s| {
                        ValidationContextType::CombinedValidationContext(
                            CombinedCertificateValidationContext {
                                default_validation_context: Some(
                                    CertificateValidationContext::default(),
                                ),
                                validation_context_sds_secret_config: Some(SdsSecretConfig {
                                    name: s.to_string(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        )
                    },
                ),
                ..Default::default()
            }
        }

        /// An EDS cluster (CLA `service_name`, or its name when empty) with mTLS when
        /// `secrets` is not empty; `rev` changes its content.
        fn cluster(name: &str, service_name: &str, secrets: &[&str], rev: i64) -> Decoded {
            let c = Cluster {
                name: name.into(),
                connect_timeout: Some(PbDuration {
                    seconds: rev,
                    nanos: 0,
                }),
                eds_cluster_config: Some(EdsClusterConfig {
                    service_name: service_name.into(),
                    ..Default::default()
                }),
                transport_socket: (!secrets.is_empty()).then(|| TransportSocket {
                    name: "envoy.transport_sockets.tls".into(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        &UpstreamTlsContext {
                            common_tls_context: Some(common(secrets)),
                            ..Default::default()
                        },
                    ))),
                }),
                ..Default::default()
            };
            decode(CDS, &c.encode_to_vec()).expect("cluster decodes")
        }

        /// A listener whose filter chain requires `secrets` and loads route configuration
        /// `rds` (if not empty); `rev` changes its content.
        fn listener(name: &str, secrets: &[&str], rds: &str, rev: u32) -> Decoded {
            let hcm = HttpConnectionManager {
                stat_prefix: format!("rev{rev}"),
                route_specifier: (!rds.is_empty()).then(|| {
                    RouteSpecifier::Rds(Rds {
                        route_config_name: rds.into(),
                        ..Default::default()
                    })
                }),
                ..Default::default()
            };
            let l = Listener {
                name: name.into(),
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(10_000 + rev)),
                        ..Default::default()
                    })),
                }),
                filter_chains: vec![FilterChain {
                    filters: vec![Filter {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(any(HCM, &hcm))),
                    }],
                    transport_socket: (!secrets.is_empty()).then(|| TransportSocket {
                        name: "envoy.transport_sockets.tls".into(),
                        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            &DownstreamTlsContext {
                                common_tls_context: Some(common(secrets)),
                                ..Default::default()
                            },
                        ))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            };
            decode(LDS, &l.encode_to_vec()).expect("listener decodes")
        }

        fn cla(name: &str, ports: &[u32]) -> Decoded {
            let c = ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: ports
                        .iter()
                        .map(|p| LbEndpoint {
                            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                                address: Some(Address {
                                    address: Some(address::Address::SocketAddress(SocketAddress {
                                        address: "127.10.0.1".into(),
                                        port_specifier: Some(PortSpecifier::PortValue(*p)),
                                        ..Default::default()
                                    })),
                                }),
                                ..Default::default()
                            })),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            decode(EDS, &c.encode_to_vec()).expect("CLA decodes")
        }

        fn secret(name: &str, rev: u8) -> Decoded {
            let pem = DataSource {
                specifier: Some(data_source::Specifier::InlineString(format!("pem-{rev}"))),
                ..Default::default()
            };
            let s = Secret {
                name: name.into(),
                r#type: Some(if name.starts_with("identity") {
                    secret::Type::TlsCertificate(TlsCertificate {
                        certificate_chain: Some(pem),
                        ..Default::default()
                    })
                } else {
                    secret::Type::ValidationContext(CertificateValidationContext {
                        trusted_ca: Some(pem),
                        ..Default::default()
                    })
                }),
            };
            decode(SDS, &s.encode_to_vec()).expect("secret decodes")
        }

        fn route(name: &str) -> Decoded {
            let r = RouteConfiguration {
                name: name.into(),
                ..Default::default()
            };
            decode(RDS, &r.encode_to_vec()).expect("route configuration decodes")
        }

        /// Stores one response's resources at `at`, then promotes what is ready (as the
        /// stream task does).
        fn apply(cfg: &mut Config, at: Instant, resources: Vec<Decoded>) {
            for d in resources {
                cfg.upsert(d, at);
            }
            cfg.promote_ready();
        }

        fn hash_of(d: &Decoded) -> u64 {
            match d {
                Decoded::Cluster(_, c) => c.hash,
                Decoded::Listener(_, l) => l.hash,
                _ => unreachable!(),
            }
        }

        fn active_cluster_hash(cfg: &Config, name: &str) -> Option<u64> {
            cfg.clusters.get(name).map(|c| c.hash)
        }

        fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }

        /// A proxy with cluster `svc` (CLA `svc`, mTLS) active with endpoints [1, 2].
        fn with_active_cluster(t0: Instant) -> Config {
            let mut cfg = Config::default();
            apply(&mut cfg, t0, vec![cluster("svc", "", &[IDENTITY, CA], 1)]);
            assert!(cfg.clusters.is_empty(), "a new cluster warms");
            assert_eq!(cfg.wanted_endpoints(), BTreeSet::from(["svc".to_string()]));
            apply(&mut cfg, t0 + ms(1), vec![cla("svc", &[1, 2])]);
            assert!(cfg.clusters.is_empty(), "still waits for its secrets");
            apply(
                &mut cfg,
                t0 + ms(2),
                vec![secret(IDENTITY, 1), secret(CA, 1)],
            );
            assert!(cfg.clusters.contains_key("svc"));
            assert!(cfg.warming_clusters.is_empty());
            cfg
        }

        #[test]
        fn eds_cluster_name_is_the_service_name_or_else_the_cluster_name() {
            let Decoded::Cluster(_, c) = cluster("a", "b", &[], 1) else {
                unreachable!()
            };
            assert_eq!(c.eds.as_deref(), Some("b"));
            let Decoded::Cluster(_, c) = cluster("a", "", &[], 1) else {
                unreachable!()
            };
            assert_eq!(c.eds.as_deref(), Some("a"));
            assert!(c.secrets.is_empty(), "no TLS, no secrets");
        }

        #[test]
        fn changed_eds_cluster_becomes_active_when_its_endpoints_arrive_after_it() {
            let t0 = Instant::now();
            let mut cfg = with_active_cluster(t0);
            let old = active_cluster_hash(&cfg, "svc");
            let changed = cluster("svc", "", &[IDENTITY, CA], 2);
            let new = hash_of(&changed);
            apply(&mut cfg, t0 + ms(10), vec![changed]);
            assert_eq!(active_cluster_hash(&cfg, "svc"), old, "the old one serves");
            assert!(cfg.warming_clusters.contains_key("svc"));
            // Its secrets (the same names) arrive: still waiting for the endpoints.
            apply(
                &mut cfg,
                t0 + ms(11),
                vec![secret(IDENTITY, 1), secret(CA, 1)],
            );
            assert_eq!(active_cluster_hash(&cfg, "svc"), old);
            // The same endpoints, resent after the change: warming is over.
            apply(&mut cfg, t0 + ms(12), vec![cla("svc", &[1, 2])]);
            assert_eq!(active_cluster_hash(&cfg, "svc"), Some(new));
            assert!(cfg.warming_clusters.is_empty());
            assert_eq!(cfg.next_deadline(), None);
            assert_eq!(cfg.init_fetch_timeouts, 0);
        }

        #[test]
        fn changed_eds_cluster_without_new_endpoints_stays_warming_and_the_old_one_serves() {
            let t0 = Instant::now();
            let mut cfg = with_active_cluster(t0);
            let old = active_cluster_hash(&cfg, "svc");
            apply(
                &mut cfg,
                t0 + ms(10),
                vec![cluster("svc", "", &[IDENTITY, CA], 2)],
            );
            apply(
                &mut cfg,
                t0 + ms(11),
                vec![secret(IDENTITY, 2), secret(CA, 2)],
            );
            // Endpoint updates of another cluster do not help.
            apply(&mut cfg, t0 + ms(12), vec![cla("other", &[3])]);
            assert_eq!(active_cluster_hash(&cfg, "svc"), old);
            let w = &cfg.warming_clusters["svc"].warming;
            assert_eq!(w.eds, BTreeSet::from(["svc".to_string()]));
            assert!(w.secrets.is_empty());
            assert_eq!(cfg.next_deadline(), Some(t0 + ms(10) + INIT_FETCH_TIMEOUT));
            // Before the deadline nothing expires; endpoint updates still reach the old one.
            assert_eq!(
                cfg.expire_next(t0 + ms(10) + INIT_FETCH_TIMEOUT - ms(1)),
                None
            );
            apply(&mut cfg, t0 + ms(20), vec![]);
            assert_eq!(active_cluster_hash(&cfg, "svc"), old);
            assert_eq!(cfg.init_fetch_timeouts, 0);
        }

        #[test]
        fn unchanged_cluster_does_not_warm() {
            let t0 = Instant::now();
            let mut cfg = with_active_cluster(t0);
            apply(
                &mut cfg,
                t0 + ms(10),
                vec![cluster("svc", "", &[IDENTITY, CA], 1)],
            );
            assert!(cfg.warming_clusters.is_empty());
            assert_eq!(cfg.next_deadline(), None);
        }

        #[test]
        fn listener_referencing_a_new_secret_waits_for_it() {
            let t0 = Instant::now();
            let mut cfg = Config::default();
            apply(&mut cfg, t0, vec![listener("inbound:1", &[], "", 1)]);
            assert!(
                cfg.listeners.contains_key("inbound:1"),
                "nothing to wait for"
            );
            let changed = listener("inbound:1", &[IDENTITY, CA], "", 2);
            let new = hash_of(&changed);
            apply(&mut cfg, t0 + ms(1), vec![changed]);
            assert_eq!(
                cfg.wanted_secrets(),
                BTreeSet::from([IDENTITY.to_string(), CA.to_string()]),
                "the warming listener's secrets are subscribed to"
            );
            assert_ne!(cfg.listeners["inbound:1"].hash, new);
            apply(&mut cfg, t0 + ms(2), vec![secret(IDENTITY, 1)]);
            assert_ne!(cfg.listeners["inbound:1"].hash, new, "the CA is missing");
            assert_eq!(
                cfg.warming_listeners["inbound:1"].warming.secrets,
                BTreeSet::from([CA.to_string()])
            );
            apply(&mut cfg, t0 + ms(3), vec![secret(CA, 1)]);
            assert_eq!(cfg.listeners["inbound:1"].hash, new);
            assert!(cfg.warming_listeners.is_empty());
            assert_eq!(cfg.ca_pem(), Some("pem-1"));
            assert_eq!(cfg.identity_pem(), Some("pem-1"));
        }

        #[test]
        fn secret_that_arrived_before_the_change_does_not_count() {
            let t0 = Instant::now();
            let mut cfg = Config::default();
            apply(
                &mut cfg,
                t0,
                vec![listener("inbound:1", &[IDENTITY, CA], "", 1)],
            );
            apply(
                &mut cfg,
                t0 + ms(1),
                vec![secret(IDENTITY, 1), secret(CA, 1)],
            );
            let old = cfg.listeners["inbound:1"].hash;
            // New secrets first (as a CP pushing SDS before LDS), then the changed listener.
            apply(
                &mut cfg,
                t0 + ms(2),
                vec![secret(IDENTITY, 2), secret(CA, 2)],
            );
            apply(
                &mut cfg,
                t0 + ms(3),
                vec![listener("inbound:1", &[IDENTITY, CA], "", 2)],
            );
            assert_eq!(cfg.listeners["inbound:1"].hash, old, "still warming");
            assert_eq!(
                cfg.warming_listeners["inbound:1"].warming.secrets.len(),
                2,
                "both secrets must arrive again"
            );
            assert_eq!(cfg.ca_pem(), Some("pem-2"), "secrets update active users");
        }

        #[test]
        fn warming_times_out_after_15_s_and_is_counted() {
            let t0 = Instant::now();
            let mut cfg = with_active_cluster(t0);
            apply(
                &mut cfg,
                t0 + ms(10),
                vec![
                    cluster("svc", "", &[IDENTITY, CA], 2),
                    cluster("new", "", &[], 1),
                ],
            );
            apply(
                &mut cfg,
                t0 + ms(20),
                vec![listener("inbound:1", &[IDENTITY], "", 1)],
            );
            let changed = hash_of(&cluster("svc", "", &[IDENTITY, CA], 2));
            let first = t0 + ms(10) + INIT_FETCH_TIMEOUT;
            let second = t0 + ms(20) + INIT_FETCH_TIMEOUT;
            assert_eq!(cfg.next_deadline(), Some(first));
            // Long after both deadlines: they expire one deadline at a time, in order.
            let late = t0 + Duration::from_secs(60);
            assert_eq!(cfg.expire_next(late), Some(first));
            assert_eq!(cfg.init_fetch_timeouts, 2, "both clusters of that response");
            assert_eq!(active_cluster_hash(&cfg, "svc"), Some(changed));
            assert!(cfg.clusters.contains_key("new"));
            assert!(!cfg.listeners.contains_key("inbound:1"));
            assert_eq!(cfg.expire_next(late), Some(second));
            assert!(cfg.listeners.contains_key("inbound:1"));
            assert_eq!(cfg.expire_next(late), None);
            assert_eq!(cfg.init_fetch_timeouts, 3);
            // The counter survives a new stream; the configuration does not.
            cfg.reset();
            assert!(cfg.clusters.is_empty());
            assert_eq!(cfg.init_fetch_timeouts, 3);
        }

        #[test]
        fn removed_resources_leave_active_and_warming() {
            let t0 = Instant::now();
            let mut cfg = with_active_cluster(t0);
            apply(&mut cfg, t0 + ms(10), vec![cluster("b", "", &[], 1)]);
            cfg.retain(CDS, &BTreeSet::new());
            assert!(cfg.clusters.is_empty() && cfg.warming_clusters.is_empty());
            assert_eq!(cfg.next_deadline(), None);
        }

        #[test]
        fn listener_waits_for_its_rds_route_configuration() {
            let t0 = Instant::now();
            let mut cfg = Config::default();
            apply(
                &mut cfg,
                t0,
                vec![listener("outbound:1", &[], "outbound:svc", 1)],
            );
            assert_eq!(
                cfg.wanted_routes(),
                BTreeSet::from(["outbound:svc".to_string()])
            );
            assert!(cfg.listeners.is_empty());
            apply(&mut cfg, t0 + ms(1), vec![route("outbound:other")]);
            assert!(cfg.listeners.is_empty());
            apply(&mut cfg, t0 + ms(2), vec![route("outbound:svc")]);
            assert!(cfg.listeners.contains_key("outbound:1"));
            // An inline route configuration is not a dependency.
            let Decoded::Listener(_, l) = listener("x", &[], "", 1) else {
                unreachable!()
            };
            assert!(l.routes.is_empty());
        }

        #[test]
        fn goals_see_the_active_configuration_only() {
            let t0 = Instant::now();
            let mut cfg = with_active_cluster(t0);
            assert_eq!(
                cfg.active_endpoints_of("svc"),
                Some(&BTreeSet::from([
                    "127.10.0.1:1".to_string(),
                    "127.10.0.1:2".to_string()
                ]))
            );
            apply(&mut cfg, t0 + ms(10), vec![cluster("b", "", &[], 1)]);
            apply(&mut cfg, t0 + ms(10), vec![]);
            assert_eq!(cfg.active_endpoints_of("b"), None, "b is warming");
        }
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
