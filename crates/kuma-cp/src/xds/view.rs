//! The per-mesh view every proxy of a mesh is generated from, rebuilt once per burst of
//! changes: services → endpoints (as one shared ClusterLoadAssignment each) and protocols.
//!
//! Cross-zone endpoints ([`CrossZone`], Kuma's `outbound.go` rule): with mTLS on, every
//! remote ZoneIngress (its `zone` set and not the local one, with an advertised address and
//! port; the same address:port counted once) adds, for each of its `availableServices` of
//! the mesh, an endpoint at its advertised address weighted by the service's instances, in
//! locality `{zone: <remote zone>}`. Local endpoints weigh the number of distinct remote
//! ingresses (or 1), in locality `{zone: <local zone>}`. With
//! `routing.localityAwareLoadBalancing`, remote localities get priority 1 (used only when no
//! local endpoint is healthy). With `routing.zoneEgress`, the remote endpoints are replaced by
//! the local ZoneEgresses (weight 1), which forward by SNI; without any egress there is no
//! cross-zone endpoint (as in Kuma). Ingresses behind one advertised address count once,
//! represented by the first that announces services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kuma_core::resource::dataplane::PROTOCOL_TAG;
use kuma_core::resource::{Dataplane, Mesh, MeshTrafficPermission, ZoneEgress, ZoneIngress};
use kuma_xds::Resource;

use crate::ca::Ca;

use super::envoy::{EndpointAddr, RemoteEndpoint, cluster_load_assignment, zoned_load_assignment};

/// The cross-zone inputs of a mesh's view (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossZone {
    /// Service → its endpoints in other zones: the remote ingresses, weighted by instances.
    pub remote: BTreeMap<String, Vec<RemoteEndpoint>>,
    /// Protocols of remote services (their `kuma.io/protocol` tag).
    pub protocols: BTreeMap<String, String>,
    /// Weight of each local endpoint: the number of distinct remote ingresses, or 1.
    pub local_weight: u32,
    /// Remote localities get priority 1.
    pub locality_aware: bool,
    /// `routing.zoneEgress`: the remote endpoints are replaced by these local ZoneEgresses
    /// (none: no cross-zone endpoint at all, as in Kuma).
    pub egress: Option<Vec<EndpointAddr>>,
}

impl CrossZone {
    /// Cross-zone endpoints of `mesh` (pure): nothing unless the mesh has mTLS enabled.
    /// `ingresses` and `egresses` are every stored ZoneIngress / ZoneEgress, in name order.
    pub fn build<'a>(
        mesh: &str,
        spec: &Mesh,
        local_zone: &str,
        ingresses: impl IntoIterator<Item = &'a ZoneIngress>,
        egresses: impl IntoIterator<Item = &'a ZoneEgress>,
    ) -> Self {
        let mut out = CrossZone {
            local_weight: 1,
            ..Default::default()
        };
        if !spec.mtls_enabled() {
            return out;
        }
        let routing = |key: &str| {
            spec.routing
                .as_ref()
                .and_then(|r| r.get(key))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        out.locality_aware = routing("localityAwareLoadBalancing");
        let mut seen = std::collections::HashSet::new();
        for zi in ingresses {
            let Some((address, port)) = zi.public_address() else {
                continue;
            };
            // One endpoint per load balancer: ingresses behind the same address count once,
            // represented by the first that announces services (a new instance not yet
            // reconciled by its zone must not hide the others, as in Kuma).
            let coordinates = (address.to_string(), port);
            if !zi.is_remote(local_zone) || seen.contains(&coordinates) {
                continue;
            }
            if !zi.available_services.is_empty() {
                seen.insert(coordinates);
            }
            for s in &zi.available_services {
                let Some(service) = s.service() else { continue };
                if s.mesh != mesh || s.external_service {
                    continue;
                }
                out.remote
                    .entry(service.to_string())
                    .or_default()
                    .push(RemoteEndpoint {
                        addr: EndpointAddr {
                            ip: address.to_string(),
                            port,
                        },
                        weight: s.instances.max(1),
                        zone: zi.zone.clone(),
                    });
                if let Some(p) = s.tags.get(PROTOCOL_TAG) {
                    out.protocols.insert(service.to_string(), p.clone());
                }
            }
        }
        out.local_weight = u32::try_from(seen.len()).unwrap_or(u32::MAX).max(1);
        for eps in out.remote.values_mut() {
            eps.sort();
        }
        if routing("zoneEgress") {
            let mut local: Vec<EndpointAddr> = egresses
                .into_iter()
                .filter(|ze| ze.zone.is_empty() || ze.zone == local_zone)
                .map(ZoneEgress::net)
                .filter(|n| !n.address.is_empty() && n.port != 0)
                .map(|n| EndpointAddr {
                    ip: n.address,
                    port: n.port,
                })
                .collect();
            local.sort();
            local.dedup();
            out.egress = Some(local);
        }
        out
    }

    /// What a sidecar dials for `service` in other zones: the remote ingresses, or the local
    /// egresses (one endpoint per remote zone and egress, weight 1).
    fn sidecar_endpoints(&self, service: &str) -> Vec<RemoteEndpoint> {
        let remote = self.remote.get(service).map_or(&[][..], Vec::as_slice);
        match &self.egress {
            None => remote.to_vec(),
            Some(egresses) => {
                let mut out: Vec<RemoteEndpoint> = remote
                    .iter()
                    .flat_map(|r| {
                        egresses.iter().map(|e| RemoteEndpoint {
                            addr: e.clone(),
                            weight: 1,
                            zone: r.zone.clone(),
                        })
                    })
                    .collect();
                out.sort();
                out.dedup();
                out
            }
        }
    }
}

/// Everything about one mesh that proxy generation reads.
#[derive(Default)]
pub struct MeshView {
    pub mesh: String,
    /// Order of builds: a proxy is never given a view older than one it already got.
    pub epoch: u64,
    zone: String,
    services: HashMap<String, Service>,
    mtls: Option<Mtls>,
    /// mTLS is enabled but its CA could not be loaded: no proxy of the mesh gets a new
    /// configuration from this view (fail closed).
    broken: Option<String>,
    /// Services whose inbounds keep an older protocol while it changes (see
    /// [`super::transition::protocol_sides`]).
    inbound_protocols: BTreeMap<String, String>,
    policies: Vec<(String, MeshTrafficPermission)>,
    cross: CrossZone,
    /// Service VIPs of the mesh and how transparent proxies reach them (see [`Vips`]).
    vips: Vips,
    /// The DNS records body and its Etag for transparent proxies without
    /// `reachableServices`, built once per view: `[IPv4 only, with IPv6]`.
    dns_records: [std::sync::OnceLock<Arc<(String, String)>>; 2],
    fingerprint: std::sync::OnceLock<u64>,
    /// The Mesh's enabled Prometheus backend (`metrics.enabledBackend`), if any.
    metrics: Option<kuma_core::metrics::PrometheusConf>,
    /// Resources built once per view and shared by every proxy that needs them.
    shared: std::sync::Mutex<HashMap<String, Arc<Resource>>>,
}

/// The mesh's service VIPs (`kuma-<mesh>-dns-vips`, allocated by [`crate::vips`]) and the
/// `dnsServer` settings transparent proxies are generated with.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Vips {
    /// Service → VIP, in use (not in their grace period).
    pub services: BTreeMap<String, std::net::Ipv4Addr>,
    /// `dnsServer.domain` (`mesh`).
    pub domain: String,
    /// `dnsServer.serviceVipPort` (80).
    pub port: u32,
    /// `networking.outbound.passthrough` of the Mesh (default true).
    pub passthrough: bool,
}

/// The mesh's mTLS at its current stage (see [`super::transition`]): the backend issuing
/// identities, what inbounds accept, whether outbounds speak mTLS, and the trusted roots.
#[derive(Clone)]
pub struct Mtls {
    /// The backend issuing identities.
    pub backend: String,
    /// Inbounds accept plaintext as well.
    pub permissive: bool,
    /// Outbound clusters speak mTLS (off during the first stage of turning mTLS on and the
    /// last ones of turning it off).
    pub outbound: bool,
    /// `mesh_ca:secret:<mesh>`, shared by every proxy: the roots of every trusted backend.
    pub ca_secret: Arc<Resource>,
    pub ca: Arc<Ca>,
    pub lifetime: std::time::Duration,
}

struct Service {
    protocol: String,
    /// Local endpoints.
    addrs: Vec<EndpointAddr>,
    /// Endpoints in other zones, as sidecars dial them.
    remote: Vec<RemoteEndpoint>,
    endpoints: Arc<Resource>,
}

impl MeshView {
    /// Builds the view from every Dataplane of the mesh.
    pub fn build<'a>(
        mesh: &str,
        zone: &str,
        dataplanes: impl IntoIterator<Item = &'a Dataplane>,
    ) -> Self {
        Self::rebuild(mesh, zone, dataplanes, &CrossZone::default(), None)
    }

    /// Builds the view, reusing the ClusterLoadAssignments of `prev` whose endpoints did not
    /// change (so a change re-encodes only the services it touched).
    pub fn rebuild<'a>(
        mesh: &str,
        zone: &str,
        dataplanes: impl IntoIterator<Item = &'a Dataplane>,
        cross: &CrossZone,
        prev: Option<&MeshView>,
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
        // Services served only in other zones have an (empty) local list too.
        for service in cross.remote.keys() {
            endpoints.entry(service.as_str()).or_default();
        }
        let services = endpoints
            .into_iter()
            .map(|(service, mut eps)| {
                eps.sort();
                eps.dedup();
                let protocol = protocols
                    .get(service)
                    .copied()
                    .or_else(|| cross.protocols.get(service).map(String::as_str))
                    .unwrap_or("tcp")
                    .to_string();
                let remote = cross.sidecar_endpoints(service);
                let endpoints = prev
                    .filter(|p| {
                        p.zone == zone
                            && p.cross.local_weight == cross.local_weight
                            && p.cross.locality_aware == cross.locality_aware
                    })
                    .and_then(|p| p.services.get(service))
                    .filter(|old| old.addrs == eps && old.remote == remote)
                    .map(|old| old.endpoints.clone())
                    .unwrap_or_else(|| {
                        Arc::new(if remote.is_empty() {
                            cluster_load_assignment(service, &eps, zone)
                        } else {
                            Resource::new(
                                service,
                                envoy_types::util::pack_any(zoned_load_assignment(
                                    service,
                                    &eps,
                                    zone,
                                    cross.local_weight,
                                    &remote,
                                    cross.locality_aware,
                                )),
                            )
                        })
                    });
                (
                    service.to_string(),
                    Service {
                        protocol,
                        addrs: eps,
                        remote,
                        endpoints,
                    },
                )
            })
            .collect();
        Self {
            mesh: mesh.to_string(),
            epoch: 0,
            zone: zone.to_string(),
            services,
            mtls: None,
            broken: None,
            inbound_protocols: BTreeMap::new(),
            policies: Vec::new(),
            cross: cross.clone(),
            vips: Vips::default(),
            dns_records: Default::default(),
            fingerprint: std::sync::OnceLock::new(),
            metrics: None,
            shared: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The resource memoized under `key`, built by `make` on first use. Only for resources
    /// that depend on nothing but the view and the key.
    pub fn shared(&self, key: &str, make: impl FnOnce() -> Resource) -> Arc<Resource> {
        if let Some(r) = self.lock_shared().get(key) {
            return r.clone();
        }
        // Built outside the lock; a concurrent builder of the same key makes an equal value.
        let r = Arc::new(make());
        self.lock_shared()
            .entry(key.to_string())
            .or_insert(r)
            .clone()
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Resource>>> {
        // Only inserts of finished values happen under the lock: a poisoned lock is consistent.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the Mesh's enabled Prometheus backend.
    pub fn with_metrics(mut self, metrics: Option<kuma_core::metrics::PrometheusConf>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The Mesh's enabled Prometheus backend, if any.
    pub fn metrics(&self) -> Option<&kuma_core::metrics::PrometheusConf> {
        self.metrics.as_ref()
    }

    /// Sets the service VIPs and `dnsServer` settings.
    pub fn with_vips(mut self, vips: Vips) -> Self {
        self.vips = vips;
        self
    }

    pub fn vips(&self) -> &Vips {
        &self.vips
    }

    /// The DNS records (body, Etag) every proxy of the view that reaches every service gets,
    /// built by `make` on first use per IPv6 flag.
    pub fn dns_records(
        &self,
        ipv6: bool,
        make: impl FnOnce() -> (String, String),
    ) -> Arc<(String, String)> {
        self.dns_records[usize::from(ipv6)]
            .get_or_init(|| Arc::new(make()))
            .clone()
    }

    /// The inbound ports the local replicas of `service` listen on (a transparent proxy
    /// gets an outbound on `<VIP>:<port>` for each, besides the service VIP port).
    pub fn service_ports(&self, service: &str) -> BTreeSet<u32> {
        self.services
            .get(service)
            .map(|s| s.addrs.iter().map(|a| a.port).collect())
            .unwrap_or_default()
    }

    /// Sets the build order of the view.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Turns mTLS on for the view.
    pub fn with_mtls(mut self, mtls: Mtls) -> Self {
        self.mtls = Some(mtls);
        self
    }

    /// The MeshTrafficPermissions of the mesh, by name.
    pub fn with_policies(mut self, mut policies: Vec<(String, MeshTrafficPermission)>) -> Self {
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        self.policies = policies;
        self
    }

    /// The local zone (policy KRIs name it).
    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn mtls(&self) -> Option<&Mtls> {
        self.mtls.as_ref()
    }

    /// Marks the view unusable: mTLS is enabled and `reason` says why its CA is missing.
    pub fn with_broken(mut self, reason: String) -> Self {
        self.broken = Some(reason);
        self
    }

    /// Why proxies must keep their last configuration, if they must.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Policies as `(name, policy)` pairs, sorted by name.
    pub fn policies(&self) -> Vec<(&str, &MeshTrafficPermission)> {
        self.policies.iter().map(|(n, p)| (n.as_str(), p)).collect()
    }

    /// Hash of the mesh-wide inputs of generation (mTLS state and policies), computed once.
    pub fn mesh_fingerprint(&self) -> u64 {
        *self.fingerprint.get_or_init(|| self.compute_fingerprint())
    }

    fn compute_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Some(m) = &self.mtls {
            m.backend.hash(&mut h);
            m.permissive.hash(&mut h);
            m.outbound.hash(&mut h);
            m.ca_secret.version.hash(&mut h);
        }
        self.broken.is_some().hash(&mut h);
        self.inbound_protocols.hash(&mut h);
        self.vips.hash(&mut h);
        self.metrics.hash(&mut h);
        for (name, p) in &self.policies {
            name.hash(&mut h);
            format!("{p:?}").hash(&mut h);
        }
        h.finish()
    }

    /// Every service with the protocol its Dataplanes declare.
    pub fn protocols(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .map(|(n, s)| (n.clone(), s.protocol.clone()))
            .collect()
    }

    /// Protocols during changes: what consumers speak to a service (`outbound`) and what its
    /// inbounds take (`inbound`), where they differ from the declared one.
    pub fn with_protocol_stages(
        mut self,
        outbound: HashMap<String, String>,
        inbound: BTreeMap<String, String>,
    ) -> Self {
        for (service, protocol) in outbound {
            if let Some(s) = self.services.get_mut(&service) {
                s.protocol = protocol;
            }
        }
        self.inbound_protocols = inbound;
        self
    }

    /// The protocol an inbound of `service` declaring `declared` is generated with.
    pub fn inbound_protocol<'a>(&'a self, service: &str, declared: &'a str) -> &'a str {
        self.inbound_protocols
            .get(service)
            .map_or(declared, String::as_str)
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

    /// Services whose endpoints or protocol differ between `prev` and this view (including
    /// services that appeared or disappeared).
    pub fn changed_services<'a>(
        &'a self,
        prev: &'a MeshView,
    ) -> std::collections::HashSet<&'a str> {
        let mut changed = std::collections::HashSet::new();
        for (name, s) in &self.services {
            match prev.services.get(name) {
                Some(old)
                    if Arc::ptr_eq(&old.endpoints, &s.endpoints)
                        || (old.endpoints.version == s.endpoints.version
                            && old.protocol == s.protocol) =>
                {
                    if old.protocol != s.protocol {
                        changed.insert(name.as_str());
                    }
                }
                _ => {
                    changed.insert(name.as_str());
                }
            }
        }
        for name in prev.services.keys() {
            if !self.services.contains_key(name) {
                changed.insert(name.as_str());
            }
        }
        changed
    }

    /// Services with local endpoints, in name order, with those endpoints (the zone
    /// ingress serves these to other zones).
    pub fn local_services(&self) -> Vec<(&str, &[EndpointAddr])> {
        let mut out: Vec<(&str, &[EndpointAddr])> = self
            .services
            .iter()
            .filter(|(_, s)| !s.addrs.is_empty())
            .map(|(n, s)| (n.as_str(), s.addrs.as_slice()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// The cross-zone inputs the view was built with.
    pub fn cross_zone(&self) -> &CrossZone {
        &self.cross
    }

    /// The shared ClusterLoadAssignment of a service, if it exists (for change detection).
    pub fn endpoints_version(&self, service: &str) -> Option<&str> {
        self.services
            .get(service)
            .map(|s| s.endpoints.version.as_str())
    }
}
