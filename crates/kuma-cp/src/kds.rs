//! KDS, the sync between the global control plane and zone control planes (Kuma's
//! `KDSSyncService`), on the mesh-agnostic `kuma_xds` engine: what each side offers is a
//! snapshot served by the delta state machine; what each side receives goes through a sink
//! that checks ownership and stores.
//!
//! Rooms: [`wire`] (the envelope, delta names, Kuma's hashed names), [`publish`] (what a side
//! offers, from the store), [`sink`] (applying what the peer sends), [`grpc`] (the two RPCs'
//! plumbing), [`global`] (the server and ZoneInsights), [`zone`] (the client).

pub mod envoy_admin;
pub mod global;
pub mod grpc;
pub mod publish;
pub mod sink;
pub mod wire;
pub mod zone;

use async_trait::async_trait;

/// Checks a zone token presented on KDS: the zone it names, if it is valid, unexpired, not
/// revoked and of scope `cp`; otherwise why not (for the log only: peers get one answer).
#[async_trait]
pub trait ZoneAuthenticator: Send + Sync + 'static {
    async fn authenticate_cp(&self, token: &str) -> Result<String, String>;
}

#[async_trait]
impl ZoneAuthenticator for crate::tokens::Validator {
    async fn authenticate_cp(&self, token: &str) -> Result<String, String> {
        self.authorize_zone(token, crate::tokens::ZoneScope::Cp, None)
            .await
            .map(|c| c.zone)
            .map_err(|e| e.to_string())
    }
}

/// The resource types of each direction, in the order they are subscribed (a Mesh before
/// what lives in it).
pub mod types {
    use kuma_core::resource::ResourceType;

    /// Global → zones: Meshes, GlobalSecrets, Secrets and policies created on global, the
    /// other zones' ZoneIngresses, and the VIP tables (Configs `kuma-<mesh>-dns-vips`).
    pub fn global_to_zone() -> Vec<ResourceType> {
        vec![
            ResourceType::Mesh,
            ResourceType::GlobalSecret,
            ResourceType::Secret,
            ResourceType::MeshTrafficPermission,
            ResourceType::ZoneIngress,
            ResourceType::Config,
        ]
    }

    /// Zone → global: what the zone originates.
    pub fn zone_to_global() -> Vec<ResourceType> {
        vec![
            ResourceType::Dataplane,
            ResourceType::DataplaneInsight,
            ResourceType::MeshTrafficPermission,
            ResourceType::ZoneIngress,
            ResourceType::ZoneIngressInsight,
            ResourceType::ZoneEgress,
            ResourceType::ZoneEgressInsight,
        ]
    }
}
