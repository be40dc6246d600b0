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
