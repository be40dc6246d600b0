//! Observability end to end with a real Prometheus (Debian's package): it discovers every
//! proxy through the CP's `GET /http_sd` (a stock `http_sd_configs`, no `kuma_sd`), scrapes
//! each one's `kuma:metrics:prometheus` listener (Envoy's stats through kuma-dp's metrics
//! hijacker, merged with the application's own metrics when the Dataplane asks for it), and
//! follows proxies that come and go.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::prometheus::Prometheus;
use e2e::{ControlPlane, DataplaneProc, DpSpec, Workload, free_port, wait_for};
use serde_json::json;

const JOB: &str = "kuma-dataplanes";

/// A Dataplane of `service` on its own loopback address (every proxy's metrics listener is
/// on `<address>:5670`, as on separate hosts).
fn spec<'a>(name: &'a str, address: &'a str, service: &'a str, workload: u16) -> DpSpec<'a> {
    DpSpec {
        name,
        address,
        inbounds: vec![(free_port(), workload, service, "http")],
        ..Default::default()
    }
}

fn scrape_config(http_sd: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n\
         - job_name: {JOB}\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
         \x20 http_sd_configs:\n  - url: {http_sd}\n    refresh_interval: 1s\n\
         \x20 relabel_configs:\n\
         \x20 - source_labels: [__meta_kuma_mesh]\n    target_label: mesh\n\
         \x20 - source_labels: [__meta_kuma_service]\n    target_label: service\n\
         \x20 - source_labels: [__meta_kuma_dataplane]\n    target_label: dataplane\n"
    )
}

/// The dataplanes Prometheus scrapes successfully (`up`), by their relabelled name.
fn up_targets(prom: &Prometheus) -> BTreeSet<String> {
    prom.targets(JOB)
        .iter()
        .filter(|t| t.health == "up")
        .map(|t| t.label("dataplane").to_string())
        .collect()
}

/// Every dataplane Prometheus knows about, up or not.
fn known_targets(prom: &Prometheus) -> BTreeSet<String> {
    prom.targets(JOB)
        .iter()
        .map(|t| t.label("dataplane").to_string())
        .collect()
}

/// The dataplanes with a sample of `metric` in Prometheus, each with its `service` label
/// and value.
fn series(prom: &Prometheus, metric: &str) -> Vec<(String, String, String, f64)> {
    let mut out: Vec<_> = prom
        .query(metric)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s.label("dataplane").to_string(),
                s.label("mesh").to_string(),
                s.label("service").to_string(),
                s.value,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn prometheus_discovers_scrapes_and_follows_every_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (code, body) = cp.put(
        "/meshes/default",
        &json!({
            "type": "Mesh",
            "name": "default",
            "metrics": {
                "enabledBackend": "prometheus-1",
                "backends": [{"name": "prometheus-1", "type": "prometheus", "conf": {"skipMTLS": true}}]
            }
        }),
    );
    assert!(code == 200 || code == 201, "mesh: {code} {body}");

    let app_metrics = Workload::http_body(
        "# HELP app_orders_total Orders taken by the application.\n\
         # TYPE app_orders_total counter\n\
         app_orders_total{shop=\"main\"} 42\n",
    );
    let w1 = Workload::http("backend-1");
    let w2 = Workload::http("backend-2");
    let w3 = Workload::http("web-1");
    let aggregate = format!(
        "metrics:\n  type: prometheus\n  conf:\n    aggregate:\n    - name: app\n      \
         address: 127.0.0.1\n      port: {}\n      path: /metrics\n",
        app_metrics.port
    );
    let b1 = DataplaneProc::start(
        &cp,
        &DpSpec {
            extra_yaml: &aggregate,
            ..spec("backend-1", "127.0.1.1", "backend", w1.port)
        },
        dir.path(),
    );
    let mut b2 = DataplaneProc::start(
        &cp,
        &spec("backend-2", "127.0.1.2", "backend", w2.port),
        dir.path(),
    );
    DataplaneProc::wait_live(&[&b1, &b2]);

    let started = Instant::now();
    let prom = Prometheus::start(
        dir.path(),
        &scrape_config(&format!("http://{}/http_sd", cp.mads)),
    );
    let both: BTreeSet<String> = ["backend-1", "backend-2"].map(String::from).into();
    wait_for(
        "Prometheus scraping both proxies",
        Duration::from_secs(30),
        || (up_targets(&prom) == both).then_some(()),
    );
    println!(
        "both proxies discovered and scraped {} ms after Prometheus started",
        started.elapsed().as_millis()
    );
    for t in prom.targets(JOB) {
        assert_eq!(t.label("mesh"), "default", "{t:?}");
        assert_eq!(t.label("service"), "backend", "{t:?}");
        assert!(t.address.ends_with(":5670"), "{t:?}");
        assert_eq!(
            t.discovered
                .get("__meta_kuma_label_kuma_io_service")
                .and_then(|v| v.as_str()),
            Some("backend"),
            "{t:?}"
        );
    }

    // Envoy's own metric, one series per proxy, with the labels relabelling made.
    let live = wait_for(
        "envoy_server_live from both proxies",
        Duration::from_secs(15),
        || {
            let s = series(&prom, "envoy_server_live");
            (s.len() == 2).then_some(s)
        },
    );
    assert_eq!(
        live,
        vec![
            ("backend-1".into(), "default".into(), "backend".into(), 1.0),
            ("backend-2".into(), "default".into(), "backend".into(), 1.0),
        ]
    );
    // The application's metric, merged by backend-1's hijacker only.
    let app = wait_for("the application's metric", Duration::from_secs(15), || {
        let s = series(&prom, "app_orders_total{shop=\"main\"}");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(
        app,
        vec![("backend-1".into(), "default".into(), "backend".into(), 42.0)]
    );

    // A proxy started later is discovered and scraped.
    let joined = Instant::now();
    let web = DataplaneProc::start(&cp, &spec("web-1", "127.0.1.3", "web", w3.port), dir.path());
    DataplaneProc::wait_live(&[&web]);
    wait_for("web-1 scraped", Duration::from_secs(30), || {
        series(&prom, "envoy_server_live")
            .iter()
            .any(|(dp, _, svc, v)| dp == "web-1" && svc == "web" && *v == 1.0)
            .then_some(())
    });
    println!(
        "a new proxy scraped {} ms after its kuma-dp started",
        joined.elapsed().as_millis()
    );

    // A stopped proxy disappears from the targets once its Dataplane is gone.
    let stopped = Instant::now();
    b2.proc.terminate(Duration::from_secs(10));
    wait_for(
        "backend-2 gone from Prometheus' targets",
        Duration::from_secs(30),
        || (!known_targets(&prom).contains("backend-2")).then_some(()),
    );
    println!(
        "a stopped proxy left the targets {} ms after its kuma-dp was stopped",
        stopped.elapsed().as_millis()
    );
    let left: BTreeSet<String> = ["backend-1", "web-1"].map(String::from).into();
    assert_eq!(up_targets(&prom), left);
}

/// Turning the Mesh's Prometheus backend on and off is a config change on every proxy (a
/// listener and a cluster added, then removed): traffic through a proxy keeps flowing while it
/// happens, every request is counted, and Envoy neither rejects an update nor waits out an
/// initial fetch timeout.
#[test]
fn metrics_backend_on_and_off_under_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let backend_app = Workload::http("backend-1");
    let web_app = Workload::http("web-1");
    let backend = DataplaneProc::start(
        &cp,
        &spec("backend-1", "127.0.1.11", "backend", backend_app.port),
        dir.path(),
    );
    let outbound = free_port();
    let web = DataplaneProc::start(
        &cp,
        &DpSpec {
            outbounds: vec![(outbound, "backend")],
            ..spec("web-1", "127.0.1.12", "web", web_app.port)
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&backend, &web]);
    wait_for(
        "traffic through web-1's outbound",
        Duration::from_secs(15),
        || (e2e::status_via(outbound) == 200).then_some(()),
    );
    let load = e2e::Load::start(Duration::from_millis(10), move || {
        match e2e::status_via(outbound) {
            200 => None,
            code => Some(format!("status {code}")),
        }
    });
    let proxies = [&backend, &web];
    let listeners = |want: bool| {
        proxies
            .iter()
            .all(|p| p.active_listener_named("kuma:metrics:prometheus").is_some() == want)
    };
    let mesh = |metrics: Option<serde_json::Value>| {
        let mut m = json!({"type": "Mesh", "name": "default"});
        if let Some(metrics) = metrics {
            m["metrics"] = metrics;
        }
        let (code, body) = cp.put("/meshes/default", &m);
        assert!(code == 200 || code == 201, "mesh: {code} {body}");
    };
    let on = Instant::now();
    mesh(Some(json!({"enabledBackend": "prom", "backends": [
        {"name": "prom", "type": "prometheus", "conf": {"skipMTLS": true}}]})));
    wait_for(
        "both proxies' metrics listeners",
        Duration::from_secs(15),
        || listeners(true).then_some(()),
    );
    println!(
        "metrics listeners on both proxies {} ms after the PUT",
        on.elapsed().as_millis()
    );
    let (code, body) = e2e::http("GET", "127.0.1.11:5670".parse().unwrap(), "/metrics", None)
        .expect("a scrape of backend-1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("envoy_server_live"), "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let off = Instant::now();
    mesh(None);
    wait_for(
        "the metrics listeners gone",
        Duration::from_secs(15),
        || listeners(false).then_some(()),
    );
    println!(
        "metrics listeners gone {} ms after the PUT",
        off.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (sent, failed, errors) = load.stop();
    println!("requests during the change: {sent} sent, {failed} failed");
    assert!(sent >= 20, "only {sent} requests were made");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed: {errors:?}");
    for p in proxies {
        assert_eq!(
            p.xds_trouble(),
            Some(0),
            "{}: init_fetch_timeout / update_rejected",
            p.name
        );
    }
}
