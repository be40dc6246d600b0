//! Runs the `kumactl` binary against a fake REST API (axum on 127.0.0.1:0) and checks the
//! requests it sends, what it prints and its exit codes.

use base64::Engine as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// One request the fake API received.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    uri: String,
    body: Option<Value>,
    /// The `Authorization` header, if sent.
    authorization: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn mesh(name: &str) -> Value {
    json!({"type": "Mesh", "name": name, "creationTime": "2020-01-01T00:00:00Z", "modificationTime": "2020-01-01T00:00:00Z"})
}

fn error(status: StatusCode, title: &str, detail: &str, fields: &[(&str, &str)]) -> Response {
    let params: Vec<Value> = fields
        .iter()
        .map(|(f, r)| json!({"field": f, "reason": r}))
        .collect();
    let body = json!({"type": "/std-errors", "status": status.as_u16(), "title": title, "detail": detail, "details": detail, "invalid_parameters": params});
    (status, axum::Json(body)).into_response()
}

async fn handler(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json = serde_json::from_slice::<Value>(&body).ok();
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        body: body_json,
        authorization: headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string),
    });
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    match (method.as_str(), path) {
        ("GET", "/") => ok(
            json!({"hostname": "cp", "product": "Kuma", "version": "2.14.3", "instanceId": "cp-1", "clusterId": "c", "gui": "/gui"}),
        ),
        ("GET", "/meshes") if query.is_empty() => {
            // `next` carries a host kumactl must not trust; only the offset matters.
            let _ = host;
            ok(
                json!({"total": 3, "items": [mesh("default"), mesh("demo")], "next": "http://ignored.invalid:1/meshes?offset=2"}),
            )
        }
        ("GET", "/meshes") if query == "offset=2" => {
            ok(json!({"total": 3, "items": [mesh("third")], "next": null}))
        }
        ("GET", "/meshes/default") => ok(mesh("default")),
        ("GET", "/meshes/default/dataplanes") => ok(json!({"total": 1, "items": [
            {"type": "Dataplane", "mesh": "default", "name": "dp-1", "creationTime": "2020-01-01T00:00:00Z",
             "networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}
        ], "next": null})),
        ("GET", "/meshes/default/dataplanes/_overview") => ok(json!({"total": 1, "items": [
            {"type": "DataplaneOverview", "mesh": "default", "name": "dp-1", "creationTime": "2020-01-01T00:00:00Z",
             "dataplane": {"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}},
             "dataplaneInsight": {"subscriptions": [{"id": "s", "controlPlaneInstanceId": "cp-1", "connectTime": "2020-01-01T00:00:00Z",
                 "status": {"lastUpdateTime": "2020-01-01T00:00:01Z", "total": {"responsesSent": "7", "responsesAcknowledged": "7"}},
                 "version": {"kumaDp": {"version": "0.1.0"}, "envoy": {"version": "1.38.2"}}}]}}
        ], "next": null})),
        ("GET", "/meshes/demo/service-insights") => ok(json!({"total": 2, "items": [
            {"type": "ServiceInsight", "mesh": "demo", "name": "backend", "status": "partially_degraded",
             "dataplanes": {"total": 2, "online": 1, "offline": 1}, "addressPort": "backend.mesh:80"},
            {"type": "ServiceInsight", "mesh": "demo", "name": "web", "status": "online",
             "dataplanes": {"total": 1, "online": 1}, "addressPort": "web.mesh:80"}], "next": null})),
        ("GET", "/zones/_overview") if query.is_empty() => ok(json!({"total": 2, "items": [
            {"type": "ZoneOverview", "name": "zone-1", "creationTime": "2020-01-01T00:00:00Z", "kri": "kri_z____zone-1_",
             "zone": {"enabled": true},
             "zoneInsight": {"subscriptions": [{"id": "1", "globalInstanceId": "global-1", "connectTime": "2020-01-01T00:00:00Z",
                 "status": {"lastUpdateTime": "2020-01-01T00:00:01Z", "total": {"responsesSent": "12", "responsesRejected": "1"}},
                 "version": {"kumaCp": {"version": "2.14.3"}}, "config": "{\"store\":{\"type\":\"postgres\"}}"}]}}
        ], "next": format!("http://{host}/zones/_overview?offset=1")})),
        ("GET", "/zones/_overview") if query == "offset=1" => ok(json!({"total": 2, "items": [
            {"type": "ZoneOverview", "name": "zone-2", "creationTime": "2020-01-01T00:00:00Z", "zone": {}, "zoneInsight": {}}
        ], "next": null})),
        ("GET", "/zones") => ok(json!({"total": 1, "items": [
            {"type": "Zone", "name": "zone-1", "creationTime": "2020-01-01T00:00:00Z", "modificationTime": "2020-01-01T00:00:00Z", "kri": "kri_z____zone-1_", "enabled": true}
        ], "next": null})),
        ("GET", "/zones/zone-1") => ok(
            json!({"type": "Zone", "name": "zone-1", "creationTime": "2020-01-01T00:00:00Z", "modificationTime": "2020-01-01T00:00:00Z", "kri": "kri_z____zone-1_", "enabled": true}),
        ),
        ("GET", "/meshes/default/dataplanes/dp-1/xds") if query == "include_eds=true" => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"configs\": []}\n",
        )
            .into_response(),
        ("GET", "/zoneingresses/zi-1/clusters") => {
            (StatusCode::OK, "kuma:envoy:admin::cx_active::0\n").into_response()
        }
        ("GET", "/meshes/default/dataplanes/dp-1/stats") => {
            (StatusCode::OK, "cluster.a.upstream_cx_total: 1").into_response()
        }
        ("PUT", "/meshes/default/dataplanes/rejected") => error(
            StatusCode::BAD_REQUEST,
            "Could not process a resource",
            "Resource is not valid",
            &[("networking.address", "must be reachable")],
        ),
        ("PUT", p) if p.starts_with("/meshes/warn") => (
            StatusCode::CREATED,
            axum::Json(json!({"warnings": ["field x is deprecated"]})),
        )
            .into_response(),
        ("PUT", _) => (StatusCode::CREATED, axum::Json(json!({"warnings": []}))).into_response(),
        ("DELETE", "/meshes/default/dataplanes/dp-1") => ok(json!({})),
        ("POST", "/tokens/dataplane") | ("POST", "/tokens/user") | ("POST", "/tokens/zone") => (
            StatusCode::OK,
            [("content-type", "text/plain")],
            "header.claims.signature",
        )
            .into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            "Could not retrieve a resource",
            "Not found",
            &[],
        ),
    }
}

struct Fake {
    addr: SocketAddr,
    log: Log,
    dir: tempfile::TempDir,
}

impl Fake {
    async fn start() -> Self {
        let log: Log = Arc::default();
        let app = Router::new().fallback(handler).with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            log,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn config_file(&self) -> PathBuf {
        self.dir.path().join("kumactl-config")
    }

    fn take_log(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Runs kumactl with `--api-url` pointing at the fake.
    async fn run(&self, args: &[&str]) -> Output {
        let url = self.url();
        let mut full = vec!["--api-url", url.as_str()];
        full.extend_from_slice(args);
        self.run_raw(&full, None).await
    }

    /// Runs kumactl with only a private `--config-file`.
    async fn run_raw(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let cfg = self.config_file();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kumactl"));
        cmd.arg("--config-file")
            .arg(&cfg)
            .args(args)
            .env_remove("KUMA_API_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .await
            .unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const DATAPLANE: &str = "type: Dataplane\nmesh: default\nname: {{ name }}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 8080\n    servicePort: 80\n    tags:\n      kuma.io/service: web\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_puts_each_document_in_order() {
    let fake = Fake::start().await;
    fake.write("dir/b.yaml", DATAPLANE);
    fake.write("dir/a.json", r#"{"type": "Mesh", "name": "demo"}"#);
    fake.write("dir/ignored.txt", "not yaml");
    let dir = fake.dir.path().join("dir").display().to_string();
    let out = fake.run(&["apply", "-f", &dir, "--var", "name=dp-1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let lines: Vec<&str> = printed
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    assert_eq!(
        lines,
        [
            "resource type=\"Mesh\" mesh=\"\" name=\"demo\"",
            "resource type=\"Dataplane\" mesh=\"default\" name=\"dp-1\""
        ],
        "{}",
        stdout(&out)
    );
    let seen = fake.take_log();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.uri.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT", "/meshes/demo"),
            ("PUT", "/meshes/default/dataplanes/dp-1")
        ]
    );
    assert_eq!(seen[0].body, Some(json!({"type": "Mesh", "name": "demo"})));
    let dp = seen[1].body.as_ref().unwrap();
    assert_eq!(dp["name"], "dp-1");
    assert_eq!(dp["networking"]["inbound"][0]["port"], 8080);

    // stdin, and server warnings on stderr.
    let out = fake
        .run_raw(
            &["--api-url", &fake.url(), "apply", "-f", "-"],
            Some("type: Mesh\nname: warn\n"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "Warning: field x is deprecated\n");
    assert!(
        stdout(&out).starts_with("resource type=\"Mesh\" mesh=\"\" name=\"warn\" "),
        "{}",
        stdout(&out)
    );
    assert_eq!(fake.take_log()[0].uri, "/meshes/warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_validates_locally_before_sending() {
    let fake = Fake::start().await;
    let good = fake.write("good.yaml", "type: Mesh\nname: demo\n");
    let bad = fake.write(
        "bad.yaml",
        "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 0\n    tags: {app: web}\n",
    );
    let out = fake.run(&["apply", "-f", &good, "-f", &bad]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("Error: "), "{err}");
    assert!(
        err.contains("bad.yaml: document 1 (Dataplane \"dp-1\") is not valid:\n* "),
        "{err}"
    );
    // Every problem is listed.
    assert!(
        err.contains("\n* networking.inbound[0].port: port must be in the range [1, 65535]"),
        "{err}"
    );
    assert!(
        err.contains("\n* networking.inbound[0].tags[\"kuma.io/service\"]: tag has to exist"),
        "{err}"
    );
    assert!(fake.take_log().is_empty(), "nothing may be sent");

    // Unknown template variable.
    let tpl = fake.write("tpl.yaml", DATAPLANE);
    let out = fake.run(&["apply", "-f", &tpl]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no value for template variable(s) name"),
        "{}",
        stderr(&out)
    );
    assert!(fake.take_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_prints_server_errors_and_dry_run_sends_nothing() {
    let fake = Fake::start().await;
    let f = fake.write("dp.yaml", DATAPLANE);
    let out = fake.run(&["apply", "-f", &f, "-v", "name=rejected"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error: cannot apply Dataplane \"rejected\": Could not process a resource (Resource is not valid)\n* networking.address: must be reachable\n"
    );
    fake.take_log();

    let out = fake
        .run(&["apply", "-f", &f, "--var", "name=dp-2", "--dry-run"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_saphyr::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["name"], "dp-2");
    assert_eq!(printed["type"], "Dataplane");
    assert!(fake.take_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_follows_pages_and_formats() {
    let fake = Fake::start().await;
    let out = fake.run(&["get", "meshes"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with(
            "NAME      mTLS   METRICS   LOGGING   TRACING   LOCALITY   ZONEEGRESS   AGE"
        ),
        "{text}"
    );
    assert!(lines[3].starts_with("third     off "), "{text}");
    let uris: Vec<String> = fake.take_log().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/meshes", "/meshes?offset=2"]);

    let out = fake.run(&["get", "dataplanes", "-o", "json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["items"][0]["name"], "dp-1");

    let out = fake.run(&["get", "dataplanes"]).await;
    assert_eq!(
        stdout(&out)
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        ["default", "dp-1", "kuma.io/service=web"]
    );

    let out = fake.run(&["get", "mesh", "default", "-o", "yaml"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_saphyr::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["name"], "default");

    let out = fake.run(&["get", "mesh", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "Error: No resources found\n");
    let out = fake
        .run(&["get", "dataplane", "nope", "-m", "default"])
        .await;
    assert_eq!(stderr(&out), "Error: No resources found in default mesh\n");
    let out = fake.run(&["get", "bogus"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("Error: unknown resource type \"bogus\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_inspect() {
    let fake = Fake::start().await;
    let out = fake.run(&["delete", "dataplane", "dp-1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "deleted Dataplane \"dp-1\"\n");
    let seen = fake.take_log();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("DELETE", "/meshes/default/dataplanes/dp-1")
    );
    let out = fake.run(&["delete", "mesh", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "Error: there is no Mesh with name \"nope\"\n");

    let out = fake.run(&["inspect", "dataplanes"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        ["default", "dp-1", "kuma.io/service=web", "Online"],
        "{text}"
    );
    assert!(text.contains("   7   "), "{text}");
    assert!(row.ends_with(&["0.1.0", "1.38.2"]), "{text}");

    // Zones: every page, Kuma's columns; Online needs a live subscription of an enabled zone.
    fake.take_log();
    let out = fake.run(&["inspect", "zones"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "STATUS",
            "LAST CONNECTED AGO",
            "LAST UPDATED AGO",
            "TOTAL UPDATES",
            "TOTAL ERRORS",
            "ZONE-CP VERSION",
            "BACKEND"
        ],
        "{text}"
    );
    assert_eq!(lines[1][0..2], ["zone-1", "Online"], "{text}");
    assert_eq!(lines[1][4..], ["12", "1", "2.14.3", "postgres"], "{text}");
    assert_eq!(
        lines[2],
        ["zone-2", "Offline", "never", "never", "0", "0"],
        "{text}"
    );
    let seen: Vec<String> = fake.take_log().into_iter().map(|s| s.uri).collect();
    assert_eq!(seen, ["/zones/_overview", "/zones/_overview?offset=1"]);
    let out = fake.run(&["inspect", "zones", "-o", "json"]).await;
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(doc["total"], 2);
    assert_eq!(
        doc["items"][0]["zoneInsight"]["subscriptions"][0]["id"],
        "1"
    );
    fake.take_log();
    // get zones / get zone <name>: Kuma's NAME AGE.
    let out = fake.run(&["get", "zones"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NAME     AGE\nzone-1   "), "{text}");
    let out = fake.run(&["get", "zone", "zone-1", "-o", "yaml"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("kri: kri_z____zone-1_"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fake.take_log()[1].uri, "/zones/zone-1");

    let out = fake
        .run(&["inspect", "dataplane", "dp-1", "--type", "stats"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Verbatim, as Kuma prints it (no newline added).
    assert_eq!(stdout(&out), "cluster.a.upstream_cx_total: 1");
    fake.take_log();
    // config-dump always sends include_eds; --include-eds only with config-dump.
    let out = fake
        .run(&[
            "inspect",
            "dataplane",
            "dp-1",
            "--type",
            "config-dump",
            "--include-eds",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"configs\": []}\n");
    let out = fake
        .run(&["inspect", "zoneingress", "zi-1", "--type", "clusters"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "kuma:envoy:admin::cx_active::0\n");
    let log: Vec<String> = fake.take_log().into_iter().map(|r| r.uri).collect();
    assert!(
        log.contains(&"/meshes/default/dataplanes/dp-1/xds?include_eds=true".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&"/zoneingresses/zi-1/clusters".to_string()),
        "{log:?}"
    );
    let out = fake
        .run(&[
            "inspect",
            "dataplane",
            "dp-1",
            "--type",
            "stats",
            "--include-eds",
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("flag '--include-eds' can be used only when '--type=config-dump'"),
        "{}",
        stderr(&out)
    );
    // A failure is printed as Kuma prints it: (<status>): <body>.
    let out = fake
        .run(&["inspect", "zoneegress", "nope", "--type", "stats"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("(404): {\"type\":\"/std-errors\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_services() {
    let fake = Fake::start().await;
    let out = fake.run(&["inspect", "services", "--mesh", "demo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "SERVICE   STATUS               DATAPLANES\nbackend   Partially degraded   1/2\nweb       Online               1/1\n"
    );
    let seen: Vec<String> = fake.take_log().into_iter().map(|s| s.uri).collect();
    assert_eq!(seen, ["/meshes/demo/service-insights"]);
    let out = fake
        .run(&["inspect", "services", "-m", "demo", "-o", "json"])
        .await;
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(doc["total"], 2);
    assert_eq!(doc["items"][0]["type"], "ServiceOverview");
    assert_eq!(doc["items"][0]["dataplanes"]["online"], 1);
    // Another mesh: the API's 404 is reported.
    let out = fake.run(&["inspect", "services"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_control_planes_and_version() {
    let fake = Fake::start().await;
    // Not an API index: refused, nothing saved.
    let bad = format!("{}/nothing-here", fake.url());
    let out = fake
        .run_raw(
            &[
                "config",
                "control-planes",
                "add",
                "--name",
                "x",
                "--address",
                &bad,
            ],
            None,
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("Error: could not connect to the Control Plane API Server at "),
        "{}",
        stderr(&out)
    );
    assert!(!fake.config_file().exists());

    let url = fake.url();
    let out = fake
        .run_raw(
            &[
                "config",
                "control-planes",
                "add",
                "--name",
                "fake",
                "--address",
                &url,
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "added Control Plane \"fake\"\nswitched active Control Plane to \"fake\"\n"
    );
    let saved = std::fs::read_to_string(fake.config_file()).unwrap();
    assert!(saved.contains("currentContext: fake"), "{saved}");
    assert!(saved.contains(&format!("url: {url}")), "{saved}");

    // Without --api-url, the current context is used.
    let out = fake.run_raw(&["get", "meshes"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = fake
        .run_raw(&["config", "control-planes", "list"], None)
        .await;
    assert_eq!(
        stdout(&out),
        format!(
            "ACTIVE   NAME    ADDRESS\n         local   http://localhost:5681\n*        fake    {url}\n"
        )
    );
    let out = fake
        .run_raw(
            &[
                "config",
                "control-planes",
                "add",
                "--name",
                "fake",
                "--address",
                &url,
            ],
            None,
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let out = fake
        .run_raw(
            &["config", "control-planes", "switch", "--name", "local"],
            None,
        )
        .await;
    assert_eq!(stdout(&out), "switched active Control Plane to \"local\"\n");
    let out = fake.run_raw(&["config", "view"], None).await;
    assert!(
        stdout(&out).contains("currentContext: local"),
        "{}",
        stdout(&out)
    );

    let out = fake.run(&["version"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Client: kumactl {}\nServer: Kuma 2.14.3\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_tokens_and_signing_key() {
    let fake = Fake::start().await;
    let out = fake
        .run(&[
            "generate",
            "dataplane-token",
            "--mesh",
            "demo",
            "--name",
            "web-1",
            "--tag",
            "kuma.io/service=web,web-admin",
            "--tag",
            "team=a",
            "--type",
            "dataplane",
            "--workload",
            "shop",
            "--valid-for",
            "24h",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "header.claims.signature");
    let seen = fake.take_log();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/tokens/dataplane")
    );
    assert_eq!(
        seen[0].body,
        Some(json!({"mesh": "demo", "name": "web-1",
            "tags": {"kuma.io/service": ["web", "web-admin"], "team": ["a"]},
            "type": "dataplane", "workload": "shop", "validFor": "24h"}))
    );
    // Defaults: the mesh of the context (`default`), no binding beyond it.
    let out = fake.run(&["generate", "dataplane-token"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fake.take_log()[0].body,
        Some(json!({"mesh": "default", "name": ""}))
    );
    let out = fake
        .run(&["generate", "dataplane-token", "--tag", "novalue"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("key=value"), "{}", stderr(&out));

    let out = fake
        .run(&[
            "generate",
            "user-token",
            "--name",
            "alice",
            "--group",
            "a",
            "--group",
            "b",
            "--valid-for",
            "1h",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = fake.take_log();
    assert_eq!(seen[0].uri, "/tokens/user");
    assert_eq!(
        seen[0].body,
        Some(json!({"name": "alice", "groups": ["a", "b"], "validFor": "1h"}))
    );
    assert_eq!(seen[0].authorization, None);

    // Zone tokens: Kuma's flags; `--scope` repeatable or comma-separated, all scopes by
    // default; an unknown scope is refused before anything is sent.
    for (args, scope) in [
        (
            &["--scope", "cp", "--scope", "ingress"][..],
            json!(["cp", "ingress"]),
        ),
        (&["--scope", "ingress,egress"], json!(["ingress", "egress"])),
        (&[], json!(["cp", "ingress", "egress"])),
    ] {
        let mut full = vec![
            "generate",
            "zone-token",
            "--zone",
            "zone-1",
            "--valid-for",
            "24h",
        ];
        full.extend_from_slice(args);
        let out = fake.run(&full).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "header.claims.signature");
        let seen = fake.take_log();
        assert_eq!(seen[0].uri, "/tokens/zone");
        assert_eq!(
            seen[0].body,
            Some(json!({"zone": "zone-1", "scope": scope, "validFor": "24h"}))
        );
    }
    let out = fake
        .run(&[
            "generate",
            "zone-token",
            "--zone",
            "z",
            "--valid-for",
            "1h",
            "--scope",
            "admin",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid --scope values: [admin]"),
        "{}",
        stderr(&out)
    );
    // Offline: signed with a local key, nothing sent; Kuma's flag rules.
    let key = fake
        .run_raw(&["generate", "signing-key", "--format", "pem"], None)
        .await;
    let key_file = fake.write("zone-key.pem", &stdout(&key));
    let base = [
        "generate",
        "zone-token",
        "--zone",
        "zone-1",
        "--valid-for",
        "1h",
    ];
    let out = fake
        .run(&[&base[..], &["--signing-key-path", &key_file, "--kid", "7"]].concat())
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out);
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&header).unwrap()["kid"],
        "7"
    );
    let out = fake
        .run(&[&base[..], &["--signing-key-path", &key_file]].concat())
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--kid is required when --signing-key-path is used"),
        "{}",
        stderr(&out)
    );
    let out = fake.run(&[&base[..], &["--kid", "7"]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--kid cannot be used"),
        "{}",
        stderr(&out)
    );
    assert!(
        fake.take_log().is_empty(),
        "offline issuance sent a request"
    );
    // --zone and --valid-for are required, as in Kuma.
    for args in [
        &["generate", "zone-token", "--valid-for", "1h"][..],
        &["generate", "zone-token", "--zone", "z"],
    ] {
        let out = fake.run(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(fake.take_log().is_empty(), "refused locally");

    // Server errors are reported.
    let out = fake
        .run_raw(
            &[
                "--api-url",
                &format!("{}/nope", fake.url()),
                "generate",
                "user-token",
                "--name",
                "x",
            ],
            None,
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("could not generate the user token"),
        "{}",
        stderr(&out)
    );
    fake.take_log();

    // Kuma's default format: the PEM text base64 encoded, no newline (a Secret's `data`).
    let out = fake.run_raw(&["generate", "signing-key"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let encoded = stdout(&out);
    assert!(!encoded.ends_with('\n'), "{encoded}");
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .expect("base64"),
    )
    .unwrap();
    assert!(
        decoded.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
        "{decoded}"
    );
    let out = fake
        .run_raw(&["generate", "signing-key", "--format", "pem"], None)
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let pem = stdout(&out);
    assert!(
        pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
        "{pem}"
    );
    assert!(pem.ends_with("-----END RSA PRIVATE KEY-----\n"), "{pem}");
    assert!(fake.take_log().is_empty(), "signing-key is offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_sends_bearer() {
    let fake = Fake::start().await;
    let url = fake.url();
    let out = fake
        .run_raw(
            &[
                "config",
                "control-planes",
                "add",
                "--name",
                "secured",
                "--address",
                &url,
                "--auth-type",
                "tokens",
                "--auth-conf",
                "token=abc.def.ghi",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    fake.take_log();
    for args in [
        &["get", "meshes"][..],
        &["get", "secrets"][..],
        &["get", "global-secrets"][..],
        &["generate", "dataplane-token", "--name", "x"][..],
    ] {
        let _ = fake.run_raw(args, None).await;
        let seen = fake.take_log();
        assert!(!seen.is_empty(), "{args:?} sent nothing");
        for s in seen {
            assert_eq!(
                s.authorization.as_deref(),
                Some("Bearer abc.def.ghi"),
                "{args:?}: {} {}",
                s.method,
                s.uri
            );
        }
    }
}
