//! `kuma-dp` binary: parses the command line, sets up logging, hands over to [`kuma_dp::app`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kuma_dp::cli::Cli::parse();
    kuma_dp::app::init_tracing(&cli.log_level);
    kuma_dp::app::execute(cli)
}
