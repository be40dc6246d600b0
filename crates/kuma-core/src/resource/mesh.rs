//! The `Mesh` resource: the tenancy boundary. mTLS backends are parsed here; the other
//! sections are kept as opaque JSON until a feature gives them meaning.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{ValidationError, Violations};

/// Mesh spec (old-style: inline on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
#[serde(rename_all = "camelCase")]
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
    /// Field paths of the data sources that would make the control plane read a file of its
    /// own host (`{file: <path>}` anywhere in a backend's `conf`), such as
    /// `mtls.backends[0].conf.cert.file`.
    pub fn host_file_sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        let backends = self.mtls.iter().flat_map(|m| m.backends.iter());
        for (i, backend) in backends.enumerate() {
            if let Some(conf) = &backend.conf {
                collect_file_sources(conf, &format!("mtls.backends[{i}].conf"), &mut out);
            }
        }
        out
    }

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

fn collect_file_sources(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            for (k, v) in fields {
                let path = format!("{path}.{k}");
                if k == "file" && v.is_string() {
                    out.push(path);
                } else {
                    collect_file_sources(v, &path, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_file_sources(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_file_sources_are_found_in_any_backend_conf() {
        let mesh: Mesh = serde_json::from_value(serde_json::json!({"mtls": {
        "enabledBackend": "ca-2",
        "backends": [
            {"name": "ca-1", "type": "builtin"},
            {"name": "ca-2", "type": "provided", "conf": {
                "cert": {"file": "/etc/shadow"},
                "key": {"secret": "key"}}},
            {"name": "ca-3", "type": "provided", "conf": {
                "cert": {"inlineString": "x"},
                "key": {"file": "/root/key.pem"}}}
        ]}}))
        .unwrap();
        assert_eq!(
            mesh.host_file_sources(),
            [
                "mtls.backends[1].conf.cert.file",
                "mtls.backends[2].conf.key.file"
            ]
        );
        assert!(Mesh::default().host_file_sources().is_empty());
    }
}
