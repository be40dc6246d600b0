//! The control plane under test: either a `kuma-cp` this harness starts (fresh temporary work
//! dir, free ports on 127.0.0.1, sqlite store, the CP's own defaults otherwise) or one already
//! running (`--cp-address`, `--api`). Also its REST API (resources, dataplane tokens) and its
//! process figures from `/proc`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::procfs;

/// How to reach (or start) the control plane.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start this `kuma-cp` binary.
    pub binary: Option<PathBuf>,
    /// Extra `KUMA_*` variables for a started CP (`K=V`), applied after the harness's own.
    pub env: Vec<(String, String)>,
    /// Keep the started CP's work dir (its log and database) instead of deleting it.
    pub keep_work_dir: bool,
    /// A running CP: its DP server (`https://host:port` or `host:port`).
    pub address: Option<String>,
    /// A running CP: its REST API (`http://host:port`).
    pub api: Option<String>,
    /// A running CP: the CA that signed its DP server certificate (`<workDir>/kuma-cp.crt`).
    pub ca_file: Option<PathBuf>,
    /// A running CP: its pid, for memory and CPU figures.
    pub pid: Option<u32>,
    /// API token (`Authorization: Bearer`), for a running CP reached from a non-admin address.
    pub api_token: Option<String>,
    /// Dataplane tokens: `Some(false)` never asks for them, `Some(true)` always does, `None`
    /// decides from the CP (tokens off when the harness starts it with
    /// `KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none`; a running CP is asked for one and tokens
    /// are used if it issues them).
    pub dp_tokens: Option<bool>,
    /// Start the CP in this directory (created if missing, kept: the caller owns it) instead
    /// of a fresh temporary one.
    pub work_dir: Option<PathBuf>,
    /// A running CP: its diagnostics server (`http://host:5680`), for `/metrics`.
    pub diag: Option<String>,
}

/// A control plane ready for proxies.
pub struct ControlPlane {
    /// REST API base URL (`http://127.0.0.1:5681`).
    pub api: String,
    /// DP server (TLS: bootstrap + ADS).
    pub dp_server: SocketAddr,
    /// TLS server name the DP server certificate is checked against.
    pub server_name: String,
    /// PEM of the CA the DP server certificate chains to.
    pub ca_pem: Vec<u8>,
    /// Process id, when known.
    pub pid: Option<u32>,
    /// Whether proxies must present dataplane tokens.
    pub dp_tokens: bool,
    /// Log of a started CP.
    pub log: Option<PathBuf>,
    /// Diagnostics server base URL (`http://127.0.0.1:5680`), when known.
    pub diag: Option<String>,
    child: Option<Child>,
    work_dir: Option<tempfile::TempDir>,
    /// How a started CP was launched (binary, environment, work dir, log level): for
    /// [`ControlPlane::respawn`].
    launch: Option<Launch>,
    http: reqwest::Client,
    api_token: Option<String>,
}

/// How a started CP is (re)launched.
#[derive(Debug, Clone)]
struct Launch {
    binary: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log_level: String,
    /// Diagnostics `/ready` URL.
    ready: String,
}

impl Launch {
    /// Spawns the CP, its output appended to `<dir>/kuma-cp.log`.
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = self.dir.join("kuma-cp.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .context("opening the CP log")?;
        let err = out.try_clone()?;
        Command::new(&self.binary)
            .arg("run")
            .arg("--log-level")
            .arg(&self.log_level)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The work dir (a TempDir field) is removed after this, once the CP is gone.
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("binding an ephemeral port on 127.0.0.1")?
        .port())
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built with rustls but no provider: install ring (plain HTTP is used anyway).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4)
        .build()
        .context("building the HTTP client")
}

impl ControlPlane {
    /// Starts or attaches to the control plane described by `opts`.
    pub async fn new(opts: &Options) -> anyhow::Result<Self> {
        match &opts.binary {
            Some(bin) => Self::start(bin, opts).await,
            None => Self::attach(opts).await,
        }
    }

    async fn start(binary: &Path, opts: &Options) -> anyhow::Result<Self> {
        let (dir, temp) = match &opts.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kuma-xds-load-cp-")
                    .tempdir()
                    .context("creating the CP work dir")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let api_port = free_port()?;
        let dp_port = free_port()?;
        let diag_port = free_port()?;
        let https_port = free_port()?;
        let mads_port = free_port()?;
        let mut env: Vec<(String, String)> = vec![
            ("KUMA_GENERAL_WORK_DIR".into(), dir.display().to_string()),
            ("KUMA_API_SERVER_HTTP_INTERFACE".into(), "127.0.0.1".into()),
            ("KUMA_API_SERVER_HTTP_PORT".into(), api_port.to_string()),
            ("KUMA_API_SERVER_HTTPS_INTERFACE".into(), "127.0.0.1".into()),
            ("KUMA_API_SERVER_HTTPS_PORT".into(), https_port.to_string()),
            ("KUMA_DP_SERVER_INTERFACE".into(), "127.0.0.1".into()),
            ("KUMA_DP_SERVER_PORT".into(), dp_port.to_string()),
            ("KUMA_DIAGNOSTICS_INTERFACE".into(), "127.0.0.1".into()),
            ("KUMA_DIAGNOSTICS_SERVER_PORT".into(), diag_port.to_string()),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE".into(),
                "127.0.0.1".into(),
            ),
            (
                "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT".into(),
                mads_port.to_string(),
            ),
            // The whole simulated fleet connects from 127.0.0.1, and may share connections
            // (`--streams-per-connection`): no connection caps, and as many streams per
            // connection as before the DP server had bounds (`--cp-env` overrides these).
            ("KUMA_DP_SERVER_MAX_CONNECTIONS".into(), "0".into()),
            ("KUMA_DP_SERVER_MAX_CONNECTIONS_PER_IP".into(), "0".into()),
            (
                "KUMA_DP_SERVER_MAX_CONCURRENT_STREAMS".into(),
                "1000".into(),
            ),
            (
                "KUMA_DP_SERVER_MAX_UNAUTHENTICATED_STREAMS".into(),
                "1000".into(),
            ),
            // The Mesh lists two CA backends (the ca-change scenario switches between them):
            // beyond Kuma's one, allowed explicitly.
            ("KUMA_EXPERIMENTAL_ALLOWED_MTLS_BACKENDS".into(), "2".into()),
        ];
        env.extend(opts.env.iter().cloned());
        let dp_tokens = opts.dp_tokens.unwrap_or_else(|| {
            env.iter()
                .rev()
                .find(|(k, _)| k == "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE")
                .is_none_or(|(_, v)| v != "none")
        });
        let log = dir.join("kuma-cp.log");
        // A fresh log (a kept work dir may hold an older one).
        std::fs::File::create(&log).context("creating the CP log")?;
        // `--cp-env KUMA_LOG_LEVEL=...` chooses the CP's log level (info otherwise).
        let log_level = env
            .iter()
            .find(|(k, _)| k == "KUMA_LOG_LEVEL")
            .map_or("info", |(_, v)| v.as_str())
            .to_string();
        let launch = Launch {
            binary: binary.to_path_buf(),
            env,
            dir: dir.clone(),
            log_level,
            ready: format!("http://127.0.0.1:{diag_port}/ready"),
        };
        let child = launch.spawn()?;
        let pid = child.id();
        let mut cp = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            dp_server: SocketAddr::from(([127, 0, 0, 1], dp_port)),
            server_name: "127.0.0.1".into(),
            ca_pem: Vec::new(),
            pid: Some(pid),
            dp_tokens,
            log: Some(log.clone()),
            diag: Some(format!("http://127.0.0.1:{diag_port}")),
            child: Some(child),
            work_dir: None,
            launch: Some(launch),
            http: http_client()?,
            api_token: None,
        };
        cp.wait_ready(Duration::from_millis(100)).await?;
        let crt = dir.join("kuma-cp.crt");
        cp.ca_pem = std::fs::read(&crt).with_context(|| format!("reading {}", crt.display()))?;
        match temp {
            Some(t) if opts.keep_work_dir => {
                eprintln!("kuma-cp work dir kept: {}", t.path().display());
                let _ = t.keep();
            }
            Some(t) => cp.work_dir = Some(t),
            None => {}
        }
        Ok(cp)
    }

    /// Waits until a started CP answers `/ready` (polling every `poll`), at most 60 s; fails
    /// at once if it exited.
    async fn wait_ready(&mut self, poll: Duration) -> anyhow::Result<()> {
        let Some(launch) = self.launch.clone() else {
            return Ok(());
        };
        let log = launch.dir.join("kuma-cp.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("kuma-cp exited at start-up ({st}):\n{text}");
            }
            if self
                .http
                .get(&launch.ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kuma-cp was not ready within 60s (log: {})", log.display());
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// SIGKILLs a started CP (its work dir, store included, stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a started CP again after [`ControlPlane::kill`]: same binary, environment
    /// (ports) and work dir (store); returns once it answers `/ready`.
    pub async fn respawn(&mut self) -> anyhow::Result<()> {
        self.kill();
        let launch = self
            .launch
            .clone()
            .context("only a CP this harness started can be restarted")?;
        let child = launch.spawn()?;
        self.pid = Some(child.id());
        self.child = Some(child);
        self.wait_ready(Duration::from_millis(20)).await
    }

    async fn attach(opts: &Options) -> anyhow::Result<Self> {
        let address = opts
            .address
            .as_deref()
            .context("either --cp-binary or --cp-address is required")?;
        let hostport = address
            .trim_start_matches("https://")
            .trim_start_matches("grpcs://")
            .trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .context("--cp-address must be host:port")?;
        let port: u16 = port.parse().context("--cp-address port")?;
        let dp_server = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("{host} has no IPv4 address"))?;
        let ca_file = opts.ca_file.as_deref().context(
            "--ca-cert-file (the CP's <workDir>/kuma-cp.crt) is required with --cp-address",
        )?;
        let ca_pem =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let api = opts
            .api
            .clone()
            .unwrap_or_else(|| format!("http://{host}:5681"))
            .trim_end_matches('/')
            .to_string();
        let mut cp = Self {
            api,
            dp_server,
            server_name: host.to_string(),
            ca_pem,
            pid: opts.pid,
            dp_tokens: false,
            log: None,
            diag: opts
                .diag
                .as_ref()
                .map(|d| d.trim_end_matches('/').to_string()),
            child: None,
            work_dir: None,
            launch: None,
            http: http_client()?,
            api_token: opts.api_token.clone(),
        };
        cp.dp_tokens = match opts.dp_tokens {
            Some(t) => t,
            None => cp.dataplane_token("default", "", None).await.is_ok(),
        };
        Ok(cp)
    }

    /// The CP's `/metrics` (Prometheus text).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let diag = self
            .diag
            .as_deref()
            .context("the CP's diagnostics address is unknown (--diag)")?;
        let resp = self
            .http
            .get(format!("{diag}/metrics"))
            .send()
            .await
            .context("GET /metrics")?;
        if !resp.status().is_success() {
            bail!("GET /metrics: {}", resp.status());
        }
        Ok(resp.text().await?)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.api));
        if let Some(t) = &self.api_token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// `PUT path` with a JSON body; fails unless 200/201.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let resp = self
            .request(reqwest::Method::PUT, path)
            .json(body)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("PUT {path}: {status}: {text}");
        }
        Ok(())
    }

    /// `DELETE path`; fails unless 200 (404 counts as done).
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .await
            .with_context(|| format!("DELETE {path}"))?;
        let status = resp.status();
        if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
            let text = resp.text().await.unwrap_or_default();
            bail!("DELETE {path}: {status}: {text}");
        }
        Ok(())
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))
    }

    /// `POST path` with a JSON body; the response body (text), unless the status is not 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<String> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {path} {body}: {status}: {text}");
        }
        Ok(text)
    }

    /// A dataplane token (`POST /tokens/dataplane`) for `mesh`, bound to the proxy `name`
    /// (empty: any name) and, when given, to the service `service`.
    pub async fn dataplane_token(
        &self,
        mesh: &str,
        name: &str,
        service: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut body = json!({"mesh": mesh, "name": name});
        if let Some(s) = service {
            body["tags"] = json!({"kuma.io/service": [s]});
        }
        let resp = self
            .request(reqwest::Method::POST, "/tokens/dataplane")
            .json(&body)
            .send()
            .await
            .context("POST /tokens/dataplane")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST /tokens/dataplane {body}: {status}: {text}");
        }
        Ok(text.trim().to_string())
    }

    /// Memory and CPU of the CP process, when its pid is known.
    pub fn sample(&self) -> Option<procfs::Sample> {
        self.pid.and_then(|p| procfs::sample(p).ok())
    }

    /// Keeps a started CP's work dir (log, database) after exit; its path.
    pub fn keep_work_dir(&mut self) -> Option<PathBuf> {
        self.work_dir.take().map(|d| d.keep())
    }

    /// Whether a started CP is still running (an attached one is assumed to be).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The last `n` lines of a started CP's log.
    pub fn log_tail(&self, n: usize) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}
