//! Go-style duration strings (`30s`, `500ms`, `1m30s`, `1.5h`), as accepted by Kuma's config
//! files, flags and `KUMA_*` variables: the one parser (and formatter) of kuma-cp, kuma-dp and
//! kumactl, each of which wraps it for its own error type.
//!
//! [`parse`] accepts a sequence of `<decimal><unit>` terms with units `ns`, `us`/`µs`, `ms`, `s`,
//! `m`, `h`, and the bare `0`. Negative durations are rejected: no Kuma setting means anything
//! with them. (Kuma's `1d`-style certificate durations are another grammar:
//! `kuma_cp::ca::parse_kuma_duration`.)

use std::time::Duration;

/// Why a duration string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// The string was not a sequence of `<number><unit>` terms.
    #[error("invalid duration {0:?} (expected e.g. 500ms, 30s, 1m30s)")]
    Invalid(String),
    /// A term had no unit or an unknown one.
    #[error(
        "invalid duration {input:?}: unknown or missing unit {unit:?} (use ns, us, ms, s, m or h)"
    )]
    Unit {
        /// The whole input.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// The value does not fit a [`Duration`].
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

/// Parses a Go-style duration.
pub fn parse(input: &str) -> Result<Duration, Error> {
    let s = input.trim();
    if s.is_empty() {
        return Err(Error::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let invalid = || Error::Invalid(input.to_string());
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(num_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(Error::Unit {
                    input: input.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| Error::Overflow(input.to_string()))?
        };
        let mut nanos = int
            .checked_mul(unit_nanos)
            .ok_or_else(|| Error::Overflow(input.to_string()))?;
        // Fractions: at most 18 significant digits matter below one hour in nanoseconds.
        let mut scale = unit_nanos;
        for digit in frac_part.chars().take(18) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit.to_digit(10).unwrap_or(0)) * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| Error::Overflow(input.to_string()))?;
        rest = tail;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| Error::Overflow(input.to_string()))?;
    // The remainder is below 10^9 and so fits a u32.
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration compactly for logs (`30s`, `500ms`, `1m30s`, `1h`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    if d.subsec_nanos() != 0 && d.as_secs() == 0 {
        let nanos = d.subsec_nanos();
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 || (h > 0 && (s > 0 || d.subsec_nanos() > 0)) {
        out.push_str(&format!("{m}m"));
    }
    if d.subsec_nanos() != 0 {
        let frac = format!("{:09}", d.subsec_nanos());
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn rejects_bad_durations() {
        assert_eq!(parse(""), Err(Error::Empty));
        assert!(matches!(parse("30"), Err(Error::Unit { .. })));
        assert!(matches!(parse("3d"), Err(Error::Unit { .. })));
        assert!(matches!(
            parse("-1s"),
            Err(Error::Unit { .. }) | Err(Error::Invalid(_))
        ));
        assert!(matches!(parse("s"), Err(Error::Invalid(_))));
        assert!(matches!(parse("1..2s"), Err(Error::Invalid(_))));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
