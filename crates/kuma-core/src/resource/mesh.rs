//! The `Mesh` resource: the tenancy boundary. mTLS backends are parsed here; the other
//! sections are kept as opaque JSON until a feature gives them meaning.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{ValidationError, Violations};

/// Mesh spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_creating_initial_policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_services: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Value>,
}

/// `mtls` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mtls {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub enabled_backend: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_validation: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<CaBackend>,
}

/// One CA backend (`builtin` or `provided`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaBackend {
    pub name: String,
    #[serde(rename = "type")]
    pub backend_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_cert: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_chain: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Value>,
}

impl Mesh {
    /// The enabled mTLS backend, when mTLS is on.
    pub fn enabled_backend(&self) -> Option<&CaBackend> {
        let mtls = self.mtls.as_ref()?;
        if mtls.enabled_backend.is_empty() {
            return None;
        }
        mtls.backends
            .iter()
            .find(|b| b.name == mtls.enabled_backend)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Violations::new();
        if let Some(mtls) = &self.mtls {
            let mut names = std::collections::HashSet::new();
            for (i, b) in mtls.backends.iter().enumerate() {
                let p = format!("mtls.backends[{i}]");
                if b.name.is_empty() {
                    errs.add(format!("{p}.name"), "cannot be empty");
                } else if !names.insert(b.name.as_str()) {
                    errs.add(format!("{p}.name"), "must be unique");
                }
                if !matches!(b.backend_type.as_str(), "builtin" | "provided") {
                    errs.add(format!("{p}.type"), "must be one of: builtin, provided");
                }
                if let Some(m) = &b.mode
                    && !matches!(m.as_str(), "STRICT" | "PERMISSIVE")
                {
                    errs.add(format!("{p}.mode"), "must be one of: STRICT, PERMISSIVE");
                }
            }
            if !mtls.enabled_backend.is_empty() && !names.contains(mtls.enabled_backend.as_str()) {
                errs.add(
                    "mtls.enabledBackend",
                    "has to be set to one of the backends in the mesh",
                );
            }
        }
        errs.into_result()
    }
}
