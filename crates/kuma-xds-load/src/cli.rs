//! Command line: one subcommand per scenario (plus `datapath`), the same load flags on each.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::scenario::{self, Scenario, Via};
use crate::{cp, datapath};

#[derive(Debug, Parser)]
#[command(
    name = "kuma-xds-load",
    version,
    about = "Plays N data plane proxies (ADS over TLS, SotW or delta) against a real kuma-cp and prints convergence times, CP memory and CPU; `datapath` benchmarks the mesh data path with real Envoy."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Worker threads of the harness's runtime (the CP runs on the same cores).
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// N proxies connect (time until all have a complete config), then all drop and
    /// reconnect at once (time until all are configured again).
    Connect(LoadArgs),
    /// A replica of a service is added, then removed; time until every proxy with an
    /// outbound to it has exactly the new endpoints (p50/p99/max).
    EndpointChange(LoadArgs),
    /// A MeshTrafficPermission is applied, then deleted; time until every proxy's inbound
    /// listener has it.
    PolicyChange(LoadArgs),
    /// The mesh switches to its other builtin CA backend; time until every proxy has the new
    /// CA and an identity certificate signed by it.
    CaChange(LoadArgs),
    /// CP CPU over `--idle-secs` with every proxy connected and nothing changing.
    Idle(LoadArgs),
    /// With `--transparent-proxy`: the first Dataplane of a new service appears (`--rounds`
    /// times); time until every proxy has its VIP listeners and its endpoint.
    NewService(LoadArgs),
    /// Global + 3 zone CPs (`--cp-binary` started 4 times), proxies spread over the zones:
    /// time until a Dataplane created in one zone reaches the consumers in the others
    /// (`--rounds` adds + removes), resync after SIGKILL + restart of global, global's
    /// memory per synced Dataplane.
    Multizone(LoadArgs),
    /// Data path latency at a fixed rate: direct, through the mesh (kuma-cp + 2 kuma-dp with
    /// Envoy, mTLS), and through two Envoys with a minimal static mTLS config.
    Datapath(datapath::Args),
    /// What touching resident memory costs after the process left it idle for a while (a
    /// property of the machine, not of kuma-cp; see BENCHMARKS.md).
    ColdMemory(crate::coldmem::ColdMemoryArgs),
}

/// Flags shared by the load scenarios.
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// Start this kuma-cp binary (e.g. target/release/kuma-cp) in a fresh temporary work dir
    /// on free ports.
    #[arg(long, conflicts_with = "cp_address")]
    pub cp_binary: Option<PathBuf>,
    /// Extra environment of the started CP, `KUMA_X=value` (repeatable).
    #[arg(long = "cp-env", value_name = "K=V")]
    pub cp_env: Vec<String>,
    /// Keep the started CP's work dir (log, database) and print where it is.
    #[arg(long)]
    pub keep_cp_workdir: bool,
    /// A running CP's DP server (`https://host:5678`).
    #[arg(long)]
    pub cp_address: Option<String>,
    /// A running CP's REST API (default `http://<host>:5681`).
    #[arg(long)]
    pub api: Option<String>,
    /// A running CP's DP server CA (`<workDir>/kuma-cp.crt`).
    #[arg(long)]
    pub ca_cert_file: Option<PathBuf>,
    /// A running CP's pid (for memory and CPU figures).
    #[arg(long)]
    pub cp_pid: Option<u32>,
    /// A running CP's diagnostics server (`http://host:5680`), for `--cp-metrics`.
    #[arg(long)]
    pub diag: Option<String>,
    /// Scrape the CP's `/metrics` after the connect phase and at the end, and print its
    /// `xds_delivery` histogram per type (count, sum, p50/p99 from the buckets) for each
    /// part of the run.
    #[arg(long)]
    pub cp_metrics: bool,
    /// API token for a running CP reached from a non-admin address.
    #[arg(long)]
    pub api_token: Option<String>,
    /// Proxies present no dataplane token (a started CP gets
    /// KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none).
    #[arg(long)]
    pub no_dp_tokens: bool,
    /// One dataplane token per proxy (bound to its name) instead of one per service.
    #[arg(long)]
    pub token_per_proxy: bool,
    /// Mesh of the proxies.
    #[arg(long, default_value = "default")]
    pub mesh: String,
    /// Proxies (= services × replicas).
    #[arg(long)]
    pub proxies: Option<usize>,
    /// Services (default: proxies / replicas).
    #[arg(long)]
    pub services: Option<usize>,
    /// Replicas per service.
    #[arg(long, default_value_t = 10)]
    pub replicas: usize,
    /// Outbounds per proxy (to the services that follow its own).
    #[arg(long, default_value_t = 10)]
    pub fanout: usize,
    /// Transparent-proxied Dataplanes (`networking.transparentProxying`, node metadata with a
    /// work dir and a DNS port) with no explicit outbound: every proxy consumes every
    /// service through its VIP (`--fanout` is ignored).
    #[arg(long)]
    pub transparent_proxy: bool,
    /// Incremental xDS (DELTA_GRPC) instead of state of the world.
    #[arg(long)]
    pub delta: bool,
    /// ADS streams per HTTP/2 connection (1: each proxy has its own connection, as each
    /// Envoy does).
    #[arg(long, default_value_t = 1)]
    pub streams_per_connection: usize,
    /// Repetitions of the change (endpoint-change, policy-change, ca-change) or of the
    /// reconnect wave (connect).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// How endpoint-change adds and removes a replica.
    #[arg(long, value_enum, default_value_t = Via::Ads)]
    pub via: Via,
    /// Length of the idle measurement, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub idle_secs: f64,
    /// Pause after the initial convergence before the memory sample, seconds. (`idle` also
    /// changes and `idle` then also wait for the CP to go quiet: `quiesce_s`.)
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Longest wait for one phase, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout_secs: f64,
    /// Write every proxy's config arrivals (JSON lines) to this file.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn secs(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{flag} must be a positive number"))
}

impl LoadArgs {
    /// The scenario options these flags describe.
    pub fn options(&self) -> anyhow::Result<scenario::Options> {
        let services = match (self.services, self.proxies) {
            (Some(s), Some(n)) if s * self.replicas != n => bail!(
                "--proxies {n} is not --services {s} × --replicas {}",
                self.replicas
            ),
            (Some(s), _) => s,
            (None, n) => {
                let n = n.unwrap_or(1_000);
                if self.replicas == 0 || n % self.replicas != 0 {
                    bail!(
                        "--proxies {n} must be a multiple of --replicas {}",
                        self.replicas
                    );
                }
                n / self.replicas
            }
        };
        let mut env = Vec::new();
        for kv in &self.cp_env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--cp-env {kv}: expected K=V"))?;
            env.push((k.to_string(), v.to_string()));
        }
        if self.no_dp_tokens {
            env.push(("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE".into(), "none".into()));
        }
        Ok(scenario::Options {
            cp: cp::Options {
                binary: self.cp_binary.clone(),
                env,
                keep_work_dir: self.keep_cp_workdir,
                address: self.cp_address.clone(),
                api: self.api.clone(),
                ca_file: self.ca_cert_file.clone(),
                pid: self.cp_pid,
                api_token: self.api_token.clone(),
                dp_tokens: self.no_dp_tokens.then_some(false),
                work_dir: None,
                diag: self.diag.clone(),
            },
            cp_metrics: self.cp_metrics,
            mesh: self.mesh.clone(),
            services,
            replicas: self.replicas,
            fanout: self.fanout.min(services.saturating_sub(1)),
            transparent: self.transparent_proxy,
            delta: self.delta,
            streams_per_connection: self.streams_per_connection.max(1),
            token_per_proxy: self.token_per_proxy,
            rounds: self.rounds.max(1),
            via: self.via,
            idle: secs(self.idle_secs, "idle-secs")?,
            settle: secs(self.settle_secs, "settle-secs")?,
            timeout: secs(self.timeout_secs, "timeout-secs")?,
            history: self.history.clone(),
        })
    }
}

impl Command {
    /// The scenario and its flags, unless this is `datapath`.
    pub fn scenario(&self) -> Option<(Scenario, &LoadArgs)> {
        Some(match self {
            Command::Connect(a) => (Scenario::Connect, a),
            Command::EndpointChange(a) => (Scenario::EndpointChange, a),
            Command::PolicyChange(a) => (Scenario::PolicyChange, a),
            Command::CaChange(a) => (Scenario::CaChange, a),
            Command::Idle(a) => (Scenario::Idle, a),
            Command::NewService(a) => (Scenario::NewService, a),
            Command::Multizone(a) => (Scenario::Multizone, a),
            Command::Datapath(_) | Command::ColdMemory(_) => return None,
        })
    }
}
