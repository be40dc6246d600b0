//! Inspecting proxies through the CP (Kuma's inspect endpoints, `kumactl inspect dataplane
//! --type config-dump|stats|clusters`): the CP reaches each Envoy's admin through the proxy's
//! `kuma:envoy:admin` listener with mutual TLS from the zone's `envoy-admin` CA; a proxy on
//! 127.0.0.1 is read over the admin's own loopback port. Real kuma-cp, kuma-dp and Envoy.

use std::time::Duration;

use e2e::*;

/// The envoy-admin CA of `cp` (GlobalSecret `envoy-admin-ca`: certificate PEM then key
/// PEM), read as the admin the test is.
fn envoy_admin_ca(cp: &ControlPlane) -> (String, String) {
    let (code, secret) = cp.get("/global-secrets/envoy-admin-ca");
    assert_eq!(code, 200, "{secret}");
    let data = base64_decode(secret["data"].as_str().expect("data"));
    let text = String::from_utf8(data).expect("PEM text");
    let split = text.find("-----BEGIN PRIVATE KEY-----").expect("key block");
    (text[..split].to_string(), text[split..].to_string())
}

/// The active `kuma:envoy:admin` listener of a proxy, if any.
fn admin_listener(dp: &DataplaneProc) -> Option<serde_json::Value> {
    let dump = dp.config_dump("dynamic_listeners")?;
    dump["configs"].as_array()?.iter().find_map(|l| {
        (l["name"].as_str()? == "kuma:envoy:admin" && l.get("warming_state").is_none())
            .then(|| l["active_state"]["listener"].clone())
    })
}

#[test]
fn a_proxy_is_inspectable_through_the_cp_and_its_admin_listener_takes_only_the_cps_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let work = Workload::http("web");
    let inbound = free_port();
    let admin_port = free_port();
    let web = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            address: "127.0.3.2",
            inbounds: vec![(inbound, work.port, "web", "http")],
            admin_port: Some(admin_port),
            ..Default::default()
        },
        dir.path(),
    );
    // A proxy on 127.0.0.1: no admin listener (it would collide with the admin itself);
    // the CP reads its admin directly.
    let local = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "local",
            inbounds: vec![(free_port(), work.port, "local", "tcp")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&web, &local]);
    let admin_url = |path: &str| format!("https://127.0.3.2:{admin_port}{path}");
    wait_for("the admin listener", Duration::from_secs(20), || {
        admin_listener(&web).map(|_| ())
    });

    // config-dump: the proxy's listeners, the dataplane token redacted, no private key.
    let (ok, dump, err) = cp.kumactl(&["inspect", "dataplane", "web", "--type", "config-dump"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&dump).expect("config dump JSON");
    assert!(json["configs"].is_array());
    assert!(
        dump.contains(&format!("\"inbound:127.0.3.2:{inbound}\"")),
        "no inbound listener"
    );
    assert!(dump.contains("\"kuma:envoy:admin\""), "no admin listener");
    assert!(dump.contains("[redacted]"), "token not redacted");
    assert!(!dump.contains("eyJ"), "a JWT in the config dump");
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a private key in the config dump"
    );
    println!("config dump through the CP: {} bytes", dump.len());
    // stats and clusters: Envoy's text.
    let (ok, stats, err) = cp.kumactl(&["inspect", "dataplane", "web", "--type", "stats"]);
    assert!(ok, "{err}");
    assert!(stats.contains("server.live: 1"), "{stats}");
    let (ok, clusters, err) = cp.kumactl(&["inspect", "dataplane", "web", "--type", "clusters"]);
    assert!(ok, "{err}");
    assert!(clusters.contains("kuma:envoy:admin::"), "{clusters}");
    // The REST shapes: content types, JSON formats, Kuma's errors.
    let (code, body) = cp.get("/meshes/default/dataplanes/web/clusters?format=json");
    assert_eq!(code, 200);
    assert!(body["cluster_statuses"].is_array(), "{body}");
    let (code, body) = cp.get("/meshes/default/dataplanes/web/config");
    assert_eq!(code, 404);
    assert_eq!(body["title"], "Could not execute admin operation");
    let (code, body) = cp.get("/meshes/default/dataplanes/nope/xds");
    assert_eq!(code, 404);
    assert_eq!(body["title"], "Could not get dataplane resource");
    let (ok, _, err) = cp.kumactl(&["inspect", "dataplane", "nope", "--type", "stats"]);
    assert!(!ok);
    assert!(err.contains("(404): "), "{err}");

    // The proxy on 127.0.0.1.
    let (ok, stats, err) = cp.kumactl(&["inspect", "dataplane", "local", "--type", "stats"]);
    assert!(ok, "{err}");
    assert!(stats.contains("server.live: 1"), "{stats}");
    assert!(admin_listener(&local).is_none());

    // The admin listener: plaintext reaches /ready only; TLS needs a client certificate
    // from the envoy-admin CA naming kuma-cp.
    let plain = |path: &str| curl(&format!("http://127.0.3.2:{admin_port}{path}"), None);
    assert!(plain("/ready").is_ok(), "{:?}", plain("/ready"));
    assert!(
        plain("/stats").is_err_and(|e| e.contains("404")),
        "{:?}",
        plain("/stats")
    );
    let no_cert = curl(&admin_url("/stats"), None);
    assert!(
        no_cert.is_err(),
        "a TLS client without a certificate got {no_cert:?}"
    );
    let (other_ca, other_key) = openssl_ca(&dir.path().join("other-ca"), "Envoy Admin CA");
    let other = client_cert(&dir.path().join("other"), &other_ca, &other_key, "kuma-cp");
    let r = curl(&admin_url("/stats"), Some(&other));
    assert!(r.is_err(), "a certificate from another CA got {r:?}");
    let (ca, ca_key) = envoy_admin_ca(&cp);
    let wrong_san = client_cert(&dir.path().join("wrong-san"), &ca, &ca_key, "someone");
    let r = curl(&admin_url("/stats"), Some(&wrong_san));
    assert!(r.is_err(), "a certificate without SAN kuma-cp got {r:?}");
    // Control: the same request with a certificate as the CP's passes.
    let right = client_cert(&dir.path().join("right"), &ca, &ca_key, "kuma-cp");
    let r = curl(&admin_url("/stats"), Some(&right));
    assert!(
        r.as_ref().is_ok_and(|b| b.contains("server.live: 1")),
        "{r:?}"
    );
    println!("refused: no certificate ({no_cert:?}); another CA; SAN other than kuma-cp");

    // The server certificate is stable across regenerations (a policy change regenerates).
    let cert_before = admin_listener(&web)
        .map(|l| l.to_string())
        .expect("admin listener");
    let (code, _) = cp.put(
        "/meshes/default/meshtrafficpermissions/allow-all",
        &serde_json::json!({"type": "MeshTrafficPermission", "name": "allow-all", "mesh": "default",
            "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    );
    assert!(code == 200 || code == 201, "{code}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        admin_listener(&web).map(|l| l.to_string()),
        Some(cert_before),
        "the admin listener changed"
    );
}

/// Multi-zone: global forwards an inspection to the proxy's zone over the zone's KDS
/// connection (the proxy named by its global, hashed name); with the zone CP gone, Kuma's
/// 400 "zone is offline".
#[test]
fn global_inspects_a_zone_proxy_over_kds_and_says_when_the_zone_is_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let global = ControlPlane::start_global(&d.join("global"), &[]);
    let token = global.zone_token("zone-1", &["cp"], "1h");
    let mut zone = ControlPlane::start_zone(&global, "zone-1", Some(&token), &d.join("z1"), &[]);
    let key = "dataplane-token-signing-key-default-1".to_string();
    wait_for(
        "the default Mesh and its signing key on zone-1",
        Duration::from_secs(20),
        || {
            (zone.names("/meshes").contains(&"default".to_string())
                && zone.names("/meshes/default/secrets").contains(&key))
            .then_some(())
        },
    );
    let work = Workload::http("web");
    let web = DataplaneProc::start(
        &zone,
        &DpSpec {
            name: "web",
            address: "127.0.4.2",
            inbounds: vec![(free_port(), work.port, "web", "http")],
            ..Default::default()
        },
        d,
    );
    DataplaneProc::wait_live(&[&web]);
    // Its name on global: Kuma's hash of the zone's name.
    let global_name = wait_for("web synced to global", Duration::from_secs(20), || {
        global
            .names("/meshes/default/dataplanes")
            .into_iter()
            .find(|n| n.starts_with("web-"))
    });
    let inspect = |kind: &str| {
        global.kumactl(&[
            "inspect",
            "dataplane",
            &global_name,
            "--type",
            kind,
            "--mesh",
            "default",
        ])
    };
    let (ok, stats, err) = wait_for("stats through global", Duration::from_secs(20), || {
        let r = inspect("stats");
        r.0.then_some(r)
    });
    assert!(ok, "{err}");
    assert!(stats.contains("server.live: 1"), "{stats}");
    let (ok, dump, err) = inspect("config-dump");
    assert!(ok, "{err}");
    assert!(dump.contains("\"kuma:envoy:admin\""), "no admin listener");
    assert!(!dump.contains("eyJ"), "a JWT in the config dump");
    let (ok, clusters, err) = inspect("clusters");
    assert!(ok, "{err}");
    assert!(clusters.contains("kuma:envoy:admin::"), "{clusters}");
    // The same proxy from its zone, by its own name.
    let (ok, stats, err) = zone.kumactl(&["inspect", "dataplane", "web", "--type", "stats"]);
    assert!(ok, "{err}");
    assert!(stats.contains("server.live: 1"));

    // The zone CP gone: 400, Kuma's title and message.
    zone.kill();
    let (code, body) = wait_for(
        "global to see zone-1 offline",
        // (A request racing the kill waits up to 10 s for its answer, then 400 as well.)
        Duration::from_secs(30),
        || {
            let r = global.get(&format!("/meshes/default/dataplanes/{global_name}/stats"));
            let offline = r.1["detail"]
                .as_str()
                .is_some_and(|d| d.ends_with("zone is offline"));
            (r.0 == 400 && offline).then_some(r)
        },
    );
    assert_eq!(code, 400);
    assert_eq!(body["title"], "Could not execute admin operation", "{body}");
    assert_eq!(
        body["detail"], "could not send StatsRequest: zone is offline",
        "{body}"
    );
    let (ok, _, err) = inspect("stats");
    assert!(!ok);
    assert!(
        err.contains("(400): ") && err.contains("zone is offline"),
        "{err}"
    );
}

/// Zone proxies are inspectable too (`kumactl inspect zoneingress|zoneegress`), through
/// their own `kuma:envoy:admin` listeners.
#[test]
fn zone_ingresses_and_egresses_are_inspectable() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[
            ("KUMA_MULTIZONE_ZONE_NAME", "zone-1"),
            ("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", "none"),
        ],
    );
    let port = free_port();
    let ingress = ZoneProxyProc::start(
        &[],
        &cp,
        dir.path(),
        ZoneProxySpec {
            kind: "ingress",
            name: "zi-1",
            networking: serde_json::json!({"address": "127.0.3.5", "port": port,
                "advertisedAddress": "127.0.3.5", "advertisedPort": port}),
            token: None,
            delta: false,
        },
    );
    let egress = ZoneProxyProc::start(
        &[],
        &cp,
        dir.path(),
        ZoneProxySpec {
            kind: "egress",
            name: "ze-1",
            networking: serde_json::json!({"address": "127.0.3.6", "port": free_port()}),
            token: None,
            delta: false,
        },
    );
    for (kind, name, admin) in [
        ("zoneingress", "zi-1", ingress.admin),
        ("zoneegress", "ze-1", egress.admin),
    ] {
        let (ok, stats, err) = wait_for(&format!("{name} stats"), Duration::from_secs(30), || {
            let r = cp.kumactl(&["inspect", kind, name, "--type", "stats"]);
            (r.0 && r.1.contains("server.live: 1")).then_some(r)
        });
        assert!(ok, "{err}");
        assert!(stats.contains("server.live: 1"));
        let (ok, clusters, err) = cp.kumactl(&["inspect", kind, name, "--type", "clusters"]);
        assert!(ok, "{err}");
        assert!(
            clusters.contains(&format!("kuma:envoy:admin::127.0.0.1:{}", admin.port())),
            "{clusters}"
        );
        let (ok, dump, err) = cp.kumactl(&["inspect", kind, name]);
        assert!(ok, "{err}");
        assert!(
            dump.contains("\"kuma:envoy:admin\""),
            "{name}: no admin listener"
        );
        let (ok, _, err) = cp.kumactl(&["inspect", kind, name, "--type", "policies"]);
        assert!(!ok);
        assert!(err.contains("Policies are not applied on"), "{err}");
    }
}
