use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::time::Instant;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};

use super::*;

#[test]
fn socket_path_follows_kumas_rule() {
    assert_eq!(
        socket_path(Path::new("/tmp"), "backend-01", "demo"),
        PathBuf::from("/tmp/kuma-mh-backend-01-demo.sock")
    );
    let long = "x".repeat(120);
    let path = socket_path(Path::new("/tmp/kuma-dp-abc"), &long, "default");
    let text = path.to_str().unwrap();
    assert_eq!(text.len(), 98 + ".sock".len());
    assert!(text.starts_with("/tmp/kuma-dp-abc/kuma-mh-xxxx"));
    assert!(text.ends_with("xxx.sock"));
}

#[test]
fn aggregates_from_the_bootstrap_response() {
    assert!(aggregates(&serde_json::json!({})).is_empty());
    assert!(aggregates(&serde_json::Value::Null).is_empty());
    assert!(aggregates(&serde_json::json!({"metrics": {"aggregate": []}})).is_empty());
    let sidecar = serde_json::json!({
        "networking": {"address": "10.0.0.1"},
        "metrics": {"aggregate": [
            {"name": "app", "address": "10.0.0.1", "port": 8080, "path": "/metrics"},
            {"name": "bad-port", "address": "10.0.0.1", "port": 70000, "path": "/m"},
            {"name": "zero", "address": "10.0.0.1", "port": 0, "path": "/m"},
            "not an object",
            {"name": "v6", "address": "::1", "port": 9090, "path": "/stats/prometheus"}
        ]}
    });
    assert_eq!(
        aggregates(&sidecar),
        vec![
            Aggregate {
                name: "app".into(),
                address: "10.0.0.1".into(),
                port: 8080,
                path: "/metrics".into()
            },
            Aggregate {
                name: "v6".into(),
                address: "::1".into(),
                port: 9090,
                path: "/stats/prometheus".into()
            },
        ]
    );
}

/// GET `target` on the UNIX socket `path` with `headers`; returns status, content type, body.
async fn get_unix(path: &Path, target: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(target).header(header::HOST, "x");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// What the fake Envoy admin and applications saw.
#[derive(Default)]
struct Seen {
    envoy: Vec<(String, HeaderMap)>,
    app: Vec<(String, HeaderMap)>,
}

const ENVOY_STATS: &str = "\
# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend-0123456789abcdef\"} 2
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend-fedcba9876543210\"} 3
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"ads_cluster\"} 1
# TYPE envoy_server_live gauge
envoy_server_live{} 1
";

/// Serves a fake Envoy admin on a UNIX socket in `dir` and returns its path.
fn fake_envoy(dir: &Path, seen: Arc<Mutex<Seen>>) -> PathBuf {
    let path = dir.join("admin.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let app = Router::new().route(
        "/stats",
        get(move |uri: axum::http::Uri, headers: HeaderMap| async move {
            seen.lock().unwrap().envoy.push((uri.to_string(), headers));
            ([(header::CONTENT_TYPE, "text/plain")], ENVOY_STATS)
        }),
    );
    tokio::spawn(axum::serve(listener, app).into_future());
    path
}

/// Serves fake applications on 127.0.0.1 and returns the port.
async fn fake_apps(seen: Arc<Mutex<Seen>>) -> u16 {
    let app = Router::new()
        .route(
            "/metrics",
            get(move |uri: axum::http::Uri, headers: HeaderMap| async move {
                seen.lock().unwrap().app.push((uri.to_string(), headers));
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    "# HELP app_orders_total Orders.\n# TYPE app_orders_total counter\napp_orders_total{shop=\"a\"} 42\n\n",
                )
            }),
        )
        .route(
            "/openmetrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    "# TYPE om_things counter\nom_things_total 5\n# EOF\n",
                )
            }),
        )
        .route(
            "/moved",
            get(|| async { axum::response::Redirect::permanent("/metrics") }),
        )
        .route(
            "/elsewhere",
            get(|| async { axum::response::Redirect::temporary("http://127.0.0.2:1/metrics") }),
        )
        .route(
            "/loop",
            get(|| async { axum::response::Redirect::temporary("/loop") }),
        )
        .route(
            "/broken",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "slow_metric 1\n"
            }),
        )
        .route(
            "/huge",
            get(|| async {
                let mut body = String::with_capacity(scrape::MAX_TARGET_BODY + 64);
                while body.len() <= scrape::MAX_TARGET_BODY {
                    body.push_str("huge_metric_with_a_rather_long_name{label=\"value\"} 1\n");
                }
                body.into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(axum::serve(listener, app).into_future());
    port
}

fn app(port: u16, path: &str) -> Target {
    Aggregate {
        name: path.trim_start_matches('/').into(),
        address: "127.0.0.1".into(),
        port,
        path: path.into(),
    }
    .target()
}

#[tokio::test]
async fn serves_envoy_merged_and_the_applications_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let admin = fake_envoy(dir.path(), seen.clone());
    let port = fake_apps(seen.clone()).await;
    let scraper = Scraper::new(
        vec![
            app(port, "/metrics"),
            app(port, "/broken"),
            Target::envoy(Endpoint::Unix(admin)),
        ],
        false,
    );
    let path = socket_path(dir.path(), "web-1", "default");
    let hijacker = Hijacker::bind(path.clone(), scraper).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stop = CancellationToken::new();
    let task = tokio::spawn(hijacker.run(stop.clone()));

    let (status, content_type, body) = get_unix(
        &path,
        "/?filter=cluster&usedonly",
        &[
            ("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1"),
            ("user-agent", "Prometheus/3.0.0"),
            ("x-prometheus-scrape-timeout-seconds", "3"),
            ("authorization", "Bearer secret"),
            ("x-other", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(
        body,
        "\
# HELP app_orders_total Orders.
# TYPE app_orders_total counter
app_orders_total{shop=\"a\"} 42
# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\",kuma_io_mesh_traffic=\"true\"} 5
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"ads_cluster\"} 1
# TYPE envoy_server_live gauge
envoy_server_live 1
"
    );
    {
        let seen = seen.lock().unwrap();
        let (uri, headers) = &seen.envoy[0];
        assert_eq!(
            uri,
            "/stats?filter=cluster&format=prometheus&text_readouts=&usedonly="
        );
        assert_eq!(headers["user-agent"], "Prometheus/3.0.0");
        assert_eq!(headers["accept"], "text/plain;version=0.0.4;q=1,*/*;q=0.1");
        assert_eq!(headers["x-prometheus-scrape-timeout-seconds"], "3");
        assert_eq!(headers["host"], "localhost");
        assert!(headers.get("authorization").is_none());
        assert!(headers.get("x-other").is_none());
        // The application gets no query, the same scrape headers, its own Host.
        let (uri, headers) = &seen.app[0];
        assert_eq!(uri, "/metrics");
        assert_eq!(headers["user-agent"], "Prometheus/3.0.0");
        assert_eq!(headers["host"], format!("127.0.0.1:{port}"));
        assert!(headers.get("authorization").is_none());
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "the socket is removed on exit");
}

#[tokio::test]
async fn openmetrics_from_an_application_makes_the_answer_openmetrics() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let admin = fake_envoy(dir.path(), seen.clone());
    let port = fake_apps(seen).await;
    let scraper = Scraper::new(
        vec![
            app(port, "/openmetrics"),
            Target::envoy(Endpoint::Unix(admin)),
        ],
        false,
    );
    let body = scraper.scrape(None, &HeaderMap::new()).await;
    assert_eq!(
        body.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(body.body).unwrap();
    assert!(
        text.starts_with("# TYPE om_things counter\nom_things_total 5\n# TYPE envoy_cluster"),
        "{text}"
    );
    assert!(text.ends_with("envoy_server_live 1\n# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
}

#[tokio::test]
async fn slow_and_absent_targets_contribute_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = fake_apps(seen).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let scraper = Scraper::new(
        vec![
            app(port, "/slow"),
            app(closed, "/metrics"),
            Target::envoy(Endpoint::Unix(dir.path().join("no-such.sock"))),
            app(port, "/metrics"),
        ],
        false,
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-prometheus-scrape-timeout-seconds", "1".parse().unwrap());
    let started = Instant::now();
    let scrape = scraper.scrape(None, &headers).await;
    let took = started.elapsed();
    // Concurrent, and bounded by the scraper's timeout rather than the slow target.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        String::from_utf8(scrape.body).unwrap(),
        "# HELP app_orders_total Orders.\n# TYPE app_orders_total counter\napp_orders_total{shop=\"a\"} 42\n"
    );
}

#[tokio::test]
async fn redirects_on_the_same_address_are_followed() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = fake_apps(seen.clone()).await;
    let scraper = Scraper::new(
        vec![
            app(port, "/elsewhere"),
            app(port, "/loop"),
            app(port, "/moved"),
        ],
        false,
    );
    let scrape = scraper.scrape(None, &HeaderMap::new()).await;
    assert_eq!(
        String::from_utf8(scrape.body).unwrap(),
        "# HELP app_orders_total Orders.\n# TYPE app_orders_total counter\napp_orders_total{shop=\"a\"} 42\n"
    );
    assert_eq!(seen.lock().unwrap().app.len(), 1);
}

#[tokio::test]
async fn an_oversized_body_is_dropped_at_the_cap() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = fake_apps(seen).await;
    let scraper = Scraper::new(vec![app(port, "/huge"), app(port, "/metrics")], false);
    let started = Instant::now();
    let scrape = scraper.scrape(None, &HeaderMap::new()).await;
    // Cut at the cap, not at the timeout.
    assert!(started.elapsed() < scrape::TARGET_TIMEOUT - Duration::from_secs(1));
    assert_eq!(
        String::from_utf8(scrape.body).unwrap(),
        "# HELP app_orders_total Orders.\n# TYPE app_orders_total counter\napp_orders_total{shop=\"a\"} 42\n"
    );
}

#[tokio::test]
async fn transparent_proxying_scrapes_from_the_passthrough_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let recorded = peers.clone();
    let app = Router::new().route(
        "/metrics",
        get(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                std::net::SocketAddr,
            >| async move {
                recorded.lock().unwrap().push(peer.ip());
                "m 1\n"
            },
        ),
    );
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .into_future(),
    );
    let scrape = Scraper::new(vec![self::app(port, "/metrics")], true)
        .scrape(None, &HeaderMap::new())
        .await;
    assert_eq!(scrape.body, b"m 1\n");
    assert_eq!(
        *peers.lock().unwrap(),
        vec![std::net::IpAddr::from(scrape::PASSTHROUGH_V4)]
    );
}

#[tokio::test]
async fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path(), "dp", "mesh");
    let first = Hijacker::bind(path.clone(), Scraper::new(vec![], false))
        .await
        .unwrap();
    let err = Hijacker::bind(path.clone(), Scraper::new(vec![], false))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "file {} exists and probably opened by another kuma-dp instance",
            path.display()
        )
    );
    // A kuma-dp killed without cleaning up leaves the file; nobody accepts on it.
    std::mem::forget(first.socket);
    drop(first.listener);
    assert!(path.exists());
    let second = Hijacker::bind(path.clone(), Scraper::new(vec![], false))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(second.run(stop.clone()));
    let (status, _, body) = get_unix(&path, "/metrics", &[]).await;
    assert_eq!((status, body.as_str()), (200, "\n"));
    assert!(!dir.path().join("kuma-mh-dp-mesh.sock.bak").exists());
    stop.cancel();
    task.await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn slow_request_headers_are_cut_after_a_second() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path(), "dp", "mesh");
    let hijacker = Hijacker::bind(path.clone(), Scraper::new(vec![], false))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(hijacker.run(stop.clone()));
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the connection is closed within the header deadline");
    let _ = read;
    assert!(started.elapsed() < Duration::from_secs(3));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed_by_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path(), "dp", "mesh");
    let hijacker = Hijacker::bind(path.clone(), Scraper::new(vec![], false))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(hijacker.run(stop.clone()));
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Waiting for a next request counts against the same deadline: an idle connection
    // cannot hold one of the slots.
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed before 5 s");
    assert_eq!(read.unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path(), "dp", "mesh");
    let hijacker = Hijacker::bind(path.clone(), Scraper::new(vec![], false))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(hijacker.run(stop.clone()));
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(tokio::net::UnixStream::connect(&path).await.unwrap());
    }
    let mut extra = tokio::net::UnixStream::connect(&path).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(900), extra.read_to_end(&mut buf))
        .await
        .expect("closed at once, before the held ones time out");
    assert!(read.is_err() || buf.is_empty(), "{buf:?}");
    // Once the held connections are gone (their header deadline), new ones are served.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, _) = get_unix(&path, "/", &[]).await;
    assert_eq!(status, 200);
    stop.cancel();
    task.await.unwrap();
}
