//! New-style policies: `targetRef` and `MeshTrafficPermission` (stored and validated here;
//! turned into Envoy RBAC by the control plane).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{ValidationError, Violations};

/// Reference to what a policy selects (proxies, clients or destinations).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_types: Option<Vec<String>>,
}

impl TargetRef {
    /// Specificity rank of the kind (higher = more specific), as Kuma orders them.
    pub fn specificity(&self) -> u8 {
        match self.kind.as_str() {
            "Mesh" => 1,
            "Dataplane" => 2,
            "MeshSubset" => 3,
            "MeshGateway" => 4,
            "MeshService" => 5,
            "MeshExternalService" => 6,
            "MeshMultiZoneService" => 7,
            "MeshServiceSubset" => 8,
            "MeshHTTPRoute" => 9,
            _ => 0,
        }
    }

    fn validate(&self, field: &str, allowed: &[&str], errs: &mut Violations) {
        if !allowed.contains(&self.kind.as_str()) {
            errs.add(
                format!("{field}.kind"),
                format!("must be one of: {}", allowed.join(", ")),
            );
            return;
        }
        let needs_name = matches!(self.kind.as_str(), "MeshService" | "MeshServiceSubset");
        if needs_name && self.name.as_deref().is_none_or(str::is_empty) {
            errs.add(
                format!("{field}.name"),
                format!("must be set with kind {}", self.kind),
            );
        }
        if self.kind == "Mesh" && self.name.is_some() {
            errs.add(format!("{field}.name"), "must not be set with kind Mesh");
        }
        let takes_tags = matches!(self.kind.as_str(), "MeshSubset" | "MeshServiceSubset");
        if self.tags.is_some() && !takes_tags {
            errs.add(
                format!("{field}.tags"),
                format!("must not be set with kind {}", self.kind),
            );
        }
        if takes_tags
            && self.tags.as_ref().is_none_or(BTreeMap::is_empty)
            && self.kind == "MeshServiceSubset"
        {
            errs.add(
                format!("{field}.tags"),
                "must be set with kind MeshServiceSubset",
            );
        }
    }
}

/// MeshTrafficPermission spec (new-style: under `spec` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshTrafficPermission {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<From>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Value>>,
}

/// One `from[]` item: which clients, and what to do with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct From {
    pub target_ref: TargetRef,
    pub default: Conf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conf {
    #[serde(default)]
    pub action: String,
}

/// Actions a `from[]` item may take.
pub const ACTIONS: [&str; 3] = ["Allow", "Deny", "AllowWithShadowDeny"];

impl MeshTrafficPermission {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        if let Some(t) = &self.target_ref {
            t.validate(
                "targetRef",
                &[
                    "Mesh",
                    "MeshSubset",
                    "MeshService",
                    "MeshServiceSubset",
                    "Dataplane",
                ],
                &mut errs,
            );
        }
        match (&self.from, &self.rules) {
            (Some(_), Some(_)) => errs.add("from", "must not be set together with rules"),
            (None, None) => errs.add("from", "needs at least one item (or use rules)"),
            (Some(from), None) if from.is_empty() => errs.add("from", "needs at least one item"),
            _ => {}
        }
        for (i, f) in self.from.iter().flatten().enumerate() {
            let p = format!("from[{i}]");
            f.target_ref.validate(
                &format!("{p}.targetRef"),
                &["Mesh", "MeshSubset", "MeshService", "MeshServiceSubset"],
                &mut errs,
            );
            if !ACTIONS.contains(&f.default.action.as_str()) {
                errs.add(
                    format!("{p}.default.action"),
                    format!("must be one of: {}", ACTIONS.join(", ")),
                );
            }
        }
        if let Some(rules) = &self.rules
            && rules.is_empty()
        {
            errs.add("rules", "needs at least one item");
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_kinds_and_actions() {
        let m: MeshTrafficPermission = serde_json::from_value(json!({
            "targetRef": {"kind": "Bogus"},
            "from": [{"targetRef": {"kind": "MeshService"}, "default": {"action": "Maybe"}}]}))
        .unwrap();
        let f: Vec<_> = m
            .validate()
            .unwrap_err()
            .violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            f,
            vec![
                "targetRef.kind",
                "from[0].targetRef.name",
                "from[0].default.action"
            ]
        );
    }
}
