//! Single-zone mesh, end to end: real kuma-cp, kuma-dp, Envoy and kumactl on loopback.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::*;

fn names_seen(port: u16, n: usize) -> (BTreeSet<String>, usize) {
    let mut seen = BTreeSet::new();
    let mut failures = 0;
    for _ in 0..n {
        match get_via(port) {
            Ok(name) => {
                seen.insert(name);
            }
            Err(_) => failures += 1,
        }
    }
    (seen, failures)
}

#[test]
fn http_replicas_scale_up_and_down() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (w1, w2, w3) = (
        Workload::http("backend-1"),
        Workload::http("backend-2"),
        Workload::http("backend-3"),
    );
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let b1 = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "backend-1",
            inbounds: vec![(p1, w1.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let _b2 = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "backend-2",
            inbounds: vec![(p2, w2.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let fw = Workload::http("frontend");
    let out = free_port();
    // The frontend speaks delta xDS, the backends state of the world.
    let front = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "frontend",
            inbounds: vec![(free_port(), fw.port, "frontend", "http")],
            outbounds: vec![(out, "backend")],
            delta: true,
            ..Default::default()
        },
        dir.path(),
    );
    wait_for(
        "frontend to see two backend endpoints",
        Duration::from_secs(30),
        || (front.endpoints("backend").len() == 2).then_some(()),
    );
    // Endpoints are advertised when a proxy registers; its inbound serves once Envoy is LIVE.
    DataplaneProc::wait_live(&[&b1, &_b2, &front]);
    let (seen, failures) = names_seen(out, 20);
    assert_eq!(failures, 0, "requests through the outbound failed");
    assert_eq!(
        seen,
        BTreeSet::from(["backend-1".to_string(), "backend-2".to_string()])
    );

    // A third replica receives traffic within a couple of seconds of its proxy starting.
    let started = Instant::now();
    let _b3 = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "backend-3",
            inbounds: vec![(p3, w3.port, "backend", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    wait_for(
        "backend-3 to receive traffic",
        Duration::from_secs(15),
        || names_seen(out, 6).0.contains("backend-3").then_some(()),
    );
    eprintln!(
        "backend-3 served traffic {:?} after its kuma-dp started",
        started.elapsed()
    );

    // All three are online, through the API and kumactl.
    for n in ["backend-1", "backend-2", "backend-3", "frontend"] {
        wait_for(&format!("{n} online"), Duration::from_secs(10), || {
            cp.is_online("default", n).then_some(())
        });
    }
    let (ok, table, err) = cp.kumactl(&["inspect", "dataplanes"]);
    assert!(ok, "kumactl inspect dataplanes failed: {err}");
    for n in ["backend-1", "backend-2", "backend-3", "frontend"] {
        let line = table
            .lines()
            .find(|l| l.contains(n))
            .unwrap_or_else(|| panic!("{n} missing from:\n{table}"));
        assert!(line.contains("Online"), "{n} not online:\n{table}");
    }
    let ov = cp.overview("default", "frontend").unwrap();
    let sub = &ov["dataplaneInsight"]["subscriptions"][0];
    assert!(
        sub["version"]["envoy"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{ov}"
    );
    assert!(
        sub["status"]["total"]["responsesAcknowledged"]
            .as_str()
            .is_some(),
        "{ov}"
    );
    assert_eq!(
        ov["dataplane"]["networking"]["inbound"][0]["tags"]["kuma.io/zone"],
        "default"
    );

    // Stop backend-1's kuma-dp: it is deregistered and leaves the other proxies' endpoints.
    let b1_addr = format!("127.0.0.1:{p1}");
    assert!(front.endpoints("backend").contains(&b1_addr));
    let mut b1 = b1;
    let status = b1
        .proc
        .terminate(Duration::from_secs(15))
        .expect("kuma-dp exits on SIGTERM");
    assert!(
        status.success(),
        "kuma-dp exit status after SIGTERM: {status:?}"
    );
    wait_for(
        "backend-1 removed from the frontend's endpoints",
        Duration::from_secs(15),
        || (!front.endpoints("backend").contains(&b1_addr)).then_some(()),
    );
    // It left the endpoints when it started draining; it is deregistered after the delay.
    wait_for("backend-1 deregistered", Duration::from_secs(15), || {
        (cp.get("/meshes/default/dataplanes/backend-1").0 == 404).then_some(())
    });
    let (seen, failures) = names_seen(out, 20);
    assert_eq!(failures, 0);
    assert_eq!(
        seen,
        BTreeSet::from(["backend-2".to_string(), "backend-3".to_string()])
    );
}

#[test]
fn tcp_service_and_mesh_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (code, body) = cp.put(
        "/meshes/other",
        &serde_json::json!({"type": "Mesh", "name": "other"}),
    );
    assert_eq!(code, 201, "{body}");
    let db = Workload::tcp("db-default");
    let db_other = Workload::tcp("db-other");
    let (pd, po) = (free_port(), free_port());
    let _d1 = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "db-1",
            inbounds: vec![(pd, db.port, "db", "tcp")],
            ..Default::default()
        },
        dir.path(),
    );
    let _d2 = DataplaneProc::start(
        &cp,
        &DpSpec {
            mesh: "other",
            name: "db-1",
            inbounds: vec![(po, db_other.port, "db", "tcp")],
            ..Default::default()
        },
        dir.path(),
    );
    let (o1, o2) = (free_port(), free_port());
    let app = Workload::http("app");
    let c1 = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "client",
            inbounds: vec![(free_port(), app.port, "client", "http")],
            outbounds: vec![(o1, "db")],
            ..Default::default()
        },
        dir.path(),
    );
    let c2 = DataplaneProc::start(
        &cp,
        &DpSpec {
            mesh: "other",
            name: "client",
            inbounds: vec![(free_port(), app.port, "client", "http")],
            outbounds: vec![(o2, "db")],
            delta: true,
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("default client endpoints", Duration::from_secs(30), || {
        (c1.endpoints("db").len() == 1).then_some(())
    });
    wait_for("other client endpoints", Duration::from_secs(30), || {
        (c2.endpoints("db").len() == 1).then_some(())
    });
    DataplaneProc::wait_live(&[&_d1, &_d2, &c1, &c2]);
    assert_eq!(
        c1.endpoints("db"),
        vec![format!("127.0.0.1:{pd}")],
        "default mesh must only see its own db"
    );
    assert_eq!(
        c2.endpoints("db"),
        vec![format!("127.0.0.1:{po}")],
        "other mesh must only see its own db"
    );
    for _ in 0..10 {
        assert_eq!(tcp_via(o1).unwrap(), "db-default");
        assert_eq!(tcp_via(o2).unwrap(), "db-other");
    }
}

#[test]
fn cp_killed_traffic_continues_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let mtp = serde_json::json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all",
        "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}});
    assert_eq!(
        cp.put("/meshes/default/meshtrafficpermissions/allow-all", &mtp)
            .0,
        201
    );
    let w = Workload::http("api-1");
    let _a = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "api-1",
            inbounds: vec![(free_port(), w.port, "api", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let out = free_port();
    let app = Workload::http("web");
    let web = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(free_port(), app.port, "web", "http")],
            outbounds: vec![(out, "api")],
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("web sees api", Duration::from_secs(30), || {
        (web.endpoints("api").len() == 1).then_some(())
    });
    DataplaneProc::wait_live(&[&_a, &web]);
    let stored_mtp = cp.get("/meshes/default/meshtrafficpermissions/allow-all").1;

    // Requests flow from before the kill, through the CP's death and its restart, to after
    // the proxies reconnected; every one must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get_via(out) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    wait_for("requests before the kill", Duration::from_secs(5), || {
        (count(&ok) >= 20).then_some(())
    });
    let at_kill = count(&ok);
    cp.kill();
    std::thread::sleep(Duration::from_secs(2));
    let while_down = count(&ok) - at_kill;
    cp.restart();
    wait_for("proxies reconnect", Duration::from_secs(30), || {
        (cp.is_online("default", "web") && cp.is_online("default", "api-1")).then_some(())
    });
    let at_reconnect = count(&ok);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "CP kill: {at_kill} ok before, {while_down} while down, {} after reconnect, {} failed",
        count(&ok) - at_reconnect,
        count(&failed)
    );
    assert_eq!(
        count(&failed),
        0,
        "requests failed around the CP's death and restart"
    );
    assert!(
        while_down >= 20,
        "too few requests while the CP was down: {while_down}"
    );
    assert!(count(&ok) > at_reconnect, "no request after the reconnect");
    let (code, again) = cp.get("/meshes/default/meshtrafficpermissions/allow-all");
    assert_eq!(code, 200);
    assert_eq!(again["spec"], stored_mtp["spec"]);
    assert_eq!(again["creationTime"], stored_mtp["creationTime"]);
    assert_eq!(cp.get("/meshes/default/dataplanes").1["total"], 2);
    // The restarted CP still drives the proxies: a new replica gets traffic.
    let w2 = Workload::http("api-2");
    let _a2 = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "api-2",
            inbounds: vec![(free_port(), w2.port, "api", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("api-2 receives traffic", Duration::from_secs(20), || {
        names_seen(out, 6).0.contains("api-2").then_some(())
    });
    for _ in 0..50 {
        get_via(out).expect("traffic after restart");
    }
}

#[test]
fn nack_is_visible_in_the_insight() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let w = Workload::http("x");
    // 192.0.2.1 (TEST-NET-1) is not on this host: Envoy cannot bind the inbound listener and
    // rejects the listener update.
    let _dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "unbindable",
            address: "192.0.2.1",
            inbounds: vec![(free_port(), w.port, "x", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let reason = wait_for("a NACK in the insight", Duration::from_secs(30), || {
        let ov = cp.overview("default", "unbindable")?;
        let sub = ov["dataplaneInsight"]["subscriptions"]
            .as_array()?
            .last()?
            .clone();
        let rejected: u64 = sub["status"]["lds"]["responsesRejected"]
            .as_str()?
            .parse()
            .ok()?;
        (rejected > 0).then(|| {
            sub["status"]["lastNack"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    });
    assert!(
        reason.contains("192.0.2.1"),
        "NACK reason should name the address: {reason}"
    );
}
