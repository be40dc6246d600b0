//! The composition root: raises the open-file limit, binds every listener first (a taken port
//! fails start-up naming it), opens the store, creates the default resources, then runs the
//! API (HTTP and HTTPS), the DP server (bootstrap + ADS), diagnostics, the monitoring
//! assignment server and the xDS reconciler until shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context;
use kuma_core::resource::{Mesh, Resource, ResourceKey, ResourceType, Spec, Zone};
use kuma_core::store::{self, Store};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{BootstrapState, Params};
use crate::config::{Config, CpMode};
use crate::diagnostics::{Diagnostics, Readiness};
use crate::dp_server::DpServer;
use crate::kds::ZoneAuthenticator;
use crate::kds::global::Global;
use crate::kds::zone::{Settings as ZoneSettings, ZoneClient};
use crate::manager::{ManagerError, ResourceManager};
use crate::mesh_setup::{self, MeshSetup};
use crate::serve::{self, Limits};
use crate::store::{MemoryStore, SqliteStore};
use crate::tls::Identity;
use crate::tokens::{self, ADMIN_TOKEN_SECRET, Issuer, Validator};
use crate::xds::{self, XdsCallbacks};

/// A control plane with every listener bound, ready to [`App::run`].
pub struct App {
    cfg: Config,
    /// `None` when `apiServer.http.enabled` is false.
    api: Option<TcpListener>,
    /// `None` when `apiServer.https.enabled` is false.
    api_https: Option<TcpListener>,
    /// The DP server's listener; `None` on global, which serves no proxies.
    dp: Option<TcpListener>,
    /// The KDS server's listener, on global only.
    kds: Option<TcpListener>,
    diag: TcpListener,
    /// The monitoring assignment server's listener ([`crate::mads`]); `None` on global or
    /// with `monitoringAssignmentServer.enabled` false.
    mads: Option<TcpListener>,
    /// `apiServer.*` limits, caps fitted to the descriptor budget.
    api_limits: Limits,
    /// `diagnostics.*` limits, cap fitted to the descriptor budget.
    diag_limits: Limits,
    /// `dpServer.*` limits, connection cap fitted to the descriptor budget.
    dp_limits: crate::dp_server::Limits,
    instance_id: String,
    hostname: String,
}

/// Binds `interface:port`, naming the config key on failure.
async fn bind(interface: &str, port: u16, key: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = format!("{interface}:{port}")
        .parse()
        .or_else(|_| format!("[{interface}]:{port}").parse())
        .with_context(|| format!("{key}: invalid interface {interface:?}"))?;
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} ({key}): port {port} is already in use or not permitted")
    })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Raises the soft open-file limit to the hard one and fits the connection caps of the API
/// listeners and diagnostics into half of it: the other half stays for the DP server (its
/// proxies' connections), the store, and everything else, so that filling the API's caps
/// cannot starve them of descriptors. The DP server's cap is fitted into what the others'
/// caps leave, less a reserve.
fn fd_budget(cfg: &Config) -> (Limits, Limits, crate::dp_server::Limits) {
    let mut api = cfg.api_limits();
    let mut diag = cfg.diagnostics_limits();
    let soft = match serve::raise_fd_limit() {
        Ok(l) if l.soft > l.before => {
            tracing::info!(
                "RLIMIT_NOFILE: raised the soft open-file limit from {} to the hard limit {}",
                l.before,
                l.hard
            );
            l.soft
        }
        Ok(l) => {
            tracing::info!(
                "RLIMIT_NOFILE: the soft open-file limit {} is already the hard limit {}",
                l.soft,
                l.hard
            );
            l.soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "RLIMIT_NOFILE: cannot raise the open-file limit");
            rlimit_soft().unwrap_or(1024)
        }
    };
    let listeners =
        usize::from(cfg.api_server.http.enabled) + usize::from(cfg.api_server.https.enabled);
    let mut caps = vec![diag.max_connections];
    caps.extend(std::iter::repeat_n(api.max_connections, listeners));
    let budget = usize::try_from(soft / 2).unwrap_or(usize::MAX);
    if serve::fit_caps(&mut caps, budget) {
        // caps = [diagnostics, then one per enabled API listener, all equal].
        let api_cap = caps.get(1).copied().unwrap_or(api.max_connections);
        tracing::warn!(
            "the connection caps (apiServer.maxConnections {} per API listener, diagnostics.maxConnections {}) exceed half of the open-file limit {soft}: lowered to {api_cap} and {}",
            api.max_connections,
            diag.max_connections,
            caps[0]
        );
        diag.max_connections = caps[0];
        api.max_connections = api_cap;
    }
    // The DP server gets what the other listeners' caps leave (MADS's included).
    let mads = &cfg.monitoring_assignment_server;
    let mads_cap = if mads.enabled && cfg.cp_mode() != CpMode::Global {
        cfg.mads_limits().max_connections
    } else {
        0
    };
    let others = diag.max_connections + api.max_connections * listeners + mads_cap;
    let mut dp = cfg.dp_server_limits();
    if let Some(cap) =
        crate::dp_server::bounds::fit_to_descriptors(dp.max_connections, soft, others)
    {
        tracing::warn!(
            "dpServer.maxConnections {} (0: no cap) exceeds what the open-file limit {soft} leaves after the API's and diagnostics' caps ({others}): lowered to {cap}",
            dp.max_connections
        );
        dp.max_connections = cap;
    }
    (api, diag, dp)
}

fn rlimit_soft() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// Phase one: raise the open-file limit, bind every listener.
pub async fn build(cfg: Config) -> anyhow::Result<App> {
    // Process-wide, like Kuma's `AllowedMTLSBackends`: read by every Mesh validation.
    kuma_core::resource::mesh::set_allowed_mtls_backends(cfg.experimental.allowed_mtls_backends);
    let (api_limits, diag_limits, dp_limits) = fd_budget(&cfg);
    let http = &cfg.api_server.http;
    let api = if http.enabled {
        Some(bind(&http.interface, http.port, "apiServer.http.port").await?)
    } else {
        None
    };
    let https = &cfg.api_server.https;
    let api_https = if https.enabled {
        Some(bind(&https.interface, https.port, "apiServer.https.port").await?)
    } else {
        None
    };
    let global = cfg.cp_mode() == CpMode::Global;
    let dp = if global {
        None
    } else {
        Some(
            bind(
                &cfg.dp_server.interface,
                cfg.dp_server.port,
                "dpServer.port",
            )
            .await?,
        )
    };
    let kds_cfg = &cfg.multizone.global.kds;
    let kds = if global {
        Some(
            bind(
                &kds_cfg.interface,
                kds_cfg.grpc_port,
                "multizone.global.kds.grpcPort",
            )
            .await?,
        )
    } else {
        None
    };
    let diag = bind(
        &cfg.diagnostics.interface,
        cfg.diagnostics.server_port,
        "diagnostics.serverPort",
    )
    .await?;
    let m = &cfg.monitoring_assignment_server;
    let mads = if !global && m.enabled {
        Some(bind(&m.interface, m.port, "monitoringAssignmentServer.port").await?)
    } else {
        None
    };
    let hostname = hostname();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let instance_id = format!("{hostname}-{}", &id[..4]);
    Ok(App {
        cfg,
        api,
        api_https,
        dp,
        kds,
        diag,
        mads,
        api_limits,
        diag_limits,
        dp_limits,
        instance_id,
        hostname,
    })
}

impl App {
    /// The bound addresses (HTTP API, DP server, diagnostics); `0.0.0.0:0` for what is not
    /// served (the API with `apiServer.http.enabled` false, the DP server on global).
    pub fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        let a = |l: &TcpListener| l.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let none = || ([0, 0, 0, 0], 0).into();
        let api = self.api.as_ref().map_or_else(none, a);
        let dp = self.dp.as_ref().map_or_else(none, a);
        (api, dp, a(&self.diag))
    }

    /// The bound address of the HTTPS API, when enabled.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.api_https.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound address of the monitoring assignment server, when served.
    pub fn mads_addr(&self) -> Option<SocketAddr> {
        self.mads.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Phase two: serve until `shutdown` is cancelled or a part fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let work_dir = cfg.work_dir();
        // Owner only when we create it: it holds the store and the DP server's key.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&work_dir)
            .with_context(|| format!("creating work dir {}", work_dir.display()))?;
        let zone = cfg.multizone.zone.name.clone();
        let mode = cfg.cp_mode();
        let metrics = crate::metrics::Metrics::new(
            &crate::metrics::zone_label(mode, &zone),
            &crate::metrics::Info {
                instance_id: self.instance_id.clone(),
                cluster_id: String::new(),
                version: env!("CARGO_PKG_VERSION").into(),
                based_on_kuma: "2.14.3".into(),
            },
        )
        .context("registering the metrics")?;
        // What `/ready` waits for; each part adds its own condition.
        let readiness = Readiness::default();
        let (store, probe): (Arc<dyn Store>, Arc<dyn crate::store::Probe>) =
            match cfg.store.store_type.as_str() {
                "memory" => {
                    let s = Arc::new(MemoryStore::new());
                    (s.clone(), s)
                }
                _ => {
                    let path = cfg.sqlite_path();
                    let s = Arc::new(
                        SqliteStore::open(&path)
                            .await
                            .with_context(|| format!("opening sqlite store {}", path.display()))?,
                    );
                    (s.clone(), s)
                }
            };
        let store = metrics.store.wrap(store);
        let mut manager = ResourceManager::new(store, zone.clone()).with_mode(mode);
        // Installed before any write: every Mesh written from now on (the default one
        // included) gets its signing key and builtin CA roots. Not on a federated zone:
        // global creates them and syncs them down with the Mesh.
        if mode != CpMode::FederatedZone {
            manager = manager.with_mesh_side_effects(Arc::new(MeshSetup));
        }
        let manager = Arc::new(manager);
        ensure_defaults(&manager, &zone, mode)
            .await
            .context("creating default resources")?;
        if mode != CpMode::FederatedZone {
            mesh_setup::ensure_all(&manager)
                .await
                .context("setting up the stored meshes (token signing keys, builtin CA roots)")?;
        }
        let issuer = Arc::new(Issuer::new(manager.clone()));
        // Shared by the bootstrap handler, the ADS stream and the API.
        let validator = Arc::new(Validator::new(manager.clone(), cfg.dataplane_auth()));
        ensure_token_defaults(&manager, &issuer, &cfg)
            .await
            .context("creating the user token signing key and the admin token")?;
        if !cfg.dataplane_auth() {
            tracing::warn!(
                "dataplane authentication is OFF (dpServer.authn.dpProxy.type: none): any process that reaches the DP server can register as, and receive the configuration of, any data plane proxy. Use it for development only; set KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=dpToken in production"
            );
        }

        let identity = Identity::load_or_generate(
            &cfg.general.tls_cert_file,
            &cfg.general.tls_key_file,
            &work_dir,
            &self.hostname,
        )
        .context("loading the DP server certificate")?;
        let tls = identity.server_config()?;
        let https = &cfg.api_server.https;
        let api_tls = if https.tls_cert_file.is_empty() {
            identity.server_config_alpn(&[b"http/1.1"])?
        } else {
            Identity::from_files(
                (&https.tls_cert_file, "apiServer.https.tlsCertFile"),
                (&https.tls_key_file, "apiServer.https.tlsKeyFile"),
            )?
            .server_config_alpn(&[b"http/1.1"])?
        };

        let cache = kuma_xds::SnapshotCache::new();
        let runtime = xds::Runtime::new(
            xds::Settings {
                zone: zone.clone(),
                instance_id: self.instance_id.clone(),
                deregistration_delay: cfg.deregistration_delay(),
                flush_interval: cfg.flush_interval(),
                debounce: cfg.debounce(),
                dns: cfg
                    .dns_server
                    .service_vip_enabled
                    .then(|| xds::DnsSettings {
                        domain: cfg.dns_server.domain.clone(),
                        vip_port: cfg.dns_server.service_vip_port,
                    }),
            },
            manager.clone(),
            cache.clone(),
            validator.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        let ads = kuma_xds::Server::new(
            cache.clone(),
            metrics.xds.wrap(
                Arc::new(XdsCallbacks(runtime.clone())),
                Some(metrics.delivery.clone()),
            ),
        );
        // The envoy-admin CA: each zone (and a standalone CP) has its own; global has none
        // (it forwards inspections to the zones).
        let mut kds_admin = None;
        let mut zone_admin = None;
        let envoy_admin: Option<Arc<dyn crate::envoy_admin::Admin>> = if mode == CpMode::Global {
            let auth: Arc<dyn ZoneAuthenticator> = validator.clone();
            let forwarder = crate::kds::envoy_admin::Forwarder::new(
                auth,
                cfg.multizone.global.kds.max_msg_size,
            );
            kds_admin = Some(forwarder.clone());
            Some(forwarder)
        } else {
            let pki = Arc::new(
                crate::envoy_admin::pki::Pki::ensure(&manager)
                    .await
                    .context("envoy-admin CA")?,
            );
            runtime.set_envoy_admin(pki.clone());
            let client: Arc<dyn crate::envoy_admin::Admin> = Arc::new(
                crate::envoy_admin::client::Client::new(
                    &pki,
                    cfg.bootstrap_server.params.admin_port,
                )
                .context("envoy admin client")?,
            );
            zone_admin = Some(client.clone());
            Some(client)
        };
        let xds_port = if cfg.bootstrap_server.params.xds_port == 0 {
            self.dp
                .as_ref()
                .map_or(Ok(0), |l| l.local_addr().map(|a| a.port()))?
        } else {
            cfg.bootstrap_server.params.xds_port
        };
        let params = &cfg.bootstrap_server.params;
        let bootstrap = BootstrapState {
            manager: manager.clone(),
            params: Arc::new(Params {
                admin_address: params.admin_address.clone(),
                admin_port: params.admin_port,
                xds_host: params.xds_host.clone(),
                xds_port,
                xds_connect_timeout: params.xds_connect_timeout.clone(),
                ca_pem: identity.ca_pem.clone(),
            }),
            validator: validator.clone(),
            zone: cfg.multizone.zone.name.clone(),
        };
        let dp_server = self.dp.map(|dp| {
            DpServer::new(
                dp,
                tls,
                bootstrap,
                ads,
                runtime.clone(),
                self.dp_limits.clone(),
            )
        });

        // Insights from store events (on every kind of CP; a federated zone computes its
        // own from what it sees rather than receiving global's).
        let (resyncer, insights) = crate::insights::Resyncer::new(manager.clone());
        let config_json = serde_json::to_value(&cfg)?;
        let api_state = crate::api::State {
            manager: manager.clone(),
            index: json!({
                "hostname": self.hostname,
                "product": "Kuma",
                "version": env!("CARGO_PKG_VERSION"),
                "instanceId": self.instance_id,
                "clusterId": "",
                "gui": "/gui",
                "basedOnKuma": "2.14.3",
            }),
            config: config_json,
            zone: zone.clone(),
            issuer,
            validator: validator.clone(),
            localhost_is_admin: cfg.api_server.authn.localhost_is_admin,
            mesh_status: runtime.status(),
            insights: crate::api::insights::View {
                insights,
                dns_domain: cfg.dns_server.domain.clone(),
                vip_port: cfg.dns_server.service_vip_port,
            },
            envoy_admin,
        };
        let api_router = crate::api::router(api_state);
        let diagnostics = Diagnostics::new(
            self.diag,
            self.diag_limits,
            readiness.clone(),
            metrics.clone(),
        );
        let store_ready = readiness.condition("store", "not probed yet");
        tokio::spawn(crate::diagnostics::ready::probe_store(
            probe,
            store_ready,
            shutdown.clone(),
        ));

        let mut tasks = tokio::task::JoinSet::new();
        // The peer address reaches the handlers as `ConnectInfo` on both listeners: it
        // decides whether a caller is local (`localhostIsAdmin`), over HTTPS too, as in Kuma.
        if let Some(listener) = self.api {
            let server = serve::Server::new(
                "REST API (HTTP)",
                "apiServer.maxConnections",
                listener,
                self.api_limits,
            );
            let (router, sd) = (api_router.clone(), shutdown.clone());
            tasks.spawn(readiness.serving("apiServer.http", async move {
                server.run(router, sd).await;
                Ok(())
            }));
        }
        if let Some(listener) = self.api_https {
            let server = serve::Server::new(
                "REST API (HTTPS)",
                "apiServer.maxConnections",
                listener,
                self.api_limits,
            )
            .with_tls(api_tls);
            let (router, sd) = (api_router, shutdown.clone());
            tasks.spawn(readiness.serving("apiServer.https", async move {
                server.run(router, sd).await;
                Ok(())
            }));
        }
        tasks.spawn(diagnostics.run(shutdown.clone()));
        if let Some(listener) = self.mads {
            let m = &cfg.monitoring_assignment_server;
            let versions = cfg.mads_tls_versions()?;
            if m.tls_enabled && !m.tls_cipher_suites.is_empty() {
                tracing::warn!(
                    suites = ?m.tls_cipher_suites,
                    "monitoringAssignmentServer.tlsCipherSuites is not applied: the TLS library's own safe cipher suites are used"
                );
            }
            let tls = match (m.tls_enabled, m.tls_cert_file.is_empty()) {
                (false, _) => None,
                (true, true) => Some(identity.server_config_versions(&[b"http/1.1"], &versions)?),
                (true, false) => Some(
                    Identity::from_files(
                        (&m.tls_cert_file, "monitoringAssignmentServer.tlsCertFile"),
                        (&m.tls_key_file, "monitoringAssignmentServer.tlsKeyFile"),
                    )?
                    .server_config_versions(&[b"http/1.1"], &versions)?,
                ),
            };
            let mads = crate::mads::Server::new(
                listener,
                cfg.mads_limits(),
                tls,
                manager.clone(),
                cfg.mads_settings(),
            );
            tasks.spawn(mads.run(shutdown.clone()));
        }
        tasks.spawn(resyncer.run(shutdown.clone()));
        if let Some(dp_server) = dp_server {
            tasks.spawn(readiness.serving("dpServer", dp_server.run(shutdown.clone())));
            readiness.add(runtime.reconciled());
            tasks.spawn(runtime.run());
        }
        if let Some(listener) = self.kds {
            let k = &cfg.multizone.global.kds;
            let kds_tls = if k.tls_cert_file.is_empty() {
                identity.server_config()?
            } else {
                Identity::from_files(
                    (&k.tls_cert_file, "multizone.global.kds.tlsCertFile"),
                    (&k.tls_key_file, "multizone.global.kds.tlsKeyFile"),
                )?
                .server_config()?
            };
            let auth: Arc<dyn ZoneAuthenticator> = validator.clone();
            let global = Global::new(
                manager.clone(),
                auth,
                self.instance_id.clone(),
                k.max_msg_size,
                metrics.kds.clone(),
            );
            let flush = crate::config::parse_duration(&k.zone_insight_flush_interval)?;
            let mut router = global.router();
            if let Some(f) = &kds_admin {
                router = router.merge(f.router());
            }
            let server = DpServer::from_router(listener, kds_tls, router, self.dp_limits.clone());
            tracing::info!(port = k.grpc_port, "KDS server for zone control planes");
            tasks.spawn(readiness.serving("kdsServer", server.run(shutdown.clone())));
            tasks.spawn(global.run(shutdown.clone(), flush));
        }
        if mode != CpMode::FederatedZone {
            // VIPs are allocated where every Dataplane is seen: standalone, or global for
            // all zones (zones get global's tables over KDS). No leader election here: one
            // instance per store.
            let allocator = crate::vips::Allocator::new(
                manager.clone(),
                crate::vips::Settings {
                    cidr: cfg.vip_cidr(),
                    grace_period: cfg.vip_grace_period(),
                    service_vip_enabled: cfg.dns_server.service_vip_enabled,
                    local_zone: if mode == CpMode::Global {
                        String::new()
                    } else {
                        zone.clone()
                    },
                },
            )
            .with_ready(readiness.condition("vips", "the first VIP allocation pass is not done"));
            tasks.spawn(allocator.run(shutdown.clone()));
        }
        if mode == CpMode::FederatedZone {
            let client = ZoneClient::new(
                zone_settings(&cfg, &self.instance_id)?,
                manager.clone(),
                metrics.kds.clone(),
            );
            readiness.add(client.synced());
            if let Some(admin) = zone_admin {
                client.set_envoy_admin(admin);
            }
            tasks.spawn(client.run(shutdown.clone()));
        }
        tracing::info!(instance_id = %self.instance_id, "kuma-cp is started; /ready says when it is ready");

        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            let r = joined.context("task panicked").and_then(|r| r);
            if let Err(e) = r {
                tracing::error!(error = %format!("{e:#}"), "a component failed; stopping");
                result = Err(e);
                shutdown.cancel();
            }
            if shutdown.is_cancelled() {
                // Others stop on the token; give them a grace period.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while tasks.join_next().await.is_some() {}
                })
                .await;
                break;
            }
        }
        result
    }
}

/// On a zone, its own Zone (the only one); the `default` Mesh, except on a federated zone
/// (global's comes down over KDS). Global's Zones are the zones that connected.
async fn ensure_defaults(
    manager: &ResourceManager,
    zone: &str,
    mode: CpMode,
) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    if mode != CpMode::Global {
        for z in manager.list(ResourceType::Zone, None).await? {
            if z.meta.name != zone {
                manager.delete_internal(&z.key()).await?;
            }
        }
        wanted.push(Resource::new(zone, "", Spec::Zone(Zone::default())));
    }
    if mode != CpMode::FederatedZone {
        wanted.push(Resource::new("default", "", Spec::Mesh(Mesh::default())));
    }
    for res in wanted {
        match manager.get(&res.key()).await {
            Ok(_) => {}
            Err(ManagerError::Store(store::Error::NotFound(_))) => {
                manager.upsert_internal(res).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let _ = ResourceKey::new(ResourceType::Mesh, "", "default");
    Ok(())
}

/// How a federated zone dials global: the token (inline, else from its file), the TLS trust
/// (a CA bundle, or none with `tlsSkipVerify`, logged loudly; one of them is required for
/// `grpcs://`).
fn zone_settings(cfg: &Config, instance_id: &str) -> anyhow::Result<ZoneSettings> {
    let z = &cfg.multizone.zone;
    let auth = &z.kds.auth;
    let token = if !auth.cp_token_inline.is_empty() {
        auth.cp_token_inline.trim().to_string()
    } else if !auth.cp_token_path.is_empty() {
        std::fs::read_to_string(&auth.cp_token_path)
            .with_context(|| {
                format!(
                    "multizone.zone.kds.auth.cpTokenPath: reading {}",
                    auth.cp_token_path
                )
            })?
            .trim()
            .to_string()
    } else {
        tracing::warn!(
            "no zone token (multizone.zone.kds.auth.cpTokenPath / cpTokenInline): global will refuse this zone"
        );
        String::new()
    };
    let tls = if z.global_address.starts_with("grpcs://") {
        let config = if z.kds.tls_skip_verify {
            tracing::warn!(
                global = %z.global_address,
                "multizone.zone.kds.tlsSkipVerify is set: global's KDS certificate is NOT verified; anyone on the path can impersonate global and feed this zone its meshes, policies and secrets"
            );
            kuma_core::tls_client::insecure()?
        } else if !z.kds.root_ca_file.is_empty() {
            let pem = std::fs::read_to_string(&z.kds.root_ca_file).with_context(|| {
                format!(
                    "multizone.zone.kds.rootCaFile: reading {}",
                    z.kds.root_ca_file
                )
            })?;
            kuma_core::tls_client::with_ca(&pem).context("multizone.zone.kds.rootCaFile")?
        } else {
            anyhow::bail!(
                "multizone.zone.kds.rootCaFile: required to verify global at {} (or set multizone.zone.kds.tlsSkipVerify: true, insecure)",
                z.global_address
            );
        };
        let mut config = config;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(Arc::new(config))
    } else {
        None
    };
    Ok(ZoneSettings {
        zone: z.name.clone(),
        instance_id: instance_id.to_string(),
        global_address: z.global_address.clone(),
        tls,
        token,
        limit: cfg.multizone.global.kds.max_msg_size,
        base_backoff: crate::config::parse_duration(&z.kds.reconnect_base_backoff)?,
        max_backoff: crate::config::parse_duration(&z.kds.reconnect_max_backoff)?,
        config_json: serde_json::to_string(&json!({"multizone": {"zone": {"name": z.name}}}))?,
    })
}

/// The user and zone token signing keys and, with `apiServer.authn.tokens.bootstrapAdminToken`, the GlobalSecret
/// `admin-user-token`.
async fn ensure_token_defaults(
    manager: &ResourceManager,
    issuer: &Issuer,
    cfg: &Config,
) -> anyhow::Result<()> {
    tokens::ensure_user_signing_key(manager)
        .await
        .context("user token signing key")?;
    // A federated zone gets none: it validates zone proxies' tokens with global's public keys.
    if cfg.cp_mode() != CpMode::FederatedZone {
        tokens::ensure_zone_signing_key(manager)
            .await
            .context("zone token signing key")?;
    }
    if cfg.api_server.authn.tokens.bootstrap_admin_token {
        if issuer
            .ensure_admin_token()
            .await
            .context("admin user token")?
        {
            tracing::info!("generated the admin user token (GlobalSecret {ADMIN_TOKEN_SECRET})");
        }
        tracing::info!(
            "bootstrap of the admin user token is enabled. To extract it, run 'curl http://localhost:{}/global-secrets/{ADMIN_TOKEN_SECRET} | jq -r .data | base64 -d' on the control plane host, then 'kumactl config control-planes add --auth-type=tokens --auth-conf token=YOUR_TOKEN ...'. To disable it, set KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN=false",
            cfg.api_server.http.port
        );
    }
    Ok(())
}
