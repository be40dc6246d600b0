//! `xds_sotw`: a State-of-the-World ADS stream, `kuma_xds::sotw::State`, fed the requests
//! and snapshot switches an input decodes into ([`crate::xds::ops`]), next to a model of the
//! protocol.
//!
//! Invariants after every operation: responses are only for types the client asked for;
//! nonces are fresh and increasing; `version_info` is the current snapshot's; a stale
//! request (a nonce other than the last one sent for its type) is answered with nothing; a
//! response carries exactly the subscribed set of the current snapshot (everything of a
//! wildcard type, the subscribed names otherwise); a request that changes the subscription,
//! or asks again for a named type with the nonce already ACKed, is answered (once there is
//! a snapshot and the type is wildcard, in the snapshot, or was sent before); and the
//! stream converges: what the client was sent
//! last for each subscribed type is what the current snapshot holds for the subscription.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use kuma_xds::{NoopCallbacks, Snapshot, sotw, type_url};
use prost::Message;

use crate::xds::{self, Op};

/// What the client knows of the stream.
#[derive(Default)]
struct Model {
    snapshot: Option<Arc<Snapshot>>,
    /// Type → (wildcard, names) of the latest request that was not stale.
    subs: HashMap<String, (bool, BTreeSet<String>)>,
    /// Type → last nonce received.
    last_nonce: HashMap<String, String>,
    /// Every nonce received, in order.
    nonces: Vec<String>,
    /// Type → the names and bodies last received.
    sent: HashMap<String, Vec<(String, Vec<u8>)>>,
    /// Type → the last nonce the client ACKed.
    acked: HashMap<String, String>,
}

impl Model {
    /// What a response of `type_url` must carry now: (name, body) sorted by name.
    fn expected(&self, type_url: &str) -> Vec<(String, Vec<u8>)> {
        let (Some(snap), Some((wildcard, names))) = (&self.snapshot, self.subs.get(type_url))
        else {
            return Vec::new();
        };
        let Some(all) = snap.resources(type_url) else {
            return Vec::new();
        };
        all.iter()
            .filter(|(n, _)| *wildcard || names.contains(*n))
            .map(|(n, r)| (n.clone(), r.body.value.clone()))
            .collect()
    }

    fn check_responses(&mut self, out: &[DiscoveryResponse]) {
        for resp in out {
            let t = resp.type_url.as_str();
            assert!(
                self.subs.contains_key(t),
                "a response of type {t:?}, which the client never asked for"
            );
            let snap = self
                .snapshot
                .as_ref()
                .expect("a response before any snapshot");
            assert_eq!(resp.version_info, snap.version(t), "version of {t}");
            let n: u64 = resp.nonce.parse().expect("nonces are counters");
            if let Some(prev) = self.nonces.last() {
                assert!(
                    n > prev.parse::<u64>().expect("counter"),
                    "nonce not increasing"
                );
            }
            self.nonces.push(resp.nonce.clone());
            self.last_nonce.insert(t.to_string(), resp.nonce.clone());
            let want = self.expected(t);
            let got: Vec<&Vec<u8>> = resp.resources.iter().map(|a| &a.value).collect();
            let want_bodies: Vec<&Vec<u8>> = want.iter().map(|(_, b)| b).collect();
            assert_eq!(
                got, want_bodies,
                "a {t} response is not the subscribed set of the snapshot"
            );
            assert!(resp.resources.iter().all(|a| a.type_url == t));
            self.sent.insert(t.to_string(), want);
        }
    }

    /// Every subscribed type the client got something for, or that has content to get, is
    /// up to date.
    fn check_converged(&self) {
        let Some(snap) = &self.snapshot else { return };
        for (t, (wildcard, _)) in &self.subs {
            let due = *wildcard || snap.resources(t).is_some() || self.sent.contains_key(t);
            if !due {
                continue;
            }
            let sent = self.sent.get(t).map(Vec::as_slice).unwrap_or_default();
            assert!(
                sent == self.expected(t).as_slice(),
                "the client of {t} is left with a stale state of the world"
            );
        }
    }
}

fn request(req: &xds::Req, model: &Model) -> DiscoveryRequest {
    let t = xds::type_at(req.type_ix);
    let real = model
        .snapshot
        .as_ref()
        .map(|s| s.version(t))
        .unwrap_or_default();
    DiscoveryRequest {
        version_info: xds::version(req.version, real),
        resource_names: req.names.iter().map(|i| xds::name_at(*i).into()).collect(),
        type_url: t.into(),
        response_nonce: xds::nonce(&req.nonce, model.last_nonce.get(t), &model.nonces),
        error_detail: req.nack.then(|| RpcStatus {
            code: 3,
            message: "rejected".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn run(data: &[u8]) {
    let mut state = sotw::State::new(1, Arc::new(NoopCallbacks));
    let mut model = Model::default();
    for op in xds::ops(data) {
        let req = match op {
            Op::Snapshot(i) => {
                let snap = xds::snapshot_at(i);
                model.snapshot = Some(Arc::clone(&snap));
                let out = state.on_snapshot(snap);
                model.check_responses(&out);
                model.check_converged();
                continue;
            }
            Op::Request(r) => request(&r, &model),
            Op::Raw(bytes) => match DiscoveryRequest::decode(bytes.as_slice()) {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let t = req.type_url.clone();
        let stale = !req.response_nonce.is_empty()
            && model
                .last_nonce
                .get(&t)
                .is_some_and(|last| *last != req.response_nonce);
        let first = !model.subs.contains_key(&t);
        // A response of this type is due: the subscription changed, or a named type was
        // asked again with the nonce the client had already ACKed (a new watch in Envoy).
        let mut due = false;
        if !t.is_empty() && !stale {
            let wildcard = req.resource_names.iter().any(|n| n == "*")
                || (req.resource_names.is_empty() && !type_url::is_named(&t));
            let names = req
                .resource_names
                .iter()
                .filter(|n| *n != "*")
                .cloned()
                .collect();
            let sub = (wildcard, names);
            due = model.subs.get(&t) != Some(&sub);
            model.subs.insert(t.clone(), sub);
            let answers_last = !req.response_nonce.is_empty()
                && model.last_nonce.get(&t) == Some(&req.response_nonce);
            if answers_last && req.error_detail.is_none() {
                if model.acked.get(&t) == Some(&req.response_nonce) {
                    due |= type_url::is_named(&t);
                } else {
                    model.acked.insert(t.clone(), req.response_nonce.clone());
                }
            }
        }
        // What the client holds decides whether a named type absent from the snapshot
        // is answered (empty) or waited for.
        let answerable = model.snapshot.as_ref().is_some_and(|s| {
            model.subs.get(&t).is_some_and(|(w, _)| *w)
                || s.resources(&t).is_some()
                || model.sent.contains_key(&t)
        });
        let out = state.on_request(req);
        if t.is_empty() || stale {
            assert!(out.is_empty(), "an ignored request was answered");
        }
        model.check_responses(&out);
        if due && answerable {
            assert!(
                out.iter().any(|r| r.type_url == t),
                "a request of {t} that changed the subscription or asked again (first: {first}) \
                 was not answered"
            );
        }
        model.check_converged();
    }
}
