//! The two RPCs of Kuma's `kuma.mesh.v1alpha1.KDSSyncService`, both bidirectional streams
//! opened by the zone: `GlobalToZoneSync` (the zone sends `DeltaDiscoveryRequest`s, global
//! answers with `DeltaDiscoveryResponse`s) and `ZoneToGlobalSync` (the roles reversed on a
//! stream the zone still opens: the zone sends responses, global requests). Hand-written
//! tonic plumbing for a service with no generated code: a streaming handler as an axum route
//! on the server, a streaming call on the client.

use std::future::Future;
use std::sync::Arc;

use axum::response::IntoResponse;
use futures::Stream;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// `GlobalToZoneSync`'s path.
pub const GLOBAL_TO_ZONE: &str = "/kuma.mesh.v1alpha1.KDSSyncService/GlobalToZoneSync";
/// `ZoneToGlobalSync`'s path.
pub const ZONE_TO_GLOBAL: &str = "/kuma.mesh.v1alpha1.KDSSyncService/ZoneToGlobalSync";

/// A streaming handler as tonic's server wants it.
struct Handler<F>(F);

impl<Req, Resp, F, Fut, St> tonic::server::StreamingService<Req> for Handler<F>
where
    F: FnMut(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<St>, Status>> + Send + 'static,
    St: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    type Response = Resp;
    type ResponseStream = St;
    type Future = Fut;

    fn call(&mut self, request: Request<Streaming<Req>>) -> Fut {
        (self.0)(request)
    }
}

/// Serves one gRPC streaming request with `handler`; messages up to `limit` bytes both ways.
pub async fn serve<Req, Resp, F, Fut, St>(
    req: axum::extract::Request,
    limit: usize,
    handler: F,
) -> axum::response::Response
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Send + 'static,
    F: FnMut(Request<Streaming<Req>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<St>, Status>> + Send + 'static,
    St: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default())
        .apply_max_message_size_config(Some(limit), Some(limit));
    grpc.streaming(Handler(handler), req)
        .await
        .map(axum::body::Body::new)
        .into_response()
}

/// Opens a streaming call on `channel`: `outbound` is what this side sends.
pub async fn call<Out, In, S>(
    channel: Channel,
    path: &'static str,
    outbound: Request<S>,
    limit: usize,
) -> Result<Streaming<In>, Status>
where
    Out: Message + Send + Sync + 'static,
    In: Message + Default + Send + 'static,
    S: Stream<Item = Out> + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("KDS connection: {e}")))?;
    grpc.streaming(
        outbound,
        PathAndQuery::from_static(path),
        ProstCodec::<Out, In>::default(),
    )
    .await
    .map(Response::into_inner)
}

/// A channel to `address` (`grpcs://host:port` over TLS with `tls`, or `grpc://host:port`).
pub fn channel(address: &str, tls: Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<Channel> {
    let (secure, rest) = if let Some(r) = address.strip_prefix("grpcs://") {
        (true, r)
    } else if let Some(r) = address.strip_prefix("grpc://") {
        (false, r)
    } else {
        anyhow::bail!("multizone.zone.globalAddress: {address:?} is not grpcs://host:port");
    };
    let authority = rest.trim_end_matches('/').to_string();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))?
        .http2_keep_alive_interval(std::time::Duration::from_secs(5))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_timeout(std::time::Duration::from_secs(5));
    if !secure {
        return Ok(endpoint.connect_lazy());
    }
    let tls = tls.ok_or_else(|| anyhow::anyhow!("grpcs:// needs a TLS configuration"))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| anyhow::anyhow!("global address host {host:?}: {e}"))?;
    Ok(endpoint.connect_with_connector_lazy(tower::service_fn(
        move |_: tonic::codegen::http::Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let authority = authority.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
                tcp.set_nodelay(true)?;
                let s = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        },
    )))
}
