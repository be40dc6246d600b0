//! Resources: the type table, metadata, typed specs and the two wire shapes of Kuma's REST API
//! and YAML (old-style types carry their spec fields inline next to the metadata; new-style
//! policy types carry them under `spec`).
//!
//! [`Resource::from_wire`] is the one entry point for untrusted input: it parses, rejects
//! unknown fields, and validates, reporting every problem with its field path.

pub mod dataplane;
pub mod insight;
pub mod mesh;
pub mod policy;
pub mod secret;
pub mod zone;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::name;
use crate::validate::{ValidationError, Violations};

pub use dataplane::Dataplane;
pub use insight::DataplaneInsight;
pub use mesh::Mesh;
pub use policy::MeshTrafficPermission;
pub use secret::SecretData;
pub use zone::Zone;

/// Whether a type lives inside a mesh or at the top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Mesh,
    Global,
}

/// Every resource type this control plane stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Mesh,
    Dataplane,
    DataplaneInsight,
    MeshTrafficPermission,
    Secret,
    GlobalSecret,
    Zone,
}

impl ResourceType {
    /// All types, in the order `kumactl` and `GET /_resources` list them.
    pub const ALL: [ResourceType; 7] = [
        ResourceType::Mesh,
        ResourceType::Dataplane,
        ResourceType::DataplaneInsight,
        ResourceType::MeshTrafficPermission,
        ResourceType::Secret,
        ResourceType::GlobalSecret,
        ResourceType::Zone,
    ];

    /// The `type` field on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mesh => "Mesh",
            Self::Dataplane => "Dataplane",
            Self::DataplaneInsight => "DataplaneInsight",
            Self::MeshTrafficPermission => "MeshTrafficPermission",
            Self::Secret => "Secret",
            Self::GlobalSecret => "GlobalSecret",
            Self::Zone => "Zone",
        }
    }

    /// REST path segment (`/meshes/{mesh}/<ws_path>` or `/<ws_path>`).
    pub fn ws_path(self) -> &'static str {
        match self {
            Self::Mesh => "meshes",
            Self::Dataplane => "dataplanes",
            Self::DataplaneInsight => "dataplane-insights",
            Self::MeshTrafficPermission => "meshtrafficpermissions",
            Self::Secret => "secrets",
            Self::GlobalSecret => "globalsecrets",
            Self::Zone => "zones",
        }
    }

    /// Other REST path segments Kuma registers for the same type.
    pub fn ws_aliases(self) -> &'static [&'static str] {
        match self {
            Self::GlobalSecret => &["global-secrets"],
            _ => &[],
        }
    }

    /// Singular and plural names accepted by `kumactl get` (`dataplane`, `dataplanes`, `mtp`...).
    pub fn cli_names(self) -> &'static [&'static str] {
        match self {
            Self::Mesh => &["mesh", "meshes"],
            Self::Dataplane => &["dataplane", "dataplanes", "dp"],
            Self::DataplaneInsight => &["dataplane-insight", "dataplane-insights"],
            Self::MeshTrafficPermission => {
                &["meshtrafficpermission", "meshtrafficpermissions", "mtp"]
            }
            Self::Secret => &["secret", "secrets"],
            Self::GlobalSecret => &["global-secret", "global-secrets", "globalsecrets"],
            Self::Zone => &["zone", "zones"],
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            Self::Mesh | Self::GlobalSecret | Self::Zone => Scope::Global,
            _ => Scope::Mesh,
        }
    }

    /// New-style (plugin) types keep their spec under `spec`.
    pub fn is_new_style(self) -> bool {
        matches!(self, Self::MeshTrafficPermission)
    }

    /// Types only the control plane writes (PUT/DELETE refused with 405).
    pub fn is_read_only(self) -> bool {
        matches!(self, Self::DataplaneInsight)
    }

    /// Short name used in KRIs.
    pub fn short_name(self) -> Option<&'static str> {
        match self {
            Self::Dataplane => Some("dp"),
            Self::MeshTrafficPermission => Some("mtp"),
            _ => None,
        }
    }

    /// Parses the wire `type` name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Parses a REST path segment, aliases included.
    pub fn from_ws_path(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.ws_path() == s || t.ws_aliases().contains(&s))
    }

    /// Parses a `kumactl` type argument.
    pub fn from_cli_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.cli_names().contains(&s))
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Identity of a stored resource. Global-scoped types have an empty `mesh`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub rtype: ResourceType,
    pub mesh: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(rtype: ResourceType, mesh: impl Into<String>, name: impl Into<String>) -> Self {
        let mesh = match rtype.scope() {
            Scope::Mesh => mesh.into(),
            Scope::Global => String::new(),
        };
        Self {
            rtype,
            mesh,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mesh.is_empty() {
            write!(f, "{} {}", self.rtype, self.name)
        } else {
            write!(f, "{} {}/{}", self.rtype, self.mesh, self.name)
        }
    }
}

/// Server-managed and user metadata of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub name: String,
    /// Empty for global-scoped types.
    pub mesh: String,
    /// Optimistic-concurrency version, managed by the store (0 = never stored).
    pub version: u64,
    pub creation_time: DateTime<Utc>,
    pub modification_time: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
}

/// The typed body of a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Mesh(Mesh),
    Dataplane(Dataplane),
    DataplaneInsight(DataplaneInsight),
    MeshTrafficPermission(MeshTrafficPermission),
    Secret(SecretData),
    GlobalSecret(SecretData),
    Zone(Zone),
}

impl Spec {
    pub fn rtype(&self) -> ResourceType {
        match self {
            Spec::Mesh(_) => ResourceType::Mesh,
            Spec::Dataplane(_) => ResourceType::Dataplane,
            Spec::DataplaneInsight(_) => ResourceType::DataplaneInsight,
            Spec::MeshTrafficPermission(_) => ResourceType::MeshTrafficPermission,
            Spec::Secret(_) => ResourceType::Secret,
            Spec::GlobalSecret(_) => ResourceType::GlobalSecret,
            Spec::Zone(_) => ResourceType::Zone,
        }
    }

    fn to_json(&self) -> Value {
        let v = match self {
            Spec::Mesh(s) => serde_json::to_value(s),
            Spec::Dataplane(s) => serde_json::to_value(s),
            Spec::DataplaneInsight(s) => serde_json::to_value(s),
            Spec::MeshTrafficPermission(s) => serde_json::to_value(s),
            Spec::Secret(s) | Spec::GlobalSecret(s) => serde_json::to_value(s),
            Spec::Zone(s) => serde_json::to_value(s),
        };
        // Invariant: every spec type is plain data (strings, numbers, maps) that serializes.
        v.unwrap_or(Value::Null)
    }

    fn from_json(rtype: ResourceType, v: Value) -> Result<Self, ValidationError> {
        Ok(match rtype {
            ResourceType::Mesh => Spec::Mesh(parse_typed(v)?),
            ResourceType::Dataplane => Spec::Dataplane(parse_typed(v)?),
            ResourceType::DataplaneInsight => Spec::DataplaneInsight(parse_typed(v)?),
            ResourceType::MeshTrafficPermission => Spec::MeshTrafficPermission(parse_typed(v)?),
            ResourceType::Secret => Spec::Secret(parse_typed(v)?),
            ResourceType::GlobalSecret => Spec::GlobalSecret(parse_typed(v)?),
            ResourceType::Zone => Spec::Zone(parse_typed(v)?),
        })
    }

    /// Validates the body; paths are relative to where the spec sits on the wire.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Spec::Mesh(s) => s.validate(),
            Spec::Dataplane(s) => s.validate(),
            Spec::DataplaneInsight(_) => Ok(()),
            Spec::MeshTrafficPermission(s) => s.validate(),
            Spec::Secret(s) | Spec::GlobalSecret(s) => s.validate(),
            Spec::Zone(_) => Ok(()),
        }
    }
}

/// Parses a typed value, turning serde's first error into a violation at the failing path.
fn parse_typed<T: DeserializeOwned>(v: Value) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ValidationError::single(field, e.inner().to_string())
    })
}

/// Events alias replay may add to any text in [`Resource::parse_documents`], besides two per
/// byte of text: room for ordinary anchors (a shared block of tags) in small files.
pub const ALIAS_REPLAY_BASE: usize = 10_000;

/// A resource: metadata plus a typed spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub meta: Meta,
    pub spec: Spec,
}

/// Fields that belong to the metadata on the wire, never to an old-style spec.
const META_FIELDS: [&str; 7] = [
    "type",
    "name",
    "mesh",
    "labels",
    "creationTime",
    "modificationTime",
    "kri",
];

impl Resource {
    /// A new, never-stored resource.
    pub fn new(name: impl Into<String>, mesh: impl Into<String>, spec: Spec) -> Self {
        let now = Utc::now();
        let key = ResourceKey::new(spec.rtype(), mesh, name);
        Self {
            meta: Meta {
                name: key.name,
                mesh: key.mesh,
                version: 0,
                creation_time: now,
                modification_time: now,
                labels: BTreeMap::new(),
            },
            spec,
        }
    }

    pub fn rtype(&self) -> ResourceType {
        self.spec.rtype()
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            rtype: self.rtype(),
            mesh: self.meta.mesh.clone(),
            name: self.meta.name.clone(),
        }
    }

    /// The Kuma Resource Identifier, for types with a short name.
    pub fn kri(&self, zone: &str) -> Option<String> {
        self.rtype()
            .short_name()
            .map(|s| format!("kri_{s}_{}_{zone}__{}_", self.meta.mesh, self.meta.name))
    }

    /// The wire shape (REST responses, `kumactl get -o json|yaml`).
    pub fn to_wire(&self) -> Value {
        let rtype = self.rtype();
        let mut m = Map::new();
        m.insert("type".into(), Value::String(rtype.name().into()));
        if rtype.scope() == Scope::Mesh {
            m.insert("mesh".into(), Value::String(self.meta.mesh.clone()));
        }
        m.insert("name".into(), Value::String(self.meta.name.clone()));
        m.insert(
            "creationTime".into(),
            Value::String(format_time(&self.meta.creation_time)),
        );
        m.insert(
            "modificationTime".into(),
            Value::String(format_time(&self.meta.modification_time)),
        );
        if !self.meta.labels.is_empty() {
            m.insert(
                "labels".into(),
                Value::Object(
                    self.meta
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            );
        }
        let spec = self.spec.to_json();
        if rtype.is_new_style() {
            m.insert("spec".into(), spec);
        } else if let Value::Object(fields) = spec {
            m.extend(fields);
        }
        Value::Object(m)
    }

    /// Parses and validates untrusted wire input. `expected` (from the URL or the CLI) must
    /// match `type` when given. Server-managed fields (`creationTime`, `modificationTime`,
    /// `kri`) are accepted and ignored.
    pub fn from_wire(
        value: Value,
        expected: Option<ResourceType>,
    ) -> Result<Self, ValidationError> {
        let Value::Object(mut obj) = value else {
            return Err(ValidationError::single("", "must be an object"));
        };
        let mut errs = Violations::new();
        let rtype = match obj.get("type") {
            Some(Value::String(t)) => match ResourceType::from_name(t) {
                Some(rt) => Some(rt),
                None => {
                    errs.add("type", format!("unknown resource type {t:?}"));
                    None
                }
            },
            Some(_) => {
                errs.add("type", "must be a string");
                None
            }
            None => match expected {
                Some(e) => Some(e),
                None => {
                    errs.add("type", "cannot be empty");
                    None
                }
            },
        };
        if let (Some(rt), Some(e)) = (rtype, expected)
            && rt != e
        {
            errs.add(
                "type",
                format!(
                    "must be {} to match the request, got {}",
                    e.name(),
                    rt.name()
                ),
            );
        }
        let Some(rtype) = rtype else {
            return Err(errs
                .into_result()
                .expect_err("a type violation was recorded"));
        };
        let name = string_field(&obj, "name", &mut errs);
        if let Some(p) = name::name_problem(&name, rtype != ResourceType::Mesh) {
            errs.add("name", p);
        }
        let mesh = match rtype.scope() {
            Scope::Mesh => {
                let mesh = string_field(&obj, "mesh", &mut errs);
                if let Some(p) = name::name_problem(&mesh, false) {
                    errs.add("mesh", p);
                }
                mesh
            }
            Scope::Global => {
                if obj.contains_key("mesh") {
                    errs.add(
                        "mesh",
                        format!("must not be set: {} is not mesh-scoped", rtype),
                    );
                }
                String::new()
            }
        };
        let labels = match obj.get("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(l)) => {
                let mut out = BTreeMap::new();
                for (k, v) in l {
                    let field = format!("labels[\"{k}\"]");
                    if !name::is_label_key(k) {
                        errs.add(&field, "key must be a valid label key (qualified name)");
                    }
                    match v {
                        Value::String(s) => {
                            if !name::is_label_value(s) {
                                errs.add(&field, "value must be a valid label value");
                            }
                            out.insert(k.clone(), s.clone());
                        }
                        _ => errs.add(&field, "value must be a string"),
                    }
                }
                out
            }
            Some(_) => {
                errs.add("labels", "must be an object of strings");
                BTreeMap::new()
            }
        };
        let spec_value = if rtype.is_new_style() {
            let spec = obj.remove("spec").unwrap_or(Value::Object(Map::new()));
            for k in obj.keys() {
                if !META_FIELDS.contains(&k.as_str()) && k != "status" {
                    errs.add(k, "unknown field");
                }
            }
            spec
        } else {
            for f in META_FIELDS {
                obj.remove(f);
            }
            Value::Object(obj)
        };
        let spec_prefix = if rtype.is_new_style() { "spec" } else { "" };
        let spec = match Spec::from_json(rtype, spec_value) {
            Ok(spec) => {
                if let Err(e) = spec.validate() {
                    errs.extend(spec_prefix, e);
                }
                Some(spec)
            }
            Err(e) => {
                errs.extend(spec_prefix, e);
                None
            }
        };
        errs.into_result()?;
        let Some(spec) = spec else {
            return Err(ValidationError::single(spec_prefix, "invalid"));
        };
        let mut res = Resource::new(name, mesh, spec);
        res.meta.labels = labels;
        Ok(res)
    }

    /// Parses one or more YAML or JSON documents (`---` separated) into wire values.
    ///
    /// Aliases may replay at most [`ALIAS_REPLAY_BASE`] events plus two per byte of text, so
    /// expanding them costs about what the text itself costs: a few hundred bytes of nested
    /// aliases ("billion laughs") are refused instead of replaying a million events (this
    /// text can come from the network, in the `dataplaneResource` of `/bootstrap`, before
    /// the dataplane token is checked).
    pub fn parse_documents(text: &str) -> Result<Vec<Value>, ValidationError> {
        let mut options = serde_saphyr::Options::default();
        options.alias_limits.max_total_replayed_events = text
            .len()
            .saturating_mul(2)
            .saturating_add(ALIAS_REPLAY_BASE);
        let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
            .map_err(|e| ValidationError::single("", format!("cannot parse YAML/JSON: {e}")))?;
        Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
    }
}

fn string_field(obj: &Map<String, Value>, field: &str, errs: &mut Violations) -> String {
    match obj.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errs.add(field, "must be a string");
            String::new()
        }
        None => String::new(),
    }
}

/// RFC 3339 with nanosecond precision trimmed, as Kuma prints times.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn old_style_round_trip() {
        let wire = json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}});
        let r = Resource::from_wire(wire, None).unwrap();
        assert_eq!(r.rtype(), ResourceType::Mesh);
        let out = r.to_wire();
        assert_eq!(out["mtls"]["enabledBackend"], "ca-1");
        assert!(out.get("mesh").is_none());
        assert!(out.get("creationTime").is_some());
    }

    #[test]
    fn unknown_field_has_path() {
        let wire = json!({"type": "Dataplane", "mesh": "default", "name": "dp-1",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "a"}, "bogus": 1}]}});
        let err = Resource::from_wire(wire, None).unwrap_err();
        assert_eq!(err.violations.len(), 1, "{err}");
        assert_eq!(err.violations[0].field, "networking.inbound[0].bogus");
        assert!(err.violations[0].message.contains("bogus"), "{err}");
    }

    #[test]
    fn reports_every_problem() {
        let wire = json!({"type": "Dataplane", "mesh": "Bad Mesh", "name": "Bad_Name",
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {}}]}});
        let err = Resource::from_wire(wire, None).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"name"), "{fields:?}");
        assert!(fields.contains(&"mesh"), "{fields:?}");
        assert!(fields.contains(&"networking.inbound[0].tags"), "{fields:?}");
    }

    #[test]
    fn type_mismatch() {
        let err = Resource::from_wire(
            json!({"type": "Mesh", "name": "m"}),
            Some(ResourceType::Zone),
        )
        .unwrap_err();
        assert_eq!(err.violations[0].field, "type");
    }

    #[test]
    fn new_style_under_spec() {
        let wire = json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "allow",
            "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}});
        let r = Resource::from_wire(wire, None).unwrap();
        let out = r.to_wire();
        assert_eq!(out["spec"]["from"][0]["default"]["action"], "Allow");
    }

    #[test]
    fn multi_document_yaml() {
        let docs =
            Resource::parse_documents("type: Mesh\nname: a\n---\ntype: Mesh\nname: b\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(Resource::parse_documents("type: [").is_err());
    }

    /// Nested aliases of ten anchors each ("billion laughs", 469 bytes here) would replay
    /// a million events before any budget stopped them: a hand-written input run through
    /// the `resource_yaml` fuzz target took 2.6 s (libFuzzer's 10 s timeout did not flag it).
    #[test]
    fn alias_expansion_is_bounded_by_the_text() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = Resource::parse_documents(&text).expect_err("alias bomb refused");
        assert!(
            err.summary().contains("cannot parse YAML/JSON"),
            "{}",
            err.summary()
        );

        // Ordinary anchors still work: one block of tags shared by many inbounds.
        let mut text = String::from(
            "type: Dataplane\nmesh: default\nname: dp-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n",
        );
        text.push_str(
            "  - port: 1000\n    servicePort: 80\n    tags: &tags {kuma.io/service: web, version: v1}\n",
        );
        for port in 1001..1050 {
            text.push_str(&format!(
                "  - port: {port}\n    servicePort: 80\n    tags: *tags\n"
            ));
        }
        let docs = Resource::parse_documents(&text).expect("anchors within the budget");
        let dp = Resource::from_wire(docs[0].clone(), None).expect("a valid Dataplane");
        let Spec::Dataplane(dp) = dp.spec else {
            panic!("a Dataplane")
        };
        assert_eq!(dp.inbounds().len(), 50);
    }
}
