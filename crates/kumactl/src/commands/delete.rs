//! `kumactl delete <type> <name>`: `DELETE` and `deleted <Type> "<name>"`.

use anyhow::{Result, bail};
use kuma_core::resource::Scope;

use super::{Env, resource_type, write_out};
use crate::cli::DeleteArgs;

pub async fn run(env: &mut Env<'_>, args: DeleteArgs) -> Result<()> {
    let rtype = resource_type(&args.resource_type)?;
    let mesh = env.mesh(args.mesh.as_deref());
    let client = env.client()?;
    match client.delete(rtype, &mesh, &args.name).await {
        Ok(()) => write_out(env.out, &format!("deleted {rtype} {:?}\n", args.name)),
        Err(e) if e.is_not_found() => match rtype.scope() {
            Scope::Mesh => bail!(
                "there is no {rtype} with name {:?} in mesh {mesh:?}",
                args.name
            ),
            Scope::Global => bail!("there is no {rtype} with name {:?}", args.name),
        },
        Err(e) => Err(e.into()),
    }
}
