//! `xds_delta`: an incremental ADS stream, `kuma_xds::delta::State`, fed the requests and
//! snapshot switches an input decodes into ([`crate::xds::ops`]), next to a model of the
//! client (what it subscribed to, which versions it has).
//!
//! Invariants after every operation: responses are only for types the client asked for;
//! nonces are fresh and increasing; `system_version_info` is the current snapshot's; every
//! resource sent is subscribed and is the current snapshot's (name, version, body), at most
//! once per response; a name removed is gone from the snapshot and not also sent; the first
//! request of a wildcard type is answered once there is a snapshot; and the stream
//! converges: the client has the current version of every subscribed resource and nothing
//! the snapshot no longer holds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use kuma_xds::{NoopCallbacks, Snapshot, delta, type_url};
use prost::Message;

use crate::xds::{self, Op};

/// The client's side of one type.
#[derive(Default)]
struct TypeModel {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the client has.
    known: HashMap<String, String>,
}

#[derive(Default)]
struct Model {
    snapshot: Option<Arc<Snapshot>>,
    types: HashMap<String, TypeModel>,
    last_nonce: HashMap<String, String>,
    nonces: Vec<String>,
}

impl Model {
    /// Applies a request's subscription changes, as the protocol defines them.
    fn on_request(&mut self, req: &DeltaDiscoveryRequest) {
        let first = !self.types.contains_key(&req.type_url);
        let tm = self.types.entry(req.type_url.clone()).or_default();
        if first {
            tm.wildcard =
                req.resource_names_subscribe.is_empty() && !type_url::is_named(&req.type_url);
            tm.known = req.initial_resource_versions.clone();
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                tm.wildcard = true;
                continue;
            }
            if !first {
                // Subscribed again: the client waits for it.
                tm.known.remove(name);
            }
            tm.names.insert(name.clone());
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                tm.wildcard = false;
                let names = &tm.names;
                tm.known.retain(|k, _| names.contains(k));
            } else {
                tm.names.remove(name);
                if !tm.wildcard {
                    tm.known.remove(name);
                }
            }
        }
    }

    fn check_responses(&mut self, out: &[DeltaDiscoveryResponse]) {
        for resp in out {
            let t = resp.type_url.as_str();
            let snap = self
                .snapshot
                .as_ref()
                .expect("a response before any snapshot");
            let Some(tm) = self.types.get_mut(t) else {
                panic!("a response of type {t:?}, which the client never asked for");
            };
            assert_eq!(resp.system_version_info, snap.version(t), "version of {t}");
            let n: u64 = resp.nonce.parse().expect("nonces are counters");
            if let Some(prev) = self.nonces.last() {
                assert!(
                    n > prev.parse::<u64>().expect("counter"),
                    "nonce not increasing"
                );
            }
            self.nonces.push(resp.nonce.clone());
            self.last_nonce.insert(t.to_string(), resp.nonce.clone());
            let mut seen = BTreeSet::new();
            for r in &resp.resources {
                assert!(seen.insert(&r.name), "{t} {:?} sent twice", r.name);
                assert!(
                    tm.wildcard || tm.names.contains(&r.name),
                    "{t} {:?} sent but not subscribed",
                    r.name
                );
                let Some(current) = snap.get(t, &r.name) else {
                    panic!("{t} {:?} sent but not in the snapshot", r.name);
                };
                assert_eq!(r.version, current.version, "{t} {:?} version", r.name);
                assert_eq!(r.resource.as_ref(), Some(&current.body), "{t} {:?}", r.name);
                tm.known.insert(r.name.clone(), r.version.clone());
            }
            for name in &resp.removed_resources {
                assert!(
                    !seen.contains(name),
                    "{t} {name:?} sent and removed at once"
                );
                assert!(
                    snap.get(t, name).is_none(),
                    "{t} {name:?} removed but in the snapshot"
                );
                tm.known.remove(name);
            }
        }
    }

    fn check_converged(&self) {
        let Some(snap) = &self.snapshot else { return };
        for (t, tm) in &self.types {
            if t.is_empty() {
                continue;
            }
            for name in xds::names_of(snap, t) {
                if tm.wildcard || tm.names.contains(&name) {
                    let want = snap.get(t, &name).map(|r| &r.version);
                    assert_eq!(
                        tm.known.get(&name),
                        want,
                        "the client lacks the current {t} {name:?}"
                    );
                }
            }
            for name in tm.known.keys() {
                assert!(
                    snap.get(t, name).is_some(),
                    "the client still has {t} {name:?}, gone from the snapshot"
                );
            }
        }
    }
}

fn request(req: &xds::Req, model: &Model) -> DeltaDiscoveryRequest {
    let t = xds::type_at(req.type_ix);
    let versions = &xds::snapshots()[0];
    DeltaDiscoveryRequest {
        type_url: t.into(),
        resource_names_subscribe: req.names.iter().map(|i| xds::name_at(*i).into()).collect(),
        resource_names_unsubscribe: req
            .unsubscribe
            .iter()
            .map(|i| xds::name_at(*i).into())
            .collect(),
        initial_resource_versions: req
            .initial
            .iter()
            .map(|(n, v)| {
                let name = xds::name_at(*n);
                let real = versions
                    .get(t, name)
                    .map(|r| r.version.clone())
                    .unwrap_or_default();
                (name.to_string(), xds::version(*v, real))
            })
            .collect(),
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
    let mut state = delta::State::new(1, Arc::new(NoopCallbacks));
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
            Op::Raw(bytes) => match DeltaDiscoveryRequest::decode(bytes.as_slice()) {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let t = req.type_url.clone();
        let first = !model.types.contains_key(&t);
        if !t.is_empty() {
            model.on_request(&req);
        }
        let out = state.on_request(req);
        if t.is_empty() {
            assert!(out.is_empty(), "a request without type was answered");
        }
        model.check_responses(&out);
        if first && !t.is_empty() && model.snapshot.is_some() && model.types[&t].wildcard {
            assert!(
                out.iter().any(|r| r.type_url == t),
                "the first request of wildcard type {t} was not answered"
            );
        }
        model.check_converged();
    }
}
