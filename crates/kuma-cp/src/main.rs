//! `kuma-cp run [-c config.yaml]`.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc malloc: per-thread heaps instead of contended arena locks when
/// thousands of proxy configs are built and freed at once, and less fragmentation over
/// reconnect waves (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "kuma-cp", version, about = "Kuma-compatible control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Run {
        /// YAML configuration file (overrides the defaults; KUMA_* variables override it).
        #[arg(short = 'c', long = "config-file", env = "KUMA_CONFIG_FILE")]
        config_file: Option<std::path::PathBuf>,
        /// Log level (error, warn, info, debug, trace) or a tracing filter.
        #[arg(long, default_value = "info", env = "KUMA_LOG_LEVEL")]
        log_level: String,
    },
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => {
            println!("kuma-cp {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run {
            config_file,
            log_level,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(log_level))
                .with_writer(std::io::stderr)
                .init();
            let cfg = kuma_cp::config::Config::load(config_file.as_deref(), std::env::vars())?;
            let app = kuma_cp::app::build(cfg).await?;
            let shutdown = CancellationToken::new();
            let sd = shutdown.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing a SIGTERM handler at start-up");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("shutting down");
                sd.cancel();
            });
            app.run(shutdown).await
        }
    }
}
