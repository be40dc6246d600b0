//! What the tonic adapter ([`crate::server`]) needs from a state machine, SotW
//! ([`crate::sotw::State`]) or delta ([`crate::delta::State`]).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::{Callbacks, Snapshot};

/// A response as the adapter logs and reports it.
pub(crate) struct Sent<'a> {
    pub type_url: &'a str,
    pub version: &'a str,
    pub nonce: &'a str,
    pub resources: usize,
    pub removed: usize,
}

/// What the adapter needs from a state machine (SotW or delta).
pub(crate) trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const DELTA: bool;
    fn new(stream_id: u64, callbacks: Arc<dyn Callbacks>) -> Self;
    fn node(req: &Self::Request) -> Option<&Node>;
    /// Whether this (first) request shows a client that already holds a configuration.
    fn resumed(req: &Self::Request) -> bool;
    fn on_request(&mut self, req: Self::Request) -> Vec<Self::Response>;
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Self::Response>;
    fn describe(resp: &Self::Response) -> Sent<'_>;
}
