//! The `multizone` scenario: a global control plane and three federated zone CPs
//! (`zone-1..3`), real `kuma-cp` processes on loopback, each in its own directory under one
//! temporary work dir (sqlite stores), each zone presenting a zone token issued by global.
//!
//! Layout: service `s` lives only in zone `s % 3` (all its replicas connect to that zone's DP
//! server); proxies have outbounds to the `fanout` services that follow their own, so every
//! zone's proxies call services that live only in the other zones. Each zone has one
//! ZoneIngress, `PUT` through its API (advertised at 127.0.0.1 on a port of its own; no Envoy
//! behind it): sidecars reach a remote service through that zone's ingress, weighted by the
//! service's instances there (local services, with no instance elsewhere, keep weight 1).
//! The mesh has builtin mTLS (cross-zone endpoints need it) and an allow-all
//! MeshTrafficPermission, both created on global.
//!
//! Phases, each waiting for the exact expected configuration of every affected proxy (the
//! changes start once every CP has gone quiet after the connect storm, as in the other
//! scenarios: `quiesce_s`):
//! - `connect`: every proxy connects to its zone CP; complete configuration (local endpoints
//!   and remote ingresses with their weights). Then global's Dataplane count of each zone
//!   must equal the zone's (initial sync), and global's memory per synced Dataplane is taken.
//! - `cross-zone add/remove`: a Dataplane of a service of zone A is `PUT` on zone A's API,
//!   then `DELETE`d; time until every consumer of the service in the other zones has zone A's
//!   ingress endpoint with the new weight (zone A's reconciler updates the ingress's
//!   `availableServices`, KDS zone → global → other zones, their reconcilers, xDS).
//! - `resync`: global is SIGKILLed; a Dataplane is created in each zone while it is down;
//!   global restarts on the same store; time until global's Dataplane count for each zone
//!   equals the zone's own again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::cp::{self, ControlPlane, free_port};
use crate::fleet::{self, Fleet};
use crate::procfs;
use crate::record::{Check, Config, endpoint_key};
use crate::report::{self, Phase, Report};
use crate::scenario::{Options, ca_root, change_target, endpoints_are, harness_cpu, tokens};
use crate::topology::{Expected, Member, Topology};

/// Number of zones.
pub const ZONES: usize = 3;
/// Advertised port of zone `z`'s ingress: this plus `z`.
const INGRESS_PORT_BASE: u32 = 30_001;
/// Pause between API checks (global's Dataplane counts): each check lists every Dataplane of
/// global's store, so they run one at a time and not too often (at 10,000 Dataplanes one
/// list costs global tens of milliseconds).
const POLL: Duration = Duration::from_millis(100);

/// Name of zone `z` (0-based).
pub fn zone_name(z: usize) -> String {
    format!("zone-{}", z + 1)
}

/// The zone service `s` lives in.
pub fn zone_of(s: usize) -> usize {
    s % ZONES
}

fn ingress_port(z: usize) -> u32 {
    INGRESS_PORT_BASE + z as u32
}

/// One zone: its CP, its proxies, and where each came from in the topology.
struct Zone {
    name: String,
    cp: ControlPlane,
    fleet: Fleet,
    /// Topology index of each fleet proxy.
    topo_index: Vec<usize>,
}

impl Zone {
    /// Fleet indices of the proxies of the services `services` (those living here).
    fn proxies_of(&self, topo: &Topology, services: &[usize]) -> Vec<usize> {
        self.topo_index
            .iter()
            .enumerate()
            .filter(|(_, t)| services.contains(&(**t / topo.replicas)))
            .map(|(i, _)| i)
            .collect()
    }
}

/// The endpoints a proxy in zone `z` must have for service `t` when `t` has `instances`
/// instances: its replicas' addresses when `t` lives in `z` (weight 1: a service with no
/// endpoint in another zone has a plain, single-locality load assignment), else the ingress
/// of `t`'s zone weighted by the instances.
fn endpoints_for(topo: &Topology, z: usize, t: usize, instances: usize) -> Vec<String> {
    if zone_of(t) == z {
        topo.replicas_of(t)
            .map(|i| topo.member(i).endpoint)
            .collect()
    } else {
        vec![endpoint_key(
            "127.0.0.1",
            ingress_port(zone_of(t)),
            instances as u32,
        )]
    }
}

/// The complete configuration of a proxy of service `s` (in zone `zone_of(s)`).
fn expected(topo: &Topology, s: usize) -> Expected {
    let z = zone_of(s);
    Expected {
        listeners: 1 + topo.fanout + crate::topology::ADMIN_LISTENERS,
        clusters: topo
            .outbounds_of(s)
            .into_iter()
            .map(|t| {
                (
                    Topology::service_name(t),
                    endpoints_for(topo, z, t, topo.replicas)
                        .into_iter()
                        .collect(),
                )
            })
            .collect(),
    }
}

fn cp_options(opts: &Options, dir: PathBuf, env: Vec<(String, String)>) -> cp::Options {
    let mut env = env;
    // `--cp-env` (and `--no-dp-tokens`) apply to every CP and win.
    env.extend(opts.cp.env.iter().cloned());
    cp::Options {
        binary: opts.cp.binary.clone(),
        env,
        keep_work_dir: false,
        dp_tokens: opts.cp.dp_tokens,
        work_dir: Some(dir),
        ..Default::default()
    }
}

/// Global's number of Dataplanes of `zone` (label `kuma.io/zone`).
async fn global_count(global: &ControlPlane, mesh: &str, zone: &str) -> anyhow::Result<usize> {
    let v = global
        .get(&format!(
            "/meshes/{mesh}/dataplanes?filter[labels.kuma.io/zone]={zone}&size=1"
        ))
        .await?;
    v["total"]
        .as_u64()
        .map(|n| n as usize)
        .context("the Dataplane list has no total")
}

/// A CP's own number of Dataplanes.
async fn local_count(cp: &ControlPlane, mesh: &str) -> anyhow::Result<usize> {
    let v = cp.get(&format!("/meshes/{mesh}/dataplanes?size=1")).await?;
    v["total"]
        .as_u64()
        .map(|n| n as usize)
        .context("the Dataplane list has no total")
}

/// Polls `f` every [`POLL`] until it returns `Some`, at most `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Everything the run holds.
struct Run {
    opts: Options,
    topo: Topology,
    global: ControlPlane,
    zones: Vec<Zone>,
    report: Report,
    figures: report::Multizone,
    /// The parent work dir (global/, zone-1/, ...), removed at the end unless kept.
    dir: Option<tempfile::TempDir>,
}

/// Runs the scenario; the figures, or an error naming what did not converge (the work dir
/// with every CP's log is then kept).
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let harness_cpu0 = harness_cpu();
    let dir = tempfile::Builder::new()
        .prefix("kuma-xds-load-mz-")
        .tempdir()
        .context("creating the work dir")?;
    let path = dir.path().to_path_buf();
    // `--keep-cp-workdir`: kept from the start, so even an interrupted run leaves its logs.
    let dir = if opts.cp.keep_work_dir {
        eprintln!("work dir (kept): {}", dir.keep().display());
        None
    } else {
        Some(dir)
    };
    let result = match Run::setup(opts, &path).await {
        Ok(mut run) => {
            run.dir = dir;
            let r = run.phases().await;
            Ok((run, r))
        }
        Err(e) => {
            if let Some(d) = dir {
                let _ = d.keep();
            }
            Err(e)
        }
    };
    match result {
        Ok((mut run, Ok(()))) => {
            run.report.harness_cpu_s = harness_cpu() - harness_cpu0;
            run.report.connections = run.zones.iter().map(|z| z.fleet.connections()).sum();
            run.report.init_fetch_timeouts = run
                .zones
                .iter()
                .map(|z| z.fleet.init_fetch_timeouts())
                .sum();
            run.figures.nacks = run
                .zones
                .iter()
                .flat_map(|z| z.fleet.proxies.iter())
                .map(|p| p.state().config.nacks)
                .sum();
            run.figures.zone_rss_mib = run
                .zones
                .iter()
                .map(|z| z.cp.sample().map_or(f64::NAN, |s| s.rss_mib()))
                .collect();
            let streams: u64 = run
                .zones
                .iter()
                .flat_map(|z| z.fleet.proxies.iter())
                .map(|p| p.state().streams)
                .sum();
            run.figures.reconnects = streams.saturating_sub(run.topo.proxies() as u64);
            let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
            for p in run.zones.iter().flat_map(|z| z.fleet.proxies.iter()) {
                if let Some(e) = p.state().last_error.clone() {
                    *errors.entry(e).or_default() += 1;
                }
            }
            let mut errors: Vec<(String, u64)> = errors.into_iter().collect();
            errors.sort_by_key(|e| std::cmp::Reverse(e.1));
            errors.truncate(5);
            run.figures.stream_errors = errors;
            run.report.multizone = Some(run.figures.clone());
            Ok(run.report)
        }
        Ok((mut run, Err(e))) => {
            let kept = run.dir.take().map(|d| d.keep());
            Err(e.context(format!(
                "scenario multizone failed; CP logs under {}",
                kept.unwrap_or(path).display()
            )))
        }
        Err(e) => Err(e.context(format!(
            "scenario multizone failed during setup; CP logs under {}",
            path.display()
        ))),
    }
}

impl Run {
    async fn setup(opts: Options, root: &std::path::Path) -> anyhow::Result<Self> {
        let topo = Topology::new(&opts.mesh, opts.services, opts.replicas, opts.fanout)?;
        anyhow::ensure!(
            topo.services >= ZONES,
            "multizone needs at least {ZONES} services (one zone each)"
        );
        let n = topo.proxies();
        procfs::raise_nofile((n / opts.streams_per_connection.max(1)) as u64 * 2 + 1024);
        let mesh = opts.mesh.clone();

        let kds_port = free_port()?;
        let global = ControlPlane::new(&cp_options(
            &opts,
            root.join("global"),
            vec![
                ("KUMA_MODE".into(), "global".into()),
                (
                    "KUMA_MULTIZONE_GLOBAL_KDS_INTERFACE".into(),
                    "127.0.0.1".into(),
                ),
                (
                    "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT".into(),
                    kds_port.to_string(),
                ),
            ],
        ))
        .await
        .context("starting global")?;
        let mesh_spec = json!({"type": "Mesh", "name": mesh, "mtls": {"enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "builtin", "mode": "STRICT"}]}});
        global
            .put(&format!("/meshes/{mesh}"), &mesh_spec)
            .await
            .context("enabling mTLS on global")?;
        let allow_all = json!({"type": "MeshTrafficPermission", "mesh": mesh, "name": "allow-all",
            "spec": {"targetRef": {"kind": "Mesh"},
                     "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}});
        global
            .put(
                &format!("/meshes/{mesh}/meshtrafficpermissions/allow-all"),
                &allow_all,
            )
            .await
            .context("applying the allow-all permission on global")?;
        let root_pem = ca_root(&global, &mesh, "ca-1", Duration::from_secs(30)).await?;
        // Let global finish reacting to the setup before the baseline.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let baseline = global.sample();

        let mut zones = Vec::new();
        let global_ca = root.join("global").join("kuma-cp.crt");
        for z in 0..ZONES {
            let name = zone_name(z);
            let token = global
                .post(
                    "/tokens/zone",
                    &json!({"zone": name, "scope": ["cp"], "validFor": "24h"}),
                )
                .await
                .context("issuing a zone token")?;
            let cp = ControlPlane::new(&cp_options(
                &opts,
                root.join(&name),
                vec![
                    ("KUMA_MODE".into(), "zone".into()),
                    ("KUMA_MULTIZONE_ZONE_NAME".into(), name.clone()),
                    (
                        "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS".into(),
                        format!("grpcs://127.0.0.1:{kds_port}"),
                    ),
                    (
                        "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE".into(),
                        global_ca.display().to_string(),
                    ),
                    (
                        "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE".into(),
                        token.trim().to_string(),
                    ),
                ],
            ))
            .await
            .with_context(|| format!("starting {name}"))?;
            zones.push((name, cp));
        }

        // The mesh, its CA (the same root as global's) and the permission reach every zone.
        for (name, cp) in &zones {
            let got = ca_root(cp, &mesh, "ca-1", Duration::from_secs(60))
                .await
                .with_context(|| format!("the mesh CA on {name}"))?;
            if got.trim() != root_pem.trim() {
                bail!("{name} holds another builtin root than global");
            }
            poll(
                &format!("the allow-all permission on {name}"),
                Duration::from_secs(60),
                || async {
                    let v = cp
                        .get(&format!("/meshes/{mesh}/meshtrafficpermissions"))
                        .await
                        .ok()?;
                    (v["total"].as_u64() >= Some(1)).then_some(())
                },
            )
            .await?;
        }

        // One ZoneIngress per zone, through the zone's API; every zone must then hold the
        // other zones' (synced through global, with their zone set).
        for (z, (name, cp)) in zones.iter().enumerate() {
            let port = ingress_port(z);
            let zi = json!({"type": "ZoneIngress", "name": format!("ingress-{name}"),
                "networking": {"address": "127.0.0.1", "port": port,
                               "advertisedAddress": "127.0.0.1", "advertisedPort": port}});
            cp.put(&format!("/zoneingresses/ingress-{name}"), &zi)
                .await
                .with_context(|| format!("PUT ZoneIngress on {name}"))?;
        }
        let global_name = "global".to_string();
        for (name, cp) in zones
            .iter()
            .map(|(n, c)| (n, c))
            .chain([(&global_name, &global)])
        {
            poll(
                &format!("the {ZONES} ZoneIngresses on {name}"),
                Duration::from_secs(60),
                || async {
                    let v = cp.get("/zoneingresses").await.ok()?;
                    let items = v["items"].as_array()?;
                    let zoned = items
                        .iter()
                        .filter(|i| i["zone"].as_str().is_some_and(|z| !z.is_empty()))
                        .count();
                    // Own one (zone unset) + the others', or all three on global.
                    (items.len() == ZONES && zoned >= ZONES - 1).then_some(())
                },
            )
            .await?;
        }

        // Proxies: each zone's fleet holds the replicas of the services living there.
        let mut built = Vec::new();
        for (z, (name, cp)) in zones.into_iter().enumerate() {
            let topo_index: Vec<usize> = (0..n)
                .filter(|&i| zone_of(i / topo.replicas) == z)
                .collect();
            let members: Vec<Member> = topo_index
                .iter()
                .enumerate()
                .map(|(j, &i)| {
                    let mut m = topo.member(i);
                    m.index = j;
                    m
                })
                .collect();
            let toks = tokens(&cp, &opts, &members)
                .await
                .with_context(|| format!("dataplane tokens on {name}"))?;
            let fleet = Fleet::new(
                &cp,
                fleet::Options {
                    delta: opts.delta,
                    streams_per_connection: opts.streams_per_connection,
                },
                members,
                toks,
            )?;
            built.push(Zone {
                name,
                cp,
                fleet,
                topo_index,
            });
        }
        let figures = report::Multizone {
            zones: built.iter().map(|z| z.name.clone()).collect(),
            proxies_per_zone: built.iter().map(|z| z.topo_index.len()).collect(),
            ingress_ports: (0..ZONES).map(ingress_port).collect(),
            global_rss_before_zones_mib: baseline.map_or(f64::NAN, |s| s.rss_mib()),
            ..Default::default()
        };
        let report = Report {
            scenario: "multizone".into(),
            topology: topo.clone(),
            proxies: n,
            delta: opts.delta,
            streams_per_connection: opts.streams_per_connection,
            connections: 0,
            dp_tokens: built.iter().all(|z| z.cp.dp_tokens),
            cp_baseline: baseline,
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
            topo,
            global,
            zones: built,
            report,
            figures,
            dir: None,
        })
    }

    async fn phases(&mut self) -> anyhow::Result<()> {
        self.connect_all().await.context("connect")?;
        self.initial_sync()
            .await
            .context("initial sync to global")?;
        // Changes are timed against quiet CPs, as in the other scenarios, not ones still
        // draining the connect storm (insight writes, their sync to global).
        self.report.quiesce_s = Some(self.quiesce(Duration::from_secs(180)).await.as_secs_f64());
        // Right after the sync global still holds the burst's transient allocations; once
        // quiet, what it keeps.
        if let (Some(b), Some(q)) = (self.report.cp_baseline, self.global.sample()) {
            self.figures.global_rss_quiet_mib = q.rss_mib();
            self.figures.global_kib_per_dataplane_quiet = (q.rss_bytes as f64 - b.rss_bytes as f64)
                / 1024.0
                / self.figures.dataplanes_synced.max(1) as f64;
        }
        self.cross_zone().await.context("cross-zone propagation")?;
        self.resync()
            .await
            .context("resync after a global restart")?;
        Ok(())
    }

    /// Every proxy connects to its zone CP; time until each has its complete configuration
    /// (remote services through the other zones' ingresses).
    async fn connect_all(&mut self) -> anyhow::Result<()> {
        let before = self.global.sample();
        let origin = Instant::now();
        let topo = &self.topo;
        let mut sets = Vec::new();
        for z in &self.zones {
            let targets: Vec<usize> = (0..z.topo_index.len()).collect();
            let set = z.fleet.expect(&targets, |i| {
                let want = Arc::new(expected(topo, z.topo_index[i] / topo.replicas));
                Arc::new(move |c: &Config| c.complete(&want, true)) as Check
            });
            z.fleet.connect(targets.iter().copied());
            sets.push((set, targets));
        }
        let waits = self.zones.iter().zip(&sets).map(|(z, (set, targets))| {
            z.fleet
                .wait(set, targets, origin, self.opts.timeout, move |p, st| {
                    st.config.describe_gap(&expected(
                        topo,
                        z.topo_index[p.member.index] / topo.replicas,
                    ))
                })
        });
        let mut times = Vec::new();
        for (z, r) in self
            .zones
            .iter()
            .zip(futures::future::join_all(waits).await)
        {
            times.extend(r.with_context(|| format!("proxies of {}", z.name))?);
        }
        let mut phase = Phase::new("connect (all zones)");
        phase.add_round(times, origin.elapsed(), before, self.global.sample());
        self.report.phases.push(phase);
        for z in &self.zones {
            z.fleet.clear_goals();
        }
        Ok(())
    }

    /// Time until global holds every zone's Dataplanes; then global's memory per Dataplane.
    async fn initial_sync(&mut self) -> anyhow::Result<()> {
        let origin = Instant::now();
        let mesh = self.opts.mesh.clone();
        let mut total = 0;
        for z in &self.zones {
            let want = z.topo_index.len();
            poll(
                &format!("global holding the {want} Dataplanes of {}", z.name),
                self.opts.timeout,
                || async {
                    (global_count(&self.global, &mesh, &z.name).await.ok()? == want).then_some(())
                },
            )
            .await?;
            total += want;
        }
        self.figures.initial_sync_s = origin.elapsed().as_secs_f64();
        self.figures.dataplanes_synced = total;
        tokio::time::sleep(self.opts.settle).await;
        let synced = self.global.sample();
        self.report.cp_connected = synced;
        if let (Some(b), Some(s)) = (self.report.cp_baseline, synced) {
            let bytes = s.rss_bytes as f64 - b.rss_bytes as f64;
            self.figures.global_rss_synced_mib = s.rss_mib();
            self.figures.global_kib_per_dataplane = bytes / 1024.0 / total.max(1) as f64;
            self.report.rss_per_proxy_mib = Some(bytes / (1024.0 * 1024.0) / total.max(1) as f64);
        }
        Ok(())
    }

    /// Waits until every CP (global and the zones) used less than 2% of a core over the
    /// last 12 seconds (the other scenarios' rule, per CP), at most `limit`; how long it took.
    async fn quiesce(&self, limit: Duration) -> Duration {
        const WINDOW: usize = 12;
        let start = Instant::now();
        let sample = |run: &Self| -> Vec<Option<f64>> {
            std::iter::once(&run.global)
                .chain(run.zones.iter().map(|z| &z.cp))
                .map(|cp| cp.sample().map(|s| s.cpu_seconds))
                .collect()
        };
        let mut samples = std::collections::VecDeque::new();
        samples.push_back(sample(self));
        while start.elapsed() < limit {
            tokio::time::sleep(Duration::from_secs(1)).await;
            samples.push_back(sample(self));
            if samples.len() > WINDOW + 1 {
                samples.pop_front();
            }
            if samples.len() < WINDOW + 1 {
                continue;
            }
            let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
                break;
            };
            let quiet = first.iter().zip(last).all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => b - a < 0.02 * WINDOW as f64,
                _ => true,
            });
            if quiet {
                break;
            }
        }
        start.elapsed()
    }

    /// `rounds` times: a Dataplane of a service of zone A is created on zone A's API, then
    /// deleted; time until every consumer in the other zones has zone A's ingress with the
    /// service's new instance count as its weight.
    async fn cross_zone(&mut self) -> anyhow::Result<()> {
        let mesh = self.opts.mesh.clone();
        let topo = self.topo.clone();
        let n = topo.proxies();
        let mut add = Phase::new("cross-zone add (PUT Dataplane)");
        let mut remove = Phase::new("cross-zone remove (DELETE)");
        for k in 0..self.opts.rounds {
            let t = change_target(&topo, k);
            let home = zone_of(t);
            let svc = Topology::service_name(t);
            let member = topo.extra(n + k, t, k);
            let path = format!("/meshes/{mesh}/dataplanes/{}", member.name);
            let consumers = topo.consumers_of(t);
            // Per other zone: its consumers of `t` (fleet indices).
            let targets: Vec<(usize, Vec<usize>)> = (0..ZONES)
                .filter(|&z| z != home)
                .map(|z| (z, self.zones[z].proxies_of(&topo, &consumers)))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            if targets.is_empty() {
                bail!(
                    "round {k}: {svc} has no consumer outside {}",
                    zone_name(home)
                );
            }
            for (phase, instances, present) in [
                (&mut add, topo.replicas + 1, true),
                (&mut remove, topo.replicas, false),
            ] {
                let sets: Vec<_> = targets
                    .iter()
                    .map(|(z, idx)| {
                        let want = endpoints_for(&topo, *z, t, instances).into_iter().collect();
                        self.zones[*z]
                            .fleet
                            .expect(idx, |_| endpoints_are(&svc, &want))
                    })
                    .collect();
                let before = self.global.sample();
                let timeouts: u64 = self
                    .zones
                    .iter()
                    .map(|z| z.fleet.init_fetch_timeouts())
                    .sum();
                let origin = Instant::now();
                let zone_cp = &self.zones[home].cp;
                if present {
                    zone_cp.put(&path, &member.dataplane).await?;
                } else {
                    zone_cp.delete(&path).await?;
                }
                let waits = targets.iter().zip(&sets).map(|((z, idx), set)| {
                    let svc = svc.clone();
                    self.zones[*z]
                        .fleet
                        .wait(set, idx, origin, self.opts.timeout, move |_, st| {
                            format!(
                                "{svc}: {:?}; {}",
                                st.config.active_endpoints_of(&svc),
                                st.config.describe_warming().join("; ")
                            )
                        })
                });
                let mut times = Vec::new();
                for r in futures::future::join_all(waits).await {
                    times.extend(r.with_context(|| {
                        format!(
                            "round {k}: {} {} in {} ({svc} weight {instances})",
                            if present { "adding" } else { "removing" },
                            member.name,
                            zone_name(home)
                        )
                    })?);
                }
                phase.add_round(times, origin.elapsed(), before, self.global.sample());
                let after: u64 = self
                    .zones
                    .iter()
                    .map(|z| z.fleet.init_fetch_timeouts())
                    .sum();
                phase.init_fetch_timeouts += after - timeouts;
                for z in &self.zones {
                    z.fleet.clear_goals();
                }
            }
        }
        self.report.phases.push(add);
        self.report.phases.push(remove);
        Ok(())
    }

    /// SIGKILL global, create one Dataplane in each zone meanwhile, restart global on the
    /// same store; time until global's Dataplane count of each zone equals the zone's own.
    async fn resync(&mut self) -> anyhow::Result<()> {
        let mesh = self.opts.mesh.clone();
        // The run's end figures of global are those of the process measured so far.
        self.report.cp_end = self.global.sample();
        self.global.kill();
        let mut want = Vec::new();
        for z in &self.zones {
            let name = format!("resync-marker-{}", z.name);
            let dp = json!({"type": "Dataplane", "mesh": mesh, "name": name,
                "networking": {"address": "127.9.0.1", "inbound": [
                    {"port": 9000, "servicePort": 9001,
                     "tags": {"kuma.io/service": "resync-marker", "kuma.io/protocol": "tcp"}}]}});
            z.cp.put(&format!("/meshes/{mesh}/dataplanes/{name}"), &dp)
                .await
                .with_context(|| format!("PUT {name} on {}", z.name))?;
            want.push(local_count(&z.cp, &mesh).await?);
        }
        let origin = Instant::now();
        self.global.respawn().await.context("restarting global")?;
        self.figures.global_restart_ready_s = origin.elapsed().as_secs_f64();
        // One check at a time, round robin over the zones not synced yet.
        let mut synced: Vec<Option<Duration>> = vec![None; self.zones.len()];
        while synced.iter().any(Option::is_none) {
            if origin.elapsed() > self.opts.timeout {
                let missing: Vec<&str> = self
                    .zones
                    .iter()
                    .zip(&synced)
                    .filter(|(_, s)| s.is_none())
                    .map(|(z, _)| z.name.as_str())
                    .collect();
                bail!(
                    "global did not hold the Dataplanes of {missing:?} again within {:?}",
                    self.opts.timeout
                );
            }
            for (i, z) in self.zones.iter().enumerate() {
                if synced[i].is_none()
                    && global_count(&self.global, &mesh, &z.name).await.ok() == Some(want[i])
                {
                    synced[i] = Some(origin.elapsed());
                }
            }
            tokio::time::sleep(POLL).await;
        }
        let times: Vec<Duration> = synced.into_iter().flatten().collect();
        self.figures.resync_s = times.iter().map(Duration::as_secs_f64).collect();
        let mut phase = Phase::new("resync after global restart");
        let wall = times.iter().max().copied().unwrap_or_default();
        phase.add_round(times, wall, None, self.global.sample());
        self.report.phases.push(phase);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Service `s` lives in zone `s % 3`; a proxy reaches a service of another zone through
    /// that zone's ingress weighted by the instances, a local one through its replicas.
    #[test]
    fn layout_and_expected_endpoints() {
        let topo = Topology::new("default", 6, 5, 3).unwrap();
        assert_eq!((0..6).map(zone_of).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
        let want = expected(&topo, 0);
        assert_eq!(want.listeners, 4 + 1);
        let svc1: Vec<&str> = want.clusters["svc-1"].iter().map(String::as_str).collect();
        assert_eq!(svc1, ["127.0.0.1:30002 w=5"]);
        let svc2: Vec<&str> = want.clusters["svc-2"].iter().map(String::as_str).collect();
        assert_eq!(svc2, ["127.0.0.1:30003 w=5"]);
        assert_eq!(want.clusters["svc-3"], topo.endpoints_of(3));
        // An added instance in zone-2 changes what zone-1 and zone-3 see.
        assert_eq!(endpoints_for(&topo, 0, 4, 6), ["127.0.0.1:30002 w=6"]);
        assert_eq!(endpoints_for(&topo, 2, 4, 6), ["127.0.0.1:30002 w=6"]);
        // A single instance has weight 1, which is recorded without a suffix.
        assert_eq!(endpoints_for(&topo, 0, 1, 1), ["127.0.0.1:30002"]);
        assert_eq!(zone_name(2), "zone-3");
    }
}
