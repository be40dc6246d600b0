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

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
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
    fn labels() {
        assert!(is_label_key("kuma.io/zone"));
        assert!(is_label_key("app"));
        assert!(!is_label_key("/app"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }
}
