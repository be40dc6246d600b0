//! Transparent proxying end to end, as an operator sets it up on a VM: real iptables rules
//! (`kumactl install transparent-proxy`) in a network namespace, kuma-dp and Envoy running as
//! their own user, the application as root with no outbound declared: `curl
//! http://backend.mesh/` resolves through kuma-dp's DNS (the query to the resolv.conf
//! nameserver is redirected to it), is captured by Envoy and reaches both backend replicas;
//! a destination outside the mesh passes through; mTLS turned on under load loses no
//! request; without a permission the answer is 403; the CP killed, names still resolve;
//! restarted, the same VIP; uninstalled, the name no longer reaches and the rules are gone
//! (`iptables-save` equal to before).

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use e2e::netns::{Topology, output_in as in_ns};
use e2e::{
    ControlPlane, DataplaneProc, DpSpec, Load, NsWorkload, Proc, free_port, server_cert, wait_for,
};
use serde_json::json;

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `curl http://<target>/` as root (the application) in `ns`: the status code and body, or
/// `None` when no HTTP answer came.
fn curl(ns: &str, target: &str) -> Option<(u16, String)> {
    let out = in_ns(
        ns,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            &format!("http://{target}/"),
        ],
    );
    if !out.status.success() {
        return None;
    }
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = t.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.trim().to_string()))
}

/// `dig +short` in `ns` (the addresses answered, nothing on errors), through `server` (`@127.0.0.1 -p <port>`) or the
/// namespace's resolv.conf when `None`.
fn dig(ns: &str, server: Option<u16>, name: &str, qtype: &str) -> String {
    let port;
    let mut args = vec!["dig", "+short", "+time=2", "+tries=1", name, qtype];
    if let Some(p) = server {
        port = p.to_string();
        args.extend(["@127.0.0.1", "-p", &port]);
    }
    text(&in_ns(ns, &args))
        .lines()
        .filter(|l| l.parse::<std::net::IpAddr>().is_ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `iptables-save` of `ns` without the lines that change by themselves (comments with
/// timestamps, counters).
fn rules(ns: &str) -> String {
    let out = in_ns(ns, &["iptables-save"]);
    assert!(out.status.success(), "iptables-save in {ns}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                l.split(' ').take(2).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An HTTP server answering `name` on every address of `ns` (outside the mesh).
fn outside_server(t: &Topology, dir: &Path, ns: &str, name: &str) -> (Proc, u16) {
    let root = dir.join(format!("www-{name}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
    let port = free_port();
    let mut cmd = e2e::launched(&strs(&t.exec(ns)), "python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "0.0.0.0",
        "--directory",
    ])
    .arg(&root);
    let proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log"))).unwrap();
    let addr = format!("{}:{port}", t.ip(ns));
    wait_for(&format!("{name} up"), Duration::from_secs(10), || {
        e2e::http_probe_at(addr.parse().unwrap()).ok().map(|_| ())
    });
    (proc, port)
}

#[test]
fn curl_backend_mesh_through_kuma_dp_dns_and_iptables() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // kuma-dp runs as another user: it reads its files here.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = Topology::new("tp", 78, &["cp", "cl", "ext"]);
    let client_ns = t.ns("cl");
    client_namespace(&t, "cl", 78);

    let (ca, crt, key) = server_cert(&d.join("cp-tls"), &t.ip("cp"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let cp_env = [
        ("KUMA_GENERAL_TLS_CERT_FILE", crt.as_str()),
        ("KUMA_GENERAL_TLS_KEY_FILE", key.as_str()),
        // Envoy admin on every address of its namespace (the test reads it from outside).
        ("KUMA_BOOTSTRAP_SERVER_PARAMS_ADMIN_ADDRESS", "0.0.0.0"),
    ];
    let mut cp = ControlPlane::start_at(
        &strs(&t.exec("cp")),
        Some(&t.ip("cp")),
        &d.join("cp"),
        &cp_env,
    );
    cp.dp_endpoint = Some((format!("https://{}:{}", t.ip("cp"), cp.dp_port), ca));

    // Two replicas of `backend` (plain Dataplanes in the CP's namespace).
    let apps: Vec<NsWorkload> = ["backend-1", "backend-2"]
        .iter()
        .map(|n| NsWorkload::http(&strs(&t.exec("cp")), d, n))
        .collect();
    let backends: Vec<DataplaneProc> = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let name = format!("backend-{}", i + 1);
            let spec = DpSpec {
                name: &name,
                inbounds: vec![(free_port(), app.port, "backend", "http")],
                address: &t.ip("cp"),
                ..Default::default()
            };
            DataplaneProc::start_under(&strs(&t.exec("cp")), &cp, &spec, d)
        })
        .collect();
    DataplaneProc::wait_live(&backends.iter().collect::<Vec<_>>());
    let (_outside, outside_port) = outside_server(&t, d, "ext", "outside-the-mesh");

    // The client: kuma-dp (and Envoy) as their own user, transparent proxying, no
    // outbound; the rules installed (the rules before them kept for the end).
    let before = rules(&client_ns);
    let client = transparent_client(&t, "cl", &cp, d);
    assert_ne!(rules(&client_ns), before, "no rule was installed");
    let kumactl = e2e::binary("kumactl").display().to_string();

    // DNS: kuma-dp answers directly and through the redirected resolv.conf nameserver.
    let vip = wait_for("backend.mesh resolves", Duration::from_secs(20), || {
        let a = dig(&client_ns, Some(15053), "backend.mesh", "A");
        (!a.is_empty()).then_some(a)
    });
    assert!(vip.starts_with("240."), "VIP {vip} outside 240.0.0.0/4");
    assert_eq!(
        dig(&client_ns, None, "backend.mesh", "A"),
        vip,
        "through resolv.conf"
    );
    assert_eq!(
        dig(&client_ns, None, "BACKEND.MESH.", "A"),
        vip,
        "case and dot"
    );
    // The namespace has IPv6 loopback: kuma-dp bound ::1 and said so, so AAAA answers.
    assert_eq!(
        dig(&client_ns, Some(15053), "backend.mesh", "AAAA"),
        format!("::ffff:{vip}")
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .to_string(),
        "AAAA"
    );
    assert_eq!(
        dig(&client_ns, Some(15053), "backend.mesh", "+tcp"),
        vip,
        "over TCP"
    );
    let nx = text(&in_ns(
        &client_ns,
        &[
            "dig",
            "+time=2",
            "+tries=1",
            "@127.0.0.1",
            "-p",
            "15053",
            "nothing.mesh",
        ],
    ));
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");

    // A new service resolves soon after its first Dataplane is stored (the figure printed).
    let stored = Instant::now();
    let (code, body) = cp.put(
        "/meshes/default/dataplanes/fresh-1",
        &json!({"type": "Dataplane", "mesh": "default", "name": "fresh-1",
                "networking": {"address": t.ip("cp"),
                               "inbound": [{"port": free_port(), "tags": {"kuma.io/service": "fresh"}}]}}),
    );
    assert!(code < 300, "{code} {body}");
    let fresh = wait_for("fresh.mesh resolves", Duration::from_secs(10), || {
        let a = dig(&client_ns, Some(15053), "fresh.mesh", "A");
        (!a.is_empty()).then_some(a)
    });
    eprintln!(
        "fresh.mesh -> {fresh} resolved {} ms after its first Dataplane was stored",
        stored.elapsed().as_millis()
    );
    assert_ne!(fresh, vip, "two services share a VIP");

    // The application, with no outbound declared, reaches both replicas by name.
    let mut seen = std::collections::BTreeSet::new();
    let started = Instant::now();
    while seen.len() < 2 && started.elapsed() < Duration::from_secs(20) {
        if let Some((200, body)) = curl(&client_ns, "backend.mesh") {
            seen.insert(body);
        }
    }
    assert_eq!(
        seen,
        ["backend-1", "backend-2"].map(String::from).into(),
        "replicas reached through backend.mesh"
    );
    // The explicit outbound (loopback, not captured) still leads to the backend.
    assert!(
        matches!(curl(&client_ns, &format!("127.0.0.1:{EXPLICIT_OUTBOUND}")), Some((200, b)) if b.starts_with("backend-")),
        "explicit outbound of a transparent proxy"
    );
    // A destination outside the mesh passes through the capture listener.
    let ext = format!("{}:{outside_port}", t.ip("ext"));
    assert_eq!(
        curl(&client_ns, &ext),
        Some((200, "outside-the-mesh".into())),
        "passthrough"
    );
    let passthrough = client
        .stat("cluster.outbound_passthrough_ipv4.upstream_cx_total")
        .or_else(|| client.stat("cluster.outbound:passthrough:ipv4.upstream_cx_total"))
        .unwrap_or(0);
    assert!(passthrough > 0, "the passthrough cluster carried nothing");

    // mTLS on under load, with a permission for the mesh: no request fails.
    let (code, body) = cp.put(
        "/meshes/default/meshtrafficpermissions/allow-all",
        &json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all",
                "spec": {"targetRef": {"kind": "Mesh"},
                         "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    );
    assert!(code < 300, "{code} {body}");
    let load = {
        let ns = client_ns.clone();
        Load::start(Duration::ZERO, move || match curl(&ns, "backend.mesh") {
            Some((200, _)) => None,
            other => Some(format!("{other:?}")),
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let (code, body) = cp.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default",
                "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    assert!(code < 300, "{code} {body}");
    wait_for(
        "mTLS on the backend cluster",
        Duration::from_secs(60),
        || {
            client
                .active_cluster("backend")
                .filter(|c| c.to_string().contains("UpstreamTlsContext"))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let (sent, failed, errors) = load.stop();
    eprintln!("mTLS on: {failed} of {sent} requests to backend.mesh failed");
    assert!(sent > 10, "too few requests: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} failed while mTLS turned on: {errors:?}"
    );
    // No permission: 403.
    assert_eq!(
        cp.delete("/meshes/default/meshtrafficpermissions/allow-all"),
        200
    );
    wait_for("403 without a permission", Duration::from_secs(30), || {
        matches!(curl(&client_ns, "backend.mesh"), Some((403, _))).then_some(())
    });
    for stat in [
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_rejected",
    ] {
        assert_eq!(client.stat(stat), Some(0), "{stat}");
    }
    let timeouts: u64 = client.stats_matching("init_fetch_timeout").values().sum();
    assert_eq!(timeouts, 0, "init_fetch_timeout");

    // The CP down: names still resolve (kuma-dp answers from its last table).
    cp.kill();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        dig(&client_ns, Some(15053), "backend.mesh", "A"),
        vip,
        "CP down"
    );
    cp.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        dig(&client_ns, Some(15053), "backend.mesh", "A"),
        vip,
        "CP restarted"
    );

    // Uninstalled: the name no longer reaches anything, and no rule is left.
    let out = in_ns(&client_ns, &[&kumactl, "uninstall", "transparent-proxy"]);
    assert!(
        out.status.success(),
        "uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        curl(&client_ns, "backend.mesh"),
        None,
        "reached after uninstall"
    );
    assert_eq!(rules(&client_ns), before, "rules left after uninstall");
}

/// Prepares `ns` for an application behind a transparent proxy: a default route via the
/// bridge, a resolv.conf naming a nameserver that does not exist (only the redirect to
/// kuma-dp answers); both go with the topology.
fn client_namespace(t: &Topology, ns: &str, net: u8) {
    let out = in_ns(
        &t.ns(ns),
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.{net}.0.254"),
        ],
    );
    assert!(out.status.success(), "default route: {out:?}");
    t.set_resolv_conf(
        ns,
        &format!("nameserver 10.{net}.0.254\noptions timeout:1 attempts:1\n"),
    );
}

/// The client's explicit outbound port (on its namespace's 127.0.0.1).
const EXPLICIT_OUTBOUND: u16 = 10000;

/// Installs the iptables rules in `ns` (admin port excluded, DNS redirected), then starts a
/// transparent-proxying client there (`kuma-dp` as the kuma-dp user) against `cp`.
fn transparent_client(t: &Topology, ns: &str, cp: &ControlPlane, dir: &Path) -> DataplaneProc {
    // kuma-dp and Envoy as their own user: their traffic is not captured.
    let user = e2e::netns::ensure_user("kuma-dp-test");
    let mut launcher = t.exec(ns);
    launcher.extend(user.setpriv());
    // The rules first, then the proxy (as Kuma's docs say): a connection that exists before
    // the rules is picked up mid-stream by conntrack, and a packet from the CP arriving first
    // is taken for a new inbound connection and redirected, cutting kuma-dp's ADS stream.
    let admin_port = free_port();
    let kumactl = e2e::binary("kumactl").display().to_string();
    let install = in_ns(
        &t.ns(ns),
        &[
            &kumactl,
            "install",
            "transparent-proxy",
            "--kuma-dp-user",
            &user.name,
            "--redirect-dns",
            "--exclude-inbound-ports",
            &admin_port.to_string(),
        ],
    );
    assert!(
        install.status.success(),
        "install transparent-proxy: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let ip = t.ip(ns);
    let spec = DpSpec {
        name: "client",
        inbounds: vec![(8080, 8080, "demo-client", "http")],
        // An explicit outbound next to the VIPs keeps working.
        outbounds: vec![(EXPLICIT_OUTBOUND, "backend")],
        address: &ip,
        transparent: true,
        // The port the rules redirect DNS to.
        dns_port: Some(15053),
        // Excluded from the inbound redirect: the test reads Envoy's admin from outside.
        admin_port: Some(admin_port),
        ..Default::default()
    };
    let mut client = DataplaneProc::start_under(&strs(&launcher), cp, &spec, dir);
    client.admin = std::net::SocketAddr::new(ip.parse().unwrap(), admin_port);
    DataplaneProc::wait_live(&[&client]);
    client
}

/// Multi-zone: `backend.mesh` has the same VIP in both zones, and an application in zone-1
/// reaches the replica that runs only in zone-2 (through zone-2's ingress).
#[test]
fn backend_mesh_is_one_name_across_zones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = Topology::new("tz", 79, &["g", "z1", "c1", "z2"]);
    client_namespace(&t, "c1", 79);
    let (kds_ca, crt, key) = server_cert(&d.join("kds-tls"), &t.ip("g"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let global = ControlPlane::start_at(
        &strs(&t.exec("g")),
        Some(&t.ip("g")),
        &d.join("g"),
        &[
            ("KUMA_MODE", "global"),
            ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_CERT_FILE", crt.as_str()),
            ("KUMA_MULTIZONE_GLOBAL_KDS_TLS_KEY_FILE", key.as_str()),
        ],
    );
    // Zone-1's CP serves the client's namespace: a certificate for its address.
    let (z1_ca, z1_crt, z1_key) = server_cert(&d.join("z1-tls"), &t.ip("z1"));
    let (z1_crt, z1_key) = (z1_crt.display().to_string(), z1_key.display().to_string());
    let zone = |ns: &str, name: &str, env: &[(&str, &str)]| {
        let token = global.zone_token(name, &["cp"], "1h");
        ControlPlane::start_zone_at(
            &strs(&t.exec(ns)),
            Some(&t.ip(ns)),
            &global,
            name,
            Some(&token),
            &kds_ca,
            &d.join(ns),
            env,
        )
    };
    let mut z1 = zone(
        "z1",
        "zone-1",
        &[
            ("KUMA_GENERAL_TLS_CERT_FILE", z1_crt.as_str()),
            ("KUMA_GENERAL_TLS_KEY_FILE", z1_key.as_str()),
            ("KUMA_BOOTSTRAP_SERVER_PARAMS_ADMIN_ADDRESS", "0.0.0.0"),
        ],
    );
    z1.dp_endpoint = Some((format!("https://{}:{}", t.ip("z1"), z1.dp_port), z1_ca));
    let z2 = zone("z2", "zone-2", &[]);
    let key = "dataplane-token-signing-key-default-1".to_string();
    for z in [&z1, &z2] {
        wait_for(
            "the Mesh and its signing key",
            Duration::from_secs(20),
            || {
                z.names("/meshes/default/secrets")
                    .contains(&key)
                    .then_some(())
            },
        );
    }
    // Cross-zone traffic needs mTLS; everyone may call everyone.
    let (code, body) = global.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default",
                "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
    );
    assert!(code < 300, "{code} {body}");
    let (code, body) = global.put(
        "/meshes/default/meshtrafficpermissions/allow-all",
        &json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all",
                "spec": {"targetRef": {"kind": "Mesh"},
                         "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    );
    assert!(code < 300, "{code} {body}");

    // Zone-2: the only backend replica, its ingress, and a transparent proxy there whose
    // DNS tells zone-2's VIP for the name.
    let l2 = t.exec("z2");
    let l2 = strs(&l2);
    let d2 = d.join("z2-proxies");
    std::fs::create_dir_all(&d2).unwrap();
    let app = NsWorkload::http(&l2, &d2, "backend-zone-2");
    let backend = DataplaneProc::start_under(
        &l2,
        &z2,
        &DpSpec {
            name: "backend",
            inbounds: vec![(free_port(), app.port, "backend", "http")],
            ..Default::default()
        },
        &d2,
    );
    let zi_port = free_port();
    let zi_token = global.zone_token("zone-2", &["ingress"], "1h");
    let _ingress = e2e::ZoneProxyProc::start(
        &l2,
        &z2,
        &d2,
        e2e::ZoneProxySpec {
            kind: "ingress",
            name: "zi-2",
            networking: json!({"address": t.ip("z2"), "port": zi_port,
                               "advertisedAddress": t.ip("z2"), "advertisedPort": zi_port}),
            token: Some(&zi_token),
            delta: false,
        },
    );
    let probe = DataplaneProc::start_under(
        &l2,
        &z2,
        &DpSpec {
            name: "probe",
            inbounds: vec![(free_port(), free_port(), "probe", "http")],
            transparent: true,
            dns_port: Some(15053),
            ..Default::default()
        },
        &d2,
    );
    DataplaneProc::wait_live(&[&backend, &probe]);

    // Zone-1: an application behind a transparent proxy in its own namespace.
    let d1 = d.join("c1-proxies");
    std::fs::create_dir_all(&d1).unwrap();
    let _client = transparent_client(&t, "c1", &z1, &d1);
    let c1 = t.ns("c1");
    let vip1 = wait_for("backend.mesh in zone-1", Duration::from_secs(30), || {
        let a = dig(&c1, None, "backend.mesh", "A");
        (!a.is_empty()).then_some(a)
    });
    let vip2 = wait_for("backend.mesh in zone-2", Duration::from_secs(30), || {
        let a = dig(&t.ns("z2"), Some(15053), "backend.mesh", "A");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(vip1, vip2, "backend.mesh differs between zones");
    wait_for(
        "backend.mesh reached from zone-1",
        Duration::from_secs(30),
        || (curl(&c1, "backend.mesh") == Some((200, "backend-zone-2".into()))).then_some(()),
    );
    let out = in_ns(
        &c1,
        &[
            e2e::binary("kumactl").to_str().unwrap(),
            "uninstall",
            "transparent-proxy",
        ],
    );
    assert!(out.status.success(), "uninstall: {out:?}");
}
