//! The reconciler: store changes in, snapshots out.
//!
//! `Reconciler` owns the [`inputs`] mirror of the store, the latest
//! [`MeshView`] of each mesh (with the epoch counter that orders view builds), and the kick
//! channel: meshes to reconcile without a store event (readiness changes, mTLS stages, CA
//! retries).
//!
//! The `Runtime` methods here: the store watch loop (subscribe before any await, debounce a
//! burst until a quiet gap or the debounce window, then reconcile each affected mesh once),
//! `build_view`, `reconcile_mesh` (regenerate only proxies whose inputs changed), and
//! `generate_all` / `generate_for`, which publish snapshots to the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuma_core::resource::{Dataplane, Resource, ResourceType, Spec};
use kuma_core::store::{self, EventKind};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::view::{CrossZone, MeshView, Vips};
use super::{MTLS_STAGE_DELAY, Runtime, generator, inputs, transition};
use crate::metrics::xds::{Delivery, Outcome, ProxyType};

/// A service's protocol as its proxies were last given it, and the change under way, if any
/// (the target and since when).
type ProtocolStage = (String, Option<(String, Instant)>);

/// Below this many proxies to regenerate, a reconcile generates them on its own task (the
/// 50-proxy harness tests run the split path).
const PARALLEL_GENERATION_MIN: usize = 32;

/// The reconciler's state (see the module docs).
pub(super) struct Reconciler {
    views: Mutex<HashMap<String, Arc<MeshView>>>,
    inputs: inputs::Inputs,
    inputs_ready: AtomicBool,
    epochs: AtomicU64,
    /// Meshes to reconcile without a store event (readiness, mTLS stages, CA retries).
    kick_tx: mpsc::UnboundedSender<String>,
    kick_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Per mesh and service: the protocol stage (see [`transition::protocol_sides`]).
    protocols: Mutex<HashMap<String, HashMap<String, ProtocolStage>>>,
    /// Dataplanes, Meshes or zone proxies changed: the local ingresses' `availableServices`
    /// are recomputed (at most every [`ANNOUNCE_INTERVAL`]).
    announce: tokio::sync::Notify,
}

/// How often at most the `availableServices` of local ZoneIngresses are recomputed (Kuma's
/// `multizone.zone.ingressUpdateInterval`): a connect storm costs one pass per second, not
/// one per reconcile.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);

impl Reconciler {
    pub(super) fn new() -> Self {
        let (kick_tx, kick_rx) = mpsc::unbounded_channel();
        Self {
            views: Mutex::new(HashMap::new()),
            inputs: inputs::Inputs::default(),
            inputs_ready: AtomicBool::new(false),
            epochs: AtomicU64::new(0),
            kick_tx,
            kick_rx: Mutex::new(Some(kick_rx)),
            protocols: Mutex::new(HashMap::new()),
            announce: tokio::sync::Notify::new(),
        }
    }

    /// Stages protocol changes of `mesh`'s services (`declared`: service → protocol of its
    /// Dataplanes): each change first reaches the side that takes both protocols, and the
    /// other side `MTLS_STAGE_DELAY` later. Returns the outbound and inbound overrides and
    /// when the next stage is due. With `idle` (no proxy of the mesh connected), no stages.
    pub(super) fn stage_protocols(
        &self,
        mesh: &str,
        declared: Vec<(String, String)>,
        idle: bool,
    ) -> (
        HashMap<String, String>,
        BTreeMap<String, String>,
        Option<Duration>,
    ) {
        let (mut outbound, mut inbound, mut wake) = (HashMap::new(), BTreeMap::new(), None);
        let mut all = self.protocols.lock().unwrap_or_else(|e| e.into_inner());
        let stages = all.entry(mesh.to_string()).or_default();
        stages.retain(|s, _| declared.iter().any(|(d, _)| d == s));
        for (service, protocol) in declared {
            let st = stages
                .entry(service.clone())
                .or_insert_with(|| (protocol.clone(), None));
            if idle || st.0 == protocol {
                *st = (protocol, None);
                continue;
            }
            // A change toward another protocol starts over from what the proxies run.
            if st.1.as_ref().is_some_and(|(to, _)| *to != protocol) {
                st.1 = None;
            }
            let since =
                st.1.get_or_insert_with(|| (protocol.clone(), Instant::now()))
                    .1;
            let left = MTLS_STAGE_DELAY.saturating_sub(since.elapsed());
            if left.is_zero() {
                *st = (protocol, None);
                continue;
            }
            let (out, inb) = transition::protocol_sides(&st.0, &protocol);
            if out != protocol {
                outbound.insert(service.clone(), out.to_string());
            }
            if inb != protocol {
                inbound.insert(service.clone(), inb.to_string());
            }
            wake = Some(wake.map_or(left, |w: Duration| w.min(left)));
        }
        (outbound, inbound, wake)
    }

    pub(super) fn views(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MeshView>>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reconciles `mesh` soon, without a store event.
    pub(super) fn kick(&self, mesh: &str) {
        let _ = self.kick_tx.send(mesh.to_string());
    }

    /// Reconciles `mesh` after `after`, without a store event.
    pub(super) fn kick_later(&self, mesh: &str, after: Duration) {
        let (tx, mesh) = (self.kick_tx.clone(), mesh.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(mesh);
        });
    }
}

impl Runtime {
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
        let announcer = {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = this.shutdown.cancelled() => break,
                        _ = this.reconciler.announce.notified() => {}
                    }
                    this.update_available_services().await;
                    // A change meanwhile leaves a permit: the next pass runs after the pause.
                    tokio::time::sleep(ANNOUNCE_INTERVAL).await;
                }
            })
        };
        let mut kicks = self
            .reconciler
            .kick_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("the xDS runtime runs once"))?;
        // Subscribed above, loaded now: nothing written in between is missed.
        self.reconciler.inputs.load_all(&self.manager).await?;
        self.reconciler
            .inputs_ready
            .store(true, std::sync::atomic::Ordering::Release);
        // Every mesh, with or without proxies: its view and mTLS status are current whatever
        // was written before the subscription. (Builtin CA roots are not created here but on
        // Mesh writes, by `mesh_setup`: a deleted root keeps the mesh failing closed.)
        let mut known: BTreeSet<String> = self.reconciler.views().keys().cloned().collect();
        known.extend(self.reconciler.inputs.mesh_names());
        for mesh in known {
            if let Err(e) = self.reconcile_mesh(&mesh).await {
                tracing::warn!(mesh, error = %e, "reconciling mesh failed");
            }
        }
        self.reconcile_zone_proxies();
        self.reconciled.met();
        self.reconciler.announce.notify_one();
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
            // Zone proxies change the cross-zone endpoints of every mesh; Dataplanes change
            // what the local ingresses announce.
            let zone_proxies_changed = events.iter().any(|ev| {
                matches!(
                    ev.key.rtype,
                    ResourceType::ZoneIngress | ResourceType::ZoneEgress
                )
            });
            let announce = zone_proxies_changed
                || events
                    .iter()
                    .any(|ev| matches!(ev.key.rtype, ResourceType::Dataplane | ResourceType::Mesh));
            let cross_before = zone_proxies_changed.then(|| self.cross_zone_inputs());
            for ev in &events {
                if ev.key.rtype == ResourceType::Dataplane && ev.kind == EventKind::Deleted {
                    // A Dataplane created again later starts with no readiness record.
                    self.registry.forget_readiness(&ev.key.mesh, &ev.key.name);
                }
                if matches!(ev.key.rtype, ResourceType::Mesh | ResourceType::Secret) {
                    let mesh = affected_mesh(ev).unwrap_or_else(|| ev.key.name.clone());
                    self.identities.forget_loaded(&mesh);
                }
                if let Err(e) = self.reconciler.inputs.apply(&self.manager, ev).await {
                    tracing::warn!(key = %ev.key, error = %e, "reading a changed resource; reloading everything");
                    resync = true;
                }
            }
            // Only remote ingresses and egresses feed the sidecars' endpoints: a local
            // ingress (its `availableServices` rewritten every second under churn) does not
            // rebuild every mesh.
            if cross_before.is_some_and(|before| before != self.cross_zone_inputs()) {
                meshes.extend(self.reconciler.inputs.mesh_names());
            }
            if resync {
                tracing::warn!(
                    "store watch lagged or failed; reloading and regenerating every mesh"
                );
                if let Err(e) = self.reconciler.inputs.load_all(&self.manager).await {
                    tracing::error!(error = %e, "reloading resources failed");
                }
                self.identities.forget_all_loaded();
                meshes.extend(self.registry.proxies().values().map(|p| p.mesh.clone()));
                meshes.extend(self.reconciler.views().keys().cloned());
            }
            for mesh in meshes {
                if let Err(e) = self.reconcile_mesh(&mesh).await {
                    tracing::warn!(mesh, error = %e, "reconciling mesh failed");
                }
            }
            self.reconcile_zone_proxies();
            if announce || resync {
                self.reconciler.announce.notify_one();
            }
        }
        flusher.abort();
        rotations.abort();
        announcer.abort();
        Ok(())
    }

    /// Builds the view of `mesh` from the store: endpoints, mTLS and policies.
    async fn build_view(&self, mesh: &str) -> anyhow::Result<(Arc<MeshView>, Vec<Arc<Resource>>)> {
        if !self
            .reconciler
            .inputs_ready
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // Before the first load (a proxy connecting during start-up): read the store.
            self.reconciler.inputs.load_all(&self.manager).await?;
        }
        // Taken before reading anything: a later epoch always saw later inputs.
        let epoch = self
            .reconciler
            .epochs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let dataplanes = self.reconciler.inputs.list(mesh, ResourceType::Dataplane);
        let prev = self.reconciler.views().get(mesh).cloned();
        let not_ready = self.registry.not_ready_in(mesh);
        let cross = self.cross_zone(mesh);
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
            &cross,
            prev.as_deref(),
        );
        // No proxy of the mesh connected: no traffic to keep, so no stages (protocol or mTLS).
        let idle = !self.registry.proxies().values().any(|p| p.mesh == mesh);
        let (outbound, inbound, wake) =
            self.reconciler
                .stage_protocols(mesh, view.protocols(), idle);
        if let Some(after) = wake {
            self.reconciler.kick_later(mesh, after);
        }
        view = view.with_protocol_stages(outbound, inbound);
        if let Some(mesh_res) = self.reconciler.inputs.mesh(mesh)
            && let Spec::Mesh(spec) = &mesh_res.spec
        {
            view = view
                .with_vips(self.vips(mesh, spec))
                .with_metrics(kuma_core::metrics::mesh_backend(spec).and_then(Result::ok));
            match self.mtls_for(&mesh_res, spec, epoch, idle).await {
                Ok(Some(m)) => view = view.with_mtls(m),
                Ok(None) => {}
                Err(reason) => view = view.with_broken(reason),
            }
        }
        let policies = self
            .reconciler
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
            let mut views = self.reconciler.views();
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

    /// The service VIPs of `mesh` (its `kuma-<mesh>-dns-vips` Config) with the `dnsServer`
    /// settings; empty when service VIPs are off.
    fn vips(&self, mesh: &str, spec: &kuma_core::resource::Mesh) -> Vips {
        let Some(dns) = &self.settings.dns else {
            return Vips::default();
        };
        Vips {
            services: self.reconciler.inputs.vips(mesh),
            domain: dns.domain.clone(),
            port: dns.vip_port,
            passthrough: spec.outbound_passthrough(),
        }
    }

    /// What of the mirrored zone proxies the meshes' views read: every remote ZoneIngress
    /// and every ZoneEgress, by name and version.
    fn cross_zone_inputs(&self) -> Vec<(ResourceType, String, u64)> {
        let inputs = &self.reconciler.inputs;
        inputs
            .zone_ingresses()
            .into_iter()
            .filter(
                |r| matches!(&r.spec, Spec::ZoneIngress(zi) if zi.is_remote(&self.settings.zone)),
            )
            .chain(inputs.zone_egresses())
            .map(|r| (r.rtype(), r.meta.name.clone(), r.meta.version))
            .collect()
    }

    /// The cross-zone endpoints of `mesh` from the mirrored ZoneIngresses and ZoneEgresses.
    fn cross_zone(&self, mesh: &str) -> CrossZone {
        let Some(mesh_res) = self.reconciler.inputs.mesh(mesh) else {
            return CrossZone::default();
        };
        let Spec::Mesh(spec) = &mesh_res.spec else {
            return CrossZone::default();
        };
        let ingresses = self.reconciler.inputs.zone_ingresses();
        let egresses = self.reconciler.inputs.zone_egresses();
        CrossZone::build(
            mesh,
            spec,
            &self.settings.zone,
            ingresses.iter().filter_map(|r| match &r.spec {
                Spec::ZoneIngress(zi) => Some(zi),
                _ => None,
            }),
            egresses.iter().filter_map(|r| match &r.spec {
                Spec::ZoneEgress(ze) => Some(ze),
                _ => None,
            }),
        )
    }

    /// Rebuilds the view of `mesh` and regenerates its proxies whose inputs changed.
    async fn reconcile_mesh(self: &Arc<Self>, mesh: &str) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let prev = self.reconciler.views().get(mesh).cloned();
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
        for (id, p) in self
            .registry
            .proxies()
            .iter_mut()
            .filter(|(_, p)| p.mesh == mesh)
        {
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

    /// Generates and publishes the snapshot of one proxy if its inputs changed; `Some` when
    /// published, with whether the outbound half was reused.
    pub(super) fn generate_for(
        &self,
        node_id: &str,
        view: &MeshView,
        res: &Resource,
    ) -> Option<bool> {
        let Spec::Dataplane(dp) = &res.spec else {
            return None;
        };
        if view.broken().is_some() {
            // Fail closed: no configuration without the CA mTLS needs.
            return None;
        }
        let started = Instant::now();
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
        let (reusable, node) = {
            let proxies = self.registry.proxies();
            match proxies.get(node_id) {
                Some(p) if p.fingerprint == Some(fp) || p.epoch > view.epoch => {
                    self.metrics
                        .generation
                        .observe(ProxyType::Dataplane, Outcome::Skip, started);
                    return None;
                }
                Some(p) => (
                    p.outbound
                        .as_ref()
                        .filter(|(k, _)| *k == out_key)
                        .map(|(_, o)| o.clone()),
                    p.node.clone(),
                ),
                None => return None,
            }
        };
        let reused = reusable.is_some();
        let outbound =
            reusable.unwrap_or_else(|| generator::outbound_resources(view, dp, mtls).into());
        let mut snapshot = generator::assemble(
            view,
            &generator::Proxy {
                name: &res.meta.name,
                labels: &res.meta.labels,
                dataplane: dp,
                identity,
                node: &node,
            },
            &outbound,
        );
        self.add_envoy_admin(node_id, &node, res, &mut snapshot);
        // Hashed here, on the generation thread, not under the lock below.
        let versions = Delivery::versions(&snapshot);
        // Publish only if no newer view was applied meanwhile (check and set under one lock).
        let mut proxies = self.registry.proxies();
        match proxies.get_mut(node_id) {
            Some(p) if p.epoch <= view.epoch => {
                self.metrics.delivery.ready(node_id, &versions);
                self.cache.set(node_id, Arc::new(snapshot));
                self.metrics
                    .generation
                    .observe(ProxyType::Dataplane, Outcome::Changed, started);
                p.fingerprint = Some(fp);
                p.epoch = view.epoch;
                p.dp_version = Some(res.meta.version);
                p.outbound = Some((out_key, outbound));
                p.consumes = dp
                    .outbounds()
                    .iter()
                    .filter_map(|o| o.service())
                    .chain(generator::transparent::consumed_services(view, dp))
                    .map(str::to_string)
                    .collect();
                Some(reused)
            }
            _ => None,
        }
    }

    /// Generates and publishes the snapshot of a connected zone proxy (`res`: its
    /// ZoneIngress or ZoneEgress) from the current views of every mesh. Cheap (a few
    /// proxies, shared resources): done after every reconcile; the engine sends only what
    /// changed.
    pub(super) fn generate_zone_proxy(&self, node_id: &str, res: &Resource) {
        let started = Instant::now();
        let views: Vec<Arc<MeshView>> = self.reconciler.views().values().cloned().collect();
        let (mut snapshot, proxy_type) = match &res.spec {
            Spec::ZoneIngress(zi) => (generator::ingress::generate(zi, &views), ProxyType::Ingress),
            Spec::ZoneEgress(ze) => (generator::egress::generate(ze, &views), ProxyType::Egress),
            _ => return,
        };
        let node = self.registry.proxies().get(node_id).map(|p| p.node.clone());
        if let Some(node) = node {
            self.add_envoy_admin(node_id, &node, res, &mut snapshot);
        }
        let versions = Delivery::versions(&snapshot);
        if self.registry.proxies().contains_key(node_id) {
            self.metrics.delivery.ready(node_id, &versions);
            self.cache.set(node_id, Arc::new(snapshot));
            self.metrics
                .generation
                .observe(proxy_type, Outcome::Generated, started);
        }
    }

    /// Adds the proxy's `kuma:envoy:admin` clusters and listener ([`generator::admin`]),
    /// with its server certificate from the envoy-admin CA (the same one while its addresses
    /// are unchanged, so regenerations send nothing new). Nothing before the CA is installed.
    fn add_envoy_admin(
        &self,
        node_id: &str,
        node: &super::lifecycle::NodeInfo,
        res: &Resource,
        snapshot: &mut kuma_xds::Snapshot,
    ) {
        let Some(pki) = self.envoy_admin.get() else {
            return;
        };
        if node.admin.port == 0 {
            return;
        }
        let addresses = crate::envoy_admin::cert_addresses(res);
        let tls = match pki.server(node_id, &addresses) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(node_id, error = %e, "envoy admin: no server certificate");
                None
            }
        };
        let address = addresses.first().map_or("", String::as_str);
        let build = || generator::admin::resources(&node.admin, address, tls.as_deref());
        let built = match &tls {
            Some(t) => pki.admin_resources(node_id, t, &node.admin, build),
            None => build(),
        };
        match built {
            Ok(resources) => {
                for r in resources {
                    snapshot.insert(r);
                }
            }
            // Kuma fails the proxy's whole config here; we leave out only the admin
            // resources (the proxy cannot be inspected). Debug: it recurs on every
            // regeneration of the proxy.
            Err(e) => tracing::debug!(node_id, error = %e, "envoy admin: not generated"),
        }
    }

    /// Regenerates every connected zone proxy (from the mirrored ZoneIngresses and
    /// ZoneEgresses; one not mirrored yet is done on the store event that brings it).
    pub(super) fn reconcile_zone_proxies(&self) {
        let zone_proxies: Vec<(String, ResourceType, String)> = self
            .registry
            .proxies()
            .iter()
            .filter(|(_, p)| p.kind != super::lifecycle::ProxyKind::Dataplane)
            .map(|(id, p)| (id.clone(), p.kind.resource_type(), p.name.clone()))
            .collect();
        for (node_id, rtype, name) in zone_proxies {
            if let Some(res) = self
                .reconciler
                .inputs
                .list("", rtype)
                .into_iter()
                .find(|r| r.meta.name == name)
            {
                self.generate_zone_proxy(&node_id, &res);
            }
        }
    }

    /// Writes the `availableServices` of every local ZoneIngress (`zone` empty) whose list
    /// differs from the distinct inbound tag sets of this zone's Dataplanes
    /// ([`kuma_core::resource::zone_proxy::available_services`]). A conflict is retried on
    /// the next batch (the write that caused it is an event).
    pub(super) async fn update_available_services(&self) {
        let ingresses = self.reconciler.inputs.zone_ingresses();
        let local: Vec<&Arc<Resource>> = ingresses
            .iter()
            .filter(|r| matches!(&r.spec, Spec::ZoneIngress(zi) if zi.zone.is_empty()))
            .collect();
        if local.is_empty() {
            return;
        }
        let meshes = self.reconciler.inputs.mesh_names();
        let dataplanes: Vec<(String, Arc<Resource>)> = meshes
            .iter()
            .flat_map(|m| {
                self.reconciler
                    .inputs
                    .list(m, ResourceType::Dataplane)
                    .into_iter()
                    .map(move |r| (m.clone(), r))
            })
            .collect();
        let services = kuma_core::resource::zone_proxy::available_services(
            dataplanes.iter().filter_map(|(m, r)| match &r.spec {
                Spec::Dataplane(d) => Some((m.as_str(), d)),
                _ => None,
            }),
        );
        for res in local {
            let Spec::ZoneIngress(zi) = &res.spec else {
                continue;
            };
            if zi.available_services == services {
                continue;
            }
            // Read again just before writing: the proxy may have re-registered meanwhile,
            // and only `availableServices` is ours to change.
            let mut updated = match self.manager.get(&res.key()).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            match &mut updated.spec {
                Spec::ZoneIngress(zi) if zi.zone.is_empty() => {
                    zi.available_services = services.clone();
                }
                _ => continue,
            }
            match self.manager.upsert_internal(updated).await {
                Ok(_) => tracing::debug!(
                    name = %res.meta.name,
                    services = services.len(),
                    "ZoneIngress availableServices updated"
                ),
                Err(e) => tracing::info!(
                    name = %res.meta.name,
                    error = %e,
                    "updating ZoneIngress availableServices; retrying on the next change"
                ),
            }
        }
    }

    pub(super) async fn view_of(&self, mesh: &str) -> anyhow::Result<Arc<MeshView>> {
        if let Some(v) = self.reconciler.views().get(mesh) {
            return Ok(v.clone());
        }
        Ok(self.build_view(mesh).await?.0)
    }
}

/// How long the reconciler waits for another event before acting on a burst: a tenth of the
/// debounce window, at least 1 ms. A lone change is applied about 2 ms after it is stored
/// instead of a whole window later.
fn quiet_gap(debounce: Duration) -> Duration {
    (debounce / 10).clamp(
        Duration::from_millis(1),
        debounce.max(Duration::from_millis(1)),
    )
}

/// The mesh whose proxies an event may affect, if any.
fn affected_mesh(ev: &store::Event) -> Option<String> {
    match ev.key.rtype {
        ResourceType::Dataplane | ResourceType::MeshTrafficPermission | ResourceType::Secret => {
            Some(ev.key.mesh.clone())
        }
        ResourceType::Mesh if ev.kind != EventKind::Deleted => Some(ev.key.name.clone()),
        ResourceType::Config => kuma_core::vips::mesh_of_config(&ev.key.name).map(str::to_string),
        _ => None,
    }
}

/// Hash of everything the outbound half of a proxy's config is generated from: its Dataplane,
/// the endpoints and protocol of each service it consumes, and whether mTLS is on.
fn outbound_key(view: &MeshView, res: &Resource, dp: &Dataplane, mtls: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    res.meta.version.hash(&mut h);
    res.meta.modification_time.hash(&mut h);
    view.mesh.hash(&mut h);
    mtls.hash(&mut h);
    let explicit = dp.outbounds().iter().filter_map(|o| o.service());
    for s in explicit.chain(generator::transparent::consumed_services(view, dp)) {
        s.hash(&mut h);
        view.endpoints_version(s).hash(&mut h);
        // The endpoints' version covers their ports (the VIP listeners' ports).
        view.protocol(s).hash(&mut h);
    }
    if dp.transparent_proxying().is_some() {
        view.vips().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(protocol: &str) -> Vec<(String, String)> {
        vec![("backend".to_string(), protocol.to_string())]
    }

    fn one(protocol: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("backend".to_string(), protocol.to_string())])
    }

    #[test]
    fn protocol_changes_are_staged_side_by_side() {
        let r = Reconciler::new();
        let (out, inb, wake) = r.stage_protocols("m", declared("tcp"), false);
        assert!(out.is_empty() && inb.is_empty() && wake.is_none());
        // TCP -> HTTP: consumers keep speaking TCP for a stage, inbounds parse HTTP at once.
        let (out, inb, wake) = r.stage_protocols("m", declared("http"), false);
        assert_eq!(out.into_iter().collect::<BTreeMap<_, _>>(), one("tcp"));
        assert!(inb.is_empty());
        assert!(wake.is_some_and(|w| !w.is_zero() && w <= MTLS_STAGE_DELAY));
        // Back to TCP before the stage ended: nothing to stage, the proxies still run TCP.
        let (out, inb, wake) = r.stage_protocols("m", declared("tcp"), false);
        assert!(out.is_empty() && inb.is_empty() && wake.is_none());
        // With no proxy connected the change is applied at once; then HTTP -> TCP keeps the
        // inbounds on HTTP for a stage while consumers switch.
        let (out, inb, _) = r.stage_protocols("m", declared("http"), true);
        assert!(out.is_empty() && inb.is_empty());
        let (out, inb, wake) = r.stage_protocols("m", declared("tcp"), false);
        assert!(out.is_empty());
        assert_eq!(inb, one("http"));
        assert!(wake.is_some());
    }
}
