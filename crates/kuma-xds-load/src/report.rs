//! Figures of a run: per phase the convergence times (p50/p90/p99/max over the affected
//! proxies) and the CP's CPU and memory; printed as a table or as JSON (`--json`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::procfs::Sample;
use crate::topology::Topology;

/// Distribution of per-proxy times, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `times`.
    pub fn of(times: &[Duration]) -> Self {
        if times.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[rank - 1]
        };
        Self {
            samples: ms.len(),
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// One measured phase of a scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// Rounds aggregated in this phase.
    pub rounds: usize,
    /// Proxies that had to converge, summed over rounds.
    pub proxies: usize,
    /// From the change to the last proxy converged (the worst round), in seconds.
    pub wall_s: f64,
    /// Per-proxy time from the change to its convergence.
    pub latency: Latency,
    /// Wall time of each round, seconds.
    pub wall_s_rounds: Vec<f64>,
    /// CPU seconds the CP used during the phase (all rounds).
    pub cp_cpu_s: f64,
    /// CPU seconds the CP used in each round.
    pub cp_cpu_s_rounds: Vec<f64>,
    /// CP resident memory at the end of the phase, MiB.
    pub cp_rss_mib: f64,
    /// CP resident memory after each round, MiB.
    pub cp_rss_mib_rounds: Vec<f64>,
    /// Warming clusters and listeners that timed out during the phase's rounds (Envoy's
    /// `init_fetch_timeout`, 15 s): their dependencies never arrived after them.
    pub init_fetch_timeouts: u64,
    /// Bytes of xDS responses the whole fleet received during the phase's rounds (encoded
    /// size of each response).
    pub received_bytes: u64,
    #[serde(skip)]
    times: Vec<Duration>,
}

impl Phase {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds one round: per-proxy times, its wall time and the CP samples around it.
    pub fn add_round(
        &mut self,
        times: Vec<Duration>,
        wall: Duration,
        before: Option<Sample>,
        after: Option<Sample>,
    ) {
        self.rounds += 1;
        self.proxies += times.len();
        self.wall_s = self.wall_s.max(wall.as_secs_f64());
        self.wall_s_rounds.push(wall.as_secs_f64());
        self.times.extend(times);
        self.latency = Latency::of(&self.times);
        if let (Some(b), Some(a)) = (before, after) {
            self.cp_cpu_s += a.cpu_seconds - b.cpu_seconds;
            self.cp_cpu_s_rounds.push(a.cpu_seconds - b.cpu_seconds);
            self.cp_rss_mib = a.rss_mib();
            self.cp_rss_mib_rounds.push(a.rss_mib());
        }
    }
}

/// Mean active resources per proxy (what Envoy would serve), by kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Resources {
    pub listeners: f64,
    pub clusters: f64,
    /// ClusterLoadAssignments of active EDS clusters.
    pub endpoint_sets: f64,
    /// Endpoints in those.
    pub endpoints: f64,
    pub secrets: f64,
    pub routes: f64,
}

/// CP usage with nothing changing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Idle {
    pub seconds: f64,
    pub cp_cpu_s: f64,
    /// Share of one core.
    pub cp_cpu_percent: f64,
    pub harness_cpu_s: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub topology: Topology,
    pub proxies: usize,
    pub delta: bool,
    pub streams_per_connection: usize,
    pub connections: usize,
    pub dp_tokens: bool,
    /// CP before any proxy connected (mesh, CA and permission in place).
    pub cp_baseline: Option<Sample>,
    /// CP with every proxy connected and configured (after a short settle).
    pub cp_connected: Option<Sample>,
    /// How long after the settle pause the CP took to go quiet (below 2% of a core over
    /// 12 s) before the scenario's changes began: work queued during the connect storm
    /// (insight writes), seconds. Not measured by `connect`.
    pub quiesce_s: Option<f64>,
    /// (connected − baseline) RSS / proxies, MiB.
    pub rss_per_proxy_mib: Option<f64>,
    /// Response bytes each proxy received until its configuration was complete (connect
    /// phase, mean), KiB.
    pub connect_kib_per_proxy: Option<f64>,
    /// Active resources per proxy once every proxy converged (connect phase, mean).
    pub resources_per_proxy: Option<Resources>,
    pub phases: Vec<Phase>,
    pub idle: Option<Idle>,
    pub cp_end: Option<Sample>,
    /// CPU seconds of this harness over the whole run.
    pub harness_cpu_s: f64,
    /// Warming clusters and listeners that timed out over the whole run, all proxies (Envoy's
    /// `cluster.<name>.init_fetch_timeout` / listener warming timeouts): 0 when the CP sends
    /// every EDS / SDS / RDS resource a changed cluster or listener depends on.
    pub init_fetch_timeouts: u64,
    /// The `multizone` scenario's own figures (there `cp_*` is global).
    pub multizone: Option<Multizone>,
    /// With `--cp-metrics`: the CP's `xds_delivery` histogram per part of the run and type.
    pub cp_delivery: Vec<crate::cpmetrics::Row>,
}

/// Figures of the `multizone` scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Multizone {
    /// Zone names, and per zone: proxies, its ingress's advertised port.
    pub zones: Vec<String>,
    pub proxies_per_zone: Vec<usize>,
    pub ingress_ports: Vec<u32>,
    /// From the last proxy configured until global held every zone's Dataplanes, seconds.
    pub initial_sync_s: f64,
    /// Dataplanes global holds after the initial sync.
    pub dataplanes_synced: usize,
    /// Global's RSS before any zone connected and after the sync (+ settle), MiB.
    pub global_rss_before_zones_mib: f64,
    pub global_rss_synced_mib: f64,
    /// (synced − before zones) / Dataplanes synced, KiB.
    pub global_kib_per_dataplane: f64,
    /// Global's RSS once every CP went quiet (before the changes), MiB, and (that − before
    /// zones) / Dataplanes synced, KiB.
    pub global_rss_quiet_mib: f64,
    pub global_kib_per_dataplane_quiet: f64,
    /// Zone CPs' RSS at the end, MiB.
    pub zone_rss_mib: Vec<f64>,
    /// Global restart: from the respawn to `/ready`, seconds.
    pub global_restart_ready_s: f64,
    /// Per zone, from the respawn until global's Dataplane count for the zone equals the
    /// zone's own (a Dataplane created in each zone while global was down included), seconds.
    pub resync_s: Vec<f64>,
    /// NACKs the proxies sent over the run.
    pub nacks: u64,
    /// ADS streams the proxies opened beyond their first (a stream the CP or the connection
    /// ended is reopened).
    pub reconnects: u64,
    /// Why streams ended (each proxy's last error), the most frequent first, with counts.
    pub stream_errors: Vec<(String, u64)>,
}

impl Multizone {
    fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "zones {:?}: proxies {:?}, ingress ports {:?} (CP below = global; its end = before the restart)",
            self.zones, self.proxies_per_zone, self.ingress_ports
        );
        let _ = writeln!(
            s,
            "initial Dataplane sync to global (after the last proxy was configured): {:.3} s; {} Dataplanes on global",
            self.initial_sync_s, self.dataplanes_synced
        );
        let _ = writeln!(
            s,
            "global RSS MiB: before zones {:.1}, synced {:.1}, quiet {:.1}; per synced Dataplane: {:.2} KiB (synced), {:.2} KiB (quiet); zone CPs RSS MiB at end: {:?}",
            self.global_rss_before_zones_mib,
            self.global_rss_synced_mib,
            self.global_rss_quiet_mib,
            self.global_kib_per_dataplane,
            self.global_kib_per_dataplane_quiet,
            self.zone_rss_mib
                .iter()
                .map(|m| (m * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
        let _ = writeln!(
            s,
            "global SIGKILL + restart: ready after {:.3} s; zones synced again after (s) {:?}",
            self.global_restart_ready_s,
            self.resync_s
                .iter()
                .map(|t| (t * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
        let _ = writeln!(
            s,
            "NACKs sent by proxies over the run: {}; streams reopened: {}",
            self.nacks, self.reconnects
        );
        for (e, n) in &self.stream_errors {
            let _ = writeln!(s, "  {n} proxies' last stream error: {e}");
        }
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let t = &self.topology;
        let _ = writeln!(
            s,
            "scenario {}: {} proxies ({} services x {} replicas, {}), {}, {} streams per connection ({} connections), dataplane tokens {}",
            self.scenario,
            self.proxies,
            t.services,
            t.replicas,
            if t.transparent {
                "transparent proxies: every service by its VIP".to_string()
            } else {
                format!("fan-out {}", t.fanout)
            },
            if self.delta { "delta xDS" } else { "SotW xDS" },
            self.streams_per_connection,
            self.connections,
            if self.dp_tokens { "on" } else { "off" },
        );
        let _ = writeln!(
            s,
            "{:<36} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "phase",
            "rounds",
            "proxies",
            "wall s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "CP cpu s",
            "timeouts",
            "MiB rcvd"
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "{:<36} {:>7} {:>8} {:>9.3} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>9} {:>10.1}",
                p.name,
                p.rounds,
                p.proxies,
                p.wall_s,
                p.latency.p50_ms,
                p.latency.p90_ms,
                p.latency.p99_ms,
                p.latency.max_ms,
                p.cp_cpu_s,
                p.init_fetch_timeouts,
                p.received_bytes as f64 / (1024.0 * 1024.0)
            );
        }
        if let Some(r) = &self.resources_per_proxy {
            let _ = writeln!(
                s,
                "per proxy once converged: {:.1} listeners, {:.1} clusters, {:.1} endpoint sets ({:.1} endpoints), {:.1} secrets, {:.1} routes; {} KiB received until complete",
                r.listeners,
                r.clusters,
                r.endpoint_sets,
                r.endpoints,
                r.secrets,
                r.routes,
                self.connect_kib_per_proxy
                    .map_or("n/a".to_string(), |k| format!("{k:.1}")),
            );
        }
        let _ = writeln!(
            s,
            "init_fetch_timeouts (warming clusters/listeners whose EDS/SDS/RDS did not arrive within 15 s), all proxies, whole run: {}",
            self.init_fetch_timeouts
        );
        if let Some(m) = &self.multizone {
            m.table(&mut s);
        }
        if !self.cp_delivery.is_empty() {
            crate::cpmetrics::table(&self.cp_delivery, &mut s);
        }
        if let Some(q) = self.quiesce_s {
            let _ = writeln!(
                s,
                "CP busy after the connect phase (until quiet, before the changes): {q:.1} s"
            );
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                s,
                "idle {:.0} s: CP {:.2} CPU s ({:.2}% of a core), harness {:.2} CPU s",
                i.seconds, i.cp_cpu_s, i.cp_cpu_percent, i.harness_cpu_s
            );
        }
        let mib =
            |x: &Option<Sample>| x.map_or("n/a".to_string(), |v| format!("{:.1}", v.rss_mib()));
        let _ = writeln!(
            s,
            "CP RSS MiB: baseline {}, connected {}, end {}; per connected proxy: {}",
            mib(&self.cp_baseline),
            mib(&self.cp_connected),
            mib(&self.cp_end),
            self.rss_per_proxy_mib
                .map_or("n/a".to_string(), |v| format!("{:.3} MiB", v)),
        );
        if let (Some(b), Some(e)) = (&self.cp_baseline, &self.cp_end) {
            let _ = writeln!(
                s,
                "CP CPU seconds over the run: {:.2}; harness: {:.2}",
                e.cpu_seconds - b.cpu_seconds,
                self.harness_cpu_s
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&times);
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(&[]).samples, 0);
    }
}
