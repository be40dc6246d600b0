//! The composition root: raises the open-file limit, binds every listener first (a taken port
//! fails start-up naming it), opens the store, creates the default resources, then runs the
//! API (HTTP and HTTPS), the DP server (bootstrap + ADS), diagnostics and the xDS reconciler
//! until shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use kuma_core::resource::{Mesh, Resource, ResourceKey, ResourceType, Spec, Zone};
use kuma_core::store::{self, Store};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{BootstrapState, Params};
use crate::config::Config;
use crate::diagnostics::Diagnostics;
use crate::dp_server::DpServer;
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
    dp: TcpListener,
    diag: TcpListener,
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
    // The DP server gets what the other listeners' caps leave.
    let others = diag.max_connections + api.max_connections * listeners;
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
    let dp = bind(
        &cfg.dp_server.interface,
        cfg.dp_server.port,
        "dpServer.port",
    )
    .await?;
    let diag = bind(
        &cfg.diagnostics.interface,
        cfg.diagnostics.server_port,
        "diagnostics.serverPort",
    )
    .await?;
    let hostname = hostname();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let instance_id = format!("{hostname}-{}", &id[..4]);
    Ok(App {
        cfg,
        api,
        api_https,
        dp,
        diag,
        api_limits,
        diag_limits,
        dp_limits,
        instance_id,
        hostname,
    })
}

impl App {
    /// The bound addresses (HTTP API, DP server, diagnostics); the API's is `0.0.0.0:0` when
    /// `apiServer.http.enabled` is false.
    pub fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        let a = |l: &TcpListener| l.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let api = self
            .api
            .as_ref()
            .map_or_else(|| ([0, 0, 0, 0], 0).into(), a);
        (api, a(&self.dp), a(&self.diag))
    }

    /// The bound address of the HTTPS API, when enabled.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.api_https.as_ref().and_then(|l| l.local_addr().ok())
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
        let store: Arc<dyn Store> = match cfg.store.store_type.as_str() {
            "memory" => Arc::new(MemoryStore::new()),
            _ => {
                let path = cfg.sqlite_path();
                Arc::new(
                    SqliteStore::open(&path)
                        .await
                        .with_context(|| format!("opening sqlite store {}", path.display()))?,
                )
            }
        };
        let zone = cfg.multizone.zone.name.clone();
        // Installed before any write: every Mesh written from now on (the default one
        // included) gets its signing key and builtin CA roots.
        let manager = Arc::new(
            ResourceManager::new(store, zone.clone()).with_mesh_side_effects(Arc::new(MeshSetup)),
        );
        ensure_defaults(&manager, &zone)
            .await
            .context("creating default resources")?;
        mesh_setup::ensure_all(&manager)
            .await
            .context("setting up the stored meshes (token signing keys, builtin CA roots)")?;
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
            },
            manager.clone(),
            cache.clone(),
            validator.clone(),
            shutdown.clone(),
        );
        let ads = kuma_xds::Server::new(cache.clone(), Arc::new(XdsCallbacks(runtime.clone())));
        let xds_port = if cfg.bootstrap_server.params.xds_port == 0 {
            self.dp.local_addr()?.port()
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
        let dp_server = DpServer::new(
            self.dp,
            tls,
            bootstrap,
            ads,
            runtime.clone(),
            self.dp_limits.clone(),
        );

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
        };
        let api_router = crate::api::router(api_state);
        let ready = Arc::new(AtomicBool::new(false));
        let diagnostics = Diagnostics::new(
            self.diag,
            self.diag_limits,
            ready.clone(),
            cache.clone(),
            self.instance_id.clone(),
            zone.clone(),
        );

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
            tasks.spawn(async move {
                server.run(router, sd).await;
                Ok(())
            });
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
            tasks.spawn(async move {
                server.run(router, sd).await;
                Ok(())
            });
        }
        tasks.spawn(dp_server.run(shutdown.clone()));
        tasks.spawn(diagnostics.run(shutdown.clone()));
        tasks.spawn(runtime.run());
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(instance_id = %self.instance_id, "kuma-cp is ready");

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

/// The `default` Zone (the only one) and the `default` Mesh.
async fn ensure_defaults(manager: &ResourceManager, zone: &str) -> anyhow::Result<()> {
    for z in manager.list(ResourceType::Zone, None).await? {
        if z.meta.name != zone {
            manager.delete_internal(&z.key()).await?;
        }
    }
    let wanted = [
        Resource::new(zone, "", Spec::Zone(Zone::default())),
        Resource::new("default", "", Spec::Mesh(Mesh::default())),
    ];
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

/// The user token signing key and, with `apiServer.authn.tokens.bootstrapAdminToken`, the GlobalSecret
/// `admin-user-token`.
async fn ensure_token_defaults(
    manager: &ResourceManager,
    issuer: &Issuer,
    cfg: &Config,
) -> anyhow::Result<()> {
    tokens::ensure_user_signing_key(manager)
        .await
        .context("user token signing key")?;
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
