//! `POST /readiness` on the DP server: kuma-dp's report that its proxy is live or draining
//! moves it in and out of its peers' endpoints; only the proxy's own token may say so, and
//! an unknown name is refused exactly like a bad token.

use std::process::Command;
use std::time::Duration;

use e2e::*;

/// `(status, body)` of a readiness report sent with curl over the DP server's TLS.
fn report(cp: &ControlPlane, body: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(cp.ca_file())
        .args(["-H", "content-type: application/json", "-d", body])
        .arg(format!("{}/readiness", cp.cp_address()));
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn readiness_reports_move_a_proxy_and_need_its_own_token() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (web, app) = (Workload::http("web"), Workload::http("app"));
    let (inbound, out) = (free_port(), free_port());
    let w = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "web",
            inbounds: vec![(inbound, web.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    let c = DataplaneProc::start(
        &cp,
        &DpSpec {
            name: "client",
            inbounds: vec![(free_port(), app.port, "client", "http")],
            outbounds: vec![(out, "web")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&w, &c]);
    let addr = format!("127.0.0.1:{inbound}");
    wait_for(
        "web in the client's endpoints",
        Duration::from_secs(20),
        || (c.endpoints("web") == [addr.clone()]).then_some(()),
    );

    let web_token = cp.dataplane_token("default", "web");
    let ghost_token = cp.dataplane_token("default", "ghost");
    let not_ready = r#"{"mesh":"default","name":"web","ready":false}"#;
    // No token, another proxy's token, an unknown name: the same refusal.
    let none = report(&cp, not_ready, None);
    let other = report(
        &cp,
        not_ready,
        Some(&cp.dataplane_token("default", "client")),
    );
    let ghost = report(
        &cp,
        r#"{"mesh":"default","name":"ghost","ready":false}"#,
        Some(&ghost_token),
    );
    assert_eq!(none.0, 401, "{none:?}");
    assert_eq!(other, none, "another proxy's token");
    assert_eq!(ghost, none, "an unknown name");
    assert_eq!(
        c.endpoints("web"),
        std::slice::from_ref(&addr),
        "refused reports change nothing"
    );
    // Malformed and oversized bodies.
    let bad = report(&cp, r#"{"mesh":"default"}"#, Some(&web_token));
    assert!(bad.0 == 400 || bad.0 == 422, "{bad:?}");
    let big = format!(
        r#"{{"mesh":"default","name":"{}","ready":true}}"#,
        "x".repeat(8192)
    );
    assert_eq!(report(&cp, &big, Some(&web_token)).0, 413);

    // Its own token: out of the client's endpoints, then back.
    assert_eq!(report(&cp, not_ready, Some(&web_token)).0, 200);
    wait_for(
        "web out of the client's endpoints",
        Duration::from_secs(2),
        || c.endpoints("web").is_empty().then_some(()),
    );
    let ready = r#"{"mesh":"default","name":"web","ready":true}"#;
    assert_eq!(report(&cp, ready, Some(&web_token)).0, 200);
    wait_for(
        "web back in the client's endpoints",
        Duration::from_secs(2),
        || (c.endpoints("web") == [addr.clone()]).then_some(()),
    );
}
