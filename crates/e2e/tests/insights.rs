//! Insights with real kuma-dp and Envoy: `kumactl inspect services` and the MeshInsight follow
//! proxies connecting, dying and inbounds reported unhealthy, within about a second (the
//! resyncer's batching); the delays are printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{Value, json};

/// `kumactl inspect services` as service → (status, dataplanes).
fn services(cp: &ControlPlane) -> BTreeMap<String, (String, String)> {
    let (ok, out, err) = cp.kumactl(&["inspect", "services"]);
    assert!(ok, "{err}");
    let mut lines = out.lines().map(|l| {
        l.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        lines.next(),
        Some(vec!["SERVICE", "STATUS", "DATAPLANES"]),
        "{out}"
    );
    lines
        .filter_map(|cells| match cells[..] {
            [name, status, dps] => Some((name.to_string(), (status.to_string(), dps.to_string()))),
            _ => None,
        })
        .collect()
}

/// Waits until `service` shows `status` and `dataplanes`; how long it took.
fn wait_service(cp: &ControlPlane, service: &str, status: &str, dataplanes: &str) -> Duration {
    let started = Instant::now();
    wait_for(
        &format!("{service} {status} {dataplanes}"),
        Duration::from_secs(20),
        || {
            let s = services(cp);
            (s.get(service) == Some(&(status.to_string(), dataplanes.to_string()))).then_some(())
        },
    );
    started.elapsed()
}

/// Waits until the MeshInsight's `dataplanes` are `want`; the insight.
fn wait_mesh_dataplanes(cp: &ControlPlane, want: Value) -> Value {
    wait_for("the MeshInsight", Duration::from_secs(20), || {
        let (code, v) = cp.get("/mesh-insights/default");
        (code == 200 && v["dataplanes"] == want).then_some(v)
    })
}

/// Marks the inbound on `port` of Dataplane `name` unhealthy (`health.ready: false`) through
/// the API, as a health checker reporting it would.
fn report_unhealthy(cp: &ControlPlane, name: &str, port: u16) {
    let path = format!("/meshes/default/dataplanes/{name}");
    let (code, mut dp) = cp.get(&path);
    assert_eq!(code, 200, "{dp}");
    for inbound in dp["networking"]["inbound"]
        .as_array_mut()
        .expect("inbounds")
    {
        if inbound["port"] == json!(port) {
            inbound["health"] = json!({"ready": false});
        }
    }
    let (code, body) = cp.put(&path, &dp);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn services_and_mesh_insight_follow_proxies_and_their_health() {
    let dir = tempfile::tempdir().unwrap();
    // Killed proxies keep their Dataplane (status Offline) for the whole test.
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[("KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY", "60s")],
    );
    let (b1_app, b2_app, web_app) = (
        Workload::http("backend-1"),
        Workload::http("backend-2"),
        Workload::http("web"),
    );
    let backend = |name: &'static str, app: u16| DpSpec {
        name,
        inbounds: vec![(free_port(), app, "backend", "http")],
        ..Default::default()
    };
    let b1 = DataplaneProc::start(&cp, &backend("backend-1", b1_app.port), dir.path());
    let b2_spec = backend("backend-2", b2_app.port);
    let mut b2 = DataplaneProc::start(&cp, &b2_spec, dir.path());
    let web_api_port = free_port();
    let web = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![
                (free_port(), web_app.port, "web", "http"),
                (web_api_port, web_app.port, "web-api", "http"),
            ],
            outbounds: vec![(free_port(), "backend")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&b1, &b2, &web]);
    let took = wait_service(&cp, "backend", "Online", "2/2");
    println!("insights: backend Online 2/2 seen {took:?} after both proxies were LIVE");
    wait_service(&cp, "web", "Online", "1/1");
    wait_service(&cp, "web-api", "Online", "1/1");
    let mi = wait_mesh_dataplanes(&cp, json!({"total": 3, "online": 3}));
    assert_eq!(mi["services"], json!({"total": 3, "internal": 3}), "{mi}");
    assert_eq!(
        mi["dataplanesByType"]["standard"],
        json!({"total": 3, "online": 3}),
        "{mi}"
    );
    println!("insights: dpVersions {}", mi["dpVersions"]);

    // A replica dies (kuma-dp and Envoy killed).
    let killed = Instant::now();
    b2.proc.kill();
    let took = wait_service(&cp, "backend", "Partially degraded", "1/2");
    println!(
        "insights: backend Partially degraded 1/2 shown by kumactl {:?} after SIGKILL of a replica",
        killed.elapsed()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let mi = wait_mesh_dataplanes(&cp, json!({"total": 3, "online": 2, "offline": 1}));
    assert_eq!(
        mi["dataplanesByType"]["standard"],
        json!({"total": 3, "online": 2, "offline": 1}),
        "{mi}"
    );

    // It comes back under the same name.
    let b2 = DataplaneProc::start(&cp, &b2_spec, dir.path());
    DataplaneProc::wait_live(&[&b2]);
    wait_service(&cp, "backend", "Online", "2/2");

    // An inbound reported unhealthy: web's proxy has one of its two inbounds ready, so it is
    // partially degraded (counted offline for both its services, as Kuma does).
    let reported = Instant::now();
    report_unhealthy(&cp, "web", web_api_port);
    wait_service(&cp, "web", "Offline", "0/1");
    println!(
        "insights: an unhealthy inbound shown {:?} after its report",
        reported.elapsed()
    );
    assert_eq!(
        services(&cp)["web-api"],
        ("Offline".to_string(), "0/1".to_string())
    );
    let mi = wait_mesh_dataplanes(
        &cp,
        json!({"total": 3, "online": 2, "partiallyDegraded": 1}),
    );
    assert_eq!(
        mi["dataplanesByType"]["standard"],
        json!({"total": 3, "online": 2, "partiallyDegraded": 1}),
        "{mi}"
    );
    // The backend's only inbound of one replica unhealthy: that replica is Offline and the
    // service partially degraded.
    let b2_port = b2_spec.inbounds[0].0;
    report_unhealthy(&cp, "backend-2", b2_port);
    wait_service(&cp, "backend", "Partially degraded", "1/2");
    wait_mesh_dataplanes(
        &cp,
        json!({"total": 3, "online": 1, "offline": 1, "partiallyDegraded": 1}),
    );

    // The global view agrees.
    let (code, g) = cp.get("/global-insight");
    assert_eq!(code, 200, "{g}");
    assert_eq!(
        g["dataplanes"]["standard"],
        json!({"offline": 1, "online": 1, "partiallyDegraded": 1, "total": 3}),
        "{g}"
    );
    assert_eq!(
        g["services"]["internal"],
        json!({"offline": 2, "online": 0, "partiallyDegraded": 1, "total": 3}),
        "{g}"
    );
    drop((b1, b2, web));
}

/// Multi-zone: global computes the insights from what the zones sync up (their Dataplanes and
/// DataplaneInsights); a federated zone computes its own from what it sees (its Dataplanes).
/// `GET /global-insight` counts the zone control planes from their ZoneInsights.
#[test]
fn global_sees_the_services_of_every_zone() {
    let dir = tempfile::tempdir().unwrap();
    let global = ControlPlane::start_global(&dir.path().join("global"), &[]);
    let zones: Vec<ControlPlane> = ["zone-1", "zone-2"]
        .iter()
        .map(|z| {
            let token = global.zone_token(z, &["cp"], "1h");
            ControlPlane::start_zone(&global, z, Some(&token), &dir.path().join(z), &[])
        })
        .collect();
    for z in &zones {
        wait_for(
            "the default Mesh in the zone",
            Duration::from_secs(15),
            || {
                z.names("/meshes")
                    .contains(&"default".to_string())
                    .then_some(())
            },
        );
    }
    // A live proxy in zone-1, a Dataplane that never connected in zone-2.
    let app = Workload::http("backend-1");
    let live = DataplaneProc::start(
        &zones[0],
        &DpSpec {
            name: "backend-1",
            inbounds: vec![(free_port(), app.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&live]);
    let (code, body) = zones[1].put(
        "/meshes/default/dataplanes/backend-2",
        &json!({"type": "Dataplane", "mesh": "default", "name": "backend-2",
            "networking": {"address": "127.0.0.1", "inbound": [
                {"port": 9000, "servicePort": 9001, "tags": {"kuma.io/service": "backend"}}]}}),
    );
    assert!(code == 201 || code == 200, "{code} {body}");

    let started = Instant::now();
    let svc = wait_for(
        "backend of both zones on global",
        Duration::from_secs(20),
        || {
            let (code, v) = global.get("/meshes/default/service-insights/backend");
            (code == 200 && v["dataplanes"] == json!({"total": 2, "online": 1, "offline": 1}))
                .then_some(v)
        },
    );
    println!(
        "insights: global shows both zones' replicas {:?} after the second Dataplane was written",
        started.elapsed()
    );
    assert_eq!(svc["status"], "partially_degraded", "{svc}");
    assert_eq!(svc["zones"], json!(["zone-1", "zone-2"]), "{svc}");
    let (ok, out, err) = global.kumactl(&["inspect", "services"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(
            |l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).eq([
                "backend",
                "Partially degraded",
                "1/2"
            ])
        ),
        "{out}"
    );
    // Each zone sees its own.
    let (_, z1) = wait_for("zone-1's own insight", Duration::from_secs(10), || {
        let r = zones[0].get("/meshes/default/service-insights/backend");
        (r.1["dataplanes"] == json!({"total": 1, "online": 1})).then_some(r)
    });
    assert_eq!(z1["zones"], json!(["zone-1"]), "{z1}");
    // Zone control planes from their ZoneInsights.
    let g = wait_for(
        "both zones online in the global insight",
        Duration::from_secs(10),
        || {
            let (code, g) = global.get("/global-insight");
            (code == 200 && g["zones"]["controlPlanes"] == json!({"online": 2, "total": 2}))
                .then_some(g)
        },
    );
    assert_eq!(
        g["dataplanes"]["standard"],
        json!({"offline": 1, "online": 1, "partiallyDegraded": 0, "total": 2}),
        "{g}"
    );
    assert_eq!(g["meshes"], json!({"total": 1}), "{g}");
}
