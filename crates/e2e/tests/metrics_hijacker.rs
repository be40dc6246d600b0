//! kuma-dp's metrics hijacker behind the real control plane's bootstrap: the socket is at
//! `<workdir>/kuma-mh-<name>-<mesh>.sock` (the path the control plane's `kuma:metrics:hijacker`
//! cluster points Envoy at) and serves the real Envoy's stats in the Prometheus format, with
//! the bootstrap's `ads_cluster` unmarked and mesh clusters marked `kuma_io_mesh_traffic`.
//! Scraped as an operator would: `curl --unix-socket`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::*;

/// The hijacker socket of Dataplane `name` in `mesh` under any temporary kuma-dp work dir.
fn find_socket(name: &str, mesh: &str) -> Option<PathBuf> {
    let file = format!("kuma-mh-{name}-{mesh}.sock");
    std::fs::read_dir(std::env::temp_dir())
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kuma-dp-"))
        .map(|e| e.path().join(&file))
        .find(|p| p.exists())
}

/// `(headers, body)` of `curl --unix-socket <socket> http://x<path>`.
fn curl_unix(socket: &std::path::Path, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "-D", "-", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://x{path}"))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (headers, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (headers.to_string(), body.to_string())
}

#[test]
fn the_hijacker_serves_envoys_stats_on_the_socket_the_bootstrap_names() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let web = Workload::http("web");
    let name = "hijacked-web";
    let mut dp = DataplaneProc::start(
        &cp,
        &DpSpec {
            name,
            inbounds: vec![(free_port(), web.port, "web", "http")],
            ..Default::default()
        },
        dir.path(),
    );
    DataplaneProc::wait_live(&[&dp]);
    let socket = wait_for("the hijacker socket", Duration::from_secs(10), || {
        find_socket(name, "default")
    });

    let (headers, body) = curl_unix(&socket, "/metrics");
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    assert!(body.lines().any(|l| l == "envoy_server_live 1"), "{body}");
    let ads: Vec<&str> = body
        .lines()
        .filter(|l| l.contains("envoy_cluster_name=\"ads_cluster\""))
        .collect();
    assert!(!ads.is_empty(), "{body}");
    assert!(
        ads.iter().all(|l| !l.contains("kuma_io_mesh_traffic")),
        "{ads:?}"
    );
    assert!(
        body.lines().any(|l| l.starts_with("envoy_cluster_")
            && l.contains("kuma_io_mesh_traffic=\"true\"")),
        "a mesh cluster is marked:\n{body}"
    );
    // Envoy's admin `usedonly` passes through: fewer series, still Envoy's.
    let (_, used) = curl_unix(&socket, "/?usedonly");
    assert!(used.lines().count() < body.lines().count());
    assert!(used.lines().any(|l| l == "envoy_server_live 1"), "{used}");

    let status = dp.proc.terminate(Duration::from_secs(20)).expect("stops");
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket is removed with kuma-dp");
}
