//! Ages and dates in tables: kubectl's (apimachinery `HumanDuration`) rounding, `5s`, `3m20s`,
//! `2h`, `4d`, and `never` for a time that is absent.

use chrono::{DateTime, TimeDelta, Utc};

/// Parses an RFC 3339 wire time.
pub fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How long ago `t` was, or `never` when it is absent or unparsable.
pub fn since(t: Option<&str>, now: DateTime<Utc>) -> String {
    match t.and_then(parse) {
        Some(t) => human(now - t),
        None => "never".into(),
    }
}

/// A wire time as `2006-01-02 15:04:05` (UTC), or `-`.
pub fn date(t: Option<&str>) -> String {
    match t.and_then(parse) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "-".into(),
    }
}

/// A duration the way kubectl prints ages.
pub fn human(d: TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_rounding() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (4 * 86400, "4d"),
            (4 * 86400 + 3600, "4d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (10 * 365 * 86400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human(TimeDelta::seconds(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn since_and_date() {
        let now = parse("2026-01-01T00:01:00Z").unwrap();
        assert_eq!(since(Some("2026-01-01T00:00:00Z"), now), "60s");
        assert_eq!(since(None, now), "never");
        assert_eq!(since(Some("garbage"), now), "never");
        assert_eq!(
            date(Some("2026-01-02T03:04:05.123Z")),
            "2026-01-02 03:04:05"
        );
        assert_eq!(date(None), "-");
    }
}
