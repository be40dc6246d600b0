//! `kumactl inspect meshes` (mTLS state per mesh), `kumactl inspect zones`,
//! `kumactl inspect services` (ServiceInsights as Kuma's table), `kumactl inspect dataplanes` and `kumactl inspect zone-ingresses|zone-egresses` (the
//! `_overview` lists as status tables) and
//! `kumactl inspect dataplane|zoneingress|zoneegress <name> --type ...` (a proxy's Envoy
//! admin views and matched policies, printed verbatim as the control plane returns them).

use anyhow::{Result, bail};
use kuma_core::ResourceType;

use super::{Env, write_out};
use crate::cli::{InspectCommand, InspectType};
use crate::printers::{self, Format};

pub async fn run(env: &mut Env<'_>, what: InspectCommand) -> Result<()> {
    match what {
        InspectCommand::Meshes { output } => {
            let client = env.client()?;
            let meshes = client.list(ResourceType::Mesh, "").await?;
            let mut rows = Vec::new();
            for mesh in meshes {
                let name = mesh
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let overviews = client.dataplane_overviews(&name).await?;
                let permissions = client
                    .list(ResourceType::MeshTrafficPermission, &name)
                    .await?;
                // A control plane without MeshInsight (404) simply has no error to show.
                let mtls_error = client
                    .get_text(&["mesh-insights", &name], &[])
                    .await
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| {
                        v.pointer("/mTLS/error")
                            .and_then(|e| e.as_str())
                            .map(str::to_string)
                    });
                rows.push(printers::inspect::MeshRow {
                    mesh,
                    overviews,
                    permissions: permissions.len(),
                    mtls_error,
                });
            }
            let text = match output {
                Format::Table => printers::inspect::meshes(&rows).render(),
                f => printers::document(
                    &printers::list_document(
                        rows.iter()
                            .map(printers::inspect::MeshRow::to_json)
                            .collect(),
                    ),
                    f,
                ),
            };
            write_out(env.out, &text)
        }
        InspectCommand::Zones { output } => {
            let items = env.client()?.zone_overviews().await?;
            let text = match output {
                Format::Table => printers::inspect::zones(&items, env.now).render(),
                f => printers::document(&printers::list_document(items), f),
            };
            write_out(env.out, &text)
        }
        InspectCommand::Dataplanes { mesh, output } => {
            let mesh = env.mesh(mesh.as_deref());
            let items = env.client()?.dataplane_overviews(&mesh).await?;
            let text = match output {
                Format::Table => printers::inspect::dataplanes(&items, env.now).render(),
                f => printers::document(&printers::list_document(items), f),
            };
            write_out(env.out, &text)
        }
        InspectCommand::Services { mesh, output } => {
            let mesh = env.mesh(mesh.as_deref());
            let items = env.client()?.service_insights(&mesh).await?;
            let text = match output {
                Format::Table => printers::inspect::services(&items).render(),
                f => printers::document(
                    &printers::list_document(
                        items
                            .into_iter()
                            .map(printers::inspect::service_overview)
                            .collect(),
                    ),
                    f,
                ),
            };
            write_out(env.out, &text)
        }
        InspectCommand::ZoneIngresses { output } => {
            zone_proxies(env, "zoneingresses", "zoneIngressInsight", output).await
        }
        InspectCommand::ZoneEgresses { output } => {
            zone_proxies(env, "zoneegresses", "zoneEgressInsight", output).await
        }
        InspectCommand::Dataplane {
            name,
            mesh,
            kind,
            include_eds,
            config_dump,
        } => {
            let mesh = env.mesh(mesh.as_deref());
            let kind = if config_dump {
                InspectType::ConfigDump
            } else {
                kind
            };
            let base = ["meshes", mesh.as_str(), "dataplanes", name.as_str()];
            proxy(env, &base, kind, include_eds, "Dataplane").await
        }
        InspectCommand::Zoneingress {
            name,
            kind,
            include_eds,
            config_dump,
        } => {
            let kind = if config_dump {
                InspectType::ConfigDump
            } else {
                kind
            };
            proxy(
                env,
                &["zoneingresses", &name],
                kind,
                include_eds,
                "ZoneIngress",
            )
            .await
        }
        InspectCommand::Zoneegress {
            name,
            kind,
            include_eds,
            config_dump,
        } => {
            let kind = if config_dump {
                InspectType::ConfigDump
            } else {
                kind
            };
            proxy(
                env,
                &["zoneegresses", &name],
                kind,
                include_eds,
                "ZoneEgress",
            )
            .await
        }
    }
}

/// `kumactl inspect dataplane|zoneingress|zoneegress NAME --type ...`: `GET <base>/<leaf>`,
/// the body printed as the control plane returned it; a failure as Kuma prints it,
/// `(<status>): <body>`.
async fn proxy(
    env: &mut Env<'_>,
    base: &[&str],
    kind: InspectType,
    include_eds: bool,
    type_name: &str,
) -> Result<()> {
    if include_eds && kind != InspectType::ConfigDump {
        bail!("flag '--include-eds' can be used only when '--type=config-dump'");
    }
    let leaf = match kind {
        InspectType::ConfigDump => "xds",
        InspectType::Stats => "stats",
        InspectType::Clusters => "clusters",
        InspectType::Policies | InspectType::Rules | InspectType::Config
            if type_name != "Dataplane" =>
        {
            bail!(
                "Policies are not applied on {type_name}, please use '--config-dump' flag to get envoy config dump of the {type_name}"
            )
        }
        InspectType::Policies => "policies",
        InspectType::Rules => "rules",
        InspectType::Config => "_config",
    };
    let eds = if include_eds { "true" } else { "false" };
    let query: &[(&str, &str)] = if kind == InspectType::ConfigDump {
        &[("include_eds", eds)]
    } else {
        &[]
    };
    let mut segments = base.to_vec();
    segments.push(leaf);
    let text = match env.client()?.get_text(&segments, query).await {
        Ok(t) => t,
        Err(crate::client::Error::Api(e)) => bail!("({}): {}", e.status, e.body),
        Err(e) => return Err(e.into()),
    };
    write_out(env.out, &text)
}

/// `kumactl inspect zone-ingresses|zone-egresses`: the overviews of `ws` as Kuma's table.
async fn zone_proxies(env: &mut Env<'_>, ws: &str, insight: &str, output: Format) -> Result<()> {
    let items = env.client()?.zone_proxy_overviews(ws).await?;
    let text = match output {
        Format::Table => printers::inspect::zone_proxies(&items, insight, env.now).render(),
        f => printers::document(&printers::list_document(items), f),
    };
    write_out(env.out, &text)
}
