//! `--var key=value` substitution for `kumactl apply`: `{{ key }}` and `{{key}}` placeholders
//! in the text are replaced before it is parsed, as Kuma's Mustache-like templating does.
//!
//! Only `{{ identifier }}` (letters, digits, `_`, `-`, `.`) is a placeholder; other `{{`
//! sequences are left alone. A placeholder without a value is an error, and every missing
//! name is reported at once.

use std::collections::BTreeMap;

/// Errors of parsing `--var` flags and rendering a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `--var` flag that is not `key=value` with a non-empty key.
    #[error("invalid --var {0:?}: expected key=value")]
    BadVar(String),
    /// Placeholders with no `--var` value, sorted and deduplicated.
    #[error("no value for template variable(s) {}: pass --var <name>=<value>", .0.join(", "))]
    Missing(Vec<String>),
}

/// Parses `--var` flags as Kuma's kumactl does (a string-to-string flag): a flag with one `=`
/// is one `key=value` whose value may hold commas (`a=1,2`); a flag with more than one `=` is a
/// comma-separated list of `key=value` pairs (`a=1,b=2`; each pair split at its first `=`, so
/// base64 padding survives; a `"`-quoted field may hold commas). Later flags win.
pub fn parse_vars<S: AsRef<str>>(flags: &[S]) -> Result<BTreeMap<String, String>, Error> {
    let mut vars = BTreeMap::new();
    for f in flags {
        let f = f.as_ref();
        let pairs = if f.matches('=').count() > 1 {
            csv_fields(f)
        } else {
            vec![f.to_string()]
        };
        for pair in pairs {
            match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    vars.insert(k.trim().to_string(), v.trim_matches('"').to_string());
                }
                _ => return Err(Error::BadVar(pair)),
            }
        }
    }
    Ok(vars)
}

/// The fields of one CSV record: split at commas outside `"` quotes, quotes removed (`""`
/// inside quotes is a literal quote).
fn csv_fields(record: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

/// Replaces every placeholder of `text` with its value.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let placeholder = after.find("}}").and_then(|end| {
            let name = after[..end].trim();
            is_identifier(name).then_some((name, end))
        });
        match placeholder {
            Some((name, end)) => {
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => missing.push(name.to_string()),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        missing.sort();
        missing.dedup();
        Err(Error::Missing(missing))
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_both_spellings() {
        let vars = parse_vars(&["name=dp-1", "port=8080", "url=a=b"]).unwrap();
        assert_eq!(vars["url"], "a=b");
        let out = render(
            "name: {{ name }}\nport: {{port}}\nx: {{  name  }}-{{name}}\n",
            &vars,
        )
        .unwrap();
        assert_eq!(out, "name: dp-1\nport: 8080\nx: dp-1-dp-1\n");
    }

    #[test]
    fn leaves_non_placeholders() {
        let vars = BTreeMap::new();
        assert_eq!(
            render("a: '{{'\nb: {{ x y }}", &vars).unwrap(),
            "a: '{{'\nb: {{ x y }}"
        );
        assert_eq!(render("no braces", &vars).unwrap(), "no braces");
    }

    #[test]
    fn reports_every_missing_name() {
        let vars = parse_vars(&["a=1"]).unwrap();
        let err = render("{{ b }} {{a}} {{ c }} {{b}}", &vars).unwrap_err();
        assert_eq!(err, Error::Missing(vec!["b".into(), "c".into()]));
        assert_eq!(
            err.to_string(),
            "no value for template variable(s) b, c: pass --var <name>=<value>"
        );
    }

    #[test]
    fn bad_var_flag() {
        // Kuma's string-to-string flag: the comma form, commas inside a single value,
        // base64 padding, quotes.
        let vars = parse_vars(&[
            "a=1,b=2",
            "c=1,2",
            "key=VEVTVA==",
            "q=\"x\"",
            "d=\"1,2\",e=3",
        ])
        .unwrap();
        let want = [
            ("a", "1"),
            ("b", "2"),
            ("c", "1,2"),
            ("key", "VEVTVA=="),
            ("q", "x"),
            ("d", "1,2"),
            ("e", "3"),
        ];
        for (k, v) in want {
            assert_eq!(vars[k], v, "{k}");
        }
        assert_eq!(
            parse_vars(&["a=1,nokey,b=2"]).unwrap_err(),
            Error::BadVar("nokey".into())
        );
        assert!(parse_vars(&["novalue"]).is_err());
        assert!(parse_vars(&["=x"]).is_err());
        assert_eq!(parse_vars(&["k="]).unwrap()["k"], "");
    }
}
