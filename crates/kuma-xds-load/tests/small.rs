//! The load harness at small scale (50 proxies: 10 services × 5 replicas, fan-out 3) against
//! the debug `kuma-cp`, every scenario, so the harness cannot rot. Each scenario itself waits
//! for the exact expected configuration of every affected proxy (complete config with exact
//! endpoint sets and secrets; the added/removed endpoint; the new RBAC principal; a
//! certificate signed by the new CA) and fails otherwise; these tests assert that it succeeded,
//! that every affected proxy was counted and that no cluster or listener stayed warming until
//! Envoy's 15 s `init_fetch_timeout`. No timing is asserted.
//!
//! Needs the binaries: `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kuma_xds_load::report::Report;
use kuma_xds_load::scenario::{self, Options, Scenario, Via};

const SERVICES: usize = 10;
const REPLICAS: usize = 5;
const FANOUT: usize = 3;
const PROXIES: usize = SERVICES * REPLICAS;
const ROUNDS: usize = 2;

/// The built `kuma-cp` (debug first), as crates/e2e locates binaries; panics when missing
/// (tests never skip silently).
fn kuma_cp() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("kuma-cp");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "kuma-cp not found under {}: run `cargo build --workspace --bins` first",
        target.display()
    );
}

fn options() -> Options {
    let mut o = Options {
        services: SERVICES,
        replicas: REPLICAS,
        fanout: FANOUT,
        // Two HTTP/2 connections: sharing is exercised.
        streams_per_connection: 25,
        rounds: ROUNDS,
        idle: Duration::from_secs(2),
        settle: Duration::from_millis(200),
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    o.cp.binary = Some(kuma_cp());
    o
}

/// Runs a scenario; also asserts that no warming cluster or listener timed out (the CP sent
/// every EDS/SDS resource a changed cluster or listener depends on, as Envoy needs).
async fn run(scenario: Scenario, opts: Options) -> Report {
    match scenario::run(scenario, opts).await {
        Ok(r) => {
            eprintln!("{}", r.table());
            assert_eq!(r.init_fetch_timeouts, 0, "warming timed out");
            r
        }
        Err(e) => panic!("{e:#}"),
    }
}

fn phase<'a>(r: &'a Report, prefix: &str) -> &'a kuma_xds_load::report::Phase {
    r.phases
        .iter()
        .find(|p| p.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no phase {prefix} in {:?}", r.phases))
}

fn assert_connected(r: &Report) {
    let c = phase(r, "connect");
    assert_eq!(c.proxies, PROXIES, "every proxy converged");
    assert_eq!(c.latency.samples, PROXIES);
    assert!(r.cp_baseline.is_some() && r.cp_connected.is_some());
    assert!(r.rss_per_proxy_mib.is_some());
    let res = r.resources_per_proxy.expect("resources per proxy");
    assert_eq!(
        res.listeners,
        (1 + FANOUT + kuma_xds_load::topology::ADMIN_LISTENERS) as f64,
        "inbound + outbounds + kuma:envoy:admin"
    );
    assert_eq!(res.endpoint_sets, FANOUT as f64);
    assert_eq!(res.endpoints, (FANOUT * REPLICAS) as f64);
    assert!(r.connect_kib_per_proxy.is_some_and(|k| k > 0.0));
    assert!(c.received_bytes > 0);
    assert!(r.dp_tokens, "the CP requires dataplane tokens by default");
    assert!(
        r.connections >= 2,
        "50 streams over 2 connections (plus extras)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_reconnect_sotw() {
    let r = run(Scenario::Connect, options()).await;
    assert_connected(&r);
    let reconnect = phase(&r, "reconnect");
    assert_eq!(
        reconnect.rounds, ROUNDS,
        "one phase round per reconnect wave"
    );
    assert_eq!(reconnect.proxies, PROXIES * ROUNDS);
    assert_eq!(reconnect.cp_rss_mib_rounds.len(), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_reconnect_delta_without_tokens() {
    let mut o = options();
    o.delta = true;
    o.cp.env
        .push(("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE".into(), "none".into()));
    let r = run(Scenario::Connect, o).await;
    assert!(!r.dp_tokens);
    assert_eq!(phase(&r, "connect").proxies, PROXIES);
    assert_eq!(phase(&r, "reconnect").proxies, PROXIES * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_change_through_a_new_proxy() {
    let r = run(Scenario::EndpointChange, options()).await;
    assert_connected(&r);
    // Each change reaches the replicas of the FANOUT services consuming the changed one.
    let consumers = FANOUT * REPLICAS * ROUNDS;
    assert_eq!(phase(&r, "endpoint add").proxies, consumers);
    assert_eq!(phase(&r, "endpoint remove").proxies, consumers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_change_through_the_api_delta() {
    let mut o = options();
    o.via = Via::Api;
    o.delta = true;
    let r = run(Scenario::EndpointChange, o).await;
    let consumers = FANOUT * REPLICAS * ROUNDS;
    assert_eq!(phase(&r, "endpoint add").proxies, consumers);
    assert_eq!(phase(&r, "endpoint remove").proxies, consumers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change() {
    let r = run(Scenario::PolicyChange, options()).await;
    assert_connected(&r);
    assert_eq!(phase(&r, "policy apply").proxies, PROXIES * ROUNDS);
    assert_eq!(phase(&r, "policy delete").proxies, PROXIES * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_change() {
    let r = run(Scenario::CaChange, options()).await;
    assert_connected(&r);
    // ca-1 → ca-2 → ca-1: every proxy got a certificate of the new CA each time (the
    // scenario also checks that every identity is distinct).
    assert_eq!(phase(&r, "CA backend switch").proxies, PROXIES * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle() {
    let r = run(Scenario::Idle, options()).await;
    assert_connected(&r);
    let idle = r.idle.expect("idle figures");
    assert!(idle.seconds >= 2.0);
    assert!(r.quiesce_s.is_some_and(|q| q > 0.0));
    assert!(idle.cp_cpu_s.is_finite());
}

fn transparent() -> Options {
    let mut o = options();
    o.transparent = true;
    o
}

/// A transparent proxy's complete configuration, as counted by the harness: the inbound,
/// two VIP listeners per service, the capture, DNS and admin listeners; a cluster per service.
fn assert_transparent_connected(r: &Report) {
    assert!(r.topology.transparent);
    assert_eq!(phase(r, "connect").proxies, PROXIES);
    let res = r.resources_per_proxy.expect("resources per proxy");
    assert_eq!(
        res.listeners,
        (1 + 2 * SERVICES + 3 + 1) as f64,
        "+ kuma:envoy:admin"
    );
    assert_eq!(
        res.endpoint_sets, SERVICES as f64,
        "every service, its own too"
    );
    assert_eq!(res.endpoints, PROXIES as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_proxies_endpoint_change() {
    let r = run(Scenario::EndpointChange, transparent()).await;
    assert_transparent_connected(&r);
    // Every transparent proxy consumes every service.
    let add = phase(&r, "endpoint add");
    assert_eq!(add.proxies, PROXIES * ROUNDS);
    assert!(add.received_bytes > 0);
    assert_eq!(phase(&r, "endpoint remove").proxies, PROXIES * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_proxies_get_a_new_service_vip() {
    let r = run(Scenario::NewService, transparent()).await;
    assert_transparent_connected(&r);
    assert_eq!(phase(&r, "new service").proxies, PROXIES * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_proxies_new_service_through_the_api_delta() {
    let mut o = transparent();
    o.via = Via::Api;
    o.delta = true;
    let r = run(Scenario::NewService, o).await;
    assert_eq!(phase(&r, "new service").proxies, PROXIES * ROUNDS);
}

#[tokio::test]
async fn new_service_needs_transparent_proxies() {
    let e = scenario::run(Scenario::NewService, options())
        .await
        .expect_err("no VIP outbounds without transparent proxying");
    assert!(format!("{e:#}").contains("--transparent-proxy"), "{e:#}");
}
