//! What a Mesh write sets up, in one place: the [`MeshSideEffects`] hook the composition root
//! installs on the [`ResourceManager`] (which also asks it for Kuma's CA plugin check of each
//! mTLS backend before the Mesh is stored: [`ca::validate_backend`]). After every Mesh write (and, at start, for every Mesh
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
use kuma_core::resource::mesh::CaBackend;
use kuma_core::validate::Violation;

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

    async fn validate_ca_backend(
        &self,
        manager: &ResourceManager,
        mesh: &str,
        backend: &CaBackend,
    ) -> Result<Vec<Violation>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ca::validate_backend(manager, mesh, backend).await)
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

    use kuma_core::Spec;
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
        // A user cannot delete a root in use (Kuma's rule); deleted anyway (below the API),
        // it stays deleted until the Mesh is written again, then it is new.
        let Err(ManagerError::Validation(e)) = m.delete(&cert).await else {
            panic!("a root in use was deleted")
        };
        assert_eq!(e.violations[0].field, "name");
        m.delete_internal(&cert).await.expect("delete root");
        assert!(m.get(&cert).await.is_err());
        m.upsert(with_mtls).await.expect("update");
        assert_ne!(m.get(&cert).await.expect("new root"), before);
    }

    fn violations(r: Result<(Resource, bool), ManagerError>) -> Vec<(String, String)> {
        match r {
            Err(ManagerError::Validation(e)) => e
                .violations
                .into_iter()
                .map(|v| (v.field, v.message))
                .collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn provided(conf: serde_json::Value) -> Resource {
        wire(
            json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "provided", "conf": conf}]}}),
        )
    }

    /// Kuma's CA plugin checks run before a Mesh is stored (Kuma's manager and plugin tests).
    #[tokio::test]
    async fn ca_plugins_check_backends_before_the_mesh_is_stored() {
        let m = manager();
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(f, m)| (f.to_string(), m.to_string()))
                .collect()
        };
        let no_conf = wire(json!({"type": "Mesh", "name": "default", "mtls": {
            "enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "provided"}]}}));
        assert_eq!(
            violations(m.upsert(no_conf).await),
            s(&[
                ("mtls.backends[0].conf.cert", "has to be defined"),
                ("mtls.backends[0].conf.key", "has to be defined"),
            ])
        );
        let chosen = "data source has to be chosen. Available sources: secret, file, inline";
        assert_eq!(
            violations(m.upsert(provided(json!({"cert": {}, "key": {}}))).await),
            s(&[
                ("mtls.backends[0].conf.cert", chosen),
                ("mtls.backends[0].conf.key", chosen),
            ])
        );
        let builtin_ca = wire(json!({"type": "Mesh", "name": "default", "mtls": {
            "enabledBackend": "builtinCA", "backends": [{"name": "builtinCA", "type": "builtin"}]}}));
        assert_eq!(
            violations(m.upsert(builtin_ca).await),
            s(&[(
                "mtls.backends[0].conf.mtls.backends.name",
                "\"builtinCA\" name must be valid dns name"
            )])
        );
        // A secret that does not exist: both fields get the load error.
        let missing = violations(
            m.upsert(provided(
                json!({"cert": {"secret": "nope"}, "key": {"secret": "nope"}}),
            ))
            .await,
        );
        let fields: Vec<&str> = missing.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["mtls.backends[0].conf.cert", "mtls.backends[0].conf.key"]
        );
        assert!(
            missing[0].1.starts_with("could not load data: "),
            "{missing:?}"
        );
        // A leaf certificate may not sign identities.
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["leaf".into()]).unwrap();
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyAgreement,
        ];
        let leaf = params.self_signed(&leaf_key).unwrap();
        let leaf_conf = json!({"cert": {"inlineString": leaf.pem()},
            "key": {"inlineString": leaf_key.serialize_pem()}});
        assert_eq!(
            violations(m.upsert(provided(leaf_conf.clone())).await),
            s(&[
                (
                    "mtls.backends[0].conf.cert[0]",
                    "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)"
                ),
                (
                    "mtls.backends[0].conf.cert[0]",
                    "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)"
                ),
                (
                    "mtls.backends[0].conf.cert[0]",
                    "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: Appendix A. X.509 Field Reference)"
                ),
            ])
        );
        // A certificate with another key is not a pair.
        let (root, _) = ca::generate_root("default", ca::DEFAULT_ROOT_LIFETIME).unwrap();
        let mismatched = json!({"cert": {"inlineString": root},
            "key": {"inlineString": leaf_key.serialize_pem()}});
        assert_eq!(
            violations(m.upsert(provided(mismatched)).await),
            s(&[(
                "mtls.backends[0].conf.cert",
                "not a valid TLS key pair: tls: private key does not match public key"
            )])
        );
        assert!(
            m.list(ResourceType::Mesh, None).await.unwrap().is_empty(),
            "a refused Mesh was stored"
        );
        // skipValidation skips the plugin check, not the plugin lookup.
        let mut skipped = provided(leaf_conf);
        let Spec::Mesh(spec) = &mut skipped.spec else {
            unreachable!()
        };
        spec.mtls.as_mut().unwrap().skip_validation = true;
        m.upsert(skipped).await.expect("skipValidation");
        // A proper CA, from secrets.
        let (root, key) = ca::generate_root("default", ca::DEFAULT_ROOT_LIFETIME).unwrap();
        for (name, pem) in [("ca-cert", &root), ("ca-key", &key)] {
            m.upsert(Resource::new(
                name,
                "default",
                Spec::Secret(kuma_core::resource::SecretData::from_bytes(pem.as_bytes())),
            ))
            .await
            .expect("secret");
        }
        m.upsert(provided(
            json!({"cert": {"secret": "ca-cert"}, "key": {"secret": "ca-key"}}),
        ))
        .await
        .expect("a provided CA from secrets");
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
