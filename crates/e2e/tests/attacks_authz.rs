//! Attacks on what the control plane tells and lets do, against the real kuma-cp: a client
//! of the DP server learns nothing about which proxies exist before it authenticates
//! (`/bootstrap`, ADS, `/readiness` answer an unknown name and a bad token alike, and a token
//! path is not a token), and a local user who is not the CP's owner reads none of its secrets.
//! What a non-admin user token may do through the API is in `kuma-cp`'s API tests
//! (`access_control`, `least_privilege_host_files_and_mesh_cascade`) and `tokens.rs`.

use std::path::Path;
use std::process::Command;

use e2e::*;
use serde_json::{Value, json};

mod support;
use support::*;

/// A Dataplane in the wire shape, on an address the answers must never reveal.
fn dataplane(name: &str) -> Value {
    json!({
        "type": "Dataplane", "mesh": "default", "name": name,
        "networking": {"address": "10.11.12.13", "inbound": [{
            "port": 10001, "servicePort": 8080,
            "tags": {"kuma.io/service": "secret-service", "team": "payments"}}]}
    })
}

/// `token` with its signature altered: well formed, signed by nobody.
fn forged(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').expect("a JWT");
    let flipped: String = sig
        .chars()
        .rev()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect();
    format!("{head}.{flipped}")
}

/// Asserts that none of the stored proxy's details leak into `answer`.
fn reveals_nothing(what: &str, answer: &str) {
    for secret in ["10.11.12.13", "secret-service", "payments"] {
        assert!(
            !answer.contains(secret),
            "{what} reveals {secret}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_and_bad_tokens_get_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let (code, body) = cp.put("/meshes/default/dataplanes/web-1", &dataplane("web-1"));
    assert!(code == 201 || code == 200, "{code} {body}");
    let good = cp.dataplane_token("default", "web-1");
    let bad = forged(&good);
    let client = bootstrap_client(&cp);
    // (mesh, name): stored, unknown name, unknown mesh.
    let targets = [
        ("default", "web-1"),
        ("default", "ghost"),
        ("nope", "web-1"),
    ];

    // Control: the real token gets web-1's bootstrap, so the refusals below are about the
    // token, not a broken request.
    let req = json!({"mesh": "default", "name": "web-1", "dataplaneToken": good});
    let (code, body) = post_bootstrap(&client, &cp, req.to_string().into_bytes()).await;
    assert_eq!(code, 200, "{body}");

    // `/bootstrap` with a forged token, with garbage, and with only a token path.
    for (kind, fields) in [
        ("forged token", json!({"dataplaneToken": bad})),
        ("garbage token", json!({"dataplaneToken": "not-a-jwt"})),
        (
            "token path only",
            json!({"dataplaneTokenPath": "/var/run/secrets/kuma/token"}),
        ),
    ] {
        let mut answers = Vec::new();
        for (mesh, name) in targets {
            let mut req = fields.clone();
            req["mesh"] = json!(mesh);
            req["name"] = json!(name);
            let (code, body) = post_bootstrap(&client, &cp, req.to_string().into_bytes()).await;
            let what = format!("/bootstrap {mesh}/{name} with a {kind}");
            reveals_nothing(&what, &body);
            assert!(code == 401 || code == 422, "{what}: {code} {body}");
            // The mesh is echoed from the request; nothing else may differ.
            answers.push((what, code, body.replace(mesh, "MESH")));
        }
        for (what, code, body) in &answers[1..] {
            assert_eq!(
                (code, body),
                (&answers[0].1, &answers[0].2),
                "{what} is answered differently from {}",
                answers[0].0
            );
        }
    }

    // ADS: the first request of a stream, with a forged token, a garbage one and none.
    let ch = ads_channel(&cp).await;
    for (kind, token) in [
        ("forged token", Some(bad.as_str())),
        ("garbage token", Some("not-a-jwt")),
        ("no token", None),
    ] {
        let mut answers = Vec::new();
        for (mesh, name) in targets {
            let what = format!("ADS {mesh}.{name} with a {kind}");
            let first = discovery_request(&format!("{mesh}.{name}"), None);
            let status = match ads_first_answer(&ch, first, token).await {
                Err(s) => s,
                Ok(r) => panic!("{what}: the stream was served: {r:?}"),
            };
            assert_eq!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{what}: {status:?}"
            );
            reveals_nothing(&what, status.message());
            let message = status.message().replace(mesh, "MESH");
            answers.push((what, message));
        }
        for (what, message) in &answers[1..] {
            assert_eq!(
                message, &answers[0].1,
                "{what} is answered differently from {}",
                answers[0].0
            );
        }
    }

    // `/readiness` with a forged token.
    let mut answers = Vec::new();
    for (mesh, name) in targets {
        let resp = client
            .post(format!("{}/readiness", cp.cp_address()))
            .bearer_auth(&bad)
            .json(&json!({"mesh": mesh, "name": name, "ready": true}))
            .send()
            .await
            .expect("POST /readiness");
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        answers.push((format!("/readiness {mesh}/{name}"), code, body));
    }
    for (what, code, body) in &answers {
        assert_eq!(*code, 401, "{what}: {body}");
        assert_eq!(body, &answers[0].2, "{what}");
    }
}

/// Runs `cat path` as user `nobody`; whether it could read the file.
fn nobody_reads(path: &Path) -> bool {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("cat")
        .arg(path)
        .output()
        .expect("running setpriv (util-linux)");
    out.status.success()
}

#[test]
fn a_local_user_reads_none_of_the_control_planes_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // Everything on the way to the work dir is open to everyone, so only the CP's own modes
    // stand between user nobody and its files.
    let open = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    open(dir.path());
    let work = dir.path().join("cp");
    std::fs::create_dir_all(&work).unwrap();
    open(&work);
    let cp = ControlPlane::start(&work, &[]);
    // Control: nobody reads a world-readable file in the same directory (the check can fail).
    let control = work.join("readable.txt");
    std::fs::write(&control, "x").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert!(nobody_reads(&control), "setpriv cannot read a 0644 file");

    // The store holds the signing keys and the admin token; the key is the DP server's.
    let mut secrets = vec![work.join("kuma-cp.db"), work.join("kuma-cp.key")];
    for f in std::fs::read_dir(&work).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        if name.starts_with("kuma-cp.db-") || name.ends_with(".key") {
            secrets.push(f.path());
        }
    }
    for path in &secrets {
        assert!(path.exists(), "{} was not created", path.display());
        assert!(
            !nobody_reads(path),
            "user nobody read {} (the CP holds secrets in it)",
            path.display()
        );
    }
    drop(cp);
}

#[test]
fn diagnostics_answer_anyone_and_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let admin_token = cp.admin_token();
    let signing_key = cp.get("/meshes/default/secrets/dataplane-token-signing-key-default-1");
    let key_data = signing_key.1["data"]
        .as_str()
        .expect("signing key data")
        .to_string();
    for path in ["/ready", "/healthy", "/metrics"] {
        let (code, body) = http("GET", cp.diag, path, None).expect("diagnostics");
        assert_eq!(code, 200, "{path}: {body}");
        for secret in [
            admin_token.as_str(),
            &key_data[..40],
            "PRIVATE KEY",
            "BEGIN",
        ] {
            assert!(!body.contains(secret), "{path} reveals {secret}: {body}");
        }
    }
}
