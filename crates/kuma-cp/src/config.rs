//! kuma-cp configuration: typed, with defaults that equal the committed
//! `kuma-cp.defaults.yaml`, overridden by a YAML file, then by `KUMA_*` environment variables.
//!
//! Environment names are derived from the key path (`store.sqlite.path` →
//! `KUMA_STORE_SQLITE_PATH`), plus Kuma's irregular aliases listed in [`ENV_ALIASES`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The committed defaults file (also what `Config::default()` must equal).
pub const DEFAULTS_YAML: &str = include_str!("../kuma-cp.defaults.yaml");

/// Environment names Kuma uses that do not follow the path rule, with the path they set.
pub const ENV_ALIASES: [(&str, &str); 2] = [
    (
        "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY",
        "xdsServer.dataplaneDeregistrationDelay",
    ),
    // Kuma's typo (`SERVICE` for `SERVER`); the regular KUMA_DNS_SERVER_SERVICE_VIP_PORT works too.
    (
        "KUMA_DNS_SERVICE_SERVICE_VIP_PORT",
        "dnsServer.serviceVipPort",
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    pub environment: String,
    pub mode: String,
    pub general: General,
    pub store: Store,
    pub api_server: ApiServer,
    pub dp_server: DpServer,
    pub diagnostics: Diagnostics,
    pub bootstrap_server: BootstrapServer,
    pub xds_server: XdsServer,
    pub dns_server: DnsServer,
    pub monitoring_assignment_server: MonitoringAssignmentServer,
    pub multizone: Multizone,
    pub experimental: Experimental,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct General {
    pub work_dir: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Store {
    #[serde(rename = "type")]
    pub store_type: String,
    pub sqlite: Sqlite,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Sqlite {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ApiServer {
    pub http: HttpListener,
    pub https: HttpsListener,
    pub authn: ApiAuthn,
    /// Kuma's: the request headers must arrive within this time from the connection's start
    /// (on HTTPS, from the end of the TLS handshake, itself given this time) or from the
    /// first byte of a kept-alive request.
    pub read_header_timeout: String,
    /// Kuma's: the whole request, body included, must arrive within this time.
    pub read_timeout: String,
    /// Kuma's: from the end of the request, the response must be written within this time.
    pub write_timeout: String,
    /// Kuma's: a kept-alive connection with no request is closed after this time.
    pub idle_timeout: String,
    /// Addition: most connections open at once on each API listener (HTTP and HTTPS each);
    /// more are closed at once.
    pub max_connections: u64,
}

/// `apiServer.https`: the API over TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpsListener {
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
    /// Certificate chain (PEM); empty: the control plane's own certificate (the DP server's).
    pub tls_cert_file: String,
    /// Its key (PEM); set together with `tls_cert_file`.
    pub tls_key_file: String,
}

/// How API callers authenticate (`apiServer.authn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ApiAuthn {
    /// `tokens` (user tokens) is the only type.
    #[serde(rename = "type")]
    pub authn_type: String,
    /// Callers on a loopback address without credentials are `mesh-system:admin`.
    pub localhost_is_admin: bool,
    pub tokens: ApiAuthnTokens,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ApiAuthnTokens {
    /// Create the GlobalSecret `admin-user-token` at first start.
    pub bootstrap_admin_token: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpListener {
    pub enabled: bool,
    pub interface: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DpServer {
    pub interface: String,
    pub port: u16,
    pub authn: DpServerAuthn,
    /// HTTP/1 request headers must arrive within this (Kuma's key).
    pub read_header_timeout: String,
    /// A connection with no authenticated stream and no successful request, an ADS stream not
    /// authenticated, a TLS handshake, and the body of `/bootstrap` or `/readiness` get this
    /// long (an addition).
    pub authn_timeout: String,
    /// Bytes an ADS stream may send before it is authenticated (an addition).
    pub max_unauthenticated_bytes: u64,
    /// Open connections in total; 0: no cap (an addition).
    pub max_connections: u64,
    /// Open connections per source IP; 0: no cap (an addition).
    pub max_connections_per_ip: u64,
    /// ADS streams of a connection waiting for authentication at once (an addition).
    pub max_unauthenticated_streams: u32,
    /// HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`, an addition).
    pub max_concurrent_streams: u32,
}

/// How proxies authenticate to the DP server (`dpServer.authn`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DpServerAuthn {
    pub dp_proxy: DpProxyAuthn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DpProxyAuthn {
    /// `dpToken` (dataplane tokens) or `none` (no authentication: development only).
    #[serde(rename = "type")]
    pub authn_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Diagnostics {
    pub interface: String,
    pub server_port: u16,
    /// Additions (Kuma fixes a 1s header timeout and nothing else): as the `apiServer` keys
    /// of the same names.
    pub read_header_timeout: String,
    pub read_timeout: String,
    pub write_timeout: String,
    pub idle_timeout: String,
    pub max_connections: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BootstrapServer {
    pub params: BootstrapParams,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BootstrapParams {
    pub admin_address: String,
    pub admin_port: u16,
    pub xds_host: String,
    pub xds_port: u16,
    pub xds_connect_timeout: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct XdsServer {
    pub dataplane_status_flush_interval: String,
    pub dataplane_deregistration_delay: String,
    pub configuration_debounce: String,
}

/// `dnsServer`: service names and their virtual IPs (Kuma's keys; `vipGracePeriod` is ours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DnsServer {
    /// Domain of service names: `<service>.<domain>` (`mesh`). `KUMA_DNS_SERVER_DOMAIN`.
    pub domain: String,
    /// IPv4 range VIPs are allocated from, sequentially from its first address
    /// (`240.0.0.0/4`). `KUMA_DNS_SERVER_CIDR`.
    #[serde(rename = "CIDR")]
    pub cidr: String,
    /// Whether every `kuma.io/service` gets a VIP (`true`). `KUMA_DNS_SERVER_SERVICE_VIP_ENABLED`.
    pub service_vip_enabled: bool,
    /// Port of the outbound listener on each service VIP (`80`).
    /// `KUMA_DNS_SERVICE_SERVICE_VIP_PORT` (Kuma's name) or `KUMA_DNS_SERVER_SERVICE_VIP_PORT`.
    pub service_vip_port: u32,
    /// How long the VIP of a service that disappeared stays reserved for it (`1h`);
    /// `KUMA_DNS_SERVER_VIP_GRACE_PERIOD`. Addition: Kuma frees it at once.
    pub vip_grace_period: String,
}

impl Default for DnsServer {
    fn default() -> Self {
        Self {
            domain: "mesh".into(),
            cidr: "240.0.0.0/4".into(),
            service_vip_enabled: true,
            service_vip_port: 80,
            vip_grace_period: "1h".into(),
        }
    }
}

/// `monitoringAssignmentServer`: MADS and Prometheus HTTP service discovery
/// ([`crate::mads`]); not served on global.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MonitoringAssignmentServer {
    pub enabled: bool,
    /// Addition: the address it listens on (Kuma: every interface).
    pub interface: String,
    pub port: u16,
    /// How long a MADS request waits for a change when it names no `fetch-timeout`.
    pub default_fetch_timeout: String,
    /// Longest a change of Dataplanes or Meshes waits before it is served (changes arriving
    /// together are served at once); Kuma's regeneration period.
    pub assignment_refresh_interval: String,
    /// Serve TLS (HTTP/1.1) with `tlsCertFile` / `tlsKeyFile`, or the control plane's own
    /// certificate when both are empty.
    pub tls_enabled: bool,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Oldest and newest TLS version served (`TLSv1_2` / `TLSv1_3`; Kuma's names, empty max:
    /// the newest). Only 1.2 and 1.3 exist here (rustls): an older minimum serves from 1.2.
    pub tls_min_version: String,
    pub tls_max_version: String,
    /// Kuma's cipher suite list: accepted, not applied (rustls' own safe suites are used;
    /// a warning says so at start).
    pub tls_cipher_suites: Vec<String>,
    /// Kuma's MADS API versions: only `v1` exists.
    pub api_versions: Vec<String>,
    /// Addition: most connections open at once; more are closed at once.
    pub max_connections: u64,
    /// Addition: most MADS requests waiting for a change at once; above it a request is
    /// answered at once, as with `fetch-timeout=0s`.
    pub max_long_polls: u64,
}

impl Default for MonitoringAssignmentServer {
    fn default() -> Self {
        Self {
            enabled: true,
            interface: "0.0.0.0".into(),
            port: 5676,
            default_fetch_timeout: "30s".into(),
            assignment_refresh_interval: "1s".into(),
            tls_enabled: false,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_min_version: "TLSv1_2".into(),
            tls_max_version: String::new(),
            tls_cipher_suites: vec![],
            api_versions: vec!["v1".into()],
            max_connections: 256,
            max_long_polls: 128,
        }
    }
}

/// Behaviour beyond Kuma's, off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Experimental {
    /// How many mTLS backends a Mesh may list (Kuma: 1). Above 1, `enabledBackend` may also
    /// change while mTLS is on: the CA switch of `xds::transition`.
    pub allowed_mtls_backends: usize,
}

impl Default for Experimental {
    fn default() -> Self {
        Self {
            allowed_mtls_backends: 1,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Multizone {
    pub global: GlobalConfig,
    pub zone: ZoneConfig,
}

/// `multizone.global`: the global control plane's side of KDS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GlobalConfig {
    pub kds: GlobalKds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GlobalKds {
    /// Addition: address the KDS server listens on.
    pub interface: String,
    pub grpc_port: u16,
    /// Certificate and key of the KDS server; empty: the control plane's own certificate.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// How often ZoneInsight counters are written (connects and disconnects at once).
    pub zone_insight_flush_interval: String,
    /// Largest KDS message, both ways (Kuma: 10 MiB).
    pub max_msg_size: usize,
}

impl Default for GlobalKds {
    fn default() -> Self {
        Self {
            interface: "0.0.0.0".into(),
            grpc_port: 5685,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            zone_insight_flush_interval: "10s".into(),
            max_msg_size: 10 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ZoneConfig {
    pub name: String,
    /// `grpcs://host:port` of the global control plane; empty: a standalone zone.
    pub global_address: String,
    pub kds: ZoneKds,
}

/// `multizone.zone.kds`: how a federated zone dials global.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ZoneKds {
    /// CA bundle (PEM) that verifies global's KDS certificate.
    pub root_ca_file: String,
    /// Skip verifying global's certificate (development only; logged as a warning).
    pub tls_skip_verify: bool,
    pub auth: ZoneKdsAuth,
    /// First and largest wait between reconnects (Kuma's
    /// `general.resilientComponentBaseBackoff` / `MaxBackoff`).
    pub reconnect_base_backoff: String,
    pub reconnect_max_backoff: String,
}

impl Default for ZoneKds {
    fn default() -> Self {
        Self {
            root_ca_file: String::new(),
            tls_skip_verify: false,
            auth: ZoneKdsAuth::default(),
            reconnect_base_backoff: "1s".into(),
            reconnect_max_backoff: "30s".into(),
        }
    }
}

/// The zone token this zone presents to global (scope `cp`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ZoneKdsAuth {
    pub cp_token_path: String,
    pub cp_token_inline: String,
}

/// What this control plane is, from `mode` and `multizone.zone.globalAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpMode {
    /// `mode: zone` without a global address: everything is local and writable.
    Standalone,
    /// `mode: zone` with a global address: synced with global over KDS.
    FederatedZone,
    /// `mode: global`.
    Global,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            environment: "universal".into(),
            mode: "zone".into(),
            general: General::default(),
            store: Store::default(),
            api_server: ApiServer::default(),
            dp_server: DpServer::default(),
            diagnostics: Diagnostics::default(),
            bootstrap_server: BootstrapServer::default(),
            xds_server: XdsServer::default(),
            dns_server: DnsServer::default(),
            monitoring_assignment_server: MonitoringAssignmentServer::default(),
            multizone: Multizone::default(),
            experimental: Experimental::default(),
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self {
            store_type: "sqlite".into(),
            sqlite: Sqlite::default(),
        }
    }
}

impl Default for HttpListener {
    fn default() -> Self {
        Self {
            enabled: true,
            interface: "0.0.0.0".into(),
            port: 5681,
        }
    }
}

impl Default for ApiServer {
    fn default() -> Self {
        Self {
            http: HttpListener::default(),
            https: HttpsListener::default(),
            authn: ApiAuthn::default(),
            read_header_timeout: "1s".into(),
            read_timeout: "10s".into(),
            write_timeout: "30s".into(),
            idle_timeout: "2m".into(),
            max_connections: 1024,
        }
    }
}

impl Default for HttpsListener {
    fn default() -> Self {
        Self {
            enabled: true,
            interface: "0.0.0.0".into(),
            port: 5682,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl Default for ApiAuthn {
    fn default() -> Self {
        Self {
            authn_type: "tokens".into(),
            localhost_is_admin: true,
            tokens: ApiAuthnTokens::default(),
        }
    }
}

impl Default for ApiAuthnTokens {
    fn default() -> Self {
        Self {
            bootstrap_admin_token: true,
        }
    }
}

impl Default for DpServer {
    fn default() -> Self {
        Self {
            interface: "0.0.0.0".into(),
            port: 5678,
            authn: DpServerAuthn::default(),
            read_header_timeout: "5s".into(),
            authn_timeout: "10s".into(),
            max_unauthenticated_bytes: 262_144,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_unauthenticated_streams: 4,
            max_concurrent_streams: 100,
        }
    }
}

impl Default for DpProxyAuthn {
    fn default() -> Self {
        Self {
            authn_type: "dpToken".into(),
        }
    }
}

impl Default for Diagnostics {
    fn default() -> Self {
        Self {
            interface: "0.0.0.0".into(),
            server_port: 5680,
            read_header_timeout: "1s".into(),
            read_timeout: "10s".into(),
            write_timeout: "30s".into(),
            idle_timeout: "2m".into(),
            max_connections: 128,
        }
    }
}

impl Default for BootstrapParams {
    fn default() -> Self {
        Self {
            admin_address: "127.0.0.1".into(),
            admin_port: 9901,
            xds_host: String::new(),
            xds_port: 0,
            xds_connect_timeout: "1s".into(),
        }
    }
}

impl Default for XdsServer {
    fn default() -> Self {
        Self {
            dataplane_status_flush_interval: "10s".into(),
            dataplane_deregistration_delay: "10s".into(),
            configuration_debounce: "20ms".into(),
        }
    }
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            global_address: String::new(),
            kds: ZoneKds::default(),
        }
    }
}

impl Config {
    /// Defaults ← `file` (if any) ← `KUMA_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut value = serde_json::to_value(Config::default())?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let overlay: Value = serde_saphyr::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            if !overlay.is_null() {
                merge(&mut value, overlay);
            }
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("KUMA_"))
            .collect();
        let mut leaves = Vec::new();
        collect_leaves(&value, String::new(), &mut leaves);
        for (name, val) in &env {
            let path = ENV_ALIASES
                .iter()
                .find(|(alias, _)| alias == name)
                .map(|(_, p)| p.to_string())
                .or_else(|| leaves.iter().find(|p| env_name(p) == *name).cloned());
            let Some(path) = path else { continue };
            set_leaf(&mut value, &path, val)
                .with_context(|| format!("environment variable {name}"))?;
        }
        let cfg: Config = serde_path_to_error::deserialize(value)
            .map_err(|e| anyhow::anyhow!("invalid configuration at {}: {}", e.path(), e.inner()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.environment != "universal" {
            bail!("environment: only \"universal\" is supported");
        }
        if !matches!(self.mode.as_str(), "zone" | "global") {
            bail!("mode: must be one of zone, global");
        }
        if self.cp_mode() == CpMode::FederatedZone {
            let a = &self.multizone.zone.global_address;
            if !(a.starts_with("grpcs://") || a.starts_with("grpc://")) {
                bail!("multizone.zone.globalAddress: must be grpcs://host:port (or grpc://)");
            }
            if self.multizone.zone.name == "default" || self.multizone.zone.name.is_empty() {
                bail!("multizone.zone.name: must be set on a zone connected to global");
            }
        }
        for (key, v) in [
            (
                "multizone.global.kds.zoneInsightFlushInterval",
                &self.multizone.global.kds.zone_insight_flush_interval,
            ),
            (
                "multizone.zone.kds.reconnectBaseBackoff",
                &self.multizone.zone.kds.reconnect_base_backoff,
            ),
            (
                "multizone.zone.kds.reconnectMaxBackoff",
                &self.multizone.zone.kds.reconnect_max_backoff,
            ),
        ] {
            let d = parse_duration(v).with_context(|| format!("{key}: invalid duration {v:?}"))?;
            if d.is_zero() {
                bail!("{key}: must be greater than 0");
            }
        }
        let kds = &self.multizone.global.kds;
        if kds.tls_cert_file.is_empty() != kds.tls_key_file.is_empty() {
            bail!(
                "multizone.global.kds.tlsCertFile and multizone.global.kds.tlsKeyFile must be set together"
            );
        }
        if !matches!(self.store.store_type.as_str(), "sqlite" | "memory") {
            bail!("store.type: must be one of sqlite, memory");
        }
        if self.api_server.authn.authn_type != "tokens" {
            bail!("apiServer.authn.type: only \"tokens\" is supported");
        }
        if !matches!(
            self.dp_server.authn.dp_proxy.authn_type.as_str(),
            "dpToken" | "none"
        ) {
            bail!("dpServer.authn.dpProxy.type: must be one of dpToken, none");
        }
        for (key, v) in [
            (
                "xdsServer.dataplaneStatusFlushInterval",
                &self.xds_server.dataplane_status_flush_interval,
            ),
            (
                "xdsServer.dataplaneDeregistrationDelay",
                &self.xds_server.dataplane_deregistration_delay,
            ),
            (
                "xdsServer.configurationDebounce",
                &self.xds_server.configuration_debounce,
            ),
            (
                "bootstrapServer.params.xdsConnectTimeout",
                &self.bootstrap_server.params.xds_connect_timeout,
            ),
            (
                "dpServer.readHeaderTimeout",
                &self.dp_server.read_header_timeout,
            ),
            ("dpServer.authnTimeout", &self.dp_server.authn_timeout),
        ] {
            parse_duration(v).with_context(|| format!("{key}: invalid duration {v:?}"))?;
        }
        for (key, v) in [
            (
                "apiServer.readHeaderTimeout",
                &self.api_server.read_header_timeout,
            ),
            ("apiServer.readTimeout", &self.api_server.read_timeout),
            ("apiServer.writeTimeout", &self.api_server.write_timeout),
            ("apiServer.idleTimeout", &self.api_server.idle_timeout),
            (
                "diagnostics.readHeaderTimeout",
                &self.diagnostics.read_header_timeout,
            ),
            ("diagnostics.readTimeout", &self.diagnostics.read_timeout),
            ("diagnostics.writeTimeout", &self.diagnostics.write_timeout),
            ("diagnostics.idleTimeout", &self.diagnostics.idle_timeout),
            (
                "dpServer.readHeaderTimeout",
                &self.dp_server.read_header_timeout,
            ),
            ("dpServer.authnTimeout", &self.dp_server.authn_timeout),
        ] {
            let d = parse_duration(v).with_context(|| format!("{key}: invalid duration {v:?}"))?;
            if d.is_zero() {
                bail!("{key}: must be greater than 0 (a connection would never be cut)");
            }
        }
        for (key, n) in [
            ("apiServer.maxConnections", self.api_server.max_connections),
            (
                "diagnostics.maxConnections",
                self.diagnostics.max_connections,
            ),
        ] {
            if n == 0 {
                bail!("{key}: must be at least 1");
            }
        }
        if self.dp_server.max_concurrent_streams == 0 {
            bail!("dpServer.maxConcurrentStreams: must be at least 1");
        }
        if self.dp_server.max_unauthenticated_streams == 0 {
            bail!("dpServer.maxUnauthenticatedStreams: must be at least 1");
        }
        if self.dp_server.max_unauthenticated_bytes < 1024 {
            bail!("dpServer.maxUnauthenticatedBytes: must be at least 1024");
        }
        let https = &self.api_server.https;
        if https.tls_cert_file.is_empty() != https.tls_key_file.is_empty() {
            bail!(
                "apiServer.https.tlsCertFile and apiServer.https.tlsKeyFile must be set together"
            );
        }
        if self.experimental.allowed_mtls_backends == 0 {
            bail!("experimental.allowedMtlsBackends: must be at least 1");
        }
        let dns = &self.dns_server;
        if dns.cidr.parse::<kuma_core::vips::Cidr>().is_err() {
            bail!(
                "dnsServer.CIDR: {:?} is not an IPv4 CIDR (a.b.c.d/n)",
                dns.cidr
            );
        }
        if dns.domain.is_empty() || dns.domain.starts_with('.') || dns.domain.ends_with('.') {
            bail!("dnsServer.domain: must be a DNS name without leading or trailing dot");
        }
        if !(1..=65535).contains(&dns.service_vip_port) {
            bail!("dnsServer.serviceVipPort: must be between 1 and 65535");
        }
        parse_duration(&dns.vip_grace_period).with_context(|| {
            format!(
                "dnsServer.vipGracePeriod: invalid duration {:?}",
                dns.vip_grace_period
            )
        })?;
        let mads = &self.monitoring_assignment_server;
        for (key, v) in [
            (
                "monitoringAssignmentServer.defaultFetchTimeout",
                &mads.default_fetch_timeout,
            ),
            (
                "monitoringAssignmentServer.assignmentRefreshInterval",
                &mads.assignment_refresh_interval,
            ),
        ] {
            parse_duration(v).with_context(|| format!("{key}: invalid duration {v:?}"))?;
        }
        if parse_duration(&mads.assignment_refresh_interval)?.is_zero() {
            bail!("monitoringAssignmentServer.assignmentRefreshInterval: must be greater than 0");
        }
        if let Some(v) = mads.api_versions.iter().find(|v| *v != "v1") {
            bail!("monitoringAssignmentServer.apiVersions: {v:?} is not supported (only v1)");
        }
        self.mads_tls_versions()?;
        if mads.tls_cert_file.is_empty() != mads.tls_key_file.is_empty() {
            bail!(
                "monitoringAssignmentServer.tlsCertFile and monitoringAssignmentServer.tlsKeyFile must be set together"
            );
        }
        if mads.max_connections == 0 {
            bail!("monitoringAssignmentServer.maxConnections: must be at least 1");
        }
        if kuma_core::name::name_problem(&self.multizone.zone.name, false).is_some() {
            bail!("multizone.zone.name: must be a valid DNS-1123 label");
        }
        Ok(())
    }

    /// What this control plane is (see [`CpMode`]).
    pub fn cp_mode(&self) -> CpMode {
        match (
            self.mode.as_str(),
            self.multizone.zone.global_address.is_empty(),
        ) {
            ("global", _) => CpMode::Global,
            (_, true) => CpMode::Standalone,
            (_, false) => CpMode::FederatedZone,
        }
    }

    /// The work directory (`$HOME/.kuma` when unset).
    pub fn work_dir(&self) -> PathBuf {
        if self.general.work_dir.is_empty() {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            PathBuf::from(home).join(".kuma")
        } else {
            PathBuf::from(&self.general.work_dir)
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        if self.store.sqlite.path.is_empty() {
            self.work_dir().join("kuma-cp.db")
        } else {
            PathBuf::from(&self.store.sqlite.path)
        }
    }

    pub fn flush_interval(&self) -> Duration {
        parse_duration(&self.xds_server.dataplane_status_flush_interval).unwrap_or_default()
    }

    pub fn deregistration_delay(&self) -> Duration {
        parse_duration(&self.xds_server.dataplane_deregistration_delay).unwrap_or_default()
    }

    pub fn debounce(&self) -> Duration {
        parse_duration(&self.xds_server.configuration_debounce).unwrap_or_default()
    }

    /// The DP server's bounds on connections and on what is accepted before authentication.
    pub fn dp_server_limits(&self) -> crate::dp_server::Limits {
        let d = &self.dp_server;
        crate::dp_server::Limits {
            read_header_timeout: parse_duration(&d.read_header_timeout).unwrap_or_default(),
            authn_timeout: parse_duration(&d.authn_timeout).unwrap_or_default(),
            max_unauthenticated_bytes: usize::try_from(d.max_unauthenticated_bytes)
                .unwrap_or(usize::MAX),
            max_connections: usize::try_from(d.max_connections).unwrap_or(usize::MAX),
            max_connections_per_ip: usize::try_from(d.max_connections_per_ip).unwrap_or(usize::MAX),
            max_unauthenticated_streams: d.max_unauthenticated_streams as usize,
            max_concurrent_streams: d.max_concurrent_streams,
        }
    }

    /// Timeouts and connection cap of the REST API listeners (`apiServer.*`).
    pub fn api_limits(&self) -> crate::serve::Limits {
        let a = &self.api_server;
        crate::serve::Limits {
            read_header_timeout: parse_duration(&a.read_header_timeout).unwrap_or_default(),
            read_timeout: parse_duration(&a.read_timeout).unwrap_or_default(),
            write_timeout: parse_duration(&a.write_timeout).unwrap_or_default(),
            idle_timeout: parse_duration(&a.idle_timeout).unwrap_or_default(),
            max_connections: usize::try_from(a.max_connections).unwrap_or(usize::MAX),
        }
    }

    /// Timeouts and connection cap of the diagnostics listener (`diagnostics.*`).
    pub fn diagnostics_limits(&self) -> crate::serve::Limits {
        let d = &self.diagnostics;
        crate::serve::Limits {
            read_header_timeout: parse_duration(&d.read_header_timeout).unwrap_or_default(),
            read_timeout: parse_duration(&d.read_timeout).unwrap_or_default(),
            write_timeout: parse_duration(&d.write_timeout).unwrap_or_default(),
            idle_timeout: parse_duration(&d.idle_timeout).unwrap_or_default(),
            max_connections: usize::try_from(d.max_connections).unwrap_or(usize::MAX),
        }
    }

    /// The MADS listener's deadlines and cap: Kuma's 1s for the headers, and room for the
    /// longest long poll ([`crate::mads::MAX_FETCH_TIMEOUT`]) in the write deadline.
    pub fn mads_limits(&self) -> crate::serve::Limits {
        crate::serve::Limits {
            read_header_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(10),
            write_timeout: crate::mads::MAX_FETCH_TIMEOUT + Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: usize::try_from(self.monitoring_assignment_server.max_connections)
                .unwrap_or(usize::MAX),
        }
    }

    /// The TLS versions the MADS server offers (`tlsMinVersion`, `tlsMaxVersion`): 1.2 and 1.3
    /// unless limited; an error names the key whose value is unknown or leaves no version.
    pub fn mads_tls_versions(
        &self,
    ) -> anyhow::Result<Vec<&'static rustls::SupportedProtocolVersion>> {
        let m = &self.monitoring_assignment_server;
        let rank = |key: &str, v: &str, empty: u8| -> anyhow::Result<u8> {
            Ok(match v {
                "" => empty,
                "TLSv1_0" => 10,
                "TLSv1_1" => 11,
                "TLSv1_2" => 12,
                "TLSv1_3" => 13,
                _ => bail!(
                    "monitoringAssignmentServer.{key}: {v:?} is not one of TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3"
                ),
            })
        };
        let min = rank("tlsMinVersion", &m.tls_min_version, 12)?;
        let max = rank("tlsMaxVersion", &m.tls_max_version, 13)?;
        let versions: Vec<_> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(r, _)| (min..=max).contains(r))
            .map(|(_, v)| v)
            .collect();
        if versions.is_empty() {
            bail!(
                "monitoringAssignmentServer.tlsMaxVersion: {:?} with tlsMinVersion {:?} leaves no version this control plane serves (TLS 1.2 and 1.3)",
                m.tls_max_version,
                m.tls_min_version
            );
        }
        Ok(versions)
    }

    /// What the MADS server needs from `monitoringAssignmentServer` (checked at load).
    pub fn mads_settings(&self) -> crate::mads::Settings {
        let m = &self.monitoring_assignment_server;
        crate::mads::Settings {
            zone: self.multizone.zone.name.clone(),
            default_fetch_timeout: parse_duration(&m.default_fetch_timeout).unwrap_or_default(),
            refresh_interval: parse_duration(&m.assignment_refresh_interval)
                .unwrap_or(Duration::from_secs(1)),
            max_long_polls: usize::try_from(m.max_long_polls).unwrap_or(usize::MAX),
        }
    }

    /// The VIP range (`dnsServer.CIDR`, checked at load).
    pub fn vip_cidr(&self) -> kuma_core::vips::Cidr {
        self.dns_server
            .cidr
            .parse()
            // Invariant: `load` refused a CIDR that does not parse; the default is valid.
            .unwrap_or_default()
    }

    /// How long an unused VIP stays reserved (`dnsServer.vipGracePeriod`).
    pub fn vip_grace_period(&self) -> Duration {
        parse_duration(&self.dns_server.vip_grace_period).unwrap_or_default()
    }

    /// Whether proxies must present a dataplane token (`dpServer.authn.dpProxy.type: dpToken`).
    pub fn dataplane_auth(&self) -> bool {
        self.dp_server.authn.dp_proxy.authn_type == "dpToken"
    }
}

/// Go-style durations: `300ms`, `10s`, `5m`, `1h`, `1h30m`, `0` ([`kuma_core::duration`]).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    Ok(kuma_core::duration::parse(s)?)
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        // Unknown keys are kept so that deserialization names them.
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn collect_leaves(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect_leaves(child, p, out);
            }
        }
        _ => out.push(prefix),
    }
}

/// `store.sqlite.path` → `KUMA_STORE_SQLITE_PATH`; `apiServer` → `API_SERVER`.
pub fn env_name(path: &str) -> String {
    let mut out = String::from("KUMA");
    for seg in path.split('.') {
        out.push('_');
        let mut prev_lower = false;
        for c in seg.chars() {
            if c.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}

fn set_leaf(root: &mut Value, path: &str, raw: &str) -> anyhow::Result<()> {
    let mut cur = root;
    for seg in path.split('.') {
        cur = cur
            .get_mut(seg)
            .with_context(|| format!("no configuration key {path}"))?;
    }
    *cur = match cur {
        Value::Bool(_) => Value::Bool(match raw {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => bail!("{path}: expected true or false, got {raw:?}"),
        }),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| Value::String(v.to_string()))
                .collect(),
        ),
        Value::Number(_) => Value::Number(
            raw.parse::<u64>()
                .with_context(|| format!("{path}: expected a number, got {raw:?}"))?
                .into(),
        ),
        _ => Value::String(raw.to_string()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_equals_default() {
        let from_file: Config = serde_saphyr::from_str(DEFAULTS_YAML).unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "apiServer:\n  http:\n    port: 1234\nstore:\n  type: memory\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&f),
            [
                ("KUMA_API_SERVER_HTTP_PORT".to_string(), "4321".to_string()),
                (
                    "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY".into(),
                    "1s".into(),
                ),
                ("KUMA_MULTIZONE_ZONE_NAME".into(), "zone-1".into()),
            ],
        )
        .unwrap();
        assert_eq!(cfg.api_server.http.port, 4321);
        assert_eq!(cfg.store.store_type, "memory");
        assert_eq!(cfg.deregistration_delay(), Duration::from_secs(1));
        assert_eq!(cfg.multizone.zone.name, "zone-1");
    }

    #[test]
    fn unknown_key_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "apiServer:\n  htp: {}\n").unwrap();
        let err = Config::load(Some(&f), []).unwrap_err().to_string();
        assert!(err.contains("apiServer") && err.contains("htp"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(None, [("KUMA_DP_SERVER_PORT".into(), "x".into())]).unwrap_err()
        );
        assert!(err.contains("KUMA_DP_SERVER_PORT"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(
                None,
                [("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE".into(), "tokens".into())]
            )
            .unwrap_err()
        );
        assert!(err.contains("dpServer.authn.dpProxy.type"), "{err}");
    }

    #[test]
    fn authn_keys_and_env_names() {
        let cfg = Config::default();
        assert!(cfg.dataplane_auth());
        assert!(cfg.api_server.authn.localhost_is_admin);
        assert!(cfg.api_server.authn.tokens.bootstrap_admin_token);
        let cfg = Config::load(
            None,
            [
                ("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE".into(), "none".into()),
                (
                    "KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN".into(),
                    "false".into(),
                ),
                (
                    "KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN".into(),
                    "false".into(),
                ),
            ],
        )
        .unwrap();
        assert!(!cfg.dataplane_auth());
        assert!(!cfg.api_server.authn.localhost_is_admin);
        assert!(!cfg.api_server.authn.tokens.bootstrap_admin_token);
    }

    #[test]
    fn serving_keys_from_env_and_their_checks() {
        let cfg = Config::default();
        assert!(cfg.api_server.https.enabled);
        assert_eq!(cfg.api_server.https.port, 5682);
        assert_eq!(cfg.api_limits().read_header_timeout, Duration::from_secs(1));
        assert_eq!(cfg.api_limits().idle_timeout, Duration::from_secs(120));
        assert_eq!(cfg.diagnostics_limits().max_connections, 128);
        let cfg = Config::load(
            None,
            [
                ("KUMA_API_SERVER_HTTPS_PORT".into(), "6682".into()),
                ("KUMA_API_SERVER_HTTPS_ENABLED".into(), "false".into()),
                ("KUMA_API_SERVER_HTTPS_TLS_CERT_FILE".into(), "/c".into()),
                ("KUMA_API_SERVER_HTTPS_TLS_KEY_FILE".into(), "/k".into()),
                ("KUMA_API_SERVER_READ_HEADER_TIMEOUT".into(), "250ms".into()),
                ("KUMA_API_SERVER_MAX_CONNECTIONS".into(), "7".into()),
                ("KUMA_DIAGNOSTICS_IDLE_TIMEOUT".into(), "3s".into()),
            ],
        )
        .unwrap();
        assert_eq!(cfg.api_server.https.port, 6682);
        assert!(!cfg.api_server.https.enabled);
        assert_eq!(cfg.api_server.https.tls_cert_file, "/c");
        assert_eq!(cfg.api_server.https.tls_key_file, "/k");
        assert_eq!(
            cfg.api_limits().read_header_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(cfg.api_limits().max_connections, 7);
        assert_eq!(
            cfg.diagnostics_limits().idle_timeout,
            Duration::from_secs(3)
        );
        for (var, val, key) in [
            (
                "KUMA_API_SERVER_IDLE_TIMEOUT",
                "0s",
                "apiServer.idleTimeout",
            ),
            (
                "KUMA_API_SERVER_READ_TIMEOUT",
                "soon",
                "apiServer.readTimeout",
            ),
            (
                "KUMA_DIAGNOSTICS_MAX_CONNECTIONS",
                "0",
                "diagnostics.maxConnections",
            ),
            (
                "KUMA_API_SERVER_HTTPS_TLS_CERT_FILE",
                "/c",
                "apiServer.https.tlsKeyFile",
            ),
        ] {
            let err = format!(
                "{:#}",
                Config::load(None, [(var.to_string(), val.to_string())]).unwrap_err()
            );
            assert!(err.contains(key), "{var}={val}: {err}");
        }
    }

    #[test]
    fn dp_server_limits_from_env_and_their_checks() {
        let limits = Config::default().dp_server_limits();
        assert_eq!(limits.authn_timeout, Duration::from_secs(10));
        assert_eq!(limits.read_header_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_unauthenticated_bytes, 262_144);
        let cfg = Config::load(
            None,
            [
                ("KUMA_DP_SERVER_AUTHN_TIMEOUT", "2s"),
                ("KUMA_DP_SERVER_READ_HEADER_TIMEOUT", "1s"),
                ("KUMA_DP_SERVER_MAX_UNAUTHENTICATED_BYTES", "16384"),
                ("KUMA_DP_SERVER_MAX_CONNECTIONS", "50"),
                ("KUMA_DP_SERVER_MAX_CONNECTIONS_PER_IP", "0"),
                ("KUMA_DP_SERVER_MAX_CONCURRENT_STREAMS", "8"),
                ("KUMA_DP_SERVER_MAX_UNAUTHENTICATED_STREAMS", "2"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let limits = cfg.dp_server_limits();
        assert_eq!(limits.authn_timeout, Duration::from_secs(2));
        assert_eq!(limits.read_header_timeout, Duration::from_secs(1));
        assert_eq!(limits.max_unauthenticated_bytes, 16_384);
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_ip),
            (50, 0)
        );
        assert_eq!(limits.max_concurrent_streams, 8);
        assert_eq!(limits.max_unauthenticated_streams, 2);
        for (k, v, named) in [
            ("KUMA_DP_SERVER_AUTHN_TIMEOUT", "0", "dpServer.authnTimeout"),
            (
                "KUMA_DP_SERVER_READ_HEADER_TIMEOUT",
                "x",
                "dpServer.readHeaderTimeout",
            ),
            (
                "KUMA_DP_SERVER_MAX_CONCURRENT_STREAMS",
                "0",
                "dpServer.maxConcurrentStreams",
            ),
            (
                "KUMA_DP_SERVER_MAX_UNAUTHENTICATED_BYTES",
                "10",
                "dpServer.maxUnauthenticatedBytes",
            ),
        ] {
            let err = format!(
                "{:#}",
                Config::load(None, [(k.to_string(), v.to_string())]).unwrap_err()
            );
            assert!(err.contains(named), "{k}={v}: {err}");
        }
    }

    #[test]
    fn mads_keys_kuma_accepts_from_a_file_and_the_environment() {
        let load = |env: &[(&str, &str)]| {
            Config::load(
                None,
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let d = load(&[]).unwrap();
        assert_eq!(d.mads_tls_versions().unwrap().len(), 2);
        let c = load(&[
            ("KUMA_MONITORING_ASSIGNMENT_SERVER_API_VERSIONS", "v1"),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_MIN_VERSION",
                "TLSv1_3",
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CIPHER_SUITES",
                "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
            ),
        ])
        .unwrap();
        let m = &c.monitoring_assignment_server;
        assert_eq!(m.api_versions, ["v1"]);
        assert_eq!(
            m.tls_cipher_suites,
            ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]
        );
        assert_eq!(
            c.mads_tls_versions().unwrap(),
            vec![&rustls::version::TLS13]
        );
        let c = load(&[
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_MIN_VERSION",
                "TLSv1_0",
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_MAX_VERSION",
                "TLSv1_2",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.mads_tls_versions().unwrap(),
            vec![&rustls::version::TLS12]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kuma-cp.yaml");
        std::fs::write(
            &file,
            "monitoringAssignmentServer:\n  apiVersions: [v1]\n  tlsMinVersion: TLSv1_2\n  tlsMaxVersion: TLSv1_3\n  tlsCipherSuites: [TLS_AES_128_GCM_SHA256]\n",
        )
        .unwrap();
        Config::load(Some(&file), []).unwrap();
        for (k, v, named) in [
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_API_VERSIONS",
                "v2",
                "monitoringAssignmentServer.apiVersions",
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_MIN_VERSION",
                "SSLv3",
                "monitoringAssignmentServer.tlsMinVersion",
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_MAX_VERSION",
                "TLSv1_1",
                "monitoringAssignmentServer.tlsMaxVersion",
            ),
        ] {
            let err = format!("{:#}", load(&[(k, v)]).unwrap_err());
            assert!(err.contains(named), "{k}={v}: {err}");
        }
    }

    #[test]
    fn dns_server_keys_from_env_and_their_checks() {
        let load = |env: &[(&str, &str)]| {
            Config::load(
                None,
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let d = load(&[]).unwrap();
        assert_eq!(d.dns_server.domain, "mesh");
        assert_eq!(d.vip_cidr().to_string(), "240.0.0.0/4");
        assert!(d.dns_server.service_vip_enabled);
        assert_eq!(d.dns_server.service_vip_port, 80);
        assert_eq!(d.vip_grace_period(), Duration::from_secs(3600));
        let c = load(&[
            ("KUMA_DNS_SERVER_DOMAIN", "internal"),
            ("KUMA_DNS_SERVER_CIDR", "10.9.0.0/16"),
            ("KUMA_DNS_SERVER_SERVICE_VIP_ENABLED", "false"),
            ("KUMA_DNS_SERVICE_SERVICE_VIP_PORT", "8080"),
            ("KUMA_DNS_SERVER_VIP_GRACE_PERIOD", "5m"),
        ])
        .unwrap();
        assert_eq!(c.dns_server.domain, "internal");
        assert_eq!(c.vip_cidr().to_string(), "10.9.0.0/16");
        assert!(!c.dns_server.service_vip_enabled);
        assert_eq!(c.dns_server.service_vip_port, 8080);
        assert_eq!(c.vip_grace_period(), Duration::from_secs(300));
        let c = load(&[("KUMA_DNS_SERVER_SERVICE_VIP_PORT", "81")]).unwrap();
        assert_eq!(c.dns_server.service_vip_port, 81);
        for (k, v, named) in [
            ("KUMA_DNS_SERVER_CIDR", "240.0.0.0", "dnsServer.CIDR"),
            ("KUMA_DNS_SERVER_CIDR", "fd00::/8", "dnsServer.CIDR"),
            ("KUMA_DNS_SERVER_DOMAIN", "", "dnsServer.domain"),
            (
                "KUMA_DNS_SERVER_SERVICE_VIP_PORT",
                "0",
                "dnsServer.serviceVipPort",
            ),
            (
                "KUMA_DNS_SERVER_VIP_GRACE_PERIOD",
                "soon",
                "dnsServer.vipGracePeriod",
            ),
        ] {
            let err = format!("{:#}", load(&[(k, v)]).unwrap_err());
            assert!(err.contains(named), "{k}={v}: {err}");
        }
    }

    #[test]
    fn env_names_and_durations() {
        assert_eq!(env_name("apiServer.http.port"), "KUMA_API_SERVER_HTTP_PORT");
        assert_eq!(
            env_name("xdsServer.dataplaneStatusFlushInterval"),
            "KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL"
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
