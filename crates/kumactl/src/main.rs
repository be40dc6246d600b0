//! The `kumactl` binary: parse arguments and hand over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    kumactl::main(kumactl::cli::Cli::parse())
}
