//! Delta (incremental) ADS as a plain state machine (no IO).
//!
//! One [`State`] per stream, fed like [`crate::sotw::State`]: requests with
//! [`State::on_request`], new snapshots with [`State::on_snapshot`].
//!
//! Per type URL it tracks the subscription (wildcard and/or explicit names)
//! and the version of every resource the client has. The client's view is
//! updated when a response is produced (optimistically), seeded from
//! `initial_resource_versions` on the first request of a type (reconnect).
//! A response carries only the subscribed resources whose version differs
//! from the client's, plus `removed_resources` for names the client has that
//! are gone from the snapshot; no response is sent when both are empty,
//! except the first one of a wildcard type (so the client's initial fetch
//! completes).
//!
//! Wildcard: a first request with an empty `resource_names_subscribe` for a
//! type other than EDS/RDS/SDS, or `*` in any subscribe list (`*` in an
//! unsubscribe list ends it).
//!
//! ACK/NACK: a request whose `response_nonce` is the last nonce sent for its
//! type is an ACK, or a NACK with `error_detail`. A NACK changes nothing: the
//! rejected versions count as known, so they are not resent; only a new
//! version is. A request with an older nonce is a stale ACK and is not
//! reported, but its subscription changes are still applied: delta requests
//! carry changes, not state, so dropping them would lose them.
//!
//! Warming (see [`crate::warming`]): a response that adds or changes a cluster or
//! listener is followed by the subscribed EDS/SDS/RDS resources it depends on,
//! even unchanged; a name subscribed again after the first request is sent
//! again even if the client had it (a new watch in Envoy waits for it).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use tracing::debug;

use crate::protocol::{Protocol, Sent};
use crate::stream::{Core, Machine, Reply, Sub};
use crate::warming::Dep;
use crate::{Callbacks, Snapshot, type_url};

/// Per-type subscription and client-view state.
#[derive(Debug, Default)]
struct TypeState {
    sub: Sub,
    /// Name → version of what the client has.
    known: HashMap<String, String>,
    /// A response of this type was produced on this stream.
    responded: bool,
    /// `system_version_info` of the last response of this type.
    last_version: String,
    /// Version of the last ACKed response ("" before any).
    acked_version: String,
}

/// The delta state machine of one ADS stream.
#[derive(Debug)]
pub struct State(Machine<TypeState>);

impl State {
    /// A fresh stream: nothing subscribed, no snapshot yet.
    pub fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        Self(Machine::new(stream_id, callbacks))
    }

    /// Handles one request; returns the responses to send.
    pub fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Vec<DeltaDiscoveryResponse> {
        let DeltaDiscoveryRequest {
            type_url,
            resource_names_subscribe,
            resource_names_unsubscribe,
            initial_resource_versions,
            response_nonce,
            error_detail,
            ..
        } = req;
        if type_url.is_empty() {
            debug!(
                stream_id = self.0.core.stream_id,
                "delta request without type_url ignored"
            );
            return Vec::new();
        }
        let first = !self.0.types.contains_key(&type_url);
        let st = self.0.types.entry(type_url.clone()).or_default();
        let reply = st.sub.reply(&response_nonce, error_detail.as_ref());
        let version = match reply {
            Reply::Ack | Reply::AckAgain => {
                st.acked_version.clone_from(&st.last_version);
                &st.last_version
            }
            _ => &st.acked_version,
        };
        self.0
            .core
            .report(&type_url, &reply, version, &response_nonce);
        // Subscription changes of a stale request are applied all the same: delta requests
        // carry changes, not state.
        if first {
            st.sub.wildcard = resource_names_subscribe.is_empty() && !type_url::is_named(&type_url);
            st.known = initial_resource_versions;
        }
        for name in resource_names_subscribe {
            if name == "*" {
                st.sub.wildcard = true;
                continue;
            }
            // A name subscribed again after the first request: the client (a new watch in
            // Envoy) waits for it, so it is sent again even if the client had it.
            if !first {
                st.known.remove(&name);
            }
            st.sub.names.insert(name);
        }
        for name in resource_names_unsubscribe {
            if name == "*" {
                st.sub.wildcard = false;
                let names = &st.sub.names;
                st.known.retain(|k, _| names.contains(k));
            } else {
                st.sub.names.remove(&name);
                // Under a wildcard the resource stays subscribed.
                if !st.sub.wildcard {
                    st.known.remove(&name);
                }
            }
        }
        self.0.push(vec![type_url], respond)
    }

    /// Installs a new snapshot of the node; returns the responses for every subscribed
    /// type whose resources changed, in push order, with the warming follow-ups.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        self.0.on_snapshot(snapshot, respond)
    }
}

/// The response due for one type, if any: the subscribed resources whose version the
/// client does not have or that `forced` names, and the names it has that are gone.
fn respond(
    core: &mut Core,
    states: &mut HashMap<String, TypeState>,
    type_url: &str,
    forced: Option<&BTreeSet<String>>,
    deps: &mut Vec<Dep>,
) -> Option<DeltaDiscoveryResponse> {
    let snap = core.snapshot.clone()?;
    let st = states.get_mut(type_url)?;
    let all = snap.resources(type_url);

    let mut resources = Vec::new();
    if let Some(all) = all {
        let mut add = |r: &crate::Resource| {
            let again = forced.is_some_and(|f| f.contains(&r.name));
            if again || st.known.get(&r.name) != Some(&r.version) {
                deps.extend_from_slice(r.deps());
                resources.push(WireResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                });
            }
        };
        if st.sub.wildcard {
            all.values().for_each(|r| add(r));
        } else {
            st.sub
                .names
                .iter()
                .filter_map(|n| all.get(n))
                .for_each(|r| add(r));
        }
    }
    let mut removed: Vec<String> = st
        .known
        .keys()
        .filter(|k| all.is_none_or(|all| !all.contains_key(*k)))
        .cloned()
        .collect();
    removed.sort();

    if resources.is_empty() && removed.is_empty() && (st.responded || !st.sub.wildcard) {
        return None;
    }
    for r in &resources {
        st.known.insert(r.name.clone(), r.version.clone());
    }
    for k in &removed {
        st.known.remove(k);
    }
    let nonce = core.next_nonce();
    let version = snap.version(type_url);
    st.responded = true;
    st.sub.last_nonce = Some(nonce.clone());
    st.last_version.clone_from(&version);
    Some(DeltaDiscoveryResponse {
        system_version_info: version,
        resources,
        type_url: type_url.to_string(),
        removed_resources: removed,
        nonce,
        ..Default::default()
    })
}

impl Protocol for State {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const DELTA: bool = true;

    fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        State::new(stream_id, callbacks)
    }

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn resumed(req: &DeltaDiscoveryRequest) -> bool {
        !req.initial_resource_versions.is_empty()
    }

    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Vec<DeltaDiscoveryResponse> {
        State::on_request(self, req)
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        State::on_snapshot(self, snapshot)
    }

    fn describe(resp: &DeltaDiscoveryResponse) -> Sent<'_> {
        Sent {
            type_url: &resp.type_url,
            version: &resp.system_version_info,
            nonce: &resp.nonce,
            resources: resp.resources.len(),
            removed: resp.removed_resources.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Event, Recorder, snapshot, warming_snapshot};
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    fn req(type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name.as_str()).collect()
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
        (State::new(9, rec.clone()), rec)
    }

    #[test]
    fn first_wildcard_request_gets_everything() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::CLUSTER, &[], &[], ""));
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), vec!["a", "b"]);
        assert!(out[0].removed_resources.is_empty());
        assert_eq!(
            out[0].system_version_info,
            base().version(type_url::CLUSTER)
        );
        let r = &out[0].resources[0];
        assert_eq!(
            r.resource.as_ref().map(|a| a.value.as_slice()),
            Some(&b"ca1"[..])
        );
        assert_eq!(
            r.version,
            base()
                .get(type_url::CLUSTER, "a")
                .map(|r| r.version.clone())
                .unwrap_or_default()
        );
    }

    #[test]
    fn empty_wildcard_type_gets_empty_first_response_only() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        let out = s.on_request(req("type.googleapis.com/x.Y", &["*"], &[], ""));
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
        assert!(
            s.on_snapshot(snapshot(&[(type_url::CLUSTER, "a", "ca1")]))
                .is_empty()
        );
    }

    #[test]
    fn named_request_gets_only_named_existing() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::ENDPOINT, &["b", "missing"], &[], ""));
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), vec!["b"]);
        // Subscribing one more name sends just that one.
        let out = s.on_request(req(type_url::ENDPOINT, &["a"], &[], ""));
        assert_eq!(names(&out[0]), vec!["a"]);
        // Named type that has nothing to send: no response.
        assert!(
            s.on_request(req(type_url::ROUTE, &["r"], &[], ""))
                .is_empty()
        );
    }

    #[test]
    fn ack_gives_no_response() {
        let (mut s, rec) = state();
        s.on_snapshot(base());
        let out = s.on_request(req(type_url::CLUSTER, &[], &[], ""));
        let v = out[0].system_version_info.clone();
        assert!(
            s.on_request(req(type_url::CLUSTER, &[], &[], "1"))
                .is_empty()
        );
        assert_eq!(
            rec.take(),
            vec![Event::Ack(type_url::CLUSTER.into(), v, "1".into())]
        );
    }

    #[test]
    fn nack_is_reported_and_not_resent() {
        let (mut s, rec) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::CLUSTER, &[], &[], ""));
        let mut nack = req(type_url::CLUSTER, &[], &[], "1");
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad cluster".into(),
            details: vec![],
        });
        assert!(s.on_request(nack).is_empty());
        assert_eq!(
            rec.take(),
            vec![Event::Nack(
                type_url::CLUSTER.into(),
                "".into(),
                "1".into(),
                "bad cluster".into()
            )]
        );
        assert!(s.on_snapshot(base()).is_empty());
    }

    #[test]
    fn changed_cluster_sends_only_it() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::CLUSTER, &[], &[], ""));
        s.on_request(req(type_url::ENDPOINT, &["a", "b"], &[], ""));
        let next = snapshot(&[
            (type_url::CLUSTER, "a", "ca1"),
            (type_url::CLUSTER, "b", "cb2"),
            (type_url::ENDPOINT, "a", "ea1"),
            (type_url::ENDPOINT, "b", "eb1"),
            (type_url::LISTENER, "l", "l1"),
        ]);
        let out = s.on_snapshot(next.clone());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, type_url::CLUSTER);
        assert_eq!(names(&out[0]), vec!["b"]);
        assert_eq!(out[0].system_version_info, next.version(type_url::CLUSTER));
    }

    #[test]
    fn removed_resource_is_reported() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::CLUSTER, &[], &[], ""));
        s.on_request(req(type_url::ENDPOINT, &["a", "b"], &[], ""));
        let out = s.on_snapshot(snapshot(&[
            (type_url::CLUSTER, "a", "ca1"),
            (type_url::ENDPOINT, "a", "ea1"),
        ]));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].type_url, type_url::CLUSTER);
        assert!(out[0].resources.is_empty());
        assert_eq!(out[0].removed_resources, vec!["b".to_string()]);
        assert_eq!(out[1].type_url, type_url::ENDPOINT);
        assert_eq!(out[1].removed_resources, vec!["b".to_string()]);
        // Gone entirely: everything the client has is removed.
        let out = s.on_snapshot(snapshot(&[(type_url::ENDPOINT, "a", "ea1")]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].removed_resources, vec!["a".to_string()]);
    }

    #[test]
    fn initial_versions_count_as_known() {
        let (mut s, _) = state();
        let snap = base();
        s.on_snapshot(snap.clone());
        let mut r = req(type_url::CLUSTER, &[], &[], "");
        r.initial_resource_versions = [
            (
                "a".to_string(),
                snap.get(type_url::CLUSTER, "a")
                    .map(|r| r.version.clone())
                    .unwrap_or_default(),
            ),
            ("b".to_string(), "old".to_string()),
            ("gone".to_string(), "old".to_string()),
        ]
        .into_iter()
        .collect();
        let out = s.on_request(r);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), vec!["b"]);
        assert_eq!(out[0].removed_resources, vec!["gone".to_string()]);
    }

    #[test]
    fn unsubscribe_then_resubscribe_resends() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::ENDPOINT, &["a", "b"], &[], ""));
        assert!(
            s.on_request(req(type_url::ENDPOINT, &[], &["a"], "1"))
                .is_empty()
        );
        let out = s.on_request(req(type_url::ENDPOINT, &["a"], &[], ""));
        assert_eq!(names(&out[0]), vec!["a"]);
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let (mut s, rec) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::ENDPOINT, &["a"], &[], ""));
        s.on_request(req(type_url::ENDPOINT, &["b"], &[], ""));
        assert!(
            s.on_request(req(type_url::ENDPOINT, &[], &[], "1"))
                .is_empty()
        );
        assert!(rec.take().is_empty(), "nonce 1 is stale: not an ACK");
        assert!(
            s.on_request(req(type_url::ENDPOINT, &[], &[], "2"))
                .is_empty()
        );
        assert_eq!(rec.take().len(), 1);
    }

    #[test]
    fn unchanged_snapshot_sends_nothing() {
        let (mut s, _) = state();
        s.on_snapshot(base());
        s.on_request(req(type_url::CLUSTER, &[], &[], ""));
        s.on_request(req(type_url::LISTENER, &[], &[], ""));
        s.on_request(req(type_url::ENDPOINT, &["a"], &[], ""));
        assert!(s.on_snapshot(base()).is_empty());
    }

    #[test]
    fn request_before_snapshot_is_answered_when_it_arrives() {
        let (mut s, _) = state();
        assert!(
            s.on_request(req(type_url::LISTENER, &[], &[], ""))
                .is_empty()
        );
        assert!(
            s.on_request(req(type_url::CLUSTER, &[], &[], ""))
                .is_empty()
        );
        let out = s.on_snapshot(base());
        let urls: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(urls, vec![type_url::CLUSTER, type_url::LISTENER]);
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
            let out = s.on_request(req(t, &names, &[], ""));
            let nonce = out.last().expect("a response").nonce.clone();
            assert!(s.on_request(req(t, &[], &[], &nonce)).is_empty());
        }
        s
    }

    fn kinds(out: &[DeltaDiscoveryResponse]) -> Vec<&str> {
        out.iter().map(|r| type_url::short(&r.type_url)).collect()
    }

    #[test]
    fn changed_eds_cluster_is_followed_by_its_unchanged_endpoints() {
        let mut s = warmed(warming_snapshot("v1", false, false));
        let out = s.on_snapshot(warming_snapshot("v2", false, false));
        assert_eq!(kinds(&out), vec!["cds", "eds"]);
        assert_eq!(names(&out[1]), vec!["a"]);
        assert!(
            s.on_snapshot(warming_snapshot("v2", false, false))
                .is_empty()
        );
    }

    #[test]
    fn changed_cluster_and_listener_are_followed_by_their_secrets() {
        let mut s = warmed(warming_snapshot("v1", false, true));
        let out = s.on_snapshot(warming_snapshot("v1", true, true));
        assert_eq!(kinds(&out), vec!["lds", "sds"]);
        assert_eq!(names(&out[1]), vec!["ca", "id"]);
        let out = s.on_snapshot(warming_snapshot("v2", true, true));
        assert_eq!(kinds(&out), vec!["cds", "eds", "sds"]);
    }

    #[test]
    fn name_subscribed_again_is_sent_again() {
        let mut s = warmed(warming_snapshot("v1", false, false));
        // The client had `a` and subscribes to it again (a new watch): it gets it.
        let out = s.on_request(req(type_url::ENDPOINT, &["a"], &[], ""));
        assert_eq!(kinds(&out), vec!["eds"]);
        assert_eq!(names(&out[0]), vec!["a"]);
    }

    #[test]
    fn reconnect_with_initial_versions_is_not_a_resubscription() {
        let (mut s, _) = state();
        let snap = warming_snapshot("v1", false, false);
        s.on_snapshot(snap.clone());
        let mut r = req(type_url::ENDPOINT, &["a"], &[], "");
        let version = snap
            .get(type_url::ENDPOINT, "a")
            .expect("a")
            .version
            .clone();
        r.initial_resource_versions = HashMap::from([("a".to_string(), version)]);
        assert!(s.on_request(r).is_empty(), "the client has it already");
    }
}
