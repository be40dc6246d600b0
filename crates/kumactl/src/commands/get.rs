//! `kumactl get <type> [name]`: plural type names list (every page), singular ones with a
//! name show one resource; as a table, YAML or JSON.

use anyhow::{Result, bail};
use kuma_core::resource::{ResourceType, Scope};

use super::{Env, resource_type, write_out};
use crate::cli::GetArgs;
use crate::printers::{self, Format};

/// How a type argument was spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Singular,
    Plural,
    /// Short names (`dp`, `mtp`) work both ways.
    Either,
}

fn number(rtype: ResourceType, arg: &str) -> Number {
    let arg = arg.to_ascii_lowercase();
    if rtype.cli_names().first() == Some(&arg.as_str()) {
        Number::Singular
    } else if arg.ends_with('s') {
        Number::Plural
    } else {
        Number::Either
    }
}

pub async fn run(env: &mut Env<'_>, args: GetArgs) -> Result<()> {
    let rtype = resource_type(&args.resource_type)?;
    let mesh = env.mesh(args.mesh.as_deref());
    let client = env.client()?;
    match (number(rtype, &args.resource_type), args.name) {
        (Number::Singular | Number::Either, Some(name)) => {
            let item = match client.get(rtype, &mesh, &name).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => bail!("{}", not_found(rtype, &mesh)),
                Err(e) => return Err(e.into()),
            };
            let text = match args.output {
                Format::Table => printers::resources::table(rtype, &[item], env.now).render(),
                f => printers::document(&item, f),
            };
            write_out(env.out, &text)
        }
        (Number::Singular, None) => bail!(
            "{} requires a name: kumactl get {} <name> (or list with kumactl get {})",
            args.resource_type,
            args.resource_type,
            rtype.cli_names().get(1).copied().unwrap_or(rtype.ws_path())
        ),
        (Number::Plural, Some(name)) => bail!(
            "{} lists resources and takes no name (got {name:?}); use kumactl get {} {name}",
            args.resource_type,
            rtype.cli_names()[0]
        ),
        (Number::Plural | Number::Either, None) => {
            let items = match client.list(rtype, &mesh).await {
                Ok(items) => items,
                Err(e) if e.is_not_found() => bail!("{}", not_found(rtype, &mesh)),
                Err(e) => return Err(e.into()),
            };
            let text = match args.output {
                Format::Table => printers::resources::table(rtype, &items, env.now).render(),
                f => printers::document(&printers::list_document(items), f),
            };
            write_out(env.out, &text)
        }
    }
}

/// Kuma's message for a missing resource.
pub fn not_found(rtype: ResourceType, mesh: &str) -> String {
    match rtype.scope() {
        Scope::Mesh => format!("No resources found in {mesh} mesh"),
        Scope::Global => "No resources found".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(ResourceType::Mesh, "mesh"), Number::Singular);
        assert_eq!(number(ResourceType::Mesh, "meshes"), Number::Plural);
        assert_eq!(number(ResourceType::Dataplane, "dp"), Number::Either);
        assert_eq!(
            number(ResourceType::GlobalSecret, "global-secrets"),
            Number::Plural
        );
        assert_eq!(
            number(ResourceType::MeshTrafficPermission, "mtp"),
            Number::Either
        );
    }
}
