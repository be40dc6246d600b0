//! Helpers shared by the unit tests of the state machines.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use envoy_types::pb::google::protobuf::Any;

use crate::{Callbacks, Resource, Snapshot, StreamInfo};

/// A callback observed by [`Recorder`]: (type URL, version, nonce[, message]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ack(String, String, String),
    Nack(String, String, String, String),
}

/// Callbacks that record ACKs and NACKs.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

#[async_trait]
impl Callbacks for Recorder {
    async fn on_stream_open(&self, _info: &StreamInfo) -> Result<(), tonic::Status> {
        Ok(())
    }

    fn on_ack(&self, _stream_id: u64, type_url: &str, version: &str, nonce: &str) {
        self.0.lock().expect("not poisoned").push(Event::Ack(
            type_url.into(),
            version.into(),
            nonce.into(),
        ));
    }

    fn on_nack(&self, _stream_id: u64, type_url: &str, version: &str, nonce: &str, message: &str) {
        self.0.lock().expect("not poisoned").push(Event::Nack(
            type_url.into(),
            version.into(),
            nonce.into(),
            message.into(),
        ));
    }
}

/// A resource whose body bytes are `body`.
pub fn any_res(type_url: &str, name: &str, body: &str) -> Arc<Resource> {
    Arc::new(Resource::new(
        name,
        Any {
            type_url: type_url.into(),
            value: body.as_bytes().to_vec(),
        },
    ))
}

/// A snapshot from (type URL, name, body) triples.
pub fn snapshot(items: &[(&str, &str, &str)]) -> Arc<Snapshot> {
    Arc::new(items.iter().map(|(t, n, b)| any_res(t, n, b)).collect())
}

/// A snapshot from packed resources (name, body).
pub fn packed(items: Vec<(&str, Any)>) -> Arc<Snapshot> {
    Arc::new(
        items
            .into_iter()
            .map(|(n, b)| Arc::new(Resource::new(n, b)))
            .collect(),
    )
}

/// A resource body of a type with no warming dependencies.
pub fn plain(type_url: &str, body: &str) -> Any {
    Any {
        type_url: type_url.into(),
        value: body.as_bytes().to_vec(),
    }
}

/// A mesh-like snapshot for the warming tests: EDS cluster `a` (mTLS secrets `id`/`ca` when
/// `tls`, `tag` distinguishing versions), its endpoints, listener `l` (same secrets), and
/// the secrets.
pub fn warming_snapshot(cluster_tag: &str, listener_tls: bool, tls: bool) -> Arc<Snapshot> {
    use crate::type_url;
    use crate::warming::tests::{eds_cluster, listener};
    let secrets = tls.then_some(("id", "ca"));
    packed(vec![
        ("a", eds_cluster("a", "", cluster_tag, secrets)),
        ("a", plain(type_url::ENDPOINT, "ea1")),
        ("l", listener("l", secrets.filter(|_| listener_tls), None)),
        ("id", plain(type_url::SECRET, "id1")),
        ("ca", plain(type_url::SECRET, "ca1")),
    ])
}
