//! State-of-the-World ADS as a plain state machine (no IO).
//!
//! One [`State`] per stream. Feed it every [`DiscoveryRequest`] with
//! [`State::on_request`] and every new snapshot of the node with
//! [`State::on_snapshot`]; each returns the responses to send, in order.
//!
//! Per type URL it remembers the subscription (wildcard or a set of names),
//! the fingerprint of what it last sent and the last nonce. Rules:
//! - a request whose `response_nonce` is not the last nonce sent for its type
//!   is stale and ignored entirely (the client will send its current state
//!   again once it has seen our latest response);
//! - a request with the last nonce is an ACK, or a NACK if it carries
//!   `error_detail`; neither triggers a resend by itself, so a rejected
//!   version is never sent again — only new content is;
//! - a response is due on the first request of a type, when the subscription
//!   changes, or when the content for the current subscription changes;
//! - warming (see [`crate::warming`]): a response that adds or changes a
//!   cluster or listener is followed by the subscribed EDS/SDS/RDS resources it
//!   depends on, even unchanged; and a named type asked again with the nonce
//!   it already ACKed (Envoy re-subscribing a name it had, for a new watch) is
//!   answered again.
//!   Wildcard types (everything but EDS/RDS/SDS with no names, or `*`) get a
//!   response even when empty so the client's initial fetch completes; named
//!   types whose type is absent from the snapshot wait until it appears.
//!
//! `version_info` is the type's [`Snapshot::version`]; nonces are a per-stream
//! counter.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tracing::debug;

use crate::protocol::{Protocol, Sent};
use crate::snapshot::fingerprint;
use crate::stream::{self, Core, Machine, Reply, Sub};
use crate::warming::Dep;
use crate::{Callbacks, Resource, Snapshot, type_url};

/// Per-type subscription and send state.
#[derive(Debug, Default)]
struct TypeState {
    sub: Sub,
    /// A response is due even if the content did not change (the subscription changed, or
    /// the client asked again for what it has).
    dirty: bool,
    /// Fingerprint of the resources last sent; `None` before the first send.
    sent_fp: Option<String>,
    /// The resources last sent, by name: what the client has.
    sent: Vec<Arc<Resource>>,
}

/// The SotW state machine of one ADS stream.
#[derive(Debug)]
pub struct State(Machine<TypeState>);

impl State {
    /// A fresh stream: nothing subscribed, no snapshot yet.
    pub fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        Self(Machine::new(stream_id, callbacks))
    }

    /// Handles one request; returns the responses to send.
    pub fn on_request(&mut self, req: DiscoveryRequest) -> Vec<DiscoveryResponse> {
        let DiscoveryRequest {
            version_info,
            resource_names,
            type_url,
            response_nonce,
            error_detail,
            ..
        } = req;
        if type_url.is_empty() {
            debug!(
                stream_id = self.0.core.stream_id,
                "sotw request without type_url ignored"
            );
            return Vec::new();
        }
        let first = !self.0.types.contains_key(&type_url);
        let st = self.0.types.entry(type_url.clone()).or_default();
        let reply = st.sub.reply(&response_nonce, error_detail.as_ref());
        self.0
            .core
            .report(&type_url, &reply, &version_info, &response_nonce);
        match reply {
            // The client will send its current state again once it has our latest response.
            Reply::Stale => return Vec::new(),
            // A named type asked again with what it has: a new watch in Envoy waits for it.
            Reply::AckAgain if type_url::is_named(&type_url) => st.dirty = true,
            _ => {}
        }
        let wildcard = resource_names.iter().any(|n| n == "*")
            || (resource_names.is_empty() && !type_url::is_named(&type_url));
        let names: BTreeSet<String> = resource_names.into_iter().filter(|n| n != "*").collect();
        if first || st.sub.wildcard != wildcard || st.sub.names != names {
            st.sub.wildcard = wildcard;
            st.sub.names = names;
            st.dirty = true;
        }
        self.0.push(vec![type_url], respond)
    }

    /// Installs a new snapshot of the node; returns the responses for every subscribed
    /// type whose content changed, in push order, with the warming follow-ups.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
        self.0.on_snapshot(snapshot, respond)
    }
}

/// The response due for one type, if any: when the subscription changed, the content for
/// it changed, or `forced` names one of the resources it holds (then the whole subscribed
/// set goes again: a SotW response is the state of the world for the watches it answers,
/// and Envoy drops what a watch held when a response leaves it out).
fn respond(
    core: &mut Core,
    states: &mut HashMap<String, TypeState>,
    type_url: &str,
    forced: Option<&BTreeSet<String>>,
    deps: &mut Vec<Dep>,
) -> Option<DiscoveryResponse> {
    let snap = core.snapshot.clone()?;
    let st = states.get_mut(type_url)?;
    let all = snap.resources(type_url);
    if !st.sub.wildcard && all.is_none() && st.sent_fp.is_none() {
        // A named type the node has none of: wait until it appears.
        return None;
    }
    let (resources, fp): (Vec<&Arc<Resource>>, String) = if st.sub.wildcard {
        (
            all.map(|m| m.values().collect()).unwrap_or_default(),
            snap.version(type_url),
        )
    } else {
        let subset: Vec<&Arc<Resource>> = match all {
            Some(all) => st.sub.names.iter().filter_map(|n| all.get(n)).collect(),
            None => Vec::new(),
        };
        let fp = fingerprint(subset.iter().copied());
        (subset, fp)
    };
    let force = forced.is_some_and(|f| resources.iter().any(|r| f.contains(&r.name)));
    if !st.dirty && !force && st.sent_fp.as_deref() == Some(fp.as_str()) {
        return None;
    }
    stream::changed_deps(&st.sent, &resources, deps);
    st.sent = resources.iter().map(|r| Arc::clone(r)).collect();
    let nonce = core.next_nonce();
    st.dirty = false;
    st.sent_fp = Some(fp);
    st.sub.last_nonce = Some(nonce.clone());
    Some(DiscoveryResponse {
        version_info: snap.version(type_url),
        resources: resources.iter().map(|r| r.body.clone()).collect(),
        type_url: type_url.to_string(),
        nonce,
        ..Default::default()
    })
}

impl Protocol for State {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const DELTA: bool = false;

    fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        State::new(stream_id, callbacks)
    }

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn resumed(req: &DiscoveryRequest) -> bool {
        !req.version_info.is_empty()
    }

    fn on_request(&mut self, req: DiscoveryRequest) -> Vec<DiscoveryResponse> {
        State::on_request(self, req)
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
        State::on_snapshot(self, snapshot)
    }

    fn describe(resp: &DiscoveryResponse) -> Sent<'_> {
        Sent {
            type_url: &resp.type_url,
            version: &resp.version_info,
            nonce: &resp.nonce,
            resources: resp.resources.len(),
            removed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Event, Recorder, any_res, snapshot, warming_snapshot};
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.to_string(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    fn names(resp: &DiscoveryResponse) -> Vec<Vec<u8>> {
        resp.resources.iter().map(|a| a.value.clone()).collect()
    }

    fn base() -> Arc<Snapshot> {
        snapshot(&[
            (type_url::CLUSTER, "a", "ca1"),
            (type_url::CLUSTER, "b", "cb1"),
            (type_url::ENDPOINT, "a", "ea1"),
            (type_url::ENDPOINT, "b", "eb1"),
            (type_url::LISTENER, "l", "l1"),
        ])
    }

    fn state() -> (State, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (State::new(7, rec.clone()), rec)
    }

    #[test]
    fn first_wildcard_request_gets_everything() {
        let (mut s, _) = state();
        assert!(s.on_snapshot(base()).is_empty(), "nothing subscribed yet");
        let out = s.on_request(req(type_url::CLUSTER, &[], "", ""));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, type_url::CLUSTER);
        assert_eq!(names(&out[0]), vec![b"ca1".to_vec(), b"cb1".to_vec()]);
        assert_eq!(out[0].version_info, base().version(type_url::CLUSTER));
        assert_eq!(out[0].nonce, "1");
    }

    #[test]
    fn wildcard_type_absent_from_snapshot_gets_empty_response() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::SECRET, &[], "", ""));
        assert!(
            out.is_empty(),
            "named type with no names and no secrets: nothing"
        );
        let out = s.on_request(req("type.googleapis.com/x.Y", &[], "", ""));
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
        assert_eq!(out[0].version_info, "");
    }

    #[test]
    fn request_before_snapshot_is_answered_when_it_arrives() {
        let (mut s, _) = state();
        assert!(
            s.on_request(req(type_url::LISTENER, &[], "", ""))
                .is_empty()
        );
        assert!(s.on_request(req(type_url::CLUSTER, &[], "", "")).is_empty());
        let out = s.on_snapshot(base());
        let urls: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(urls, vec![type_url::CLUSTER, type_url::LISTENER]);
    }

    #[test]
    fn named_request_gets_only_named_existing() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::ENDPOINT, &["b", "missing"], "", ""));
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), vec![b"eb1".to_vec()]);
        // Named type the snapshot lacks entirely: wait.
        assert!(
            s.on_request(req(type_url::ROUTE, &["r"], "", ""))
                .is_empty()
        );
    }

    #[test]
    fn ack_gives_no_response() {
        let (mut s, rec) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::CLUSTER, &[], "", ""));
        let v = out[0].version_info.clone();
        let out = s.on_request(req(type_url::CLUSTER, &[], &v, "1"));
        assert!(out.is_empty());
        assert_eq!(
            rec.take(),
            vec![Event::Ack(type_url::CLUSTER.into(), v, "1".into())]
        );
    }

    #[test]
    fn nack_is_reported_and_not_resent() {
        let (mut s, rec) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::CLUSTER, &[], "", ""));
        let mut nack = req(type_url::CLUSTER, &[], "", "1");
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad cluster".into(),
            details: vec![],
        });
        assert!(s.on_request(nack.clone()).is_empty());
        assert_eq!(
            rec.take(),
            vec![Event::Nack(
                type_url::CLUSTER.into(),
                "".into(),
                "1".into(),
                "bad cluster".into()
            )]
        );
        // The same snapshot content again (a new Arc): still no resend.
        assert!(s.on_snapshot(base()).is_empty());
        // A new version is sent.
        let next = snapshot(&[(type_url::CLUSTER, "a", "ca2")]);
        assert_eq!(s.on_snapshot(next).len(), 1);
    }

    #[test]
    fn changed_cluster_resends_whole_type() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::CLUSTER, &[], "", ""));
        let v1 = out[0].version_info.clone();
        s.on_request(req(type_url::CLUSTER, &[], &v1, "1"));
        s.on_request(req(type_url::ENDPOINT, &["a", "b"], "", ""));
        s.on_request(req(type_url::LISTENER, &[], "", ""));

        let next = snapshot(&[
            (type_url::CLUSTER, "a", "ca1"),
            (type_url::CLUSTER, "b", "cb2"),
            (type_url::ENDPOINT, "a", "ea1"),
            (type_url::ENDPOINT, "b", "eb1"),
            (type_url::LISTENER, "l", "l1"),
        ]);
        let out = s.on_snapshot(next);
        assert_eq!(out.len(), 1, "only CDS changed");
        assert_eq!(out[0].type_url, type_url::CLUSTER);
        assert_eq!(names(&out[0]), vec![b"ca1".to_vec(), b"cb2".to_vec()]);
        assert_ne!(out[0].version_info, v1);
    }

    #[test]
    fn push_order_on_snapshot_change() {
        let (mut s, _) = state();
        for t in [
            type_url::ROUTE,
            type_url::LISTENER,
            type_url::ENDPOINT,
            type_url::CLUSTER,
            type_url::SECRET,
        ] {
            s.on_request(req(t, &["x"], "", ""));
        }
        s.on_request(req("type.googleapis.com/z.Other", &[], "", ""));
        s.on_request(req("type.googleapis.com/a.Other", &[], "", ""));
        let snap = snapshot(&[
            (type_url::ROUTE, "x", "1"),
            (type_url::LISTENER, "x", "1"),
            (type_url::ENDPOINT, "x", "1"),
            (type_url::CLUSTER, "x", "1"),
            (type_url::SECRET, "x", "1"),
            ("type.googleapis.com/z.Other", "x", "1"),
            ("type.googleapis.com/a.Other", "x", "1"),
        ]);
        let urls: Vec<String> = s
            .on_snapshot(snap)
            .into_iter()
            .map(|r| r.type_url)
            .collect();
        assert_eq!(
            urls,
            vec![
                type_url::SECRET,
                type_url::CLUSTER,
                type_url::ENDPOINT,
                type_url::LISTENER,
                type_url::ROUTE,
                "type.googleapis.com/a.Other",
                "type.googleapis.com/z.Other",
            ]
        );
    }

    #[test]
    fn names_change_triggers_response() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::ENDPOINT, &["a"], "", ""));
        let out = s.on_request(req(type_url::ENDPOINT, &["a", "b"], "v", "1"));
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), vec![b"ea1".to_vec(), b"eb1".to_vec()]);
        // Unsubscribing everything (Envoy's empty EDS list) answers empty.
        let out = s.on_request(req(type_url::ENDPOINT, &[], "v", "2"));
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let (mut s, rec) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::ENDPOINT, &["a"], "", ""));
        s.on_request(req(type_url::ENDPOINT, &["a", "b"], "", "1"));
        rec.take();
        // Nonce 1 is no longer the latest (2 is): names change ignored.
        assert!(
            s.on_request(req(type_url::ENDPOINT, &["b"], "", "1"))
                .is_empty()
        );
        assert!(rec.take().is_empty(), "no ACK for a stale nonce");
    }

    #[test]
    fn unchanged_snapshot_sends_nothing() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::CLUSTER, &[], "", ""));
        s.on_request(req(type_url::ENDPOINT, &["a"], "", ""));
        assert!(s.on_snapshot(base()).is_empty());
        // A change to an endpoint the stream did not ask for: nothing either.
        let next = snapshot(&[
            (type_url::CLUSTER, "a", "ca1"),
            (type_url::CLUSTER, "b", "cb1"),
            (type_url::ENDPOINT, "a", "ea1"),
            (type_url::ENDPOINT, "b", "eb2"),
            (type_url::LISTENER, "l", "l1"),
        ]);
        assert!(s.on_snapshot(next).is_empty());
    }

    #[test]
    fn same_resource_in_new_snapshot_is_not_resent() {
        // A new snapshot holding the same shared resource.
        let r = any_res(type_url::CLUSTER, "a", "x");
        let mut a = Snapshot::new();
        a.insert(r.clone());
        let mut b = Snapshot::new();
        b.insert(r);
        let (mut s, _) = state();
        s.on_snapshot(Arc::new(a));
        s.on_request(req(type_url::CLUSTER, &[], "", ""));
        assert!(s.on_snapshot(Arc::new(b)).is_empty());
    }

    /// A stream subscribed to CDS, EDS `a`, LDS and SDS `id`/`ca`, everything ACKed.
    fn warmed(snap: Arc<Snapshot>) -> State {
        let (mut s, _) = state();
        s.on_snapshot(snap);
        for (t, names) in [
            (type_url::CLUSTER, vec![]),
            (type_url::ENDPOINT, vec!["a"]),
            (type_url::LISTENER, vec![]),
            (type_url::SECRET, vec!["id", "ca"]),
        ] {
            let out = s.on_request(req(t, &names, "", ""));
            let last = out.last().expect("a response");
            let (v, n) = (last.version_info.clone(), last.nonce.clone());
            assert!(s.on_request(req(t, &names, &v, &n)).is_empty());
        }
        s
    }

    fn kinds(out: &[DiscoveryResponse]) -> Vec<&str> {
        out.iter().map(|r| type_url::short(&r.type_url)).collect()
    }

    #[test]
    fn changed_eds_cluster_is_followed_by_its_unchanged_endpoints() {
        let mut s = warmed(warming_snapshot("v1", false, false));
        let out = s.on_snapshot(warming_snapshot("v2", false, false));
        assert_eq!(kinds(&out), vec!["cds", "eds"]);
        assert_eq!(names(&out[1]), vec![b"ea1".to_vec()]);
        // The same content again: nothing to warm, nothing sent.
        assert!(
            s.on_snapshot(warming_snapshot("v2", false, false))
                .is_empty()
        );
    }

    #[test]
    fn changed_cluster_and_listener_are_followed_by_their_secrets() {
        let mut s = warmed(warming_snapshot("v1", false, true));
        // The listener starts using the secrets: SDS follows LDS.
        let out = s.on_snapshot(warming_snapshot("v1", true, true));
        assert_eq!(kinds(&out), vec!["lds", "sds"]);
        assert_eq!(names(&out[1]), vec![b"ca1".to_vec(), b"id1".to_vec()]);
        // The cluster changes: its endpoints in their slot, then its secrets after it.
        let out = s.on_snapshot(warming_snapshot("v2", true, true));
        assert_eq!(kinds(&out), vec!["cds", "eds", "sds"]);
    }

    #[test]
    fn dependencies_not_subscribed_are_not_forced() {
        let (mut s, _) = state();
        s.on_snapshot(warming_snapshot("v1", false, false));
        let out = s.on_request(req(type_url::CLUSTER, &[], "", ""));
        let (v, n) = (out[0].version_info.clone(), out[0].nonce.clone());
        s.on_request(req(type_url::CLUSTER, &[], &v, &n));
        // Envoy has not asked for EDS yet (it will, naming `a`): only CDS goes.
        let out = s.on_snapshot(warming_snapshot("v2", false, false));
        assert_eq!(kinds(&out), vec!["cds"]);
    }

    #[test]
    fn named_type_asked_again_after_its_ack_is_answered_again() {
        let mut s = warmed(warming_snapshot("v1", false, false));
        // Envoy re-subscribes the same names with the nonce it ACKed (a new watch on them).
        let out = s.on_request(req(type_url::ENDPOINT, &["a"], "", "2"));
        assert_eq!(kinds(&out), vec!["eds"]);
        assert_eq!(names(&out[0]), vec![b"ea1".to_vec()]);
        // A wildcard type asked again is not: its content is unchanged.
        assert!(
            s.on_request(req(type_url::CLUSTER, &[], "", "1"))
                .is_empty()
        );
    }
}
