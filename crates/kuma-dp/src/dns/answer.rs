//! What to answer: a pure function of the current [`Table`] and one query.
//!
//! [`respond`] decides between a local answer and forwarding:
//! - a name in the table: `A` → its IPv4 addresses, `AAAA` → its IPv6 addresses, any other type
//!   → no answers (NODATA); authoritative, with the table's TTL;
//! - a name under the mesh domain that is not in the table → NXDOMAIN (the domain itself →
//!   NODATA); before the first table arrived → SERVFAIL, so clients retry rather than cache a
//!   negative answer;
//! - anything else (other names, other classes, other opcodes) → forwarded as is;
//! - a response (QR set) → nothing at all.
//!
//! The helpers below build the other replies the server sends (SERVFAIL, FORMERR) and fit a
//! reply into a UDP client's size limit.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::table::{self, Table};

/// The EDNS payload size this server advertises (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The decision for one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answer with this message.
    Local(Message),
    /// Send the query to the upstream resolvers and return their answer.
    Forward,
    /// Send nothing: the message is a response, not a query.
    Ignore,
}

/// Decides how to answer `query` from `table` (`None`: no table received yet).
pub fn respond(table: Option<&Table>, query: &Message) -> Reply {
    if query.metadata.message_type != MessageType::Query {
        // Never answer a response (as `formerr_raw`, and CoreDNS): two servers answering
        // each other's replies, or a spoofed source, would loop.
        return Reply::Ignore;
    }
    if query.metadata.op_code != OpCode::Query {
        return Reply::Forward;
    }
    // Like nearly every server, only the first question is answered.
    let Some(question) = query.queries.first() else {
        return Reply::Local(error(query, ResponseCode::FormErr));
    };
    if question.query_class() != DNSClass::IN {
        return Reply::Forward;
    }
    let name = table::normalize(&question.name().to_ascii());
    let Some(table) = table else {
        return if table::in_domain(&name, table::DEFAULT_DOMAIN) {
            Reply::Local(error(query, ResponseCode::ServFail))
        } else {
            Reply::Forward
        };
    };
    if let Some(entry) = table.get(&name) {
        let owner = question.name().clone();
        let ttl = table.ttl();
        let answers: Vec<Record> = match question.query_type() {
            RecordType::A => entry
                .v4
                .iter()
                .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(*ip))))
                .collect(),
            RecordType::AAAA => entry
                .v6
                .iter()
                .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*ip))))
                .collect(),
            _ => Vec::new(),
        };
        let mut reply = base(query, ResponseCode::NoError);
        reply.metadata.authoritative = true;
        reply.answers = answers;
        return Reply::Local(reply);
    }
    if table::in_domain(&name, table.domain()) {
        let code = if name == table.domain() {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        let mut reply = base(query, code);
        reply.metadata.authoritative = true;
        return Reply::Local(reply);
    }
    Reply::Forward
}

/// A reply to `query` with `code` and no records (SERVFAIL when no upstream answered, ...).
pub fn error(query: &Message, code: ResponseCode) -> Message {
    base(query, code)
}

/// A reply header (id, opcode, RD copied; RA set: this server recurses through its upstreams)
/// with the question and, when the query had EDNS, our EDNS.
fn base(query: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    if let Some(q) = query.queries.first() {
        reply.add_query(q.clone());
    }
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// FORMERR for bytes that are not a DNS message but carry a header (`None`: too short to
/// answer at all). Built by hand: the id and opcode are all we can trust.
pub fn formerr_raw(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < 12 || raw[2] & 0x80 != 0 {
        // Too short, or a response: never answer a response (no reflection loops).
        return None;
    }
    let opcode_rd = raw[2] & 0x79; // opcode and RD bits of the query
    let mut out = vec![0u8; 12];
    out[0] = raw[0];
    out[1] = raw[1];
    out[2] = 0x80 | opcode_rd;
    out[3] = 0x80 | 0x01; // RA, FORMERR
    Some(out)
}

/// The largest reply a UDP client takes: 512 bytes, or its EDNS payload size (at most ours).
pub fn udp_limit(query: &Message) -> usize {
    usize::from(query.max_payload().min(EDNS_PAYLOAD))
}

/// `wire` (a complete reply) if it fits in `limit` bytes, else the same reply emptied of its
/// records, with its first question only and the TC bit set, so the client asks again over
/// TCP. `None` when `wire` does not fit and does not parse, or even emptied does not fit
/// (an upstream's outsized EDNS options): what is returned always fits.
pub fn fit(wire: Vec<u8>, limit: usize) -> Option<Vec<u8>> {
    if wire.len() <= limit {
        return Some(wire);
    }
    let reply = Message::from_vec(&wire).ok()?;
    let mut cut = Message::new(
        reply.metadata.id,
        reply.metadata.message_type,
        reply.metadata.op_code,
    );
    cut.metadata = reply.metadata;
    cut.metadata.truncation = true;
    // Clients ask one question; an upstream echoing many must not overflow the limit.
    cut.add_queries(reply.queries.first().cloned());
    if let Some(edns) = reply.edns.clone() {
        cut.set_edns(edns);
    }
    cut.to_vec().ok().filter(|cut| cut.len() <= limit)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    const BODY: &str = r#"{"records":[
        {"name":"backend.mesh","ips":["240.0.0.1","::ffff:240.0.0.1"]},
        {"name":"v4only.mesh","ips":["240.0.0.2"]},
        {"name":"a_b.mesh","ips":["240.0.0.3"]},
        {"name":"a.b.mesh","ips":["240.0.0.3"]}
    ],"ttl":30}"#;

    fn table() -> Table {
        Table::from_json(BODY.as_bytes()).unwrap()
    }

    fn query(name: &str, rtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m
    }

    fn local(reply: Reply) -> Message {
        match reply {
            Reply::Local(m) => {
                // Whatever we answer must encode and decode again.
                Message::from_vec(&m.to_vec().unwrap()).unwrap()
            }
            other => panic!("expected a local answer, got {other:?}"),
        }
    }

    fn ips(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn a_and_aaaa_from_the_table() {
        let t = table();
        let m = local(respond(Some(&t), &query("backend.mesh.", RecordType::A)));
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(ips(&m), vec!["240.0.0.1"]);
        assert_eq!(m.answers[0].ttl, 30);
        assert_eq!(m.answers[0].record_type(), RecordType::A);
        assert_eq!(m.queries.len(), 1);

        let m = local(respond(Some(&t), &query("backend.mesh.", RecordType::AAAA)));
        assert_eq!(m.answers.len(), 1);
        let RData::AAAA(AAAA(v6)) = &m.answers[0].data else {
            panic!("expected AAAA")
        };
        assert_eq!(v6, &Ipv4Addr::new(240, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(v6, &Ipv6Addr::from_str("::ffff:f000:1").unwrap());
    }

    #[test]
    fn nodata_when_the_family_or_type_is_absent() {
        let t = table();
        for (name, rtype) in [
            ("v4only.mesh.", RecordType::AAAA),
            ("backend.mesh.", RecordType::MX),
            ("backend.mesh.", RecordType::TXT),
            ("mesh.", RecordType::A),
        ] {
            let m = local(respond(Some(&t), &query(name, rtype)));
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {rtype}"
            );
            assert!(m.metadata.authoritative);
            assert!(m.answers.is_empty(), "{name} {rtype}");
        }
    }

    #[test]
    fn nxdomain_under_the_domain_and_forward_elsewhere() {
        let t = table();
        let m = local(respond(Some(&t), &query("nothere.mesh.", RecordType::A)));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        let m = local(respond(
            Some(&t),
            &query("deep.backend.mesh.", RecordType::A),
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        for name in ["example.com.", "mesh.example.com.", "notmesh.", "com."] {
            assert_eq!(
                respond(Some(&t), &query(name, RecordType::A)),
                Reply::Forward,
                "{name}"
            );
        }
        // Other classes (CHAOS `version.bind`) are not ours either.
        let mut q = query("backend.mesh.", RecordType::TXT);
        q.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(respond(Some(&t), &q), Reply::Forward);
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter() {
        let t = table();
        for name in ["BACKEND.MESH.", "Backend.Mesh", "backend.mesh"] {
            let m = local(respond(Some(&t), &query(name, RecordType::A)));
            assert_eq!(ips(&m), vec!["240.0.0.1"], "{name}");
            // The question is echoed as asked (0x20 randomisation keeps working).
            assert_eq!(
                m.queries[0].name().to_ascii().trim_end_matches('.'),
                name.trim_end_matches('.')
            );
            assert!(
                m.answers[0]
                    .name
                    .to_ascii()
                    .eq_ignore_ascii_case("backend.mesh.")
            );
        }
        let m = local(respond(Some(&t), &query("A.B.mesh.", RecordType::A)));
        assert_eq!(ips(&m), vec!["240.0.0.3"]);
        let m = local(respond(Some(&t), &query("a_b.mesh.", RecordType::A)));
        assert_eq!(ips(&m), vec!["240.0.0.3"]);
    }

    #[test]
    fn a_new_table_replaces_the_old_one() {
        let old = table();
        let new = Table::from_json(
            br#"{"records":[{"name":"fresh.mesh","ips":["240.0.0.7"]}],"ttl":10}"#,
        )
        .unwrap();
        let q = query("fresh.mesh.", RecordType::A);
        assert_eq!(
            local(respond(Some(&old), &q)).metadata.response_code,
            ResponseCode::NXDomain
        );
        let m = local(respond(Some(&new), &q));
        assert_eq!(ips(&m), vec!["240.0.0.7"]);
        assert_eq!(m.answers[0].ttl, 10);
        let m = local(respond(Some(&new), &query("backend.mesh.", RecordType::A)));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn before_the_first_table_mesh_names_fail_and_others_forward() {
        let m = local(respond(None, &query("backend.mesh.", RecordType::A)));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(
            respond(None, &query("example.com.", RecordType::A)),
            Reply::Forward
        );
    }

    #[test]
    fn malformed_queries() {
        let t = table();
        // No question.
        let mut q = Message::query();
        q.metadata.id = 7;
        let m = local(respond(Some(&t), &q));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 7);
        // A response is not a query, and never answered (found by the `dns_query` fuzz
        // target: it got FORMERR, a reflection loop between two servers).
        let mut q = query("backend.mesh.", RecordType::A);
        q.metadata.message_type = MessageType::Response;
        assert_eq!(respond(Some(&t), &q), Reply::Ignore);
        assert_eq!(respond(None, &q), Reply::Ignore);
        // Raw garbage with a query header.
        let raw = [0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 2];
        let m = Message::from_vec(&formerr_raw(&raw).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.metadata.recursion_desired);
        assert!(formerr_raw(&raw[..5]).is_none());
        let mut response = raw;
        response[2] |= 0x80;
        assert!(formerr_raw(&response).is_none());
    }

    #[test]
    fn edns_and_truncation() {
        let mut q = query("backend.mesh.", RecordType::A);
        assert_eq!(udp_limit(&q), 512);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        q.set_edns(edns);
        assert_eq!(udp_limit(&q), usize::from(EDNS_PAYLOAD));
        let m = local(respond(Some(&table()), &q));
        assert_eq!(m.edns.as_ref().map(Edns::max_payload), Some(EDNS_PAYLOAD));

        // A big answer is cut to its header and question with TC set.
        let mut big = String::from(r#"{"records":[{"name":"big.mesh","ips":["#);
        let list: Vec<String> = (0..100).map(|i| format!("\"240.0.1.{i}\"")).collect();
        big.push_str(&list.join(","));
        big.push_str("]}]}");
        let t = Table::from_json(big.as_bytes()).unwrap();
        let Reply::Local(m) = respond(Some(&t), &query("big.mesh.", RecordType::A)) else {
            panic!("local")
        };
        let wire = m.to_vec().unwrap();
        assert!(wire.len() > 512);
        assert_eq!(fit(wire.clone(), 65535), Some(wire.clone()));
        let cut = Message::from_vec(&fit(wire, 512).unwrap()).unwrap();
        assert!(cut.metadata.truncation);
        assert!(cut.answers.is_empty());
        assert_eq!(cut.metadata.id, 4242);
        assert_eq!(cut.queries.len(), 1);
    }

    /// An upstream answer echoing many questions used to be "truncated" to all of them and
    /// relayed over UDP at 1584 bytes to a 512-byte client (found by the `dns_forward` fuzz
    /// target): the cut keeps the first question, and what still does not fit is `None`.
    #[test]
    fn a_truncated_reply_fits_the_limit() {
        let mut upstream = Message::response(77, OpCode::Query);
        for i in 0..12 {
            let long = format!("{i:02}{}.{i:02}{}.c{i:02}.", "a".repeat(58), "b".repeat(58));
            upstream.add_query(Query::query(
                Name::from_ascii(&long).unwrap(),
                RecordType::A,
            ));
        }
        let wire = upstream.to_vec().unwrap();
        assert!(wire.len() > 1232, "{}", wire.len());
        let cut = fit(wire.clone(), 512).expect("a truncated reply");
        assert!(cut.len() <= 512, "{}", cut.len());
        let cut = Message::from_vec(&cut).unwrap();
        assert!(cut.metadata.truncation);
        assert_eq!(cut.metadata.id, 77);
        assert_eq!(cut.queries, upstream.queries[..1]);
        // Even one question over the limit: nothing (the server sends SERVFAIL instead).
        assert_eq!(fit(wire, 100), None);
    }
}
