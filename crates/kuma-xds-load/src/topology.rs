//! The simulated mesh: `services` services × `replicas` replicas, each proxy with one HTTP
//! inbound and outbounds to the `fanout` services that follow its own (wrapping around), so
//! every service is consumed by exactly `fanout × replicas` proxies.
//!
//! Addresses are distinct loopback IPs (`127.10.0.0` upwards) with distinct ports; nothing
//! binds them: only the control plane sees them, as endpoints of other proxies' clusters.
//!
//! Transparent proxying ([`Topology::transparent`]): every Dataplane has
//! `networking.transparentProxying` (redirect ports [`REDIRECT_PORT_INBOUND`] /
//! [`REDIRECT_PORT_OUTBOUND`], IPv4) and no explicit outbound; its node metadata carries a
//! work dir and a DNS port, as kuma-dp's with its DNS on. Such a proxy consumes every service
//! of the mesh through its VIP, so `fanout` is ignored: each proxy has an outbound to every
//! service (its own included) and each service is consumed by every proxy. Every replica
//! listens on the same inbound port ([`TP_INBOUND_PORT`], as replicas of one workload do),
//! so each service has two VIP listeners (`<VIP>:80` and `<VIP>:<inbound port>`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Inbound ports start here (plus the replica number).
const INBOUND_PORT_BASE: u32 = 10_000;
/// Outbound listener ports start here (plus the outbound's position).
const OUTBOUND_PORT_BASE: u32 = 20_000;
/// Extra replicas (endpoint changes) take addresses after this many regular ones.
const EXTRA_OFFSET: usize = 1 << 20;
/// Inbound port of every replica of a transparent-proxied mesh.
pub const TP_INBOUND_PORT: u32 = INBOUND_PORT_BASE;
/// `networking.transparentProxying.redirectPortInbound` (Kuma's default).
pub const REDIRECT_PORT_INBOUND: u32 = 15006;
/// `networking.transparentProxying.redirectPortOutbound` (Kuma's default).
pub const REDIRECT_PORT_OUTBOUND: u32 = 15001;
/// `dataplane.dns.port` in the node metadata of a transparent proxy (kuma-dp's default).
pub const DNS_PORT: u32 = 15053;
/// `dnsServer.serviceVipPort` of the CP (Kuma's default).
pub const SERVICE_VIP_PORT: u32 = 80;
/// The `kuma:envoy:admin` listener every simulated proxy gets (its address is not the
/// admin's 127.0.0.1, and its node metadata names an admin port, as kuma-dp's does).
pub const ADMIN_LISTENERS: usize = 1;
/// Listeners of a transparent proxy besides its inbound and the VIP listeners: the outbound
/// and inbound capture listeners (IPv4) and the DNS dynamic-config listener.
pub const TP_FIXED_LISTENERS: [&str; 3] = [
    "outbound:passthrough:ipv4",
    "inbound:passthrough:ipv4",
    "_kuma:dynamicconfig",
];

/// Shape of the simulated mesh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Topology {
    pub mesh: String,
    pub services: usize,
    pub replicas: usize,
    pub fanout: usize,
    /// Transparent-proxied Dataplanes without explicit outbounds (see the module doc).
    pub transparent: bool,
}

/// One simulated proxy (a regular replica or an extra one added by a scenario).
#[derive(Debug, Clone)]
pub struct Member {
    /// Index in the fleet.
    pub index: usize,
    /// Dataplane name.
    pub name: String,
    /// Index of its service.
    pub service: usize,
    /// Its inbound endpoint as other proxies see it (`ip:port`).
    pub endpoint: String,
    /// The Dataplane resource (JSON, as in node metadata and the REST API).
    pub dataplane: Value,
    /// Node metadata besides the Dataplane (`workdir`, `dataplane.dns.port` of a
    /// transparent proxy), as kuma-dp's bootstrap puts it.
    pub metadata: Vec<(String, String)>,
}

impl Topology {
    /// Validates the shape.
    pub fn new(
        mesh: &str,
        services: usize,
        replicas: usize,
        fanout: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(services >= 1, "--services must be at least 1");
        anyhow::ensure!(replicas >= 1, "--replicas must be at least 1");
        anyhow::ensure!(
            fanout < services || (services == 1 && fanout == 0),
            "--fanout ({fanout}) must be below --services ({services})"
        );
        anyhow::ensure!(
            services * replicas < EXTRA_OFFSET,
            "too many proxies for the address plan"
        );
        Ok(Self {
            mesh: mesh.into(),
            services,
            replicas,
            fanout,
            transparent: false,
        })
    }

    /// The same shape with transparent-proxied Dataplanes (see the module doc).
    pub fn with_transparent(mut self, transparent: bool) -> Self {
        self.transparent = transparent;
        self
    }

    /// Number of regular proxies.
    pub fn proxies(&self) -> usize {
        self.services * self.replicas
    }

    /// Name of service `s`.
    pub fn service_name(s: usize) -> String {
        format!("svc-{s}")
    }

    /// Services proxy of service `s` has outbounds to (all of them with transparent
    /// proxying).
    pub fn outbounds_of(&self, s: usize) -> Vec<usize> {
        if self.transparent {
            return (0..self.services).collect();
        }
        (1..=self.fanout).map(|k| (s + k) % self.services).collect()
    }

    /// Services whose proxies consume service `t` (all of them with transparent proxying).
    pub fn consumers_of(&self, t: usize) -> Vec<usize> {
        if self.transparent {
            return (0..self.services).collect();
        }
        (1..=self.fanout)
            .map(|k| (t + self.services - k) % self.services)
            .collect()
    }

    /// Indices of the regular proxies of service `s`.
    pub fn replicas_of(&self, s: usize) -> std::ops::Range<usize> {
        s * self.replicas..(s + 1) * self.replicas
    }

    /// Regular proxy `index` (`0..proxies()`).
    pub fn member(&self, index: usize) -> Member {
        let service = index / self.replicas;
        let replica = index % self.replicas;
        let port = if self.transparent {
            TP_INBOUND_PORT
        } else {
            INBOUND_PORT_BASE + replica as u32
        };
        self.build(
            index,
            format!("svc-{service}-{replica}"),
            service,
            index,
            port,
        )
    }

    /// The `n`-th extra replica of service `service` (fleet index `index`); `service` may
    /// be beyond `services` (a new service).
    pub fn extra(&self, index: usize, service: usize, n: usize) -> Member {
        let port = if self.transparent {
            TP_INBOUND_PORT
        } else {
            INBOUND_PORT_BASE + 5_000 + (n % 1_000) as u32
        };
        self.build(
            index,
            format!("svc-{service}-extra-{n}"),
            service,
            EXTRA_OFFSET + n,
            port,
        )
    }

    fn build(&self, index: usize, name: String, service: usize, slot: usize, port: u32) -> Member {
        let ip = address(slot);
        let svc = Self::service_name(service);
        let outbound: Vec<Value> = self
            .outbounds_of(service)
            .into_iter()
            .enumerate()
            .map(|(k, t)| {
                json!({"port": OUTBOUND_PORT_BASE + k as u32,
                       "tags": {"kuma.io/service": Self::service_name(t)}})
            })
            .collect();
        let mut dataplane = json!({
            "type": "Dataplane",
            "mesh": self.mesh,
            "name": name,
            "networking": {
                "address": ip.to_string(),
                "inbound": [{
                    "port": port,
                    "servicePort": 8080,
                    "serviceAddress": "127.0.0.1",
                    "tags": {"kuma.io/service": svc, "kuma.io/protocol": "http"}
                }],
                "outbound": outbound
            }
        });
        let mut metadata = Vec::new();
        if self.transparent {
            let net = &mut dataplane["networking"];
            if let Some(net) = net.as_object_mut() {
                net.remove("outbound");
            }
            net["transparentProxying"] = json!({
                "redirectPortInbound": REDIRECT_PORT_INBOUND,
                "redirectPortOutbound": REDIRECT_PORT_OUTBOUND,
                "ipFamilyMode": "IPv4"
            });
            // Never created: the CP only puts it in the DNS listener's pipe address.
            metadata.push(("workdir".into(), format!("/tmp/kuma-xds-load/{name}")));
            metadata.push(("dataplane.dns.port".into(), DNS_PORT.to_string()));
        }
        Member {
            index,
            name,
            service,
            endpoint: format!("{ip}:{port}"),
            dataplane,
            metadata,
        }
    }

    /// Endpoints of service `t` with its regular replicas only.
    pub fn endpoints_of(&self, t: usize) -> BTreeSet<String> {
        self.replicas_of(t)
            .map(|i| self.member(i).endpoint)
            .collect()
    }

    /// Listeners of a complete transparent proxy with `services` services in the mesh: its
    /// inbound, two VIP listeners per service, the fixed ones ([`TP_FIXED_LISTENERS`]).
    pub fn tp_listeners(services: usize) -> usize {
        1 + 2 * services + TP_FIXED_LISTENERS.len() + ADMIN_LISTENERS
    }

    /// The complete configuration a regular proxy of service `s` must reach: one listener per
    /// inbound and outbound, and each outbound cluster with exactly its service's endpoints
    /// (with transparent proxying: [`Topology::tp_listeners`], and a cluster per service).
    pub fn expected(&self, s: usize) -> Expected {
        let listeners = if self.transparent {
            Self::tp_listeners(self.services)
        } else {
            1 + self.fanout + ADMIN_LISTENERS
        };
        Expected {
            listeners,
            clusters: self
                .outbounds_of(s)
                .into_iter()
                .map(|t| (Self::service_name(t), self.endpoints_of(t)))
                .collect(),
        }
    }
}

/// What a proxy's complete configuration holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Number of listeners.
    pub listeners: usize,
    /// EDS cluster → exact endpoint set.
    pub clusters: std::collections::BTreeMap<String, BTreeSet<String>>,
}

/// A distinct loopback address for slot `n`: `127.10.0.0` + n.
fn address(n: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(127, 10, 0, 0));
    Ipv4Addr::from(base + n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_and_consumers_agree() {
        let t = Topology::new("default", 7, 3, 4).unwrap();
        for s in 0..7 {
            for o in t.outbounds_of(s) {
                assert!(t.consumers_of(o).contains(&s));
            }
            assert_eq!(t.consumers_of(s).len(), 4);
        }
        let names: BTreeSet<String> = (0..t.proxies()).map(|i| t.member(i).endpoint).collect();
        assert_eq!(names.len(), 21, "endpoints are distinct");
        assert_eq!(t.expected(6).clusters.len(), 4);
        assert_eq!(t.member(4).name, "svc-1-1");
        assert_eq!(address(256).to_string(), "127.10.1.0");
        assert!(Topology::new("default", 3, 1, 3).is_err());
    }

    #[test]
    fn transparent_proxies_consume_every_service_through_vips() {
        let t = Topology::new("default", 4, 2, 1)
            .unwrap()
            .with_transparent(true);
        assert_eq!(t.outbounds_of(2), vec![0, 1, 2, 3]);
        assert_eq!(t.consumers_of(1), vec![0, 1, 2, 3]);
        let m = t.member(3);
        let net = &m.dataplane["networking"];
        assert!(net.get("outbound").is_none(), "{net}");
        assert_eq!(net["transparentProxying"]["redirectPortOutbound"], 15001);
        assert_eq!(net["inbound"][0]["port"], TP_INBOUND_PORT);
        assert_eq!(m.endpoint, format!("127.10.0.3:{TP_INBOUND_PORT}"));
        let keys: Vec<&str> = m.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["workdir", "dataplane.dns.port"]);
        // A new service's replica: same port, an address of its own.
        let x = t.extra(8, 4, 0);
        assert_eq!(
            x.dataplane["networking"]["inbound"][0]["tags"]["kuma.io/service"],
            "svc-4"
        );
        assert_ne!(x.endpoint, m.endpoint);
        let want = t.expected(0);
        assert_eq!(want.listeners, 1 + 2 * 4 + 3 + 1);
        assert_eq!(want.clusters.len(), 4);
        assert_eq!(want.clusters["svc-0"].len(), 2, "its own service too");
        let plain = Topology::new("default", 4, 2, 1).unwrap();
        assert!(plain.member(0).metadata.is_empty());
        assert!(plain.member(0).dataplane["networking"]["outbound"].is_array());
    }
}
