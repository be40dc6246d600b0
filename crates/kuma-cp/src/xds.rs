//! xDS wiring of the control plane: proxy lifecycle and insights as callbacks of the
//! mesh-agnostic engine (`kuma_xds`), and the reconciler that turns store changes into
//! snapshots.
//!
//! Data flow: store event → (debounce window) → affected meshes → one [`view::MeshView`]
//! rebuild per mesh → regeneration only for connected proxies whose inputs changed (their
//! Dataplane, or the endpoints/protocol of a service they consume) → `SnapshotCache::set`,
//! where the engine sends only resources whose content hash changed.

pub mod envoy;
pub mod generator;
pub mod inputs;
pub mod insight;
pub mod rbac;
pub mod transition;
pub mod view;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use kuma_core::resource::mesh::{CaBackend, Mesh as MeshSpec};
use kuma_core::resource::{Dataplane, Resource, ResourceKey, ResourceType, Spec};
use kuma_core::store::{self, EventKind};
use kuma_xds::{Callbacks, SnapshotCache, StreamInfo};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::ca;
use crate::manager::{ManagerError, ResourceManager};
use crate::tokens::{self, Validator};
use transition::Stage;
use view::MeshView;

/// How long one stage of an mTLS transition is given to reach every proxy before the next
/// stage is applied (see [`transition`]).
pub const MTLS_STAGE_DELAY: Duration = Duration::from_secs(1);

/// While a mesh's CA cannot be loaded, how often loading it is tried again (a `file:` data
/// source gives no store event when it is fixed).
const BROKEN_CA_RETRY: Duration = Duration::from_secs(2);

/// Node metadata `features` entry of a kuma-dp that reports its proxy's readiness
/// (`POST /readiness` on the DP server): a proxy that starts is left out of its peers'
/// endpoints until it reports ready.
pub const FEATURE_READINESS_REPORTING: &str = "feature-readiness-reporting";

/// Per mesh: why its mTLS CA cannot be loaded, if it cannot (shown by the API).
#[derive(Clone, Default)]
pub struct MeshStatus(Arc<Mutex<HashMap<String, String>>>);

impl MeshStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, mesh: &str, error: Option<String>) {
        match error {
            Some(e) => self.lock().insert(mesh.to_string(), e),
            None => self.lock().remove(mesh),
        };
    }

    /// Why proxies of `mesh` keep their last configuration, if they must.
    pub fn mtls_error(&self, mesh: &str) -> Option<String> {
        self.lock().get(mesh).cloned()
    }
}

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
    /// Parsed CA per (mesh, backend), keyed by a hash of its PEMs.
    cas: Mutex<HashMap<(String, String), ParsedCa>>,
    /// The loaded mTLS of a mesh, with the Mesh version and the stage it was loaded for;
    /// dropped on any Mesh or Secret event of the mesh (so a rebuild reads no secret).
    mtls: Mutex<HashMap<String, LoadedMtls>>,
    /// The mTLS stage each mesh's proxies were last given, and since when.
    stages: Mutex<HashMap<String, (Stage, Instant)>>,
    /// Per mesh: Dataplanes whose proxy does not serve (starting, draining or gone), left
    /// out of every endpoint list.
    not_ready: Mutex<HashMap<String, HashSet<String>>>,
    /// Meshes to reconcile without a store event (readiness, mTLS stages, CA retries).
    kick_tx: mpsc::UnboundedSender<String>,
    kick_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    status: MeshStatus,
    /// Issued identity per node id.
    certs: Mutex<HashMap<String, IssuedCert>>,
    /// Rotation deadlines.
    rotations: Mutex<BTreeSet<(SystemTime, String)>>,
    rotation_wakeup: tokio::sync::Notify,
    shutdown: CancellationToken,
}

type LoadedMtls = (u64, Stage, Option<view::Mtls>);

/// A parsed CA with the hash of the PEMs it was parsed from.
type ParsedCa = (u64, Arc<ca::Ca>);

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
        let (kick_tx, kick_rx) = mpsc::unbounded_channel();
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
            stages: Mutex::new(HashMap::new()),
            not_ready: Mutex::new(HashMap::new()),
            kick_tx,
            kick_rx: Mutex::new(Some(kick_rx)),
            status: MeshStatus::default(),
            certs: Mutex::new(HashMap::new()),
            rotations: Mutex::new(BTreeSet::new()),
            rotation_wakeup: tokio::sync::Notify::new(),
            shutdown,
        })
    }

    fn loaded_mtls(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoadedMtls>> {
        // Only whole entries are inserted or removed: a poisoned lock is still consistent.
        self.mtls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Stage, Instant)>> {
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn not_ready(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.not_ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-mesh mTLS status, for the API.
    pub fn status(&self) -> MeshStatus {
        self.status.clone()
    }

    /// Reconciles `mesh` after `after`, without a store event.
    fn kick_later(&self, mesh: &str, after: Duration) {
        let (tx, mesh) = (self.kick_tx.clone(), mesh.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(mesh);
        });
    }

    /// Puts a proxy in or out of its peers' endpoints (reconciling its mesh when that
    /// changes).
    fn set_ready(&self, mesh: &str, name: &str, ready: bool) {
        let changed = {
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
        };
        if changed {
            tracing::info!(mesh, name, ready, "proxy readiness changed");
            let _ = self.kick_tx.send(mesh.to_string());
        }
    }

    /// A readiness report of kuma-dp (its token already checked): `ready` once its Envoy is
    /// live, not ready when it starts draining. `false` when the proxy has no open stream
    /// here and claims to be ready.
    pub fn report_readiness(&self, mesh: &str, name: &str, ready: bool) -> bool {
        let node_id = format!("{mesh}.{name}");
        let connected = self
            .proxies()
            .get(&node_id)
            .is_some_and(|p| !p.streams.is_empty());
        if ready && !connected {
            return false;
        }
        self.set_ready(mesh, name, ready);
        true
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
        let mut kicks = self
            .kick_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("the xDS runtime runs once"))?;
        // Subscribed above, loaded now: nothing written in between is missed.
        self.inputs.load_all(&self.manager).await?;
        self.inputs_ready
            .store(true, std::sync::atomic::Ordering::Release);
        // Every mesh, with or without proxies: its view and mTLS status are current whatever
        // was written before the subscription. (Builtin CA roots are not created here but on
        // Mesh writes, by `mesh_setup`: a deleted root keeps the mesh failing closed.)
        let mut known: BTreeSet<String> = self.views().keys().cloned().collect();
        known.extend(self.inputs.mesh_names());
        for mesh in known {
            if let Err(e) = self.reconcile_mesh(&mesh).await {
                tracing::warn!(mesh, error = %e, "reconciling mesh failed");
            }
        }
        loop {
            let mut meshes = HashSet::new();
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ev = rx.recv() => Some(ev),
                Some(mesh) = kicks.recv() => {
                    meshes.insert(mesh);
                    None
                }
            };
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
            if let Some(first) = first {
                resync |= note(first);
            }
            // Coalesce the burst: stop at the first quiet gap, or at the debounce window at
            // the latest (a steady stream of events, such as a connect storm).
            let deadline = tokio::time::Instant::now() + self.settings.debounce;
            let gap = quiet_gap(self.settings.debounce);
            let mut kicked = Vec::new();
            loop {
                let until = deadline.min(tokio::time::Instant::now() + gap);
                let next = tokio::time::timeout_at(until, async {
                    tokio::select! {
                        ev = rx.recv() => Some(ev),
                        Some(mesh) = kicks.recv() => {
                            kicked.push(mesh);
                            None
                        }
                    }
                })
                .await;
                match next {
                    Ok(Some(ev)) => resync |= note(ev),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            meshes.extend(kicked);
            for ev in &events {
                if ev.key.rtype == ResourceType::Dataplane && ev.kind == EventKind::Deleted {
                    // A Dataplane created again later starts with no readiness record.
                    if let Some(names) = self.not_ready().get_mut(&ev.key.mesh) {
                        names.remove(&ev.key.name);
                    }
                }
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

    /// Builds the view of `mesh` from the store: endpoints, mTLS and policies.
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
        let not_ready = self.not_ready().get(mesh).cloned().unwrap_or_default();
        let mut view = MeshView::rebuild(
            mesh,
            &self.settings.zone,
            dataplanes
                .iter()
                .filter(|r| !not_ready.contains(&r.meta.name))
                .filter_map(|r| match &r.spec {
                    Spec::Dataplane(d) => Some(d),
                    _ => None,
                }),
            prev.as_deref(),
        );
        if let Some(mesh_res) = self.inputs.mesh(mesh)
            && let Spec::Mesh(spec) = &mesh_res.spec
        {
            match self.mtls_for(&mesh_res, spec).await {
                Ok(Some(m)) => view = view.with_mtls(m),
                Ok(None) => {}
                Err(reason) => view = view.with_broken(reason),
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

    /// The mTLS of a mesh at its current stage of transition toward what its Mesh asks for
    /// (`Ok(None)`: off); `Err` when it is enabled but its CA cannot be loaded.
    async fn mtls_for(
        &self,
        mesh_res: &Resource,
        spec: &MeshSpec,
    ) -> Result<Option<view::Mtls>, String> {
        let mesh = mesh_res.meta.name.as_str();
        let version = mesh_res.meta.version;
        let backends = spec.mtls.as_ref().map_or(&[][..], |m| &m.backends[..]);
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        let target = Stage::target(
            spec.enabled_backend()
                .map(|b| (b.name.as_str(), ca::is_permissive(b))),
            &names,
        );
        let (mut applied, since) = self.stages().get(mesh).cloned().unwrap_or_else(|| {
            let long_ago = Instant::now().checked_sub(MTLS_STAGE_DELAY);
            (target.clone(), long_ago.unwrap_or_else(Instant::now))
        });
        // A backend no longer listed cannot be loaded: stop relying on it.
        applied.trusted.retain(|t| names.contains(&t.as_str()));
        if applied
            .issuer
            .as_ref()
            .is_some_and(|i| !names.contains(&i.as_str()))
        {
            applied.issuer.clone_from(&target.issuer);
        }
        // With no proxy of the mesh connected there is no traffic to keep: no stages.
        let idle = !self.proxies().values().any(|p| p.mesh == mesh);
        let stage = if idle {
            target.clone()
        } else if since.elapsed() >= MTLS_STAGE_DELAY {
            transition::next(&applied, &target)
        } else {
            applied.clone()
        };
        let cached = self
            .loaded_mtls()
            .get(mesh)
            .filter(|(v, st, _)| *v == version && *st == stage)
            .map(|(_, _, m)| m.clone());
        let loaded = match cached {
            Some(m) => Ok(m),
            None => self.load_stage(mesh, backends, &stage).await,
        };
        match &loaded {
            Ok(m) => {
                self.status.set(mesh, None);
                self.loaded_mtls()
                    .insert(mesh.to_string(), (version, stage.clone(), m.clone()));
                let since = {
                    let mut stages = self.stages();
                    let entry = stages
                        .entry(mesh.to_string())
                        .or_insert_with(|| (stage.clone(), since));
                    if entry.0 != stage {
                        tracing::info!(mesh, ?stage, "mTLS transition stage");
                        *entry = (stage.clone(), Instant::now());
                    }
                    entry.1
                };
                if stage != target {
                    self.kick_later(mesh, MTLS_STAGE_DELAY.saturating_sub(since.elapsed()));
                }
            }
            Err(reason) => {
                tracing::error!(mesh, error = %reason, "mTLS is enabled but its CA cannot be loaded: proxies keep their last configuration, new proxies get none");
                self.status.set(mesh, Some(reason.clone()));
                self.kick_later(mesh, BROKEN_CA_RETRY);
            }
        }
        loaded
    }

    /// Loads the CAs a stage needs: the issuer's (an error when it fails) and the roots of
    /// the other trusted backends (skipped, with a warning, when they fail: trusting less
    /// never opens anything).
    async fn load_stage(
        &self,
        mesh: &str,
        backends: &[CaBackend],
        stage: &Stage,
    ) -> Result<Option<view::Mtls>, String> {
        let Some(issuer) = stage.issuer.as_deref().filter(|_| stage.is_on()) else {
            return Ok(None);
        };
        let find = |name: &str| backends.iter().find(|b| b.name == name);
        let backend =
            find(issuer).ok_or_else(|| format!("mTLS backend {issuer} is not defined"))?;
        let ca = self
            .load_ca(mesh, backend)
            .await
            .map_err(|e| e.to_string())?;
        let mut bundle = ca.cert_pem.trim_end().to_string();
        for name in stage.trusted.iter().filter(|n| n.as_str() != issuer) {
            let Some(b) = find(name) else { continue };
            match self.load_ca(mesh, b).await {
                Ok(other) => {
                    bundle.push('\n');
                    bundle.push_str(other.cert_pem.trim_end());
                }
                Err(e) => {
                    tracing::warn!(mesh, backend = %name, error = %e, "a trusted CA cannot be loaded; its root is not trusted")
                }
            }
        }
        bundle.push('\n');
        Ok(Some(view::Mtls {
            backend: issuer.to_string(),
            permissive: stage.inbound != transition::Inbound::Strict,
            outbound: stage.outbound,
            ca_secret: Arc::new(envoy::ca_secret(mesh, &bundle)),
            ca,
            lifetime: ca::dp_cert_lifetime(backend),
        }))
    }

    /// The CA of a backend, parsed once per distinct certificate/key pair.
    async fn load_ca(&self, mesh: &str, backend: &CaBackend) -> Result<Arc<ca::Ca>, ca::Error> {
        let (cert, key) = ca::load_pems(&self.manager, mesh, backend).await?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&backend.name, &cert, &key).hash(&mut h);
        let id = h.finish();
        let slot = (mesh.to_string(), backend.name.clone());
        let cached = self
            .cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .filter(|(cid, _)| *cid == id)
            .map(|(_, c)| c.clone());
        if let Some(c) = cached {
            return Ok(c);
        }
        let c = Arc::new(ca::Ca::from_pem(&backend.name, &cert, &key)?);
        self.cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, (id, c.clone()));
        Ok(c)
    }

    /// Rebuilds the view of `mesh` and regenerates its proxies whose inputs changed.
    async fn reconcile_mesh(self: &Arc<Self>, mesh: &str) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let prev = self.views().get(mesh).cloned();
        let (view, dataplanes) = self.build_view(mesh).await?;
        let view_built = started.elapsed();
        if view.broken().is_some() {
            // Fail closed: every proxy keeps the configuration it has.
            return Ok(());
        }
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
        mtls.ca.cert_pem.hash(&mut h);
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
        let secret = Arc::new(envoy::identity_secret(
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
        if view.broken().is_some() {
            // Fail closed: no configuration without the CA mTLS needs.
            return None;
        }
        let identity = view
            .mtls()
            .and_then(|m| self.identity_for(node_id, &view.mesh, m, dp));
        let mtls = view.mtls().is_some_and(|m| m.outbound) && identity.is_some();
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
            if hold {
                self.set_ready(&mesh, &name, false);
            }
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
        let hold = reports && !info.resumed;
        let registered = rt.register(info, hold).await;
        if let Some(p) = rt.proxies().get_mut(&node_id) {
            p.connecting = p.connecting.saturating_sub(1);
        }
        let (mesh, name, direct, res) = registered?;
        if !hold {
            rt.set_ready(&mesh, &name, true);
        }
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
            // Its Envoy is gone: out of its peers' endpoints now, not at deregistration.
            rt.set_ready(&mesh, &name, false);
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
