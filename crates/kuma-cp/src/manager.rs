//! The resource manager: the rules every write from the API (and from the control plane
//! itself) goes through before it reaches the store.
//!
//! - A mesh-scoped resource can only be written into a Mesh that exists.
//! - System labels are computed on every write: `kuma.io/origin: zone`, `kuma.io/mesh` for
//!   mesh-scoped types, `kuma.io/zone` for Dataplanes and policies, each unless supplied. A
//!   supplied `kuma.io/mesh` must name the resource's mesh; on user writes a supplied
//!   `kuma.io/zone` must name this zone; `kuma.io/origin` / `kuma.io/zone` /
//!   `kuma.io/display-name` cannot change once stored.
//! - Dataplanes get `kuma.io/zone: <zone>` on every inbound.
//! - Read-only types ([`ResourceType::is_read_only`]) are refused by [`ResourceManager::upsert`]
//!   and [`ResourceManager::delete`]; the control plane writes them with the `_internal` calls.
//! - A Mesh cannot be deleted while Dataplanes are in it; otherwise the store cascades.
//! - A user cannot delete a Secret an mTLS backend of its Mesh uses (Kuma's rule), nor a Zone
//!   whose ZoneInsight says its CP is connected (Kuma's rule).
//! - A Mesh gets Kuma's defaults before it is validated and stored
//!   ([`kuma_core::resource::Mesh::apply_defaults`]: Prometheus backend settings), without
//!   the fields Kuma does not know ([`kuma_core::resource::Mesh::drop_unknown_fields`]).
//! - Kuma's Mesh manager checks run before a Mesh is stored ([`ResourceManager::check_mesh`]):
//!   on create a name of at most 63 characters; on update no change of `enabledBackend` while
//!   mTLS stays on; each mTLS backend needs an installed CA plugin (`builtin`, `provided`;
//!   the first unknown type ends the check) and, unless `mtls.skipValidation`, passes the
//!   plugin's own check ([`MeshSideEffects::validate_ca_backend`], re-rooted at
//!   `mtls.backends[i].conf`).
//! - Upserts are create-or-update with optimistic concurrency, retried a few times on conflict
//!   so that concurrent writers of the same resource do not fail spuriously.
//! - Every Mesh write runs the installed [`MeshSideEffects`] hook once the Mesh is stored
//!   (the composition root installs `crate::mesh_setup`: signing key and builtin CA roots).
//!   This module imports nothing of the crate above it: it knows the hook, not what it does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kuma_core::resource::mesh::{CA_BACKEND_TYPES, CaBackend};
use kuma_core::resource::{ResourceKey, ResourceType, Scope};
use kuma_core::store::{self, Store};
use kuma_core::validate::{ValidationError, Violation, Violations};
use kuma_core::{Resource, Spec};

use crate::config::CpMode;

/// Label naming where a resource was created (`zone` here).
pub const ORIGIN_LABEL: &str = "kuma.io/origin";
/// Label naming the mesh of a mesh-scoped resource.
pub const MESH_LABEL: &str = "kuma.io/mesh";
/// Label naming the zone a resource was created in.
pub const ZONE_LABEL: &str = "kuma.io/zone";
/// Label carrying the original name of a resource.
pub const DISPLAY_NAME_LABEL: &str = "kuma.io/display-name";
/// Labels that cannot change once stored.
const IMMUTABLE_LABELS: [&str; 3] = [ORIGIN_LABEL, ZONE_LABEL, DISPLAY_NAME_LABEL];

/// Attempts of one upsert before a persistent conflict is reported.
const UPSERT_ATTEMPTS: u32 = 10;
/// Base delay between upsert attempts; grows linearly, with jitter.
const UPSERT_BACKOFF: Duration = Duration::from_millis(5);

/// Why a manager call failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The resource (or the request about it) breaks a rule; every violation names its field.
    #[error("resource is not valid: {0}")]
    Validation(#[from] ValidationError),
    /// The mesh a mesh-scoped resource names does not exist.
    #[error("mesh of name {0} is not found")]
    MeshNotFound(String),
    /// Only the control plane writes this type.
    #[error("{0} is read-only: only the control plane writes it")]
    ReadOnly(ResourceType),
    /// This control plane's mode does not let users write this (Kuma's 405 messages: on
    /// global, what zones provide; on a federated zone, what global provides).
    #[error("{0}")]
    NotInThisMode(&'static str),
    /// The store failed (not found, conflict, unavailable...).
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The Mesh was written but what its write sets up ([`MeshSideEffects`]: its dataplane
    /// token signing key, its builtin CA roots) failed; writing the Mesh again retries.
    #[error("mesh {mesh} was written but setting it up failed: {reason}")]
    MeshSetup { mesh: String, reason: String },
}

/// What happens after every Mesh write, once the Mesh is stored (installed with
/// [`ResourceManager::with_mesh_side_effects`]). It gets the manager to write with; an error
/// fails the write with [`ManagerError::MeshSetup`] (the Mesh stays stored).
#[async_trait::async_trait]
pub trait MeshSideEffects: Send + Sync {
    /// Sets up what the stored `mesh` needs; must be idempotent (it runs on every write).
    async fn mesh_written(
        &self,
        manager: &ResourceManager,
        mesh: &Resource,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Kuma's CA plugin check (`ValidateBackend`) of `backend`, an mTLS backend of a Mesh
    /// named `mesh` about to be written, whose type has a plugin. Problems have paths relative
    /// to the backend's `conf`; an `Err` is a failure to check, reported at `mtls.backends`.
    async fn validate_ca_backend(
        &self,
        _manager: &ResourceManager,
        _mesh: &str,
        _backend: &CaBackend,
    ) -> Result<Vec<Violation>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }
}

/// Applies the write rules on top of a [`Store`].
pub struct ResourceManager {
    store: Arc<dyn Store>,
    zone: String,
    mode: CpMode,
    mesh_side_effects: Option<Arc<dyn MeshSideEffects>>,
}

/// Kuma's answer to a user write on global of what zones provide.
pub const GLOBAL_READ_ONLY: &str = "On global control plane you can not modify dataplane resources with 'kumactl apply' or via the HTTP API. You can still use 'kumactl' or the HTTP API to modify them on the zone control plane.\n";
/// Kuma's answer to a user write on a federated zone of what global provides.
pub const ZONE_READ_ONLY: &str = "On zone control plane you can only modify zone resources with 'kumactl apply' or via the HTTP API. You can still use 'kumactl' or the HTTP API to modify the rest of the resource on the global control plane.\n";

/// Who provides a type in a multi-zone deployment (Kuma's `ProvidedByGlobal` /
/// `ProvidedByZone` KDS flags): users may write it on global, on zones, or both.
pub fn provided_by(rtype: ResourceType) -> (bool, bool) {
    match rtype {
        ResourceType::Mesh | ResourceType::GlobalSecret => (true, false),
        ResourceType::Dataplane
        | ResourceType::DataplaneInsight
        | ResourceType::ZoneIngress
        | ResourceType::ZoneIngressInsight
        | ResourceType::ZoneEgress
        | ResourceType::ZoneEgressInsight => (false, true),
        _ => (true, true),
    }
}

impl ResourceManager {
    /// A manager writing on behalf of the zone `zone`.
    pub fn new(store: Arc<dyn Store>, zone: impl Into<String>) -> Self {
        Self {
            store,
            zone: zone.into(),
            mode: CpMode::Standalone,
            mesh_side_effects: None,
        }
    }

    /// Sets the control plane's mode (standalone by default): who may write what, and the
    /// origin stamped on what users create.
    pub fn with_mode(mut self, mode: CpMode) -> Self {
        self.mode = mode;
        self
    }

    /// The control plane's mode.
    pub fn mode(&self) -> CpMode {
        self.mode
    }

    /// Kuma's rules for a user write in a multi-zone mode: the type must be provided here,
    /// and a policy's origin label must be this side's (`global` on global, `zone` on a
    /// federated zone), so a zone user cannot touch what global synced down.
    fn check_mode(
        &self,
        rtype: ResourceType,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), ManagerError> {
        let (by_global, by_zone) = provided_by(rtype);
        match self.mode {
            CpMode::Standalone => Ok(()),
            CpMode::Global if !by_global => Err(ManagerError::NotInThisMode(GLOBAL_READ_ONLY)),
            CpMode::FederatedZone if !by_zone => Err(ManagerError::NotInThisMode(ZONE_READ_ONLY)),
            mode => {
                let Some(labels) = labels else { return Ok(()) };
                let origin = labels.get(ORIGIN_LABEL).map(String::as_str);
                let (want, ok) = match mode {
                    CpMode::Global => ("global", origin.is_none_or(|o| o == "global")),
                    _ if rtype.is_new_style() => ("zone", origin == Some("zone")),
                    _ => ("zone", origin != Some("global")),
                };
                if ok {
                    Ok(())
                } else {
                    Err(ValidationError::single(
                        format!("labels[\"{ORIGIN_LABEL}\"]"),
                        format!("the origin label must be set to '{want}'"),
                    )
                    .into())
                }
            }
        }
    }

    /// Runs `hook` after every Mesh write (see [`MeshSideEffects`]).
    pub fn with_mesh_side_effects(mut self, hook: Arc<dyn MeshSideEffects>) -> Self {
        self.mesh_side_effects = Some(hook);
        self
    }

    /// Runs the installed [`MeshSideEffects`] for a stored Mesh (every Mesh write does; the
    /// composition root does for the Meshes stored before start).
    pub async fn mesh_written(&self, mesh: &Resource) -> Result<(), ManagerError> {
        let Some(hook) = &self.mesh_side_effects else {
            return Ok(());
        };
        hook.mesh_written(self, mesh)
            .await
            .map_err(|e| ManagerError::MeshSetup {
                mesh: mesh.meta.name.clone(),
                reason: e.to_string(),
            })
    }

    /// The underlying store (for reads and watches that need no rules).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The zone this manager stamps on resources.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Creates or replaces `res` on behalf of a user. Returns the stored resource and whether
    /// it was created. Read-only types fail with [`ManagerError::ReadOnly`].
    pub async fn upsert(&self, res: Resource) -> Result<(Resource, bool), ManagerError> {
        if res.rtype().is_read_only() {
            return Err(ManagerError::ReadOnly(res.rtype()));
        }
        self.check_mode(res.rtype(), Some(&res.meta.labels))?;
        if self.mode != CpMode::Standalone
            && let Ok(current) = self.store.get(&res.key()).await
        {
            // What the other side synced here stays theirs.
            self.check_mode(res.rtype(), Some(&current.meta.labels))?;
        }
        self.check_labels(&res, true)?;
        self.write(res).await
    }

    /// [`Self::upsert`] for the control plane's own writes (insights): no read-only check.
    pub async fn upsert_internal(&self, res: Resource) -> Result<(Resource, bool), ManagerError> {
        self.check_labels(&res, false)?;
        self.write(res).await
    }

    async fn write(&self, mut res: Resource) -> Result<(Resource, bool), ManagerError> {
        let rtype = res.rtype();
        if rtype.scope() == Scope::Mesh {
            self.ensure_mesh(&res.meta.mesh).await?;
        }
        self.stamp(&mut res);
        if let Spec::Mesh(mesh) = &mut res.spec {
            mesh.drop_unknown_fields();
            mesh.apply_defaults();
        }
        res.spec.validate()?;
        let key = res.key();
        self.check_membership(&res).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self.store.get(&key).await {
                Err(store::Error::NotFound(_)) => {
                    self.check_mesh(&res, None).await?;
                    let mut new = res.clone();
                    new.meta.version = 0;
                    self.store.create(new).await.map(|r| (r, true))
                }
                Err(e) => return Err(e.into()),
                Ok(current) => {
                    check_immutable_labels(&current, &res)?;
                    self.check_mesh(&res, Some(&current)).await?;
                    let mut next = res.clone();
                    next.meta.version = current.meta.version;
                    next.meta.creation_time = current.meta.creation_time;
                    self.store.update(next).await.map(|r| (r, false))
                }
            };
            match outcome {
                Ok(done) => {
                    if rtype == ResourceType::Mesh {
                        self.mesh_written(&done.0).await?;
                    }
                    return Ok(done);
                }
                // Someone else wrote (or deleted) in between: read again and retry.
                Err(
                    e @ (store::Error::Conflict(_)
                    | store::Error::AlreadyExists(_)
                    | store::Error::NotFound(_)),
                ) if attempt < UPSERT_ATTEMPTS => {
                    tracing::debug!(%key, attempt, error = %e, "upsert raced, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates `res` for the control plane itself (signing keys, the admin token): the
    /// label rules and validation apply, no read-only check; fails with
    /// [`store::Error::AlreadyExists`] when it exists (never overwrites).
    pub async fn create_internal(&self, mut res: Resource) -> Result<Resource, ManagerError> {
        self.check_labels(&res, false)?;
        if res.rtype().scope() == Scope::Mesh {
            self.ensure_mesh(&res.meta.mesh).await?;
        }
        self.stamp(&mut res);
        res.spec.validate()?;
        res.meta.version = 0;
        Ok(self.store.create(res).await?)
    }

    /// Deletes a resource on behalf of a user. A Mesh that still has Dataplanes is refused;
    /// otherwise deleting a Mesh deletes everything in it.
    pub async fn delete(&self, key: &ResourceKey) -> Result<(), ManagerError> {
        if key.rtype.is_read_only() {
            return Err(ManagerError::ReadOnly(key.rtype));
        }
        self.check_mode(key.rtype, None)?;
        if self.mode != CpMode::Standalone
            && let Ok(current) = self.store.get(key).await
            && self
                .check_mode(key.rtype, Some(&current.meta.labels))
                .is_err()
        {
            return Err(ManagerError::NotInThisMode(match self.mode {
                CpMode::Global => GLOBAL_READ_ONLY,
                _ => ZONE_READ_ONLY,
            }));
        }
        if key.rtype == ResourceType::Secret {
            self.check_secret_not_in_use(key).await?;
        }
        if key.rtype == ResourceType::Zone {
            self.check_zone_offline(&key.name).await?;
        }
        self.delete_internal(key).await
    }

    /// Kuma's Zone delete rule: a Zone whose ZoneInsight says it is online (its CP still
    /// connected) cannot be deleted; without a ZoneInsight it can.
    async fn check_zone_offline(&self, zone: &str) -> Result<(), ManagerError> {
        let key = ResourceKey::new(ResourceType::ZoneInsight, "", zone);
        match self.store.get(&key).await {
            Ok(insight) => match &insight.spec {
                Spec::ZoneInsight(i) if i.is_online() => Err(ValidationError::single(
                    "zone",
                    "unable to delete Zone, Zone CP is still connected, please shut it down first",
                )
                .into()),
                _ => Ok(()),
            },
            Err(store::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Kuma's Secret delete rule: a Secret an mTLS backend of its Mesh uses (a builtin
    /// backend's root, a provided backend's `secret` data source) cannot be deleted.
    async fn check_secret_not_in_use(&self, key: &ResourceKey) -> Result<(), ManagerError> {
        let mesh_key = ResourceKey::new(ResourceType::Mesh, "", &key.mesh);
        let mesh = match self.store.get(&mesh_key).await {
            Ok(m) => m,
            Err(store::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Spec::Mesh(spec) = &mesh.spec else {
            return Ok(());
        };
        let mut errs = Violations::new();
        for b in spec.mtls.iter().flat_map(|m| m.backends.iter()) {
            if b.used_secrets(&key.mesh).contains(&key.name) {
                errs.add(
                    "name",
                    format!(
                        "The secret {:?} that you are trying to remove is currently in use in Mesh {:?} in mTLS backend {:?}. Please remove the reference from the {:?} backend before removing the secret.",
                        key.name, key.mesh, b.name, b.name
                    ),
                );
            }
        }
        Ok(errs.into_result()?)
    }

    /// [`Self::delete`] for the control plane's own writes: no read-only check.
    pub async fn delete_internal(&self, key: &ResourceKey) -> Result<(), ManagerError> {
        if key.rtype == ResourceType::Mesh {
            let dps = self
                .store
                .list(ResourceType::Dataplane, Some(&key.name))
                .await?;
            if !dps.is_empty() {
                return Err(ValidationError::single(
                    "mesh",
                    "unable to delete mesh, there are still some dataplanes attached",
                )
                .into());
            }
        }
        Ok(self.store.delete(key).await?)
    }

    /// Reads one resource.
    pub async fn get(&self, key: &ResourceKey) -> Result<Resource, ManagerError> {
        Ok(self.store.get(key).await?)
    }

    /// Lists a type in one mesh, or across meshes (and for global types) with `None`;
    /// ordered by mesh, then name.
    pub async fn list(
        &self,
        rtype: ResourceType,
        mesh: Option<&str>,
    ) -> Result<Vec<Resource>, ManagerError> {
        Ok(self.store.list(rtype, mesh).await?)
    }

    /// Kuma's Mesh manager checks of `res` (when it is a Mesh) before it is stored over
    /// `previous` (`None`: created). Every problem is reported, except that the first mTLS
    /// backend of an unknown type ends the backend checks, as in Kuma.
    pub async fn check_mesh(
        &self,
        res: &Resource,
        previous: Option<&Resource>,
    ) -> Result<(), ValidationError> {
        let Spec::Mesh(mesh) = &res.spec else {
            return Ok(());
        };
        let mut errs = Violations::new();
        match previous.map(|p| &p.spec) {
            None => {
                if res.meta.name.len() > 63 {
                    errs.add("name", "cannot be longer than 63 characters");
                }
            }
            Some(Spec::Mesh(prev)) => {
                if let Some(v) = mesh.ca_change_problem(prev) {
                    errs.add(v.field, v.message);
                }
            }
            Some(_) => {}
        }
        let backends = mesh.mtls.iter().flat_map(|m| m.backends.iter());
        let skip_plugin = mesh.mtls.as_ref().is_some_and(|m| m.skip_validation);
        for (i, backend) in backends.enumerate() {
            if !CA_BACKEND_TYPES.contains(&backend.backend_type.as_str()) {
                errs.add(
                    format!("mtls.backends[{i}].type"),
                    "could not find installed plugin for this type",
                );
                break;
            }
            let Some(hook) = self.mesh_side_effects.as_ref().filter(|_| !skip_plugin) else {
                continue;
            };
            match hook
                .validate_ca_backend(self, &res.meta.name, backend)
                .await
            {
                Ok(violations) if violations.is_empty() => {}
                Ok(violations) => {
                    errs.extend(
                        &format!("mtls.backends[{i}].conf"),
                        ValidationError { violations },
                    );
                }
                Err(e) => errs.add("mtls.backends", e.to_string()),
            }
        }
        errs.into_result()
    }

    async fn ensure_mesh(&self, mesh: &str) -> Result<(), ManagerError> {
        match self
            .store
            .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
            .await
        {
            Ok(_) => Ok(()),
            Err(store::Error::NotFound(_)) => Err(ManagerError::MeshNotFound(mesh.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Label rules; `user` adds the ones that only bind writes from the API (the control plane
    /// may store resources labelled by other zones).
    fn check_labels(&self, res: &Resource, user: bool) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        let labels = &res.meta.labels;
        if let Some(m) = labels.get(MESH_LABEL) {
            if res.rtype().scope() == Scope::Global {
                errs.add(
                    format!("labels[\"{MESH_LABEL}\"]"),
                    "cannot be set on a global-scoped resource",
                );
            } else if *m != res.meta.mesh {
                errs.add(
                    format!("labels[\"{MESH_LABEL}\"]"),
                    format!("{MESH_LABEL} label must not differ from mesh set on resource"),
                );
            }
        }
        if let Some(z) = labels.get(ZONE_LABEL)
            && user
            && gets_zone_label(res.rtype())
            && *z != self.zone
        {
            errs.add(
                format!("labels[\"{ZONE_LABEL}\"]"),
                format!("{ZONE_LABEL} label should have {} value", self.zone),
            );
        }
        errs.into_result()
    }

    /// Kuma's mesh membership rule: a Dataplane's tag sets must fit the `constraints` of its
    /// Mesh. Kuma answers a refused membership with a 500; a 400 naming the tag set is what
    /// it is: the request is wrong, not the server.
    async fn check_membership(&self, res: &Resource) -> Result<(), ManagerError> {
        let Spec::Dataplane(dp) = &res.spec else {
            return Ok(());
        };
        let mesh = self
            .store
            .get(&ResourceKey::new(ResourceType::Mesh, "", &res.meta.mesh))
            .await?;
        let wire = mesh.to_wire();
        match dp.membership_problem(&res.meta.mesh, wire.get("constraints")) {
            Some((field, message)) => Err(ValidationError::single(field, message).into()),
            None => Ok(()),
        }
    }

    /// Adds the system labels and the Dataplane zone tag.
    fn stamp(&self, res: &mut Resource) {
        let rtype = res.rtype();
        let labels = &mut res.meta.labels;
        let here = if self.mode == CpMode::Global {
            "global"
        } else {
            "zone"
        };
        let origin = labels
            .entry(ORIGIN_LABEL.into())
            .or_insert_with(|| here.into())
            .clone();
        if rtype.scope() == Scope::Mesh {
            labels
                .entry(MESH_LABEL.into())
                .or_insert_with(|| res.meta.mesh.clone());
        }
        // Only what this zone originates carries its name; what global synced down, and
        // what other zones synced up to global, keep their own labels and tags.
        let local = self.mode != CpMode::Global && origin == "zone";
        if local && gets_zone_label(rtype) {
            labels
                .entry(ZONE_LABEL.into())
                .or_insert_with(|| self.zone.clone());
        }
        if local && let Spec::Dataplane(dp) = &mut res.spec {
            dp.set_zone_tag(&self.zone);
        }
    }
}

/// Types a zone CP labels with its zone name: proxies and policies.
fn gets_zone_label(rtype: ResourceType) -> bool {
    rtype == ResourceType::Dataplane || rtype.is_new_style()
}

fn check_immutable_labels(current: &Resource, next: &Resource) -> Result<(), ValidationError> {
    let mut errs = Violations::new();
    for l in IMMUTABLE_LABELS {
        let (old, new) = (current.meta.labels.get(l), next.meta.labels.get(l));
        if old.is_some() && old != new {
            errs.add(
                format!("labels[\"{l}\"]"),
                format!(
                    "cannot be changed or removed (stored value {:?})",
                    old.map_or("", String::as_str)
                ),
            );
        }
    }
    errs.into_result()
}

/// Linear backoff with up to 50% jitter, taken from the clock's sub-second noise (no RNG
/// dependency needed for this).
fn backoff(attempt: u32) -> Duration {
    let base = UPSERT_BACKOFF * attempt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 500) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::resource::dataplane::ZONE_TAG;
    use kuma_core::store::memory::MemoryStore;
    use serde_json::json;

    fn manager() -> ResourceManager {
        ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
    }

    fn wire(v: serde_json::Value) -> Resource {
        Resource::from_wire(v, None).expect("valid")
    }

    fn mesh(name: &str) -> Resource {
        wire(json!({"type": "Mesh", "name": name}))
    }

    fn dp(mesh: &str, name: &str) -> Resource {
        wire(json!({"type": "Dataplane", "mesh": mesh, "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "web"}}]}}))
    }

    #[tokio::test]
    async fn zone_insights_are_read_only_and_an_online_zone_cannot_be_deleted() {
        let m = manager();
        let zone = |n: &str| wire(json!({"type": "Zone", "name": n}));
        m.upsert(zone("zone-2")).await.expect("zone");
        let insight = |online: bool| {
            let mut sub =
                json!({"id": "1", "globalInstanceId": "g", "connectTime": "2026-01-01T00:00:00Z"});
            if !online {
                sub["disconnectTime"] = json!("2026-01-01T00:01:00Z");
            }
            wire(json!({"type": "ZoneInsight", "name": "zone-2", "subscriptions": [sub]}))
        };
        assert!(matches!(
            m.upsert(insight(true)).await,
            Err(ManagerError::ReadOnly(ResourceType::ZoneInsight))
        ));
        let key = |t| ResourceKey::new(t, "", "zone-2");
        assert!(matches!(
            m.delete(&key(ResourceType::ZoneInsight)).await,
            Err(ManagerError::ReadOnly(_))
        ));
        m.upsert_internal(insight(true))
            .await
            .expect("the CP writes it");
        let err = m.delete(&key(ResourceType::Zone)).await.unwrap_err();
        let ManagerError::Validation(v) = err else {
            panic!("{err}")
        };
        assert_eq!(v.violations[0].field, "zone");
        assert_eq!(
            v.violations[0].message,
            "unable to delete Zone, Zone CP is still connected, please shut it down first"
        );
        m.get(&key(ResourceType::Zone)).await.expect("still there");
        m.upsert_internal(insight(false)).await.expect("offline");
        m.delete(&key(ResourceType::Zone))
            .await
            .expect("offline zone");
        // No insight at all: deletable.
        m.upsert(zone("zone-3")).await.unwrap();
        m.delete(&ResourceKey::new(ResourceType::Zone, "", "zone-3"))
            .await
            .expect("never connected");
    }

    #[tokio::test]
    async fn create_then_update_keeps_creation_time() {
        let m = manager();
        let (created, was_created) = m.upsert(mesh("default")).await.expect("create");
        assert!(was_created);
        assert_eq!(created.meta.labels[ORIGIN_LABEL], "zone");
        assert!(!created.meta.labels.contains_key(MESH_LABEL));
        let (updated, was_created) = m.upsert(mesh("default")).await.expect("update");
        assert!(!was_created);
        assert_eq!(updated.meta.version, 2);
        assert_eq!(updated.meta.creation_time, created.meta.creation_time);
    }

    #[tokio::test]
    async fn dataplane_needs_mesh_and_gets_zone() {
        let m = manager();
        assert!(matches!(
            m.upsert(dp("default", "dp-1")).await,
            Err(ManagerError::MeshNotFound(mesh)) if mesh == "default"
        ));
        m.upsert(mesh("default")).await.expect("mesh");
        let (r, _) = m.upsert(dp("default", "dp-1")).await.expect("dp");
        assert_eq!(r.meta.labels[MESH_LABEL], "default");
        assert_eq!(r.meta.labels[ZONE_LABEL], "zone-1");
        assert_eq!(r.meta.labels[ORIGIN_LABEL], "zone");
        let Spec::Dataplane(d) = &r.spec else {
            panic!("not a dataplane")
        };
        assert_eq!(d.inbounds()[0].tags[ZONE_TAG], "zone-1");
    }

    #[tokio::test]
    async fn mesh_constraints_decide_membership() {
        let m = manager();
        m.upsert(wire(json!({"type": "Mesh", "name": "strict",
            "constraints": {"dataplaneProxy": {"requirements": [{"tags": {"kuma.io/service": "api"}}]}}})))
            .await
            .expect("mesh");
        let Err(ManagerError::Validation(e)) = m.upsert(dp("strict", "dp-1")).await else {
            panic!("a web proxy joined a mesh that requires api")
        };
        assert_eq!(e.violations[0].field, "networking.inbound[0].tags");
        assert!(
            e.violations[0]
                .message
                .starts_with("dataplane cannot be a member of mesh \"strict\" because its tags \"kuma.io/service=web kuma.io/zone=zone-1\" does not fulfill"),
            "{e}"
        );
        let mut api = dp("strict", "dp-2");
        if let Spec::Dataplane(d) = &mut api.spec {
            d.networking.as_mut().expect("networking").inbound[0]
                .tags
                .insert("kuma.io/service".into(), "api".into());
        }
        m.upsert(api).await.expect("an api proxy joins");
    }

    #[tokio::test]
    async fn wrong_mesh_label_refused() {
        let m = manager();
        m.upsert(mesh("default")).await.expect("mesh");
        let mut r = dp("default", "dp-1");
        r.meta.labels.insert(MESH_LABEL.into(), "other".into());
        let Err(ManagerError::Validation(e)) = m.upsert(r).await else {
            panic!("expected a validation error")
        };
        assert_eq!(e.violations[0].field, "labels[\"kuma.io/mesh\"]");
    }

    #[tokio::test]
    async fn immutable_labels() {
        let m = manager();
        let mut r = mesh("default");
        r.meta
            .labels
            .insert(DISPLAY_NAME_LABEL.into(), "default".into());
        m.upsert(r).await.expect("create");
        let mut r = mesh("default");
        r.meta.labels.insert(DISPLAY_NAME_LABEL.into(), "x".into());
        let Err(ManagerError::Validation(e)) = m.upsert(r).await else {
            panic!("expected a validation error")
        };
        assert_eq!(e.violations[0].field, "labels[\"kuma.io/display-name\"]");
    }

    #[tokio::test]
    async fn read_only_types() {
        let m = manager();
        m.upsert(mesh("default")).await.expect("mesh");
        let insight = wire(json!({"type": "DataplaneInsight", "mesh": "default", "name": "dp-1"}));
        assert!(matches!(
            m.upsert(insight.clone()).await,
            Err(ManagerError::ReadOnly(ResourceType::DataplaneInsight))
        ));
        m.upsert_internal(insight.clone()).await.expect("internal");
        assert!(matches!(
            m.delete(&insight.key()).await,
            Err(ManagerError::ReadOnly(_))
        ));
        m.delete_internal(&insight.key()).await.expect("delete");
    }

    #[tokio::test]
    async fn mesh_delete_refused_while_dataplanes_exist() {
        let m = manager();
        m.upsert(mesh("default")).await.expect("mesh");
        m.upsert(dp("default", "dp-1")).await.expect("dp");
        let key = ResourceKey::new(ResourceType::Mesh, "", "default");
        let Err(ManagerError::Validation(e)) = m.delete(&key).await else {
            panic!("expected refusal")
        };
        assert_eq!(e.violations[0].field, "mesh");
        assert_eq!(
            e.violations[0].message,
            "unable to delete mesh, there are still some dataplanes attached"
        );
        m.delete(&dp("default", "dp-1").key()).await.expect("dp");
        m.delete(&key).await.expect("mesh");
        assert!(matches!(
            m.get(&key).await,
            Err(ManagerError::Store(store::Error::NotFound(_)))
        ));
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

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect()
    }

    /// Kuma's Mesh manager test cases (name length on create, CA plugin type, CA change on
    /// update), and the store left as it was.
    #[tokio::test]
    async fn kuma_mesh_manager_checks() {
        let m = manager();
        let long = "a".repeat(64);
        assert_eq!(
            violations(m.upsert(mesh(&long)).await),
            pairs(&[("name", "cannot be longer than 63 characters")])
        );
        m.upsert(mesh(&"a".repeat(63)))
            .await
            .expect("63 characters");
        let bulitin = wire(
            json!({"type": "Mesh", "name": "m", "mtls": {"enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "bulitin"}]}}),
        );
        assert_eq!(
            violations(m.upsert(bulitin).await),
            pairs(&[(
                "mtls.backends[0].type",
                "could not find installed plugin for this type"
            )])
        );
        assert!(m.list(ResourceType::Mesh, None).await.unwrap().len() == 1);

        let on = |b: &str| {
            wire(
                json!({"type": "Mesh", "name": "m", "mtls": {"enabledBackend": b,
                "backends": [{"name": b, "type": "builtin"}]}}),
            )
        };
        m.upsert(on("ca-1")).await.expect("mTLS on");
        let key = on("ca-1").key();
        let before = m.get(&key).await.unwrap();
        assert_eq!(
            violations(m.upsert(on("ca-2")).await),
            pairs(&[(
                "mtls.enabledBackend",
                "Changing CA when mTLS is enabled is forbidden. Disable mTLS first and then change the CA"
            )])
        );
        assert_eq!(
            m.get(&key).await.unwrap(),
            before,
            "a refused update changed the Mesh"
        );
        // Kuma's way: off, then on with the other CA.
        m.upsert(wire(json!({"type": "Mesh", "name": "m", "mtls": {
            "backends": [{"name": "ca-1", "type": "builtin"}]}})))
            .await
            .expect("mTLS off");
        m.upsert(on("ca-2")).await.expect("mTLS on with another CA");
    }

    #[tokio::test]
    async fn mesh_defaults_are_stored() {
        let m = manager();
        let (stored, _) = m
            .upsert(wire(json!({"type": "Mesh", "name": "m", "metrics": {
                "backends": [{"name": "prom", "type": "prometheus"}]}})))
            .await
            .expect("mesh");
        let Spec::Mesh(spec) = &stored.spec else {
            panic!("not a mesh")
        };
        assert_eq!(
            spec.metrics,
            Some(
                json!({"backends": [{"name": "prom", "type": "prometheus", "conf": {
                "tls": {}, "port": 5670, "path": "/metrics",
                "tags": {"kuma.io/service": "dataplane-metrics"}}}]})
            )
        );
    }

    /// Kuma's Secret rule: a Secret used by an mTLS backend of its Mesh is not deleted.
    #[tokio::test]
    async fn secrets_in_use_are_not_deleted() {
        let m = manager();
        m.upsert(wire(
            json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1",
            "skipValidation": true, "backends": [{"name": "ca-1", "type": "provided",
            "conf": {"cert": {"secret": "cert"}, "key": {"inlineString": "k"}}}]}}),
        ))
        .await
        .expect("mesh");
        let secret = |name: &str| {
            wire(json!({"type": "Secret", "mesh": "default", "name": name, "data": "eA=="}))
        };
        m.upsert(secret("cert")).await.expect("secret");
        m.upsert(secret("other")).await.expect("secret");
        let Err(ManagerError::Validation(e)) = m.delete(&secret("cert").key()).await else {
            panic!("a secret in use was deleted")
        };
        assert_eq!(
            e.violations,
            [Violation {
                field: "name".into(),
                message: "The secret \"cert\" that you are trying to remove is currently in use in Mesh \"default\" in mTLS backend \"ca-1\". Please remove the reference from the \"ca-1\" backend before removing the secret.".into()
            }]
        );
        m.delete(&secret("other").key())
            .await
            .expect("unused secret");
        m.upsert(mesh("default")).await.expect("mTLS off");
        m.delete(&secret("cert").key())
            .await
            .expect("no longer used");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_upserts_all_succeed() {
        let m = Arc::new(manager());
        m.upsert(mesh("default")).await.expect("mesh");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move { m.upsert(dp("default", "dp-1")).await })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            let (_, c) = t.await.expect("join").expect("upsert");
            created += usize::from(c);
        }
        assert_eq!(created, 1);
        let stored = m.get(&dp("default", "dp-1").key()).await.expect("get");
        assert_eq!(stored.meta.version, 8);
    }
}
