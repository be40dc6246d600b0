//! Envoy configuration of a ZoneEgress (pure): the exit of this zone for cross-zone mesh
//! traffic when a mesh sets `routing.zoneEgress` (sidecars then dial the egress instead of
//! the remote ingresses).
//!
//! - listener `inbound:<address>:<port>` with the TLS inspector and one filter chain per
//!   service reachable in other zones of each mTLS mesh, matching SNI
//!   `<service>{mesh=<mesh>}` → `tcp_proxy` to cluster `<mesh>:<service>` (TLS passthrough,
//!   as on the ingress);
//! - cluster `<mesh>:<service>` (EDS; stats `cluster.<mesh>_<service>.*`) whose endpoints are
//!   the remote zones' ingresses (advertised address:port, weighted by instances, locality
//!   `{zone}`).
//!
//! External services (the egress terminating mesh mTLS toward a host outside the mesh) are
//! not generated.

use std::sync::Arc;

use envoy_types::util::pack_any;
use kuma_core::resource::ZoneEgress;
use kuma_xds::{Resource, Snapshot};

use super::super::envoy::zoned_load_assignment;
use super::super::view::MeshView;
use super::ingress::{cluster_name, eds_cluster, sni, sni_chain, zone_listener};

/// The snapshot of a ZoneEgress from the views of every mesh (in any order).
pub fn generate(ze: &ZoneEgress, views: &[Arc<MeshView>]) -> Snapshot {
    let mut snap = Snapshot::new();
    let mut views: Vec<&Arc<MeshView>> = views
        .iter()
        .filter(|v| v.mtls().is_some() && v.broken().is_none())
        .collect();
    views.sort_by(|a, b| a.mesh.cmp(&b.mesh));
    let mut chains = Vec::new();
    for view in views {
        for (service, remote) in &view.cross_zone().remote {
            let cluster = cluster_name(&view.mesh, service);
            chains.push(sni_chain(sni(&view.mesh, service), &cluster));
            snap.insert(view.shared(&format!("egress-cluster|{cluster}"), || {
                Resource::new(cluster.clone(), pack_any(eds_cluster(&cluster)))
            }));
            snap.insert(view.shared(&format!("egress-cla|{cluster}"), || {
                Resource::new(
                    cluster.clone(),
                    pack_any(zoned_load_assignment(
                        &cluster,
                        &[],
                        view.zone(),
                        1,
                        remote,
                        false,
                    )),
                )
            }));
        }
    }
    let net = ze.net();
    if let Some(l) = zone_listener(&net.address, net.port, chains) {
        snap.insert(Arc::new(l));
    }
    snap
}
