//! Prometheus discovery and the Prometheus endpoint of proxies, against a real kuma-cp (and
//! real Envoy): `GET /http_sd` and MADS (`POST /v3/discovery:monitoringassignments`) on the
//! monitoring assignment server follow Dataplanes created and deleted through the API within
//! a second, and a kuma-dp sidecar in a mesh with a Prometheus backend gets the
//! `kuma:metrics:prometheus` listener, routed to `kuma:metrics:hijacker`, which goes away
//! with the backend.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;

use serde_json::{Value, json};

const MADS: &str = "/v3/discovery:monitoringassignments";

fn put_ok(cp: &ControlPlane, path: &str, body: &Value) {
    let (code, resp) = cp.put(path, body);
    assert!(code == 200 || code == 201, "PUT {path}: {code} {resp}");
}

fn mesh_with_backend(cp: &ControlPlane, mesh: &str, port: u16) {
    put_ok(
        cp,
        &format!("/meshes/{mesh}"),
        &json!({"type": "Mesh", "name": mesh, "metrics": {
            "enabledBackend": "prom",
            "backends": [{"name": "prom", "type": "prometheus",
                          "conf": {"port": port, "path": "/metrics", "skipMTLS": true}}]
        }}),
    );
}

fn put_dataplane(cp: &ControlPlane, mesh: &str, name: &str, address: &str, service: &str) {
    put_ok(
        cp,
        &format!("/meshes/{mesh}/dataplanes/{name}"),
        &json!({"type": "Dataplane", "mesh": mesh, "name": name,
        "networking": {"address": address, "inbound": [
            {"port": 8080, "servicePort": 8081,
             "tags": {"kuma.io/service": service, "version": "v1"}}
        ]}}),
    );
}

/// `GET /http_sd[?mesh=]`: status, Content-Type, parsed body.
fn http_sd(cp: &ControlPlane, query: &str) -> (u16, String, Value) {
    let mut s = std::net::TcpStream::connect(cp.mads).expect("connect to MADS");
    write!(
        s,
        "GET /http_sd{query} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (
        status,
        ctype,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

fn dataplanes_in(sd: &Value) -> Vec<String> {
    sd.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            g["labels"]["__meta_kuma_dataplane"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Polls `/http_sd` every 20 ms until `pred` holds; the time it took.
fn until_sd(cp: &ControlPlane, what: &str, pred: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let (code, _, body) = http_sd(cp, "");
        if code == 200 && pred(&body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: not seen within 5s; last /http_sd: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// MADS request; `(status, body)`.
fn mads(cp: &ControlPlane, version: &str, fetch_timeout: &str) -> (u16, String) {
    let body = json!({"version_info": version, "response_nonce": "",
        "type_url": "type.googleapis.com/kuma.observability.v1.MonitoringAssignment",
        "resource_names": [], "node": {"id": "e2e"}})
    .to_string();
    http_with(
        "POST",
        cp.mads,
        &format!("{MADS}?fetch-timeout={fetch_timeout}"),
        &[("Accept", "application/json")],
        Some(&body),
    )
    .expect("MADS request")
}

#[test]
fn http_sd_and_mads_follow_dataplanes_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (code, _, body) = http_sd(&cp, "");
    assert_eq!((code, body), (200, json!([])), "no mesh has a backend yet");
    mesh_with_backend(&cp, "default", 5670);
    put_ok(
        &cp,
        "/meshes/quiet",
        &json!({"type": "Mesh", "name": "quiet"}),
    );

    // A new Dataplane is listed within a second, with exactly these labels.
    put_dataplane(&cp, "default", "web-1", "127.0.5.1", "web");
    let took = until_sd(&cp, "web-1 listed", |sd| dataplanes_in(sd) == ["web-1"]);
    println!("/http_sd lists a new Dataplane {took:?} after its PUT returned");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (code, ctype, sd) = http_sd(&cp, "");
    assert_eq!((code, ctype.as_str()), (200, "application/json"));
    assert_eq!(
        sd,
        json!([{"targets": ["127.0.5.1:5670"], "labels": {
            "__meta_kuma_mesh": "default",
            "__meta_kuma_dataplane": "web-1",
            "__meta_kuma_service": "web",
            "__meta_kuma_zone": "default",
            "__meta_kuma_label_kuma_io_service": "web",
            "__meta_kuma_label_kuma_io_services": ",web,",
            "__meta_kuma_label_kuma_io_zone": "default",
            "__meta_kuma_label_kuma_io_zones": ",default,",
            "__meta_kuma_label_version": "v1",
            "__meta_kuma_label_versions": ",v1,",
            "__metrics_path__": "/metrics",
            "__scheme__": "http"
        }}])
    );
    // A Dataplane of a mesh without a backend is not listed.
    put_dataplane(&cp, "quiet", "q-1", "127.0.5.9", "q");

    // MADS: the whole state at first, then 304 for the same version without waiting.
    let (code, body) = mads(&cp, "", "0s");
    assert_eq!(code, 200, "{body}");
    let first: Value = serde_json::from_str(&body).unwrap();
    let version = first["version_info"].as_str().unwrap().to_string();
    assert_eq!(
        first["resources"],
        json!([{"@type": "type.googleapis.com/kuma.observability.v1.MonitoringAssignment",
            "mesh": "default", "service": "web", "targets": [{
                "name": "web-1", "scheme": "http", "address": "127.0.5.1:5670",
                "metrics_path": "/metrics", "labels": {
                    "kuma_io_service": "web", "kuma_io_services": ",web,",
                    "kuma_io_zone": "default", "kuma_io_zones": ",default,",
                    "version": "v1", "versions": ",v1,"}}]}])
    );
    assert_eq!(mads(&cp, &version, "0s"), (304, String::new()));

    // A long poll with the current version returns when a Dataplane is added.
    let polled = Arc::new(Mutex::new(None));
    let poller = {
        let (polled, version) = (polled.clone(), version.clone());
        let cp_mads = cp.mads;
        std::thread::spawn(move || {
            let body = json!({"version_info": version, "node": {"id": "e2e"}}).to_string();
            let r = http_with(
                "POST",
                cp_mads,
                &format!("{MADS}?fetch-timeout=10s"),
                &[],
                Some(&body),
            )
            .expect("long poll");
            *polled.lock().unwrap() = Some((r, Instant::now()));
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        polled.lock().unwrap().is_none(),
        "the long poll answered before any change"
    );
    let added = Instant::now();
    put_dataplane(&cp, "default", "web-2", "127.0.5.2", "web");
    poller.join().unwrap();
    let ((code, body), answered) = polled.lock().unwrap().take().unwrap();
    let delay = answered - added;
    println!("MADS long poll answered {delay:?} after the PUT of a new Dataplane");
    assert_eq!(code, 200, "{body}");
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    let next: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(next["version_info"], first["version_info"]);
    let names: Vec<_> = next["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["targets"][0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);

    // ?mesh= filters; a Dataplane override of the port is honoured.
    mesh_with_backend(&cp, "other", 5671);
    put_ok(
        &cp,
        "/meshes/other/dataplanes/o-1",
        &json!({"type": "Dataplane", "mesh": "other", "name": "o-1",
            "networking": {"address": "127.0.5.3", "advertisedAddress": "127.0.6.3",
                "inbound": [{"port": 8080, "tags": {"kuma.io/service": "o"}}]},
            "metrics": {"type": "prometheus", "conf": {"port": 9999, "path": "/stats"}}}),
    );
    until_sd(&cp, "o-1 listed", |sd| dataplanes_in(sd).len() == 3);
    let (_, _, only) = http_sd(&cp, "?mesh=other");
    assert_eq!(dataplanes_in(&only), ["o-1"]);
    assert_eq!(only[0]["targets"], json!(["127.0.6.3:9999"]));
    assert_eq!(only[0]["labels"]["__metrics_path__"], "/stats");
    let (_, _, default) = http_sd(&cp, "?mesh=default");
    assert_eq!(dataplanes_in(&default), ["web-1", "web-2"]);

    // A deleted Dataplane is gone within a second.
    assert_eq!(cp.delete("/meshes/default/dataplanes/web-1"), 200);
    let took = until_sd(&cp, "web-1 gone", |sd| {
        !dataplanes_in(sd).contains(&"web-1".to_string())
    });
    println!("/http_sd drops a deleted Dataplane {took:?} after its DELETE returned");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Taking the backend away empties the mesh.
    put_ok(
        &cp,
        "/meshes/other",
        &json!({"type": "Mesh", "name": "other"}),
    );
    until_sd(&cp, "mesh other emptied", |sd| {
        dataplanes_in(sd) == ["web-2"]
    });
}

/// A stand-in for kuma-dp's metrics hijacker on its socket (open to every user: Envoy may
/// run as another one): answers every request with `marker` and records the request lines
/// it saw.
fn stand_in_hijacker(path: &str, marker: &'static str) -> Arc<Mutex<Vec<String>>> {
    let listener = UnixListener::bind(path).expect("binding the hijacker stand-in");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf);
            log.lock()
                .unwrap()
                .push(text.lines().next().unwrap_or_default().to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{marker}",
                marker.len()
            );
        }
    });
    seen
}

#[test]
fn sidecar_gets_the_prometheus_listener_and_loses_it_with_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let port = free_port();
    put_ok(
        &cp,
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default", "metrics": {
            "enabledBackend": "prom",
            "backends": [{"name": "prom", "type": "prometheus",
                "conf": {"port": port, "path": "/metrics", "skipMTLS": true,
                         "envoy": {"usedOnly": true}}}]}}),
    );
    let work = dir.path().join("w");
    std::fs::create_dir_all(&work).unwrap();
    let web = Workload::http("web");
    let dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web-1",
            address: "127.0.7.1",
            inbounds: vec![(free_port(), web.port, "web", "http")],
            work_dir: Some(&work),
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&dp]);
    let listener = wait_for(
        "the kuma:metrics:prometheus listener",
        Duration::from_secs(15),
        || dp.active_listener_named("kuma:metrics:prometheus"),
    );
    let text = listener.to_string();
    assert_eq!(
        listener["address"]["socket_address"]["address"], "127.0.7.1",
        "{text}"
    );
    assert_eq!(
        listener["address"]["socket_address"]["port_value"], port,
        "{text}"
    );
    let cluster = dp
        .active_cluster("kuma:metrics:hijacker")
        .expect("the kuma:metrics:hijacker cluster");
    let socket = format!("{}/kuma-mh-web-1-default.sock", work.display());
    assert!(cluster.to_string().contains(&socket), "{cluster}");
    let scrape = std::net::SocketAddr::new("127.0.7.1".parse().unwrap(), port);
    if std::path::Path::new(&socket).exists() {
        // kuma-dp's own hijacker serves the socket: Envoy's stats in Prometheus format.
        let (code, body) = http("GET", scrape, "/metrics", None).expect("scraping");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("envoy_"), "{body}");
    } else {
        let seen = stand_in_hijacker(&socket, "stand-in metrics\n");
        let (code, body) = http("GET", scrape, "/metrics", None).expect("scraping");
        assert_eq!((code, body.as_str()), (200, "stand-in metrics\n"));
        // The route rewrote the path to Envoy's stats query (`usedOnly`).
        assert_eq!(seen.lock().unwrap().as_slice(), ["GET /?usedonly HTTP/1.1"]);
    }

    // Taking the backend away removes the listener and the cluster.
    put_ok(
        &cp,
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default"}),
    );
    wait_for("the listener to go away", Duration::from_secs(15), || {
        dp.active_listener_named("kuma:metrics:prometheus")
            .is_none()
            .then_some(())
    });
    wait_for("the cluster to go away", Duration::from_secs(15), || {
        dp.active_cluster("kuma:metrics:hijacker")
            .is_none()
            .then_some(())
    });
    assert!(
        std::net::TcpStream::connect_timeout(&scrape, Duration::from_secs(1)).is_err(),
        "the metrics port still accepts connections"
    );
}

/// Behind Kuma's iptables rules (transparent proxying, inbound capture on): a scrape from
/// another host to `<address>:<metrics port>` is redirected to the inbound capture listener,
/// which hands it to `kuma:metrics:prometheus` by its original destination (as in Kuma: the
/// port is not excluded from the redirect, and needs not be).
#[test]
fn metrics_port_answers_behind_the_transparent_proxy_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // kuma-dp runs as another user: it reads its files here.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = e2e::netns::Topology::new("mt", 81, &["cp", "cl"]);
    let exec_cp = t.exec("cp");
    let exec_cp: Vec<&str> = exec_cp.iter().map(String::as_str).collect();
    let (ca, crt, key) = server_cert(&d.join("cp-tls"), &t.ip("cp"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let mut cp = ControlPlane::start_at(
        &exec_cp,
        Some(&t.ip("cp")),
        &d.join("cp"),
        &[
            ("KUMA_GENERAL_TLS_CERT_FILE", crt.as_str()),
            ("KUMA_GENERAL_TLS_KEY_FILE", key.as_str()),
            ("KUMA_BOOTSTRAP_SERVER_PARAMS_ADMIN_ADDRESS", "0.0.0.0"),
        ],
    );
    cp.dp_endpoint = Some((format!("https://{}:{}", t.ip("cp"), cp.dp_port), ca));
    let port = free_port();
    mesh_with_backend(&cp, "default", port);

    let user = e2e::netns::ensure_user("kuma-dp-test");
    let admin_port = free_port();
    let kumactl = e2e::binary("kumactl").display().to_string();
    let install = t.output(
        "cl",
        &[
            &kumactl,
            "install",
            "transparent-proxy",
            "--kuma-dp-user",
            &user.name,
            "--exclude-inbound-ports",
            &admin_port.to_string(),
        ],
    );
    assert!(
        install.status.success(),
        "install transparent-proxy: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let work = d.join("w");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut launcher = t.exec("cl");
    launcher.extend(user.setpriv());
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let ip = t.ip("cl");
    let spec = DpSpec {
        name: "client",
        inbounds: vec![(8080, 8080, "demo-client", "http")],
        address: &ip,
        transparent: true,
        admin_port: Some(admin_port),
        work_dir: Some(&work),
        ..Default::default()
    };
    let mut client = DataplaneProc::start_under(&launcher, &cp, &spec, d);
    client.admin = std::net::SocketAddr::new(ip.parse().unwrap(), admin_port);
    DataplaneProc::wait_live(&[&client]);
    wait_for(
        "the kuma:metrics:prometheus listener",
        Duration::from_secs(15),
        || client.active_listener_named("kuma:metrics:prometheus"),
    );
    let socket = format!("{}/kuma-mh-client-default.sock", work.display());
    let stand_in = (!std::path::Path::new(&socket).exists())
        .then(|| stand_in_hijacker(&socket, "stand-in metrics\n"));
    let scrape = std::net::SocketAddr::new(ip.parse().unwrap(), port);
    let (code, body) = wait_for(
        "a scrape through the rules",
        Duration::from_secs(10),
        || http("GET", scrape, "/metrics", None).ok(),
    );
    assert_eq!(code, 200, "{body}");
    // The scrape was redirected by the rules (to the inbound capture listener, which
    // handed it over by its original destination), not delivered around them.
    let nat = t.output(
        "cl",
        &[
            "iptables",
            "-t",
            "nat",
            "-L",
            "KUMA_MESH_INBOUND_REDIRECT",
            "-n",
            "-v",
            "-x",
        ],
    );
    let redirected: u64 = String::from_utf8_lossy(&nat.stdout)
        .lines()
        .filter(|l| l.contains("REDIRECT"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        redirected >= 1,
        "no packet went through the inbound redirect: {nat:?}"
    );
    match stand_in {
        Some(seen) => {
            assert_eq!(body, "stand-in metrics\n");
            assert_eq!(seen.lock().unwrap().as_slice(), ["GET / HTTP/1.1"]);
        }
        None => assert!(body.contains("envoy_"), "{body}"),
    }
}

/// `curl` of `url` from source address `from`: the status and body, or `None` without an
/// HTTP answer.
fn curl_from(from: &str, url: &str) -> Option<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "--interface",
            from,
            url,
        ])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (out.status.success() && code != 0).then(|| (code, body.to_string()))
}

/// Mesh mTLS on and the backend's default `tls` (activeMTLSBackend): the proxy's own
/// address scrapes in plaintext; any other source must speak mTLS with a mesh identity, so a
/// plaintext scrape from elsewhere gets no answer.
#[test]
fn with_mesh_mtls_only_the_proxys_own_address_scrapes_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let port = free_port();
    put_ok(
        &cp,
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default",
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]},
            "metrics": {"enabledBackend": "prom", "backends": [
                {"name": "prom", "type": "prometheus", "conf": {"port": port}}]}}),
    );
    let work = dir.path().join("w");
    std::fs::create_dir_all(&work).unwrap();
    let web = Workload::http("web");
    let dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web-1",
            address: "127.0.7.2",
            inbounds: vec![(free_port(), web.port, "web", "http")],
            work_dir: Some(&work),
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&dp]);
    let listener = wait_for(
        "the kuma:metrics:prometheus listener",
        Duration::from_secs(15),
        || dp.active_listener_named("kuma:metrics:prometheus"),
    );
    let chains = listener["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "{listener}");
    let socket = format!("{}/kuma-mh-web-1-default.sock", work.display());
    let seen = (!std::path::Path::new(&socket).exists())
        .then(|| stand_in_hijacker(&socket, "stand-in metrics\n"));
    let url = format!("http://127.0.7.2:{port}/metrics");
    let (code, body) =
        curl_from("127.0.7.2", &url).expect("a plaintext scrape from the proxy's own address");
    assert_eq!(code, 200, "{body}");
    if seen.is_some() {
        assert_eq!(body, "stand-in metrics\n");
    }
    assert_eq!(
        curl_from("127.0.0.1", &url),
        None,
        "a plaintext scrape from another address was answered"
    );
}

/// `tls.mode: providedTLS`: Envoy serves the Prometheus endpoint with the certificate kuma-dp
/// was given (`--metrics-cert-path`, `--metrics-key-path`, sent to the CP as the bootstrap
/// request's `metricsResources`), and MADS tells Prometheus to scrape it over https.
#[test]
fn provided_tls_serves_the_proxys_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let port = free_port();
    put_ok(
        &cp,
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default",
            "metrics": {"enabledBackend": "prom", "backends": [
                {"name": "prom", "type": "prometheus",
                 "conf": {"port": port, "tls": {"mode": "providedTLS"}}}]}}),
    );
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = e2e::server_cert(&certs, "127.0.7.3");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let web = Workload::http("web");
    let dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web-tls",
            address: "127.0.7.3",
            inbounds: vec![(free_port(), web.port, "web", "http")],
            args: &["--metrics-cert-path", &cert, "--metrics-key-path", &key],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&dp]);
    let listener = wait_for(
        "the kuma:metrics:prometheus listener",
        Duration::from_secs(15),
        || dp.active_listener_named("kuma:metrics:prometheus"),
    );
    assert!(
        listener.to_string().contains(&cert),
        "the listener serves kuma-dp's certificate file: {listener}"
    );
    let url = format!("https://127.0.7.3:{port}/metrics");
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "--cacert"])
        .arg(&ca)
        .args(["-w", "\n%{http_code}", &url])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    assert_eq!(code.trim(), "200", "{text}");
    assert!(body.contains("envoy_server_live"), "{body}");
    let (status, _, groups) = http_sd(&cp, "");
    assert_eq!(status, 200);
    assert_eq!(groups[0]["labels"]["__scheme__"], "https", "{groups}");
}
