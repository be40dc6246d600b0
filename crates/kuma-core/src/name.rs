//! Name and label rules shared by every resource: DNS-1123 names, Kubernetes-style label keys
//! and values, tag keys and values.

/// A DNS-1123 label: 1–63 chars of `[a-z0-9-]`, starting and ending with an alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain as Kuma checks resource names: dot-separated labels of
/// `[a-z0-9-]` starting and ending with an alphanumeric, at most 253 chars in all (Kuma puts
/// no 63-character limit on each label; its Mesh manager limits Mesh names to 63).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Why `name` cannot name a resource, or `None` when it can. Meshes (and other names that
/// become the first part of a node id `<mesh>.<name>`) may not contain dots.
pub fn name_problem(name: &str, allow_dots: bool) -> Option<String> {
    if name.is_empty() {
        return Some("cannot be empty".into());
    }
    let ok = if allow_dots {
        is_dns_subdomain(name)
    } else {
        is_dns_label(name)
    };
    if ok {
        None
    } else if allow_dots {
        Some("must be a valid DNS-1123 name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters".into())
    } else {
        Some("must be a valid DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters".into())
    }
}

/// Kuma's `ValidateMeta` rule for `name`: an RFC 1123 subdomain of at most 253 characters.
pub fn meta_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("cannot be empty")
    } else if name.len() > 253 {
        Some("value length must less or equal 253")
    } else if !is_rfc1123_subdomain(name) {
        Some(
            "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        )
    } else {
        None
    }
}

/// Kuma's `ValidateMeta` rule for the `mesh` of a mesh-scoped resource (`^[0-9a-z-_.]*$`,
/// kept for meshes named before the RFC 1123 rule).
pub fn meta_mesh_problem(mesh: &str) -> Option<&'static str> {
    if mesh.is_empty() {
        Some("cannot be empty")
    } else if mesh.len() > 253 {
        Some("value length must less or equal 253")
    } else if !mesh
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some(
            "invalid characters. Valid characters are numbers, lowercase latin letters and '-', '_', '.' symbols.",
        )
    } else {
        None
    }
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`: labels of any length.
fn is_rfc1123_subdomain(s: &str) -> bool {
    s.split('.').all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// Kubernetes `IsDNS1035Label` messages (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63
/// characters); empty when `s` is one.
pub fn dns1035_label_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if !ok {
        out.push("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    out
}

const QUALIFIED_NAME_FMT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Kubernetes `IsQualifiedName` messages for a label key (Kuma validates labels with it).
pub fn label_key_problems(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            let mut out = Vec::new();
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    out.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_rfc1123_subdomain(prefix) {
                    out.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
                }
            }
            if !out.is_empty() {
                return out;
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {QUALIFIED_NAME_FMT} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    let mut out = Vec::new();
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        out.push(format!("name part {QUALIFIED_NAME_FMT}"));
    }
    out
}

/// Kubernetes `IsValidLabelValue` messages.
pub fn label_value_problems(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_chars(value) {
        out.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    out
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, any length.
fn is_qualified_name_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_qualified_name_part(s: &str) -> bool {
    s.len() <= 63 && is_qualified_name_chars(s)
}

/// A Kubernetes qualified name (`[prefix/]name`), the rule for label keys.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// A Kubernetes label value: empty, or a qualified name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

/// Tag keys and values: non-empty, no whitespace.
pub fn is_tag_token(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_label("backend-1"));
        assert!(!is_dns_label("Backend"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a_b"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(name_problem("default", false).is_none());
        assert!(name_problem("my.mesh", false).is_some());
        assert!(name_problem("dp.1", true).is_none());
        // Kuma limits whole names (253), not their labels.
        assert!(is_dns_subdomain(&"a".repeat(64)));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn kuma_meta_and_label_messages() {
        assert_eq!(meta_name_problem("dp.1"), None);
        assert_eq!(meta_name_problem(""), Some("cannot be empty"));
        assert!(
            meta_name_problem("Dp_1")
                .unwrap()
                .starts_with("invalid characters. A lowercase RFC 1123")
        );
        assert_eq!(
            meta_name_problem(&"a".repeat(254)),
            Some("value length must less or equal 253")
        );
        assert_eq!(meta_mesh_problem("my_mesh"), None);
        assert!(
            meta_mesh_problem("def$ault")
                .unwrap()
                .starts_with("invalid characters. Valid characters")
        );
        assert_eq!(
            label_key_problems(""),
            [
                "name part must be non-empty".to_string(),
                format!("name part {QUALIFIED_NAME_FMT}")
            ]
        );
        assert!(label_key_problems("foo/bar/baz")[0].starts_with("a valid label key must consist"));
        assert!(label_key_problems("kuma.io/zone").is_empty());
        assert!(
            label_value_problems("^*bar")[0].starts_with("a valid label must be an empty string")
        );
        assert!(label_value_problems("").is_empty());
        assert!(dns1035_label_problems("web-1").is_empty());
        assert_eq!(dns1035_label_problems("1web").len(), 1);
        assert_eq!(dns1035_label_problems(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn labels() {
        assert!(is_label_key("kuma.io/zone"));
        assert!(is_label_key("app"));
        assert!(!is_label_key("/app"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }
}
