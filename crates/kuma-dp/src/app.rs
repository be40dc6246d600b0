//! The composition root of `kuma-dp`: wires configuration, bootstrap, Envoy, readiness and
//! signals into one process.
//!
//! `kuma-dp run`, in order:
//! 1. install SIGTERM/SIGINT handlers (a first signal starts shutdown, a second one skips the
//!    rest of the drain);
//! 2. find Envoy and run `envoy --version`;
//! 3. prepare the work dir (a temporary `kuma-dp-*`, mode 0711, removed on exit, unless
//!    `--work-dir` is given);
//! 4. bind the DNS server (`127.0.0.1:<dns port>`, UDP and TCP) and the readiness reporter
//!    (fail fast on a taken port, naming it), then serve both (`NOT_READY` meanwhile; with DNS
//!    and `networking.transparentProxying`, `READY` also waits up to 15 s for the first DNS
//!    table); DNS serves until Envoy stopped;
//! 5. `POST /bootstrap` with retries, write `<workdir>/bootstrap.yaml`, find Envoy's admin
//!    address in it; for a Dataplane, bind the metrics hijacker on
//!    `<workdir>/kuma-mh-<name>-<mesh>.sock` (Envoy's stats plus the applications the response
//!    lists in `kumaSidecarConfiguration.metrics.aggregate`), served until Envoy stopped;
//! 6. start Envoy and supervise it: if Envoy exits on its own kuma-dp fails with its exit
//!    status; on a signal the reporter says `TERMINATING`, Envoy gets `POST /healthcheck/fail`,
//!    kuma-dp waits the drain time, then stops Envoy (SIGTERM, then SIGKILL after a grace
//!    period) and exits 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::bootstrap;
use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::dns::{self, Dns};
use crate::envoy::{self, admin};
use crate::metrics;
use crate::readiness::{self, Reporter};

/// Name of the bootstrap file in the work dir.
pub const BOOTSTRAP_FILE: &str = "bootstrap.yaml";
/// How long Envoy gets to exit after SIGTERM before it is killed.
const ENVOY_STOP_GRACE: Duration = Duration::from_secs(5);
/// Timeout of one Envoy admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs a parsed command line to completion and returns the process exit code.
pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version { detailed } => {
            print_version(detailed);
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let result = Config::from_args(&args, &cli.log_level)
                .context("invalid configuration")
                .and_then(|config| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .context("could not start the async runtime")?
                        .block_on(run(config))
                });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("Error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Installs the stderr log subscriber for kuma-dp's `--log-level`
/// (`off`, `error`, `warn`, `info`, `debug`, `trace`; `RUST_LOG` overrides it).
pub fn init_tracing(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.trim().to_ascii_lowercase()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (tests) is harmless; keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn print_version(detailed: bool) {
    if detailed {
        println!("Product:    kuma-dp");
        println!("Version:    {}", bootstrap::KUMA_DP_VERSION);
        println!("Git Tag:    {}", bootstrap::GIT_TAG);
        println!("Git Commit: {}", bootstrap::GIT_COMMIT);
        println!("Build Date: {}", bootstrap::BUILD_DATE);
    } else {
        println!("{}", bootstrap::KUMA_DP_VERSION);
    }
}

/// The work directory: given by the operator, or temporary and removed on drop.
enum WorkDir {
    Given(PathBuf),
    Temp(tempfile::TempDir),
}

impl WorkDir {
    fn prepare(given: Option<&Path>) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        match given {
            Some(path) => {
                std::fs::create_dir_all(path)
                    .with_context(|| format!("could not create the work dir {path:?}"))?;
                let path = std::path::absolute(path)
                    .with_context(|| format!("could not resolve the work dir {path:?}"))?;
                Ok(WorkDir::Given(path))
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("kuma-dp-")
                    .tempdir()
                    .context("could not create a temporary work dir")?;
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                    .context("could not set the work dir permissions")?;
                Ok(WorkDir::Temp(dir))
            }
        }
    }

    fn path(&self) -> &Path {
        match self {
            WorkDir::Given(path) => path,
            WorkDir::Temp(dir) => dir.path(),
        }
    }
}

/// Shutdown requests from signals.
struct Signals {
    /// Cancelled by the first SIGTERM/SIGINT: start shutting down.
    shutdown: CancellationToken,
    /// Cancelled by a second one: skip the rest of the drain.
    force: CancellationToken,
}

impl Signals {
    /// Listens for SIGTERM/SIGINT.
    fn install() -> anyhow::Result<Self> {
        let signals = Signals {
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
        };
        watch_signals(signals.shutdown.clone(), signals.force.clone())?;
        Ok(signals)
    }
}

/// Listens for SIGTERM/SIGINT: the first cancels `shutdown`, the next cancels `force`.
fn watch_signals(shutdown: CancellationToken, force: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("could not listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("could not listen for SIGINT")?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if !shutdown.is_cancelled() {
                tracing::info!(signal = name, "received a signal, shutting down");
                shutdown.cancel();
            } else {
                tracing::info!(signal = name, "received another signal, skipping the drain");
                force.cancel();
                return;
            }
        }
    });
    Ok(())
}

/// `kuma-dp run`: see the module docs.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let signals = Signals::install()?;

    // Built first so that a TLS misconfiguration fails before anything is started.
    let client = bootstrap::Client::new(&config.control_plane)?;
    let binary = envoy::find_binary(&config.envoy.binary_path)?;
    let envoy_version = envoy::version(&binary)
        .await
        .context("could not determine the Envoy version")?;
    tracing::info!(binary = %binary.display(), version = %envoy_version.version, "found Envoy");

    let work_dir = WorkDir::prepare(config.work_dir.as_deref())?;
    tracing::info!(work_dir = %work_dir.path().display(), "using work dir");

    // The control plane sends DNS records only to transparent proxies: a Dataplane without
    // `networking.transparentProxying` runs no DNS (it would answer nothing of the mesh and
    // keep proxies of one host from sharing the port). Without a resource (the Dataplane
    // is in the store already) it runs, as Kuma's does.
    if config.dns.is_some()
        && config
            .proxy
            .resource
            .as_ref()
            .is_some_and(|r| !r.transparent_proxying())
    {
        tracing::info!("no DNS server: the Dataplane has no networking.transparentProxying");
        config.dns = None;
    }
    // Every listener is bound before anything is served: a taken port fails here.
    let dns = match &config.dns {
        Some(settings) => Some(
            Dns::bind(settings, dns::config_socket(work_dir.path()))
                .await
                .context("could not start the DNS server")?,
        ),
        None => None,
    };
    let (state_tx, state_rx) = watch::channel(readiness::State::Starting);
    let reporter = if config.readiness_port != 0 {
        let mut reporter = Reporter::bind(config.readiness_port, state_rx).await?;
        // The control plane sends DNS records only to transparent proxies: only they wait.
        let transparent = config
            .proxy
            .resource
            .as_ref()
            .is_some_and(|r| r.transparent_proxying());
        if let Some(dns) = dns.as_ref().filter(|_| transparent) {
            reporter = reporter.with_dns_gate(dns.tables(), readiness::DNS_GATE_TIMEOUT);
        }
        Some(reporter)
    } else {
        None
    };

    let reporter_stop = CancellationToken::new();
    let reporter_task = match reporter {
        Some(reporter) => {
            tracing::info!(address = %reporter.local_addr()?, "readiness reporter listening");
            Some(tokio::spawn(reporter.run(reporter_stop.clone())))
        }
        None => None,
    };
    // DNS answers from now until Envoy has stopped: the workload may resolve while it drains.
    let dns_stop = CancellationToken::new();
    // Kuma's `ipv6Enabled`: the host has IPv6 (kuma-dp's DNS bound `::1`), so the records
    // carry IPv4-mapped IPv6 addresses too.
    let ipv6 = dns
        .as_ref()
        .is_some_and(|d| d.local_addrs().iter().any(|a| a.is_ipv6()));
    let dns_task = dns.map(|dns| tokio::spawn(dns.run(dns_stop.clone())));

    let mut request = bootstrap_request(&config, envoy_version, work_dir.path());
    request.ipv6_enabled = ipv6;
    let outcome = bootstrap_and_supervise(
        &client,
        request,
        &config,
        &binary,
        work_dir.path(),
        &state_tx,
        &signals,
    )
    .await;

    state_tx.send_replace(readiness::State::Terminating);
    reporter_stop.cancel();
    dns_stop.cancel();
    if let Some(task) = dns_task
        && let Err(err) = task.await
    {
        tracing::warn!(error = %err, "DNS server panicked");
    }
    if let Some(task) = reporter_task {
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "readiness reporter failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "readiness reporter panicked"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    drop(work_dir);
    outcome
}

async fn bootstrap_and_supervise(
    client: &bootstrap::Client,
    request: bootstrap::Request,
    config: &Config,
    binary: &Path,
    work_dir: &Path,
    state: &watch::Sender<readiness::State>,
    signals: &Signals,
) -> anyhow::Result<()> {
    tracing::info!(url = %client.url(), mesh = %request.mesh, name = %request.name, "fetching bootstrap configuration");
    let response = match client.fetch(&request, &signals.shutdown).await {
        Ok(response) => response,
        Err(bootstrap::Error::Cancelled) => {
            tracing::info!("stopped before Envoy was started");
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    tracing::debug!(sidecar = %response.sidecar_configuration, "received kuma sidecar configuration");

    let bootstrap_path = work_dir.join(BOOTSTRAP_FILE);
    // It carries the dataplane token: owner only.
    write_private(&bootstrap_path, response.bootstrap.as_bytes())
        .with_context(|| format!("could not write {bootstrap_path:?}"))?;
    let admin_address = admin::Address::from_bootstrap(&response.bootstrap)
        .context("could not find the Envoy admin address")?;
    // Kuma runs the metrics hijacker for every Dataplane, whether or not a metrics backend
    // uses it; zone proxies have none. Bound before Envoy starts, so its listener finds it.
    let metrics = if config.proxy.proxy_type.is_mesh_scoped() {
        Some(start_metrics(config, &response, &admin_address, work_dir).await?)
    } else {
        None
    };
    let admin = admin::Client::new(admin_address, ADMIN_TIMEOUT);
    let outcome = supervise(
        client,
        request,
        config,
        binary,
        bootstrap_path,
        admin,
        state,
        signals,
    )
    .await;
    if let Some((stop, task)) = metrics {
        stop.cancel();
        if let Err(err) = task.await {
            tracing::warn!(error = %err, "metrics hijacker panicked");
        }
    }
    outcome
}

/// Binds the metrics hijacker on `<work_dir>/kuma-mh-<name>-<mesh>.sock` for Envoy's admin
/// and the applications the bootstrap response lists, and serves it until the token fires.
async fn start_metrics(
    config: &Config,
    response: &bootstrap::Response,
    admin: &admin::Address,
    work_dir: &Path,
) -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let mut targets: Vec<metrics::Target> = metrics::aggregates(&response.sidecar_configuration)
        .iter()
        .map(metrics::Aggregate::target)
        .collect();
    targets.push(metrics::Target::envoy(match admin {
        admin::Address::Tcp { host, port } => metrics::Endpoint::Tcp {
            host: host.clone(),
            port: *port,
        },
        admin::Address::Unix(path) => metrics::Endpoint::Unix(path.clone()),
    }));
    let transparent = config
        .proxy
        .resource
        .as_ref()
        .is_some_and(|r| r.transparent_proxying());
    let path = metrics::socket_path(work_dir, &config.proxy.name, &config.proxy.mesh);
    let hijacker = metrics::Hijacker::bind(path, metrics::Scraper::new(targets, transparent))
        .await
        .context("could not start the metrics hijacker")?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(hijacker.run(stop.clone()));
    Ok((stop, task))
}

/// Starts Envoy and supervises it until it exits or a signal asks to stop (see the module docs).
#[allow(clippy::too_many_arguments)]
async fn supervise(
    client: &bootstrap::Client,
    request: bootstrap::Request,
    config: &Config,
    binary: &Path,
    bootstrap_path: PathBuf,
    admin: admin::Client,
    state: &watch::Sender<readiness::State>,
    signals: &Signals,
) -> anyhow::Result<()> {
    let options = envoy::Options {
        config_path: bootstrap_path,
        drain_time: config.envoy.drain_time,
        log_level: config.envoy.log_level.clone(),
        component_log_level: config.envoy.component_log_level.clone(),
        concurrency: config.envoy.concurrency,
    };
    let mut process = envoy::Process::spawn(binary, &options)?;
    tracing::info!(pid = ?process.pid(), admin = %admin.address(), "Envoy started");
    state.send_replace(readiness::State::Running(admin.clone()));
    // Zone proxies are in no endpoint list: only a Dataplane reports its readiness.
    let reports = config.proxy.proxy_type.is_mesh_scoped();
    let reporter = tokio::spawn(report_when_live(
        client.clone(),
        request.clone(),
        admin.clone(),
        reports,
    ));

    tokio::select! {
        status = process.wait() => {
            reporter.abort();
            let status = status?;
            bail!("Envoy exited unexpectedly: {status}");
        }
        _ = signals.shutdown.cancelled() => {}
    }
    reporter.abort();

    state.send_replace(readiness::State::Terminating);
    // Out of the peers' endpoints first, while Envoy still serves what they send meanwhile.
    match if reports {
        client.report_readiness(&request, false).await
    } else {
        Ok(())
    } {
        Ok(()) if !reports => {}
        Ok(()) => {
            tracing::info!(wait = %crate::duration::format(DRAIN_PROPAGATION), "told the control plane this proxy is draining");
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_PROPAGATION) => {}
                _ = signals.force.cancelled() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not tell the control plane this proxy is draining")
        }
    }
    if let Err(err) = admin.fail_healthcheck().await {
        tracing::warn!(error = %err, "could not tell Envoy to fail health checks");
    }
    tracing::info!(drain_time = %crate::duration::format(config.envoy.drain_time), "draining Envoy");
    tokio::select! {
        _ = tokio::time::sleep(config.envoy.drain_time) => {}
        _ = signals.force.cancelled() => {}
        status = process.wait() => {
            tracing::info!(status = ?status.ok(), "Envoy exited while draining");
        }
    }
    let status = process.terminate(ENVOY_STOP_GRACE).await?;
    tracing::info!(%status, "Envoy stopped");
    Ok(())
}

/// Writes `path` readable by its owner only (0600), replacing what was there.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: narrow it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents)
}

/// How long a stopping proxy keeps serving normally after the control plane took it out of
/// its peers' endpoints: the time for them to receive and apply the change.
const DRAIN_PROPAGATION: Duration = Duration::from_millis(500);

/// Polls Envoy until it is live, then tells the control plane (retrying while it cannot).
async fn report_when_live(
    client: bootstrap::Client,
    request: bootstrap::Request,
    admin: admin::Client,
    reports: bool,
) {
    if !reports {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if admin.is_ready().await.unwrap_or(false) {
            break;
        }
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.report_readiness(&request, true).await {
            Ok(()) => {
                tracing::info!("Envoy is live; told the control plane");
                return;
            }
            Err(err) => {
                tracing::info!(error = %err, "could not report readiness, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The bootstrap request for this configuration.
pub fn bootstrap_request(
    config: &Config,
    envoy_version: envoy::Version,
    work_dir: &Path,
) -> bootstrap::Request {
    let proxy = &config.proxy;
    bootstrap::Request {
        mesh: proxy.mesh.clone(),
        name: proxy.name.clone(),
        proxy_type: proxy.proxy_type.as_str().to_string(),
        dataplane_token: proxy.token.clone().unwrap_or_default(),
        dataplane_token_path: proxy
            .token_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        dataplane_resource: proxy
            .resource
            .as_ref()
            .map(|r| r.to_json())
            .unwrap_or_default(),
        version: bootstrap::Version {
            kuma_dp: bootstrap::KumaDpVersion::default(),
            envoy: bootstrap::EnvoyVersion {
                version: envoy_version.version,
                build: envoy_version.build,
                kuma_dp_compatible: true,
            },
        },
        ca_cert: config.control_plane.ca_cert_pem.clone().unwrap_or_default(),
        dynamic_metadata: Default::default(),
        dns_port: config.dns.as_ref().map_or(0, |dns| u32::from(dns.port)),
        readiness_port: u32::from(config.readiness_port),
        operating_system: "linux".to_string(),
        features: config.features(),
        workdir: work_dir.display().to_string(),
        ipv6_enabled: false,
        metrics_resources: bootstrap::MetricsResources {
            cert_path: config.metrics_cert_path.clone(),
            key_path: config.metrics_key_path.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_bootstrap_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(BOOTSTRAP_FILE);
        std::fs::write(&path, "old, longer content").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, b"token").expect("write_private");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "token");
        let fresh = dir.path().join("fresh.yaml");
        write_private(&fresh, b"x").expect("write_private");
        let mode = std::fs::metadata(&fresh)
            .expect("file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
