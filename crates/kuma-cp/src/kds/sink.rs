//! The receiving end of a KDS stream: applies what the other side sends to the local store,
//! and answers each response with an ACK or a NACK.
//!
//! On global, the peer is one zone (authenticated by its token): everything it sends must be
//! its own (origin `zone`, `kuma.io/zone` = its name, the hashed name that implies, and for a
//! Dataplane every inbound's `kuma.io/zone` tag); anything else is refused and the response
//! NACKed. On a zone, the peer is global.
//!
//! The first response of a type on a stream is the whole set (a wildcard subscription from
//! an empty state): what the peer owns locally and is not in it is deleted, so deletions that
//! happened while the two were apart are applied. Later responses carry changes and removals.
//! A write equal to what is stored is skipped (no store event, no regeneration).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use kuma_core::Resource;
use kuma_core::resource::{ResourceKey, ResourceType, Spec};
use kuma_core::store;
use serde_json::Value;

use super::wire;
use crate::manager::{DISPLAY_NAME_LABEL, ManagerError, ORIGIN_LABEL, ResourceManager, ZONE_LABEL};

/// Who sends to this sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A zone, as its token names it (this side is global).
    Zone(String),
    /// Global (this side is the zone named here).
    Global { local_zone: String },
}

impl Peer {
    /// Whether a stored resource is one this peer owns (what its full set replaces).
    pub fn owns(&self, res: &Resource) -> bool {
        let labels = &res.meta.labels;
        let origin = labels.get(ORIGIN_LABEL).map(String::as_str);
        let zone = labels.get(ZONE_LABEL).map(String::as_str);
        match self {
            Peer::Zone(z) => origin == Some("zone") && zone == Some(z.as_str()),
            Peer::Global { local_zone } => {
                origin == Some("global")
                    || zone.is_some_and(|z| z != local_zone)
                    // A federated zone never allocates: every VIP table is global's (one
                    // left from standalone days is replaced, not defended).
                    || is_vip_table(res)
            }
        }
    }

    /// Checks (and completes) a resource received from this peer.
    fn admit(&self, mut res: Resource) -> Result<Resource, String> {
        let Peer::Zone(z) = self else {
            // Of the control plane's Configs, global sends only the VIP tables.
            if res.rtype() == ResourceType::Config && !is_vip_table(&res) {
                return Err(format!(
                    "Config {:?}: only VIP tables (kuma-<mesh>-dns-vips) are synced",
                    res.meta.name
                ));
            }
            // What stays on global is never taken from it either: a zone keeps its own
            // envoy-admin CA and never holds global's credentials.
            if res.rtype() == ResourceType::GlobalSecret
                && super::publish::global_secret_stays(&res.meta.name)
            {
                return Err(format!(
                    "GlobalSecret {:?}: not synced to zones",
                    res.meta.name
                ));
            }
            return Ok(res);
        };
        let labels = &res.meta.labels;
        if labels.get(ORIGIN_LABEL).map(String::as_str) != Some("zone") {
            return Err(format!(
                "{} {:?}: a zone may only send resources of origin zone",
                res.rtype().name(),
                res.meta.name
            ));
        }
        if labels.get(ZONE_LABEL) != Some(z) {
            return Err(format!(
                "{} {:?}: label {ZONE_LABEL} must be {z:?}, the zone of the token",
                res.rtype().name(),
                res.meta.name
            ));
        }
        let display = labels.get(DISPLAY_NAME_LABEL).cloned().unwrap_or_default();
        if display.is_empty() || res.meta.name != wire::hashed_name(&res.meta.mesh, &display, &[z])
        {
            return Err(format!(
                "{} {:?}: the name must be the hash of its display name in zone {z:?}",
                res.rtype().name(),
                res.meta.name
            ));
        }
        if res.rtype() == ResourceType::Dataplane {
            let w = res.to_wire();
            let tagged = |v: &Value| {
                v.get("tags")
                    .and_then(|t| t.get("kuma.io/zone"))
                    .and_then(Value::as_str)
                    .is_none_or(|tz| tz == z)
            };
            let net = &w["networking"];
            let inbounds = net["inbound"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if !inbounds.iter().all(tagged) || !tagged(&net["gateway"]) {
                return Err(format!(
                    "Dataplane {:?}: a kuma.io/zone tag names another zone than {z:?}",
                    res.meta.name
                ));
            }
        }
        // A zone proxy's zone is the zone that sent it, whatever it says.
        match &mut res.spec {
            Spec::ZoneIngress(zi) => zi.zone.clone_from(z),
            Spec::ZoneEgress(ze) => ze.zone.clone_from(z),
            _ => {}
        }
        Ok(res)
    }
}

/// A Config holding a mesh's VIP table (`kuma-<mesh>-dns-vips`).
fn is_vip_table(res: &Resource) -> bool {
    res.rtype() == ResourceType::Config && kuma_core::vips::mesh_of_config(&res.meta.name).is_some()
}

/// A resource received from `peer` on the stream of `rtype`: decoded, validated and checked
/// for ownership (what `Sink::apply` stores, if anything).
pub fn receive(peer: &Peer, rtype: ResourceType, any: &Any) -> Result<Resource, String> {
    wire::decode(rtype, any).and_then(|res| peer.admit(res))
}

/// The receiving state of one stream.
pub struct Sink {
    manager: Arc<ResourceManager>,
    peer: Peer,
    types: Vec<ResourceType>,
    /// Per type: delta name → the key it was stored under (for removals).
    names: HashMap<ResourceType, HashMap<String, ResourceKey>>,
    /// Types whose full set arrived on this stream.
    synced: BTreeSet<ResourceType>,
}

/// What to send back after a response.
pub struct Answer {
    /// The ACK or NACK.
    pub reply: DeltaDiscoveryRequest,
    /// After a NACK: a request that asks the refused names again (sent after a back-off,
    /// Kuma's `nackBackoff`), so a resource refused for a passing reason (its Mesh not there
    /// yet) arrives again.
    pub retry: Option<DeltaDiscoveryRequest>,
}

impl Sink {
    pub fn new(manager: Arc<ResourceManager>, peer: Peer, types: Vec<ResourceType>) -> Self {
        Self {
            manager,
            peer,
            types,
            names: HashMap::new(),
            synced: BTreeSet::new(),
        }
    }

    /// The first request of every type: a wildcard subscription from an empty state.
    pub fn subscriptions(&self, node: &Node) -> Vec<DeltaDiscoveryRequest> {
        self.types
            .iter()
            .map(|t| DeltaDiscoveryRequest {
                node: Some(node.clone()),
                type_url: t.name().into(),
                resource_names_subscribe: vec!["*".into()],
                ..Default::default()
            })
            .collect()
    }

    /// Whether the full set of every type arrived on this stream.
    pub fn is_synced(&self) -> bool {
        self.synced.len() == self.types.len()
    }

    /// Applies one response; the answer to send.
    pub async fn apply(&mut self, resp: DeltaDiscoveryResponse) -> Answer {
        let DeltaDiscoveryResponse {
            type_url,
            resources,
            removed_resources,
            nonce,
            ..
        } = resp;
        let mut errors = Vec::new();
        let mut refused = Vec::new();
        let rtype = self.types.iter().copied().find(|t| t.name() == type_url);
        if let Some(rtype) = rtype {
            let first = self.synced.insert(rtype);
            let mut names = std::mem::take(self.names.entry(rtype).or_default());
            for r in resources {
                let Some(any) = r.resource.as_ref() else {
                    continue;
                };
                let res = receive(&self.peer, rtype, any);
                match res {
                    Ok(res) => {
                        let key = res.key();
                        match self.write(res).await {
                            Ok(()) => {
                                names.insert(r.name.clone(), key);
                            }
                            Err(e) => {
                                errors.push(format!("{}: {e}", r.name));
                                refused.push(r.name.clone());
                            }
                        }
                    }
                    Err(e) => errors.push(format!("{}: {e}", r.name)),
                }
            }
            for name in removed_resources {
                if let Some(key) = names.remove(&name)
                    && let Err(e) = self.remove(&key).await
                {
                    errors.push(format!("{name}: {e}"));
                }
            }
            if first && let Err(e) = self.reconcile(rtype, &names).await {
                errors.push(e);
            }
            self.names.insert(rtype, names);
        } else {
            errors.push(format!("type {type_url:?} is not synced here"));
        }
        let error_detail = (!errors.is_empty()).then(|| {
            tracing::warn!(peer = ?self.peer, r#type = %type_url, errors = ?errors, "KDS: refused resources");
            RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message: errors.join("; "),
                ..Default::default()
            }
        });
        let retry = (!refused.is_empty()).then(|| DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            resource_names_subscribe: refused,
            ..Default::default()
        });
        Answer {
            reply: DeltaDiscoveryRequest {
                type_url,
                response_nonce: nonce,
                error_detail,
                ..Default::default()
            },
            retry,
        }
    }

    /// Stores `res` unless an equal copy is there; never overwrites what the peer does not
    /// own.
    async fn write(&self, res: Resource) -> Result<(), ManagerError> {
        match self.manager.get(&res.key()).await {
            Ok(current) => {
                if !self.peer.owns(&current) {
                    return Err(kuma_core::validate::ValidationError::single(
                        "name",
                        "a resource of this name exists here and is not the peer's",
                    )
                    .into());
                }
                if current.spec == res.spec && current.meta.labels == res.meta.labels {
                    return Ok(());
                }
                let origin = |r: &Resource| r.meta.labels.get(ORIGIN_LABEL).cloned();
                if is_vip_table(&current) && origin(&current) != origin(&res) {
                    // A table this zone wrote while standalone: replaced whole, as its
                    // origin label cannot change.
                    self.remove(&current.key()).await?;
                }
            }
            Err(ManagerError::Store(store::Error::NotFound(_))) => {}
            Err(e) => return Err(e),
        }
        self.manager.upsert_internal(res).await.map(|_| ())
    }

    async fn remove(&self, key: &ResourceKey) -> Result<(), ManagerError> {
        match self.manager.delete_internal(key).await {
            Err(ManagerError::Store(store::Error::NotFound(_))) => Ok(()),
            r => r,
        }
    }

    /// After the full set of `rtype`: deletes what the peer owns here and did not send.
    async fn reconcile(
        &self,
        rtype: ResourceType,
        names: &HashMap<String, ResourceKey>,
    ) -> Result<(), String> {
        let keep: BTreeSet<&ResourceKey> = names.values().collect();
        let stored = self
            .manager
            .list(rtype, None)
            .await
            .map_err(|e| e.to_string())?;
        for res in stored {
            let key = res.key();
            if self.peer.owns(&res) && !keep.contains(&key) {
                tracing::info!(%key, peer = ?self.peer, "KDS: deleting what the peer no longer has");
                self.remove(&key).await.map_err(|e| format!("{key}: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CpMode;
    use envoy_types::pb::envoy::service::discovery::v3::Resource as WireResource;
    use kuma_core::resource::{Mesh, Spec};
    use kuma_core::store::memory::MemoryStore;
    use serde_json::json;

    async fn global() -> Arc<ResourceManager> {
        let m =
            ResourceManager::new(Arc::new(MemoryStore::new()), "default").with_mode(CpMode::Global);
        m.upsert_internal(Resource::new("default", "", Spec::Mesh(Mesh::default())))
            .await
            .unwrap();
        Arc::new(m)
    }

    /// A Dataplane as zone `zone` sends it (mapped: hashed name, labels), with `tag_zone` as
    /// its inbound's kuma.io/zone tag.
    fn sent(name: &str, zone: &str, tag_zone: &str) -> Resource {
        let local = Resource::from_wire(
            json!({"type": "Dataplane", "mesh": "default", "name": name,
                   "labels": {"kuma.io/origin": "zone", "kuma.io/zone": zone},
                   "networking": {"address": "127.0.0.1", "inbound": [
                       {"port": 1, "tags": {"kuma.io/service": "b", "kuma.io/zone": tag_zone}}]}}),
            None,
        )
        .unwrap();
        wire::mapped(&local, "zone", Some(zone), false)
    }

    fn response(nonce: &str, res: &[Resource]) -> DeltaDiscoveryResponse {
        typed_response("Dataplane", nonce, res)
    }

    fn typed_response(type_url: &str, nonce: &str, res: &[Resource]) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources: res
                .iter()
                .map(|r| WireResource {
                    name: wire::delta_name(r),
                    resource: Some(wire::encode(r)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_zone_cannot_write_for_another_zone() {
        let m = global().await;
        let mut sink = Sink::new(
            m.clone(),
            Peer::Zone("zone-1".into()),
            vec![ResourceType::Dataplane],
        );
        let good = sent("dp-1", "zone-1", "zone-1");
        let other_label = sent("dp-2", "zone-2", "zone-2");
        let other_tag = sent("dp-3", "zone-1", "zone-2");
        let mut renamed = sent("dp-4", "zone-1", "zone-1");
        renamed.meta.name = "dp-1-of-someone".into();
        let a = sink
            .apply(response(
                "1",
                &[good.clone(), other_label, other_tag, renamed],
            ))
            .await;
        let err = a.reply.error_detail.expect("NACK").message;
        assert!(
            err.contains("label kuma.io/zone must be \"zone-1\""),
            "{err}"
        );
        assert!(
            err.contains("a kuma.io/zone tag names another zone"),
            "{err}"
        );
        assert!(
            err.contains("the name must be the hash of its display name"),
            "{err}"
        );
        assert_eq!(a.reply.response_nonce, "1");
        let stored: Vec<String> = m
            .list(ResourceType::Dataplane, None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.meta.name)
            .collect();
        assert_eq!(stored, vec![good.meta.name.clone()]);
    }

    #[tokio::test]
    async fn a_full_set_replaces_only_what_the_peer_owns() {
        let m = global().await;
        // zone-2's Dataplane, stored earlier from zone-2.
        let mut z2 = Sink::new(
            m.clone(),
            Peer::Zone("zone-2".into()),
            vec![ResourceType::Dataplane],
        );
        let theirs = sent("dp-x", "zone-2", "zone-2");
        assert!(
            z2.apply(response("1", std::slice::from_ref(&theirs)))
                .await
                .reply
                .error_detail
                .is_none()
        );
        // zone-1 had dp-old; its new stream's full set has dp-new only.
        let mut z1 = Sink::new(
            m.clone(),
            Peer::Zone("zone-1".into()),
            vec![ResourceType::Dataplane],
        );
        let old = sent("dp-old", "zone-1", "zone-1");
        assert!(
            z1.apply(response("1", std::slice::from_ref(&old)))
                .await
                .reply
                .error_detail
                .is_none()
        );
        let mut z1 = Sink::new(
            m.clone(),
            Peer::Zone("zone-1".into()),
            vec![ResourceType::Dataplane],
        );
        let new = sent("dp-new", "zone-1", "zone-1");
        let a = z1.apply(response("1", std::slice::from_ref(&new))).await;
        assert!(a.reply.error_detail.is_none(), "{:?}", a.reply.error_detail);
        let mut stored: Vec<String> = m
            .list(ResourceType::Dataplane, None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.meta.name)
            .collect();
        stored.sort();
        let mut want = vec![new.meta.name, theirs.meta.name];
        want.sort();
        assert_eq!(stored, want);
        // A later removal by its delta name.
        let a = z1
            .apply(DeltaDiscoveryResponse {
                type_url: "Dataplane".into(),
                nonce: "2".into(),
                removed_resources: vec![wire::delta_name(&sent("dp-new", "zone-1", "zone-1"))],
                ..Default::default()
            })
            .await;
        assert!(a.reply.error_detail.is_none());
        assert_eq!(
            m.list(ResourceType::Dataplane, None).await.unwrap().len(),
            1
        );
    }

    fn config(name: &str, body: &str, labels: &[(&str, &str)]) -> Resource {
        let mut r = Resource::new(
            name,
            "",
            Spec::Config(kuma_core::resource::ConfigSpec {
                config: body.into(),
            }),
        );
        for (k, v) in labels {
            r.meta.labels.insert(k.to_string(), v.to_string());
        }
        r
    }

    #[tokio::test]
    async fn a_zone_takes_globals_vip_tables_only() {
        // The zone-to-global direction has no Config: a zone cannot send VIPs to global.
        assert!(!crate::kds::types::zone_to_global().contains(&ResourceType::Config));
        assert!(crate::kds::types::global_to_zone().contains(&ResourceType::Config));
        let zone = Arc::new(
            ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
                .with_mode(CpMode::FederatedZone),
        );
        // A table this zone wrote while it was standalone.
        zone.upsert_internal(config("kuma-default-dns-vips", "{}", &[]))
            .await
            .unwrap();
        let mut sink = Sink::new(
            zone.clone(),
            Peer::Global {
                local_zone: "zone-1".into(),
            },
            vec![ResourceType::Config],
        );
        let table = r#"{"0:backend":{"address":"240.0.0.0","outbounds":[{"TagSet":{"kuma.io/service":"backend"},"Origin":"service","Port":0}]}}"#;
        let vips = wire::mapped(
            &config("kuma-default-dns-vips", table, &[]),
            "global",
            None,
            true,
        );
        let other = wire::mapped(&config("kuma-cluster-id", "x", &[]), "global", None, true);
        let resp = typed_response("Config", "1", &[vips.clone(), other.clone()]);
        let a = sink.apply(resp).await;
        let err = a
            .reply
            .error_detail
            .expect("NACK for kuma-cluster-id")
            .message;
        assert!(err.contains("only VIP tables"), "{err}");
        let stored = zone.list(ResourceType::Config, None).await.unwrap();
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(
            stored[0].meta.name, "kuma-default-dns-vips",
            "name kept, not hashed"
        );
        assert_eq!(
            stored[0].spec, vips.spec,
            "global's table replaced the local one"
        );
        assert_eq!(
            stored[0].meta.labels.get(ORIGIN_LABEL).map(String::as_str),
            Some("global")
        );
        // Global's full set without it (the Mesh went): deleted here.
        let mut sink = Sink::new(
            zone.clone(),
            Peer::Global {
                local_zone: "zone-1".into(),
            },
            vec![ResourceType::Config],
        );
        let a = sink
            .apply(DeltaDiscoveryResponse {
                type_url: "Config".into(),
                nonce: "1".into(),
                ..Default::default()
            })
            .await;
        assert!(a.reply.error_detail.is_none());
        assert!(
            zone.list(ResourceType::Config, None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_zone_never_takes_the_envoy_admin_ca_from_global() {
        let zone = Arc::new(
            ResourceManager::new(Arc::new(MemoryStore::new()), "zone-1")
                .with_mode(CpMode::FederatedZone),
        );
        let own = Resource::new(
            "envoy-admin-ca",
            "",
            Spec::GlobalSecret(kuma_core::resource::SecretData::from_bytes(b"zone's own")),
        );
        zone.upsert_internal(own.clone()).await.unwrap();
        let mut sink = Sink::new(
            zone.clone(),
            Peer::Global {
                local_zone: "zone-1".into(),
            },
            vec![ResourceType::GlobalSecret],
        );
        let theirs = wire::mapped(
            &Resource::new(
                "envoy-admin-ca",
                "",
                Spec::GlobalSecret(kuma_core::resource::SecretData::from_bytes(b"global's")),
            ),
            "global",
            None,
            true,
        );
        let a = sink
            .apply(typed_response("GlobalSecret", "1", &[theirs]))
            .await;
        let err = a.reply.error_detail.expect("NACK").message;
        assert!(err.contains("not synced to zones"), "{err}");
        // The zone's own CA is neither replaced nor deleted by the full set.
        let stored = zone.list(ResourceType::GlobalSecret, None).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].spec, own.spec);
    }
}
