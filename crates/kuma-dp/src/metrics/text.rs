//! The Prometheus text exposition format (0.0.4): a parser into metric families and a writer
//! back to text, enough for the hijacker to rewrite Envoy's `/stats?format=prometheus`.
//!
//! The model follows Prometheus' own (`client_model`): a [`Family`] has a name, an optional
//! `# HELP`, a [`Kind`] from `# TYPE` (`untyped` without one) and [`Metric`]s; a summary or
//! histogram metric gathers its `quantile`/`_bucket`, `_sum` and `_count` lines under one label
//! set. [`write`] prints a family as Prometheus' Go library does (`expfmt.MetricFamilyToText`):
//! `# HELP` (when known), always `# TYPE`, floats in Go's shortest `%g` form (`1.5e+06`), a
//! histogram's `+Inf` bucket added when missing. Families keep the order they were first
//! seen in; lines of a family that appear in several places are gathered into it.
//!
//! No crate fitted: the parsers on crates.io either drop what is needed to write a body
//! back (a sample without a timestamp gets "now", labels lose their order) or are unmaintained.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Why a body is not the text format.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct Error {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// A family's type (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `summary`.
    Summary,
    /// `histogram`.
    Histogram,
    /// `untyped`, or no `# TYPE` line.
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "summary" => Kind::Summary,
            "histogram" => Kind::Histogram,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
            Kind::Histogram => "histogram",
            Kind::Untyped => "untyped",
        }
    }
}

/// A metric family: every series of one metric name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name (for summaries and histograms, without `_sum`/`_count`/`_bucket`).
    pub name: String,
    /// `# HELP` text, unescaped.
    pub help: Option<String>,
    /// `# TYPE`.
    pub kind: Kind,
    /// The series, in order of first appearance.
    pub metrics: Vec<Metric>,
}

/// One series: a label set and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Labels in the order written (without `quantile` / `le`).
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
    /// Timestamp in milliseconds, when the line had one.
    pub timestamp_ms: Option<i64>,
}

impl Metric {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A series' value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter, gauge or untyped sample.
    Single(f64),
    /// A summary.
    Summary {
        /// `(quantile, value)` pairs.
        quantiles: Vec<(f64, f64)>,
        /// `_sum`.
        sum: f64,
        /// `_count`.
        count: u64,
    },
    /// A histogram.
    Histogram {
        /// `(upper bound, cumulative count)` pairs.
        buckets: Vec<(f64, u64)>,
        /// `_sum`.
        sum: f64,
        /// `_count`.
        count: u64,
    },
}

/// Which line of a summary or histogram a sample is.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Main,
    Sum,
    Count,
    Bucket,
}

/// Parses a text-format body into families, in order of first appearance.
pub fn parse(body: &str) -> Result<Vec<Family>, Error> {
    let mut families: Vec<Family> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // Per family, the index of the metric holding each label set (summaries, histograms).
    let mut by_labels: HashMap<(usize, Vec<(String, String)>), usize> = HashMap::new();
    for (i, raw) in body.lines().enumerate() {
        let err = |message: String| Error {
            line: i + 1,
            message,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let (keyword, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            let rest = rest.trim_start();
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let (name, text) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if !valid_name(name) {
                return Err(err(format!("invalid metric name {name:?} in # {keyword}")));
            }
            let index = family_index(&mut families, &mut by_name, name);
            let family = &mut families[index];
            if keyword == "HELP" {
                family.help = Some(unescape_help(text.trim_start()));
            } else {
                let kind = Kind::parse(text.trim())
                    .ok_or_else(|| err(format!("unknown metric type {:?}", text.trim())))?;
                if !family.metrics.is_empty() && family.kind != kind {
                    return Err(err(format!("# TYPE for {name} after its samples")));
                }
                family.kind = kind;
            }
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        let (index, part) = locate(&mut families, &mut by_name, &sample.name);
        let family = &mut families[index];
        let mut labels = sample.labels;
        match (family.kind, part) {
            (Kind::Summary | Kind::Histogram, _) => {
                let special = if family.kind == Kind::Summary {
                    "quantile"
                } else {
                    "le"
                };
                let mut bound = None;
                if matches!(part, Part::Sum | Part::Count)
                    && labels.iter().any(|(n, _)| n == special)
                {
                    return Err(err(format!("{} with a {special:?} label", sample.name)));
                }
                if matches!(part, Part::Main | Part::Bucket) {
                    let at = labels
                        .iter()
                        .position(|(n, _)| n == special)
                        .ok_or_else(|| {
                            err(format!("{} without a {special:?} label", sample.name))
                        })?;
                    let (_, v) = labels.remove(at);
                    bound = Some(
                        parse_float(&v)
                            .ok_or_else(|| err(format!("invalid {special} value {v:?}")))?,
                    );
                }
                let key = (index, sorted(&labels));
                let at = match by_labels.get(&key) {
                    Some(at) => *at,
                    None => {
                        family.metrics.push(Metric {
                            labels,
                            value: if family.kind == Kind::Summary {
                                Value::Summary {
                                    quantiles: Vec::new(),
                                    sum: 0.0,
                                    count: 0,
                                }
                            } else {
                                Value::Histogram {
                                    buckets: Vec::new(),
                                    sum: 0.0,
                                    count: 0,
                                }
                            },
                            timestamp_ms: None,
                        });
                        by_labels.insert(key, family.metrics.len() - 1);
                        family.metrics.len() - 1
                    }
                };
                let metric = &mut family.metrics[at];
                if sample.timestamp_ms.is_some() {
                    metric.timestamp_ms = sample.timestamp_ms;
                }
                match (&mut metric.value, part, bound) {
                    (Value::Summary { quantiles, .. }, Part::Main, Some(q)) => {
                        quantiles.push((q, sample.value))
                    }
                    (Value::Histogram { buckets, .. }, Part::Bucket, Some(le)) => {
                        buckets.push((le, to_count(sample.value)))
                    }
                    (Value::Summary { sum, .. } | Value::Histogram { sum, .. }, Part::Sum, _) => {
                        *sum = sample.value
                    }
                    (
                        Value::Summary { count, .. } | Value::Histogram { count, .. },
                        Part::Count,
                        _,
                    ) => *count = to_count(sample.value),
                    _ => return Err(err(format!("unexpected sample {}", sample.name))),
                }
            }
            _ => family.metrics.push(Metric {
                labels,
                value: Value::Single(sample.value),
                timestamp_ms: sample.timestamp_ms,
            }),
        }
    }
    Ok(families)
}

/// Go's conversion of a parsed float to a count (`uint64(v)`), saturating.
fn to_count(v: f64) -> u64 {
    v as u64
}

fn sorted(labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut labels = labels.to_vec();
    labels.sort();
    labels
}

fn family_index(
    families: &mut Vec<Family>,
    by_name: &mut HashMap<String, usize>,
    name: &str,
) -> usize {
    if let Some(i) = by_name.get(name) {
        return *i;
    }
    families.push(Family {
        name: name.to_string(),
        help: None,
        kind: Kind::Untyped,
        metrics: Vec::new(),
    });
    by_name.insert(name.to_string(), families.len() - 1);
    families.len() - 1
}

/// The family a sample named `name` belongs to: `x_sum`, `x_count` (and `x_bucket`) belong to
/// a summary (histogram) `x`; anything else to the family of its own name.
fn locate(
    families: &mut Vec<Family>,
    by_name: &mut HashMap<String, usize>,
    name: &str,
) -> (usize, Part) {
    for (suffix, part) in [
        ("_sum", Part::Sum),
        ("_count", Part::Count),
        ("_bucket", Part::Bucket),
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(i) = by_name.get(base)
        {
            let kind = families[*i].kind;
            if kind == Kind::Histogram || (kind == Kind::Summary && part != Part::Bucket) {
                return (*i, part);
            }
        }
    }
    (family_index(families, by_name, name), Part::Main)
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.trim_start().strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_float(value).ok_or_else(|| format!("{name}: invalid value {value:?}"))?;
    let timestamp_ms = match fields.next() {
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("{name}: invalid timestamp {ts:?}"))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `name="value",...}` and returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without a value")?;
        let name = s[..eq].trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("invalid label name {name:?}"));
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("label {name}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => return Err(format!("label {name}: invalid escape \\{c}")),
                    None => return Err(format!("label {name}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} given twice"));
        }
        labels.push((name.to_string(), value));
        s = s[close + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if s
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        _ => s.parse().ok(),
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A float as Prometheus' Go library writes it: `+Inf`, `-Inf`, `NaN`, else Go's
/// `strconv.FormatFloat(v, 'g', -1, 64)` (shortest digits; exponent form below 1e-4 and from
/// 1e+06 on, with a signed exponent of at least two digits).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_line(
    out: &mut String,
    name: &str,
    suffix: &str,
    metric: &Metric,
    extra: Option<(&str, f64)>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !metric.labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for (n, v) in &metric.labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(n);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        if let Some((n, v)) = extra {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "{n}=\"{}\"", format_float(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    if let Some(ts) = metric.timestamp_ms {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

/// Appends `family` in the text format to `out` (see the module docs).
pub fn write(out: &mut String, family: &Family) {
    let name = &family.name;
    if let Some(help) = &family.help {
        let _ = writeln!(
            out,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
    }
    let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
    for metric in &family.metrics {
        match &metric.value {
            Value::Single(v) => write_line(out, name, "", metric, None, &format_float(*v)),
            Value::Summary {
                quantiles,
                sum,
                count,
            } => {
                for (q, v) in quantiles {
                    write_line(
                        out,
                        name,
                        "",
                        metric,
                        Some(("quantile", *q)),
                        &format_float(*v),
                    );
                }
                write_line(out, name, "_sum", metric, None, &format_float(*sum));
                write_line(out, name, "_count", metric, None, &count.to_string());
            }
            Value::Histogram {
                buckets,
                sum,
                count,
            } => {
                for (le, c) in buckets {
                    write_line(
                        out,
                        name,
                        "_bucket",
                        metric,
                        Some(("le", *le)),
                        &c.to_string(),
                    );
                }
                if !buckets.iter().any(|(le, _)| *le == f64::INFINITY) {
                    write_line(
                        out,
                        name,
                        "_bucket",
                        metric,
                        Some(("le", f64::INFINITY)),
                        &count.to_string(),
                    );
                }
                write_line(out, name, "_sum", metric, None, &format_float(*sum));
                write_line(out, name, "_count", metric, None, &count.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests;
