//! Duration flags of kuma-dp: Go-style durations parsed and formatted by
//! [`kuma_core::duration`], and [`parse_arg`], the clap value parser of the duration flags.

use std::time::Duration;

pub use kuma_core::duration::{Error, format, parse};

/// A clap value parser for duration flags.
pub fn parse_arg(input: &str) -> Result<Duration, String> {
    parse(input).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_errors_name_the_input() {
        assert!(parse_arg("abc").unwrap_err().contains("abc"));
        assert_eq!(parse_arg("1m30s"), Ok(Duration::from_secs(90)));
    }
}
