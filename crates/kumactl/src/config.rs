//! The kumactl configuration file, `~/.kumactl/config` by default, in Kuma's format
//! (`kumactl.config.v1alpha1.Configuration` as YAML):
//!
//! ```yaml
//! contexts:
//! - controlPlane: local
//!   name: local
//! controlPlanes:
//! - coordinates:
//!     apiServer:
//!       url: http://localhost:5681
//!   name: local
//! currentContext: local
//! ```
//!
//! Invariants: a missing file reads as [`Config::default`] (one control plane `local` at
//! `http://localhost:5681`); every context added by `control-planes add` has the name of its
//! control plane, as in Kuma. Unknown fields are tolerated so files written by Kuma's own
//! kumactl load, but they are not written back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the control plane and context of the default configuration.
pub const DEFAULT_NAME: &str = "local";
/// URL of the default control plane.
pub const DEFAULT_URL: &str = "http://localhost:5681";

/// Errors of reading, writing and editing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("cannot parse config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file (or its directory) could not be written.
    #[error("cannot write config file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `control-planes add` without `--overwrite` for a name in use.
    #[error(
        "Control Plane with name {0:?} already exists. Consider using --overwrite to replace an existing one."
    )]
    AlreadyExists(String),
    /// No control plane of that name.
    #[error("there is no Control Plane with name {0:?}")]
    NoSuchControlPlane(String),
    /// The current (or requested) context does not exist or names a missing control plane.
    #[error("there is no context with name {0:?}")]
    NoSuchContext(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<Context>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_planes: Vec<ControlPlane>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
}

/// A named control plane and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    pub name: String,
    #[serde(default)]
    pub coordinates: Coordinates,
}

/// Where a control plane is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coordinates {
    #[serde(default)]
    pub api_server: ApiServer,
}

/// The REST API of a control plane: URL, TLS and authentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServer {
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_cert_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key_file: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// `tokens` sends `authConf.token` as a bearer token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth_conf: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
}

impl ApiServer {
    /// An API server at `url` with no TLS or auth settings.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// An extra HTTP header sent with every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    pub value: String,
}

/// A context: which control plane to talk to, and defaults for commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub name: String,
    pub control_plane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ContextDefaults>,
}

/// Per-context defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextDefaults {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh: String,
}

impl Default for Config {
    /// Kuma's default: one control plane `local` on `http://localhost:5681`.
    fn default() -> Self {
        Self {
            contexts: vec![Context {
                name: DEFAULT_NAME.into(),
                control_plane: DEFAULT_NAME.into(),
                defaults: Some(ContextDefaults {
                    mesh: "default".into(),
                }),
            }],
            control_planes: vec![ControlPlane {
                name: DEFAULT_NAME.into(),
                coordinates: Coordinates {
                    api_server: ApiServer::at(DEFAULT_URL),
                },
            }],
            current_context: DEFAULT_NAME.into(),
        }
    }
}

/// `$HOME/.kumactl/config`, Kuma's default location.
pub fn default_path() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".kumactl").join("config")
}

impl Config {
    /// Reads `path`; a missing (or empty) file gives the default configuration.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|message| Error::Parse {
            path: path.into(),
            message,
        })
    }

    /// Parses the YAML text of a configuration file.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// The YAML text of this configuration.
    pub fn to_yaml(&self) -> String {
        // Invariant: the configuration is plain strings, lists and maps, which always serialize.
        serde_saphyr::to_string(self).unwrap_or_default()
    }

    /// Writes the file, creating its directory; the file is private to the user since it may
    /// hold tokens.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let write_err = |source| Error::Write {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        std::fs::write(path, self.to_yaml()).map_err(write_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// The context named `name`, or the current one.
    pub fn context(&self, name: Option<&str>) -> Result<&Context, Error> {
        let name = name.unwrap_or(&self.current_context);
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NoSuchContext(name.into()))
    }

    /// The control plane of the context named `name`, or of the current one.
    pub fn control_plane(&self, context: Option<&str>) -> Result<&ControlPlane, Error> {
        let ctx = self.context(context)?;
        self.control_planes
            .iter()
            .find(|cp| cp.name == ctx.control_plane)
            .ok_or_else(|| Error::NoSuchControlPlane(ctx.control_plane.clone()))
    }

    /// Adds (or with `overwrite` replaces) a control plane and its same-named context, and
    /// makes it current.
    pub fn add_control_plane(&mut self, cp: ControlPlane, overwrite: bool) -> Result<(), Error> {
        let name = cp.name.clone();
        match self.control_planes.iter_mut().find(|c| c.name == name) {
            Some(_) if !overwrite => return Err(Error::AlreadyExists(name)),
            Some(existing) => *existing = cp,
            None => self.control_planes.push(cp),
        }
        match self.contexts.iter_mut().find(|c| c.name == name) {
            Some(ctx) => ctx.control_plane = name.clone(),
            None => self.contexts.push(Context {
                name: name.clone(),
                control_plane: name.clone(),
                defaults: Some(ContextDefaults {
                    mesh: "default".into(),
                }),
            }),
        }
        self.current_context = name;
        Ok(())
    }

    /// Makes the context named `name` current.
    pub fn switch(&mut self, name: &str) -> Result<(), Error> {
        if !self.contexts.iter().any(|c| c.name == name) {
            return Err(Error::NoSuchControlPlane(name.into()));
        }
        self.current_context = name.into();
        Ok(())
    }

    /// Removes a control plane and the contexts that point at it. Returns whether the current
    /// context was among them (it is then left dangling, as in Kuma).
    pub fn remove_control_plane(&mut self, name: &str) -> Result<bool, Error> {
        let before = self.control_planes.len();
        self.control_planes.retain(|c| c.name != name);
        if self.control_planes.len() == before {
            return Err(Error::NoSuchControlPlane(name.into()));
        }
        let current = self.current_context.clone();
        let mut removed_current = false;
        self.contexts.retain(|c| {
            let keep = c.control_plane != name;
            if !keep && c.name == current {
                removed_current = true;
            }
            keep
        });
        Ok(removed_current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&dir.path().join("nope")).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(
            cfg.control_plane(None).unwrap().coordinates.api_server.url,
            DEFAULT_URL
        );
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        let mut cfg = Config::default();
        let mut api = ApiServer::at("https://cp:5682");
        api.skip_verify = true;
        api.auth_type = "tokens".into();
        api.auth_conf.insert("token".into(), "abc".into());
        cfg.add_control_plane(
            ControlPlane {
                name: "remote".into(),
                coordinates: Coordinates { api_server: api },
            },
            false,
        )
        .unwrap();
        cfg.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "contexts:",
            "controlPlanes:",
            "currentContext: remote",
            "apiServer:",
            "url: https://cp:5682",
            "skipVerify: true",
            "controlPlane: remote",
        ] {
            assert!(text.contains(key), "{key} missing in:\n{text}");
        }
        let back = Config::load(&path).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.control_plane(None).unwrap().name, "remote");
    }

    #[test]
    fn reads_kuma_written_file() {
        let text = "contexts:\n- controlPlane: local\n  name: local\n  defaults:\n    mesh: default\ncontrolPlanes:\n- coordinates:\n    apiServer:\n      url: http://localhost:5681\n  name: local\ncurrentContext: local\n";
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn add_switch_remove() {
        let mut cfg = Config::default();
        let cp = |n: &str| ControlPlane {
            name: n.into(),
            coordinates: Coordinates {
                api_server: ApiServer::at("http://x:5681"),
            },
        };
        cfg.add_control_plane(cp("a"), false).unwrap();
        assert!(matches!(
            cfg.add_control_plane(cp("a"), false),
            Err(Error::AlreadyExists(_))
        ));
        cfg.add_control_plane(cp("a"), true).unwrap();
        assert_eq!(cfg.control_planes.len(), 2);
        assert_eq!(cfg.contexts.len(), 2);
        cfg.switch("local").unwrap();
        assert!(cfg.switch("zzz").is_err());
        assert!(!cfg.remove_control_plane("a").unwrap());
        assert!(cfg.remove_control_plane("a").is_err());
        assert!(cfg.remove_control_plane("local").unwrap());
    }
}
