//! Virtual IPs of services (Kuma's legacy DNS model, `pkg/dns/vips`): one address per
//! `kuma.io/service` per mesh, from `dnsServer.CIDR`, kept in the Config resource
//! `kuma-<mesh>-dns-vips` ([`config_name`]) in Kuma's JSON layout ([`VipTable`]).
//!
//! Pure: [`mesh_services`] says which services a mesh has (from its Dataplanes and the remote
//! ZoneIngresses), [`VipTable::reconcile`] turns the stored table and those services into the
//! next table. The control plane's allocator task does the IO (store, timers).
//!
//! Invariants of a table built by [`VipTable::reconcile`]:
//! - no two entries share an address, and every address is inside the CIDR it was built with;
//! - an entry keeps its address for as long as it is in the table (allocations are
//!   sequential from the first address of the CIDR, lowest free first, as Kuma's IPAM);
//! - an entry whose service disappeared stays, marked `unusedSince`, until the grace period
//!   has passed (beyond Kuma, which frees it at once); meanwhile its address is reserved and
//!   it is not in [`VipTable::services`]; if the service comes back it gets the same address.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::resource::dataplane::SERVICE_TAG;
use crate::resource::{Dataplane, Resource, Spec, ZoneIngress};

/// `Origin` of the outbound of a service entry (Kuma's `metadata.OriginService`).
pub const SERVICE_ORIGIN: &str = "service";

/// The Config holding the VIPs of `mesh`: `kuma-<mesh>-dns-vips`.
pub fn config_name(mesh: &str) -> String {
    format!("kuma-{mesh}-dns-vips")
}

/// The mesh of a Config named by [`config_name`], if the name is one.
pub fn mesh_of_config(name: &str) -> Option<&str> {
    name.strip_prefix("kuma-")?
        .strip_suffix("-dns-vips")
        .filter(|m| !m.is_empty())
}

/// The mesh and the table of a Config holding a VIP table (`None` for any other resource):
/// what readers of the store (the xDS views) call on a stored or watched Config.
pub fn table_of(res: &Resource) -> Option<(&str, Result<VipTable, Error>)> {
    let Spec::Config(c) = &res.spec else {
        return None;
    };
    let mesh = mesh_of_config(&res.meta.name)?;
    Some((mesh, VipTable::parse(&c.config)))
}

/// Problems of a stored table or of the settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The Config's string is not the JSON object of Kuma's layout.
    #[error("VIP table is not valid JSON: {0}")]
    Json(String),
    /// A key is not `<type>:<name>` with type 0 (service), 1 (host) or 2 (fqdn).
    #[error("VIP table: invalid entry key {0:?} (want <0|1|2>:<name>)")]
    Key(String),
    /// An entry without outbounds (Kuma's decoder refuses it too).
    #[error("VIP table: entry {0:?} has no outbound")]
    NoOutbound(String),
    /// `dnsServer.CIDR` is not an IPv4 CIDR.
    #[error("invalid IPv4 CIDR {0:?}")]
    Cidr(String),
}

/// Where an entry comes from (Kuma's `EntryType`): the number is its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// `kuma.io/service` (0).
    Service,
    /// An ExternalService host (1).
    Host,
    /// A VirtualOutbound or gateway FQDN (2).
    Fqdn,
}

/// One key of the table: `"<kind number>:<name>"` on the wire; ordered by kind, then name
/// (Kuma's `HostnameEntry.Less`, also the allocation order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostnameEntry {
    pub kind: EntryKind,
    pub name: String,
}

impl HostnameEntry {
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            kind: EntryKind::Service,
            name: name.into(),
        }
    }
}

impl fmt::Display for HostnameEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self.kind {
            EntryKind::Service => 0,
            EntryKind::Host => 1,
            EntryKind::Fqdn => 2,
        };
        write!(f, "{n}:{}", self.name)
    }
}

impl FromStr for HostnameEntry {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Key(s.to_string());
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "0" => EntryKind::Service,
            "1" => EntryKind::Host,
            "2" => EntryKind::Fqdn,
            _ => return Err(bad()),
        };
        // Go's `%s` stops at white space: a name never holds any.
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Self {
            kind,
            name: name.to_string(),
        })
    }
}

/// One outbound of an entry (Kuma's `OutboundEntry`, Go field names on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundEntry {
    #[serde(rename = "TagSet", default)]
    pub tag_set: BTreeMap<String, String>,
    #[serde(rename = "Origin", default)]
    pub origin: String,
    #[serde(rename = "Port", default)]
    pub port: u32,
}

impl OutboundEntry {
    /// The outbound of a service entry: `{"TagSet": {"kuma.io/service": S}, "Origin": "service", "Port": 0}`.
    pub fn service(name: &str) -> Self {
        Self {
            tag_set: BTreeMap::from([(SERVICE_TAG.to_string(), name.to_string())]),
            origin: SERVICE_ORIGIN.into(),
            port: 0,
        }
    }
}

/// One entry: its address, its outbounds, and (our addition) since when it is unused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualOutbound {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default)]
    pub outbounds: Vec<OutboundEntry>,
    /// When the entry's service was last seen (RFC 3339); absent while in use. Kuma's Go
    /// decoder ignores the field.
    #[serde(
        default,
        rename = "unusedSince",
        skip_serializing_if = "Option::is_none",
        with = "rfc3339_opt"
    )]
    pub unused_since: Option<DateTime<Utc>>,
}

mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.filter(|s| !s.is_empty())
            .map(|s| {
                let t = DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(serde::de::Error::custom)?;
                // RFC 3339 writes years 0000-9999 only: a time whose offset moves it out of
                // them (`0000-01-01T00:00:00+01:00`) could be read but not written back.
                if !(0..=9999).contains(&chrono::Datelike::year(&t)) {
                    return Err(serde::de::Error::custom(format!(
                        "{s:?} is outside the years 0000-9999 in UTC"
                    )));
                }
                Ok(t)
            })
            .transpose()
    }
}

/// The VIP table of one mesh, as stored in Config `kuma-<mesh>-dns-vips`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipTable {
    entries: BTreeMap<HostnameEntry, VirtualOutbound>,
}

/// An IPv4 CIDR (`dnsServer.CIDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    first: u32,
    prefix: u8,
}

impl Cidr {
    /// The first address (the network address: Kuma allocates it too).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first)
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip >= self.first && u64::from(ip - self.first) < self.size()
    }
}

impl Default for Cidr {
    /// Kuma's `dnsServer.CIDR` default, `240.0.0.0/4`.
    fn default() -> Self {
        Self {
            first: u32::from(Ipv4Addr::new(240, 0, 0, 0)),
            prefix: 4,
        }
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Cidr(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Ok(Self {
            first: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.first(), self.prefix)
    }
}

/// What changed between two tables (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new entry with its address.
    Added(HostnameEntry, String),
    /// An entry whose address changed (it was outside a changed CIDR).
    Moved(HostnameEntry, String),
    /// An entry that became unused (its address stays reserved).
    Unused(HostnameEntry),
    /// An unused entry in use again (same address).
    Reused(HostnameEntry),
    /// An entry dropped: its grace period ended, or it was unused and outside the CIDR.
    Freed(HostnameEntry),
}

/// The result of [`VipTable::reconcile`].
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub table: VipTable,
    pub changes: Vec<Change>,
    /// Entries that got no address: the CIDR is full.
    pub exhausted: Vec<HostnameEntry>,
    /// The earliest moment an unused entry's grace period ends (when to look again).
    pub next_expiry: Option<DateTime<Utc>>,
}

impl VipTable {
    /// Parses the Config string (Kuma's default layout; an empty string is an empty table).
    /// Kuma's compact "tag-first" layout (`{"v": ...}`) is not read.
    pub fn parse(s: &str) -> Result<VipTable, Error> {
        if s.trim().is_empty() {
            return Ok(VipTable::default());
        }
        let raw: Map<String, Value> =
            serde_json::from_str(s).map_err(|e| Error::Json(e.to_string()))?;
        let mut entries = BTreeMap::new();
        for (k, v) in raw {
            let key: HostnameEntry = k.parse()?;
            let vo: VirtualOutbound =
                serde_json::from_value(v).map_err(|e| Error::Json(format!("{k}: {e}")))?;
            if vo.outbounds.is_empty() {
                return Err(Error::NoOutbound(k));
            }
            entries.insert(key, vo);
        }
        Ok(VipTable { entries })
    }

    /// The Config string: keys in order, so equal tables give equal strings.
    pub fn to_json(&self) -> String {
        let m: Map<String, Value> = self
            .entries
            .iter()
            .map(|(k, v)| {
                // Invariant: plain strings and numbers always serialize.
                (
                    k.to_string(),
                    serde_json::to_value(v).unwrap_or(Value::Null),
                )
            })
            .collect();
        Value::Object(m).to_string()
    }

    /// Every entry, in use or not.
    pub fn entries(&self) -> &BTreeMap<HostnameEntry, VirtualOutbound> {
        &self.entries
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The service entries in use (not in their grace period): service name → VIP.
    pub fn services(&self) -> BTreeMap<String, Ipv4Addr> {
        self.entries
            .iter()
            .filter(|(k, v)| k.kind == EntryKind::Service && v.unused_since.is_none())
            .filter_map(|(k, v)| Some((k.name.clone(), v.address.parse().ok()?)))
            .collect()
    }

    /// The next table: every service of `services` has an address (its old one if it had
    /// one inside `cidr`, else the lowest free one); entries no longer wanted are kept,
    /// marked unused since `now`, until `grace` has passed since then. Only service entries
    /// are produced; other kinds found in the table age out the same way.
    pub fn reconcile(
        &self,
        services: &BTreeSet<String>,
        cidr: Cidr,
        grace: Duration,
        now: DateTime<Utc>,
    ) -> Reconciled {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let wanted: BTreeSet<HostnameEntry> = services.iter().map(HostnameEntry::service).collect();
        let mut changes = Vec::new();
        let mut next_expiry: Option<DateTime<Utc>> = None;
        // Addresses kept from the old table. Entries in use first, so that on a duplicate
        // address (a hand-edited table) an entry in use keeps it rather than an unused one;
        // then in entry order (the first owner wins).
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        let mut kept: BTreeMap<HostnameEntry, VirtualOutbound> = BTreeMap::new();
        let (in_use, rest): (Vec<_>, Vec<_>) =
            self.entries.iter().partition(|(k, _)| wanted.contains(*k));
        for (k, v) in in_use.into_iter().chain(rest) {
            let ip = v.address.parse::<Ipv4Addr>().ok();
            let usable = ip.filter(|ip| cidr.contains(*ip) && !taken.contains(&u32::from(*ip)));
            if wanted.contains(k) {
                if let Some(ip) = usable {
                    taken.insert(u32::from(ip));
                    if v.unused_since.is_some() {
                        changes.push(Change::Reused(k.clone()));
                    }
                    kept.insert(
                        k.clone(),
                        VirtualOutbound {
                            address: ip.to_string(),
                            outbounds: vec![OutboundEntry::service(&k.name)],
                            unused_since: None,
                        },
                    );
                }
                continue;
            }
            let since = v.unused_since.unwrap_or(now);
            let expires = since.checked_add_signed(grace);
            let expired = expires.is_some_and(|e| e <= now);
            match usable {
                Some(ip) if !expired => {
                    taken.insert(u32::from(ip));
                    if v.unused_since.is_none() {
                        changes.push(Change::Unused(k.clone()));
                    }
                    if let Some(e) = expires {
                        next_expiry = Some(next_expiry.map_or(e, |n| n.min(e)));
                    }
                    kept.insert(
                        k.clone(),
                        VirtualOutbound {
                            unused_since: Some(since),
                            ..v.clone()
                        },
                    );
                }
                _ => changes.push(Change::Freed(k.clone())),
            }
        }
        // New addresses: lowest free from the first address, in entry order (Kuma's IPAM
        // scans forward from the start of the range on every allocation run).
        let mut exhausted = Vec::new();
        let mut cursor: u64 = 0;
        for k in &wanted {
            if kept.contains_key(k) {
                continue;
            }
            let mut found = None;
            while cursor < cidr.size() {
                // Invariant: cursor < size ≤ 2^32, and first + cursor stays in the range.
                let ip = cidr.first.wrapping_add(cursor as u32);
                cursor += 1;
                if !taken.contains(&ip) {
                    found = Some(ip);
                    break;
                }
            }
            let Some(ip) = found else {
                exhausted.push(k.clone());
                continue;
            };
            taken.insert(ip);
            let address = Ipv4Addr::from(ip).to_string();
            let moved = self.entries.contains_key(k);
            changes.push(if moved {
                Change::Moved(k.clone(), address.clone())
            } else {
                Change::Added(k.clone(), address.clone())
            });
            kept.insert(
                k.clone(),
                VirtualOutbound {
                    address,
                    outbounds: vec![OutboundEntry::service(&k.name)],
                    unused_since: None,
                },
            );
        }
        Reconciled {
            table: VipTable { entries: kept },
            changes,
            exhausted,
            next_expiry,
        }
    }
}

/// The services of `mesh` that get a VIP (Kuma's `buildVirtualOutboundMeshView`, service
/// entries): the `kuma.io/service` of every inbound of the mesh's `dataplanes` that is not
/// `Ignored` and not on port 49151, and every service that a *remote* ZoneIngress (`zone`
/// set and not `local_zone`) announces for the mesh. Gateways get none (as in Kuma: a
/// gateway Dataplane has no inbound; builtin gateways are reached through their listeners).
pub fn mesh_services<'a>(
    mesh: &str,
    dataplanes: impl IntoIterator<Item = &'a Dataplane>,
    ingresses: impl IntoIterator<Item = &'a ZoneIngress>,
    local_zone: &str,
) -> BTreeSet<String> {
    /// Kuma's `TCPPortReserved`: an inbound on it is no service endpoint.
    const RESERVED_PORT: u32 = 49151;
    let mut out = BTreeSet::new();
    for dp in dataplanes {
        for inbound in dp.inbounds() {
            if inbound.state.as_deref() == Some("Ignored") || inbound.port == RESERVED_PORT {
                continue;
            }
            if let Some(s) = inbound.service().filter(|s| !s.is_empty()) {
                out.insert(s.to_string());
            }
        }
    }
    for zi in ingresses {
        if !zi.is_remote(local_zone) {
            continue;
        }
        for svc in &zi.available_services {
            if svc.mesh == mesh
                && let Some(s) = svc.service().filter(|s| !s.is_empty())
            {
                out.insert(s.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cidr() -> Cidr {
        let c: Cidr = "240.0.0.0/4".parse().expect("cidr");
        assert_eq!(c, Cidr::default());
        c
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn vip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn table_of_a_stored_config() {
        let r = VipTable::default().reconcile(&set(&["web"]), cidr(), HOUR, Utc::now());
        let res = Resource::new(
            config_name("default"),
            "",
            Spec::Config(crate::resource::ConfigSpec {
                config: r.table.to_json(),
            }),
        );
        let (mesh, t) = table_of(&res).expect("a VIP table");
        assert_eq!(mesh, "default");
        assert_eq!(t.expect("parses"), r.table);
        let other = Resource::new(
            "kuma-cluster-id",
            "",
            Spec::Config(crate::resource::ConfigSpec::default()),
        );
        assert!(table_of(&other).is_none());
    }

    #[test]
    fn names() {
        assert_eq!(config_name("default"), "kuma-default-dns-vips");
        assert_eq!(mesh_of_config("kuma-default-dns-vips"), Some("default"));
        assert_eq!(mesh_of_config("kuma-a-b-dns-vips"), Some("a-b"));
        assert_eq!(mesh_of_config("kuma-cluster-id"), None);
        assert_eq!(mesh_of_config("kuma--dns-vips"), None);
    }

    #[test]
    fn sequential_from_the_first_address_and_stable() {
        let now = Utc::now();
        let r = VipTable::default().reconcile(&set(&["web", "backend"]), cidr(), HOUR, now);
        // Entry order (kind, then name), from 240.0.0.0 as Kuma's IPAM.
        assert_eq!(
            r.table.services(),
            BTreeMap::from([
                ("backend".into(), vip("240.0.0.0")),
                ("web".into(), vip("240.0.0.1"))
            ])
        );
        assert!(r.exhausted.is_empty());
        assert_eq!(r.changes.len(), 2);
        // Recomputed with one more service: the old ones keep their VIPs, the new one
        // takes the next free address even though it sorts first.
        let r2 = r
            .table
            .reconcile(&set(&["web", "backend", "aaa"]), cidr(), HOUR, now);
        assert_eq!(r2.table.services()["backend"], vip("240.0.0.0"));
        assert_eq!(r2.table.services()["web"], vip("240.0.0.1"));
        assert_eq!(r2.table.services()["aaa"], vip("240.0.0.2"));
        assert_eq!(
            r2.changes,
            vec![Change::Added(
                HostnameEntry::service("aaa"),
                "240.0.0.2".into()
            )]
        );
        // Same input: same table, nothing changed (the allocator writes nothing).
        let r3 = r2
            .table
            .reconcile(&set(&["web", "backend", "aaa"]), cidr(), HOUR, now);
        assert_eq!(r3.table, r2.table);
        assert!(r3.changes.is_empty());
        assert_eq!(r3.table.to_json(), r2.table.to_json());
    }

    #[test]
    fn removed_service_is_kept_through_the_grace_period_and_reused_after() {
        let t0 = Utc::now();
        let r = VipTable::default().reconcile(&set(&["a", "b"]), cidr(), HOUR, t0);
        // b disappears: unused, address reserved, not served.
        let t1 = t0 + chrono::Duration::minutes(1);
        let r = r.table.reconcile(&set(&["a"]), cidr(), HOUR, t1);
        assert_eq!(r.changes, vec![Change::Unused(HostnameEntry::service("b"))]);
        assert_eq!(r.table.services().len(), 1);
        let b = &r.table.entries()[&HostnameEntry::service("b")];
        assert_eq!(b.address, "240.0.0.1");
        assert_eq!(b.unused_since, Some(t1));
        // Stored and read back to the nanosecond: the grace period ends when it should.
        assert_eq!(
            VipTable::parse(&r.table.to_json()).expect("parses"),
            r.table
        );
        assert_eq!(r.next_expiry, Some(t1 + chrono::Duration::hours(1)));
        // A new service meanwhile does not take b's address.
        let t2 = t1 + chrono::Duration::minutes(1);
        let r = r.table.reconcile(&set(&["a", "c"]), cidr(), HOUR, t2);
        assert_eq!(r.table.services()["c"], vip("240.0.0.2"));
        // The unused mark keeps its first time across recomputations.
        assert_eq!(
            r.table.entries()[&HostnameEntry::service("b")].unused_since,
            Some(t1)
        );
        // b comes back within the grace period: same VIP.
        let r = r.table.reconcile(&set(&["a", "b", "c"]), cidr(), HOUR, t2);
        assert_eq!(r.table.services()["b"], vip("240.0.0.1"));
        assert_eq!(r.changes, vec![Change::Reused(HostnameEntry::service("b"))]);
        // b goes again, and the grace period passes: its address is free again.
        let r = r.table.reconcile(&set(&["a", "c"]), cidr(), HOUR, t2);
        let t3 = t2 + chrono::Duration::hours(1);
        let r = r.table.reconcile(&set(&["a", "c"]), cidr(), HOUR, t3);
        assert_eq!(r.changes, vec![Change::Freed(HostnameEntry::service("b"))]);
        assert!(!r.table.entries().contains_key(&HostnameEntry::service("b")));
        assert_eq!(r.next_expiry, None);
        let r = r.table.reconcile(&set(&["a", "c", "d"]), cidr(), HOUR, t3);
        assert_eq!(r.table.services()["d"], vip("240.0.0.1"));
    }

    #[test]
    fn cidr_change_reallocates_what_falls_outside() {
        let now = Utc::now();
        let r = VipTable::default().reconcile(&set(&["a", "b"]), cidr(), HOUR, now);
        let r = r.table.reconcile(&set(&["a"]), cidr(), HOUR, now);
        // New CIDR: 240.0.0.0/31 keeps a (240.0.0.0) and b's unused reservation
        // (240.0.0.1); with 10.0.0.0/8 everything moves and the unused entry is dropped.
        let small: Cidr = "240.0.0.0/31".parse().expect("cidr");
        let same = r.table.reconcile(&set(&["a"]), small, HOUR, now);
        assert!(same.changes.is_empty());
        let other: Cidr = "10.1.2.3/8".parse().expect("cidr");
        assert_eq!(other.to_string(), "10.0.0.0/8");
        let moved = r.table.reconcile(&set(&["a", "c"]), other, HOUR, now);
        assert_eq!(
            moved.table.services(),
            BTreeMap::from([("a".into(), vip("10.0.0.0")), ("c".into(), vip("10.0.0.1"))])
        );
        assert!(moved.changes.contains(&Change::Moved(
            HostnameEntry::service("a"),
            "10.0.0.0".into()
        )));
        assert!(
            moved
                .changes
                .contains(&Change::Freed(HostnameEntry::service("b")))
        );
        // A full CIDR: what does not fit is reported, the rest allocated.
        let tiny: Cidr = "192.168.0.1/32".parse().expect("cidr");
        let full = VipTable::default().reconcile(&set(&["x", "y"]), tiny, HOUR, now);
        assert_eq!(full.table.services()["x"], vip("192.168.0.1"));
        assert_eq!(full.exhausted, vec![HostnameEntry::service("y")]);
        // A hand-edited table giving two entries one address: the one in use keeps it.
        let dup = VipTable::parse(
            r#"{"0:a":{"address":"240.0.0.5","outbounds":[{"TagSet":{"kuma.io/service":"a"}}],"unusedSince":"2026-01-01T00:00:00Z"},
                "0:b":{"address":"240.0.0.5","outbounds":[{"TagSet":{"kuma.io/service":"b"}}]}}"#,
        )
        .expect("parses");
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let fixed = dup.reconcile(&set(&["b"]), cidr(), HOUR, t);
        assert_eq!(fixed.table.services()["b"], vip("240.0.0.5"));
        assert!(
            !fixed
                .table
                .entries()
                .contains_key(&HostnameEntry::service("a"))
        );
        assert!("240.0.0.0".parse::<Cidr>().is_err());
        assert!("240.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/0".parse::<Cidr>().is_err());
    }

    #[test]
    fn parse_and_to_json_round_trip_kumas_layout() {
        // Kuma's `pkg/dns/vips/persistence_test.go` shape, plus a host entry and our
        // unusedSince on one entry.
        let doc = r#"{"0:backend":{"address":"240.0.0.1","outbounds":[{"TagSet":{"kuma.io/service":"backend"},"Origin":"service","Port":0}]},
            "0:redis":{"address":"240.0.0.2","outbounds":[{"TagSet":{"kuma.io/service":"redis"}}]},
            "1:host.com":{"address":"240.0.1.4","outbounds":[{"TagSet":{"kuma.io/service":"external-host"},"Origin":"external-service:es","Port":443}]},
            "0:old":{"address":"240.0.0.3","outbounds":[{"TagSet":{"kuma.io/service":"old"},"Origin":"service","Port":0}],"unusedSince":"2026-01-01T00:00:00Z"}}"#;
        let t = VipTable::parse(doc).expect("parses");
        assert_eq!(
            t.services(),
            BTreeMap::from([
                ("backend".into(), vip("240.0.0.1")),
                ("redis".into(), vip("240.0.0.2"))
            ])
        );
        let host = &t.entries()[&"1:host.com".parse::<HostnameEntry>().expect("key")];
        assert_eq!(host.outbounds[0].port, 443);
        let json = t.to_json();
        let v: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            v["0:backend"],
            json!({"address": "240.0.0.1", "outbounds": [{"TagSet": {"kuma.io/service": "backend"}, "Origin": "service", "Port": 0}]})
        );
        assert_eq!(v["0:old"]["unusedSince"], "2026-01-01T00:00:00Z");
        assert_eq!(VipTable::parse(&json).expect("again"), t);
        // A table the allocator builds is exactly Kuma's shape.
        let r = VipTable::default().reconcile(&set(&["backend"]), cidr(), HOUR, Utc::now());
        assert_eq!(
            r.table.to_json(),
            r#"{"0:backend":{"address":"240.0.0.0","outbounds":[{"TagSet":{"kuma.io/service":"backend"},"Origin":"service","Port":0}]}}"#
        );
        assert_eq!(VipTable::parse("").expect("empty"), VipTable::default());
        assert!(matches!(VipTable::parse("[]"), Err(Error::Json(_))));
        assert!(matches!(
            VipTable::parse(r#"{"x":{"address":"1.1.1.1","outbounds":[{}]}}"#),
            Err(Error::Key(_))
        ));
        assert!(matches!(
            VipTable::parse(r#"{"0:a":{"address":"1.1.1.1"}}"#),
            Err(Error::NoOutbound(_))
        ));
    }

    /// A time whose offset takes it out of RFC 3339's years used to be read, then written
    /// back as `-0001-12-31T23:00:00Z`, which no longer parsed: after one allocator write the
    /// whole mesh lost its VIPs (found by the `vip_table` fuzz target). It is refused on read.
    #[test]
    fn unused_since_outside_rfc3339_years_is_refused() {
        for t in ["0000-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"] {
            let doc = format!(
                r#"{{"0:a":{{"address":"240.0.0.1","outbounds":[{{}}],"unusedSince":"{t}"}}}}"#
            );
            assert!(matches!(VipTable::parse(&doc), Err(Error::Json(_))), "{t}");
        }
        for t in ["0000-01-01T00:00:00Z", "9999-12-31T23:30:00+01:00"] {
            let doc = format!(
                r#"{{"0:a":{{"address":"240.0.0.1","outbounds":[{{}}],"unusedSince":"{t}"}}}}"#
            );
            let table = VipTable::parse(&doc).expect(t);
            assert_eq!(VipTable::parse(&table.to_json()).expect("again"), table);
        }
    }

    #[test]
    fn services_of_a_mesh_include_remote_ingress_services() {
        let dp = |v: Value| -> Dataplane { serde_json::from_value(v).expect("dp") };
        let dps = [
            dp(json!({"networking": {"address": "10.0.0.1", "inbound": [
                {"port": 80, "tags": {"kuma.io/service": "web"}},
                {"port": 81, "state": "Ignored", "tags": {"kuma.io/service": "ignored"}},
                {"port": 49151, "tags": {"kuma.io/service": "reserved"}}]}})),
            dp(
                json!({"networking": {"address": "10.0.0.2", "gateway": {"tags": {"kuma.io/service": "gw"}}}}),
            ),
        ];
        let zi = |zone: &str, mesh: &str, svc: &str| -> ZoneIngress {
            serde_json::from_value(json!({"zone": zone, "availableServices": [
                {"mesh": mesh, "instances": 1, "tags": {"kuma.io/service": svc}}]}))
            .expect("zi")
        };
        let zis = [
            zi("zone-2", "default", "remote"),
            zi("zone-2", "other", "other-mesh"),
            zi("zone-1", "default", "local-ingress"),
            zi("", "default", "no-zone"),
        ];
        assert_eq!(
            mesh_services("default", &dps, &zis, "zone-1"),
            set(&["remote", "web"])
        );
    }
}
