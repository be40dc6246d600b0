//! Slow and greedy HTTP clients against a real kuma-cp (issue 9): a client sending half the
//! headers, half a body, or nothing more on a kept-alive connection is cut at its deadline;
//! connections over a listener's cap are closed at once while `/ready`, the DP server and the
//! HTTPS API still answer; under a low open-file limit, a flood of idle connections to the
//! API leaves `/ready`, the DP server and an authenticated API call working, and the API
//! serves again once the flood ends. Plus the HTTPS API with kumactl (`--ca-cert-file`) and
//! kumactl's warning before a token crosses the network over plain HTTP.
//!
//! Deadlines are short (set through `KUMA_*`) and each cut is timed: it must come after
//! the deadline and before the deadline plus a margin.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

/// Slack for a cut after its deadline on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(900);

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads until the server closes (EOF or reset); returns what was read and when it closed.
/// Panics if it is still open after `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (buf, Instant::now()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "connection still open after {limit:?} ({} bytes read: {:?})",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                )
            }
            Err(_) => return (buf, Instant::now()),
        }
    }
}

/// Asserts a cut came after `deadline` (less a little scheduling jitter) and before
/// `deadline + MARGIN`; prints the figure.
fn assert_cut(what: &str, took: Duration, deadline: Duration) {
    eprintln!("{what}: cut after {took:?} (deadline {deadline:?})");
    assert!(
        took + Duration::from_millis(100) >= deadline && took <= deadline + MARGIN,
        "{what}: cut after {took:?}, expected {deadline:?} .. {:?}",
        deadline + MARGIN
    );
}

/// Reads one whole HTTP/1.1 response (by its Content-Length) off a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if body.len() >= len {
                return text;
            }
        }
        let n = s.read(&mut chunk).expect("reading a response");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `(status, body)` of an HTTPS request with curl, verifying the CP with its CA.
fn curl_https(cp: &ControlPlane, url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(cp.work_dir.join("ca.crt"))
        .args(args)
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Whether the DP server answers HTTP over its TLS: an empty `/readiness` report is
/// refused with a 4xx (0 would mean no answer at all).
fn dp_server_answers(cp: &ControlPlane) -> bool {
    let (code, body) = curl_https(
        cp,
        &format!("{}/readiness", cp.cp_address()),
        &["-H", "content-type: application/json", "-d", "{}"],
    );
    eprintln!("DP server: {code} {}", body.trim());
    (400..500).contains(&code)
}

fn ready(cp: &ControlPlane) -> u16 {
    http("GET", cp.diag, "/ready", None).map_or(0, |(c, _)| c)
}

/// Runs kumactl with its own config file; `(ok, stdout, stderr)`.
fn kumactl(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("kumactl"))
        .arg("--config-file")
        .arg(config)
        .args(args)
        .output()
        .expect("running kumactl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn slow_clients_are_cut_at_each_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[
            ("KUMA_API_SERVER_READ_HEADER_TIMEOUT", "1s"),
            ("KUMA_API_SERVER_READ_TIMEOUT", "2s"),
            ("KUMA_API_SERVER_IDLE_TIMEOUT", "2s"),
            ("KUMA_DIAGNOSTICS_READ_HEADER_TIMEOUT", "1500ms"),
            ("KUMA_DIAGNOSTICS_IDLE_TIMEOUT", "1s"),
        ],
    );
    let header = Duration::from_secs(1);

    // Half the headers, on the API and on diagnostics.
    for (what, addr, deadline) in [
        ("API: half the headers", cp.api, header),
        (
            "diagnostics: half the headers",
            cp.diag,
            Duration::from_millis(1500),
        ),
    ] {
        let mut s = connect(addr);
        let t0 = Instant::now();
        s.write_all(b"GET /meshes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        let (got, end) = read_until_closed(&mut s, Duration::from_secs(20));
        assert!(
            got.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_cut(what, end - t0, deadline);
    }

    // Nothing at all on the HTTPS API: the TLS handshake has the header deadline.
    let mut s = connect(cp.api_https);
    let t0 = Instant::now();
    let (_, end) = read_until_closed(&mut s, Duration::from_secs(20));
    assert_cut("HTTPS API: no handshake", end - t0, header);

    // Half a body: the whole request must arrive within readTimeout of its first byte.
    let mut s = connect(cp.api);
    let t0 = Instant::now();
    s.write_all(
        b"PUT /meshes/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"type\":\"Mesh\",",
    )
    .unwrap();
    let (got, end) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_cut("API: half a body", end - t0, Duration::from_secs(2));
    let (code, _) = cp.get("/meshes/slow");
    assert_eq!(code, 404, "the half-sent Mesh was stored");

    // Kept alive and idle: two requests on one connection, then silence.
    for (what, addr, idle) in [
        ("API: idle keep-alive", cp.api, Duration::from_secs(2)),
        (
            "diagnostics: idle keep-alive",
            cp.diag,
            Duration::from_secs(1),
        ),
    ] {
        let mut s = connect(addr);
        for path in ["/", "/"] {
            let path = if addr == cp.diag { "/ready" } else { path };
            write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let resp = read_response(&mut s);
            assert!(resp.starts_with("HTTP/1.1 200"), "{what}: {resp}");
        }
        let t0 = Instant::now();
        let (got, end) = read_until_closed(&mut s, Duration::from_secs(20));
        assert!(got.is_empty());
        assert_cut(what, end - t0, idle);
    }

    // Well-behaved clients are unaffected.
    assert_eq!(cp.get("/meshes/default").0, 200);
    assert_eq!(ready(&cp), 200);
}

#[test]
fn connections_over_the_cap_are_closed_at_once_while_ready_and_the_dp_server_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[
            ("KUMA_API_SERVER_MAX_CONNECTIONS", "20"),
            // Held connections must stay until the test closes them.
            ("KUMA_API_SERVER_READ_HEADER_TIMEOUT", "60s"),
        ],
    );
    let held: Vec<TcpStream> = (0..20).map(|_| connect(cp.api)).collect();
    std::thread::sleep(Duration::from_millis(300));

    for i in 0..3 {
        let mut extra = connect(cp.api);
        let t0 = Instant::now();
        let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let (got, end) = read_until_closed(&mut extra, Duration::from_secs(5));
        eprintln!("over the cap #{i}: closed after {:?}", end - t0);
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        assert!(
            end - t0 < Duration::from_secs(1),
            "over the cap: closed after {:?}",
            end - t0
        );
    }
    assert_eq!(ready(&cp), 200, "/ready while the API is at its cap");
    assert!(
        dp_server_answers(&cp),
        "the DP server while the API is at its cap"
    );
    // The HTTPS listener has its own cap.
    let (code, body) = curl_https(
        &cp,
        &format!("https://{}/meshes/default", cp.api_https),
        &[],
    );
    assert_eq!(code, 200, "HTTPS API while HTTP is at its cap: {body}");
    assert!(
        cp.proc.log_text().contains("apiServer.maxConnections"),
        "no warning naming the cap in the log"
    );

    drop(held);
    wait_for("the API to serve again", Duration::from_secs(10), || {
        matches!(http("GET", cp.api, "/meshes/default", None), Ok((200, _))).then_some(())
    });
}

#[test]
fn an_idle_flood_under_a_low_fd_limit_leaves_ready_the_dp_server_and_the_api_working() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_under(
        &["prlimit", "--nofile=128:256", "--"],
        &dir.path().join("cp"),
        &[
            // Attackers' idle connections are held as long as the test needs.
            ("KUMA_API_SERVER_READ_HEADER_TIMEOUT", "120s"),
            ("KUMA_API_SERVER_IDLE_TIMEOUT", "120s"),
        ],
    );
    let log = cp.proc.log_text();
    let raised = log
        .lines()
        .find(|l| l.contains("RLIMIT_NOFILE"))
        .unwrap_or_else(|| panic!("no RLIMIT_NOFILE line in the log:\n{log}"));
    eprintln!("{raised}");
    assert!(
        raised.contains("from 128 to the hard limit 256"),
        "the soft limit was not raised to 256: {raised}"
    );
    let token = cp.admin_token();
    let bearer = format!("authorization: Bearer {token}");

    // More idle connections than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect_timeout(&cp.api, Duration::from_secs(2)) {
            Ok(s) => flood.push(s),
            Err(e) => panic!("connecting attacker #{}: {e}", flood.len()),
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    assert_eq!(ready(&cp), 200, "/ready during the flood");
    eprintln!("/ready during the flood answered in {:?}", t0.elapsed());
    assert!(dp_server_answers(&cp), "the DP server during the flood");
    let (code, body) = curl_https(
        &cp,
        &format!("https://{}/meshes/default", cp.api_https),
        &["-H", &bearer],
    );
    assert_eq!(code, 200, "authenticated API call during the flood: {body}");
    let (code, body) = curl_https(
        &cp,
        &format!("https://{}/who-am-i", cp.api_https),
        &["-H", &bearer],
    );
    assert!(
        code == 200 && body.contains("mesh-system:admin"),
        "{code} {body}"
    );

    drop(flood);
    wait_for(
        "the API on the flooded port to serve again",
        Duration::from_secs(10),
        || {
            let ok = http_with(
                "GET",
                cp.api,
                "/meshes/default",
                &[("Authorization", &format!("Bearer {token}"))],
                None,
            );
            matches!(ok, Ok((200, _))).then_some(())
        },
    );
    let log = cp.proc.log_text();
    assert!(
        !log.contains("Too many open files"),
        "kuma-cp ran out of descriptors:\n{log}"
    );
}

#[test]
fn kumactl_uses_the_https_api_with_the_cp_ca_and_refuses_it_without() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let ca = cp.work_dir.join("ca.crt");
    let address = format!("https://127.0.0.1:{}", cp.api_https.port());
    let config = dir.path().join("kumactl-config");

    let (ok, _, err) = kumactl(
        &config,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "untrusted",
            "--address",
            &address,
        ],
    );
    assert!(!ok, "added an HTTPS control plane without its CA");
    assert!(
        err.contains("certificate") && err.contains("--ca-cert-file"),
        "not a clear certificate error: {err}"
    );

    let ca_arg = ca.display().to_string();
    let (ok, out, err) = kumactl(
        &config,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "tls",
            "--address",
            &address,
            "--ca-cert-file",
            &ca_arg,
        ],
    );
    assert!(ok, "{out}{err}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains(&format!("caCertFile: {ca_arg}")) && saved.contains(&address),
        "{saved}"
    );
    let (ok, out, err) = kumactl(&config, &["get", "meshes"]);
    assert!(ok && out.contains("default"), "{out}{err}");
    // Loopback callers are admin over HTTPS as over HTTP (Kuma's localhostIsAdmin): secrets
    // are admin-only.
    let (ok, out, err) = kumactl(&config, &["get", "global-secrets"]);
    assert!(ok && out.contains("admin-user-token"), "{out}{err}");
    assert!(!err.contains("WARNING"), "{err}");
}

/// An address of this host that is not loopback (the interface of the default route).
fn non_loopback_ip() -> std::net::IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    // No packet is sent: connect only picks the route and so the local address.
    s.connect("192.0.2.1:9")
        .expect("this test needs a non-loopback IPv4 route");
    let ip = s.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "this test needs a non-loopback address, found {ip}"
    );
    ip
}

#[test]
fn kumactl_warns_before_sending_a_token_over_plain_http_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[("KUMA_API_SERVER_HTTP_INTERFACE", "0.0.0.0")],
    );
    let token = cp.admin_token();
    let ip = non_loopback_ip();
    let remote = format!("http://{ip}:{}", cp.api.port());
    let conf = format!("token={token}");
    let config = dir.path().join("kumactl-config");

    let (ok, out, err) = kumactl(
        &config,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "remote",
            "--address",
            &remote,
            "--auth-type",
            "tokens",
            "--auth-conf",
            &conf,
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("WARNING") && err.contains("plain HTTP") && err.contains(&ip.to_string()),
        "no warning on adding: {err}"
    );
    let (ok, out, err) = kumactl(&config, &["get", "meshes"]);
    assert!(ok && out.contains("default"), "{out}{err}");
    assert!(
        err.contains("WARNING") && err.contains("plain HTTP"),
        "no warning: {err}"
    );
    eprintln!("kumactl said: {}", err.trim());

    // Loopback, or no token: no warning.
    let local = format!("http://127.0.0.1:{}", cp.api.port());
    let (ok, _, err) = kumactl(
        &config,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "local2",
            "--address",
            &local,
            "--auth-type",
            "tokens",
            "--auth-conf",
            &conf,
        ],
    );
    assert!(ok && !err.contains("WARNING"), "{err}");
    let (_, _, err) = kumactl(
        &config,
        &[
            "config",
            "control-planes",
            "add",
            "--name",
            "anon",
            "--address",
            &remote,
        ],
    );
    assert!(!err.contains("WARNING"), "{err}");
}
