//! `kumactl`: the command-line client of the control plane's REST API (Universal mode),
//! compatible with Kuma 2.x's kumactl for the commands it implements: `apply`, `get`,
//! `delete`, `inspect dataplanes|dataplane`, `config control-planes add|list|switch|remove`,
//! `config view`, `generate dataplane-token|user-token|signing-key`, `version`, and on the
//! host itself `install|uninstall transparent-proxy` (iptables, see [`transparent_proxy`]).
//!
//! Layout: [`cli`] (arguments), [`config`] (the `~/.kumactl/config` file), [`client`] (typed
//! REST client), [`template`] (`--var` substitution), [`printers`] (tables, YAML, JSON; pure)
//! and [`commands`] (one module per command). Resource types, their REST paths and local
//! validation come from `kuma_core::resource`; there is no second type table here.
//!
//! Errors print as `Error: <message>` on stderr with exit code 1.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod printers;
pub mod template;
pub mod transparent_proxy;

use std::io::Write;
use std::process::ExitCode;

/// Runs a parsed command line on a fresh single-threaded runtime, printing any error;
/// the process exit code.
pub fn main(cli: cli::Cli) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr();
            rt.block_on(commands::run(cli, &mut out, &mut err))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
