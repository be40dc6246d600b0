//! A real Prometheus server (Debian's `prometheus` package, or `PROMETHEUS_BIN`) for the
//! observability tests: started on loopback with a scrape configuration the test writes, and
//! read through its HTTP API (`/api/v1/targets`, `/api/v1/query`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{Proc, free_port, http, wait_for};

/// The Prometheus binary: `PROMETHEUS_BIN`, else `prometheus` on the `PATH`. Panics with how
/// to get one when there is none (the tests' set-up installs Debian's package).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("PROMETHEUS_BIN") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no prometheus binary: install Debian's `prometheus` package (scripts/setup.sh does) \
             or set PROMETHEUS_BIN"
        )
    })
}

/// One scraped series of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

/// One of Prometheus' active targets (`/api/v1/targets`).
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` scraped.
    pub address: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    pub labels: serde_json::Map<String, Value>,
    pub discovered: serde_json::Map<String, Value>,
    pub last_error: String,
}

impl Target {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) written into `dir` and its TSDB there too, and
    /// waits until it is ready.
    pub fn start(dir: &Path, config: &str) -> Self {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing prometheus.yml");
        let data = dir.join("prometheus-data");
        std::fs::create_dir_all(&data).expect("creating the TSDB directory");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(binary());
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=debug");
        let proc = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))
            .expect("starting prometheus");
        let p = Self { proc, addr };
        wait_for("prometheus ready", Duration::from_secs(30), || {
            matches!(http("GET", p.addr, "/-/ready", None), Ok((200, _))).then_some(())
        });
        p
    }

    fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = http("GET", self.addr, path, None).ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// The active targets of `job`.
    pub fn targets(&self, job: &str) -> Vec<Target> {
        let Some(data) = self.api("/api/v1/targets?state=active") else {
            return vec![];
        };
        let map = |v: &Value| v.as_object().cloned().unwrap_or_default();
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["scrapePool"] == job)
            .map(|t| Target {
                address: t["labels"]["__address__"]
                    .as_str()
                    .or(t["discoveredLabels"]["__address__"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                health: t["health"].as_str().unwrap_or_default().to_string(),
                labels: map(&t["labels"]),
                discovered: map(&t["discoveredLabels"]),
                last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// An instant query; `None` when Prometheus did not answer it.
    pub fn query(&self, promql: &str) -> Option<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        let samples = data["result"]
            .as_array()?
            .iter()
            .map(|r| Sample {
                labels: r["metric"].as_object().cloned().unwrap_or_default(),
                value: r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect();
        Some(samples)
    }

    /// What Prometheus logged (for failure messages).
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// Percent-encodes a query-string value (everything but RFC 3986's unreserved characters).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(
            super::url_encode("up{job=\"a b\"}"),
            "up%7Bjob%3D%22a%20b%22%7D"
        );
    }
}
