//! Command-line interface of `kuma-dp` (clap). Flag and `KUMA_*` variable names follow Kuma 2.x
//! `kuma-dp run`; see [`crate::config::Config::from_args`] for how they are checked and combined.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::dataplane::ProxyType;
use crate::duration;

/// `kuma-dp`: the data plane agent of the mesh.
#[derive(Debug, Parser)]
#[command(
    name = "kuma-dp",
    version,
    about = "Data plane agent: bootstraps and supervises Envoy"
)]
pub struct Cli {
    /// kuma-dp log level: off, error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "KUMA_LOG_LEVEL")]
    pub log_level: String,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// `kuma-dp` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the Envoy bootstrap from the control plane and run Envoy.
    Run(Box<RunArgs>),
    /// Print the kuma-dp version.
    Version {
        /// Also print the git tag, commit and build date.
        #[arg(short = 'a', long)]
        detailed: bool,
    },
}

/// Flags of `kuma-dp run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// URL of the control plane's DP server (http or https).
    #[arg(
        long,
        env = "KUMA_CONTROL_PLANE_URL",
        default_value = "https://localhost:5678"
    )]
    pub cp_address: String,

    /// PEM file with the CA certificate that signed the control plane's DP server certificate.
    #[arg(long, env = "KUMA_CONTROL_PLANE_CA_CERT_FILE")]
    pub ca_cert_file: Option<PathBuf>,

    /// The CA certificate as inline PEM (alternative to --ca-cert-file).
    #[arg(long, env = "KUMA_CONTROL_PLANE_CA_CERT", hide = true)]
    pub ca_cert: Option<String>,

    /// Do not verify the control plane's certificate (insecure; for tests only).
    #[arg(long, env = "KUMA_CONTROL_PLANE_TLS_SKIP_VERIFY", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub skip_verify: bool,

    /// Certificate (PEM file) Envoy serves the Prometheus endpoint with when the metrics
    /// backend's `tls.mode` is `providedTLS` (Kuma's flag; sent to the CP, read by Envoy).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_METRICS_CERT_PATH")]
    pub metrics_cert_path: Option<PathBuf>,

    /// Private key (PEM file) of `--metrics-cert-path`.
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_METRICS_KEY_PATH")]
    pub metrics_key_path: Option<PathBuf>,

    /// File holding the dataplane (or zone) token.
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH")]
    pub dataplane_token_file: Option<PathBuf>,

    /// The dataplane token itself (wins over --dataplane-token-file).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_TOKEN")]
    pub dataplane_token: Option<String>,

    /// Inline Dataplane/ZoneIngress/ZoneEgress resource (YAML or JSON, a template).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_RESOURCE")]
    pub dataplane: Option<String>,

    /// File with the resource (YAML or JSON, a template); `-` reads standard input.
    #[arg(short = 'd', long, env = "KUMA_DATAPLANE_RUNTIME_RESOURCE_PATH")]
    pub dataplane_file: Option<PathBuf>,

    /// Template variable `key=value` for the resource; repeatable.
    #[arg(short = 'v', long = "dataplane-var", value_name = "KEY=VALUE")]
    pub dataplane_var: Vec<String>,

    /// Name of a Dataplane created beforehand (only without a resource).
    #[arg(long, env = "KUMA_DATAPLANE_NAME")]
    pub name: Option<String>,

    /// Mesh of a Dataplane created beforehand (only without a resource).
    #[arg(long, env = "KUMA_DATAPLANE_MESH")]
    pub mesh: Option<String>,

    /// Proxy type: dataplane, ingress or egress.
    #[arg(long, env = "KUMA_DATAPLANE_PROXY_TYPE", default_value = "dataplane")]
    pub proxy_type: ProxyType,

    /// Envoy binary: a path, or a name looked up on PATH, in the current directory and next to
    /// kuma-dp.
    #[arg(
        long,
        env = "KUMA_DATAPLANE_RUNTIME_BINARY_PATH",
        default_value = "envoy"
    )]
    pub binary_path: PathBuf,

    /// Work directory for the Envoy bootstrap and sockets (default: a temporary `kuma-dp-*`
    /// directory removed on exit).
    #[arg(long, alias = "config-dir", env = "KUMA_DATAPLANE_RUNTIME_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// Envoy drain time (`--drain-time-s`) and how long to drain on shutdown.
    #[arg(long, env = "KUMA_DATAPLANE_DRAIN_TIME", default_value = "30s",
          value_parser = duration::parse_arg)]
    pub drain_time: Duration,

    /// Envoy log level (default: follows --log-level).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_ENVOY_LOG_LEVEL")]
    pub envoy_log_level: Option<String>,

    /// Envoy per-component log levels (`upstream:debug,connection:trace`).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_ENVOY_COMPONENT_LOG_LEVEL")]
    pub envoy_component_log_level: Option<String>,

    /// Envoy worker threads; 0 lets Envoy follow the CPU set (`--cpuset-threads`).
    #[arg(long, env = "KUMA_DATAPLANE_RUNTIME_CONCURRENCY", default_value_t = 1)]
    pub concurrency: u32,

    /// Port of the readiness reporter on 127.0.0.1; 0 disables it.
    #[arg(long, env = "KUMA_READINESS_PORT", default_value_t = 9902)]
    pub readiness_port: u16,

    /// Use incremental (delta) xDS instead of state-of-the-world.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub xds_delta: bool,

    /// xDS transport variant: GRPC (default) or DELTA_GRPC.
    #[arg(
        long,
        env = "KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT",
        hide = true
    )]
    pub xds_transport_protocol_variant: Option<String>,

    /// Wait between attempts to fetch the bootstrap.
    #[arg(long, env = "KUMA_CONTROL_PLANE_RETRY_BACKOFF", default_value = "3s",
          value_parser = duration::parse_arg, hide = true)]
    pub cp_retry_backoff: Duration,

    /// Give up fetching the bootstrap after this long.
    #[arg(long, env = "KUMA_CONTROL_PLANE_RETRY_MAX_DURATION", default_value = "5m",
          value_parser = duration::parse_arg, hide = true)]
    pub cp_retry_max_duration: Duration,

    /// Run the DNS server for the proxy (mesh names from the control plane, other names
    /// forwarded to the resolv.conf nameservers). Ignored for zone proxies.
    #[arg(long, env = "KUMA_DNS_ENABLED", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "true", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub dns_enabled: bool,

    /// Port of the DNS server on 127.0.0.1 (UDP and TCP), unless KUMA_DNS_PROXY_PORT is set.
    #[arg(long = "dns-coredns-port", env = "KUMA_DNS_CORE_DNS_PORT", default_value_t = crate::dns::DEFAULT_PORT)]
    pub dns_coredns_port: u16,

    /// Port of the DNS server when non-zero (Kuma's embedded DNS proxy port; wins over
    /// --dns-coredns-port).
    #[arg(
        long = "dns-proxy-port",
        env = "KUMA_DNS_PROXY_PORT",
        default_value_t = 0,
        hide = true
    )]
    pub dns_proxy_port: u16,

    /// Kuma's CoreDNS-mode settings, accepted so Kuma command lines keep working and ignored
    /// (this kuma-dp answers DNS itself; a warning names each one given).
    #[arg(long = "dns-envoy-port", env = "KUMA_DNS_ENVOY_DNS_PORT", hide = true)]
    pub dns_envoy_port: Option<String>,
    /// Ignored (see `dns_envoy_port`).
    #[arg(
        long = "dns-coredns-path",
        env = "KUMA_DNS_CORE_DNS_BINARY_PATH",
        hide = true
    )]
    pub dns_coredns_path: Option<String>,
    /// Ignored (see `dns_envoy_port`).
    #[arg(
        long = "dns-coredns-config-template-path",
        env = "KUMA_DNS_CORE_DNS_CONFIG_TEMPLATE_PATH",
        hide = true
    )]
    pub dns_coredns_config_template_path: Option<String>,
    /// Ignored (see `dns_envoy_port`).
    #[arg(
        long = "dns-server-config-dir",
        env = "KUMA_DNS_CONFIG_DIR",
        hide = true
    )]
    pub dns_server_config_dir: Option<String>,
    /// Ignored (see `dns_envoy_port`).
    #[arg(
        long = "dns-prometheus-port",
        env = "KUMA_DNS_PROMETHEUS_PORT",
        hide = true
    )]
    pub dns_prometheus_port: Option<String>,
    /// Ignored (see `dns_envoy_port`).
    #[arg(long = "dns-enable-logging", env = "KUMA_DNS_ENABLE_LOGGING", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", hide = true)]
    pub dns_enable_logging: Option<String>,

    /// The resolv.conf whose nameservers answer the names outside the mesh.
    #[arg(long = "dns-resolv-conf", env = "KUMA_DNS_RESOLV_CONF",
          default_value = crate::dns::DEFAULT_RESOLV_CONF, hide = true)]
    pub dns_resolv_conf: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_bool_flags_go_style() {
        let cli = Cli::try_parse_from([
            "kuma-dp",
            "run",
            "--skip-verify",
            "--xds-delta=true",
            "--dns-enabled=false",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert!(args.skip_verify);
        assert!(args.xds_delta);
        assert!(!args.dns_enabled);
    }

    #[test]
    fn parses_durations_and_aliases() {
        let cli = Cli::try_parse_from([
            "kuma-dp",
            "run",
            "--drain-time",
            "500ms",
            "--config-dir",
            "/tmp/x",
            "-v",
            "a=1",
            "--dataplane-var",
            "b=2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.drain_time, Duration::from_millis(500));
        assert_eq!(args.work_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(args.dataplane_var, vec!["a=1", "b=2"]);
        assert!(Cli::try_parse_from(["kuma-dp", "run", "--drain-time", "30"]).is_err());
    }
}
