//! Dataplane tokens, user tokens and API access control, end to end: a real kuma-cp with
//! dataplane authentication on (the default), real kuma-dp + Envoy where the ADS stream
//! matters, a raw gRPC client where a misbehaving proxy is simulated, and kumactl.
//!
//! "Remote" API callers: the CP listens on loopback only in tests, and every 127/8 peer is
//! local, so remoteness is simulated by restarting the CP (same store, so same keys and
//! tokens) with `apiServer.authn.localhostIsAdmin=false`: then a loopback caller is treated
//! exactly as a remote one. The admin token is read first, from a CP where localhost is admin,
//! as an operator would. (The peer-address check itself is unit-tested in `kuma-cp`'s API
//! tests with a non-loopback `ConnectInfo`.)

use std::process::Command;
use std::time::Duration;

use e2e::*;
use serde_json::{Value, json};
use tonic::Code;

mod support;
use support::*;

/// Claims of a JWT (unverified).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64_decode(payload)).expect("JSON claims")
}

/// `kumactl generate dataplane-token <args>` against `cp`; the token.
fn kumactl_dp_token(cp: &ControlPlane, args: &[&str]) -> String {
    let mut full = vec!["generate", "dataplane-token"];
    full.extend_from_slice(args);
    let (ok, out, err) = cp.kumactl(&full);
    assert!(ok, "kumactl generate dataplane-token {args:?}: {err}");
    assert_eq!(out.split('.').count(), 3, "not a JWT: {out}");
    out.trim().to_string()
}

/// Starts a proxy expected to be refused; returns its log once it exited non-zero.
fn refused(cp: &ControlPlane, spec: &DpSpec, dir: &std::path::Path) -> String {
    let mut dp = DataplaneProc::start(cp, spec, dir);
    let status = dp.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "kuma-dp {} was not refused:\n{}",
            spec.name,
            dp.proc.log_text()
        )
    });
    assert!(!status.success(), "kuma-dp {} exited 0", spec.name);
    dp.proc.log_text()
}

/// Whether `mesh/name` has a live subscription on the CP instance `instance`.
fn online_on(cp: &ControlPlane, mesh: &str, name: &str, instance: &str) -> bool {
    cp.overview(mesh, name).is_some_and(|v| {
        v["dataplaneInsight"]["subscriptions"]
            .as_array()
            .is_some_and(|subs| {
                subs.iter().any(|s| {
                    s["controlPlaneInstanceId"] == instance && s.get("disconnectTime").is_none()
                })
            })
    })
}

fn instance_id(cp: &ControlPlane) -> String {
    cp.get("/").1["instanceId"]
        .as_str()
        .expect("instanceId")
        .to_string()
}

#[test]
fn bootstrap_refuses_missing_and_unacceptable_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (code, body) = cp.put("/meshes/other", &json!({"type": "Mesh", "name": "other"}));
    assert_eq!(code, 201, "{body}");
    let w = Workload::http("b");
    let spec = |name, token| DpSpec {
        name,
        inbounds: vec![(free_port(), w.port, "b", "http")],
        token,
        ..Default::default()
    };

    // No token: Kuma's 422 message, relayed by kuma-dp.
    let log = refused(&cp, &spec("no-token", DpToken::Absent), dir.path());
    assert!(
        log.contains("Dataplane Token is required. Generate token using 'kumactl generate dataplane-token > /path/file'"),
        "{log}"
    );

    // A token for service a cannot register a proxy of service b.
    let for_a = kumactl_dp_token(&cp, &["--mesh", "default", "--tag", "kuma.io/service=a"]);
    assert_eq!(claims(&for_a)["Tags"], json!({"kuma.io/service": ["a"]}));
    let log = refused(&cp, &spec("b-1", DpToken::Given(for_a)), dir.path());
    assert!(
        log.contains("which is not allowed with this token"),
        "{log}"
    );

    // A token bound to another name.
    let named = kumactl_dp_token(&cp, &["--name", "someone-else"]);
    let log = refused(&cp, &spec("b-2", DpToken::Given(named)), dir.path());
    assert!(
        log.contains("proxy name from requestor: b-2 is different than in token: someone-else"),
        "{log}"
    );

    // A token signed with another mesh's key.
    let other = kumactl_dp_token(&cp, &["--mesh", "other"]);
    let log = refused(&cp, &spec("b-3", DpToken::Given(other)), dir.path());
    assert!(
        log.contains(
            "the token signature does not verify with any dataplane token signing key of mesh"
        ),
        "{log}"
    );

    // An expired token (valid 1s, plus Kuma's 5s of clock skew allowance).
    let short = kumactl_dp_token(&cp, &["--name", "b-4", "--valid-for", "1s"]);
    let c = claims(&short);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        11,
        "{c}"
    );
    std::thread::sleep(Duration::from_secs(7));
    let log = refused(&cp, &spec("b-4", DpToken::Given(short)), dir.path());
    assert!(log.contains("the token expired at"), "{log}");

    // Garbage.
    let log = refused(
        &cp,
        &spec("b-5", DpToken::Given("not.a.token".into())),
        dir.path(),
    );
    assert!(log.contains("not a valid JWT"), "{log}");

    // None of them was registered; a proper token works.
    assert_eq!(cp.get("/meshes/default/dataplanes").1["total"], 0);
    let _ok = DataplaneProc::start(&cp, &spec("b-6", DpToken::Generated), dir.path());
    wait_for("b-6 online", Duration::from_secs(30), || {
        cp.is_online("default", "b-6").then_some(())
    });
}

#[test]
fn revoked_token_is_refused_at_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (w1, w2) = (Workload::http("web"), Workload::http("api"));
    let web_token = cp.dataplane_token("default", "web");
    let web_spec = DpSpec {
        name: "web",
        inbounds: vec![(free_port(), w1.port, "web", "http")],
        token: DpToken::Given(web_token.clone()),
        ..Default::default()
    };
    let mut web = DataplaneProc::start(&cp, &web_spec, dir.path());
    let _api = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "api",
            inbounds: vec![(free_port(), w2.port, "api", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    for n in ["web", "api"] {
        wait_for(&format!("{n} online"), Duration::from_secs(30), || {
            cp.is_online("default", n).then_some(())
        });
    }

    // Revoke web's token (another id first: the list is comma-separated).
    let jti = claims(&web_token)["jti"].as_str().unwrap().to_string();
    let list = format!("00000000-0000-0000-0000-000000000000,{jti}");
    let (code, body) = cp.put(
        "/meshes/default/secrets/dataplane-token-revocations-default",
        &json!({"type": "Secret", "mesh": "default", "name": "dataplane-token-revocations-default",
            "data": base64_encode(list.as_bytes())}),
    );
    assert_eq!(code, 201, "{body}");

    // The ADS stream: after a CP restart Envoy reconnects with the token from its bootstrap;
    // api's stream is accepted, web's refused.
    cp.restart();
    let instance = instance_id(&cp);
    wait_for(
        "api back online on the new CP",
        Duration::from_secs(30),
        || online_on(&cp, "default", "api", &instance).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !online_on(&cp, "default", "web", &instance),
        "web reconnected with a revoked token"
    );
    // Why: a stream presenting that token is refused as revoked.
    let web_json = json!({"type": "Dataplane", "mesh": "default", "name": "web",
        "networking": {"address": "127.0.0.1", "inbound": [{"port": free_port(),
            "servicePort": w1.port, "tags": {"kuma.io/service": "web"}}]}});
    let st = runtime()
        .block_on(ads_register(&cp, &web_json, &web_token))
        .expect_err("a revoked token must be refused");
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    assert!(st.message().contains("the token is revoked"), "{st:?}");

    // The next bootstrap with the same token is refused too.
    web.proc.kill();
    let log = refused(&cp, &web_spec, dir.path());
    assert!(log.contains("the token is revoked"), "{log}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Opens an ADS stream as a proxy registering `dataplane` with `token` in the `authorization`
/// metadata (none when empty); the status the CP ends the stream with, or `Ok` if it answered.
async fn ads_register(
    cp: &ControlPlane,
    dataplane: &Value,
    token: &str,
) -> Result<(), tonic::Status> {
    let node_id = format!(
        "{}.{}",
        dataplane["mesh"].as_str().unwrap(),
        dataplane["name"].as_str().unwrap()
    );
    let first = discovery_request(&node_id, Some(&dataplane.to_string()));
    let token = (!token.is_empty()).then_some(token);
    ads_first_answer(&ads_channel(cp).await, first, token)
        .await
        .map(|_| ())
}

#[test]
fn takeover_with_a_token_for_another_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (wweb, wfront) = (Workload::http("web-1"), Workload::http("front"));
    let web_port = free_port();
    let _web = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web-1",
            inbounds: vec![(web_port, wweb.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let out = free_port();
    let front = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "front",
            inbounds: vec![(free_port(), wfront.port, "front", "http")],
            outbounds: vec![(out, "web")],
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("front sees web-1", Duration::from_secs(30), || {
        (front.endpoints("web").len() == 1).then_some(())
    });
    assert_eq!(get_via(out).unwrap(), "web-1");
    let stored = cp.get("/meshes/default/dataplanes/web-1").1;

    // A token for service `evil`, not bound to a name.
    let evil_token = cp.token(
        "dataplane",
        &json!({"mesh": "default", "tags": {"kuma.io/service": ["evil"]}}),
    );
    let (w, evil_port) = (Workload::http("evil"), free_port());

    // Through kuma-dp: refused at bootstrap.
    let log = refused(
        &cp,
        &DpSpec {
            name: "web-1",
            inbounds: vec![(evil_port, w.port, "evil", "http")],
            token: DpToken::Given(evil_token.clone()),
            ..Default::default()
        },
        dir.path(),
    );
    assert!(
        log.contains("already exists") && log.contains("which is not allowed with this token"),
        "{log}"
    );

    // Straight to the ADS stream (skipping /bootstrap, as a hostile client would): refused.
    let evil = json!({"type": "Dataplane", "mesh": "default", "name": "web-1",
        "networking": {"address": "127.0.0.1", "inbound": [{"port": evil_port,
            "servicePort": w.port, "serviceAddress": "127.0.0.1",
            "tags": {"kuma.io/service": "evil", "kuma.io/protocol": "http"}}]}});
    let rt = runtime();
    let st = rt
        .block_on(ads_register(&cp, &evil, &evil_token))
        .expect_err("the takeover stream must be refused");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("already exists"), "{st:?}");
    // Without a token, or with garbage: unauthenticated.
    for token in ["", "garbage"] {
        let st = rt
            .block_on(ads_register(&cp, &evil, token))
            .expect_err("refused");
        assert_eq!(st.code(), Code::Unauthenticated, "{token:?}: {st:?}");
    }

    // The original is untouched and traffic through it still flows.
    let again = cp.get("/meshes/default/dataplanes/web-1").1;
    assert_eq!(again["networking"], stored["networking"]);
    assert_eq!(again["modificationTime"], stored["modificationTime"]);
    for _ in 0..20 {
        assert_eq!(get_via(out).expect("traffic to web-1"), "web-1");
    }
    assert_eq!(
        front.endpoints("web"),
        vec![format!("127.0.0.1:{web_port}")]
    );
    assert!(cp.is_online("default", "web-1"));
}

/// Runs kumactl with its own config file; (ok, stdout, stderr).
fn kumactl_with_config(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("kumactl"))
        .arg("--config-file")
        .arg(config)
        .args(args)
        .env_remove("KUMA_API_URL")
        .output()
        .expect("running kumactl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn api_access_control_with_user_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    // From localhost (an admin): the bootstrap admin token and a member's token.
    let admin = cp.admin_token();
    assert_eq!(claims(&admin)["Name"], "mesh-system:admin");
    let (ok, member, err) = cp.kumactl(&[
        "generate",
        "user-token",
        "--name",
        "alice",
        "--group",
        "team-a",
        "--valid-for",
        "1h",
    ]);
    assert!(ok, "{err}");
    assert_eq!(claims(&member)["Groups"], json!(["team-a"]));
    let (ok, table, err) = cp.kumactl(&["get", "global-secrets"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("admin-user-token") && table.contains("user-token-signing-key-1"),
        "{table}"
    );
    let (ok, table, err) = cp.kumactl(&["get", "secrets"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("dataplane-token-signing-key-default-1"),
        "{table}"
    );

    // Now every caller counts as remote.
    cp.restart_with(&[("KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN", "false")]);
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (code, body) = http_with(method, cp.api, path, &headers, body).expect("API call");
        (
            code,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)),
        )
    };
    // No token: 401 with Kuma's error body; the index needs none.
    let (code, body) = call("GET", "/meshes", None, None);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["status"], 401);
    assert_eq!(body["title"], "Unauthenticated");
    assert_eq!(call("GET", "/", None, None).0, 200);
    assert_eq!(call("GET", "/meshes", Some("garbage"), None).0, 401);

    // The admin token opens everything.
    let (code, who) = call("GET", "/who-am-i", Some(&admin), None);
    assert_eq!(code, 200);
    assert_eq!(who["name"], "mesh-system:admin");
    for path in [
        "/global-secrets/admin-user-token",
        "/meshes/default/secrets",
        "/secrets",
    ] {
        assert_eq!(call("GET", path, Some(&admin), None).0, 200, "{path}");
    }
    let (code, _) = call(
        "POST",
        "/tokens/dataplane",
        Some(&admin),
        Some(r#"{"mesh":"default","name":"x"}"#),
    );
    assert_eq!(code, 200);

    // A member reads dataplanes, not secrets.
    let member = member.trim();
    let (code, who) = call("GET", "/who-am-i", Some(member), None);
    assert_eq!(code, 200);
    assert_eq!(
        who,
        json!({"name": "alice", "groups": ["team-a", "mesh-system:authenticated"]})
    );
    for path in [
        "/meshes",
        "/meshes/default/dataplanes",
        "/meshes/default/dataplanes/_overview",
    ] {
        assert_eq!(call("GET", path, Some(member), None).0, 200, "{path}");
    }
    for (method, path, body) in [
        ("GET", "/meshes/default/secrets", None),
        ("GET", "/global-secrets/admin-user-token", None),
        ("GET", "/globalsecrets", None),
        ("POST", "/tokens/dataplane", Some(r#"{"mesh":"default"}"#)),
        (
            "POST",
            "/tokens/user",
            Some(r#"{"name":"eve","groups":["mesh-system:admin"]}"#),
        ),
    ] {
        let (code, body) = call(method, path, Some(member), body);
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert_eq!(body["title"], "Access Denied");
    }

    // kumactl sends the configured token as a bearer token.
    let cfg = dir.path().join("kumactl-admin");
    let url = format!("http://{}", cp.api);
    for (config, token) in [
        (&cfg, admin.as_str()),
        (&dir.path().join("kumactl-member"), member),
    ] {
        let conf = format!("token={token}");
        let (ok, _, err) = kumactl_with_config(
            config,
            &[
                "config",
                "control-planes",
                "add",
                "--name",
                "cp",
                "--address",
                &url,
                "--auth-type",
                "tokens",
                "--auth-conf",
                &conf,
            ],
        );
        assert!(ok, "{err}");
    }
    let (ok, table, err) = kumactl_with_config(&cfg, &["get", "global-secrets"]);
    assert!(ok, "{err}");
    assert!(table.contains("admin-user-token"), "{table}");
    let (ok, _, err) = kumactl_with_config(&dir.path().join("kumactl-member"), &["get", "secrets"]);
    assert!(!ok);
    assert!(err.contains("Access Denied"), "{err}");
    let (ok, _, err) = kumactl_with_config(&dir.path().join("kumactl-member"), &["get", "meshes"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cp.kumactl(&["get", "meshes"]);
    assert!(!ok, "no token, not local: refused");
    assert!(err.contains("Unauthenticated"), "{err}");
}

#[test]
fn auth_none_warns_and_accepts_proxies_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[("KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", "none")],
    );
    assert!(
        cp.proc
            .log_text()
            .contains("dataplane authentication is OFF"),
        "{}",
        cp.proc.log_text()
    );
    let w = Workload::http("x");
    let _dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "x-1",
            inbounds: vec![(free_port(), w.port, "x", "http")],
            token: DpToken::Absent,
            ..Default::default()
        },
        dir.path(),
    );
    wait_for("x-1 online", Duration::from_secs(30), || {
        cp.is_online("default", "x-1").then_some(())
    });
}

/// Zone tokens on a real kuma-cp: the signing key is created once at start (kept across
/// restarts), kumactl issues tokens with Kuma's claims and flags, bad requests name their
/// field; and the zones API / `kumactl inspect zones` show a zone that never connected.
#[test]
fn zone_tokens_and_zone_overviews() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let key = |cp: &ControlPlane| {
        let (code, secret) = cp.get("/global-secrets/zone-token-signing-key-1");
        assert_eq!(code, 200, "{secret}");
        secret["data"].as_str().expect("data").to_string()
    };
    let first = key(&cp);
    let pem = String::from_utf8(base64_decode(&first)).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");

    let (ok, token, err) = cp.kumactl(&[
        "generate",
        "zone-token",
        "--zone",
        "zone-1",
        "--scope",
        "cp",
        "--valid-for",
        "24h",
    ]);
    assert!(ok, "{err}");
    let header: Value =
        serde_json::from_slice(&base64_decode(token.split('.').next().unwrap())).expect("header");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "1");
    let c = claims(token.trim());
    assert_eq!(c["Zone"], "zone-1");
    assert_eq!(c["Scope"], json!(["cp"]));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        24 * 3600 + 10
    );
    // All scopes without --scope.
    let (ok, token, err) = cp.kumactl(&[
        "generate",
        "zone-token",
        "--zone",
        "zone-2",
        "--valid-for",
        "1h",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        claims(token.trim())["Scope"],
        json!(["cp", "ingress", "egress"])
    );
    // The API names the bad field.
    let (code, body) = e2e::http(
        "POST",
        cp.api,
        "/tokens/zone",
        Some(r#"{"zone":"zone-1","scope":["cp","root"],"validFor":"1h"}"#),
    )
    .expect("POST");
    assert_eq!(code, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["invalid_parameters"][0]["field"], "scope[1]");

    // The key is created once.
    cp.restart();
    assert_eq!(
        key(&cp),
        first,
        "the zone token signing key changed on restart"
    );

    // Zones: a Zone that never connected is listed with an empty insight, Offline (next to
    // the standalone CP's own Zone, `default`).
    let (code, body) = cp.put(
        "/zones/zone-1",
        &json!({"type": "Zone", "name": "zone-1", "enabled": true}),
    );
    assert_eq!(code, 201, "{body}");
    let (code, list) = cp.get("/zones+insights");
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["total"], 2, "{list}");
    let (_, list) = cp.get("/zones+insights?name=zone-");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["items"][0]["type"], "ZoneOverview");
    assert_eq!(list["items"][0]["kri"], "kri_z____zone-1_");
    assert_eq!(list["items"][0]["zoneInsight"], json!({}));
    let (ok, table, err) = cp.kumactl(&["inspect", "zones"]);
    assert!(ok, "{err}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("zone-1 "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["zone-1", "Offline", "never", "never", "0", "0"],
        "{table}"
    );
    let (code, body) = cp.put(
        "/zone-insights/zone-1",
        &json!({"type": "ZoneInsight", "name": "zone-1"}),
    );
    assert_eq!(code, 405, "{body}");
}
