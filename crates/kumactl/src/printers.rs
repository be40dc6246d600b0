//! Output of `get` and `inspect`: kubectl-like tables, YAML and JSON.
//!
//! Printers are pure: they take wire JSON and a fixed "now" and return text, so their output
//! is tested with golden strings. Tables are built from lenient typed views of the wire JSON
//! (missing or unexpected fields print as `-`, never fail).
//!
//! Main items: [`Format`], [`table::Table`], [`resources::table`], [`inspect::dataplanes`].

pub mod age;
pub mod inspect;
pub mod resources;
pub mod table;

use serde_json::{Value, json};

/// `-o` of `get` and `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

/// A list in the REST API's shape, for `-o yaml|json` of lists (every page already merged).
pub fn list_document(items: Vec<Value>) -> Value {
    json!({"total": items.len(), "items": items, "next": null})
}

/// A value as YAML (`yaml`) or pretty JSON (anything else), ending with a newline.
pub fn document(value: &Value, format: Format) -> String {
    let mut s = match format {
        // Invariant: JSON values always serialize, to YAML and to JSON.
        Format::Yaml => serde_saphyr::to_string(value).unwrap_or_default(),
        _ => serde_json::to_string_pretty(value).unwrap_or_default(),
    };
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Values of a dataplane's inbound and gateway tags as `k=v k=v2,v3`, keys sorted, values
/// sorted and deduplicated per key (Kuma's `MultiValueTagSet`).
pub fn tags(networking: &Value) -> String {
    let mut set: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        std::collections::BTreeMap::new();
    let inbound = networking
        .get("inbound")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let gateway = networking.get("gateway").into_iter();
    for holder in inbound.chain(gateway) {
        if let Some(t) = holder.get("tags").and_then(Value::as_object) {
            for (k, v) in t {
                if let Some(v) = v.as_str() {
                    set.entry(k).or_default().insert(v);
                }
            }
        }
    }
    set.iter()
        .map(|(k, vs)| format!("{k}={}", vs.iter().copied().collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Golden files of printer output: `testdata/<name>.golden` in this crate. Run the tests with
/// `UPDATE_GOLDEN=1` to rewrite them after an intended change; otherwise any drift fails.
#[cfg(test)]
pub(crate) fn assert_golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.golden"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        got == want,
        "{} differs (run with UPDATE_GOLDEN=1 to accept):\n--- want\n{want}--- got\n{got}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sorted_and_merged() {
        let n = json!({"inbound": [
            {"port": 1, "tags": {"kuma.io/service": "web", "version": "v1"}},
            {"port": 2, "tags": {"kuma.io/service": "api", "version": "v1"}}
        ]});
        assert_eq!(tags(&n), "kuma.io/service=api,web version=v1");
        let g = json!({"gateway": {"tags": {"kuma.io/service": "gw"}}});
        assert_eq!(tags(&g), "kuma.io/service=gw");
        assert_eq!(tags(&json!({})), "");
    }

    #[test]
    fn documents() {
        let v = list_document(vec![json!({"name": "a", "n": "3"})]);
        assert_eq!(
            document(&v, Format::Json),
            "{\n  \"total\": 1,\n  \"items\": [\n    {\n      \"name\": \"a\",\n      \"n\": \"3\"\n    }\n  ],\n  \"next\": null\n}\n"
        );
        let y = document(&v, Format::Yaml);
        let back: Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(back, v, "{y}");
    }
}
