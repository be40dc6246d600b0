//! `kuma-dp run` as a process, against a fake control plane and a fake Envoy (a shell script),
//! all on 127.0.0.1. Real Envoy is exercised by the workspace's e2e crate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine as _;
use kuma_dp::envoy::admin;

const DATAPLANE: &str = "type: Dataplane\nmesh: default\nname: {{ name }}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {{ port }}\n    tags:\n      kuma.io/service: web\n";
/// [`DATAPLANE`] behind a transparent proxy (the only kind that runs DNS).
const DATAPLANE_TP: &str = "type: Dataplane\nmesh: default\nname: {{ name }}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: {{ port }}\n    tags:\n      kuma.io/service: web\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n";

/// A fake Envoy: answers `--version`, records its arguments, then sleeps or exits.
fn fake_envoy(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("envoy");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         if [ \"$1\" = \"--version\" ]; then\n\
         \x20 echo; echo \"envoy  version: abc123/1.38.2/Clean/RELEASE/BoringSSL\"; exit 0\n\
         fi\n\
         echo \"$@\" > \"$FAKE_ENVOY_ARGS\"\n\
         if [ -n \"$FAKE_ENVOY_EXIT\" ]; then exit \"$FAKE_ENVOY_EXIT\"; fi\n\
         exec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[derive(Default)]
struct Recorded {
    requests: Vec<serde_json::Value>,
    healthcheck_fail: usize,
}

/// A fake CP whose bootstrap points Envoy's admin at a fake admin served by the same router.
async fn fake_cp(status: StatusCode, error_body: &'static str) -> (String, Arc<Mutex<Recorded>>) {
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bootstrap = format!(
        "node:\n  id: default.dp-1\n  cluster: web\nadmin:\n  address:\n    socketAddress:\n      address: 127.0.0.1\n      portValue: {}\n",
        addr.port()
    );
    let on_bootstrap = recorded.clone();
    let on_fail = recorded.clone();
    let app = Router::new()
        .route(
            "/bootstrap",
            post(move |body: String| {
                let recorded = on_bootstrap.clone();
                let bootstrap = bootstrap.clone();
                async move {
                    recorded
                        .lock()
                        .unwrap()
                        .requests
                        .push(serde_json::from_str(&body).unwrap());
                    if status != StatusCode::OK {
                        return (status, error_body.to_string());
                    }
                    let body = serde_json::json!({
                        "bootstrap": base64::engine::general_purpose::STANDARD.encode(&bootstrap),
                        "kumaSidecarConfiguration": {},
                    });
                    (StatusCode::OK, body.to_string())
                }
            }),
        )
        .route("/ready", get(|| async { "LIVE\n" }))
        .route(
            "/healthcheck/fail",
            post(move || {
                let recorded = on_fail.clone();
                async move {
                    recorded.lock().unwrap().healthcheck_fail += 1;
                    "OK\n"
                }
            }),
        );
    tokio::spawn(axum::serve(listener, app).into_future());
    (format!("http://{addr}"), recorded)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kuma_dp(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuma-dp"));
    cmd.arg("run");
    // A free DNS port for each run, so tests in parallel do not race for 15053.
    if !args.contains(&"--dns-coredns-port") {
        cmd.arg(format!("--dns-coredns-port={}", free_port()));
    }
    cmd.args(args)
        .env("FAKE_ENVOY_ARGS", dir.join("envoy-args"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("KUMA_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

async fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("kuma-dp did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stderr_of(child: Child) -> String {
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn runs_envoy_reports_readiness_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let (cp, recorded) = fake_cp(StatusCode::OK, "").await;
    let readiness_port = free_port();
    let port = readiness_port.to_string();
    // No transparent proxying: no DNS (the CP would send it no record), readiness does not
    // wait for a DNS table.
    let dns_port = free_port();
    let mut child = kuma_dp(
        &[
            "--cp-address",
            &cp,
            "--dataplane",
            DATAPLANE,
            "-v",
            "name=dp-1",
            "--dataplane-var",
            "port=8080",
            "--binary-path",
            envoy.to_str().unwrap(),
            "--readiness-port",
            &port,
            "--drain-time",
            "1s",
            "--xds-delta",
            "--dns-coredns-port",
            &dns_port.to_string(),
        ],
        dir.path(),
    )
    .spawn()
    .unwrap();

    // Readiness goes READY once Envoy runs and its (fake) admin says LIVE.
    let readiness = admin::Client::new(
        admin::Address::Tcp {
            host: "127.0.0.1".into(),
            port: readiness_port,
        },
        Duration::from_secs(2),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((status, body)) = readiness.request(hyper::Method::GET, "/ready").await
            && status == StatusCode::OK
        {
            assert_eq!(body, "READY");
            break;
        }
        assert!(Instant::now() < deadline, "kuma-dp never became READY");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kuma-dp exited early ({status}): {}", stderr_of(child));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let request = recorded.lock().unwrap().requests[0].clone();
    assert_eq!(request["name"], "dp-1");
    assert_eq!(request["mesh"], "default");
    assert_eq!(request["proxyType"], "dataplane");
    assert_eq!(request["readinessPort"], readiness_port);
    assert_eq!(request["dnsPort"], 0);
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", dns_port)).is_ok(),
        "a DNS server runs for a Dataplane without transparent proxying"
    );
    assert_eq!(request["version"]["envoy"]["version"], "1.38.2");
    assert_eq!(
        request["features"],
        serde_json::json!([
            "feature-tcp-accesslog-via-named-pipe",
            "feature-readiness-reporting",
            "feature-delta-grpc"
        ])
    );
    let resource: serde_json::Value =
        serde_json::from_str(request["dataplaneResource"].as_str().unwrap()).unwrap();
    assert_eq!(resource["networking"]["inbound"][0]["port"], 8080);
    let work_dir = PathBuf::from(request["workdir"].as_str().unwrap());
    assert!(
        work_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("kuma-dp-")
    );
    let bootstrap = std::fs::read_to_string(work_dir.join("bootstrap.yaml")).unwrap();
    assert!(bootstrap.contains("id: default.dp-1"));

    let args = std::fs::read_to_string(dir.path().join("envoy-args")).unwrap();
    assert_eq!(
        args.trim(),
        format!(
            "--config-path {}/bootstrap.yaml --drain-time-s 1 --drain-strategy immediate \
             --disable-hot-restart --log-level info --concurrency 1",
            work_dir.display()
        )
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // While draining, readiness says TERMINATING.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = readiness
        .request(hyper::Method::GET, "/ready")
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (503, "TERMINATING"));

    let status = wait_exit(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status}: {}", stderr_of(child));
    assert_eq!(recorded.lock().unwrap().healthcheck_fail, 1);
    assert!(!work_dir.exists(), "the temporary work dir is removed");
}

#[tokio::test]
async fn envoy_exiting_on_its_own_fails_kuma_dp() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let (cp, _) = fake_cp(StatusCode::OK, "").await;
    let mut child = kuma_dp(
        &[
            "--cp-address",
            &cp,
            "--dataplane",
            DATAPLANE,
            "-v",
            "name=dp-1",
            "-v",
            "port=8080",
            "--binary-path",
            envoy.to_str().unwrap(),
            "--readiness-port",
            "0",
        ],
        dir.path(),
    )
    .env("FAKE_ENVOY_EXIT", "3")
    .spawn()
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    let stderr = stderr_of(child);
    assert!(!status.success());
    assert!(
        stderr.contains("Envoy exited unexpectedly: exit status: 3"),
        "{stderr}"
    );
}

#[tokio::test]
async fn invalid_request_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let (cp, recorded) = fake_cp(
        StatusCode::UNPROCESSABLE_ENTITY,
        "mesh \"default\" does not exist",
    )
    .await;
    let mut child = kuma_dp(
        &[
            "--cp-address",
            &cp,
            "--name",
            "dp-1",
            "--mesh",
            "default",
            "--binary-path",
            envoy.to_str().unwrap(),
            "--readiness-port",
            "0",
        ],
        dir.path(),
    )
    .spawn()
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    let stderr = stderr_of(child);
    assert!(!status.success());
    assert!(
        stderr.contains("Invalid request: mesh \"default\" does not exist"),
        "{stderr}"
    );
    let recorded = recorded.lock().unwrap();
    assert_eq!(recorded.requests.len(), 1);
    assert_eq!(recorded.requests[0]["dataplaneResource"], "");
}

#[tokio::test]
async fn https_without_trust_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let mut child = kuma_dp(
        &[
            "--cp-address",
            "https://127.0.0.1:5678",
            "--name",
            "dp-1",
            "--mesh",
            "default",
            "--binary-path",
            envoy.to_str().unwrap(),
        ],
        dir.path(),
    )
    .spawn()
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    let stderr = stderr_of(child);
    assert!(!status.success());
    assert!(
        stderr.contains("--ca-cert-file") && stderr.contains("--skip-verify"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_taken_dns_port_fails_naming_the_address_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (cp, recorded) = fake_cp(StatusCode::OK, "").await;
    let child = kuma_dp(
        &[
            "--cp-address",
            &cp,
            "--dataplane",
            DATAPLANE_TP,
            "-v",
            "name=dp-1",
            "-v",
            "port=8080",
            "--binary-path",
            envoy.to_str().unwrap(),
            "--readiness-port",
            "0",
            "--dns-coredns-port",
            &port.to_string(),
        ],
        dir.path(),
    )
    .spawn()
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        stderr.contains("--dns-coredns-port / KUMA_DNS_CORE_DNS_PORT"),
        "{stderr}"
    );
    // Failed before anything was asked of the control plane.
    assert!(recorded.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn flag_errors_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let child = kuma_dp(&["--mesh", "default"], dir.path()).spawn().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--name is required"));

    let child = kuma_dp(&["--dataplane", DATAPLANE, "--name", "x"], dir.path())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used together"));
}

#[test]
fn version_subcommand() {
    let output = Command::new(env!("CARGO_BIN_EXE_kuma-dp"))
        .arg("version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
}

/// Waits until the fake Envoy of the kuma-dp in `dir` has started.
async fn wait_envoy_started(child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("envoy-args").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kuma-dp exited early ({status})");
        }
        assert!(Instant::now() < deadline, "Envoy was never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_metrics_socket_belongs_to_one_kuma_dp_and_is_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let (cp, _) = fake_cp(StatusCode::OK, "").await;
    let work_dir = dir.path().join("work");
    let args = [
        "--cp-address",
        &cp,
        "--dataplane",
        DATAPLANE,
        "-v",
        "name=dp-1",
        "-v",
        "port=8080",
        "--binary-path",
        envoy.to_str().unwrap(),
        "--readiness-port",
        "0",
        "--drain-time",
        "0s",
        "--work-dir",
        work_dir.to_str().unwrap(),
    ];
    let mut first = kuma_dp(&args, dir.path()).spawn().unwrap();
    wait_envoy_started(&mut first, dir.path()).await;
    let socket = work_dir.join("kuma-mh-dp-1-default.sock");
    assert!(socket.exists(), "the hijacker listens before Envoy starts");

    // A second kuma-dp for the same Dataplane and work dir is refused, naming the socket.
    // (Waited for without blocking: the fake CP answers on this runtime.)
    let mut second = kuma_dp(&args, dir.path()).spawn().unwrap();
    let status = wait_exit(&mut second, Duration::from_secs(20)).await;
    assert!(!status.success());
    let stderr = stderr_of(second);
    assert!(
        stderr.contains(&format!(
            "file {} exists and probably opened by another kuma-dp instance",
            socket.display()
        )),
        "{stderr}"
    );
    assert!(
        socket.exists(),
        "the refused kuma-dp leaves the live socket alone"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut first, Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status}: {}", stderr_of(first));
    assert!(!socket.exists(), "the socket is removed on exit");
    assert!(work_dir.join("bootstrap.yaml").exists());
}

#[tokio::test]
async fn zone_proxies_run_no_metrics_hijacker() {
    let dir = tempfile::tempdir().unwrap();
    let envoy = fake_envoy(dir.path());
    let (cp, _) = fake_cp(StatusCode::OK, "").await;
    let work_dir = dir.path().join("work");
    let mut child = kuma_dp(
        &[
            "--cp-address",
            &cp,
            "--proxy-type",
            "ingress",
            "--name",
            "zi-1",
            "--binary-path",
            envoy.to_str().unwrap(),
            "--readiness-port",
            "0",
            "--work-dir",
            work_dir.to_str().unwrap(),
        ],
        dir.path(),
    )
    .spawn()
    .unwrap();
    wait_envoy_started(&mut child, dir.path()).await;
    let files: Vec<String> = std::fs::read_dir(&work_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !files.iter().any(|f| f.starts_with("kuma-mh-")),
        "{files:?}"
    );
    assert!(files.contains(&"bootstrap.yaml".to_string()), "{files:?}");
    child.kill().unwrap();
    let _ = child.wait();
}
