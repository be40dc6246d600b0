//! Target `dns_forward`: what an upstream resolver sends back for a forwarded query. The
//! input is a two-byte big-endian length, the client's query (that many bytes), then the
//! upstream's bytes. A query that does not parse is never forwarded, so it is skipped; the
//! upstream's bytes go through `kuma_dp::dns::forward::is_answer_to` (which datagrams and
//! frames are taken as the answer) and `kuma_dp::dns::server::relay` (what the client gets).
//!
//! Invariants:
//! - only a response carrying the query's id is taken as the answer;
//! - over TCP the answer is relayed byte for byte;
//! - over UDP the client always gets a reply, a response with its id that fits its limit
//!   (512, or its EDNS size up to ours); when it is not the answer as is, it parses and is
//!   either the answer truncated (TC, no records) or SERVFAIL.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use kuma_dp::dns::answer;
use kuma_dp::dns::forward::{Transport, is_answer_to};
use kuma_dp::dns::server::relay;

pub fn run(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return;
    }
    let (raw_query, upstream) = rest.split_at(len);
    let Ok(query) = Message::from_vec(raw_query) else {
        return;
    };
    let matched = is_answer_to(upstream, raw_query);
    assert_eq!(
        matched,
        upstream.len() >= 12 && upstream[..2] == raw_query[..2] && upstream[2] & 0x80 != 0,
        "is_answer_to"
    );
    if !matched {
        return;
    }
    assert_eq!(
        relay(upstream.to_vec(), &query, Transport::Tcp).as_deref(),
        Some(upstream),
        "TCP relays as is"
    );
    let limit = answer::udp_limit(&query);
    let reply =
        relay(upstream.to_vec(), &query, Transport::Udp).expect("a UDP client always gets a reply");
    assert!(
        reply.len() <= limit,
        "{} bytes relayed over UDP, the client's limit is {limit}",
        reply.len()
    );
    assert_eq!(reply[..2], raw_query[..2], "the query's id");
    assert_ne!(reply[2] & 0x80, 0, "a response");
    if reply == upstream {
        return;
    }
    let m = Message::from_vec(&reply).expect("a rewritten reply parses");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    if m.metadata.truncation {
        assert!(m.answers.is_empty() && m.authorities.is_empty());
    } else {
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
}
