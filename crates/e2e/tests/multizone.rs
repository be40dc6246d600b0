//! Multi-zone with real processes and real Envoy: a global control plane and two zone
//! control planes, each in its own network namespace (`e2e::netns`), synced over KDS (TLS
//! verified against a CA made for the test, zone tokens). A zone's proxies and workloads
//! listen on its own loopback, so the other zone reaches them only through its ZoneIngress.
//!
//! One scenario, in order: no cross-zone route without mTLS; with mTLS and no permission,
//! 403; with a permission, 200 through zone-2's ingress; a permission by `kuma.io/zone`
//! allows one zone's clients and not the other's; global SIGKILLed and a zone CP SIGKILLed
//! while traffic flows: zero failed requests; zone-2's ingress stopped stops cross-zone
//! traffic, started brings it back; global restarted: both zones resync to the same lists;
//! `Zone.enabled: false` leaves only local instances; with `routing.zoneEgress` cross-zone
//! traffic goes through zone-1's ZoneEgress; a zone CP's death shows on global within 10 s.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::netns::Topology;
use e2e::*;
use serde_json::{Value, json};

fn ok(code: u16, body: &Value) {
    assert!(code == 200 || code == 201, "{code} {body}");
}

fn launcher(t: &Topology, name: &str) -> Vec<String> {
    t.exec(name)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The status and body of one GET through an outbound at `addr` (0 when it failed).
fn get(addr: SocketAddr) -> (u16, String) {
    http_probe_at(addr).unwrap_or((0, String::new()))
}

fn mtp_from(from: Value) -> Value {
    json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "backend-access",
        "spec": {"targetRef": {"kind": "MeshService", "name": "backend"},
                 "from": [{"targetRef": from, "default": {"action": "Allow"}}]}})
}

/// Requests through `addr` for 3.5 s, `kill` run 0.5 s in: not one may fail.
fn no_failures_while(addr: SocketAddr, what: &str, kill: impl FnOnce()) {
    let load = Load::start(Duration::from_millis(20), move || {
        let (code, body) = get(addr);
        (code != 200).then(|| format!("{code} {body}"))
    });
    std::thread::sleep(Duration::from_millis(500));
    kill();
    std::thread::sleep(Duration::from_secs(3));
    let (sent, failed, errors) = load.stop();
    assert!(sent > 50, "too few requests: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed while {what}: {errors:?}"
    );
    eprintln!("while {what}: {failed} of {sent} cross-zone requests failed");
}

/// Sorted names of a list endpoint.
fn listing(cp: &ControlPlane, path: &str) -> Vec<String> {
    cp.names(path)
}

fn zone_cp(
    t: &Topology,
    dir: &Path,
    ns: &str,
    zone: &str,
    global: &ControlPlane,
    ca: &Path,
    token: &str,
) -> ControlPlane {
    ControlPlane::start_zone_at(
        &strs(&launcher(t, ns)),
        Some(&t.ip(ns)),
        global,
        zone,
        Some(token),
        ca,
        &dir.join(ns),
        &[],
    )
}

#[test]
fn cross_zone_traffic_through_ingresses_with_mtls_permissions_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = Topology::new("mz", 77, &["g", "z1", "z2"]);
    let (ca, crt, key) = server_cert(&d.join("kds-tls"), &t.ip("g"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let global_env = [
        ("KUMA_MODE", "global"),
        ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE", crt.as_str()),
        ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_KEY_FILE", key.as_str()),
        (
            "KUMA_MULTIZONE_GLOBAL_KDS_ZONE_INSIGHT_FLUSH_INTERVAL",
            "1s",
        ),
    ];
    let mut global = ControlPlane::start_at(
        &strs(&launcher(&t, "g")),
        Some(&t.ip("g")),
        &d.join("g"),
        &global_env,
    );
    let z1_token = global.zone_token("zone-1", &["cp"], "1h");
    let z2_token = global.zone_token("zone-2", &["cp"], "1h");
    let mut z1 = zone_cp(&t, d, "z1", "zone-1", &global, &ca, &z1_token);
    let z2 = zone_cp(&t, d, "z2", "zone-2", &global, &ca, &z2_token);
    // The Mesh and its dataplane token signing key (a Secret, synced after the Mesh) on both
    // zones: each zone issues its proxies' tokens with global's key.
    let key = "dataplane-token-signing-key-default-1".to_string();
    for z in [&z1, &z2] {
        wait_for(
            "the default Mesh and its signing key",
            Duration::from_secs(20),
            || {
                (z.names("/meshes").contains(&"default".to_string())
                    && z.names("/meshes/default/secrets").contains(&key))
                .then_some(())
            },
        );
    }
    let (l1, l2) = (launcher(&t, "z1"), launcher(&t, "z2"));
    let (l1, l2) = (strs(&l1), strs(&l2));
    // Each zone's proxies and workloads keep their files apart (same names in both zones).
    let (d1, d2) = (d.join("z1-proxies"), d.join("z2-proxies"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();

    // Zone-2: the backend, and its ingress (advertised on the namespace's address).
    let backend_app = NsWorkload::http(&l2, &d2, "backend-zone-2");
    let backend = DataplaneProc::start_under(
        &l2,
        &z2,
        &DpSpec {
            name: "backend",
            inbounds: vec![(free_port(), backend_app.port, "backend", "http")],
            ..Default::default()
        },
        &d2,
    );
    let zi_port = free_port();
    let zi_net = json!({"address": t.ip("z2"), "port": zi_port, "advertisedAddress": t.ip("z2"), "advertisedPort": zi_port});
    let zi_token = global.zone_token("zone-2", &["ingress"], "1h");
    let mut ingress = ZoneProxyProc::start(
        &l2,
        &z2,
        &d2,
        ZoneProxySpec {
            kind: "ingress",
            name: "zi-1",
            networking: zi_net.clone(),
            token: Some(&zi_token),
            delta: false,
        },
    );
    // Zone-1 and zone-2 clients, their outbounds on their namespace's address.
    let client = |launcher: &[&str], cp: &ControlPlane, ns: &str, dir: &Path| {
        let out = free_port();
        let ip = t.ip(ns);
        let spec = DpSpec {
            name: "client",
            inbounds: vec![(free_port(), free_port(), "client", "http")],
            outbounds: vec![(out, "backend")],
            outbound_address: &ip,
            ..Default::default()
        };
        let dp = DataplaneProc::start_under(launcher, cp, &spec, dir);
        (dp, SocketAddr::new(ip.parse().unwrap(), out))
    };
    let (client1, via1) = client(&l1, &z1, "z1", &d1);
    let (client2, via2) = client(&l2, &z2, "z2", &d2);
    DataplaneProc::wait_live(&[&backend, &client1, &client2]);

    // Zone-2's ingress reaches zone-1 through global, announcing the backend.
    wait_for(
        "zone-2's ingress on zone-1",
        Duration::from_secs(20),
        || {
            let (_, v) = z1.get("/zoneingresses");
            v["items"]
                .as_array()?
                .iter()
                .find(|zi| {
                    zi["zone"] == "zone-2"
                        && zi["availableServices"].as_array().is_some_and(|s| {
                            s.iter().any(|s| s["tags"]["kuma.io/service"] == "backend")
                        })
                })
                .cloned()
        },
    );
    // Without mTLS, remote ingresses are not used: no route to a service only in zone-2.
    std::thread::sleep(Duration::from_secs(1));
    assert_ne!(get(via1).0, 200, "cross-zone without mTLS");
    assert_eq!(
        get(via2),
        (200, "backend-zone-2".into()),
        "local traffic without mTLS"
    );

    // mTLS on (global), no permission: refused as in one zone.
    let (code, body) = global.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default",
        "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    ok(code, &body);
    wait_for(
        "403 across zones with mTLS and no permission",
        Duration::from_secs(30),
        || (get(via1).0 == 403).then_some(()),
    );
    // A permission for everyone in the mesh: 200 through zone-2's ingress.
    let (code, body) = global.put(
        "/meshes/default/meshtrafficpermissions/backend-access",
        &mtp_from(json!({"kind": "Mesh"})),
    );
    ok(code, &body);
    wait_for(
        "200 across zones with a permission",
        Duration::from_secs(30),
        || (get(via1) == (200, "backend-zone-2".to_string())).then_some(()),
    );
    let through = ingress
        .stat("cluster.default_backend.upstream_cx_total")
        .unwrap_or(0);
    assert!(
        through > 0,
        "zone-2's ingress carried no connection to the backend"
    );

    // A permission by zone: zone-1's clients only, then zone-2's only.
    for (allowed, denied, zone) in [(via1, via2, "zone-1"), (via2, via1, "zone-2")] {
        let (code, body) = global.put(
            "/meshes/default/meshtrafficpermissions/backend-access",
            &mtp_from(json!({"kind": "MeshSubset", "tags": {"kuma.io/zone": zone}})),
        );
        ok(code, &body);
        wait_for(
            &format!("only {zone}'s clients allowed"),
            Duration::from_secs(30),
            || (get(allowed).0 == 200 && get(denied).0 == 403).then_some(()),
        );
    }
    let (code, body) = global.put(
        "/meshes/default/meshtrafficpermissions/backend-access",
        &mtp_from(json!({"kind": "Mesh"})),
    );
    ok(code, &body);
    wait_for("both zones allowed again", Duration::from_secs(30), || {
        (get(via1).0 == 200 && get(via2).0 == 200).then_some(())
    });

    // Lists before anything dies (compared after global's restart).
    let snapshot = |g: &ControlPlane, a: &ControlPlane, b: &ControlPlane| {
        (
            listing(g, "/meshes/default/dataplanes"),
            listing(g, "/zoneingresses"),
            listing(a, "/meshes/default/meshtrafficpermissions"),
            listing(b, "/meshes/default/meshtrafficpermissions"),
            listing(a, "/zoneingresses"),
            listing(a, "/meshes/default/secrets"),
        )
    };
    let before = snapshot(&global, &z1, &z2);

    // Global dies, then zone-1's CP: cross-zone traffic goes on, not one request fails.
    no_failures_while(via1, "global was down", || global.kill());
    no_failures_while(via1, "zone-1's CP was down", || z1.kill());
    z1.restart();

    // Global back: both zones resync to the same lists.
    global.restart();
    wait_for(
        "the same lists after global's restart",
        Duration::from_secs(30),
        || (snapshot(&global, &z1, &z2) == before).then_some(()),
    );
    assert_eq!(get(via1).0, 200);

    // Zone-2's ingress stopped: cross-zone traffic stops; started again: it comes back.
    ingress.proc.kill();
    wait_for(
        "cross-zone traffic to stop with the ingress",
        Duration::from_secs(30),
        || (get(via1).0 != 200).then_some(()),
    );
    assert_eq!(
        get(via2).0,
        200,
        "zone-2's local traffic does not need the ingress"
    );
    ingress = ZoneProxyProc::start(
        &l2,
        &z2,
        &d2,
        ZoneProxySpec {
            kind: "ingress",
            name: "zi-1",
            networking: zi_net,
            token: Some(&zi_token),
            delta: false,
        },
    );
    wait_for(
        "cross-zone traffic back with the ingress",
        Duration::from_secs(30),
        || (get(via1).0 == 200).then_some(()),
    );

    // A local replica in zone-1 too: both zones answer; zone-2 disabled on global: only the local one.
    let local_app = NsWorkload::http(&l1, &d1, "backend-zone-1");
    let local = DataplaneProc::start_under(
        &l1,
        &z1,
        &DpSpec {
            name: "backend",
            inbounds: vec![(free_port(), local_app.port, "backend", "http")],
            ..Default::default()
        },
        &d1,
    );
    DataplaneProc::wait_live(&[&local]);
    let answers = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| get(via1))
            .filter(|(c, _)| *c == 200)
            .map(|(_, b)| b)
            .collect()
    };
    wait_for(
        "both zones' replicas answer zone-1's client",
        Duration::from_secs(30),
        || (answers(20).len() == 2).then_some(()),
    );
    let (code, body) = global.put(
        "/zones/zone-2",
        &json!({"type": "Zone", "name": "zone-2", "enabled": false}),
    );
    ok(code, &body);
    wait_for(
        "only zone-1's replica once zone-2 is disabled",
        Duration::from_secs(30),
        || {
            (answers(20) == std::collections::BTreeSet::from(["backend-zone-1".to_string()]))
                .then_some(())
        },
    );
    let (code, body) = global.put(
        "/zones/zone-2",
        &json!({"type": "Zone", "name": "zone-2", "enabled": true}),
    );
    ok(code, &body);
    wait_for(
        "zone-2's replica back once enabled",
        Duration::from_secs(30),
        || (answers(20).len() == 2).then_some(()),
    );

    // Zone egress: with `routing.zoneEgress`, zone-1 reaches zone-2 through its own egress.
    let ze_port = free_port();
    let ze_token = global.zone_token("zone-1", &["egress"], "1h");
    let egress = ZoneProxyProc::start(
        &l1,
        &z1,
        &d1,
        ZoneProxySpec {
            kind: "egress",
            name: "ze-1",
            networking: json!({"address": "127.0.0.1", "port": ze_port}),
            token: Some(&ze_token),
            delta: false,
        },
    );
    let (code, body) = global.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default",
        "routing": {"zoneEgress": true},
        "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    ok(code, &body);
    let through_egress = || {
        egress
            .stat("cluster.default_backend.upstream_cx_total")
            .unwrap_or(0)
    };
    wait_for(
        "zone-2's replica reached through zone-1's egress",
        Duration::from_secs(30),
        || (answers(20).contains("backend-zone-2") && through_egress() > 0).then_some(()),
    );
    // Requests keep flowing through it (its connection is reused: count bytes).
    let sent = || {
        egress
            .stat("cluster.default_backend.upstream_cx_tx_bytes_total")
            .unwrap_or(0)
    };
    let before = sent();
    wait_for(
        "more cross-zone bytes through the egress",
        Duration::from_secs(30),
        || (answers(20).contains("backend-zone-2") && sent() > before).then_some(()),
    );
    drop(egress);
    drop(ingress);

    // Zone-2's CP dies: global shows it offline within 10 s.
    let mut z2 = z2;
    let killed = Instant::now();
    z2.kill();
    wait_for("zone-2 offline on global", Duration::from_secs(10), || {
        let (code, v) = global.get("/zones+insights/zone-2");
        (code == 200
            && v["zoneInsight"]["subscriptions"]
                .as_array()
                .is_some_and(|s| s.last().is_some_and(|s| s.get("disconnectTime").is_some())))
        .then_some(())
    });
    eprintln!(
        "zone-2 offline on global {:?} after its CP was killed",
        killed.elapsed()
    );
}
