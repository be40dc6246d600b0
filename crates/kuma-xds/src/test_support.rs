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
