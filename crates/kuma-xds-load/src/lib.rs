//! `kuma-xds-load`: a load harness for kuma-cp and a data path benchmark.
//!
//! - [`fleet`]: N simulated data plane proxies, each an ADS stream (SotW or delta) over TLS
//!   that registers its Dataplane through node metadata, subscribes like Envoy (CDS/LDS
//!   wildcard, then EDS and SDS by name) and ACKs every response; one HTTP/2 connection per
//!   proxy by default (`streams_per_connection`).
//! - [`record`]: what each proxy holds and when it arrived; which clusters and listeners are
//!   active and which are warming (as Envoy: until their EDS/SDS/RDS arrive after them, or the
//!   15 s `init_fetch_timeout`); goals ("has endpoint X") on the active configuration.
//! - [`topology`]: services × replicas with a fixed fan-out (or transparent-proxied
//!   Dataplanes that reach every service by its VIP), and the exact configuration each proxy
//!   must converge to.
//! - [`scenario`]: connect/reconnect, endpoint change, policy change, CA change, idle, new
//!   service (VIP on every transparent proxy); each proves convergence of every affected
//!   proxy and reports times, CP memory and CPU, bytes received and resources per proxy
//!   ([`report`], from [`procfs`]).
//! - [`multizone`]: global + 3 zone CPs, proxies spread over the zones; cross-zone
//!   propagation, resync after a global restart, global's memory per synced Dataplane.
//! - [`cp`]: the control plane, started from a binary or already running, and its REST API.
//! - [`cpmetrics`]: the CP's own `xds_delivery` histogram from its `/metrics`
//!   (`--cp-metrics`), per part of the run.
//! - [`datapath`] + [`loadgen`]: a fixed-rate (open-loop) HTTP load generator measuring
//!   client → Envoy → Envoy → server through the mesh against direct and a minimal static
//!   Envoy pair.
//! - [`coldmem`]: the cost of touching memory left idle (a property of the machine).

pub mod cli;
pub mod coldmem;
pub mod cp;
pub mod cpmetrics;
pub mod datapath;
pub mod fleet;
pub mod loadgen;
pub mod multizone;
pub mod procfs;
pub mod record;
pub mod report;
pub mod scenario;
pub mod topology;

/// Runs a parsed command line until it ends or SIGINT/SIGTERM arrives; either way, what it
/// started (kuma-cp, kuma-dp, Envoy) is stopped when the run is dropped.
pub async fn run_until_signal(cli: cli::Cli) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = run(cli) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted (SIGINT)"),
        _ = term.recv() => anyhow::bail!("terminated (SIGTERM)"),
    }
}

/// Runs a parsed command line; prints the report.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    if let Some((scenario, args)) = cli.command.scenario() {
        let opts = args.options()?;
        let report = scenario::run(scenario, opts).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    match cli.command {
        cli::Command::Datapath(args) => datapath::run(args).await,
        cli::Command::ColdMemory(args) => coldmem::run(args).await,
        _ => Ok(()),
    }
}
