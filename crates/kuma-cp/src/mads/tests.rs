use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kuma_core::metrics::PrometheusConf;
use kuma_core::resource::Dataplane;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

fn dp(v: Value) -> Dataplane {
    serde_json::from_value(v).unwrap()
}

type Dps = BTreeMap<(String, String), (BTreeMap<String, String>, Dataplane)>;

fn fixture() -> (BTreeMap<String, Option<PrometheusConf>>, Dps) {
    let meshes = BTreeMap::from([
        (
            "default".to_string(),
            Some(
                PrometheusConf::parse(Some(&json!({"port": 5670, "path": "/metrics", "tls": {}})))
                    .unwrap(),
            ),
        ),
        ("off".to_string(), None),
    ]);
    let mut dps: Dps = BTreeMap::new();
    let mut add = |mesh: &str, name: &str, spec: Value| {
        dps.insert((mesh.into(), name.into()), (BTreeMap::new(), dp(spec)));
    };
    add(
        "default",
        "web-2",
        json!({"networking": {"address": "10.0.0.2",
        "inbound": [{"port": 80, "tags": {"kuma.io/service": "web", "kuma.io/zone": "z"}}]}}),
    );
    add(
        "default",
        "api-1",
        json!({"networking": {"address": "fd00::1", "advertisedAddress": "",
        "inbound": [{"port": 80, "tags": {"kuma.io/service": "api"}}]},
        "metrics": {"type": "prometheus", "conf": {"port": 1234, "path": "/stats", "tls": {"mode": "providedTLS"}}}}),
    );
    add(
        "off",
        "x-1",
        json!({"networking": {"address": "10.0.0.9",
        "inbound": [{"port": 80, "tags": {"kuma.io/service": "x"}}]}}),
    );
    (meshes, dps)
}

fn assignments() -> Assignments {
    let (meshes, dps) = fixture();
    Assignments::build(&meshes, &dps, "zone-1")
}

#[test]
fn only_dataplanes_of_meshes_with_a_prometheus_backend_in_mesh_and_name_order() {
    let a = assignments();
    let names: Vec<_> = a.targets.iter().map(|t| t.assignment_name()).collect();
    assert_eq!(
        names,
        [
            "/meshes/default/dataplanes/api-1",
            "/meshes/default/dataplanes/web-2"
        ]
    );
    // Same content, same version; a change, another one.
    assert_eq!(assignments().version, a.version);
    let (meshes, mut dps) = fixture();
    dps.remove(&("default".to_string(), "web-2".to_string()));
    assert_ne!(
        Assignments::build(&meshes, &dps, "zone-1").version,
        a.version
    );
}

#[test]
fn discovery_response_is_kumas_snake_case_json() {
    let a = assignments();
    let body = a.discovery_response(&[]);
    assert_eq!(
        body,
        json!({
            "version_info": a.version,
            "type_url": TYPE_URL,
            "resources": [
                {"@type": TYPE_URL, "mesh": "default", "service": "api", "targets": [{
                    "name": "api-1", "scheme": "https", "address": "[fd00::1]:1234",
                    "metrics_path": "/stats",
                    "labels": {"kuma_io_service": "api", "kuma_io_services": ",api,"}
                }]},
                {"@type": TYPE_URL, "mesh": "default", "service": "web", "targets": [{
                    "name": "web-2", "scheme": "http", "address": "10.0.0.2:5670",
                    "metrics_path": "/metrics",
                    "labels": {"kuma_io_service": "web", "kuma_io_services": ",web,",
                               "kuma_io_zone": "z", "kuma_io_zones": ",z,"}
                }]}
            ]
        })
    );
    let only = a.discovery_response(&["/meshes/default/dataplanes/web-2".to_string()]);
    assert_eq!(only["resources"].as_array().unwrap().len(), 1);
}

#[test]
fn http_sd_groups_with_exact_labels_and_mesh_filter() {
    let a = assignments();
    assert_eq!(
        a.http_sd(None),
        json!([
            {"targets": ["[fd00::1]:1234"], "labels": {
                "__meta_kuma_mesh": "default", "__meta_kuma_dataplane": "api-1",
                "__meta_kuma_service": "api", "__meta_kuma_zone": "zone-1",
                "__meta_kuma_label_kuma_io_service": "api",
                "__meta_kuma_label_kuma_io_services": ",api,",
                "__metrics_path__": "/stats", "__scheme__": "https"}},
            {"targets": ["10.0.0.2:5670"], "labels": {
                "__meta_kuma_mesh": "default", "__meta_kuma_dataplane": "web-2",
                "__meta_kuma_service": "web", "__meta_kuma_zone": "z",
                "__meta_kuma_label_kuma_io_service": "web",
                "__meta_kuma_label_kuma_io_services": ",web,",
                "__meta_kuma_label_kuma_io_zone": "z",
                "__meta_kuma_label_kuma_io_zones": ",z,",
                "__metrics_path__": "/metrics", "__scheme__": "http"}}
        ])
    );
    assert_eq!(a.http_sd(Some("off")), json!([]));
    assert_eq!(a.http_sd(Some("default")).as_array().unwrap().len(), 2);
}

fn settings() -> Settings {
    Settings {
        zone: "zone-1".into(),
        default_fetch_timeout: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(1),
        max_long_polls: 2,
    }
}

async fn call(router: &Router, req: Request<Body>) -> (StatusCode, String, Option<String>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap(), ctype)
}

fn mads(query: &str, body: &str) -> Request<Body> {
    Request::post(format!("{MADS_PATH}{query}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn fetch_answers_304_when_unchanged_and_waits_for_a_change() {
    let a = Arc::new(assignments());
    let (tx, rx) = watch::channel(Some(a.clone()));
    let router = router(rx, &settings());
    // First request: no version, the whole state at once.
    let req =
        json!({"version_info": "", "type_url": "whatever", "node": {"id": "prom"}}).to_string();
    let (st, body, ctype) = call(&router, mads("", &req)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ctype.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type_url"], TYPE_URL);
    assert_eq!(body["version_info"], a.version);
    // Same version, no wait: 304 with no body.
    let same = json!({"versionInfo": a.version, "node": {"id": "prom"}}).to_string();
    let (st, body, _) = call(&router, mads("?fetch-timeout=0s", &same)).await;
    assert_eq!((st, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    let started = Instant::now();
    let (st, _, _) = call(&router, mads("?fetch-timeout=-5s", &same)).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Same version, short wait, nothing changes: 304 after the wait.
    let started = Instant::now();
    let (st, _, _) = call(&router, mads("?fetch-timeout=200ms", &same)).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Same version, a change arrives during the wait: answered with it.
    let (meshes, mut dps) = fixture();
    dps.remove(&("default".to_string(), "api-1".to_string()));
    let next = Arc::new(Assignments::build(&meshes, &dps, "zone-1"));
    let sender = {
        let next = next.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send_replace(Some(next));
            tx
        })
    };
    let started = Instant::now();
    let (st, body, _) = call(&router, mads("?fetch-timeout=10s", &same)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["version_info"], next.version);
    assert_eq!(body["resources"].as_array().unwrap().len(), 1);
    drop(sender.await.unwrap());
}

#[tokio::test]
async fn bad_requests_get_kumas_answers() {
    let (_tx, rx) = watch::channel(Some(Arc::new(assignments())));
    let router = router(rx, &settings());
    let (st, body, _) = call(&router, mads("", "{not json")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["title"], "Could not parse request body");
    assert!(v["detail"].as_str().unwrap().len() > 3 && v["detail"] == v["details"]);
    let (st, body, _) = call(&router, mads("?fetch-timeout=soon", "{}")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["title"], "Could not parse fetch-timeout");
    let no_type = Request::post(MADS_PATH).body(Body::from("{}")).unwrap();
    assert_eq!(
        call(&router, no_type).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let xml = Request::post(MADS_PATH)
        .header("content-type", "application/json")
        .header("accept", "application/xml")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(&router, xml).await.0, StatusCode::NOT_ACCEPTABLE);
    let big = format!("{{\"version_info\": \"{}\"}}", "x".repeat(MAX_BODY));
    assert_eq!(
        call(&router, mads("", &big)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let get = Request::get(MADS_PATH).body(Body::empty()).unwrap();
    assert_eq!(call(&router, get).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn before_the_first_read_mads_fails_and_http_sd_is_unavailable() {
    let (_tx, rx) = watch::channel(None);
    let router = router(rx, &settings());
    let (st, body, _) = call(&router, mads("?fetch-timeout=0s", r#"{"node":{"id":"p"}}"#)).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("missing snapshot for p"), "{body}");
    let sd = Request::get("/http_sd").body(Body::empty()).unwrap();
    assert_eq!(call(&router, sd).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn http_sd_is_json_with_the_mesh_filter() {
    let (_tx, rx) = watch::channel(Some(Arc::new(assignments())));
    let router = router(rx, &settings());
    let (st, body, ctype) = call(
        &router,
        Request::get("/http_sd").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (st, ctype.as_deref()),
        (StatusCode::OK, Some("application/json"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        assignments().http_sd(None)
    );
    let (_, body, _) = call(
        &router,
        Request::get("/http_sd?mesh=off")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "[]");
}

/// Over `maxLongPolls`, a request is answered at once instead of waiting.
#[tokio::test]
async fn long_polls_over_the_cap_are_answered_at_once() {
    let a = Arc::new(assignments());
    let (_tx, rx) = watch::channel(Some(a.clone()));
    let router = router(rx, &settings());
    let same = json!({"version_info": a.version}).to_string();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (r, b) = (router.clone(), same.clone());
            tokio::spawn(async move { call(&r, mads("?fetch-timeout=2s", &b)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (st, _, _) = call(&router, mads("?fetch-timeout=2s", &same)).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for w in waiting {
        assert_eq!(w.await.unwrap().0, StatusCode::NOT_MODIFIED);
    }
}
