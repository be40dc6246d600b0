//! Rendering of Dataplane resource templates with `--dataplane-var`s.
//!
//! Kuma renders the resource passed to `kuma-dp run` as a Mustache template. This module supports
//! the subset that resource templates use: `{{ name }}`, `{{name}}`, dotted names `{{ a.b }}`
//! (from `-v a.b=value`), the unescaped forms `{{{ name }}}` and `{{& name }}`, and comments
//! `{{! ... }}`. Sections and partials are rejected with an error rather than silently ignored.
//!
//! Values are inserted verbatim (no HTML escaping): the output is YAML/JSON, not HTML.
//! A placeholder naming a variable that was not given is an error naming it, so a typo in a
//! template never yields a resource with an empty field.

use std::collections::BTreeMap;

/// Template variables: `key` (possibly dotted) → value.
pub type Vars = BTreeMap<String, String>;

/// Why a template or a variable could not be processed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A `{{` had no matching `}}`.
    #[error("unclosed template tag starting at byte {0}")]
    Unclosed(usize),
    /// A placeholder named a variable that was not passed with `--dataplane-var`.
    #[error("template variable {0:?} is not defined (pass it with --dataplane-var {0}=<value>)")]
    UnknownVariable(String),
    /// A Mustache feature this renderer does not implement (sections, partials, delimiters).
    #[error("unsupported template tag {{{{{0}}}}}: only plain variables are supported")]
    UnsupportedTag(String),
    /// A placeholder with no name (`{{ }}`).
    #[error("empty template tag at byte {0}")]
    EmptyTag(usize),
    /// A `--dataplane-var` that is not `key=value`.
    #[error("invalid --dataplane-var {0:?}: must be formatted as key=value")]
    InvalidVar(String),
}

/// Parses `--dataplane-var` values into [`Vars`].
///
/// Each value is `key=value`; like Kuma's flag parsing, a value with several `=` is read as a
/// comma-separated list of pairs (`a=1,b=2`), while a single pair may contain commas.
/// Later definitions of a key win.
pub fn parse_vars<S: AsRef<str>>(values: &[S]) -> Result<Vars, Error> {
    let mut vars = Vars::new();
    for raw in values {
        let raw = raw.as_ref();
        let pairs: Vec<&str> = match raw.matches('=').count() {
            0 => return Err(Error::InvalidVar(raw.to_string())),
            1 => vec![raw],
            _ => raw.split(',').collect(),
        };
        for pair in pairs {
            let pair = pair.trim_matches('"');
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::InvalidVar(raw.to_string()));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(Error::InvalidVar(raw.to_string()));
            }
            vars.insert(key.to_string(), value.to_string());
        }
    }
    Ok(vars)
}

/// Renders `template` with `vars`.
pub fn render(template: &str, vars: &Vars) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tag_at = offset + start;
        let after_open = &rest[start + 2..];
        let (inner, consumed) = if let Some(triple) = after_open.strip_prefix('{') {
            let end = triple.find("}}}").ok_or(Error::Unclosed(tag_at))?;
            (format!("&{}", &triple[..end]), 2 + 1 + end + 3)
        } else {
            let end = after_open.find("}}").ok_or(Error::Unclosed(tag_at))?;
            (after_open[..end].to_string(), 2 + end + 2)
        };
        let inner = inner.trim();
        match inner.chars().next() {
            None => return Err(Error::EmptyTag(tag_at)),
            Some('!') => {}
            Some('#' | '^' | '/' | '>' | '<' | '=' | '$') => {
                return Err(Error::UnsupportedTag(inner.to_string()));
            }
            Some(first) => {
                let name = if first == '&' {
                    inner[1..].trim()
                } else {
                    inner
                };
                if name.is_empty() {
                    return Err(Error::EmptyTag(tag_at));
                }
                let value = vars
                    .get(name)
                    .ok_or_else(|| Error::UnknownVariable(name.to_string()))?;
                out.push_str(value);
            }
        }
        rest = &rest[start + consumed..];
        offset += start + consumed;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[&str]) -> Vars {
        parse_vars(pairs).unwrap()
    }

    #[test]
    fn renders_spaced_and_tight_placeholders() {
        let v = vars(&["name=dp-1", "address=10.0.0.1"]);
        assert_eq!(
            render("name: {{ name }}\naddress: {{address}}\n", &v).unwrap(),
            "name: dp-1\naddress: 10.0.0.1\n"
        );
    }

    #[test]
    fn renders_dotted_keys() {
        let v = vars(&["inbound.port=8080", "inbound.service=web"]);
        assert_eq!(
            render("port: {{ inbound.port }} svc: {{inbound.service}}", &v).unwrap(),
            "port: 8080 svc: web"
        );
    }

    #[test]
    fn unescaped_forms_and_comments() {
        let v = vars(&["x=a&b"]);
        assert_eq!(
            render("{{{ x }}}|{{& x}}|{{x}}", &v).unwrap(),
            "a&b|a&b|a&b"
        );
        assert_eq!(render("a{{! a comment }}b", &v).unwrap(), "ab");
    }

    #[test]
    fn missing_variable_is_named() {
        let err = render("name: {{ name }}\nport: {{ port }}", &vars(&["name=x"])).unwrap_err();
        assert_eq!(err, Error::UnknownVariable("port".into()));
        assert!(err.to_string().contains("\"port\""));
    }

    #[test]
    fn unclosed_and_unsupported_tags() {
        assert_eq!(render("a {{ name", &Vars::new()), Err(Error::Unclosed(2)));
        assert!(matches!(
            render("{{#list}}x{{/list}}", &Vars::new()),
            Err(Error::UnsupportedTag(_))
        ));
        assert_eq!(render("{{ }}", &Vars::new()), Err(Error::EmptyTag(0)));
    }

    #[test]
    fn text_without_tags_is_unchanged() {
        let text = "type: Dataplane\nname: {x: 1}\n";
        assert_eq!(render(text, &Vars::new()).unwrap(), text);
    }

    #[test]
    fn parses_vars_like_kuma() {
        let v = vars(&["a=1", "b=x,y", "c=1,d=2", "a=3"]);
        assert_eq!(v["a"], "3");
        assert_eq!(v["b"], "x,y");
        assert_eq!(v["c"], "1");
        assert_eq!(v["d"], "2");
        assert_eq!(
            parse_vars(&["novalue"]),
            Err(Error::InvalidVar("novalue".into()))
        );
        assert_eq!(parse_vars(&["=x"]), Err(Error::InvalidVar("=x".into())));
        assert_eq!(vars(&["empty="])["empty"], "");
    }
}
