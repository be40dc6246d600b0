//! Resources: the type table, metadata, typed specs and the two wire shapes of Kuma's REST API
//! and YAML (old-style types carry their spec fields inline next to the metadata; new-style
//! policy types carry them under `spec`).
//!
//! [`Resource::decode`] is the one entry point for untrusted input: it decodes like Kuma
//! (unknown fields ignored, each named in a warning; see [`wire`]), and validates, reporting
//! every problem with its field path.

pub mod config;
pub mod dataplane;
pub mod insight;
pub mod mesh;
pub mod policy;
pub mod secret;
pub mod wire;
pub mod zone;
pub mod zone_proxy;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::name;
use crate::validate::{ValidationError, Violations};

pub use config::ConfigSpec;
pub use dataplane::Dataplane;
pub use insight::DataplaneInsight;
pub use mesh::Mesh;
pub use policy::MeshTrafficPermission;
pub use secret::SecretData;
pub use zone::{Zone, ZoneInsight};
pub use zone_proxy::{ZoneEgress, ZoneIngress, ZoneProxyInsight};

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
    ZoneInsight,
    ZoneIngress,
    ZoneIngressInsight,
    ZoneEgress,
    ZoneEgressInsight,
    /// The control plane's own state (not on the REST API: see [`ResourceType::is_exposed`]).
    Config,
}

impl ResourceType {
    /// All stored types, in the order `kumactl` and `GET /_resources` list them (those
    /// that [are exposed](Self::is_exposed)).
    pub const ALL: [ResourceType; 13] = [
        ResourceType::Mesh,
        ResourceType::Dataplane,
        ResourceType::DataplaneInsight,
        ResourceType::MeshTrafficPermission,
        ResourceType::Secret,
        ResourceType::GlobalSecret,
        ResourceType::Zone,
        ResourceType::ZoneInsight,
        ResourceType::ZoneIngress,
        ResourceType::ZoneIngressInsight,
        ResourceType::ZoneEgress,
        ResourceType::ZoneEgressInsight,
        ResourceType::Config,
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
            Self::ZoneInsight => "ZoneInsight",
            Self::ZoneIngress => "ZoneIngress",
            Self::ZoneIngressInsight => "ZoneIngressInsight",
            Self::ZoneEgress => "ZoneEgress",
            Self::ZoneEgressInsight => "ZoneEgressInsight",
            Self::Config => "Config",
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
            Self::ZoneInsight => "zone-insights",
            Self::ZoneIngress => "zoneingresses",
            Self::ZoneIngressInsight => "zone-ingress-insights",
            Self::ZoneEgress => "zoneegresses",
            Self::ZoneEgressInsight => "zoneegressinsights",
            // Kuma registers Config with an empty path: no REST endpoint.
            Self::Config => "",
        }
    }

    /// Whether the REST API, `GET /_resources` and kumactl know the type (Config: not).
    pub fn is_exposed(self) -> bool {
        !self.ws_path().is_empty()
    }

    /// Other REST path segments Kuma registers for the same type.
    pub fn ws_aliases(self) -> &'static [&'static str] {
        match self {
            Self::GlobalSecret => &["global-secrets"],
            Self::ZoneIngress => &["zone-ingresses"],
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
            // Kuma has no kumactl argument for it (`get zones` / `inspect zones` show it).
            Self::ZoneInsight => &[],
            Self::ZoneIngress => &[
                "zone-ingress",
                "zone-ingresses",
                "zoneingress",
                "zoneingresses",
            ],
            Self::ZoneIngressInsight => &["zone-ingress-insight", "zone-ingress-insights"],
            Self::ZoneEgress => &["zone-egress", "zone-egresses", "zoneegress", "zoneegresses"],
            Self::ZoneEgressInsight => &["zoneegressinsight", "zoneegressinsights"],
            Self::Config => &[],
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            Self::Mesh
            | Self::GlobalSecret
            | Self::Zone
            | Self::ZoneInsight
            | Self::ZoneIngress
            | Self::ZoneIngressInsight
            | Self::ZoneEgress
            | Self::ZoneEgressInsight
            | Self::Config => Scope::Global,
            _ => Scope::Mesh,
        }
    }

    /// New-style (plugin) types keep their spec under `spec`.
    pub fn is_new_style(self) -> bool {
        matches!(self, Self::MeshTrafficPermission)
    }

    /// Types only the control plane writes (PUT/DELETE refused with 405).
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Self::DataplaneInsight
                | Self::ZoneInsight
                | Self::ZoneIngressInsight
                | Self::ZoneEgressInsight
        )
    }

    /// Short name used in KRIs.
    pub fn short_name(self) -> Option<&'static str> {
        match self {
            Self::Dataplane => Some("dp"),
            Self::MeshTrafficPermission => Some("mtp"),
            Self::Zone => Some("z"),
            Self::ZoneIngress => Some("zi"),
            Self::ZoneEgress => Some("ze"),
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
            .filter(|t| t.is_exposed())
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
    ZoneInsight(ZoneInsight),
    ZoneIngress(ZoneIngress),
    ZoneIngressInsight(ZoneProxyInsight),
    ZoneEgress(ZoneEgress),
    ZoneEgressInsight(ZoneProxyInsight),
    Config(ConfigSpec),
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
            Spec::ZoneInsight(_) => ResourceType::ZoneInsight,
            Spec::ZoneIngress(_) => ResourceType::ZoneIngress,
            Spec::ZoneIngressInsight(_) => ResourceType::ZoneIngressInsight,
            Spec::ZoneEgress(_) => ResourceType::ZoneEgress,
            Spec::ZoneEgressInsight(_) => ResourceType::ZoneEgressInsight,
            Spec::Config(_) => ResourceType::Config,
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
            Spec::ZoneInsight(s) => serde_json::to_value(s),
            Spec::ZoneIngress(s) => serde_json::to_value(s),
            Spec::ZoneEgress(s) => serde_json::to_value(s),
            Spec::ZoneIngressInsight(s) | Spec::ZoneEgressInsight(s) => serde_json::to_value(s),
            Spec::Config(s) => serde_json::to_value(s),
        };
        // Invariant: every spec type is plain data (strings, numbers, maps) that serializes.
        v.unwrap_or(Value::Null)
    }

    /// Decodes a spec (see [`wire::decode_spec`]): the spec and a warning per unknown field.
    fn decode(
        rtype: ResourceType,
        v: Value,
        prefix: &str,
    ) -> Result<(Self, Vec<String>), ValidationError> {
        fn typed<T: serde::de::DeserializeOwned>(
            v: Value,
            prefix: &str,
            wrap: fn(T) -> Spec,
        ) -> Result<(Spec, Vec<String>), ValidationError> {
            wire::decode_spec(v, prefix).map(|(t, w)| (wrap(t), w))
        }
        match rtype {
            ResourceType::Mesh => typed(v, prefix, Spec::Mesh),
            ResourceType::Dataplane => typed(v, prefix, Spec::Dataplane),
            ResourceType::DataplaneInsight => typed(v, prefix, Spec::DataplaneInsight),
            ResourceType::MeshTrafficPermission => typed(v, prefix, Spec::MeshTrafficPermission),
            ResourceType::Secret => typed(v, prefix, Spec::Secret),
            ResourceType::GlobalSecret => typed(v, prefix, Spec::GlobalSecret),
            ResourceType::Zone => typed(v, prefix, Spec::Zone),
            ResourceType::ZoneInsight => typed(v, prefix, Spec::ZoneInsight),
            ResourceType::ZoneIngress => typed(v, prefix, Spec::ZoneIngress),
            ResourceType::ZoneIngressInsight => typed(v, prefix, Spec::ZoneIngressInsight),
            ResourceType::ZoneEgress => typed(v, prefix, Spec::ZoneEgress),
            ResourceType::ZoneEgressInsight => typed(v, prefix, Spec::ZoneEgressInsight),
            ResourceType::Config => typed(v, prefix, Spec::Config),
        }
    }

    /// The deprecation warnings Kuma returns when this spec is stored (PUT `warnings`).
    pub fn deprecations(&self) -> Vec<String> {
        match self {
            Spec::MeshTrafficPermission(s) => s.deprecations(),
            _ => Vec::new(),
        }
    }

    /// Validates the body; paths are relative to where the spec sits on the wire.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Spec::Mesh(s) => s.validate(),
            Spec::Dataplane(s) => s.validate(),
            Spec::DataplaneInsight(_) => Ok(()),
            Spec::MeshTrafficPermission(s) => s.validate(),
            Spec::Secret(s) | Spec::GlobalSecret(s) => s.validate(),
            Spec::Zone(_) | Spec::ZoneInsight(_) => Ok(()),
            Spec::ZoneIngress(s) => s.validate(),
            Spec::ZoneEgress(s) => s.validate(),
            Spec::ZoneIngressInsight(_) | Spec::ZoneEgressInsight(_) => Ok(()),
            Spec::Config(_) => Ok(()),
        }
    }
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

/// The mesh a new-style resource without `mesh` belongs to.
pub const DEFAULT_MESH: &str = "default";

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

    /// The Kuma Resource Identifier, for types with a short name. A mesh-scoped resource is
    /// of `zone`; a global one (a Zone) names no zone unless labelled with one, as Kuma
    /// takes the zone from the `kuma.io/zone` label (`kri_z____zone-1_`).
    pub fn kri(&self, zone: &str) -> Option<String> {
        let zone = match self.rtype().scope() {
            Scope::Mesh => zone,
            Scope::Global => self
                .meta
                .labels
                .get("kuma.io/zone")
                .map_or("", String::as_str),
        };
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

    /// Parses and validates untrusted wire input, dropping the warnings: for input the
    /// control plane wrote itself (the store) and tests. See [`Resource::decode`].
    pub fn from_wire(
        value: Value,
        expected: Option<ResourceType>,
    ) -> Result<Self, ValidationError> {
        Self::decode(value, expected)
            .map(|d| d.resource)
            .map_err(ValidationError::from)
    }

    /// The one entry point for untrusted wire input (REST `PUT`, `kumactl apply`, the
    /// bootstrap's `dataplaneResource`, ADS node metadata): decodes like Kuma (unknown fields
    /// ignored, `null` = absent), names every unknown field in a warning, and validates.
    ///
    /// `expected` (from the URL, or the only type the caller takes) is the type the document
    /// is decoded as; a different `type` in the body is a violation. Server-managed fields
    /// (`creationTime`, `modificationTime`, `kri`) are accepted and ignored.
    ///
    /// Violations are in Kuma's order: `type`, `name`, `mesh`, `labels`, then the spec's.
    pub fn decode(value: Value, expected: Option<ResourceType>) -> Result<Decoded, DecodeError> {
        let Value::Object(mut obj) = value else {
            return Err(DecodeError::Malformed {
                rtype: expected,
                errors: ValidationError::single("", "must be an object"),
            });
        };
        // A new-style type (the request's, else the document's) is checked against its
        // schema first, as Kuma does; when that fails, Kuma reports only the schema's errors.
        let schema_type = expected.or_else(|| {
            obj.get("type")
                .and_then(Value::as_str)
                .and_then(ResourceType::from_name)
        });
        if schema_type == Some(ResourceType::MeshTrafficPermission) {
            policy::check_document_schema(&obj).map_err(DecodeError::Invalid)?;
        }
        let mut malformed = Violations::new();
        let mut invalid = Violations::new();
        let mut warnings = Vec::new();
        let body_type = match obj.get("type") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => {
                malformed.add("type", "must be a string");
                None
            }
        };
        let rtype = match (expected, &body_type) {
            (Some(e), Some(t)) => {
                if t != e.name() {
                    invalid.add("type", "type from the URL has to be the same as in body");
                }
                Some(e)
            }
            (Some(e), None) => Some(e),
            (None, Some(t)) => {
                // The control plane's own types (Config) are no user document.
                let rt = ResourceType::from_name(t).filter(|rt| rt.is_exposed());
                if rt.is_none() {
                    malformed.add("type", format!("invalid resource type {t:?}"));
                }
                rt
            }
            (None, None) => {
                if malformed.is_empty() {
                    malformed.add("type", "invalid resource type \"\"");
                }
                None
            }
        };
        let Some(rtype) = rtype else {
            // Invariant: every arm that yields no type records a problem in `malformed`.
            return Err(DecodeError::Malformed {
                rtype: None,
                errors: malformed
                    .into_result()
                    .expect_err("a type problem was recorded"),
            });
        };
        let name = meta_string(&obj, "name", &mut malformed);
        let mesh = match rtype.scope() {
            // New-style types default a missing (or null) `mesh` to `default`, as Kuma's
            // schema defaulting does.
            Scope::Mesh if rtype.is_new_style() && obj.get("mesh").is_none_or(Value::is_null) => {
                DEFAULT_MESH.to_string()
            }
            Scope::Mesh => meta_string(&obj, "mesh", &mut malformed),
            Scope::Global => {
                if obj.get("mesh").is_some_and(|m| !m.is_null()) {
                    warnings.push(format!(
                        "field \"mesh\" ignored: {rtype} is not mesh-scoped"
                    ));
                }
                String::new()
            }
        };
        let labels = match obj.get("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(l)) => {
                let mut out = BTreeMap::new();
                for (k, v) in l {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Null => {
                            out.insert(k.clone(), String::new());
                        }
                        _ => malformed.add(format!("labels[{k:?}]"), "must be a string"),
                    }
                }
                for (k, v) in &out {
                    for p in name::label_key_problems(k) {
                        invalid.add(format!("labels[{k:?}]"), p);
                    }
                    for p in name::label_value_problems(v) {
                        invalid.add(format!("labels[{k:?}]"), p);
                    }
                }
                out
            }
            Some(_) => {
                malformed.add("labels", "must be an object of strings");
                BTreeMap::new()
            }
        };
        // Kuma's `ValidateMeta`, after the labels.
        // Mesh names with dots are accepted, as Kuma does (with a deprecation warning).
        if let Some(p) = name::meta_name_problem(&name) {
            invalid.add("name", p);
        }
        if rtype.scope() == Scope::Mesh
            && let Some(p) = name::meta_mesh_problem(&mesh)
        {
            invalid.add("mesh", p);
        }
        let (spec_value, spec_prefix) = if rtype.is_new_style() {
            let spec = obj.remove("spec").unwrap_or(Value::Object(Map::new()));
            for k in obj.keys() {
                if !META_FIELDS.contains(&k.as_str()) && k != "status" {
                    warnings.push(format!("unknown field {k:?}: ignored"));
                }
            }
            (spec, "spec")
        } else {
            for f in META_FIELDS {
                obj.shift_remove(f);
            }
            let mut spec = Value::Object(obj);
            wire::normalize_nulls(&mut spec);
            (spec, "")
        };
        let spec = match Spec::decode(rtype, spec_value, spec_prefix) {
            Ok((spec, unknown)) => {
                warnings.extend(unknown);
                Some(spec)
            }
            // New-style types: Kuma's schema check reports these as violations of the
            // resource (`Resource is not valid`), not as a document that does not decode.
            Err(e) if rtype.is_new_style() => {
                invalid.extend("", e);
                None
            }
            Err(e) => {
                malformed.extend("", e);
                None
            }
        };
        if let Err(errors) = malformed.into_result() {
            return Err(DecodeError::Malformed {
                rtype: Some(rtype),
                errors,
            });
        }
        let Some(spec) = spec else {
            // Invariant: a spec that did not decode recorded its problems in `invalid`.
            return Err(DecodeError::Invalid(
                invalid
                    .into_result()
                    .expect_err("the spec's decode errors were recorded"),
            ));
        };
        if let Err(e) = spec.validate() {
            // Kuma's protobuf JSON decoder refuses an unknown enum name or bytes that are not
            // base64 before any validation: for old-style types those are decode errors.
            let (decode, rest): (Vec<_>, Vec<_>) = e
                .violations
                .into_iter()
                .partition(|v| !rtype.is_new_style() && is_decode_problem(&v.message));
            if !decode.is_empty() {
                return Err(DecodeError::Malformed {
                    rtype: Some(rtype),
                    errors: ValidationError { violations: decode },
                });
            }
            if !rest.is_empty() {
                invalid.extend(spec_prefix, ValidationError { violations: rest });
            }
        }
        invalid.into_result().map_err(DecodeError::Invalid)?;
        let mut resource = Resource::new(name, mesh, spec);
        resource.meta.labels = labels;
        warnings.extend(resource.deprecations());
        Ok(Decoded { resource, warnings })
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

impl Resource {
    /// Kuma's deprecation warnings about this resource, for the PUT response's `warnings`
    /// (after the unknown fields in [`Decoded::warnings`]).
    /// A Mesh or Zone whose (display) name is not an RFC 1035 label gets Kuma's note too.
    pub fn deprecations(&self) -> Vec<String> {
        let name = self
            .meta
            .labels
            .get("kuma.io/display-name")
            .unwrap_or(&self.meta.name);
        match &self.spec {
            Spec::Mesh(m) => m.warnings(name),
            Spec::Zone(z) => z.warnings(name),
            spec => spec.deprecations(),
        }
    }
}

/// Whether a spec violation is one Kuma's protobuf JSON decoder raises while decoding (the
/// messages it shares with our checks: an enum value it does not know, invalid base64).
fn is_decode_problem(message: &str) -> bool {
    (message.starts_with("unknown value ") || message.starts_with("invalid value "))
        && message.contains(" for enum ")
        || message.starts_with("illegal base64 data at input byte ")
}

/// A metadata string (`name`, `mesh`); absent or `null` reads as `""`.
fn meta_string(obj: &Map<String, Value>, field: &str, malformed: &mut Violations) -> String {
    match obj.get(field) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            malformed.add(field, "must be a string");
            String::new()
        }
    }
}

/// A decoded document: the resource and the warnings about its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub resource: Resource,
    /// In document order: each unknown field (ignored, as Kuma does, but named), then Kuma's
    /// deprecation warnings. `PUT` returns them; `kumactl apply` prints them.
    pub warnings: Vec<String>,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The document does not decode: not an object, an unknown type, a value of the wrong
    /// JSON type, an unknown enum name, a bad duration. Kuma answers these with `400 Bad
    /// Request`, `invalid <Type> object: "<first error>"`; every field is named here.
    #[error("invalid {} object: {errors}", .rtype.map_or("resource", ResourceType::name))]
    Malformed {
        /// The type it was decoded as, when known.
        rtype: Option<ResourceType>,
        errors: ValidationError,
    },
    /// It decodes but breaks the type's rules (Kuma: `Resource is not valid`).
    #[error(transparent)]
    Invalid(ValidationError),
}

impl DecodeError {
    /// The offending fields.
    pub fn violations(&self) -> &ValidationError {
        match self {
            DecodeError::Malformed { errors, .. } | DecodeError::Invalid(errors) => errors,
        }
    }
}

impl From<DecodeError> for ValidationError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Malformed { errors, .. } | DecodeError::Invalid(errors) => errors,
        }
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
    fn unknown_fields_are_ignored_and_named() {
        let wire = json!({"type": "Dataplane", "mesh": "default", "name": "dp-1", "top": 1,
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "a"}, "bogus": 1}]}});
        let d = Resource::decode(wire, None).unwrap();
        assert_eq!(
            d.warnings,
            [
                "unknown field \"top\": ignored",
                "unknown field \"bogus\" at networking.inbound[0]: ignored"
            ]
        );
        let out = d.resource.to_wire();
        assert!(out.get("top").is_none(), "{out}");
        assert!(
            out["networking"]["inbound"][0].get("bogus").is_none(),
            "{out}"
        );
        // New-style: unknown keys next to `spec` and inside it.
        let wire = json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "p", "x": 1,
            "spec": {"targetRef": {"kind": "Mesh"}, "y": 2,
                "rules": [{"default": {"allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default"}}]}}]}});
        let d = Resource::decode(wire, None).unwrap();
        assert_eq!(
            d.warnings,
            [
                "unknown field \"x\": ignored",
                "unknown field \"y\" at spec: ignored"
            ]
        );
    }

    #[test]
    fn reports_every_problem_in_kumas_order() {
        let wire = json!({"type": "Dataplane", "mesh": "Bad Mesh", "name": "Bad_Name",
            "labels": {"a/b/c": "x"},
            "networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"version": "1"}}]}});
        let err = Resource::decode(wire, None).unwrap_err();
        let DecodeError::Invalid(err) = err else {
            panic!("not a validation error: {err}");
        };
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "labels[\"a/b/c\"]",
                "name",
                "mesh",
                "networking.inbound[0].tags[\"kuma.io/service\"]"
            ]
        );
    }

    #[test]
    fn decode_errors_name_every_field() {
        let wire = json!({"type": "Dataplane", "mesh": "default", "name": 4,
            "networking": {"address": "10.0.0.1", "inbound": 0}});
        let err = Resource::decode(wire, Some(ResourceType::Dataplane)).unwrap_err();
        let DecodeError::Malformed { rtype, errors } = &err else {
            panic!("not a decode error: {err}");
        };
        assert_eq!(*rtype, Some(ResourceType::Dataplane));
        let fields: Vec<_> = errors.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["name", "networking.inbound"]);
        assert!(
            err.to_string().starts_with("invalid Dataplane object: "),
            "{err}"
        );
        // `null` is "absent", as in protobuf JSON; in a tag map it is "".
        let wire = json!({"type": "Dataplane", "mesh": "default", "name": "dp", "probes": null,
            "networking": {"address": "10.0.0.1", "admin": null,
                "inbound": [{"port": 80, "tags": {"kuma.io/service": "a", "v": null}}]}});
        let err = Resource::decode(wire, None).unwrap_err();
        assert_eq!(
            err.violations().violations[0].field,
            "networking.inbound[0].tags[\"v\"]"
        );
        // New-style types: a wrong type in `spec` is a violation, as Kuma's schema says.
        let wire = json!({"type": "MeshTrafficPermission", "mesh": "default", "name": "p",
            "spec": {"targetRef": {"kind": "Mesh", "name": 2}}});
        let err = Resource::decode(wire, None).unwrap_err();
        let DecodeError::Invalid(e) = &err else {
            panic!("not a validation error: {err}");
        };
        assert_eq!(e.violations[0].field, "spec.targetRef.name");
    }

    #[test]
    fn new_style_mesh_defaults_to_default() {
        let wire = json!({"type": "MeshTrafficPermission", "name": "p",
            "spec": {"targetRef": {"kind": "Mesh"},
                "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}});
        let d = Resource::decode(wire, None).unwrap();
        assert_eq!(d.resource.meta.mesh, "default");
        // Old-style types have no default.
        let err = Resource::decode(
            json!({"type": "Dataplane", "name": "dp", "networking": {"address": "10.0.0.1"}}),
            None,
        )
        .unwrap_err();
        assert_eq!(err.violations().violations[0].field, "mesh");
    }

    #[test]
    fn unknown_type_without_expectation() {
        let err = Resource::decode(json!({"type": "Foo", "name": "x"}), None).unwrap_err();
        assert!(
            matches!(err, DecodeError::Malformed { rtype: None, .. }),
            "{err}"
        );
        assert_eq!(
            err.violations().violations[0].message,
            "invalid resource type \"Foo\""
        );
    }

    #[test]
    fn type_mismatch() {
        let err = Resource::from_wire(
            json!({"type": "Mesh", "name": "m"}),
            Some(ResourceType::Zone),
        )
        .unwrap_err();
        assert_eq!(err.violations[0].field, "type");
        assert_eq!(
            err.violations[0].message,
            "type from the URL has to be the same as in body"
        );
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
