//! The sending end of KDS: what one side offers the other, kept current from the store's
//! watch and published as `kuma_xds` snapshots (one per peer), which the delta state
//! machines of the streams serve.
//!
//! Global offers every zone the Meshes, the policies and Secrets created on global, the
//! GlobalSecrets zones need, the ZoneIngresses of the *other* enabled zones, and the VIP
//! tables (Configs `kuma-<mesh>-dns-vips`, names kept). A zone offers
//! global what it originates: Dataplanes and their insights, zone proxies and their insights,
//! and policies created on the zone. Each offered resource is mapped once (Kuma's names and
//! labels for the other side, [`wire::mapped`]) and encoded once; a peer's snapshot shares
//! the encoded resources.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kuma_core::Resource;
use kuma_core::resource::{ResourceKey, ResourceType, Spec};
use kuma_core::store::{self, Event};
use kuma_xds::{Snapshot, SnapshotCache};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::wire;
use crate::manager::{ORIGIN_LABEL, ResourceManager, ZONE_LABEL};

/// GlobalSecrets that stay on global (Kuma's list): tokens' private material and the
/// admin's credentials.
pub(super) fn global_secret_stays(name: &str) -> bool {
    matches!(
        name,
        "admin-user-token" | "envoy-admin-ca" | "inter-cp-ca" | "user-token-revocations"
    ) || name.starts_with("user-token-signing-key")
        || name.starts_with("zone-token-signing-key")
}

/// What zones get of global's zone token signing key `kid`: its public half, as GlobalSecret
/// `zone-token-signing-public-key-<kid>` (they validate zone proxies' tokens, never issue).
fn zone_public_key(res: &Resource, kid: &str) -> Option<Resource> {
    let pem = match crate::tokens::keys::public_key_pem(&crate::tokens::keys::secret_bytes(res)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(name = %res.meta.name, error = %e, "KDS: zone token signing key unreadable; not synced");
            return None;
        }
    };
    let public = Resource::new(
        format!("{}-{kid}", crate::tokens::keys::ZONE_PUBLIC_KEY_PREFIX),
        "",
        Spec::GlobalSecret(kuma_core::resource::SecretData::from_bytes(pem.as_bytes())),
    );
    Some(wire::mapped(&public, "global", None, true))
}

/// Which side publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    Global,
    Zone(String),
}

/// One offered resource: what the peer will store, and its encoding.
struct Entry {
    /// The zone a ZoneIngress serves (not sent back to it), if any.
    zone: Option<String>,
    body: Arc<kuma_xds::Resource>,
}

/// The offered resources of one side and the cache its streams serve.
pub struct Publisher {
    manager: Arc<ResourceManager>,
    cache: SnapshotCache,
    side: Side,
    types: Vec<ResourceType>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<ResourceKey, Entry>,
    /// Zones with `enabled: false` (global only): their ingresses are offered to nobody.
    disabled: BTreeSet<String>,
}

impl Publisher {
    pub fn new(
        manager: Arc<ResourceManager>,
        cache: SnapshotCache,
        side: Side,
        types: Vec<ResourceType>,
    ) -> Arc<Self> {
        Arc::new(Self {
            manager,
            cache,
            side,
            types,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What of a stored resource is offered, mapped for the other side (`None`: nothing).
    fn offer(&self, res: &Resource) -> Option<Resource> {
        let labels = &res.meta.labels;
        let origin = labels.get(ORIGIN_LABEL).map(String::as_str);
        match &self.side {
            Side::Global => {
                let rtype = res.rtype();
                let keep_name = matches!(
                    rtype,
                    ResourceType::Mesh
                        | ResourceType::Secret
                        | ResourceType::GlobalSecret
                        | ResourceType::Config
                );
                if rtype == ResourceType::GlobalSecret
                    && let Some(kid) = res.meta.name.strip_prefix("zone-token-signing-key-")
                {
                    return zone_public_key(res, kid);
                }
                let offered = match rtype {
                    ResourceType::GlobalSecret => !global_secret_stays(&res.meta.name),
                    ResourceType::ZoneIngress => origin == Some("zone"),
                    // Only the VIP tables (zones use global's VIPs, never allocate).
                    ResourceType::Config => {
                        kuma_core::vips::mesh_of_config(&res.meta.name).is_some()
                    }
                    ResourceType::Mesh | ResourceType::Secret => true,
                    _ => origin != Some("zone"),
                };
                offered.then(|| wire::mapped(res, "global", None, keep_name))
            }
            Side::Zone(zone) => {
                let local = origin.is_none_or(|o| o == "zone")
                    && labels.get(ZONE_LABEL).is_none_or(|z| z == zone);
                local.then(|| wire::mapped(res, "zone", Some(zone), false))
            }
        }
    }

    /// Re-reads one key from the store.
    async fn refresh(&self, key: &ResourceKey) {
        if key.rtype == ResourceType::Zone {
            let disabled = match self.manager.get(key).await {
                Ok(Resource {
                    spec: Spec::Zone(z),
                    ..
                }) => z.enabled == Some(false),
                _ => false,
            };
            let mut st = self.lock();
            if disabled {
                st.disabled.insert(key.name.clone());
            } else {
                st.disabled.remove(&key.name);
            }
            return;
        }
        if !self.types.contains(&key.rtype) {
            return;
        }
        let offered = match self.manager.get(key).await {
            Ok(res) => self.offer(&res),
            Err(_) => None,
        };
        let mut st = self.lock();
        match offered {
            Some(res) => {
                let zone = res.meta.labels.get(ZONE_LABEL).cloned();
                let body = Arc::new(kuma_xds::Resource::new(
                    wire::delta_name(&res),
                    wire::encode(&res),
                ));
                st.entries.insert(key.clone(), Entry { zone, body });
            }
            None => {
                st.entries.remove(key);
            }
        }
    }

    /// Reads everything offered from the store (start, or after the watch lagged).
    async fn reload(&self) -> Result<(), store::Error> {
        let mut keys = Vec::new();
        for t in self.types.iter().copied().chain([ResourceType::Zone]) {
            let listed = self.manager.store().list(t, None).await?;
            keys.extend(listed.iter().map(Resource::key));
        }
        self.lock().entries.clear();
        for k in &keys {
            self.refresh(k).await;
        }
        Ok(())
    }

    /// The snapshot for a peer: a zone's name on global (its own ingresses and those of
    /// disabled zones left out), anything on a zone.
    pub fn snapshot_for(&self, peer: &str) -> Arc<Snapshot> {
        let st = self.lock();
        let mut snap = Snapshot::new();
        for e in st.entries.values() {
            if self.side == Side::Global
                && let Some(z) = &e.zone
                && (z == peer || st.disabled.contains(z))
            {
                continue;
            }
            snap.insert(e.body.clone());
        }
        Arc::new(snap)
    }

    /// Publishes the current snapshot to one peer.
    pub fn publish_to(&self, peer: &str) {
        self.cache.set(peer, self.snapshot_for(peer));
    }

    fn publish_all(&self) {
        for peer in self.cache.node_ids() {
            self.publish_to(&peer);
        }
    }

    /// Keeps the offer current until `shutdown`: store events are coalesced (until a quiet
    /// gap of 5 ms, at most 50 ms), then every peer's snapshot is published.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut events = self.manager.store().watch();
        self.reload().await?;
        self.publish_all();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                e = events.recv() => e,
            };
            let mut keys: BTreeSet<ResourceKey> = BTreeSet::new();
            let mut lagged = false;
            let mut take = |e: Result<Event, RecvError>, keys: &mut BTreeSet<ResourceKey>| match e {
                Ok(ev) => {
                    keys.insert(ev.key);
                    true
                }
                Err(RecvError::Lagged(_)) => {
                    lagged = true;
                    true
                }
                Err(RecvError::Closed) => false,
            };
            if !take(first, &mut keys) {
                return Ok(());
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(50);
            loop {
                let quiet = tokio::time::Instant::now() + Duration::from_millis(5);
                match tokio::time::timeout_at(quiet.min(until), events.recv()).await {
                    Ok(e) => {
                        if !take(e, &mut keys) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            keys.retain(|k| k.rtype == ResourceType::Zone || self.types.contains(&k.rtype));
            if lagged {
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "KDS: reloading the offered resources failed");
                }
            } else if keys.is_empty() {
                continue;
            } else {
                for k in &keys {
                    self.refresh(k).await;
                }
            }
            self.publish_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::resource::ConfigSpec;
    use kuma_core::store::memory::MemoryStore;

    #[test]
    fn global_offers_vip_tables_under_their_own_name() {
        let m = Arc::new(
            ResourceManager::new(Arc::new(MemoryStore::new()), "default")
                .with_mode(crate::config::CpMode::Global),
        );
        let p = Publisher::new(
            m,
            SnapshotCache::new(),
            Side::Global,
            crate::kds::types::global_to_zone(),
        );
        let config = |name: &str| {
            Resource::new(
                name,
                "",
                Spec::Config(ConfigSpec {
                    config: "{}".into(),
                }),
            )
        };
        let offered = p
            .offer(&config("kuma-default-dns-vips"))
            .expect("a VIP table is offered");
        assert_eq!(offered.meta.name, "kuma-default-dns-vips");
        assert_eq!(
            offered.meta.labels.get(ORIGIN_LABEL).map(String::as_str),
            Some("global")
        );
        assert!(p.offer(&config("kuma-cluster-id")).is_none());
    }
}
