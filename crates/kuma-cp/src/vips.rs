//! The VIP allocator (Kuma's `pkg/dns/vips_allocator.go`): keeps the Config
//! `kuma-<mesh>-dns-vips` of every Mesh equal to what [`kuma_core::vips::VipTable::reconcile`]
//! makes of the stored table and the mesh's services.
//!
//! Runs on a standalone zone CP and on global (which sees every zone's Dataplanes and
//! ZoneIngresses, so every zone gets global's table over KDS and the same VIP everywhere);
//! never on a federated zone, which uses what global synced. This control plane has no
//! leader election (one instance per store): the allocator runs on that instance.
//!
//! Driven by store events (Dataplanes and Meshes of a mesh, any ZoneIngress, the Config
//! itself), coalesced until a quiet gap of [`QUIET`], at most [`DEBOUNCE`]; and by a timer
//! for the earliest end of a grace period. What decides the services is mirrored in memory
//! (the services of each Dataplane, the ZoneIngresses) and kept current with one store read
//! per changed key: a pass over a mesh of 10,000 Dataplanes and 2,000 services after one
//! Dataplane changed takes ~60 ms in a debug build, where listing the mesh's Dataplanes from
//! sqlite alone takes ~580 ms. A Config is written only when its table changed;
//! a deleted Mesh's Config is deleted (Kuma: the Mesh owns it). A table that does not parse
//! is left alone (logged; no VIP is handed out in that mesh until it is fixed), as handing
//! out fresh addresses would change every VIP of the mesh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kuma_core::Resource;
use kuma_core::resource::{ConfigSpec, Dataplane, ResourceKey, ResourceType, Spec, ZoneIngress};
use kuma_core::store;
use kuma_core::vips::{self, Cidr, VipTable};
use tokio_util::sync::CancellationToken;

use crate::manager::{ManagerError, ResourceManager};

/// Quiet gap that ends a burst of store events.
pub const QUIET: Duration = Duration::from_millis(10);
/// Longest a burst of store events delays an allocation.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Delay before a mesh whose allocation failed (store unavailable) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What the allocator needs of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `dnsServer.CIDR`.
    pub cidr: Cidr,
    /// `dnsServer.vipGracePeriod`.
    pub grace_period: Duration,
    /// `dnsServer.serviceVipEnabled`: without it no service gets a VIP (as Kuma).
    pub service_vip_enabled: bool,
    /// The zone whose ZoneIngresses are local (`multizone.zone.name`; empty on global,
    /// where every zone's ingress is remote).
    pub local_zone: String,
}

/// The allocator task.
pub struct Allocator {
    manager: Arc<ResourceManager>,
    settings: Settings,
    /// Met after the first full pass (a `/ready` condition).
    ready: Option<crate::diagnostics::Condition>,
}

/// The allocator's mirror of what decides a mesh's services: the services of each
/// Dataplane (per mesh) and every ZoneIngress; kept current from the watch with one store
/// read per changed key, so a pass costs the mesh's services, not a store listing.
#[derive(Default)]
struct Inputs {
    /// mesh → Dataplane name → the services it gives a VIP.
    dataplanes: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// ZoneIngress name → spec.
    ingresses: BTreeMap<String, ZoneIngress>,
}

impl Inputs {
    fn set_dataplane(&mut self, mesh: &str, name: &str, dp: Option<&Dataplane>) {
        match dp {
            Some(dp) => {
                // The zone does not matter for a Dataplane's own inbounds.
                let services = vips::mesh_services(mesh, [dp], [], "");
                self.dataplanes
                    .entry(mesh.to_string())
                    .or_default()
                    .insert(name.to_string(), services);
            }
            None => {
                if let Some(m) = self.dataplanes.get_mut(mesh) {
                    m.remove(name);
                    if m.is_empty() {
                        self.dataplanes.remove(mesh);
                    }
                }
            }
        }
    }

    /// The services of `mesh` ([`vips::mesh_services`]).
    fn services(&self, mesh: &str, local_zone: &str) -> BTreeSet<String> {
        let mut out = vips::mesh_services(
            mesh,
            std::iter::empty(),
            self.ingresses.values(),
            local_zone,
        );
        for services in self
            .dataplanes
            .get(mesh)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            out.extend(services.iter().cloned());
        }
        out
    }
}

impl Allocator {
    pub fn new(manager: Arc<ResourceManager>, settings: Settings) -> Self {
        Self {
            manager,
            settings,
            ready: None,
        }
    }

    /// Meets `ready` once every mesh has had its first pass.
    pub fn with_ready(mut self, ready: crate::diagnostics::Condition) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Keeps every mesh's table current until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut events = self.manager.store().watch();
        let mut inputs = Inputs::default();
        // Per mesh: when to look again (a grace period ends, or a failed pass is retried).
        let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        // Read everything again (start, a lagged watch, a failed read).
        let mut reload = true;
        let mut keys: BTreeSet<ResourceKey> = BTreeSet::new();
        loop {
            let mut meshes = BTreeSet::new();
            if reload {
                match self.reload(&mut inputs).await {
                    Ok(all) => {
                        reload = false;
                        keys.clear();
                        due.clear();
                        meshes = all;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "VIPs: reading Meshes, Dataplanes and ZoneIngresses failed; retrying");
                    }
                }
            } else if !keys.is_empty() {
                match self.apply(&mut inputs, &keys).await {
                    Ok(m) => meshes = m,
                    Err(e) => {
                        tracing::warn!(error = %e, "VIPs: reading a changed resource failed; reading everything again");
                        reload = true;
                    }
                }
                keys.clear();
            }
            let now = tokio::time::Instant::now();
            let ripe: Vec<String> = due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(m, _)| m.clone())
                .collect();
            for m in ripe {
                due.remove(&m);
                meshes.insert(m);
            }
            if !reload && !meshes.is_empty() {
                self.pass(&inputs, &meshes, &mut due).await;
            }
            if !reload && let Some(ready) = self.ready.take() {
                ready.met();
            }
            let next = if reload {
                Some(tokio::time::Instant::now() + RETRY)
            } else {
                due.values().min().copied()
            };
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                e = events.recv() => e,
                _ = sleep_until(next) => continue,
            };
            let mut batch = crate::store::Batch::default();
            let open = batch
                .gather(&mut events, first, matters, QUIET, DEBOUNCE)
                .await;
            keys.extend(batch.keys);
            reload |= batch.lagged;
            if !open {
                return Ok(());
            }
        }
    }

    /// Reads every Dataplane and ZoneIngress into `inputs`, deletes the tables of meshes
    /// that no longer exist (deleted while this CP was down); every Mesh's name.
    async fn reload(&self, inputs: &mut Inputs) -> Result<BTreeSet<String>, ManagerError> {
        let meshes = self.meshes().await?;
        let mut fresh = Inputs::default();
        for r in self.manager.list(ResourceType::Dataplane, None).await? {
            if let Spec::Dataplane(dp) = &r.spec {
                fresh.set_dataplane(&r.meta.mesh, &r.meta.name, Some(dp));
            }
        }
        for r in self.manager.list(ResourceType::ZoneIngress, None).await? {
            if let Spec::ZoneIngress(zi) = r.spec {
                fresh.ingresses.insert(r.meta.name, zi);
            }
        }
        *inputs = fresh;
        for c in self.manager.list(ResourceType::Config, None).await? {
            if let Some(mesh) = vips::mesh_of_config(&c.meta.name)
                && !meshes.contains(mesh)
            {
                self.delete_table(mesh).await?;
            }
        }
        Ok(meshes)
    }

    /// Every Mesh's name.
    async fn meshes(&self) -> Result<BTreeSet<String>, ManagerError> {
        Ok(self
            .manager
            .list(ResourceType::Mesh, None)
            .await?
            .into_iter()
            .map(|m| m.meta.name)
            .collect())
    }

    /// Reads the changed `keys` into `inputs`; the meshes to allocate in again.
    async fn apply(
        &self,
        inputs: &mut Inputs,
        keys: &BTreeSet<ResourceKey>,
    ) -> Result<BTreeSet<String>, ManagerError> {
        let mut meshes = BTreeSet::new();
        let mut all = false;
        for k in keys {
            let current = match self.manager.get(k).await {
                Ok(r) => Some(r),
                Err(ManagerError::Store(store::Error::NotFound(_))) => None,
                Err(e) => return Err(e),
            };
            match k.rtype {
                ResourceType::Dataplane => {
                    let dp = match &current {
                        Some(Resource {
                            spec: Spec::Dataplane(dp),
                            ..
                        }) => Some(dp),
                        _ => None,
                    };
                    inputs.set_dataplane(&k.mesh, &k.name, dp);
                    meshes.insert(k.mesh.clone());
                }
                ResourceType::ZoneIngress => {
                    match current {
                        Some(Resource {
                            spec: Spec::ZoneIngress(zi),
                            ..
                        }) => inputs.ingresses.insert(k.name.clone(), zi),
                        _ => inputs.ingresses.remove(&k.name),
                    };
                    all = true;
                }
                ResourceType::Mesh => {
                    meshes.insert(k.name.clone());
                }
                ResourceType::Config => {
                    if let Some(m) = vips::mesh_of_config(&k.name) {
                        meshes.insert(m.to_string());
                    }
                }
                _ => {}
            }
        }
        if all {
            meshes.extend(self.meshes().await?);
        }
        Ok(meshes)
    }

    /// Allocates in each of `meshes`, recording when to look at each again.
    async fn pass(
        &self,
        inputs: &Inputs,
        meshes: &BTreeSet<String>,
        due: &mut BTreeMap<String, tokio::time::Instant>,
    ) {
        for mesh in meshes {
            let services = if self.settings.service_vip_enabled {
                inputs.services(mesh, &self.settings.local_zone)
            } else {
                BTreeSet::new()
            };
            match self.allocate(mesh, &services, Utc::now()).await {
                Ok(Some(expiry)) => {
                    let wait = (expiry - Utc::now()).to_std().unwrap_or_default();
                    // A little after the end, so the pass sees it ended.
                    let at = tokio::time::Instant::now() + wait + Duration::from_millis(10);
                    due.insert(mesh.clone(), at);
                }
                Ok(None) => {
                    due.remove(mesh);
                }
                Err(e) => {
                    tracing::warn!(%mesh, error = %e, "VIPs: allocation failed; retrying");
                    due.insert(mesh.clone(), tokio::time::Instant::now() + RETRY);
                }
            }
        }
    }

    /// One mesh: gives `services` their VIPs in its table (read from the store), written
    /// back only if it changed; a table of a Mesh that is gone is deleted. Returns when a
    /// grace period ends next.
    pub async fn allocate(
        &self,
        mesh: &str,
        services: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ManagerError> {
        let mesh_key = ResourceKey::new(ResourceType::Mesh, "", mesh);
        match self.manager.get(&mesh_key).await {
            Ok(_) => {}
            Err(ManagerError::Store(store::Error::NotFound(_))) => {
                self.delete_table(mesh).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let key = ResourceKey::new(ResourceType::Config, "", vips::config_name(mesh));
        let stored = match self.manager.get(&key).await {
            Ok(r) => Some(r),
            Err(ManagerError::Store(store::Error::NotFound(_))) => None,
            Err(e) => return Err(e),
        };
        let old = match &stored {
            Some(Resource {
                spec: Spec::Config(c),
                ..
            }) => match VipTable::parse(&c.config) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(%mesh, config = %key.name, error = %e, "VIPs: the stored table does not parse; not allocating in this mesh until it is fixed or deleted");
                    return Ok(None);
                }
            },
            _ => VipTable::default(),
        };
        let next = old.reconcile(
            services,
            self.settings.cidr,
            self.settings.grace_period,
            now,
        );
        if !next.exhausted.is_empty() {
            tracing::error!(%mesh, cidr = %self.settings.cidr, entries = ?next.exhausted.iter().map(ToString::to_string).collect::<Vec<_>>(), "VIPs: the CIDR is exhausted; these services get no VIP");
        }
        let unchanged = stored.is_some() && next.table == old;
        if unchanged || (stored.is_none() && next.table.is_empty()) {
            return Ok(next.next_expiry);
        }
        let mut res = match stored {
            Some(r) => r,
            None => Resource::new(key.name.clone(), "", Spec::Config(ConfigSpec::default())),
        };
        res.spec = Spec::Config(ConfigSpec {
            config: next.table.to_json(),
        });
        self.manager.upsert_internal(res).await?;
        tracing::info!(%mesh, changes = ?next.changes, "VIPs: mesh table changed");
        Ok(next.next_expiry)
    }

    async fn delete_table(&self, mesh: &str) -> Result<(), ManagerError> {
        let key = ResourceKey::new(ResourceType::Config, "", vips::config_name(mesh));
        match self.manager.delete_internal(&key).await {
            Ok(()) => {
                tracing::info!(%mesh, "VIPs: mesh deleted, its table too");
                Ok(())
            }
            Err(ManagerError::Store(store::Error::NotFound(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether a changed key can change a table: Dataplanes, ZoneIngresses, Meshes, and the
/// tables themselves (one deleted by hand is written again).
fn matters(k: &ResourceKey) -> bool {
    match k.rtype {
        ResourceType::Dataplane | ResourceType::ZoneIngress | ResourceType::Mesh => true,
        ResourceType::Config => vips::mesh_of_config(&k.name).is_some(),
        _ => false,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::store::memory::MemoryStore;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn wire(v: serde_json::Value) -> Resource {
        Resource::from_wire(v, None).expect("valid")
    }

    fn dp(mesh: &str, name: &str, service: &str) -> Resource {
        wire(json!({"type": "Dataplane", "mesh": mesh, "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": service}}]}}))
    }

    fn settings(grace: Duration) -> Settings {
        Settings {
            cidr: Cidr::default(),
            grace_period: grace,
            service_vip_enabled: true,
            local_zone: "zone-1".into(),
        }
    }

    async fn table(m: &ResourceManager, mesh: &str) -> Option<VipTable> {
        let key = ResourceKey::new(ResourceType::Config, "", vips::config_name(mesh));
        match m.get(&key).await {
            Ok(Resource {
                spec: Spec::Config(c),
                ..
            }) => Some(VipTable::parse(&c.config).expect("parses")),
            _ => None,
        }
    }

    /// Polls until `f` holds for the table of `mesh` (the task runs in the background).
    async fn wait_for(
        m: &ResourceManager,
        mesh: &str,
        f: impl Fn(Option<&VipTable>) -> bool,
    ) -> Option<VipTable> {
        for _ in 0..200 {
            let t = table(m, mesh).await;
            if f(t.as_ref()) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the table of {mesh} never got there: {:?}",
            table(m, mesh).await
        );
    }

    #[tokio::test]
    async fn the_task_follows_dataplanes_grace_periods_and_mesh_deletion() {
        let m = Arc::new(ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1"));
        m.upsert(wire(json!({"type": "Mesh", "name": "default"})))
            .await
            .expect("mesh");
        m.upsert(dp("default", "web-1", "web")).await.expect("dp");
        // A table of a mesh deleted while the CP was down.
        m.upsert_internal(Resource::new(
            vips::config_name("gone"),
            "",
            Spec::Config(ConfigSpec {
                config: "{}".into(),
            }),
        ))
        .await
        .expect("orphan");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            Allocator::new(m.clone(), settings(Duration::from_secs(1))).run(shutdown.clone()),
        );
        let t = wait_for(&m, "default", |t| {
            t.is_some_and(|t| t.services().len() == 1)
        })
        .await;
        assert_eq!(
            t.expect("table").services()["web"],
            Ipv4Addr::new(240, 0, 0, 0)
        );
        assert!(table(&m, "gone").await.is_none(), "orphan table deleted");
        // A second service, measured from its Dataplane's write.
        let start = std::time::Instant::now();
        m.upsert(dp("default", "backend-1", "backend"))
            .await
            .expect("dp");
        wait_for(&m, "default", |t| {
            t.is_some_and(|t| t.services().get("backend") == Some(&Ipv4Addr::new(240, 0, 0, 1)))
        })
        .await;
        // The bound: a new service has its VIP within 1 s of its first Dataplane.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // Nothing changes: no write (the version stays).
        let key = ResourceKey::new(ResourceType::Config, "", vips::config_name("default"));
        let v = m.get(&key).await.expect("config").meta.version;
        m.upsert(dp("default", "backend-2", "backend"))
            .await
            .expect("dp");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(m.get(&key).await.expect("config").meta.version, v);
        // backend goes: unused (still reserved), then freed after the grace period by the
        // timer alone (no store event).
        m.delete(&ResourceKey::new(
            ResourceType::Dataplane,
            "default",
            "backend-1",
        ))
        .await
        .expect("delete");
        m.delete(&ResourceKey::new(
            ResourceType::Dataplane,
            "default",
            "backend-2",
        ))
        .await
        .expect("delete");
        let t = wait_for(&m, "default", |t| {
            t.is_some_and(|t| !t.services().contains_key("backend"))
        })
        .await
        .expect("table");
        assert_eq!(
            t.entries()[&vips::HostnameEntry::service("backend")].address,
            "240.0.0.1"
        );
        let unused_at = std::time::Instant::now();
        wait_for(&m, "default", |t| t.is_some_and(|t| t.entries().len() == 1)).await;
        let freed_after = unused_at.elapsed();
        assert!(
            freed_after > Duration::from_millis(800),
            "freed {freed_after:?} after it became unused, before its grace period ended"
        );
        // The Mesh goes (its Dataplanes first): its table goes.
        m.delete(&ResourceKey::new(
            ResourceType::Dataplane,
            "default",
            "web-1",
        ))
        .await
        .expect("delete");
        m.delete(&ResourceKey::new(ResourceType::Mesh, "", "default"))
            .await
            .expect("delete mesh");
        wait_for(&m, "default", |t| t.is_none()).await;
        shutdown.cancel();
        task.await.expect("joins").expect("ok");
    }

    #[tokio::test]
    async fn remote_ingress_services_and_disabled_service_vips() {
        let m = Arc::new(ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1"));
        m.upsert(wire(json!({"type": "Mesh", "name": "default"})))
            .await
            .expect("mesh");
        let zi = |zone: &str, svc: &str| -> ZoneIngress {
            serde_json::from_value(json!({"zone": zone, "availableServices": [
                {"mesh": "default", "instances": 1, "tags": {"kuma.io/service": svc}}]}))
            .expect("zi")
        };
        let mut inputs = Inputs::default();
        inputs
            .ingresses
            .insert("remote".into(), zi("zone-2", "remote"));
        inputs
            .ingresses
            .insert("local".into(), zi("zone-1", "local"));
        let Spec::Dataplane(web) = dp("default", "web-1", "web").spec else {
            panic!("a Dataplane")
        };
        inputs.set_dataplane("default", "web-1", Some(&web));
        inputs.set_dataplane("default", "web-2", Some(&web));
        inputs.set_dataplane("default", "web-1", None);
        assert_eq!(
            inputs.services("default", "zone-1"),
            BTreeSet::from(["remote".to_string(), "web".to_string()])
        );
        inputs.set_dataplane("default", "web-2", None);
        assert!(inputs.dataplanes.is_empty());
        let a = Allocator::new(m.clone(), settings(Duration::from_secs(3600)));
        a.allocate("default", &inputs.services("default", "zone-1"), Utc::now())
            .await
            .expect("allocates");
        let t = table(&m, "default").await.expect("table");
        assert_eq!(
            t.services(),
            BTreeMap::from([("remote".to_string(), Ipv4Addr::new(240, 0, 0, 0))])
        );
        // serviceVipEnabled: false → the task gives no service a VIP.
        m.upsert(wire(json!({"type": "Mesh", "name": "other"})))
            .await
            .expect("mesh");
        m.upsert(dp("other", "x", "x")).await.expect("dp");
        let shutdown = CancellationToken::new();
        let off = Allocator::new(
            m.clone(),
            Settings {
                service_vip_enabled: false,
                ..settings(Duration::from_secs(3600))
            },
        );
        let task = tokio::spawn(off.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(table(&m, "other").await.is_none());
        shutdown.cancel();
        task.await.expect("joins").expect("ok");
    }
}
