//! The resources generation reads (Meshes, Dataplanes, MeshTrafficPermissions, and the
//! global-scoped ZoneIngresses, ZoneEgresses and VIP tables (Configs), kept under mesh `""`), mirrored in
//! memory from the store: loaded once, then kept current from the watch stream one key at a
//! time, so a change costs one read instead of a full list of the mesh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kuma_core::resource::{Resource, ResourceKey, ResourceType};
use kuma_core::store::{self, EventKind};

use crate::manager::{ManagerError, ResourceManager};

/// Types mirrored here.
pub const MIRRORED: [ResourceType; 6] = [
    ResourceType::Mesh,
    ResourceType::Dataplane,
    ResourceType::MeshTrafficPermission,
    ResourceType::ZoneIngress,
    ResourceType::ZoneEgress,
    ResourceType::Config,
];

#[derive(Default)]
struct Maps {
    meshes: BTreeMap<String, Arc<Resource>>,
    /// mesh → type → name → resource
    by_mesh: HashMap<String, HashMap<ResourceType, BTreeMap<String, Arc<Resource>>>>,
}

#[derive(Default)]
pub struct Inputs {
    maps: Mutex<Maps>,
}

impl Inputs {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // Updates are single map inserts/removes: a poisoned lock is still consistent.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, res: Resource) {
        let res = Arc::new(res);
        let mut m = self.maps();
        if res.rtype() == ResourceType::Mesh {
            m.meshes.insert(res.meta.name.clone(), res);
        } else {
            m.by_mesh
                .entry(res.meta.mesh.clone())
                .or_default()
                .entry(res.rtype())
                .or_default()
                .insert(res.meta.name.clone(), res);
        }
    }

    fn remove(&self, key: &ResourceKey) {
        let mut m = self.maps();
        if key.rtype == ResourceType::Mesh {
            m.meshes.remove(&key.name);
            m.by_mesh.remove(&key.name);
        } else if let Some(types) = m.by_mesh.get_mut(&key.mesh)
            && let Some(names) = types.get_mut(&key.rtype)
        {
            names.remove(&key.name);
        }
    }

    /// Replaces everything with the store's content.
    pub async fn load_all(&self, manager: &ResourceManager) -> Result<(), ManagerError> {
        let mut fresh = Vec::new();
        for t in MIRRORED {
            fresh.extend(manager.list(t, None).await?);
        }
        *self.maps() = Maps::default();
        for r in fresh {
            self.put(r);
        }
        Ok(())
    }

    /// Applies one store event (re-reading the resource); other types are ignored.
    pub async fn apply(
        &self,
        manager: &ResourceManager,
        ev: &store::Event,
    ) -> Result<(), ManagerError> {
        if !MIRRORED.contains(&ev.key.rtype) {
            return Ok(());
        }
        if ev.kind == EventKind::Deleted {
            self.remove(&ev.key);
            return Ok(());
        }
        match manager.get(&ev.key).await {
            Ok(r) => self.put(r),
            // Deleted again since the event: its Deleted event follows.
            Err(ManagerError::Store(store::Error::NotFound(_))) => self.remove(&ev.key),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Names of every mirrored Mesh.
    pub fn mesh_names(&self) -> Vec<String> {
        self.maps().meshes.keys().cloned().collect()
    }

    pub fn mesh(&self, name: &str) -> Option<Arc<Resource>> {
        self.maps().meshes.get(name).cloned()
    }

    /// Every ZoneIngress, by name.
    pub fn zone_ingresses(&self) -> Vec<Arc<Resource>> {
        self.list("", ResourceType::ZoneIngress)
    }

    /// Every ZoneEgress, by name.
    pub fn zone_egresses(&self) -> Vec<Arc<Resource>> {
        self.list("", ResourceType::ZoneEgress)
    }

    /// The VIPs of a mesh's services in use (from its `kuma-<mesh>-dns-vips` Config).
    pub fn vips(&self, mesh: &str) -> BTreeMap<String, std::net::Ipv4Addr> {
        let m = self.maps();
        m.by_mesh
            .get("")
            .and_then(|t| t.get(&ResourceType::Config))
            .and_then(|n| n.get(&kuma_core::vips::config_name(mesh)))
            .and_then(|r| kuma_core::vips::table_of(r))
            .and_then(|(_, t)| t.ok())
            .map(|t| t.services())
            .unwrap_or_default()
    }

    /// Resources of one type in a mesh, by name.
    pub fn list(&self, mesh: &str, rtype: ResourceType) -> Vec<Arc<Resource>> {
        self.maps()
            .by_mesh
            .get(mesh)
            .and_then(|t| t.get(&rtype))
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }
}
