//! The per-mesh view every proxy of a mesh is generated from, rebuilt once per burst of
//! changes: services → endpoints (as one shared ClusterLoadAssignment each) and protocols.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kuma_core::resource::Dataplane;
use kuma_xds::Resource;

use super::generator::{EndpointAddr, cluster_load_assignment};

/// Everything about one mesh that proxy generation reads.
#[derive(Default)]
pub struct MeshView {
    pub mesh: String,
    zone: String,
    services: HashMap<String, Service>,
}

struct Service {
    protocol: String,
    endpoints: Arc<Resource>,
}

impl MeshView {
    /// Builds the view from every Dataplane of the mesh.
    pub fn build<'a>(
        mesh: &str,
        zone: &str,
        dataplanes: impl IntoIterator<Item = &'a Dataplane>,
    ) -> Self {
        let mut endpoints: BTreeMap<&str, Vec<EndpointAddr>> = BTreeMap::new();
        let mut protocols: HashMap<&str, &str> = HashMap::new();
        for dp in dataplanes {
            let Some(net) = dp.networking() else { continue };
            for inbound in &net.inbound {
                let Some(service) = inbound.service() else {
                    continue;
                };
                if inbound.state.as_deref().is_some_and(|s| s != "Ready") {
                    continue;
                }
                endpoints.entry(service).or_default().push(EndpointAddr {
                    ip: inbound.advertised_address(net).to_string(),
                    port: inbound.port,
                });
                // A service whose inbounds disagree on the protocol is treated as TCP.
                let p = protocols.entry(service).or_insert(inbound.protocol());
                if *p != inbound.protocol() {
                    *p = "tcp";
                }
            }
        }
        let services = endpoints
            .into_iter()
            .map(|(service, mut eps)| {
                eps.sort();
                eps.dedup();
                let protocol = protocols.get(service).copied().unwrap_or("tcp").to_string();
                (
                    service.to_string(),
                    Service {
                        protocol,
                        endpoints: Arc::new(cluster_load_assignment(service, &eps, zone)),
                    },
                )
            })
            .collect();
        Self {
            mesh: mesh.to_string(),
            zone: zone.to_string(),
            services,
        }
    }

    /// Protocol of a destination service (`tcp` when unknown).
    pub fn protocol(&self, service: &str) -> &str {
        self.services
            .get(service)
            .map_or("tcp", |s| s.protocol.as_str())
    }

    /// The shared ClusterLoadAssignment of a service (empty when it has no endpoint).
    pub fn endpoints(&self, service: &str) -> Arc<Resource> {
        match self.services.get(service) {
            Some(s) => s.endpoints.clone(),
            None => Arc::new(cluster_load_assignment(service, &[], &self.zone)),
        }
    }

    /// The shared ClusterLoadAssignment of a service, if it exists (for change detection).
    pub fn endpoints_version(&self, service: &str) -> Option<&str> {
        self.services
            .get(service)
            .map(|s| s.endpoints.version.as_str())
    }
}
