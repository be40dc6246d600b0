//! The metrics hijacker with a real Envoy: `kuma-dp run` against a stand-in control plane
//! whose bootstrap gives Envoy what Kuma's control plane generates for a Prometheus backend —
//! the `kuma:metrics:prometheus` listener routed to the `kuma:metrics:hijacker` cluster on
//! kuma-dp's socket — plus two hashed clusters of one service (`backend-<16 hex>`) and an
//! HTTP listener splitting traffic between them. The response's
//! `kumaSidecarConfiguration.metrics.aggregate` names an application serving its own metrics.
//! A scrape through Envoy's listener (and one on the socket directly) must hold Envoy's stats
//! in the Prometheus format, merged and marked as Kuma does, and the application's metrics.
//!
//! Envoy must be found (`ENVOY_BIN`, the workspace `.venv`, or PATH); the test fails otherwise.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::routing::{get, post};
use base64::Engine as _;
use kuma_dp::envoy::admin;
use serde_json::json;

const DATAPLANE: &str = "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 8080\n    tags:\n      kuma.io/service: web\n";

/// Envoy's bootstrap (JSON), in the shape Kuma's control plane gives the two metrics resources.
fn bootstrap(admin: u16, prometheus: u16, outbound: u16, app: u16, socket: &Path) -> String {
    let endpoint = |address: serde_json::Value| json!({"endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]});
    let backend = |name: &str| {
        let mut load_assignment =
            endpoint(json!({"socket_address": {"address": "127.0.0.1", "port_value": app}}));
        load_assignment["cluster_name"] = json!(name);
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": load_assignment})
    };
    let listener = |name: &str, port: u16, prefix: &str, route: serde_json::Value| {
        json!({
            "name": name,
            "traffic_direction": "INBOUND",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": prefix,
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    "route_config": {"validate_clusters": false, "virtual_hosts": [
                        {"name": name, "domains": ["*"], "routes": [route]}
                    ]}
                }
            }]}]
        })
    };
    let mut hijacker = endpoint(json!({"pipe": {"path": socket}}));
    hijacker["cluster_name"] = json!("kuma:metrics:hijacker");
    json!({
        "node": {"id": "default.dp-1", "cluster": "web"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [
                {"name": "kuma:metrics:hijacker", "type": "STATIC", "connect_timeout": "5s",
                 "alt_stat_name": "kuma_metrics_hijacker", "load_assignment": hijacker},
                backend("backend-0123456789abcdef"),
                backend("backend-fedcba9876543210"),
            ],
            "listeners": [
                listener("kuma:metrics:prometheus", prometheus, "kuma_metrics_prometheus", json!(
                    {"match": {"prefix": "/metrics"},
                     "route": {"cluster": "kuma:metrics:hijacker", "prefix_rewrite": "/"}})),
                listener("outbound:backend", outbound, "outbound_backend", json!(
                    {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                        {"name": "backend-0123456789abcdef", "weight": 50},
                        {"name": "backend-fedcba9876543210", "weight": 50}
                    ]}}})),
            ]
        }
    })
    .to_string()
}

/// The application: answers traffic on `/` and serves its own metrics on `/metrics`.
async fn application() -> u16 {
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    "# HELP app_orders_total Orders taken.\n# TYPE app_orders_total counter\napp_orders_total{shop=\"main\"} 7\n",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(axum::serve(listener, app).into_future());
    port
}

/// The stand-in control plane: `/bootstrap` returns `bootstrap` and the aggregate list.
async fn control_plane(bootstrap: String, app: u16) -> String {
    let router = Router::new()
        .route(
            "/bootstrap",
            post(move || {
                let bootstrap = bootstrap.clone();
                async move {
                    serde_json::json!({
                        "bootstrap": base64::engine::general_purpose::STANDARD.encode(bootstrap),
                        "kumaSidecarConfiguration": {
                            "networking": {"address": "127.0.0.1"},
                            "metrics": {"aggregate": [
                                {"name": "app", "address": "127.0.0.1", "port": app, "path": "/metrics"}
                            ]}
                        }
                    })
                    .to_string()
                }
            }),
        )
        .route("/readiness", post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router).into_future());
    url
}

fn tcp(port: u16) -> admin::Client {
    admin::Client::new(
        admin::Address::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        Duration::from_secs(5),
    )
}

/// The line of `body` for series `series` (name and labels as written), or a panic showing
/// the body.
fn value_of<'a>(body: &'a str, series: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_stats_and_application_metrics_through_envoys_prometheus_listener() {
    let dir = tempfile::tempdir().unwrap();
    let work_dir = dir.path().join("work");
    let socket = kuma_dp::metrics::socket_path(&work_dir, "dp-1", "default");
    let app = application().await;
    let (admin_port, prometheus, outbound) = (e2e::free_port(), e2e::free_port(), e2e::free_port());
    let cp = control_plane(
        bootstrap(admin_port, prometheus, outbound, app, &socket),
        app,
    )
    .await;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuma-dp"));
    cmd.args(["run", "--cp-address", &cp, "--dataplane", DATAPLANE])
        .arg("--work-dir")
        .arg(&work_dir)
        .arg("--binary-path")
        .arg(e2e::envoy())
        .args(["--readiness-port", "0", "--drain-time", "0s"])
        .arg(format!("--dns-coredns-port={}", e2e::free_port()));
    for (key, _) in std::env::vars() {
        if key.starts_with("KUMA_") {
            cmd.env_remove(key);
        }
    }
    let mut dp = e2e::Proc::spawn("kuma-dp", cmd, dir.path().join("kuma-dp.log")).unwrap();

    // Scraped through Envoy's listener, as Prometheus does, once Envoy serves it.
    let scraper = tcp(prometheus);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((status, body)) = scraper.request(hyper::Method::GET, "/metrics").await
            && status == 200
            && body.contains("envoy_server_live")
        {
            break;
        }
        assert!(
            dp.try_wait().is_none(),
            "kuma-dp exited:\n{}",
            dp.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "no metrics through Envoy within 30 s:\n{}",
            dp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Traffic to one service split over its two hashed clusters.
    let client = tcp(outbound);
    for _ in 0..6 {
        let (status, body) = client.request(hyper::Method::GET, "/").await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "hello\n"));
    }

    let (status, body) = scraper
        .request(hyper::Method::GET, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Envoy's stats in the Prometheus format, rewritten as Kuma does.
    assert_eq!(value_of(&body, "envoy_server_live"), "1");
    assert_eq!(
        value_of(
            &body,
            "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\",kuma_io_mesh_traffic=\"true\"}"
        ),
        "6",
        "the two hashed clusters are one service:\n{body}"
    );
    assert!(!body.contains("backend-0123456789abcdef"), "{body}");
    assert!(!body.contains("backend-fedcba9876543210"), "{body}");
    value_of(
        &body,
        "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"kuma_metrics_hijacker\"}",
    );
    assert!(
        !body.contains("envoy_cluster_name=\"kuma_metrics_hijacker\",kuma_io_mesh_traffic"),
        "{body}"
    );
    assert_eq!(
        value_of(
            &body,
            "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"outbound_backend\",kuma_io_mesh_traffic=\"true\"}"
        ),
        "6"
    );
    value_of(
        &body,
        "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"kuma_metrics_prometheus\"}",
    );
    // The application's metrics, as it served them.
    assert!(
        body.contains("# HELP app_orders_total Orders taken.\n# TYPE app_orders_total counter\napp_orders_total{shop=\"main\"} 7\n"),
        "{body}"
    );
    assert!(!body.contains("\n\n"), "{body}");

    // The socket directly (what Envoy's cluster connects to).
    let direct = admin::Client::new(admin::Address::Unix(socket.clone()), Duration::from_secs(5));
    let (status, body) = direct
        .request(hyper::Method::GET, "/?usedonly")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(value_of(&body, "envoy_server_live"), "1");
    assert!(
        body.contains("app_orders_total{shop=\"main\"} 7\n"),
        "{body}"
    );

    let status = dp
        .terminate(Duration::from_secs(20))
        .expect("kuma-dp stops");
    assert!(status.success(), "{status}:\n{}", dp.log_text());
    assert!(!socket.exists(), "the socket is removed on exit");
    assert!(work_dir.exists());
}
