//! What the SotW and delta state machines share: the per-stream core (snapshot, nonce
//! counter, callbacks), the per-type subscription with its ACK bookkeeping, and the push
//! order with the warming follow-ups.
//!
//! Push order: after a snapshot change every subscribed type is considered in
//! [`type_url::push_rank`] order (SDS, CDS, EDS, LDS, RDS, the rest); after a request, its
//! own type. A response that adds or changes a resource with warming dependencies
//! ([`Resource::deps`]) forces those dependencies to be sent again even when unchanged: the
//! ones whose type comes later in the order ride in its normal slot (EDS after CDS, RDS after
//! LDS), the others (SDS after CDS/LDS) in a follow-up response after the pass, so Envoy
//! always gets them after the resource that waits for them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::google::rpc::Status as RpcStatus;
use tracing::{debug, warn};

use crate::warming::Dep;
use crate::{Callbacks, Resource, Snapshot, type_url};

/// Names a response must carry again whatever their version, by type URL.
pub(crate) type Forced = HashMap<&'static str, BTreeSet<String>>;

/// The subscription of one type on one stream and its nonce bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Sub {
    /// Everything of the type, whatever `names` says.
    pub wildcard: bool,
    /// Explicitly subscribed names (without `*`).
    pub names: BTreeSet<String>,
    /// Nonce of the last response of this type.
    pub last_nonce: Option<String>,
    /// The last nonce the client ACKed.
    pub acked_nonce: Option<String>,
}

/// What the `response_nonce` of a request says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// No nonce, or one from an earlier stream (nothing sent on this one yet).
    Fresh,
    /// The client accepted our last response.
    Ack,
    /// The client accepted our last response and had already said so: it asks again for
    /// the same thing (Envoy does when a new watch starts on names it already had).
    AckAgain,
    /// The client rejected our last response.
    Nack(&'a str),
    /// An answer to an older response: ours is in flight.
    Stale,
}

impl Sub {
    /// Classifies the nonce of a request and records an ACK.
    pub fn reply<'a>(&mut self, nonce: &str, error: Option<&'a RpcStatus>) -> Reply<'a> {
        if nonce.is_empty() {
            return Reply::Fresh;
        }
        match &self.last_nonce {
            None => Reply::Fresh,
            Some(last) if last != nonce => Reply::Stale,
            Some(_) => match error {
                Some(e) => Reply::Nack(&e.message),
                None if self.acked_nonce.as_deref() == Some(nonce) => Reply::AckAgain,
                None => {
                    self.acked_nonce = Some(nonce.to_string());
                    Reply::Ack
                }
            },
        }
    }
}

/// Per-stream state common to both protocols.
pub(crate) struct Core {
    pub stream_id: u64,
    pub callbacks: Arc<dyn Callbacks>,
    pub snapshot: Option<Arc<Snapshot>>,
    nonce: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("stream_id", &self.stream_id)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        Self {
            stream_id,
            callbacks,
            snapshot: None,
            nonce: 0,
        }
    }

    /// The nonce of the next response.
    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// Installs a snapshot; `false` when it is the one already installed.
    pub fn install(&mut self, snapshot: Arc<Snapshot>) -> bool {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &snapshot))
        {
            return false;
        }
        self.snapshot = Some(snapshot);
        true
    }

    /// Logs an ACK or NACK and tells the callbacks; `version` is what the callbacks get.
    pub fn report(&self, type_url: &str, reply: &Reply<'_>, version: &str, nonce: &str) {
        let short = type_url::short(type_url);
        let stream_id = self.stream_id;
        match reply {
            Reply::Ack | Reply::AckAgain => {
                debug!(stream_id, type_url = short, %version, %nonce, again = *reply == Reply::AckAgain, "ACK");
                if *reply == Reply::Ack {
                    self.callbacks.on_ack(stream_id, type_url, version, nonce);
                }
            }
            Reply::Nack(message) => {
                warn!(stream_id, type_url = short, %version, %nonce, %message, "NACK");
                self.callbacks
                    .on_nack(stream_id, type_url, version, nonce, message);
            }
            Reply::Stale => {
                debug!(stream_id, type_url = short, %nonce, "stale request")
            }
            Reply::Fresh => {}
        }
    }
}

/// Builds the response due for one type of a stream (see [`push`]): the stream core, the
/// per-type states, the type URL, the names forced by warming, and where to add the
/// dependencies of what it adds or changes.
pub(crate) type Respond<T, R> = fn(
    &mut Core,
    &mut HashMap<String, T>,
    &str,
    Option<&BTreeSet<String>>,
    &mut Vec<Dep>,
) -> Option<R>;

/// A stream's core plus its per-type state `T` (SotW or delta), with what both protocols do
/// the same way around their own `respond`.
#[derive(Debug)]
pub(crate) struct Machine<T> {
    pub core: Core,
    pub types: HashMap<String, T>,
}

impl<T> Machine<T> {
    pub fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self {
        Self {
            core: Core::new(stream_id, callbacks),
            types: HashMap::new(),
        }
    }

    /// Installs a snapshot; the responses of every subscribed type, in push order, with the
    /// warming follow-ups (none when it is the snapshot already installed).
    pub fn on_snapshot<R>(&mut self, snapshot: Arc<Snapshot>, respond: Respond<T, R>) -> Vec<R> {
        if !self.core.install(snapshot) {
            return Vec::new();
        }
        let types = self.types.keys().cloned().collect();
        self.push(types, respond)
    }

    /// The responses of `types` and their warming follow-ups.
    pub fn push<R>(&mut self, types: Vec<String>, respond: Respond<T, R>) -> Vec<R> {
        let (core, states) = (&mut self.core, &mut self.types);
        push(types, |t, forced, deps| {
            respond(core, states, t, forced, deps)
        })
    }
}

/// Produces the responses for `types` (in push order), then the follow-ups their warming
/// dependencies force. `respond(type_url, forced, deps)` builds the response due for one
/// type, if any, and adds to `deps` the dependencies of the resources it adds or changes.
pub(crate) fn push<R>(
    mut types: Vec<String>,
    mut respond: impl FnMut(&str, Option<&BTreeSet<String>>, &mut Vec<Dep>) -> Option<R>,
) -> Vec<R> {
    types.sort_by(|a, b| (type_url::push_rank(a), a).cmp(&(type_url::push_rank(b), b)));
    let mut forced = Forced::new();
    let mut out = Vec::new();
    let mut deps = Vec::new();
    for t in &types {
        let names = forced.remove(t.as_str());
        out.extend(respond(t, names.as_ref(), &mut deps));
        for d in deps.drain(..) {
            forced.entry(d.type_url).or_default().insert(d.name);
        }
    }
    // Dependencies whose slot has passed (or whose type was not in `types`).
    let mut late: Vec<(&'static str, BTreeSet<String>)> = forced.into_iter().collect();
    late.sort_by_key(|(t, _)| (type_url::push_rank(t), *t));
    for (t, names) in late {
        out.extend(respond(t, Some(&names), &mut deps));
        deps.clear();
    }
    out
}

/// Adds to `deps` the warming dependencies of the resources of `new` that are not in `old`
/// with the same version; both are sorted by name.
pub(crate) fn changed_deps(old: &[Arc<Resource>], new: &[&Arc<Resource>], deps: &mut Vec<Dep>) {
    let mut old = old.iter().peekable();
    for r in new {
        while old.next_if(|o| o.name < r.name).is_some() {}
        let same = old
            .peek()
            .is_some_and(|o| o.name == r.name && o.version == r.version);
        if !same {
            deps.extend_from_slice(r.deps());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_classified() {
        let mut sub = Sub::default();
        assert_eq!(sub.reply("", None), Reply::Fresh);
        assert_eq!(sub.reply("3", None), Reply::Fresh, "earlier stream's nonce");
        sub.last_nonce = Some("4".into());
        assert_eq!(sub.reply("3", None), Reply::Stale);
        let err = RpcStatus {
            message: "bad".into(),
            ..Default::default()
        };
        assert_eq!(sub.reply("4", Some(&err)), Reply::Nack("bad"));
        assert_eq!(sub.reply("4", None), Reply::Ack);
        assert_eq!(sub.reply("4", None), Reply::AckAgain);
    }

    #[test]
    fn late_dependencies_follow_in_push_order() {
        let order = std::cell::RefCell::new(Vec::new());
        let out = push(
            vec![
                type_url::LISTENER.into(),
                type_url::ENDPOINT.into(),
                type_url::CLUSTER.into(),
                type_url::SECRET.into(),
            ],
            |t, forced, deps| {
                order
                    .borrow_mut()
                    .push((type_url::short(t).to_string(), forced.cloned()));
                if t == type_url::CLUSTER {
                    deps.push(Dep {
                        type_url: type_url::ENDPOINT,
                        name: "e".into(),
                    });
                    deps.push(Dep {
                        type_url: type_url::SECRET,
                        name: "s".into(),
                    });
                }
                Some(t.to_string())
            },
        );
        let set = |n: &str| Some(BTreeSet::from([n.to_string()]));
        assert_eq!(
            order.into_inner(),
            vec![
                ("sds".to_string(), None),
                ("cds".to_string(), None),
                ("eds".to_string(), set("e")),
                ("lds".to_string(), None),
                ("sds".to_string(), set("s")),
            ]
        );
        assert_eq!(out.len(), 5);
    }
}
