//! Inspecting a zone's proxies from global (Kuma's `GlobalKDSService` reverse unary RPCs):
//! the zone opens three bidirectional streams on its KDS connection, `StreamXDSConfigs`,
//! `StreamStats` and `StreamClusters`; global sends a request (with a `request_id`) on the
//! stream of the zone that owns the proxy and waits for the response with that id; the zone
//! reads the proxy's Envoy admin with its own client (`crate::envoy_admin::client`) and
//! answers, an error travelling as text.
//!
//! Global's side is [`Forwarder`], the [`Admin`] of the global API; the zone's is
//! [`serve_zone`]. The streams are authenticated with the zone token like the sync RPCs.
//! Messages are Kuma's (`api/mesh/v1alpha1/kds.proto`), hand-written for prost; the three
//! responses share one wire layout (`request_id` = 1, `error` = 2, payload = 3), decoded
//! here by one type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::post;
use futures::StreamExt;
use kuma_core::Resource;
use kuma_core::resource::{ResourceKey, ResourceType};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{ZoneAuthenticator, grpc};
use crate::envoy_admin::{Admin, Error, Format, Op};
use crate::manager::{DISPLAY_NAME_LABEL, ResourceManager, ZONE_LABEL};

/// `StreamXDSConfigs`' path.
pub const XDS_CONFIGS: &str = "/kuma.mesh.v1alpha1.GlobalKDSService/StreamXDSConfigs";
/// `StreamStats`' path.
pub const STATS: &str = "/kuma.mesh.v1alpha1.GlobalKDSService/StreamStats";
/// `StreamClusters`' path.
pub const CLUSTERS: &str = "/kuma.mesh.v1alpha1.GlobalKDSService/StreamClusters";

/// How long global waits for a zone's answer (the zone's own admin call takes at most 5 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests a zone serves at once; more wait.
const ZONE_CONCURRENCY: usize = 8;

/// Kuma's `XDSConfigRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct XdsConfigRequest {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub resource_type: String,
    #[prost(string, tag = "3")]
    pub resource_name: String,
    #[prost(string, tag = "4")]
    pub resource_mesh: String,
    #[prost(bool, tag = "5")]
    pub include_eds: bool,
}

/// Kuma's `StatsRequest` (`format`: `AdminOutputFormat`, TEXT = 0, JSON = 1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsRequest {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub resource_type: String,
    #[prost(string, tag = "3")]
    pub resource_name: String,
    #[prost(string, tag = "4")]
    pub resource_mesh: String,
    #[prost(int32, tag = "5")]
    pub format: i32,
    #[prost(bool, tag = "6")]
    pub used_only: bool,
}

/// Kuma's `ClustersRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClustersRequest {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub resource_type: String,
    #[prost(string, tag = "3")]
    pub resource_name: String,
    #[prost(string, tag = "4")]
    pub resource_mesh: String,
    #[prost(int32, tag = "5")]
    pub format: i32,
}

/// Kuma's `XDSConfigResponse`, `StatsResponse` and `ClustersResponse` (same wire layout:
/// `oneof result { string error = 2; bytes config|stats|clusters = 3; }`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdminResponse {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(oneof = "AdminResult", tags = "2, 3")]
    pub result: Option<AdminResult>,
}

/// The `result` oneof of the responses.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdminResult {
    #[prost(string, tag = "2")]
    Error(String),
    #[prost(bytes, tag = "3")]
    Payload(Vec<u8>),
}

/// The three streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rpc {
    XdsConfigs,
    Stats,
    Clusters,
}

impl Rpc {
    fn of(op: &Op) -> Self {
        match op {
            Op::ConfigDump { .. } => Rpc::XdsConfigs,
            Op::Stats { .. } => Rpc::Stats,
            Op::Clusters { .. } => Rpc::Clusters,
        }
    }
}

fn format_code(f: Format) -> i32 {
    match f {
        Format::Text => 0,
        Format::Json => 1,
    }
}

fn format_of(code: i32) -> Format {
    if code == 1 {
        Format::Json
    } else {
        Format::Text
    }
}

/// A request as it goes on one of the streams.
enum Outgoing {
    Xds(XdsConfigRequest),
    Stats(StatsRequest),
    Clusters(ClustersRequest),
}

/// One zone's open stream of one kind.
struct ZoneStream {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Default)]
struct State {
    streams: HashMap<(String, Rpc), ZoneStream>,
    /// Requests waiting for their answer, with the stream they went out on: a stream that
    /// ends fails its requests at once ("zone is offline").
    pending: HashMap<String, (u64, oneshot::Sender<AdminResponse>)>,
}

/// Global's [`Admin`]: forwards to the proxy's zone over the zone's streams.
pub struct Forwarder {
    auth: Arc<dyn ZoneAuthenticator>,
    limit: usize,
    state: Mutex<State>,
    next_id: AtomicU64,
}

impl Forwarder {
    pub fn new(auth: Arc<dyn ZoneAuthenticator>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            auth,
            limit,
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The three streams as routes of the KDS server.
    pub fn router(self: &Arc<Self>) -> Router {
        fn route<M: prost::Message + Default + Send + 'static>(
            me: Arc<Forwarder>,
            path: &'static str,
            rpc: Rpc,
            pick: fn(Outgoing) -> Option<M>,
        ) -> Router {
            Router::new().route(
                path,
                post(move |req: axum::extract::Request| {
                    let me = me.clone();
                    let limit = me.limit;
                    grpc::serve(req, limit, move |r| me.clone().open(r, rpc, pick))
                }),
            )
        }
        route(self.clone(), XDS_CONFIGS, Rpc::XdsConfigs, |o| match o {
            Outgoing::Xds(m) => Some(m),
            _ => None,
        })
        .merge(route(self.clone(), STATS, Rpc::Stats, |o| match o {
            Outgoing::Stats(m) => Some(m),
            _ => None,
        }))
        .merge(route(self.clone(), CLUSTERS, Rpc::Clusters, |o| match o {
            Outgoing::Clusters(m) => Some(m),
            _ => None,
        }))
    }

    /// A zone opened one of the streams: authenticate it, record it as the zone's stream of
    /// that kind (the newest wins), route its responses to the waiting requests.
    async fn open<M: Send + 'static>(
        self: Arc<Self>,
        req: Request<Streaming<AdminResponse>>,
        rpc: Rpc,
        pick: fn(Outgoing) -> Option<M>,
    ) -> Result<Response<ReceiverStream<Result<M, Status>>>, Status> {
        let (metadata, extensions, mut responses) = req.into_parts();
        let zone = super::global::authenticate(self.auth.as_ref(), &metadata).await?;
        if let Some(a) = extensions.get::<kuma_xds::Admission>() {
            a.admit();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<Outgoing>(16);
        self.lock()
            .streams
            .insert((zone.clone(), rpc), ZoneStream { id, tx });
        let (out_tx, out_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                if let Some(m) = pick(o)
                    && out_tx.send(Ok(m)).await.is_err()
                {
                    break;
                }
            }
        });
        tracing::info!(%zone, ?rpc, "KDS: envoy admin stream opened");
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(resp)) = responses.next().await {
                let waiting = me.lock().pending.remove(&resp.request_id);
                if let Some((_, w)) = waiting {
                    let _ = w.send(resp);
                }
            }
            let mut st = me.lock();
            if st
                .streams
                .get(&(zone.clone(), rpc))
                .is_some_and(|s| s.id == id)
            {
                st.streams.remove(&(zone.clone(), rpc));
            }
            // Dropping their senders fails the requests that went out on this stream.
            st.pending.retain(|_, (stream, _)| *stream != id);
            drop(st);
            tracing::info!(%zone, ?rpc, "KDS: envoy admin stream closed");
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

#[async_trait]
impl Admin for Forwarder {
    async fn call(&self, proxy: &Resource, op: &Op) -> Result<Vec<u8>, Error> {
        let request_type = op.request_type();
        let fail = |reason: &str| Error::Kds {
            request_type,
            reason: reason.to_string(),
        };
        let labels = &proxy.meta.labels;
        let zone = labels
            .get(ZONE_LABEL)
            .ok_or_else(|| fail("the proxy has no kuma.io/zone label"))?;
        let name = labels
            .get(DISPLAY_NAME_LABEL)
            .cloned()
            .unwrap_or_else(|| proxy.meta.name.clone());
        let request_id = uuid::Uuid::new_v4().to_string();
        let (rtype, mesh) = (proxy.rtype().name().to_string(), proxy.meta.mesh.clone());
        let msg = match op {
            Op::ConfigDump { include_eds } => Outgoing::Xds(XdsConfigRequest {
                request_id: request_id.clone(),
                resource_type: rtype,
                resource_name: name,
                resource_mesh: mesh,
                include_eds: *include_eds,
            }),
            Op::Stats { format, used_only } => Outgoing::Stats(StatsRequest {
                request_id: request_id.clone(),
                resource_type: rtype,
                resource_name: name,
                resource_mesh: mesh,
                format: format_code(*format),
                used_only: *used_only,
            }),
            Op::Clusters { format } => Outgoing::Clusters(ClustersRequest {
                request_id: request_id.clone(),
                resource_type: rtype,
                resource_name: name,
                resource_mesh: mesh,
                format: format_code(*format),
            }),
        };
        let (wtx, wrx) = oneshot::channel();
        let tx = {
            let mut st = self.lock();
            let Some(s) = st.streams.get(&(zone.clone(), Rpc::of(op))) else {
                return Err(fail("zone is offline"));
            };
            let (tx, stream) = (s.tx.clone(), s.id);
            st.pending.insert(request_id.clone(), (stream, wtx));
            tx
        };
        // Forgets the waiter however this ends (answered, timed out, caller gone).
        struct Pending<'a>(&'a Forwarder, &'a str);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.lock().pending.remove(self.1);
            }
        }
        let _pending = Pending(self, &request_id);
        if tx.send(msg).await.is_err() {
            return Err(fail("zone is offline"));
        }
        let resp = match tokio::time::timeout(ANSWER_TIMEOUT, wrx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(fail("zone is offline")),
            Err(_) => return Err(fail("the zone did not answer in time")),
        };
        match resp.result {
            Some(AdminResult::Payload(b)) => Ok(b),
            Some(AdminResult::Error(e)) if !e.is_empty() => Err(fail(&e)),
            _ => Ok(Vec::new()),
        }
    }
}

/// The zone's side, for one KDS connection: opens the three streams on `channel` and
/// answers global's requests with `admin` (the zone's own client), looking each proxy up in
/// the zone's store. Returns when a stream ends.
pub async fn serve_zone(
    channel: Channel,
    metadata: MetadataMap,
    limit: usize,
    manager: Arc<ResourceManager>,
    admin: Arc<dyn Admin>,
) -> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(ZONE_CONCURRENCY));
    let ctx = ZoneCtx {
        manager,
        admin,
        gate,
    };
    let xds = zone_stream::<XdsConfigRequest>(
        channel.clone(),
        metadata.clone(),
        limit,
        XDS_CONFIGS,
        ctx.clone(),
        |r| {
            (
                r.request_id.clone(),
                r.resource_type.clone(),
                r.resource_name.clone(),
                r.resource_mesh.clone(),
                Op::ConfigDump {
                    include_eds: r.include_eds,
                },
            )
        },
    );
    let stats = zone_stream::<StatsRequest>(
        channel.clone(),
        metadata.clone(),
        limit,
        STATS,
        ctx.clone(),
        |r| {
            (
                r.request_id.clone(),
                r.resource_type.clone(),
                r.resource_name.clone(),
                r.resource_mesh.clone(),
                Op::Stats {
                    format: format_of(r.format),
                    used_only: r.used_only,
                },
            )
        },
    );
    let clusters = zone_stream::<ClustersRequest>(channel, metadata, limit, CLUSTERS, ctx, |r| {
        (
            r.request_id.clone(),
            r.resource_type.clone(),
            r.resource_name.clone(),
            r.resource_mesh.clone(),
            Op::Clusters {
                format: format_of(r.format),
            },
        )
    });
    tokio::select! {
        r = xds => r,
        r = stats => r,
        r = clusters => r,
    }
}

#[derive(Clone)]
struct ZoneCtx {
    manager: Arc<ResourceManager>,
    admin: Arc<dyn Admin>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl ZoneCtx {
    /// One request: the proxy from the store, then its admin.
    async fn answer(&self, rtype: &str, name: &str, mesh: &str, op: &Op) -> AdminResult {
        let Some(t) = ResourceType::from_name(rtype).filter(|t| {
            matches!(
                t,
                ResourceType::Dataplane | ResourceType::ZoneIngress | ResourceType::ZoneEgress
            )
        }) else {
            return AdminResult::Error(format!("unsupported resource type {rtype:?}"));
        };
        let key = ResourceKey::new(t, mesh, name);
        let res = match self.manager.get(&key).await {
            Ok(r) => r,
            Err(e) => return AdminResult::Error(e.to_string()),
        };
        match self.admin.call(&res, op).await {
            Ok(b) => AdminResult::Payload(b),
            Err(e) => AdminResult::Error(e.to_string()),
        }
    }
}

type Parse<Req> = fn(&Req) -> (String, String, String, String, Op);

async fn zone_stream<Req>(
    channel: Channel,
    metadata: MetadataMap,
    limit: usize,
    path: &'static str,
    ctx: ZoneCtx,
    parse: Parse<Req>,
) -> anyhow::Result<()>
where
    Req: prost::Message + Default + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<AdminResponse>(16);
    let mut req = Request::new(ReceiverStream::new(rx));
    *req.metadata_mut() = metadata;
    let mut requests = grpc::call::<_, Req, _>(channel, path, req, limit)
        .await
        .map_err(|e| anyhow::anyhow!("{path}: {}", e.message()))?;
    while let Some(msg) = requests.next().await {
        let r = msg.map_err(|e| anyhow::anyhow!("{path}: {}", e.message()))?;
        let (request_id, rtype, name, mesh, op) = parse(&r);
        let (ctx, tx) = (ctx.clone(), tx.clone());
        let Ok(permit) = ctx.gate.clone().acquire_owned().await else {
            break;
        };
        tokio::spawn(async move {
            let result = ctx.answer(&rtype, &name, &mesh, &op).await;
            drop(permit);
            let _ = tx
                .send(AdminResponse {
                    request_id,
                    result: Some(result),
                })
                .await;
        });
    }
    anyhow::bail!("global closed {path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_responses_share_kumas_wire_layout() {
        // XDSConfigResponse{request_id: "r", config: "{}"}: field 1 string, field 3 bytes.
        let wire = [0x0a, 0x01, b'r', 0x1a, 0x02, b'{', b'}'];
        let r = AdminResponse::decode(&wire[..]).unwrap();
        assert_eq!(r.request_id, "r");
        assert_eq!(r.result, Some(AdminResult::Payload(b"{}".to_vec())));
        let e = AdminResponse {
            request_id: "x".into(),
            result: Some(AdminResult::Error("zone is offline".into())),
        };
        let bytes = e.encode_to_vec();
        assert_eq!(bytes[3], 0x12, "error is field 2, length-delimited");
        // StatsRequest: format (5) and used_only (6) as Kuma numbers them.
        let s = StatsRequest {
            format: 1,
            used_only: true,
            ..Default::default()
        };
        assert_eq!(s.encode_to_vec(), vec![0x28, 0x01, 0x30, 0x01]);
    }
}
