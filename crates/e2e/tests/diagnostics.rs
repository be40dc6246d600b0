//! The diagnostics port of a real kuma-cp: `/ready` follows the sqlite store (file made
//! unreadable, moved away, restored) and a federated zone's first sync with global, and
//! `/metrics` shows a real proxy (kuma-dp + Envoy) connected and its configuration delivered.

use std::time::{Duration, Instant};

use e2e::*;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// The value of the series `name{labels}` (labels exactly as kuma-cp writes them: sorted,
/// then `zone`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `/ready` answers `code`; how long it took and the body.
fn ready_within(cp: &ControlPlane, code: u16, timeout: Duration) -> (Duration, String) {
    let t0 = Instant::now();
    wait_for(&format!("/ready {code}"), timeout, || {
        let (c, body) = cp.ready();
        (c == code).then(|| (t0.elapsed(), body))
    })
}

#[test]
fn ready_follows_the_sqlite_store() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    // Everything, not only what the harness waited for.
    let (_, body) = ready_within(&cp, 200, Duration::from_secs(10));
    assert_eq!(body, "", "Kuma's 200 has an empty body");
    let db = cp.work_dir.join("kuma-cp.db");
    let chmod = |m: u32| std::fs::set_permissions(&db, std::fs::Permissions::from_mode(m)).unwrap();

    // Unreadable: the CP's open connections still work (and the tests run as root, whom
    // permissions do not stop), but a new connection of an unprivileged owner would not.
    chmod(0o000);
    let (took, body) = ready_within(&cp, 503, Duration::from_secs(3));
    eprintln!("store made unreadable: /ready 503 after {took:?}: {body}");
    assert!(
        body.starts_with("not ready:\nstore: ") && body.contains("mode 000"),
        "{body}"
    );
    assert_eq!(
        http("GET", cp.diag, "/healthy", None).unwrap().0,
        200,
        "/healthy does not follow the store"
    );
    chmod(0o600);
    let (took, _) = ready_within(&cp, 200, Duration::from_secs(3));
    eprintln!("store readable again: /ready 200 after {took:?}");

    // Moved away, then back.
    let moved = cp.work_dir.join("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    let (took, body) = ready_within(&cp, 503, Duration::from_secs(3));
    eprintln!("store moved away: /ready 503 after {took:?}: {body}");
    assert!(
        body.contains("store: ") && body.contains("kuma-cp.db"),
        "{body}"
    );
    std::fs::rename(&moved, &db).unwrap();
    ready_within(&cp, 200, Duration::from_secs(3));
    // The store works as before.
    let (code, body) = cp.put(
        "/meshes/after",
        &serde_json::json!({"type": "Mesh", "name": "after"}),
    );
    assert_eq!(code, 201, "{body}");
}

#[test]
fn a_federated_zone_is_ready_once_synced_with_global() {
    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    // The zone dials global through a relay that is not there yet: global is unreachable.
    let relay = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let address = format!("grpcs://{relay}");
    let zone = ControlPlane::start_zone(
        &global,
        "zone-1",
        Some(&token),
        &dir.path().join("zone-1"),
        &[("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", address.as_str())],
    );
    // Everything else is ready: the body names KDS only, and keeps saying so.
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = zone.ready();
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        body,
        format!("not ready:\nkds: no full sync from global ({address}) yet\n")
    );
    assert_eq!(
        http("GET", zone.diag, "/ready?exclude=kds", None)
            .unwrap()
            .0,
        200
    );
    let metrics = zone.metrics();
    assert_eq!(
        sample(&metrics, "kds_connected_to_global{zone=\"zone-1\"}"),
        Some(0.0),
        "{metrics}"
    );

    // Global becomes reachable.
    tcp_relay(relay, ([127, 0, 0, 1], global.kds_port).into()).unwrap();
    let (took, _) = ready_within(&zone, 200, Duration::from_secs(20));
    eprintln!("global reachable: the zone's /ready 200 after {took:?}");
    let metrics = zone.metrics();
    assert_eq!(
        sample(&metrics, "kds_connected_to_global{zone=\"zone-1\"}"),
        Some(1.0)
    );
    assert!(
        sample(&metrics, "kds_resources_sync_count{zone=\"zone-1\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    let on_global = global.metrics();
    assert_eq!(
        sample(
            &on_global,
            "kds_zone_active_connections{zone_name=\"zone-1\",zone=\"Global\"}"
        ),
        Some(1.0),
        "{on_global}"
    );
    assert!(
        sample(
            &on_global,
            "kds_delta_responses_sent{type_url=\"Mesh\",zone=\"Global\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{on_global}"
    );
    // Global's own readiness has no KDS condition.
    assert_eq!(global.ready(), (200, String::new()));
}

#[test]
fn metrics_show_a_real_proxy_connected_and_its_config_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = Workload::http("web");
    let spec = |name| DpSpec {
        name,
        inbounds: vec![(free_port(), app.port, "web", "http")],
        // An outbound to its own service: EDS too.
        outbounds: vec![(free_port(), "web")],
        ..Default::default()
    };
    let mut web1 = DataplaneProc::start(&cp, &spec("web-1"), dir.path());
    DataplaneProc::wait_live(&[&web1]);
    let series = |name: &str, labels: &str| format!("{name}{{{labels}zone=\"default\"}}");
    let delivered = |text: &str, t: &str| {
        sample(
            text,
            &series("xds_delivery_count", &format!("type_url=\"{t}\",")),
        )
        .unwrap_or(0.0)
    };
    let text = wait_for(
        "CDS, LDS and EDS delivered",
        Duration::from_secs(10),
        || {
            let text = cp.metrics();
            [CDS, LDS, EDS]
                .iter()
                .all(|t| delivered(&text, t) >= 1.0)
                .then_some(text)
        },
    );
    assert_eq!(
        sample(&text, &series("xds_streams_active", "")),
        Some(1.0),
        "{text}"
    );
    for t in [CDS, LDS, EDS] {
        let acks = series(
            "xds_requests_received",
            &format!("confirmation=\"ACK\",error_type=\"no_error\",type_url=\"{t}\","),
        );
        assert!(sample(&text, &acks).unwrap_or(0.0) >= 1.0, "{acks}: {text}");
        let nacks = series(
            "xds_requests_received",
            &format!("confirmation=\"NACK\",error_type=\"other\",type_url=\"{t}\","),
        );
        assert_eq!(sample(&text, &nacks), Some(0.0), "Envoy refused: {text}");
        let sent = series("xds_responses_sent", &format!("type_url=\"{t}\","));
        assert!(sample(&text, &sent).unwrap_or(0.0) >= 1.0, "{sent}");
    }
    let generated = series(
        "xds_generation_count",
        "proxy_type=\"dataplane\",result=\"changed\",",
    );
    assert!(sample(&text, &generated).unwrap_or(0.0) >= 1.0, "{text}");
    let stored = series(
        "store_count",
        "operation=\"create\",resource_type=\"Dataplane\",",
    );
    assert!(sample(&text, &stored).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("cp_info{") && l.ends_with(" 1")),
        "{text}"
    );

    // A second replica changes web-1's endpoints: one more EDS delivery.
    let eds_before = delivered(&text, EDS);
    let mut web2 = DataplaneProc::start(&cp, &spec("web-2"), dir.path());
    DataplaneProc::wait_live(&[&web2]);
    let text = wait_for(
        "the new endpoint delivered",
        Duration::from_secs(10),
        || {
            let text = cp.metrics();
            (delivered(&text, EDS) >= eds_before + 2.0).then_some(text)
        },
    );
    assert_eq!(sample(&text, &series("xds_streams_active", "")), Some(2.0));
    let sum = sample(
        &text,
        &series("xds_delivery_sum", &format!("type_url=\"{EDS}\",")),
    )
    .unwrap();
    eprintln!(
        "EDS deliveries: {} in {sum:.1} ms in total",
        delivered(&text, EDS)
    );

    web1.proc.kill();
    web2.proc.kill();
    wait_for("no stream left", Duration::from_secs(10), || {
        (sample(&cp.metrics(), &series("xds_streams_active", "")) == Some(0.0)).then_some(())
    });
}
