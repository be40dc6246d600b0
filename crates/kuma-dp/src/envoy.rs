//! The Envoy subprocess: finding the binary, `envoy --version`, the command line, and the
//! running process.
//!
//! Envoy is run as Kuma runs it:
//! `envoy --config-path <workdir>/bootstrap.yaml --drain-time-s <n> --drain-strategy immediate
//! --disable-hot-restart --log-level <lvl> [--component-log-level ..] [--concurrency N |
//! --cpuset-threads]`, with stdout/stderr inherited. [`Process`] owns the child; it is killed if
//! dropped, so Envoy never outlives kuma-dp.

pub mod admin;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Why Envoy could not be found, queried or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary was not found.
    #[error(
        "could not find the Envoy binary {0:?} on PATH, in the current directory or next to \
         kuma-dp; install Envoy or pass --binary-path"
    )]
    NotFound(PathBuf),
    /// The binary could not be started.
    #[error("could not run {path:?}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// `envoy --version` failed.
    #[error("{path:?} --version failed ({status}): {output}")]
    VersionFailed {
        /// The binary.
        path: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
    /// `envoy --version` printed something unexpected.
    #[error("wrong Envoy build format {0:?}: expected <revision>/<version>/<status>/<type>/<ssl>")]
    VersionFormat(String),
    /// Signalling or waiting for the process failed.
    #[error("could not signal or wait for Envoy: {0}")]
    Process(String),
}

/// What `envoy --version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The version number, e.g. `1.38.2`.
    pub version: String,
    /// The whole build string, e.g. `f387231a…/1.38.2/Clean/RELEASE/BoringSSL`.
    pub build: String,
}

/// Parses the output of `envoy --version` (`envoy  version: <rev>/<ver>/<status>/<type>/<ssl>`).
pub fn parse_version(output: &str) -> Result<Version, Error> {
    let output = output.replace("\r\n", "\n");
    let build = output
        .lines()
        .find_map(|line| line.split_once("version:").map(|(_, rest)| rest.trim()))
        .ok_or_else(|| Error::VersionFormat(output.trim().to_string()))?;
    let parts: Vec<&str> = build.split('/').collect();
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::VersionFormat(build.to_string()));
    }
    Ok(Version {
        version: parts[1].to_string(),
        build: build.to_string(),
    })
}

/// Runs `<binary> --version` and parses it.
pub async fn version(binary: &Path) -> Result<Version, Error> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            path: binary.to_path_buf(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(Error::VersionFailed {
            path: binary.to_path_buf(),
            status: output.status,
            output: text.trim().to_string(),
        });
    }
    parse_version(&text)
}

/// Resolves `--binary-path`: a value with a `/` is used as is; a bare name is looked up on
/// `PATH`, then in the current directory, then next to the kuma-dp executable.
pub fn find_binary(binary: &Path) -> Result<PathBuf, Error> {
    let is_bare_name = binary.components().count() == 1 && !binary.to_string_lossy().contains('/');
    if !is_bare_name {
        return if binary.is_file() {
            Ok(binary.to_path_buf())
        } else {
            Err(Error::NotFound(binary.to_path_buf()))
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.into_iter()
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::NotFound(binary.to_path_buf()))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Options of the Envoy command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bootstrap file.
    pub config_path: PathBuf,
    /// `--drain-time-s` (whole seconds, truncated like Kuma does).
    pub drain_time: Duration,
    /// `--log-level`.
    pub log_level: String,
    /// `--component-log-level`.
    pub component_log_level: Option<String>,
    /// `--concurrency`; 0 = `--cpuset-threads`.
    pub concurrency: u32,
}

impl Options {
    /// The arguments passed to Envoy.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--config-path".into(),
            self.config_path.clone().into(),
            "--drain-time-s".into(),
            self.drain_time.as_secs().to_string().into(),
            "--drain-strategy".into(),
            "immediate".into(),
            "--disable-hot-restart".into(),
            "--log-level".into(),
            self.log_level.clone().into(),
        ];
        if let Some(levels) = &self.component_log_level {
            args.push("--component-log-level".into());
            args.push(levels.into());
        }
        if self.concurrency > 0 {
            args.push("--concurrency".into());
            args.push(self.concurrency.to_string().into());
        } else {
            args.push("--cpuset-threads".into());
        }
        args
    }
}

/// A running Envoy.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pid: Option<u32>,
}

impl Process {
    /// Starts `<binary> <options>` with inherited stdout/stderr.
    pub fn spawn(binary: &Path, options: &Options) -> Result<Self, Error> {
        let child = Command::new(binary)
            .args(options.args())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                path: binary.to_path_buf(),
                source,
            })?;
        let pid = child.id();
        Ok(Process { child, pid })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Waits for Envoy to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        self.child
            .wait()
            .await
            .map_err(|e| Error::Process(e.to_string()))
    }

    /// Asks Envoy to stop (SIGTERM), waits up to `grace`, then kills it.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // ESRCH means it already exited; `wait` below collects the status either way.
            if let Err(err) = kill(Pid::from_raw(pid), Signal::SIGTERM)
                && err != nix::errno::Errno::ESRCH
            {
                return Err(Error::Process(err.to_string()));
            }
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.map_err(|e| Error::Process(e.to_string())),
            Err(_) => {
                tracing::warn!(grace = ?grace, "Envoy did not stop after SIGTERM, killing it");
                self.child
                    .kill()
                    .await
                    .map_err(|e| Error::Process(e.to_string()))?;
                self.wait().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_version() {
        let v = parse_version(
            "\nenvoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n\n",
        )
        .unwrap();
        assert_eq!(v.version, "1.40.0");
        assert_eq!(
            v.build,
            "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"
        );
        let v = parse_version("envoy version: abc/1.38.2-dev/Modified/DEBUG/BoringSSL-FIPS\r\n")
            .unwrap();
        assert_eq!(v.version, "1.38.2-dev");
    }

    #[test]
    fn rejects_bad_versions() {
        assert!(matches!(
            parse_version("no version here"),
            Err(Error::VersionFormat(_))
        ));
        assert!(matches!(
            parse_version("envoy version: abc/1.38.2"),
            Err(Error::VersionFormat(_))
        ));
    }

    #[test]
    fn command_line() {
        let mut options = Options {
            config_path: "/w/bootstrap.yaml".into(),
            drain_time: Duration::from_millis(30_500),
            log_level: "info".into(),
            component_log_level: None,
            concurrency: 1,
        };
        let args: Vec<String> = options
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--config-path",
                "/w/bootstrap.yaml",
                "--drain-time-s",
                "30",
                "--drain-strategy",
                "immediate",
                "--disable-hot-restart",
                "--log-level",
                "info",
                "--concurrency",
                "1"
            ]
        );
        options.concurrency = 0;
        options.component_log_level = Some("upstream:debug".into());
        let args: Vec<String> = options
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(args.ends_with(&[
            "--component-log-level".to_string(),
            "upstream:debug".to_string(),
            "--cpuset-threads".to_string()
        ]));
    }

    #[test]
    fn finds_binaries() {
        assert!(matches!(
            find_binary(Path::new("/nonexistent/envoy")),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            find_binary(Path::new("surely-no-such-binary-xyz")),
            Err(Error::NotFound(_))
        ));
        // `sh` is on PATH on any Unix.
        assert!(find_binary(Path::new("sh")).unwrap().is_absolute());
    }

    #[tokio::test]
    async fn terminates_a_process() {
        let sh = find_binary(Path::new("sh")).unwrap();
        let child = Command::new(&sh)
            .args(["-c", "exec sleep 30"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut process = Process { child, pid };
        let status = process.terminate(Duration::from_secs(5)).await.unwrap();
        assert!(!status.success());
    }
}
