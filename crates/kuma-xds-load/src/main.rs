//! `kuma-xds-load`: parse the command line, set up logging and the runtime, run.

use clap::Parser;

/// The simulated fleet decodes every config it receives: mimalloc keeps its allocations from
/// contending with each other (it shares the cores with the CP being measured).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = kuma_xds_load::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(kuma_xds_load::run_until_signal(cli))
}
