//! The simulated mesh: `services` services × `replicas` replicas, each proxy with one HTTP
//! inbound and outbounds to the `fanout` services that follow its own (wrapping around), so
//! every service is consumed by exactly `fanout × replicas` proxies.
//!
//! Addresses are distinct loopback IPs (`127.10.0.0` upwards) with distinct ports; nothing
//! binds them: only the control plane sees them, as endpoints of other proxies' clusters.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Inbound ports start here (plus the replica number).
const INBOUND_PORT_BASE: u32 = 10_000;
/// Outbound listener ports start here (plus the outbound's position).
const OUTBOUND_PORT_BASE: u32 = 20_000;
/// Extra replicas (endpoint changes) take addresses after this many regular ones.
const EXTRA_OFFSET: usize = 1 << 20;

/// Shape of the simulated mesh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Topology {
    pub mesh: String,
    pub services: usize,
    pub replicas: usize,
    pub fanout: usize,
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
        })
    }

    /// Number of regular proxies.
    pub fn proxies(&self) -> usize {
        self.services * self.replicas
    }

    /// Name of service `s`.
    pub fn service_name(s: usize) -> String {
        format!("svc-{s}")
    }

    /// Services proxy of service `s` has outbounds to.
    pub fn outbounds_of(&self, s: usize) -> Vec<usize> {
        (1..=self.fanout).map(|k| (s + k) % self.services).collect()
    }

    /// Services whose proxies consume service `t`.
    pub fn consumers_of(&self, t: usize) -> Vec<usize> {
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
        self.build(
            index,
            format!("svc-{service}-{replica}"),
            service,
            index,
            INBOUND_PORT_BASE + replica as u32,
        )
    }

    /// The `n`-th extra replica of service `service` (fleet index `index`).
    pub fn extra(&self, index: usize, service: usize, n: usize) -> Member {
        self.build(
            index,
            format!("svc-{service}-extra-{n}"),
            service,
            EXTRA_OFFSET + n,
            INBOUND_PORT_BASE + 5_000 + (n % 1_000) as u32,
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
        let dataplane = json!({
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
        Member {
            index,
            name,
            service,
            endpoint: format!("{ip}:{port}"),
            dataplane,
        }
    }

    /// Endpoints of service `t` with its regular replicas only.
    pub fn endpoints_of(&self, t: usize) -> BTreeSet<String> {
        self.replicas_of(t)
            .map(|i| self.member(i).endpoint)
            .collect()
    }

    /// The complete configuration a regular proxy of service `s` must reach: one listener per
    /// inbound and outbound, and each outbound cluster with exactly its service's endpoints.
    pub fn expected(&self, s: usize) -> Expected {
        Expected {
            listeners: 1 + self.fanout,
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
}
