//! MeshTrafficPermission `rules` (issue 13) end to end: enforced by real Envoy through the
//! RBAC matcher (a `rules` deny closes what a `from` allow opened, allows re-open, shadow
//! denials are counted), and invalid `rules` documents refused on Kuma's field paths through
//! the REST API and `kumactl apply`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::*;
use serde_json::{Value, json};

fn set_strict_mtls(cp: &ControlPlane) {
    let mesh = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1",
        "backends": [{"name": "ca-1", "type": "builtin", "mode": "STRICT"}]}});
    let (code, body) = cp.put("/meshes/default", &mesh);
    assert!(code == 200 || code == 201, "{code} {body}");
}

/// Stores MeshTrafficPermission `name` (mesh `default`, top-level Mesh) with `rules`.
fn put_rules(cp: &ControlPlane, name: &str, rules: Value) -> Value {
    let doc = json!({"type": "MeshTrafficPermission", "name": name,
        "spec": {"targetRef": {"kind": "Mesh"}, "rules": rules}});
    let (code, body) = cp.put(
        &format!("/meshes/default/meshtrafficpermissions/{name}"),
        &doc,
    );
    assert!(code == 200 || code == 201, "{code} {body}");
    body
}

fn delete_mtp(cp: &ControlPlane, name: &str) {
    let (code, body) = http(
        "DELETE",
        cp.api,
        &format!("/meshes/default/meshtrafficpermissions/{name}"),
        None,
    )
    .expect("DELETE against the API");
    assert_eq!(code, 200, "{body}");
}

fn spiffe(t: &str, v: &str) -> Value {
    json!({"spiffeID": {"type": t, "value": v}})
}

fn wait_status(port: u16, want: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        (status_via(port) == want).then_some(())
    });
}

fn wait_tcp(port: u16, ok: bool, what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        let passed = if ok {
            tcp_via(port).is_ok_and(|l| l == "db")
        } else {
            tcp_denied(port)
        };
        passed.then_some(())
    });
}

/// Sum of a proxy's enforced RBAC denials (`...rbac.denied`, HTTP and network filters).
fn rbac_denied(proxy: &DataplaneProc) -> u64 {
    proxy.stats_matching("rbac.denied$").values().sum()
}

/// Sum of a proxy's shadow RBAC denials (`...rbac.shadow_denied`).
fn rbac_shadow_denied(proxy: &DataplaneProc) -> u64 {
    proxy.stats_matching("rbac.shadow_denied$").values().sum()
}

/// Whether the inbound listener on `port` of `proxy` carries an RBAC `matcher` (the `rules`
/// form) holding `needle`, in the configuration Envoy has in use.
fn listener_has(proxy: &DataplaneProc, port: u16, needle: &str) -> bool {
    proxy.active_listener(port).is_some_and(|l| {
        let text = l.to_string();
        text.contains("\"matcher\"") && text.contains(needle)
    })
}

/// Counts HTTP requests through a local outbound while running, one every 20 ms: `ok` those
/// answered with the expected status, `failed` the others.
struct Probe {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(port: u16) -> Self {
        Self::expecting(port, 200)
    }

    fn expecting(port: u16, want: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if status_via(port) == want {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the probe; `(ok, failed)`.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("probe thread");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn rules_deny_closes_what_from_opened_and_allows_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    set_strict_mtls(&cp);
    let (web, db, app) = (
        Workload::http("web"),
        Workload::tcp("db"),
        Workload::http("app"),
    );
    let (web_inbound, db_inbound) = (free_port(), free_port());
    let w = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(web_inbound, web.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let d = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "db",
            inbounds: vec![(db_inbound, db.port, "db", "tcp")],
            ..Default::default()
        },
        dir.path(),
    );
    let (c_web, c_db, i_web) = (free_port(), free_port(), free_port());
    let c = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "client",
            inbounds: vec![(free_port(), app.port, "client", "http")],
            outbounds: vec![(c_web, "web"), (c_db, "db")],
            ..Default::default()
        },
        dir.path(),
    );
    // A second client whose identity is outside the client's prefix.
    let i = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "intruder",
            inbounds: vec![(free_port(), app.port, "intruder", "http")],
            outbounds: vec![(i_web, "web")],
            delta: true,
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("clients configured", Duration::from_secs(30), || {
        (c.endpoints("web").len() == 1
            && c.endpoints("db").len() == 1
            && i.endpoints("web").len() == 1)
            .then_some(())
    });

    // 1. The legacy `from` form opens everything.
    put_mtp(
        &cp,
        "allow-all",
        json!({"kind": "Mesh"}),
        json!({"kind": "Mesh"}),
        "Allow",
    );
    wait_status(c_web, 200, "client allowed by the from allow-all (HTTP)");
    wait_tcp(c_db, true, "client allowed by the from allow-all (TCP)");
    wait_status(i_web, 200, "intruder allowed by the from allow-all");

    // 2. Adding a `rules` allow for the client's prefix while the client is allowed: the
    //    inbound moves to the matcher form without a failed request for the client, and the
    //    `from` allow-all no longer applies there (Kuma never mixes the forms), so the
    //    intruder is now denied (no rule matches it: on_no_match DENY).
    let probe = Probe::start(c_web);
    std::thread::sleep(Duration::from_secs(1));
    put_rules(
        &cp,
        "allow-client",
        json!([{"default": {"allow": [spiffe("Prefix", "spiffe://default/client")]}}]),
    );
    wait_for(
        "web's inbound on the rules matcher",
        Duration::from_secs(20),
        || listener_has(&w, web_inbound, "kri_mtp_default_").then_some(()),
    );
    wait_status(i_web, 403, "intruder denied once the rules form applies");
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failed) = probe.finish();
    eprintln!("from allow-all -> rules allow for the client: {ok} ok, {failed} failed");
    assert!(ok > 30, "too few probe requests: {ok}");
    assert_eq!(failed, 0, "client requests failed while an allow was added");
    wait_tcp(c_db, true, "client still allowed over TCP");

    // 3. A `rules` deny matching the client closes it, HTTP and TCP, although another policy
    //    allows it (every deny comes first); web's and db's Envoys count the denials.
    // The intruder, denied all along, must get no request through meanwhile.
    let intruder_probe = Probe::expecting(i_web, 403);
    let (web_denied, db_denied) = (rbac_denied(&w), rbac_denied(&d));
    put_rules(
        &cp,
        "deny-client",
        json!([{"default": {"deny": [spiffe("Prefix", "spiffe://default/client")]}}]),
    );
    wait_status(c_web, 403, "client denied by the rules deny (HTTP)");
    wait_tcp(
        c_db,
        false,
        "client's TCP closed after connect by the rules deny",
    );
    assert!(
        rbac_denied(&w) > web_denied,
        "web's Envoy counted no RBAC denial: {:?}",
        w.stats_matching("rbac")
    );
    assert!(
        rbac_denied(&d) > db_denied,
        "db's Envoy counted no RBAC denial: {:?}",
        d.stats_matching("rbac")
    );
    assert_eq!(status_via(i_web), 403);

    // 4. Without the deny, the rules allow re-opens the client while the intruder stays
    //    denied.
    delete_mtp(&cp, "deny-client");
    wait_status(c_web, 200, "client re-opened by the rules allow (HTTP)");
    wait_tcp(c_db, true, "client re-opened by the rules allow (TCP)");
    assert_eq!(status_via(i_web), 403, "the intruder must stay denied");
    std::thread::sleep(Duration::from_secs(1));
    let (denied, passed) = intruder_probe.finish();
    eprintln!("intruder while the deny came and went: {denied} denied, {passed} not");
    assert!(denied > 20, "too few intruder probes: {denied}");
    assert_eq!(
        passed, 0,
        "an intruder request got through while the deny came and went"
    );

    // 5. mtp.md §5.4 on real Envoy: a classic certificate carries several URI SANs, which
    //    Envoy's UriSanInput joins with ',', so an Exact on the intruder's SPIFFE ID never
    //    matches it (the configuration in use does hold that Exact matcher).
    put_rules(
        &cp,
        "exact-intruder",
        json!([{"default": {"allow": [spiffe("Exact", "spiffe://default/intruder")]}}]),
    );
    wait_for(
        "web's matcher with the Exact intruder rule",
        Duration::from_secs(20),
        || listener_has(&w, web_inbound, "__exact-intruder_").then_some(()),
    );
    // Let every response of the update reach Envoy and be in use.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..5 {
        assert_eq!(
            status_via(i_web),
            403,
            "an Exact spiffeID matched a multi-SAN certificate"
        );
    }
    let sans = served_cert_sans_of_intruder(&i);
    assert!(
        sans.contains("spiffe://default/intruder") && sans.contains("kuma://"),
        "the intruder's certificate does not carry several URI SANs: {sans}"
    );

    // 6. allowWithShadowDeny lets the intruder through and counts a shadow denial; the
    //    client, allowed all along, loses no request.
    let probe = Probe::start(c_web);
    let shadow_before = rbac_shadow_denied(&w);
    let body = put_rules(
        &cp,
        "shadow-intruder",
        json!([{"default": {"allowWithShadowDeny": [spiffe("Prefix", "spiffe://default/intruder")]}}]),
    );
    assert_eq!(body, json!({}), "a rules policy has no warning");
    wait_status(i_web, 200, "intruder allowed with shadow deny");
    let shadow_after = wait_for("a shadow denial counted", Duration::from_secs(10), || {
        let n = rbac_shadow_denied(&w);
        (n > shadow_before).then_some(n)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failed) = probe.finish();
    eprintln!(
        "adding allowWithShadowDeny: {ok} ok, {failed} failed; shadow_denied {shadow_before} -> {shadow_after}: {:?}",
        w.stats_matching("rbac")
    );
    assert_eq!(
        failed, 0,
        "client requests failed while a shadow allow was added"
    );

    // Every Envoy ACKed every update (no NACK: no update_rejected, no initial fetch timeout).
    for p in [&w, &d, &c, &i] {
        assert_eq!(
            p.xds_trouble(),
            Some(0),
            "{} rejected an update or timed out: {:?}",
            p.name,
            p.stats_matching("(update_rejected|init_fetch_timeout)$")
        );
    }
}

/// The URI SANs of the intruder's own certificate, from its Envoy's SDS secrets.
fn served_cert_sans_of_intruder(i: &DataplaneProc) -> String {
    let pems = i.sds_pems().expect("the intruder's SDS secrets");
    let identity = pems
        .iter()
        .find(|(name, _)| name.starts_with("identity_cert"))
        .map(|(_, pem)| pem.clone())
        .expect("an identity certificate");
    cert_sans(&identity)
}

/// `(field, reason)` pairs of a Kuma error body.
fn invalid_parameters(body: &Value) -> Vec<(String, String)> {
    body["invalid_parameters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["field"].as_str().unwrap_or_default().to_string(),
                        p["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn invalid_rules_documents_are_refused_by_api_and_kumactl() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let rfc1123 = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    let bad_id = "must be a valid Spiffe ID: scheme is missing or invalid";
    // (spec, expected violations), from Kuma's validator table and schema.
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": []}),
            vec![(
                "spec",
                "at least one of 'from' or 'rules' has to be defined",
            )],
        ),
        (
            json!({"targetRef": {"kind": "Dataplane", "sectionName": "test"}, "to": []}),
            vec![
                (
                    "spec.targetRef.sectionName",
                    "can only be used with inbound policies",
                ),
                (
                    "spec",
                    "at least one of 'from' or 'rules' has to be defined",
                ),
            ],
        ),
        (
            json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"deny": []}}]}),
            vec![(
                "spec.rules[0]",
                "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
            )],
        ),
        (
            json!({"targetRef": {"kind": "Dataplane", "sectionName": "ze-port"}, "rules": [{"default": {
                "allow": [{"sni": {"type": "Exact", "value": ""}}],
                "allowWithShadowDeny": [{"sni": {"type": "Exact", "value": "not_valid"}}]}}]}),
            vec![
                ("spec.rules[0].allow[0].sni.value", "must be set"),
                ("spec.rules[0].allowWithShadowDeny[0].sni.value", rfc1123),
            ],
        ),
        (
            json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {
                "deny": [{"spiffeID": {"type": "Exact", "value": "some-service"}}],
                "allow": [{"spiffeID": {"type": "Prefix", "value": "wrong"}}],
                "allowWithShadowDeny": [{"spiffeID": {"type": "Exact", "value": "test"}}]}}]}),
            vec![
                ("spec.rules[0].allow[0].spiffeID", bad_id),
                ("spec.rules[0].allowWithShadowDeny[0].spiffeID", bad_id),
                ("spec.rules[0].deny[0].spiffeID", bad_id),
            ],
        ),
        (
            json!({"rules": [{"default": {"deny": [{"sni": {"type": "Exact"}}]}}]}),
            vec![(
                "spec.rules[0].default.deny[0].sni.value",
                "in body is required",
            )],
        ),
        (
            json!({"rules": [{"default": {"allow": [{"spiffeID": {"type": "Suffix", "value": "spiffe://default"}}]}}]}),
            vec![(
                "spec.rules[0].default.allow[0].spiffeID.type",
                "in body should be one of [Exact Prefix]",
            )],
        ),
        (
            json!({"rules": [{"default": {"allow": [spiffe("Prefix", "spiffe://default")]}}],
                   "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}),
            vec![("spec", "field 'from' must be empty when 'rules' is defined")],
        ),
    ];
    for (i, (spec, want)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let doc =
            json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": spec});
        let (code, body) = cp.put(
            &format!("/meshes/default/meshtrafficpermissions/{name}"),
            &doc,
        );
        assert_eq!(code, 400, "case {i}: {body}");
        assert_eq!(
            body["title"], "Could not process a resource",
            "case {i}: {body}"
        );
        assert_eq!(body["detail"], "Resource is not valid", "case {i}: {body}");
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect();
        assert_eq!(invalid_parameters(&body), want, "case {i} through the API");
        // Nothing was stored.
        let (code, _) = cp.get(&format!("/meshes/default/meshtrafficpermissions/{name}"));
        assert_eq!(code, 404, "case {i} stored");

        // kumactl apply refuses it, naming every field, and sends nothing.
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, doc.to_string()).unwrap();
        let (ok, out, err) = cp.kumactl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(!ok, "case {i}: kumactl apply succeeded: {out}");
        for (field, message) in &want {
            assert!(
                err.contains(&format!("{field}: {message}")),
                "case {i}: kumactl does not name {field}: {message}\n{err}"
            );
        }
        let (code, _) = cp.get(&format!("/meshes/default/meshtrafficpermissions/{name}"));
        assert_eq!(code, 404, "case {i} stored by kumactl");
    }

    // Kuma's fixtures put_mtp_00 / put_mtp_01: a type error inside the spec, and another
    // type in the body than the URL's.
    let (code, body) = cp.put(
        "/meshes/default/meshtrafficpermissions/p0",
        &json!({"type": "MeshTrafficPermission", "name": "p0", "spec": {
            "targetRef": {"kind": "Mesh", "name": 5},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        invalid_parameters(&body),
        vec![(
            "spec.targetRef.name".to_string(),
            "in body must be of type string: \"number\"".to_string()
        )]
    );
    let (code, body) = cp.put(
        "/meshes/default/meshtrafficpermissions/p1",
        &json!({"type": "Dataplane", "name": "p1", "spec": {
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        invalid_parameters(&body),
        vec![(
            String::new(),
            "type in body should be one of [MeshTrafficPermission]".to_string()
        )]
    );

    // A policy without `mesh` is in mesh `default`: accepted there by the API and kumactl,
    // refused under another mesh's URL.
    let doc = json!({"type": "MeshTrafficPermission", "name": "no-mesh", "spec": {
        "rules": [{"default": {"allow": [spiffe("Prefix", "spiffe://default")]}}]}});
    let (code, body) = cp.put("/meshes/default/meshtrafficpermissions/no-mesh", &doc);
    assert_eq!(code, 201, "{body}");
    assert_eq!(body, json!({}));
    let (_, stored) = cp.get("/meshes/default/meshtrafficpermissions/no-mesh");
    assert_eq!(stored["mesh"], "default", "{stored}");
    let (code, _) = cp.put("/meshes/other", &json!({"type": "Mesh", "name": "other"}));
    assert!(code == 200 || code == 201, "{code}");
    let (code, body) = cp.put("/meshes/other/meshtrafficpermissions/no-mesh", &doc);
    assert_eq!(code, 400, "{body}");
    assert_eq!(invalid_parameters(&body)[0].0, "mesh", "{body}");
    let file = dir.path().join("no-mesh.yaml");
    std::fs::write(
        &file,
        "type: MeshTrafficPermission\nname: no-mesh-cli\nspec:\n  rules:\n  - default:\n      deny:\n      - spiffeID: {type: Prefix, value: spiffe://default/x}\n",
    )
    .unwrap();
    let (ok, out, err) = cp.kumactl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (code, stored) = cp.get("/meshes/default/meshtrafficpermissions/no-mesh-cli");
    assert_eq!(code, 200, "{stored}");

    // The legacy form is accepted with Kuma's deprecation warnings, also shown by kumactl.
    let legacy = json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "legacy",
        "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                 "from": [{"targetRef": {"kind": "MeshService", "name": "client"}, "default": {"action": "Allow"}}]}});
    let (code, body) = cp.put("/meshes/default/meshtrafficpermissions/legacy", &legacy);
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["warnings"],
        json!([
            "'from' field is deprecated and will be removed in 3.0, use 'rules' with MeshIdentity (spiffeId) instead",
            "MeshService value for 'from[].targetRef.kind' is deprecated, use MeshSubset with 'kuma.io/service' instead",
            "MeshService value for 'targetRef.kind' is deprecated, use Dataplane with labels instead"
        ])
    );
    let file = dir.path().join("legacy.json");
    std::fs::write(&file, legacy.to_string()).unwrap();
    let (ok, _, err) = cp.kumactl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("'from' field is deprecated and will be removed in 3.0"),
        "kumactl shows no warning: {err}"
    );
}

/// One HTTP/1.1 GET over mesh TLS (ALPN `kuma`) to `port`, sending SNI `sni` and presenting
/// the client certificate `dir/<cert>.pem` ([`issue_client_cert`]); the HTTP status, 0 when
/// none came back.
fn tls_get(dir: &std::path::Path, cert: &str, port: u16, sni: &str) -> u16 {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -quiet -alpn kuma -servername {sni} -cert {d}/{cert}.pem -key {d}/{cert}.key -connect 127.0.0.1:{port} 2>/dev/null",
            d = dir.display()
        ))
        .output()
        .expect("running openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether `listener` (config dump JSON) has the TLS inspector listener filter.
fn has_tls_inspector(listener: &Value) -> bool {
    listener["listener_filters"].as_array().is_some_and(|fs| {
        fs.iter()
            .any(|f| f["name"] == "envoy.filters.listener.tls_inspector")
    })
}

/// An `sni` match on real Envoy: the TLS inspector is added to the (STRICT, otherwise
/// inspector-less) inbound listener and the server name the client sent decides, ANDed with
/// its SPIFFE ID; Envoy ACKs it.
#[test]
fn sni_match_decides_on_the_client_hello() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    set_strict_mtls(&cp);
    let web = Workload::http("web");
    let inbound = free_port();
    let w = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(inbound, web.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let d = dir.path();
    write_mesh_ca(&cp, d);
    issue_client_cert(d, "client", &["spiffe://default/sni-client"]);
    wait_for("web's inbound active", Duration::from_secs(20), || {
        w.active_listener(inbound).map(|_| ())
    });
    assert!(
        !has_tls_inspector(&w.active_listener(inbound).unwrap()),
        "a STRICT inbound without SNI rules has no TLS inspector"
    );

    put_rules(
        &cp,
        "sni-web",
        json!([{"default": {"allow": [{
            "spiffeID": {"type": "Prefix", "value": "spiffe://default/sni-client"},
            "sni": {"type": "Exact", "value": "web.example.com"}}]}}]),
    );
    wait_for(
        "web's inbound with the SNI matcher",
        Duration::from_secs(20),
        || {
            w.active_listener(inbound)
                .is_some_and(|l| l.to_string().contains("web.example.com"))
                .then_some(())
        },
    );
    assert!(
        has_tls_inspector(&w.active_listener(inbound).unwrap()),
        "no TLS inspector for the SNI match"
    );
    wait_for("the right SNI allowed", Duration::from_secs(20), || {
        (tls_get(d, "client", inbound, "web.example.com") == 200).then_some(())
    });
    assert_eq!(tls_get(d, "client", inbound, "other.example.com"), 403);
    assert_eq!(tls_get(d, "client", inbound, "web.example.com"), 200);
    assert_eq!(
        w.xds_trouble(),
        Some(0),
        "{:?}",
        w.stats_matching("update_rejected$")
    );
}

/// Writes the mesh's builtin root certificate and key (`ca-1`) to `dir/ca.pem` and
/// `dir/ca.key`, to issue test client certificates with.
fn write_mesh_ca(cp: &ControlPlane, dir: &std::path::Path) {
    let root = wait_for("the builtin root", Duration::from_secs(10), || {
        cp.builtin_root("default", "ca-1")
    });
    let (code, key) = cp.get("/meshes/default/secrets/default.ca-builtin-key-ca-1");
    assert_eq!(code, 200, "{key}");
    std::fs::write(dir.join("ca.pem"), root).unwrap();
    std::fs::write(
        dir.join("ca.key"),
        base64_decode(key["data"].as_str().expect("key data")),
    )
    .unwrap();
}

/// Issues `dir/<name>.pem` (and `.key`) from the mesh CA of [`write_mesh_ca`] with exactly
/// these URI SANs, in this order.
fn issue_client_cert(dir: &std::path::Path, name: &str, uris: &[&str]) {
    let sans: Vec<String> = uris.iter().map(|u| format!("URI:{u}")).collect();
    std::fs::write(
        dir.join(format!("{name}.cnf")),
        format!(
            "subjectAltName={}\nextendedKeyUsage=clientAuth,serverAuth\nkeyUsage=critical,digitalSignature,keyAgreement\n",
            sans.join(",")
        ),
    )
    .unwrap();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e; cd {}; openssl ecparam -name prime256v1 -genkey -noout -out {name}.key; \
             openssl req -new -key {name}.key -subj /CN={name} -out {name}.csr; \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
               -extfile {name}.cnf -out {name}.pem 2>/dev/null",
            dir.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "openssl could not issue certificate {name}");
    let text = cert_sans(&std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap());
    for u in uris {
        assert!(text.contains(u), "{name} lacks {u}: {text}");
    }
}

/// mtp.md §5.4 on real Envoy, with certificates whose URI SANs we choose: Envoy's
/// `UriSanInput` is all URI SANs joined with ','. An Exact on a single-SAN certificate
/// matches; with two SANs neither an Exact on the first nor a Prefix on the second matches,
/// a Prefix on the first does.
#[test]
fn uri_san_input_is_the_joined_uri_sans() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    set_strict_mtls(&cp);
    let web = Workload::http("web");
    let inbound = free_port();
    let w = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(inbound, web.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let d = dir.path();
    write_mesh_ca(&cp, d);
    issue_client_cert(d, "solo", &["spiffe://default/solo"]);
    issue_client_cert(
        d,
        "pair",
        &["spiffe://default/first", "spiffe://default/second"],
    );
    put_rules(
        &cp,
        "exact-and-second",
        json!([{"default": {"allow": [
            spiffe("Exact", "spiffe://default/solo"),
            spiffe("Exact", "spiffe://default/first"),
            spiffe("Prefix", "spiffe://default/second")]}}]),
    );
    wait_for(
        "the single-SAN Exact allowed",
        Duration::from_secs(20),
        || (tls_get(d, "solo", inbound, "web") == 200).then_some(()),
    );
    for _ in 0..3 {
        assert_eq!(
            tls_get(d, "pair", inbound, "web"),
            403,
            "a two-SAN certificate matched an Exact on its first or a Prefix on its second SAN"
        );
    }
    put_rules(
        &cp,
        "prefix-first",
        json!([{"default": {"allow": [spiffe("Prefix", "spiffe://default/first")]}}]),
    );
    wait_for(
        "the Prefix on the first SAN allowed",
        Duration::from_secs(20),
        || (tls_get(d, "pair", inbound, "web") == 200).then_some(()),
    );
    assert_eq!(tls_get(d, "solo", inbound, "web"), 200);
    assert_eq!(
        w.xds_trouble(),
        Some(0),
        "{:?}",
        w.stats_matching("update_rejected$")
    );
}
