//! xDS wiring of the control plane: proxy lifecycle and insights as callbacks of the
//! mesh-agnostic engine (`kuma_xds`), and the reconciler that turns store changes into
//! snapshots.
//!
//! Data flow: store event → (debounce window) → affected meshes → one [`view::MeshView`]
//! rebuild per mesh → regeneration only for connected proxies whose inputs changed (their
//! Dataplane, or the endpoints/protocol of a service they consume) → `SnapshotCache::set`,
//! where the engine sends only resources whose content hash changed.

pub mod generator;
pub mod insight;
pub mod view;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use kuma_core::resource::{Dataplane, Resource, ResourceKey, ResourceType, Spec};
use kuma_core::store::{self, EventKind};
use kuma_xds::{Callbacks, SnapshotCache, StreamInfo};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::manager::{ManagerError, ResourceManager};
use view::MeshView;

/// Node metadata key carrying the Dataplane (direct lifecycle).
pub const METADATA_RESOURCE: &str = "dataplane.resource";

/// Settings of the xDS runtime.
#[derive(Clone)]
pub struct Settings {
    pub zone: String,
    pub instance_id: String,
    pub deregistration_delay: Duration,
    pub flush_interval: Duration,
    pub debounce: Duration,
}

struct Proxy {
    mesh: String,
    name: String,
    streams: HashSet<u64>,
    /// Registered from node metadata: deleted after its last stream closes.
    direct: bool,
    /// Hash of the inputs the current snapshot was generated from.
    fingerprint: Option<u64>,
}

/// The control plane side of xDS: callbacks plus the reconciler.
pub struct Runtime {
    settings: Settings,
    manager: Arc<ResourceManager>,
    cache: SnapshotCache,
    tracker: insight::Tracker,
    proxies: Mutex<HashMap<String, Proxy>>,
    stream_nodes: Mutex<HashMap<u64, String>>,
    views: Mutex<HashMap<String, Arc<MeshView>>>,
    shutdown: CancellationToken,
}

impl Runtime {
    pub fn new(
        settings: Settings,
        manager: Arc<ResourceManager>,
        cache: SnapshotCache,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            tracker: insight::Tracker::new(manager.clone(), settings.instance_id.clone()),
            settings,
            manager,
            cache,
            proxies: Mutex::new(HashMap::new()),
            stream_nodes: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    fn proxies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proxy>> {
        // Critical sections only touch plain maps; a poisoned lock is still consistent.
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MeshView>>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stream_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.stream_nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the reconciler and the insight flusher until shutdown.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        self.tracker.close_stale().await;
        let flusher = {
            let this = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(
                    this.settings.flush_interval.max(Duration::from_millis(50)),
                );
                loop {
                    tokio::select! {
                        _ = this.shutdown.cancelled() => break,
                        _ = tick.tick() => this.tracker.flush_dirty().await,
                    }
                }
            })
        };
        let mut rx = self.manager.store().watch();
        loop {
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ev = rx.recv() => ev,
            };
            let mut meshes = HashSet::new();
            let mut resync = false;
            let note = |ev: Result<store::Event, RecvError>, meshes: &mut HashSet<String>| match ev
            {
                Ok(ev) => {
                    if let Some(m) = affected_mesh(&ev) {
                        meshes.insert(m);
                    }
                    false
                }
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => false,
            };
            resync |= note(first, &mut meshes);
            // Coalesce the burst.
            let deadline = tokio::time::Instant::now() + self.settings.debounce;
            while let Ok(ev) = tokio::time::timeout_at(deadline, rx.recv()).await {
                resync |= note(ev, &mut meshes);
            }
            if resync {
                tracing::warn!("store watch lagged; regenerating every mesh");
                meshes.extend(self.proxies().values().map(|p| p.mesh.clone()));
                meshes.extend(self.views().keys().cloned());
            }
            for mesh in meshes {
                if let Err(e) = self.reconcile_mesh(&mesh).await {
                    tracing::warn!(mesh, error = %e, "reconciling mesh failed");
                }
            }
        }
        flusher.abort();
        Ok(())
    }

    /// Rebuilds the view of `mesh` and regenerates its proxies whose inputs changed.
    async fn reconcile_mesh(&self, mesh: &str) -> anyhow::Result<()> {
        let dataplanes = self
            .manager
            .list(ResourceType::Dataplane, Some(mesh))
            .await?;
        let by_name: HashMap<&str, &Resource> = dataplanes
            .iter()
            .map(|r| (r.meta.name.as_str(), r))
            .collect();
        let view = Arc::new(MeshView::build(
            mesh,
            &self.settings.zone,
            dataplanes.iter().filter_map(|r| match &r.spec {
                Spec::Dataplane(d) => Some(d),
                _ => None,
            }),
        ));
        self.views().insert(mesh.to_string(), view.clone());
        let nodes: Vec<(String, String)> = self
            .proxies()
            .iter()
            .filter(|(_, p)| p.mesh == mesh)
            .map(|(id, p)| (id.clone(), p.name.clone()))
            .collect();
        let mut regenerated = 0;
        for (node_id, name) in nodes {
            let Some(res) = by_name.get(name.as_str()) else {
                continue;
            };
            if self.generate_for(&node_id, &view, res) {
                regenerated += 1;
            }
        }
        tracing::debug!(mesh, regenerated, "mesh reconciled");
        Ok(())
    }

    /// Generates and publishes the snapshot of one proxy if its inputs changed.
    fn generate_for(&self, node_id: &str, view: &MeshView, res: &Resource) -> bool {
        let Spec::Dataplane(dp) = &res.spec else {
            return false;
        };
        let fp = fingerprint(view, res, dp);
        {
            let proxies = self.proxies();
            match proxies.get(node_id) {
                Some(p) if p.fingerprint == Some(fp) => return false,
                Some(_) => {}
                None => return false,
            }
        }
        let snapshot = generator::generate(view, dp);
        self.cache.set(node_id, Arc::new(snapshot));
        if let Some(p) = self.proxies().get_mut(node_id) {
            p.fingerprint = Some(fp);
        }
        true
    }

    async fn view_of(&self, mesh: &str) -> anyhow::Result<Arc<MeshView>> {
        if let Some(v) = self.views().get(mesh) {
            return Ok(v.clone());
        }
        let dataplanes = self
            .manager
            .list(ResourceType::Dataplane, Some(mesh))
            .await?;
        let view = Arc::new(MeshView::build(
            mesh,
            &self.settings.zone,
            dataplanes.iter().filter_map(|r| match &r.spec {
                Spec::Dataplane(d) => Some(d),
                _ => None,
            }),
        ));
        self.views().insert(mesh.to_string(), view.clone());
        Ok(view)
    }

    async fn register(&self, info: &StreamInfo) -> Result<(String, String, bool), Status> {
        let node_id = info.node.id.as_str();
        let (mesh, name) = parse_node_id(node_id)?;
        let metadata = info.node.metadata.as_ref();
        let embedded = metadata
            .and_then(|m| m.fields.get(METADATA_RESOURCE))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            });
        let Some(text) = embedded else {
            // Indirect lifecycle: the Dataplane must already exist.
            let key = ResourceKey::new(ResourceType::Dataplane, &mesh, &name);
            return match self.manager.get(&key).await {
                Ok(_) => Ok((mesh, name, false)),
                Err(ManagerError::Store(store::Error::NotFound(_))) => Err(Status::not_found(
                    format!("Dataplane {mesh}/{name} does not exist and the proxy sent none"),
                )),
                Err(e) => Err(Status::unavailable(e.to_string())),
            };
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Status::invalid_argument(format!("metadata {METADATA_RESOURCE} is not JSON: {e}"))
        })?;
        let res = Resource::from_wire(value, Some(ResourceType::Dataplane)).map_err(|e| {
            Status::invalid_argument(format!("metadata {METADATA_RESOURCE} is invalid: {e}"))
        })?;
        if res.meta.mesh != mesh || res.meta.name != name {
            return Err(Status::permission_denied(format!(
                "node id {node_id} does not match the Dataplane {}/{} in its metadata",
                res.meta.mesh, res.meta.name
            )));
        }
        match self.manager.upsert(res).await {
            Ok(_) => Ok((mesh, name, true)),
            Err(ManagerError::MeshNotFound(m)) => Err(Status::failed_precondition(format!(
                "mesh {m} does not exist"
            ))),
            Err(ManagerError::Validation(e)) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn deregister_later(self: Arc<Self>, node_id: String, mesh: String, name: String) {
        tokio::select! {
            _ = self.shutdown.cancelled() => return,
            _ = tokio::time::sleep(self.settings.deregistration_delay) => {}
        }
        let still_gone = {
            let mut proxies = self.proxies();
            match proxies.get(&node_id) {
                Some(p) if p.streams.is_empty() => {
                    proxies.remove(&node_id);
                    true
                }
                _ => false,
            }
        };
        if !still_gone {
            return;
        }
        self.cache.remove(&node_id);
        for rtype in [ResourceType::Dataplane, ResourceType::DataplaneInsight] {
            let key = ResourceKey::new(rtype, &mesh, &name);
            match self.manager.delete_internal(&key).await {
                Ok(()) | Err(ManagerError::Store(store::Error::NotFound(_))) => {}
                Err(e) => tracing::warn!(%key, error = %e, "deregistering"),
            }
        }
        tracing::info!(node_id, "dataplane deregistered");
    }
}

/// Shared-state handle implementing the engine's callbacks.
pub struct XdsCallbacks(pub Arc<Runtime>);

#[tonic::async_trait]
impl Callbacks for XdsCallbacks {
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), Status> {
        let rt = &self.0;
        let node_id = info.node.id.clone();
        let (mesh, name, direct) = rt.register(info).await?;
        {
            let mut proxies = rt.proxies();
            let p = proxies.entry(node_id.clone()).or_insert_with(|| Proxy {
                mesh: mesh.clone(),
                name: name.clone(),
                streams: HashSet::new(),
                direct,
                fingerprint: None,
            });
            p.streams.insert(info.stream_id);
            p.direct = direct;
            // A new stream needs a snapshot in the cache even if nothing changed.
            p.fingerprint = None;
        }
        rt.stream_nodes().insert(info.stream_id, node_id.clone());
        let metadata = info.node.metadata.as_ref().map(struct_to_json);
        let version = metadata.as_ref().and_then(|m| m.get("version").cloned());
        rt.tracker
            .open(info.stream_id, &mesh, &name, version, metadata)
            .await;
        let view = rt
            .view_of(&mesh)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let key = ResourceKey::new(ResourceType::Dataplane, &mesh, &name);
        let res = rt
            .manager
            .get(&key)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        rt.generate_for(&node_id, &view, &res);
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
        let Some(node_id) = rt.stream_nodes().remove(&info.stream_id) else {
            return;
        };
        rt.tracker.close(info.stream_id).await;
        let deregister = {
            let mut proxies = rt.proxies();
            match proxies.get_mut(&node_id) {
                Some(p) => {
                    p.streams.remove(&info.stream_id);
                    p.streams
                        .is_empty()
                        .then(|| (p.direct, p.mesh.clone(), p.name.clone()))
                }
                None => None,
            }
        };
        tracing::info!(node_id, stream = info.stream_id, "proxy stream closed");
        if let Some((direct, mesh, name)) = deregister {
            if direct {
                tokio::spawn(rt.deregister_later(node_id, mesh, name));
            } else {
                rt.proxies()
                    .retain(|id, p| id != &node_id || !p.streams.is_empty());
                rt.cache.remove(&node_id);
            }
        }
    }
}

/// The mesh whose proxies an event may affect, if any.
fn affected_mesh(ev: &store::Event) -> Option<String> {
    match ev.key.rtype {
        ResourceType::Dataplane | ResourceType::MeshTrafficPermission | ResourceType::Secret => {
            Some(ev.key.mesh.clone())
        }
        ResourceType::Mesh if ev.kind != EventKind::Deleted => Some(ev.key.name.clone()),
        _ => None,
    }
}

/// `<mesh>.<name>`, split at the first dot.
pub fn parse_node_id(id: &str) -> Result<(String, String), Status> {
    match id.split_once('.') {
        Some((mesh, name)) if !mesh.is_empty() && !name.is_empty() => {
            Ok((mesh.to_string(), name.to_string()))
        }
        _ => Err(Status::invalid_argument(format!(
            "node id {id:?} must be <mesh>.<name>"
        ))),
    }
}

/// What a proxy's snapshot depends on: its own Dataplane and, per consumed service, the
/// shared endpoints version and the protocol.
fn fingerprint(view: &MeshView, res: &Resource, dp: &Dataplane) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    res.meta.version.hash(&mut h);
    res.meta.modification_time.hash(&mut h);
    for out in dp.outbounds() {
        if let Some(s) = out.service() {
            s.hash(&mut h);
            view.endpoints_version(s).hash(&mut h);
            view.protocol(s).hash(&mut h);
        }
    }
    h.finish()
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
