//! The commands: each takes its parsed arguments and an [`Env`] (configuration, how to reach
//! the control plane, output streams and the current time) and returns an error for the
//! caller to print as `Error: <message>`.

pub mod apply;
pub mod config;
pub mod delete;
pub mod generate;
pub mod get;
pub mod inspect;
pub mod transparent_proxy;
pub mod version;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use kuma_core::resource::ResourceType;

use crate::cli::{Cli, Command, InstallCommand, UninstallCommand};
use crate::client::Client;
use crate::config::{self as cfg, ApiServer, Config};

/// Everything a command needs besides its arguments.
pub struct Env<'a> {
    /// Where the configuration file lives.
    pub config_path: PathBuf,
    /// The loaded configuration (default when the file is missing or `--no-config`).
    pub config: Config,
    /// `--context`.
    pub context: Option<String>,
    /// `--api-url`.
    pub api_url: Option<String>,
    /// `--api-timeout`.
    pub timeout: Duration,
    /// "Now" for ages in tables.
    pub now: DateTime<Utc>,
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error (warnings).
    pub err: &'a mut dyn Write,
}

impl Env<'_> {
    /// The API server of the current context, with `--api-url` applied.
    pub fn api_server(&self) -> Result<ApiServer> {
        let mut api = match self.config.control_plane(self.context.as_deref()) {
            Ok(cp) => cp.coordinates.api_server.clone(),
            // An override URL needs no configured control plane.
            Err(_) if self.api_url.is_some() => ApiServer::default(),
            Err(e) => return Err(e.into()),
        };
        if let Some(url) = &self.api_url {
            api.url = url.clone();
        }
        Ok(api)
    }

    /// A client of the current control plane; warns on standard error when it would send a
    /// user token in clear to a host that is not loopback.
    pub fn client(&mut self) -> Result<Client> {
        let api = self.api_server()?;
        self.client_of(&api)
    }

    /// A client of `api`, with the same warning.
    pub fn client_of(&mut self, api: &ApiServer) -> Result<Client> {
        if let Some(w) = crate::client::cleartext_token_warning(api) {
            // A warning that cannot be written is not a reason to fail the command.
            let _ = writeln!(self.err, "{w}");
        }
        Ok(Client::new(api, self.timeout)?)
    }

    /// `--mesh`, else the context's default mesh, else `default`.
    pub fn mesh(&self, flag: Option<&str>) -> String {
        if let Some(m) = flag {
            return m.to_string();
        }
        self.config
            .context(self.context.as_deref())
            .ok()
            .and_then(|c| c.defaults.as_ref())
            .map(|d| d.mesh.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "default".into())
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    // Host commands: no configuration file, no control plane.
    match &cli.command {
        Command::Install {
            what: InstallCommand::TransparentProxy(args),
        } => return transparent_proxy::install(args, out, err),
        Command::Uninstall {
            what: UninstallCommand::TransparentProxy(args),
        } => return transparent_proxy::uninstall(args, out, err),
        _ => {}
    }
    let config_path = cli.config_file.clone().unwrap_or_else(cfg::default_path);
    let config = if cli.no_config {
        Config::default()
    } else {
        Config::load(&config_path)?
    };
    let mut env = Env {
        config_path,
        config,
        context: cli.context,
        api_url: cli.api_url,
        timeout: cli.api_timeout,
        now: Utc::now(),
        out,
        err,
    };
    match cli.command {
        Command::Apply(args) => apply::run(&mut env, args).await,
        Command::Get(args) => get::run(&mut env, args).await,
        Command::Delete(args) => delete::run(&mut env, args).await,
        Command::Inspect { what } => inspect::run(&mut env, what).await,
        Command::Config { what } => {
            if cli.no_config {
                bail!("--no-config cannot be used with config commands");
            }
            config::run(&mut env, what).await
        }
        Command::Generate { what } => generate::run(&mut env, what).await,
        Command::Version => version::run(&mut env).await,
        Command::Install { .. } | Command::Uninstall { .. } => {
            unreachable!("host commands return above")
        }
    }
}

/// Parses a type argument of `get`/`delete` against the resource table.
pub fn resource_type(arg: &str) -> Result<ResourceType> {
    let lower = arg.to_ascii_lowercase();
    ResourceType::from_cli_name(&lower).with_context(|| {
        let known: Vec<&str> = ResourceType::ALL
            .iter()
            .filter(|t| t.is_exposed())
            .flat_map(|t| t.cli_names().iter().copied())
            .collect();
        format!(
            "unknown resource type {arg:?}; known types: {}",
            known.join(", ")
        )
    })
}

/// Writes to an output stream, naming it in the error.
fn write_out(w: &mut dyn Write, text: &str) -> Result<()> {
    w.write_all(text.as_bytes())
        .context("cannot write to standard output")
}
