//! The typed, checked configuration of `kuma-dp run`.
//!
//! [`Config::from_args`] turns the parsed flags/`KUMA_*` variables ([`RunArgs`]) into a
//! [`Config`]: it rejects conflicting or missing identity flags, reads the resource, token and
//! CA files, renders the resource template and parses it. Everything after this step works from
//! the `Config` alone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::RunArgs;
use crate::dataplane::{self, ProxyType, Resource};
use crate::dns;
use crate::template;

/// Feature always advertised: Envoy access logs go to kuma-dp over a named pipe.
pub const FEATURE_TCP_ACCESSLOG_VIA_NAMED_PIPE: &str = "feature-tcp-accesslog-via-named-pipe";
/// Feature advertised when delta xDS is requested.
pub const FEATURE_DELTA_GRPC: &str = "feature-delta-grpc";
/// Advertised by every kuma-dp of this project: it reports its proxy's readiness to the
/// control plane (`POST /readiness`), which keeps a starting proxy out of its peers'
/// endpoints until Envoy is live and takes a stopping one out before Envoy stops.
pub const FEATURE_READINESS_REPORTING: &str = "feature-readiness-reporting";

/// Envoy's log levels (`--log-level`).
const ENVOY_LOG_LEVELS: &[&str] = &[
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// Why the flags do not make a usable configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--name`/`--mesh` were combined with a resource.
    #[error(
        "--name and --mesh cannot be used together with --dataplane or --dataplane-file: \
         the name and mesh are read from the resource"
    )]
    IdentityConflict,
    /// Both an inline resource and a resource file were given.
    #[error("--dataplane and --dataplane-file cannot be used together")]
    ResourceConflict,
    /// Neither a resource nor the named identity flag was given.
    #[error(
        "{0} is required: pass the resource with --dataplane/--dataplane-file, \
         or identify an existing one with --name and --mesh"
    )]
    MissingFlag(&'static str),
    /// `--dataplane-var` without a resource to render.
    #[error("--dataplane-var needs a resource template (--dataplane or --dataplane-file)")]
    VarsWithoutResource,
    /// A file named by a flag could not be read.
    #[error("could not read {flag} {path:?}: {source}")]
    ReadFile {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The resource template could not be rendered.
    #[error("could not render the resource template: {0}")]
    Template(#[from] template::Error),
    /// The rendered resource is not usable.
    #[error("invalid resource: {0}")]
    Resource(#[from] dataplane::Error),
    /// `--cp-address` is not an http(s) URL.
    #[error("invalid --cp-address {0:?}: expected an http:// or https:// URL")]
    CpAddress(String),
    /// The CA given is not PEM.
    #[error("the CA certificate ({0}) contains no PEM certificate")]
    CaCert(String),
    /// A token was given but is empty.
    #[error("the dataplane token from {0} is empty")]
    EmptyToken(String),
    /// An unknown xDS transport variant.
    #[error(
        "invalid KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT {0:?}: \
         expected GRPC or DELTA_GRPC"
    )]
    XdsVariant(String),
    /// The DNS port is 0.
    #[error(
        "invalid --dns-coredns-port / KUMA_DNS_CORE_DNS_PORT 0: the DNS server needs a port (or --dns-enabled=false)"
    )]
    DnsPort,
    /// An unknown Envoy log level.
    #[error(
        "invalid --envoy-log-level {0:?}: expected trace, debug, info, warning, error, critical or off"
    )]
    EnvoyLogLevel(String),
}

/// How to reach and trust the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// DP server URL (`--cp-address`).
    pub url: reqwest::Url,
    /// PEM of the CA that signs the DP server certificate, if given.
    pub ca_cert_pem: Option<String>,
    /// Whether certificate verification is disabled (`--skip-verify`).
    pub skip_verify: bool,
    /// Wait between bootstrap attempts.
    pub retry_backoff: Duration,
    /// Give up on the bootstrap after this long.
    pub retry_max_duration: Duration,
}

/// Who this proxy is.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `--proxy-type`.
    pub proxy_type: ProxyType,
    /// Resource name.
    pub name: String,
    /// Mesh; empty for zone proxies.
    pub mesh: String,
    /// The rendered resource ("direct" mode), or `None` when it was created beforehand.
    pub resource: Option<Resource>,
    /// The token to present, if any.
    pub token: Option<String>,
    /// The token file, if the token came from one.
    pub token_path: Option<PathBuf>,
}

/// How to run Envoy.
#[derive(Debug, Clone)]
pub struct Envoy {
    /// `--binary-path` as given (resolved by [`crate::envoy::find_binary`]).
    pub binary_path: PathBuf,
    /// `--drain-time`.
    pub drain_time: Duration,
    /// Envoy `--log-level`.
    pub log_level: String,
    /// Envoy `--component-log-level`, if any.
    pub component_log_level: Option<String>,
    /// Worker threads; 0 = `--cpuset-threads`.
    pub concurrency: u32,
    /// Whether delta xDS is requested.
    pub delta: bool,
}

/// The whole configuration of `kuma-dp run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Control plane connection.
    pub control_plane: ControlPlane,
    /// Proxy identity.
    pub proxy: Proxy,
    /// Envoy process.
    pub envoy: Envoy,
    /// `--work-dir`, or `None` for a temporary directory.
    pub work_dir: Option<PathBuf>,
    /// Readiness reporter port; 0 = disabled.
    pub readiness_port: u16,
    /// The DNS server, or `None` when `--dns-enabled=false` or for a zone proxy.
    pub dns: Option<dns::Settings>,
    /// `--metrics-cert-path` and `--metrics-key-path` (empty when not given), sent to the CP
    /// as the bootstrap request's `metricsResources`.
    pub metrics_cert_path: String,
    pub metrics_key_path: String,
}

impl Config {
    /// Checks `args` and loads the files they name. `log_level` is kuma-dp's own level, which
    /// Envoy follows unless `--envoy-log-level` is given. `-` as `--dataplane-file` reads stdin.
    pub fn from_args(args: &RunArgs, log_level: &str) -> Result<Self, Error> {
        Self::from_args_with_stdin(args, log_level, || {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        })
    }

    /// [`Config::from_args`] with an explicit source for `--dataplane-file -`.
    pub fn from_args_with_stdin(
        args: &RunArgs,
        log_level: &str,
        stdin: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<Self, Error> {
        // Identity flags are checked before any file is read, so the errors do not depend on
        // the filesystem.
        let has_resource = args.dataplane.is_some() || args.dataplane_file.is_some();
        if args.dataplane.is_some() && args.dataplane_file.is_some() {
            return Err(Error::ResourceConflict);
        }
        if has_resource && (args.name.is_some() || args.mesh.is_some()) {
            return Err(Error::IdentityConflict);
        }
        if !has_resource {
            if args.name.as_deref().is_none_or(str::is_empty) {
                return Err(Error::MissingFlag("--name"));
            }
            if args.proxy_type.is_mesh_scoped() && args.mesh.as_deref().is_none_or(str::is_empty) {
                return Err(Error::MissingFlag("--mesh"));
            }
            if !args.dataplane_var.is_empty() {
                return Err(Error::VarsWithoutResource);
            }
        }

        let url = parse_cp_address(&args.cp_address)?;
        let envoy = envoy_config(args, log_level)?;

        let proxy = if has_resource {
            let text = match (&args.dataplane, &args.dataplane_file) {
                (Some(inline), _) => inline.clone(),
                (None, Some(path)) if path == Path::new("-") => {
                    stdin().map_err(|source| Error::ReadFile {
                        flag: "--dataplane-file",
                        path: path.clone(),
                        source,
                    })?
                }
                (None, Some(path)) => read_file("--dataplane-file", path)?,
                (None, None) => unreachable!("has_resource checked above"),
            };
            let vars = template::parse_vars(&args.dataplane_var)?;
            let rendered = template::render(&text, &vars)?;
            let resource = Resource::parse(&rendered, args.proxy_type)?;
            Proxy {
                proxy_type: args.proxy_type,
                name: resource.name.clone(),
                mesh: resource.mesh.clone(),
                resource: Some(resource),
                token: None,
                token_path: None,
            }
        } else {
            Proxy {
                proxy_type: args.proxy_type,
                name: args.name.clone().unwrap_or_default(),
                mesh: args.mesh.clone().unwrap_or_default(),
                resource: None,
                token: None,
                token_path: None,
            }
        };
        let (token, token_path) = load_token(args)?;

        let ca_cert_pem = match (&args.ca_cert, &args.ca_cert_file) {
            (Some(inline), _) if !inline.trim().is_empty() => Some(inline.clone()),
            (_, Some(path)) => Some(read_file("--ca-cert-file", path)?),
            _ => None,
        };
        if let Some(pem) = &ca_cert_pem
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            let source = match &args.ca_cert_file {
                Some(path) if args.ca_cert.is_none() => format!("--ca-cert-file {path:?}"),
                _ => "KUMA_CONTROL_PLANE_CA_CERT".to_string(),
            };
            return Err(Error::CaCert(source));
        }

        Ok(Config {
            control_plane: ControlPlane {
                url,
                ca_cert_pem,
                skip_verify: args.skip_verify,
                retry_backoff: args.cp_retry_backoff,
                retry_max_duration: args.cp_retry_max_duration,
            },
            proxy: Proxy {
                token,
                token_path,
                ..proxy
            },
            envoy,
            work_dir: args.work_dir.clone(),
            readiness_port: args.readiness_port,
            dns: dns_settings(args)?,
            metrics_cert_path: path_text(&args.metrics_cert_path),
            metrics_key_path: path_text(&args.metrics_key_path),
        })
    }

    /// The features advertised to the control plane (bootstrap request and node metadata).
    pub fn features(&self) -> Vec<String> {
        let mut features = vec![
            FEATURE_TCP_ACCESSLOG_VIA_NAMED_PIPE.to_string(),
            FEATURE_READINESS_REPORTING.to_string(),
        ];
        if self.envoy.delta {
            features.push(FEATURE_DELTA_GRPC.to_string());
        }
        if self.dns.is_some() {
            features.push(dns::FEATURE_EMBEDDED_DNS.to_string());
        }
        features
    }
}

/// A path flag as the CP gets it: absolute when given relative (Envoy reads it from its own
/// working directory), empty when absent.
fn path_text(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The DNS server of a Dataplane: the port from `KUMA_DNS_PROXY_PORT` when non-zero, else
/// `--dns-coredns-port`. Zone proxies run none (as Kuma).
fn dns_settings(args: &RunArgs) -> Result<Option<dns::Settings>, Error> {
    for (flag, given) in [
        ("--dns-envoy-port", &args.dns_envoy_port),
        ("--dns-coredns-path", &args.dns_coredns_path),
        (
            "--dns-coredns-config-template-path",
            &args.dns_coredns_config_template_path,
        ),
        ("--dns-server-config-dir", &args.dns_server_config_dir),
        ("--dns-prometheus-port", &args.dns_prometheus_port),
        ("--dns-enable-logging", &args.dns_enable_logging),
    ] {
        if given.is_some() {
            tracing::warn!(
                flag,
                "CoreDNS setting ignored: this kuma-dp answers DNS itself (no CoreDNS)"
            );
        }
    }
    if !args.dns_enabled || !args.proxy_type.is_mesh_scoped() {
        return Ok(None);
    }
    let (port, port_setting) = if args.dns_proxy_port != 0 {
        (args.dns_proxy_port, "KUMA_DNS_PROXY_PORT")
    } else {
        (
            args.dns_coredns_port,
            "--dns-coredns-port / KUMA_DNS_CORE_DNS_PORT",
        )
    };
    if port == 0 {
        return Err(Error::DnsPort);
    }
    Ok(Some(dns::Settings {
        port,
        port_setting: port_setting.to_string(),
        resolv_conf: args.dns_resolv_conf.clone(),
        limits: dns::server::Limits::default(),
    }))
}

fn read_file(flag: &'static str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn parse_cp_address(raw: &str) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(raw).map_err(|_| Error::CpAddress(raw.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::CpAddress(raw.to_string()));
    }
    Ok(url)
}

/// The inline token wins over the file; the path is only sent when the token came from it.
fn load_token(args: &RunArgs) -> Result<(Option<String>, Option<PathBuf>), Error> {
    if let Some(token) = args.dataplane_token.as_deref() {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::EmptyToken("--dataplane-token".into()));
        }
        return Ok((Some(token.to_string()), None));
    }
    if let Some(path) = &args.dataplane_token_file {
        let token = read_file("--dataplane-token-file", path)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::EmptyToken(format!(
                "--dataplane-token-file {path:?}"
            )));
        }
        return Ok((Some(token.to_string()), Some(path.clone())));
    }
    Ok((None, None))
}

fn envoy_config(args: &RunArgs, log_level: &str) -> Result<Envoy, Error> {
    let delta = args.xds_delta
        || match args
            .xds_transport_protocol_variant
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("GRPC") => false,
            Some("DELTA_GRPC") => true,
            Some(other) => return Err(Error::XdsVariant(other.to_string())),
        };
    let log_level = match &args.envoy_log_level {
        Some(level) => {
            let level = level.trim().to_ascii_lowercase();
            if !ENVOY_LOG_LEVELS.contains(&level.as_str()) {
                return Err(Error::EnvoyLogLevel(level));
            }
            level
        }
        None => envoy_level_for(log_level).to_string(),
    };
    Ok(Envoy {
        binary_path: args.binary_path.clone(),
        drain_time: args.drain_time,
        log_level,
        component_log_level: args.envoy_component_log_level.clone(),
        concurrency: args.concurrency,
        delta,
    })
}

/// Envoy's level for kuma-dp's `--log-level` (Envoy has `warning`, not `warn`).
fn envoy_level_for(kuma_dp_level: &str) -> &'static str {
    match kuma_dp_level.trim().to_ascii_lowercase().as_str() {
        "off" => "off",
        "error" => "error",
        "warn" | "warning" => "warning",
        "debug" => "debug",
        "trace" => "trace",
        _ => "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    const DP: &str = "type: Dataplane\nmesh: default\nname: {{ name }}\nnetworking:\n  address: {{ address }}\n  inbound:\n  - port: {{ port }}\n    tags:\n      kuma.io/service: web\n";

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["kuma-dp", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => *args,
            Command::Version { .. } => panic!("expected run"),
        }
    }

    fn config(extra: &[&str]) -> Result<Config, Error> {
        Config::from_args_with_stdin(&args(extra), "info", || {
            Ok("type: Dataplane\nmesh: m\nname: from-stdin\n".into())
        })
    }

    #[test]
    fn name_with_resource_conflicts() {
        let err = config(&["--dataplane", DP, "--name", "x"]).unwrap_err();
        assert!(matches!(err, Error::IdentityConflict), "{err}");
        let err = config(&["--dataplane", DP, "--mesh", "x"]).unwrap_err();
        assert!(matches!(err, Error::IdentityConflict), "{err}");
        let err = config(&["--dataplane", DP, "-d", "-"]).unwrap_err();
        assert!(matches!(err, Error::ResourceConflict), "{err}");
    }

    #[test]
    fn neither_resource_nor_name_names_the_flag() {
        let err = config(&[]).unwrap_err();
        assert!(err.to_string().starts_with("--name is required"), "{err}");
        let err = config(&["--name", "dp-1"]).unwrap_err();
        assert!(err.to_string().starts_with("--mesh is required"), "{err}");
        // Zone proxies have no mesh.
        let cfg = config(&["--name", "zi", "--proxy-type", "ingress"]).unwrap();
        assert_eq!(cfg.proxy.mesh, "");
    }

    #[test]
    fn indirect_mode() {
        let cfg = config(&["--name", "dp-1", "--mesh", "default"]).unwrap();
        assert_eq!(cfg.proxy.name, "dp-1");
        assert_eq!(cfg.proxy.mesh, "default");
        assert!(cfg.proxy.resource.is_none());
    }

    #[test]
    fn renders_resource_with_vars() {
        let cfg = config(&[
            "--dataplane",
            DP,
            "-v",
            "name=dp-7",
            "-v",
            "address=127.0.0.1",
            "--dataplane-var",
            "port=8080",
        ])
        .unwrap();
        assert_eq!(cfg.proxy.name, "dp-7");
        assert_eq!(cfg.proxy.mesh, "default");
        let resource = cfg.proxy.resource.unwrap();
        assert_eq!(resource.value["networking"]["inbound"][0]["port"], 8080);
    }

    #[test]
    fn missing_var_is_reported() {
        let err = config(&["--dataplane", DP, "-v", "name=x", "-v", "port=1"]).unwrap_err();
        assert!(err.to_string().contains("\"address\""), "{err}");
    }

    #[test]
    fn reads_resource_from_stdin_and_file() {
        let cfg = config(&["-d", "-"]).unwrap();
        assert_eq!(cfg.proxy.name, "from-stdin");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dp.yaml");
        std::fs::write(&path, "type: Dataplane\nmesh: m\nname: from-file\n").unwrap();
        let cfg = config(&["--dataplane-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(cfg.proxy.name, "from-file");

        let err = config(&["-d", "/nonexistent/dp.yaml"]).unwrap_err();
        assert!(err.to_string().contains("--dataplane-file"), "{err}");
    }

    #[test]
    fn metrics_tls_paths_go_to_the_cp_absolute() {
        let cfg = config(&["--name", "n", "--mesh", "m"]).unwrap();
        assert_eq!(
            (
                cfg.metrics_cert_path.as_str(),
                cfg.metrics_key_path.as_str()
            ),
            ("", "")
        );
        let cfg = config(&[
            "--name",
            "n",
            "--mesh",
            "m",
            "--metrics-cert-path",
            "/etc/kuma/metrics.crt",
            "--metrics-key-path",
            "metrics.key",
        ])
        .unwrap();
        assert_eq!(cfg.metrics_cert_path, "/etc/kuma/metrics.crt");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            cfg.metrics_key_path,
            cwd.join("metrics.key").display().to_string()
        );
    }

    #[test]
    fn token_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc.def.ghi\n").unwrap();
        let p = path.to_str().unwrap();
        let cfg = config(&["--name", "n", "--mesh", "m", "--dataplane-token-file", p]).unwrap();
        assert_eq!(cfg.proxy.token.as_deref(), Some("abc.def.ghi"));
        assert_eq!(cfg.proxy.token_path.as_deref(), Some(path.as_path()));
        let cfg = config(&[
            "--name",
            "n",
            "--mesh",
            "m",
            "--dataplane-token-file",
            p,
            "--dataplane-token",
            "inline",
        ])
        .unwrap();
        assert_eq!(cfg.proxy.token.as_deref(), Some("inline"));
        assert_eq!(cfg.proxy.token_path, None);
    }

    #[test]
    fn delta_and_features() {
        let cfg = config(&["--name", "n", "--mesh", "m"]).unwrap();
        assert_eq!(
            cfg.features(),
            vec![
                FEATURE_TCP_ACCESSLOG_VIA_NAMED_PIPE,
                FEATURE_READINESS_REPORTING,
                dns::FEATURE_EMBEDDED_DNS
            ]
        );
        let cfg = config(&[
            "--name",
            "n",
            "--mesh",
            "m",
            "--xds-delta",
            "--dns-enabled=false",
        ])
        .unwrap();
        assert_eq!(
            cfg.features(),
            vec![
                FEATURE_TCP_ACCESSLOG_VIA_NAMED_PIPE,
                FEATURE_READINESS_REPORTING,
                FEATURE_DELTA_GRPC
            ]
        );
        let cfg = config(&[
            "--name",
            "n",
            "--mesh",
            "m",
            "--xds-transport-protocol-variant",
            "DELTA_GRPC",
        ])
        .unwrap();
        assert!(cfg.envoy.delta);
        assert!(
            config(&[
                "--name",
                "n",
                "--mesh",
                "m",
                "--xds-transport-protocol-variant",
                "REST"
            ])
            .is_err()
        );
    }

    #[test]
    fn dns_settings_follow_kuma_flags() {
        let cfg = config(&["--name", "n", "--mesh", "m"]).unwrap();
        let dns = cfg.dns.unwrap();
        assert_eq!(dns.port, 15053);
        assert_eq!(
            dns.port_setting,
            "--dns-coredns-port / KUMA_DNS_CORE_DNS_PORT"
        );
        assert_eq!(dns.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        let cfg = config(&["--name", "n", "--mesh", "m", "--dns-coredns-port", "5353"]).unwrap();
        assert_eq!(cfg.dns.unwrap().port, 5353);
        // KUMA_DNS_PROXY_PORT (the embedded proxy's port) wins when non-zero.
        let cfg = config(&[
            "--name",
            "n",
            "--mesh",
            "m",
            "--dns-coredns-port",
            "5353",
            "--dns-proxy-port",
            "15055",
            "--dns-resolv-conf",
            "/tmp/r.conf",
        ])
        .unwrap();
        let dns = cfg.dns.unwrap();
        assert_eq!(
            (dns.port, dns.port_setting.as_str()),
            (15055, "KUMA_DNS_PROXY_PORT")
        );
        assert_eq!(dns.resolv_conf, PathBuf::from("/tmp/r.conf"));
        let cfg = config(&["--name", "n", "--mesh", "m", "--dns-enabled=false"]).unwrap();
        assert!(cfg.dns.is_none());
        assert!(
            !cfg.features()
                .contains(&dns::FEATURE_EMBEDDED_DNS.to_string())
        );
        // Zone proxies run no DNS.
        for kind in ["ingress", "egress"] {
            let cfg = config(&["--name", "z", "--proxy-type", kind]).unwrap();
            assert!(cfg.dns.is_none(), "{kind}");
        }
        // Kuma's CoreDNS settings are accepted (and ignored).
        let cfg = config(&[
            "--name",
            "n",
            "--mesh",
            "m",
            "--dns-envoy-port",
            "15054",
            "--dns-coredns-path",
            "/usr/bin/coredns",
            "--dns-enable-logging",
            "--dns-prometheus-port",
            "19153",
        ])
        .unwrap();
        assert_eq!(cfg.dns.unwrap().port, 15053);
        let err = config(&["--name", "n", "--mesh", "m", "--dns-coredns-port", "0"]).unwrap_err();
        assert!(matches!(err, Error::DnsPort), "{err}");
    }

    #[test]
    fn cp_address_and_levels() {
        assert!(matches!(
            config(&["--name", "n", "--mesh", "m", "--cp-address", "grpc://x:1"]),
            Err(Error::CpAddress(_))
        ));
        let cfg = config(&["--name", "n", "--mesh", "m"]).unwrap();
        assert_eq!(cfg.control_plane.url.as_str(), "https://localhost:5678/");
        assert_eq!(cfg.envoy.log_level, "info");
        assert_eq!(cfg.envoy.drain_time, Duration::from_secs(30));
        assert_eq!(cfg.control_plane.retry_backoff, Duration::from_secs(3));
        assert_eq!(
            cfg.control_plane.retry_max_duration,
            Duration::from_secs(300)
        );
        assert_eq!(cfg.readiness_port, 9902);
        assert_eq!(envoy_level_for("warn"), "warning");
        assert!(config(&["--name", "n", "--mesh", "m", "--envoy-log-level", "loud"]).is_err());
    }
}
