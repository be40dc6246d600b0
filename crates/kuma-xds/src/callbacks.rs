//! Hooks the control plane plugs into the ADS server.
//!
//! [`Callbacks::on_stream_open`] is the only one that can refuse a stream;
//! the others observe. The ACK/NACK hooks are synchronous and called from the
//! stream's task, so they must be quick (bump a counter, log, record state).
//!
//! Lifecycle contract: `on_stream_closed` is called exactly once for every
//! stream whose `on_stream_open` returned `Ok`, and never otherwise (a stream
//! refused by `on_stream_open`, or one that ended before its first request,
//! has nothing to close).

use std::net::SocketAddr;

use async_trait::async_trait;
use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::metadata::MetadataMap;

/// Information about one ADS stream given to callbacks.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Process-unique id of the stream (a counter, starting at 1).
    pub stream_id: u64,
    /// The node from the first request; its `id` is never empty.
    pub node: Node,
    /// gRPC request metadata (headers) of the stream.
    pub metadata: MetadataMap,
    /// `true` for `DeltaAggregatedResources`, `false` for SotW.
    pub delta: bool,
    /// Peer address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The client already holds a configuration from an earlier stream (SotW: the first
    /// request carries a `version_info`; delta: `initial_resource_versions`): a proxy that
    /// reconnects, not one that starts.
    pub resumed: bool,
}

/// Hooks called by the ADS server. Every method but `on_stream_open` has a
/// no-op default.
#[async_trait]
pub trait Callbacks: Send + Sync + 'static {
    /// Called once, on the first request of a stream, before anything is
    /// sent. `Err(status)` closes the stream with that status (auth failure,
    /// bad node id...). The CP registers the proxy and sets its first snapshot
    /// here.
    async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), tonic::Status>;

    /// A response was handed to the transport.
    fn on_response_sent(&self, _stream_id: u64, _type_url: &str, _version: &str, _nonce: &str) {}

    /// The client accepted the response carrying `nonce`; `version` is the
    /// version it now runs (SotW `version_info`; for delta the type version we
    /// sent with that nonce).
    fn on_ack(&self, _stream_id: u64, _type_url: &str, _version: &str, _nonce: &str) {}

    /// The client rejected the response carrying `nonce`; `version` is the
    /// last version it accepted, `message` its `error_detail.message`.
    fn on_nack(
        &self,
        _stream_id: u64,
        _type_url: &str,
        _version: &str,
        _nonce: &str,
        _message: &str,
    ) {
    }

    /// Called when the stream ends for any reason, exactly once, and only if
    /// `on_stream_open` was called for it and returned `Ok`.
    async fn on_stream_closed(&self, _info: &StreamInfo) {}
}

/// Callbacks that accept every stream and observe nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopCallbacks;

#[async_trait]
impl Callbacks for NoopCallbacks {
    async fn on_stream_open(&self, _info: &StreamInfo) -> Result<(), tonic::Status> {
        Ok(())
    }
}
