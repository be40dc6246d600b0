//! The simulated proxies: one task per proxy holding an ADS stream (SotW or delta) that
//! behaves like Envoy, each on its own HTTP/2 connection by default (or sharing one per
//! `streams_per_connection` proxies; TLS with ALPN h2, trusting the CP's CA).
//!
//! Envoy's behaviour reproduced: the first request of the stream carries the node (id
//! `<mesh>.<name>`, metadata `dataplane.resource` = the Dataplane JSON, as kuma-dp's
//! bootstrap does) and asks CDS and LDS by wildcard; every received EDS cluster is subscribed
//! to by name, and so is every SDS secret (and RDS route configuration) a cluster or listener
//! references; every response is ACKed with its version and nonce (NACKed if a resource does
//! not decode). A stream the CP ends is reopened with capped exponential backoff and jitter;
//! a proxy told to disconnect drops its stream at once.
//!
//! Each proxy keeps its [`Config`] per stream (a new stream starts empty, as a restarted
//! Envoy does) and a history of arrivals. Added or changed clusters and listeners warm as in
//! Envoy (see [`crate::record`]): they become active once their EDS / SDS / RDS dependencies
//! arrived after them, or when [`record::INIT_FETCH_TIMEOUT`] passes (counted per proxy; the
//! stream task wakes at the deadline). Scenario [`Goal`]s are checked against the active
//! configuration after each response and each timeout; a goal met by a timeout is met at the
//! deadline.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Any, ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::record::{self, Arrival, Check, Config, Decoded, Goal, GoalSet};
use crate::topology::Member;

/// Keep at most this many arrivals per proxy.
const HISTORY: usize = 512;

/// How the fleet talks to the CP.
#[derive(Debug, Clone)]
pub struct Options {
    /// Incremental (delta) xDS instead of state of the world.
    pub delta: bool,
    /// Streams sharing one HTTP/2 connection (1: each proxy has its own, as each Envoy does).
    pub streams_per_connection: usize,
}

/// What a proxy should be doing.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Desired {
    connected: bool,
    /// Bumped to make a connected proxy drop its stream and open a new one.
    epoch: u64,
}

/// Mutable state of one proxy.
#[derive(Default)]
pub struct State {
    /// Bumped when a stream starts or the configuration is invalidated: responses of an
    /// older session are dropped.
    session: u64,
    /// A stream is open (started; it may not have received anything yet).
    pub connected: bool,
    /// Streams opened so far.
    pub streams: u64,
    pub config: Config,
    pub goal: Option<Goal>,
    pub history: Vec<Arrival>,
    /// Why the last stream ended, if it failed.
    pub last_error: Option<String>,
    /// Encoded size of every response received (all streams), bytes.
    pub bytes_received: u64,
}

/// One simulated proxy.
pub struct Proxy {
    pub member: Member,
    pub node_id: String,
    metadata: Struct,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    state: Mutex<State>,
    control: watch::Sender<Desired>,
}

impl Proxy {
    /// The proxy's state (a short critical section: never held across an await).
    pub fn state(&self) -> MutexGuard<'_, State> {
        // Only plain data is touched under the lock; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node(&self) -> Node {
        Node {
            id: self.node_id.clone(),
            cluster: crate::topology::Topology::service_name(self.member.service),
            user_agent_name: "envoy".into(),
            metadata: Some(self.metadata.clone()),
            ..Default::default()
        }
    }

    fn begin_session(&self) -> u64 {
        let mut st = self.state();
        st.session += 1;
        st.connected = true;
        st.streams += 1;
        st.config.reset();
        st.session
    }

    fn end_session(&self, session: u64, error: Option<String>) {
        let mut st = self.state();
        if st.session == session {
            st.connected = false;
        }
        if error.is_some() {
            st.last_error = error;
        }
    }

    /// Applies a response of `session` (dropped when stale): warming resources whose
    /// deadline passed become active first, then `f` stores the response, then the warming
    /// resources whose dependencies all arrived become active. `None` when stale; else `f`'s
    /// result and the next warming deadline.
    fn apply<R>(
        &self,
        session: u64,
        arrival: Arrival,
        version: &str,
        now: Instant,
        f: impl FnOnce(&mut Config) -> R,
    ) -> Option<(R, Option<Instant>)> {
        let mut guard = self.state();
        let st = &mut *guard;
        st.bytes_received += arrival.bytes;
        if st.session != session {
            return None;
        }
        expire(&self.node_id, st, now);
        let r = f(&mut st.config);
        st.config.promote_ready();
        let t = st
            .config
            .types
            .entry(arrival.r#type)
            .or_insert(record::TypeInfo {
                version: String::new(),
                at: now,
                responses: 0,
            });
        t.version = version.to_string();
        t.at = now;
        t.responses += 1;
        if st.history.len() < HISTORY {
            st.history.push(arrival);
        }
        if let Some(g) = st.goal.as_mut() {
            g.evaluate(&st.config, now);
        }
        Some((r, st.config.next_deadline()))
    }

    /// Warming resources of `session` whose deadline passed by `now` become active; the next
    /// deadline, or `None` when the session is stale.
    fn expire(&self, session: u64, now: Instant) -> Option<Option<Instant>> {
        let mut guard = self.state();
        let st = &mut *guard;
        if st.session != session {
            return None;
        }
        expire(&self.node_id, st, now);
        Some(st.config.next_deadline())
    }

    fn nacked(&self) {
        self.state().config.nacks += 1;
    }
}

/// Makes active every warming resource whose `init_fetch_timeout` passed by `now`, checking
/// the goal at each deadline (when a real Envoy would have used the resource).
fn expire(node: &str, st: &mut State, now: Instant) {
    if tracing::enabled!(tracing::Level::DEBUG)
        && st.config.next_deadline().is_some_and(|d| d <= now)
    {
        tracing::debug!(node, warming = ?st.config.describe_warming(), "init_fetch_timeout");
    }
    while let Some(at) = st.config.expire_next(now) {
        if let Some(g) = st.goal.as_mut() {
            g.evaluate(&st.config, at);
        }
    }
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

fn pb_string(s: impl Into<String>) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn pb_struct(fields: Vec<(&str, PbValue)>) -> PbValue {
    PbValue {
        kind: Some(Kind::StructValue(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })),
    }
}

/// Node metadata as kuma-cp's bootstrap puts it in Envoy's bootstrap.
fn metadata(member: &Member, delta: bool) -> Struct {
    let features = if delta {
        vec![pb_string("feature-delta-grpc")]
    } else {
        vec![]
    };
    let mut fields = vec![
        (
            "dataplane.resource",
            pb_string(member.dataplane.to_string()),
        ),
        ("dataplane.proxyType", pb_string("dataplane")),
        ("dataplane.admin.port", pb_string("9901")),
        ("dataplane.admin.address", pb_string("127.0.0.1")),
        ("dataplane.readinessReporter.port", pb_string("9902")),
        (
            "features",
            PbValue {
                kind: Some(Kind::ListValue(ListValue { values: features })),
            },
        ),
        (
            "version",
            pb_struct(vec![
                (
                    "kumaDp",
                    pb_struct(vec![("version", pb_string(env!("CARGO_PKG_VERSION")))]),
                ),
                (
                    "envoy",
                    pb_struct(vec![("version", pb_string("kuma-xds-load"))]),
                ),
            ]),
        ),
    ];
    fields.extend(
        member
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), pb_string(v.clone()))),
    );
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// Shared by every proxy task: where the CP is and the HTTP/2 connections.
struct Shared {
    tls: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    server_name: rustls::pki_types::ServerName<'static>,
    opts: Options,
    channels: Mutex<HashMap<usize, Channel>>,
    t0: Instant,
}

impl Shared {
    /// The connection of `index`'s group, created (lazily connecting) when missing.
    fn channel(&self, index: usize) -> Channel {
        let slot = index / self.opts.streams_per_connection.max(1);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(slot)
            .or_insert_with(|| {
                let tls = self.tls.clone();
                let addr = self.addr;
                let name = self.server_name.clone();
                Endpoint::from_static("http://kuma-cp")
                    .initial_connection_window_size(Some(16 * 1024 * 1024))
                    .connect_with_connector_lazy(tower::service_fn(
                        move |_: tonic::codegen::http::Uri| {
                            let tls = tls.clone();
                            let name = name.clone();
                            async move {
                                let tcp = tokio::net::TcpStream::connect(addr).await?;
                                tcp.set_nodelay(true)?;
                                let s = tls.connect(name, tcp).await?;
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                            }
                        },
                    ))
            })
            .clone()
    }
}

/// The simulated proxies.
pub struct Fleet {
    pub proxies: Vec<Arc<Proxy>>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The TLS client configuration: trust `ca_pem`, ALPN h2.
fn tls_config(ca_pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.context("the CP's CA PEM")?)
            .context("the CP's CA certificate")?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

impl Fleet {
    /// Creates the proxies (none connected yet). `tokens[i]` is the dataplane token of
    /// `members[i]`, if the CP requires tokens.
    pub fn new(
        cp: &crate::cp::ControlPlane,
        opts: Options,
        members: Vec<Member>,
        tokens: Vec<Option<Arc<str>>>,
    ) -> anyhow::Result<Self> {
        let server_name = rustls::pki_types::ServerName::try_from(cp.server_name.clone())
            .context("the CP's TLS server name")?;
        let shared = Arc::new(Shared {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config(&cp.ca_pem)?)),
            addr: cp.dp_server,
            server_name,
            opts: opts.clone(),
            channels: Mutex::new(HashMap::new()),
            t0: Instant::now(),
        });
        let mut fleet = Self {
            proxies: Vec::new(),
            shared,
            tasks: Vec::new(),
        };
        for (member, token) in members.into_iter().zip(tokens) {
            fleet.add(member, token)?;
        }
        Ok(fleet)
    }

    /// Adds a proxy (not connected); its fleet index must be `proxies.len()`.
    pub fn add(&mut self, member: Member, token: Option<Arc<str>>) -> anyhow::Result<usize> {
        anyhow::ensure!(
            member.index == self.proxies.len(),
            "member index {} out of order",
            member.index
        );
        let mesh = member.dataplane["mesh"].as_str().unwrap_or("default");
        let token = match token {
            Some(t) => Some(t.parse().context("the dataplane token is not ASCII")?),
            None => None,
        };
        let (control, _) = watch::channel(Desired {
            connected: false,
            epoch: 0,
        });
        let proxy = Arc::new(Proxy {
            node_id: format!("{mesh}.{}", member.name),
            metadata: metadata(&member, self.shared.opts.delta),
            member,
            token,
            state: Mutex::new(State::default()),
            control,
        });
        let index = proxy.member.index;
        self.tasks
            .push(tokio::spawn(run(proxy.clone(), self.shared.clone())));
        self.proxies.push(proxy);
        Ok(index)
    }

    /// When the fleet started (origin of history times).
    pub fn t0(&self) -> Instant {
        self.shared.t0
    }

    /// Tells these proxies to connect.
    pub fn connect(&self, indices: impl IntoIterator<Item = usize>) {
        for i in indices {
            self.proxies[i].control.send_modify(|d| d.connected = true);
        }
    }

    /// Tells these proxies to drop their streams and stay away.
    pub fn disconnect(&self, indices: impl IntoIterator<Item = usize>) {
        for i in indices {
            self.proxies[i].control.send_modify(|d| d.connected = false);
        }
    }

    /// A network blip: every connection is torn down, every connected proxy forgets its
    /// configuration and opens a new stream at once, on new connections. The goal `check` is
    /// installed on every connected proxy after its configuration was dropped and before
    /// its new stream starts; the proxies in it are returned with the goal.
    pub fn reconnect_all(&self, check: impl Fn(usize) -> Check) -> (Vec<usize>, Arc<GoalSet>) {
        self.shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let connected: Vec<usize> = self
            .proxies
            .iter()
            .filter(|p| p.control.borrow().connected)
            .map(|p| p.member.index)
            .collect();
        for &i in &connected {
            let mut st = self.proxies[i].state();
            st.session += 1;
            st.connected = false;
            st.config.reset();
        }
        let set = self.expect(&connected, check);
        for &i in &connected {
            self.proxies[i].control.send_modify(|d| d.epoch += 1);
        }
        (connected, set)
    }

    /// Number of HTTP/2 connections currently set up (or being set up).
    pub fn connections(&self) -> usize {
        self.shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Installs a goal on `targets` (replacing any previous one), `check(i)` for proxy `i`,
    /// and evaluates it at once.
    pub fn expect(&self, targets: &[usize], check: impl Fn(usize) -> Check) -> Arc<GoalSet> {
        let set = GoalSet::new(targets.len());
        let now = Instant::now();
        for &i in targets {
            let mut guard = self.proxies[i].state();
            let st = &mut *guard;
            // A warming timeout already due belongs to the configuration before the goal.
            if st.connected {
                expire(&self.proxies[i].node_id, st, now);
            }
            let mut goal = Goal {
                check: check(i),
                met: None,
                set: set.clone(),
            };
            goal.evaluate(&st.config, now);
            st.goal = Some(goal);
        }
        set
    }

    /// Waits for the goal on `targets`; each proxy's time from `origin` to meeting it. Fails
    /// after `timeout` naming the proxies still waiting and what they hold (`describe`).
    pub async fn wait(
        &self,
        set: &GoalSet,
        targets: &[usize],
        origin: Instant,
        timeout: Duration,
        describe: impl Fn(&Proxy, &State) -> String,
    ) -> anyhow::Result<Vec<Duration>> {
        let ok = set
            .wait(tokio::time::Instant::from_std(origin + timeout))
            .await;
        if !ok {
            let mut missing = Vec::new();
            for &i in targets {
                let p = &self.proxies[i];
                let st = p.state();
                if st.goal.as_ref().is_some_and(|g| g.met.is_none()) {
                    missing.push(format!(
                        "{} (connected: {}, streams: {}, last error: {:?}): {}",
                        p.node_id,
                        st.connected,
                        st.streams,
                        st.last_error,
                        describe(p, &st)
                    ));
                }
            }
            let n = missing.len();
            missing.truncate(5);
            anyhow::bail!(
                "{n} of {} proxies did not converge within {timeout:?}; first ones:\n  {}",
                targets.len(),
                missing.join("\n  ")
            );
        }
        Ok(targets
            .iter()
            .filter_map(|&i| {
                let st = self.proxies[i].state();
                st.goal
                    .as_ref()
                    .and_then(|g| g.met)
                    .map(|m| m.saturating_duration_since(origin))
            })
            .collect())
    }

    /// Removes every goal.
    pub fn clear_goals(&self) {
        for p in &self.proxies {
            p.state().goal = None;
        }
    }

    /// Warming clusters and listeners that timed out (Envoy's `init_fetch_timeout`), summed
    /// over every proxy and stream; warmings past their deadline are counted first.
    pub fn init_fetch_timeouts(&self) -> u64 {
        let now = Instant::now();
        self.proxies
            .iter()
            .map(|p| {
                let mut st = p.state();
                if st.connected {
                    expire(&p.node_id, &mut st, now);
                }
                st.config.init_fetch_timeouts
            })
            .sum()
    }

    /// Bytes of responses received by every proxy so far (encoded size of each response).
    pub fn bytes_received(&self) -> u64 {
        self.proxies.iter().map(|p| p.state().bytes_received).sum()
    }

    /// Mean number of active resources per proxy of `indices`, by kind.
    pub fn resources(&self, indices: &[usize]) -> crate::report::Resources {
        let mut r = crate::report::Resources::default();
        for &i in indices {
            let st = self.proxies[i].state();
            let c = &st.config;
            r.listeners += c.listeners.len() as f64;
            r.clusters += c.clusters.len() as f64;
            r.endpoint_sets += c.active_endpoints().len() as f64;
            r.endpoints += c
                .active_endpoints()
                .iter()
                .filter_map(|n| c.endpoints.get(*n))
                .map(|e| e.len() as f64)
                .sum::<f64>();
            r.secrets += c.active_secrets().len() as f64;
            r.routes += c.routes.len() as f64;
        }
        let n = indices.len().max(1) as f64;
        for v in [
            &mut r.listeners,
            &mut r.clusters,
            &mut r.endpoint_sets,
            &mut r.endpoints,
            &mut r.secrets,
            &mut r.routes,
        ] {
            *v /= n;
        }
        r
    }

    /// Proxies with an open stream.
    pub fn connected(&self) -> usize {
        self.proxies.iter().filter(|p| p.state().connected).count()
    }

    /// Every proxy's arrivals, as JSON lines (`{"proxy": ..., "at_ms": ..., ...}`).
    pub fn history_jsonl(&self) -> String {
        let mut out = String::new();
        for p in &self.proxies {
            for a in &p.state().history {
                let mut v = serde_json::to_value(a).unwrap_or_default();
                v["proxy"] = serde_json::Value::String(p.node_id.clone());
                out.push_str(&v.to_string());
                out.push('\n');
            }
        }
        out
    }
}

/// The life of one proxy: follow the desired state, keep a stream open while connected.
async fn run(proxy: Arc<Proxy>, shared: Arc<Shared>) {
    let mut rx = proxy.control.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        let desired = *rx.borrow_and_update();
        if !desired.connected {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let channel = shared.channel(proxy.member.index);
        let session = proxy.begin_session();
        let ended = tokio::select! {
            r = stream(&proxy, channel, session, &shared) => Some(r),
            c = rx.changed() => {
                if c.is_err() {
                    return;
                }
                None
            }
        };
        match ended {
            // Told to disconnect or reconnect: drop the stream and follow at once.
            None => proxy.end_session(session, None),
            Some(r) => {
                let (got_config, error) = match r {
                    Ok(got) => (got, None),
                    Err((got, e)) => (got, Some(format!("{e:#}"))),
                };
                proxy.end_session(session, error);
                if got_config {
                    backoff = Duration::from_millis(100);
                }
                // Like Envoy: capped exponential backoff with jitter before reconnecting.
                let jitter = Duration::from_millis(u64::from(
                    (proxy.member.index as u32).wrapping_mul(2_654_435_761) % 100,
                ));
                tokio::select! {
                    _ = tokio::time::sleep(backoff + jitter) => {}
                    c = rx.changed() => if c.is_err() { return },
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs one stream until the CP ends it: `Ok(got_config)` or `Err((got_config, why))`.
async fn stream(
    proxy: &Proxy,
    channel: Channel,
    session: u64,
    shared: &Shared,
) -> Result<bool, (bool, anyhow::Error)> {
    if shared.opts.delta {
        delta(proxy, channel, session, shared).await
    } else {
        sotw(proxy, channel, session, shared).await
    }
}

fn with_token<T>(proxy: &Proxy, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = &proxy.token {
        req.metadata_mut().insert("authorization", t.clone());
    }
    req
}

fn arrival(
    shared: &Shared,
    now: Instant,
    type_url: &str,
    version: &str,
    n: usize,
    removed: usize,
    bytes: usize,
) -> Arrival {
    Arrival {
        at_ms: now.duration_since(shared.t0).as_secs_f64() * 1000.0,
        r#type: record::short(type_url),
        version: version.to_string(),
        resources: n,
        removed,
        bytes: bytes as u64,
    }
}

/// Decodes every resource of a response; the first failure as a NACK message.
fn decode_all<'a>(
    type_url: &str,
    resources: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<Decoded>, String> {
    resources
        .map(|(t, b)| record::decode(if t.is_empty() { type_url } else { t }, b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// What a SotW stream decoded last, by type and by hash of the encoded bytes: a state-of-the-
/// world response repeats every unchanged listener and cluster, and Envoy too skips those
/// whose hash it already holds instead of applying them again.
#[derive(Default)]
struct DecodeCache {
    by_type: HashMap<String, HashMap<u64, Decoded>>,
}

impl DecodeCache {
    /// Decodes a response, reusing the results of resources seen byte for byte in the
    /// previous response of the same type; then remembers this response's.
    fn decode(&mut self, type_url: &str, resources: &[Any]) -> Result<Vec<Decoded>, String> {
        let prev = self.by_type.remove(type_url).unwrap_or_default();
        let mut next = HashMap::with_capacity(resources.len());
        let mut out = Vec::with_capacity(resources.len());
        for a in resources {
            let h = record::hash_bytes(&a.value);
            let d = match prev.get(&h) {
                Some(d) => d.clone(),
                None => {
                    let t = if a.type_url.is_empty() {
                        type_url
                    } else {
                        &a.type_url
                    };
                    record::decode(t, &a.value).map_err(|e| e.to_string())?
                }
            };
            next.insert(h, d.clone());
            out.push(d);
        }
        self.by_type.insert(type_url.to_string(), next);
        Ok(out)
    }
}

#[derive(Default)]
struct Sub {
    names: BTreeSet<String>,
    nonce: String,
    version: String,
}

async fn sotw(
    proxy: &Proxy,
    channel: Channel,
    session: u64,
    shared: &Shared,
) -> Result<bool, (bool, anyhow::Error)> {
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    let send = |r: DiscoveryRequest| {
        // The receiver lives as long as the request stream; a send fails only once the stream
        // is gone, and the response loop then ends too.
        let _ = tx.send(r);
    };
    send(DiscoveryRequest {
        node: Some(proxy.node()),
        type_url: record::CDS.into(),
        ..Default::default()
    });
    send(DiscoveryRequest {
        type_url: record::LDS.into(),
        ..Default::default()
    });
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let mut got = false;
    let mut responses = client
        .stream_aggregated_resources(with_token(proxy, UnboundedReceiverStream::new(rx)))
        .await
        .map_err(|e| {
            (
                false,
                anyhow::Error::from(e).context("opening the ADS stream"),
            )
        })?
        .into_inner();
    let mut subs: HashMap<String, Sub> = HashMap::new();
    let mut cache = DecodeCache::default();
    let mut deadline = None;
    loop {
        let message = tokio::select! {
            m = responses.message() => m,
            () = sleep_until(deadline) => match proxy.expire(session, Instant::now()) {
                Some(next) => {
                    deadline = next;
                    continue;
                }
                None => return Ok(got),
            },
        };
        let resp = match message {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(got),
            Err(e) => return Err((got, anyhow::Error::from(e).context("ADS stream"))),
        };
        got = true;
        let now = Instant::now();
        let bytes = prost::Message::encoded_len(&resp);
        let type_url = resp.type_url.clone();
        let decoded = match cache.decode(&type_url, &resp.resources) {
            Ok(d) => d,
            Err(message) => {
                proxy.nacked();
                let sub = subs.entry(type_url.clone()).or_default();
                sub.nonce = resp.nonce.clone();
                send(DiscoveryRequest {
                    type_url,
                    version_info: sub.version.clone(),
                    response_nonce: resp.nonce,
                    resource_names: sub.names.iter().cloned().collect(),
                    error_detail: Some(RpcStatus {
                        code: tonic::Code::InvalidArgument as i32,
                        message,
                        details: vec![],
                    }),
                    ..Default::default()
                });
                continue;
            }
        };
        let n = decoded.len();
        let wildcard = type_url == record::CDS || type_url == record::LDS;
        let applied = proxy.apply(
            session,
            arrival(shared, now, &type_url, &resp.version_info, n, 0, bytes),
            &resp.version_info,
            now,
            |cfg| {
                if wildcard {
                    let names: BTreeSet<String> = decoded
                        .iter()
                        .filter_map(|d| match d {
                            Decoded::Cluster(n, _) | Decoded::Listener(n, _) => Some(n.clone()),
                            _ => None,
                        })
                        .collect();
                    cfg.retain(&type_url, &names);
                }
                for d in decoded {
                    cfg.upsert(d, now);
                }
                if wildcard {
                    cfg.forget_unreferenced();
                }
                (
                    cfg.wanted_endpoints(),
                    cfg.wanted_secrets(),
                    cfg.wanted_routes(),
                )
            },
        );
        let Some(((want_eds, want_sds, want_rds), next)) = applied else {
            // A newer session replaced this stream.
            return Ok(got);
        };
        deadline = next;
        // Subscription changes first (as Envoy asks for a cluster's endpoints before ACKing
        // the clusters), unless the ACK below carries them.
        for (t, want) in [
            (record::EDS, want_eds),
            (record::SDS, want_sds),
            (record::RDS, want_rds),
        ] {
            let sub = subs.entry(t.to_string()).or_default();
            if sub.names != want && !(want.is_empty() && sub.nonce.is_empty()) {
                sub.names = want;
                if t != type_url {
                    send(DiscoveryRequest {
                        type_url: t.into(),
                        version_info: sub.version.clone(),
                        response_nonce: sub.nonce.clone(),
                        resource_names: sub.names.iter().cloned().collect(),
                        ..Default::default()
                    });
                }
            }
        }
        let sub = subs.entry(type_url.clone()).or_default();
        sub.nonce = resp.nonce.clone();
        sub.version = resp.version_info.clone();
        send(DiscoveryRequest {
            type_url,
            version_info: resp.version_info,
            response_nonce: resp.nonce,
            resource_names: sub.names.iter().cloned().collect(),
            ..Default::default()
        });
    }
}

async fn delta(
    proxy: &Proxy,
    channel: Channel,
    session: u64,
    shared: &Shared,
) -> Result<bool, (bool, anyhow::Error)> {
    let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let send = |r: DeltaDiscoveryRequest| {
        let _ = tx.send(r);
    };
    send(DeltaDiscoveryRequest {
        node: Some(proxy.node()),
        type_url: record::CDS.into(),
        ..Default::default()
    });
    send(DeltaDiscoveryRequest {
        type_url: record::LDS.into(),
        ..Default::default()
    });
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let mut got = false;
    let mut responses = client
        .delta_aggregated_resources(with_token(proxy, UnboundedReceiverStream::new(rx)))
        .await
        .map_err(|e| {
            (
                false,
                anyhow::Error::from(e).context("opening the delta ADS stream"),
            )
        })?
        .into_inner();
    let mut subs: HashMap<&'static str, BTreeSet<String>> = HashMap::new();
    let mut deadline = None;
    loop {
        let message = tokio::select! {
            m = responses.message() => m,
            () = sleep_until(deadline) => match proxy.expire(session, Instant::now()) {
                Some(next) => {
                    deadline = next;
                    continue;
                }
                None => return Ok(got),
            },
        };
        let resp = match message {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(got),
            Err(e) => return Err((got, anyhow::Error::from(e).context("delta ADS stream"))),
        };
        got = true;
        let now = Instant::now();
        let bytes = prost::Message::encoded_len(&resp);
        let type_url = resp.type_url.clone();
        let decoded = match decode_all(
            &type_url,
            resp.resources.iter().filter_map(|r| {
                r.resource
                    .as_ref()
                    .map(|a| (a.type_url.as_str(), a.value.as_slice()))
            }),
        ) {
            Ok(d) => d,
            Err(message) => {
                proxy.nacked();
                send(DeltaDiscoveryRequest {
                    type_url,
                    response_nonce: resp.nonce,
                    error_detail: Some(RpcStatus {
                        code: tonic::Code::InvalidArgument as i32,
                        message,
                        details: vec![],
                    }),
                    ..Default::default()
                });
                continue;
            }
        };
        let version = if resp.system_version_info.is_empty() {
            resp.nonce.clone()
        } else {
            resp.system_version_info.clone()
        };
        let (n, removed) = (decoded.len(), resp.removed_resources.len());
        let applied = proxy.apply(
            session,
            arrival(shared, now, &type_url, &version, n, removed, bytes),
            &version,
            now,
            |cfg| {
                for d in decoded {
                    cfg.upsert(d, now);
                }
                for name in &resp.removed_resources {
                    cfg.remove(&type_url, name);
                }
                cfg.forget_unreferenced();
                (
                    cfg.wanted_endpoints(),
                    cfg.wanted_secrets(),
                    cfg.wanted_routes(),
                )
            },
        );
        let Some(((want_eds, want_sds, want_rds), next)) = applied else {
            return Ok(got);
        };
        deadline = next;
        for (t, want) in [
            (record::EDS, want_eds),
            (record::SDS, want_sds),
            (record::RDS, want_rds),
        ] {
            let have = subs.entry(t).or_default();
            let subscribe: Vec<String> = want.difference(have).cloned().collect();
            let unsubscribe: Vec<String> = have.difference(&want).cloned().collect();
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                *have = want;
                send(DeltaDiscoveryRequest {
                    type_url: t.into(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                });
            }
        }
        send(DeltaDiscoveryRequest {
            type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{INIT_FETCH_TIMEOUT, ListenerInfo};

    #[test]
    fn a_goal_met_by_a_warming_timeout_is_met_at_the_deadline() {
        let t0 = Instant::now();
        let mut st = State::default();
        let set = GoalSet::new(1);
        st.goal = Some(Goal {
            check: Arc::new(|c: &Config| c.listeners.contains_key("inbound:1")),
            met: None,
            set: set.clone(),
        });
        let info = ListenerInfo {
            hash: 1,
            secrets: vec!["identity_cert:secret:default".into()],
            routes: vec![],
            spiffe: BTreeSet::new(),
        };
        st.config
            .upsert(Decoded::Listener("inbound:1".into(), info), t0);
        st.config.promote_ready();
        expire("default.a", &mut st, t0 + Duration::from_secs(1));
        assert_eq!(set.remaining(), 1, "warming, before the deadline");
        // The stream task wakes late: the goal is still met at the deadline.
        expire("default.a", &mut st, t0 + Duration::from_secs(40));
        assert_eq!(set.remaining(), 0);
        assert_eq!(
            st.goal.as_ref().and_then(|g| g.met),
            Some(t0 + INIT_FETCH_TIMEOUT)
        );
        assert_eq!(st.config.init_fetch_timeouts, 1);
    }
}
