//! Data path benchmark: the same fixed-rate load ([`crate::loadgen`], open loop, 1 kB
//! responses) over three paths, one after the other:
//! - `direct`: client → server;
//! - `static-envoy-pair`: client → Envoy → (mTLS) → Envoy → server, with a minimal
//!   hand-written static config (HTTP connection manager + router on both sides, certificates
//!   from rcgen, no RBAC, no stats tags beyond the defaults);
//! - `mesh`: client → Envoy → (mTLS) → Envoy → server as configured by kuma-cp (builtin CA,
//!   STRICT, allow-all MeshTrafficPermission), each Envoy run by kuma-dp.
//!
//! Both Envoy setups run with `--concurrency 1` (kuma-dp's default). For each path: latency
//! p50/p90/p99/p99.9/max and, per Envoy, the CPU it used over the measured window (from
//! `/proc/<pid>/stat`).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cp::{self, ControlPlane, free_port};
use crate::loadgen::{self, Figures, Server};
use crate::procfs;

/// `datapath` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// kuma-cp binary (default: beside this binary).
    #[arg(long)]
    pub cp_binary: Option<PathBuf>,
    /// kuma-dp binary (default: beside this binary).
    #[arg(long)]
    pub dp_binary: Option<PathBuf>,
    /// Envoy binary (default: $ENVOY_BIN, then ./.venv/lib/python3*/site-packages/envoy/_bin/envoy,
    /// then `envoy` on PATH).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Requests per second.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 1_024)]
    pub body_bytes: usize,
    /// Measured seconds per path.
    #[arg(long, default_value_t = 30.0)]
    pub duration_secs: f64,
    /// Unmeasured warm-up seconds per path.
    #[arg(long, default_value_t = 5.0)]
    pub warmup_secs: f64,
    /// Client connections (the most requests in flight).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Paths to run (default: all three).
    #[arg(long, value_enum)]
    pub only: Vec<Setup>,
    /// Keep the work dir (configs, certificates, logs).
    #[arg(long)]
    pub keep_workdir: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A measured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setup {
    Direct,
    StaticEnvoyPair,
    Mesh,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::StaticEnvoyPair => "static-envoy-pair",
            Setup::Mesh => "mesh",
        }
    }
}

/// CPU of one Envoy over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct EnvoyCpu {
    pub role: String,
    pub pid: u32,
    pub cpu_s: f64,
    /// Share of one core over the window.
    pub cpu_percent: f64,
    /// CPU per request, microseconds.
    pub cpu_us_per_request: f64,
    pub rss_mib: f64,
}

/// One path's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    pub path: Setup,
    pub latency: Figures,
    pub envoys: Vec<EnvoyCpu>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rate: u32,
    pub body_bytes: usize,
    pub duration_s: f64,
    pub connections: usize,
    pub envoy_version: String,
    pub results: Vec<PathResult>,
    /// Mesh p99 over the static pair's p99, minus one (0.10 = +10%).
    pub mesh_p99_overhead: Option<f64>,
}

impl Report {
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "data path: {} req/s, {} B responses, {:.0} s measured per path, {} connections, Envoy {}",
            self.rate, self.body_bytes, self.duration_s, self.connections, self.envoy_version
        );
        let _ = writeln!(
            s,
            "{:<18} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  envoy CPU (% of a core, µs/request)",
            "path", "requests", "errors", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
        );
        for r in &self.results {
            let l = &r.latency;
            let cpu: Vec<String> = r
                .envoys
                .iter()
                .map(|e| {
                    format!(
                        "{} {:.1}% {:.0}µs",
                        e.role, e.cpu_percent, e.cpu_us_per_request
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "{:<18} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
                r.path.name(),
                l.requests,
                l.errors,
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                cpu.join(", ")
            );
        }
        if let Some(o) = self.mesh_p99_overhead {
            let _ = writeln!(s, "mesh p99 vs the static pair: {:+.1}%", o * 100.0);
        }
        s
    }
}

/// A child process in its own process group, killed with its descendants on drop.
struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.into(),
            child,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(st)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{} exited ({st}); last log lines:\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn beside_self(name: &str) -> Option<PathBuf> {
    let p = std::env::current_exe().ok()?.with_file_name(name);
    p.exists().then_some(p)
}

/// The Envoy binary: flag, `ENVOY_BIN`, the project's `.venv`, or PATH.
pub fn find_envoy(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut roots = vec![PathBuf::from(".")];
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/kuma-xds-load → the workspace root.
        roots.extend(exe.ancestors().nth(3).map(Path::to_path_buf));
    }
    for root in roots {
        if let Ok(dirs) = std::fs::read_dir(root.join(".venv/lib")) {
            for d in dirs.flatten() {
                let p = d.path().join("site-packages/envoy/_bin/envoy");
                if p.exists() {
                    return Ok(p);
                }
            }
        }
    }
    let out = Command::new("sh")
        .args(["-c", "command -v envoy"])
        .output()
        .context("looking for envoy on PATH")?;
    if out.status.success() {
        return Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    bail!("Envoy not found: pass --envoy, set ENVOY_BIN or run ./scripts/setup.sh")
}

/// One GET; whether it answered 200.
fn probe(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

async fn wait_path(addr: SocketAddr, procs: &mut [&mut Child], what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::task::spawn_blocking(move || probe(addr)).await? {
            return Ok(());
        }
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("{what}: no 200 through {addr} within 60s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the load on `target`, sampling the CPU of `envoys` over the measured window.
async fn measure(
    args: &Args,
    path: Setup,
    target: SocketAddr,
    envoys: Vec<(String, u32)>,
) -> anyhow::Result<PathResult> {
    let spec = loadgen::Spec {
        target,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_secs),
        warmup: Duration::from_secs_f64(args.warmup_secs),
        connections: args.connections,
    };
    let load = tokio::task::spawn_blocking(move || loadgen::run(&spec));
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs) + Duration::from_millis(50)).await;
    let before: Vec<Option<procfs::Sample>> = envoys
        .iter()
        .map(|(_, pid)| procfs::sample(*pid).ok())
        .collect();
    let t0 = Instant::now();
    let latency = load.await??;
    let window = t0.elapsed().as_secs_f64();
    let mut cpu = Vec::new();
    for ((role, pid), b) in envoys.into_iter().zip(before) {
        let (Some(b), Ok(a)) = (b, procfs::sample(pid)) else {
            bail!("Envoy {role} (pid {pid}) is gone");
        };
        let cpu_s = a.cpu_seconds - b.cpu_seconds;
        cpu.push(EnvoyCpu {
            role,
            pid,
            cpu_s,
            cpu_percent: cpu_s / window * 100.0,
            cpu_us_per_request: cpu_s * 1e6 / latency.requests.max(1) as f64,
            rss_mib: a.rss_mib(),
        });
    }
    Ok(PathResult {
        path,
        latency,
        envoys: cpu,
    })
}

/// A CA and two leaf certificates (client and server) for the static pair.
fn static_certs(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    for who in ["client", "server"] {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.subject_alt_names
            .push(SanType::URI(format!("spiffe://bench/{who}").try_into()?));
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{who}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{who}.key")), key.serialize_pem())?;
    }
    Ok(())
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn hcm(stat_prefix: &str, cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": [{"name": stat_prefix, "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}})
}

fn tls_context(dir: &Path, who: &str, peer: &str) -> Value {
    let f = |n: String| json!({"filename": dir.join(n).display().to_string()});
    json!({
        "tls_certificates": [{"certificate_chain": f(format!("{who}.pem")), "private_key": f(format!("{who}.key"))}],
        "validation_context": {"trusted_ca": f("ca.pem".into()),
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": format!("spiffe://bench/{peer}")}}]}
    })
}

fn cluster(name: &str, port: u16, tls: Option<Value>) -> Value {
    let mut c = json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(port)}}]}]}});
    if let Some(t) = tls {
        c["transport_socket"] = t;
    }
    c
}

/// The two static configs: `client` (outbound listener → mTLS upstream) and `server` (mTLS
/// listener requiring a client certificate → the workload).
fn static_configs(dir: &Path, out_port: u16, in_port: u16, server_port: u16) -> (Value, Value) {
    let client = json!({
        "admin": {"address": socket(free_port().unwrap_or(0))},
        "static_resources": {
            "listeners": [{"name": "outbound", "address": socket(out_port),
                "filter_chains": [{"filters": [hcm("outbound", "upstream")]}]}],
            "clusters": [cluster("upstream", in_port, Some(json!({"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "server",
                "common_tls_context": tls_context(dir, "client", "server")}})))]
        }
    });
    let server = json!({
        "admin": {"address": socket(free_port().unwrap_or(0))},
        "static_resources": {
            "listeners": [{"name": "inbound", "address": socket(in_port),
                "filter_chains": [{
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": true,
                        "common_tls_context": tls_context(dir, "server", "client")}},
                    "filters": [hcm("inbound", "workload")]}]}],
            "clusters": [cluster("workload", server_port, None)]
        }
    });
    (client, server)
}

fn envoy_cmd(envoy: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(envoy);
    cmd.arg("-c").arg(config).args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warning",
    ]);
    cmd
}

async fn run_static(
    args: &Args,
    dir: &Path,
    envoy: &Path,
    server: SocketAddr,
) -> anyhow::Result<PathResult> {
    let dir = dir.join("static");
    std::fs::create_dir_all(&dir)?;
    static_certs(&dir)?;
    let (out_port, in_port) = (free_port()?, free_port()?);
    let (client, srv) = static_configs(&dir, out_port, in_port, server.port());
    let mut procs = Vec::new();
    for (role, cfg) in [("server", srv), ("client", client)] {
        let path = dir.join(format!("{role}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
        procs.push(Child::spawn(
            &format!("envoy ({role}, static)"),
            envoy_cmd(envoy, &path),
            dir.join(format!("{role}.log")),
        )?);
    }
    let target = SocketAddr::from(([127, 0, 0, 1], out_port));
    {
        let mut refs: Vec<&mut Child> = procs.iter_mut().collect();
        wait_path(target, &mut refs, "static Envoy pair").await?;
    }
    let envoys = vec![
        ("server-side".to_string(), procs[0].pid()),
        ("client-side".to_string(), procs[1].pid()),
    ];
    measure(args, Setup::StaticEnvoyPair, target, envoys).await
}

async fn run_mesh(
    args: &Args,
    dir: &Path,
    envoy: &Path,
    server: SocketAddr,
) -> anyhow::Result<PathResult> {
    let dir = dir.join("mesh");
    std::fs::create_dir_all(&dir)?;
    let cp_binary = args
        .cp_binary
        .clone()
        .or_else(|| beside_self("kuma-cp"))
        .context("kuma-cp not found beside this binary: pass --cp-binary")?;
    let dp_binary = args
        .dp_binary
        .clone()
        .or_else(|| beside_self("kuma-dp"))
        .context("kuma-dp not found beside this binary: pass --dp-binary")?;
    let cp = ControlPlane::new(&cp::Options {
        binary: Some(cp_binary),
        keep_work_dir: args.keep_workdir,
        ..Default::default()
    })
    .await?;
    cp.put(
        "/meshes/default",
        &json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1",
            "backends": [{"name": "ca-1", "type": "builtin", "mode": "STRICT"}]}}),
    )
    .await?;
    cp.put(
        "/meshes/default/meshtrafficpermissions/allow-all",
        &json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all",
            "spec": {"targetRef": {"kind": "Mesh"},
                     "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    )
    .await?;
    let ca_file = dir.join("kuma-cp.crt");
    std::fs::write(&ca_file, &cp.ca_pem)?;
    let out_port = free_port()?;
    let server_dp = json!({"type": "Dataplane", "mesh": "default", "name": "echo",
        "networking": {"address": "127.0.0.1", "admin": {"port": free_port()?},
            "inbound": [{"port": free_port()?, "servicePort": server.port(), "serviceAddress": "127.0.0.1",
                "tags": {"kuma.io/service": "echo", "kuma.io/protocol": "http"}}]}});
    let client_dp = json!({"type": "Dataplane", "mesh": "default", "name": "client",
        "networking": {"address": "127.0.0.1", "admin": {"port": free_port()?},
            "inbound": [{"port": free_port()?, "servicePort": free_port()?, "serviceAddress": "127.0.0.1",
                "tags": {"kuma.io/service": "client", "kuma.io/protocol": "http"}}],
            "outbound": [{"port": out_port, "tags": {"kuma.io/service": "echo"}}]}});
    let mut procs = Vec::new();
    for dp in [&server_dp, &client_dp] {
        let name = dp["name"].as_str().unwrap_or("dp");
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, dp.to_string())?;
        let mut cmd = Command::new(&dp_binary);
        cmd.arg("run")
            .arg("--cp-address")
            .arg(format!("https://127.0.0.1:{}", cp.dp_server.port()))
            .arg("--ca-cert-file")
            .arg(&ca_file)
            .arg("--dataplane-file")
            .arg(&file)
            .arg("--binary-path")
            .arg(envoy)
            .arg("--readiness-port")
            .arg(free_port()?.to_string())
            .arg("--envoy-log-level")
            .arg("warning")
            .arg("--drain-time")
            .arg("1s")
            .arg("--dns-enabled=false");
        if cp.dp_tokens {
            let token = cp.dataplane_token("default", name, None).await?;
            let path = dir.join(format!("{name}.token"));
            std::fs::write(&path, token)?;
            cmd.arg("--dataplane-token-file").arg(path);
        }
        procs.push(Child::spawn(
            &format!("kuma-dp {name}"),
            cmd,
            dir.join(format!("{name}.log")),
        )?);
    }
    let target = SocketAddr::from(([127, 0, 0, 1], out_port));
    {
        let mut refs: Vec<&mut Child> = procs.iter_mut().collect();
        wait_path(target, &mut refs, "mesh (kuma-dp + Envoy)").await?;
    }
    let mut envoys = Vec::new();
    for (role, p) in [("server-side", &procs[0]), ("client-side", &procs[1])] {
        let pid = procfs::descendant_named(p.pid(), "envoy")
            .with_context(|| format!("no Envoy process under {}", p.name))?;
        envoys.push((role.to_string(), pid));
    }
    let r = measure(args, Setup::Mesh, target, envoys).await;
    drop(procs);
    drop(cp);
    r
}

fn envoy_version(envoy: &Path) -> String {
    Command::new(envoy)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|s| {
            // `<path>  version: <sha>/<version>/Clean/RELEASE/BoringSSL`
            let v = s.split("version:").nth(1)?;
            v.trim().split('/').nth(1).map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the benchmark; returns its report.
pub async fn bench(args: &Args) -> anyhow::Result<Report> {
    let envoy = find_envoy(args.envoy.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("kuma-xds-load-datapath-")
        .tempdir()?;
    let server = Server::start(args.body_bytes)?;
    let paths = if args.only.is_empty() {
        vec![Setup::Direct, Setup::StaticEnvoyPair, Setup::Mesh]
    } else {
        args.only.clone()
    };
    let mut results = Vec::new();
    for p in paths {
        let r = match p {
            Setup::Direct => measure(args, p, server.addr, vec![]).await,
            Setup::StaticEnvoyPair => run_static(args, dir.path(), &envoy, server.addr).await,
            Setup::Mesh => run_mesh(args, dir.path(), &envoy, server.addr).await,
        }
        .with_context(|| format!("path {}", p.name()))?;
        results.push(r);
    }
    if args.keep_workdir {
        eprintln!("datapath work dir kept: {}", dir.path().display());
        let _ = dir.keep();
    }
    let p99 = |p: Setup| {
        results
            .iter()
            .find(|r| r.path == p)
            .map(|r| r.latency.p99_us as f64)
    };
    let mesh_p99_overhead = match (p99(Setup::Mesh), p99(Setup::StaticEnvoyPair)) {
        (Some(m), Some(s)) if s > 0.0 => Some(m / s - 1.0),
        _ => None,
    };
    Ok(Report {
        rate: args.rate,
        body_bytes: args.body_bytes,
        duration_s: args.duration_secs,
        connections: args.connections,
        envoy_version: envoy_version(&envoy),
        results,
        mesh_p99_overhead,
    })
}

/// `kuma-xds-load datapath`: runs and prints.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = bench(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
