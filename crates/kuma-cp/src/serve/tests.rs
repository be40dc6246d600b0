//! The serving loop against real sockets: each deadline cuts a slow client, the cap closes
//! extra connections at once, the peer address reaches handlers, TLS works, accept errors
//! (descriptors exhausted) are survived.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use rustls_pki_types::pem::PemObject;

use super::*;

/// Handlers of `/slow` that ran to their end.
static SLOW_DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn limits() -> Limits {
    Limits {
        read_header_timeout: Duration::from_millis(400),
        read_timeout: Duration::from_millis(800),
        write_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(600),
        max_connections: 100,
    }
}

fn router() -> Router {
    Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route("/big", get(|| async { vec![b'x'; 32 * 1024 * 1024] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                SLOW_DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "done"
            }),
        )
}

/// A server on a free loopback port; cancelled (and awaited) on drop of the token.
struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::new("test", "test.maxConnections", listener, limits);
    if let Some(t) = tls {
        server = server.with_tls(t);
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(router(), shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Reads until EOF (or a reset); the bytes read and when the connection ended.
async fn read_to_close(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> (Vec<u8>, Instant) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => panic!(
                "connection still open after {limit:?} ({} bytes read)",
                buf.len()
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, Instant::now()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn assert_cut(what: &str, elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected.saturating_sub(Duration::from_millis(50))
            && elapsed < expected + Duration::from_millis(700),
        "{what}: cut after {elapsed:?}, expected about {expected:?}"
    );
}

#[tokio::test]
async fn half_headers_are_cut_at_the_header_deadline() {
    let srv = start(limits(), None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (bytes, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_cut("half headers", end - t0, limits().read_header_timeout);
    // Trickling header bytes does not extend the deadline.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    let trickle = async {
        for b in b"GET /peer HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxx" {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    trickle.await;
    let (_, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(end - t0 < Duration::from_secs(2), "{:?}", end - t0);
}

#[tokio::test]
async fn half_a_body_is_cut_at_the_read_deadline() {
    let srv = start(limits(), None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    let (bytes, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_cut("half a body", end - t0, limits().read_timeout);
    // A whole body is answered.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("hello"),
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let srv = start(limits(), None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // Two requests on one connection, the second after a pause shorter than the timeout.
    for _ in 0..2 {
        s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let t0 = Instant::now() - Duration::from_millis(300);
    let (bytes, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert_cut("idle", end - t0, limits().idle_timeout);
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_at_the_write_deadline() {
    let srv = start(limits(), None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(limits().write_timeout + Duration::from_millis(500)).await;
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        bytes.len() < 32 * 1024 * 1024,
        "the whole response arrived ({} bytes): the connection was not cut",
        bytes.len()
    );
}

#[tokio::test]
async fn a_handler_outliving_the_write_deadline_is_cut_off_but_not_cancelled() {
    let srv = start(limits(), None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (bytes, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_cut("slow handler", end - t0, limits().write_timeout);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        SLOW_DONE.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the handler was cancelled with its connection"
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let srv = start(
        Limits {
            max_connections: 3,
            read_header_timeout: Duration::from_secs(30),
            ..limits()
        },
        None,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    let (bytes, end) = read_to_close(&mut extra, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert!(end - t0 < Duration::from_millis(500), "{:?}", end - t0);
    // A freed slot serves again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        bytes.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let srv = start(limits(), None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.ends_with(&me.to_string()), "{text}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_ends_the_loop() {
    let srv = start(
        Limits {
            idle_timeout: Duration::from_secs(60),
            read_header_timeout: Duration::from_secs(60),
            ..limits()
        },
        None,
    )
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.shutdown.cancel();
    tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), srv.task)
        .await
        .expect("the loop ended")
        .unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(1)).await;
}

fn tls_pair() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    let id = crate::tls::Identity::generate("test-host").unwrap();
    let server = id.server_config_alpn(&[b"http/1.1"]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(id.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (server, tokio_rustls::TlsConnector::from(Arc::new(client)))
}

#[tokio::test]
async fn tls_serves_and_a_silent_handshake_is_cut() {
    let (server, connector) = tls_pair();
    let srv = start(limits(), Some(server)).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /peer HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with(&me.to_string()),
        "{text}"
    );
    // A client that never starts the handshake is cut at the header deadline.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let t0 = Instant::now();
    let (_, end) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert_cut("silent TLS client", end - t0, limits().read_header_timeout);
}

#[test]
fn caps_fit_the_budget() {
    let mut caps = [128, 1024, 1024];
    assert!(!fit_caps(&mut caps, 10_000));
    assert_eq!(caps, [128, 1024, 1024]);
    assert!(fit_caps(&mut caps, 128));
    assert!(caps.iter().sum::<usize>() <= 128, "{caps:?}");
    assert_eq!(caps[1], caps[2]);
    assert!(caps.iter().all(|&c| c >= 1));
    let mut tiny = [5, 5];
    fit_caps(&mut tiny, 0);
    assert_eq!(tiny, [1, 1]);
}

/// Runs in a child process (this test binary again, filtered to this test) because it lowers
/// the process's open-file limit: with descriptors exhausted, `accept` fails with `EMFILE`;
/// the loop must back off and serve again once descriptors are free.
#[test]
fn accept_survives_running_out_of_descriptors() {
    const CHILD: &str = "KUMA_CP_SERVE_EMFILE_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "serve::tests::accept_survives_running_out_of_descriptors",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let srv = start(
            Limits {
                max_connections: 100_000,
                read_header_timeout: Duration::from_secs(60),
                ..limits()
            },
            None,
        )
        .await;
        // Leave a few descriptors above what is open now.
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
        rlimit::Resource::NOFILE.set(open + 16, hard).unwrap();
        let mut clients = Vec::new();
        loop {
            match TcpStream::connect(srv.addr).await {
                Ok(s) => clients.push(s),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(24), "{e}"); // EMFILE
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        // The server is out of descriptors too (its accepts fail) and backs off.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!srv.task.is_finished(), "the accept loop ended");
        clients.clear();
        let mut ok = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(mut s) = TcpStream::connect(srv.addr).await else {
                continue;
            };
            let _ = s
                .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
            if bytes.starts_with(b"HTTP/1.1 200") {
                ok = true;
                break;
            }
        }
        assert!(
            ok,
            "the server did not serve again after descriptors were freed"
        );
    });
}
