//! Proxy lifecycle: which proxies are connected, and whether they serve.
//!
//! `Registry` owns the connected proxies (`Proxy`: streams, direct or indirect lifecycle,
//! what its current snapshot was generated from), the node of each stream, the nodes being
//! deregistered, and per mesh the Dataplanes whose proxy does not serve (starting, draining or
//! gone), which every endpoint list leaves out.
//!
//! The `Runtime` methods here: registration of a new stream (token check, the Dataplane from
//! node metadata upserted for the direct lifecycle), readiness ([`Runtime::report_readiness`]
//! from kuma-dp, reconciling the mesh when it changes), the delayed deregistration of a direct
//! proxy whose last stream closed, and [`XdsCallbacks`], the engine's callbacks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use kuma_core::resource::{Resource, ResourceKey, ResourceType, Spec};
use kuma_core::store;
use kuma_xds::{Callbacks, StreamInfo};
use serde_json::Value;
use tonic::Status;

use super::Runtime;
use crate::manager::ManagerError;
use crate::tokens;

/// Node metadata `features` entry of a kuma-dp that reports its proxy's readiness
/// (`POST /readiness` on the DP server): a proxy that starts is left out of its peers'
/// endpoints until it reports ready.
pub const FEATURE_READINESS_REPORTING: &str = "feature-readiness-reporting";

/// Node metadata key carrying the Dataplane (direct lifecycle).
pub const METADATA_RESOURCE: &str = "dataplane.resource";

/// Node metadata key naming the proxy type (`dataplane`, `ingress`, `egress`).
pub const METADATA_PROXY_TYPE: &str = "dataplane.proxyType";

/// What a proxy is: a sidecar (Dataplane) or a zone proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Dataplane,
    Ingress,
    Egress,
}

impl ProxyKind {
    /// Parses the `proxyType` of a bootstrap request or node metadata (`""` = dataplane).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "dataplane" => Some(Self::Dataplane),
            "ingress" => Some(Self::Ingress),
            "egress" => Some(Self::Egress),
            _ => None,
        }
    }

    /// The `proxyType` name (also the zone token scope of a zone proxy).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dataplane => "dataplane",
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    /// The resource the proxy registers.
    pub fn resource_type(self) -> ResourceType {
        match self {
            Self::Dataplane => ResourceType::Dataplane,
            Self::Ingress => ResourceType::ZoneIngress,
            Self::Egress => ResourceType::ZoneEgress,
        }
    }

    /// The insight the control plane keeps for it.
    pub fn insight_type(self) -> ResourceType {
        match self {
            Self::Dataplane => ResourceType::DataplaneInsight,
            Self::Ingress => ResourceType::ZoneIngressInsight,
            Self::Egress => ResourceType::ZoneEgressInsight,
        }
    }
}

/// The proxy type a stream's node metadata declares.
fn proxy_kind(info: &StreamInfo) -> Result<ProxyKind, Status> {
    let declared = info
        .node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(METADATA_PROXY_TYPE))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or_default();
    ProxyKind::parse(declared).ok_or_else(|| {
        Status::invalid_argument(format!(
            "metadata {METADATA_PROXY_TYPE} {declared:?} is not one of dataplane, ingress, egress"
        ))
    })
}

/// What the generator reads from a proxy's node metadata besides its resource: where
/// kuma-dp's work dir is (the dynamic-config socket lives there), the port of kuma-dp's DNS
/// server (0 = no DNS, so no records) and whether the proxy has IPv6.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    pub workdir: String,
    pub dns_port: u32,
    pub ipv6: bool,
    /// kuma-dp's certificate and key for a `providedTLS` Prometheus endpoint
    /// (`metricsCertPath`, `metricsKeyPath`).
    pub metrics_cert_path: String,
    pub metrics_key_path: String,
    /// Envoy's admin and kuma-dp's readiness reporter (`generator::admin`).
    pub admin: AdminNode,
}

/// Kuma's node metadata `dataplane.admin.port`, `dataplane.admin.address` and
/// `dataplane.readinessReporter.port` (0 / empty when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AdminNode {
    pub port: u32,
    pub address: String,
    pub readiness_port: u32,
}

impl AdminNode {
    /// No admin in the metadata: no admin resources.
    pub const NONE: AdminNode = AdminNode {
        port: 0,
        address: String::new(),
        readiness_port: 0,
    };
}

impl NodeInfo {
    /// Kuma's metadata keys: `workdir`, `dataplane.dns.port` (a string), `ipv6Enabled`.
    pub(super) fn from_metadata(metadata: Option<&Struct>) -> Self {
        let field = |k: &str| {
            metadata
                .and_then(|m| m.fields.get(k))
                .and_then(|v| v.kind.as_ref())
        };
        let text = |k: &str| match field(k) {
            Some(Kind::StringValue(s)) => s.clone(),
            Some(Kind::NumberValue(n)) => n.to_string(),
            Some(Kind::BoolValue(b)) => b.to_string(),
            _ => String::new(),
        };
        Self {
            workdir: text("workdir"),
            dns_port: text("dataplane.dns.port").parse().unwrap_or(0),
            ipv6: text("ipv6Enabled") == "true",
            metrics_cert_path: text("metricsCertPath"),
            metrics_key_path: text("metricsKeyPath"),
            admin: AdminNode {
                port: text("dataplane.admin.port").parse().unwrap_or(0),
                address: text("dataplane.admin.address"),
                readiness_port: text("dataplane.readinessReporter.port")
                    .parse()
                    .unwrap_or(0),
            },
        }
    }
}

/// The resource text a stream's node metadata carries, if any.
fn embedded_resource(info: &StreamInfo) -> Option<String> {
    info.node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(METADATA_RESOURCE))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
}

pub(super) struct Proxy {
    pub(super) kind: ProxyKind,
    /// Empty for zone proxies.
    pub(super) mesh: String,
    pub(super) name: String,
    pub(super) streams: HashSet<u64>,
    /// Registered from node metadata: deleted after its last stream closes.
    pub(super) direct: bool,
    /// Hash of the inputs the current snapshot was generated from.
    pub(super) fingerprint: Option<u64>,
    /// Epoch of the view the current snapshot was generated from.
    pub(super) epoch: u64,
    /// Bumped by every stream open: a deregistration scheduled at an older generation is void.
    pub(super) generation: u64,
    /// Streams between their first request and the end of registration.
    pub(super) connecting: u32,
    /// Version of the Dataplane the current snapshot was generated from.
    pub(super) dp_version: Option<u64>,
    /// Services the proxy has outbounds to.
    pub(super) consumes: Vec<String>,
    /// The outbound half of the current snapshot and the hash of its inputs
    /// ([`outbound_key`]): reused while they are unchanged.
    pub(super) outbound: Option<(u64, Arc<[Arc<kuma_xds::Resource>]>)>,
    /// From the node metadata of its latest stream.
    pub(super) node: NodeInfo,
}

/// The connected proxies and their readiness (see the module docs).
pub(super) struct Registry {
    proxies: Mutex<HashMap<String, Proxy>>,
    stream_nodes: Mutex<HashMap<u64, String>>,
    /// Nodes whose resources are being deleted by a deregistration.
    deregistering: Mutex<HashSet<String>>,
    /// Streams registering for a node that had no entry when they began (a proxy's second
    /// stream can begin while its first one is still registering): a deregistration of the
    /// node waits for them too. Locked after `proxies`, never before.
    opening: Mutex<HashMap<String, u32>>,
    /// Per mesh: Dataplanes whose proxy does not serve (starting, draining or gone), left
    /// out of every endpoint list.
    not_ready: Mutex<HashMap<String, HashSet<String>>>,
}

impl Registry {
    pub(super) fn new() -> Self {
        Self {
            proxies: Mutex::new(HashMap::new()),
            stream_nodes: Mutex::new(HashMap::new()),
            deregistering: Mutex::new(HashSet::new()),
            opening: Mutex::new(HashMap::new()),
            not_ready: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn proxies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proxy>> {
        // Critical sections only touch plain maps; a poisoned lock is still consistent.
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stream_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.stream_nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn deregistering(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.deregistering.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn opening(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.opening.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One stream of `node_id` counted in [`Self::opening`] ended its registration.
    fn opened(&self, node_id: &str) {
        let mut opening = self.opening();
        if let Some(n) = opening.get_mut(node_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                opening.remove(node_id);
            }
        }
    }

    fn not_ready(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.not_ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Dataplanes of `mesh` whose proxy does not serve.
    pub(super) fn not_ready_in(&self, mesh: &str) -> HashSet<String> {
        self.not_ready().get(mesh).cloned().unwrap_or_default()
    }

    /// Forgets the readiness record of a deleted Dataplane (created again later, it starts
    /// with none).
    pub(super) fn forget_readiness(&self, mesh: &str, name: &str) {
        if let Some(names) = self.not_ready().get_mut(mesh) {
            names.remove(name);
        }
    }

    /// Records whether a proxy serves; `true` when that changed.
    fn set_ready(&self, mesh: &str, name: &str, ready: bool) -> bool {
        let mut not_ready = self.not_ready();
        if ready {
            let removed = not_ready.get_mut(mesh).is_some_and(|s| s.remove(name));
            if not_ready.get(mesh).is_some_and(HashSet::is_empty) {
                not_ready.remove(mesh);
            }
            removed
        } else {
            not_ready
                .entry(mesh.to_string())
                .or_default()
                .insert(name.to_string())
        }
    }
}

impl Runtime {
    /// Puts a proxy in or out of its peers' endpoints (reconciling its mesh when that
    /// changes).
    fn set_ready(&self, mesh: &str, name: &str, ready: bool) {
        if self.registry.set_ready(mesh, name, ready) {
            tracing::info!(mesh, name, ready, "proxy readiness changed");
            self.reconciler.kick(mesh);
        }
    }

    /// A readiness report of kuma-dp (its token already checked): `ready` once its Envoy is
    /// live, not ready when it starts draining. `false` when the proxy has no open stream
    /// here and claims to be ready.
    pub fn report_readiness(&self, mesh: &str, name: &str, ready: bool) -> bool {
        let node_id = format!("{mesh}.{name}");
        let connected = self
            .registry
            .proxies()
            .get(&node_id)
            .is_some_and(|p| !p.streams.is_empty());
        if ready && !connected {
            return false;
        }
        self.set_ready(mesh, name, ready);
        true
    }

    /// Authenticates and registers the proxy of a new stream; returns its mesh, name, whether
    /// it registered itself (direct lifecycle), and its stored Dataplane. With `hold`, the
    /// proxy is left out of its peers' endpoints from the moment it is authenticated (before
    /// its Dataplane is written) until it reports ready.
    async fn register(
        &self,
        info: &StreamInfo,
        hold: bool,
    ) -> Result<(String, String, bool, Resource), Status> {
        let node_id = info.node.id.as_str();
        let (mesh, name) = parse_node_id(node_id)?;
        if mesh.is_empty() {
            return Err(Status::invalid_argument(format!(
                "node id {node_id:?} must be <mesh>.<name>"
            )));
        }
        // Authenticate before anything is looked up: an unknown name and a bad token get
        // the same answer.
        tokens::authenticate_stream_identity(&self.validator, &info.metadata, &mesh, &name).await?;
        let embedded = embedded_resource(info);
        let key = ResourceKey::new(ResourceType::Dataplane, &mesh, &name);
        let existing = match self.manager.get(&key).await {
            Ok(r) => Some(r),
            Err(ManagerError::Store(store::Error::NotFound(_))) => None,
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let Some(text) = embedded else {
            // Indirect lifecycle: the Dataplane must already exist.
            let Some(existing) = existing else {
                return Err(Status::not_found(format!(
                    "Dataplane {mesh}/{name} does not exist and the proxy sent none"
                )));
            };
            tokens::authorize_registration(&self.validator, &info.metadata, &existing, None)
                .await?;
            if hold {
                self.set_ready(&mesh, &name, false);
            }
            return Ok((mesh, name, false, existing));
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Status::invalid_argument(format!("metadata {METADATA_RESOURCE} is not JSON: {e}"))
        })?;
        let decoded = Resource::decode(value, Some(ResourceType::Dataplane)).map_err(|e| {
            Status::invalid_argument(format!("metadata {METADATA_RESOURCE} is invalid: {e}"))
        })?;
        // Unknown fields are ignored, as Kuma does (and as a PUT does), and named.
        for w in &decoded.warnings {
            tracing::warn!(%mesh, %name, "metadata {METADATA_RESOURCE}: {w}");
        }
        let res = decoded.resource;
        if res.meta.mesh != mesh || res.meta.name != name {
            return Err(Status::permission_denied(format!(
                "node id {node_id} does not match the Dataplane {}/{} in its metadata",
                res.meta.mesh, res.meta.name
            )));
        }
        // The token must fit the proxy it registers and, when one exists, the Dataplane it
        // would replace (no takeover of another service's name).
        tokens::authorize_registration(&self.validator, &info.metadata, &res, existing.as_ref())
            .await?;
        if hold {
            self.set_ready(&mesh, &name, false);
        }
        if let Some(existing) = &existing
            && self.unchanged(existing, &res)
        {
            // A reconnect: nothing to write.
            return Ok((mesh, name, true, existing.clone()));
        }
        match self.manager.upsert(res).await {
            Ok((stored, _)) => Ok((mesh, name, true, stored)),
            Err(ManagerError::MeshNotFound(m)) => Err(Status::failed_precondition(format!(
                "mesh {m} does not exist"
            ))),
            Err(ManagerError::Validation(e)) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// Authenticates and registers a zone proxy (node id `.<name>`): its ZoneIngress or
    /// ZoneEgress from node metadata is upserted (direct lifecycle), keeping the
    /// `availableServices` the control plane wrote; without one it must already exist.
    async fn register_zone_proxy(
        &self,
        info: &StreamInfo,
        kind: ProxyKind,
    ) -> Result<(String, String, bool, Resource), Status> {
        let node_id = info.node.id.as_str();
        let (mesh, name) = parse_node_id(node_id)?;
        if !mesh.is_empty() {
            return Err(Status::invalid_argument(format!(
                "node id {node_id:?} of a zone proxy must be .<name>"
            )));
        }
        let token = if self.validator.dataplane_auth_enabled() {
            tokens::stream_token(&info.metadata)?
        } else {
            String::new()
        };
        tokens::authenticate_zone_proxy(&self.validator, &token, kind.name(), &self.settings.zone)
            .await
            .map_err(|reason| {
                tracing::info!(node_id, reason, "ADS stream of a zone proxy refused");
                Status::unauthenticated(format!("authentication failed: {reason}"))
            })?;
        let rtype = kind.resource_type();
        let key = ResourceKey::new(rtype, "", &name);
        let existing = match self.manager.get(&key).await {
            Ok(r) => Some(r),
            Err(ManagerError::Store(store::Error::NotFound(_))) => None,
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let Some(text) = embedded_resource(info) else {
            return match existing {
                Some(existing) => Ok((mesh, name, false, existing)),
                None => Err(Status::not_found(format!(
                    "{rtype} {name} does not exist and the proxy sent none"
                ))),
            };
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Status::invalid_argument(format!("metadata {METADATA_RESOURCE} is not JSON: {e}"))
        })?;
        let decoded = Resource::decode(value, Some(rtype)).map_err(|e| {
            Status::invalid_argument(format!("metadata {METADATA_RESOURCE} is invalid: {e}"))
        })?;
        for w in &decoded.warnings {
            tracing::warn!(%name, "metadata {METADATA_RESOURCE}: {w}");
        }
        let mut res = decoded.resource;
        if res.meta.name != name {
            return Err(Status::permission_denied(format!(
                "node id {node_id} does not match the {rtype} {} in its metadata",
                res.meta.name
            )));
        }
        // A zone proxy belongs to this zone: one claiming another zone would pass for that
        // zone's ingress in every sidecar's endpoints here.
        let claimed = match &res.spec {
            Spec::ZoneIngress(zi) => zi.zone.as_str(),
            Spec::ZoneEgress(ze) => ze.zone.as_str(),
            _ => "",
        };
        let existing_zone = match existing.as_ref().map(|e| &e.spec) {
            Some(Spec::ZoneIngress(zi)) => zi.zone.as_str(),
            Some(Spec::ZoneEgress(ze)) => ze.zone.as_str(),
            _ => "",
        };
        if !existing_zone.is_empty() && existing_zone != self.settings.zone {
            return Err(Status::permission_denied(format!(
                "{rtype} {name} belongs to zone {existing_zone:?} (synced here): a proxy of this zone cannot replace it"
            )));
        }
        if !claimed.is_empty() && claimed != self.settings.zone {
            return Err(Status::permission_denied(format!(
                "{rtype} {name} claims zone {claimed:?}; this control plane is zone {:?}",
                self.settings.zone
            )));
        }
        // `availableServices` is the control plane's to write, not the proxy's.
        if let (Spec::ZoneIngress(new), Some(Spec::ZoneIngress(old))) =
            (&mut res.spec, existing.as_ref().map(|e| &e.spec))
        {
            new.available_services = old.available_services.clone();
        }
        if let Some(existing) = &existing
            && existing.spec == res.spec
            && res
                .meta
                .labels
                .iter()
                .all(|(k, v)| existing.meta.labels.get(k) == Some(v))
        {
            return Ok((mesh, name, true, existing.clone()));
        }
        match self.manager.upsert(res).await {
            Ok((stored, _)) => Ok((mesh, name, true, stored)),
            Err(ManagerError::Validation(e)) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// Whether registering `new` would leave `stored` as it is (same spec once the zone tag is
    /// added, and every label of `new` already there).
    fn unchanged(&self, stored: &Resource, new: &Resource) -> bool {
        let mut spec = new.spec.clone();
        if let Spec::Dataplane(dp) = &mut spec {
            dp.set_zone_tag(&self.settings.zone);
        }
        spec == stored.spec
            && new
                .meta
                .labels
                .iter()
                .all(|(k, v)| stored.meta.labels.get(k) == Some(v))
    }

    /// Starts a stream of `node_id`: waits (up to 10 s) while a deregistration of the node is
    /// deleting its resources, so that a proxy reconnecting at that moment registers after the
    /// delete, not before it; then counts the stream as connecting, which voids any
    /// deregistration still to come. The check and the count are made under the proxies lock,
    /// the lock a deregistration decides under: either it decided first (and this waits for
    /// its delete) or this stream counts first (and it gives up). `false` when the delete is
    /// still under way; otherwise whether the stream was counted in the node's entry (else
    /// in [`Registry::opening`], the node having none yet).
    async fn begin_stream(&self, node_id: &str) -> Option<bool> {
        for _ in 0..500 {
            {
                let mut proxies = self.registry.proxies();
                if !self.registry.deregistering().contains(node_id) {
                    let counted = proxies.get_mut(node_id).map(|p| {
                        p.generation += 1;
                        p.connecting += 1;
                    });
                    if counted.is_none() {
                        *self
                            .registry
                            .opening()
                            .entry(node_id.to_string())
                            .or_default() += 1;
                    }
                    return Some(counted.is_some());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Undoes [`Self::begin_stream`]'s count of a stream that did not register.
    fn abort_stream(&self, node_id: &str, counted: bool) {
        let mut proxies = self.registry.proxies();
        if !counted {
            self.registry.opened(node_id);
        } else if let Some(p) = proxies.get_mut(node_id) {
            p.connecting = p.connecting.saturating_sub(1);
        }
    }

    async fn deregister_later(
        self: Arc<Self>,
        kind: ProxyKind,
        node_id: String,
        mesh: String,
        name: String,
        generation: u64,
    ) {
        tokio::select! {
            _ = self.shutdown.cancelled() => return,
            _ = tokio::time::sleep(self.settings.deregistration_delay) => {}
        }
        // Still gone = no stream, none registering, and no stream opened since this one closed.
        let still_gone = {
            let mut proxies = self.registry.proxies();
            match proxies.get(&node_id) {
                Some(p)
                    if p.streams.is_empty()
                        && p.connecting == 0
                        && p.generation == generation
                        && !self.registry.opening().contains_key(&node_id) =>
                {
                    proxies.remove(&node_id);
                    self.registry.deregistering().insert(node_id.clone());
                    true
                }
                _ => false,
            }
        };
        if !still_gone {
            return;
        }
        self.cache.remove(&node_id);
        if let Some(pki) = self.envoy_admin.get() {
            pki.forget(&node_id);
        }
        for rtype in [kind.resource_type(), kind.insight_type()] {
            let key = ResourceKey::new(rtype, &mesh, &name);
            match self.manager.delete_internal(&key).await {
                Ok(()) | Err(ManagerError::Store(store::Error::NotFound(_))) => {}
                Err(e) => tracing::warn!(%key, error = %e, "deregistering"),
            }
        }
        self.registry.deregistering().remove(&node_id);
        tracing::info!(node_id, kind = kind.name(), "proxy deregistered");
    }
}

/// Shared-state handle implementing the engine's callbacks.
pub struct XdsCallbacks(pub Arc<Runtime>);

#[tonic::async_trait]
impl Callbacks for XdsCallbacks {
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), Status> {
        let rt = &self.0;
        let node_id = info.node.id.clone();
        let Some(counted) = rt.begin_stream(&node_id).await else {
            // Registering now would let the pending delete remove the Dataplane of a connected
            // proxy (seen with a slow store at 10,000 reconnects): the proxy retries.
            return Err(Status::unavailable(
                "this proxy is being deregistered; retry",
            ));
        };
        // A starting proxy whose kuma-dp reports readiness joins its peers' endpoints when it
        // says it is ready; a reconnecting one (it holds a configuration) serves already.
        let reports = info
            .node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("features"))
            .is_some_and(|v| match &v.kind {
                Some(Kind::ListValue(l)) => l.values.iter().any(|f| {
                    matches!(&f.kind, Some(Kind::StringValue(s)) if s == FEATURE_READINESS_REPORTING)
                }),
                _ => false,
            });
        let kind = match proxy_kind(info) {
            Ok(k) => k,
            Err(e) => {
                rt.abort_stream(&node_id, counted);
                return Err(e);
            }
        };
        // Zone proxies are in no endpoint list: nothing to hold.
        let hold = reports && !info.resumed && kind == ProxyKind::Dataplane;
        let registered = match kind {
            ProxyKind::Dataplane => rt.register(info, hold).await,
            zone_proxy => rt.register_zone_proxy(info, zone_proxy).await,
        };
        let (mesh, name, direct, res) = match registered {
            Ok(r) => r,
            Err(e) => {
                rt.abort_stream(&node_id, counted);
                return Err(e);
            }
        };
        {
            // The stream stops counting as connecting and starts counting as open in one
            // step: a deregistration deciding in between would see neither.
            let mut proxies = rt.registry.proxies();
            let p = proxies.entry(node_id.clone()).or_insert_with(|| Proxy {
                kind,
                mesh: mesh.clone(),
                name: name.clone(),
                streams: HashSet::new(),
                direct,
                fingerprint: None,
                epoch: 0,
                generation: 0,
                connecting: 0,
                dp_version: None,
                consumes: Vec::new(),
                outbound: None,
                node: NodeInfo::default(),
            });
            if counted {
                p.connecting = p.connecting.saturating_sub(1);
            } else {
                rt.registry.opened(&node_id);
            }
            p.streams.insert(info.stream_id);
            p.direct = direct;
            p.node = NodeInfo::from_metadata(info.node.metadata.as_ref());
            // A new stream needs a snapshot in the cache even if nothing changed.
            p.fingerprint = None;
        }
        if !hold && kind == ProxyKind::Dataplane {
            rt.set_ready(&mesh, &name, true);
        }
        rt.registry
            .stream_nodes()
            .insert(info.stream_id, node_id.clone());
        let metadata = info.node.metadata.as_ref().map(struct_to_json);
        let version = metadata.as_ref().and_then(|m| m.get("version").cloned());
        rt.tracker.open(
            info.stream_id,
            kind.insight_type(),
            &mesh,
            &name,
            version,
            metadata,
        );
        if kind == ProxyKind::Dataplane {
            let view = rt
                .view_of(&mesh)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            rt.generate_for(&node_id, &view, &res);
        } else {
            rt.generate_zone_proxy(&node_id, &res);
        }
        tracing::info!(
            node_id,
            stream = info.stream_id,
            delta = info.delta,
            "proxy connected"
        );
        Ok(())
    }

    fn on_response_sent(&self, stream_id: u64, type_url: &str, _version: &str, _nonce: &str) {
        self.0.tracker.sent(stream_id, type_url);
    }

    fn on_ack(&self, stream_id: u64, type_url: &str, _version: &str, _nonce: &str) {
        self.0.tracker.acked(stream_id, type_url);
    }

    fn on_nack(&self, stream_id: u64, type_url: &str, version: &str, _nonce: &str, message: &str) {
        let node = self
            .0
            .registry
            .stream_nodes()
            .get(&stream_id)
            .cloned()
            .unwrap_or_default();
        tracing::warn!(
            node,
            type_url,
            version,
            reason = message,
            "Envoy rejected a configuration (NACK)"
        );
        self.0.tracker.nacked(stream_id, type_url, message);
    }

    async fn on_stream_closed(&self, info: &StreamInfo) {
        let rt = self.0.clone();
        let Some(node_id) = rt.registry.stream_nodes().remove(&info.stream_id) else {
            return;
        };
        rt.tracker.close(info.stream_id);
        let deregister = {
            let mut proxies = rt.registry.proxies();
            match proxies.get_mut(&node_id) {
                Some(p) => {
                    p.streams.remove(&info.stream_id);
                    p.streams.is_empty().then(|| {
                        (
                            p.kind,
                            p.direct,
                            p.mesh.clone(),
                            p.name.clone(),
                            p.generation,
                        )
                    })
                }
                None => None,
            }
        };
        tracing::info!(node_id, stream = info.stream_id, "proxy stream closed");
        if let Some((kind, direct, mesh, name, generation)) = deregister {
            // Its Envoy is gone: out of its peers' endpoints now, not at deregistration.
            if kind == ProxyKind::Dataplane {
                rt.set_ready(&mesh, &name, false);
            }
            if direct {
                tokio::spawn(rt.deregister_later(kind, node_id, mesh, name, generation));
            } else {
                rt.registry
                    .proxies()
                    .retain(|id, p| id != &node_id || !p.streams.is_empty());
                rt.cache.remove(&node_id);
            }
        }
    }
}

/// `<mesh>.<name>`, split at the first dot; zone proxies have an empty mesh (`.<name>`).
pub fn parse_node_id(id: &str) -> Result<(String, String), Status> {
    match id.split_once('.') {
        Some((mesh, name)) if !name.is_empty() => Ok((mesh.to_string(), name.to_string())),
        _ => Err(Status::invalid_argument(format!(
            "node id {id:?} must be <mesh>.<name>"
        ))),
    }
}

/// Protobuf `Struct` → JSON (node metadata into the insight).
pub fn struct_to_json(s: &Struct) -> Value {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    Value::Object(
        keys.into_iter()
            .map(|k| (k.clone(), pb_value_to_json(&s.fields[k])))
            .collect(),
    )
}

/// JSON → protobuf `Struct` (a JSON value that is not an object gives an empty one).
pub fn json_to_struct(v: &Value) -> Struct {
    Struct {
        fields: v
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), json_to_pb_value(v)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn json_to_pb_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_list(a.iter().map(json_to_pb_value).collect())),
        Value::Object(_) => Kind::StructValue(json_to_struct(v)),
    };
    PbValue { kind: Some(kind) }
}

fn prost_list(values: Vec<PbValue>) -> envoy_types::pb::google::protobuf::ListValue {
    envoy_types::pb::google::protobuf::ListValue { values }
}

fn pb_value_to_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(pb_value_to_json).collect()),
    }
}
