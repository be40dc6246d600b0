//! The tonic adapter: `AggregatedDiscoveryService` over the state machines.
//!
//! Each ADS stream gets one task ([`run`]) which reads requests, watches the
//! node's entry in the [`SnapshotCache`] and writes responses into a bounded
//! mpsc channel that tonic drains as the response stream. No timers, no
//! shared lock while encoding: the only shared state touched per stream is
//! the cache map (briefly, on open and close) and the `watch` channel.
//!
//! A stream ends quietly (a `debug` log, then [`Callbacks::on_stream_closed`])
//! when the client half-closes or cancels, on a transport or decode error
//! (tonic reports Envoy's exit as an h2 `BrokenPipe`), or when the response
//! side is dropped. An empty node id on the first request ends it with
//! `InvalidArgument`; an error from [`Callbacks::on_stream_open`] with that
//! status.
//!
//! A transport that bounds what a stream may do before it is authenticated
//! puts an [`Admission`] in the request extensions: the server calls it once
//! [`Callbacks::on_stream_open`] accepted the stream (the callbacks are where
//! authentication happens), before anything is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, debug_span};

use crate::protocol::Protocol;
use crate::{Callbacks, Snapshot, SnapshotCache, StreamInfo, delta, sotw, type_url};

/// Default bound on the size of one decoded request (4 MiB).
pub const DEFAULT_MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Responses buffered per stream before the stream task waits for the
/// transport (a burst of one snapshot change is at most one per type).
const CHANNEL_CAPACITY: usize = 16;

/// Told once that a stream was accepted by [`Callbacks::on_stream_open`]; a
/// transport puts it in the HTTP request extensions of the stream (see the
/// module docs). Cloning shares the hook.
#[derive(Clone)]
pub struct Admission(Arc<dyn Fn() + Send + Sync>);

impl Admission {
    /// An admission calling `admitted` when the stream is accepted.
    pub fn new(admitted: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(admitted))
    }

    /// Calls the hook; the server does, once, when the stream is accepted.
    pub fn admit(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

/// The ADS gRPC service (SotW and delta) serving a [`SnapshotCache`].
#[derive(Clone)]
pub struct Server {
    cache: SnapshotCache,
    callbacks: Arc<dyn Callbacks>,
    next_stream_id: Arc<AtomicU64>,
    max_decoding_message_size: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("cache", &self.cache)
            .field("next_stream_id", &self.next_stream_id)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `cache`, reporting to `callbacks`.
    pub fn new(cache: SnapshotCache, callbacks: Arc<dyn Callbacks>) -> Self {
        Self {
            cache,
            callbacks,
            next_stream_id: Arc::new(AtomicU64::new(1)),
            max_decoding_message_size: DEFAULT_MAX_DECODING_MESSAGE_SIZE,
        }
    }

    /// Overrides the request size bound of [`into_service`](Self::into_service)
    /// (default [`DEFAULT_MAX_DECODING_MESSAGE_SIZE`]).
    pub fn with_max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = limit;
        self
    }

    /// The tonic service, ready for `tonic::transport::Server::add_service`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        let limit = self.max_decoding_message_size;
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(limit)
    }

    fn start<P, S>(
        &self,
        remote_addr: Option<SocketAddr>,
        metadata: MetadataMap,
        admission: Option<Admission>,
        requests: S,
    ) -> ReceiverStream<Result<P::Response, Status>>
    where
        P: Protocol,
        S: Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let ctx = Ctx {
            stream_id,
            cache: self.cache.clone(),
            callbacks: self.callbacks.clone(),
            metadata,
            remote_addr,
            admission,
        };
        let span = debug_span!(
            "ads",
            stream_id,
            delta = P::DELTA,
            node = tracing::field::Empty
        );
        tokio::spawn(run::<P, S>(ctx, requests, tx).instrument(span));
        ReceiverStream::new(rx)
    }
}

impl Server {
    /// Serves one delta stream whose requests arrive on `requests`, whatever carries them:
    /// the ADS method below, or another RPC speaking the same messages (zone sync, where the
    /// side serving resources may even be the gRPC client). Returns the responses to send.
    pub fn serve_delta<S>(
        &self,
        remote_addr: Option<SocketAddr>,
        metadata: MetadataMap,
        admission: Option<Admission>,
        requests: S,
    ) -> ReceiverStream<Result<DeltaDiscoveryResponse, Status>>
    where
        S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin + Send + 'static,
    {
        self.start::<delta::State, _>(remote_addr, metadata, admission, requests)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Server {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let remote_addr = request.remote_addr();
        let (metadata, extensions, requests) = request.into_parts();
        Ok(Response::new(self.start::<sotw::State, _>(
            remote_addr,
            metadata,
            extensions.get::<Admission>().cloned(),
            requests,
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let remote_addr = request.remote_addr();
        let (metadata, extensions, requests) = request.into_parts();
        Ok(Response::new(self.start::<delta::State, _>(
            remote_addr,
            metadata,
            extensions.get::<Admission>().cloned(),
            requests,
        )))
    }
}

/// Everything a stream task owns besides its channels.
struct Ctx {
    stream_id: u64,
    cache: SnapshotCache,
    callbacks: Arc<dyn Callbacks>,
    metadata: MetadataMap,
    remote_addr: Option<SocketAddr>,
    admission: Option<Admission>,
}

type Tx<P> = mpsc::Sender<Result<<P as Protocol>::Response, Status>>;

/// One stream, from its first request to its end.
async fn run<P, S>(ctx: Ctx, mut requests: S, tx: Tx<P>)
where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin + Send,
{
    let first = tokio::select! {
        r = requests.next() => r,
        () = tx.closed() => None,
    };
    let first = match first {
        Some(Ok(r)) => r,
        Some(Err(status)) => {
            debug!(%status, "stream ended before its first request");
            // Tell the client why (e.g. a frame that is not a DiscoveryRequest).
            let _ = tx.send(Err(status)).await;
            return;
        }
        None => {
            debug!("stream closed before its first request");
            return;
        }
    };
    let node = P::node(&first).cloned().unwrap_or_default();
    if node.id.is_empty() {
        debug!("first request without node id: closing stream");
        // The client may already be gone; nothing more to do then.
        let _ = tx
            .send(Err(Status::invalid_argument(
                "node.id is required on the first request",
            )))
            .await;
        return;
    }
    tracing::Span::current().record("node", node.id.as_str());
    let info = StreamInfo {
        stream_id: ctx.stream_id,
        node,
        metadata: ctx.metadata,
        delta: P::DELTA,
        remote_addr: ctx.remote_addr,
        resumed: P::resumed(&first),
    };
    if let Err(status) = ctx.callbacks.on_stream_open(&info).await {
        debug!(%status, "stream refused");
        let _ = tx.send(Err(status)).await;
        return;
    }
    if let Some(admission) = &ctx.admission {
        admission.admit();
    }
    debug!(remote_addr = ?info.remote_addr, "stream opened");
    serve::<P, S>(
        &ctx.cache,
        &ctx.callbacks,
        ctx.stream_id,
        &info.node.id,
        first,
        requests,
        &tx,
    )
    .await;
    ctx.callbacks.on_stream_closed(&info).await;
    ctx.cache.release(&info.node.id);
}

/// The request/snapshot loop of an opened stream; returns when it ends.
async fn serve<P, S>(
    cache: &SnapshotCache,
    callbacks: &Arc<dyn Callbacks>,
    stream_id: u64,
    node_id: &str,
    first: P::Request,
    mut requests: S,
    tx: &Tx<P>,
) where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin + Send,
{
    let mut watch = cache.watch(node_id);
    let mut machine = P::new(stream_id, callbacks.clone());
    let mut out = Vec::new();
    // Clone the Arc out so the watch's read lock is released at once.
    let current = watch.borrow_and_update().clone();
    if let Some(snapshot) = current {
        out.extend(machine.on_snapshot(snapshot));
    }
    out.extend(machine.on_request(first));
    let mut watching = true;
    // The snapshot last recorded as applied (see `SnapshotCache::is_applied`).
    let mut applied: Option<Arc<Snapshot>> = None;
    loop {
        for resp in out.drain(..) {
            if !send::<P>(callbacks, stream_id, tx, resp).await {
                debug!("response stream dropped: stream closed");
                return;
            }
        }
        if let Some(snap) = machine.settled()
            && !applied.as_ref().is_some_and(|a| Arc::ptr_eq(a, snap))
        {
            cache.mark_applied(node_id, snap);
            applied = Some(snap.clone());
        }
        tokio::select! {
            r = requests.next() => match r {
                Some(Ok(req)) => out = machine.on_request(req),
                Some(Err(status)) => {
                    debug!(%status, "stream ended by transport or decode error");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                None => {
                    debug!("client closed the stream");
                    return;
                }
            },
            changed = watch.changed(), if watching => match changed {
                Ok(()) => {
                    let current = watch.borrow_and_update().clone();
                    if let Some(snapshot) = current {
                        out = machine.on_snapshot(snapshot);
                    }
                }
                // Cannot happen while the cache holds the sender; keep
                // serving requests if it ever does.
                Err(_) => watching = false,
            },
            () = tx.closed() => {
                debug!("client cancelled the stream");
                return;
            }
        }
    }
}

/// Queues one response; `false` if the client is gone.
async fn send<P: Protocol>(
    callbacks: &Arc<dyn Callbacks>,
    stream_id: u64,
    tx: &Tx<P>,
    resp: P::Response,
) -> bool {
    let sent = P::describe(&resp);
    let (type_url, version, nonce) = (
        sent.type_url.to_string(),
        sent.version.to_string(),
        sent.nonce.to_string(),
    );
    debug!(
        type_url = type_url::short(&type_url),
        %version,
        %nonce,
        resources = sent.resources,
        removed = sent.removed,
        "sending"
    );
    if tx.send(Ok(resp)).await.is_err() {
        return false;
    }
    callbacks.on_response_sent(stream_id, &type_url, &version, &nonce);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use envoy_types::pb::envoy::config::core::v3::Node;

    use super::*;

    #[derive(Default)]
    struct Closes(AtomicUsize);

    #[async_trait]
    impl Callbacks for Closes {
        async fn on_stream_open(&self, _info: &StreamInfo) -> Result<(), Status> {
            Ok(())
        }
        async fn on_stream_closed(&self, _info: &StreamInfo) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn request(id: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: id.into(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn garbage_on_the_stream_ends_it_with_the_error() {
        let cache = SnapshotCache::new();
        let closes = Arc::new(Closes::default());
        let server = Server::new(cache.clone(), closes.clone());
        let requests = futures::stream::iter(vec![
            Ok(request("n")),
            Err(Status::internal("failed to decode Protobuf message")),
        ]);
        let mut out = server.start::<sotw::State, _>(None, MetadataMap::new(), None, requests);
        // No snapshot: nothing sent; the decode error is returned and ends the stream.
        let status = out
            .next()
            .await
            .expect("an error status")
            .expect_err("not a response");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(out.next().await.is_none());
        assert_eq!(closes.0.load(Ordering::SeqCst), 1);
        assert!(cache.node_ids().is_empty());
    }

    #[tokio::test]
    async fn stream_without_first_request_is_not_opened() {
        let closes = Arc::new(Closes::default());
        let server = Server::new(SnapshotCache::new(), closes.clone());
        let requests = futures::stream::iter(Vec::<Result<DiscoveryRequest, Status>>::new());
        let mut out = server.start::<sotw::State, _>(None, MetadataMap::new(), None, requests);
        assert!(out.next().await.is_none());
        assert_eq!(closes.0.load(Ordering::SeqCst), 0);
    }

    /// Refuses node ids starting with `bad`.
    struct Picky;

    #[async_trait]
    impl Callbacks for Picky {
        async fn on_stream_open(&self, info: &StreamInfo) -> Result<(), Status> {
            if info.node.id.starts_with("bad") {
                return Err(Status::unauthenticated("no"));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_admission_is_told_only_of_an_accepted_stream() {
        for (id, admitted) in [("good", 1), ("bad", 0), ("", 0)] {
            let count = Arc::new(AtomicUsize::new(0));
            let c = count.clone();
            let admission = Admission::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            });
            let server = Server::new(SnapshotCache::new(), Arc::new(Picky));
            let (tx, rx) = mpsc::channel(4);
            let requests = ReceiverStream::new(rx).map(Ok::<DiscoveryRequest, Status>);
            let mut out =
                server.start::<sotw::State, _>(None, MetadataMap::new(), Some(admission), requests);
            tx.send(request(id)).await.unwrap();
            if admitted == 0 {
                let status = out.next().await.expect("a status").expect_err("refused");
                assert_ne!(status.code(), tonic::Code::Ok);
            } else {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                while count.load(Ordering::SeqCst) == 0 {
                    assert!(tokio::time::Instant::now() < deadline, "never admitted");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            drop(tx);
            while out.next().await.is_some() {}
            assert_eq!(count.load(Ordering::SeqCst), admitted, "node {id:?}");
        }
    }

    #[tokio::test]
    async fn a_snapshot_counts_as_applied_once_every_response_is_answered() {
        use crate::test_support::any_res;
        let cache = SnapshotCache::new();
        let server = Server::new(cache.clone(), Arc::new(Closes::default()));
        let (tx, rx) = mpsc::channel(4);
        let requests = ReceiverStream::new(rx).map(Ok::<DiscoveryRequest, Status>);
        let snapshot =
            |body: &str| Arc::new(Snapshot::from_iter([any_res(type_url::CLUSTER, "c", body)]));
        cache.set("n", snapshot("v1"));
        let mut out = server.start::<sotw::State, _>(None, MetadataMap::new(), None, requests);
        tx.send(request("n")).await.unwrap();
        let resp = out.next().await.expect("a response").expect("not an error");
        assert!(!cache.is_applied("n"), "sent, not answered yet");
        let ack = DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        };
        tx.send(ack).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while !cache.is_applied("n") {
            assert!(tokio::time::Instant::now() < deadline, "never applied");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // A new snapshot is not applied until its response is answered too.
        cache.set("n", snapshot("v2"));
        assert!(!cache.is_applied("n"));
        let resp = out.next().await.expect("a response").expect("not an error");
        assert!(!cache.is_applied("n"));
        let nack = DiscoveryRequest {
            response_nonce: resp.nonce,
            type_url: type_url::CLUSTER.into(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                message: "no".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        tx.send(nack).await.unwrap();
        while !cache.is_applied("n") {
            assert!(tokio::time::Instant::now() < deadline, "a NACK answers too");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
