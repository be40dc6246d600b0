//! `kumactl version`: the client version, and the control plane's when it answers `GET /`.

use anyhow::Result;

use super::{Env, write_out};

/// Prints `Client: kumactl <version>` and, if reachable, `Server: <product> <version>`.
pub async fn run(env: &mut Env<'_>) -> Result<()> {
    write_out(
        env.out,
        &format!("Client: kumactl {}\n", env!("CARGO_PKG_VERSION")),
    )?;
    let server = match env.client() {
        Ok(c) => c.index().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match server {
        Ok(index) => {
            let product = if index.product.is_empty() {
                "Kuma"
            } else {
                index.product.as_str()
            };
            write_out(env.out, &format!("Server: {product} {}\n", index.version))
        }
        Err(e) => {
            // The client version is still useful without a control plane.
            let _ = writeln!(env.err, "WARNING: unable to reach the control plane: {e:#}");
            Ok(())
        }
    }
}
