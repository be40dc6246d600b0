//! The bootstrap client against a tiny fake control plane on 127.0.0.1: retry policy and
//! fatal errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use kuma_dp::bootstrap::{self, Client, EnvoyVersion, KumaDpVersion, Request, Version};
use kuma_dp::config::ControlPlane;
use tokio_util::sync::CancellationToken;

/// What the fake CP answers, in order; the last answer repeats.
type Script = Vec<(StatusCode, String)>;

#[derive(Default)]
struct Seen {
    bodies: Vec<serde_json::Value>,
    headers: Vec<HeaderMap>,
}

async fn fake_cp(script: Script) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let calls = seen.clone();
    let app = Router::new().route(
        "/bootstrap",
        post(move |headers: HeaderMap, body: String| {
            let calls = calls.clone();
            let script = script.clone();
            async move {
                let mut seen = calls.lock().unwrap();
                let n = seen.bodies.len();
                seen.bodies.push(serde_json::from_str(&body).unwrap());
                seen.headers.push(headers);
                script[n.min(script.len() - 1)].clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (url, seen)
}

fn control_plane(url: &str, max: Duration) -> ControlPlane {
    ControlPlane {
        url: url.parse().unwrap(),
        ca_cert_pem: None,
        skip_verify: false,
        retry_backoff: Duration::from_millis(50),
        retry_max_duration: max,
    }
}

fn request() -> Request {
    Request {
        mesh: "default".into(),
        name: "dp-1".into(),
        proxy_type: "dataplane".into(),
        dataplane_token: String::new(),
        dataplane_token_path: String::new(),
        dataplane_resource: r#"{"type":"Dataplane","mesh":"default","name":"dp-1"}"#.into(),
        version: Version {
            kuma_dp: KumaDpVersion::default(),
            envoy: EnvoyVersion {
                version: "1.38.2".into(),
                build: "abc/1.38.2/Clean/RELEASE/BoringSSL".into(),
                kuma_dp_compatible: true,
            },
        },
        ca_cert: String::new(),
        dynamic_metadata: Default::default(),
        dns_port: 0,
        readiness_port: 9902,
        operating_system: "linux".into(),
        features: vec!["feature-tcp-accesslog-via-named-pipe".into()],
        workdir: "/tmp/kuma-dp-test".into(),
        ipv6_enabled: false,
        metrics_resources: Default::default(),
    }
}

fn ok_body(yaml: &str) -> String {
    serde_json::json!({
        "bootstrap": base64::engine::general_purpose::STANDARD.encode(yaml),
        "kumaSidecarConfiguration": {"networking": {"address": "127.0.0.1"}},
    })
    .to_string()
}

#[tokio::test]
async fn retries_404_with_empty_body_then_succeeds() {
    let (url, seen) = fake_cp(vec![
        (StatusCode::NOT_FOUND, String::new()),
        (StatusCode::SERVICE_UNAVAILABLE, "starting".into()),
        (StatusCode::OK, ok_body("node:\n  id: default.dp-1\n")),
    ])
    .await;
    let client = Client::new(&control_plane(&url, Duration::from_secs(10))).unwrap();
    let response = client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(response.bootstrap, "node:\n  id: default.dp-1\n");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.bodies.len(), 3);
    assert_eq!(seen.bodies[0]["name"], "dp-1");
    assert_eq!(seen.bodies[0]["proxyType"], "dataplane");
    assert_eq!(seen.bodies[0]["version"]["envoy"]["kumaDpCompatible"], true);
    assert_eq!(seen.headers[0]["accept"], "application/json");
    assert_eq!(seen.headers[0]["content-type"], "application/json");
}

#[tokio::test]
async fn client_error_with_body_is_fatal() {
    let (url, seen) = fake_cp(vec![(
        StatusCode::UNPROCESSABLE_ENTITY,
        "mesh \"nope\" does not exist".into(),
    )])
    .await;
    let client = Client::new(&control_plane(&url, Duration::from_secs(10))).unwrap();
    let err = client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, bootstrap::Error::InvalidRequest { status: 422, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "Invalid request: mesh \"nope\" does not exist"
    );
    assert_eq!(
        seen.lock().unwrap().bodies.len(),
        1,
        "no retry on a fatal error"
    );
}

#[tokio::test]
async fn gives_up_after_max_duration() {
    let (url, seen) = fake_cp(vec![(StatusCode::NOT_FOUND, String::new())]).await;
    let client = Client::new(&control_plane(&url, Duration::from_millis(300))).unwrap();
    let err = client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, bootstrap::Error::GaveUp { .. }), "{err}");
    assert!(seen.lock().unwrap().bodies.len() >= 2);
}

#[tokio::test]
async fn retries_connection_errors_and_can_be_cancelled() {
    // A port that was free a moment ago: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::new(&control_plane(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(60),
    ))
    .unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let err = client.fetch(&request(), &cancel).await.unwrap_err();
    assert!(matches!(err, bootstrap::Error::Cancelled), "{err}");
}

#[tokio::test]
async fn success_with_garbage_is_fatal() {
    let (url, _) = fake_cp(vec![(StatusCode::OK, "not json".into())]).await;
    let client = Client::new(&control_plane(&url, Duration::from_secs(10))).unwrap();
    let err = client
        .fetch(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, bootstrap::Error::InvalidResponse(_)), "{err}");
}
