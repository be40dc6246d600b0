//! Zero trust end to end: builtin-CA mutual TLS and MeshTrafficPermission with real Envoy.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::*;
use serde_json::json;

fn set_mtls(cp: &ControlPlane, mode: &str, expiration: &str) {
    let mesh = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [
        {"name": "ca-1", "type": "builtin", "mode": mode, "dpCert": {"rotation": {"expiration": expiration}}}]}});
    let (code, body) = cp.put("/meshes/default", &mesh);
    assert!(code == 200 || code == 201, "{code} {body}");
}

/// The subject alternative names of the certificate the TLS server on `port` presents, as
/// `openssl x509 -ext subjectAltName` prints them (empty when it speaks no TLS).
fn served_sans(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName 2>/dev/null"))
        .output()
        .expect("running openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// MeshTrafficPermission `allow-all`: every client may reach every proxy.
fn allow_all(cp: &ControlPlane) {
    put_mtp(
        cp,
        "allow-all",
        json!({"kind": "Mesh"}),
        json!({"kind": "Mesh"}),
        "Allow",
    );
}

fn wait_status(port: u16, want: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        (status_via(port) == want).then_some(())
    });
}

fn wait_tcp(port: u16, ok: bool, what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        let passed = if ok {
            tcp_via(port).is_ok()
        } else {
            tcp_denied(port)
        };
        passed.then_some(())
    });
}

/// The sum of a proxy's RBAC denial counters (`<listener>.rbac.denied`, HTTP and network).
fn rbac_denied(proxy: &DataplaneProc) -> u64 {
    proxy.stats_matching("rbac.denied").values().sum()
}

/// A `web` server proxy and a `client` proxy with an outbound to it, configured.
struct WebAndClient {
    /// Port of web's inbound listener.
    inbound: u16,
    /// The client's local outbound port to web.
    out: u16,
    _procs: (DataplaneProc, DataplaneProc),
    _apps: (Workload, Workload),
}

impl WebAndClient {
    fn start(cp: &ControlPlane, dir: &std::path::Path) -> Self {
        let (web, app) = (Workload::http("web"), Workload::http("app"));
        let (inbound, out) = (free_port(), free_port());
        let w = DataplaneProc::start(
            cp,
            &DpSpec {
                name: "web",
                inbounds: vec![(inbound, web.port, "web", "http")],
                ..Default::default()
            },
            dir,
        );
        let c = DataplaneProc::start(
            cp,
            &DpSpec {
                name: "client",
                inbounds: vec![(free_port(), app.port, "client", "http")],
                outbounds: vec![(out, "web")],
                ..Default::default()
            },
            dir,
        );
        wait_for("client configured", Duration::from_secs(30), || {
            (c.endpoints("web").len() == 1).then_some(())
        });
        Self {
            inbound,
            out,
            _procs: (w, c),
            _apps: (web, app),
        }
    }
}

#[test]
fn permissions_open_and_close_http_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    set_mtls(&cp, "STRICT", "1d");
    let (web, db, app) = (
        Workload::http("web"),
        Workload::tcp("db"),
        Workload::http("app"),
    );
    let _w = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(free_port(), web.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let db_inbound = free_port();
    let d = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "db",
            inbounds: vec![(db_inbound, db.port, "db", "tcp")],
            ..Default::default()
        },
        dir.path(),
    );
    let (a_web, a_db, b_web) = (free_port(), free_port(), free_port());
    let a = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "client-a",
            inbounds: vec![(free_port(), app.port, "client-a", "http")],
            outbounds: vec![(a_web, "web"), (a_db, "db")],
            ..Default::default()
        },
        dir.path(),
    );
    let b = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "client-b",
            inbounds: vec![(free_port(), app.port, "client-b", "http")],
            outbounds: vec![(b_web, "web")],
            tags: vec![("team", "b")],
            delta: true,
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("clients configured", Duration::from_secs(30), || {
        (a.endpoints("web").len() == 1
            && a.endpoints("db").len() == 1
            && b.endpoints("web").len() == 1)
            .then_some(())
    });

    // mTLS on and no permission: everything is denied. db's inbound listener is up, so a
    // closed connection is its RBAC's doing, and db's Envoy counts it.
    wait_for(
        "db's inbound listener active",
        Duration::from_secs(20),
        || d.active_listener(db_inbound).map(|_| ()),
    );
    wait_status(a_web, 403, "HTTP denied (403) without any permission");
    let denied_before = rbac_denied(&d);
    wait_tcp(a_db, false, "TCP closed by db without any permission");
    assert!(
        rbac_denied(&d) > denied_before,
        "db's Envoy counted no RBAC denial: {:?}",
        d.stats_matching("rbac")
    );
    assert_eq!(status_via(b_web), 403);

    // Allow client-a: both its HTTP and TCP traffic pass; client-b is still denied.
    put_mtp(
        &cp,
        "allow-a",
        json!({"kind": "Mesh"}),
        json!({"kind": "MeshService", "name": "client-a"}),
        "Allow",
    );
    wait_status(a_web, 200, "client-a allowed over HTTP");
    wait_tcp(a_db, true, "client-a allowed over TCP");
    assert_eq!(tcp_via(a_db).unwrap(), "db");
    assert_eq!(status_via(b_web), 403, "client-b must still be denied");

    // MeshSubset by a custom tag opens client-b.
    put_mtp(
        &cp,
        "allow-team-b",
        json!({"kind": "MeshService", "name": "web"}),
        json!({"kind": "MeshSubset", "tags": {"team": "b"}}),
        "Allow",
    );
    wait_status(b_web, 200, "client-b (team=b) allowed");

    // A more specific Deny for client-a on web closes it, while client-b still passes and
    // client-a's TCP to db (not targeted) still works.
    put_mtp(
        &cp,
        "deny-a-on-web",
        json!({"kind": "MeshService", "name": "web"}),
        json!({"kind": "MeshService", "name": "client-a"}),
        "Deny",
    );
    wait_status(a_web, 403, "client-a denied on web");
    assert_eq!(status_via(b_web), 200);
    assert_eq!(tcp_via(a_db).unwrap(), "db");
    // The Envoy of web counted the denials.
    let insight = cp.overview("default", "client-a").unwrap();
    assert_eq!(
        insight["dataplaneInsight"]["mTLS"]["issuedBackend"], "ca-1",
        "{insight}"
    );
    // kumactl shows the mesh's mTLS state: every proxy holds a certificate from ca-1.
    let table = wait_for(
        "all four proxies with a certificate",
        Duration::from_secs(10),
        || {
            let (ok, out, _) = cp.kumactl(&["inspect", "meshes"]);
            (ok && out.contains("4/4                4/4")).then_some(out)
        },
    );
    let line = table.lines().find(|l| l.starts_with("default")).unwrap();
    assert!(line.contains("builtin/ca-1 (STRICT)"), "{table}");
    assert!(
        line.trim_end().ends_with('3'),
        "three MeshTrafficPermissions: {table}"
    );
}

#[test]
fn server_presents_its_spiffe_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    set_mtls(&cp, "STRICT", "1d");
    let web = Workload::http("web");
    let port = free_port();
    let _w = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(port, web.port, "web", "http")],
            tags: vec![("version", "v1")],
            ..Default::default()
        },
        dir.path(),
    );
    let sans = wait_for("web inbound with TLS", Duration::from_secs(30), || {
        let sans = served_sans(port);
        sans.contains("spiffe://").then_some(sans)
    });
    assert!(sans.contains("URI:spiffe://default/web"), "{sans}");
    assert!(sans.contains("URI:kuma://version/v1"), "{sans}");
    assert!(!sans.contains("spiffe://default/client"), "{sans}");
    // Without a client certificate from the mesh CA the server refuses the handshake with
    // TLS 1.3's "certificate required" alert (116); a client with a certificate of another
    // CA with "unknown CA" (48).
    let certificate_required = openssl_request(port, "");
    assert!(
        certificate_required.contains("alert certificate required")
            || certificate_required.contains("alert number 116"),
        "no 'certificate required' alert for a client without a certificate: {certificate_required}"
    );
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout key.pem -out cert.pem -subj /CN=intruder -days 1 2>/dev/null",
            other.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "openssl could not make a certificate");
    let unknown_ca = openssl_request(
        port,
        &format!("-cert {0}/cert.pem -key {0}/key.pem", other.display()),
    );
    assert!(
        unknown_ca.contains("alert unknown ca") || unknown_ca.contains("alert number 48"),
        "no 'unknown CA' alert for a client certificate of another CA: {unknown_ca}"
    );
    for text in [&certificate_required, &unknown_ca] {
        assert!(!text.contains("HTTP/1.1"), "a request got through: {text}");
    }
}

/// Sends one HTTP request over TLS 1.3 (ALPN `kuma`, as mesh traffic) to `port` with
/// openssl's extra `args`; everything openssl printed.
fn openssl_request(port: u16, args: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | timeout 10 openssl s_client -tls1_3 -alpn kuma -quiet {args} -connect 127.0.0.1:{port} 2>&1"
        ))
        .output()
        .expect("running openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn permissive_admits_plaintext_but_checks_mesh_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    set_mtls(&cp, "PERMISSIVE", "1d");
    put_mtp(
        &cp,
        "deny-client",
        json!({"kind": "Mesh"}),
        json!({"kind": "MeshService", "name": "client"}),
        "Deny",
    );
    let pair = WebAndClient::start(&cp, dir.path());
    let (inbound, out) = (pair.inbound, pair.out);
    // Plaintext from outside the mesh straight to the inbound is let in.
    wait_for("plaintext accepted", Duration::from_secs(20), || {
        matches!(
            http(
                "GET",
                SocketAddr::from(([127, 0, 0, 1], inbound)),
                "/",
                None
            ),
            Ok((200, _))
        )
        .then_some(())
    });
    // Mesh traffic is still checked: the Deny holds.
    wait_status(out, 403, "mesh client denied in PERMISSIVE");
}

#[test]
fn rotation_and_mode_switch_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    // Identities live 8s and rotate at 80% of that.
    set_mtls(&cp, "STRICT", "8s");
    allow_all(&cp);
    let pair = WebAndClient::start(&cp, dir.path());
    let out = pair.out;
    wait_status(out, 200, "traffic allowed");
    let root = cp
        .builtin_root("default", "ca-1")
        .expect("the builtin root");
    let first = served_cert(pair.inbound).expect("web's inbound presents a certificate");
    let first_serial = cert_serial(&first).expect("a serial");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if status_via(out) == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(9));
    // Rotated (at 80% of 8 s): a fresh handshake gets a new certificate from the same CA.
    let rotated = served_cert(pair.inbound).expect("web's inbound presents a certificate");
    let rotated_serial = cert_serial(&rotated).expect("a serial");
    assert_ne!(
        rotated_serial, first_serial,
        "web still presents its first certificate after 9 s of an 8 s lifetime"
    );
    assert!(
        signed_by(&rotated, &root),
        "the rotated certificate is not from ca-1"
    );
    assert!(
        cert_sans(&rotated).contains("spiffe://default/web"),
        "{}",
        cert_sans(&rotated)
    );
    set_mtls(&cp, "PERMISSIVE", "8s");
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests under rotation and mode switch: {ok} ok, {failed} failed");
    assert!(ok > 200, "too few requests: {ok}");
    assert_eq!(
        failed, 0,
        "requests failed during rotation / STRICT->PERMISSIVE"
    );
    let ov = cp.overview("default", "web").unwrap();
    let regenerations = ov["dataplaneInsight"]["mTLS"]["certificateRegenerations"]
        .as_u64()
        .unwrap_or(0);
    assert!(regenerations >= 2, "expected a rotation, insight: {ov}");
}

#[test]
fn provided_ca_issues_the_identities() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The operator's CA, made with openssl (ECDSA P-256, PKCS#8 key).
    let script = format!(
        "set -e; cd {d}; openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ca.key; \
         openssl req -x509 -new -key ca.key -subj /CN=operator-ca -days 30 \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.crt"
    );
    let st = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(st.success(), "openssl could not make a CA");
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    use base64::Engine;
    for (name, file) in [
        ("operator-ca-cert", "ca.crt"),
        ("operator-ca-key", "ca.key"),
    ] {
        let data = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.path().join(file)).unwrap());
        let (code, body) = cp.put(
            &format!("/meshes/default/secrets/{name}"),
            &json!({"type": "Secret", "mesh": "default", "name": name, "data": data}),
        );
        assert_eq!(code, 201, "{body}");
    }
    let mesh = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-p", "backends": [
        {"name": "ca-p", "type": "provided", "conf": {"cert": {"secret": "operator-ca-cert"}, "key": {"secret": "operator-ca-key"}}}]}});
    assert_eq!(cp.put("/meshes/default", &mesh).0, 200);
    allow_all(&cp);
    let pair = WebAndClient::start(&cp, dir.path());
    let (port, out) = (pair.inbound, pair.out);
    wait_status(out, 200, "traffic over the provided CA");
    // The server's certificate chains to the operator's CA.
    let script = format!(
        "cd {d}; openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -out leaf.pem && openssl verify -CAfile ca.crt leaf.pem"
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("leaf.pem: OK"),
        "server certificate not issued by the provided CA: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
