//! `kumactl config ...`: control planes in the configuration file and `config view`.
//!
//! `control-planes add` saves nothing unless `GET <address>/` answers with the index of a
//! Kuma-compatible API (a JSON object with `product` or `version`).

use anyhow::{Context as _, Result, bail};

use super::{Env, write_out};
use crate::cli::{AddControlPlaneArgs, ConfigCommand, ControlPlanesCommand};
use crate::config::{ApiServer, ControlPlane, Coordinates, Header};
use crate::printers::table::Table;

pub async fn run(env: &mut Env<'_>, what: ConfigCommand) -> Result<()> {
    match what {
        ConfigCommand::View => {
            let text = env.config.to_yaml();
            write_out(env.out, &text)
        }
        ConfigCommand::ControlPlanes { what } => match what {
            ControlPlanesCommand::Add(args) => add(env, args).await,
            ControlPlanesCommand::List => {
                let mut t = Table::new(["ACTIVE", "NAME", "ADDRESS"]);
                let current = env
                    .config
                    .context(None)
                    .ok()
                    .map(|c| c.control_plane.clone());
                for cp in &env.config.control_planes {
                    let active = current.as_deref() == Some(cp.name.as_str());
                    t.push(vec![
                        if active { "*" } else { "" }.into(),
                        cp.name.clone(),
                        cp.coordinates.api_server.url.clone(),
                    ]);
                }
                write_out(env.out, &t.render())
            }
            ControlPlanesCommand::Switch { name } => {
                env.config.switch(&name)?;
                env.config.save(&env.config_path)?;
                write_out(
                    env.out,
                    &format!("switched active Control Plane to {name:?}\n"),
                )
            }
            ControlPlanesCommand::Remove { name } => {
                let was_current = env.config.remove_control_plane(&name)?;
                env.config.save(&env.config_path)?;
                write_out(env.out, &format!("removed Control Plane {name:?}\n"))?;
                if was_current {
                    write_out(
                        env.err,
                        "warning: removed Control Plane that is set as current. Set another Control Plane as current: kumactl config control-planes switch --name <name>\n",
                    )?;
                }
                Ok(())
            }
        },
    }
}

async fn add(env: &mut Env<'_>, args: AddControlPlaneArgs) -> Result<()> {
    if args.name.trim().is_empty() {
        bail!("--name cannot be empty");
    }
    if args.client_cert_file.is_some() != args.client_key_file.is_some() {
        bail!("both --client-cert-file and --client-key-file need to be specified");
    }
    let api = ApiServer {
        url: args.address.trim_end_matches('/').to_string(),
        ca_cert_file: args.ca_cert_file.unwrap_or_default(),
        client_cert_file: args.client_cert_file.unwrap_or_default(),
        client_key_file: args.client_key_file.unwrap_or_default(),
        headers: key_values("--headers", &args.headers)?
            .into_iter()
            .map(|(key, value)| Header { key, value })
            .collect(),
        auth_type: args.auth_type.unwrap_or_default(),
        auth_conf: key_values("--auth-conf", &args.auth_conf)?
            .into_iter()
            .collect(),
        skip_verify: args.skip_verify,
    };
    if !args.overwrite
        && env
            .config
            .control_planes
            .iter()
            .any(|c| c.name == args.name)
    {
        // Fail before contacting the server, with the same message the config gives.
        return Err(crate::config::Error::AlreadyExists(args.name).into());
    }
    let client = env.client_of(&api)?;
    client.index().await.with_context(|| {
        format!(
            "could not connect to the Control Plane API Server at {}",
            api.url
        )
    })?;
    env.config.add_control_plane(
        ControlPlane {
            name: args.name.clone(),
            coordinates: Coordinates { api_server: api },
        },
        args.overwrite,
    )?;
    env.config.save(&env.config_path)?;
    write_out(
        env.out,
        &format!(
            "added Control Plane {:?}\nswitched active Control Plane to {:?}\n",
            args.name, args.name
        ),
    )
}

fn key_values(flag: &str, items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid {flag} {s:?}: expected key=value"),
        })
        .collect()
}
