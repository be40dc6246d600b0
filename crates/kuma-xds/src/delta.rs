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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use tracing::{debug, warn};

use crate::{Callbacks, Snapshot, type_url};

/// Per-type subscription and client-view state.
#[derive(Debug, Default)]
struct TypeState {
    /// Subscribed to everything of the type.
    wildcard: bool,
    /// Explicitly subscribed names (without `*`).
    names: BTreeSet<String>,
    /// Name → version of what the client has.
    known: HashMap<String, String>,
    /// A response of this type was produced on this stream.
    responded: bool,
    /// Nonce and `system_version_info` of the last response of this type.
    last_nonce: Option<String>,
    last_version: String,
    /// Version of the last ACKed response ("" before any).
    acked_version: String,
}

/// The delta state machine of one ADS stream.
pub struct State {
    stream_id: u64,
    callbacks: Arc<dyn Callbacks>,
    snapshot: Option<Arc<Snapshot>>,
    nonce: u64,
    types: HashMap<String, TypeState>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("delta::State")
            .field("stream_id", &self.stream_id)
            .field("nonce", &self.nonce)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A fresh stream: nothing subscribed, no snapshot yet.
    pub fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        Self {
            stream_id,
            callbacks,
            snapshot: None,
            nonce: 0,
            types: HashMap::new(),
        }
    }

    /// Handles one request; returns the response to send, if any.
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
                stream_id = self.stream_id,
                "delta request without type_url ignored"
            );
            return Vec::new();
        }
        let short = type_url::short(&type_url);
        let first = !self.types.contains_key(&type_url);
        let st = self.types.entry(type_url.clone()).or_default();

        if !response_nonce.is_empty() {
            match &st.last_nonce {
                Some(last) if *last == response_nonce => match &error_detail {
                    Some(err) => {
                        warn!(
                            stream_id = self.stream_id, type_url = short, version = %st.last_version,
                            nonce = %response_nonce, message = %err.message, "NACK"
                        );
                        self.callbacks.on_nack(
                            self.stream_id,
                            &type_url,
                            &st.acked_version,
                            &response_nonce,
                            &err.message,
                        );
                    }
                    None => {
                        debug!(
                            stream_id = self.stream_id, type_url = short, version = %st.last_version,
                            nonce = %response_nonce, "ACK"
                        );
                        st.acked_version.clone_from(&st.last_version);
                        self.callbacks.on_ack(
                            self.stream_id,
                            &type_url,
                            &st.last_version,
                            &response_nonce,
                        );
                    }
                },
                _ => debug!(
                    stream_id = self.stream_id, type_url = short, nonce = %response_nonce,
                    "stale ACK/NACK ignored"
                ),
            }
        }

        if first {
            st.wildcard = resource_names_subscribe.is_empty() && !type_url::is_named(&type_url);
            st.known = initial_resource_versions;
        }
        for name in resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(name);
            }
        }
        for name in resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
                let names = &st.names;
                st.known.retain(|k, _| names.contains(k));
            } else {
                st.names.remove(&name);
                // Under a wildcard the resource stays subscribed.
                if !st.wildcard {
                    st.known.remove(&name);
                }
            }
        }
        self.respond(&type_url).into_iter().collect()
    }

    /// Installs a new snapshot of the node; returns the responses for every
    /// subscribed type whose resources changed, in push order (SDS, CDS, EDS,
    /// LDS, RDS, then the rest by type URL).
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &snapshot))
        {
            return Vec::new();
        }
        self.snapshot = Some(snapshot);
        let mut urls: Vec<String> = self.types.keys().cloned().collect();
        urls.sort_by(|a, b| (type_url::push_rank(a), a).cmp(&(type_url::push_rank(b), b)));
        urls.iter().filter_map(|u| self.respond(u)).collect()
    }

    /// The response due for one type, if any.
    fn respond(&mut self, type_url: &str) -> Option<DeltaDiscoveryResponse> {
        let snap = self.snapshot.clone()?;
        let st = self.types.get_mut(type_url)?;
        let all = snap.resources(type_url);

        let mut resources = Vec::new();
        if let Some(all) = all {
            let mut add = |r: &crate::Resource| {
                if st.known.get(&r.name) != Some(&r.version) {
                    resources.push(WireResource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some(r.body.clone()),
                        ..Default::default()
                    });
                }
            };
            if st.wildcard {
                all.values().for_each(|r| add(r));
            } else {
                st.names
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

        if resources.is_empty() && removed.is_empty() && (st.responded || !st.wildcard) {
            return None;
        }
        for r in &resources {
            st.known.insert(r.name.clone(), r.version.clone());
        }
        for k in &removed {
            st.known.remove(k);
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let version = snap.version(type_url);
        st.responded = true;
        st.last_nonce = Some(nonce.clone());
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
}

impl crate::server::Protocol for State {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const DELTA: bool = true;

    fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        State::new(stream_id, callbacks)
    }

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Vec<DeltaDiscoveryResponse> {
        State::on_request(self, req)
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        State::on_snapshot(self, snapshot)
    }

    fn describe(resp: &DeltaDiscoveryResponse) -> crate::server::Sent<'_> {
        crate::server::Sent {
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
    use crate::test_support::{Event, Recorder, snapshot};
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
}
