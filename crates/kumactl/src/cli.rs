//! Command-line surface of `kumactl` (clap). Commands and flags follow Kuma's kumactl; the
//! extra global `--api-url` overrides the current control plane's URL without touching the
//! config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::printers::Format;

/// Management tool for a Kuma-compatible control plane.
#[derive(Debug, Parser)]
#[command(name = "kumactl", version, about, propagate_version = true)]
pub struct Cli {
    /// Path to the configuration file (default `$HOME/.kumactl/config`).
    #[arg(long, global = true, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Context to use instead of the current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Control plane API URL, overriding the one of the current context.
    #[arg(long, global = true, env = "KUMA_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Timeout of each API request (`30s`, `1m`, `500ms`).
    #[arg(long, global = true, default_value = "1m", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// Ignore the configuration file (use the default control plane or `--api-url`).
    #[arg(long, global = true)]
    pub no_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from YAML/JSON files.
    Apply(ApplyArgs),
    /// Show resources.
    Get(GetArgs),
    /// Delete a resource.
    Delete(DeleteArgs),
    /// Inspect runtime state (proxies and their xDS streams).
    Inspect {
        #[command(subcommand)]
        what: InspectCommand,
    },
    /// Manage the kumactl configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Generate tokens and signing keys.
    Generate {
        #[command(subcommand)]
        what: GenerateCommand,
    },
    /// Print the client and control plane versions.
    Version,
    /// Install components on this host.
    Install {
        #[command(subcommand)]
        what: InstallCommand,
    },
    /// Uninstall components from this host.
    Uninstall {
        #[command(subcommand)]
        what: UninstallCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// Install the transparent proxy's iptables rules on this host (root): inbound TCP to
    /// the inbound redirect port, outbound TCP to the outbound redirect port, optionally DNS
    /// to the DNS port; the kuma-dp user's own traffic is not captured. Undo with `kumactl
    /// uninstall transparent-proxy`.
    #[command(name = "transparent-proxy")]
    TransparentProxy(InstallTransparentProxyArgs),
}

#[derive(Debug, Subcommand)]
pub enum UninstallCommand {
    /// Remove the transparent proxy's iptables rules and chains (and nothing else).
    #[command(name = "transparent-proxy")]
    TransparentProxy(UninstallTransparentProxyArgs),
}

/// `--ip-family-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpFamilyMode {
    /// IPv4 and, when the host has IPv6 and ip6tables works, IPv6.
    Dualstack,
    /// IPv4 only.
    Ipv4,
}

/// Flags of `kumactl install transparent-proxy` (Kuma's names and defaults).
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct InstallTransparentProxyArgs {
    /// Print the iptables-restore input instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// Long flag names in the rules, and print the rules applied.
    #[arg(long)]
    pub verbose: bool,
    /// The IP family mode to enable traffic redirection for.
    #[arg(long, value_enum, default_value_t = IpFamilyMode::Dualstack)]
    pub ip_family_mode: IpFamilyMode,
    /// The username or UID of the user that will run kuma-dp (its traffic is not
    /// captured). If not provided, the user with UID 5678, else the user `kuma-dp`.
    #[arg(long, alias = "kuma-dp-uid", value_name = "USER")]
    pub kuma_dp_user: Option<String>,
    /// Inbound port redirected to Envoy, as in the Dataplane's
    /// `networking.transparentProxying.redirectPortInbound`.
    #[arg(long, default_value_t = 15006, value_parser = parse_port, value_name = "PORT")]
    pub redirect_inbound_port: u16,
    /// Outbound port redirected to Envoy, as in the Dataplane's
    /// `networking.transparentProxying.redirectPortOutbound`.
    #[arg(long, default_value_t = 15001, value_parser = parse_port, value_name = "PORT")]
    pub redirect_outbound_port: u16,
    /// Redirect the inbound traffic to Envoy (`--redirect-inbound=false` for gateways).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub redirect_inbound: bool,
    /// A comma separated list of inbound ports to exclude from redirect to Envoy.
    #[arg(long, value_parser = parse_ports, value_name = "PORTS", default_value = "")]
    pub exclude_inbound_ports: Ports,
    /// A comma separated list of outbound ports to exclude from redirect to Envoy.
    #[arg(long, value_parser = parse_ports, value_name = "PORTS", default_value = "")]
    pub exclude_outbound_ports: Ports,
    /// IP addresses (IPv4 or IPv6, with or without CIDR) excluded from inbound redirection
    /// (by source), comma separated; repeatable.
    #[arg(long, value_name = "IPS")]
    pub exclude_inbound_ips: Vec<String>,
    /// IP addresses (IPv4 or IPv6, with or without CIDR) excluded from outbound redirection
    /// (by destination), comma separated; repeatable.
    #[arg(long, value_name = "IPS")]
    pub exclude_outbound_ips: Vec<String>,
    /// Redirect DNS requests (UDP and TCP port 53) to the servers listed in
    /// /etc/resolv.conf to the DNS port.
    #[arg(long)]
    pub redirect_dns: bool,
    /// Redirect all DNS traffic (port 53, to any server) to the DNS port.
    #[arg(long)]
    pub redirect_all_dns_traffic: bool,
    /// The port where kuma-dp's DNS server listens.
    #[arg(long, default_value_t = 15053, value_parser = parse_port, value_name = "PORT")]
    pub redirect_dns_port: u16,
    /// Do not split conntrack zones for DNS (the raw table rules that keep the application's
    /// redirected UDP queries and kuma-dp's own queries apart).
    #[arg(long)]
    pub skip_dns_conntrack_zone_split: bool,
    /// Seconds to wait for the xtables exclusive lock before failing (legacy iptables;
    /// 0: do not wait).
    #[arg(long, default_value_t = crate::transparent_proxy::iptables::DEFAULT_WAIT, value_name = "SECONDS")]
    pub wait: u32,
}

/// Flags of `kumactl uninstall transparent-proxy`.
#[derive(Debug, Args)]
pub struct UninstallTransparentProxyArgs {
    /// Print the iptables-restore input that would remove the rules, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the iptables-restore input applied.
    #[arg(long)]
    pub verbose: bool,
    /// Seconds to wait for the xtables exclusive lock before failing (legacy iptables;
    /// 0: do not wait).
    #[arg(long, default_value_t = crate::transparent_proxy::iptables::DEFAULT_WAIT, value_name = "SECONDS")]
    pub wait: u32,
}

/// A comma separated list of ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// A port in 1..=65535, with Kuma's message otherwise.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!(
            "value '{s}' is not a valid port (uint16 in the range [1, 65535])"
        )),
    }
}

/// A comma separated list of ports (empty items ignored).
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_port)
        .collect::<Result<Vec<_>, _>>()
        .map(Ports)
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// File, directory (every *.yaml, *.yml, *.json in it) or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "file", required = true, value_name = "PATH")]
    pub files: Vec<String>,
    /// Value of a `{{ key }}` placeholder, as key=value; repeatable.
    #[arg(short = 'v', long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Validate and print the resources instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type: plural lists (`meshes`, `dataplanes`...), singular takes a name.
    pub resource_type: String,
    /// Name of the resource (singular forms).
    pub name: Option<String>,
    /// Mesh of mesh-scoped types.
    #[arg(short, long)]
    pub mesh: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type (`mesh`, `dataplane`, `meshtrafficpermission`...).
    pub resource_type: String,
    /// Name of the resource.
    pub name: String,
    /// Mesh of mesh-scoped types.
    #[arg(short, long)]
    pub mesh: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Meshes with their mTLS state: enabled backend and mode, proxies online, proxies
    /// holding a certificate from the enabled backend, traffic permissions.
    Meshes {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Zones with their KDS connection to this (global) control plane: status, last
    /// connection and update, updates sent and rejected, zone CP version and store.
    Zones {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Data plane proxies with their xDS stream and certificate state.
    Dataplanes {
        /// Mesh to inspect.
        #[arg(short, long)]
        mesh: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Services of a mesh with their status and Dataplanes online / total (the control
    /// plane's ServiceInsights).
    Services {
        /// Mesh to inspect.
        #[arg(short, long)]
        mesh: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Zone ingresses with their xDS stream state.
    #[command(alias = "zoneingresses")]
    ZoneIngresses {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Zone egresses with their xDS stream state.
    #[command(alias = "zoneegresses")]
    ZoneEgresses {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One proxy's Envoy config dump, stats, clusters or matched policies.
    Dataplane {
        /// Name of the dataplane.
        name: String,
        /// Mesh of the dataplane.
        #[arg(short, long)]
        mesh: Option<String>,
        /// What to show.
        #[arg(long = "type", value_enum, default_value_t = InspectType::ConfigDump)]
        kind: InspectType,
        /// Include EDS in the config dump.
        #[arg(long)]
        include_eds: bool,
        /// Deprecated: `--type=config-dump`.
        #[arg(long, hide = true)]
        config_dump: bool,
    },
    /// One zone ingress's Envoy config dump, stats or clusters.
    Zoneingress {
        /// Name of the zone ingress.
        name: String,
        /// What to show.
        #[arg(long = "type", value_enum, default_value_t = InspectType::ConfigDump)]
        kind: InspectType,
        /// Include EDS in the config dump.
        #[arg(long)]
        include_eds: bool,
        /// Deprecated: `--type=config-dump`.
        #[arg(long, hide = true)]
        config_dump: bool,
    },
    /// One zone egress's Envoy config dump, stats or clusters.
    Zoneegress {
        /// Name of the zone egress.
        name: String,
        /// What to show.
        #[arg(long = "type", value_enum, default_value_t = InspectType::ConfigDump)]
        kind: InspectType,
        /// Include EDS in the config dump.
        #[arg(long)]
        include_eds: bool,
        /// Deprecated: `--type=config-dump`.
        #[arg(long, hide = true)]
        config_dump: bool,
    },
}

/// Views of `inspect dataplane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectType {
    ConfigDump,
    Stats,
    Clusters,
    Policies,
    Rules,
    Config,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Generate a dataplane token (`POST /tokens/dataplane`; admins only) and print it.
    #[command(name = "dataplane-token")]
    DataplaneToken(DataplaneTokenArgs),
    /// Generate a user token for the API (`POST /tokens/user`; admins only) and print it.
    #[command(name = "user-token")]
    UserToken(UserTokenArgs),
    /// Generate a zone token (`POST /tokens/zone`; admins only) and print it: it identifies a
    /// zone control plane to global (scope `cp`) or a zone proxy (scopes `ingress`, `egress`).
    #[command(name = "zone-token")]
    ZoneToken(ZoneTokenArgs),
    /// Print a new signing key: an RSA-2048 private key (PKCS#1 PEM), by default base64
    /// encoded as a Secret's `data`. Offline.
    #[command(name = "signing-key")]
    SigningKey(SigningKeyArgs),
    /// Print the public half (PEM `RSA PUBLIC KEY`) of a signing key, for validating tokens
    /// signed offline (e.g. as GlobalSecret `zone-token-signing-public-key-<kid>`). Offline.
    #[command(name = "public-key")]
    PublicKey {
        /// Path to a file with the PEM-encoded private signing key.
        #[arg(long)]
        signing_key_path: String,
    },
}

#[derive(Debug, Args)]
pub struct SigningKeyArgs {
    /// Format of the signing key.
    #[arg(long, value_enum, default_value = "pem-base64")]
    pub format: SigningKeyFormat,
}

/// `kumactl generate signing-key --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningKeyFormat {
    /// Standard base64 of the PEM text, no trailing newline.
    PemBase64,
    /// The PEM text.
    Pem,
}

#[derive(Debug, Args)]
pub struct DataplaneTokenArgs {
    /// Mesh of the proxies the token is for (default: the context's mesh, else `default`).
    #[arg(short, long)]
    pub mesh: Option<String>,
    /// Name of the proxy the token is bound to (empty: any proxy of the mesh).
    #[arg(long, default_value = "")]
    pub name: String,
    /// Tag the proxy must have, with its allowed values: `key=value[,value2]`; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE[,VALUE]")]
    pub tags: Vec<String>,
    /// Proxy type: `dataplane`, `ingress` or `egress`.
    #[arg(long = "type", alias = "proxy-type", default_value = "")]
    pub proxy_type: String,
    /// Value of the proxy's `kuma.io/workload` label the token is bound to.
    #[arg(long, default_value = "")]
    pub workload: String,
    /// How long the token is valid (`24h`, `720h`; default 10 years).
    #[arg(long, default_value = "")]
    pub valid_for: String,
}

#[derive(Debug, Args)]
pub struct ZoneTokenArgs {
    /// Name of the zone the token identifies.
    #[arg(long)]
    pub zone: String,
    /// Scope the token may authenticate: `cp`, `ingress` or `egress`; repeatable or
    /// comma-separated (default: all of them).
    #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// How long the token is valid (`24h`, `720h`).
    #[arg(long)]
    pub valid_for: String,
    /// Sign the token offline with this private key (PEM `RSA PRIVATE KEY`) instead of
    /// asking the control plane.
    #[arg(long)]
    pub signing_key_path: Option<String>,
    /// Serial number of the offline signing key (the `kid` header); required with
    /// `--signing-key-path`.
    #[arg(long)]
    pub kid: Option<String>,
}

#[derive(Debug, Args)]
pub struct UserTokenArgs {
    /// Name of the user.
    #[arg(long)]
    pub name: String,
    /// Group of the user; repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// How long the token is valid (`24h`, `720h`; default 10 years).
    #[arg(long, default_value = "")]
    pub valid_for: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Manage known control planes.
    #[command(name = "control-planes")]
    ControlPlanes {
        #[command(subcommand)]
        what: ControlPlanesCommand,
    },
    /// Print the configuration file.
    View,
}

#[derive(Debug, Subcommand)]
pub enum ControlPlanesCommand {
    /// Add a control plane (after checking that its API answers) and make it current.
    Add(AddControlPlaneArgs),
    /// List control planes.
    List,
    /// Make a control plane current.
    Switch {
        /// Name of the control plane.
        #[arg(long)]
        name: String,
    },
    /// Remove a control plane.
    Remove {
        /// Name of the control plane.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct AddControlPlaneArgs {
    /// Reference name of the control plane.
    #[arg(long)]
    pub name: String,
    /// URL of its API server (`http://host:5681`, `https://host:5682`).
    #[arg(long)]
    pub address: String,
    /// Replace an existing control plane of the same name.
    #[arg(long)]
    pub overwrite: bool,
    /// Do not verify the API server's TLS certificate.
    #[arg(long)]
    pub skip_verify: bool,
    /// CA certificate (PEM) that signs the API server's certificate.
    #[arg(long)]
    pub ca_cert_file: Option<String>,
    /// Client certificate (PEM) for mTLS to the API server.
    #[arg(long)]
    pub client_cert_file: Option<String>,
    /// Client key (PEM) for mTLS to the API server.
    #[arg(long)]
    pub client_key_file: Option<String>,
    /// Extra header sent with every request, as key=value; repeatable.
    #[arg(long = "headers", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Authentication type (`tokens`).
    #[arg(long)]
    pub auth_type: Option<String>,
    /// Authentication settings, as key=value (`token=<user token>`); repeatable.
    #[arg(long = "auth-conf", value_name = "KEY=VALUE")]
    pub auth_conf: Vec<String>,
}

/// Parses a Go-style duration (`500ms`, `30s`, `1m`, `1m30s`, `2h`, see
/// [`kuma_core::duration`]) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 1m"));
    }
    kuma_core::duration::parse(s).map_err(|e| e.to_string())
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
    fn durations() {
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("m").is_err());
    }

    fn install_tp(args: &[&str]) -> Result<InstallTransparentProxyArgs, String> {
        let argv = ["kumactl", "install", "transparent-proxy"]
            .iter()
            .chain(args)
            .copied();
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Install {
                what: InstallCommand::TransparentProxy(a),
            } => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn install_transparent_proxy_defaults_are_kumas() {
        let a = install_tp(&[]).unwrap();
        assert_eq!(a.redirect_inbound_port, 15006);
        assert_eq!(a.redirect_outbound_port, 15001);
        assert_eq!(a.redirect_dns_port, 15053);
        assert!(a.redirect_inbound);
        assert!(!a.redirect_dns && !a.redirect_all_dns_traffic && !a.dry_run);
        assert_eq!(a.ip_family_mode, IpFamilyMode::Dualstack);
        assert_eq!(a.kuma_dp_user, None);
        assert_eq!(a.exclude_inbound_ports, Ports(vec![]));
        assert_eq!(a.wait, 5);
    }

    #[test]
    fn install_transparent_proxy_flags_parse() {
        let a = install_tp(&[
            "--kuma-dp-uid",
            "1234",
            "--redirect-inbound=false",
            "--exclude-inbound-ports",
            "22, 8443",
            "--exclude-outbound-ports=5432",
            "--ip-family-mode",
            "ipv4",
            "--redirect-dns",
            "--redirect-dns-port",
            "25053",
        ])
        .unwrap();
        assert_eq!(a.kuma_dp_user.as_deref(), Some("1234"));
        assert!(!a.redirect_inbound);
        assert_eq!(a.exclude_inbound_ports, Ports(vec![22, 8443]));
        assert_eq!(a.exclude_outbound_ports, Ports(vec![5432]));
        assert_eq!(a.ip_family_mode, IpFamilyMode::Ipv4);
        assert!(a.redirect_dns);
        assert_eq!(a.redirect_dns_port, 25053);
        assert!(
            install_tp(&["--redirect-inbound"])
                .unwrap()
                .redirect_inbound
        );
    }

    #[test]
    fn install_transparent_proxy_refuses_bad_ports_and_modes() {
        for (args, want) in [
            (
                &["--redirect-inbound-port", "0"][..],
                "value '0' is not a valid port (uint16 in the range [1, 65535])",
            ),
            (
                &["--redirect-outbound-port", "70000"][..],
                "value '70000' is not a valid port",
            ),
            (
                &["--exclude-inbound-ports", "22,x"][..],
                "value 'x' is not a valid port",
            ),
            (
                &["--redirect-dns-port=-1"][..],
                "value '-1' is not a valid port",
            ),
            (
                &["--ip-family-mode", "ipv6"][..],
                "possible values: dualstack, ipv4",
            ),
        ] {
            let err = install_tp(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn parses_get() {
        let cli = Cli::try_parse_from(["kumactl", "get", "mesh", "default", "-o", "yaml"]).unwrap();
        match cli.command {
            Command::Get(g) => {
                assert_eq!(g.resource_type, "mesh");
                assert_eq!(g.name.as_deref(), Some("default"));
                assert_eq!(g.output, Format::Yaml);
            }
            other => panic!("{other:?}"),
        }
    }
}
