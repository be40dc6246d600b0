//! `Zone`: one per zone control plane. Kuma validates nothing in its spec; a name that is not
//! an RFC 1035 label is accepted with Kuma's deprecation warning ([`Zone::warnings`]).

use serde::{Deserialize, Serialize};

/// Zone spec: `enabled` (absent = true).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl Zone {
    /// Warnings for a Zone named `display_name` (Kuma's deprecations).
    pub fn warnings(&self, display_name: &str) -> Vec<String> {
        super::mesh::name_deprecation("Zone", display_name)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_warn_and_unknown_fields_are_ignored() {
        let z: Zone =
            serde_json::from_value(serde_json::json!({"enabled": true, "foo": 1})).unwrap();
        assert_eq!(z.enabled, Some(true));
        assert!(z.warnings("zone-1").is_empty());
        let w = z.warnings("zone.1");
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("Invalid Zone resource name: 'zone.1'. It does not conform to the DNS format (RFC 1035). This is deprecated. Errors: a DNS-1035 label must consist of"),
            "{w:?}"
        );
        assert!(serde_json::from_value::<Zone>(serde_json::json!({"enabled": "yes"})).is_err());
    }
}
