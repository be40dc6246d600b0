//! Target `dns_query`: the bytes any local process sends kuma-dp's DNS server, one UDP
//! datagram or one TCP frame, fed to `kuma_dp::dns::server::decide` (message decoding, then
//! `answer::respond`, encoding and the UDP size limit) four ways: before the first table and
//! with [`TABLE`], over UDP and over TCP.
//!
//! Invariants:
//! - a message with the QR bit set (a response) is never answered (no reflection loops);
//! - every reply parses as DNS, is a response and keeps the query's id (and opcode, when
//!   the query parsed); bytes that are not a DNS message get FORMERR or nothing;
//! - a reply sent over UDP fits the client's limit (512, or its EDNS size up to ours), one
//!   over TCP fits a frame;
//! - a query that parsed is answered or forwarded, never dropped; what is forwarded is
//!   outside the mesh's domain, of another class or another opcode;
//! - a local answer echoes the first question, answers A/AAAA of a listed name with exactly
//!   the table's addresses (untruncated), says NXDOMAIN only under the domain, and SERVFAIL
//!   only before the first table.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use kuma_dp::dns::answer;
use kuma_dp::dns::forward::Transport;
use kuma_dp::dns::server::{Step, decide};
use kuma_dp::dns::table::{self, Table};

/// The table the queries are answered from: both families, one v4-only name, a name with
/// enough addresses to overflow 512 bytes, a name under another listed one.
pub const TABLE: &str = r#"{"records":[
    {"name":"backend.mesh","ips":["240.0.0.1","::ffff:240.0.0.1"]},
    {"name":"v4only.mesh","ips":["240.0.0.2"]},
    {"name":"a_b.mesh","ips":["240.0.0.3"]},
    {"name":"a.b.mesh","ips":["240.0.0.3"]},
    {"name":"big.mesh","ips":["240.0.1.0","240.0.1.1","240.0.1.2","240.0.1.3","240.0.1.4",
        "240.0.1.5","240.0.1.6","240.0.1.7","240.0.1.8","240.0.1.9","240.0.1.10","240.0.1.11",
        "240.0.1.12","240.0.1.13","240.0.1.14","240.0.1.15","240.0.1.16","240.0.1.17",
        "240.0.1.18","240.0.1.19","240.0.1.20","240.0.1.21","240.0.1.22","240.0.1.23",
        "240.0.1.24","240.0.1.25","240.0.1.26","240.0.1.27","240.0.1.28","240.0.1.29",
        "240.0.1.30","240.0.1.31","240.0.1.32","240.0.1.33","240.0.1.34","240.0.1.35"]}
],"ttl":30,"domain":"mesh"}"#;

pub fn run(data: &[u8]) {
    // Invariant: TABLE is a valid table (the seed test checks it too).
    let table = Table::from_json(TABLE.as_bytes()).expect("the fixed table parses");
    for t in [None, Some(&table)] {
        for transport in [Transport::Udp, Transport::Tcp] {
            check(t, data, transport);
        }
    }
}

fn check(table: Option<&Table>, raw: &[u8], transport: Transport) {
    let step = decide(table, raw, transport);
    let query = match Message::from_vec(raw) {
        Ok(q) => q,
        Err(_) => {
            // Not a DNS message: a bare FORMERR header for a query-looking header, or nothing.
            match step {
                Step::Drop => {}
                Step::Send(reply) => {
                    assert!(raw.len() >= 12 && raw[2] & 0x80 == 0, "answered a response");
                    let m = Message::from_vec(&reply).expect("the FORMERR parses");
                    assert_eq!(m.metadata.id, u16::from_be_bytes([raw[0], raw[1]]));
                    assert_eq!(m.metadata.message_type, MessageType::Response);
                    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
                }
                Step::Forward(_) => panic!("unparsed bytes forwarded"),
            }
            return;
        }
    };
    if query.metadata.message_type == MessageType::Response {
        assert_eq!(step, Step::Drop, "a response was answered or forwarded");
        return;
    }
    match step {
        Step::Drop => panic!("a query that parsed got no answer: {query:?}"),
        Step::Forward(forwarded) => {
            assert_eq!(forwarded, query);
            if query.metadata.op_code != OpCode::Query {
                return;
            }
            let q = query
                .queries
                .first()
                .expect("a question-less query is answered");
            if q.query_class() != DNSClass::IN {
                return;
            }
            let name = table::normalize(&q.name().to_ascii());
            let domain = table.map_or(table::DEFAULT_DOMAIN, Table::domain);
            assert!(
                !table::in_domain(&name, domain),
                "{name} is in the mesh's domain but forwarded"
            );
        }
        Step::Send(wire) => check_reply(table, &query, &wire, transport),
    }
}

fn check_reply(table: Option<&Table>, query: &Message, wire: &[u8], transport: Transport) {
    match transport {
        Transport::Udp => assert!(
            wire.len() <= answer::udp_limit(query),
            "{} bytes over UDP, the limit is {}",
            wire.len(),
            answer::udp_limit(query)
        ),
        Transport::Tcp => assert!(wire.len() <= usize::from(u16::MAX)),
    }
    let reply = Message::from_vec(wire)
        .unwrap_or_else(|e| panic!("our reply does not parse: {e}\n{wire:?}"));
    assert_eq!(reply.metadata.id, query.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.metadata.op_code, query.metadata.op_code);
    let Some(question) = query.queries.first() else {
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        return;
    };
    assert_eq!(
        reply.queries.first(),
        Some(question),
        "the question is echoed"
    );
    assert_eq!(reply.queries.len(), 1);
    let name = table::normalize(&question.name().to_ascii());
    let code = reply.metadata.response_code;
    let Some(table) = table else {
        assert_eq!(code, ResponseCode::ServFail);
        assert!(table::in_domain(&name, table::DEFAULT_DOMAIN));
        assert!(reply.answers.is_empty());
        return;
    };
    assert!(
        table.is_in_domain(&name),
        "answered {name} outside the domain"
    );
    assert!(reply.metadata.authoritative);
    match table.get(&name) {
        None => {
            let want = if name == table.domain() {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            assert_eq!(code, want, "{name}");
            assert!(reply.answers.is_empty());
        }
        Some(entry) => {
            assert_eq!(code, ResponseCode::NoError);
            if reply.metadata.truncation {
                assert_eq!(transport, Transport::Udp, "truncated over TCP");
                assert!(reply.answers.is_empty());
                return;
            }
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for r in &reply.answers {
                assert_eq!(&r.name, question.name(), "the owner is the name asked");
                assert_eq!(r.ttl, table.ttl());
                match &r.data {
                    RData::A(a) => v4.push(a.0),
                    RData::AAAA(a) => v6.push(a.0),
                    other => panic!("unexpected record {other:?}"),
                }
            }
            match question.query_type() {
                RecordType::A => assert_eq!((v4, v6.len()), (entry.v4.clone(), 0)),
                RecordType::AAAA => assert_eq!((v4.len(), v6), (0, entry.v6.clone())),
                _ => assert!(v4.is_empty() && v6.is_empty()),
            }
        }
    }
}
