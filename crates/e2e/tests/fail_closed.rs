//! mTLS fails closed: when the mesh's CA cannot be loaded, proxies keep the configuration
//! they had (permissions included), new proxies of the mesh get none, the API and kumactl
//! say why, and the mesh recovers once the CA is fixed.

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;

fn put_secret(cp: &ControlPlane, name: &str, data: &str) {
    let body = json!({"type": "Secret", "mesh": "default", "name": name,
        "data": base64_encode(data.as_bytes())});
    let (code, body) = cp.put(&format!("/meshes/default/secrets/{name}"), &body);
    assert!(code == 200 || code == 201, "{code} {body}");
}

#[test]
fn a_ca_that_cannot_be_loaded_keeps_the_last_config_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (cert, key) = openssl_ca(dir.path(), "provided-ca");
    put_secret(&cp, "ca-cert", &cert);
    put_secret(&cp, "ca-key", &key);
    let mesh = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-p",
        "backends": [{"name": "ca-p", "type": "provided", "mode": "STRICT",
            "conf": {"cert": {"secret": "ca-cert"}, "key": {"secret": "ca-key"}}}]}});
    let (code, body) = cp.put("/meshes/default", &mesh);
    assert!(code == 200 || code == 201, "{code} {body}");
    // Only the frontend may reach the backend.
    put_mtp(
        &cp,
        "frontend-only",
        json!({"kind": "Mesh"}),
        json!({"kind": "MeshService", "name": "frontend"}),
        "Allow",
    );

    let (web, app) = (Workload::http("backend"), Workload::http("app"));
    let (front_out, intruder_out) = (free_port(), free_port());
    let backend = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "backend",
            inbounds: vec![(free_port(), web.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let frontend = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "frontend",
            inbounds: vec![(free_port(), app.port, "frontend", "http")],
            outbounds: vec![(front_out, "backend")],
            ..Default::default()
        },
        dir.path(),
    );
    let intruder = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "intruder",
            inbounds: vec![(free_port(), app.port, "intruder", "http")],
            outbounds: vec![(intruder_out, "backend")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&backend, &frontend, &intruder]);
    wait_for("frontend allowed", Duration::from_secs(20), || {
        (status_via(front_out) == 200).then_some(())
    });
    wait_for("intruder denied", Duration::from_secs(20), || {
        (status_via(intruder_out) == 403).then_some(())
    });

    // Corrupt the CA certificate.
    put_secret(&cp, "ca-cert", "not a certificate");
    let (ok, out, err) = wait_for("the CA error in kumactl", Duration::from_secs(10), || {
        let r = cp.kumactl(&["inspect", "meshes"]);
        r.1.contains("CA ERROR").then_some(r)
    });
    assert!(ok, "{err}");
    assert!(out.contains("provided/ca-p (STRICT) CA ERROR"), "{out}");
    let (code, insight) = cp.get("/mesh-insights/default");
    assert_eq!(code, 200, "{insight}");
    assert!(insight["mTLS"]["error"].as_str().is_some(), "{insight}");

    // A proxy that starts now gets no configuration.
    let late_app = Workload::http("late");
    let late = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "late",
            inbounds: vec![(free_port(), late_app.port, "late", "http")],
            outbounds: vec![(free_port(), "backend")],
            ..Default::default()
        },
        dir.path(),
    );
    // For 4 s: the intruder stays denied, the frontend keeps working, the late proxy waits.
    let until = Instant::now() + Duration::from_secs(4);
    let (mut denied, mut allowed) = (0, 0);
    while Instant::now() < until {
        assert_eq!(
            status_via(intruder_out),
            403,
            "the intruder must stay denied"
        );
        assert_eq!(
            status_via(front_out),
            200,
            "the frontend keeps its configuration"
        );
        (denied, allowed) = (denied + 1, allowed + 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(denied > 10 && allowed > 10);
    assert!(
        !late.is_live(),
        "a new proxy must get no configuration without its CA"
    );
    assert_eq!(
        late.stat("cluster_manager.cds.update_success"),
        Some(0),
        "the late proxy received clusters"
    );

    // Fix it: the mesh recovers, the late proxy is configured, permissions still hold.
    put_secret(&cp, "ca-cert", &cert);
    DataplaneProc::wait_live(&[&late]);
    wait_for("no CA error in kumactl", Duration::from_secs(10), || {
        (!cp.kumactl(&["inspect", "meshes"]).1.contains("CA ERROR")).then_some(())
    });
    assert_eq!(status_via(front_out), 200);
    assert_eq!(status_via(intruder_out), 403);
}
