//! xDS wiring of the control plane: proxy lifecycle and insights as callbacks of the
//! mesh-agnostic engine (`kuma_xds`), and the reconciler that turns store changes into
//! snapshots.
//!
//! Data flow: store event → (debounce window) → affected meshes → one [`view::MeshView`]
//! rebuild per mesh → regeneration only for connected proxies whose inputs changed (their
//! Dataplane, or the endpoints/protocol of a service they consume) → `SnapshotCache::set`,
//! where the engine sends only resources whose content hash changed.

pub mod generator;
pub mod inputs;
pub mod insight;
pub mod rbac;
pub mod view;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use kuma_core::resource::mesh::CaBackend;
use kuma_core::resource::{Dataplane, Resource, ResourceKey, ResourceType, Spec};
use kuma_core::store::{self, EventKind};
use kuma_xds::{Callbacks, SnapshotCache, StreamInfo};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::ca;
use crate::manager::{ManagerError, ResourceManager};
use crate::tokens::{self, Validator};
use view::MeshView;

/// Below this many proxies to regenerate, a reconcile generates them on its own task (the
/// 50-proxy harness tests run the split path).
const PARALLEL_GENERATION_MIN: usize = 32;

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
    /// Epoch of the view the current snapshot was generated from.
    epoch: u64,
    /// Bumped by every stream open: a deregistration scheduled at an older generation is void.
    generation: u64,
    /// Streams between their first request and the end of registration.
    connecting: u32,
    /// Version of the Dataplane the current snapshot was generated from.
    dp_version: Option<u64>,
    /// Services the proxy has outbounds to.
    consumes: Vec<String>,
    /// The outbound half of the current snapshot and the hash of its inputs
    /// ([`outbound_key`]): reused while they are unchanged.
    outbound: Option<(u64, Arc<[Arc<kuma_xds::Resource>]>)>,
}

/// The control plane side of xDS: callbacks plus the reconciler.
pub struct Runtime {
    settings: Settings,
    manager: Arc<ResourceManager>,
    validator: Arc<Validator>,
    cache: SnapshotCache,
    tracker: insight::Tracker,
    proxies: Mutex<HashMap<String, Proxy>>,
    stream_nodes: Mutex<HashMap<u64, String>>,
    views: Mutex<HashMap<String, Arc<MeshView>>>,
    inputs: inputs::Inputs,
    inputs_ready: std::sync::atomic::AtomicBool,
    epochs: std::sync::atomic::AtomicU64,
    /// Nodes whose resources are being deleted by a deregistration.
    deregistering: Mutex<HashSet<String>>,
    /// Parsed CA per mesh, keyed by a hash of its PEMs.
    cas: Mutex<HashMap<String, (u64, Arc<ca::Ca>)>>,
    /// The loaded mTLS backend per mesh, with the version of the Mesh it was loaded for;
    /// dropped on any Mesh or Secret event of the mesh (so a rebuild reads no secret).
    mtls: Mutex<HashMap<String, (u64, Option<view::Mtls>)>>,
    /// Issued identity per node id.
    certs: Mutex<HashMap<String, IssuedCert>>,
    /// Rotation deadlines.
    rotations: Mutex<BTreeSet<(SystemTime, String)>>,
    rotation_wakeup: tokio::sync::Notify,
    shutdown: CancellationToken,
}

struct IssuedCert {
    fingerprint: u64,
    secret: Arc<kuma_xds::Resource>,
    rotate_at: SystemTime,
    regenerations: u64,
}

impl Runtime {
    pub fn new(
        settings: Settings,
        manager: Arc<ResourceManager>,
        cache: SnapshotCache,
        validator: Arc<Validator>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            tracker: insight::Tracker::new(manager.clone(), settings.instance_id.clone()),
            settings,
            manager,
            validator,
            cache,
            proxies: Mutex::new(HashMap::new()),
            stream_nodes: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            inputs: inputs::Inputs::default(),
            inputs_ready: std::sync::atomic::AtomicBool::new(false),
            epochs: std::sync::atomic::AtomicU64::new(0),
            deregistering: Mutex::new(HashSet::new()),
            cas: Mutex::new(HashMap::new()),
            mtls: Mutex::new(HashMap::new()),
            certs: Mutex::new(HashMap::new()),
            rotations: Mutex::new(BTreeSet::new()),
            rotation_wakeup: tokio::sync::Notify::new(),
            shutdown,
        })
    }

    fn loaded_mtls(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Option<view::Mtls>)>> {
        // Only whole entries are inserted or removed: a poisoned lock is still consistent.
        self.mtls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn proxies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proxy>> {
        // Critical sections only touch plain maps; a poisoned lock is still consistent.
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MeshView>>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn certs(&self) -> std::sync::MutexGuard<'_, HashMap<String, IssuedCert>> {
        self.certs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stream_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.stream_nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the reconciler and the insight flusher until shutdown.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        // Subscribe before anything awaits: the API serves as soon as the CP is up, and a
        // change written before the subscription would otherwise never be reconciled.
        let mut rx = self.manager.store().watch();
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
                        _ = this.tracker.woken() => this.tracker.flush_urgent().await,
                        _ = tick.tick() => this.tracker.flush_dirty().await,
                    }
                }
            })
        };
        let rotations = tokio::spawn(self.clone().run_rotations());
        // Subscribed above, loaded now: nothing written in between is missed.
        self.inputs.load_all(&self.manager).await?;
        self.inputs_ready
            .store(true, std::sync::atomic::Ordering::Release);
        // Every mesh, with or without proxies: builtin CA roots are created at the first
        // reconcile of a mesh, whatever was written before the subscription.
        let mut known: BTreeSet<String> = self.views().keys().cloned().collect();
        known.extend(self.inputs.mesh_names());
        for mesh in known {
            if let Err(e) = self.reconcile_mesh(&mesh).await {
                tracing::warn!(mesh, error = %e, "reconciling mesh failed");
            }
        }
        loop {
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ev = rx.recv() => ev,
            };
            let mut meshes = HashSet::new();
            let mut resync = false;
            let mut events = Vec::new();
            let mut note = |ev: Result<store::Event, RecvError>| match ev {
                Ok(ev) => {
                    if let Some(m) = affected_mesh(&ev) {
                        meshes.insert(m);
                    }
                    events.push(ev);
                    false
                }
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => false,
            };
            resync |= note(first);
            // Coalesce the burst: stop at the first quiet gap, or at the debounce window at
            // the latest (a steady stream of events, such as a connect storm).
            let deadline = tokio::time::Instant::now() + self.settings.debounce;
            let gap = quiet_gap(self.settings.debounce);
            loop {
                let until = deadline.min(tokio::time::Instant::now() + gap);
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(ev) => resync |= note(ev),
                    Err(_) => break,
                }
            }
            for ev in &events {
                if matches!(ev.key.rtype, ResourceType::Mesh | ResourceType::Secret) {
                    let mesh = affected_mesh(ev).unwrap_or_else(|| ev.key.name.clone());
                    self.loaded_mtls().remove(&mesh);
                }
                if let Err(e) = self.inputs.apply(&self.manager, ev).await {
                    tracing::warn!(key = %ev.key, error = %e, "reading a changed resource; reloading everything");
                    resync = true;
                }
            }
            if resync {
                tracing::warn!(
                    "store watch lagged or failed; reloading and regenerating every mesh"
                );
                if let Err(e) = self.inputs.load_all(&self.manager).await {
                    tracing::error!(error = %e, "reloading resources failed");
                }
                self.loaded_mtls().clear();
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
        rotations.abort();
        Ok(())
    }

    /// Builds the view of `mesh` from the store: endpoints, mTLS (creating builtin roots on
    /// first use) and policies.
    async fn build_view(&self, mesh: &str) -> anyhow::Result<(Arc<MeshView>, Vec<Arc<Resource>>)> {
        if !self.inputs_ready.load(std::sync::atomic::Ordering::Acquire) {
            // Before the first load (a proxy connecting during start-up): read the store.
            self.inputs.load_all(&self.manager).await?;
        }
        // Taken before reading anything: a later epoch always saw later inputs.
        let epoch = self
            .epochs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let dataplanes = self.inputs.list(mesh, ResourceType::Dataplane);
        let prev = self.views().get(mesh).cloned();
        let mut view = MeshView::rebuild(
            mesh,
            &self.settings.zone,
            dataplanes.iter().filter_map(|r| match &r.spec {
                Spec::Dataplane(d) => Some(d),
                _ => None,
            }),
            prev.as_deref(),
        );
        if let Some(mesh_res) = self.inputs.mesh(mesh)
            && let Spec::Mesh(spec) = &mesh_res.spec
        {
            let loaded = self
                .loaded_mtls()
                .get(mesh)
                .filter(|(v, _)| *v == mesh_res.meta.version)
                .map(|(_, m)| m.clone());
            if let Some(mtls) = loaded {
                if let Some(m) = mtls {
                    view = view.with_mtls(m);
                }
            } else {
                let mut ok = true;
                if let Err(e) = ca::ensure_builtin_roots(&self.manager, &mesh_res).await {
                    tracing::warn!(mesh, error = %e, "creating the builtin CA");
                    ok = false;
                }
                let mut mtls = None;
                if let Some(backend) = spec.enabled_backend() {
                    match self.load_ca(mesh, backend).await {
                        Ok(m) => mtls = Some(m),
                        Err(e) => {
                            ok = false;
                            tracing::error!(mesh, error = %e, "mTLS is enabled but its CA cannot be loaded; proxies keep plaintext config")
                        }
                    }
                }
                // Failures are not remembered: the next rebuild tries again.
                if ok {
                    self.loaded_mtls()
                        .insert(mesh.to_string(), (mesh_res.meta.version, mtls.clone()));
                }
                if let Some(m) = mtls {
                    view = view.with_mtls(m);
                }
            }
        }
        let policies = self
            .inputs
            .list(mesh, ResourceType::MeshTrafficPermission)
            .into_iter()
            .filter_map(|r| match &r.spec {
                Spec::MeshTrafficPermission(p) => Some((r.meta.name.clone(), p.clone())),
                _ => None,
            })
            .collect();
        let view = Arc::new(view.with_policies(policies).with_epoch(epoch));
        let newest = {
            let mut views = self.views();
            match views.get(mesh) {
                // A concurrent, later build already landed: use it.
                Some(v) if v.epoch > epoch => v.clone(),
                _ => {
                    views.insert(mesh.to_string(), view.clone());
                    view
                }
            }
        };
        Ok((newest, dataplanes))
    }

    /// The CA of a backend, parsed once per distinct certificate/key pair.
    async fn load_ca(&self, mesh: &str, backend: &CaBackend) -> Result<view::Mtls, ca::Error> {
        let (cert, key) = ca::load_pems(&self.manager, mesh, backend).await?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&backend.name, &cert, &key).hash(&mut h);
        let id = h.finish();
        let cached = self
            .cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(mesh)
            .filter(|(cid, _)| *cid == id)
            .map(|(_, c)| c.clone());
        let ca = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(ca::Ca::from_pem(&backend.name, &cert, &key)?);
                self.cas
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(mesh.to_string(), (id, c.clone()));
                c
            }
        };
        Ok(view::Mtls {
            backend: backend.name.clone(),
            permissive: ca::is_permissive(backend),
            ca_secret: Arc::new(generator::ca_secret(mesh, &ca.cert_pem)),
            ca,
            lifetime: ca::dp_cert_lifetime(backend),
        })
    }

    /// Rebuilds the view of `mesh` and regenerates its proxies whose inputs changed.
    async fn reconcile_mesh(self: &Arc<Self>, mesh: &str) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let prev = self.views().get(mesh).cloned();
        let (view, dataplanes) = self.build_view(mesh).await?;
        let view_built = started.elapsed();
        let by_name: HashMap<&str, &Arc<Resource>> = dataplanes
            .iter()
            .map(|r| (r.meta.name.as_str(), r))
            .collect();
        // When nothing mesh-wide changed (mTLS, policies), only proxies whose own Dataplane
        // changed or that consume a service whose endpoints or protocol changed need a look;
        // the others are skipped without fingerprinting them.
        // Only valid for proxies whose snapshot came from exactly `prev`.
        let changed: Option<(u64, HashSet<&str>)> = prev
            .as_ref()
            .filter(|p| p.mesh_fingerprint() == view.mesh_fingerprint())
            .map(|p| (p.epoch, view.changed_services(p)));
        let mut nodes: Vec<(String, String)> = Vec::new();
        for (id, p) in self.proxies().iter_mut().filter(|(_, p)| p.mesh == mesh) {
            let skip = match (&changed, by_name.get(p.name.as_str())) {
                (Some((prev_epoch, changed)), Some(res)) => {
                    p.fingerprint.is_some()
                        && p.epoch == *prev_epoch
                        && p.dp_version == Some(res.meta.version)
                        && !p.consumes.iter().any(|s| changed.contains(s.as_str()))
                }
                _ => false,
            };
            if skip {
                // Its config is what this view would generate: it is now current for it.
                p.epoch = view.epoch;
            } else {
                nodes.push((id.clone(), p.name.clone()));
            }
        }
        let work: Vec<(String, Arc<Resource>)> = nodes
            .into_iter()
            .filter_map(|(id, name)| by_name.get(name.as_str()).map(|r| (id, Arc::clone(r))))
            .collect();
        let outcomes = self.generate_all(&view, work).await;
        let regenerated = outcomes.iter().flatten().count();
        let outbound_reused = outcomes.iter().flatten().filter(|r| **r).count();
        tracing::debug!(
            mesh,
            regenerated,
            outbound_reused,
            view_ms = view_built.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "mesh reconciled"
        );
        Ok(())
    }

    /// Runs [`Self::generate_for`] over `work`: inline when small; otherwise split over one
    /// blocking thread per core, so a mesh-wide change (every proxy of the mesh) is not
    /// bound to one core.
    async fn generate_all(
        self: &Arc<Self>,
        view: &Arc<MeshView>,
        work: Vec<(String, Arc<Resource>)>,
    ) -> Vec<Option<bool>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 || work.len() < PARALLEL_GENERATION_MIN {
            return work
                .iter()
                .map(|(id, res)| self.generate_for(id, view, res))
                .collect();
        }
        let per = work.len().div_ceil(threads);
        let mut work = work.into_iter();
        let mut tasks = Vec::with_capacity(threads);
        loop {
            let chunk: Vec<_> = work.by_ref().take(per).collect();
            if chunk.is_empty() {
                break;
            }
            let (this, view) = (self.clone(), view.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .map(|(id, res)| this.generate_for(id, &view, res))
                    .collect::<Vec<_>>()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            match t.await {
                Ok(r) => out.extend(r),
                Err(e) => tracing::error!(error = %e, "generating proxy configs failed"),
            }
        }
        out
    }

    /// The identity secret of a proxy: reused while valid, reissued when missing, when the
    /// CA or the proxy's tags changed, or after 80% of its lifetime.
    fn identity_for(
        &self,
        node_id: &str,
        mesh: &str,
        mtls: &view::Mtls,
        dp: &Dataplane,
    ) -> Option<Arc<kuma_xds::Resource>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        mtls.backend.hash(&mut h);
        mtls.ca_secret.version.hash(&mut h);
        for inbound in dp.inbounds() {
            inbound.tags.hash(&mut h);
        }
        let wanted = h.finish();
        let now = SystemTime::now();
        let mut regenerations = 0;
        if let Some(c) = self.certs().get(node_id) {
            if c.fingerprint == wanted && now < c.rotate_at {
                return Some(c.secret.clone());
            }
            regenerations = c.regenerations;
        }
        let issued = match mtls.ca.issue(mesh, dp, mtls.lifetime) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(node_id, error = %e, "issuing the proxy identity failed");
                return self.certs().get(node_id).map(|c| c.secret.clone());
            }
        };
        let secret = Arc::new(generator::identity_secret(
            mesh,
            &issued.cert_pem,
            &issued.key_pem,
        ));
        let not_before = SystemTime::from(issued.not_before);
        let not_after = SystemTime::from(issued.not_after);
        let life = not_after.duration_since(not_before).unwrap_or_default();
        let rotate_at = not_before + life.mul_f64(0.8);
        self.certs().insert(
            node_id.to_string(),
            IssuedCert {
                fingerprint: wanted,
                secret: secret.clone(),
                rotate_at,
                regenerations: regenerations + 1,
            },
        );
        self.rotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((rotate_at, node_id.to_string()));
        self.rotation_wakeup.notify_one();
        let streams: Vec<u64> = self
            .proxies()
            .get(node_id)
            .map(|p| p.streams.iter().copied().collect())
            .unwrap_or_default();
        self.tracker.set_mtls(
            &streams,
            serde_json::json!({
                "certificateExpirationTime": kuma_core::resource::format_time(&chrono::DateTime::<chrono::Utc>::from(not_after)),
                "lastCertificateRegeneration": kuma_core::resource::format_time(&chrono::Utc::now()),
                "certificateRegenerations": regenerations + 1,
                "issuedBackend": mtls.backend,
                "supportedBackends": [mtls.backend],
            }),
        );
        Some(secret)
    }

    /// Generates and publishes the snapshot of one proxy if its inputs changed; `Some` when
    /// published, with whether the outbound half was reused.
    fn generate_for(&self, node_id: &str, view: &MeshView, res: &Resource) -> Option<bool> {
        let Spec::Dataplane(dp) = &res.spec else {
            return None;
        };
        let identity = view
            .mtls()
            .and_then(|m| self.identity_for(node_id, &view.mesh, m, dp));
        let mtls = view.mtls().is_some() && identity.is_some();
        let out_key = outbound_key(view, res, dp, mtls);
        let fp = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            out_key.hash(&mut h);
            view.mesh_fingerprint().hash(&mut h);
            identity.as_ref().map(|id| &id.version).hash(&mut h);
            h.finish()
        };
        let reusable = {
            let proxies = self.proxies();
            match proxies.get(node_id) {
                Some(p) if p.fingerprint == Some(fp) || p.epoch > view.epoch => return None,
                Some(p) => p
                    .outbound
                    .as_ref()
                    .filter(|(k, _)| *k == out_key)
                    .map(|(_, o)| o.clone()),
                None => return None,
            }
        };
        let reused = reusable.is_some();
        let outbound =
            reusable.unwrap_or_else(|| generator::outbound_resources(view, dp, mtls).into());
        let snapshot = generator::assemble(
            view,
            &generator::Proxy {
                name: &res.meta.name,
                labels: &res.meta.labels,
                dataplane: dp,
                identity,
            },
            &outbound,
        );
        // Publish only if no newer view was applied meanwhile (check and set under one lock).
        let mut proxies = self.proxies();
        match proxies.get_mut(node_id) {
            Some(p) if p.epoch <= view.epoch => {
                self.cache.set(node_id, Arc::new(snapshot));
                p.fingerprint = Some(fp);
                p.epoch = view.epoch;
                p.dp_version = Some(res.meta.version);
                p.outbound = Some((out_key, outbound));
                p.consumes = dp
                    .outbounds()
                    .iter()
                    .filter_map(|o| o.service().map(str::to_string))
                    .collect();
                Some(reused)
            }
            _ => None,
        }
    }

    async fn view_of(&self, mesh: &str) -> anyhow::Result<Arc<MeshView>> {
        if let Some(v) = self.views().get(mesh) {
            return Ok(v.clone());
        }
        Ok(self.build_view(mesh).await?.0)
    }

    /// Reissues identities when they reach 80% of their lifetime: one task for all proxies,
    /// sleeping until the earliest deadline.
    async fn run_rotations(self: Arc<Self>) {
        loop {
            let next = self
                .rotations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first()
                .map(|(t, _)| *t);
            let wait = next
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.rotation_wakeup.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = SystemTime::now();
            let due: Vec<String> = {
                let mut r = self.rotations.lock().unwrap_or_else(|e| e.into_inner());
                let mut due = Vec::new();
                while let Some((t, _)) = r.first() {
                    if *t > now {
                        break;
                    }
                    if let Some((_, n)) = r.pop_first() {
                        due.push(n);
                    }
                }
                due
            };
            for node_id in due {
                let Some((mesh, name)) = self
                    .proxies()
                    .get(&node_id)
                    .map(|p| (p.mesh.clone(), p.name.clone()))
                else {
                    self.certs().remove(&node_id);
                    continue;
                };
                let key = ResourceKey::new(ResourceType::Dataplane, &mesh, &name);
                let (Ok(view), Ok(res)) = (self.view_of(&mesh).await, self.manager.get(&key).await)
                else {
                    continue;
                };
                if self.generate_for(&node_id, &view, &res).is_some() {
                    tracing::debug!(node_id, "identity certificate rotated");
                }
            }
        }
    }

    /// Authenticates and registers the proxy of a new stream; returns its mesh, name, whether
    /// it registered itself (direct lifecycle), and its stored Dataplane.
    async fn register(
        &self,
        info: &StreamInfo,
    ) -> Result<(String, String, bool, Resource), Status> {
        let node_id = info.node.id.as_str();
        let (mesh, name) = parse_node_id(node_id)?;
        let metadata = info.node.metadata.as_ref();
        let embedded = metadata
            .and_then(|m| m.fields.get(METADATA_RESOURCE))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            });
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
            return Ok((mesh, name, false, existing));
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
        // The token must fit the proxy it registers and, when one exists, the Dataplane it
        // would replace (no takeover of another service's name).
        tokens::authorize_registration(&self.validator, &info.metadata, &res, existing.as_ref())
            .await?;
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

    /// Waits while a deregistration of `node_id` is deleting its resources, so that a proxy
    /// reconnecting at that moment registers after the delete, not before it.
    async fn wait_deregistration(&self, node_id: &str) {
        for _ in 0..500 {
            if !self.deregistering().contains(node_id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn deregistering(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.deregistering.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn deregister_later(
        self: Arc<Self>,
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
            let mut proxies = self.proxies();
            match proxies.get(&node_id) {
                Some(p)
                    if p.streams.is_empty() && p.connecting == 0 && p.generation == generation =>
                {
                    proxies.remove(&node_id);
                    self.deregistering().insert(node_id.clone());
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
        self.deregistering().remove(&node_id);
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
        rt.wait_deregistration(&node_id).await;
        if let Some(p) = rt.proxies().get_mut(&node_id) {
            p.generation += 1;
            p.connecting += 1;
        }
        let registered = rt.register(info).await;
        if let Some(p) = rt.proxies().get_mut(&node_id) {
            p.connecting = p.connecting.saturating_sub(1);
        }
        let (mesh, name, direct, res) = registered?;
        {
            let mut proxies = rt.proxies();
            let p = proxies.entry(node_id.clone()).or_insert_with(|| Proxy {
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
            .open(info.stream_id, &mesh, &name, version, metadata);
        let view = rt
            .view_of(&mesh)
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
        rt.tracker.close(info.stream_id);
        let deregister = {
            let mut proxies = rt.proxies();
            match proxies.get_mut(&node_id) {
                Some(p) => {
                    p.streams.remove(&info.stream_id);
                    p.streams
                        .is_empty()
                        .then(|| (p.direct, p.mesh.clone(), p.name.clone(), p.generation))
                }
                None => None,
            }
        };
        tracing::info!(node_id, stream = info.stream_id, "proxy stream closed");
        if let Some((direct, mesh, name, generation)) = deregister {
            if direct {
                tokio::spawn(rt.deregister_later(node_id, mesh, name, generation));
            } else {
                rt.proxies()
                    .retain(|id, p| id != &node_id || !p.streams.is_empty());
                rt.cache.remove(&node_id);
            }
        }
    }
}

/// The mesh whose proxies an event may affect, if any.
/// How long the reconciler waits for another event before acting on a burst: a tenth of the
/// debounce window, at least 1 ms. A lone change is applied about 2 ms after it is stored
/// instead of a whole window later.
fn quiet_gap(debounce: Duration) -> Duration {
    (debounce / 10).clamp(
        Duration::from_millis(1),
        debounce.max(Duration::from_millis(1)),
    )
}

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
/// Hash of everything the outbound half of a proxy's config is generated from: its Dataplane,
/// the endpoints and protocol of each service it consumes, and whether mTLS is on.
fn outbound_key(view: &MeshView, res: &Resource, dp: &Dataplane, mtls: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    res.meta.version.hash(&mut h);
    res.meta.modification_time.hash(&mut h);
    view.mesh.hash(&mut h);
    mtls.hash(&mut h);
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
