//! The DNS server of a real `kuma-dp` process, asked with real `dig`.
//!
//! Stand-ins around it: a tiny HTTP server on `<workdir>/kuma-mesh-metric-config.sock` playing
//! Envoy's `_kuma:dynamicconfig` listener (`GET /dns` with `Etag` / `304`, requests counted),
//! and an upstream DNS server on `127.x.y.z:53` named by a resolv.conf in a temp dir
//! (`KUMA_DNS_RESOLV_CONF`). kuma-dp's control plane address leads nowhere: it keeps retrying
//! its bootstrap while the DNS server, bound and served before it, answers.
//!
//! Needs root (port 53 on a loopback address), `dig` (Debian `dnsutils`), Envoy and the built
//! binaries; fails loudly without them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{Proc, binary, envoy, free_port, wait_for};

/// `dig @127.0.0.1 -p <port> <args>`; its stdout.
fn dig(port: u16, args: &[&str]) -> String {
    dig_at("127.0.0.1", port, args)
}

/// `dig @<server> -p <port> <args>`; its stdout.
fn dig_at(server: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .arg("-p")
        .arg(port.to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is missing: install Debian's dnsutils (scripts/setup.sh does)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short`, one answer per line.
fn short(port: u16, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    dig(port, &all)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The stand-in for Envoy's dynamic-config listener.

/// Serves `GET /dns` on a UNIX socket until stopped: 200 with the table and its `Etag`, or
/// 304 when `If-None-Match` carries that etag.
struct ConfigServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Requests served: (all, answered 304).
    counts: Arc<(AtomicUsize, AtomicUsize)>,
    /// The `If-None-Match` values seen.
    seen_tags: Arc<Mutex<Vec<String>>>,
}

impl ConfigServer {
    fn start(path: &Path, body: &str, etag: &str) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("binding the dynamic-config socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen_tags = Arc::new(Mutex::new(Vec::new()));
        let (body, etag) = (body.to_string(), etag.to_string());
        let thread = {
            let (stop, counts, seen_tags) = (stop.clone(), counts.clone(), seen_tags.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut stream = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    stream.set_nonblocking(false).ok();
                    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    counts.0.fetch_add(1, Ordering::SeqCst);
                    let tag = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("if-none-match")
                            .then(|| v.trim().to_string())
                    });
                    let response = if !head.starts_with("GET /dns ") {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_string()
                    } else if tag.as_deref() == Some(etag.as_str()) {
                        counts.1.fetch_add(1, Ordering::SeqCst);
                        format!(
                            "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nconnection: close\r\n\r\n"
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: {etag}\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    if let Some(tag) = tag {
                        seen_tags.lock().unwrap().push(tag);
                    }
                    let _ = stream.write_all(response.as_bytes());
                }
                // The listener closes here; the socket file stays, as Envoy leaves it.
            })
        };
        ConfigServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
            counts,
            seen_tags,
        }
    }

    fn requests(&self) -> usize {
        self.counts.0.load(Ordering::SeqCst)
    }

    fn not_modified(&self) -> usize {
        self.counts.1.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("config server thread");
        }
    }
}

impl Drop for ConfigServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream resolver.

/// Answers of the upstream: `example.test` A 203.0.113.7; `big.test` truncated over UDP and
/// three A records over TCP; everything else NXDOMAIN.
struct Upstream {
    addr: Ipv4Addr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// The question's name (lower case, dotted) and where the question ends.
fn question(query: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    Some((labels.join("."), i + 4))
}

fn upstream_answer(query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let (name, end) = question(query)?;
    let (truncated, ips, rcode): (bool, Vec<[u8; 4]>, u8) = match name.as_str() {
        "example.test" => (false, vec![[203, 0, 113, 7]], 0),
        "big.test" if !tcp => (true, vec![], 0),
        "big.test" => (
            false,
            vec![[203, 0, 113, 10], [203, 0, 113, 11], [203, 0, 113, 12]],
            0,
        ),
        _ => (false, vec![], 3),
    };
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    let rd = query[2] & 0x01;
    out.push(0x80 | rd | if truncated { 0x02 } else { 0 });
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..end]);
    for ip in ips {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&ip);
    }
    Some(out)
}

impl Upstream {
    /// Binds UDP and TCP port 53 on a spare loopback address.
    fn start() -> Self {
        let pid = std::process::id();
        let addr = Ipv4Addr::new(127, 53, (pid % 250) as u8 + 1, (pid / 250 % 250) as u8 + 2);
        let udp = UdpSocket::bind((addr, 53))
            .unwrap_or_else(|e| panic!("binding {addr}:53 (tests run as root): {e}"));
        udp.set_read_timeout(Some(Duration::from_millis(100))).ok();
        let tcp = std::net::TcpListener::bind((addr, 53))
            .unwrap_or_else(|e| panic!("binding tcp {addr}:53: {e}"));
        tcp.set_nonblocking(true).ok();
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        {
            let (stop, count) = (stop.clone(), udp_queries.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Some(answer) = upstream_answer(&buf[..n], false) {
                        let _ = udp.send_to(&answer, peer);
                    }
                }
            });
        }
        {
            let (stop, count) = (stop.clone(), tcp_queries.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    s.set_nonblocking(false).ok();
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() {
                        continue;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Some(a) = upstream_answer(&q, true) {
                        let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&a);
                        let _ = s.write_all(&framed);
                    }
                }
            });
        }
        Upstream {
            addr,
            udp_queries,
            tcp_queries,
            stop,
        }
    }

    fn queries(&self) -> (usize, usize) {
        (
            self.udp_queries.load(Ordering::SeqCst),
            self.tcp_queries.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------

const TABLE: &str = r#"{"records":[{"name":"backend.mesh","ips":["240.0.0.1","::ffff:240.0.0.1"]},{"name":"web_front.mesh","ips":["240.0.0.2"]},{"name":"web.front.mesh","ips":["240.0.0.2"]}],"ttl":30,"domain":"mesh"}"#;
const TABLE_2: &str = r#"{"records":[{"name":"backend.mesh","ips":["240.0.0.1","::ffff:240.0.0.1"]},{"name":"fresh.mesh","ips":["240.0.0.3"]}],"ttl":30,"domain":"mesh"}"#;

/// Starts kuma-dp with its DNS on `port`, its work dir `work`, forwarding to `resolv`; its
/// control plane address leads nowhere, so it stays in its bootstrap retries.
fn start_kuma_dp(dir: &Path, work: &Path, port: u16, resolv: &Path) -> Proc {
    let dead_cp = free_port();
    let mut cmd = Command::new(binary("kuma-dp"));
    cmd.arg("run")
        .arg("--cp-address")
        .arg(format!("http://127.0.0.1:{dead_cp}"))
        .arg("--dataplane")
        .arg("type: Dataplane\nmesh: default\nname: dns-dp\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 18080\n    tags:\n      kuma.io/service: dns\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n")
        .arg("--binary-path")
        .arg(envoy())
        .arg("--work-dir")
        .arg(work)
        .arg("--readiness-port")
        .arg("0")
        .arg("--dns-coredns-port")
        .arg(port.to_string());
    for (key, _) in std::env::vars() {
        if key.starts_with("KUMA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("KUMA_DNS_RESOLV_CONF", resolv)
        .env("KUMA_CONTROL_PLANE_RETRY_BACKOFF", "1s")
        .env("KUMA_LOG_LEVEL", "debug");
    Proc::spawn("kuma-dp dns", cmd, dir.join("kuma-dp.log")).expect("start kuma-dp")
}

#[test]
fn kuma_dp_answers_mesh_names_forwards_the_rest_and_keeps_its_last_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let socket = work.join("kuma-mesh-metric-config.sock");

    let upstream = Upstream::start();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("# test resolver\nnameserver {}\n", upstream.addr),
    )
    .expect("resolv.conf");

    let port = free_port();
    let dp = start_kuma_dp(dir.path(), &work, port, &resolv);

    // Before any table: names outside the mesh are already forwarded; mesh names SERVFAIL.
    wait_for("kuma-dp DNS to answer", Duration::from_secs(20), || {
        (short(port, &["example.test"]) == ["203.0.113.7"]).then_some(())
    });
    assert!(
        dig(port, &["backend.mesh"]).contains("status: SERVFAIL"),
        "before the first table"
    );

    let mut config = ConfigServer::start(&socket, TABLE, "etag-1");
    wait_for("the first DNS table", Duration::from_secs(5), || {
        (short(port, &["backend.mesh"]) == ["240.0.0.1"]).then_some(())
    });

    let (udp_before, tcp_before) = upstream.queries();
    // A, AAAA, TCP, case, trailing dot, the dotted variant; authoritative with TTL 30.
    assert_eq!(short(port, &["AAAA", "backend.mesh"]), ["::ffff:240.0.0.1"]);
    assert_eq!(short(port, &["+tcp", "backend.mesh"]), ["240.0.0.1"]);
    assert_eq!(
        short(port, &["+tcp", "AAAA", "backend.mesh"]),
        ["::ffff:240.0.0.1"]
    );
    assert_eq!(short(port, &["BackEnd.MESH."]), ["240.0.0.1"]);
    assert_eq!(short(port, &["web.front.mesh"]), ["240.0.0.2"]);
    assert_eq!(short(port, &["web_front.mesh"]), ["240.0.0.2"]);
    let full = dig(port, &["backend.mesh"]);
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains(" aa "), "authoritative: {full}");
    assert!(
        full.lines()
            .any(|l| l.starts_with("backend.mesh.") && l.contains("\t30\tIN\tA\t240.0.0.1")),
        "{full}"
    );
    // NODATA: a name with no IPv6 address.
    let nodata = dig(port, &["AAAA", "web.front.mesh"]);
    assert!(nodata.contains("status: NOERROR"), "{nodata}");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");
    // Unknown under .mesh: NXDOMAIN, over UDP and TCP.
    let nx = dig(port, &["nothere.mesh"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(dig(port, &["+tcp", "nothere.mesh"]).contains("status: NXDOMAIN"));
    // The IPv6 loopback too, when the host has one.
    let has_v6_loopback = std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| {
        t.lines()
            .any(|l| l.starts_with("00000000000000000000000000000001"))
    });
    if has_v6_loopback {
        let v6 = dig_at("::1", port, &["+short", "backend.mesh"]);
        assert_eq!(v6.trim(), "240.0.0.1", "over ::1");
    }
    // None of that reached the upstream.
    assert_eq!(upstream.queries(), (udp_before, tcp_before));

    // Forwarded: answered by the upstream over UDP, over TCP when asked over TCP, and over
    // TCP when the UDP answer is truncated; its NXDOMAIN passes through.
    assert_eq!(short(port, &["example.test"]), ["203.0.113.7"]);
    assert_eq!(upstream.queries().0, udp_before + 1);
    assert_eq!(short(port, &["+tcp", "example.test"]), ["203.0.113.7"]);
    assert_eq!(upstream.queries().1, tcp_before + 1);
    let mut big = short(port, &["big.test"]);
    big.sort();
    assert_eq!(big, ["203.0.113.10", "203.0.113.11", "203.0.113.12"]);
    assert_eq!(upstream.queries(), (udp_before + 2, tcp_before + 2));
    assert!(dig(port, &["unknown.test"]).contains("status: NXDOMAIN"));

    // A figure, not an assertion: sequential local answers over one UDP socket.
    let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut q = vec![0, 0, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["backend", "mesh"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let n = 2000u16;
    let started = Instant::now();
    let mut buf = [0u8; 512];
    for id in 0..n {
        q[..2].copy_from_slice(&id.to_be_bytes());
        client.send_to(&q, ("127.0.0.1", port)).expect("send");
        let got = client.recv(&mut buf).expect("an answer");
        assert_eq!(buf[..2], id.to_be_bytes());
        assert!(got > q.len());
    }
    let took = started.elapsed();
    println!(
        "{n} sequential local A answers over UDP in {took:?} ({:.0}/s, debug build)",
        f64::from(n) / took.as_secs_f64()
    );

    // Polling uses the etag: 304s, and the etag is what kuma-dp sends back.
    let before = config.requests();
    std::thread::sleep(Duration::from_millis(1100));
    let polls = config.requests() - before;
    assert!(
        (2..=6).contains(&polls),
        "{polls} polls in 1.1 s (every 250 ms)"
    );
    assert!(config.not_modified() >= 3, "{}", config.not_modified());
    assert!(
        config
            .seen_tags
            .lock()
            .unwrap()
            .iter()
            .all(|t| t == "etag-1")
    );
    println!("dynamic-config polls in 1.1 s: {polls}");

    // Envoy's listener gone (its socket left behind): answers stay the same.
    config.stop();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(short(port, &["backend.mesh"]), ["240.0.0.1"]);
    assert_eq!(short(port, &["+tcp", "web.front.mesh"]), ["240.0.0.2"]);
    assert!(dig(port, &["fresh.mesh"]).contains("status: NXDOMAIN"));
    drop(config);
    // The socket file removed too: still the same answers.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(short(port, &["AAAA", "backend.mesh"]), ["::ffff:240.0.0.1"]);

    // A new table: the new name resolves within a second, the removed one is gone.
    let started = Instant::now();
    let config = ConfigServer::start(&socket, TABLE_2, "etag-2");
    loop {
        if short(port, &["fresh.mesh"]) == ["240.0.0.3"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "fresh.mesh did not resolve within 1 s of the new table"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    println!("a new service resolved {took:?} after the new table was served");
    assert!(dig(port, &["web.front.mesh"]).contains("status: NXDOMAIN"));
    assert!(config.requests() >= 1);
    assert!(dp.log_text().contains("received the first DNS table"));
}

#[test]
fn dns_disabled_binds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Command::new(binary("kuma-dp"));
    cmd.arg("run")
        .arg("--cp-address")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("--dataplane")
        .arg("type: Dataplane\nmesh: default\nname: no-dns\nnetworking:\n  address: 127.0.0.1\n")
        .arg("--binary-path")
        .arg(envoy())
        .arg("--readiness-port")
        .arg("0")
        .arg("--dns-coredns-port")
        .arg(port.to_string())
        .env("KUMA_DNS_ENABLED", "false");
    let dp = Proc::spawn("kuma-dp no-dns", cmd, dir.path().join("kuma-dp.log")).expect("kuma-dp");
    wait_for(
        "kuma-dp to try its bootstrap",
        Duration::from_secs(20),
        || dp.log_text().contains("fetching bootstrap").then_some(()),
    );
    // Nothing on the port: the socket binds.
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .expect("the DNS port stays free with KUMA_DNS_ENABLED=false");
}
