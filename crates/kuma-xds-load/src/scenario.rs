//! The scenarios. Each one sets the mesh up through the REST API (builtin CA backends `ca-1`
//! (enabled, STRICT) and `ca-2`, an allow-all MeshTrafficPermission), connects every proxy
//! (phase `connect`: time until each has a complete configuration), then measures its own
//! phases. Every wait checks the exact expected configuration of every affected proxy and
//! fails after `timeout`, so a run that returns figures also proved correctness.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use futures::StreamExt;
use serde_json::json;

use crate::cp::{self, ControlPlane};
use crate::fleet::{self, Fleet};
use crate::procfs;
use crate::record::{Check, Config};
use crate::report::{Idle, Phase, Report};
use crate::topology::{Expected, Topology};

/// The scenarios, one subcommand each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Connect every proxy, then drop and reconnect them all at once.
    Connect,
    /// Add and remove a replica of a service; time until its consumers have the endpoints.
    EndpointChange,
    /// Apply and delete a MeshTrafficPermission; time until every inbound listener has it.
    PolicyChange,
    /// Switch the mesh's mTLS backend; time until every proxy has a certificate of the new CA.
    CaChange,
    /// CPU used by the CP with nothing changing.
    Idle,
    /// Global + 3 zone CPs: cross-zone endpoint propagation, resync after a global restart,
    /// global's memory per synced Dataplane (see [`crate::multizone`]).
    Multizone,
    /// Transparent proxies only: the first Dataplane of a new service appears; time until
    /// every proxy has the service's VIP listeners and its endpoint (VIP allocation +
    /// regeneration of every proxy).
    NewService,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::EndpointChange => "endpoint-change",
            Scenario::PolicyChange => "policy-change",
            Scenario::CaChange => "ca-change",
            Scenario::Idle => "idle",
            Scenario::Multizone => "multizone",
            Scenario::NewService => "new-service",
        }
    }
}

/// How endpoint changes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Via {
    /// A new proxy connects (registering its Dataplane); it is removed by disconnecting and
    /// deleting its Dataplane through the API (so the CP's deregistration delay is not timed).
    #[default]
    Ads,
    /// `PUT` and `DELETE` of a Dataplane through the REST API (no proxy behind it).
    Api,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub cp: cp::Options,
    pub mesh: String,
    pub services: usize,
    pub replicas: usize,
    pub fanout: usize,
    /// Transparent-proxied Dataplanes without explicit outbounds (see [`crate::topology`]).
    pub transparent: bool,
    pub delta: bool,
    pub streams_per_connection: usize,
    /// One dataplane token per proxy (bound to its name) instead of one per service.
    pub token_per_proxy: bool,
    /// Repetitions of a change.
    pub rounds: usize,
    pub via: Via,
    /// Length of the idle measurement.
    pub idle: Duration,
    /// Pause after convergence before the memory sample.
    pub settle: Duration,
    /// Longest wait for one phase.
    pub timeout: Duration,
    /// Write every proxy's arrivals (JSON lines) here at the end.
    pub history: Option<PathBuf>,
    /// Scrape the CP's `xds_delivery` after the connect phase and at the end
    /// ([`crate::cpmetrics`]).
    pub cp_metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cp: cp::Options::default(),
            mesh: "default".into(),
            services: 100,
            replicas: 10,
            fanout: 10,
            transparent: false,
            delta: false,
            streams_per_connection: 1,
            token_per_proxy: false,
            rounds: 5,
            via: Via::Ads,
            idle: Duration::from_secs(60),
            settle: Duration::from_secs(3),
            timeout: Duration::from_secs(600),
            history: None,
            cp_metrics: false,
        }
    }
}

/// A prepared run: CP up and configured, proxies created (not connected).
struct Run {
    opts: Options,
    cp: ControlPlane,
    topo: Topology,
    fleet: Fleet,
    report: Report,
    harness_cpu0: f64,
    /// Complete-configuration check per service.
    complete: Vec<Check>,
}

pub(crate) fn harness_cpu() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Runs `scenario`; the figures, or an error naming what did not converge.
pub async fn run(scenario: Scenario, opts: Options) -> anyhow::Result<Report> {
    if scenario == Scenario::Multizone {
        if opts.transparent {
            bail!("multizone does not simulate transparent proxies");
        }
        return crate::multizone::run(opts).await;
    }
    if scenario == Scenario::NewService && !opts.transparent {
        bail!("new-service measures VIP outbounds: it needs --transparent-proxy");
    }
    let mut run = Run::setup(scenario, opts).await?;
    let result = run.scenario(scenario).await;
    if let Some(path) = &run.opts.history {
        std::fs::write(path, run.fleet.history_jsonl())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match result {
        Ok(()) => {
            run.report.cp_end = run.cp.sample();
            run.report.harness_cpu_s = harness_cpu() - run.harness_cpu0;
            run.report.connections = run.fleet.connections();
            run.report.init_fetch_timeouts = run.fleet.init_fetch_timeouts();
            Ok(run.report)
        }
        Err(e) => {
            let alive = run.cp.alive();
            let tail = run.cp.log_tail(30);
            let kept = run
                .cp
                .keep_work_dir()
                .map(|d| format!(", work dir kept: {}", d.display()))
                .unwrap_or_default();
            Err(e.context(format!(
                "scenario {} failed (kuma-cp {}{kept}); last CP log lines:\n{tail}",
                scenario.name(),
                if alive { "running" } else { "exited" }
            )))
        }
    }
}

fn mesh_spec(mesh: &str, enabled: &str) -> serde_json::Value {
    json!({"type": "Mesh", "name": mesh, "mtls": {"enabledBackend": enabled, "backends": [
        {"name": "ca-1", "type": "builtin", "mode": "STRICT"},
        {"name": "ca-2", "type": "builtin", "mode": "STRICT"}]}})
}

impl Run {
    async fn setup(scenario: Scenario, opts: Options) -> anyhow::Result<Self> {
        let harness_cpu0 = harness_cpu();
        let topo = Topology::new(&opts.mesh, opts.services, opts.replicas, opts.fanout)?
            .with_transparent(opts.transparent);
        let n = topo.proxies();
        // One socket per connection on each side; the CP inherits the limit.
        procfs::raise_nofile((n / opts.streams_per_connection.max(1)) as u64 * 2 + 1024);
        let cp = ControlPlane::new(&opts.cp).await?;
        let mesh = &opts.mesh;
        cp.put(&format!("/meshes/{mesh}"), &mesh_spec(mesh, "ca-1"))
            .await
            .context("enabling mTLS")?;
        let allow_all = json!({"type": "MeshTrafficPermission", "mesh": mesh, "name": "allow-all",
            "spec": {"targetRef": {"kind": "Mesh"},
                     "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}});
        cp.put(
            &format!("/meshes/{mesh}/meshtrafficpermissions/allow-all"),
            &allow_all,
        )
        .await
        .context("applying the allow-all permission")?;
        for backend in ["ca-1", "ca-2"] {
            ca_root(&cp, mesh, backend, Duration::from_secs(30)).await?;
        }
        let mut members: Vec<_> = (0..n).map(|i| topo.member(i)).collect();
        if scenario == Scenario::EndpointChange && opts.via == Via::Ads {
            for k in 0..opts.rounds {
                let service = change_target(&topo, k);
                members.push(topo.extra(n + k, service, k));
            }
        }
        if scenario == Scenario::NewService && opts.via == Via::Ads {
            for k in 0..opts.rounds {
                members.push(topo.extra(n + k, topo.services + k, k));
            }
        }
        let tokens = tokens(&cp, &opts, &members).await?;
        let fleet = Fleet::new(
            &cp,
            fleet::Options {
                delta: opts.delta,
                streams_per_connection: opts.streams_per_connection,
            },
            members,
            tokens,
        )?;
        let complete = (0..topo.services)
            .map(|s| {
                let want: Arc<Expected> = Arc::new(topo.expected(s));
                Arc::new(move |c: &Config| c.complete(&want, true)) as Check
            })
            .collect();
        // Let the CP finish reacting to the setup before the baseline.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = Report {
            scenario: scenario.name().into(),
            topology: topo.clone(),
            proxies: n,
            delta: opts.delta,
            streams_per_connection: opts.streams_per_connection,
            connections: 0,
            dp_tokens: cp.dp_tokens,
            cp_baseline: cp.sample(),
            cp_connected: None,
            quiesce_s: None,
            rss_per_proxy_mib: None,
            connect_kib_per_proxy: None,
            resources_per_proxy: None,
            phases: Vec::new(),
            idle: None,
            cp_end: None,
            harness_cpu_s: 0.0,
            init_fetch_timeouts: 0,
            multizone: None,
            cp_delivery: Vec::new(),
        };
        Ok(Self {
            opts,
            cp,
            topo,
            fleet,
            report,
            harness_cpu0,
            complete,
        })
    }

    async fn scenario(&mut self, scenario: Scenario) -> anyhow::Result<()> {
        self.connect_all().await?;
        let connected = self.scrape("connect", None).await?;
        if scenario != Scenario::Connect {
            // Changes are timed against a quiet CP, not one still draining the connect storm.
            self.report.quiesce_s =
                Some(self.quiesce(Duration::from_secs(180)).await.as_secs_f64());
        }
        match scenario {
            Scenario::Connect => self.reconnect().await,
            Scenario::EndpointChange => self.endpoint_change().await,
            Scenario::PolicyChange => self.policy_change().await,
            Scenario::CaChange => self.ca_change().await,
            Scenario::Idle => self.idle().await,
            Scenario::NewService => self.new_service().await,
            Scenario::Multizone => bail!("multizone runs on its own (crate::multizone)"),
        }?;
        self.scrape("after connect", connected.as_deref()).await?;
        Ok(())
    }

    /// With `--cp-metrics`: the CP's `xds_delivery` since `before` (a scrape) as the rows of
    /// `part`; the scrape.
    async fn scrape(&mut self, part: &str, before: Option<&str>) -> anyhow::Result<Option<String>> {
        if !self.opts.cp_metrics {
            return Ok(None);
        }
        let text = self.cp.metrics().await.context("--cp-metrics")?;
        self.report
            .cp_delivery
            .extend(crate::cpmetrics::rows(part, &text, before));
        Ok(Some(text))
    }

    fn regular(&self) -> Vec<usize> {
        (0..self.topo.proxies()).collect()
    }

    fn describe_gap(&self) -> impl Fn(&fleet::Proxy, &fleet::State) -> String + '_ {
        |p, st| {
            st.config
                .describe_gap(&self.topo.expected(p.member.service))
        }
    }

    /// Phase `connect`: every regular proxy connects; time until each is complete.
    async fn connect_all(&mut self) -> anyhow::Result<()> {
        let targets = self.regular();
        let before = self.cp.sample();
        let timeouts = self.fleet.init_fetch_timeouts();
        let bytes0 = self.fleet.bytes_received();
        let origin = Instant::now();
        let set = self.fleet.expect(&targets, |i| {
            self.complete[self.fleet.proxies[i].member.service].clone()
        });
        self.fleet.connect(targets.iter().copied());
        let times = self
            .fleet
            .wait(
                &set,
                &targets,
                origin,
                self.opts.timeout,
                self.describe_gap(),
            )
            .await?;
        let wall = origin.elapsed();
        let mut phase = Phase::new("connect");
        phase.add_round(times, wall, before, self.cp.sample());
        phase.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
        phase.received_bytes += self.fleet.bytes_received() - bytes0;
        self.report.connect_kib_per_proxy =
            Some(phase.received_bytes as f64 / 1024.0 / targets.len().max(1) as f64);
        self.report.resources_per_proxy = Some(self.fleet.resources(&targets));
        self.report.phases.push(phase);
        self.fleet.clear_goals();
        tokio::time::sleep(self.opts.settle).await;
        self.report.cp_connected = self.cp.sample();
        if let (Some(b), Some(c)) = (self.report.cp_baseline, self.report.cp_connected) {
            self.report.rss_per_proxy_mib = Some(
                (c.rss_bytes as f64 - b.rss_bytes as f64)
                    / (1024.0 * 1024.0)
                    / targets.len().max(1) as f64,
            );
        }
        Ok(())
    }

    /// Phase `reconnect`: all streams and connections drop; every proxy reconnects at once
    /// (`rounds` times: the CP's memory after each wave shows whether reconnects leak).
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let mut phase = Phase::new("reconnect (all at once)");
        for k in 0..self.opts.rounds {
            let before = self.cp.sample();
            let timeouts = self.fleet.init_fetch_timeouts();
            let bytes0 = self.fleet.bytes_received();
            let origin = Instant::now();
            let (targets, set) = self
                .fleet
                .reconnect_all(|i| self.complete[self.fleet.proxies[i].member.service].clone());
            let times = self
                .fleet
                .wait(
                    &set,
                    &targets,
                    origin,
                    self.opts.timeout,
                    self.describe_gap(),
                )
                .await
                .with_context(|| format!("reconnect wave {k}"))?;
            let wall = origin.elapsed();
            phase.add_round(times, wall, before, self.cp.sample());
            phase.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
            phase.received_bytes += self.fleet.bytes_received() - bytes0;
            self.fleet.clear_goals();
        }
        self.report.phases.push(phase);
        Ok(())
    }

    /// Consumers of service `t`: every regular replica of a service with an outbound to it.
    fn consumers(&self, t: usize) -> Vec<usize> {
        self.topo
            .consumers_of(t)
            .into_iter()
            .flat_map(|s| self.topo.replicas_of(s))
            .collect()
    }

    async fn endpoint_change(&mut self) -> anyhow::Result<()> {
        let n = self.topo.proxies();
        let mesh = self.opts.mesh.clone();
        let mut add = Phase::new("endpoint add");
        let mut remove = Phase::new("endpoint remove");
        for k in 0..self.opts.rounds {
            let t = change_target(&self.topo, k);
            let member = match self.opts.via {
                Via::Ads => self.fleet.proxies[n + k].member.clone(),
                Via::Api => self.topo.extra(n + k, t, k),
            };
            let svc = Topology::service_name(t);
            let base = self.topo.endpoints_of(t);
            let mut grown = base.clone();
            grown.insert(member.endpoint.clone());
            let targets = self.consumers(t);
            let path = format!("/meshes/{mesh}/dataplanes/{}", member.name);

            let set = self.fleet.expect(&targets, |_| endpoints_are(&svc, &grown));
            let before = self.cp.sample();
            let timeouts = self.fleet.init_fetch_timeouts();
            let bytes0 = self.fleet.bytes_received();
            let origin = Instant::now();
            match self.opts.via {
                Via::Ads => self.fleet.connect([n + k]),
                Via::Api => self.cp.put(&path, &member.dataplane).await?,
            }
            let times = self
                .fleet
                .wait(&set, &targets, origin, self.opts.timeout, |_, st| {
                    format!(
                        "{svc}: {:?}; {}",
                        st.config.active_endpoints_of(&svc),
                        st.config.describe_warming().join("; ")
                    )
                })
                .await
                .with_context(|| format!("round {k}: adding {} to {svc}", member.endpoint))?;
            add.add_round(times, origin.elapsed(), before, self.cp.sample());
            add.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
            add.received_bytes += self.fleet.bytes_received() - bytes0;

            if self.opts.via == Via::Ads {
                self.fleet.disconnect([n + k]);
                // Let the stream close before the Dataplane goes, as a proxy that stopped.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let set = self.fleet.expect(&targets, |_| endpoints_are(&svc, &base));
            let before = self.cp.sample();
            let timeouts = self.fleet.init_fetch_timeouts();
            let bytes0 = self.fleet.bytes_received();
            let origin = Instant::now();
            self.cp.delete(&path).await?;
            let times = self
                .fleet
                .wait(&set, &targets, origin, self.opts.timeout, |_, st| {
                    format!(
                        "{svc}: {:?}; {}",
                        st.config.active_endpoints_of(&svc),
                        st.config.describe_warming().join("; ")
                    )
                })
                .await
                .with_context(|| format!("round {k}: removing {} from {svc}", member.endpoint))?;
            remove.add_round(times, origin.elapsed(), before, self.cp.sample());
            remove.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
            remove.received_bytes += self.fleet.bytes_received() - bytes0;
            self.fleet.clear_goals();
        }
        let name = match self.opts.via {
            Via::Ads => " (new proxy connects)",
            Via::Api => " (PUT Dataplane)",
        };
        add.name.push_str(name);
        remove.name.push_str(" (DELETE Dataplane)");
        self.report.phases.push(add);
        self.report.phases.push(remove);
        Ok(())
    }

    /// Round `k` adds the first Dataplane of service `svc-<services + k>` (a proxy connects,
    /// or `PUT`); every regular proxy must then hold the VIP listeners of every service so
    /// far (`<VIP>:80` and `<VIP>:<inbound port>`) and the new service's cluster with
    /// exactly its endpoint. The new services stay (their VIPs would outlive them by the
    /// grace period anyway).
    async fn new_service(&mut self) -> anyhow::Result<()> {
        let n = self.topo.proxies();
        let mesh = self.opts.mesh.clone();
        let targets = self.regular();
        let mut phase = Phase::new(match self.opts.via {
            Via::Ads => "new service VIP (proxy connects)",
            Via::Api => "new service VIP (PUT Dataplane)",
        });
        for k in 0..self.opts.rounds {
            let t = self.topo.services + k;
            let member = match self.opts.via {
                Via::Ads => self.fleet.proxies[n + k].member.clone(),
                Via::Api => self.topo.extra(n + k, t, k),
            };
            let svc = Topology::service_name(t);
            let listeners = Topology::tp_listeners(t + 1);
            let want: BTreeSet<String> = [member.endpoint.clone()].into();
            let check: Check = {
                let (svc, want) = (svc.clone(), want.clone());
                Arc::new(move |c: &Config| {
                    c.listeners.len() == listeners && c.active_endpoints_of(&svc) == Some(&want)
                })
            };
            let set = self.fleet.expect(&targets, |_| check.clone());
            let before = self.cp.sample();
            let timeouts = self.fleet.init_fetch_timeouts();
            let bytes0 = self.fleet.bytes_received();
            let origin = Instant::now();
            match self.opts.via {
                Via::Ads => self.fleet.connect([n + k]),
                Via::Api => {
                    let path = format!("/meshes/{mesh}/dataplanes/{}", member.name);
                    self.cp.put(&path, &member.dataplane).await?
                }
            }
            let times = self
                .fleet
                .wait(&set, &targets, origin, self.opts.timeout, |_, st| {
                    format!(
                        "{} listeners of {listeners}; {svc}: {:?}; {}",
                        st.config.listeners.len(),
                        st.config.active_endpoints_of(&svc),
                        st.config.describe_warming().join("; ")
                    )
                })
                .await
                .with_context(|| format!("round {k}: new service {svc}"))?;
            phase.add_round(times, origin.elapsed(), before, self.cp.sample());
            phase.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
            phase.received_bytes += self.fleet.bytes_received() - bytes0;
            self.fleet.clear_goals();
        }
        self.report.phases.push(phase);
        Ok(())
    }

    async fn policy_change(&mut self) -> anyhow::Result<()> {
        let mesh = self.opts.mesh.clone();
        let targets = self.regular();
        let mut apply = Phase::new("policy apply");
        let mut delete = Phase::new("policy delete");
        for k in 0..self.opts.rounds {
            // Denying a service no proxy has changes every inbound's RBAC principals: the
            // allowed subset becomes "not spiffe://<mesh>/<probe>".
            let probe = format!("load-probe-{k}");
            let spiffe = format!("spiffe://{mesh}/{probe}");
            let name = format!("deny-{probe}");
            let path = format!("/meshes/{mesh}/meshtrafficpermissions/{name}");
            let mtp = json!({"type": "MeshTrafficPermission", "mesh": mesh, "name": name,
                "spec": {"targetRef": {"kind": "Mesh"},
                         "from": [{"targetRef": {"kind": "MeshService", "name": probe},
                                   "default": {"action": "Deny"}}]}});
            for (phase, present) in [(&mut apply, true), (&mut delete, false)] {
                let want = spiffe.clone();
                let check: Check = Arc::new(move |c: &Config| {
                    let has = c.listener_spiffe("inbound:").contains(want.as_str());
                    has == present && !c.listeners.is_empty()
                });
                let set = self.fleet.expect(&targets, |_| check.clone());
                let before = self.cp.sample();
                let timeouts = self.fleet.init_fetch_timeouts();
                let bytes0 = self.fleet.bytes_received();
                let origin = Instant::now();
                if present {
                    self.cp.put(&path, &mtp).await?;
                } else {
                    self.cp.delete(&path).await?;
                }
                let times = self
                    .fleet
                    .wait(&set, &targets, origin, self.opts.timeout, |_, st| {
                        format!(
                            "inbound principals {:?}; {}",
                            st.config.listener_spiffe("inbound:"),
                            st.config.describe_warming().join("; ")
                        )
                    })
                    .await
                    .with_context(|| {
                        format!(
                            "round {k}: {} {name}",
                            if present { "apply" } else { "delete" }
                        )
                    })?;
                phase.add_round(times, origin.elapsed(), before, self.cp.sample());
                phase.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
                phase.received_bytes += self.fleet.bytes_received() - bytes0;
            }
            self.fleet.clear_goals();
        }
        self.report.phases.push(apply);
        self.report.phases.push(delete);
        Ok(())
    }

    async fn ca_change(&mut self) -> anyhow::Result<()> {
        let mesh = self.opts.mesh.clone();
        let targets = self.regular();
        let mut phase = Phase::new("CA backend switch");
        for k in 0..self.opts.rounds {
            let backend = if k % 2 == 0 { "ca-2" } else { "ca-1" };
            let root = Arc::new(ca_root(&self.cp, &mesh, backend, Duration::from_secs(5)).await?);
            let check: Check = {
                let root = root.clone();
                Arc::new(move |c: &Config| {
                    c.ca_pem().is_some_and(|ca| trusts(ca, &root))
                        && c.identity_pem()
                            .is_some_and(|id| crate::record::signed_by(id, &root))
                })
            };
            let set = self.fleet.expect(&targets, |_| check.clone());
            let before = self.cp.sample();
            let timeouts = self.fleet.init_fetch_timeouts();
            let bytes0 = self.fleet.bytes_received();
            let origin = Instant::now();
            self.cp
                .put(&format!("/meshes/{mesh}"), &mesh_spec(&mesh, backend))
                .await?;
            let times = self
                .fleet
                .wait(&set, &targets, origin, self.opts.timeout, |_, st| {
                    let id = st.config.identity_pem().unwrap_or_default();
                    format!(
                        "mesh CA trusts the new root: {}, identity signed by it: {}; {}",
                        st.config.ca_pem().is_some_and(|ca| trusts(ca, &root)),
                        crate::record::signed_by(id, &root),
                        st.config.describe_warming().join("; ")
                    )
                })
                .await
                .with_context(|| format!("round {k}: switching to {backend}"))?;
            phase.add_round(times, origin.elapsed(), before, self.cp.sample());
            phase.init_fetch_timeouts += self.fleet.init_fetch_timeouts() - timeouts;
            phase.received_bytes += self.fleet.bytes_received() - bytes0;
            self.fleet.clear_goals();
            // Every identity is distinct (one key per proxy).
            let ids: BTreeSet<u64> = targets
                .iter()
                .filter_map(|&i| {
                    let st = self.fleet.proxies[i].state();
                    st.config
                        .secrets
                        .values()
                        .find(|s| s.identity)
                        .map(|s| s.hash)
                })
                .collect();
            if ids.len() != targets.len() {
                bail!(
                    "round {k}: {} distinct identities for {} proxies",
                    ids.len(),
                    targets.len()
                );
            }
        }
        self.report.phases.push(phase);
        Ok(())
    }

    /// Waits until the CP used less than 2% of a core over the last 12 seconds (longer than
    /// the default insight flush interval, 10 s): work queued during the connect storm, such
    /// as insight writes, is drained in periodic bursts. At most `limit`; how long it took.
    async fn quiesce(&self, limit: Duration) -> Duration {
        const WINDOW: usize = 12;
        let start = Instant::now();
        let mut samples = std::collections::VecDeque::new();
        samples.push_back(self.cp.sample());
        while start.elapsed() < limit {
            tokio::time::sleep(Duration::from_secs(1)).await;
            samples.push_back(self.cp.sample());
            if samples.len() > WINDOW + 1 {
                samples.pop_front();
            }
            match (
                samples.front().copied().flatten(),
                samples.back().copied().flatten(),
            ) {
                (Some(a), Some(b)) => {
                    if samples.len() == WINDOW + 1
                        && b.cpu_seconds - a.cpu_seconds < 0.02 * WINDOW as f64
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
        start.elapsed()
    }

    async fn idle(&mut self) -> anyhow::Result<()> {
        let before = self.cp.sample();
        let h0 = harness_cpu();
        let origin = Instant::now();
        tokio::time::sleep(self.opts.idle).await;
        let secs = origin.elapsed().as_secs_f64();
        let after = self.cp.sample();
        let cpu = match (before, after) {
            (Some(b), Some(a)) => a.cpu_seconds - b.cpu_seconds,
            _ => f64::NAN,
        };
        if self.fleet.connected() != self.topo.proxies() {
            bail!(
                "{} of {} proxies stayed connected while idle",
                self.fleet.connected(),
                self.topo.proxies()
            );
        }
        self.report.idle = Some(Idle {
            seconds: secs,
            cp_cpu_s: cpu,
            cp_cpu_percent: cpu / secs * 100.0,
            harness_cpu_s: harness_cpu() - h0,
        });
        Ok(())
    }
}

/// Service changed in round `k`: spread over the mesh.
pub(crate) fn change_target(topo: &Topology, k: usize) -> usize {
    (k * 7 + 3) % topo.services
}

pub(crate) fn endpoints_are(service: &str, want: &BTreeSet<String>) -> Check {
    let service = service.to_string();
    let want = want.clone();
    Arc::new(move |c: &Config| c.active_endpoints_of(&service) == Some(&want))
}

/// Whether the trust bundle `bundle` (concatenated PEM certificates) holds `root`: during
/// and after a CA switch proxies trust every backend the Mesh lists.
fn trusts(bundle: &str, root: &str) -> bool {
    let root = root.trim();
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .any(|block| block.trim() == root)
}

/// The root certificate (PEM) of a builtin backend, once the CP generated it.
pub(crate) async fn ca_root(
    cp: &ControlPlane,
    mesh: &str,
    backend: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let path = format!("/meshes/{mesh}/secrets/{mesh}.ca-builtin-cert-{backend}");
    let deadline = Instant::now() + timeout;
    loop {
        match cp.get(&path).await {
            Ok(v) => {
                let data = v["data"].as_str().context("the CA secret has no data")?;
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .context("the CA secret is not base64")?;
                return String::from_utf8(pem).context("the CA secret is not PEM");
            }
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("the builtin root of {backend} never appeared")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Dataplane tokens for `members` (one per service, or per proxy), if the CP wants them.
pub(crate) async fn tokens(
    cp: &ControlPlane,
    opts: &Options,
    members: &[crate::topology::Member],
) -> anyhow::Result<Vec<Option<Arc<str>>>> {
    if !cp.dp_tokens {
        return Ok(vec![None; members.len()]);
    }
    let mesh = opts.mesh.as_str();
    if opts.token_per_proxy {
        let issued: Vec<anyhow::Result<String>> = futures::stream::iter(members)
            .map(|m| cp.dataplane_token(mesh, &m.name, None))
            .buffered(8)
            .collect()
            .await;
        return issued
            .into_iter()
            .map(|t| t.map(|t| Some(Arc::from(t))))
            .collect();
    }
    let services: BTreeSet<usize> = members.iter().map(|m| m.service).collect();
    let issued: Vec<(usize, anyhow::Result<String>)> = futures::stream::iter(services)
        .map(|s| async move {
            (
                s,
                cp.dataplane_token(mesh, "", Some(&Topology::service_name(s)))
                    .await,
            )
        })
        .buffered(8)
        .collect()
        .await;
    let mut by_service = std::collections::HashMap::new();
    for (s, t) in issued {
        by_service.insert(s, Arc::<str>::from(t?));
    }
    Ok(members
        .iter()
        .map(|m| by_service.get(&m.service).cloned())
        .collect())
}
