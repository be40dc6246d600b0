//! Target `dns_table`: a `/dns` body (what Envoy's dynamic-config listener serves kuma-dp,
//! from the control plane), fed to `kuma_dp::dns::table::Table::from_json`.
//!
//! Invariants of an accepted body:
//! - every record with a name holds every address of the body that parses, once, in its
//!   family, under the normalised name (lower case, no trailing dot); nothing else is there;
//! - the domain is normalised and not empty;
//! - round trip: the table written back in the wire shape (one record per name) parses into
//!   an equal table;
//! - `answer::respond` answers an `A` query for a listed name (one a client can ask: plain
//!   labels) with exactly the table's IPv4 addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use kuma_dp::dns::answer::{Reply, respond};
use kuma_dp::dns::table::{self, Table};
use serde::Deserialize;
use serde_json::{Value, json};

/// Names checked against `respond` per input (bounds the time of one run).
const MAX_ASKED: usize = 16;

pub fn run(data: &[u8]) {
    let Ok(table) = Table::from_json(data) else {
        return;
    };
    // Accepted, so its records read as the wire shape (other fields, even ones that are
    // not valid JSON text such as bad UTF-8, are skipped unread by both).
    let body: Body = serde_json::from_slice(data).expect("an accepted body has records");
    let mut want: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for record in body.records {
        let name = table::normalize(&record.name);
        if name.is_empty() {
            continue;
        }
        let ips = want.entry(name).or_default();
        for ip in record.ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    assert_eq!(table.len(), want.len(), "one entry per normalised name");
    for (name, ips) in &want {
        let entry = table
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing"));
        let v4: Vec<IpAddr> = entry.v4.iter().map(|ip| IpAddr::V4(*ip)).collect();
        let v6: Vec<IpAddr> = entry.v6.iter().map(|ip| IpAddr::V6(*ip)).collect();
        let want_v4: Vec<IpAddr> = ips.iter().filter(|ip| ip.is_ipv4()).copied().collect();
        let want_v6: Vec<IpAddr> = ips.iter().filter(|ip| ip.is_ipv6()).copied().collect();
        assert_eq!(v4, want_v4, "{name}");
        assert_eq!(v6, want_v6, "{name}");
        // The same entry under any case and with a trailing dot.
        assert_eq!(
            table.get(&format!("{}.", name.to_ascii_uppercase())),
            Some(entry)
        );
    }
    let domain = table.domain();
    assert!(!domain.is_empty());
    assert_eq!(table::normalize(domain), domain);

    // Round trip through the wire shape.
    let records: Vec<Value> = want
        .iter()
        .map(|(name, ips)| {
            let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            json!({"name": name, "ips": ips})
        })
        .collect();
    let again = json!({"records": records, "ttl": table.ttl(), "domain": domain}).to_string();
    let reparsed = Table::from_json(again.as_bytes())
        .unwrap_or_else(|e| panic!("the table written back is refused: {e}\n{again}"));
    assert_eq!(reparsed, table, "round trip through {again}");

    // What a client asking for a listed name gets.
    for (name, _) in want.iter().filter(|(n, _)| askable(n)).take(MAX_ASKED) {
        let Ok(qname) = Name::from_ascii(name) else {
            continue;
        };
        let mut query = Message::query();
        query.metadata.id = 7;
        query.add_query(Query::query(qname, RecordType::A));
        let Reply::Local(reply) = respond(Some(&table), &query) else {
            panic!("{name} is listed but not answered locally");
        };
        let got: Vec<_> = reply
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0,
                other => panic!("{name}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, table.get(name).expect("listed").v4, "{name} A answers");
    }
}

/// The records of a `/dns` body (Kuma's `DNSProxyConfig`), read independently of the product.
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    name: String,
    #[serde(default)]
    ips: Vec<String>,
}

/// A name a resolver sends as is: labels of letters, digits, `_` and inner `-`, within the
/// DNS length limits.
fn askable(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}
