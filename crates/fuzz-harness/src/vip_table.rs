//! Target `vip_table`: the string of a Config `kuma-<mesh>-dns-vips` (stored by this control
//! plane, or synced from global over KDS), fed to `kuma_core::vips::VipTable::parse`, then to
//! the allocator's `VipTable::reconcile`.
//!
//! Invariants:
//! - round trip: a table that parses is written (`to_json`) into a string that parses into
//!   an equal table, and writing that again gives the same string;
//! - every address `services()` returns is one of the table's;
//! - `reconcile` (with the table's own services minus the first, in a small CIDR picked by
//!   the input's length) gives a table with distinct addresses, all inside the CIDR, every
//!   wanted service either served or reported exhausted; that table round-trips too, and
//!   reconciling it again with the same inputs changes nothing (the allocator writes only
//!   on change).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kuma_core::vips::{Cidr, EntryKind, VipTable};

const CIDRS: [&str; 3] = ["240.0.0.0/30", "240.0.0.0/29", "240.0.0.0/4"];
const GRACE: Duration = Duration::from_secs(3600);

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = VipTable::parse(text) else {
        return;
    };
    round_trip(&table);
    for (name, ip) in table.services() {
        let entry = table
            .entries()
            .iter()
            .find(|(k, _)| k.kind == EntryKind::Service && k.name == name)
            .expect("a served service is an entry");
        assert_eq!(entry.1.address, ip.to_string());
    }

    let cidr: Cidr = CIDRS[data.len() % CIDRS.len()].parse().expect("a CIDR");
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .expect("a time")
        .with_timezone(&Utc);
    let wanted: BTreeSet<String> = table
        .entries()
        .keys()
        .filter(|k| k.kind == EntryKind::Service)
        .skip(1)
        .map(|k| k.name.clone())
        .collect();
    let r = table.reconcile(&wanted, cidr, GRACE, now);
    let mut seen = BTreeSet::new();
    for (key, vo) in r.table.entries() {
        let ip: std::net::Ipv4Addr = vo
            .address
            .parse()
            .unwrap_or_else(|_| panic!("{key}: address {:?}", vo.address));
        assert!(cidr.contains(ip), "{key}: {ip} outside {cidr}");
        assert!(seen.insert(ip), "{ip} given twice");
    }
    let served = r.table.services();
    for s in &wanted {
        let exhausted = r.exhausted.iter().any(|e| &e.name == s);
        assert!(
            served.contains_key(s) != exhausted,
            "{s}: served {} exhausted {exhausted}",
            served.contains_key(s)
        );
    }
    round_trip(&r.table);
    let again = r.table.reconcile(&wanted, cidr, GRACE, now);
    assert_eq!(again.table, r.table, "reconcile is not stable");
    assert!(again.changes.is_empty(), "{:?}", again.changes);
}

fn round_trip(table: &VipTable) {
    let json = table.to_json();
    let again = VipTable::parse(&json)
        .unwrap_or_else(|e| panic!("the written table is refused: {e}\n{json}"));
    assert_eq!(&again, table, "round trip through {json}");
    assert_eq!(again.to_json(), json);
}
