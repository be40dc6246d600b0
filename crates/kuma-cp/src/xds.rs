//! xDS wiring of the control plane: proxy lifecycle and insights as callbacks of the
//! mesh-agnostic engine (`kuma_xds`), and the reconciler that turns store changes into
//! snapshots.
//!
//! Data flow: store event → (debounce window) → affected meshes → one [`view::MeshView`]
//! rebuild per mesh → regeneration only for connected proxies whose inputs changed (their
//! Dataplane, or the endpoints/protocol of a service they consume) → `SnapshotCache::set`,
//! where the engine sends only resources whose content hash changed.
//!
//! [`Runtime`] composes the rooms, each owning its state and locks:
//! - [`reconciler`]: the store mirror, the mesh views, the kick channel; the watch loop and
//!   snapshot generation;
//! - [`lifecycle`]: the connected proxies, their streams and readiness; registration,
//!   deregistration and the engine callbacks ([`XdsCallbacks`]);
//! - [`identity`]: CAs, mTLS transition stages, issued identities and their rotation,
//!   [`MeshStatus`];
//! - [`insight`]: DataplaneInsight counters and their flusher.
//!
//! Zone proxies (ZoneIngress, ZoneEgress) register like Dataplanes (node id `.<name>`) and
//! are generated from the views of every mesh after each reconcile
//! ([`generator::ingress`], [`generator::egress`]); remote ingresses and local egresses feed
//! the sidecars' cross-zone endpoints ([`view::CrossZone`]).
//!
//! Pure parts: [`view`] (the per-mesh view), [`generator`] (view + proxy → Envoy resources),
//! [`rbac`] (MeshTrafficPermission → RBAC filters), [`envoy`] (builders those share),
//! [`transition`] (mTLS stages), [`inputs`] (the store mirror).

pub mod envoy;
pub mod generator;
pub mod identity;
pub mod inputs;
pub mod insight;
pub mod lifecycle;
pub mod rbac;
pub mod reconciler;
pub mod transition;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use kuma_xds::SnapshotCache;
use tokio_util::sync::CancellationToken;

use crate::manager::ResourceManager;
use crate::tokens::Validator;

pub use identity::{MTLS_STAGE_DELAY, MeshStatus};
pub use lifecycle::{
    FEATURE_READINESS_REPORTING, METADATA_RESOURCE, XdsCallbacks, json_to_struct, parse_node_id,
    struct_to_json,
};

/// Settings of the xDS runtime.
#[derive(Clone)]
pub struct Settings {
    pub zone: String,
    pub instance_id: String,
    pub deregistration_delay: Duration,
    pub flush_interval: Duration,
    pub debounce: Duration,
    /// `dnsServer`: the domain of service names and the VIP port of transparent proxies'
    /// outbounds; `None` when `serviceVipEnabled` is false (no VIP outbounds, no records).
    pub dns: Option<DnsSettings>,
}

/// `dnsServer.domain` and `dnsServer.serviceVipPort`.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub domain: String,
    pub vip_port: u32,
}

/// The control plane side of xDS: the callbacks plus the reconciler, composed of the rooms
/// that own their state (see the module docs).
pub struct Runtime {
    settings: Settings,
    manager: Arc<ResourceManager>,
    validator: Arc<Validator>,
    cache: SnapshotCache,
    tracker: insight::Tracker,
    reconciler: reconciler::Reconciler,
    registry: lifecycle::Registry,
    identities: identity::Identities,
    shutdown: CancellationToken,
    /// `xds_generation`, `xds_delivery`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Met once the first full reconcile is done (a `/ready` condition).
    reconciled: crate::diagnostics::Condition,
    /// The envoy-admin CA, once installed ([`Runtime::set_envoy_admin`]).
    envoy_admin: std::sync::OnceLock<Arc<crate::envoy_admin::pki::Pki>>,
}

impl Runtime {
    pub fn new(
        settings: Settings,
        manager: Arc<ResourceManager>,
        cache: SnapshotCache,
        validator: Arc<Validator>,
        shutdown: CancellationToken,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tracker: insight::Tracker::new(manager.clone(), settings.instance_id.clone()),
            settings,
            manager,
            validator,
            cache,
            reconciler: reconciler::Reconciler::new(),
            registry: lifecycle::Registry::new(),
            identities: identity::Identities::new(),
            shutdown,
            metrics,
            reconciled: crate::diagnostics::Condition::new(
                "xds",
                "the first reconcile of every mesh is not done",
            ),
            envoy_admin: std::sync::OnceLock::new(),
        })
    }

    /// Met once [`Runtime::run`] has reconciled every mesh once (for `/ready`).
    pub fn reconciled(&self) -> crate::diagnostics::Condition {
        self.reconciled.clone()
    }

    /// Installs the envoy-admin CA: from now on every proxy gets its `kuma:envoy:admin`
    /// listener (set once, before proxies connect).
    pub fn set_envoy_admin(&self, pki: Arc<crate::envoy_admin::pki::Pki>) {
        let _ = self.envoy_admin.set(pki);
    }

    /// Per-mesh mTLS status, for the API.
    pub fn status(&self) -> MeshStatus {
        self.identities.status.clone()
    }
}
