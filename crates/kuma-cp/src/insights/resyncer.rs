//! The insights task (Kuma's `mesh-insight-resyncer`): keeps an in-memory mirror of what the
//! insights are made of — every Mesh's name, each mesh's Dataplanes and a summary of their
//! DataplaneInsights, the names of its MeshTrafficPermissions and Secrets — current from the
//! store watch with one store read per changed key, and recomputes only the meshes whose
//! inputs changed.
//!
//! Events are batched: a pass runs once the events stop for [`QUIET`], or at the latest
//! [`MAX_DELAY`] after the first one (Kuma flushes its batch every `minResyncInterval`, 1s).
//! A lagged watch or a failed read reads everything again (retried every [`RETRY`]). There is
//! no periodic full recomputation: nothing the insights depend on changes without a store
//! event. A pass publishes a new [`Snapshot`] only when some mesh's insights changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kuma_core::resource::{Dataplane, ResourceKey, ResourceType, Scope, Spec};
use kuma_core::store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::compute::{self, DataplaneEntry, InsightSummary};
use super::{Insights, MeshInsights, Snapshot};
use crate::manager::{ManagerError, ResourceManager};

/// Quiet gap that ends a burst of store events.
pub const QUIET: Duration = Duration::from_millis(100);
/// Longest a burst of store events delays a recomputation (Kuma's `minResyncInterval`).
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Changed keys of one type in one mesh above which the type is listed instead of read key
/// by key.
const RELIST_ABOVE: usize = 32;
/// Delay before reading everything again after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// Mesh-scoped types counted in `MeshInsight.resources` by name (Dataplanes are counted from
/// the mirror), and which of them are policies (`MeshInsight.policies`).
const COUNTED: [ResourceType; 2] = [ResourceType::MeshTrafficPermission, ResourceType::Secret];
const POLICIES: [&str; 1] = ["MeshTrafficPermission"];

/// The insights task.
pub struct Resyncer {
    manager: Arc<ResourceManager>,
    tx: watch::Sender<Arc<Snapshot>>,
}

/// What one mesh's insights are made of.
#[derive(Default)]
struct MeshInputs {
    dataplanes: BTreeMap<String, Dataplane>,
    insights: BTreeMap<String, InsightSummary>,
    /// Names of the counted resources, per type.
    names: BTreeMap<ResourceType, BTreeSet<String>>,
}

/// The mirror: every Mesh's name, and the inputs of each mesh (also of one whose Mesh event
/// has not arrived yet).
#[derive(Default)]
struct Mirror {
    meshes: BTreeSet<String>,
    inputs: BTreeMap<String, MeshInputs>,
}

impl Mirror {
    /// Records the current state of `key` (`None`: it is gone); the mesh it affects, if any.
    fn set(&mut self, key: &ResourceKey, current: Option<&Spec>) -> Option<String> {
        if key.rtype == ResourceType::Mesh {
            if current.is_some() {
                self.meshes.insert(key.name.clone());
            } else {
                self.meshes.remove(&key.name);
                self.inputs.remove(&key.name);
            }
            return Some(key.name.clone());
        }
        if !matters(key) {
            return None;
        }
        if current.is_none() && !self.inputs.contains_key(&key.mesh) {
            // Gone from a mesh the mirror has nothing of (its Mesh was deleted first).
            return Some(key.mesh.clone());
        }
        let inputs = self.inputs.entry(key.mesh.clone()).or_default();
        match (key.rtype, current) {
            (ResourceType::Dataplane, Some(Spec::Dataplane(dp))) => {
                // Statuses and services come from inbounds, gateway and listeners; the
                // outbounds (most of a Dataplane's size) are not kept.
                let mut dp = dp.clone();
                if let Some(n) = dp.networking.as_mut() {
                    n.outbound = Vec::new();
                }
                inputs.dataplanes.insert(key.name.clone(), dp);
            }
            (ResourceType::Dataplane, _) => {
                inputs.dataplanes.remove(&key.name);
            }
            (ResourceType::DataplaneInsight, Some(Spec::DataplaneInsight(i))) => {
                inputs
                    .insights
                    .insert(key.name.clone(), InsightSummary::of(i));
            }
            (ResourceType::DataplaneInsight, _) => {
                inputs.insights.remove(&key.name);
            }
            (t, Some(_)) if COUNTED.contains(&t) => {
                inputs.names.entry(t).or_default().insert(key.name.clone());
            }
            (t, None) if COUNTED.contains(&t) => {
                if let Some(n) = inputs.names.get_mut(&t) {
                    n.remove(&key.name);
                }
            }
            _ => return None,
        }
        Some(key.mesh.clone())
    }

    /// Replaces what the mirror holds of `rtype` in `mesh` by `items` (all of them).
    fn replace(&mut self, mesh: &str, rtype: ResourceType, items: &[kuma_core::Resource]) {
        if let Some(inputs) = self.inputs.get_mut(mesh) {
            match rtype {
                ResourceType::Dataplane => inputs.dataplanes.clear(),
                ResourceType::DataplaneInsight => inputs.insights.clear(),
                t => {
                    inputs.names.remove(&t);
                }
            }
        }
        for r in items {
            self.set(&r.key(), Some(&r.spec));
        }
    }

    /// The insights of `mesh` as computed from the mirror (services, MeshInsight).
    fn compute(&self, mesh: &str) -> (compute::Services, compute::MeshInsight) {
        let empty = MeshInputs::default();
        let inputs = self.inputs.get(mesh).unwrap_or(&empty);
        let entries = inputs.dataplanes.iter().map(|(name, dp)| DataplaneEntry {
            dataplane: dp,
            insight: inputs.insights.get(name),
        });
        let services = compute::services(entries.clone());
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        counts.insert(
            ResourceType::Dataplane.name().to_string(),
            u32::try_from(inputs.dataplanes.len()).unwrap_or(u32::MAX),
        );
        for (t, names) in &inputs.names {
            counts.insert(
                t.name().to_string(),
                u32::try_from(names.len()).unwrap_or(u32::MAX),
            );
        }
        let mesh_insight = compute::mesh_insight(entries, &counts, &POLICIES);
        (services, mesh_insight)
    }
}

/// Whether a changed key can change an insight: a Mesh, or a mesh-scoped type it is made of.
fn matters(k: &ResourceKey) -> bool {
    k.rtype == ResourceType::Mesh
        || (k.rtype.scope() == Scope::Mesh
            && (matches!(
                k.rtype,
                ResourceType::Dataplane | ResourceType::DataplaneInsight
            ) || COUNTED.contains(&k.rtype)))
}

impl Resyncer {
    /// The task and the handle the API reads.
    pub fn new(manager: Arc<ResourceManager>) -> (Self, Insights) {
        let (tx, insights) = Insights::channel();
        (Self { manager, tx }, insights)
    }

    /// Keeps the insights current until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut events = self.manager.store().watch();
        let mut mirror = Mirror::default();
        let mut reload = true;
        let mut keys: BTreeSet<ResourceKey> = BTreeSet::new();
        loop {
            let mut meshes = BTreeSet::new();
            if reload {
                match self.reload().await {
                    Ok(m) => {
                        mirror = m;
                        reload = false;
                        keys.clear();
                        meshes = mirror.meshes.clone();
                        // Meshes gone while the watch lagged.
                        meshes.extend(self.tx.borrow().meshes.keys().cloned());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "insights: reading the store failed; retrying");
                    }
                }
            } else if !keys.is_empty() {
                match self.apply(&mut mirror, &keys).await {
                    Ok(m) => meshes = m,
                    Err(e) => {
                        tracing::warn!(error = %e, "insights: reading a changed resource failed; reading everything again");
                        reload = true;
                    }
                }
                keys.clear();
            }
            if !meshes.is_empty() {
                self.pass(&mirror, &meshes);
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                e = events.recv() => e,
                _ = tokio::time::sleep(RETRY), if reload => continue,
            };
            let mut batch = crate::store::Batch::default();
            let open = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                open = batch.gather(&mut events, first, matters, QUIET, MAX_DELAY) => open,
            };
            keys.extend(batch.keys);
            reload |= batch.lagged;
            if !open {
                return Ok(());
            }
        }
    }

    /// Reads everything the insights are made of.
    async fn reload(&self) -> Result<Mirror, ManagerError> {
        let mut m = Mirror::default();
        for rtype in [
            ResourceType::Mesh,
            ResourceType::Dataplane,
            ResourceType::DataplaneInsight,
        ]
        .into_iter()
        .chain(COUNTED)
        {
            for r in self.manager.list(rtype, None).await? {
                m.set(&r.key(), Some(&r.spec));
            }
        }
        Ok(m)
    }

    /// Reads the changed `keys` into the mirror; the meshes to recompute. A type of a mesh
    /// with more than [`RELIST_ABOVE`] changed keys is listed once instead (a config push
    /// updates the DataplaneInsight of every proxy of the mesh).
    async fn apply(
        &self,
        mirror: &mut Mirror,
        keys: &BTreeSet<ResourceKey>,
    ) -> Result<BTreeSet<String>, ManagerError> {
        let mut meshes = BTreeSet::new();
        let mut groups: BTreeMap<(&str, ResourceType), Vec<&ResourceKey>> = BTreeMap::new();
        for k in keys {
            groups.entry((&k.mesh, k.rtype)).or_default().push(k);
        }
        for ((mesh, rtype), group) in groups {
            if rtype != ResourceType::Mesh && group.len() > RELIST_ABOVE {
                let items = self.manager.list(rtype, Some(mesh)).await?;
                mirror.replace(mesh, rtype, &items);
                meshes.insert(mesh.to_string());
                continue;
            }
            for k in group {
                let current = match self.manager.get(k).await {
                    Ok(r) => Some(r),
                    Err(ManagerError::Store(store::Error::NotFound(_))) => None,
                    Err(e) => return Err(e),
                };
                if let Some(m) = mirror.set(k, current.as_ref().map(|r| &r.spec)) {
                    meshes.insert(m);
                }
            }
        }
        Ok(meshes)
    }

    /// Recomputes `meshes`; publishes a new snapshot if any changed.
    fn pass(&self, mirror: &Mirror, meshes: &BTreeSet<String>) {
        let started = std::time::Instant::now();
        let old = self.tx.borrow().clone();
        let mut next = (*old).clone();
        let now = Utc::now();
        let mut changed = Vec::new();
        for mesh in meshes {
            if !mirror.meshes.contains(mesh) {
                if next.meshes.remove(mesh).is_some() {
                    changed.push(mesh.as_str());
                }
                continue;
            }
            let (services, mesh_insight) = mirror.compute(mesh);
            let entry = match old.meshes.get(mesh) {
                None => MeshInsights {
                    services,
                    services_created: now,
                    services_modified: now,
                    mesh: mesh_insight,
                    mesh_created: now,
                    mesh_modified: now,
                },
                Some(prev) if prev.services == services && prev.mesh == mesh_insight => continue,
                Some(prev) => {
                    let mut e = (**prev).clone();
                    if e.services != services {
                        e.services = services;
                        e.services_modified = now;
                    }
                    if e.mesh != mesh_insight {
                        e.mesh = mesh_insight;
                        e.mesh_modified = now;
                    }
                    e
                }
            };
            next.meshes.insert(mesh.clone(), Arc::new(entry));
            changed.push(mesh.as_str());
        }
        if !changed.is_empty() {
            self.tx.send_replace(Arc::new(next));
        }
        tracing::debug!(
            meshes = meshes.len(),
            ?changed,
            took = ?started.elapsed(),
            "insights: recomputed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::Resource;
    use kuma_core::store::memory::MemoryStore;
    use serde_json::{Value, json};

    fn wire(v: Value) -> Resource {
        Resource::from_wire(v, None).expect("valid")
    }

    fn dp(mesh: &str, name: &str, service: &str) -> Resource {
        wire(json!({"type": "Dataplane", "mesh": mesh, "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": service}}]}}))
    }

    fn insight(mesh: &str, name: &str, online: bool) -> Resource {
        let mut sub = json!({"id": "1", "controlPlaneInstanceId": "cp",
            "connectTime": "2026-01-01T00:00:00Z"});
        if !online {
            sub["disconnectTime"] = json!("2026-01-01T00:01:00Z");
        }
        wire(
            json!({"type": "DataplaneInsight", "mesh": mesh, "name": name,
            "subscriptions": [sub]}),
        )
    }

    async fn wait_for(
        insights: &Insights,
        what: &str,
        f: impl Fn(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        for _ in 0..300 {
            let s = insights.snapshot();
            if f(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: never got there: {:?}", insights.snapshot());
    }

    fn dataplanes(s: &Snapshot, mesh: &str, svc: &str) -> Option<(u32, u32)> {
        let d = s.meshes.get(mesh)?.services.get(svc)?.dataplanes;
        Some((d.online, d.offline))
    }

    #[tokio::test]
    async fn follows_dataplanes_insights_policies_and_meshes() {
        let m = Arc::new(ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1"));
        m.upsert(wire(json!({"type": "Mesh", "name": "default"})))
            .await
            .expect("mesh");
        m.upsert(dp("default", "backend-1", "backend"))
            .await
            .expect("dp");
        m.upsert_internal(insight("default", "backend-1", true))
            .await
            .expect("insight");
        let (task, insights) = Resyncer::new(m.clone());
        let shutdown = CancellationToken::new();
        let join = tokio::spawn(task.run(shutdown.clone()));
        // Computed at start.
        let s = wait_for(&insights, "first pass", |s| {
            dataplanes(s, "default", "backend") == Some((1, 0))
        })
        .await;
        let first = s.meshes["default"].clone();
        assert_eq!(first.mesh.dataplanes.online, 1);
        // A second replica, never connected: offline.
        m.upsert(dp("default", "backend-2", "backend"))
            .await
            .expect("dp");
        let s = wait_for(&insights, "second replica", |s| {
            dataplanes(s, "default", "backend") == Some((1, 1))
        })
        .await;
        let e = &s.meshes["default"];
        assert_eq!(
            e.services["backend"].status,
            Some(compute::ServiceStatus::PartiallyDegraded)
        );
        assert_eq!(e.services_created, first.services_created);
        assert!(e.services_modified >= first.services_modified);
        // It connects: online 2/2.
        let started = std::time::Instant::now();
        m.upsert_internal(insight("default", "backend-2", true))
            .await
            .expect("insight");
        wait_for(&insights, "both online", |s| {
            dataplanes(s, "default", "backend") == Some((2, 0))
        })
        .await;
        println!(
            "insights: a DataplaneInsight change shown {:?} after its write",
            started.elapsed()
        );
        // A policy: counted in the MeshInsight only (services unchanged).
        let before = insights.mesh("default").expect("computed");
        m.upsert(wire(json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow",
            "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}})))
            .await
            .expect("mtp");
        let s = wait_for(&insights, "policy counted", |s| {
            s.meshes["default"]
                .mesh
                .policies
                .get("MeshTrafficPermission")
                .is_some_and(|t| t.total == 1)
        })
        .await;
        assert_eq!(
            s.meshes["default"].services_modified,
            before.services_modified
        );
        // Another mesh: its own insights; the first one's are not recomputed into a new
        // value (same Arc).
        let default_arc = s.meshes["default"].clone();
        m.upsert(wire(json!({"type": "Mesh", "name": "other"})))
            .await
            .expect("mesh");
        m.upsert(dp("other", "web-1", "web")).await.expect("dp");
        let s = wait_for(&insights, "other mesh", |s| {
            dataplanes(s, "other", "web") == Some((0, 1))
        })
        .await;
        assert!(Arc::ptr_eq(&s.meshes["default"], &default_arc));
        // A Dataplane goes; then the Mesh goes: its insights go.
        m.delete(&ResourceKey::new(ResourceType::Dataplane, "other", "web-1"))
            .await
            .expect("delete");
        wait_for(&insights, "web gone", |s| {
            s.meshes.get("other").is_some_and(|e| e.services.is_empty())
        })
        .await;
        m.delete(&ResourceKey::new(ResourceType::Mesh, "", "other"))
            .await
            .expect("delete mesh");
        wait_for(&insights, "mesh gone", |s| !s.meshes.contains_key("other")).await;
        shutdown.cancel();
        join.await.expect("joins").expect("ok");
    }

    /// Benchmark-style figure (printed, not asserted): recomputing a mesh of 1,000
    /// Dataplanes from the mirror, and the task's delay from one DataplaneInsight write to
    /// the new snapshot (the quiet gap included).
    #[tokio::test]
    async fn recomputation_of_1000_dataplanes() {
        let mut mirror = Mirror::default();
        mirror.meshes.insert("default".into());
        for i in 0..1000 {
            let r = dp("default", &format!("dp-{i}"), &format!("svc-{}", i % 100));
            mirror.set(&r.key(), Some(&r.spec));
            let r = insight("default", &format!("dp-{i}"), i % 10 != 0);
            mirror.set(&r.key(), Some(&r.spec));
        }
        let started = std::time::Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            let (services, mi) = mirror.compute("default");
            assert_eq!(services.len(), 100);
            assert_eq!(mi.dataplanes.online, 900);
        }
        println!(
            "insights: recomputing a mesh of 1,000 Dataplanes (100 services) takes {:?}",
            started.elapsed() / rounds
        );

        let m = Arc::new(ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1"));
        m.upsert(wire(json!({"type": "Mesh", "name": "default"})))
            .await
            .expect("mesh");
        for i in 0..1000 {
            m.upsert(dp(
                "default",
                &format!("dp-{i}"),
                &format!("svc-{}", i % 100),
            ))
            .await
            .expect("dp");
            m.upsert_internal(insight("default", &format!("dp-{i}"), true))
                .await
                .expect("insight");
        }
        let (task, insights) = Resyncer::new(m.clone());
        let shutdown = CancellationToken::new();
        let join = tokio::spawn(task.run(shutdown.clone()));
        let started = std::time::Instant::now();
        wait_for(&insights, "first pass", |s| {
            s.meshes
                .get("default")
                .is_some_and(|e| e.mesh.dataplanes.online == 1000)
        })
        .await;
        println!(
            "insights: first pass over 1,000 Dataplanes (store read included) {:?}",
            started.elapsed()
        );
        let started = std::time::Instant::now();
        m.upsert_internal(insight("default", "dp-7", false))
            .await
            .expect("insight");
        wait_for(&insights, "one offline", |s| {
            s.meshes["default"].mesh.dataplanes.offline == 1
        })
        .await;
        println!(
            "insights: one proxy offline shown {:?} after its insight write (quiet gap {QUIET:?} included)",
            started.elapsed()
        );
        // Every proxy's insight rewritten at once (a config push): the mesh's insights are
        // listed once, not read key by key.
        let started = std::time::Instant::now();
        for i in 0..1000 {
            m.upsert_internal(insight("default", &format!("dp-{i}"), i % 2 == 0))
                .await
                .expect("insight");
        }
        let written = started.elapsed();
        wait_for(&insights, "half offline", |s| {
            s.meshes["default"].mesh.dataplanes.offline == 500
        })
        .await;
        println!(
            "insights: 1,000 insight writes ({written:?}) shown {:?} after the first",
            started.elapsed()
        );
        shutdown.cancel();
        join.await.expect("joins").expect("ok");
    }
}
