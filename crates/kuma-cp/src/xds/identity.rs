//! Mesh identities: what the xDS runtime knows about each mesh's certificate authorities and
//! the identities it issued.
//!
//! `Identities` owns the parsed CA per (mesh, backend) (parsed once per distinct PEM pair),
//! the loaded mTLS of each mesh (dropped on any Mesh or Secret event of the mesh), the stage of
//! each mesh's mTLS transition ([`super::transition`]), the issued identity per proxy, the
//! rotation deadlines, and [`MeshStatus`] (why a mesh's CA cannot be loaded, for the API).
//!
//! The `Runtime` methods here: `Runtime::mtls_for` (the mTLS of a mesh at its current stage;
//! fails closed when its CA cannot be loaded, retried every `BROKEN_CA_RETRY`), the CA loading
//! behind it, `Runtime::identity_for` (issue or reuse a proxy's identity) and the one rotation
//! task reissuing identities at 80% of their lifetime. Builtin CA roots are not created here:
//! `crate::mesh_setup` does on Mesh writes.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kuma_core::resource::mesh::{CaBackend, Mesh as MeshSpec};
use kuma_core::resource::{Dataplane, Resource, ResourceKey, ResourceType};

use super::transition::{self, Stage};
use super::{Runtime, envoy, view};
use crate::ca;

/// How long one stage of a protocol change is given to reach every proxy before the other
/// side changes (see [`transition::protocol_sides`]).
pub const MTLS_STAGE_DELAY: Duration = Duration::from_secs(1);

/// The longest an mTLS stage waits for every connected proxy of the mesh to have applied it
/// (answered every response of a snapshot generated with it) before the next stage is
/// applied anyway (a proxy that stopped answering must not hold the mesh back for ever).
pub const MTLS_STAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// While an mTLS stage waits for the proxies, how often it looks again.
const STAGE_POLL: Duration = Duration::from_millis(50);

/// While a mesh's CA cannot be loaded, how often loading it is tried again (a `file:` data
/// source gives no store event when it is fixed).
const BROKEN_CA_RETRY: Duration = Duration::from_secs(2);

/// The mTLS stage a mesh's proxies were last given, since when, and the epoch of the first
/// view that carried it.
type AppliedStage = (Stage, Instant, u64);

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

type LoadedMtls = (u64, Stage, Option<view::Mtls>);

/// A parsed CA with the hash of the PEMs it was parsed from.
type ParsedCa = (u64, Arc<ca::Ca>);

struct IssuedCert {
    fingerprint: u64,
    secret: Arc<kuma_xds::Resource>,
    rotate_at: SystemTime,
    regenerations: u64,
}

/// The CA and identity state of every mesh (see the module docs).
pub(super) struct Identities {
    /// Parsed CA per (mesh, backend), keyed by a hash of its PEMs.
    cas: Mutex<HashMap<(String, String), ParsedCa>>,
    /// The loaded mTLS of a mesh, with the Mesh version and the stage it was loaded for;
    /// dropped on any Mesh or Secret event of the mesh (so a rebuild reads no secret).
    mtls: Mutex<HashMap<String, LoadedMtls>>,
    /// The mTLS stage each mesh's proxies were last given, and since when.
    stages: Mutex<HashMap<String, AppliedStage>>,
    pub(super) status: MeshStatus,
    /// Issued identity per node id.
    certs: Mutex<HashMap<String, IssuedCert>>,
    /// Rotation deadlines.
    rotations: Mutex<BTreeSet<(SystemTime, String)>>,
    rotation_wakeup: tokio::sync::Notify,
}

impl Identities {
    pub(super) fn new() -> Self {
        Self {
            cas: Mutex::new(HashMap::new()),
            mtls: Mutex::new(HashMap::new()),
            stages: Mutex::new(HashMap::new()),
            status: MeshStatus::default(),
            certs: Mutex::new(HashMap::new()),
            rotations: Mutex::new(BTreeSet::new()),
            rotation_wakeup: tokio::sync::Notify::new(),
        }
    }

    fn loaded_mtls(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoadedMtls>> {
        // Only whole entries are inserted or removed: a poisoned lock is still consistent.
        self.mtls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, HashMap<String, AppliedStage>> {
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn certs(&self) -> std::sync::MutexGuard<'_, HashMap<String, IssuedCert>> {
        self.certs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the loaded mTLS of `mesh` (a Mesh or Secret event of it).
    pub(super) fn forget_loaded(&self, mesh: &str) {
        self.loaded_mtls().remove(mesh);
    }

    /// Drops every loaded mTLS (a resync of the whole store).
    pub(super) fn forget_all_loaded(&self) {
        self.loaded_mtls().clear();
    }
}

impl Runtime {
    /// The mTLS of a mesh at its current stage of transition toward what its Mesh asks for
    /// (`Ok(None)`: off); `Err` when it is enabled but its CA cannot be loaded.
    pub(super) async fn mtls_for(
        &self,
        mesh_res: &Resource,
        spec: &MeshSpec,
        epoch: u64,
        idle: bool,
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
        let (mut applied, since, stage_epoch) = self
            .identities
            .stages()
            .get(mesh)
            .cloned()
            .unwrap_or_else(|| (target.clone(), Instant::now(), 0));
        // A backend no longer listed stays usable while proxies move off it if its CA was
        // loaded before (a Mesh that drops `mtls` altogether still goes through the stages);
        // one that was never loaded here (a CP restart meanwhile) is dropped at once.
        let usable = |name: &str| names.contains(&name) || self.loaded_ca(mesh, name).is_some();
        applied.trusted.retain(|t| usable(t));
        if applied.issuer.as_deref().is_some_and(|i| !usable(i)) {
            applied.issuer.clone_from(&target.issuer);
        }
        // With no proxy of the mesh connected (`idle`) there is no traffic to keep: no stages.
        // The next stage goes once every connected proxy applied the current one.
        let stage = if idle {
            target.clone()
        } else if applied == target || self.stage_applied(mesh, stage_epoch) {
            transition::next(&applied, &target)
        } else if since.elapsed() >= MTLS_STAGE_TIMEOUT {
            tracing::warn!(mesh, waited = ?since.elapsed(), "not every proxy applied the current mTLS stage; applying the next one anyway");
            transition::next(&applied, &target)
        } else {
            applied.clone()
        };
        let cached = self
            .identities
            .loaded_mtls()
            .get(mesh)
            .filter(|(v, st, _)| *v == version && *st == stage)
            .map(|(_, _, m)| m.clone());
        let loaded = match cached {
            Some(m) => Ok((m, None)),
            None => self.load_stage(mesh, backends, &stage).await,
        };
        match &loaded {
            Ok((_, Some(missing))) => {
                // A root this stage trusts is not there yet (a builtin root is written just
                // after its Mesh) or is broken: serve what loads, but do not count the stage
                // as applied, so the next one waits until every proxy trusted it.
                tracing::warn!(mesh, error = %missing, "a trusted CA cannot be loaded (yet); its root is not trusted");
                self.identities.status.set(mesh, Some(missing.clone()));
                self.reconciler.kick_later(mesh, BROKEN_CA_RETRY);
            }
            Ok((m, None)) => {
                self.identities.status.set(mesh, None);
                self.identities
                    .loaded_mtls()
                    .insert(mesh.to_string(), (version, stage.clone(), m.clone()));
                {
                    let mut stages = self.identities.stages();
                    let entry = stages
                        .entry(mesh.to_string())
                        .or_insert_with(|| (stage.clone(), since, epoch));
                    if entry.0 != stage {
                        tracing::info!(mesh, ?stage, "mTLS transition stage");
                        *entry = (stage.clone(), Instant::now(), epoch);
                    }
                }
                if stage != target {
                    // Look again soon: the next stage goes once every proxy applied this one.
                    self.reconciler.kick_later(mesh, STAGE_POLL);
                }
            }
            Err(reason) => {
                tracing::error!(mesh, error = %reason, "mTLS is enabled but its CA cannot be loaded: proxies keep their last configuration, new proxies get none");
                self.identities.status.set(mesh, Some(reason.clone()));
                self.reconciler.kick_later(mesh, BROKEN_CA_RETRY);
            }
        }
        loaded.map(|(m, _)| m)
    }

    /// Loads the CAs a stage needs: the issuer's (an error when it fails) and the roots of
    /// the other trusted backends (left out when they fail: trusting less never opens
    /// anything; the second value then says which failed and why).
    async fn load_stage(
        &self,
        mesh: &str,
        backends: &[CaBackend],
        stage: &Stage,
    ) -> Result<(Option<view::Mtls>, Option<String>), String> {
        let Some(issuer) = stage.issuer.as_deref().filter(|_| stage.is_on()) else {
            return Ok((None, None));
        };
        let find = |name: &str| backends.iter().find(|b| b.name == name);
        // A backend the Mesh no longer lists: the CA loaded while it was (see `mtls_for`).
        let gone = |name: &str| {
            self.loaded_ca(mesh, name)
                .ok_or_else(|| format!("mTLS backend {name} is not defined"))
        };
        let (ca, lifetime) = match find(issuer) {
            Some(b) => (
                self.load_ca(mesh, b).await.map_err(|e| e.to_string())?,
                ca::dp_cert_lifetime(b),
            ),
            None => (gone(issuer)?, ca::DEFAULT_DP_CERT_LIFETIME),
        };
        let mut bundle = ca.cert_pem.trim_end().to_string();
        let mut missing = None;
        for name in stage.trusted.iter().filter(|n| n.as_str() != issuer) {
            let loaded = match find(name) {
                Some(b) => self.load_ca(mesh, b).await.map_err(|e| e.to_string()),
                None => gone(name),
            };
            match loaded {
                Ok(other) => {
                    bundle.push('\n');
                    bundle.push_str(other.cert_pem.trim_end());
                }
                Err(e) => missing = Some(format!("trusted backend {name}: {e}")),
            }
        }
        bundle.push('\n');
        let mtls = view::Mtls {
            backend: issuer.to_string(),
            permissive: stage.inbound != transition::Inbound::Strict,
            outbound: stage.outbound,
            ca_secret: Arc::new(envoy::ca_secret(mesh, &bundle)),
            ca,
            lifetime,
        };
        Ok((Some(mtls), missing))
    }

    /// Whether every connected proxy of `mesh` runs a configuration generated from a view of
    /// `epoch` or later and has answered every response of it (see
    /// `SnapshotCache::is_applied`).
    fn stage_applied(&self, mesh: &str, epoch: u64) -> bool {
        self.registry
            .proxies()
            .iter()
            .filter(|(_, p)| p.mesh == mesh && !p.streams.is_empty())
            .all(|(id, p)| p.epoch >= epoch && self.cache.is_applied(id))
    }

    /// The CA of a backend as last loaded, if it was.
    fn loaded_ca(&self, mesh: &str, backend: &str) -> Option<Arc<ca::Ca>> {
        self.identities
            .cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(mesh.to_string(), backend.to_string()))
            .map(|(_, c)| c.clone())
    }

    /// The CA of a backend, parsed once per distinct certificate/key pair.
    async fn load_ca(&self, mesh: &str, backend: &CaBackend) -> Result<Arc<ca::Ca>, ca::Error> {
        let (cert, key) = ca::load_pems(&self.manager, mesh, backend).await?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&backend.name, &cert, &key).hash(&mut h);
        let id = h.finish();
        let slot = (mesh.to_string(), backend.name.clone());
        let cached = self
            .identities
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
        self.identities
            .cas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, (id, c.clone()));
        Ok(c)
    }

    /// The identity secret of a proxy: reused while valid, reissued when missing, when the
    /// CA or the proxy's tags changed, or after 80% of its lifetime.
    pub(super) fn identity_for(
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
        if let Some(c) = self.identities.certs().get(node_id) {
            if c.fingerprint == wanted && now < c.rotate_at {
                return Some(c.secret.clone());
            }
            regenerations = c.regenerations;
        }
        let issued = match mtls.ca.issue(mesh, dp, mtls.lifetime) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(node_id, error = %e, "issuing the proxy identity failed");
                return self
                    .identities
                    .certs()
                    .get(node_id)
                    .map(|c| c.secret.clone());
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
        self.identities.certs().insert(
            node_id.to_string(),
            IssuedCert {
                fingerprint: wanted,
                secret: secret.clone(),
                rotate_at,
                regenerations: regenerations + 1,
            },
        );
        self.identities
            .rotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((rotate_at, node_id.to_string()));
        self.identities.rotation_wakeup.notify_one();
        let streams: Vec<u64> = self
            .registry
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

    /// Reissues identities when they reach 80% of their lifetime: one task for all proxies,
    /// sleeping until the earliest deadline.
    pub(super) async fn run_rotations(self: Arc<Self>) {
        loop {
            let next = self
                .identities
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
                _ = self.identities.rotation_wakeup.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = SystemTime::now();
            let due: Vec<String> = {
                let mut r = self
                    .identities
                    .rotations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
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
                    .registry
                    .proxies()
                    .get(&node_id)
                    .map(|p| (p.mesh.clone(), p.name.clone()))
                else {
                    self.identities.certs().remove(&node_id);
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
}
