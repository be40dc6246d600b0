//! Cross-zone traffic through a zone ingress (and a zone egress), without KDS: two standalone
//! control planes on loopback (zone-1 and zone-2) with the same mesh, mTLS from one provided
//! CA (so the zones trust each other). Zone-2 runs a backend and a ZoneIngress; the test does
//! what global's sync would do and PUTs zone-2's ZoneIngress (with `zone: zone-2` and the
//! `availableServices` zone-2 computed) into zone-1, where a client reaches the backend by
//! name: client sidecar → zone-2's ingress (SNI passthrough) → backend sidecar, mTLS end to
//! end, the backend's permissions deciding.

use std::path::Path;
use std::time::Duration;

use e2e::*;
use serde_json::{Value, json};

fn ok(code: u16, body: &Value) {
    assert!(code == 200 || code == 201, "{code} {body}");
}

/// A zone CP: standalone, named `zone`, proxy authentication off (zone tokens are another
/// branch's; see `tokens::authenticate_zone_proxy`).
fn zone_cp(dir: &Path, zone: &str) -> ControlPlane {
    ControlPlane::start(
        &dir.join(zone),
        &[
            ("KUMA_MULTIZONE_ZONE_NAME", zone),
            ("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", "none"),
        ],
    )
}

/// Mesh `default` with mTLS from the shared CA (and `routing` as given).
fn mesh(cp: &ControlPlane, cert: &str, key: &str, routing: Value) {
    for (name, data) in [("ca-cert", cert), ("ca-key", key)] {
        let body = json!({"type": "Secret", "mesh": "default", "name": name,
            "data": base64_encode(data.as_bytes())});
        let (code, body) = cp.put(&format!("/meshes/default/secrets/{name}"), &body);
        ok(code, &body);
    }
    let (code, body) = cp.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default", "routing": routing,
            "mtls": {"enabledBackend": "ca-p", "backends": [{"name": "ca-p", "type": "provided",
                "mode": "STRICT", "conf": {"cert": {"secret": "ca-cert"}, "key": {"secret": "ca-key"}}}]}}),
    );
    ok(code, &body);
}

/// A zone proxy of a zone CP on loopback (proxy authentication is off on these CPs).
fn zone_proxy(
    cp: &ControlPlane,
    dir: &Path,
    kind: &str,
    name: &str,
    networking: Value,
) -> ZoneProxyProc {
    ZoneProxyProc::start(&[], cp, dir, kind, name, networking, None)
}

/// The body of a GET through the client's outbound, or why it failed.
fn via(port: u16) -> Result<String, String> {
    match http_probe(port) {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("{code} {body}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn cross_zone_http_through_the_remote_ingress_and_the_local_egress() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(dir.path(), "shared-ca");
    let z1 = zone_cp(dir.path(), "zone-1");
    let z2 = zone_cp(dir.path(), "zone-2");
    mesh(&z1, &cert, &key, json!({}));
    mesh(&z2, &cert, &key, json!({}));

    // Zone-2: the backend and the ingress.
    let backend_app = Workload::http("backend-zone-2");
    let backend = DataplaneProc::start(
        &z2,
        &DpSpec {
            name: "backend",
            inbounds: vec![(free_port(), backend_app.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let zi_port = free_port();
    let zi_net = json!({"address": "127.0.0.1", "port": zi_port,
        "advertisedAddress": "127.0.0.1", "advertisedPort": zi_port});
    let mut ingress = zone_proxy(&z2, dir.path(), "ingress", "zi-1", zi_net.clone());
    DataplaneProc::wait_live(&[&backend]);

    // Zone-2 announces the backend on its ingress (and shows it online).
    let announced = wait_for(
        "zone-2's ingress announces backend",
        Duration::from_secs(30),
        || {
            let (code, zi) = z2.get("/zoneingresses/zi-1");
            let services = zi["availableServices"].as_array()?.clone();
            (code == 200
                && services.iter().any(|s| {
                    s["tags"]["kuma.io/service"] == "backend"
                        && s["tags"]["kuma.io/zone"] == "zone-2"
                        && s["instances"] == 1
                        && s["mesh"] == "default"
                }))
            .then_some(services)
        },
    );
    wait_for("zone-2's ingress online", Duration::from_secs(30), || {
        let (_, o) = z2.get("/zoneingresses/zi-1/_overview");
        o["zoneIngressInsight"]["subscriptions"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s.get("disconnectTime").is_none()))
            .then_some(())
    });
    let (ok_out, ins, _) = z2.kumactl(&["inspect", "zone-ingresses"]);
    assert!(
        ok_out && ins.contains("zi-1") && ins.contains("Online"),
        "{ins}"
    );
    let (ok_out, got, _) = z2.kumactl(&["get", "zone-ingresses"]);
    assert!(
        ok_out && got.starts_with("NAME") && got.contains("zi-1"),
        "{got}"
    );

    // What global would sync into zone-1.
    let (code, body) = z1.put(
        "/zoneingresses/zone-2-zi-1",
        &json!({"type": "ZoneIngress", "name": "zone-2-zi-1", "zone": "zone-2",
            "networking": zi_net, "availableServices": announced}),
    );
    ok(code, &body);

    // Zone-1: a client with an outbound to `backend`, served only in zone-2.
    let client_app = Workload::http("client");
    let out = free_port();
    let client = DataplaneProc::start(
        &z1,
        &DpSpec {
            name: "client",
            inbounds: vec![(free_port(), client_app.port, "client", "http")],
            outbounds: vec![(out, "backend")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&client]);
    let endpoints = wait_for(
        "the client's backend cluster points at zone-2's ingress",
        Duration::from_secs(20),
        || {
            let e = client.endpoints("backend");
            e.iter()
                .any(|e| e == &format!("127.0.0.1:{zi_port}"))
                .then_some(e)
        },
    );
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");

    // No permission in zone-2: the backend's sidecar refuses the client (403).
    wait_for("403 without a permission", Duration::from_secs(20), || {
        (status_via(out) == 403).then_some(())
    });
    put_mtp(
        &z2,
        "client-to-backend",
        json!({"kind": "MeshService", "name": "backend"}),
        json!({"kind": "MeshService", "name": "client"}),
        "Allow",
    );
    let body = wait_for("200 through the ingress", Duration::from_secs(20), || {
        via(out).ok()
    });
    assert_eq!(body, "backend-zone-2");

    // The ingress goes away: cross-zone traffic stops; it comes back with it.
    ingress.proc.kill();
    wait_for(
        "no traffic without the ingress",
        Duration::from_secs(20),
        || via(out).is_err().then_some(()),
    );
    // Direct lifecycle: zone-2 deregisters the ingress (and its insight) once it is gone.
    wait_for(
        "zone-2 deregisters its ingress",
        Duration::from_secs(20),
        || {
            (z2.get("/zoneingresses/zi-1").0 == 404
                && z2.get("/zone-ingress-insights/zi-1").0 == 404)
                .then_some(())
        },
    );
    ingress = zone_proxy(&z2, dir.path(), "ingress", "zi-1", zi_net.clone());
    let body = wait_for(
        "traffic back with the ingress",
        Duration::from_secs(30),
        || via(out).ok(),
    );
    assert_eq!(body, "backend-zone-2");

    // A proxy of zone-1 cannot take over zone-2's ingress as synced here.
    let _intruder = zone_proxy(
        &z1,
        dir.path(),
        "ingress",
        "zone-2-zi-1",
        json!({"address": "127.0.0.1", "port": free_port()}),
    );
    wait_for("the takeover refused", Duration::from_secs(20), || {
        z1.proc
            .log_text()
            .contains("a proxy of this zone cannot replace it")
            .then_some(())
    });
    let (_, synced) = z1.get("/zoneingresses/zone-2-zi-1");
    assert_eq!(synced["zone"], "zone-2", "{synced}");
    assert_eq!(synced["networking"]["advertisedPort"], zi_port, "{synced}");
    drop(_intruder);

    // A backend in zone-1 too: both zones answer; with locality awareness only the local
    // one, until it goes away (Envoy fails over to the remote zone's priority).
    put_mtp(
        &z1,
        "client-to-backend",
        json!({"kind": "MeshService", "name": "backend"}),
        json!({"kind": "MeshService", "name": "client"}),
        "Allow",
    );
    let local_app = Workload::http("backend-zone-1");
    let mut local_backend = DataplaneProc::start(
        &z1,
        &DpSpec {
            name: "backend",
            inbounds: vec![(free_port(), local_app.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&local_backend]);
    let answers = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n).filter_map(|_| via(out).ok()).collect()
    };
    wait_for("both zones answer", Duration::from_secs(30), || {
        (answers(20).len() == 2).then_some(())
    });
    mesh(
        &z1,
        &cert,
        &key,
        json!({"localityAwareLoadBalancing": true}),
    );
    wait_for(
        "only the local zone answers",
        Duration::from_secs(30),
        || {
            let a = answers(20);
            (a.len() == 1 && a.contains("backend-zone-1")).then_some(())
        },
    );
    local_backend.proc.kill();
    wait_for(
        "the remote zone answers once the local backend is gone",
        Duration::from_secs(30),
        || {
            let a = answers(10);
            (a.len() == 1 && a.contains("backend-zone-2")).then_some(())
        },
    );

    // Zone egress in zone-1: the client dials it and it forwards to zone-2's ingress.
    let ze_port = free_port();
    let egress = zone_proxy(
        &z1,
        dir.path(),
        "egress",
        "ze-1",
        json!({"address": "127.0.0.1", "port": ze_port}),
    );
    mesh(&z1, &cert, &key, json!({"zoneEgress": true}));
    wait_for(
        "the client's backend cluster points at the egress",
        Duration::from_secs(30),
        || {
            let e = client.endpoints("backend");
            (e == [format!("127.0.0.1:{ze_port}")]).then_some(())
        },
    );
    let before = egress.stat("cluster.default_backend.upstream_cx_total");
    let body = wait_for("200 through the egress", Duration::from_secs(30), || {
        via(out).ok()
    });
    assert_eq!(body, "backend-zone-2");
    let after = wait_for("egress stats", Duration::from_secs(10), || {
        egress
            .stat("cluster.default_backend.upstream_cx_total")
            .filter(|n| *n > before.unwrap_or(0))
    });
    assert!(after >= 1, "{after}");
    let (ok_out, eg, _) = z1.kumactl(&["inspect", "zone-egresses"]);
    assert!(ok_out && eg.contains("ze-1"), "{eg}");
    drop(ingress);
}
