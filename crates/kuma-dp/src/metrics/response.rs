//! Putting the scraped bodies together into one answer, as Kuma's hijacker does.
//!
//! [`Format::of_response`] classifies each target's `Content-Type`; [`select`] picks the
//! answer's: the highest-priority format any target answered with (OpenMetrics 1.0.0, then
//! OpenMetrics 0.0.1, then the text format — version-less `text/plain`, as Envoy sends, counts
//! — then an unrecognised one); when none was recognised, the text format (what Kuma's
//! `expfmt.Negotiate` makes of any scraper's `Accept` but a protobuf one, a format never
//! written here). [`assemble`] concatenates the bodies: each one's trailing `# EOF` dropped,
//! runs of newlines collapsed, the whole trimmed and ended with one newline, plus `# EOF`
//! once when the answer is OpenMetrics.

/// The text format's content type (Prometheus' `FmtText`).
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics 1.0.0.
pub const OPENMETRICS_1_0_0: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// OpenMetrics 0.0.1.
pub const OPENMETRICS_0_0_1: &str = "application/openmetrics-text; version=0.0.1; charset=utf-8";

/// What a target's `Content-Type` says, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics1,
    /// `application/openmetrics-text` with version 0.0.1 or none.
    OpenMetrics0,
    /// `text/plain`, any version.
    Text,
    /// Anything else (including the protobuf format and no header).
    Unknown,
}

impl Format {
    /// Classifies a response's `Content-Type` value (`None`: no header).
    pub fn of_response(content_type: Option<&str>) -> Self {
        let Some(value) = content_type else {
            return Format::Unknown;
        };
        let mut parts = value.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let version = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("version"))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .unwrap_or_default();
        match media.as_str() {
            "text/plain" => Format::Text,
            "application/openmetrics-text" => match version.as_str() {
                "" | "0.0.1" => Format::OpenMetrics0,
                "1.0.0" => Format::OpenMetrics1,
                _ => Format::Unknown,
            },
            _ => Format::Unknown,
        }
    }

    /// The `Content-Type` the answer carries in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics1 => OPENMETRICS_1_0_0,
            Format::OpenMetrics0 => OPENMETRICS_0_0_1,
            Format::Text | Format::Unknown => TEXT,
        }
    }

    fn is_openmetrics(self) -> bool {
        matches!(self, Format::OpenMetrics1 | Format::OpenMetrics0)
    }
}

/// The answer's format from the formats of the targets that answered (see the module docs).
pub fn select(answered: impl IntoIterator<Item = Format>) -> Format {
    match answered.into_iter().min() {
        Some(best) if best != Format::Unknown => best,
        // Nothing recognised: negotiated from `Accept`, which only ever gives the text format
        // among those written here.
        _ => Format::Text,
    }
}

/// Concatenates `bodies` into the answer's body for `format` (see the module docs).
pub fn assemble<'a>(bodies: impl IntoIterator<Item = &'a [u8]>, format: Format) -> Vec<u8> {
    let mut joined = Vec::new();
    for body in bodies {
        let body = trim_end_newlines(body);
        let body = body.strip_suffix(b"# EOF").unwrap_or(body);
        joined.extend_from_slice(trim_end_newlines(body));
        joined.push(b'\n');
    }
    let mut out = Vec::with_capacity(joined.len() + 8);
    for (i, b) in joined.iter().enumerate() {
        if *b == b'\n' && i > 0 && joined[i - 1] == b'\n' {
            continue;
        }
        out.push(*b);
    }
    let mut out = out.trim_ascii().to_vec();
    out.push(b'\n');
    if format.is_openmetrics() {
        out.extend_from_slice(b"# EOF\n");
    }
    out
}

fn trim_end_newlines(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|c| *c != b'\n').map_or(0, |i| i + 1);
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_content_types() {
        assert_eq!(Format::of_response(Some("text/plain")), Format::Text);
        assert_eq!(
            Format::of_response(Some("text/plain; version=0.0.4; charset=utf-8")),
            Format::Text
        );
        assert_eq!(
            Format::of_response(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics1
        );
        assert_eq!(
            Format::of_response(Some("application/openmetrics-text")),
            Format::OpenMetrics0
        );
        assert_eq!(
            Format::of_response(Some("application/openmetrics-text; version=0.0.1")),
            Format::OpenMetrics0
        );
        assert_eq!(
            Format::of_response(Some("application/openmetrics-text; version=2.0.0")),
            Format::Unknown
        );
        assert_eq!(
            Format::of_response(Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            )),
            Format::Unknown
        );
        assert_eq!(
            Format::of_response(Some("application/json")),
            Format::Unknown
        );
        assert_eq!(Format::of_response(None), Format::Unknown);
    }

    #[test]
    fn selects_the_best_format_answered() {
        assert_eq!(
            select([Format::Text, Format::OpenMetrics0]),
            Format::OpenMetrics0
        );
        assert_eq!(
            select([Format::OpenMetrics0, Format::OpenMetrics1, Format::Text]),
            Format::OpenMetrics1
        );
        assert_eq!(select([Format::Unknown, Format::Text]), Format::Text);
        assert_eq!(select([Format::Unknown]), Format::Text);
        assert_eq!(select([]), Format::Text);
        assert_eq!(Format::Text.content_type(), TEXT);
        assert_eq!(
            Format::OpenMetrics1.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn assembles_text_bodies() {
        let envoy = b"# TYPE a counter\na 1\n\n# TYPE b gauge\nb 2\n\n".as_slice();
        let app = b"\n\n# HELP c C.\n# TYPE c counter\nc 3\n".as_slice();
        assert_eq!(
            String::from_utf8(assemble([app, envoy], Format::Text)).unwrap(),
            "# HELP c C.\n# TYPE c counter\nc 3\n# TYPE a counter\na 1\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn assembles_openmetrics_with_one_eof() {
        let app = b"# TYPE c counter\nc_total 3\n# EOF\n".as_slice();
        let other = b"# TYPE d gauge\nd 4\n# EOF".as_slice();
        let envoy = b"# TYPE a counter\na 1\n".as_slice();
        assert_eq!(
            String::from_utf8(assemble([app, other, envoy], Format::OpenMetrics1)).unwrap(),
            "# TYPE c counter\nc_total 3\n# TYPE d gauge\nd 4\n# TYPE a counter\na 1\n# EOF\n"
        );
    }

    #[test]
    fn empty_answers() {
        assert_eq!(assemble([], Format::Text), b"\n");
        assert_eq!(assemble([b"".as_slice()], Format::Text), b"\n");
        assert_eq!(assemble([], Format::OpenMetrics0), b"\n# EOF\n");
    }
}
