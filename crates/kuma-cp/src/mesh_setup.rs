//! What a Mesh write sets up, in one place: the [`MeshSideEffects`] hook the composition root
//! installs on the [`ResourceManager`]. After every Mesh write (and, at start, for every Mesh
//! already stored, see [`ensure_all`]) it makes sure the mesh has
//! - its builtin CA roots: Secrets `<mesh>.ca-builtin-cert|key-<backend>` for every `builtin`
//!   mTLS backend that lacks them ([`ca::ensure_builtin_roots`]; existing roots are never
//!   replaced);
//! - its dataplane token signing key: Secret `dataplane-token-signing-key-<mesh>-1`
//!   ([`tokens::ensure_dataplane_signing_key`]).
//!
//! Invariant: nothing else creates them. In particular a deleted builtin root is not created
//! again by the xDS reconciler: the mesh fails closed until the Mesh is written again.

use kuma_core::Resource;
use kuma_core::resource::ResourceType;

use crate::ca;
use crate::manager::{ManagerError, MeshSideEffects, ResourceManager};
use crate::tokens::{self, TokenError};

/// Why setting up a mesh failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A builtin CA root could not be created.
    #[error("could not create the builtin CA roots: {0}")]
    Roots(#[from] ca::Error),
    /// The dataplane token signing key could not be created.
    #[error("could not create the dataplane token signing key: {0}")]
    SigningKey(#[from] TokenError),
}

/// The hook: builtin CA roots and the dataplane token signing key of a written Mesh.
pub struct MeshSetup;

#[async_trait::async_trait]
impl MeshSideEffects for MeshSetup {
    async fn mesh_written(
        &self,
        manager: &ResourceManager,
        mesh: &Resource,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(set_up(manager, mesh).await?)
    }
}

/// Creates what `mesh` lacks. The roots go first: the reconciler, woken by the Mesh event,
/// finds them sooner.
async fn set_up(manager: &ResourceManager, mesh: &Resource) -> Result<(), Error> {
    ca::ensure_builtin_roots(manager, mesh).await?;
    tokens::ensure_dataplane_signing_key(manager, &mesh.meta.name).await?;
    Ok(())
}

/// Runs the installed hook of `manager` for every stored Mesh (at start: a Mesh stored before
/// keys or roots were created on write, or while the control plane was down).
pub async fn ensure_all(manager: &ResourceManager) -> Result<(), ManagerError> {
    for mesh in manager.list(ResourceType::Mesh, None).await? {
        manager.mesh_written(&mesh).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kuma_core::resource::ResourceKey;
    use kuma_core::store::memory::MemoryStore;
    use serde_json::json;

    use super::*;

    fn manager() -> ResourceManager {
        ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
            .with_mesh_side_effects(Arc::new(MeshSetup))
    }

    fn wire(v: serde_json::Value) -> Resource {
        Resource::from_wire(v, None).expect("valid")
    }

    fn mesh(name: &str) -> Resource {
        wire(json!({"type": "Mesh", "name": name}))
    }

    fn names(secrets: Vec<Resource>) -> Vec<String> {
        secrets.into_iter().map(|s| s.meta.name).collect()
    }

    #[tokio::test]
    async fn mesh_gets_a_signing_key_once() {
        let m = manager();
        m.upsert(mesh("default")).await.expect("mesh");
        let secrets = m
            .list(ResourceType::Secret, Some("default"))
            .await
            .expect("list");
        assert_eq!(names(secrets), ["dataplane-token-signing-key-default-1"]);
        // Updating the mesh keeps the key; a mesh whose key was lost gets one again.
        let key = ResourceKey::new(
            ResourceType::Secret,
            "default",
            "dataplane-token-signing-key-default-1",
        );
        let before = m.get(&key).await.expect("key");
        m.upsert(mesh("default")).await.expect("update");
        assert_eq!(m.get(&key).await.expect("key"), before);
        m.delete(&key).await.expect("delete key");
        m.upsert(mesh("default")).await.expect("update");
        assert_ne!(m.get(&key).await.expect("new key"), before);
    }

    #[tokio::test]
    async fn builtin_roots_are_created_on_mesh_writes_only() {
        let m = manager();
        let with_mtls = wire(json!({"type": "Mesh", "name": "default", "mtls": {
            "enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "builtin"}]}}));
        m.upsert(with_mtls.clone()).await.expect("mesh");
        let secrets = m
            .list(ResourceType::Secret, Some("default"))
            .await
            .expect("list");
        let (cert_name, key_name) = ca::builtin_secret_names("default", "ca-1");
        let mut want = vec![
            cert_name.clone(),
            key_name.clone(),
            "dataplane-token-signing-key-default-1".to_string(),
        ];
        want.sort();
        assert_eq!(names(secrets), want);
        // Writing the Mesh again keeps the root.
        let cert = ResourceKey::new(ResourceType::Secret, "default", &cert_name);
        let before = m.get(&cert).await.expect("root");
        m.upsert(with_mtls.clone()).await.expect("update");
        assert_eq!(m.get(&cert).await.expect("root"), before);
        // A deleted root stays deleted until the Mesh is written again, then it is new.
        m.delete(&cert).await.expect("delete root");
        assert!(m.get(&cert).await.is_err());
        m.upsert(with_mtls).await.expect("update");
        assert_ne!(m.get(&cert).await.expect("new root"), before);
    }

    #[tokio::test]
    async fn ensure_all_sets_up_meshes_stored_before_the_hook() {
        let store = Arc::new(MemoryStore::new());
        let bare = ResourceManager::new(store.clone(), "zone-1");
        bare.upsert(mesh("old")).await.expect("mesh");
        assert!(
            bare.list(ResourceType::Secret, Some("old"))
                .await
                .expect("list")
                .is_empty()
        );
        let m = ResourceManager::new(store, "zone-1").with_mesh_side_effects(Arc::new(MeshSetup));
        ensure_all(&m).await.expect("set up");
        let secrets = m
            .list(ResourceType::Secret, Some("old"))
            .await
            .expect("list");
        assert_eq!(names(secrets), ["dataplane-token-signing-key-old-1"]);
    }
}
